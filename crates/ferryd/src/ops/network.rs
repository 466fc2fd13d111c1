//! Network operations: create, remove, prune, and the predefined networks.

use ferry_core::docker::network::NetworkCreateRequest;
use ferry_core::model::Network;
use ferry_core::plan::network::{create_keys, plan_create, plan_remove};
use ferry_core::validate::{
    network_from_request, predefined_networks, CreateContext, OPT_BRIDGE_NAME,
};
use ferry_core::CoreError;
use ferry_kernel::KernelOps;
use ferry_overlay::ClusterError;

use super::{new_id, now, Daemon, FirewallFollows};
use crate::error::{Error, Result};
use crate::state::Key;

use ferry_core::plan::network::bridge_spec;

impl<K: KernelOps> Daemon<K> {
    /// Make `bridge`, `host` and `none` on first start, as dockerd does.
    pub async fn ensure_predefined(&self) -> Result<()> {
        let mut st = self.state.lock().await;
        if st.networks.values().any(|n| n.predefined) {
            return Ok(());
        }
        let (created, _) = now();
        let nets = predefined_networks([new_id(), new_id(), new_id()], &created, self.cfg.bip);
        let keys: Vec<Key> = nets.iter().map(|n| Key::Net(n.id.clone())).collect();
        let staged = self.stage(&mut st, &keys, |st| {
            for n in nets {
                st.networks.insert(n.id.clone(), n);
            }
            Ok(())
        })?;
        self.commit_staged(&mut st, staged).map(drop)
    }

    pub async fn create_network(&self, req: NetworkCreateRequest) -> Result<String> {
        if req.driver.as_deref() == Some("overlay") {
            return self.create_overlay(req).await;
        }
        // plughost: an IPAM plugin gives the pool first; then on as with ferry's IPAM.
        if super::plughost::ipam::remote_ipam(&req).is_some() {
            return self.create_with_remote_ipam(req).await;
        }
        // plughost: a driver ferry does not have is a third-party plugin's.
        if super::plughost::network::remote_driver(&req).is_some() {
            return self.create_remote_network(req).await;
        }
        let mut st = self.state.lock().await;
        let made = self.validate_create(&st, &req).await?;
        let mut net = made.network;
        if net.options.contains_key(OPT_BRIDGE_NAME) {
            self.adopt_named_bridge(&mut net).await?;
        }
        self.check_parent(&net).await?;
        let id = net.id.clone();
        let keys = create_keys(&id);
        let staged = self.stage(&mut st, &keys, |st| plan_create(st, net, made.pool_cursor))?;
        let applied = self
            .apply_staged(&mut st, staged, FirewallFollows::Adds)
            .await?;
        // A macvlan network makes nothing of its own on the host: its links are made
        // per sandbox, on the parent.
        let Some(spec) = applied.plan.bridge else {
            return Ok(id);
        };
        if let Err(e) = self.make_bridge(&spec).await {
            self.take_back(&mut st, applied.before, &keys, "create network: undo")
                .await;
            return Err(e);
        }
        Ok(id)
    }

    /// A macvlan network's parent must be an interface of ferryd's namespace.
    async fn check_parent(&self, net: &Network) -> Result<()> {
        let Some(m) = net.macvlan() else {
            return Ok(());
        };
        match self.kernel.link_kind(m.parent.as_str()).await? {
            Some(_) => Ok(()),
            None => Err(CoreError::BadValue {
                what: "option",
                value: format!("parent={}", m.parent),
                why: format!("{} is not an interface of this host", m.parent),
            }
            .into()),
        }
    }

    /// A create request checked against what exists (networks, the host's routes, the
    /// pool cursor), as a network with a fresh ID. The request is checked before the
    /// kernel is asked anything, so a client's mistake is answered as one whatever the
    /// kernel says; the host's routes are read only when a subnet is to be picked from
    /// the default pools (they are what the pick avoids).
    pub(crate) async fn validate_create(
        &self,
        st: &crate::state::State,
        req: &NetworkCreateRequest,
    ) -> Result<ferry_core::validate::Created> {
        let existing: Vec<Network> = st.networks.values().cloned().collect();
        let (created, _) = now();
        let mut ctx = CreateContext {
            existing: &existing,
            host_routes: &[],
            pool_cursor: st.meta.pool_cursor,
            id: new_id(),
            created,
        };
        let checked = network_from_request(req, &ctx)?;
        if !checked.network.pool.as_ref().is_some_and(|p| p.auto_subnet) {
            return Ok(checked);
        }
        let routes = self.kernel.route_destinations().await?;
        ctx.host_routes = &routes;
        Ok(network_from_request(req, &ctx)?)
    }

