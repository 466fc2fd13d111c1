//! Networks as plans: create (the validated network into the state, and the bridge the
//! kernel makes for it), and remove (dockerd's refusals, then the record out).

use crate::model::Network;
use crate::state::{Key, State};
use crate::wiring::BridgeSpec;
use crate::CoreError;

/// The bridge the kernel makes for a network, with the gateway's address on it; none for
/// a network without a bridge (host, none, macvlan, a plugin's).
pub fn bridge_spec(n: &Network) -> Option<BridgeSpec> {
    n.kind.network_driver().setup(n.pool.as_ref())
}

/// A `network create`, decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatePlan {
    pub keys: Vec<Key>,
    /// The bridge to make (a macvlan network makes nothing of its own on the host).
    pub bridge: Option<BridgeSpec>,
}

/// The records a create of network `id` edits: the network, and the default-pool cursor.
pub fn create_keys(id: &str) -> Vec<Key> {
    vec![Key::Net(id.to_string()), Key::Meta]
}

/// Plan `network create` of a network already validated against `st`
/// (`validate::network_from_request`), with the pool cursor that validation moved.
pub fn plan_create(
    st: &mut State,
    net: Network,
    pool_cursor: Option<usize>,
) -> Result<CreatePlan, CoreError> {
    if st.networks.values().any(|n| n.name == net.name) {
        return Err(CoreError::DuplicateNetwork(net.name));
    }
    let plan = CreatePlan {
        keys: create_keys(&net.id),
        bridge: bridge_spec(&net),
    };
    st.networks.insert(net.id.clone(), net);
    st.meta.pool_cursor = pool_cursor;
    Ok(plan)
}

/// A `network rm`, decided: the record gone from the state, as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovePlan {
    pub keys: Vec<Key>,
    pub removed: Network,
}

/// Plan `network rm` of network `id`: dockerd's refusals (a predefined network, one
/// Docker made through the plugin, one a sandbox still uses), then the record out.
pub fn plan_remove(st: &mut State, id: &str) -> Result<RemovePlan, CoreError> {
    let net = st
        .networks
        .get(id)
        .ok_or_else(|| CoreError::NoSuchNetwork(id.to_string()))?;
    if net.predefined {
        return Err(CoreError::Predefined(net.name.clone()));
    }
    if st.docker_managed(id) {
        return Err(CoreError::Invalid(format!(
            "network {} belongs to Docker: remove it with docker network rm",
            net.name
        )));
    }
    if !st.users_of(id).is_empty() {
        return Err(CoreError::NetworkInUse {
            name: net.name.clone(),
            id: id.to_string(),
        });
    }
    let removed = st
        .networks
        .remove(id)
        .ok_or_else(|| CoreError::NoSuchNetwork(id.into()))?;
    Ok(RemovePlan {
        keys: vec![Key::Net(id.to_string())],
        removed,
    })
}
