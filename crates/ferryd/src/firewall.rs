//! The firewall, derived from the desired state.
//!
//! ferryd keeps the elements ferry's nftables sets must hold in a [`Ledger`], by source
//! (a network, a sandbox, a Docker endpoint). Every commit notes the keys it wrote; the
//! next sync recomputes only those sources' elements ([`source_elements`]) and applies
//! the difference as one transaction, so its cost does not grow with the number of
//! sandboxes. No difference, no call; an attach with no published ports adds only its
//! veth's anti-spoofing element. A full load (skeleton + every element, from
//! [`sources_of`]) happens at start, on
//! `ferry system reconcile`, when the periodic check finds ferry's table gone (someone
//! flushed the ruleset), and after a failed transaction, since then the kernel's
//! contents are not known. When the last bridge goes, ferry's chains and sets go with
//! it; the `user` chain stays.
//!
//! A component, not a part of the daemon: [`Firewall`] holds what it applied and acts
//! through a [`Host`] (the kernel and the host settings it owns); the daemon's
//! operations call it after their commits (crate::ops::firewalling), and nothing here
//! knows the daemon.

use std::path::PathBuf;
use std::time::Duration;

use ferry_core::nft::{self, ledger::Ledger, render, Elements, SetName};
use ferry_kernel::KernelOps;

use crate::br_netfilter::BrNetfilter;
use crate::error::Result;
use crate::state::{Key, State};

/// What the firewall acts through: the kernel, and the br_netfilter choice.
pub struct Host<'a, K> {
    pub kernel: &'a K,
    pub br_netfilter: &'a BrNetfilter,
}

/// The files (in the exec root, which lives as long as the sysctls) that say what
/// ferryd turned on in the host: br_netfilter's calls off, `ip_forward` on.
#[derive(Default)]
pub struct Markers {
    pub br_netfilter: PathBuf,
    pub forwarding: PathBuf,
}

/// Where a set element comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    Net(String),
    Sbx(String),
    DockerEp(String),
    /// The overlay tunnels' port and peers ([`State::tunnel`]).
    Tunnel,
}

impl Source {
    pub(crate) fn of_key(k: &Key) -> Option<Source> {
        match k {
            Key::Net(id) => Some(Source::Net(id.clone())),
            Key::Sbx(id) => Some(Source::Sbx(id.clone())),
            Key::PluginEp(id) => Some(Source::DockerEp(id.clone())),
            Key::Meta | Key::PluginPool(_) | Key::PluginNet(_) => None,
        }
    }
}

/// What ferryd last applied: None until a full load (or after the tables went).
#[derive(Default)]
pub struct Firewall {
    applied: tokio::sync::Mutex<Option<Ledger<Source>>>,
    /// The sets the last periodic check found short, after it reloaded them: the same
    /// shortfall again is logged, not reloaded again (no reload every 5 s).
    short_before: std::sync::Mutex<Vec<String>>,
    /// The options of the last full load: they decide the skeleton's rules, which the
    /// periodic check counts.
    options: std::sync::Mutex<render::Options>,
    /// The sources committed since the last sync (every commit notes its keys).
    pending: std::sync::Mutex<Vec<Source>>,
    markers: Markers,
}

impl Firewall {
    pub fn new(markers: Markers) -> Firewall {
        Firewall {
            markers,
            ..Firewall::default()
        }
    }

    /// A commit wrote these keys: their sources' elements may have changed.
    pub(crate) fn note(&self, keys: &[Key]) {
        let mut p = self.pending.lock().expect("firewall pending lock");
        for s in keys.iter().filter_map(Source::of_key) {
            if !p.contains(&s) {
                p.push(s);
            }
        }
    }

    /// The overlay's tunnel peers changed (not a commit: they follow the cluster).
    pub(crate) fn note_tunnel(&self) {
        let mut p = self.pending.lock().expect("firewall pending lock");
        if !p.contains(&Source::Tunnel) {
            p.push(Source::Tunnel);
        }
    }

    fn take_pending(&self) -> Vec<Source> {
        std::mem::take(&mut *self.pending.lock().expect("firewall pending lock"))
    }
}

/// How often ferryd checks that its table is still there (flushed rulesets, a dockerd
/// that started after ferryd and needs the DOCKER-USER rule).
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

