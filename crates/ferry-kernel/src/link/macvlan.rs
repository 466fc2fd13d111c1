//! A sandbox's macvlan link: made on its parent in ferryd's namespace and put straight
//! into the sandbox's namespace under its final name (eth0, eth1, …) with its MAC, in
//! one request, so there is nothing to move or rename and nothing left on the host if
//! the request fails.

use std::os::fd::AsRawFd;

use ferry_core::model::MacvlanMode;
use netlink_packet_route::link::{InfoData, InfoKind, InfoMacVlan, LinkAttribute, LinkInfo};
use rtnetlink::Handle;

use crate::link::get::index_here;
use crate::KernelError;

/// The kernel's `MACVLAN_MODE_*` (include/uapi/linux/if_link.h).
fn mode_bits(m: MacvlanMode) -> u32 {
    const PRIVATE: u32 = 1;
    const BRIDGE: u32 = 4;
    match m {
        MacvlanMode::Private => PRIVATE,
        MacvlanMode::Bridge => BRIDGE,
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
    let mut req = h.link().add().name(m.name.to_string());
    let attrs = &mut req.message_mut().attributes;
    attrs.push(LinkAttribute::Link(parent));
    attrs.push(LinkAttribute::NetNsFd(m.netns.as_raw_fd()));
    attrs.push(LinkAttribute::Address(m.mac.to_vec()));
    if let Some(mtu) = m.mtu {
        attrs.push(LinkAttribute::Mtu(mtu));
    }
    attrs.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::MacVlan),
        LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(mode_bits(
            m.mode,
        ))])),
    ]));
    req.execute()
        .await
        .map_err(|e| KernelError::netlink("make macvlan link on", m.parent, e))
}
