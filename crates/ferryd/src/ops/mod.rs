//! Operations: each one validates, reserves in one store transaction, then programs
//! the kernel; if the kernel refuses, the state and the store go back to what they
//! were and whatever kernel work was done is undone. One lock serialises changes of
//! the state.
//!
//! `network connect` and a sandbox's start (`run`), the operations users run many at a
//! time, let the state lock go for their kernel work (the namespace, the veths, the
//! process), so that other operations go on meanwhile; `disconnect` lets it go once
//! the veth is retired (so its address cannot come up twice on the bridge), for moving
//! the default route; `rm` and a process's exit likewise retire their veths under it and
//! remove the namespace after. Their
//! order per sandbox comes from a lock of the sandbox's own ([`SandboxLocks`]), taken
//! before the state lock by every operation that programs a sandbox's network (connect,
//! disconnect, start, stop, exit, rm): a disconnect cannot overtake the attach it would
//! undo, nor a stop read the pid of a start still in progress. A connect or start whose
//! kernel work fails after the state lock was let go takes back only what it took (its
//! endpoints, their addresses, the pool's cursor if nobody moved it since): another
//! operation may have changed the same networks, so their snapshots cannot be put back.

mod apply;
mod bridge;
mod endpoint;
pub mod firewalling;
mod network;
mod overlay;
pub mod plughost;
mod plugin;
mod sandbox;
mod steps;
pub mod supervise;
mod system;
mod way_out;

use std::path::PathBuf;
use std::sync::Arc;

use ferry_kernel::KernelOps;
use ferry_store::Store;
use rand::RngCore;
use tokio::sync::Mutex;

use crate::config::Config;
use crate::error::Result;
use crate::state::State;

pub(crate) use apply::FirewallFollows;
pub use overlay::join as join_cluster;
pub use sandbox::ExitReport;

/// The daemon. `cfg`, `kernel` and `state` are public because the tests without root
/// drive the recording kernel and read (or seed) the state through them; the store is
/// read back only as a whole ([`Daemon::stored_state`]), and `main` starts the DNS
/// responder and waits for a stop through methods. The rest is the daemon's own.
pub struct Daemon<K: KernelOps> {
    pub cfg: Config,
    pub kernel: K,
    pub(crate) store: Box<dyn Store>,
    pub state: Mutex<State>,
    /// The host's resolv.conf, read at start, the base of sandboxes' resolv.conf.
    pub(crate) host_resolv: String,
    /// Pids of sandbox processes ferryd parents (awaited, not polled).
    pub(crate) children: Arc<std::sync::Mutex<std::collections::HashSet<u32>>>,
    /// The embedded DNS responder, following every commit.
    pub(crate) dns: Arc<crate::dns::Dns>,
    /// What ferryd last applied to its nftables sets.
    pub(crate) firewall: crate::firewall::Firewall,
    /// What ferryd last asked of the shortcut.
    pub(crate) shortcut: crate::shortcut::Shortcut,
    /// Notified when ferryd should stop (after `system cleanup`).
    pub(crate) shutdown: tokio::sync::Notify,
    /// Set once ferryd is on its way out: the periodic checks stop (while the runtime
    /// winds down their timers fire at once and their nftables calls are cancelled).
    pub(crate) leaving: std::sync::atomic::AtomicBool,
    /// Held shared by each periodic check, and by the overlay's watch while it acts on
    /// the host, for its whole length ([`Daemon::check_turn`]): [`Daemon::leave_quietly`]
    /// takes it alone to wait out one in flight. Never taken twice by one task (a waiting
    /// writer would hold up the second read).
    pub(crate) checks: tokio::sync::RwLock<()>,
    /// Per-sandbox order of the operations that program a sandbox's network.
    pub(crate) sandbox_locks: SandboxLocks,
    /// This host's membership of a cluster (`--cluster-store`), once joined.
    pub(crate) overlay: std::sync::OnceLock<Arc<crate::overlay::Overlay>>,
    /// Every sandbox exit (ID, code), for `POST /containers/{id}/wait`: an exit code
    /// outlives an auto-removed sandbox.
    pub(crate) exits: tokio::sync::broadcast::Sender<(String, i32)>,
    /// plughost: the third-party plugins activated so far.
    pub(crate) plughost: crate::plughost::PlugHost,
}

/// One async lock per sandbox ID, made on first use and dropped with the sandbox.
/// Always taken before the state lock, never while holding it.
#[derive(Default)]
pub(crate) struct SandboxLocks(
    std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
);