impl Firewall {
    /// Make the kernel's sets match `st`: one transaction of the element delta of the
    /// sources committed since the last sync.
    pub(crate) async fn sync<K: KernelOps>(&self, h: &Host<'_, K>, st: &State) -> Result<()> {
        let changed = self.take_pending();
        let mut applied = self.applied.lock().await;
        let Some(ledger) = applied.as_mut() else {
            let want = Ledger::of(sources_of(st));
            if !want.all().has_bridges() {
                return Ok(());
            }
            return self.load(h, &mut applied, want).await;
        };
        let changes: Vec<(Source, Elements)> = changed
            .into_iter()
            .map(|src| {
                let e = source_elements(st, &src);
                (src, e)
            })
            .collect();
        let delta = ledger.delta_for(&changes);
        if count_after(ledger.all(), &delta, SetName::Bridges) == 0 {
            h.kernel.nft(&render::remove_keeping_user()).await?;
            *applied = None;
            return Ok(());
        }
        // A conditional base chain is hooked only while one of its sets has elements.
        let hook = |sets: &[SetName]| {
            let before = sets.iter().any(|&s| ledger.all().get(s).next().is_some());
            let after = sets
                .iter()
                .any(|&s| count_after(ledger.all(), &delta, s) > 0);
            (before != after).then_some(after)
        };
        let hooks = render::Hooks {
            icc: hook(&[SetName::NoIccPorts]),
            guard: hook(&[SetName::Sources]),
            tunnel: hook(&render::TUNNEL_SETS),
        };
        if let Some(script) = render::delta(&delta, hooks) {
            if let Err(e) = h.kernel.nft(&script).await {
                // The transaction did not apply; the next change reloads everything.
                *applied = None;
                return Err(e.into());
            }
        }
        ledger.replace(changes);
        // Debug builds (every scenario test's ferryd) check the ledger against a full
        // recomputation after each change.
        debug_assert_eq!(
            ledger.all(),
            Ledger::of(sources_of(st)).all(),
            "firewall ledger drifted from the state"
        );
        Ok(())
    }

    /// An attach's firewall step (connect, start): [`Firewall::sync`], or the
    /// fault a test armed at it (`FERRY_FAULT=attach:nft`), which fails as a refused
    /// transaction would: nothing applied. It fails whether or not the endpoint brings
    /// elements.
    pub(crate) async fn attach<K: KernelOps>(&self, h: &Host<'_, K>, st: &State) -> Result<()> {
        h.kernel.fault(ferry_kernel::AttachStep::Nft)?;
        self.sync(h, st).await
    }

    /// For teardown paths, which go on whatever happens: a failure is logged and the
    /// next change (or the periodic check) loads the whole firewall again.
    pub(crate) async fn sync_or_warn<K: KernelOps>(&self, h: &Host<'_, K>, st: &State, what: &str) {
        if let Err(e) = self.sync(h, st).await {
            tracing::warn!("{what}: firewall: {e}");
        }
    }

    /// Re-create ferry's tables from `st` whatever the kernel holds now.
    pub async fn load_all<K: KernelOps>(&self, h: &Host<'_, K>, st: &State) -> Result<()> {
        self.take_pending();
        let want = Ledger::of(sources_of(st));
        let mut applied = self.applied.lock().await;
        if !want.all().has_bridges() {
            *applied = None;
            return Ok(());
        }
        self.load(h, &mut applied, want).await
    }

    async fn load<K: KernelOps>(
        &self,
        h: &Host<'_, K>,
        applied: &mut Option<Ledger<Source>>,
        want: Ledger<Source>,
    ) -> Result<()> {
        let opts = render::Options {
            guard_forwarding: self.enable_forwarding(h).await,
        };
        h.br_netfilter
            .apply(h.kernel, &self.markers.br_netfilter)
            .await;
        h.kernel.nft(&render::full(want.all(), opts)).await?;
        *self.options.lock().expect("options lock") = opts;
        *applied = Some(want);
        self.ensure_docker_user(h).await;
        Ok(())
    }

