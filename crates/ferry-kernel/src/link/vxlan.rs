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
use netlink_packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo};
use rtnetlink::{Handle, LinkUnspec, LinkVxlan};

use crate::link::get::{self, index_of};
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
                // Made meanwhile under our name (found below), or another device has
                // this VNI on this port (said below).
                Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::EEXIST => {}
                Err(e) => return Err(KernelError::netlink("create vxlan", name, e)),
            }
            match index_of(h, name).await? {
                Some(i) => i,
                None => return Err(taken(h, spec, Some(spec.vni)).await),
            }
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
    match h.link().set(set.build()).execute().await {
        Ok(()) => {}
        // The port's socket is another's: a VXLAN device that cannot share it (external,
        // GBP, …) or a program.
        Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::EADDRINUSE => {
            return Err(taken(h, spec, None).await)
        }
        Err(e) => return Err(KernelError::netlink("set up", name, e)),
    }
    Ok(index)
}

/// The error for a tunnel whose port (and, with `vni`, VNI) another holds: which VXLAN
/// device, if one does, and what to do about it.
async fn taken(h: &Handle, spec: &VxlanSpec, vni: Option<u32>) -> KernelError {
    let what = match vni {
        Some(v) => format!("VNI {v} on UDP port {}", spec.port),
        None => format!("UDP port {}", spec.port),
    };
    let others = holders(h, spec.port, vni).await.map(|mut d| {
        d.retain(|n| n != spec.name.as_str());
        d
    });
    let why = match others {
        Ok(devs) if !devs.is_empty() => format!(
            "{what} is held by VXLAN device {} on this host; remove it, or start every \
             ferryd of the cluster with the same --vxlan-port PORT",
            devs.join(", ")
        ),
        _ => format!(
            "{what} is held by another program or device on this host; free it, or start \
             every ferryd of the cluster with the same --vxlan-port PORT"
        ),
    };
    KernelError::other("create vxlan", spec.name.as_str(), why)
}

/// The VXLAN devices in this namespace on UDP `port`: with VNI `vni` (up or down, as the
/// kernel compares them), or, without one, those up: a device holds its port's socket
/// only while it is up, and one that is up on the port and could share the socket with
/// ours would have.
async fn holders(h: &Handle, port: u16, vni: Option<u32>) -> Result<Vec<String>, KernelError> {
    Ok(get::all(h)
        .await?
        .iter()
        .filter_map(|m| {
            let info = vxlan_info(&m.attributes)?;
            let on_port = info.contains(&InfoVxlan::Port(port));
            let holds = match vni {
                Some(v) => info.contains(&InfoVxlan::Id(v)),
                None => m.header.flags.contains(LinkFlags::Up),
            };
            (on_port && holds).then(|| get::name_of(m))?
        })
        .collect())
}

fn vxlan_info(attrs: &[LinkAttribute]) -> Option<&Vec<InfoVxlan>> {
    attrs.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Data(InfoData::Vxlan(v)) => Some(v),
            _ => None,
        }),
        _ => None,
    })
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
    let addrs: Vec<_> = super::dump::collect(|| h.address().get().execute())
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
    super::addr::list(h, index, name)
        .await?
        .into_iter()
        .find_map(|net| match net.addr() {
            std::net::IpAddr::V4(v) => Some(v),
            std::net::IpAddr::V6(_) => None,
        })
        .ok_or_else(|| KernelError::other("find the address of", name, "it has no IPv4 address"))
}
