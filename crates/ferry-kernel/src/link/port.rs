//! Bridge-port options of an existing link, found by name: RTM_NEWLINK without
//! NLM_F_CREATE carrying IFLA_INFO_SLAVE_DATA (rtnetlink's `change`), which the kernel
//! hands to the bridge's `slave_changelink`. (Port options sent with the request that
//! creates the link are not applied, and RTM_SETLINK ignores them.)

use netlink_packet_route::link::{InfoBridgePort, InfoPortData, InfoPortKind};
use netlink_packet_route::neighbour::{NeighbourFlags, NeighbourState};
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

/// `bridge fdb replace MAC dev PORT master static sticky`: the bridge sends frames for
/// the endpoint's MAC to its port without having to learn it there. A sandbox whose
/// frames the shortcut hands past the bridge teaches it nothing, and a learned entry
/// that aged out would make the bridge flood what it forwards to that MAC to every
/// other port (other sandboxes). Static entries never age, sticky ones never move (and
/// go with their port).
pub async fn pin_mac(h: &Handle, name: &str, mac: [u8; 6]) -> Result<(), KernelError> {
    let index = crate::link::get::index_here(name)?
        .ok_or_else(|| KernelError::other("pin a MAC on", name, "no such link"))?;
    h.neighbours()
        .add_bridge(index, &mac)
        .flags(NeighbourFlags::Controller | NeighbourFlags::Sticky)
        .state(NeighbourState::Noarp)
        .replace()
        .execute()
        .await
        .map_err(|e| KernelError::netlink("pin a MAC on", name, e))
}
