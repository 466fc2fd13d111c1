//! What a host of a test cluster routes through an overlay's VXLAN device, read from the
//! kernel (no ferryd needed): the tests' and benchmarks' view of ferryd's tunnel routes.

use std::time::Duration;

use anyhow::Result;

use crate::TestHost;

/// What a host routes through overlay `net`'s VXLAN device: each route's destination and
/// the tunnel address it goes to, and the neighbour table's addresses (one per remote
/// host the routes go through).
#[derive(Debug, PartialEq, Eq)]
pub struct TunnelSeen {
    pub routes: Vec<(String, String)>,
    pub neighbours: Vec<String>,
}

impl TunnelSeen {
    /// The tunnel address the most specific route holding `ip` goes to.
    pub fn via(&self, ip: &str) -> Option<&str> {
        let ip = u32::from(ip.parse::<std::net::Ipv4Addr>().ok()?);
        self.routes
            .iter()
            .filter_map(|(dst, via)| {
                let (net, len) = dst.split_once('/').unwrap_or((dst, "32"));
                let (net, len) = (
                    u32::from(net.parse::<std::net::Ipv4Addr>().ok()?),
                    len.parse::<u32>().ok()?,
                );
                let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                (ip & mask == net & mask).then_some((len, via.as_str()))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, via)| via)
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty() && self.neighbours.is_empty()
    }
}

pub fn tunnel_seen(h: &TestHost, net: &str) -> Result<TunnelSeen> {
    tunnel_in(h.netns()?, &tunnel_dev(h, net)?)
}

pub fn tunnel_dev(h: &TestHost, net: &str) -> Result<String> {
    let id = h.ferry_ok(&["network", "inspect", net, "--format", "{{.Id}}"])?;
    Ok(format!("fv-{}", &id[..8]))
}

/// `ip ARGS` in the namespace `netns`, bounded; its output's lines.
fn ip_lines(netns: &std::fs::File, args: &[&str]) -> Result<Vec<String>> {
    use std::os::fd::AsRawFd;
    let ns = format!(
        "--net=/proc/{}/fd/{}",
        std::process::id(),
        netns.as_raw_fd()
    );
    let mut cmd = std::process::Command::new("nsenter");
    cmd.arg(ns).arg("ip").args(args);
    let out = crate::run_bounded(&mut cmd, Duration::from_secs(10))?.expect_success()?;
    Ok(out.stdout.lines().map(str::to_string).collect())
}

/// `dev`'s tunnel routes and neighbours, read from the kernel (no ferryd needed).
pub fn tunnel_in(netns: &std::fs::File, dev: &str) -> Result<TunnelSeen> {
    let first = |l: &String| l.split_whitespace().next().map(str::to_string);
    let routes = ip_lines(
        netns,
        &["-4", "route", "show", "dev", dev, "proto", "static"],
    )?
    .iter()
    .filter_map(|l| {
        let via = l.split_whitespace().skip_while(|w| *w != "via").nth(1)?;
        Some((first(l)?, via.to_string()))
    })
    .collect();
    let neighbours = ip_lines(netns, &["-4", "neigh", "show", "dev", dev])?
        .iter()
        .filter_map(first)
        .collect();
    Ok(TunnelSeen { routes, neighbours })
}
