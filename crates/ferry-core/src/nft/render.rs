//! nftables scripts: the fixed skeleton, a full load (boot, reconcile, repair) and the
//! element delta of one change. Each script is applied as one transaction, so the
//! kernel sees all of it or none of it.
//!
//! Ferry owns `table inet ferry` and `table bridge ferry`. A full load re-creates and
//! flushes every chain and set of ferry's *except* the `user` chain, which holds the
//! administrator's rules (as Docker's DOCKER-USER) and is jumped to first.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{Delta, Elements, SetName, ACCEPT_MARK};

/// `(name, declaration)` of each set and map.
const SETS: [(SetName, &str); 16] = [
    (SetName::Bridges, "type ifname;"),
    (SetName::Internal, "type ifname;"),
    (SetName::Masq, "type ifname;"),
    (SetName::Intra, "type ifname . ifname;"),
    (SetName::Subnets, "type ipv4_addr . ifname; flags interval;"),
    (SetName::DnsGateways, "type ipv4_addr . ifname;"),
    (
        SetName::PubAny,
        "type inet_proto . inet_service : ipv4_addr . inet_service;",
    ),
    (
        SetName::PubSame,
        "type ipv4_addr . ipv4_addr . inet_proto . inet_service : ipv4_addr; flags interval;",
    ),
    (
        SetName::PubShift,
        "type ipv4_addr . ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; flags interval;",
    ),
    (SetName::NoIccPorts, "type ifname;"),
    (SetName::TunnelPorts, "type inet_service;"),
    (SetName::TunnelPeers, "type ipv4_addr;"),
    (SetName::PluginNets, "type ipv4_addr; flags interval;"),
    (
        SetName::IntraDst,
        "type ipv4_addr . ifname; flags interval;",
    ),
    (SetName::Sources, "type ifname . ether_addr . ipv4_addr;"),
    (SetName::DnsPorts, "type ifname . ipv4_addr;"),
];

/// `(table, chain, base-chain spec or "")` of each chain ferry owns (not `user`).
const CHAINS: [(&str, &str, &str); 12] = [
    (
        "inet ferry",
        "forward",
        "type filter hook forward priority -10; policy accept;",
    ),
    ("inet ferry", "to_bridge", ""),
    ("inet ferry", "from_bridge", ""),
    (
        "inet ferry",
        "input",
        "type filter hook input priority -10; policy accept;",
    ),
    (
        "inet ferry",
        "prerouting",
        "type nat hook prerouting priority -100; policy accept;",
    ),
    (
        "inet ferry",
        "dns_out",
        "type filter hook output priority -300; policy accept;",
    ),
    (
        "inet ferry",
        "output",
        "type nat hook output priority -100; policy accept;",
    ),
    ("inet ferry", "publish", ""),
    (
        "inet ferry",
        "postrouting",
        "type nat hook postrouting priority 100; policy accept;",
    ),
    ("bridge ferry", "icc", ""),
    ("bridge ferry", "guard", ""),
    ("bridge ferry", "sourced", ""),
];

/// The bridge-family base chain, hooked only while some endpoint's network has ICC off
/// ([`icc_hook`]): a hooked chain costs every frame any bridge in the namespace forwards
/// (dockerd's too) a call into nftables, ICC off or not.
const ICC_HOOK: &str = "type filter hook forward priority 0; policy accept;";

/// The bridge-family base chain that sends every frame from one of ferry's veths to
/// `guard` (anti-spoofing), hooked only while some endpoint's sources are known
/// ([`guard_hook`]). At the bridge's prerouting, before br_netfilter (priority 0) hands
/// the frame to the IPv4 hooks: a spoofed frame is dropped before it is bridged, routed
/// or tracked.
const GUARD_HOOK: &str = "type filter hook prerouting priority -200; policy accept;";

/// The inet-family base chain at prerouting before conntrack (raw), hooked only while
/// this host has an overlay ([`tunnel_hook`]): it untracks tunnel datagrams and what an
/// overlay routes between its bridge and its tunnel. Every packet the namespace receives
/// would pay its hook call; a host of bridges alone does without (its untracking is done
/// in the bridge family, in `sourced`).
const TUNNEL_HOOK: &str = "type filter hook prerouting priority -300; policy accept;";

