use super::*;
use crate::docker::network::{IpamConfigReq, IpamReq};

fn req(
    name: &str,
    subnet: Option<&str>,
    gw: Option<&str>,
    range: Option<&str>,
) -> NetworkCreateRequest {
    NetworkCreateRequest {
        name: name.into(),
        driver: Some("bridge".into()),
        ipam: Some(IpamReq {
            driver: Some("default".into()),
            options: Some(BTreeMap::new()),
            config: Some(if subnet.is_none() && gw.is_none() && range.is_none() {
                vec![]
            } else {
                vec![IpamConfigReq {
                    subnet: subnet.map(Into::into),
                    gateway: gw.map(Into::into),
                    ip_range: range.map(Into::into),
                    auxiliary_addresses: None,
                }]
            }),
        }),
        ..Default::default()
    }
}

fn ctx(existing: &[Network]) -> CreateContext<'_> {
    CreateContext {
        existing,
        host_routes: &[],
        pool_cursor: None,
        id: "ab".repeat(32),
        created: "t".into(),
    }
}

fn defaults() -> Vec<Network> {
    predefined_networks(
        ["1".repeat(64), "2".repeat(64), "3".repeat(64)],
        "t",
        "172.17.0.1/16".parse().unwrap(),
    )
}

#[test]
fn create_with_subnet_gateway_and_range_echoes_them() {
    let existing = defaults();
    let c = network_from_request(
        &req(
            "demonet",
            Some("10.77.0.0/24"),
            Some("10.77.0.1"),
            Some("10.77.0.128/25"),
        ),
        &ctx(&existing),
    )
    .unwrap();
    let n = c.network;
    assert_eq!(n.ipam_echo[0].ip_range.as_deref(), Some("10.77.0.128/25"));
    assert_eq!(n.bridge().unwrap().name.as_str(), "fy-abababab");
    assert_eq!(
        n.pool.unwrap().gateway,
        "10.77.0.1".parse::<Ipv4Addr>().unwrap()
    );
}

#[test]
fn create_without_subnet_takes_the_next_default_pool_and_shows_the_gateway() {
    let existing = defaults();
    let c = network_from_request(&req("autonet", None, None, None), &ctx(&existing)).unwrap();
    assert_eq!(
        c.network.ipam_echo[0].subnet.as_deref(),
        Some("172.18.0.0/16")
    );
    assert_eq!(
        c.network.ipam_echo[0].gateway.as_deref(),
        Some("172.18.0.1")
    );
}

#[test]
fn create_fails_with_gateway_outside_subnet() {
    let e = network_from_request(
        &req("badgw", Some("10.88.0.0/24"), Some("10.89.0.1"), None),
        &ctx(&[]),
    )
    .err()
    .unwrap();
    assert_eq!(
        e.to_string(),
        "failed to allocate gateway (10.89.0.1): Requested address is out of range"
    );
}

#[test]
fn create_fails_with_ip_range_outside_subnet() {
    let e = network_from_request(
        &req("r", Some("10.88.0.0/24"), None, Some("10.89.0.0/25")),
        &ctx(&[]),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("10.89.0.0/25"), "{e}");
    assert_eq!(e.status(), 400);
}

#[test]
fn create_fails_with_malformed_subnet() {
    let e = network_from_request(&req("b", Some("10.77.0.300/24"), None, None), &ctx(&[]))
        .err()
        .unwrap();
    assert_eq!(
        e.to_string(),
        "Invalid subnet 10.77.0.300/24 : invalid CIDR address: 10.77.0.300/24"
    );
    // dockerd answers 500; a client's mistake is a 400 in ferry (issue 17).
    assert_eq!(e.status(), 400);
}

#[test]
fn create_fails_with_overlapping_subnet() {
    let mut existing = defaults();
    existing.push(
        network_from_request(&req("a", Some("10.77.0.0/24"), None, None), &ctx(&[]))
            .unwrap()
            .network,
    );
    let mut c = ctx(&existing);
    c.id = "cd".repeat(32);
    let e = network_from_request(&req("b", Some("10.77.0.0/16"), None, None), &c)
        .err()
        .unwrap();
    assert_eq!(e, CoreError::PoolOverlap);
    assert_eq!(e.status(), 403);
}

#[test]
fn create_fails_with_duplicate_name() {
    let existing = defaults();
    let e = network_from_request(&req("bridge", None, None, None), &ctx(&existing))
        .err()
        .unwrap();
    assert_eq!(e.to_string(), "network with name bridge already exists");
    assert_eq!(e.status(), 409);
}

#[test]
fn create_fails_with_bridge_name_over_15_bytes() {
    let mut r = req("long", Some("10.1.0.0/24"), None, None);
    r.options = Some(
        [(
            OPT_BRIDGE_NAME.to_string(),
            "a-very-long-bridge".to_string(),
        )]
        .into(),
    );
    let e = network_from_request(&r, &ctx(&[])).err().unwrap();
    assert!(
        e.to_string().contains("a-very-long-bridge") && e.to_string().contains("15 bytes"),
        "{e}"
    );
}

#[test]
fn create_fails_with_unknown_driver_or_bad_option_value() {
    let mut r = req("x", None, None, None);
    r.driver = Some("nosuchdriver".into());
    assert_eq!(
        network_from_request(&r, &ctx(&[]))
            .err()
            .unwrap()
            .to_string(),
        "plugin \"nosuchdriver\" not found"
    );
    let mut r = req("x", None, None, None);
    r.options = Some([(OPT_MTU.to_string(), "huge".to_string())].into());
    assert!(network_from_request(&r, &ctx(&[]))
        .err()
        .unwrap()
        .to_string()
        .contains("MTU"));
    let mut r = req("x", None, None, None);
    r.options = Some([(OPT_ICC.to_string(), "maybe".to_string())].into());
    assert!(network_from_request(&r, &ctx(&[]))
        .err()
        .unwrap()
        .to_string()
        .contains("true or false"));
}

#[test]
fn create_fails_with_a_bad_name() {
    assert!(network_from_request(&req("-x", None, None, None), &ctx(&[])).is_err());
    assert!(network_from_request(&req("", None, None, None), &ctx(&[])).is_err());
}

#[test]
fn create_fails_with_subnets_that_can_never_be_routed() {
    for (subnet, names) in [
        ("127.0.0.0/24", "loopback"),
        ("0.0.0.0/8", "this network"),
        ("224.0.0.0/24", "multicast"),
        ("239.1.0.0/16", "multicast"),
        ("255.255.255.0/24", "reserved"),
        ("240.0.0.0/4", "reserved"),
        ("0.0.0.0/0", "this network"),
    ] {
        let e = network_from_request(&req("b", Some(subnet), None, None), &ctx(&[]))
            .err()
            .unwrap_or_else(|| panic!("{subnet} was accepted"));
        let msg = e.to_string();
        assert!(
            msg.contains("subnet") && msg.contains(subnet) && msg.contains(names),
            "{subnet}: {msg}"
        );
        assert_eq!(e.status(), 400, "{subnet}");
    }
    // The control: the neighbours of those blocks are ordinary subnets.
    for subnet in [
        "1.0.0.0/24",
        "126.255.255.0/24",
        "128.0.0.0/24",
        "223.255.255.0/24",
    ] {
        network_from_request(&req("b", Some(subnet), None, None), &ctx(&[]))
            .unwrap_or_else(|e| panic!("{subnet} was refused: {e}"));
    }
}
