//! The executor: the one way a change reaches the store, the firewall, the DNS table and
//! the sandboxes' files. An operation resolves what it names, then
//!
//! 1. [`Daemon::stage`]: saves the records its keys name and lets a pure planner from
//!    ferry-core edit the state; a refusal puts them back;
//! 2. [`Daemon::commit_staged`] or [`Daemon::apply_staged`]: one store transaction (a
//!    refusal puts the records back), then, as [`FirewallFollows`] says, the firewall's
//!    sets, then the files of the running sandboxes the keys name;
//! 3. runs the plan's kernel steps (`steps.rs`), and if the kernel refuses,
//!    [`Daemon::take_back`]: the records as they were, in memory and the store, and
//!    the firewall and files after them.
//!
//! What is derived from memory rather than the store (the firewall's pending sources,
//! the DNS table, a plugin's leases, the cluster's publisher) follows every commit,
//! refused or not ([`Daemon::commit`]). An undo that edits the state by hand (a connect
//! or start whose kernel work failed after the state lock was let go: see `mod.rs`) ends
//! in [`Daemon::settle`], which writes what it did the same way.

use ferry_kernel::KernelOps;

use super::Daemon;
use crate::error::Result;
use crate::state::{Desired, Key, Snapshot, State};

/// A plan whose edits are in the state but not yet in the store.
#[must_use = "a staged plan is committed or abandoned"]
pub(crate) struct Staged<P> {
    pub plan: P,
    before: Snapshot,
    keys: Vec<Key>,
}

impl<P> Staged<P> {
    /// Put back what the plan edited: a check between planning and commit refused it.
    pub(crate) fn abandon(self, st: &mut State) {
        st.restore(self.before);
    }
}

/// How the firewall follows a committed plan ([`Daemon::apply_staged`]).
pub(crate) enum FirewallFollows {
    /// The plan adds what links about to be made need: the elements go in before the
    /// links exist (nothing can match them until then), and a refusal undoes the commit.
    BeforeLinks,
    /// The plan adds elements that wait for nothing, or for links made after them (a
    /// network's bridge, which they name; dockerd's calls to ferry's plugin): they go
    /// in, and a refusal undoes the commit.
    Adds,
    /// The plan takes things away: the sets follow whatever happens; a refusal is logged,
    /// naming the operation, and the periodic check repairs it.
    Teardown(&'static str),
}

/// A plan committed, with the records as they were before it.
pub(crate) struct Applied<P> {
    pub plan: P,
    pub before: Snapshot,
}

impl<K: KernelOps> Daemon<K> {
    /// Write the current values of `keys` to the store in one transaction.
    pub(crate) fn commit(&self, st: &State, keys: &[Key]) -> Result<()> {
        let batch = st.ops_for(keys);
        self.store.commit(&batch.ops)?;
        st.committed(batch);
        self.follow_memory(st, keys);
        Ok(())
    }

    /// What is derived from memory, not from the store: the firewall's pending sources
    /// and the DNS table. A commit the store refused but memory keeps must still reach
    /// them, or the firewall keeps a freed address's DNAT and the ledger drifts.
    fn follow_memory(&self, st: &State, keys: &[Key]) {
        self.firewall.note(keys);
        self.shortcut.note(keys);
        // plughost: addresses an IPAM plugin granted and ferry freed go back to it.
        self.plughost.sweep(&self.cfg.plughost, st, keys);
        // Names live in networks and sandboxes; IPAM pools, Docker's endpoints and the
        // meta record never change an answer.
        if keys.iter().any(|k| matches!(k, Key::Net(_) | Key::Sbx(_))) {
            self.dns.update(st, keys);
        }
        // This host's endpoints on overlays go to the cluster store.
        if let Some(ov) = self.overlay.get() {
            if keys
                .iter()
                .any(|k| matches!(k, Key::Sbx(_) | Key::PluginEp(_)))
            {
                ov.poke.notify_one();
            }
        }
    }

    /// The executor's first half: save the records `keys` name, then let `planner` edit
    /// the state. If the planner refuses, the saved records go back and the state is as
    /// it was. Every operation that changes the state goes through here and
    /// [`Daemon::commit_staged`] (or [`Staged::abandon`]).
    pub(crate) fn stage<P>(
        &self,
        st: &mut State,
        keys: &[Key],
        planner: impl FnOnce(&mut Desired) -> std::result::Result<P, ferry_core::CoreError>,
    ) -> Result<Staged<P>> {
        let before = st.snapshot(keys);
        match planner(st) {
            Ok(plan) => Ok(Staged {
                plan,
                before,
                keys: keys.to_vec(),
            }),
            Err(e) => {
                st.restore(before);
                Err(e.into())
            }
        }
    }