/// The raw prerouting chain of earlier versions (`dns_in`), hooked on every host; a load
/// removes it should a ruleset of theirs be in the kernel.
const LEGACY_DNS_IN: &str = "inet ferry dns_in";

/// The prefix of every host-side veth of this ferryd's ([`crate::model::host_if_name`]);
/// no bridge or other link of ferry's that can be a bridge port starts with it.
fn veth_prefix() -> &'static str {
    crate::instance::link_prefix()
}

/// How ferryd found the host, which decides two rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// ferryd turned `ip_forward` on: forward nothing that does not touch a ferry
    /// bridge, so the host does not start routing between its other interfaces (what
    /// Docker's FORWARD policy DROP does when dockerd turns forwarding on).
    pub guard_forwarding: bool,
}

/// The `forward` chain and the two it jumps to: the administrator's chain, a flow ferry
/// has accepted before, traffic within an ICC-on bridge, internal networks, isolation,
/// and what may enter or leave a bridge.
///
/// A routed packet ferry accepts marks its flow's conntrack entry with the accept mark
/// as well as itself ([`Accept::Flow`]); the rule after `jump user` accepts a packet
/// whose flow carries it, so only a flow's first packets (and its replies until they are
/// seen) walk the rules below. The verdict is the same: nothing below can turn an
/// accepted flow away later, since what they test (bridges, internal, isolation,
/// published ports) is fixed for a flow's life or ends it (a disconnect deletes the
/// veth, a removed network its bridge). It saves what the rules cost every packet of a
/// routed stream: ~5 % of busy time, and 4–6 % of a stream's throughput out through
/// masquerade and in through DNAT (measured by hand, docs/PERFORMANCE.md). The
/// administrator's chain still comes first, for every packet.
///
/// An untracked packet (the `notrack` in `dns_in`, or an administrator's) has no entry:
/// reading its `ct mark` ends the rule unmatched, so a rule that marks the flow is
/// followed by one that only marks the packet wherever untracked packets can come.
/// Traffic within a bridge (`intra`) is mostly untracked and only marks the packet.
fn forwarding_rules() -> Vec<(&'static str, &'static str, String)> {
    let i = "inet ferry";
    let (flow, packet) = (Accept::Flow.rule(), Accept::Packet.rule());
    vec![
        // Administrator's rules first; then flows ferry accepted before; then traffic
        // within one ICC-on bridge (routed hairpin, or bridged frames seen when
        // br_netfilter is loaded) passes, marked so that dockerd's FORWARD policy DROP
        // lets it through too; then by direction. Internal networks forward nothing in
        // or out, not even to a published port.
        (i, "forward", "jump user".into()),
        (
            i,
            "forward",
            format!("ct mark and {ACCEPT_MARK:#010x} == {ACCEPT_MARK:#010x} {packet}"),
        ),
        (i, "forward", format!("iifname . oifname @intra {packet}")),
        (i, "forward", "iifname @internal drop".into()),
        (i, "forward", "oifname @internal drop".into()),
        // A plugin's network and ferry's are isolated from each other, as two of
        // ferry's bridges are.
        (
            i,
            "forward",
            "iifname @bridges ip daddr @plugin_nets drop".into(),
        ),
        (
            i,
            "forward",
            "oifname @bridges ip saddr @plugin_nets drop".into(),
        ),
        (i, "forward", "oifname @bridges jump to_bridge".into()),
        (i, "forward", "iifname @bridges jump from_bridge".into()),
        // Into a bridge: replies; published ports (DNAT done in prerouting); everything
        // else — other networks, hosts routing to the subnet directly (moby/moby#45610) —
        // is dropped. Both accepted kinds are tracked by definition.
        (
            i,
            "to_bridge",
            format!("ct state established,related {flow}"),
        ),
        (i, "to_bridge", format!("ct status dnat {flow}")),
        (i, "to_bridge", "drop".into()),
        // Out of a bridge: nothing into another bridge (isolation), the rest may go.
        // Towards Docker's own bridges the packet is accepted unmarked, so dockerd's
        // chains still decide (its unpublished ports stay closed to ferry's sandboxes).
        (i, "from_bridge", "oifname @bridges drop".into()),
        (i, "from_bridge", "oifname \"docker0\" accept".into()),
        (i, "from_bridge", "oifname \"br-*\" accept".into()),
        (i, "from_bridge", flow),
        (i, "from_bridge", packet),
    ]
}

