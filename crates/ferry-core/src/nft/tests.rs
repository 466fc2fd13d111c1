use super::render::{delta, full, Hooks};
use super::*;
use crate::model::{mac_for, Endpoint, LiveEndpoint, RunState, Sandbox};
use crate::ports::{decide, parse_publish};
use crate::validate::predefined_networks;
use crate::IfName;

fn user_net(name: &str, subnet: &str, internal: bool, opts: &[(&str, &str)]) -> Network {
    crate::test_networks::network(name, "bridge", subnet, internal, opts)
}

fn sandbox(net: &Network, ip: &str, host_if: &str, publish: &[&str]) -> Sandbox {
    let ip = ip.parse().unwrap();
    let maps: Vec<_> = publish.iter().map(|p| parse_publish(p).unwrap()).collect();
    Sandbox {
        id: "b".repeat(64),
        name: "s".into(),
        created: "now".into(),
        created_unix: 0,
        hostname: "s".into(),
        cmd: vec![],
        network_mode: net.name.clone().into(),
        auto_remove: false,
        dns: Default::default(),
        state: RunState::Running {
            pid: 1,
            start_time: 1,
        },
        started_at: None,
        finished_at: None,
        labels: Default::default(),
        endpoints: vec![Endpoint {
            network_id: net.id.clone(),
            static_ip: None,
            aliases: vec![],
            ports: maps.clone(),
            membership: Default::default(),
            live: Some(LiveEndpoint {
                id: "c".repeat(64),
                ip,
                prefix_len: 24,
                gateway: None,
                mac: mac_for(ip),
                host_if: Some(IfName::new(host_if).unwrap()),
                ifname: IfName::new("eth0").unwrap(),
                default_route: true,
                published: decide(&maps, &[]).unwrap(),
                way_out: Default::default(),
            }),
        }],
    }
}

fn keys(e: &Elements, set: SetName) -> Vec<String> {
    e.get(set)
        .map(|(k, v)| match v {
            Some(v) => format!("{k} : {v}"),
            None => k.clone(),
        })
        .collect()
}

/// The rules a script adds to `chain` ("TABLE FAMILY CHAIN"), in order.
fn rules_added<'a>(script: &'a str, chain: &str) -> Vec<&'a str> {
    let prefix = format!("add rule {chain} ");
    script
        .lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .collect()
}

/// A user network with ICC off.
fn quiet_net() -> Network {
    user_net(
        "quiet",
        "10.6.0.0/24",
        false,
        &[("com.docker.network.bridge.enable_icc", "false")],
    )
}

#[test]
fn networks_fill_the_interface_sets_by_role() {
    let mut nets = predefined_networks(
        ["1".repeat(64), "2".repeat(64), "3".repeat(64)],
        "now",
        "172.17.0.1/16".parse().unwrap(),
    );
    nets.push(user_net("inside", "10.9.0.0/24", true, &[]));
    nets.push(user_net(
        "quiet",
        "10.8.0.0/24",
        false,
        &[("com.docker.network.bridge.enable_ip_masquerade", "false")],
    ));
    let e = desired(&nets, []);
    let br: Vec<String> = nets
        .iter()
        .filter_map(|n| n.bridge())
        .map(|b| format!("\"{}\"", b.name.as_str()))
        .collect();
    assert_eq!(keys(&e, SetName::Bridges).len(), 3);
    assert_eq!(keys(&e, SetName::Internal), vec![br[1].clone()]);
    assert_eq!(keys(&e, SetName::Masq), vec!["\"ferry0\"".to_string()]);
    assert!(keys(&e, SetName::Subnets).contains(&format!("10.9.0.0/24 . {}", br[1])));
    assert!(keys(&e, SetName::Intra).contains(&"\"ferry0\" . \"ferry0\"".to_string()));
}

