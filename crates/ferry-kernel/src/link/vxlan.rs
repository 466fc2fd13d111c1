//! VXLAN tunnel devices for overlays: one per overlay network on each host, a port of
//! that network's bridge. Learning is off and ARP is answered from the device's own
//! neighbour table (`proxy`): every remote MAC and address is programmed from the cluster
//! store ([`crate::link::fdb`]), never learned from traffic, so no stale entry can outlive
//! the record it came from and no broadcast ever crosses the underlay.

use std::net::Ipv4Addr;

use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::LinkAttribute;
use rtnetlink::Handle;

use crate::link::get::index_of;
use crate::KernelError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    pub name: String,
    pub vni: u32,
    /// This host's tunnel endpoint address (`--cluster-advertise`).
    pub local: Ipv4Addr,
    pub port: u16,
    /// The bridge the device is a port of.
    pub bridge: String,
    pub mtu: u32,
}

/// Create the device if missing, then put it on its bridge with its MTU and bring it up.
pub async fn ensure(h: &Handle, spec: &VxlanSpec) -> Result<u32, KernelError> {
    let name = spec.name.as_str();
    let bridge = index_of(h, &spec.bridge)
        .await?
        .ok_or_else(|| KernelError::other("create vxlan", name, "its bridge does not exist"))?;
    let index = match index_of(h, name).await? {
        Some(i) => i,
        None => {
            let req = h
                .link()
                .add()
                .vxlan(name.to_string(), spec.vni)
                .local(spec.local)
                .port(spec.port)
                .learning(false)
                .proxy(true)
                .l2miss(false)
                .l3miss(false);
            match req.execute().await {
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
    h.link()
        .set(index)
        .mtu(spec.mtu)
        .controller(bridge)
        .up()
        .execute()
        .await
        .map_err(|e| KernelError::netlink("put on its bridge", name, e))?;
    Ok(index)
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
    let link = h
        .link()
        .get()
        .match_index(index)
        .execute()
        .try_next()
        .await
        .map_err(|e| KernelError::netlink("look up", ip.to_string(), e))?
        .ok_or_else(|| KernelError::other("look up", ip.to_string(), "link vanished"))?;
    let mut name = String::new();
    let mut mtu = 1500;
    for a in link.attributes {
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
