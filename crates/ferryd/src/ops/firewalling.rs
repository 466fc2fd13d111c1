//! The daemon's calls into its firewall component ([`crate::firewall::Firewall`]) and the
//! same-network shortcut that follows the same commits ([`crate::shortcut::Shortcut`]):
//! the kernel and host settings they act through, and the periodic check.

use ferry_kernel::KernelOps;

use super::Daemon;
use crate::error::Result;
use crate::firewall::{Host, CHECK_EVERY};
use crate::state::State;

impl<K: KernelOps> Daemon<K> {
    fn firewall_host(&self) -> Host<'_, K> {
        Host {
            kernel: &self.kernel,
            br_netfilter: &self.cfg.br_netfilter,
        }
    }

    /// Make the kernel's sets match `st` (the sources committed since the last sync).
    pub(crate) async fn sync_firewall(&self, st: &State) -> Result<()> {
        self.shortcut.sync(&self.kernel, st);
        self.firewall.sync(&self.firewall_host(), st).await
    }

    /// An attach's firewall step (connect, start), where a test may arm a fault.
    pub(crate) async fn attach_firewall(&self, st: &State) -> Result<()> {
        self.shortcut.sync(&self.kernel, st);
        self.firewall.attach(&self.firewall_host(), st).await
    }

    /// For teardown paths, which go on whatever happens.
    pub(crate) async fn sync_firewall_or_warn(&self, st: &State, what: &str) {
        self.shortcut.sync(&self.kernel, st);
        self.firewall
            .sync_or_warn(&self.firewall_host(), st, what)
            .await
    }

    /// Re-create ferry's tables from `st` whatever the kernel holds now.
    pub async fn load_firewall(&self, st: &State) -> Result<()> {
        self.shortcut.load_all(&self.kernel, st);
        let loaded = self.firewall.load_all(&self.firewall_host(), st).await;
        self.shortcut.follow_user_chain(&self.kernel).await;
        loaded
    }

    /// `system cleanup`: what ferryd changed on the host goes back.
    pub(crate) async fn undo_host_changes(&self) -> Vec<String> {
        self.firewall.undo_host_changes(&self.firewall_host()).await
    }

    /// The tables were removed by hand: the next change loads them whole.
    pub(crate) async fn forget_firewall(&self) {
        self.firewall.forget().await
    }

    /// The periodic check (see [`crate::firewall::Firewall::check`]); nothing once
    /// ferryd is leaving.
    pub async fn check_firewall(&self) {
        let Some(_turn) = self.check_turn().await else {
            return;
        };
        self.firewall
            .check(&self.firewall_host(), &self.state)
            .await;
        self.shortcut.retry(&self.kernel);
        self.shortcut.retry_tunnels(&self.kernel);
        self.shortcut
            .recheck_uplinks(&self.kernel, &self.state)
            .await;
        self.shortcut.follow_user_chain(&self.kernel).await;
    }
}

/// Close or open the shortcut's gate whenever a rule, chain or table changes in
/// ferryd's namespace (the `user` chain gained or lost rules), within the time it takes
/// to list one chain. Without the notifications, the periodic check still does it.
pub fn watch_user_chain<K: KernelOps>(d: std::sync::Arc<Daemon<K>>) {
    let changed = std::sync::Arc::new(tokio::sync::Notify::new());
    let wake = changed.clone();
    if let Err(e) = ferry_kernel::nft_watch::watch(move || wake.notify_one()) {
        tracing::warn!(
            "shortcut: rule changes are not heard ({e}); the periodic check follows them"
        );
        return;
    }
    tokio::spawn(async move {
        loop {
            changed.notified().await;
            let Some(_turn) = d.check_turn().await else {
                return;
            };
            d.shortcut.follow_user_chain(&d.kernel).await;
        }
    });
}

/// Run [`Daemon::check_firewall`] every [`CHECK_EVERY`].
pub fn watch<K: KernelOps>(d: std::sync::Arc<Daemon<K>>) {
    tokio::spawn(async move {
        let mut t = tokio::time::interval(CHECK_EVERY);
        t.tick().await;
        loop {
            t.tick().await;
            if d.is_leaving() {
                return;
            }
            d.check_firewall().await;
        }
    });
}
