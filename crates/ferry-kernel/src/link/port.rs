//! Bridge-port options of an existing link, found by name: RTM_NEWLINK without
//! NLM_F_CREATE carrying IFLA_INFO_SLAVE_DATA (rtnetlink's `change`), which the kernel
//! hands to the bridge's `slave_changelink`. (Port options sent with the request that
//! creates the link are not applied, and RTM_SETLINK ignores them.)

use netlink_packet_route::link::{InfoBridgePort, InfoPortData, InfoPortKind};
use rtnetlink::{Handle, LinkUnspec};

use crate::KernelError;

/// Hairpin mode on a bridge port: a frame may leave by the port it came in on, so a
/// sandbox reaching its own published port through the host gets the answer.
pub async fn hairpin(h: &Handle, name: &str) -> Result<(), KernelError> {
    let msg = LinkUnspec::new_with_name(name)
        .set_port_kind(InfoPortKind::Bridge)
        .set_port_data(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(
            true,
        )]))
        .build();
    h.link()
        .change(msg)
        .execute()
        .await
        .map_err(|e| KernelError::netlink("set hairpin on", name, e))
}
