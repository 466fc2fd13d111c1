//! A veth pair with both ends in ferryd's own namespace, for the Docker plugin's Join:
//! the host end enslaved to the bridge and up, the other end (Docker's `SrcName`) left
//! down with the endpoint's MAC and MTU for dockerd to move into the container, rename
//! and configure. One request, so there is never a half-made pair; hairpin mode (for an
//! endpoint that publishes ports) is a second one, and the pair goes if it fails.

use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlag, LinkInfo, LinkMessage,
};
use rtnetlink::Handle;

use crate::link::del::delete;
use crate::link::get::index_here;
use crate::link::port::hairpin;
use crate::{KernelError, VethPairSpec};

pub async fn create(h: &Handle, s: &VethPairSpec) -> Result<(), KernelError> {
    let bridge_index = index_here(&s.bridge)?
        .ok_or_else(|| KernelError::other("attach to bridge", &s.bridge, "no such bridge"))?;
    let mut peer = LinkMessage::default();
    peer.attributes
        .push(LinkAttribute::IfName(s.peer_if.clone()));
    peer.attributes
        .push(LinkAttribute::Address(s.peer_mac.to_vec()));
    peer.attributes.push(LinkAttribute::Mtu(s.mtu));
    let mut req = h.link().add().name(s.host_if.clone());
    let msg = req.message_mut();
    msg.header.flags.push(LinkFlag::Up);
    msg.header.change_mask.push(LinkFlag::Up);
    let attrs = &mut msg.attributes;
    attrs.push(LinkAttribute::Mtu(s.mtu));
    attrs.push(LinkAttribute::Controller(bridge_index));
    attrs.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    req.execute()
        .await
        .map_err(|e| KernelError::netlink("create veth pair", &s.host_if, e))?;
    if s.hairpin {
        if let Err(e) = hairpin(h, &s.host_if).await {
            let _ = delete(h, &s.host_if).await;
            return Err(e);
        }
    }
    Ok(())
}
