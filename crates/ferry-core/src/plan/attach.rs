//! Planning an endpoint's live part as a change of the state: its address, MAC,
//! interface name, published ports and default route when a sandbox joins a network
//! (attach), and what the kernel must remove when it leaves (detach). Pure: each function
//! edits the [`State`] value it is given and returns what the kernel is to do.

use std::net::IpAddr;

use ipnet::IpNet;

use super::driver::Publishing;
use super::publish::{check_publishable, taken_ports};
use crate::model::{host_if_name, mac_for, LiveEndpoint, NetworkKind, WayOut};
use crate::ports::{decide, Published};
use crate::state::State;
use crate::wiring::AttachSpec;
use crate::CoreError;

/// Where a sandbox's endpoint goes live: the sandbox's namespace, and the ID the new live
/// endpoint takes (the caller makes it: 64 hex characters, as Docker's).
#[derive(Debug, Clone)]
pub struct Live {
    pub netns: std::path::PathBuf,
    pub endpoint_id: String,
}

/// Give `sb_id`'s endpoint on `net_id` an address and a live record; returns the
/// kernel request. Changes only `st`.
pub fn plan_attach(
    st: &mut State,
    sb_id: &str,
    net_id: &str,
    at: Live,
) -> Result<AttachSpec, CoreError> {
    let Live { netns, endpoint_id } = at;
    let takes_default = takes_default_route(st, sb_id, net_id);
    let ifname = st.sandboxes[sb_id].next_ifname();
    let published = plan_ports(st, sb_id, net_id)?;
    let net = st
        .networks
        .get_mut(net_id)
        .ok_or_else(|| CoreError::NoSuchNetwork(net_id.into()))?;
    let net_name = net.name.clone();
    let kind = net.kind.clone();
    let overlay = net.overlay().is_some();
    let ipam_plugin = net.ipam_plugin.as_ref().map(|i| i.driver.clone());
    let pool = net
        .pool
        .as_mut()
        .ok_or_else(|| CoreError::Invalid(format!("network {net_name} has no subnet")))?;
    if overlay && pool.range.is_none() {
        return Err(CoreError::Invalid(format!(
            "overlay {net_name}: this host holds no address block in it yet"
        )));
    }
    let static_ip = st.sandboxes[sb_id]
        .endpoint(net_id)
        .map(|e| e.static_ip)
        .ok_or_else(|| CoreError::NotConnected {
            sandbox: sb_id.into(),
            network: net_name.clone(),
        })?;
    let ip = match static_ip {
        Some(ip) => {
            pool.allocate_static(ip, sb_id)?;
            ip
        }
        // plughost: an IPAM plugin's address was leased and held before the plan.
        None => match ipam_plugin {
            Some(driver) => pool.held_by(sb_id).ok_or_else(|| {
                CoreError::Invalid(format!("IPAM plugin {driver} gave no address for {sb_id}"))
            })?,
            None => pool.allocate_dynamic(sb_id, &net_name)?,
        },
    };
    let (gateway, prefix_len) = (pool.gateway, pool.subnet.prefix_len());
    let default_route = takes_default;
    let live = LiveEndpoint {
        id: endpoint_id.clone(),
        ip,
        prefix_len,
        gateway: Some(gateway),
        mac: mac_for(ip),
        host_if: kind
            .network_driver()
            .host_end()
            .then(|| host_if_name(&endpoint_id)),
        ifname: ifname.clone(),
        default_route,
        published,
        way_out: WayOut::Gateway,
    };
    let spec = attach_spec(&live, &kind, netns).ok_or_else(|| {
        CoreError::Invalid(format!("network {net_name}: sandboxes do not join it"))
    })?;
    let sb = st.sandboxes.get_mut(sb_id).expect("checked above");
    if default_route {
        // The endpoint that held the role gives it up: the kernel's default route is
        // replaced by this endpoint's.
        for l in sb.endpoints.iter_mut().filter_map(|e| e.live.as_mut()) {
            l.default_route = false;
        }
    }
    if let Some(e) = sb.endpoints.iter_mut().find(|e| e.network_id == net_id) {
        e.live = Some(live);
    }
    Ok(spec)
}

/// Whether the endpoint on `net_id` takes the sandbox's default route, as dockerd 20.10
/// decides it (libnetwork's endpoint order): never on an internal network; otherwise
/// when the sandbox has none yet, or holds it through a network whose name sorts after
/// this one's. So a sandbox on `web` that is connected to `db` moves its default route to
/// `db`, as a container would.
fn takes_default_route(st: &State, sb_id: &str, net_id: &str) -> bool {
    let Some(net) = st.networks.get(net_id).filter(|n| !n.internal) else {
        return false;
    };
    match default_route_network(st, sb_id).and_then(|id| st.networks.get(&id)) {
        None => true,
        Some(holder) => net.name < holder.name,
    }
}

/// The network whose endpoint holds the sandbox's default route.
pub fn default_route_network(st: &State, sb_id: &str) -> Option<String> {
    st.sandboxes
        .get(sb_id)?
        .endpoints
        .iter()
        .find(|e| e.live.as_ref().is_some_and(|l| l.default_route))
        .map(|e| e.network_id.clone())
}

/// What the kernel is asked to make for a live endpoint on a network of `kind`: at
/// attach, and again when reconcile finds the endpoint not wired. Its link is the
/// driver's ([`super::driver::NetworkDriver::link`]); host and none networks have no
/// endpoints to wire.
pub fn attach_spec(
    live: &LiveEndpoint,
    kind: &NetworkKind,
    netns: std::path::PathBuf,
) -> Option<AttachSpec> {
    let link = kind.network_driver().link(live)?;
    Some(AttachSpec {
        netns,
        ifname: live.ifname.to_string(),
        mac: live.mac,
        addr: IpNet::new(live.ip, live.prefix_len).expect("prefix from a subnet"),
        default_via: live.default_route.then_some(live.gateway).flatten(),
        link,
    })
}

