//! A sandbox's way out when none of its networks gives one: dockerd's `docker_gwbridge`.
//!
//! Design note. A network plugin's `Join` may name no `Gateway`. dockerd then gives the
//! container a second endpoint on a bridge network of its own, `docker_gwbridge` (made
//! on first need, ICC off, masquerade on), which carries its default route; the plugin's
//! endpoint is then not the gateway endpoint, so the plugin hears no
//! `ProgramExternalConnectivity` (fixtures `P:p27`, `P:p28`). libnetwork's rule
//! (`sandbox.needDefaultGW`): skip the gateway-bridge endpoint itself, those on host and
//! null networks, on internal networks and those whose `Join` said
//! `DisableGatewayService`; if any endpoint left has a gateway or a static default
//! route, nothing is needed; otherwise it is needed if any endpoint was left at all.
//! This module decides that, as a value, over the state, where each live endpoint's
//! [`WayOut`] says what it gives (a plugin's: what its `Join` answered); ferryd connects
//! or disconnects the endpoint with the ordinary plans, marked
//! [`Membership::GatewayService`], publishing there the ports the plugin's networks were
//! asked for. A user may make `docker_gwbridge` beforehand (its subnet, its options), as
//! with dockerd; ferry then uses it as it is.

use std::collections::BTreeMap;

use crate::docker::network::NetworkCreateRequest;
use crate::model::{Membership, WayOut};
use crate::ports::PortMapping;
use crate::state::State;
use crate::validate::{OPT_BRIDGE_NAME, OPT_ICC, OPT_MASQ};

/// The network dockerd gives sandboxes their way out on, by name.
pub const GATEWAY_BRIDGE: &str = "docker_gwbridge";

/// What the sandbox's gateway-bridge endpoint should become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayServiceStep {
    /// As it is.
    Keep,
    /// Needed and missing: connect the sandbox to the gateway bridge, publishing there
    /// the ports asked for on the networks that left it without a way out (dockerd
    /// gives its `docker_gwbridge` endpoint the container's port map).
    Add(Vec<PortMapping>),
    /// There and no longer needed: disconnect it from this network (by ID).
    Remove(String),
}

/// Decide the gateway-bridge endpoint of running sandbox `sb_id`.
pub fn plan_gateway_service(st: &State, sb_id: &str) -> GatewayServiceStep {
    let Some(sb) = st.sandboxes.get(sb_id).filter(|s| s.is_running()) else {
        return GatewayServiceStep::Keep;
    };
    let held = sb
        .endpoints
        .iter()
        .find(|e| e.membership == Membership::GatewayService)
        .map(|e| e.network_id.clone());
    let mut needed = false;
    let mut ports = vec![];
    for e in sb
        .endpoints
        .iter()
        .filter(|e| e.membership == Membership::Asked)
    {
        let (Some(net), Some(live)) = (st.networks.get(&e.network_id), e.live.as_ref()) else {
            continue;
        };
        // A user's own endpoint on docker_gwbridge counts as any other (libnetwork
        // skips only its `gateway_` endpoints there).
        if net.internal || !net.driver().has_endpoints() {
            continue;
        }
        match live.way_out {
            WayOut::Gateway | WayOut::Routes => {
                needed = false;
                break;
            }
            WayOut::Lacks => {
                needed = true;
                ports.extend(e.ports.iter().cloned());
            }
            WayOut::Waived => {}
        }
    }
    match (needed, held) {
        (true, None) => GatewayServiceStep::Add(ports),
        (false, Some(net_id)) => GatewayServiceStep::Remove(net_id),
        _ => GatewayServiceStep::Keep,
    }
}

/// The gateway bridge as dockerd makes it: a bridge named `docker_gwbridge`, ICC off,
/// masquerade on, a subnet from the local pools.
pub fn gateway_bridge_request() -> NetworkCreateRequest {
    let options: BTreeMap<String, String> = [
        (OPT_BRIDGE_NAME, GATEWAY_BRIDGE),
        (OPT_ICC, "false"),
        (OPT_MASQ, "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    NetworkCreateRequest {
        name: GATEWAY_BRIDGE.into(),
        driver: Some("bridge".into()),
        options: Some(options),
        ..Default::default()
    }
}

/// The name `network inspect` shows for a sandbox's gateway-bridge endpoint, as dockerd
/// names it: `gateway_` and the first 12 characters of the sandbox's ID.
pub fn gateway_endpoint_name(sb_id: &str) -> String {
    format!("gateway_{}", &sb_id[..12.min(sb_id.len())])
}
