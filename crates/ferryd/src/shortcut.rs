//! The shortcut, derived from the desired state and the cluster's view.
//!
//! A tc/BPF program on each endpoint's veth host end hands a frame for a neighbour on
//! the same ICC-on bridge straight into the neighbour's namespace, past the bridge, the
//! br_netfilter pass and every hook of ferryd's namespace, and one for another host's
//! block of the same overlay straight to the overlay's VXLAN device, and what the host
//! is to route straight up into it; another, on that device, hands what arrives for a
//! local endpoint straight in; a third, on the bridge's egress, what the host routes to
//! an endpoint straight to its veth (ferry-kernel's `shortcut` module, and
//! bpf/shortcut.c for exactly when). ferry-core's `shortcut`
//! says which endpoints and tunnels it carries; this component keeps the kernel's maps
//! equal to that. Tunnels follow the overlay's routes ([`Shortcut::tunnels`], from the
//! overlay agent's sync), as a whole: there are few.
//!
//! Like the firewall's ledger: every commit notes its keys ([`Shortcut::note`]); a sync
//! recomputes those sources' entries and applies only the difference, so an attach costs
//! the same with 1 or 1000 endpoints. Removals go at once — syncs run where the firewall
//! follows a commit, before a teardown's links go. An entry whose veth does not exist yet
//! (a commit comes before the attach that makes it) waits, and goes in after the attach
//! ([`Shortcut::retry`]) or at the periodic check.
//!
//! Nothing here can fail an operation: without the shortcut, or with an entry that did
//! not go in, the normal path carries the traffic, only slower.
//!
//! The gate. The administrator's `user` chain sees bridged traffic (br_netfilter hands it
//! to the forward hook), and a rule put there must keep doing what it says: while the
//! chain holds any rule, the gate is closed for every endpoint. ferryd hears every rule
//! change in the namespace (ferry-kernel's `nft_watch`) and looks at the chain again.

use std::collections::{BTreeMap, HashMap};

use ferry_core::nft;
use ferry_core::shortcut::{entry, Entry, Tunnel};
use ferry_kernel::KernelOps;

use crate::firewall::{all_sources, Source};
use crate::state::{Key, State};

/// `--shortcut`: whether ferryd carries same-network traffic past the bridge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Carry it (the default): the program is loaded at the first endpoint; and carry
    /// established routed flows (published ports, masquerade) past the host's stack
    /// where the kernel allows (docs/design.md, "The routed fast path").
    #[default]
    On,
    /// Carry traffic within a network only: routed flows take the host's path, where
    /// rules of other tables (iptables' DOCKER-USER, say) see every packet.
    SameNetwork,
    /// Leave every frame to the bridge.
    Off,
}

/// What ferryd has asked of the kernel's shortcut.
pub struct Shortcut {
    mode: Mode,
    inner: std::sync::Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The sources committed since the last sync.
    pending: Vec<Source>,
    /// The entries each source has in the kernel, or waits to have.
    applied: HashMap<Source, Vec<Entry>>,
    /// Entries whose links were missing, by host end.
    waiting: BTreeMap<String, Entry>,
    /// The gate as last set (None: never).
    open: Option<bool>,
    /// The tunnels last asked for, and whether the kernel took them all.
    tunnels: Vec<Tunnel>,
    tunnels_held: bool,
    /// ferryd is stopping: the gate stays closed.
    stopping: bool,
}

