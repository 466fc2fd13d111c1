//! Bridges: created if missing, given their gateway address and brought up; an
//! existing bridge is adopted as it is (the plugin's `-o bridge=br1` case uses that).

use ipnet::IpNet;
use netlink_packet_route::link::{InfoBridge, InfoData, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::Handle;

use crate::link::{addr, get::index_of, up::up};
use crate::KernelError;

/// A stable, locally administered unicast MAC for a bridge, derived from its name.
pub fn bridge_mac(name: &str) -> [u8; 6] {
    // FNV-1a: stable across builds (unlike std's hasher).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    [0x02, b[0], b[1], b[2], b[3], b[4]]
}

/// Create the bridge with multicast snooping off. With it on, every port that goes up
/// or down makes the kernel re-arm the multicast timers of *every* port
/// (`br_port_state_selection` → `br_multicast_enable_port`), so attaching and detaching
/// an endpoint grew with the number of endpoints (a tenth of ferryd's time per attach at
/// 900). Snooping only narrows multicast delivery once a querier and member reports are
/// seen; a container bridge has no querier, so multicast floods either way. A bridge
/// ferry adopts (`-o bridge=`) keeps its own setting.
fn no_multicast_snooping(msg: &mut LinkMessage) {
    for a in msg.attributes.iter_mut() {
        if let LinkAttribute::LinkInfo(infos) = a {
            infos.push(LinkInfo::Data(InfoData::Bridge(vec![
                InfoBridge::MulticastSnooping(0),
            ])));
        }
    }
}

pub async fn ensure(
    h: &Handle,
    name: &str,
    gateway: Option<IpNet>,
    mtu: u32,
) -> Result<u32, KernelError> {
    let index = match index_of(h, name).await? {
        Some(i) => i,
        None => {
            let mut req = h.link().add().bridge(name.to_string());
            req.message_mut().attributes.push(LinkAttribute::Mtu(mtu));
            // A bridge without an address set takes the lowest MAC of its ports, so it
            // changes as sandboxes come and go and their neighbour entries for the
            // gateway go stale (traffic to the gateway, DNS included, is lost for
            // seconds). An explicit address stays put, as Docker does.
            req.message_mut()
                .attributes
                .push(LinkAttribute::Address(bridge_mac(name).to_vec()));
            no_multicast_snooping(req.message_mut());
            match req.execute().await {
                Ok(()) => {}
                Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::EEXIST => {}
                Err(e) => return Err(KernelError::netlink("create bridge", name, e)),
            }
            index_of(h, name).await?.ok_or_else(|| {
                KernelError::other("create bridge", name, "bridge vanished after creation")
            })?
        }
    };
    if let Some(gw) = gateway {
        addr::add(h, index, name, gw).await?;
    }
    up(h, index, name).await?;
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_macs_are_local_unicast_and_stable() {
        let m = bridge_mac("fy-0123abcd");
        assert_eq!(m[0], 0x02);
        assert_eq!(m, bridge_mac("fy-0123abcd"));
        assert_ne!(m, bridge_mac("fy-0123abce"));
    }
}
