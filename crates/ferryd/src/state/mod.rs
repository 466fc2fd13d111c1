//! The in-memory copy of the desired state, loaded from the store at start and written
//! back key by key: `net/<id>`, `sbx/<id>`, `meta/state`, `plugin/…`, and a network's
//! IP allocations as `ipam/<id>/<ip>` (see [`allocs`]).

pub mod allocs;

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
    /// The allocations the store holds, per network.
    stored: allocs::Stored,
    /// This host's overlay tunnels, while it is in a cluster: not stored, it follows the
    /// cluster's view (see crate::overlay).
    pub tunnel: Option<Tunnel>,
}

/// The UDP port this host's tunnels use, and the hosts they may hear from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tunnel {
    pub port: u16,
    pub peers: std::collections::BTreeSet<std::net::Ipv4Addr>,
}

/// A commit's store operations, and the allocations to record once the store took them
/// ([`State::committed`]).
pub struct Batch {
    pub ops: Vec<Op>,
    written: Vec<allocs::Written>,
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
        for (k, v) in store.list(allocs::PREFIX)? {
            let (Some((net, ip)), Ok(owner)) = (allocs::parse_key(&k), decode::<String>(&k, &v))
            else {
                return Err(StoreError::Txn(format!("decode {k}: not an allocation")));
            };
            if let Some(pool) = st.networks.get_mut(net).and_then(|n| n.pool.as_mut()) {
                pool.hold(ip, owner.clone());
            }
            st.stored.loaded(net, ip, owner);
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

    /// The store batch that makes the store hold this state's value for each key.
    pub fn ops_for(&self, keys: &[Key]) -> Batch {
        let mut b = Batch {
            ops: Vec::with_capacity(keys.len()),
            written: vec![],
        };
        let mut changes = vec![];
        for k in keys {
            b.ops.push(self.op_for(k));
            if let Key::Net(id) = k {
                let now = self.networks.get(id).and_then(|n| n.pool.as_ref());
                let (c, w) = self.stored.diff(id, now.map(|p| p.allocations()));
                changes.extend(c);
                b.written.push(w);
            }
        }
        b.ops.extend(allocs::ops(&changes));
        b
    }

    /// The store took `b`.
    pub fn committed(&self, b: Batch) {
        self.stored.apply(b.written);
    }

    fn op_for(&self, k: &Key) -> Op {
        match k {
            Key::Net(id) => put_or_delete(format!("net/{id}"), self.networks.get(id)),
            Key::Sbx(id) => put_or_delete(format!("sbx/{id}"), self.sandboxes.get(id)),
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
                .find(|n| n.predefined && n.name == sb.network_mode.as_str())
            {
                v.push(n);
            }
        }
        v
    }
}

#[cfg(test)]
mod tests;