    /// Turn `ip_forward` on; true when ferryd is the one that turned it on (now, or
    /// earlier since boot: a marker in the exec root, which lives as long as the sysctl).
    async fn enable_forwarding<K: KernelOps>(&self, h: &Host<'_, K>) -> bool {
        let marker = &self.markers.forwarding;
        match h.kernel.sysctl(&["net", "ipv4", "ip_forward"], "1").await {
            Ok(true) => {
                if let Err(e) = std::fs::write(marker, "") {
                    tracing::warn!("firewall: write {}: {e}", marker.display());
                }
                true
            }
            Ok(false) => marker.exists(),
            Err(e) => {
                tracing::warn!("firewall: {e}");
                false
            }
        }
    }

    /// `system cleanup`: ferry's DOCKER-USER rule goes, and `ip_forward` goes back off if
    /// ferryd turned it on.
    pub(crate) async fn undo_host_changes<K: KernelOps>(&self, h: &Host<'_, K>) -> Vec<String> {
        let mut errors = vec![];
        if let Ok(chain) = h.kernel.nft("list chain ip filter DOCKER-USER").await {
            if let Some(del) = render::docker_user_delete(&chain) {
                if let Err(e) = h.kernel.nft(&del).await {
                    errors.push(e.to_string());
                }
            }
        }
        let marker = &self.markers.forwarding;
        if marker.exists() {
            if let Err(e) = h.kernel.sysctl(&["net", "ipv4", "ip_forward"], "0").await {
                errors.push(e.to_string());
            }
            let _ = std::fs::remove_file(marker);
        }
        errors
    }

    /// With dockerd on the host (iptables-nft), its FORWARD policy DROP would drop what
    /// ferry's chains accept: one rule in DOCKER-USER lets ferry's marked packets pass.
    async fn ensure_docker_user<K: KernelOps>(&self, h: &Host<'_, K>) {
        let Ok(chain) = h.kernel.nft("list chain ip filter DOCKER-USER").await else {
            return;
        };
        if chain.contains("comment \"ferry\"") {
            return;
        }
        match h.kernel.nft(&render::docker_user_rule()).await {
            Ok(_) => tracing::info!("firewall: DOCKER-USER now accepts ferry's traffic"),
            Err(e) => tracing::warn!("firewall: DOCKER-USER: {e}"),
        }
    }

    /// The tables were removed by hand: the next change loads them whole.
    pub(crate) async fn forget(&self) {
        *self.applied.lock().await = None;
    }

    /// The periodic check: ferry's table is back if someone removed it, and the
    /// DOCKER-USER rule is there if dockerd appeared.
    pub async fn check<K: KernelOps>(&self, h: &Host<'_, K>, state: &tokio::sync::Mutex<State>) {
        let loaded = self.applied.lock().await.is_some();
        if !loaded {
            // Not loaded (no bridge yet, or a transaction failed): load it if the state
            // has bridges; a no-op otherwise.
            let st = state.lock().await;
            if let Err(e) = self.load_all(h, &st).await {
                tracing::warn!("firewall: load: {e}");
            }
            return;
        }
        if h.kernel.nft("list chain inet ferry forward").await.is_err() {
            tracing::warn!("firewall: ferry's table is gone; restoring it");
            let st = state.lock().await;
            if let Err(e) = self.load_all(h, &st).await {
                tracing::error!("firewall: restore: {e}");
            }
            return;
        }
        self.check_contents(h, state).await;
        self.ensure_docker_user(h).await;
    }

