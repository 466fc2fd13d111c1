//! The desired state: every network, sandbox and Docker-plugin record ferryd keeps,
//! as one value the planners read and edit. ferryd holds it in memory behind its lock,
//! loads it from the store at start and writes it back key by key ([`Key`]); the store's
//! codec and what ferryd derives from the cluster stay in ferryd. Pure: no I/O here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::id::{resolve, Lookup};
use crate::model::{Network, Sandbox};
use crate::remote::{DockerEndpoint, DockerNetwork, IpamPool};
use crate::CoreError;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Meta {
    pub pool_cursor: Option<usize>,
}

/// The desired state, as the store holds it.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub networks: BTreeMap<String, Network>,
    pub sandboxes: BTreeMap<String, Sandbox>,
    pub meta: Meta,
    /// What the Docker plugin keeps for dockerd (see crate::remote).
    pub plugin: PluginState,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginState {
    pub pools: BTreeMap<String, IpamPool>,
    pub networks: BTreeMap<String, DockerNetwork>,
    pub endpoints: BTreeMap<String, DockerEndpoint>,
}

/// The values of some keys as they were, to put back if an operation fails: an undo
/// of just what the operation may change, so its cost does not grow with the number of
/// sandboxes (a copy of the whole state did, and dominated attach time at 1000).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    saved: Vec<Saved>,
}

#[derive(Debug, Clone)]
enum Saved {
    Net(String, Option<Network>),
    Sbx(String, Option<Sandbox>),
    Meta(Meta),
    PluginPool(String, Option<IpamPool>),
    PluginNet(String, Option<DockerNetwork>),
    PluginEp(String, Option<DockerEndpoint>),
}

fn put_back<V>(map: &mut BTreeMap<String, V>, id: String, v: Option<V>) {
    match v {
        Some(v) => map.insert(id, v),
        None => map.remove(&id),
    };
}

/// A key whose value changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Net(String),
    Sbx(String),
    Meta,
    /// `plugin/pool/<id>`, `plugin/net/<id>`, `plugin/ep/<id>`.
    PluginPool(String),
    PluginNet(String),
    PluginEp(String),
}

impl Snapshot {
    /// Whether the sandbox `id` ran when the snapshot was taken (false if the snapshot
    /// does not hold it).
    pub fn was_running(&self, id: &str) -> bool {
        self.saved
            .iter()
            .any(|s| matches!(s, Saved::Sbx(sid, Some(sb)) if sid == id && sb.is_running()))
    }
}

impl State {
    /// The current values of `keys`; [`State::restore`] puts them back.
    pub fn snapshot(&self, keys: &[Key]) -> Snapshot {
        let saved = keys
            .iter()
            .map(|k| match k {
                Key::Net(id) => Saved::Net(id.clone(), self.networks.get(id).cloned()),
                Key::Sbx(id) => Saved::Sbx(id.clone(), self.sandboxes.get(id).cloned()),
                Key::Meta => Saved::Meta(self.meta.clone()),
                Key::PluginPool(id) => {
                    Saved::PluginPool(id.clone(), self.plugin.pools.get(id).cloned())
                }
                Key::PluginNet(id) => {
                    Saved::PluginNet(id.clone(), self.plugin.networks.get(id).cloned())
                }
                Key::PluginEp(id) => {
                    Saved::PluginEp(id.clone(), self.plugin.endpoints.get(id).cloned())
                }
            })
            .collect();
        Snapshot { saved }
    }

    /// Put back what [`State::snapshot`] saved (in reverse, so a key saved twice ends
    /// at its first value).
    pub fn restore(&mut self, snap: Snapshot) {
        for s in snap.saved.into_iter().rev() {
            match s {
                Saved::Net(id, v) => put_back(&mut self.networks, id, v),
                Saved::Sbx(id, v) => put_back(&mut self.sandboxes, id, v),
                Saved::Meta(m) => self.meta = m,
                Saved::PluginPool(id, v) => put_back(&mut self.plugin.pools, id, v),
                Saved::PluginNet(id, v) => put_back(&mut self.plugin.networks, id, v),
                Saved::PluginEp(id, v) => put_back(&mut self.plugin.endpoints, id, v),
            }
        }
    }

