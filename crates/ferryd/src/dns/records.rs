//! The responder's view of the desired state: one record per sandbox with names.
//! Pure functions of the state.

use std::net::{IpAddr, SocketAddr};

use ferry_core::model::{Network, Sandbox};
use ferry_dns::{Membership, SandboxRecord};

use crate::state::State;

/// Networks whose sandboxes find each other by name: user-defined bridges.
pub(super) fn has_names(n: &Network) -> bool {
    (n.driver().is_bridged() || n.remote().is_some()) && !n.predefined
}

/// What a sandbox's record takes from a network besides its ID: a change of anything
/// else (its address pool, its labels) changes no record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct NetKind {
    names: bool,
    internal: bool,
}

impl NetKind {
    pub(super) fn of(n: &Network) -> NetKind {
        NetKind {
            names: has_names(n),
            internal: n.internal,
        }
    }
}

/// The responder's view of the state: every running sandbox with an endpoint on a
/// network with names.
pub fn records(st: &State) -> Vec<SandboxRecord> {
    st.sandboxes
        .values()
        .filter_map(|sb| record_of(st, sb))
        .collect()
}

/// One sandbox as the responder sees it; `None` unless it has a live endpoint on a
/// network with names.
pub fn record_of(st: &State, sb: &Sandbox) -> Option<SandboxRecord> {
    let mut rec = SandboxRecord {
        forward: false,
        upstreams: sb
            .dns
            .servers
            .iter()
            .filter_map(|s| s.parse::<IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, 53))
            .collect(),
        ..Default::default()
    };
    for e in &sb.endpoints {
        let (Some(live), Some(net)) = (&e.live, st.networks.get(&e.network_id)) else {
            continue;
        };
        rec.forward |= !net.internal;
        // A records only, for now: an IPv6 endpoint has no name here yet.
        let Some(ip) = ferry_core::family::v4(live.ip) else {
            continue;
        };
        // The way out ferry added has no names, as dockerd's docker_gwbridge endpoint.
        if has_names(net) && e.membership.is_asked() {
            let mut names = vec![sb.name.clone()];
            names.push(sb.hostname.clone());
            names.extend(e.aliases.iter().cloned());
            names.retain(|n| !n.is_empty());
            rec.memberships.push(Membership {
                network: net.id.clone(),
                ip,
                names,
            });
        } else {
            rec.other_addrs.push(ip);
        }
    }
    (!rec.memberships.is_empty()).then_some(rec)
}
