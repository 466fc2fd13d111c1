//! The firewall as data: which elements ferry's nftables sets and maps must hold for a
//! given desired state, and the scripts that get the kernel there.
//!
//! Design note. The ruleset itself is fixed: a few dozen rules written once (see
//! [`render::SKELETON`]), whatever the number of networks, sandboxes or ports. Everything
//! that varies lives in sets and maps keyed by interface name, address and port:
//!
//! - `bridges`, `internal`, `masq`: ferry's bridges, by role; `intra` pairs each
//!   ICC-on bridge with itself so routed hairpin and bridged traffic seen by
//!   br_netfilter pass (on an ICC-off bridge such traffic meets `to_bridge`, which
//!   admits only replies and published ports); `subnets` maps a subnet
//!   to its bridge (hairpin masquerade); `dns_gateways` pairs each user network's
//!   gateway with its bridge (the embedded DNS's answers are not tracked); `intra_dst`
//!   holds each ICC-on overlay's subnet minus its gateway, paired with its bridge and
//!   its tunnel: what the overlay routes between the two is not tracked (the chain that
//!   checks it is hooked only while this host has an overlay, [`render::tunnel_hook`]);
//! - `pub_any`: published ports open to every source on every host address, the common
//!   case (`-p 8080:80`): a hash map protocol . host port → address . port, so adding
//!   and deleting stay O(1) however many ports are published;
//! - `pub_same` / `pub_shift`: the rest, keyed by source range . host address . protocol
//!   . host port range (interval maps). A range published onto the same port numbers is
//!   one `pub_same` element whose value is just the sandbox address (DNAT keeps the
//!   port), wherever it listens; a shifted mapping bound to an address or a source range
//!   goes to `pub_shift`, one element per port because nftables cannot add an offset to
//!   a port (the same holds in `pub_any`);
//! - `noicc_ports` (bridge family): host-side veths of networks with ICC off; bridged
//!   frames between two of them are dropped. The bridge-family chain that checks it is
//!   hooked only while the set is not empty ([`render::icc_hook`]);
//! - `sources` (bridge family): each sandbox's host-side veth . its MAC . its IPv4
//!   address, the anti-spoofing check (Calico's, done with one set). A frame that enters
//!   a bridge from one of ferry's veths (`fy…`) must carry, as Ethernet source and as IPv4
//!   source or ARP sender, the MAC and address ferry gave that endpoint; anything else
//!   from such a port (another sandbox's address or MAC, an ARP reply claiming another's
//!   address, IPv6, VLAN tags) is dropped before it is bridged or routed. The rule matches
//!   the name prefix, not the set, so a veth whose element is not there yet (the moment
//!   between its creation and the commit's transaction) is refused, not trusted
//!   (fail-closed, as Calico drops `cali+` interfaces it does not know). Only veths on
//!   ferry's bridges and overlays: macvlan links and a plugin's links are no bridge port
//!   of ferry's, and a host or none sandbox has no link. The bridge-family chain that
//!   checks it is hooked only while the set is not empty ([`render::guard_hook`]).
//!   A frame whose sources pass goes on to `sourced`, which untracks what needs no
//!   state: frames bridged within an ICC-on network, and (`dns_ports`: each veth .
//!   its network's gateway) queries to the embedded DNS, which no published port 53
//!   can then catch (see `render`; docs/PERFORMANCE.md has what that saves per packet).
//!
//! So a change of state is a difference of element sets ([`Elements::delta`]), applied
//! as one nftables transaction; an attach with no published ports on a network with ICC
//! on changes one element (its `sources`) and no rule. Per packet, each check is a
//! hash or interval-tree lookup, flat in the number of containers (iptables-style
//! chains grow a rule per container; Docker's nftables backend still adds rules per
//! port, moby/moby#53466).

pub mod ledger;
pub mod render;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::family::{v4, v4net};
use crate::model::{Endpoint, Network, Sandbox};
use crate::ports::Published;

/// The mark ferry sets on forwarded packets it accepts, so that one rule in Docker's
/// `DOCKER-USER` chain lets them past dockerd's FORWARD policy DROP.
pub const ACCEPT_MARK: u32 = 0x0010_0000;

