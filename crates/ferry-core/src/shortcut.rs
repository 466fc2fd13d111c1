//! Which endpoints and overlay tunnels the shortcut may carry (tc/BPF programs that hand
//! a frame for a neighbour on the same bridge straight to it, one for another host of
//! the same overlay straight to the tunnel, and what the host routes from and to an
//! endpoint straight past the bridge: see ferry-kernel's `shortcut` module and
//! docs/design.md, "The shortcut").
//!
//! The rule is the slow path's: traffic within one network passes ferry's forward chain
//! (`intra`) unless ICC is off, so an endpoint is carried when its network is a bridge
//! or overlay of ferry's with ICC on and the endpoint has a veth and an IPv4 address.
//! What the program cannot see from here (the administrator's `user` chain) is ferryd's
//! gate, not an entry's.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;

use crate::model::{Driver, Endpoint, Network};
use crate::IfName;

/// One endpoint the shortcut carries traffic from and to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Entry {
    /// The endpoint's veth host end, where the program runs.
    pub host_end: IfName,
    /// Its network's bridge: endpoints are neighbours only on the same one.
    pub bridge: IfName,
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    /// Its network's gateway: frames to it (the embedded DNS, the host's services there)
    /// keep the bridge's path, where queries to the DNS are left untracked.
    pub gateway: Ipv4Addr,
    /// Whether the network is an overlay: only then can an address be another host's.
    pub overlay: bool,
}

/// The entry of endpoint `ep` on network `net` (None: unknown), if the shortcut may
/// carry it.
pub fn entry(ep: &Endpoint, net: Option<&Network>) -> Option<Entry> {
    let live = ep.live.as_ref()?;
    let net = net?;
    let bridge = net.bridge()?;
    let eligible = bridge.icc
        && net.pool.is_some()
        && matches!(net.driver(), Driver::Bridge | Driver::Overlay);
    let IpAddr::V4(ip) = live.ip else { return None };
    let IpAddr::V4(gateway) = net.pool.as_ref()?.gateway else {
        return None;
    };
    Some(Entry {
        host_end: live.host_if.clone()?,
        bridge: bridge.name.clone(),
        ip,
        mac: live.mac,
        gateway,
        overlay: net.driver() == Driver::Overlay,
    })
    .filter(|_| eligible)
}

/// One overlay's tunnel on this host, as the shortcut carries it: frames from its
/// endpoints to the blocks other hosts own go straight out of its VXLAN device, and what
/// arrives there for a local endpoint straight in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    /// The overlay's VXLAN device on this host.
    pub device: IfName,
    /// Its bridge on this host.
    pub bridge: IfName,
    /// The device's MAC ([`crate::model::tunnel_mac`] of this host's tunnel address).
    pub mac: [u8; 6],
    /// Each block (or address) another live host holds, and that host's device's MAC:
    /// the destination the host's own route and neighbour entry would give a frame.
    pub remote: Vec<(Ipv4Net, [u8; 6])>,
    /// Addresses inside those blocks that stay on this host: the gateway (the same on
    /// every host, and this host's own), and this host's endpoints inside another host's
    /// block (their /32 routes on the bridge).
    pub stay: Vec<Ipv4Net>,
}

/// The tunnel of an overlay on this host, if the shortcut may carry it (ICC on, as for
/// its endpoints), from its routes: `remote` maps blocks to the hosts' tunnel addresses,
/// `local` holds this host's endpoints inside them.
pub fn tunnel<'a>(
    net: &Network,
    local_vtep: Ipv4Addr,
    remote: impl IntoIterator<Item = (&'a Ipv4Net, &'a Ipv4Addr)>,
    local: impl IntoIterator<Item = &'a Ipv4Net>,
) -> Option<Tunnel> {
    let overlay = net.overlay()?;
    let bridge = net.bridge().filter(|b| b.icc)?;
    let IpAddr::V4(gateway) = net.pool.as_ref()?.gateway else {
        return None;
    };
    let gateway = Ipv4Net::new(gateway, 32).expect("/32 is a valid prefix");
    Some(Tunnel {
        device: overlay.vxlan.clone(),
        bridge: bridge.name.clone(),
        mac: crate::model::tunnel_mac(local_vtep),
        remote: remote
            .into_iter()
            .map(|(block, vtep)| (*block, crate::model::tunnel_mac(*vtep)))
            .collect(),
        stay: std::iter::once(gateway)
            .chain(local.into_iter().copied())
            .collect(),
    })
}

#[cfg(test)]
mod tests;
