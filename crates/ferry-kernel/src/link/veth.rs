//! Veth pairs, each made in one request, so there is never a half-made pair, with the
//! host end enslaved to its bridge. Two uses:
//!
//! - A sandbox's endpoint: the peer is made directly inside the sandbox's namespace
//!   under its final name (eth0, eth1, …) with its MAC and MTU, so there is no rename or
//!   move step; the host end stays down, so that IPv6 can be turned off on it before it
//!   comes up (see crate::sysctl).
//! - The Docker plugin's Join: both ends in ferryd's namespace, the host end up, the
//!   other end (Docker's `SrcName`) left down with the endpoint's MAC and MTU for dockerd
//!   to move into the container, rename and configure. Hairpin mode (for an endpoint
//!   that publishes ports) is a second request, and the pair goes if it fails.

use std::os::fd::AsRawFd;

use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth};

use crate::link::del::delete;
use crate::link::get::index_here;
use crate::link::port::hairpin;
use crate::{KernelError, VethPairSpec};

/// One veth pair to make.
pub struct Veth<'a> {
    pub host_if: &'a str,
    pub bridge_index: u32,
    pub peer_name: &'a str,
    /// The namespace the peer is made in; `None`: ferryd's own.
    pub peer_netns: Option<&'a std::fs::File>,
    pub peer_mac: [u8; 6],
    pub mtu: u32,
    /// The host end comes up with the pair (else it is made down).
    pub host_up: bool,
}

/// Make the pair in one request.
pub async fn create(h: &Handle, v: &Veth<'_>) -> Result<(), KernelError> {
    let mut peer = LinkUnspec::new_with_name(v.peer_name)
        .address(v.peer_mac.to_vec())
        .mtu(v.mtu);
    if let Some(ns) = v.peer_netns {
        peer = peer.setns_by_fd(ns.as_raw_fd());
    }
    // The peer as a whole (LinkVeth::new's carries its name only).
    let mut host = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(v.host_if)
        .mtu(v.mtu)
        .controller(v.bridge_index)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())));
    if v.host_up {
        host = host.up();
    }
    h.link()
        .add(host.build())
        .execute()
        .await
        .map_err(|e| KernelError::netlink("create veth", v.host_if, e))
}

/// The Docker plugin's Join: the pair in ferryd's namespace, the host end up on the
/// bridge, hairpin mode if asked.
pub async fn create_for_docker(h: &Handle, s: &VethPairSpec) -> Result<(), KernelError> {
    let bridge_index = index_here(&s.bridge)?
        .ok_or_else(|| KernelError::other("attach to bridge", &s.bridge, "no such bridge"))?;
    let v = Veth {
        host_if: &s.host_if,
        bridge_index,
        peer_name: &s.peer_if,
        peer_netns: None,
        peer_mac: s.peer_mac,
        mtu: s.mtu,
        host_up: true,
    };
    create(h, &v).await?;
    if s.hairpin {
        if let Err(e) = hairpin(h, &s.host_if).await {
            let _ = delete(h, &s.host_if).await;
            return Err(e);
        }
    }
    Ok(())
}