    pub fn network_id(&self, key: &str) -> Result<String, CoreError> {
        if self.networks.contains_key(key) {
            return Ok(key.to_string());
        }
        let items = self
            .networks
            .values()
            .map(|n| (n.id.as_str(), n.name.as_str(), n.id.as_str()));
        match resolve(key, items) {
            Lookup::Found(id) => Ok(id.to_string()),
            Lookup::NotFound => Err(CoreError::NoSuchNetwork(key.to_string())),
            Lookup::Ambiguous => Err(CoreError::AmbiguousNetwork(key.to_string())),
        }
    }

    pub fn sandbox_id(&self, key: &str) -> Result<String, CoreError> {
        let key = key.trim_start_matches('/');
        if self.sandboxes.contains_key(key) {
            return Ok(key.to_string());
        }
        // Borrowed IDs: cloning every one per lookup was measurable with 1000 sandboxes.
        let items = self
            .sandboxes
            .values()
            .map(|s| (s.id.as_str(), s.name.as_str(), s.id.as_str()));
        match resolve(key, items) {
            Lookup::Found(id) => Ok(id.to_string()),
            Lookup::NotFound | Lookup::Ambiguous => {
                Err(CoreError::NoSuchContainer(key.to_string()))
            }
        }
    }

    /// A network Docker made through the plugin: Docker removes it, not ferry.
    pub fn docker_managed(&self, network_id: &str) -> bool {
        self.plugin.networks.contains_key(network_id)
    }

    /// The ferry network behind Docker's network ID: the overlay a `ferry.overlay`
    /// network maps onto, else the network of that ID.
    pub fn ferry_net_of(&self, docker_id: &str) -> String {
        self.plugin
            .networks
            .get(docker_id)
            .and_then(|n| n.overlay.clone())
            .unwrap_or_else(|| docker_id.to_string())
    }

    /// Docker's endpoints on network `id` (a Docker network's own, or an overlay's).
    pub fn docker_endpoints_on(&self, id: &str) -> usize {
        self.plugin
            .endpoints
            .values()
            .filter(|e| e.endpoint.network_id == id)
            .count()
    }

    /// ferry's sandboxes stay off Docker's networks: Docker owns their addresses (with its
    /// own IPAM ferry cannot reserve for it) and their lifetime (Docker's network rm
    /// cannot be refused, so a ferry sandbox on it would keep the network forever).
    /// A sandbox's name from a name, ID or ID prefix; the reference itself if none matches.
    pub fn sandbox_name(&self, key: &str) -> String {
        self.sandbox_id(key)
            .ok()
            .and_then(|id| self.sandboxes.get(&id))
            .map_or_else(|| key.to_string(), |s| s.name.clone())
    }

    pub fn ferry_may_join(&self, network_id: &str) -> Result<(), CoreError> {
        match (
            self.docker_managed(network_id),
            self.networks.get(network_id),
        ) {
            (true, Some(n)) => Err(CoreError::Invalid(format!(
                "network {} belongs to Docker: only Docker containers can join it",
                n.name
            ))),
            _ => Ok(()),
        }
    }

    /// Sandboxes that reference a network (in any run state).
    pub fn users_of(&self, network_id: &str) -> Vec<&Sandbox> {
        self.sandboxes
            .values()
            .filter(|s| s.endpoint(network_id).is_some())
            .collect()
    }

    /// The networks a sandbox's container shows, in endpoint order (not the way out ferry
    /// added, as dockerd does not show it); host/none modes show their network.
    pub fn networks_of(&self, sb: &Sandbox) -> Vec<&Network> {
        let mut v: Vec<&Network> = sb
            .endpoints
            .iter()
            .filter(|e| e.membership.is_asked())
            .filter_map(|e| self.networks.get(&e.network_id))
            .collect();
        if v.is_empty() {
            if let Some(n) = self
                .networks
                .values()
                .find(|n| n.predefined && n.name == sb.network_mode.as_str())
            {
                v.push(n);
            }
        }
        v
    }
}
