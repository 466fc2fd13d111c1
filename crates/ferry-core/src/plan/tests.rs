//! Plans as values: a state, a request, the plan and the state after, with no kernel,
//! store or daemon.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::attach::{attach_spec, Detached, Live};
use super::connect::{plan_connect, plan_disconnect, Asked, ConnectPlan};
use crate::docker::network::{EndpointSettingsReq, NetworkCreateRequest};
use crate::model::{DnsConf, Network, NetworkMode, RunState, Sandbox};
use crate::state::{Key, State};
use crate::validate::{network_from_request, CreateContext};
use crate::wiring::{AttachSpec, LinkSpec, VethLink};
use crate::CoreError;

const F: &str = "f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1";
const B: &str = "b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1";
const S: &str = "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1";

fn network(existing: &[Network], body: &str, id: &str) -> Network {
    let req: NetworkCreateRequest = serde_json::from_str(body).unwrap();
    let ctx = CreateContext {
        existing,
        host_routes: &[],
        pool_cursor: None,
        id: id.into(),
        created: "t".into(),
    };
    network_from_request(&req, &ctx).unwrap().network
}

fn sandbox(id: &str, running: bool) -> Sandbox {
    Sandbox {
        id: id.into(),
        name: format!("name-{id}"),
        created: "t".into(),
        created_unix: 0,
        hostname: id.into(),
        cmd: vec!["sleep".into()],
        network_mode: NetworkMode::Joined("default".into()),
        auto_remove: false,
        dns: DnsConf::default(),
        state: match running {
            true => RunState::Running {
                pid: 7,
                start_time: 1,
            },
            false => RunState::Created,
        },
        started_at: None,
        finished_at: None,
        endpoints: vec![],
        labels: BTreeMap::new(),
    }
}

/// Two user bridges, `front` (10.60.0.0/24) and `back` (internal, 10.61.0.0/24), and a
/// running sandbox `a` and a created one `b` on neither.
fn state() -> State {
    let mut st = State::default();
    let front = network(
        &[],
        r#"{"Name":"front","IPAM":{"Config":[{"Subnet":"10.60.0.0/24"}]}}"#,
        F,
    );
    let back = network(
        std::slice::from_ref(&front),
        r#"{"Name":"back","Internal":true,"IPAM":{"Config":[{"Subnet":"10.61.0.0/24"}]}}"#,
        B,
    );
    for n in [front, back] {
        st.networks.insert(n.id.clone(), n);
    }
    for sb in [sandbox("a", true), sandbox("b", false)] {
        st.sandboxes.insert(sb.id.clone(), sb);
    }
    st
}

fn live(ep: &str) -> Option<Live> {
    Some(Live {
        netns: PathBuf::from("/run/ferry/netns/a"),
        endpoint_id: ep.repeat(64 / ep.len()),
    })
}

fn asked(body: &str) -> Asked {
    let cfg: EndpointSettingsReq = serde_json::from_str(body).unwrap();
    Asked::from_request(Some(&cfg)).unwrap()
}

#[test]
fn connecting_a_running_sandbox_plans_its_address_link_and_default_route() {
    let mut st = state();
    let plan = plan_connect(&mut st, "a", F, Asked::default(), live("e")).unwrap();
    let ep = "e".repeat(64);
    assert_eq!(
        plan,
        ConnectPlan {
            keys: vec![Key::Net(F.into()), Key::Sbx("a".into())],
            attach: Some(AttachSpec {
                netns: "/run/ferry/netns/a".into(),
                ifname: "eth0".into(),
                mac: [0x02, 0x42, 10, 60, 0, 2],
                addr: "10.60.0.2/24".parse().unwrap(),
                default_via: Some("10.60.0.1".parse().unwrap()),
                link: LinkSpec::Veth(VethLink {
                    bridge: st.networks[F].bridge().unwrap().name.to_string(),
                    host_if: crate::model::host_if_name(&ep).to_string(),
                    mtu: 1500,
                    hairpin: false,
                }),
            }),
            published: vec![],
            cursor_before: None,
            default_from: None,
        }
    );
    let pool = st.networks[F].pool.as_ref().unwrap();
    assert_eq!(pool.owner("10.60.0.2".parse().unwrap()), Some("a"));
    let l = st.sandboxes["a"].endpoint(F).unwrap().live.clone().unwrap();
    assert!(l.default_route);
    // The kernel's request is what the live record says: reconcile rebuilds the same one.
    let again = attach_spec(&l, &st.networks[F].kind, "/run/ferry/netns/a".into());
    assert_eq!(again, plan.attach);
}

