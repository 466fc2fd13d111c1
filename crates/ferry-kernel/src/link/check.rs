//! Whether an endpoint is wired as its spec says: a veth's host end exists, is up and
//! is a port of the right bridge (a macvlan link has no host end); inside the sandbox the interface exists, is up, holds
//! the endpoint's address, and the default route goes via the gateway if the endpoint
//! carries it. Reconcile asks this of every endpoint the store knows, because a crash
//! between the store's commit and the end of the kernel work (or a hand deleting a
//! bridge or a veth) leaves an endpoint recorded but not wired.

use std::net::IpAddr;

use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute};
use rtnetlink::{Handle, IpVersion};

use crate::link::{addr, get};
use crate::{AttachSpec, KernelError, LinkSpec, VethLink};

/// What is wrong with one endpoint's wiring.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Wiring {
    /// Each problem found, in words ("veth fy0123 is not on bridge fy-1a2b").
    pub problems: Vec<String>,
    /// The veth pair itself is missing or misplaced: it must be made again. Otherwise
    /// only the sandbox side's settings (up, address, route) need putting back.
    pub remake_pair: bool,
}

fn is_up(m: &LinkMessage) -> bool {
    m.header.flags.contains(LinkFlags::Up)
}

fn controller(m: &LinkMessage) -> Option<u32> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(i) => Some(*i),
        _ => None,
    })
}

/// Check the host side (through `host`, ferryd's namespace) and the sandbox side
/// (through `inside`, a handle in the sandbox's namespace).
pub async fn check(host: &Handle, inside: &Handle, s: &AttachSpec) -> Result<Wiring, KernelError> {
    let mut w = Wiring::default();
    if let LinkSpec::Veth(v) = &s.link {
        check_host_end(host, v, &mut w).await?;
    }
    match get::message_of(inside, &s.ifname).await? {
        None => {
            w.problems
                .push(format!("{} is missing inside the sandbox", s.ifname));
            w.remake_pair = true;
        }
        Some(m) => {
            if !is_up(&m) {
                w.problems.push(format!("{} is down", s.ifname));
            }
            let addrs = addr::list(inside, m.header.index, &s.ifname).await?;
            if !addrs.contains(&s.addr) {
                w.problems
                    .push(format!("{} does not hold {}", s.ifname, s.addr));
            }
        }
    }
    if let Some(gw) = s.default_via {
        let family = match gw {
            IpAddr::V4(_) => IpVersion::V4,
            IpAddr::V6(_) => IpVersion::V6,
        };
        if default_gateway(inside, family).await? != Some(gw) {
            w.problems
                .push(format!("the default route is not via {gw}"));
        }
    }
    Ok(w)
}

/// A veth's host end: there, a port of its bridge, up.
async fn check_host_end(host: &Handle, v: &VethLink, w: &mut Wiring) -> Result<(), KernelError> {
    match get::message_of(host, &v.host_if).await? {
        None => {
            w.problems
                .push(format!("host veth {} is missing", v.host_if));
            w.remake_pair = true;
        }
        Some(m) => {
            let bridge = get::index_of(host, &v.bridge).await?;
            if bridge.is_none() || controller(&m) != bridge {
                w.problems
                    .push(format!("veth {} is not on bridge {}", v.host_if, v.bridge));
                w.remake_pair = true;
            } else if !is_up(&m) {
                w.problems.push(format!("veth {} is down", v.host_if));
            }
        }
    }
    Ok(())
}

/// The gateway of the main table's default route of `family`, if there is one.
async fn default_gateway(h: &Handle, family: IpVersion) -> Result<Option<IpAddr>, KernelError> {
    Ok(crate::link::route::main_table(h, family)
        .await?
        .iter()
        .filter(|m| m.header.destination_prefix_length == 0)
        .find_map(|m| {
            m.attributes.iter().find_map(|a| match a {
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
                RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
                _ => None,
            })
        }))
}