/// How ferry's forwarding chains accept: marking the packet (so that dockerd's FORWARD
/// policy DROP lets it past too), and for a routed flow its conntrack entry as well (so
/// that `forward` accepts the flow's next packets at once).
#[derive(Debug, Clone, Copy)]
enum Accept {
    Packet,
    Flow,
}

impl Accept {
    fn rule(self) -> String {
        let m = format!("{ACCEPT_MARK:#010x}");
        match self {
            Accept::Packet => format!("meta mark set meta mark or {m} accept"),
            Accept::Flow => {
                format!("meta mark set meta mark or {m} ct mark set ct mark or {m} accept")
            }
        }
    }
}

/// The rules, chain by chain. Nothing here varies with the state.
pub fn skeleton_rules(o: Options) -> Vec<(&'static str, &'static str, String)> {
    let any = "meta l4proto { tcp, udp } dnat ip to meta l4proto . th dport map @pub_any";
    let shift = "meta l4proto { tcp, udp } dnat ip to ip saddr . ip daddr . meta l4proto . th dport map @pub_shift";
    let same = "meta l4proto { tcp, udp } dnat ip to ip saddr . ip daddr . meta l4proto . th dport map @pub_same";
    let i = "inet ferry";
    let mut rules = forwarding_rules();
    rules.extend([
        // route_localnet is on for ferry's bridges (published 127.0.0.1 ports): never
        // let a sandbox open a connection to the host's loopback services through it
        // (replies to the host's own loopback clients pass: they are not "original").
        (
            i,
            "input",
            "iifname @bridges ip daddr 127.0.0.0/8 ct direction original drop".into(),
        ),
        // Published ports: from outside (not to loopback: only the host itself may use
        // 127.0.0.1 bindings) and from the host itself.
        (i, "prerouting", "ip daddr 127.0.0.0/8 return".into()),
        (i, "prerouting", "fib daddr type local jump publish".into()),
        (
            i,
            "dns_out",
            "meta l4proto { tcp, udp } th sport 53 ip saddr . oifname @dns_gateways notrack".into(),
        ),
        // Overlay tunnels: VXLAN datagrams only from the cluster's hosts, and none of
        // them (in or out) tracked: a conntrack entry per flow of tunnel traffic fills
        // the table and buys nothing (projectcalico/calico#8934).
        (
            i,
            "input",
            "udp dport @tunnel_ports ip saddr != @tunnel_peers drop".into(),
        ),
        (i, "dns_out", "udp dport @tunnel_ports notrack".into()),
        (i, "output", "fib daddr type local jump publish".into()),
        (i, "publish", any.into()),
        (i, "publish", shift.into()),
        (i, "publish", same.into()),
        // Hairpin (a sandbox reaching a published port on its own bridge), the host's
        // loopback reaching a published port, and outbound masquerade.
        (
            i,
            "postrouting",
            "ct status dnat ip saddr . oifname @subnets masquerade".into(),
        ),
        (
            i,
            "postrouting",
            "ip saddr 127.0.0.0/8 oifname @bridges masquerade".into(),
        ),
        // Within a network (an overlay's bridge to its tunnel, and back): never NATed.
        (i, "postrouting", "iifname . oifname @intra accept".into()),
        (
            i,
            "postrouting",
            "iifname @masq oifname != @bridges masquerade".into(),
        ),
        // ICC off: bridged frames between two such ports are dropped (the chain that
        // jumps here is hooked by `icc_hook`).
        ("bridge ferry", "icc", "oifname @noicc_ports drop".into()),
        // Anti-spoofing (the chain that jumps here, for every frame from a veth of
        // ferry's, is hooked by `guard_hook`): IPv4 with the endpoint's MAC and address;
        // ARP whose Ethernet source, sender MAC and sender address are all the endpoint's
        // (no reply or gratuitous ARP claiming another's address); nothing else.
        (
            "bridge ferry",
            "guard",
            "iifname . ether saddr . ip saddr @sources goto sourced".into(),
        ),
        (
            "bridge ferry",
            "guard",
            "iifname . ether saddr . arp saddr ip @sources iifname . arp saddr ether . arp saddr ip @sources return".into(),
        ),
        ("bridge ferry", "guard", "drop".into()),
    ]);
    rules.extend(untracked_rules());
    if o.guard_forwarding {
        // A plugin's network crosses no bridge of ferry's but is ferry's all the same
        // (with br_netfilter its bridged frames come through here too): let it be
        // before the guard drops what touches no ferry bridge.
        for r in [
            "ip saddr @plugin_nets return",
            "ip daddr @plugin_nets return",
            "iifname != @bridges oifname != @bridges drop",
        ] {
            rules.push((i, "forward", r.into()));
        }
    }
    rules
}