impl Shortcut {
    pub fn new(mode: Mode) -> Shortcut {
        Shortcut {
            mode,
            inner: Default::default(),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("shortcut lock")
    }

    /// A commit wrote these keys: their sources' entries may have changed.
    pub(crate) fn note(&self, keys: &[Key]) {
        if self.mode == Mode::Off {
            return;
        }
        let mut inner = self.inner();
        for s in keys.iter().filter_map(Source::of_key) {
            if !inner.pending.contains(&s) {
                inner.pending.push(s);
            }
        }
    }

    /// Bring the kernel's entries to `st` for the sources noted since the last sync.
    pub(crate) fn sync<K: KernelOps>(&self, k: &K, st: &State) {
        if self.mode == Mode::Off {
            return;
        }
        let mut inner = self.inner();
        let first = inner.applied.is_empty();
        for src in std::mem::take(&mut inner.pending) {
            let want = source_entries(st, &src);
            inner.replace(k, src, want);
        }
        if first && !inner.applied.is_empty() {
            drop(inner);
            self.uplinks(k, st);
        }
    }

    /// Carry routed flows in through the host's uplinks (ferry-kernel's shortcut, the
    /// conntrack fast path), once something is carried: at the first endpoint, ferryd's
    /// start, `system reconcile` and each periodic check (so a link added since is
    /// carried from the next). Nothing can fail: without it, routed flows take the
    /// host's path.
    pub(crate) fn uplinks<K: KernelOps>(&self, k: &K, st: &State) {
        if self.wants_uplinks() {
            set_uplinks(k, &program_links(st));
        }
    }

    /// [`Shortcut::uplinks`] for the periodic check: the state held only while ferry's
    /// links are read, not while the kernel lists and hooks the uplinks.
    pub(crate) async fn recheck_uplinks<K: KernelOps>(
        &self,
        k: &K,
        state: &tokio::sync::Mutex<State>,
    ) {
        if self.wants_uplinks() {
            let ferry_links = program_links(&*state.lock().await);
            set_uplinks(k, &ferry_links);
        }
    }

    fn wants_uplinks(&self) -> bool {
        self.mode == Mode::On && !self.inner().applied.is_empty()
    }

    /// Everything again from `st` (ferryd's start, `system reconcile`): the kernel holds
    /// nothing of a previous ferryd's, and an entry the state no longer has goes. Then
    /// the programs a killed ferryd left on links this one does not carry go (all of
    /// them with `--shortcut off`): with their frozen maps and open gate they would
    /// carry traffic past a bridge this ferryd leaves everything to, and past the gate a
    /// rule in the `user` chain closes.
    pub(crate) fn load_all<K: KernelOps>(&self, k: &K, st: &State) {
        if self.mode != Mode::Off {
            self.carry_all(k, st);
            self.uplinks(k, st);
        }
        k.shortcut_sweep(&program_links(st));
    }

    fn carry_all<K: KernelOps>(&self, k: &K, st: &State) {
        let mut inner = self.inner();
        inner.pending.clear();
        let want: HashMap<Source, Vec<Entry>> = all_sources(st)
            .filter(|src| matches!(src, Source::Sbx(_) | Source::DockerEp(_)))
            .map(|src| {
                let e = source_entries(st, &src);
                (src, e)
            })
            .collect();
        let gone: Vec<Source> = inner
            .applied
            .keys()
            .filter(|s| !want.contains_key(s))
            .cloned()
            .collect();
        for src in gone {
            inner.replace(k, src, vec![]);
        }
        for (src, entries) in want {
            // Re-written even if applied: after a start the kernel holds none of them.
            inner.applied.remove(&src);
            inner.replace(k, src, entries);
        }
    }

    /// Carry exactly these overlay tunnels (the overlay agent's sync, after it programmed
    /// their routes). Written even when unchanged: the sync also follows a device made
    /// again (deleted by hand, reconciled), whose new ifindex the maps must take. A
    /// device not there yet is tried again at the periodic check.
    pub(crate) fn tunnels<K: KernelOps>(&self, k: &K, want: Vec<Tunnel>) {
        if self.mode == Mode::Off {
            return;
        }
        let mut inner = self.inner();
        inner.tunnels = want;
        inner.set_tunnels(k);
    }

    /// The tunnels again, if a device was missing when they were last set (the periodic
    /// check; a device comes back through the overlay's sync, which sets them anyway).
    pub(crate) fn retry_tunnels<K: KernelOps>(&self, k: &K) {
        let mut inner = self.inner();
        if !inner.tunnels_held {
            inner.set_tunnels(k);
        }
    }

    /// Add the entries that were waiting for their links (after an attach made one).
    pub(crate) fn retry<K: KernelOps>(&self, k: &K) {
        let mut inner = self.inner();
        let waiting = std::mem::take(&mut inner.waiting);
        for (host_end, e) in waiting {
            if k.shortcut_add(&e).is_err() {
                inner.waiting.insert(host_end, e);
            }
        }
    }

    /// ferryd stops: close the gate for good. The programs stay on their links (they
    /// are the kernel's, ferry-kernel's `shortcut::links`), so without this they would go
    /// on with what this ferryd last wrote; closed, the bridge and the host carry
    /// everything until the next ferryd opens it.
    pub(crate) fn close<K: KernelOps>(&self, k: &K) {
        let mut inner = self.inner();
        inner.stopping = true;
        if self.mode == Mode::Off || inner.open.is_none() {
            return;
        }
        match k.shortcut_gate(false) {
            Ok(()) => inner.open = Some(false),
            Err(e) => tracing::warn!("shortcut: close the gate: {e}"),
        }
    }

    /// Open the gate when the `user` chain holds no rule, close it otherwise.
    pub(crate) async fn follow_user_chain<K: KernelOps>(&self, k: &K) {
        if self.mode == Mode::Off || self.inner().stopping {
            return;
        }
        let open = user_chain_empty(k).await;
        // Held until the gate is set: a `close` meanwhile must not be undone.
        let mut inner = self.inner();
        if inner.stopping || inner.open == Some(open) {
            return;
        }
        match k.shortcut_gate(open) {
            Ok(()) => {
                inner.open = Some(open);
                match open {
                    true => tracing::info!("shortcut: open (the user chain is empty)"),
                    false => tracing::info!("shortcut: closed while the user chain holds rules"),
                }
            }
            Err(e) => tracing::warn!("shortcut: gate: {e}"),
        }
    }
}

impl Inner {
    fn set_tunnels<K: KernelOps>(&mut self, k: &K) {
        match k.shortcut_tunnels(&self.tunnels) {
            Ok(()) => self.tunnels_held = true,
            Err(e) => {
                tracing::debug!("shortcut: tunnels wait: {e}");
                self.tunnels_held = false;
            }
        }
    }

