//! `ferry system cleanup`: remove every kernel object and rule ferry owns, leave the
//! cluster, then stop.

use ferry_core::model::Network;
use ferry_core::nft::render;
use ferry_kernel::KernelOps;

use super::Daemon;
use crate::error::Result;
use crate::overlay::blocking;

impl<K: KernelOps> Daemon<K> {
    /// Remove every sandbox and user network (as `rm -f` and `network rm` would; of an
    /// overlay, only this host's copy, and the host leaves the cluster), then
    /// the predefined bridge, ferry's nftables tables (the `user` chain too) and the pin
    /// of ferryd's own namespace; the caller then stops ferryd. The store keeps only the predefined
    /// networks, so the next start re-creates the default bridge. ferry's DOCKER-USER rule
    /// goes too, `ip_forward` goes back off and br_netfilter's calls back on if ferryd
    /// turned them so. Every step runs even
    /// if one before it failed; the failures come back together.
    pub async fn cleanup(&self) -> Result<()> {
        // ferryd stops after this: no periodic check may put back what goes here.
        self.leave_quietly().await;
        let mut errors: Vec<String> = vec![];
        let ids: Vec<String> = self.state.lock().await.sandboxes.keys().cloned().collect();
        for id in ids {
            if let Err(e) = self.remove_sandbox(&id, true).await {
                errors.push(format!("rm {id}: {e}"));
            }
        }
        errors.extend(self.plugin_forget_all().await);
        let nets: Vec<(String, Fate)> = {
            let st = self.state.lock().await;
            st.networks
                .values()
                .map(|n| (n.id.clone(), Fate::of(n)))
                .collect()
        };
        for (id, fate) in &nets {
            match fate {
                Fate::Removed => {
                    if let Err(e) = self.remove_network(id).await {
                        errors.push(format!("network rm {id}: {e}"));
                    }
                }
                Fate::CopyRemoved => {
                    if let Err(e) = self.dematerialize(id).await {
                        errors.push(e.to_string());
                    }
                }
                Fate::Kept => {}
            }
        }
        errors.extend(self.depart().await);
        let st = self.state.lock().await;
        for b in st
            .networks
            .values()
            .filter_map(|n| n.bridge())
            .filter(|b| !b.adopted)
        {
            if let Err(e) = self.kernel.delete_link(b.name.as_str()).await {
                errors.push(e.to_string());
            }
        }
        if let Err(e) = self.kernel.nft(&render::remove_all()).await {
            errors.push(e.to_string());
        }
        errors.extend(self.undo_host_changes().await);
        errors
            .extend(crate::br_netfilter::undo(&self.kernel, &self.cfg.br_netfilter_marker()).await);
        self.forget_firewall().await;
        if let Err(e) = self.kernel.remove_netns(&self.cfg.host_netns()).await {
            errors.push(e.to_string());
        }
        drop(st);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(crate::error::Error::Other(format!(
                "cleanup left: {}",
                errors.join("; ")
            )))
        }
    }

    /// Leave the cluster for good, if this host is in one: its record, endpoints and
    /// address blocks go from etcd at once (the overlays stay, for the other hosts).
    async fn depart(&self) -> Option<String> {
        let ov = self.overlay.get()?;
        blocking(&ov.cluster, |c| c.depart())
            .await
            .err()
            .map(|e| format!("leave the cluster: {e}"))
    }
}

/// What cleanup does with a network: a user network of this host's is removed; an
/// overlay is the cluster's, so only this host's copy goes; the predefined ones stay in
/// the store (the next start makes the default bridge again).
enum Fate {
    Removed,
    CopyRemoved,
    Kept,
}

impl Fate {
    fn of(n: &Network) -> Fate {
        if n.predefined {
            Fate::Kept
        } else if n.overlay().is_some() {
            Fate::CopyRemoved
        } else {
            Fate::Removed
        }
    }
}
