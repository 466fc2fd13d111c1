use super::*;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}
fn asker(s: &str) -> IpAddr {
    s.parse().unwrap()
}
fn member(net: &str, addr: &str, names: &[&str]) -> Membership {
    Membership {
        network: net.into(),
        ip: ip(addr),
        names: names.iter().map(|s| s.to_string()).collect(),
    }
}
fn sandbox(members: Vec<Membership>) -> SandboxRecord {
    SandboxRecord {
        memberships: members,
        forward: true,
        ..Default::default()
    }
}
fn up() -> Vec<SocketAddr> {
    vec!["127.0.0.1:5353".parse().unwrap()]
}

/// web and client on net a; db on net b; both on a and b: bridge.
fn two_networks() -> Table {
    Table::build(
        &[
            sandbox(vec![member("a", "10.1.0.2", &["web", "h-web", "www"])]),
            sandbox(vec![member("a", "10.1.0.3", &["client"])]),
            sandbox(vec![member("b", "10.2.0.2", &["db"])]),
            sandbox(vec![
                member("a", "10.1.0.4", &["bridge"]),
                member("b", "10.2.0.4", &["bridge", "br-alias"]),
            ]),
        ],
        &up(),
    )
}

#[test]
fn name_hostname_and_alias_resolve_on_the_same_network() {
    let t = two_networks();
    for n in ["web", "h-web", "www", "web."] {
        assert_eq!(
            lookup(&t, asker("10.1.0.3"), n, RecordType::A),
            Answer::A(vec![ip("10.1.0.2")]),
            "{n}"
        );
    }
}

#[test]
fn names_match_case_insensitively() {
    let t = two_networks();
    assert_eq!(
        lookup(&t, asker("10.1.0.3"), "WeB.", RecordType::A),
        Answer::A(vec![ip("10.1.0.2")])
    );
}

#[test]
fn a_name_on_another_network_is_nxdomain_not_forwarded() {
    let t = two_networks();
    assert_eq!(
        lookup(&t, asker("10.1.0.3"), "db", RecordType::A),
        Answer::NxDomain
    );
    assert_eq!(
        lookup(&t, asker("10.2.0.2"), "web", RecordType::A),
        Answer::NxDomain
    );
}

#[test]
fn a_sandbox_on_two_networks_resolves_names_of_both_from_either_address() {
    let t = two_networks();
    for a in ["10.1.0.4", "10.2.0.4"] {
        assert_eq!(
            lookup(&t, asker(a), "web", RecordType::A),
            Answer::A(vec![ip("10.1.0.2")])
        );
        assert_eq!(
            lookup(&t, asker(a), "db", RecordType::A),
            Answer::A(vec![ip("10.2.0.2")])
        );
    }
    // Its own name answers with its address on each network the asker shares.
    assert_eq!(
        lookup(&t, asker("10.1.0.3"), "bridge", RecordType::A),
        Answer::A(vec![ip("10.1.0.4")])
    );
    assert_eq!(
        lookup(&t, asker("10.2.0.4"), "bridge", RecordType::A),
        Answer::A(vec![ip("10.1.0.4"), ip("10.2.0.4")])
    );
}

#[test]
fn aaaa_and_other_types_of_a_local_name_are_empty_noerror() {
    let t = two_networks();
    assert_eq!(
        lookup(&t, asker("10.1.0.3"), "web", RecordType::AAAA),
        Answer::NoData
    );
    assert_eq!(
        lookup(&t, asker("10.1.0.3"), "web", RecordType::MX),
        Answer::NoData
    );
}

#[test]
fn reverse_lookup_answers_the_first_name_on_shared_networks_only() {
    let t = two_networks();
    assert_eq!(
        lookup(
            &t,
            asker("10.1.0.3"),
            "2.0.1.10.in-addr.arpa.",
            RecordType::PTR
        ),
        Answer::Ptr(vec!["web.".into()])
    );
    assert_eq!(
        lookup(
            &t,
            asker("10.1.0.3"),
            "2.0.2.10.in-addr.arpa",
            RecordType::PTR
        ),
        Answer::NxDomain
    );
    assert!(matches!(
        lookup(
            &t,
            asker("10.1.0.3"),
            "9.9.9.10.in-addr.arpa",
            RecordType::PTR
        ),
        Answer::Forward(_)
    ));
}

