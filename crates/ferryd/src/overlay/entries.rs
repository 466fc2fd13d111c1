//! The overlays' routes follow the view: for each local overlay copy, the routes of
//! [`ferry_overlay::Tunnel`] (remote blocks through the VXLAN device, this host's
//! endpoints inside another host's block on the bridge) and one neighbour and FDB entry
//! per remote host the routes go through. What was programmed is remembered per device,
//! so each change of the view costs only the entries it changed; a route is replaced in
//! place when its block changes hands, never removed and re-added.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ferry_dns::{Membership, SandboxRecord};
use ferry_overlay::{Tunnel, View};
use ipnet::Ipv4Net;

use super::Overlay;
use crate::state::State;

/// What is programmed for one local overlay copy.
#[derive(Debug, Clone, Default)]
pub(crate) struct Programmed {
    /// The copy's bridge, which holds the local routes.
    pub(crate) bridge: String,
    /// Through the device: destination → tunnel address (unspecified: found in the
    /// kernel at start, through an unknown host, so replaced or removed).
    pub(crate) remote: BTreeMap<Ipv4Net, Ipv4Addr>,
    pub(crate) local: std::collections::BTreeSet<Ipv4Net>,
    /// The remote hosts' neighbour and FDB entries: tunnel address → MAC.
    pub(crate) hosts: BTreeMap<Ipv4Addr, [u8; 6]>,
}

/// Per VXLAN device of a local copy: its bridge and the routes the view asks for.
pub(crate) fn desired(st: &State, view: &View, me: &str) -> BTreeMap<String, (String, Tunnel)> {
    st.networks
        .values()
        .filter_map(|n| Some((n, n.overlay()?, n.bridge()?)))
        .map(|(n, conf, b)| {
            let tunnel = view.tunnel(&n.id, me);
            (conf.vxlan.to_string(), (b.name.to_string(), tunnel))
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