/// What ferry does not track, decided in the bridge family, where a frame from one of
/// ferry's veths already stops for the anti-spoofing check (`guard` goes on to `sourced`
/// once the frame's sources are the endpoint's). There the decision costs no hook call of
/// its own: an inet chain at prerouting before conntrack would cost one to every packet
/// the namespace receives, routed traffic included (docs/PERFORMANCE.md).
///
/// - Frames bridged within an ICC-on network. With br_netfilter on, every frame bridged
///   between two sandboxes walks the IPv4 hooks of this namespace; nothing ferry decides
///   about it needs state (`intra` accepts it whatever its state), and tracking it costs
///   every such frame a conntrack lookup, TCP window tracking, the NAT hooks' lookups and
///   a confirm. Bridged, not routed: the bridge marks a frame to its own MAC (the
///   gateway: DNS, the host, a published port's hairpin, the way out) `host` before this
///   hook, and those stay tracked; one to another port's MAC is `other`. On an ICC-off
///   network (its ports in `noicc_ports`) bridged frames stay tracked: `to_bridge` admits
///   only replies there.
/// - Queries to the embedded DNS (and, in `dns_out`, its answers), as Kubernetes'
///   NodeLocal DNSCache does: each lookup from a new source port would otherwise cost a
///   conntrack entry kept for 30 s (resolvers in busy sandboxes fill the table) and pass
///   the NAT hooks, for traffic that is never NATed or filtered by state. Untracked
///   packets skip the NAT chains, so no published port 53 can catch a sandbox's query to
///   its own gateway either (`dns_ports`: each veth with its network's gateway).
///
/// Both end in `accept` (this hook only: the frame goes on to br_netfilter and the
/// bridge), so an untracked frame meets no other rule here.
fn untracked_rules() -> [(&'static str, &'static str, String); 2] {
    [
        (
            "bridge ferry",
            "sourced",
            "meta pkttype other iifname != @noicc_ports notrack accept".into(),
        ),
        (
            "bridge ferry",
            "sourced",
            "th dport 53 meta l4proto { tcp, udp } iifname . ip daddr @dns_ports notrack accept"
                .into(),
        ),
    ]
}

/// The rules of the overlay's raw prerouting chain ([`tunnel_hook`]).
fn tunnel_rules() -> [&'static str; 2] {
    [
        // What an overlay routes between its bridge and its tunnel (both ways): within
        // the network, accepted by `intra` whatever its state. Terminal: such a packet
        // meets no other rule here.
        "ip daddr . iifname @intra_dst notrack accept",
        // Tunnel datagrams, in (and out, in `dns_out`): a conntrack entry per flow of
        // tunnel traffic fills the table and buys nothing (projectcalico/calico#8934).
        "udp dport @tunnel_ports notrack",
    ]
}

/// The sets whose elements mean this host has an overlay: tunnel ports, or overlay
/// addresses to untrack. [`tunnel_hook`] is on while one of them is not empty.
pub const TUNNEL_SETS: [SetName; 2] = [SetName::TunnelPorts, SetName::IntraDst];

/// Whether this host has an overlay ([`TUNNEL_SETS`]).
pub fn has_tunnels(e: &Elements) -> bool {
    TUNNEL_SETS.iter().any(|&set| e.get(set).next().is_some())
}

fn is_map(set: SetName) -> bool {
    matches!(set, SetName::PubAny | SetName::PubSame | SetName::PubShift)
}

