//! The overlay agent: joining the cluster, keeping the lease, the one watch, and the
//! publisher of this host's endpoints. Each runs as a task for as long as ferryd does,
//! riding out etcd outages: a failed call is logged and tried again every second.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use ferry_kernel::KernelOps;
use ferry_overlay::view::Changed;
use ferry_overlay::{Cluster, View};
use ferry_store::{EtcdStore, Store, WatchMessage};

use crate::ops::{now, Daemon};
use crate::overlay::records::own_endpoints;
use crate::overlay::{blocking, ClusterConf, Overlay, RETRY};

/// Check the advertised address, then join in the background: connect to etcd (waiting
/// for it as long as it takes), register this host, make the local copies of every
/// overlay, and start the tasks. ferryd serves meanwhile; local networks never wait.
pub async fn join<K: KernelOps>(d: &Arc<Daemon<K>>, conf: ClusterConf) -> anyhow::Result<()> {
    let addr = advertise_addr(d, &conf.advertise).await?;
    let (_, underlay_mtu) = d.kernel.underlay_of(addr).await?;
    let d = d.clone();
    tokio::spawn(async move {
        if let Err(e) = connect(&d, conf, addr, underlay_mtu).await {
            tracing::error!("cluster: {e}");
        }
    });
    Ok(())
}

async fn connect<K: KernelOps>(
    d: &Arc<Daemon<K>>,
    conf: ClusterConf,
    addr: Ipv4Addr,
    underlay_mtu: u32,
) -> anyhow::Result<()> {
    let store = loop {
        let cfg = conf.store.clone();
        match tokio::task::spawn_blocking(move || EtcdStore::connect(cfg)).await? {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!("cluster store: {e}; trying again");
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    let store: Arc<dyn Store> = Arc::new(store);
    let cluster =
        Arc::new(Cluster::new(store, conf.node.clone(), addr, conf.ttl).with_grace(conf.grace));
    let started = now().0;
    let s = started.clone();
    blocking(&cluster, move |c| c.register(&s)).await?;
    let view = blocking(&cluster, |c| c.view()).await?;
    let ov = Arc::new(Overlay {
        cluster,
        view: std::sync::Mutex::new(Arc::new(view)),
        programmed: Default::default(),
        poke: Default::default(),
        underlay_mtu,
        vxlan_port: conf.vxlan_port,
        started,
    });
    if d.overlay.set(ov.clone()).is_err() {
        anyhow::bail!("joined the cluster twice");
    }
    tracing::info!(
        "cluster: joined as {} ({addr}, underlay MTU {underlay_mtu}) at {}",
        conf.node,
        conf.store.endpoints.join(",")
    );
    // In the checks' turn, as the watch acts: a join that completes while `system
    // cleanup` runs makes nothing on the host.
    let Some(turn) = d.check_turn().await else {
        return Ok(());
    };
    d.sync_tunnel(&ov).await;
    d.sync_networks(&ov).await;
    d.sync_entries(&ov).await;
    drop(turn);
    ov.poke.notify_one();
    mark_dead(&ov).await;
    tokio::spawn(keep_alive(ov.clone(), conf.ttl));
    tokio::spawn(publish(d.clone(), ov.clone()));
    tokio::spawn(watch(d.clone(), ov));
    Ok(())
}

async fn advertise_addr<K: KernelOps>(d: &Daemon<K>, s: &str) -> anyhow::Result<Ipv4Addr> {
    let host = s.rsplit_once(':').map_or(s, |(h, _)| h);
    if let Ok(ip) = host.parse() {
        return Ok(ip);
    }
    Ok(d.kernel.address_of(host).await?)
}

/// Renew the lease a third of its TTL at a time; a lease lost (etcd was away longer than
/// the TTL) is taken anew and everything this host holds published again. Ends once
/// this host has departed (`system cleanup`).
async fn keep_alive(ov: Arc<Overlay>, ttl: Duration) {
    loop {
        tokio::time::sleep(ttl / 3).await;
        if ov.cluster.departed() {
            return;
        }
        let started = ov.started.clone();
        match blocking(&ov.cluster, move |c| c.renew(&started)).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("cluster: the lease had expired; joined again");
                ov.poke.notify_one();
            }
            Err(e) => tracing::warn!("cluster: keep-alive: {e}"),
        }
    }
}

