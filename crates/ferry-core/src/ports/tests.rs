use super::*;

fn pm(s: &str) -> PortMapping {
    parse_publish(s).unwrap()
}

#[test]
fn publish_spec_forms_parse_as_docker_reads_them() {
    let m = pm("8080:80");
    assert_eq!(m.proto, Proto::Tcp);
    assert_eq!(m.host_ip, None);
    assert_eq!(m.host_ports, Some(PortRange::single(8080).unwrap()));
    assert_eq!(m.container_ports, PortRange::single(80).unwrap());

    let m = pm("127.0.0.1:8000-8010:9000-9010/udp");
    assert_eq!(m.proto, Proto::Udp);
    assert_eq!(m.host_ip, Some(Ipv4Addr::LOCALHOST));
    assert_eq!(m.host_ports.unwrap().to_string(), "8000-8010");
    assert_eq!(m.container_ports.to_string(), "9000-9010");

    let m = pm("80");
    assert_eq!(m.host_ports, None);
    let m = pm("10.1.2.3::53/udp");
    assert_eq!(m.host_ports, None);
    assert_eq!(m.host_ip, Some("10.1.2.3".parse().unwrap()));
    assert_eq!(pm("0.0.0.0:1:2").host_ip, None);
}

#[test]
fn bad_publish_specs_are_refused_with_the_reason() {
    let cases = [
        ("8080:70000", "ports are numbers from 1 to 65535"),
        ("0:80", "ports are numbers from 1 to 65535"),
        ("8080:80/sctp", "the protocol must be tcp or udp"),
        ("8000-8010:80-85", "the same length"),
        ("90-80:90-80", "ends before it starts"),
        ("a:b:c:d", "expected [HOST_IP:]"),
        ("300.1.1.1:80:80", "not an IPv4 address"),
        ("x:80", "ports are numbers"),
    ];
    for (spec, why) in cases {
        let e = parse_publish(spec).unwrap_err().to_string();
        assert!(e.contains(why), "{spec}: {e}");
    }
}

#[test]
fn docker_cli_expanded_ranges_coalesce_into_one_mapping() {
    let mut b = PortBindings::new();
    for i in 0..11u16 {
        b.insert(
            format!("{}/tcp", 80 + i),
            Some(vec![PortBinding {
                host_port: (8000 + i).to_string(),
                ..Default::default()
            }]),
        );
    }
    let v = from_bindings(&b).unwrap();
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].host_ports.unwrap().to_string(), "8000-8010");
    assert_eq!(v[0].container_ports.to_string(), "80-90");
    assert_eq!(from_bindings(&to_bindings(&v)).unwrap(), v);
}

#[test]
fn bindings_with_a_source_and_unequal_offsets_stay_apart() {
    let mut b = PortBindings::new();
    b.insert(
        "80/tcp".into(),
        Some(vec![PortBinding {
            host_port: "8080".into(),
            source: Some("10.0.0.0/16".into()),
            ..Default::default()
        }]),
    );
    b.insert(
        "81/tcp".into(),
        Some(vec![PortBinding {
            host_port: "9000".into(),
            ..Default::default()
        }]),
    );
    let v = from_bindings(&b).unwrap();
    assert_eq!(v.len(), 2);
    assert!(v
        .iter()
        .any(|m| m.source == Some("10.0.0.0/16".parse().unwrap())));
}

#[test]
fn a_host_port_cannot_be_taken_twice() {
    let first = decide(&[pm("8080:80")], &[]).unwrap();
    let e = decide(&[pm("127.0.0.1:8080:81")], &first).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Bind for 127.0.0.1:8080 failed: port is already allocated"
    );
    // Different protocol or different specific addresses do not collide.
    assert!(decide(&[pm("8080:80/udp")], &first).is_ok());
    let lo = decide(&[pm("127.0.0.1:9000:80")], &[]).unwrap();
    assert!(decide(&[pm("127.0.0.2:9000:80")], &lo).is_ok());
    // Overlapping ranges collide.
    let r = decide(&[pm("7000-7010:7000-7010")], &[]).unwrap();
    assert!(decide(&[pm("7010-7020:80-90")], &r).is_err());
}

#[test]
fn ephemeral_ports_skip_what_is_taken() {
    let first = decide(&[pm("80"), pm("81-83")], &[]).unwrap();
    assert_eq!(first[0].host_ports.start(), EPHEMERAL_START);
    assert_eq!(first[1].host_ports.to_string(), "49154-49156");
}

#[test]
fn inspect_lists_each_port_of_a_range() {
    let p = decide(&[pm("8000-8001:80-81")], &[]).unwrap();
    let j = serde_json::to_value(ports_json(&p)).unwrap();
    assert_eq!(
        j,
        serde_json::json!({
            "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8000"}],
            "81/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8001"}],
        })
    );
}