/// Create (or re-create) everything ferry owns and fill the sets with `e`.
pub fn full(e: &Elements, o: Options) -> String {
    let mut s = String::new();
    s.push_str("add table inet ferry\nadd table bridge ferry\nadd chain inet ferry user\n");
    for (t, c, spec) in CHAINS {
        if spec.is_empty() {
            let _ = writeln!(s, "add chain {t} {c}");
        } else {
            let _ = writeln!(s, "add chain {t} {c} {{ {spec} }}");
        }
    }
    for (set, decl) in SETS {
        let kind = if is_map(set) { "map" } else { "set" };
        let _ = writeln!(s, "add {kind} {} {{ {decl} }}", set.path());
        let _ = writeln!(s, "flush {kind} {}", set.path());
    }
    for (t, c, _) in CHAINS {
        let _ = writeln!(s, "flush chain {t} {c}");
    }
    for (t, c, r) in skeleton_rules(o) {
        let _ = writeln!(s, "add rule {t} {c} {r}");
    }
    for (set, _) in SETS {
        push_elements(&mut s, "add", set, e.get(set).map(|(k, v)| (k, v.as_ref())));
    }
    s.push_str(&icc_hook(e.get(SetName::NoIccPorts).next().is_some()));
    s.push_str(&guard_hook(e.get(SetName::Sources).next().is_some()));
    s.push_str(&tunnel_hook(has_tunnels(e)));
    let _ = writeln!(
        s,
        "add chain {LEGACY_DNS_IN} {{ {TUNNEL_HOOK} }}\nflush chain {LEGACY_DNS_IN}\ndelete chain {LEGACY_DNS_IN}"
    );
    s
}

/// How many rules each chain ferry owns should hold for `e`, by `(table, chain)`: the
/// skeleton's, and one jump in each hook chain while it is hooked. The periodic check
/// compares it with the kernel's listing, so a rule or chain deleted by hand (the
/// anti-spoofing hook, an isolation rule) is noticed like a missing set element. The
/// `user` chain is the administrator's and is not counted.
pub fn wanted_rules(e: &Elements, o: Options) -> BTreeMap<(&'static str, &'static str), usize> {
    let mut want: BTreeMap<(&'static str, &'static str), usize> = BTreeMap::new();
    for (t, c, _) in skeleton_rules(o) {
        *want.entry((t, c)).or_default() += 1;
    }
    if e.get(SetName::NoIccPorts).next().is_some() {
        want.insert(("bridge ferry", "forward"), 1);
    }
    if e.get(SetName::Sources).next().is_some() {
        want.insert(("bridge ferry", "prerouting"), 1);
    }
    if has_tunnels(e) {
        want.insert(("inet ferry", "tunnel_in"), tunnel_rules().len());
    }
    want
}

/// Hook (`on`) or unhook the inet-family `tunnel_in` chain (raw prerouting) that
/// untracks an overlay's traffic. Safe whether or not it exists.
pub fn tunnel_hook(on: bool) -> String {
    let mut s = format!(
        "add chain inet ferry tunnel_in {{ {TUNNEL_HOOK} }}\nflush chain inet ferry tunnel_in\n"
    );
    if on {
        for r in tunnel_rules() {
            let _ = writeln!(s, "add rule inet ferry tunnel_in {r}");
        }
    } else {
        s.push_str("delete chain inet ferry tunnel_in\n");
    }
    s
}

/// Hook (`on`) or unhook the bridge-family `prerouting` chain that sends frames from
/// ferry's veths to `guard`. Safe whether or not it exists.
pub fn guard_hook(on: bool) -> String {
    let mut s = format!(
        "add chain bridge ferry prerouting {{ {GUARD_HOOK} }}\nflush chain bridge ferry prerouting\n"
    );
    if on {
        let _ = writeln!(
            s,
            "add rule bridge ferry prerouting iifname \"{}*\" jump guard",
            veth_prefix()
        );
    } else {
        s.push_str("delete chain bridge ferry prerouting\n");
    }
    s
}

/// Hook (`on`) or unhook the bridge-family `forward` chain that sends frames from an
/// ICC-off port to `icc`. Safe whether or not it exists (add, flush, then rule or delete).
pub fn icc_hook(on: bool) -> String {
    let mut s = format!(
        "add chain bridge ferry forward {{ {ICC_HOOK} }}\nflush chain bridge ferry forward\n"
    );
    if on {
        s.push_str("add rule bridge ferry forward iifname @noicc_ports jump icc\n");
    } else {
        s.push_str("delete chain bridge ferry forward\n");
    }
    s
}

