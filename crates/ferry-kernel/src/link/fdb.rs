//! An overlay's forwarding entries on its VXLAN device, for one remote endpoint each:
//! the bridge FDB entry (its MAC is behind that host's tunnel address) and the neighbour
//! entry (its IP has that MAC), which the device's ARP proxy answers from. Both are
//! written with replace semantics, so a moved endpoint is one overwrite, never a window
//! with two answers; deleting one already gone is success.

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::AddressFamily;
use rtnetlink::Handle;

use crate::KernelError;

fn gone(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -libc::ENOENT)
}

/// `bridge fdb replace MAC dev DEV dst VTEP self permanent` and
/// `ip neigh replace IP lladdr MAC dev DEV nud permanent`.
pub async fn replace(
    h: &Handle,
    dev: u32,
    dev_name: &str,
    mac: [u8; 6],
    ip: Ipv4Addr,
    vtep: Ipv4Addr,
) -> Result<(), KernelError> {
    let mut fdb = h
        .neighbours()
        .add_bridge(dev, &mac)
        .flags(NeighbourFlags::Own)
        .replace();
    fdb.message_mut()
        .attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            vtep,
        )));
    fdb.execute()
        .await
        .map_err(|e| KernelError::netlink("add a forwarding entry on", dev_name, e))?;
    h.neighbours()
        .add(dev, IpAddr::V4(ip))
        .link_layer_address(&mac)
        .state(NeighbourState::Permanent)
        .replace()
        .execute()
        .await
        .map_err(|e| KernelError::netlink("add a neighbour entry on", dev_name, e))
}

/// Remove both entries of one remote endpoint.
pub async fn delete(
    h: &Handle,
    dev: u32,
    dev_name: &str,
    mac: [u8; 6],
    ip: Ipv4Addr,
) -> Result<(), KernelError> {
    let mut neigh = NeighbourMessage::default();
    neigh.header.family = AddressFamily::Inet;
    neigh.header.ifindex = dev;
    neigh
        .attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    match h.neighbours().del(neigh).execute().await {
        Ok(()) => {}
        Err(e) if gone(&e) => {}
        Err(e) => {
            return Err(KernelError::netlink(
                "delete a neighbour entry on",
                dev_name,
                e,
            ))
        }
    }
    let mut fdb = NeighbourMessage::default();
    fdb.header.family = AddressFamily::Bridge;
    fdb.header.ifindex = dev;
    fdb.header.flags = NeighbourFlags::Own;
    fdb.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    match h.neighbours().del(fdb).execute().await {
        Ok(()) => Ok(()),
        Err(e) if gone(&e) => Ok(()),
        Err(e) => Err(KernelError::netlink(
            "delete a forwarding entry on",
            dev_name,
            e,
        )),
    }
}

/// The IPv4 neighbour entries on device `dev` (index): what a previous ferryd programmed,
/// read at start so that entries whose records went meanwhile are removed.
pub async fn list(
    h: &Handle,
    dev: u32,
    dev_name: &str,
) -> Result<Vec<(Ipv4Addr, [u8; 6])>, KernelError> {
    let msgs: Vec<NeighbourMessage> = super::dump::collect(|| {
        h.neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute()
    })
    .await
    .map_err(|e| KernelError::netlink("list neighbours of", dev_name, e))?;
    Ok(msgs
        .into_iter()
        .filter(|m| m.header.ifindex == dev)
        .filter_map(|m| {
            let mut ip = None;
            let mut mac = None;
            for a in m.attributes {
                match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => ip = Some(v),
                    NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                        let mut m = [0u8; 6];
                        m.copy_from_slice(&l);
                        mac = Some(m);
                    }
                    _ => {}
                }
            }
            Some((ip?, mac?))
        })
        .collect())
}
