//! Reading a network plugin's answers to `CreateEndpoint` and `Join` (leniently, as
//! dockerd does: absent fields are empty).

use std::net::Ipv4Addr;

use ferry_core::model::WayOut;
use ferry_core::IfName;
use ferry_kernel::StaticRoute;
use ipnet::Ipv4Net;
use serde_json::Value;

use super::{Plugin, PluginError};

/// What `Join` answered, read leniently (absent fields are empty).
pub struct Joined {
    pub src: String,
    pub prefix: String,
    pub gateway: Option<Ipv4Addr>,
    pub routes: Vec<StaticRoute>,
    /// What the endpoint gives the sandbox towards the outside, as dockerd reads the
    /// answer: `Gateway`, else a static route to 0.0.0.0/0, else `DisableGatewayService`.
    pub way_out: WayOut,
}

pub fn garbage(p: &Plugin, call: &str, why: String) -> PluginError {
    PluginError::Garbage {
        plugin: p.found.name.clone(),
        call: call.into(),
        why,
    }
}

pub fn read_join(p: &Plugin, v: &Value) -> std::result::Result<Joined, PluginError> {
    let bad = |why: String| garbage(p, "NetworkDriver.Join", why);
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let src = s(&v["InterfaceName"]["SrcName"]);
    if src.is_empty() || IfName::new(src.clone()).is_err() {
        return Err(bad(format!(
            "InterfaceName.SrcName {src:?} is not a link name"
        )));
    }
    let prefix = match s(&v["InterfaceName"]["DstPrefix"]) {
        p if p.is_empty() => "eth".to_string(),
        p => p,
    };
    let gateway = match s(&v["Gateway"]) {
        g if g.is_empty() => None,
        g => Some(
            g.parse()
                .map_err(|_| bad(format!("Gateway {g:?} is not an IPv4 address")))?,
        ),
    };
    let mut routes = vec![];
    for r in v["StaticRoutes"].as_array().into_iter().flatten() {
        let dest = s(&r["Destination"]);
        let destination: Ipv4Net = match dest.parse() {
            Ok(d) => d,
            Err(_) if dest.contains(':') => continue, // IPv6: ferry is IPv4 only
            Err(_) => return Err(bad(format!("StaticRoutes: {dest:?} is not a CIDR"))),
        };
        let next_hop = match (r["RouteType"].as_u64().unwrap_or(0), s(&r["NextHop"])) {
            (1, _) => None,
            (_, nh) => Some(
                nh.parse()
                    .map_err(|_| bad(format!("StaticRoutes: NextHop {nh:?}")))?,
            ),
        };
        routes.push(StaticRoute {
            destination,
            next_hop,
        });
    }
    let default_route = routes.iter().any(|r| r.destination.prefix_len() == 0);
    let way_out = match (gateway, default_route, v["DisableGatewayService"].as_bool()) {
        (Some(_), _, _) => WayOut::Gateway,
        (None, true, _) => WayOut::Routes,
        (None, false, Some(true)) => WayOut::Waived,
        (None, false, _) => WayOut::Lacks,
    };
    Ok(Joined {
        src,
        prefix,
        gateway,
        routes,
        way_out,
    })
}

/// `eth3` with prefix `foo` is `foo3`: ferry numbers interfaces per sandbox.
pub fn dst_name(prefix: &str, ifname: &str) -> String {
    let index = ifname.trim_start_matches(|c: char| !c.is_ascii_digit());
    format!("{prefix}{index}")
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let b: Vec<u8> = s
        .split(':')
        .map(|x| u8::from_str_radix(x, 16))
        .collect::<std::result::Result<_, _>>()
        .ok()?;
    b.try_into().ok()
}

/// The MAC a `CreateEndpoint` answer supplies, if any. A plugin may fill in only what
/// ferry left empty: an address other than the one sent is refused (dockerd: "driver
/// modified interface", `P:f19`).
pub fn read_created(
    p: &Plugin,
    v: &Value,
    sent: ipnet::IpNet,
) -> std::result::Result<Option<[u8; 6]>, PluginError> {
    let call = "NetworkDriver.CreateEndpoint";
    let iface = &v["Interface"];
    let addr = iface["Address"].as_str().unwrap_or_default();
    if !addr.is_empty() && addr != sent.to_string() {
        let why = format!("it changed the address ferry set ({sent} to {addr})");
        return Err(garbage(p, call, why));
    }
    match iface["MacAddress"].as_str().unwrap_or_default() {
        "" => Ok(None),
        m => parse_mac(m)
            .map(Some)
            .ok_or_else(|| garbage(p, call, format!("MacAddress {m:?} is not a MAC address"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sandbox_name_keeps_ferrys_index_under_the_plugins_prefix() {
        assert_eq!(dst_name("eth", "eth0"), "eth0");
        assert_eq!(dst_name("foo", "eth12"), "foo12");
        assert_eq!(parse_mac("02:42:0a:00:01:02"), Some([2, 0x42, 10, 0, 1, 2]));
        assert_eq!(parse_mac("02:42"), None);
    }
}
