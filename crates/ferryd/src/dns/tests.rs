use super::*;
use ferry_core::model::{Endpoint, LiveEndpoint, Network, NetworkKind, RunState};
use ferry_dns::{lookup, Answer, Table};
use hickory_proto::rr::RecordType;

fn net(id: &str, gw: &str, predefined: bool, internal: bool) -> Network {
    let subnet: ipnet::IpNet = format!("{gw}/24").parse().unwrap();
    let pool = ferry_core::ipam::AddressPool::new(subnet.trunc(), gw.parse().unwrap(), None);
    Network {
        id: id.into(),
        name: id.into(),
        created: String::new(),
        kind: NetworkKind::Bridge(ferry_core::model::BridgeConf {
            name: ferry_core::IfName::new("brtest").unwrap(),
            mtu: 1500,
            icc: true,
            masquerade: true,
            adopted: false,
        }),
        internal,
        attachable: false,
        predefined,
        labels: Default::default(),
        options: Default::default(),
        ipam_options: None,
        ipam_echo: vec![],
        pool: Some(pool),
        ipam_plugin: None,
    }
}

fn ep(net: &str, ip: &str, gw: &str, aliases: &[&str]) -> Endpoint {
    Endpoint {
        network_id: net.into(),
        static_ip: None,
        aliases: aliases.iter().map(|s| s.to_string()).collect(),
        ports: vec![],
        membership: Default::default(),
        live: Some(LiveEndpoint {
            id: "e".repeat(64),
            ip: ip.parse().unwrap(),
            prefix_len: 24,
            gateway: Some(gw.parse().unwrap()),
            mac: [0; 6],
            host_if: Some(ferry_core::IfName::new("fyx").unwrap()),
            ifname: ferry_core::IfName::new("eth0").unwrap(),
            default_route: false,
            published: vec![],
            way_out: Default::default(),
        }),
    }
}

fn sandbox(name: &str, hostname: &str, endpoints: Vec<Endpoint>) -> Sandbox {
    Sandbox {
        id: format!("{name}{}", "0".repeat(64 - name.len())),
        name: name.into(),
        created: String::new(),
        created_unix: 0,
        hostname: hostname.into(),
        cmd: vec![],
        network_mode: "x".to_string().into(),
        auto_remove: false,
        dns: DnsConf::default(),
        state: RunState::Running {
            pid: 1,
            start_time: 1,
        },
        started_at: None,
        finished_at: None,
        labels: Default::default(),
        endpoints,
    }
}

fn state() -> State {
    let mut st = State::default();
    for n in [
        net("bridge", "172.17.0.1", true, false),
        net("a", "10.1.0.1", false, false),
        net("b", "10.2.0.1", false, false),
        net("i", "10.3.0.1", false, true),
    ] {
        st.networks.insert(n.id.clone(), n);
    }
    for sb in [
        sandbox(
            "web",
            "h-web",
            vec![ep("a", "10.1.0.2", "10.1.0.1", &["www"])],
        ),
        sandbox(
            "both",
            "both",
            vec![
                ep("bridge", "172.17.0.2", "172.17.0.1", &[]),
                ep("b", "10.2.0.2", "10.2.0.1", &[]),
                ep("a", "10.1.0.3", "10.1.0.1", &[]),
            ],
        ),
        sandbox(
            "old",
            "old",
            vec![ep("bridge", "172.17.0.3", "172.17.0.1", &[])],
        ),
        sandbox("inner", "inner", vec![ep("i", "10.3.0.2", "10.3.0.1", &[])]),
    ] {
        st.sandboxes.insert(sb.id.clone(), sb);
    }
    st
}

fn table() -> Table {
    Table::build(&records(&state()), &["127.0.0.1:53".parse().unwrap()])
}

fn a(table: &Table, from: &str, name: &str) -> Answer {
    lookup(table, from.parse().unwrap(), name, RecordType::A)
}

