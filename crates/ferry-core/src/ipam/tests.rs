use super::*;

fn pool(subnet: &str, gw: &str, range: Option<&str>) -> AddressPool {
    AddressPool::new(
        subnet.parse().unwrap(),
        gw.parse().unwrap(),
        range.map(|r| r.parse().unwrap()),
    )
}
fn ip(s: &str) -> Ipv4Addr {
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
fn walk(p: &AddressPool) -> Option<Ipv4Addr> {
    let span = p.range.unwrap_or(p.subnet);
    let (first, last) = (u32::from(span.network()), u32::from(span.broadcast()));
    let start = match p.cursor.map(u32::from) {
        Some(c) if c >= first && c < last => c + 1,
        _ => first,
    };
    (start..=last)
        .chain(first..start)
        .map(Ipv4Addr::from)
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
    ];
    for (subnet, gw, range) in shapes {
        let mut p = pool(subnet, gw, range);
        let size = 1u32 << (32 - p.subnet.prefix_len());
        let base = u32::from(p.subnet.network());
        for step in 0..3000 {
            let ip = Ipv4Addr::from(base + rng.gen_range(0..size));
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
    let subnet: Ipv4Net = "172.18.0.0/16".parse().unwrap();
    let gw: Ipv4Addr = "172.18.0.1".parse().unwrap();
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
