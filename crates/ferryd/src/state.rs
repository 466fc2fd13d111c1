//! The in-memory copy of the desired state, loaded from the store at start and written
//! back key by key: `net/<id>`, `sbx/<id>`, `meta/pool-cursor`.

use std::collections::BTreeMap;

use ferry_core::id::{resolve, Lookup};
use ferry_core::model::{Network, Sandbox};
use ferry_core::remote::{DockerEndpoint, DockerNetwork, IpamPool};
use ferry_core::CoreError;
use ferry_store::{Op, Store, StoreError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Meta {
    pub pool_cursor: Option<usize>,
}

#[derive(Debug, Clone, Default)]
pub struct State {
    pub networks: BTreeMap<String, Network>,
    pub sandboxes: BTreeMap<String, Sandbox>,
    pub meta: Meta,
    /// What the Docker plugin keeps for dockerd (see ferry_core::remote).
    pub plugin: PluginState,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginState {
    pub pools: BTreeMap<String, IpamPool>,
    pub networks: BTreeMap<String, DockerNetwork>,
    pub endpoints: BTreeMap<String, DockerEndpoint>,
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

fn put_or_delete<T: Serialize>(key: String, v: Option<&T>) -> Op {
    match v {
        Some(v) => Op::Put(key, serde_json::to_vec(v).expect("serializable")),
        None => Op::Delete(key),
    }
}

fn decode<T: for<'a> Deserialize<'a>>(k: &str, v: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(v).map_err(|e| StoreError::Txn(format!("decode {k}: {e}")))
}

impl State {
    pub fn load(store: &dyn Store) -> Result<State, StoreError> {
        let mut st = State::default();
        for (k, v) in store.list("net/")? {
            let n: Network = decode(&k, &v)?;
            st.networks.insert(n.id.clone(), n);
        }
        for (k, v) in store.list("sbx/")? {
            let s: Sandbox = decode(&k, &v)?;
            st.sandboxes.insert(s.id.clone(), s);
        }
        for (k, v) in store.list("plugin/pool/")? {
            let p: IpamPool = decode(&k, &v)?;
            st.plugin.pools.insert(p.id.clone(), p);
        }
        for (k, v) in store.list("plugin/net/")? {
            let n: DockerNetwork = decode(&k, &v)?;
            st.plugin.networks.insert(n.id.clone(), n);
        }
        for (k, v) in store.list("plugin/ep/")? {
            let e: DockerEndpoint = decode(&k, &v)?;
            st.plugin.endpoints.insert(e.id.clone(), e);
        }
        if let Some((k, v)) = store.list("meta/state")?.into_iter().next() {
            st.meta = decode(&k, &v)?;
        }
        Ok(st)
    }

    /// The store batch that makes the store hold this state's value for each key.
    pub fn ops_for(&self, keys: &[Key]) -> Vec<Op> {
        keys.iter()
            .map(|k| match k {
                Key::Net(id) => match self.networks.get(id) {
                    Some(n) => Op::Put(
                        format!("net/{id}"),
                        serde_json::to_vec(n).expect("serializable"),
                    ),
                    None => Op::Delete(format!("net/{id}")),
                },
                Key::Sbx(id) => match self.sandboxes.get(id) {
                    Some(s) => Op::Put(
                        format!("sbx/{id}"),
                        serde_json::to_vec(s).expect("serializable"),
                    ),
                    None => Op::Delete(format!("sbx/{id}")),
                },
                Key::Meta => Op::Put(
                    "meta/state".into(),
                    serde_json::to_vec(&self.meta).expect("serializable"),
                ),
                Key::PluginPool(id) => {
                    put_or_delete(format!("plugin/pool/{id}"), self.plugin.pools.get(id))
                }
                Key::PluginNet(id) => {
                    put_or_delete(format!("plugin/net/{id}"), self.plugin.networks.get(id))
                }
                Key::PluginEp(id) => {
                    put_or_delete(format!("plugin/ep/{id}"), self.plugin.endpoints.get(id))
                }
            })
            .collect()
    }

    pub fn network_id(&self, key: &str) -> Result<String, CoreError> {
        let items = self
            .networks
            .values()
            .map(|n| (n.id.as_str(), n.name.as_str(), n.id.clone()));
        match resolve(key, items) {
            Lookup::Found(id) => Ok(id),
            Lookup::NotFound => Err(CoreError::NoSuchNetwork(key.to_string())),
            Lookup::Ambiguous => Err(CoreError::AmbiguousNetwork(key.to_string())),
        }
    }

    pub fn sandbox_id(&self, key: &str) -> Result<String, CoreError> {
        let key = key.trim_start_matches('/');
        let items = self
            .sandboxes
            .values()
            .map(|s| (s.id.as_str(), s.name.as_str(), s.id.clone()));
        match resolve(key, items) {
            Lookup::Found(id) => Ok(id),
            Lookup::NotFound | Lookup::Ambiguous => {
                Err(CoreError::NoSuchContainer(key.to_string()))
            }
        }
    }

    /// A network Docker made through the plugin: Docker removes it, not ferry.
    pub fn docker_managed(&self, network_id: &str) -> bool {
        self.plugin.networks.contains_key(network_id)
    }

    /// ferry's sandboxes stay off Docker's networks: Docker owns their addresses (with its
    /// own IPAM ferry cannot reserve for it) and their lifetime (Docker's network rm
    /// cannot be refused, so a ferry sandbox on it would keep the network forever).
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

    /// The networks of a sandbox, in endpoint order; host/none modes show their network.
    pub fn networks_of(&self, sb: &Sandbox) -> Vec<&Network> {
        let mut v: Vec<&Network> = sb
            .endpoints
            .iter()
            .filter_map(|e| self.networks.get(&e.network_id))
            .collect();
        if v.is_empty() {
            if let Some(n) = self
                .networks
                .values()
                .find(|n| n.predefined && n.name == sb.network_mode)
            {
                v.push(n);
            }
        }
        v
    }
}
