use super::*;

#[test]
fn a_named_flow_is_read_in_network_order() {
    let record = [
        10, 94, 0, 2, 10, 94, 0, 1, 0xa4, 0x10, 0x1f, 0x9a, 0, 0, 0, 0,
    ];
    let flow = parse_flow(&record).expect("a whole record");
    assert_eq!(
        flow,
        TcpFlow {
            src: Ipv4Addr::new(10, 94, 0, 2),
            dst: Ipv4Addr::new(10, 94, 0, 1),
            sport: 0xa410,
            dport: 8090,
        }
    );
    assert_eq!(parse_flow(&record[..11]), None, "a short record is no flow");
}

#[test]
fn uplinks_leave_out_loopbacks_and_the_links_named_as_ferrys() {
    let all = uplinks(&[]);
    assert!(
        !all.iter().any(|n| n == "lo"),
        "lo among the uplinks: {all:?}"
    );
    let Some(first) = all.first() else {
        return; // a machine without an IPv4 address outside loopback: nothing to leave out
    };
    let rest = uplinks(&[first.as_str()]);
    assert!(
        !rest.contains(first),
        "{first} named as ferry's but kept: {rest:?}"
    );
    assert_eq!(rest.len() + 1, all.len(), "{all:?} then {rest:?}");
}