#[test]
fn the_responder_listens_on_user_network_gateways_only() {
    let want: BTreeSet<Ipv4Addr> = ["10.1.0.1", "10.2.0.1", "10.3.0.1"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(listen_addrs(&state()), want);
}

#[test]
fn names_hostnames_and_aliases_of_running_sandboxes_resolve_per_network() {
    let t = table();
    let web = Answer::A(vec!["10.1.0.2".parse().unwrap()]);
    for n in ["web", "h-web", "www"] {
        assert_eq!(a(&t, "10.1.0.3", n), web, "{n}");
    }
    // `both` asks from any of its addresses, the default bridge's included.
    assert_eq!(a(&t, "172.17.0.2", "web"), web);
    assert_eq!(a(&t, "10.3.0.2", "web"), Answer::NxDomain);
    // Default-bridge names do not exist, and default-bridge-only sandboxes are
    // strangers.
    assert!(matches!(a(&t, "10.1.0.2", "old"), Answer::Forward(_)));
    assert_eq!(a(&t, "172.17.0.3", "web"), Answer::Refused);
}

#[test]
fn a_stopped_sandbox_has_no_names() {
    let mut st = state();
    for sb in st.sandboxes.values_mut() {
        if sb.name == "web" {
            sb.endpoints[0].live = None;
            sb.state = RunState::Exited { code: 0 };
        }
    }
    let t = Table::build(&records(&st), &[]);
    assert!(!matches!(a(&t, "10.1.0.3", "web"), Answer::A(_)));
}

#[test]
fn internal_only_sandboxes_do_not_forward() {
    let t = table();
    assert_eq!(
        a(&t, "10.3.0.2", "inner"),
        Answer::A(vec!["10.3.0.2".parse().unwrap()])
    );
    assert_eq!(a(&t, "10.3.0.2", "example.test"), Answer::Refused);
}

#[test]
fn dns_flags_become_the_sandboxs_upstreams() {
    let mut st = state();
    for sb in st.sandboxes.values_mut() {
        sb.dns.servers = vec!["10.9.0.53".into()];
    }
    let t = Table::build(&records(&st), &[]);
    assert_eq!(
        a(&t, "10.1.0.2", "example.test"),
        Answer::Forward(vec!["10.9.0.53:53".parse().unwrap()].into())
    );
}

#[test]
fn resolv_conf_points_at_the_first_named_networks_gateway() {
    let dns = Dns::default();
    let st = state();
    dns.update(&st, &[]);
    let by = |n: &str| st.sandboxes.values().find(|s| s.name == n).unwrap().clone();
    let host = "nameserver 10.0.0.53\nsearch corp.test\n";
    assert_eq!(
        dns.resolv_conf(host, &by("both")),
        "nameserver 10.2.0.1\nsearch corp.test\n"
    );
    assert_eq!(
        dns.resolv_conf(host, &by("old")),
        "nameserver 10.0.0.53\nsearch corp.test\n"
    );
    let mut web = by("web");
    web.dns = DnsConf {
        servers: vec!["10.9.0.53".into()],
        search: vec!["x.test".into()],
        options: vec!["ndots:1".into()],
    };
    assert_eq!(
        dns.resolv_conf(host, &web),
        "nameserver 10.1.0.1\nsearch x.test\noptions ndots:1\n"
    );
}

#[test]
fn upstreams_parse_with_or_without_a_port() {
    assert_eq!(
        parse_upstream("10.0.0.53"),
        Ok("10.0.0.53:53".parse().unwrap())
    );
    assert_eq!(
        parse_upstream("127.0.0.1:5353"),
        Ok("127.0.0.1:5353".parse().unwrap())
    );
    assert_eq!(
        parse_upstream("[::1]:5353"),
        Ok("[::1]:5353".parse().unwrap())
    );
    assert!(parse_upstream("resolver.test").is_err());
    assert_eq!(
        resolv_upstreams("# x\nnameserver 127.0.0.53\nnameserver fd00::53\nsearch a\n"),
        vec![
            "127.0.0.53:53".parse().unwrap(),
            "[fd00::53]:53".parse().unwrap()
        ]
    );
}

/// Every asker address and name of `state()` and of the steps below, and the answers
/// `names` gives to each.
fn answers(names: &Names) -> Vec<(String, String, Answer)> {
    let askers = [
        "10.1.0.2",
        "10.1.0.3",
        "10.1.0.9",
        "10.2.0.2",
        "10.2.0.9",
        "10.3.0.2",
        "172.17.0.2",
        "172.17.0.3",
        "172.17.0.9",
    ];
    let names_asked = [
        "web",
        "www",
        "both",
        "inner",
        "new",
        "h-new",
        "nn",
        "example.test",
    ];
    let mut out = vec![];
    for from in askers {
        for n in names_asked {
            out.push((from.into(), n.into(), a(names.table(), from, n)));
        }
        for ip in askers {
            let rev = ip.split('.').rev().collect::<Vec<_>>().join(".") + ".in-addr.arpa";
            let ans = lookup(names.table(), from.parse().unwrap(), &rev, RecordType::PTR);
            out.push((from.into(), rev, ans));
        }
    }
    out
}

/// Follow one commit, and check the table against one made from the whole state.
fn commit(names: &mut Names, st: &State, keys: &[Key]) -> bool {
    let changed = names.follow(st, keys);
    let whole = Names::of(st, &[], &Default::default());
    assert_eq!(
        names.table().canonical(),
        whole.table().canonical(),
        "{keys:?}"
    );
    assert_eq!(answers(names), answers(&whole), "{keys:?}");
    changed
}

fn sbx(id: &str) -> Key {
    Key::Sbx(id.into())
}

fn net_key(id: &str) -> Key {
    Key::Net(id.into())
}

#[test]
fn a_table_followed_commit_by_commit_answers_as_one_made_from_the_whole_state() {
    let mut st = state();
    let mut names = Names::of(&st, &[], &Default::default());
    // A sandbox comes on a (its address taken from a's pool: a network key too).
    let new = sandbox(
        "new",
        "h-new",
        vec![ep("a", "10.1.0.9", "10.1.0.1", &["nn"])],
    );
    let id = new.id.clone();
    st.sandboxes.insert(id.clone(), new);
    assert!(commit(&mut names, &st, &[net_key("a"), sbx(&id)]));
    assert_eq!(
        a(names.table(), "10.1.0.2", "nn"),
        Answer::A(vec!["10.1.0.9".parse().unwrap()])
    );
    // It connects to b, then to the default bridge (no names: an address to ask from).
    let sb = st.sandboxes.get_mut(&id).unwrap();
    sb.endpoints.push(ep("b", "10.2.0.9", "10.2.0.1", &[]));
    assert!(commit(&mut names, &st, &[net_key("b"), sbx(&id)]));
    let sb = st.sandboxes.get_mut(&id).unwrap();
    sb.endpoints
        .push(ep("bridge", "172.17.0.9", "172.17.0.1", &[]));
    assert!(commit(&mut names, &st, &[net_key("bridge"), sbx(&id)]));
    // Its pid is recorded: no record changes, the table stays.
    let sb = st.sandboxes.get_mut(&id).unwrap();
    sb.state = RunState::Running {
        pid: 2,
        start_time: 2,
    };
    assert!(!commit(&mut names, &st, &[sbx(&id)]));
    // It disconnects from a.
    let sb = st.sandboxes.get_mut(&id).unwrap();
    sb.endpoints.retain(|e| e.network_id != "a");
    assert!(commit(&mut names, &st, &[net_key("a"), sbx(&id)]));
    // web, on a only, no longer sees it; its alias on a is gone.
    assert_eq!(a(names.table(), "10.1.0.2", "new"), Answer::NxDomain);
    assert_eq!(a(names.table(), "10.1.0.2", "nn"), Answer::ServFail);
    // A network's pool changes (no record does); then i stops being internal under
    // its sandbox (a kind change: its record is made again, with no key of its own).
    assert!(!commit(&mut names, &st, &[net_key("a")]));
    assert_eq!(
        a(names.table(), "10.3.0.2", "example.test"),
        Answer::Refused
    );
    st.networks.get_mut("i").unwrap().internal = false;
    assert!(commit(&mut names, &st, &[net_key("i")]));
    assert_eq!(
        a(names.table(), "10.3.0.2", "example.test"),
        Answer::ServFail
    );
    // A network is removed from under a sandbox, and a new one is created.
    st.networks.remove("i");
    assert!(commit(&mut names, &st, &[net_key("i")]));
    let c = net("c", "10.4.0.1", false, false);
    st.networks.insert("c".into(), c);
    assert!(!commit(&mut names, &st, &[net_key("c")]));
    // The sandbox goes.
    st.sandboxes.remove(&id);
    assert!(commit(&mut names, &st, &[sbx(&id)]));
    assert!(!matches!(a(names.table(), "10.2.0.2", "new"), Answer::A(_)));
}
