use super::*;
use std::net::IpAddr;

fn pool(subnet: &str, gw: &str, range: Option<&str>) -> AddressPool {
    AddressPool::new(
        subnet.parse().unwrap(),
        gw.parse().unwrap(),
        range.map(|r| r.parse().unwrap()),
    )
}
fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn dynamic_addresses_skip_network_and_gateway() {
    let mut p = pool("172.17.0.0/16", "172.17.0.1", None);
    assert_eq!(p.allocate_dynamic("a", "n").unwrap(), ip("172.17.0.2"));
    assert_eq!(p.allocate_dynamic("b", "n").unwrap(), ip("172.17.0.3"));
}

#[test]
fn dynamic_addresses_follow_the_ip_range_from_its_first_address() {
    let mut p = pool("10.77.0.0/24", "10.77.0.1", Some("10.77.0.128/25"));
    let got: Vec<_> = (0..3)
        .map(|i| p.allocate_dynamic(&i.to_string(), "n").unwrap())
        .collect();
    assert_eq!(
        got,
        [ip("10.77.0.128"), ip("10.77.0.129"), ip("10.77.0.130")]
    );
}

#[test]
fn a_freed_address_is_not_handed_out_again_at_once() {
    let mut p = pool("10.0.0.0/24", "10.0.0.1", None);
    let a = p.allocate_dynamic("a", "n").unwrap();
    p.release(a);
    assert_eq!(p.allocate_dynamic("b", "n").unwrap(), ip("10.0.0.3"));
}

#[test]
fn the_cursor_wraps_and_skips_static_addresses() {
    let mut p = pool("10.0.0.0/29", "10.0.0.1", None);
    p.allocate_static(ip("10.0.0.3"), "s").unwrap();
    let got: Vec<_> = (0..4)
        .map(|i| p.allocate_dynamic(&i.to_string(), "n").unwrap())
        .collect();
    assert_eq!(
        got,
        [
            ip("10.0.0.2"),
            ip("10.0.0.4"),
            ip("10.0.0.5"),
            ip("10.0.0.6")
        ]
    );
    p.release(ip("10.0.0.4"));
    assert_eq!(p.allocate_dynamic("x", "n").unwrap(), ip("10.0.0.4"));
    assert!(matches!(
        p.allocate_dynamic("y", "n"),
        Err(CoreError::NetworkFull(_))
    ));
}

#[test]
fn static_addresses_obey_dockers_rules() {
    let mut p = pool("10.77.0.0/24", "10.77.0.1", None);
    assert!(matches!(
        p.allocate_static(ip("10.99.0.5"), "a"),
        Err(CoreError::AddressOutsideSubnet(_))
    ));
    for reserved in ["10.77.0.0", "10.77.0.255", "10.77.0.1"] {
        assert!(matches!(
            p.allocate_static(ip(reserved), "a"),
            Err(CoreError::AddressReserved { .. })
        ));
    }
    p.allocate_static(ip("10.77.0.200"), "a").unwrap();
    assert_eq!(
        p.allocate_static(ip("10.77.0.200"), "b"),
        Err(CoreError::AddressInUse(ip("10.77.0.200")))
    );
    // the owner may claim it again (restart, reconnect)
    p.allocate_static(ip("10.77.0.200"), "a").unwrap();
}

#[test]
fn a_static_address_survives_a_round_trip_through_the_store_format() {
    let mut p = pool("10.0.0.0/24", "10.0.0.1", None);
    p.allocate_static(ip("10.0.0.2"), "web").unwrap();
    let back: AddressPool = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
    let mut back = back;
    assert_eq!(back.allocate_dynamic("other", "n").unwrap(), ip("10.0.0.3"));
}

/// The address-by-address walk the bitmap replaced, as the reference.
fn walk(p: &AddressPool) -> Option<IpAddr> {
    let span = p.range.unwrap_or(p.subnet);
    let (first, last) = (number(span.network()), number(span.broadcast()));
    let start = match p.cursor.map(number) {
        Some(c) if c >= first && c < last => c + 1,
        _ => first,
    };
    let v4 = p.subnet.addr().is_ipv4();
    (start..=last)
        .chain(first..start)
        .filter_map(|n| address(n, v4))
        .find(|&ip| p.reserved_why(ip).is_none() && p.owner(ip).is_none() && p.subnet.contains(&ip))
}

#[test]
fn dynamic_allocation_agrees_with_the_address_by_address_walk() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    let shapes = [
        ("10.0.0.0/24", "10.0.0.1", None),
        ("10.0.0.0/22", "10.0.1.77", Some("10.0.1.0/24")),
        ("10.0.0.0/29", "10.0.0.6", None),
        ("10.0.0.0/30", "10.0.0.1", Some("10.0.0.0/31")),
        ("10.0.0.0/31", "10.0.0.0", None),
        ("10.0.0.0/20", "10.0.15.254", Some("10.0.8.0/21")),
        ("fd00:1::/120", "fd00:1::1", None),
        ("fd00:1::/118", "fd00:1::2ff", Some("fd00:1::200/120")),
        ("fd00:1::/127", "fd00:1::", None),
    ];
    for (subnet, gw, range) in shapes {
        let mut p = pool(subnet, gw, range);
        let size = 1u128 << (p.subnet.max_prefix_len() - p.subnet.prefix_len());
        let base = number(p.subnet.network());
        for step in 0..3000 {
            let ip = address(base + rng.gen_range(0..size), p.subnet.addr().is_ipv4()).unwrap();
            match rng.gen_range(0..10) {
                0..=5 => {
                    let want = walk(&p);
                    let got = p.allocate_dynamic("o", "n").ok();
                    assert_eq!(got, want, "{subnet} step {step}");
                }
                6 => {
                    let _ = p.allocate_static(ip, "s");
                }
                _ => p.release(ip),
            }
        }
        let back: AddressPool = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p, "{subnet}: the bitmap is rebuilt on reading");
    }
}

