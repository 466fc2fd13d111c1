//! A link another program made (a network plugin's `SrcName`), taken into a sandbox the
//! way dockerd does it after `Join`, and handed back after `Leave`.
//!
//! Mechanism: one RTM_SETLINK in ferryd's namespace carries both the target namespace's
//! fd and the new name, so the link arrives as `eth0` (no window in which a sandbox sees
//! the plugin's name, and no rename step that could fail halfway); then, over a netlink
//! socket opened inside the sandbox (see `crate::netns::netlink_in`), its MAC, address,
//! up, the default route and the plugin's static routes. Handing back is the same move
//! in reverse, under the plugin's own name, so its `DeleteEndpoint` finds the link.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use ipnet::{IpNet, Ipv4Net};
use netlink_packet_route::route::RouteScope;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use crate::link::{addr, get, route, up};
use crate::{netns, KernelError};

/// A route a plugin asked for (`StaticRoutes`): via a next hop, or on-link without one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticRoute {
    pub destination: Ipv4Net,
    pub next_hop: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdoptSpec {
    pub netns: PathBuf,
    /// The link's name in ferryd's namespace (the plugin's `SrcName`).
    pub src: String,
    /// Its name in the sandbox (`DstPrefix` + index).
    pub ifname: String,
    pub mac: Option<[u8; 6]>,
    pub addr: IpNet,
    pub default_via: Option<IpAddr>,
    pub routes: Vec<StaticRoute>,
}

/// Move `s.src` into the sandbox as `s.ifname` and configure it there. If the
/// configuration fails, the link is moved back under its own name before returning.
pub async fn adopt(host: &Handle, s: &AdoptSpec) -> Result<(), KernelError> {
    let index = get::index_of(host, &s.src)
        .await?
        .ok_or_else(|| KernelError::other("take into sandbox", &s.src, "no such link"))?;
    let ns = std::fs::File::open(&s.netns)
        .map_err(|e| KernelError::io("open netns", s.netns.display().to_string(), e))?;
    let moved = LinkUnspec::new_with_index(index)
        .down()
        .setns_by_fd(ns.as_raw_fd())
        .name(s.ifname.clone());
    host.link()
        .set(moved.build())
        .execute()
        .await
        .map_err(|e| KernelError::netlink("move into sandbox", &s.src, e))?;
    let nh = netns::netlink_in(&s.netns).await?;
    if let Err(e) = configure(&nh, s).await {
        let _ = hand_back_with(&nh, &s.ifname, &s.src).await;
        return Err(e);
    }
    Ok(())
}

async fn configure(nh: &Handle, s: &AdoptSpec) -> Result<(), KernelError> {
    let idx = get::index_of(nh, &s.ifname)
        .await?
        .ok_or_else(|| KernelError::other("find", &s.ifname, "moved link missing in sandbox"))?;
    if let Some(mac) = s.mac {
        nh.link()
            .set(
                LinkUnspec::new_with_index(idx)
                    .address(mac.to_vec())
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| KernelError::netlink("set MAC of", &s.ifname, e))?;
    }
    addr::add(nh, idx, &s.ifname, s.addr).await?;
    up::up(nh, idx, &s.ifname).await?;
    for r in &s.routes {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(r.destination.addr(), r.destination.prefix_len())
            .output_interface(idx);
        let msg = match r.next_hop {
            Some(nh) => msg.gateway(nh),
            None => msg.scope(RouteScope::Link),
        };
        nh.route()
            .add(msg.build())
            .replace()
            .execute()
            .await
            .map_err(|e| KernelError::netlink("add route", r.destination.to_string(), e))?;
    }
    if let Some(gw) = s.default_via {
        route::replace_default(nh, gw).await?;
    }
    Ok(())
}

/// Move `ifname` out of the sandbox at `netns` back into ferryd's namespace as `back`.
/// A sandbox namespace or link already gone is success (the link went with it).
pub async fn hand_back(
    sandbox: &std::path::Path,
    ifname: &str,
    back: &str,
) -> Result<(), KernelError> {
    if !netns::is_pinned(sandbox) {
        return Ok(());
    }
    let nh = netns::netlink_in(sandbox).await?;
    hand_back_with(&nh, ifname, back).await
}

async fn hand_back_with(nh: &Handle, ifname: &str, back: &str) -> Result<(), KernelError> {
    let Some(idx) = get::index_of(nh, ifname).await? else {
        return Ok(());
    };
    // ferryd's own namespace: its main thread never leaves it.
    let here = std::fs::File::open("/proc/self/ns/net")
        .map_err(|e| KernelError::io("open netns", "/proc/self/ns/net", e))?;
    let moved = LinkUnspec::new_with_index(idx)
        .down()
        .setns_by_fd(here.as_raw_fd())
        .name(back.to_string());
    nh.link()
        .set(moved.build())
        .execute()
        .await
        .map_err(|e| KernelError::netlink("move out of sandbox", ifname, e))
}
