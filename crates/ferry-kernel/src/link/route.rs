//! Routes: the sandbox's default route, and reading the host's routes so that
//! automatic subnets avoid them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage};
use rtnetlink::{Handle, IpVersion, RouteMessageBuilder};

use crate::KernelError;

/// The default route of the gateway's family, via the gateway, replacing any.
pub async fn replace_default(h: &Handle, gateway: IpAddr) -> Result<(), KernelError> {
    let msg = match gateway {
        IpAddr::V4(gw) => RouteMessageBuilder::<Ipv4Addr>::new().gateway(gw).build(),
        IpAddr::V6(gw) => RouteMessageBuilder::<Ipv6Addr>::new().gateway(gw).build(),
    };
    h.route()
        .add(msg)
        .replace()
        .execute()
        .await
        .map_err(|e| KernelError::netlink("add default route via", gateway.to_string(), e))
}

fn destination(m: &RouteMessage) -> Option<Ipv4Net> {
    let addr = m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    });
    let len = m.header.destination_prefix_length;
    Ipv4Net::new(addr.unwrap_or(Ipv4Addr::UNSPECIFIED), len).ok()
}

/// The main table's routes of one family.
pub async fn main_table(h: &Handle, family: IpVersion) -> Result<Vec<RouteMessage>, KernelError> {
    let of_family = match family {
        IpVersion::V4 => RouteMessageBuilder::<Ipv4Addr>::new().build(),
        IpVersion::V6 => RouteMessageBuilder::<Ipv6Addr>::new().build(),
    };
    let msgs: Vec<RouteMessage> = super::dump::collect(|| h.route().get(of_family).execute())
        .await
        .map_err(|e| KernelError::netlink("list", "routes", e))?;
    Ok(msgs
        .into_iter()
        .filter(|m| m.header.table == RouteHeader::RT_TABLE_MAIN)
        .collect())
}

/// Every IPv4 destination in the main table.
pub async fn destinations(h: &Handle) -> Result<Vec<IpNet>, KernelError> {
    Ok(main_table(h, IpVersion::V4)
        .await?
        .iter()
        .filter_map(destination)
        .map(IpNet::V4)
        .collect())
}

/// The protocol ferry's tunnel routes carry, so that they are told from the kernel's own
/// (a bridge's connected route) and from an administrator's.
const TUNNEL_PROTO: netlink_packet_route::route::RouteProtocol =
    netlink_packet_route::route::RouteProtocol::Static;

/// `ip route replace DST via VIA dev DEV onlink proto static` (a remote host's block,
/// through its tunnel address), or with no `via`, `ip route replace DST dev DEV scope link
/// proto static` (a local endpoint inside another host's block).
pub async fn replace_tunnel(
    h: &Handle,
    dev: u32,
    dev_name: &str,
    dst: Ipv4Net,
    via: Option<Ipv4Addr>,
) -> Result<(), KernelError> {
    let msg = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst.network(), dst.prefix_len())
        .output_interface(dev)
        .protocol(TUNNEL_PROTO);
    let msg = match via {
        Some(gw) => msg.gateway(gw).onlink(),
        None => msg.scope(netlink_packet_route::route::RouteScope::Link),
    };
    h.route()
        .add(msg.build())
        .replace()
        .execute()
        .await
        .map_err(|e| KernelError::netlink("add route", format!("{dst} on {dev_name}"), e))
}

/// Remove a tunnel route; one already gone is success.
pub async fn delete_tunnel(
    h: &Handle,
    dev: u32,
    dev_name: &str,
    dst: Ipv4Net,
) -> Result<(), KernelError> {
    let mut m = RouteMessage::default();
    m.header.address_family = netlink_packet_route::AddressFamily::Inet;
    m.header.destination_prefix_length = dst.prefix_len();
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = TUNNEL_PROTO;
    m.attributes
        .push(RouteAttribute::Destination(RouteAddress::Inet(
            dst.network(),
        )));
    m.attributes.push(RouteAttribute::Oif(dev));
    match h.route().del(m).execute().await {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ESRCH => Ok(()),
        Err(e) => Err(KernelError::netlink(
            "delete route",
            format!("{dst} on {dev_name}"),
            e,
        )),
    }
}

/// The tunnel routes (ferry's protocol) through device `dev`, by destination.
pub async fn tunnel_routes(h: &Handle, dev: u32) -> Result<Vec<Ipv4Net>, KernelError> {
    Ok(main_table(h, IpVersion::V4)
        .await?
        .iter()
        .filter(|m| m.header.protocol == TUNNEL_PROTO)
        .filter(|m| m.attributes.contains(&RouteAttribute::Oif(dev)))
        .filter_map(destination)
        .collect())
}