fn push_elements<'a>(
    s: &mut String,
    verb: &str,
    set: SetName,
    items: impl Iterator<Item = (&'a String, Option<&'a String>)>,
) {
    let items: Vec<String> = items
        .map(|(k, v)| match v {
            Some(v) => format!("{k} : {v}"),
            None => k.clone(),
        })
        .collect();
    for chunk in items.chunks(512) {
        let _ = writeln!(
            s,
            "{verb} element {} {{ {} }}",
            set.path(),
            chunk.join(", ")
        );
    }
}

/// Which base chains a change hooks (`Some(true)`) or unhooks (`Some(false)`): the
/// ICC-off chain with the first ICC-off port or after the last, the anti-spoofing chain
/// with the first guarded endpoint or after the last, the overlay's raw chain with the
/// first tunnel or overlay address or after the last ([`has_tunnels`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hooks {
    pub icc: Option<bool>,
    pub guard: Option<bool>,
    pub tunnel: Option<bool>,
}

/// The commands of one change, or None when there is nothing to do.
pub fn delta(d: &Delta, hooks: Hooks) -> Option<String> {
    if d.is_empty() && hooks == Hooks::default() {
        return None;
    }
    let mut s = String::new();
    for (set, _) in SETS {
        let keys: Vec<&String> = d
            .delete
            .iter()
            .filter(|(x, _)| *x == set)
            .map(|(_, k)| k)
            .collect();
        push_elements(&mut s, "delete", set, keys.into_iter().map(|k| (k, None)));
    }
    for (set, _) in SETS {
        let items = d
            .add
            .iter()
            .filter(|(x, _, _)| *x == set)
            .map(|(_, k, v)| (k, v.as_ref()));
        push_elements(&mut s, "add", set, items);
    }
    if let Some(on) = hooks.icc {
        s.push_str(&icc_hook(on));
    }
    if let Some(on) = hooks.guard {
        s.push_str(&guard_hook(on));
    }
    if let Some(on) = hooks.tunnel {
        s.push_str(&tunnel_hook(on));
    }
    Some(s)
}

/// Remove ferry's chains and sets but keep `table inet ferry` and its `user` chain,
/// so the administrator's rules outlive the last network.
pub fn remove_keeping_user() -> String {
    let mut s = full(&Elements::default(), Options::default());
    for (t, c, _) in CHAINS {
        let _ = writeln!(s, "flush chain {t} {c}");
    }
    for (t, c, _) in CHAINS {
        let _ = writeln!(s, "delete chain {t} {c}");
    }
    for (set, _) in SETS {
        let kind = if is_map(set) { "map" } else { "set" };
        let _ = writeln!(s, "delete {kind} {}", set.path());
    }
    s.push_str("delete table bridge ferry\n");
    s
}

/// Remove every table of ferry's, the administrator's chain with it
/// (`ferry system cleanup`). Safe when they do not exist.
pub fn remove_all() -> String {
    "add table inet ferry\nadd table bridge ferry\ndelete table inet ferry\ndelete table bridge ferry\n"
        .into()
}

/// The command that deletes ferry's rule from `DOCKER-USER`, given that chain as
/// listed with handles (`... comment "ferry" # handle 7`); None when it is not there.
pub fn docker_user_delete(listing: &str) -> Option<String> {
    let line = listing.lines().find(|l| l.contains("comment \"ferry\""))?;
    let handle: u64 = line.rsplit_once("# handle ")?.1.trim().parse().ok()?;
    Some(format!(
        "delete rule ip filter DOCKER-USER handle {handle}\n"
    ))
}

/// The one rule ferry adds to Docker's `DOCKER-USER` chain (iptables-nft), so that
/// dockerd's FORWARD policy DROP lets through what ferry's own chains accepted.
pub fn docker_user_rule() -> String {
    format!(
        "insert rule ip filter DOCKER-USER meta mark & {ACCEPT_MARK:#010x} == {ACCEPT_MARK:#010x} counter accept comment \"ferry\"\n"
    )
}
