//! Reconcile on start: make the kernel match the store.
//!
//! Bridges of known networks are (re)created; sandboxes whose process died while
//! ferryd was away are stopped (network released, `--rm` honoured); every endpoint the
//! store records on a running sandbox is checked against the kernel (host veth on its
//! bridge and up, the sandbox side up with its address, the default route) and wired
//! again where it is not — a SIGKILL between a connect's commit and the end of its
//! kernel work, or a bridge or veth deleted by hand, leaves such endpoints; then every kernel
//! object ferry owns but the store does not know is removed: `fy*` links, pinned
//! namespaces under the exec root, `ferry-*` links in the netns dir, sandbox dirs.
//! Last, ferry's nftables tables are loaded whole from the state.
//! Allocations are never rebuilt from the kernel: the store is the truth.

use std::collections::HashSet;
use std::sync::Arc;

use ferry_core::model::RunState;
use ferry_kernel::{netns, KernelOps};

use crate::error::Result;
use crate::ops::supervise::alive;
use crate::ops::{Daemon, ExitReport};

pub async fn reconcile<K: KernelOps>(d: &Arc<Daemon<K>>) -> Result<()> {
    netns::pin_current(&d.cfg.host_netns())?;
    d.ensure_predefined().await?;
    ensure_bridges(d).await;
    stop_dead_sandboxes(d).await?;
    rewire_endpoints(d).await;
    settle_way_outs(d).await;
    if let Err(e) = d.plugin_reconcile().await {
        tracing::warn!("reconcile Docker endpoints: {e}");
    }
    remove_orphans(d).await;
    sync_overlays(d).await;
    let st = d.state.lock().await;
    d.load_firewall(&st).await
}

/// Overlays: their VXLAN devices and remote entries, from the cluster's view.
async fn sync_overlays<K: KernelOps>(d: &Arc<Daemon<K>>) {
    if let Some(ov) = d.overlay.get() {
        d.sync_networks(ov).await;
        d.sync_entries(ov).await;
    }
}

/// The periodic check of what endpoints stand on: every [`crate::firewall::CHECK_EVERY`],
/// one dump of the link names and one of the routes; if a network's bridge or a running
/// sandbox's host-side veth is missing (deleted by hand), or a bridge lost its gateway
/// address (its subnet's route went with it), reconcile, which makes the bridge again,
/// with its address, and wires its endpoints anew. A link an operation in progress has not made yet looks missing
/// too: it must still be missing a second later, and even then the rewire waits for that
/// sandbox's turn and finds it wired.
pub fn watch<K: KernelOps>(d: Arc<Daemon<K>>) {
    tokio::spawn(async move {
        let mut t = tokio::time::interval(crate::firewall::CHECK_EVERY);
        t.tick().await;
        loop {
            t.tick().await;
            if d.is_leaving() {
                return;
            }
            check_wiring(&d).await;
        }
    });
}

/// One turn of [`watch`]: rewire if something is still missing a second after it was
/// first seen missing; nothing once ferryd is leaving.
async fn check_wiring<K: KernelOps>(d: &Arc<Daemon<K>>) {
    const SETTLE: std::time::Duration = std::time::Duration::from_secs(1);
    let Some(_turn) = d.check_turn().await else {
        return;
    };
    if let Some(ov) = d.overlay.get() {
        d.check_entries(ov).await;
    }
    if first_missing(d).await.is_none() {
        return;
    }
    // Still missing a moment later: not an attach in flight (milliseconds), so
    // a burst of `run -d` does not make every check rewire every sandbox.
    tokio::time::sleep(SETTLE).await;
    let Some(missing) = first_missing(d).await else {
        return;
    };
    tracing::warn!("reconcile: {missing} is gone; wiring again");
    if let Err(e) = rewire(d).await {
        tracing::error!("reconcile: {e}");
    }
}

/// The part of reconcile that puts back what was deleted under a running ferryd: the
/// bridges, the endpoints on them, the firewall. (Sandboxes whose process died are the
/// process monitor's business while ferryd runs.)
async fn rewire<K: KernelOps>(d: &Arc<Daemon<K>>) -> Result<()> {
    ensure_bridges(d).await;
    rewire_endpoints(d).await;
    sync_overlays(d).await;
    let st = d.state.lock().await;
    d.load_firewall(&st).await
}

/// The first thing the kernel lost: "link NAME", or "the address of bridge NAME".
async fn first_missing<K: KernelOps>(d: &Daemon<K>) -> Option<String> {
    if let Some(link) = first_missing_link(d).await {
        return Some(format!("link {link}"));
    }
    first_bridge_without_address(d)
        .await
        .map(|b| format!("the address of bridge {b}"))
}