/// Decide the host ports of the endpoint's published ports against every other live
/// endpoint's (whether a host process holds one is the caller's check:
/// ferryd's, before the commit).
pub fn plan_ports(st: &State, sb_id: &str, net_id: &str) -> Result<Vec<Published>, CoreError> {
    let ports = st.sandboxes[sb_id]
        .endpoint(net_id)
        .map(|e| e.ports.as_slice())
        .unwrap_or_default();
    if ports.is_empty() {
        return Ok(vec![]);
    }
    let net = st
        .networks
        .get(net_id)
        .ok_or_else(|| CoreError::NoSuchNetwork(net_id.into()))?;
    check_publishable(net, true)?;
    if net.kind.network_driver().publishing(&net.name) != Publishing::Here {
        return Ok(vec![]);
    }
    decide(ports, &taken_ports(st, sb_id, net_id))
}

/// The decided ports of a sandbox's live endpoints.
pub fn published_of(st: &State, sb_id: &str) -> Vec<Published> {
    st.sandboxes
        .get(sb_id)
        .map(crate::docker::container::published_ports)
        .unwrap_or_default()
}

/// What a live endpoint taken down in the state leaves for the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detached {
    /// Its veth's host end, to delete (deleting it takes the sandbox's end too).
    pub host_if: Option<String>,
    /// Its interface in the sandbox: to delete there when there is no host end.
    pub ifname: String,
    /// It carried the sandbox's default route.
    pub default_route: bool,
}

/// Take down the live part of an endpoint in `st`: free its address (a static one
/// stays reserved if `keep_static`). Returns what the kernel must remove.
pub fn plan_detach(
    st: &mut State,
    sb_id: &str,
    net_id: &str,
    keep_static: bool,
) -> Option<Detached> {
    let sb = st.sandboxes.get_mut(sb_id)?;
    let ep = sb.endpoints.iter_mut().find(|e| e.network_id == net_id)?;
    let static_ip = ep.static_ip;
    let live = ep.live.take();
    if let Some(pool) = st.networks.get_mut(net_id).and_then(|n| n.pool.as_mut()) {
        let release = |pool: &mut crate::ipam::AddressPool, ip: IpAddr| {
            if pool.owner(ip) == Some(sb_id) {
                pool.release(ip);
            }
        };
        if let Some(l) = &live {
            if !(keep_static && static_ip == Some(l.ip)) {
                release(pool, l.ip);
            }
        }
        if let (Some(ip), false) = (static_ip, keep_static) {
            release(pool, ip);
        }
    }
    live.map(|l| Detached {
        host_if: l.host_if.map(|h| h.to_string()),
        ifname: l.ifname.to_string(),
        default_route: l.default_route,
    })
}

/// The IPAM cursor of `net_id`'s pool, for an undo to put back ([`unplan_attach`]).
pub fn cursor_of(st: &State, net_id: &str) -> Option<IpAddr> {
    st.networks
        .get(net_id)
        .and_then(|n| n.pool.as_ref())
        .and_then(|p| p.cursor)
}

/// Undo [`plan_attach`] after the state lock was let go: [`plan_detach`], and the pool's
/// cursor back to `cursor_before` if it still points at the address the undone attach
/// took (no allocation has moved it since), so the next sandbox gets that address as if
/// the undone operation had not happened.
pub fn unplan_attach(
    st: &mut State,
    sb_id: &str,
    net_id: &str,
    keep_static: bool,
    cursor_before: Option<IpAddr>,
) {
    let took = st
        .sandboxes
        .get(sb_id)
        .and_then(|sb| sb.endpoint(net_id))
        .and_then(|e| e.live.as_ref())
        .map(|l| l.ip);
    plan_detach(st, sb_id, net_id, keep_static);
    if let Some(pool) = st.networks.get_mut(net_id).and_then(|n| n.pool.as_mut()) {
        if took.is_some() && pool.cursor == took {
            pool.cursor = cursor_before;
        }
    }
}

/// After the default-route endpoint went away, give the role to the remaining live
/// endpoint dockerd would pick: on a non-internal network and with a gateway, the one
/// whose network's name sorts first. Returns its gateway.
pub fn move_default_route(st: &mut State, sb_id: &str) -> Option<IpAddr> {
    if default_route_network(st, sb_id).is_some() {
        return None;
    }
    let names: std::collections::BTreeMap<String, String> = st
        .networks
        .values()
        .filter(|n| !n.internal)
        .map(|n| (n.id.clone(), n.name.clone()))
        .collect();
    let sb = st.sandboxes.get_mut(sb_id)?;
    // An endpoint without a gateway (a plugin's whose Join named none) cannot hold it.
    let ep = sb
        .endpoints
        .iter_mut()
        .filter(|e| e.live.as_ref().is_some_and(|l| l.way_out.is_gateway()))
        .filter_map(|e| Some((names.get(&e.network_id)?.clone(), e)))
        .min_by(|(a, _), (b, _)| a.cmp(b))
        .map(|(_, e)| e)?;
    let live = ep.live.as_mut()?;
    live.default_route = true;
    live.gateway
}

/// The host link of the sandbox's endpoint holding the default route.
pub fn default_route_if(st: &State, sb_id: &str) -> Option<String> {
    st.sandboxes
        .get(sb_id)?
        .endpoints
        .iter()
        .filter_map(|e| e.live.as_ref())
        .find(|l| l.default_route)
        .and_then(|l| l.host_if.as_ref().map(|h| h.to_string()))
}
