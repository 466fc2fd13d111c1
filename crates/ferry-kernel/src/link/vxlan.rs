//! VXLAN tunnel devices for overlays: one per overlay network on each host, routed, not a
//! port of the network's bridge (flannel's vxlan backend, Calico's VXLAN mode): the host
//! routes each remote host's address blocks through the device to that host's tunnel
//! address, so the kernel holds one neighbour and one FDB entry per remote host, not per
//! remote sandbox. The device's MAC is derived from this host's tunnel address
//! ([`ferry_core::model::tunnel_mac`]), which is how every other host can address it
//! without asking. Learning is off: every entry is programmed from the cluster store
//! ([`crate::link::fdb`]), never learned from traffic, so no stale entry can outlive the
//! record it came from and no broadcast ever crosses the underlay.

use std::net::Ipv4Addr;

use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::LinkAttribute;
use rtnetlink::{Handle, LinkUnspec, LinkVxlan};

use crate::link::get::index_of;
use crate::KernelError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    pub name: String,
    pub vni: u32,
    /// This host's tunnel endpoint address (`--cluster-advertise`).
    pub local: Ipv4Addr,
    pub port: u16,
    pub mtu: u32,
}

/// Create the device if missing, then give it its MAC and MTU, take it off any bridge (a
/// device an older ferryd made was a bridge port) and bring it up.
pub async fn ensure(h: &Handle, spec: &VxlanSpec) -> Result<u32, KernelError> {
    let name = spec.name.as_str();
    let index = match index_of(h, name).await? {
        Some(i) => i,
        None => {
            let msg = LinkVxlan::new(name, spec.vni)
                .local(spec.local)
                .port(spec.port)
                .learning(false)
                .proxy(false)
                .l2miss(false)
                .l3miss(false)
                .build();
            match h.link().add(msg).execute().await {
                Ok(()) => {}
                Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::EEXIST => {}
                Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::EADDRINUSE => {
                    return Err(KernelError::other(
                        "create vxlan",
                        name,
                        format!(
                            "UDP port {} or VNI {} is taken by another VXLAN device",
                            spec.port, spec.vni
                        ),
                    ))
                }
                Err(e) => return Err(KernelError::netlink("create vxlan", name, e)),
            }
            index_of(h, name).await?.ok_or_else(|| {
                KernelError::other("create vxlan", name, "vanished after creation")
            })?
        }
    };
    let mac = ferry_core::model::tunnel_mac(spec.local).to_vec();
    let mut set = LinkUnspec::new_with_index(index)
        .mtu(spec.mtu)
        .nocontroller()
        .up();
    // Only when it differs: setting a device's MAC, even to the same value, flushes its
    // neighbour table, permanent entries included, and ferryd would not know.
    if mac_of(h, index).await?.as_deref() != Some(mac.as_slice()) {
        set = set.address(mac);
    }
    h.link()
        .set(set.build())
        .execute()
        .await
        .map_err(|e| KernelError::netlink("set up", name, e))?;
    Ok(index)
}

/// The attributes of link `index` (None: it is gone).
async fn attributes_of(h: &Handle, index: u32) -> Result<Option<Vec<LinkAttribute>>, KernelError> {
    let link = h
        .link()
        .get()
        .match_index(index)
        .execute()
        .try_next()
        .await
        .map_err(|e| KernelError::netlink("look up", index.to_string(), e))?;
    Ok(link.map(|l| l.attributes))
}

/// The hardware address of link `index`.
async fn mac_of(h: &Handle, index: u32) -> Result<Option<Vec<u8>>, KernelError> {
    let attrs = attributes_of(h, index).await?.unwrap_or_default();
    Ok(attrs.into_iter().find_map(|a| match a {
        LinkAttribute::Address(m) => Some(m),
        _ => None,
    }))
}

/// The link holding `ip` in ferryd's namespace and its MTU: the underlay an overlay's
/// tunnel runs over, whose MTU the overlay's is derived from.
pub async fn underlay_of(h: &Handle, ip: Ipv4Addr) -> Result<(String, u32), KernelError> {
    let addrs: Vec<_> = h
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| KernelError::netlink("list", "addresses", e))?;
    let index = addrs
        .iter()
        .find(|m| {
            m.attributes.iter().any(|a| {
                matches!(a, AddressAttribute::Address(std::net::IpAddr::V4(v)) if *v == ip)
                    || matches!(a, AddressAttribute::Local(std::net::IpAddr::V4(v)) if *v == ip)
            })
        })
        .map(|m| m.header.index)
        .ok_or_else(|| {
            KernelError::other(
                "find the underlay of",
                ip.to_string(),
                "no interface has it",
            )
        })?;
    let attrs = attributes_of(h, index)
        .await?
        .ok_or_else(|| KernelError::other("look up", ip.to_string(), "link vanished"))?;
    let mut name = String::new();
    let mut mtu = 1500;
    for a in attrs {
        match a {
            LinkAttribute::IfName(n) => name = n,
            LinkAttribute::Mtu(m) => mtu = m,
            _ => {}
        }
    }
    Ok((name, mtu))
}

/// The address of interface `name` (for `--cluster-advertise IFACE`).
pub async fn address_of(h: &Handle, name: &str) -> Result<Ipv4Addr, KernelError> {
    let index = index_of(h, name)
        .await?
        .ok_or_else(|| KernelError::other("find the address of", name, "no such interface"))?;
    let addrs: Vec<_> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(|e| KernelError::netlink("list addresses of", name, e))?;
    addrs
        .iter()
        .flat_map(|m| m.attributes.iter())
        .find_map(|a| match a {
            AddressAttribute::Address(std::net::IpAddr::V4(v)) => Some(*v),
            _ => None,
        })
        .ok_or_else(|| KernelError::other("find the address of", name, "it has no IPv4 address"))
}