/// A bridge whose gateway address is gone: its subnet's connected route is missing.
async fn first_bridge_without_address<K: KernelOps>(d: &Daemon<K>) -> Option<String> {
    let expected: Vec<(String, ipnet::IpNet)> = {
        let st = d.state.lock().await;
        st.networks
            .values()
            .filter_map(ferry_core::plan::network::bridge_spec)
            .filter_map(|b| Some((b.name, b.gateway?.trunc())))
            .collect()
    };
    if expected.is_empty() {
        return None;
    }
    let routes: HashSet<ipnet::IpNet> = match d.kernel.route_destinations().await {
        Ok(r) => r.into_iter().collect(),
        Err(e) => {
            tracing::warn!("reconcile: list routes: {e}");
            return None;
        }
    };
    expected
        .into_iter()
        .find(|(_, subnet)| !routes.contains(subnet))
        .map(|(name, _)| name)
}

async fn first_missing_link<K: KernelOps>(d: &Daemon<K>) -> Option<String> {
    let expected: Vec<String> = {
        let st = d.state.lock().await;
        let veths = st
            .sandboxes
            .values()
            .filter(|s| s.is_running())
            .flat_map(|s| s.endpoints.iter().filter_map(|e| e.live.as_ref()))
            .filter_map(|l| l.host_if.as_ref().map(|h| h.to_string()))
            // plughost: a plugin's endpoint has no host link (its link is in the sandbox).
            .filter(|l| !crate::ops::plughost::is_plugin_link(&d.cfg.plughost, l));
        st.network_links().chain(veths).collect()
    };
    if expected.is_empty() {
        return None;
    }
    let present: HashSet<String> = match d.kernel.link_names().await {
        Ok(names) => names.into_iter().collect(),
        Err(e) => {
            tracing::warn!("reconcile: list links: {e}");
            return None;
        }
    };
    expected.into_iter().find(|l| !present.contains(l))
}

async fn ensure_bridges<K: KernelOps>(d: &Daemon<K>) {
    let st = d.state.lock().await;
    for n in st.networks.values() {
        if let Some(spec) = ferry_core::plan::network::bridge_spec(n) {
            if let Err(e) = d.prepare_bridge(&spec).await {
                tracing::error!("reconcile network {}: {e}", n.name);
            }
        }
    }
}

async fn stop_dead_sandboxes<K: KernelOps>(d: &Daemon<K>) -> Result<()> {
    let dead: Vec<(String, u32)> = {
        let st = d.state.lock().await;
        st.sandboxes
            .values()
            .filter_map(|s| match s.state {
                RunState::Running { pid, start_time } => {
                    let ns_ok = !s.network_mode.own_netns()
                        || netns::is_pinned(&d.cfg.sandbox_netns(&s.id));
                    (pid == 0 || !alive(pid, start_time) || !ns_ok).then(|| (s.id.clone(), pid))
                }
                _ => None,
            })
            .collect()
    };
    for (id, _) in dead {
        // Judge again in the sandbox's turn: `ferry system reconcile` runs while ferryd
        // serves, and a start in progress (pid 0 until its process runs) holds the turn.
        let Ok((turn, st)) = d.sandbox_turn(&id).await else {
            continue;
        };
        let (pid, living) = match st.sandboxes.get(&id).map(|s| (&s.state, s)) {
            Some((RunState::Running { pid, start_time }, s)) => {
                let ns_ok =
                    !s.network_mode.own_netns() || netns::is_pinned(&d.cfg.sandbox_netns(&s.id));
                let living = *pid != 0 && alive(*pid, *start_time);
                if living && ns_ok {
                    continue;
                }
                (*pid, living)
            }
            _ => continue,
        };
        drop(st);
        drop(turn);
        // Only a process that is still the sandbox's (same start time): a pid that died
        // may have been given to another process since.
        if living {
            crate::ops::supervise::kill(pid);
        }
        // A process whose pid never reached the store (ferryd killed between the spawn
        // and the commit of its pid) still runs in the sandbox's namespace: find it
        // there, before the namespace goes and with it any way to tell it is ferry's.
        crate::ops::supervise::kill_in_netns(&d.cfg.sandbox_netns(&id), &id);
        d.on_exit(&id, ExitReport { pid, code: -1 }).await?;
    }
    Ok(())
}

/// The running sandboxes that have networks (neither host nor none).
async fn running_on_networks<K: KernelOps>(d: &Daemon<K>) -> Vec<String> {
    let st = d.state.lock().await;
    st.sandboxes
        .values()
        .filter(|s| s.is_running() && s.network_mode.joins_networks())
        .map(|s| s.id.clone())
        .collect()
}

/// Give every running sandbox the way out its networks call for (`docker_gwbridge` when a
/// plugin's network gave none): a ferryd stopped between a plugin's `Join` and the
/// gateway bridge's connect, or a settle that failed after a disconnect, left it
/// without one. Each sandbox in its turn; a failure is logged.
async fn settle_way_outs<K: KernelOps>(d: &Daemon<K>) {
    for id in running_on_networks(d).await {
        let Ok((turn, st)) = d.sandbox_turn(&id).await else {
            continue; // removed meanwhile
        };
        drop(st);
        if let Err(e) = d.settle_way_out(&turn).await {
            tracing::warn!("reconcile: the way out of sandbox {id}: {e}");
        }
    }
}