/// One set or map of ferry's, by family and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetName {
    Bridges,
    Internal,
    Masq,
    Intra,
    Subnets,
    DnsGateways,
    PubAny,
    PubSame,
    PubShift,
    NoIccPorts,
    /// The UDP ports of this host's overlay tunnels.
    TunnelPorts,
    /// The hosts of the cluster: the only sources tunnel packets are taken from.
    TunnelPeers,
    /// Each ICC-on overlay's subnet, its gateway left out, paired with its bridge and with
    /// its tunnel: packets routed between the two stay within the network and are not
    /// tracked.
    IntraDst,
    /// The subnets of networks a third-party plugin drives (ferry's IPAM gave them):
    /// traffic to or from them is ferry's, though it crosses no bridge of ferry's.
    PluginNets,
    /// Each bridged endpoint's host-side veth . MAC . IPv4 address: the only sources a
    /// frame from that veth may carry (anti-spoofing).
    Sources,
    /// Each endpoint's host-side veth . its network's gateway, on networks with the
    /// embedded DNS: its queries to the gateway are not tracked.
    DnsPorts,
}

impl SetName {
    pub const ALL: [SetName; 16] = [
        SetName::Bridges,
        SetName::Internal,
        SetName::Masq,
        SetName::Intra,
        SetName::Subnets,
        SetName::DnsGateways,
        SetName::PubAny,
        SetName::PubSame,
        SetName::PubShift,
        SetName::NoIccPorts,
        SetName::TunnelPorts,
        SetName::TunnelPeers,
        SetName::IntraDst,
        SetName::PluginNets,
        SetName::Sources,
        SetName::DnsPorts,
    ];
    /// `inet ferry bridges`: what follows `add element`.
    pub fn path(self) -> &'static str {
        match self {
            SetName::Bridges => "inet ferry bridges",
            SetName::Internal => "inet ferry internal",
            SetName::Masq => "inet ferry masq",
            SetName::Intra => "inet ferry intra",
            SetName::Subnets => "inet ferry subnets",
            SetName::DnsGateways => "inet ferry dns_gateways",
            SetName::PubAny => "inet ferry pub_any",
            SetName::PubSame => "inet ferry pub_same",
            SetName::PubShift => "inet ferry pub_shift",
            SetName::NoIccPorts => "bridge ferry noicc_ports",
            SetName::TunnelPorts => "inet ferry tunnel_ports",
            SetName::TunnelPeers => "inet ferry tunnel_peers",
            SetName::IntraDst => "inet ferry intra_dst",
            SetName::PluginNets => "inet ferry plugin_nets",
            SetName::Sources => "bridge ferry sources",
            SetName::DnsPorts => "bridge ferry dns_ports",
        }
    }

    /// The table that holds it: `inet ferry` or `bridge ferry`.
    pub fn table(self) -> &'static str {
        match self {
            SetName::NoIccPorts | SetName::Sources | SetName::DnsPorts => "bridge ferry",
            _ => "inet ferry",
        }
    }
}

/// Every element each set must hold: key → value (maps) or `None` (sets).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Elements {
    pub sets: BTreeMap<SetName, BTreeMap<String, Option<String>>>,
}

impl Elements {
    fn put(&mut self, set: SetName, key: String, value: Option<String>) {
        self.sets.entry(set).or_default().insert(key, value);
    }

    pub fn extend(&mut self, other: Elements) {
        for (set, items) in other.sets {
            self.sets.entry(set).or_default().extend(items);
        }
    }

    /// Every element as (set, key, value).
    pub fn iter(&self) -> impl Iterator<Item = (SetName, &String, &Option<String>)> {
        self.sets
            .iter()
            .flat_map(|(set, items)| items.iter().map(move |(k, v)| (*set, k, v)))
    }

    pub fn get(&self, set: SetName) -> impl Iterator<Item = (&String, &Option<String>)> {
        self.sets.get(&set).into_iter().flatten()
    }

    pub fn count(&self) -> usize {
        self.sets.values().map(|s| s.len()).sum()
    }

