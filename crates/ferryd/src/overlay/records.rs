//! What this host's state says about overlays, as the cluster's records and back: a
//! local copy of an overlay, this host's endpoints as records, a claimed block in the
//! copy's pool. Pure: the daemon's overlay operations (crate::ops::overlay) call them.

use std::net::Ipv4Addr;

use ferry_core::family::v4;
use ferry_core::ipam::AddressPool;
use ferry_core::model::{
    mac_for, overlay_if_names, BridgeConf, Network, NetworkKind, OverlayConf, Sandbox,
};
use ferry_core::remote::DOCKER_IPAM_OWNER;
use ferry_overlay::{EndpointRecord, OverlayNetwork};
use ipnet::IpNet;

use crate::state::State;

/// The local copy of an overlay: a bridge network whose pool allocates in this host's
/// block (none yet: claimed on first use).
pub(crate) fn local_copy(ov: &OverlayNetwork, mtu: u32) -> Network {
    let (bridge, vxlan) = overlay_if_names(&ov.id);
    Network {
        id: ov.id.clone(),
        name: ov.name.clone(),
        created: ov.created.clone(),
        kind: NetworkKind::Overlay {
            bridge: BridgeConf {
                name: bridge,
                mtu,
                icc: true,
                masquerade: !ov.internal,
                adopted: false,
            },
            tunnel: OverlayConf { vni: ov.vni, vxlan },
        },
        internal: ov.internal,
        attachable: ov.attachable,
        predefined: false,
        labels: ov.labels.clone(),
        options: ov.options.clone(),
        ipam_options: None,
        ipam_echo: ov.ipam_echo.clone(),
        pool: Some(AddressPool::new(ov.subnet.into(), ov.gateway.into(), None)),
        ipam_plugin: None,
    }
}

/// The sandbox name of an address ferry's IPAM gave dockerd on an overlay that no
/// endpoint holds yet (a static `--ip` between RequestAddress and CreateEndpoint): its
/// record is published under this name, with no DNS names.
pub(crate) const DOCKER_HELD: &str = "docker-ipam";

/// This host's endpoints on overlays, as records: live ones, and those holding a static
/// address (claimed in etcd before the sandbox runs); dockerd's containers' too (their
/// names stay with dockerd: Docker's DNS answers them, on their own host), and the
/// static addresses dockerd holds outside this host's blocks, so their claims stand.
pub(crate) fn own_endpoints(st: &State, node: &str, vtep: Ipv4Addr) -> Vec<EndpointRecord> {
    let mut out = Vec::new();
    for net in st.networks.values().filter(|n| n.overlay().is_some()) {
        let Some(pool) = &net.pool else { continue };
        let held = pool
            .allocations()
            .iter()
            .filter(|(ip, owner)| {
                owner.as_str() == DOCKER_IPAM_OWNER
                    && !pool.range.iter().chain(&pool.more).any(|b| b.contains(*ip))
            })
            .filter_map(|(ip, _)| v4(*ip));
        out.extend(held.map(|ip| EndpointRecord {
            network: net.id.clone(),
            ip,
            mac: mac_for(ip.into()),
            node: node.to_string(),
            vtep,
            sandbox: DOCKER_HELD.to_string(),
            names: vec![],
        }));
    }
    for d in st.plugin.endpoints.values() {
        let on_overlay = st
            .networks
            .get(&d.endpoint.network_id)
            .is_some_and(|n| n.overlay().is_some());
        let Some(live) = d.endpoint.live.as_ref().filter(|_| on_overlay) else {
            continue;
        };
        let Some(ip) = v4(live.ip) else { continue };
        let sandbox = d
            .sandbox_key
            .as_deref()
            .and_then(|k| k.rsplit('/').next())
            .unwrap_or(&d.id[..12]);
        out.push(EndpointRecord {
            network: d.endpoint.network_id.clone(),
            ip,
            mac: live.mac,
            node: node.to_string(),
            vtep,
            sandbox: format!("docker-{sandbox}"),
            names: vec![],
        });
    }
    for sb in st.sandboxes.values() {
        for e in &sb.endpoints {
            let Some(net) = st
                .networks
                .get(&e.network_id)
                .filter(|n| n.overlay().is_some())
            else {
                continue;
            };
            let (ip, mac) = match (&e.live, e.static_ip) {
                (Some(l), _) => (l.ip, l.mac),
                (None, Some(ip)) => (ip, mac_for(ip)),
                (None, None) => continue,
            };
            // The overlay's records are IPv4.
            let Some(ip) = v4(ip) else { continue };
            out.push(EndpointRecord {
                network: net.id.clone(),
                ip,
                mac,
                node: node.to_string(),
                vtep,
                sandbox: sb.name.clone(),
                names: names_of(sb, &e.aliases),
            });
        }
    }
    out.sort_by(|a, b| (&a.network, a.ip).cmp(&(&b.network, b.ip)));
    out
}

fn names_of(sb: &Sandbox, aliases: &[String]) -> Vec<String> {
    let mut names = vec![sb.name.clone(), sb.hostname.clone()];
    names.extend(aliases.iter().cloned());
    names.retain(|n| !n.is_empty());
    names
}

/// A block this host claimed in etcd, into its copy of the overlay's pool: the range
/// dynamic addresses come from first, then the further spans; the static addresses
/// other hosts hold in it are marked taken.
pub(crate) fn take_block(pool: &mut AddressPool, block: ferry_overlay::cluster::Block) {
    let b = IpNet::V4(block.block);
    if pool.range == Some(b) || pool.more.contains(&b) {
        return;
    }
    match pool.range {
        None => pool.range = Some(b),
        Some(_) => pool.more.push(b),
    }
    for ip in block.foreign {
        pool.hold(ip.into(), "another host".into());
    }
}
