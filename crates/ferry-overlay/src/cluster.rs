//! The cluster's operations over a [`Store`] (etcd in production, the fake in tests): a
//! host's registration under its lease, creating and removing overlays, claiming address
//! blocks and static addresses, publishing endpoints. Each claim is one conditional
//! transaction, retried from a fresh read when another host moved first.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_store::{Compare, LeaseId, Op, Outcome, Store, StoreError};
use ipnet::Ipv4Net;
use serde::Serialize;

use crate::alloc;
use crate::records::*;
use crate::view::View;

/// How long a dead host's address blocks stay its own after its lease expired, unless
/// set otherwise: a host that reboots keeps its addresses; one gone for longer frees its
/// blocks for hosts that have none left.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(300);

/// How many times a claim is tried again after losing a race before it gives up.
const TRIES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster store: {0}")]
    Store(#[from] StoreError),
    #[error("network with name {0} already exists")]
    Duplicate(String),
    #[error("overlay network {0} not found")]
    NoSuchNetwork(String),
    #[error("node {0} not found in the cluster")]
    NoSuchNode(String),
    #[error("invalid pool request: Pool overlaps with other one on this address space ({subnet} overlaps overlay network {other}'s {other_subnet})")]
    Overlap {
        subnet: Ipv4Net,
        other: String,
        other_subnet: Ipv4Net,
    },
    #[error("no free subnet left in the global pool 10.0.0.0/8")]
    NoSubnet,
    #[error("no free VXLAN ID left")]
    NoVni,
    #[error("network {name} has active endpoints (on {nodes})")]
    InUse { name: String, nodes: String },
    #[error("no free address block left in overlay network {0}")]
    NoBlock(String),
    #[error("Address {ip} is in address block {block} of host {node}: on this host choose an address outside the hosts' blocks, or run the sandbox on {node}")]
    ForeignBlock {
        ip: Ipv4Addr,
        block: Ipv4Net,
        node: String,
    },
    #[error("Address already in use: {0}")]
    AddressInUse(Ipv4Addr),
    #[error("host name {name} is held by another ferryd at {addr} whose lease is live: give this one another --node-name")]
    NodeTaken { name: String, addr: Ipv4Addr },
    #[error("the cluster store kept changing under {0}: gave up after {TRIES} tries")]
    Contention(&'static str),
    #[error("cluster record {key}: {message}")]
    Decode { key: String, message: String },
}

type Result<T> = std::result::Result<T, ClusterError>;

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialise")
}

/// This host as a member of the cluster.
pub struct Cluster {
    store: Arc<dyn Store>,
    pub node: String,
    pub addr: Ipv4Addr,
    pub ttl: Duration,
    /// How long a dead host's blocks stay its own ([`DEFAULT_GRACE`]).
    pub grace: Duration,
    lease: Mutex<Option<LeaseId>>,
    /// Set by [`Cluster::depart`].
    departed: AtomicBool,
}

/// A network as `create` asks for it; `None` fields are chosen by the cluster.
#[derive(Debug, Clone, Default)]
pub struct NewOverlay {
    pub id: String,
    pub name: String,
    pub created: String,
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    pub ip_range: Option<Ipv4Net>,
    pub internal: bool,
    pub attachable: bool,
    pub mtu: Option<u32>,
    pub labels: std::collections::BTreeMap<String, String>,
    pub options: std::collections::BTreeMap<String, String>,
    pub ipam_echo: Vec<ferry_core::model::IpamEcho>,
}

/// A block this host holds, and the addresses in it other hosts hold as static ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub block: Ipv4Net,
    pub foreign: Vec<Ipv4Addr>,
}

impl Cluster {
    pub fn new(store: Arc<dyn Store>, node: String, addr: Ipv4Addr, ttl: Duration) -> Self {
        Cluster {
            store,
            node,
            addr,
            ttl,
            grace: DEFAULT_GRACE,
            lease: Mutex::new(None),
            departed: AtomicBool::new(false),
        }
    }

