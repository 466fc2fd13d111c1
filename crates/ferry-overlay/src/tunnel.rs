//! What one host programs for one overlay, derived from its view: routes, not one entry
//! per remote sandbox.
//!
//! Design note. Each host owns address blocks of an overlay's subnet, so the host that
//! holds an address is known from the blocks alone. A host routes each block another live
//! host owns through its VXLAN device to that host's tunnel address (`onlink`), which
//! costs one neighbour and one FDB entry per remote host (flannel's vxlan backend and
//! Calico's VXLAN mode do the same). The exceptions are addresses outside their host's
//! blocks (a static `--ip`): another host's gets a /32 through its tunnel address, and
//! this host's own, when it lies in a block another host owns, a /32 on the bridge, so
//! that the block's route does not take it away from its own bridge. A sandbox reaches a
//! remote address as if it were on its segment: the bridge answers its ARP (proxy ARP)
//! and the host routes the packet. A host that is not registered (dead, or gone) gets no
//! route, so its entries go with its node record, within the lease's TTL.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::view::View;

/// One overlay's routes on one host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tunnel {
    /// Through the VXLAN device: destination → the remote host's tunnel address.
    pub remote: BTreeMap<Ipv4Net, Ipv4Addr>,
    /// On the bridge: this host's endpoints inside a block another host owns (/32s).
    pub local: BTreeSet<Ipv4Net>,
}

impl Tunnel {
    /// The remote hosts' tunnel addresses the routes go through: one neighbour and one
    /// FDB entry each.
    pub fn hosts(&self) -> BTreeSet<Ipv4Addr> {
        self.remote.values().copied().collect()
    }
}

fn host_route(ip: Ipv4Addr) -> Ipv4Net {
    Ipv4Net::new(ip, 32).expect("/32 is a valid prefix")
}

impl View {
    /// The routes host `me` programs for overlay `net`.
    pub fn tunnel(&self, net: &str, me: &str) -> Tunnel {
        let vtep = |node: &str| self.nodes.get(node).map(|n| n.addr);
        let blocks: Vec<(Ipv4Net, &str)> = self.blocks_on(net).collect();
        let owner = |ip: Ipv4Addr| {
            blocks
                .iter()
                .find(|(b, _)| b.contains(&ip))
                .map(|(_, o)| *o)
        };
        let mut t = Tunnel::default();
        for (block, host) in &blocks {
            if *host != me {
                if let Some(v) = vtep(host) {
                    t.remote.insert(*block, v);
                }
            }
        }
        for ep in self.endpoints_on(net) {
            if owner(ep.ip) == Some(ep.node.as_str()) {
                continue;
            }
            if ep.node == me {
                if owner(ep.ip).is_some() {
                    t.local.insert(host_route(ep.ip));
                }
            } else if vtep(&ep.node).is_some() {
                t.remote.insert(host_route(ep.ip), ep.vtep);
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{EndpointRecord, NodeRecord};

    fn node(v: &mut View, name: &str, addr: &str) {
        v.nodes.insert(
            name.into(),
            NodeRecord {
                name: name.into(),
                addr: addr.parse().unwrap(),
                started: String::new(),
                lease: 1,
            },
        );
    }

    fn endpoint(v: &mut View, ip: &str, node: &str, vtep: &str) {
        let ep = EndpointRecord {
            network: "n".into(),
            ip: ip.parse().unwrap(),
            mac: [2, 0x42, 0, 0, 0, 1],
            node: node.into(),
            vtep: vtep.parse().unwrap(),
            sandbox: String::new(),
            names: vec![],
        };
        v.endpoints.insert(("n".into(), ep.ip), ep);
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    /// Hosts a (this one), b and c; b owns two blocks with 60 endpoints in them, c one.
    fn cluster() -> View {
        let mut v = View::default();
        node(&mut v, "a", "192.168.0.1");
        node(&mut v, "b", "192.168.0.2");
        node(&mut v, "c", "192.168.0.3");
        for (b, o) in [
            ("10.0.0.0/26", "a"),
            ("10.0.0.64/26", "b"),
            ("10.0.0.128/26", "b"),
            ("10.0.0.192/26", "c"),
        ] {
            v.blocks.insert(("n".into(), net(b)), o.into());
        }
        for i in 0..60u8 {
            let base = if i < 30 { 70 } else { 100 };
            endpoint(
                &mut v,
                &format!("10.0.0.{}", base + i % 30),
                "b",
                "192.168.0.2",
            );
        }
        endpoint(&mut v, "10.0.0.200", "c", "192.168.0.3");
        endpoint(&mut v, "10.0.0.5", "a", "192.168.0.1");
        v
    }

    #[test]
    fn routes_grow_with_remote_blocks_not_remote_endpoints() {
        let t = cluster().tunnel("n", "a");
        assert_eq!(
            t.remote,
            BTreeMap::from([
                (net("10.0.0.64/26"), "192.168.0.2".parse().unwrap()),
                (net("10.0.0.128/26"), "192.168.0.2".parse().unwrap()),
                (net("10.0.0.192/26"), "192.168.0.3".parse().unwrap()),
            ])
        );
        assert_eq!(
            t.hosts().len(),
            2,
            "one neighbour and FDB entry per remote host"
        );
        assert!(t.local.is_empty());
    }

    #[test]
    fn an_address_outside_its_hosts_blocks_gets_a_host_route_on_both_sides() {
        let mut v = cluster();
        // c's static address inside b's block, a's inside c's.
        endpoint(&mut v, "10.0.0.66", "c", "192.168.0.3");
        endpoint(&mut v, "10.0.0.250", "a", "192.168.0.1");
        let a = v.tunnel("n", "a");
        assert_eq!(
            a.remote[&net("10.0.0.66/32")],
            "192.168.0.3".parse::<Ipv4Addr>().unwrap()
        );
        assert_eq!(a.local, BTreeSet::from([net("10.0.0.250/32")]));
        let c = v.tunnel("n", "c");
        assert_eq!(
            c.remote[&net("10.0.0.250/32")],
            "192.168.0.1".parse::<Ipv4Addr>().unwrap()
        );
        assert_eq!(c.local, BTreeSet::from([net("10.0.0.66/32")]));
        assert!(
            !c.remote.contains_key(&net("10.0.0.192/26")),
            "c's own block"
        );
    }

    #[test]
    fn a_host_without_its_node_record_gets_no_route() {
        let mut v = cluster();
        v.nodes.remove("b");
        let t = v.tunnel("n", "a");
        assert_eq!(t.hosts(), BTreeSet::from(["192.168.0.3".parse().unwrap()]));
        assert!(t.remote.keys().all(|r| !net("10.0.0.64/26").contains(r)));
        assert!(
            v.tunnel("other", "a").remote.is_empty(),
            "another overlay has none"
        );
    }
}
