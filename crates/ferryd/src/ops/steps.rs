//! The executor's kernel half: a plan's [`KernelStep`]s run in order, and what takes
//! them back ([`KernelUndo`]) run when one fails or when a sandbox stops. Every kernel
//! change a start makes, and every one a stop takes back, goes through here.

use ferry_core::model::Sandbox;
use ferry_core::wiring::{KernelStep, KernelUndo};
use ferry_kernel::{AttachStep, KernelOps};

use super::Daemon;
use crate::error::Result;

impl<K: KernelOps> Daemon<K> {
    /// Run `steps` in order for sandbox `sb`. If one fails, the ones before it are taken
    /// back in reverse and its error is returned; otherwise, what takes them all back,
    /// in the order to run it.
    pub(crate) async fn run_steps(
        &self,
        sb: &Sandbox,
        steps: Vec<KernelStep>,
    ) -> Result<Vec<KernelUndo>> {
        let mut done = vec![];
        for step in steps {
            let undo = step.undo();
            let leaves_part = step.leaves_part();
            if let Err(e) = self.run_step(sb, step).await {
                if leaves_part {
                    done.extend(undo);
                }
                done.reverse();
                self.run_undo(done).await;
                return Err(e);
            }
            done.extend(undo);
        }
        done.reverse();
        Ok(done)
    }

    async fn run_step(&self, sb: &Sandbox, step: KernelStep) -> Result<()> {
        match step {
            KernelStep::CreateNetns(p) => Ok(self.kernel.create_netns(&p).await?),
            KernelStep::SandboxFiles => {
                self.kernel.fault(AttachStep::Dns)?;
                self.write_files(sb).await
            }
            // plughost: kernel.attach, or a plugin's Join.
            KernelStep::Attach(spec) => self.attach_endpoint(&spec).await,
            KernelStep::NameNetns { link, target } => {
                Ok(self.kernel.name_netns(&link, &target).await?)
            }
        }
    }

    /// Take back what `undo` names, in its order. Every step runs even if one before it
    /// failed; the errors are logged together (reconcile repairs what is left).
    pub(crate) async fn run_undo(&self, undo: Vec<KernelUndo>) {
        let mut errors = vec![];
        for u in undo {
            let res = match &u {
                // plughost: kernel.delete_link, or a plugin's Leave.
                KernelUndo::DetachLink(l) => self.detach_link(l).await.map_err(|e| e.to_string()),
                KernelUndo::RemoveNetns(ns) => self
                    .kernel
                    .remove_netns(ns)
                    .await
                    .map_err(|e| e.to_string()),
                KernelUndo::Unname(l) => {
                    self.kernel.unname_netns(l).await.map_err(|e| e.to_string())
                }
            };
            errors.extend(res.err());
        }
        if !errors.is_empty() {
            tracing::warn!("teardown left work for reconcile: {}", errors.join("; "));
        }
    }
}
