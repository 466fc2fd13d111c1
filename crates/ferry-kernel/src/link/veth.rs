//! The endpoint's veth pair, made in one request: the host end enslaved to the bridge
//! (still down, so that IPv6 can be turned off on it before it comes up: see
//! crate::sysctl), the peer created directly inside the sandbox's namespace under its
//! final name (eth0, eth1, …) with its MAC and MTU, so there is no rename or move step.

use std::os::fd::AsRawFd;

use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo, LinkMessage,
};
use rtnetlink::Handle;

use crate::KernelError;

pub struct VethPair<'a> {
    pub host_if: &'a str,
    pub bridge_index: u32,
    pub peer_name: &'a str,
    pub peer_netns: &'a std::fs::File,
    pub peer_mac: [u8; 6],
    pub mtu: u32,
}

pub async fn create(h: &Handle, v: &VethPair<'_>) -> Result<(), KernelError> {
    let mut peer = LinkMessage::default();
    peer.attributes
        .push(LinkAttribute::IfName(v.peer_name.to_string()));
    peer.attributes
        .push(LinkAttribute::NetNsFd(v.peer_netns.as_raw_fd()));
    peer.attributes
        .push(LinkAttribute::Address(v.peer_mac.to_vec()));
    peer.attributes.push(LinkAttribute::Mtu(v.mtu));
    let mut req = h.link().add().name(v.host_if.to_string());
    let msg = req.message_mut();
    let attrs = &mut msg.attributes;
    attrs.push(LinkAttribute::Mtu(v.mtu));
    attrs.push(LinkAttribute::Controller(v.bridge_index));
    attrs.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    req.execute()
        .await
        .map_err(|e| KernelError::netlink("create veth", v.host_if, e))
}