#[test]
fn an_internal_network_takes_no_default_route_and_a_second_network_does_not_take_it() {
    let mut st = state();
    plan_connect(&mut st, "a", B, Asked::default(), live("i")).unwrap();
    let internal = plan_connect(&mut st, "a", F, Asked::default(), live("f")).unwrap();
    let spec = internal.attach.unwrap();
    assert_eq!(spec.ifname, "eth1", "the next free ethN");
    assert_eq!(spec.default_via, Some("10.60.0.1".parse().unwrap()));
    let b1 = st.sandboxes["a"].endpoint(B).unwrap().live.clone().unwrap();
    assert!(!b1.default_route, "an internal network never carries it");
}

#[test]
fn a_sandbox_that_is_not_running_gets_its_endpoint_and_static_address_but_no_link() {
    let mut st = state();
    let a = asked(r#"{"IPAMConfig":{"IPv4Address":"10.60.0.77"},"Aliases":["db"]}"#);
    let plan = plan_connect(&mut st, "b", F, a, None).unwrap();
    assert_eq!(plan.attach, None);
    let e = st.sandboxes["b"].endpoint(F).unwrap();
    assert_eq!(e.static_ip, Some("10.60.0.77".parse().unwrap()));
    assert_eq!(e.aliases, ["db"]);
    assert!(e.live.is_none());
    let pool = st.networks[F].pool.as_ref().unwrap();
    assert_eq!(pool.owner("10.60.0.77".parse().unwrap()), Some("b"));
}

#[test]
fn dockers_refusals_come_before_any_edit() {
    let mut st = state();
    plan_connect(&mut st, "a", F, Asked::default(), live("e")).unwrap();
    let before = st.clone();
    let again = plan_connect(&mut st, "a", F, Asked::default(), live("x"));
    assert!(matches!(again, Err(CoreError::AlreadyConnected { .. })));
    let ported = asked(r#"{"FerryPortBindings":{"80/tcp":[{"HostPort":"8080"}]}}"#);
    let internal = plan_connect(&mut st, "a", B, ported, live("y"));
    assert!(internal.unwrap_err().to_string().contains("internal"));
    let gone = plan_connect(&mut st, "a", "nope", Asked::default(), live("z"));
    assert!(matches!(gone, Err(CoreError::NoSuchNetwork(_))));
    assert_eq!(st.sandboxes, before.sandboxes);
    assert_eq!(st.networks, before.networks);
}

#[test]
fn a_taken_static_address_is_refused_naming_it() {
    let mut st = state();
    let a = asked(r#"{"IPAMConfig":{"IPv4Address":"10.60.0.9"}}"#);
    plan_connect(&mut st, "a", F, a, live("e")).unwrap();
    let b = asked(r#"{"IPAMConfig":{"IPv4Address":"10.60.0.9"}}"#);
    let err = plan_connect(&mut st, "b", F, b, None).unwrap_err();
    assert!(err.to_string().contains("10.60.0.9"), "{err}");
}

#[test]
fn disconnecting_frees_the_address_and_moves_the_default_route() {
    let mut st = state();
    plan_connect(&mut st, "a", F, Asked::default(), live("e")).unwrap();
    let second = network(
        &st.networks.values().cloned().collect::<Vec<_>>(),
        r#"{"Name":"side","IPAM":{"Config":[{"Subnet":"10.62.0.0/24"}]}}"#,
        S,
    );
    st.networks.insert(S.into(), second);
    plan_connect(&mut st, "a", S, Asked::default(), live("s")).unwrap();
    let plan = plan_disconnect(&mut st, "a", F).unwrap();
    let ep = "e".repeat(64);
    assert_eq!(
        plan.detached,
        Some(Detached {
            host_if: Some(crate::model::host_if_name(&ep).to_string()),
            ifname: "eth0".into(),
            default_route: true,
        })
    );
    let side_if = crate::model::host_if_name(&"s".repeat(64)).to_string();
    assert_eq!(
        plan.new_default,
        Some(("10.62.0.1".parse().unwrap(), Some(side_if)))
    );
    assert!(st.sandboxes["a"].endpoint(F).is_none());
    let pool = st.networks[F].pool.as_ref().unwrap();
    assert_eq!(pool.owner("10.60.0.2".parse().unwrap()), None);
    let not_connected = plan_disconnect(&mut st, "a", F);
    assert!(matches!(not_connected, Err(CoreError::NotConnected { .. })));
}

#[test]
fn creating_a_network_plans_its_bridge_with_the_gateway_on_it() {
    use super::network::plan_create;
    let mut st = state();
    let existing: Vec<Network> = st.networks.values().cloned().collect();
    let net = network(
        &existing,
        r#"{"Name":"mid","IPAM":{"Config":[{"Subnet":"10.63.0.0/24","Gateway":"10.63.0.254"}]}}"#,
        S,
    );
    let plan = plan_create(&mut st, net.clone(), Some(4)).unwrap();
    assert_eq!(plan.keys, vec![Key::Net(S.into()), Key::Meta]);
    let bridge = plan.bridge.unwrap();
    assert_eq!(bridge.gateway, Some("10.63.0.254/24".parse().unwrap()));
    assert_eq!(bridge.name, net.bridge().unwrap().name.to_string());
    assert_eq!(st.meta.pool_cursor, Some(4));
    let twice = plan_create(&mut st, net, None);
    assert!(matches!(twice, Err(CoreError::DuplicateNetwork(_))));
}

#[test]
fn a_network_in_use_or_predefined_is_not_removed() {
    use super::network::plan_remove;
    let mut st = state();
    plan_connect(&mut st, "b", F, Asked::default(), None).unwrap();
    let in_use = plan_remove(&mut st, F).unwrap_err();
    assert!(matches!(in_use, CoreError::NetworkInUse { .. }), "{in_use}");
    for n in crate::validate::predefined_networks(
        [S.into(), "d".repeat(64), "e".repeat(64)],
        "t",
        "172.17.0.1/16".parse().unwrap(),
    ) {
        st.networks.insert(n.id.clone(), n);
    }
    let predefined = plan_remove(&mut st, S).unwrap_err();
    assert!(matches!(predefined, CoreError::Predefined(_)));
    let plan = plan_remove(&mut st, B).unwrap();
    assert_eq!(plan.removed.name, "back");
    assert!(!st.networks.contains_key(B));
}

#[test]
fn starting_a_sandbox_plans_every_endpoint_live_in_order() {
    use super::sandbox::plan_start;
    let mut st = state();
    let a = asked(r#"{"IPAMConfig":{"IPv4Address":"10.60.0.50"}}"#);
    plan_connect(&mut st, "b", F, a, None).unwrap();
    plan_connect(&mut st, "b", B, Asked::default(), None).unwrap();
    let mut ids = ["1", "2"].into_iter().map(|c| c.repeat(64));
    let netns = std::path::Path::new("/run/ferry/netns/b");
    let plan = plan_start(&mut st, "b", netns, || ids.next().unwrap(), "now".into()).unwrap();
    assert_eq!(
        plan.keys,
        vec![Key::Net(F.into()), Key::Net(B.into()), Key::Sbx("b".into())]
    );
    let got: Vec<_> = plan
        .attach
        .iter()
        .map(|s| (s.ifname.as_str(), s.addr.to_string(), s.default_via))
        .collect();
    assert_eq!(
        got,
        [
            (
                "eth0",
                "10.60.0.50/24".into(),
                Some("10.60.0.1".parse().unwrap())
            ),
            ("eth1", "10.61.0.2/24".into(), None),
        ]
    );
    assert_eq!(plan.cursors, [(F.to_string(), None), (B.to_string(), None)]);
    let sb = &st.sandboxes["b"];
    assert!(sb.is_running());
    assert_eq!(sb.started_at.as_deref(), Some("now"));
}

#[test]
fn a_second_sandbox_of_the_same_name_is_refused_naming_the_first() {
    use super::sandbox::plan_create;
    let mut st = state();
    let mut twin = sandbox("c", false);
    twin.name = "name-a".into();
    let err = plan_create(&mut st, twin, F).unwrap_err();
    assert!(err.to_string().contains("\"a\""), "{err}");
    assert!(!st.sandboxes.contains_key("c"));
}

#[test]
fn each_driver_decides_its_own_link_setup_and_ports() {
    use crate::wiring::MacvlanLink;
    let mut st = state();
    let mac = network(
        &[],
        r#"{"Name":"lan","Driver":"macvlan","Options":{"parent":"eth9"},"IPAM":{"Config":[{"Subnet":"10.70.0.0/24"}]}}"#,
        S,
    );
    assert_eq!(
        super::network::bridge_spec(&mac),
        None,
        "nothing on the host"
    );
    st.networks.insert(S.into(), mac);
    let plan = plan_connect(&mut st, "a", S, Asked::default(), live("m")).unwrap();
    let spec = plan.attach.unwrap();
    assert_eq!(
        spec.link,
        LinkSpec::Macvlan(MacvlanLink {
            parent: "eth9".into(),
            mode: crate::model::MacvlanMode::Bridge,
            mtu: None,
        })
    );
    assert_eq!(
        spec.host_if(),
        None,
        "a macvlan link has no end on the host"
    );
    let ported = asked(r#"{"FerryPortBindings":{"80/tcp":[{"HostPort":"8080"}]}}"#);
    let refused = plan_connect(&mut st, "b", S, ported, None).unwrap_err();
    assert!(refused.to_string().contains("macvlan"), "{refused}");
    // host and none: no link, nothing made, -p discarded rather than refused.
    for kind in [
        crate::model::NetworkKind::Host,
        crate::model::NetworkKind::Null,
    ] {
        let d = kind.network_driver();
        assert_eq!(d.setup(None), None);
        let l = st.sandboxes["a"].endpoint(S).unwrap().live.clone().unwrap();
        assert_eq!(d.link(&l), None);
        assert_eq!(d.publishing("host"), super::driver::Publishing::Dropped);
    }
}

#[test]
fn removing_a_docker_network_mapped_onto_an_overlay_takes_what_docker_forgot_and_keeps_the_overlay()
{
    use crate::model::{host_if_name, Endpoint, LiveEndpoint};
    use crate::remote::{container_if_name, DockerEndpoint, DockerNetwork};
    const D: &str = "d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1";
    const EP: &str = "e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1";
    // `front` stands for the overlay's local copy: the planner goes by the mapping.
    let mut st = state();
    let ip: std::net::IpAddr = "10.60.0.9".parse().unwrap();
    let pool = st.networks.get_mut(F).unwrap().pool.as_mut().unwrap();
    pool.allocate_static(ip, EP).unwrap();
    st.plugin.networks.insert(
        D.into(),
        DockerNetwork {
            id: D.into(),
            pool_id: None,
            owns_bridge: false,
            overlay: Some(F.into()),
        },
    );
    let live = LiveEndpoint {
        id: EP.into(),
        ip,
        prefix_len: 24,
        gateway: None,
        mac: [2, 0x42, 10, 60, 0, 9],
        host_if: Some(host_if_name(EP)),
        ifname: crate::IfName::new(container_if_name(EP)).unwrap(),
        default_route: false,
        published: vec![],
        way_out: Default::default(),
    };
    st.plugin.endpoints.insert(
        EP.into(),
        DockerEndpoint {
            id: EP.into(),
            endpoint: Endpoint {
                network_id: F.into(),
                static_ip: None,
                aliases: vec![],
                ports: vec![],
                membership: Default::default(),
                live: Some(live),
            },
            joined: false,
            sandbox_key: None,
            docker_network: Some(D.into()),
        },
    );
    let keys = super::docker::forget_network_keys(&st, D);
    assert_eq!(
        keys,
        vec![
            Key::PluginNet(D.into()),
            Key::Net(F.into()),
            Key::PluginEp(EP.into())
        ]
    );
    let links = super::docker::plan_forget_network(&mut st, D);
    assert_eq!(
        links,
        vec![host_if_name(EP).to_string(), container_if_name(EP)]
    );
    assert!(st.plugin.networks.is_empty() && st.plugin.endpoints.is_empty());
    let pool = st.networks[F].pool.as_ref().unwrap();
    assert_eq!(
        pool.owner(ip),
        None,
        "the forgotten endpoint's address is free"
    );
    assert!(st.networks.contains_key(F), "the overlay stays");
}

#[test]
fn the_default_route_goes_through_the_network_whose_name_sorts_first_as_with_dockerd() {
    let mut st = state();
    plan_connect(&mut st, "a", F, Asked::default(), live("e")).unwrap();
    let others = st.networks.values().cloned().collect::<Vec<_>>();
    let alpha = network(
        &others,
        r#"{"Name":"alpha","IPAM":{"Config":[{"Subnet":"10.62.0.0/24"}]}}"#,
        S,
    );
    st.networks.insert(S.into(), alpha);
    let plan = plan_connect(&mut st, "a", S, Asked::default(), live("s")).unwrap();
    assert_eq!(
        plan.attach.unwrap().default_via,
        Some("10.62.0.1".parse().unwrap()),
        "alpha sorts before front: it takes the default route"
    );
    assert_eq!(plan.default_from.as_deref(), Some(F), "taken from front");
    let holder = |st: &State| super::attach::default_route_network(st, "a");
    assert_eq!(holder(&st).as_deref(), Some(S));
    let front = st.sandboxes["a"].endpoint(F).unwrap().live.clone().unwrap();
    assert!(!front.default_route, "front gave it up");
    // Leaving alpha gives it back to front.
    let left = plan_disconnect(&mut st, "a", S).unwrap();
    assert_eq!(
        left.new_default.map(|d| d.0),
        Some("10.60.0.1".parse().unwrap())
    );
    assert_eq!(holder(&st).as_deref(), Some(F));
    // A start attaches both: only the endpoint holding the route at the end sets it.
    let mut st = state();
    st.networks.insert(
        S.into(),
        network(
            &others,
            r#"{"Name":"alpha","IPAM":{"Config":[{"Subnet":"10.62.0.0/24"}]}}"#,
            S,
        ),
    );
    plan_connect(&mut st, "b", F, Asked::default(), None).unwrap();
    plan_connect(&mut st, "b", S, Asked::default(), None).unwrap();
    let start = super::sandbox::plan_start(
        &mut st,
        "b",
        "/run/x".as_ref(),
        || "d".repeat(64),
        String::new(),
    )
    .unwrap();
    let vias: Vec<_> = start.attach.iter().map(|s| s.default_via).collect();
    assert_eq!(vias, [None, Some("10.62.0.1".parse().unwrap())]);
}

/// The ID the gateway bridge gets in these tests.
const G: &str = "9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a";

/// What a plugin's Join answered, as ferryd notes it on sandbox `a`'s endpoint.
fn set_way(st: &mut State, net: &str, w: crate::model::WayOut) {
    let sb = st.sandboxes.get_mut("a").unwrap();
    let l = sb.endpoints.iter_mut().find(|e| e.network_id == net);
    let l = l.unwrap().live.as_mut().unwrap();
    l.way_out = w;
    l.default_route &= w.is_gateway();
}

/// The gateway bridge as dockerd makes it: its name, ICC off, masquerade on.
fn gateway_bridge(st: &State) -> Network {
    let others = st.networks.values().cloned().collect::<Vec<_>>();
    let req = super::gateway_service::gateway_bridge_request();
    let ctx = CreateContext {
        existing: &others,
        host_routes: &[],
        pool_cursor: None,
        id: G.into(),
        created: "t".into(),
    };
    let gw = network_from_request(&req, &ctx).unwrap().network;
    let conf = gw.bridge().unwrap();
    assert_eq!(
        (
            gw.name.as_str(),
            conf.name.as_str(),
            conf.icc,
            conf.masquerade
        ),
        ("docker_gwbridge", "docker_gwbridge", false, true)
    );
    gw
}

/// dockerd's `needDefaultGW`, as a value: a sandbox whose only network gives no way out
/// (a plugin's Join named no gateway) gets the gateway bridge, which carries its default
/// route; a network that gives one, or leaving the plugin's network, takes it away; a
/// `DisableGatewayService` endpoint and an internal network ask for none.
#[test]
fn a_sandbox_without_a_way_out_gets_the_gateway_bridge_until_a_network_gives_one() {
    use super::attach::{default_route_network, move_default_route};
    use super::gateway_service::{plan_gateway_service, GatewayServiceStep as Step};
    use crate::model::Membership;
    let mut st = state();
    plan_connect(&mut st, "a", F, Asked::default(), live("e")).unwrap();
    assert_eq!(
        plan_gateway_service(&st, "a"),
        Step::Keep,
        "front's gateway"
    );
    // front's Join named no gateway: it gives the route up, and no one else can take it.
    set_way(&mut st, F, crate::model::WayOut::Lacks);
    assert_eq!(move_default_route(&mut st, "a"), None);
    // The ports asked for there are published on the gateway bridge, as dockerd does.
    let p = crate::ports::parse_publish("8080:80").unwrap();
    let sb = st.sandboxes.get_mut("a").unwrap();
    sb.endpoints[0].ports = vec![p.clone()];
    assert_eq!(plan_gateway_service(&st, "a"), Step::Add(vec![p]));
    st.sandboxes.get_mut("a").unwrap().endpoints[0].ports = vec![];
    assert_eq!(plan_gateway_service(&st, "b"), Step::Keep, "b does not run");

    let gw = gateway_bridge(&st);
    st.networks.insert(G.into(), gw);
    let service = Asked {
        membership: Membership::GatewayService,
        ..Asked::default()
    };
    let plan = plan_connect(&mut st, "a", G, service.clone(), live("g")).unwrap();
    assert!(
        plan.attach.unwrap().default_via.is_some(),
        "it carries the route"
    );
    assert_eq!(default_route_network(&st, "a").as_deref(), Some(G));
    assert_eq!(plan_gateway_service(&st, "a"), Step::Keep);
    // A container's inspect does not show it; the network's inspect names it dockerd's way.
    let shown: Vec<_> = st
        .networks_of(&st.sandboxes["a"])
        .iter()
        .map(|n| n.name.clone())
        .collect();
    assert_eq!(shown, ["front"]);
    let res = crate::docker::network::network_resource(&st.networks[G], &[&st.sandboxes["a"]]);
    assert_eq!(res["Containers"]["a"]["Name"], "gateway_a");

    // A network with a gateway makes it unneeded; leaving that network needs it again.
    let side = network(
        &st.networks.values().cloned().collect::<Vec<_>>(),
        r#"{"Name":"side","IPAM":{"Config":[{"Subnet":"10.62.0.0/24"}]}}"#,
        S,
    );
    st.networks.insert(S.into(), side);
    plan_connect(&mut st, "a", S, Asked::default(), live("s")).unwrap();
    assert_eq!(plan_gateway_service(&st, "a"), Step::Remove(G.into()));
    let gone = plan_disconnect(&mut st, "a", G).unwrap();
    assert_eq!(
        gone.new_default.map(|d| d.0),
        Some("10.62.0.1".parse().unwrap())
    );
    plan_disconnect(&mut st, "a", S).unwrap();
    assert_eq!(plan_gateway_service(&st, "a"), Step::Add(vec![]));

    // DisableGatewayService asks for nothing; an internal network is not counted.
    set_way(&mut st, F, crate::model::WayOut::Waived);
    assert_eq!(plan_gateway_service(&st, "a"), Step::Keep);
    plan_connect(&mut st, "a", G, service, live("g")).unwrap();
    assert_eq!(plan_gateway_service(&st, "a"), Step::Remove(G.into()));
    plan_disconnect(&mut st, "a", G).unwrap();
    plan_connect(&mut st, "a", B, Asked::default(), live("i")).unwrap();
    set_way(&mut st, B, crate::model::WayOut::Lacks);
    assert_eq!(plan_gateway_service(&st, "a"), Step::Keep);
    // A static default route from the plugin is a way out too.
    set_way(&mut st, F, crate::model::WayOut::Routes);
    assert_eq!(plan_gateway_service(&st, "a"), Step::Keep);
    set_way(&mut st, F, crate::model::WayOut::Lacks);
    assert_eq!(plan_gateway_service(&st, "a"), Step::Add(vec![]));
}

/// A start's kernel work as values: the namespace, its files, each endpoint's link, the
/// namespace's name, each with what takes it back; a sandbox in ferryd's namespace has
/// none; a stop takes the links back, then the namespace and its name.
#[test]
fn a_start_is_kernel_steps_each_paired_with_its_undo() {
    use super::sandbox::{plan_start, start_steps, stop_teardown};
    use crate::wiring::{KernelStep as Step, KernelUndo as Undo};
    let mut st = state();
    plan_connect(&mut st, "b", F, Asked::default(), None).unwrap();
    let mut ids = ["1", "2"].iter().map(|c| c.repeat(64));
    let netns = std::path::Path::new("/run/ferry/netns/b");
    let plan = plan_start(&mut st, "b", netns, || ids.next().unwrap(), "t".into()).unwrap();
    let sb = st.sandboxes["b"].clone();
    let name = PathBuf::from("/run/netns/ferry-name-b");
    let steps = start_steps(&sb, netns, name.clone(), &plan.attach);
    assert_eq!(
        steps,
        [
            Step::CreateNetns(netns.into()),
            Step::SandboxFiles,
            Step::Attach(plan.attach[0].clone()),
            Step::NameNetns {
                link: name.clone(),
                target: netns.into()
            },
        ]
    );
    let host_if = plan.attach[0].host_if().unwrap().to_string();
    let undo: Vec<_> = steps.iter().map(Step::undo).collect();
    assert_eq!(
        undo,
        [
            Some(Undo::RemoveNetns(netns.into())),
            None,
            Some(Undo::DetachLink(host_if.clone())),
            Some(Undo::Unname(name.clone())),
        ]
    );
    let partial: Vec<_> = steps.iter().map(Step::leaves_part).collect();
    assert_eq!(partial, [true, false, false, false]);
    assert_eq!(
        stop_teardown(&sb, netns.into(), name.clone(), vec![host_if.clone()]),
        [
            Undo::DetachLink(host_if),
            Undo::RemoveNetns(netns.into()),
            Undo::Unname(name.clone())
        ]
    );
    let mut host = sandbox("h", false);
    host.network_mode = NetworkMode::Host;
    assert_eq!(start_steps(&host, netns, name.clone(), &[]), []);
    assert_eq!(stop_teardown(&host, netns.into(), name, vec![]), []);
}