    /// [`Daemon::stage`] for plans that take addresses: refused because this host's
    /// overlay block filled since the check before planning (others took the last
    /// addresses), another block is claimed without the state lock and the plan made
    /// again, up to three times. Hands the state lock back with the staged plan.
    pub(crate) async fn stage_taking_addresses<'a, P>(
        &'a self,
        mut st: tokio::sync::MutexGuard<'a, State>,
        keys: &[Key],
        mut planner: impl FnMut(&mut Desired) -> std::result::Result<P, ferry_core::CoreError>,
    ) -> Result<(tokio::sync::MutexGuard<'a, State>, Staged<P>)> {
        let mut tries = 0;
        loop {
            let e = match self.stage(&mut st, keys, &mut planner) {
                Ok(staged) => return Ok((st, staged)),
                Err(e) => e,
            };
            drop(st);
            tries += 1;
            if tries > 3 || !self.claimed_more(&e).await? {
                return Err(e);
            }
            st = self.state.lock().await;
        }
    }

    /// The executor's second half: commit what the plan edited as one store transaction;
    /// if the store refuses, the saved records go back. Returns the plan, with the saved
    /// records for an undo should the kernel refuse.
    pub(crate) fn commit_staged<P>(&self, st: &mut State, s: Staged<P>) -> Result<Applied<P>> {
        self.commit_or_restore(st, &s.before, &s.keys)?;
        Ok(Applied {
            plan: s.plan,
            before: s.before,
        })
    }

    /// The executor whole, for plans whose firewall sources change: commit (as
    /// [`Daemon::commit_staged`]), then bring the firewall's sets to the committed state
    /// as `fw` says. The kernel's links come after, from the plan.
    pub(crate) async fn apply_staged<P>(
        &self,
        st: &mut State,
        s: Staged<P>,
        fw: FirewallFollows,
    ) -> Result<Applied<P>> {
        let Staged { plan, before, keys } = s;
        self.commit_or_restore(st, &before, &keys)?;
        let loaded = match fw {
            FirewallFollows::BeforeLinks => self.attach_firewall(st).await,
            FirewallFollows::Adds => self.sync_firewall(st).await,
            FirewallFollows::Teardown(what) => {
                self.sync_firewall_or_warn(st, what).await;
                Ok(())
            }
        };
        if let Err(e) = loaded {
            st.restore(before);
            self.commit_or_log(st, &keys, "rollback");
            return Err(e);
        }
        // A sandbox this plan starts gets its files written whole by the start itself.
        let started = |id: &str| !before.was_running(id);
        self.rewrite_files(st, &keys, started).await;
        Ok(Applied { plan, before })
    }

    /// Take back a committed plan the kernel refused: `before` back in memory and in the
    /// store, and the firewall and the sandboxes' files after it ([`Daemon::settle`]).
    pub(crate) async fn take_back(
        &self,
        st: &mut State,
        before: Snapshot,
        keys: &[Key],
        what: &'static str,
    ) {
        st.restore(before);
        self.settle(st, keys, what).await;
    }

    /// Write a change that has already happened and cannot be taken back (an undo, a
    /// process's exit) everywhere it goes: the store (a refusal is logged, see
    /// [`Daemon::commit_or_log`]), the firewall's sets (a refusal is logged, naming
    /// `what`; the periodic check repairs it), the files of the running sandboxes it
    /// names.
    pub(crate) async fn settle(&self, st: &State, keys: &[Key], what: &'static str) {
        self.commit_or_log(st, keys, what);
        self.sync_firewall_or_warn(st, what).await;
        self.rewrite_files(st, keys, |_| false).await;
    }

    /// The hosts and resolv.conf of each running sandbox `keys` name, as the state has
    /// them now, but those `skip` names. A stopped sandbox's files are written whole at
    /// its next start.
    async fn rewrite_files(&self, st: &State, keys: &[Key], skip: impl Fn(&str) -> bool) {
        for k in keys {
            let Key::Sbx(id) = k else { continue };
            if st.sandboxes.get(id).is_some_and(|s| s.is_running()) && !skip(id) {
                self.write_hosts(st, id).await;
            }
        }
    }

    /// Commit what an operation did; if the store refuses, put `before` back in memory
    /// and return the store's error. Memory never runs ahead of the store, and an
    /// operation the store refused changes nothing.
    pub(crate) fn commit_or_restore(
        &self,
        st: &mut State,
        before: &Snapshot,
        keys: &[Key],
    ) -> Result<()> {
        self.commit(st, keys)
            .inspect_err(|_| st.restore(before.clone()))
    }

    /// Commit what has already happened and cannot be taken back (an undo, a process's
    /// exit, a started process's pid); a failure is logged, not returned: memory is
    /// right, and reconcile repairs the store at the next start.
    pub(crate) fn commit_or_log(&self, st: &State, keys: &[Key], what: &str) {
        if let Err(e) = self.commit(st, keys) {
            tracing::error!(
                "{what}: the store refused it: {e}; reconcile will repair it at the next start"
            );
            self.follow_memory(st, keys);
        }
    }
}
