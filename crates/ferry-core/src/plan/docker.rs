//! The Docker plugin's network removal as a plan: dockerd removes a network it made
//! through ferry's plugin, with whatever endpoints it forgot on it (a DeleteEndpoint that
//! failed); the IPAM pool Docker has not released yet keeps its addresses.

use ipnet::IpNet;

use super::network::bridge_spec;
use crate::model::Network;
use crate::state::{Key, State};
use crate::CoreError;

/// A DeleteNetwork, decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteNetworkPlan {
    pub keys: Vec<Key>,
    /// The network's record, as it was.
    pub removed: Network,
    /// The links of the endpoints Docker forgot on it, to delete.
    pub links: Vec<String>,
    /// ferry made the bridge (else it is the user's, handed back without ferry's address).
    pub owns_bridge: bool,
    /// The gateway address ferry put on the bridge.
    pub gateway: Option<IpNet>,
}

/// The endpoints Docker forgot on network `id`.
fn forgotten(st: &State, id: &str) -> Vec<String> {
    st.plugin
        .endpoints
        .values()
        .filter(|e| e.endpoint.network_id == id)
        .map(|e| e.id.clone())
        .collect()
}

/// The records a DeleteNetwork of `id` edits: the network, Docker's record of it, the
/// forgotten endpoints, the IPAM pool it was bound to.
pub fn delete_network_keys(st: &State, id: &str) -> Vec<Key> {
    let mut keys = vec![Key::Net(id.to_string()), Key::PluginNet(id.to_string())];
    keys.extend(forgotten(st, id).into_iter().map(Key::PluginEp));
    keys.extend(
        st.plugin
            .networks
            .get(id)
            .and_then(|n| n.pool_id.clone())
            .map(Key::PluginPool),
    );
    keys
}

/// Plan Docker's DeleteNetwork of `id`: refused for a network ferry made itself or one
/// a sandbox still uses; else the network, its forgotten endpoints and Docker's record
/// go, and its pool goes back to the IPAM record (or away, if Docker released it).
pub fn plan_delete_network(st: &mut State, id: &str) -> Result<DeleteNetworkPlan, CoreError> {
    let net = st
        .networks
        .get(id)
        .ok_or_else(|| CoreError::NoSuchNetwork(id.to_string()))?;
    if !st.docker_managed(id) {
        return Err(CoreError::Invalid(format!(
            "network {} was not made through the Docker plugin",
            net.name
        )));
    }
    if !st.users_of(id).is_empty() {
        return Err(CoreError::NetworkInUse {
            name: net.name.clone(),
            id: id.to_string(),
        });
    }
    let keys = delete_network_keys(st, id);
    let mut links = vec![];
    for ep in forgotten(st, id) {
        if let Some(e) = st.plugin.endpoints.remove(&ep) {
            links.extend(e.links());
        }
    }
    let mut removed = st
        .networks
        .remove(id)
        .ok_or_else(|| CoreError::NoSuchNetwork(id.to_string()))?;
    // Before the pool may go back to Docker's IPAM record, below.
    let gateway = bridge_spec(&removed).and_then(|s| s.gateway);
    let dn = st
        .plugin
        .networks
        .remove(id)
        .ok_or_else(|| CoreError::NoSuchNetwork(id.to_string()))?;
    if let Some(pid) = &dn.pool_id {
        match st.plugin.pools.get_mut(pid) {
            Some(rec) if rec.released => drop(st.plugin.pools.remove(pid)),
            Some(rec) => {
                // Docker has not released the pool yet: it keeps its addresses.
                rec.network_id = None;
                rec.pool = removed.pool.take();
            }
            None => {}
        }
    }
    Ok(DeleteNetworkPlan {
        keys,
        removed,
        links,
        owns_bridge: dn.owns_bridge,
        gateway,
    })
}

/// The endpoints Docker forgot on the overlay its network `docker_id` maps onto.
fn forgotten_on_overlay(st: &State, docker_id: &str) -> Vec<String> {
    st.plugin
        .endpoints
        .values()
        .filter(|e| e.docker_network.as_deref() == Some(docker_id))
        .map(|e| e.id.clone())
        .collect()
}

/// The records a DeleteNetwork of a network with no ferry network of its ID edits:
/// Docker's record, and for an overlay's mapping the endpoints Docker forgot on the
/// overlay and the overlay's copy (their addresses).
pub fn forget_network_keys(st: &State, docker_id: &str) -> Vec<Key> {
    let mut keys = vec![Key::PluginNet(docker_id.to_string())];
    let forgotten = forgotten_on_overlay(st, docker_id);
    if let Some(ov) = st
        .plugin
        .networks
        .get(docker_id)
        .and_then(|n| n.overlay.clone())
        .filter(|_| !forgotten.is_empty())
    {
        keys.push(Key::Net(ov));
    }
    keys.extend(forgotten.into_iter().map(Key::PluginEp));
    keys
}

/// Plan a DeleteNetwork of Docker's network `docker_id` that has no ferry network of its
/// own (gone already, or a `ferry.overlay` mapping): Docker's record goes, and with a
/// mapping the endpoints Docker forgot on the overlay, their addresses freed; the
/// overlay itself stays (other hosts' dockerds use it). Returns the links to delete.
pub fn plan_forget_network(st: &mut State, docker_id: &str) -> Vec<String> {
    let overlay = st.plugin.networks.remove(docker_id).and_then(|n| n.overlay);
    let mut links = vec![];
    for ep in forgotten_on_overlay(st, docker_id) {
        let Some(e) = st.plugin.endpoints.remove(&ep) else {
            continue;
        };
        links.extend(e.links());
        let pool = overlay
            .as_ref()
            .and_then(|ov| st.networks.get_mut(ov))
            .and_then(|n| n.pool.as_mut());
        if let (Some(pool), Some(live)) = (pool, e.endpoint.live.as_ref()) {
            if pool.owner(live.ip) == Some(e.id.as_str()) {
                pool.release(live.ip);
            }
        }
    }
    links
}
