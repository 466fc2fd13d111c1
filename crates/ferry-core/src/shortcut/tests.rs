use super::*;

use crate::model::{mac_for, LiveEndpoint};
use crate::validate::predefined_networks;
use ipnet::Ipv4Net;

fn net(name: &str, driver: &str, subnet: &str, opts: &[(&str, &str)]) -> Network {
    crate::test_networks::network(name, driver, subnet, false, opts)
}

fn endpoint(net: &Network, ip: &str, live: bool) -> Endpoint {
    let ip: IpAddr = ip.parse().unwrap();
    Endpoint {
        network_id: net.id.clone(),
        static_ip: None,
        aliases: vec![],
        ports: vec![],
        membership: Default::default(),
        live: live.then(|| LiveEndpoint {
            id: "c".repeat(64),
            ip,
            prefix_len: 24,
            gateway: None,
            mac: mac_for(ip),
            host_if: Some(IfName::new("fy0123456789a").unwrap()),
            ifname: IfName::new("eth0").unwrap(),
            default_route: true,
            published: vec![],
            way_out: Default::default(),
        }),
    }
}

#[test]
fn a_live_endpoint_on_an_icc_bridge_is_carried_with_its_bridge_address_and_mac() {
    let n = net("web", "bridge", "10.7.0.0/24", &[]);
    let e = entry(&endpoint(&n, "10.7.0.2", true), Some(&n)).expect("carried");
    assert_eq!(e.host_end.as_str(), "fy0123456789a");
    assert_eq!(&e.bridge, &n.bridge().unwrap().name);
    assert_eq!(e.ip, "10.7.0.2".parse::<Ipv4Addr>().unwrap());
    assert_eq!(e.mac, mac_for("10.7.0.2".parse().unwrap()));
    assert_eq!(e.gateway, "10.7.0.1".parse::<Ipv4Addr>().unwrap());
    assert!(!e.overlay);
}

#[test]
fn an_overlays_endpoint_is_carried_marked_as_one() {
    let n = overlay(true);
    let e = entry(&endpoint(&n, "10.77.0.2", true), Some(&n)).expect("carried");
    assert!(e.overlay);
    assert_eq!(e.gateway, "10.77.0.1".parse::<Ipv4Addr>().unwrap());
}

#[test]
fn icc_off_a_stopped_endpoint_and_an_unknown_network_are_not_carried() {
    let quiet = net(
        "quiet",
        "bridge",
        "10.8.0.0/24",
        &[("com.docker.network.bridge.enable_icc", "false")],
    );
    assert_eq!(
        entry(&endpoint(&quiet, "10.8.0.2", true), Some(&quiet)),
        None
    );
    let n = net("web", "bridge", "10.7.0.0/24", &[]);
    assert_eq!(entry(&endpoint(&n, "10.7.0.2", false), Some(&n)), None);
    assert_eq!(entry(&endpoint(&n, "10.7.0.2", true), None), None);
}

#[test]
fn networks_without_a_bridge_of_ferrys_are_not_carried() {
    let nets = predefined_networks(
        ["1".repeat(64), "2".repeat(64), "3".repeat(64)],
        "now",
        "172.17.0.1/16".parse().unwrap(),
    );
    let kinds: Vec<_> = nets
        .iter()
        .map(|n| {
            (
                n.name.clone(),
                entry(&endpoint(n, "172.17.0.2", true), Some(n)).is_some(),
            )
        })
        .collect();
    assert!(kinds.contains(&("bridge".into(), true)), "{kinds:?}");
    assert!(kinds.contains(&("host".into(), false)), "{kinds:?}");
    assert!(kinds.contains(&("none".into(), false)), "{kinds:?}");
    let mv = net("mv", "macvlan", "10.9.0.0/24", &[("parent", "eth0")]);
    assert_eq!(entry(&endpoint(&mv, "10.9.0.2", true), Some(&mv)), None);
}

fn overlay(icc: bool) -> Network {
    let opts: &[(&str, &str)] = match icc {
        true => &[],
        false => &[("com.docker.network.bridge.enable_icc", "false")],
    };
    crate::test_networks::overlay("ov", "10.77.0.0/24", opts)
}

#[test]
fn an_overlay_tunnel_sends_other_hosts_blocks_to_their_devices_and_keeps_its_gateway_and_own_here()
{
    let block: Ipv4Net = "10.77.0.0/26".parse().unwrap();
    let far: Ipv4Addr = "192.168.0.2".parse().unwrap();
    let mine: Ipv4Net = "10.77.0.9/32".parse().unwrap();
    let me = "192.168.0.1".parse().unwrap();
    let t = tunnel(&overlay(true), me, [(&block, &far)], [&mine]).expect("carried");
    assert_eq!(t.device.as_str(), "fv-aaaaaaaa");
    assert_eq!(t.mac, [0x02, 0xfe, 192, 168, 0, 1]);
    assert_eq!(t.remote, vec![(block, [0x02, 0xfe, 192, 168, 0, 2])]);
    let gateway: Ipv4Net = "10.77.0.1/32".parse().unwrap();
    assert_eq!(t.stay, vec![gateway, mine]);
    // ICC off, or not an overlay: no tunnel.
    assert_eq!(tunnel(&overlay(false), me, [(&block, &far)], [&mine]), None);
    let bridge = net("br", "bridge", "10.7.0.0/24", &[]);
    assert_eq!(tunnel(&bridge, me, [(&block, &far)], [&mine]), None);
}
