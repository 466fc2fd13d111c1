use std::collections::BTreeMap;

use super::*;
use crate::docker::network::{IpamConfigReq, IpamReq, NetworkCreateRequest};
use crate::model::{mac_for, LiveEndpoint};
use crate::validate::{network_from_request, predefined_networks, CreateContext};

fn net(name: &str, driver: &str, subnet: &str, opts: &[(&str, &str)]) -> Network {
    let req = NetworkCreateRequest {
        name: name.into(),
        driver: Some(driver.into()),
        ipam: Some(IpamReq {
            config: Some(vec![IpamConfigReq {
                subnet: Some(subnet.into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        options: Some(
            opts.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    };
    let ctx = CreateContext {
        existing: &[],
        host_routes: &[],
        pool_cursor: None,
        id: "a".repeat(64),
        created: "now".into(),
    };
    network_from_request(&req, &ctx).unwrap().network
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