impl SandboxLocks {
    pub(crate) async fn lock(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = self
            .0
            .lock()
            .expect("sandbox locks")
            .entry(id.to_string())
            .or_default()
            .clone();
        m.lock_owned().await
    }

    /// The sandbox is gone: its lock goes too (a waiter holding it finds no sandbox).
    pub(crate) fn forget(&self, id: &str) {
        self.0.lock().expect("sandbox locks").remove(id);
    }
}

/// A sandbox's lock, held, with the sandbox's ID as it was resolved.
pub(crate) struct SandboxTurn {
    pub id: String,
    _held: tokio::sync::OwnedMutexGuard<()>,
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
        let markers = crate::firewall::Markers {
            br_netfilter: cfg.br_netfilter_marker(),
            forwarding: cfg.forwarding_marker(),
        };
        let state = State::load(store.as_ref())?;
        let shortcut = crate::shortcut::Shortcut::new(cfg.shortcut);
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        Ok(Arc::new(Daemon {
            cfg,
            kernel,
            store,
            state: Mutex::new(state),
            host_resolv,
            children: Default::default(),
            dns: Default::default(),
            firewall: crate::firewall::Firewall::new(markers),
            shortcut,
            shutdown: Default::default(),
            leaving: Default::default(),
            checks: Default::default(),
            sandbox_locks: Default::default(),
            overlay: Default::default(),
            exits: tokio::sync::broadcast::channel(64).0,
            plughost: Default::default(),
        }))
    }

    /// What the store holds, read back whole (the tests compare it with memory).
    pub fn stored_state(&self) -> Result<State> {
        Ok(State::load(self.store.as_ref())?)
    }

    /// Start the DNS responder on the gateways of the state's networks, forwarding to
    /// `upstreams` (or the host's resolvers).
    pub async fn serve_dns(&self, upstreams: Vec<std::net::SocketAddr>) {
        self.dns
            .serve(&*self.state.lock().await, &self.host_resolv, upstreams);
    }

    /// ferryd is on its way out: the periodic checks stop, and the shortcut's gate closes
    /// (its programs outlive the process; closed, the bridge carries everything).
    pub fn leave(&self) {
        self.leaving
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.shortcut.close(&self.kernel);
    }

    pub(crate) fn is_leaving(&self) -> bool {
        self.leaving.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A periodic check's turn, to hold for the check's length; None once ferryd is
    /// leaving. (The flag is read after the turn is taken: a check cannot begin between
    /// [`Daemon::leave_quietly`]'s flag and its wait.)
    pub(crate) async fn check_turn(&self) -> Option<tokio::sync::RwLockReadGuard<'_, ()>> {
        let turn = self.checks.read().await;
        (!self.is_leaving()).then_some(turn)
    }

    /// [`Daemon::leave`], and return once no periodic check is in flight: from here on
    /// none puts back what `system cleanup` removes (a table, the DOCKER-USER rule, a
    /// bridge the check would find missing).
    pub(crate) async fn leave_quietly(&self) {
        self.leave();
        drop(self.checks.write().await);
    }

    /// Returns once ferryd is asked to stop (after `system cleanup`).
    pub async fn stopped(&self) {
        self.shutdown.notified().await;
    }

    /// Resolve `key` (a name, ID or ID prefix), wait for the sandbox's turn, then take
    /// the state lock, in that order, and hand both over with the sandbox found again.
    pub(crate) async fn sandbox_turn(
        &self,
        key: &str,
    ) -> Result<(SandboxTurn, tokio::sync::MutexGuard<'_, State>)> {
        let id = self.state.lock().await.sandbox_id(key)?;
        let held = self.sandbox_locks.lock(&id).await;
        let st = self.state.lock().await;
        // Removed while this waited: say so, and leave no lock behind for it.
        if let Err(e) = st.sandbox_id(&id) {
            self.sandbox_locks.forget(&id);
            return Err(e.into());
        }
        Ok((SandboxTurn { id, _held: held }, st))
    }

    /// The namespace a sandbox's processes join: its own, or ferryd's for `--network host`.
    pub fn netns_path(&self, sb: &ferry_core::model::Sandbox) -> PathBuf {
        if !sb.network_mode.own_netns() {
            self.cfg.host_netns()
        } else {
            self.cfg.sandbox_netns(&sb.id)
        }
    }
}
