//! Bridges: created if missing, given their gateway address and brought up; an
//! existing bridge is adopted as it is (the plugin's `-o bridge=br1` case uses that).

use ipnet::IpNet;
use rtnetlink::{Handle, LinkBridge};

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
///
/// A bridge without an address set takes the lowest MAC of its ports, so it changes as
/// sandboxes come and go and their neighbour entries for the gateway go stale (traffic
/// to the gateway, DNS included, is lost for seconds). An explicit address stays put, as
/// Docker does.
async fn create(h: &Handle, name: &str, mtu: u32) -> Result<(), KernelError> {
    let msg = LinkBridge::new(name)
        .mtu(mtu)
        .address(bridge_mac(name).to_vec())
        .mcast_snooping(false)
        .build();
    match h.link().add(msg).execute().await {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::EEXIST => Ok(()),
        Err(e) => Err(KernelError::netlink("create bridge", name, e)),
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
            create(h, name, mtu).await?;
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