    /// `com.docker.network.bridge.name` names a link that may exist already: a bridge
    /// is used as it is and marked adopted (ferry never deletes it, as dockerd keeps a
    /// bridge it did not create); anything else (`lo`, a veth, a NIC) is refused, since
    /// ferry would put its address on it and enslave veths to it.
    async fn adopt_named_bridge(&self, net: &mut Network) -> Result<()> {
        let Some(b) = net.bridge_mut() else {
            return Ok(());
        };
        match self.kernel.link_kind(b.name.as_str()).await? {
            None => Ok(()),
            Some(k) if k == "bridge" => {
                b.adopted = true;
                Ok(())
            }
            Some(k) => Err(CoreError::BadValue {
                what: "option",
                value: format!("{OPT_BRIDGE_NAME}={}", b.name),
                why: format!(
                    "{} exists and is not a bridge (it is a {} device); name a bridge or a name no device has",
                    b.name,
                    if k.is_empty() { "loopback or physical" } else { k.as_str() }
                ),
            }
            .into()),
        }
    }

    pub async fn remove_network(&self, key: &str) -> Result<()> {
        let mut st = self.state.lock().await;
        let id = st.network_id(key)?;
        if st.networks[&id].overlay().is_some() {
            // Here first (the cluster's records of this host's endpoints may lag), then
            // on every host, by etcd's endpoint records.
            if !st.users_of(&id).is_empty() || st.docker_endpoints_on(&id) > 0 {
                return Err(CoreError::NetworkInUse {
                    name: st.networks[&id].name.clone(),
                    id,
                }
                .into());
            }
            if let Some(d) = docker_mapping(&st, &id) {
                return Err(CoreError::Invalid(format!(
                    "overlay {} is Docker network {}'s on this host: remove that with docker network rm first",
                    st.networks[&id].name,
                    &d[..12]
                ))
                .into());
            }
            drop(st);
            return self.remove_overlay(&id).await;
        }
        self.remove_network_locked(&mut st, &id).await
    }

    async fn remove_network_locked(&self, st: &mut crate::state::State, id: &str) -> Result<()> {
        let keys = [Key::Net(id.to_string())];
        let staged = self.stage(st, &keys, |st| plan_remove(st, id))?;
        let net = self
            .apply_staged(st, staged, FirewallFollows::Teardown("remove network"))
            .await?
            .plan
            .removed;
        // plughost: a plugin's network is the plugin's to take down.
        self.remote_network_removed(&net).await;
        let Some(b) = net.bridge() else {
            return Ok(());
        };
        if !b.adopted {
            if let Err(e) = self.kernel.delete_link(b.name.as_str()).await {
                tracing::warn!("remove network {}: {e}", net.name);
            }
            return Ok(());
        }
        // A bridge ferry did not make stays, as it was before: without ferry's gateway
        // address and what ferry turned on for it.
        let gateway = bridge_spec(&net).and_then(|s| s.gateway);
        if let Err(e) = self.hand_back_bridge(b.name.as_str(), gateway).await {
            tracing::warn!("remove network {}: {e}", net.name);
        }
        Ok(())
    }

    /// Remove every unused user network that passes `keep`; returns their names.
    /// An overlay is unused when no host has an endpoint on it (etcd's records decide,
    /// as for `network rm`) and no Docker network on this host maps onto it.
    pub async fn prune_networks(
        &self,
        matches: impl Fn(&Network) -> std::result::Result<bool, CoreError>,
    ) -> Result<Vec<String>> {
        let mut st = self.state.lock().await;
        let (mut ids, mut overlays) = (vec![], vec![]);
        for n in st.networks.values().filter(|n| !n.predefined) {
            if !matches(n)? || !st.users_of(&n.id).is_empty() || st.docker_managed(&n.id) {
                continue;
            }
            match n.overlay() {
                None => ids.push(n.id.clone()),
                Some(_) if st.docker_endpoints_on(&n.id) == 0 => {
                    if docker_mapping(&st, &n.id).is_none() {
                        overlays.push((n.id.clone(), n.name.clone()));
                    }
                }
                Some(_) => {}
            }
        }
        let mut names = vec![];
        for id in ids {
            let name = st.networks[&id].name.clone();
            self.remove_network_locked(&mut st, &id).await?;
            names.push(name);
        }
        drop(st);
        names.extend(self.prune_overlays(overlays).await);
        Ok(names)
    }

    /// Overlays no sandbox here uses: removed from the cluster unless another host's
    /// sandboxes are on them (then kept, as `network rm` would refuse). Prune goes on
    /// past a refusal; the names of those removed.
    async fn prune_overlays(&self, candidates: Vec<(String, String)>) -> Vec<String> {
        let mut removed = vec![];
        for (id, name) in candidates {
            match self.remove_overlay(&id).await {
                Ok(()) => removed.push(name),
                // Another host has an endpoint on it, or removed it first: not prune's.
                Err(Error::Cluster(
                    ClusterError::InUse { .. } | ClusterError::NoSuchNetwork(_),
                )) => {}
                Err(e) => tracing::warn!("network prune: overlay {name} kept: {e}"),
            }
        }
        removed
    }
}

/// The Docker network on this host that maps onto overlay `id`, if one does.
fn docker_mapping(st: &crate::state::State, id: &str) -> Option<String> {
    st.plugin
        .networks
        .values()
        .find(|d| d.overlay.as_deref() == Some(id))
        .map(|d| d.id.clone())
}