    pub fn has_bridges(&self) -> bool {
        self.get(SetName::Bridges).next().is_some()
    }

    /// The element changes that turn `self` into `new`: deletions first (a changed
    /// value is a delete and an add), then additions. Empty when nothing changed.
    pub fn delta(&self, new: &Elements) -> Delta {
        let mut d = Delta::default();
        for set in SetName::ALL {
            let old: BTreeMap<_, _> = self.get(set).collect();
            let now: BTreeMap<_, _> = new.get(set).collect();
            for (k, v) in &old {
                if now.get(k) != Some(v) {
                    d.delete.push((set, (*k).clone()));
                }
            }
            for (k, v) in &now {
                if old.get(k) != Some(v) {
                    d.add.push((set, (*k).clone(), (*v).clone()));
                }
            }
        }
        d
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    pub delete: Vec<(SetName, String)>,
    pub add: Vec<(SetName, String, Option<String>)>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.delete.is_empty() && self.add.is_empty()
    }
}

/// The elements of this host's overlay tunnels: the UDP port they listen on and the
/// cluster's hosts, the only sources taken on it.
pub fn tunnel_elements(port: u16, peers: &BTreeSet<std::net::Ipv4Addr>) -> Elements {
    let mut e = Elements::default();
    e.put(SetName::TunnelPorts, port.to_string(), None);
    for p in peers {
        e.put(SetName::TunnelPeers, p.to_string(), None);
    }
    e
}

fn ifname(s: &str) -> String {
    format!("\"{s}\"")
}

/// The elements for a desired state: every bridge network, and every live endpoint's
/// published ports and (on ICC-off networks) its host-side veth.
pub fn desired<'a>(
    networks: impl IntoIterator<Item = &'a Network>,
    sandboxes: impl IntoIterator<Item = &'a Sandbox>,
) -> Elements {
    let endpoints = sandboxes
        .into_iter()
        .filter(|s| s.is_running())
        .flat_map(|s| s.endpoints.iter());
    desired_for_endpoints(networks, endpoints)
}

/// [`desired`] over endpoints wherever they come from: running sandboxes' and those the
/// Docker plugin keeps for dockerd's containers.
pub fn desired_for_endpoints<'a>(
    networks: impl IntoIterator<Item = &'a Network>,
    endpoints: impl IntoIterator<Item = &'a Endpoint>,
) -> Elements {
    let mut e = Elements::default();
    let mut nets = BTreeMap::new();
    for n in networks {
        e.extend(network_elements(n));
        nets.insert(n.id.as_str(), n);
    }
    for ep in endpoints {
        e.extend(endpoint_elements(
            ep,
            nets.get(ep.network_id.as_str()).copied(),
        ));
    }
    e
}

/// A bridge network with ICC off: its endpoints' host ends go in `noicc_ports`.
pub fn no_icc(n: &Network) -> bool {
    guarded(n) && n.bridge().is_some_and(|b| !b.icc)
}

/// What one network puts in the sets (nothing unless it is a bridge with a subnet).
pub fn network_elements(n: &Network) -> Elements {
    let mut e = Elements::default();
    if let (Some(_), Some(pool)) = (n.remote(), &n.pool) {
        if let Some(subnet) = v4net(pool.subnet.trunc()) {
            e.put(SetName::PluginNets, subnet.to_string(), None);
        }
        return e;
    }
    let (Some(b), Some(pool)) = (n.bridge(), &n.pool) else {
        return e;
    };
    let name = ifname(b.name.as_str());
    e.put(SetName::Bridges, name.clone(), None);
    if b.icc {
        e.put(SetName::Intra, format!("{name} . {name}"), None);
    }
    if let Some(o) = n.overlay() {
        put_tunnel(&mut e, &name, &ifname(o.vxlan.as_str()), b.icc);
    }
    // The address sets hold IPv4 addresses: an IPv6 pool's would not load.
    if let (Some(subnet), Some(gateway)) = (v4net(pool.subnet.trunc()), v4(pool.gateway)) {
        put_addresses(&mut e, n, b.icc, &name, subnet, gateway);
    }
    if n.internal {
        e.put(SetName::Internal, name.clone(), None);
    } else if b.masquerade {
        e.put(SetName::Masq, name, None);
    }
    e
}