#[test]
fn unknown_names_are_forwarded_to_the_askers_upstreams() {
    let own: SocketAddr = "10.9.0.53:53".parse().unwrap();
    let mut with_dns = sandbox(vec![member("a", "10.1.0.9", &["x"])]);
    with_dns.upstreams = vec![own];
    let mut t = vec![sandbox(vec![member("a", "10.1.0.3", &["client"])])];
    t.push(with_dns);
    let t = Table::build(&t, &up());
    assert_eq!(
        lookup(&t, asker("10.1.0.3"), "example.test", RecordType::A),
        Answer::Forward(up().into())
    );
    assert_eq!(
        lookup(&t, asker("10.1.0.9"), "example.test", RecordType::A),
        Answer::Forward(vec![own].into())
    );
    // Search-domain forms of a local name are not local names.
    assert!(matches!(
        lookup(&t, asker("10.1.0.3"), "x.corp.test", RecordType::A),
        Answer::Forward(_)
    ));
}

#[test]
fn internal_only_sandboxes_never_forward() {
    let mut s = sandbox(vec![member("i", "10.3.0.2", &["secret"])]);
    s.forward = false;
    let t = Table::build(&[s, sandbox(vec![member("i", "10.3.0.3", &["b"])])], &up());
    assert_eq!(
        lookup(&t, asker("10.3.0.2"), "b", RecordType::A),
        Answer::A(vec![ip("10.3.0.3")])
    );
    assert_eq!(
        lookup(&t, asker("10.3.0.2"), "exfil.example.test", RecordType::A),
        Answer::Refused
    );
    assert_eq!(
        lookup(&t, asker("10.3.0.2"), "exfil.example.test", RecordType::TXT),
        Answer::Refused
    );
}

#[test]
fn strangers_are_refused_and_no_upstream_is_servfail() {
    let t = Table::build(&[sandbox(vec![member("a", "10.1.0.3", &["c"])])], &[]);
    assert_eq!(
        lookup(&t, asker("10.1.0.77"), "c", RecordType::A),
        Answer::Refused
    );
    assert_eq!(
        lookup(&t, asker("fd00::1"), "c", RecordType::A),
        Answer::Refused
    );
    assert_eq!(
        lookup(&t, asker("10.1.0.3"), "example.test", RecordType::A),
        Answer::ServFail
    );
}

#[test]
fn other_addresses_of_a_sandbox_ask_as_it() {
    let mut s = sandbox(vec![member("a", "10.1.0.3", &["c"])]);
    s.other_addrs = vec![ip("172.17.0.5")];
    let t = Table::build(&[s], &up());
    assert_eq!(
        lookup(&t, asker("172.17.0.5"), "c", RecordType::A),
        Answer::A(vec![ip("10.1.0.3")])
    );
}

#[test]
fn shared_alias_answers_every_holder() {
    let t = Table::build(
        &[
            sandbox(vec![member("a", "10.1.0.2", &["w1", "web"])]),
            sandbox(vec![member("a", "10.1.0.3", &["w2", "web"])]),
        ],
        &up(),
    );
    assert_eq!(
        lookup(&t, asker("10.1.0.2"), "web", RecordType::A),
        Answer::A(vec![ip("10.1.0.2"), ip("10.1.0.3")])
    );
}

#[test]
fn reverse_names_parse_strictly() {
    assert_eq!(reverse_v4("4.3.2.1.in-addr.arpa"), Some(ip("1.2.3.4")));
    assert_eq!(reverse_v4("3.2.1.in-addr.arpa"), None);
    assert_eq!(reverse_v4("5.4.3.2.1.in-addr.arpa"), None);
    assert_eq!(reverse_v4("256.3.2.1.in-addr.arpa"), None);
    assert_eq!(reverse_v4("x.3.2.1.in-addr.arpa"), None);
}
