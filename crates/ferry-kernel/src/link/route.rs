//! Routes: the sandbox's default route, and reading the host's routes so that
//! automatic subnets avoid them.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnet::{IpNet, Ipv4Net};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage};
use rtnetlink::{Handle, IpVersion};

use crate::KernelError;

/// The default route of the gateway's family, via the gateway, replacing any.
pub async fn replace_default(h: &Handle, gateway: IpAddr) -> Result<(), KernelError> {
    let done = match gateway {
        IpAddr::V4(gw) => h.route().add().v4().gateway(gw).replace().execute().await,
        IpAddr::V6(gw) => h.route().add().v6().gateway(gw).replace().execute().await,
    };
    done.map_err(|e| KernelError::netlink("add default route via", gateway.to_string(), e))
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
    let msgs: Vec<RouteMessage> = h
        .route()
        .get(family)
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
pub async fn destinations(h: &Handle) -> Result<Vec<IpNet>, KernelError> {
    Ok(main_table(h, IpVersion::V4)
        .await?
        .iter()
        .filter_map(destination)
        .map(IpNet::V4)
        .collect())
}
