//! A sandbox's macvlan link: made on its parent in ferryd's namespace and put straight
//! into the sandbox's namespace under its final name (eth0, eth1, …) with its MAC, in
//! one request, so there is nothing to move or rename and nothing left on the host if
//! the request fails.

use std::os::fd::AsRawFd;

use ferry_core::model::MacvlanMode;
use netlink_packet_route::link::MacVlanMode;
use rtnetlink::{Handle, LinkMacVlan};

use crate::link::get::index_here;
use crate::KernelError;

fn mode(m: MacvlanMode) -> MacVlanMode {
    match m {
        MacvlanMode::Private => MacVlanMode::Private,
        MacvlanMode::Bridge => MacVlanMode::Bridge,
    }
}

pub struct Macvlan<'a> {
    pub name: &'a str,
    pub parent: &'a str,
    pub mode: MacvlanMode,
    pub mac: [u8; 6],
    pub mtu: Option<u32>,
    pub netns: &'a std::fs::File,
}

pub async fn create(h: &Handle, m: &Macvlan<'_>) -> Result<(), KernelError> {
    let parent = index_here(m.parent)?.ok_or_else(|| {
        KernelError::other("make a macvlan link on", m.parent, "no such interface")
    })?;
    let mut msg = LinkMacVlan::new(m.name, parent, mode(m.mode))
        .setns_by_fd(m.netns.as_raw_fd())
        .address(m.mac.to_vec());
    if let Some(mtu) = m.mtu {
        msg = msg.mtu(mtu);
    }
    h.link()
        .add(msg.build())
        .execute()
        .await
        .map_err(|e| KernelError::netlink("make macvlan link on", m.parent, e))
}