#[test]
fn open_single_ports_go_to_the_hash_map_and_a_same_numbered_range_is_one_element() {
    let net = user_net("web", "10.7.0.0/24", false, &[]);
    let sb = sandbox(
        &net,
        "10.7.0.2",
        "fyaaaa",
        &[
            "8080:80",
            "127.0.0.1:7000-7999:7000-7999/udp",
            "127.0.0.1:9000:90",
            "5000-5999:5000-5999",
        ],
    );
    let e = desired([&net], [&sb]);
    assert_eq!(
        keys(&e, SetName::PubAny),
        vec!["tcp . 8080 : 10.7.0.2 . 80"]
    );
    assert_eq!(
        keys(&e, SetName::PubShift),
        vec!["0.0.0.0/0 . 127.0.0.1 . tcp . 9000 : 10.7.0.2 . 90"]
    );
    assert_eq!(
        keys(&e, SetName::PubSame),
        vec![
            "0.0.0.0/0 . 0.0.0.0/0 . tcp . 5000-5999 : 10.7.0.2",
            "0.0.0.0/0 . 127.0.0.1 . udp . 7000-7999 : 10.7.0.2"
        ]
    );
}

#[test]
fn a_source_restricted_port_keys_on_the_source_range() {
    let net = user_net("web", "10.7.0.0/24", false, &[]);
    let mut sb = sandbox(&net, "10.7.0.2", "fyaaaa", &["1234:1234"]);
    let live = sb.endpoints[0].live.as_mut().unwrap();
    live.published[0].source = Some("10.0.0.0/16".parse().unwrap());
    let e = desired([&net], [&sb]);
    assert_eq!(
        keys(&e, SetName::PubSame),
        vec!["10.0.0.0/16 . 0.0.0.0/0 . tcp . 1234 : 10.7.0.2"]
    );
}

#[test]
fn icc_off_lists_the_host_side_veths_of_that_network_only() {
    let quiet = quiet_net();
    let open = user_net("open", "10.5.0.0/24", false, &[]);
    let a = sandbox(&quiet, "10.6.0.2", "fyaaaa", &[]);
    let b = sandbox(&open, "10.5.0.2", "fybbbb", &[]);
    let e = desired([&quiet, &open], [&a, &b]);
    assert_eq!(keys(&e, SetName::NoIccPorts), vec!["\"fyaaaa\""]);
}

#[test]
fn an_attach_without_ports_on_an_icc_network_adds_only_its_sources_and_dns_port() {
    let net = user_net("web", "10.7.0.0/24", false, &[]);
    let before = desired([&net], []);
    let sb = sandbox(&net, "10.7.0.2", "fyaaaa", &[]);
    let after = desired([&net], [&sb]);
    let d = before.delta(&after);
    assert!(d.delete.is_empty());
    assert_eq!(
        d.add,
        vec![
            (
                SetName::Sources,
                "\"fyaaaa\" . 02:42:0a:07:00:02 . 10.7.0.2".to_string(),
                None
            ),
            (SetName::DnsPorts, "\"fyaaaa\" . 10.7.0.1".to_string(), None)
        ]
    );
    assert_eq!(before.delta(&before), Delta::default());
    assert_eq!(delta(&before.delta(&before), Hooks::default()), None);
}

#[test]
fn only_endpoints_on_ferrys_bridges_have_their_sources_checked() {
    let net = user_net("web", "10.7.0.0/24", false, &[]);
    let sb = sandbox(&net, "10.7.0.2", "fyaaaa", &[]);
    assert_eq!(keys(&desired([&net], [&sb]), SetName::Sources).len(), 1);
    // A network the endpoint is not known on (none of ferry's bridges): nothing.
    assert!(keys(&desired([], [&sb]), SetName::Sources).is_empty());
    // An endpoint without a host end (a macvlan link) has nothing to check.
    let mut mv = sb.clone();
    mv.endpoints[0].live.as_mut().unwrap().host_if = None;
    assert!(keys(&desired([&net], [&mv]), SetName::Sources).is_empty());
    // Nor does a sandbox that is not running.
    let mut off = sb.clone();
    off.state = RunState::Created;
    assert!(keys(&desired([&net], [&off]), SetName::Sources).is_empty());
}