    /// Make `src`'s entries `want`: what went is removed, what is new (or changed) added.
    fn replace<K: KernelOps>(&mut self, k: &K, src: Source, want: Vec<Entry>) {
        let had = self.applied.remove(&src).unwrap_or_default();
        for old in had.iter().filter(|o| !want.contains(o)) {
            let name = old.host_end.as_str();
            self.waiting.remove(name);
            // A host end whose entry changed is written again below, not removed.
            if !want.iter().any(|w| w.host_end == old.host_end) {
                k.shortcut_remove(name);
            }
        }
        for new in want.iter().filter(|w| !had.contains(w)) {
            if let Err(e) = k.shortcut_add(new) {
                tracing::debug!("shortcut: {} waits: {e}", new.host_end);
                self.waiting.insert(new.host_end.to_string(), new.clone());
            }
        }
        if !want.is_empty() {
            self.applied.insert(src, want);
        }
    }
}

fn set_uplinks<K: KernelOps>(k: &K, ferry_links: &[String]) {
    if let Err(e) = k.shortcut_uplinks(ferry_links) {
        tracing::debug!("shortcut: uplinks: {e}");
    }
}

/// One source's entries in `st`: a running sandbox's endpoints, a Docker endpoint.
fn source_entries(st: &State, src: &Source) -> Vec<Entry> {
    let of = |ep: &ferry_core::model::Endpoint| entry(ep, st.networks.get(&ep.network_id));
    match src {
        Source::Sbx(id) => st
            .sandboxes
            .get(id)
            .filter(|s| s.is_running())
            .map(|sb| sb.endpoints.iter().filter_map(of).collect())
            .unwrap_or_default(),
        Source::DockerEp(id) => st
            .plugin
            .endpoints
            .get(id)
            .and_then(|d| of(&d.endpoint))
            .into_iter()
            .collect(),
        Source::Net(_) | Source::Tunnel => vec![],
    }
}

/// The links of ferry's in `st` a program may sit on: the networks' bridges and VXLAN
/// devices, the endpoints' host ends.
fn program_links(st: &State) -> Vec<String> {
    let endpoints = st
        .sandboxes
        .values()
        .flat_map(|s| s.endpoints.iter())
        .chain(st.plugin.endpoints.values().map(|d| &d.endpoint));
    let host_ends = endpoints
        .filter_map(|e| e.live.as_ref()?.host_if.as_ref())
        .map(|h| h.to_string());
    st.network_links().chain(host_ends).collect()
}

/// Does ferry's `user` chain hold no rule? A chain that cannot be listed (no table yet)
/// holds none.
async fn user_chain_empty<K: KernelOps>(k: &K) -> bool {
    match k.nft("list chain inet ferry user").await {
        Ok(listing) => nft::listed_rules(&listing).values().all(|n| *n == 0),
        Err(_) => true,
    }
}
