//! Bridge-port options of an existing link, found by name: RTM_NEWLINK without
//! NLM_F_CREATE carrying IFLA_INFO_SLAVE_DATA, which the kernel hands to the bridge's
//! `slave_changelink`. (Port options sent with the request that creates the link are
//! not applied, and RTM_SETLINK ignores them.)

use futures::StreamExt;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};
use netlink_packet_route::link::{
    InfoBridgePort, InfoPortData, InfoPortKind, LinkAttribute, LinkInfo, LinkMessage,
};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::Handle;

use crate::KernelError;

/// Hairpin mode on a bridge port: a frame may leave by the port it came in on, so a
/// sandbox reaching its own published port through the host gets the answer.
pub async fn hairpin(h: &Handle, name: &str) -> Result<(), KernelError> {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::PortKind(InfoPortKind::Bridge),
        LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(
            true,
        )])),
    ]));
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewLink(msg));
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    let mut replies = h
        .clone()
        .request(req)
        .map_err(|e| KernelError::netlink("set hairpin on", name, e))?;
    while let Some(m) = replies.next().await {
        if let NetlinkPayload::Error(e) = m.payload {
            if e.code.is_some() {
                return Err(KernelError::netlink(
                    "set hairpin on",
                    name,
                    rtnetlink::Error::NetlinkError(e),
                ));
            }
        }
    }
    Ok(())
}
