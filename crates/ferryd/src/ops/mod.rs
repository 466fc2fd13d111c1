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

mod bridge;
mod endpoint;
pub mod firewalling;
mod network;
mod plugin;
mod sandbox;
mod steps;
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
use crate::state::{Desired, Key, Snapshot, State};

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
    /// Notified when ferryd should stop (after `system cleanup`).
    pub(crate) shutdown: tokio::sync::Notify,
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
    /// The plan adds elements no link of ferry's waits for (dockerd's calls to ferry's
    /// plugin): they go in, and a refusal undoes the commit.
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
            shutdown: Default::default(),
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
        let keys = s.keys.clone();
        let applied = self.commit_staged(st, s)?;
        let loaded = match fw {
            FirewallFollows::BeforeLinks => self.attach_firewall(st).await,
            FirewallFollows::Adds => self.sync_firewall(st).await,
            FirewallFollows::Teardown(what) => {
                self.sync_firewall_or_warn(st, what).await;
                Ok(())
            }
        };
        if let Err(e) = loaded {
            self.rollback(st, applied.before, &keys);
            return Err(e);
        }
        Ok(applied)
    }

    /// Put `before` back, in memory and in the store.
    pub(crate) fn rollback(&self, st: &mut State, before: Snapshot, keys: &[Key]) {
        st.restore(before);
        self.commit_or_log(st, keys, "rollback");
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

    /// The namespace a sandbox's processes join: its own, or ferryd's for `--network host`.
    pub fn netns_path(&self, sb: &ferry_core::model::Sandbox) -> PathBuf {
        if !sb.network_mode.own_netns() {
            self.cfg.host_netns()
        } else {
            self.cfg.sandbox_netns(&sb.id)
        }
    }
}
