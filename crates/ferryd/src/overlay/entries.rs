//! The VXLAN devices' entries follow the view: for each local overlay copy, one FDB and
//! one neighbour entry per endpoint other hosts hold, replaced when it changed, removed
//! when it went. What was programmed is remembered per device, so each change of the
//! view costs only the entries it changed.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ferry_dns::{Membership, SandboxRecord};
use ferry_kernel::KernelOps;
use ferry_overlay::View;

use super::Overlay;
use crate::ops::Daemon;
use crate::state::State;

/// A device's remote endpoints: IP → (MAC, tunnel address).
pub(crate) type Entries = BTreeMap<Ipv4Addr, ([u8; 6], Ipv4Addr)>;

/// Per VXLAN device of a local copy, the entries the view asks for.
fn desired(st: &State, view: &View, me: &str) -> BTreeMap<String, Entries> {
    let remote = view.remote_endpoints(me);
    st.networks
        .values()
        .filter_map(|n| Some((n, n.overlay()?)))
        .map(|(n, conf)| {
            let entries = remote
                .get(&n.id)
                .into_iter()
                .flatten()
                .map(|e| (e.ip, (e.mac, e.vtep)))
                .collect();
            (conf.vxlan.to_string(), entries)
        })
        .collect()
}

/// The names other hosts' sandboxes have on overlays this host has a copy of.
pub(crate) fn remote_records(st: &State, view: &View, me: &str) -> BTreeMap<String, SandboxRecord> {
    let mut out = BTreeMap::new();
    for (net, eps) in view.remote_endpoints(me) {
        if st.networks.get(&net).is_none_or(|n| n.overlay().is_none()) {
            continue;
        }
        for e in eps {
            out.insert(
                format!("remote/{net}/{}", e.ip),
                SandboxRecord {
                    memberships: vec![Membership {
                        network: net.clone(),
                        ip: e.ip,
                        names: e.names.clone(),
                    }],
                    ..SandboxRecord::default()
                },
            );
        }
    }
    out
}

impl Overlay {
    /// Forget what was programmed on a device that is gone.
    pub(crate) async fn forget_device(&self, dev: &str) {
        self.programmed.lock().await.remove(dev);
    }
}

impl<K: KernelOps> Daemon<K> {
    /// Make every local copy's entries match the view, and the DNS table its names.
    pub(crate) async fn sync_entries(&self, ov: &Overlay) {
        let view = ov.view();
        let (want, names) = {
            let st = self.state.lock().await;
            (
                desired(&st, &view, ov.node()),
                remote_records(&st, &view, ov.node()),
            )
        };
        self.dns.set_remote(names);
        let mut programmed = ov.programmed.lock().await;
        for (dev, entries) in &want {
            if !programmed.contains_key(dev) {
                // First sight of this device in this ferryd: what the kernel holds may be
                // a previous run's, made stale while no ferryd watched. Taken as unknown
                // (no tunnel address), so each is either replaced or removed below.
                let held = self.kernel.overlay_entries(dev).await.unwrap_or_default();
                let seeded = held
                    .into_iter()
                    .map(|(ip, mac)| (ip, (mac, Ipv4Addr::UNSPECIFIED)))
                    .collect();
                programmed.insert(dev.clone(), seeded);
            }
            let had = programmed.entry(dev.clone()).or_default();
            for (ip, (mac, _)) in had.clone().iter() {
                if !entries.contains_key(ip) {
                    match self.kernel.overlay_entry_delete(dev, *mac, *ip).await {
                        Ok(()) => {
                            had.remove(ip);
                        }
                        Err(e) => tracing::warn!("overlay: {e}"),
                    }
                }
            }
            for (ip, (mac, vtep)) in entries {
                if had.get(ip) == Some(&(*mac, *vtep)) {
                    continue;
                }
                if let Some((old, _)) = had.get(ip).filter(|(m, _)| m != mac) {
                    let _ = self.kernel.overlay_entry_delete(dev, *old, *ip).await;
                }
                match self
                    .kernel
                    .overlay_entry_replace(dev, *mac, *ip, *vtep)
                    .await
                {
                    Ok(()) => {
                        had.insert(*ip, (*mac, *vtep));
                    }
                    Err(e) => tracing::warn!("overlay: {e}"),
                }
            }
        }
        programmed.retain(|dev, _| want.contains_key(dev));
    }
}