#[test]
fn the_guard_is_hooked_only_while_some_endpoint_is_checked_and_drops_the_rest() {
    let net = user_net("web", "10.7.0.0/24", false, &[]);
    let jump = "add rule bridge ferry prerouting iifname \"fy*\" jump guard\n";
    let unhook = "delete chain bridge ferry prerouting\n";
    let empty = full(&desired([&net], []), Default::default());
    assert!(!empty.contains(jump) && empty.contains(unhook), "{empty}");
    let a = sandbox(&net, "10.7.0.2", "fyaaaa", &[]);
    let one = full(&desired([&net], [&a]), Default::default());
    assert!(one.contains(jump) && !one.contains(unhook), "{one}");
    for r in [
        "add rule bridge ferry guard iifname . ether saddr . ip saddr @sources goto sourced\n",
        "add rule bridge ferry guard iifname . ether saddr . arp saddr ip @sources iifname . arp saddr ether . arp saddr ip @sources return\n",
        "add rule bridge ferry guard drop\n",
    ] {
        assert!(one.contains(r), "{r}");
    }
    let d = desired([&net], []).delta(&desired([&net], [&a]));
    let on = delta(
        &d,
        Hooks {
            guard: Some(true),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(on.contains("add element bridge ferry sources") && on.ends_with(jump));
    let off = Hooks {
        guard: Some(false),
        ..Default::default()
    };
    assert!(delta(&Default::default(), off).unwrap().ends_with(unhook));
}

#[test]
fn a_delta_deletes_what_went_and_adds_what_came() {
    let net = user_net("web", "10.7.0.0/24", false, &[]);
    let a = sandbox(&net, "10.7.0.2", "fyaaaa", &["8080:80"]);
    let b = sandbox(&net, "10.7.0.3", "fybbbb", &["9090:90"]);
    let old = desired([&net], [&a]);
    let new = desired([&net], [&b]);
    let script = delta(&old.delta(&new), Hooks::default()).unwrap();
    assert_eq!(
        script,
        "delete element inet ferry pub_any { tcp . 8080 }\n\
         delete element bridge ferry sources { \"fyaaaa\" . 02:42:0a:07:00:02 . 10.7.0.2 }\n\
         delete element bridge ferry dns_ports { \"fyaaaa\" . 10.7.0.1 }\n\
         add element inet ferry pub_any { tcp . 9090 : 10.7.0.3 . 90 }\n\
         add element bridge ferry sources { \"fybbbb\" . 02:42:0a:07:00:03 . 10.7.0.3 }\n\
         add element bridge ferry dns_ports { \"fybbbb\" . 10.7.0.1 }\n"
    );
}

#[test]
fn a_full_load_never_flushes_the_user_chain_and_declares_every_set() {
    let net = user_net("web", "10.7.0.0/24", false, &[]);
    let s = full(&desired([&net], []), Default::default());
    assert!(s.contains("add chain inet ferry user\n"));
    assert!(!s.contains("flush chain inet ferry user"));
    for set in SetName::ALL {
        assert!(s.contains(set.path()), "{set:?}");
    }
    assert!(s.contains("add rule inet ferry forward jump user\n"));
    // From one sandbox on (the first hooks the anti-spoofing chain), no more rules.
    let one = [sandbox(&net, "10.7.0.2", "fyaaaa", &[])];
    let s1 = full(&desired([&net], &one), Default::default());
    let rules = s1.lines().filter(|l| l.starts_with("add rule")).count();
    let many: Vec<Sandbox> = (0..50)
        .map(|i| {
            sandbox(
                &net,
                &format!("10.7.0.{}", i + 2),
                &format!("fy{i:04}"),
                &[],
            )
        })
        .collect();
    let s2 = full(&desired([&net], &many), Default::default());
    assert_eq!(
        s2.lines().filter(|l| l.starts_with("add rule")).count(),
        rules,
        "the rule count does not grow with sandboxes"
    );
}

#[test]
fn the_bridge_family_hook_is_there_only_while_an_icc_off_port_exists() {
    let quiet = quiet_net();
    let jump = "add rule bridge ferry forward iifname @noicc_ports jump icc\n";
    let unhook = "delete chain bridge ferry forward\n";
    let empty = full(&desired([&quiet], []), Default::default());
    assert!(!empty.contains(jump) && empty.contains(unhook), "{empty}");
    let a = sandbox(&quiet, "10.6.0.2", "fyaaaa", &[]);
    let one = full(&desired([&quiet], [&a]), Default::default());
    assert!(one.contains(jump) && !one.contains(unhook), "{one}");
    // A change that brings the first such port (or takes the last) carries the hook.
    let d = desired([&quiet], []).delta(&desired([&quiet], [&a]));
    let icc = |on| Hooks {
        icc: Some(on),
        ..Default::default()
    };
    let on = delta(&d, icc(true)).unwrap();
    assert!(on.contains("add element bridge ferry noicc_ports") && on.ends_with(jump));
    assert!(delta(&Default::default(), icc(false))
        .unwrap()
        .ends_with(unhook));
}

#[test]
fn icc_off_bridges_are_not_in_intra_and_intra_traffic_carries_the_accept_mark() {
    let quiet = quiet_net();
    let e = desired([&quiet], []);
    assert!(keys(&e, SetName::Intra).is_empty());
    let s = full(&e, Default::default());
    assert!(s.contains("add rule inet ferry forward iifname . oifname @intra meta mark set"));
}

#[test]
fn a_flow_ferry_accepted_is_accepted_again_right_after_the_user_chain() {
    let rules = super::render::skeleton_rules(Default::default());
    let forward: Vec<&str> = rules
        .iter()
        .filter(|(t, c, _)| *t == "inet ferry" && *c == "forward")
        .map(|(_, _, r)| r.as_str())
        .collect();
    assert_eq!(forward[0], "jump user");
    assert!(
        forward[1].starts_with("ct mark and 0x00100000 == 0x00100000 ")
            && forward[1].ends_with(" accept"),
        "{}",
        forward[1]
    );
    // What is routed into or out of a bridge marks its flow; out of a bridge, an untracked
    // packet (whose `ct mark` cannot be read, which ends that rule) is accepted by the
    // next; towards Docker's bridges nothing is marked (dockerd's chains decide).
    let chain = |name: &str| -> Vec<&str> {
        rules
            .iter()
            .filter(|(t, c, _)| *t == "inet ferry" && *c == name)
            .map(|(_, _, r)| r.as_str())
            .collect()
    };
    let flow = "meta mark set meta mark or 0x00100000 ct mark set ct mark or 0x00100000 accept";
    let packet = "meta mark set meta mark or 0x00100000 accept";
    let to = chain("to_bridge");
    assert!(to[..2].iter().all(|r| r.ends_with(flow)), "{to:?}");
    let from = chain("from_bridge");
    assert_eq!(from[from.len() - 2..], [flow, packet]);
    assert!(from
        .iter()
        .filter(|r| r.contains("docker0") || r.contains("br-*"))
        .all(|r| !r.contains("mark")));
    assert!(forward[2].starts_with("iifname . oifname @intra") && forward[2].ends_with(packet));
}

#[test]
fn bridged_traffic_and_dns_queries_are_untracked_in_the_bridge_family_once_their_sources_pass() {
    let net = user_net("loud", "10.7.0.0/24", false, &[]);
    let quiet = quiet_net();
    let a = sandbox(&net, "10.7.0.2", "fyaaaa", &[]);
    let q = sandbox(&quiet, "10.6.0.2", "fyqqqq", &[]);
    let e = desired([&net, &quiet], [&a, &q]);
    // Each veth with its own network's gateway, for the DNS queries; no overlay address.
    assert_eq!(
        keys(&e, SetName::DnsPorts),
        vec!["\"fyaaaa\" . 10.7.0.1", "\"fyqqqq\" . 10.6.0.1"]
    );
    assert!(keys(&e, SetName::IntraDst).is_empty());
    let s = full(&e, Default::default());
    let sourced = rules_added(&s, "bridge ferry sourced");
    // Bridged (not to the bridge's own MAC, so not routed) and not on an ICC-off
    // network; then queries from a veth to its own gateway. Both end the hook's walk.
    assert_eq!(
        sourced,
        [
            "meta pkttype other iifname != @noicc_ports notrack accept",
            "th dport 53 meta l4proto { tcp, udp } iifname . ip daddr @dns_ports notrack accept"
        ]
    );
    assert!(s.contains("guard iifname . ether saddr . ip saddr @sources goto sourced\n"));
    // No inet chain before conntrack on a host without overlays, and that of earlier
    // versions (`dns_in`) goes.
    assert!(s.contains("delete chain inet ferry tunnel_in\n"), "{s}");
    assert!(!s.contains("add rule inet ferry tunnel_in"), "{s}");
    assert!(s.contains("delete chain inet ferry dns_in\n"), "{s}");
    assert!(!s.contains("add rule inet ferry dns_in"), "{s}");
}

#[test]
fn an_overlay_hooks_the_raw_chain_that_untracks_its_tunnel_and_what_it_routes() {
    let net = user_net("loud", "10.7.0.0/24", false, &[]);
    let ov = crate::test_networks::overlay("ov", "10.77.0.0/24", &[]);
    let br = format!("\"{}\"", ov.bridge().unwrap().name);
    let e = desired([&net, &ov], []);
    // The overlay's subnet without its gateway, from its bridge and from its tunnel; the
    // local bridge's stays out (the bridge family untracks what it bridges).
    assert_eq!(
        keys(&e, SetName::IntraDst),
        vec![
            "10.77.0.0 . \"fv-aaaaaaaa\"".to_string(),
            format!("10.77.0.0 . {br}"),
            "10.77.0.2-10.77.0.255 . \"fv-aaaaaaaa\"".to_string(),
            format!("10.77.0.2-10.77.0.255 . {br}"),
        ]
    );
    assert!(keys(
        &desired(
            [&crate::test_networks::overlay(
                "q",
                "10.78.0.0/24",
                &[("com.docker.network.bridge.enable_icc", "false")]
            )],
            []
        ),
        SetName::IntraDst
    )
    .is_empty());
    let s = full(&e, Default::default());
    let tunnel_in = rules_added(&s, "inet ferry tunnel_in");
    assert_eq!(
        tunnel_in,
        [
            "ip daddr . iifname @intra_dst notrack accept",
            "udp dport @tunnel_ports notrack"
        ]
    );
    assert!(s.contains("add chain inet ferry tunnel_in { type filter hook prerouting priority -300; policy accept; }"));
    assert!(!s.contains("delete chain inet ferry tunnel_in"));
    // A cluster's tunnel port alone (no overlay network yet) hooks it too; a change that
    // empties both sets unhooks it.
    let ports = tunnel_elements(4789, &Default::default());
    assert!(full(&ports, Default::default()).contains("add rule inet ferry tunnel_in"));
    let want = super::render::wanted_rules(&e, Default::default());
    assert_eq!(want.get(&("inet ferry", "tunnel_in")), Some(&2));
    let off = Hooks {
        tunnel: Some(false),
        ..Default::default()
    };
    assert!(delta(&Default::default(), off)
        .unwrap()
        .ends_with("delete chain inet ferry tunnel_in\n"));
}

#[test]
fn the_forwarding_guard_is_there_only_when_ferry_turned_forwarding_on() {
    let guard = "iifname != @bridges oifname != @bridges drop";
    let e = Elements::default();
    assert!(!full(&e, Default::default()).contains(guard));
    let on = super::render::Options {
        guard_forwarding: true,
    };
    assert!(full(&e, on).contains(guard));
}

#[test]
fn a_plugins_network_is_in_plugin_nets_and_nowhere_else() {
    let mut net = user_net("plug", "10.0.1.0/24", true, &[]);
    net.kind = crate::model::NetworkKind::Remote(crate::model::RemoteConf {
        driver: "mynetwork".into(),
    });
    let e = desired([&net], []);
    assert_eq!(
        keys(&e, SetName::PluginNets),
        vec!["10.0.1.0/24".to_string()]
    );
    assert!(keys(&e, SetName::Bridges).is_empty());
    assert!(keys(&e, SetName::Subnets).is_empty());
}

#[test]
fn ferrys_docker_user_rule_is_found_by_its_handle() {
    let listing = "table ip filter {\n\tchain DOCKER-USER { # handle 3\n\t\tmeta mark & 0x00100000 == 0x00100000 counter packets 0 bytes 0 accept comment \"ferry\" # handle 12\n\t\tcounter packets 0 bytes 0 return # handle 4\n\t}\n}\n";
    assert_eq!(
        super::render::docker_user_delete(listing).as_deref(),
        Some("delete rule ip filter DOCKER-USER handle 12\n")
    );
    assert_eq!(
        super::render::docker_user_delete("chain DOCKER-USER {\n}"),
        None
    );
}

#[test]
fn the_listing_is_counted_set_by_set_even_across_lines() {
    let listing = "table inet ferry { # handle 3\n\tset bridges { # handle 5\n\t\ttype ifname\n\t\telements = { \"ferry0\", \"fy-1\" }\n\t}\n\tset masq {\n\t\ttype ifname\n\t}\n\tmap pub_any {\n\t\ttype inet_proto . inet_service : ipv4_addr . inet_service\n\t\telements = { tcp . 8080 : 10.0.0.2 . 80,\n\t\t\t     udp . 53 : 10.0.0.3 . 53,\n\t\t\t     tcp . 9 : 10.0.0.4 . 9 }\n\t}\n\tchain forward {\n\t}\n}\n";
    let got = super::listed_counts(listing);
    assert_eq!(got.get("bridges"), Some(&2));
    assert_eq!(got.get("pub_any"), Some(&3));
    assert_eq!(got.get("masq"), None);
    let net = user_net("loud", "10.7.0.0/24", false, &[]);
    let want = super::wanted_counts(&desired([&net], []), "inet ferry");
    assert_eq!(want.get("bridges"), Some(&1));
    assert!(
        !want.contains_key("noicc_ports"),
        "a bridge-family set: {want:?}"
    );
    let sb = sandbox(&net, "10.7.0.2", "fyaaaa", &[]);
    let bridge = super::wanted_counts(&desired([&net], [&sb]), "bridge ferry");
    assert_eq!(bridge.get("sources"), Some(&1), "{bridge:?}");
    assert!(!bridge.contains_key("bridges"), "{bridge:?}");
}

#[test]
fn the_listing_is_counted_chain_by_chain_and_a_hook_is_wanted_only_while_it_has_work() {
    let listing = "table bridge ferry { # handle 7\n\tset sources { # handle 2\n\t\ttype ifname . ether_addr . ipv4_addr\n\t\telements = { \"fy1\" . 02:42:0a:00:00:02 . 10.0.0.2 }\n\t}\n\tchain guard { # handle 3\n\t\tiifname . ether saddr . ip saddr @sources return # handle 9\n\t\tdrop # handle 10\n\t}\n\tchain prerouting { # handle 4\n\t\ttype filter hook prerouting priority -200; policy accept;\n\t}\n}\n";
    let got = super::listed_rules(listing);
    assert_eq!(got.get("guard"), Some(&2), "{got:?}");
    assert_eq!(
        got.get("prerouting"),
        Some(&0),
        "a hooked chain emptied: {got:?}"
    );
    assert_eq!(got.get("sources"), None, "a set is not a chain: {got:?}");
    let opts = super::render::Options::default();
    let net = user_net("loud", "10.7.0.0/24", false, &[]);
    let bare = super::render::wanted_rules(&desired([&net], []), opts);
    assert_eq!(bare.get(&("bridge ferry", "prerouting")), None);
    assert!(bare.get(&("inet ferry", "forward")).is_some_and(|n| *n > 0));
    let sb = sandbox(&net, "10.7.0.2", "fyaaaa", &[]);
    let guarded = super::render::wanted_rules(&desired([&net], [&sb]), opts);
    assert_eq!(guarded.get(&("bridge ferry", "prerouting")), Some(&1));
    // Every counted rule is one the full load writes: the listing of a fresh load holds
    // exactly these counts (checked against the kernel by tests/spoofing.rs).
    let full = super::render::full(&desired([&net], [&sb]), opts);
    let added: usize = guarded.values().sum();
    assert_eq!(
        full.lines().filter(|l| l.starts_with("add rule ")).count(),
        added
    );
}