#[test]
fn allocating_every_address_of_a_slash_16_hands_out_each_once() {
    let mut p = pool("10.1.0.0/16", "10.1.0.1", None);
    let mut seen = std::collections::HashSet::new();
    while let Ok(a) = p.allocate_dynamic("o", "n") {
        assert!(seen.insert(a));
    }
    assert_eq!(seen.len(), 65536 - 3);
}

#[test]
fn a_subnet_ferry_chose_takes_no_static_address_and_keeps_saying_so_when_stored() {
    let subnet: IpNet = "172.18.0.0/16".parse().unwrap();
    let gw: IpAddr = "172.18.0.1".parse().unwrap();
    let auto = AddressPool::new(subnet, gw, None).with_auto_subnet();
    assert!(matches!(
        auto.check_static_allowed(),
        Err(CoreError::StaticIpNeedsUserSubnet)
    ));
    assert!(AddressPool::new(subnet, gw, None)
        .check_static_allowed()
        .is_ok());

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Rec {
        #[serde(serialize_with = "serialize_without_allocations")]
        pool: Option<AddressPool>,
    }
    let stored = serde_json::to_string(&Rec { pool: Some(auto) }).unwrap();
    let back: Rec = serde_json::from_str(&stored).unwrap();
    assert!(back.pool.unwrap().auto_subnet, "{stored}");
    let plain = serde_json::to_string(&Rec {
        pool: Some(AddressPool::new(subnet, gw, None)),
    })
    .unwrap();
    assert!(
        !plain.contains("auto_subnet") && !plain.contains("aux"),
        "{plain}"
    );
}

#[test]
fn further_spans_are_used_when_the_range_is_full_and_survive_the_store() {
    let mut p = pool("10.0.0.0/24", "10.0.0.1", Some("10.0.0.0/30"));
    let got: Vec<_> = (0..2)
        .map(|i| p.allocate_dynamic(&i.to_string(), "n").unwrap())
        .collect();
    assert_eq!(got, [ip("10.0.0.2"), ip("10.0.0.3")]);
    assert!(!p.has_free_dynamic());
    assert!(matches!(
        p.allocate_dynamic("x", "n"),
        Err(CoreError::NetworkFull(_))
    ));
    p.more.push("10.0.0.64/30".parse().unwrap());
    assert!(p.has_free_dynamic());
    assert_eq!(p.allocate_dynamic("y", "n").unwrap(), ip("10.0.0.64"));
    let json = serde_json::to_string(&Some(p.clone()).map(|p| {
        let mut v = serde_json::to_value(&p).unwrap();
        v.as_object_mut().unwrap().remove("allocated");
        v
    }))
    .unwrap();
    let back: AddressPool = serde_json::from_str(&json).unwrap();
    assert_eq!(back.more, p.more);
}

#[test]
fn an_ipv6_slash_64_is_a_pool_like_any_other() {
    let mut p = pool("fd00:77::/64", "fd00:77::1", None);
    // The subnet-router anycast address and the gateway are never a sandbox's; there is
    // no broadcast address: the last one is handed out like the others.
    assert_eq!(p.allocate_dynamic("a", "n").unwrap(), ip("fd00:77::2"));
    assert_eq!(p.allocate_dynamic("b", "n").unwrap(), ip("fd00:77::3"));
    for reserved in ["fd00:77::", "fd00:77::1"] {
        assert!(matches!(
            p.allocate_static(ip(reserved), "s"),
            Err(CoreError::AddressReserved { .. })
        ));
    }
    let last = ip("fd00:77::ffff:ffff:ffff:ffff");
    p.allocate_static(last, "s").unwrap();
    assert!(matches!(
        p.allocate_static(ip("fd00:78::5"), "s"),
        Err(CoreError::AddressOutsideSubnet(_))
    ));
    assert!(matches!(
        p.allocate_static(ip("10.0.0.5"), "s"),
        Err(CoreError::AddressOutsideSubnet(_))
    ));
    // The cursor wraps at the top of the /64 and skips what is taken.
    p.cursor = Some(ip("fd00:77::ffff:ffff:ffff:fffe"));
    assert_eq!(p.allocate_dynamic("c", "n").unwrap(), ip("fd00:77::4"));
    p.release(ip("fd00:77::2"));
    assert_eq!(p.owner(ip("fd00:77::3")), Some("b"));
    let back: AddressPool = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
    assert_eq!(back, p, "a /64 pool survives the store format");
}

#[test]
fn a_slash_64_costs_its_allocations_not_its_size() {
    let mut p = pool("fd00:64::/64", "fd00:64::1", Some("fd00:64::8000:0:0:0/65"));
    for i in 0..10_000 {
        p.allocate_dynamic(&i.to_string(), "n").unwrap();
    }
    // Ten thousand addresses in a row: 157 words of the bitmap, whatever the subnet's size.
    assert_eq!(p.taken, {
        let mut o = Occupancy::default();
        for a in p.allocations().keys() {
            o.set(number(*a));
        }
        o
    });
    assert_eq!(p.allocations().len(), 10_000);
    assert_eq!(
        p.allocations().keys().next().copied(),
        Some(ip("fd00:64::8000:0:0:0")),
        "the range's first address, as on IPv4"
    );
}
