//! The Docker plugin's operations: what dockerd's NetworkDriver and IpamDriver calls
//! do to ferry's state and kernel.
//!
//! Mechanism. A Docker network is a ferry network with Docker's ID (bridge, subnet,
//! address pool), plus a `DockerNetwork` record saying Docker owns it. A Docker
//! endpoint is a `DockerEndpoint` holding a model `Endpoint`. Each call follows the
//! core's rule: validate, change a copy of the state, commit the changed keys in one
//! store transaction, then program the kernel; if the kernel refuses, state and store
//! go back. The kernel work is small: CreateNetwork makes (or adopts) the bridge, Join
//! makes a veth pair in ferryd's namespace (dockerd moves one end into the container and
//! configures it), DeleteEndpoint and DeleteNetwork delete what those made.
//!
//! Docker's orders. Docker releases IPAM before it deletes a network, rolls back its own
//! failures with DeleteEndpoint / ReleaseAddress / ReleasePool, ignores teardown errors
//! and may repeat calls. So every teardown call on something already gone succeeds,
//! every setup call repeated with the same arguments answers the same, and addresses
//! carry an owner (see ferry_core::remote) so a late release frees nothing reused.

mod endpoint;
mod ipam;
mod lifecycle;
mod network;
mod overlay;

use ferry_core::ipam::AddressPool;
use ferry_core::model::Network;
use ferry_core::CoreError;
use ipnet::IpNet;

use crate::state::{Key, State};

fn no_ipv6() -> CoreError {
    CoreError::Invalid("ferry does not support IPv6 yet: create the network without --ipv6".into())
}

fn no_pool(id: &str) -> CoreError {
    CoreError::Invalid(format!("IPAM pool {id} not found"))
}

fn no_endpoint(id: &str) -> CoreError {
    CoreError::Invalid(format!("endpoint {id} not found"))
}

/// Docker's endpoint `id`, or the error that names it.
fn docker_ep<'a>(
    st: &'a crate::state::Desired,
    id: &str,
) -> Result<&'a ferry_core::remote::DockerEndpoint, CoreError> {
    st.plugin.endpoints.get(id).ok_or_else(|| no_endpoint(id))
}

/// Docker's endpoint `id`, to change, or the error that names it.
fn docker_ep_mut<'a>(
    st: &'a mut crate::state::Desired,
    id: &str,
) -> Result<&'a mut ferry_core::remote::DockerEndpoint, CoreError> {
    st.plugin
        .endpoints
        .get_mut(id)
        .ok_or_else(|| no_endpoint(id))
}

/// The addresses of an IPAM pool: its own while unbound, else its network's.
fn pool_mut<'a>(st: &'a mut crate::state::Desired, pool_id: &str) -> Option<&'a mut AddressPool> {
    let rec = st.plugin.pools.get_mut(pool_id)?;
    match rec.network_id.clone() {
        Some(nid) => st.networks.get_mut(&nid)?.pool.as_mut(),
        None => rec.pool.as_mut(),
    }
}

/// The key that holds a pool's addresses.
fn pool_key(st: &State, pool_id: &str) -> Key {
    match st
        .plugin
        .pools
        .get(pool_id)
        .and_then(|r| r.network_id.clone())
    {
        Some(nid) => Key::Net(nid),
        None => Key::PluginPool(pool_id.to_string()),
    }
}

/// Subnets in use: every network's and every unbound pool's.
fn taken_subnets(st: &crate::state::Desired) -> Vec<IpNet> {
    st.networks
        .values()
        .filter_map(Network::subnet)
        .chain(
            st.plugin
                .pools
                .values()
                .filter_map(|p| p.pool.as_ref().map(|a| a.subnet)),
        )
        .collect()
}

fn with_len(ip: std::net::IpAddr, pool: &AddressPool) -> String {
    format!("{ip}/{}", pool.subnet.prefix_len())
}
