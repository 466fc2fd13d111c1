//! Routes: the sandbox's default route, and reading the host's routes so that
//! automatic subnets avoid them.

use std::net::Ipv4Addr;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage};
use rtnetlink::{Handle, IpVersion};

use crate::KernelError;

pub async fn replace_default(h: &Handle, gateway: Ipv4Addr) -> Result<(), KernelError> {
    h.route()
        .add()
        .v4()
        .gateway(gateway)
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

/// The main table's IPv4 routes.
pub async fn main_table(h: &Handle) -> Result<Vec<RouteMessage>, KernelError> {
    let msgs: Vec<RouteMessage> = h
        .route()
        .get(IpVersion::V4)
        .execute()
        .try_collect()
        .await
        .map_err(|e| KernelError::netlink("list", "routes", e))?;
    Ok(msgs
        .into_iter()
        .filter(|m| m.header.table == RouteHeader::RT_TABLE_MAIN)
        .collect())
}

/// Every IPv4 destination in the main table.
pub async fn destinations(h: &Handle) -> Result<Vec<Ipv4Net>, KernelError> {
    Ok(main_table(h)
        .await?
        .iter()
        .filter_map(destination)
        .collect())
}
