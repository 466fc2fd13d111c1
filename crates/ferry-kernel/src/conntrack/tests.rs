//! The messages' bytes, without the kernel.

use super::*;

const FLOW: TcpFlow = TcpFlow {
    src: Ipv4Addr::new(172, 30, 0, 12),
    dst: Ipv4Addr::new(172, 30, 0, 11),
    sport: 47838,
    dport: 18090,
};

#[test]
fn attributes_are_padded_to_four_bytes_and_found_again_through_nesting() {
    let a = attr(7, &[1, 2, 3]);
    assert_eq!(a, vec![7, 0, 7, 0, 1, 2, 3, 0]);
    let n = nested(2, &[attr(5, &[9]), a.clone()].concat());
    assert_eq!(u16::from_ne_bytes([n[2], n[3]]), 2 | NLA_F_NESTED);
    assert_eq!(find(&n, &[2, 7]), Some(&[1, 2, 3][..]));
    assert_eq!(find(&n, &[2, 5]), Some(&[9][..]));
    assert_eq!(find(&n, &[2, 6]), None);
    assert_eq!(find(&n, &[3]), None);
}

#[test]
fn a_tuple_names_both_addresses_both_ports_in_network_order_and_tcp() {
    let t = tuple(&FLOW);
    let at = |path: &[u16]| find(&t, path).map(<[u8]>::to_vec);
    let ip = |k| at(&[CTA_TUPLE_ORIG, CTA_TUPLE_IP, k]);
    let proto = |k| at(&[CTA_TUPLE_ORIG, CTA_TUPLE_PROTO, k]);
    assert_eq!(ip(CTA_IP_V4_SRC), Some(vec![172, 30, 0, 12]));
    assert_eq!(ip(CTA_IP_V4_DST), Some(vec![172, 30, 0, 11]));
    assert_eq!(proto(CTA_PROTO_NUM), Some(vec![6]));
    assert_eq!(
        proto(CTA_PROTO_SRC_PORT),
        Some(47838u16.to_be_bytes().to_vec())
    );
    assert_eq!(
        proto(CTA_PROTO_DST_PORT),
        Some(18090u16.to_be_bytes().to_vec())
    );
}

#[test]
fn an_error_message_gives_its_errno_and_other_messages_none() {
    let mut msg = vec![0u8; 20];
    msg[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
    msg[16..20].copy_from_slice(&(-libc::ENOENT).to_ne_bytes());
    assert_eq!(error_of(&msg), Some(libc::ENOENT));
    msg[16..20].copy_from_slice(&0i32.to_ne_bytes());
    assert_eq!(error_of(&msg), Some(0));
    msg[4..6].copy_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW).to_ne_bytes());
    assert_eq!(error_of(&msg), None);
}
