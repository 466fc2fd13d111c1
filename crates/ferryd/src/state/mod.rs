//! The in-memory copy of the desired state, loaded from the store at start and written
//! back key by key: `net/<id>`, `sbx/<id>`, `meta/state`, `plugin/…`, and a network's
//! IP allocations as `ipam/<id>/<ip>` (see [`allocs`]).

pub mod allocs;

use ferry_core::model::{Network, Sandbox};
use ferry_core::remote::{DockerEndpoint, DockerNetwork, IpamPool};
pub use ferry_core::state::{Key, Meta, PluginState, Snapshot, State as Desired};
use ferry_store::{Op, Store, StoreError};
use serde::{Deserialize, Serialize};

/// The desired state (ferry-core's [`Desired`], which it derefs to), with what ferryd
/// keeps beside it: the store's copy of the allocations and the cluster's tunnels.
#[derive(Debug, Clone, Default)]
pub struct State {
    desired: Desired,
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
    /// The links the networks stand on in this namespace: their bridges and their
    /// overlays' VXLAN devices.
    pub fn network_links(&self) -> impl Iterator<Item = String> + '_ {
        let nets = self.networks.values();
        let bridges = nets
            .clone()
            .filter_map(|n| n.bridge())
            .map(|b| b.name.to_string());
        let tunnels = nets
            .filter_map(|n| n.overlay())
            .map(|o| o.vxlan.to_string());
        bridges.chain(tunnels)
    }

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
}

impl std::ops::Deref for State {
    type Target = Desired;
    fn deref(&self) -> &Desired {
        &self.desired
    }
}

impl std::ops::DerefMut for State {
    fn deref_mut(&mut self) -> &mut Desired {
        &mut self.desired
    }
}

#[cfg(test)]
mod tests;