/// An overlay's routed VXLAN device: forwarding between it and its own bridge is
/// traffic within the network (allowed with ICC, not masqueraded), and nothing else is
/// forwarded into or out of it (as an internal network's bridge).
fn put_tunnel(e: &mut Elements, bridge: &str, tunnel: &str, icc: bool) {
    if icc {
        e.put(SetName::Intra, format!("{bridge} . {tunnel}"), None);
        e.put(SetName::Intra, format!("{tunnel} . {bridge}"), None);
    }
    e.put(SetName::Internal, tunnel.to_string(), None);
}

/// A bridge network's addresses in the sets: its subnet, its gateway's DNS, and (for a
/// local bridge with ICC) the destinations bridged rather than routed.
fn put_addresses(
    e: &mut Elements,
    n: &Network,
    icc: bool,
    name: &str,
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
) {
    // An overlay's traffic between hosts is routed between its bridge and its tunnel,
    // within the network (`intra`), and needs no state. What goes to the gateway (the
    // same address on every host) or leaves the network stays tracked. (What a bridge
    // carries between its own ports is untracked in the bridge family: `render`.)
    if let (true, Some(o)) = (icc, n.overlay()) {
        let tunnel = ifname(o.vxlan.as_str());
        for range in intra_ranges(subnet, gateway) {
            e.put(SetName::IntraDst, format!("{range} . {name}"), None);
            e.put(SetName::IntraDst, format!("{range} . {tunnel}"), None);
        }
    }
    e.put(SetName::Subnets, format!("{subnet} . {name}"), None);
    if let Some(gateway) = dns_gateway(n) {
        e.put(SetName::DnsGateways, format!("{gateway} . {name}"), None);
    }
}

/// `subnet` without `gateway`, as nftables ranges (`a-b`, or `a` alone): the addresses a
/// packet arriving on the bridge is bridged to rather than routed.
fn intra_ranges(subnet: Ipv4Net, gateway: Ipv4Addr) -> Vec<String> {
    let (first, last) = (u32::from(subnet.network()), u32::from(subnet.broadcast()));
    let gw = u32::from(gateway);
    let range = |a: u32, b: u32| match a == b {
        true => Ipv4Addr::from(a).to_string(),
        false => format!("{}-{}", Ipv4Addr::from(a), Ipv4Addr::from(b)),
    };
    if !(first..=last).contains(&gw) {
        return vec![range(first, last)];
    }
    let mut out = vec![];
    if gw > first {
        out.push(range(first, gw - 1));
    }
    if gw < last {
        out.push(range(gw + 1, last));
    }
    out
}

/// What one endpoint on network `net` (None: unknown) puts in the sets: its published
/// ports, its host end when the network has ICC off, and its host end's allowed sources
/// when the network has a bridge of ferry's. Nothing unless it is live.
pub fn endpoint_elements(ep: &Endpoint, net: Option<&Network>) -> Elements {
    let mut e = Elements::default();
    let Some(live) = &ep.live else { return e };
    // The sets hold IPv4 addresses.
    let ip = v4(live.ip);
    if let Some(host_if) = &live.host_if {
        if net.is_some_and(no_icc) {
            e.put(SetName::NoIccPorts, ifname(host_if.as_str()), None);
        }
        if let (Some(net), Some(ip)) = (net.filter(|n| guarded(n)), ip) {
            let mac = crate::model::mac_string(&live.mac);
            e.put(
                SetName::Sources,
                format!("{} . {mac} . {ip}", ifname(host_if.as_str())),
                None,
            );
            if let Some(gateway) = dns_gateway(net) {
                e.put(
                    SetName::DnsPorts,
                    format!("{} . {gateway}", ifname(host_if.as_str())),
                    None,
                );
            }
        }
    }
    if let Some(ip) = ip {
        for p in &live.published {
            put_published(&mut e, p, ip);
        }
    }
    e
}

/// The gateway a network's embedded DNS answers on, if it has one (user networks, not
/// the predefined `bridge`), as the address sets hold it.
fn dns_gateway(n: &Network) -> Option<Ipv4Addr> {
    (!n.predefined).then_some(())?;
    v4(n.pool.as_ref()?.gateway)
}

