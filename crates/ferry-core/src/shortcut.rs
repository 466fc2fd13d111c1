//! Which endpoints the same-network shortcut may carry (a tc/BPF program on each veth
//! host end that hands a frame for a neighbour on the same bridge straight to it: see
//! ferry-kernel's `shortcut` module and docs/design.md, "The shortcut").
//!
//! The rule is the slow path's: traffic within one network passes ferry's forward chain
//! (`intra`) unless ICC is off, so an endpoint is carried when its network is a bridge
//! or overlay of ferry's with ICC on and the endpoint has a veth and an IPv4 address.
//! What the program cannot see from here (the administrator's `user` chain) is ferryd's
//! gate, not an entry's.

use std::net::{IpAddr, Ipv4Addr};

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
    Some(Entry {
        host_end: live.host_if.clone()?,
        bridge: bridge.name.clone(),
        ip,
        mac: live.mac,
    })
    .filter(|_| eligible)
}

#[cfg(test)]
mod tests;
