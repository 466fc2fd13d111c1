//! Networks for the unit tests, made the way the API makes them.

use std::collections::BTreeMap;

use crate::docker::network::{IpamConfigReq, IpamReq, NetworkCreateRequest};
use crate::model::Network;
use crate::validate::{network_from_request, CreateContext};

/// `network create -d DRIVER [--internal] --subnet SUBNET [-o K=V]… NAME`, its ID NAME
/// padded with `a`s to 64 hex digits.
pub(crate) fn network(
    name: &str,
    driver: &str,
    subnet: &str,
    internal: bool,
    opts: &[(&str, &str)],
) -> Network {
    let req = NetworkCreateRequest {
        name: name.into(),
        driver: Some(driver.into()),
        internal,
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
        id: format!("{name:0<64}").replace(|c: char| !c.is_ascii_hexdigit(), "a"),
        created: "now".into(),
    };
    network_from_request(&req, &ctx)
        .expect("a valid request")
        .network
}

/// An overlay as a host holds it: the bridge network `network` makes, with a VXLAN
/// device (`fv-aaaaaaaa`, VNI 4096) as its tunnel.
pub(crate) fn overlay(name: &str, subnet: &str, opts: &[(&str, &str)]) -> Network {
    let mut n = network(name, "bridge", subnet, false, opts);
    let crate::model::NetworkKind::Bridge(bridge) = n.kind.clone() else {
        panic!("a bridge network");
    };
    n.kind = crate::model::NetworkKind::Overlay {
        bridge,
        tunnel: crate::model::OverlayConf {
            vni: 4096,
            vxlan: crate::IfName::new("fv-aaaaaaaa").expect("a valid name"),
        },
    };
    n
}
