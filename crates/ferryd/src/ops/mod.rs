//! Operations: each one validates, reserves in one store transaction, then programs
//! the kernel; if the kernel refuses, the state and the store go back to what they
//! were and whatever kernel work was done is undone. One lock serialises changes.

mod endpoint;
mod network;
mod plugin;
mod sandbox;
mod system;

use std::path::PathBuf;
use std::sync::Arc;

use ferry_kernel::KernelOps;
use ferry_store::Store;
use rand::RngCore;
use tokio::sync::Mutex;

use crate::config::Config;
use crate::error::Result;
use crate::state::{Key, Snapshot, State};

pub use network::bridge_spec as bridge_spec_of;
pub use sandbox::ExitReport;

pub struct Daemon<K: KernelOps> {
    pub cfg: Config,
    pub kernel: K,
    pub store: Box<dyn Store>,
    pub state: Mutex<State>,
    /// The host's resolv.conf, read at start, the base of sandboxes' resolv.conf.
    pub host_resolv: String,
    /// Pids of sandbox processes ferryd parents (awaited, not polled).
    pub children: Arc<std::sync::Mutex<std::collections::HashSet<u32>>>,
    /// The embedded DNS responder, following every commit.
    pub dns: crate::dns::Dns,
    /// What ferryd last applied to its nftables sets.
    pub firewall: crate::firewall::Firewall,
    /// Notified when ferryd should stop (after `system cleanup`).
    pub shutdown: tokio::sync::Notify,
}

pub fn new_id() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn now() -> (String, i64) {
    let t = chrono::Utc::now();
    (
        t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        t.timestamp(),
    )
}

impl<K: KernelOps> Daemon<K> {
    pub fn new(cfg: Config, kernel: K, store: Box<dyn Store>) -> Result<Arc<Self>> {
        let state = State::load(store.as_ref())?;
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        Ok(Arc::new(Daemon {
            cfg,
            kernel,
            store,
            state: Mutex::new(state),
            host_resolv,
            children: Default::default(),
            dns: Default::default(),
            firewall: Default::default(),
            shutdown: Default::default(),
        }))
    }

    /// Write the current values of `keys` to the store in one transaction.
    pub(crate) fn commit(&self, st: &State, keys: &[Key]) -> Result<()> {
        let batch = st.ops_for(keys);
        self.store.commit(&batch.ops)?;
        st.committed(batch);
        self.firewall.note(keys);
        // Names live in networks and sandboxes; IPAM pools, Docker's endpoints and the
        // meta record never change an answer.
        if keys.iter().any(|k| matches!(k, Key::Net(_) | Key::Sbx(_))) {
            self.dns.update(st, keys);
        }
        Ok(())
    }

    /// Put `before` back, in memory and in the store.
    pub(crate) fn rollback(&self, st: &mut State, before: Snapshot, keys: &[Key]) {
        st.restore(before);
        if let Err(e) = self.commit(st, keys) {
            tracing::error!(
                "rollback of the store failed: {e}; reconcile will repair it at the next start"
            );
        }
    }

    /// The namespace a sandbox's processes join: its own, or ferryd's for `--network host`.
    pub fn netns_path(&self, sb: &ferry_core::model::Sandbox) -> PathBuf {
        if sb.network_mode == "host" {
            self.cfg.host_netns()
        } else {
            self.cfg.sandbox_netns(&sb.id)
        }
    }
}