    /// How long a dead host's blocks stay its own after its lease expired.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn lease(&self) -> Option<LeaseId> {
        *self.lease.lock().expect("lease")
    }

    /// Everything the cluster holds, and the revision to watch from after it.
    pub fn view(&self) -> Result<View> {
        View::from_listing(self.store.range("")?)
    }

    /// Join (or rejoin) the cluster: keep the lease of this host's record if it is still
    /// alive (a restart within the TTL changes nothing anyone sees), else take a new one.
    pub fn register(&self, started: &str) -> Result<LeaseId> {
        for _ in 0..TRIES {
            let l = self.store.range(&node_key(&self.node))?;
            let old = match l.entries.first() {
                Some(e) => Some((e.mod_revision, decode::<NodeRecord>(&e.key, &e.value)?)),
                None => None,
            };
            if let Some((_, rec)) = &old {
                if rec.addr != self.addr {
                    return Err(ClusterError::NodeTaken {
                        name: self.node.clone(),
                        addr: rec.addr,
                    });
                }
                if self.store.keep_alive(rec.lease).is_ok() {
                    *self.lease.lock().expect("lease") = Some(rec.lease);
                    return Ok(rec.lease);
                }
            }
            let lease = self.store.grant(self.ttl)?.id;
            let rec = NodeRecord {
                name: self.node.clone(),
                addr: self.addr,
                started: started.to_string(),
                lease,
            };
            let cmp = match &old {
                Some((rev, _)) => Compare::ModRevision(node_key(&self.node), *rev),
                None => Compare::Absent(node_key(&self.node)),
            };
            // Back before its blocks were taken: they are its own again.
            let ops = [
                Op::PutLeased(node_key(&self.node), json(&rec), lease),
                Op::Delete(dead_key(&self.node)),
                Op::Delete(grace_key(&self.node)),
            ];
            if let Outcome::Committed(_) = self.store.txn(&[cmp], &ops)? {
                *self.lease.lock().expect("lease") = Some(lease);
                return Ok(lease);
            }
            let _ = self.store.revoke(lease);
        }
        Err(ClusterError::Contention("the host's record"))
    }

    /// Renew the lease; `Ok(false)` when it was lost (expired while etcd was away) and a
    /// new one was taken: everything published under the old one must be published again.
    /// Nothing once this host has departed.
    pub fn renew(&self, started: &str) -> Result<bool> {
        if self.departed() {
            return Ok(true);
        }
        let lease = self.lease();
        match lease.map(|l| self.store.keep_alive(l)) {
            Some(Ok(_)) => Ok(true),
            Some(Err(StoreError::LeaseNotFound(_))) | None => {
                self.register(started)?;
                Ok(false)
            }
            Some(Err(e)) => Err(e.into()),
        }
    }

    /// Start the grace period of every host seen holding blocks without a registration:
    /// a [`DEAD`] marker and a [`GRACE`] key under a lease of the grace period, both in
    /// one transaction that holds only while the host is still unregistered and
    /// unmarked (so of the hosts that notice, one starts it). Returns the hosts marked.
    pub fn mark_dead(&self) -> Result<Vec<String>> {
        let view = self.view()?;
        let mut marked = vec![];
        for host in view.newly_dead() {
            let lease = self.store.grant(self.grace)?.id;
            let won = self.store.txn(
                &[
                    Compare::Absent(node_key(host)),
                    Compare::Absent(dead_key(host)),
                ],
                &[
                    Op::Put(dead_key(host), host.as_bytes().to_vec()),
                    Op::PutLeased(grace_key(host), Vec::new(), lease),
                ],
            )?;
            match won {
                Outcome::Committed(_) => marked.push(host.to_string()),
                Outcome::Conflict => {
                    let _ = self.store.revoke(lease);
                }
            }
        }
        Ok(marked)
    }

    /// Leave: revoke the lease, which deletes this host's record and endpoints at once.
    pub fn leave(&self) -> Result<()> {
        if let Some(l) = self.lease.lock().expect("lease").take() {
            self.store.revoke(l)?;
        }
        Ok(())
    }

    /// Leave for good (`system cleanup`): the cluster's overlays stay, this host goes.
    /// Its record, its address blocks and any grace-period keys go in one transaction
    /// (each block only while still this host's), so no host ever sees it gone while
    /// holding blocks and starts a grace period for it, and its blocks are free at once;
    /// then the lease is revoked, which takes its endpoints. From here on [`Cluster::renew`]
    /// does not join again.
    pub fn depart(&self) -> Result<()> {
        self.departed.store(true, Ordering::SeqCst);
        let released = self.release_records()?;
        self.leave()?;
        if !released {
            return Err(ClusterError::Contention("this host's address blocks"));
        }
        Ok(())
    }

    /// [`Cluster::depart`]'s transaction: this host's record, blocks and grace keys;
    /// false when other hosts kept changing them past every try.
    fn release_records(&self) -> Result<bool> {
        for _ in 0..TRIES {
            let view = self.view()?;
            let mine: Vec<String> = view
                .blocks
                .iter()
                .filter(|(_, owner)| **owner == self.node)
                .map(|((net, block), _)| block_key(net, *block))
                .collect();
            let compares: Vec<Compare> = mine
                .iter()
                .map(|k| Compare::Value(k.clone(), self.node.clone().into_bytes()))
                .collect();
            let mut ops: Vec<Op> = mine.into_iter().map(Op::Delete).collect();
            ops.extend([
                Op::Delete(node_key(&self.node)),
                Op::Delete(dead_key(&self.node)),
                Op::Delete(grace_key(&self.node)),
            ]);
            if let Outcome::Committed(_) = self.store.txn(&compares, &ops)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether this host left for good ([`Cluster::depart`]).
    pub fn departed(&self) -> bool {
        self.departed.load(Ordering::SeqCst)
    }

    /// Create an overlay network every host sees.
    pub fn create_network(&self, req: &NewOverlay) -> Result<OverlayNetwork> {
        for _ in 0..TRIES {
            let view = self.view()?;
            // Ours already: a repeat of a transaction that applied before etcd failed.
            if let Some(net) = view.networks.get(&req.id) {
                return Ok(net.clone());
            }
            let net = plan_network(&view, req)?;
            let guard = match view.nets_revision {
                Some(r) => Compare::ModRevision(NETS_REVISION.into(), r),
                None => Compare::Absent(NETS_REVISION.into()),
            };
            let compares = [
                guard,
                Compare::Absent(name_key(&net.name)),
                Compare::Absent(vni_key(net.vni)),
            ];
            let ops = [
                Op::Put(net_key(&net.id), json(&net)),
                Op::Put(name_key(&net.name), net.id.clone().into_bytes()),
                Op::Put(vni_key(net.vni), net.id.clone().into_bytes()),
                Op::Put(NETS_REVISION.into(), net.id.clone().into_bytes()),
            ];
            if let Outcome::Committed(_) = self.store.txn(&compares, &ops)? {
                return Ok(net);
            }
        }
        Err(ClusterError::Contention("the overlay networks"))
    }

    /// Remove an overlay no host has an endpoint on, with its name, VNI and blocks.
    pub fn remove_network(&self, id: &str) -> Result<()> {
        for _ in 0..TRIES {
            let view = self.view()?;
            let net = view
                .networks
                .get(id)
                .ok_or_else(|| ClusterError::NoSuchNetwork(id.into()))?;
            let nodes: std::collections::BTreeSet<&str> =
                view.endpoints_on(id).map(|e| e.node.as_str()).collect();
            if !nodes.is_empty() {
                return Err(ClusterError::InUse {
                    name: net.name.clone(),
                    nodes: nodes.into_iter().collect::<Vec<_>>().join(", "),
                });
            }
            let mut ops = vec![
                Op::Delete(net_key(id)),
                Op::Delete(name_key(&net.name)),
                Op::Delete(vni_key(net.vni)),
                Op::Put(NETS_REVISION.into(), id.as_bytes().to_vec()),
            ];
            ops.extend(
                view.blocks_on(id)
                    .map(|(b, _)| Op::Delete(block_key(id, b))),
            );
            // No endpoint may have been published since the view: the network is removed
            // only while no key is under its endpoints, checked by etcd in the same txn.
            let compares = vec![
                Compare::ModRevision(net_key(id), view.net_revision(id)),
                Compare::NoneUnder(endpoints_of(id)),
            ];
            if let Outcome::Committed(_) = self.store.txn(&compares, &ops)? {
                return Ok(());
            }
        }
        Err(ClusterError::Contention("the overlay networks"))
    }

    /// A block for this host to allocate from in `net`, other than those in `have`: one
    /// it holds already, else the first free one, else one a dead host held (see
    /// [`Cluster::reclaim`]), claimed by compare-and-swap.
    pub fn claim_block(&self, net: &OverlayNetwork, have: &[Ipv4Net]) -> Result<Block> {
        let span = net.ip_range.unwrap_or(net.subnet);
        for _ in 0..TRIES {
            let view = self.view()?;
            let blocks: Vec<(Ipv4Net, &str)> = view.blocks_on(&net.id).collect();
            let mine = blocks
                .iter()
                .find(|(b, n)| *n == self.node && !have.contains(b))
                .map(|(b, _)| *b);
            let claimed: Vec<Ipv4Net> = blocks.iter().map(|(b, _)| *b).collect();
            let block = match mine {
                Some(b) => b,
                None => {
                    let free = alloc::free_blocks(span, net.block_prefix, &claimed)
                        .into_iter()
                        .next();
                    let (b, held_by) = match free {
                        Some(b) => (b, None),
                        None => match reclaimable(&view, &net.id) {
                            Some((b, dead)) => (b, Some(dead)),
                            None => return Err(ClusterError::NoBlock(net.name.clone())),
                        },
                    };
                    if !self.take_block(&view, net, b, held_by)? {
                        continue;
                    }
                    b
                }
            };
            // Static addresses other hosts took in it before it was claimed.
            let view = self.view()?;
            let foreign = view
                .endpoints_on(&net.id)
                .filter(|e| block.contains(&e.ip) && e.node != self.node)
                .map(|e| e.ip)
                .collect();
            return Ok(Block { block, foreign });
        }
        Err(ClusterError::Contention("the address blocks"))
    }

    /// One conditional transaction: `block` becomes this host's if it is still free
    /// (`held_by` None), or still `held_by`'s, that host still has no registration and
    /// nothing has an address in the block. False when another host moved first.
    fn take_block(
        &self,
        view: &View,
        net: &OverlayNetwork,
        block: Ipv4Net,
        held_by: Option<String>,
    ) -> Result<bool> {
        let key = block_key(&net.id, block);
        let mut compares = vec![Compare::ModRevision(
            net_key(&net.id),
            view.net_revision(&net.id),
        )];
        match held_by {
            None => compares.push(Compare::Absent(key.clone())),
            Some(dead) => {
                tracing::info!(
                    "overlay {}: taking address block {block} of host {dead}, unregistered for longer than the grace period",
                    net.name
                );
                compares.push(Compare::Value(key.clone(), dead.clone().into_bytes()));
                compares.push(Compare::Absent(node_key(&dead)));
                compares.push(Compare::Value(dead_key(&dead), dead.clone().into_bytes()));
                compares.push(Compare::Absent(grace_key(&dead)));
                compares.extend(
                    view.endpoints_on(&net.id)
                        .filter(|e| block.contains(&e.ip))
                        .map(|e| Compare::Absent(endpoint_key(&net.id, e.ip))),
                );
            }
        }
        let won = self
            .store
            .txn(&compares, &[Op::Put(key, self.node.clone().into_bytes())])?;
        Ok(matches!(won, Outcome::Committed(_)))
    }

    /// Take a static address for `ep` through the store: refused when it lies in another
    /// host's block or another endpoint has it; inside this host's own block it needs no
    /// claim beyond publishing.
    pub fn claim_static(&self, net: &OverlayNetwork, ep: &EndpointRecord) -> Result<()> {
        let block = alloc::block_of(ep.ip, net.block_prefix);
        for _ in 0..TRIES {
            let view = self.view()?;
            if let Some(owner) = view.blocks.get(&(net.id.clone(), block)) {
                if *owner != self.node {
                    return Err(ClusterError::ForeignBlock {
                        ip: ep.ip,
                        block,
                        node: owner.clone(),
                    });
                }
            }
            if let Some(e) = view.endpoints.get(&(net.id.clone(), ep.ip)) {
                if e.node != self.node || e.sandbox != ep.sandbox {
                    return Err(ClusterError::AddressInUse(ep.ip));
                }
            }
            let bkey = block_key(&net.id, block);
            let block_cmp = match view.blocks.contains_key(&(net.id.clone(), block)) {
                true => Compare::Value(bkey, self.node.clone().into_bytes()),
                false => Compare::Absent(bkey),
            };
            let ekey = endpoint_key(&net.id, ep.ip);
            let ep_cmp = match view.endpoint_revision(&net.id, ep.ip) {
                Some(r) => Compare::ModRevision(ekey.clone(), r),
                None => Compare::Absent(ekey.clone()),
            };
            let op = self.leased(ekey, json(ep))?;
            if let Outcome::Committed(_) = self.store.txn(&[block_cmp, ep_cmp], &[op])? {
                return Ok(());
            }
        }
        Err(ClusterError::Contention("the static addresses"))
    }

    fn leased(&self, key: String, value: Vec<u8>) -> Result<Op> {
        let lease = self.lease().ok_or(StoreError::LeaseNotFound(0))?;
        Ok(Op::PutLeased(key, value, lease))
    }

    /// Publish this host's endpoints and withdraw the ones it no longer has, in one
    /// transaction: `want` is every endpoint of this host, `had` what etcd holds for it.
    ///
    /// `known` is the caller's view of the cluster (the watch's), planned against first
    /// so that a publish costs one transaction, not a range of the whole cluster (with a
    /// thousand sandboxes starting, that range was most of etcd's work). Every write is
    /// conditional on what the plan read (the endpoint's key, the block that holds its
    /// address), so a stale view only makes the transaction fail; the tries after it
    /// plan against a fresh range.
    pub fn publish(
        &self,
        want: &[EndpointRecord],
        had: &[EndpointRecord],
        known: Option<std::sync::Arc<View>>,
    ) -> Result<Vec<EndpointRecord>> {
        let mut known = known;
        for _ in 0..TRIES {
            // A view that lacks one of the networks (the watch has not brought a network
            // created a moment ago) is not planned against: etcd is asked instead.
            let view = match known.take() {
                Some(v) if want.iter().all(|e| v.networks.contains_key(&e.network)) => v,
                _ => std::sync::Arc::new(self.view()?),
            };
            let (compares, ops, refused) = self.publish_plan(&view, want, had);
            if ops.is_empty() {
                return Ok(refused);
            }
            if let Outcome::Committed(_) = self.store.txn(&compares, &ops)? {
                return Ok(refused);
            }
        }
        Err(ClusterError::Contention("this host's endpoints"))
    }

    /// The transaction that makes the cluster hold `want` of this host's endpoints where
    /// it held `had`, each write conditional on the key being absent or still this
    /// host's; and the endpoints refused: an address another host's endpoint has, or a
    /// new one inside another host's block (what a host finds on coming back after its
    /// blocks were taken: publishing them would give two sandboxes one address).
    fn publish_plan(
        &self,
        view: &View,
        want: &[EndpointRecord],
        had: &[EndpointRecord],
    ) -> (Vec<Compare>, Vec<Op>, Vec<EndpointRecord>) {
        let (mut compares, mut ops, mut refused) = (vec![], vec![], vec![]);
        let mut nets = std::collections::BTreeSet::new();
        for ep in want.iter().filter(|e| !had.contains(e)) {
            let key = endpoint_key(&ep.network, ep.ip);
            // The network must still be there, as the view saw it: a publish racing its
            // removal fails and is planned again, and then refused.
            if !view.networks.contains_key(&ep.network) {
                refused.push(ep.clone());
                continue;
            }
            if nets.insert(ep.network.clone()) {
                compares.push(Compare::ModRevision(
                    net_key(&ep.network),
                    view.net_revision(&ep.network),
                ));
            }
            match view.endpoints.get(&(ep.network.clone(), ep.ip)) {
                Some(e) if e.node != self.node => refused.push(ep.clone()),
                Some(_) => compares.push(Compare::ModRevision(
                    key.clone(),
                    view.endpoint_revision(&ep.network, ep.ip).unwrap_or(0),
                )),
                None if view
                    .blocks_on(&ep.network)
                    .any(|(b, h)| b.contains(&ep.ip) && h != self.node) =>
                {
                    refused.push(ep.clone())
                }
                None => {
                    compares.push(Compare::Absent(key.clone()));
                    compares.extend(block_unchanged(view, &ep.network, ep.ip));
                }
            }
            if refused.last() != Some(ep) {
                match self.leased(key, json(ep)) {
                    Ok(op) => ops.push(op),
                    Err(_) => refused.push(ep.clone()),
                }
            }
        }
        for ep in had {
            let gone = !want
                .iter()
                .any(|w| w.network == ep.network && w.ip == ep.ip);
            let ours = view
                .endpoints
                .get(&(ep.network.clone(), ep.ip))
                .is_some_and(|e| e.node == self.node);
            if gone && ours {
                let key = endpoint_key(&ep.network, ep.ip);
                let rev = view.endpoint_revision(&ep.network, ep.ip).unwrap_or(0);
                compares.push(Compare::ModRevision(key.clone(), rev));
                ops.push(Op::Delete(key));
            }
        }
        (compares, ops, refused)
    }
}

/// The condition that the block of `net` holding `ip` is as `view` saw it (held by the
/// same host, or by none): a block given to another host since makes the write fail.
fn block_unchanged(view: &View, net: &str, ip: Ipv4Addr) -> Option<Compare> {
    let n = view.networks.get(net)?;
    let block = alloc::block_of(ip, alloc::block_prefix(n.ip_range.unwrap_or(n.subnet)));
    let key = block_key(net, block);
    Some(match view.key_revision(&key) {
        Some(rev) => Compare::ModRevision(key, rev),
        None => Compare::Absent(key),
    })
}

/// A block of `net` a dead host holds, when no block is free: its holder has no
/// registration (its lease expired), was marked dead ([`Cluster::mark_dead`]) and its
/// grace period is over, and no endpoint has an address in the block. The lowest such block; None if none.
/// A host that comes back later claims a block anew, as any host does.
fn reclaimable(view: &View, net: &str) -> Option<(Ipv4Net, String)> {
    view.blocks_on(net)
        .filter(|(_, h)| !view.nodes.contains_key(*h))
        .filter(|(_, h)| view.dead.contains(*h) && !view.in_grace.contains(*h))
        .find(|(b, _)| !view.endpoints_on(net).any(|e| b.contains(&e.ip)))
        .map(|(b, holder)| (b, holder.to_string()))
}

pub(crate) fn decode<T: for<'a> serde::Deserialize<'a>>(key: &str, v: &[u8]) -> Result<T> {
    serde_json::from_slice(v).map_err(|e| ClusterError::Decode {
        key: key.to_string(),
        message: e.to_string(),
    })
}

/// The network `req` makes given what the cluster holds (pure).
pub fn plan_network(view: &View, req: &NewOverlay) -> Result<OverlayNetwork> {
    if view.networks.values().any(|n| n.name == req.name) {
        return Err(ClusterError::Duplicate(req.name.clone()));
    }
    let taken: Vec<Ipv4Net> = view.networks.values().map(|n| n.subnet).collect();
    let subnet = match req.subnet {
        Some(s) => {
            if let Some(o) = view
                .networks
                .values()
                .find(|n| alloc::overlaps(n.subnet, s))
            {
                return Err(ClusterError::Overlap {
                    subnet: s,
                    other: o.name.clone(),
                    other_subnet: o.subnet,
                });
            }
            s
        }
        None => alloc::default_subnet(&taken).ok_or(ClusterError::NoSubnet)?,
    };
    let gateway = req
        .gateway
        .unwrap_or_else(|| Ipv4Addr::from(u32::from(subnet.network()) + 1));
    let vnis: Vec<u32> = view.networks.values().map(|n| n.vni).collect();
    let span = req.ip_range.unwrap_or(subnet);
    // What inspect shows, as dockerd does for a subnet it chose.
    let ipam_echo = match req.ipam_echo.is_empty() {
        true => vec![ferry_core::model::IpamEcho {
            subnet: Some(subnet.to_string()),
            ip_range: None,
            gateway: Some(gateway.to_string()),
        }],
        false => req.ipam_echo.clone(),
    };
    Ok(OverlayNetwork {
        id: req.id.clone(),
        name: req.name.clone(),
        created: req.created.clone(),
        subnet,
        gateway,
        ip_range: req.ip_range,
        vni: alloc::next_vni(&vnis).ok_or(ClusterError::NoVni)?,
        block_prefix: alloc::block_prefix(span),
        internal: req.internal,
        attachable: req.attachable,
        mtu: req.mtu,
        labels: req.labels.clone(),
        options: req.options.clone(),
        ipam_echo,
    })
}