    /// A set element or a rule deleted by hand (a published port's element, an
    /// isolation rule, the anti-spoofing hook) is missed: each of ferry's sets and chains,
    /// in both tables, must hold at least the elements ferryd last applied (the ledger)
    /// and the rules that ledger calls for, else the tables are loaded whole again from
    /// the state. The listing is read under the ledger's lock, which every apply holds.
    async fn check_contents<K: KernelOps>(
        &self,
        h: &Host<'_, K>,
        state: &tokio::sync::Mutex<State>,
    ) {
        let short: Vec<String> = {
            let applied = self.applied.lock().await;
            let Some(ledger) = applied.as_ref() else {
                return;
            };
            let opts = *self.options.lock().expect("options lock");
            let rules = render::wanted_rules(ledger.all(), opts);
            let mut short = vec![];
            for table in ["inet ferry", "bridge ferry"] {
                // A table that cannot be listed (deleted by hand) holds nothing.
                let listing = match h.kernel.nft(&format!("list table {table}")).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!("firewall: list {table}: {e}");
                        String::new()
                    }
                };
                let want = nft::wanted_counts(ledger.all(), table);
                short.extend(shortfall(want, nft::listed_counts(&listing), "set"));
                let want = rules.iter().filter(|((t, _), _)| *t == table);
                let want = want.map(|((_, chain), n)| (*chain, *n)).collect();
                short.extend(shortfall(want, nft::listed_rules(&listing), "chain"));
            }
            short
        };
        let reload = {
            let mut before = self.short_before.lock().expect("short lock");
            let reload = !short.is_empty() && *before != short;
            *before = short.clone();
            reload
        };
        if !reload {
            return;
        }
        tracing::warn!("firewall: missing from {}; restoring", short.join(", "));
        let st = state.lock().await;
        if let Err(e) = self.load_all(h, &st).await {
            tracing::error!("firewall: restore: {e}");
        }
    }
}

/// What `have` lacks of `want`, one line per set or chain: "set pub_any (1 of 2)".
fn shortfall(
    want: std::collections::BTreeMap<&'static str, usize>,
    have: std::collections::BTreeMap<String, usize>,
    what: &str,
) -> Vec<String> {
    let have = |name: &str| have.get(name).copied().unwrap_or(0);
    want.into_iter()
        .filter(|(name, n)| have(name) < *n)
        .map(|(name, n)| format!("{what} {name} ({} of {n})", have(name)))
        .collect()
}

/// Every source `st` holds: its networks, sandboxes, Docker endpoints and the tunnel.
pub(crate) fn all_sources(st: &State) -> impl Iterator<Item = Source> + '_ {
    let nets = st.networks.keys().map(|id| Source::Net(id.clone()));
    let sbxs = st.sandboxes.keys().map(|id| Source::Sbx(id.clone()));
    let eps = st
        .plugin
        .endpoints
        .keys()
        .map(|id| Source::DockerEp(id.clone()));
    let tunnel = st.tunnel.as_ref().map(|_| Source::Tunnel);
    nets.chain(sbxs).chain(eps).chain(tunnel)
}

/// Every source's elements for `st`: ferry's networks, its running sandboxes and the
/// endpoints the Docker plugin keeps for dockerd's containers.
fn sources_of(st: &State) -> Vec<(Source, Elements)> {
    all_sources(st)
        .map(|src| {
            let e = source_elements(st, &src);
            (src, e)
        })
        .filter(|(_, e)| e.count() > 0)
        .collect()
}

/// One source's elements in `st` (none if it is gone, or a sandbox that is not running).
fn source_elements(st: &State, src: &Source) -> Elements {
    let of_endpoints = |eps: &mut dyn Iterator<Item = &ferry_core::model::Endpoint>| {
        let mut e = Elements::default();
        for ep in eps {
            e.extend(nft::endpoint_elements(ep, st.networks.get(&ep.network_id)));
        }
        e
    };
    match src {
        Source::Net(id) => st
            .networks
            .get(id)
            .map(nft::network_elements)
            .unwrap_or_default(),
        Source::Sbx(id) => match st.sandboxes.get(id).filter(|s| s.is_running()) {
            Some(sb) => of_endpoints(&mut sb.endpoints.iter()),
            None => Elements::default(),
        },
        Source::DockerEp(id) => match st.plugin.endpoints.get(id) {
            Some(d) => of_endpoints(&mut std::iter::once(&d.endpoint)),
            None => Elements::default(),
        },
        Source::Tunnel => st
            .tunnel
            .as_ref()
            .map(|t| nft::tunnel_elements(t.port, &t.peers))
            .unwrap_or_default(),
    }
}

/// How many elements `set` holds once `delta` is applied to `now`.
fn count_after(now: &Elements, delta: &nft::Delta, set: SetName) -> usize {
    let gone = delta.delete.iter().filter(|(s, _)| *s == set);
    let new = delta.add.iter().filter(|(s, _, _)| *s == set);
    (now.get(set).count() + new.count()).saturating_sub(gone.count())
}