/// A network whose endpoints' veths are ports of a bridge of ferry's (bridge and overlay
/// networks): their sources are checked. Not macvlan, a plugin's, host or none.
pub fn guarded(n: &Network) -> bool {
    n.bridge().is_some() && n.pool.is_some()
}

fn put_published(e: &mut Elements, p: &Published, ip: Ipv4Addr) {
    let any = "0.0.0.0/0".to_string();
    let src = p
        .source
        .map(|s| s.to_string())
        .unwrap_or_else(|| any.clone());
    let dst = p.host_ip.map(|a| a.to_string()).unwrap_or(any);
    let proto = p.proto.as_str();
    let open = p.source.is_none() && p.host_ip.is_none();
    let multi = p.host_ports.len() > 1;
    if open && !(multi && p.host_ports == p.container_ports) {
        for (h, c) in p.host_ports.iter().zip(p.container_ports.iter()) {
            e.put(
                SetName::PubAny,
                format!("{proto} . {h}"),
                Some(format!("{ip} . {c}")),
            );
        }
        return;
    }
    if p.host_ports == p.container_ports {
        e.put(
            SetName::PubSame,
            format!("{src} . {dst} . {proto} . {}", p.host_ports),
            Some(ip.to_string()),
        );
        return;
    }
    for (h, c) in p.host_ports.iter().zip(p.container_ports.iter()) {
        e.put(
            SetName::PubShift,
            format!("{src} . {dst} . {proto} . {h}"),
            Some(format!("{ip} . {c}")),
        );
    }
}

/// How many elements each set and map of `table` (`inet ferry`, `bridge ferry`) should
/// hold for `e`, by name.
pub fn wanted_counts(e: &Elements, table: &str) -> BTreeMap<&'static str, usize> {
    e.sets
        .iter()
        .filter(|(set, _)| set.table() == table)
        .filter_map(|(set, items)| {
            let name = set.path().rsplit(' ').next()?;
            Some((name, items.len()))
        })
        .collect()
}

/// How many rules each chain holds in one table's `nft list table` text, by chain name:
/// the lines inside `chain NAME { … }` other than a base chain's `type … policy …;`.
pub fn listed_rules(listing: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    let lines = listing
        .lines()
        .map(|l| l.split(" # handle ").next().unwrap_or(l).trim());
    for line in lines {
        if let Some(name) = line
            .strip_prefix("chain ")
            .and_then(|r| r.strip_suffix(" {"))
        {
            out.insert(name.to_string(), 0);
            current = Some(name.to_string());
            continue;
        }
        let Some(chain) = &current else {
            continue;
        };
        match line {
            "}" => current = None,
            "" => {}
            l if l.starts_with("type ") || l.starts_with("policy ") => {}
            _ => *out.entry(chain.clone()).or_default() += 1,
        }
    }
    out
}

/// How many elements each set and map holds in `nft list table inet ferry`'s text, by
/// name (`elements = { a, b,\n c }` may span lines; no element contains a comma).
pub fn listed_counts(listing: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut inside = String::new();
    let mut collecting = false;
    // ferryd lists with handles: `set bridges { # handle 5`.
    let lines = listing
        .lines()
        .map(|l| l.split(" # handle ").next().unwrap_or(l).trim());
    for line in lines {
        if let Some(rest) = line
            .strip_prefix("set ")
            .or_else(|| line.strip_prefix("map "))
        {
            current = rest.strip_suffix(" {").map(str::to_string);
            continue;
        }
        if let Some(rest) = line.strip_prefix("elements = {") {
            collecting = true;
            inside.clear();
            inside.push_str(rest);
        } else if collecting {
            inside.push(' ');
            inside.push_str(line);
        }
        if collecting && inside.trim_end().ends_with('}') {
            collecting = false;
            let body = inside.trim_end().trim_end_matches('}');
            let n = body.split(',').filter(|i| !i.trim().is_empty()).count();
            if let Some(name) = &current {
                out.insert(name.clone(), n);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