/// Write this host's endpoints to etcd whenever poked (and every few seconds, in case a
/// write failed), as one diff against what the view says etcd holds; until this host
/// departs.
async fn publish<K: KernelOps>(d: Arc<Daemon<K>>, ov: Arc<Overlay>) {
    let mut refused_before = Vec::new();
    loop {
        let _ = tokio::time::timeout(Duration::from_secs(5), ov.poke.notified()).await;
        if ov.cluster.departed() {
            return;
        }
        let want = own_endpoints(&*d.state.lock().await, ov.node(), ov.cluster.addr);
        let known = ov.view();
        let had = known.own_endpoints(ov.node());
        if want == had {
            continue;
        }
        match blocking(&ov.cluster, move |c| c.publish(&want, &had, Some(known))).await {
            Ok(refused) => {
                for ep in refused.iter().filter(|r| !refused_before.contains(*r)) {
                    tracing::error!(
                        "cluster: sandbox {}'s address {} on overlay {} is another host's now (this host was away past its grace period): not published; remove and run the sandbox again",
                        ep.sandbox, ep.ip, ep.network
                    );
                }
                refused_before = refused;
            }
            Err(e) => {
                tracing::warn!("cluster: publish this host's endpoints: {e}");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// The one watch: apply each message to the view and act on what changed. When the
/// stream ends (etcd went away), the watch resumes from the view's revision, so nothing
/// is missed or seen twice; only when etcd has compacted that revision away is the view
/// made again from a fresh range (flannel's resync).
async fn watch<K: KernelOps>(d: Arc<Daemon<K>>, ov: Arc<Overlay>) {
    loop {
        let from = ov.with_view(|v| v.revision) + 1;
        let store = ov.cluster.store().clone();
        let mut w = match tokio::task::spawn_blocking(move || store.watch("", from)).await {
            Ok(Ok(w)) => w,
            Ok(Err(e)) => {
                tracing::warn!("cluster: watch from revision {from}: {e}");
                tokio::time::sleep(RETRY).await;
                continue;
            }
            Err(_) => return,
        };
        while let Some(first) = w.next().await {
            // Every message already here is applied before acting once on what they
            // changed: a burst of a thousand sandboxes is one sync, not a thousand.
            let mut changed = Changed::default();
            let mut next = Some(first);
            while let Some(msg) = next {
                if let WatchMessage::Compacted { compact_revision } = msg {
                    tracing::info!(
                        "cluster: watch compacted (revision {from} is gone, {compact_revision} is the oldest): resync"
                    );
                    resync(&d, &ov).await;
                    break;
                }
                match Arc::make_mut(&mut ov.view.lock().expect("view")).apply(&msg) {
                    Ok(c) => {
                        changed.nodes |= c.nodes;
                        changed.networks |= c.networks;
                        changed.endpoints |= c.endpoints;
                        changed.blocks |= c.blocks;
                    }
                    Err(e) => tracing::warn!("cluster: {e}"),
                }
                next = w.try_next();
            }
            act_on(&d, &ov, &changed).await;
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Bring the host in line with what the watch changed; nothing on the host once ferryd
/// is leaving (`system cleanup` must not see a network it removed made again).
async fn act_on<K: KernelOps>(d: &Daemon<K>, ov: &Arc<Overlay>, c: &Changed) {
    if c.nodes && !ov.cluster.departed() {
        mark_dead(ov).await;
    }
    let Some(_turn) = d.check_turn().await else {
        return;
    };
    if c.nodes {
        d.sync_tunnel(ov).await;
    }
    if c.networks {
        d.sync_networks(ov).await;
    }
    // Routes follow blocks and the hosts that hold them; names follow endpoints.
    if c.networks || c.endpoints || c.blocks || c.nodes {
        d.sync_entries(ov).await;
    }
    if c.endpoints {
        ov.poke.notify_one();
    }
}

/// Start the grace period of hosts that went away holding address blocks.
async fn mark_dead(ov: &Arc<Overlay>) {
    match blocking(&ov.cluster, |c| c.mark_dead()).await {
        Ok(hosts) if !hosts.is_empty() => tracing::info!(
            "cluster: host(s) {} gone while holding address blocks: theirs for {:?} more",
            hosts.join(", "),
            ov.cluster.grace
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("cluster: mark dead hosts: {e}"),
    }
}

/// A fresh view from a range, tried until etcd answers, then everything made to match.
async fn resync<K: KernelOps>(d: &Daemon<K>, ov: &Arc<Overlay>) {
    let view: View = loop {
        match blocking(&ov.cluster, |c| c.view()).await {
            Ok(v) => break v,
            Err(e) => {
                tracing::warn!("cluster: resync: {e}");
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    *ov.view.lock().expect("view") = Arc::new(view);
    // As `act_on`: held while the host is made to match, not while etcd is waited for.
    let Some(_turn) = d.check_turn().await else {
        return;
    };
    d.sync_tunnel(ov).await;
    d.sync_networks(ov).await;
    d.sync_entries(ov).await;
    ov.poke.notify_one();
}

impl<K: KernelOps> Daemon<K> {
    /// The firewall takes tunnel packets from the hosts in the view, and no others.
    pub(crate) async fn sync_tunnel(&self, ov: &Overlay) {
        let peers = ov.with_view(|v| v.nodes.values().map(|n| n.addr).collect());
        let mut st = self.state.lock().await;
        let tunnel = crate::state::Tunnel {
            port: ov.vxlan_port,
            peers,
        };
        if st.tunnel.as_ref() == Some(&tunnel) {
            return;
        }
        st.tunnel = Some(tunnel);
        self.firewall.note_tunnel();
        self.sync_firewall_or_warn(&st, "overlay tunnel peers")
            .await;
    }

    /// Local copies for every overlay in the view; none for those it lacks.
    pub(crate) async fn sync_networks(&self, ov: &Overlay) {
        let view = ov.view();
        for net in view.networks.values() {
            if let Err(e) = self.materialize(ov, net).await {
                tracing::warn!("overlay {}: {e}", net.name);
            }
        }
        let stale: Vec<String> = self
            .state
            .lock()
            .await
            .networks
            .values()
            .filter(|n| n.overlay().is_some() && !view.networks.contains_key(&n.id))
            .map(|n| n.id.clone())
            .collect();
        for id in stale {
            if let Err(e) = self.dematerialize(&id).await {
                tracing::warn!("{e}");
            }
        }
    }
}
