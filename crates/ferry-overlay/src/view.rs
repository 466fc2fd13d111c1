//! A host's view of the cluster: built from one range, then kept current by its one
//! watch. Pure: applying a watch message changes only the view, and what a host should
//! program follows from the view ([`View::remote_endpoints`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ferry_store::{Entry, Listing, Revision, WatchEvent, WatchMessage};
use ipnet::Ipv4Net;

use crate::cluster::{decode, ClusterError};
use crate::records::*;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// The revision the view is current to; watch from the next one.
    pub revision: Revision,
    pub nodes: BTreeMap<String, NodeRecord>,
    pub networks: BTreeMap<String, OverlayNetwork>,
    pub endpoints: BTreeMap<(String, Ipv4Addr), EndpointRecord>,
    /// (network, block) → the host holding it.
    pub blocks: BTreeMap<(String, Ipv4Net), String>,
    /// Hosts marked dead while holding blocks ([`DEAD`]).
    pub dead: BTreeSet<String>,
    /// Of those, the ones whose grace period still runs ([`GRACE`]).
    pub in_grace: BTreeSet<String>,
    /// The revision of [`NETS_REVISION`], if it exists.
    pub nets_revision: Option<Revision>,
    /// Key → mod revision, for the keys claims compare.
    revisions: BTreeMap<String, Revision>,
}

/// What a watch message changed, for the host to act on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changed {
    pub networks: bool,
    pub endpoints: bool,
    pub nodes: bool,
    /// A block claimed or released: routes follow blocks.
    pub blocks: bool,
}

impl View {
    pub fn from_listing(l: Listing) -> Result<View, ClusterError> {
        let mut v = View {
            revision: l.revision,
            ..View::default()
        };
        for e in l.entries {
            v.put(&e)?;
        }
        Ok(v)
    }

    /// Follow one watch message. `Err` only for a record that does not decode; a
    /// `Compacted` message is the caller's to handle (resync from a fresh range).
    pub fn apply(&mut self, msg: &WatchMessage) -> Result<Changed, ClusterError> {
        let mut changed = Changed::default();
        let WatchMessage::Changes { revision, events } = msg else {
            return Ok(changed);
        };
        for ev in events {
            let key = ev.key();
            changed.networks |= key.starts_with(NETS);
            changed.endpoints |= key.starts_with(ENDPOINTS);
            changed.nodes |= key.starts_with(NODES);
            changed.blocks |= key.starts_with(BLOCKS);
            match ev {
                WatchEvent::Put(e) => self.put(e)?,
                WatchEvent::Delete { key, .. } => self.delete(key),
            }
        }
        self.revision = self.revision.max(*revision);
        Ok(changed)
    }

    fn put(&mut self, e: &Entry) -> Result<(), ClusterError> {
        let k = e.key.as_str();
        self.revisions.insert(e.key.clone(), e.mod_revision);
        if k.starts_with(NODES) {
            let n: NodeRecord = decode(k, &e.value)?;
            self.nodes.insert(n.name.clone(), n);
        } else if k.starts_with(NETS) {
            let n: OverlayNetwork = decode(k, &e.value)?;
            self.networks.insert(n.id.clone(), n);
        } else if k.starts_with(ENDPOINTS) {
            let ep: EndpointRecord = decode(k, &e.value)?;
            self.endpoints.insert((ep.network.clone(), ep.ip), ep);
        } else if let Some((net, block)) = parse_block_key(k) {
            let owner = String::from_utf8_lossy(&e.value).to_string();
            self.blocks.insert((net.to_string(), block), owner);
        } else if let Some(node) = k.strip_prefix(DEAD) {
            self.dead.insert(node.to_string());
        } else if let Some(node) = k.strip_prefix(GRACE) {
            self.in_grace.insert(node.to_string());
        } else if k == NETS_REVISION {
            self.nets_revision = Some(e.mod_revision);
        }
        Ok(())
    }

    fn delete(&mut self, k: &str) {
        self.revisions.remove(k);
        if let Some(name) = k.strip_prefix(NODES) {
            self.nodes.remove(name);
        } else if let Some(id) = k.strip_prefix(NETS) {
            self.networks.remove(id);
        } else if let Some(rest) = k.strip_prefix(ENDPOINTS) {
            if let Some((net, ip)) = rest.split_once('/') {
                if let Ok(ip) = ip.parse() {
                    self.endpoints.remove(&(net.to_string(), ip));
                }
            }
        } else if let Some((net, block)) = parse_block_key(k) {
            self.blocks.remove(&(net.to_string(), block));
        } else if let Some(node) = k.strip_prefix(DEAD) {
            self.dead.remove(node);
        } else if let Some(node) = k.strip_prefix(GRACE) {
            self.in_grace.remove(node);
        } else if k == NETS_REVISION {
            self.nets_revision = None;
        }
    }

    pub fn net_revision(&self, id: &str) -> Revision {
        self.revisions.get(&net_key(id)).copied().unwrap_or(0)
    }

    /// The mod revision of `key` as the view last saw it (None: absent).
    pub fn key_revision(&self, key: &str) -> Option<Revision> {
        self.revisions.get(key).copied()
    }

    pub fn endpoint_revision(&self, net: &str, ip: Ipv4Addr) -> Option<Revision> {
        self.revisions.get(&endpoint_key(net, ip)).copied()
    }

    pub fn endpoints_on<'a>(&'a self, net: &'a str) -> impl Iterator<Item = &'a EndpointRecord> {
        self.endpoints
            .range((net.to_string(), Ipv4Addr::UNSPECIFIED)..)
            .take_while(move |((n, _), _)| n == net)
            .map(|(_, e)| e)
    }

    pub fn blocks_on<'a>(&'a self, net: &'a str) -> impl Iterator<Item = (Ipv4Net, &'a str)> {
        self.blocks
            .iter()
            .filter(move |((n, _), _)| n == net)
            .map(|((_, b), o)| (*b, o.as_str()))
    }

    /// Hosts that hold blocks but have no registration and no [`DEAD`] marker yet.
    pub fn newly_dead(&self) -> BTreeSet<&str> {
        self.blocks
            .values()
            .map(String::as_str)
            .filter(|h| !self.nodes.contains_key(*h) && !self.dead.contains(*h))
            .collect()
    }

    /// Every endpoint other hosts hold, per network: what this host's tunnels point at.
    pub fn remote_endpoints(&self, me: &str) -> BTreeMap<String, Vec<&EndpointRecord>> {
        let mut out: BTreeMap<String, Vec<&EndpointRecord>> = BTreeMap::new();
        for ep in self.endpoints.values().filter(|e| e.node != me) {
            out.entry(ep.network.clone()).or_default().push(ep);
        }
        out
    }

    /// This host's endpoints as the cluster holds them.
    pub fn own_endpoints(&self, me: &str) -> Vec<EndpointRecord> {
        self.endpoints
            .values()
            .filter(|e| e.node == me)
            .cloned()
            .collect()
    }

    pub fn network_by_name_or_id(&self, key: &str) -> Option<&OverlayNetwork> {
        self.networks
            .get(key)
            .or_else(|| self.networks.values().find(|n| n.name == key))
    }
}