/// Check every live endpoint of every running sandbox with a namespace of its own, and
/// wire again what is not wired. Each sandbox is checked in its turn (the lock its
/// connect, disconnect, start and stop take), so an attach in progress is never taken for
/// a broken one. A failure is logged; the endpoint stays recorded for the next reconcile.
async fn rewire_endpoints<K: KernelOps>(d: &Daemon<K>) {
    for id in running_on_networks(d).await {
        let Ok((turn, st)) = d.sandbox_turn(&id).await else {
            continue; // removed meanwhile
        };
        let Some(sb) = st.sandboxes.get(&turn.id).filter(|s| s.is_running()) else {
            continue;
        };
        let netns = d.netns_path(sb);
        if !netns::is_pinned(&netns) {
            continue; // stop_dead_sandboxes' case
        }
        let specs: Vec<(String, ferry_kernel::AttachSpec)> = sb
            .endpoints
            .iter()
            .filter_map(|e| {
                let live = e.live.as_ref()?;
                let net = st.networks.get(&e.network_id)?;
                let spec = ferry_core::plan::attach::attach_spec(live, &net.kind, netns.clone())?;
                Some((net.name.clone(), spec))
            })
            .collect();
        let name = sb.name.clone();
        drop(st);
        for (net, spec) in specs {
            match d.kernel.ensure_attached(&spec).await {
                Ok(problems) if problems.is_empty() => {}
                Ok(problems) => tracing::warn!(
                    "reconcile: sandbox {name} on network {net}: {}; wired again",
                    problems.join(", ")
                ),
                Err(e) => {
                    tracing::error!("reconcile: sandbox {name} on network {net}: rewire: {e}")
                }
            }
        }
        drop(turn);
    }
}

async fn remove_orphans<K: KernelOps>(d: &Daemon<K>) {
    let st = d.state.lock().await;
    let mut links: HashSet<String> = st
        .networks
        .values()
        .filter_map(|n| n.bridge())
        .map(|b| b.name.to_string())
        .collect();
    let mut ns_files: HashSet<String> = HashSet::from(["default".to_string()]);
    let mut ns_links = HashSet::new();
    for s in st.sandboxes.values().filter(|s| s.is_running()) {
        links.extend(
            s.endpoints
                .iter()
                .filter_map(|e| e.live.as_ref())
                .filter_map(|l| l.host_if.as_ref().map(|h| h.to_string())),
        );
        ns_files.insert(s.id[..12].to_string());
        ns_links.insert(format!("ferry-{}", s.name));
    }
    links.extend(st.plugin.endpoints.values().flat_map(|e| e.links()));
    let known_dirs: HashSet<String> = st.sandboxes.keys().cloned().collect();
    // `st` stays locked to the end: `ferry system reconcile` runs while ferryd serves,
    // and a link or namespace made by a concurrent start must not look like an orphan.
    match d.kernel.link_names().await {
        Ok(names) => {
            for l in names.iter().filter(|l| ours(l) && !links.contains(*l)) {
                tracing::info!("reconcile: removing orphan link {l}");
                if let Err(e) = d.kernel.delete_link(l).await {
                    tracing::warn!("reconcile: {e}");
                }
            }
        }
        Err(e) => tracing::warn!("reconcile: {e}"),
    }
    for name in dir_names(&d.cfg.netns_root())
        .into_iter()
        .filter(|n| !ns_files.contains(n))
    {
        tracing::info!("reconcile: removing orphan namespace {name}");
        crate::ops::supervise::kill_in_netns(&d.cfg.netns_root().join(&name), &name);
        if let Err(e) = d.kernel.remove_netns(&d.cfg.netns_root().join(&name)).await {
            tracing::warn!("reconcile: {e}");
        }
    }
    for name in dir_names(&d.cfg.netns_dir)
        .into_iter()
        .filter(|n| n.starts_with("ferry-") && !ns_links.contains(n))
    {
        if let Err(e) = d.kernel.unname_netns(&d.cfg.netns_dir.join(name)).await {
            tracing::warn!("reconcile: {e}");
        }
    }
    let sdir = d.cfg.exec_root.join("sandboxes");
    for name in dir_names(&sdir)
        .into_iter()
        .filter(|n| !known_dirs.contains(n))
    {
        let _ = std::fs::remove_dir_all(sdir.join(name));
    }
}

fn dir_names(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A link this ferryd names: its prefix's (`fy…`), or its default bridge (`ferry0`).
fn ours(link: &str) -> bool {
    link.starts_with(ferry_core::instance::link_prefix())
        || link == ferry_core::model::default_bridge_if()
}
