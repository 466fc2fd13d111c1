//! The operations on overlays: create and remove (through etcd), a host's local copy of
//! one (made and removed as the cluster's records come and go), and what an endpoint
//! needs from etcd before it can be planned (this host's block, a static address).

use std::net::IpAddr;
use std::sync::Arc;

use ferry_core::docker::network::NetworkCreateRequest;
use ferry_core::family::{v4, v4net};
use ferry_core::model::{mac_for, Network};
use ferry_core::validate::overlay::overlay_request;
use ferry_core::CoreError;
use ferry_kernel::{KernelOps, VxlanSpec};
use ferry_overlay::cluster::NewOverlay;
use ferry_overlay::{EndpointRecord, OverlayNetwork};

use crate::error::{Error, Result};
use crate::overlay::records::{local_copy, take_block, DOCKER_HELD};
use crate::overlay::{blocking, Overlay};
use ferry_core::plan::network::bridge_spec;

use crate::ops::{new_id, now, Daemon, FirewallFollows};
use crate::state::{Key, State};

fn no_cluster() -> Error {
    CoreError::Invalid(
        "overlay networks need a cluster store: start ferryd with --cluster-store etcd://HOST:PORT --cluster-advertise IFACE|IP".into(),
    )
    .into()
}

impl<K: KernelOps> Daemon<K> {
    pub(crate) fn overlay(&self) -> Result<&Arc<Overlay>> {
        self.overlay.get().ok_or_else(no_cluster)
    }

    /// `network create --driver overlay`: the record every host sees, then this host's copy.
    pub async fn create_overlay(&self, req: NetworkCreateRequest) -> Result<String> {
        let asked = overlay_request(&req)?;
        let ov = self.overlay()?.clone();
        if self
            .state
            .lock()
            .await
            .networks
            .values()
            .any(|n| n.name == req.name)
        {
            return Err(CoreError::DuplicateNetwork(req.name.clone()).into());
        }
        let new = NewOverlay {
            id: new_id(),
            name: req.name.clone(),
            created: now().0,
            subnet: asked.subnet,
            gateway: asked.gateway,
            ip_range: asked.ip_range,
            internal: req.internal,
            attachable: req.attachable,
            mtu: asked.mtu,
            labels: req.labels.clone().unwrap_or_default(),
            options: req.options.clone().unwrap_or_default(),
            ipam_echo: asked.echo.into_iter().collect(),
        };
        let net = blocking(&ov.cluster, move |c| c.create_network(&new)).await?;
        // The cluster has it now, whatever this host's kernel says: the error says so.
        self.materialize(&ov, &net)
            .await
            .map_err(|e| Error::NotHere {
                network: net.name.clone(),
                cause: Box::new(e),
            })?;
        Ok(net.id)
    }

    /// `network rm` of an overlay: refused while any host has an endpoint on it.
    pub(crate) async fn remove_overlay(&self, id: &str) -> Result<()> {
        let ov = self.overlay()?.clone();
        let id_owned = id.to_string();
        blocking(&ov.cluster, move |c| c.remove_network(&id_owned)).await?;
        self.dematerialize(id).await
    }

    /// Make this host's copy of `net` if it has none, and its kernel objects either way.
    pub(crate) async fn materialize(&self, ov: &Overlay, net: &OverlayNetwork) -> Result<()> {
        let mut st = self.state.lock().await;
        if let Some(clash) = st
            .networks
            .values()
            .find(|n| n.name == net.name && n.id != net.id)
        {
            tracing::error!(
                "overlay {}: a local network {} has its name; it is not joined on this host",
                net.name,
                clash.id
            );
            return Ok(());
        }
        if !st.networks.contains_key(&net.id) {
            let keys = [Key::Net(net.id.clone())];
            let staged = self.stage(&mut st, &keys, |st| {
                st.networks
                    .insert(net.id.clone(), local_copy(net, ov.mtu_for(net.mtu)));
                Ok(())
            })?;
            self.apply_staged(&mut st, staged, FirewallFollows::Adds)
                .await?;
        }
        self.program_overlay(&st, ov, &net.id).await
    }

    /// The bridge and the VXLAN device of a local overlay copy (its firewall elements
    /// went in when the copy was committed).
    pub(crate) async fn program_overlay(&self, st: &State, ov: &Overlay, id: &str) -> Result<()> {
        let net = &st.networks[id];
        let (Some(spec), Some(conf), Some(bridge)) =
            (bridge_spec(net), net.overlay(), net.bridge())
        else {
            return Ok(());
        };
        self.make_bridge(&spec).await?;
        // A device made anew (deleted by hand, say) holds none of the entries it had.
        if self.kernel.link_kind(conf.vxlan.as_str()).await?.is_none() {
            ov.forget_device(conf.vxlan.as_str()).await;
        }
        self.kernel
            .ensure_vxlan(&VxlanSpec {
                name: conf.vxlan.to_string(),
                vni: conf.vni,
                local: ov.cluster.addr,
                port: ov.vxlan_port,
                mtu: bridge.mtu,
            })
            .await?;
        self.answer_for_remote_addresses(bridge.name.as_str()).await
    }

    /// The bridge answers its sandboxes' ARP for addresses routed to other hosts (proxy
    /// ARP, at once rather than after the kernel's default random delay of up to 0.8 s),
    /// so that a remote sandbox looks on-link; a local sandbox's own answer is the only
    /// one for a local address (the kernel proxies only for a route out of another
    /// device).
    async fn answer_for_remote_addresses(&self, bridge: &str) -> Result<()> {
        self.kernel
            .sysctl(&["net", "ipv4", "conf", bridge, "proxy_arp"], "1")
            .await?;
        self.kernel
            .sysctl(&["net", "ipv4", "neigh", bridge, "proxy_delay"], "0")
            .await?;
        Ok(())
    }

    /// Remove this host's copy of an overlay the cluster no longer has: its record and
    /// firewall elements, then its VXLAN device and bridge. Kept (and said) while
    /// sandboxes here are still on it. Every device is tried; what could not be removed
    /// comes back as the error.
    pub(crate) async fn dematerialize(&self, id: &str) -> Result<()> {
        let mut st = self.state.lock().await;
        let Some(net) = st.networks.get(id).filter(|n| n.overlay().is_some()) else {
            return Ok(());
        };
        let name = net.name.clone();
        if !st.users_of(id).is_empty() || st.docker_endpoints_on(id) > 0 {
            tracing::warn!("overlay {name} is gone from the cluster but sandboxes here are on it: kept until they leave");
            return Ok(());
        }
        let left_here = |cause: Error| Error::LeftHere {
            network: name.clone(),
            cause: Box::new(cause),
        };
        let net = self.forget_copy(&mut st, id).await.map_err(left_here)?;
        let mut failed = None;
        let vxlan = net.overlay().map(|o| o.vxlan.clone());
        let devices = [vxlan.clone(), net.bridge().map(|b| b.name.clone())];
        for dev in devices.into_iter().flatten() {
            match (self.kernel.delete_link(dev.as_str()).await, &failed) {
                (Ok(()), _) => {}
                (Err(e), None) => failed = Some(e),
                (Err(e), Some(_)) => tracing::warn!("remove overlay {name}: {e}"),
            }
        }
        if let (Some(o), Some(vxlan)) = (self.overlay.get(), vxlan) {
            o.forget_device(vxlan.as_str()).await;
        }
        failed.map_or(Ok(()), |e| Err(left_here(e.into())))
    }

    /// The local copy's record out of the store and its elements out of the firewall;
    /// the network as it was.
    async fn forget_copy(&self, st: &mut State, id: &str) -> Result<Network> {
        let keys = [Key::Net(id.to_string())];
        let staged = self.stage(st, &keys, |st| {
            st.networks
                .remove(id)
                .ok_or_else(|| CoreError::NoSuchNetwork(id.to_string()))
        })?;
        let fw = FirewallFollows::Teardown("remove overlay");
        Ok(self.apply_staged(st, staged, fw).await?.plan)
    }

    /// A plan refused with `e`: when it is an overlay out of this host's addresses (other
    /// operations took the last ones between the check before planning and the plan),
    /// this host claims another block and the caller plans again (true).
    pub(crate) async fn claimed_more(&self, e: &Error) -> Result<bool> {
        let Error::Core(CoreError::NetworkFull(name)) = e else {
            return Ok(false);
        };
        let overlay = {
            let st = self.state.lock().await;
            st.network_id(name)
                .is_ok_and(|id| st.networks[&id].overlay().is_some())
        };
        if !overlay {
            return Ok(false);
        }
        self.prepare_overlay(name, None, "", &[]).await?;
        Ok(true)
    }

    /// What an endpoint on `net_ref` needs from the cluster before it is planned: this
    /// host's block in the network, and a static address claimed. Nothing for other
    /// networks.
    pub(crate) async fn prepare_overlay(
        &self,
        net_ref: &str,
        static_ip: Option<IpAddr>,
        sandbox: &str,
        aliases: &[String],
    ) -> Result<()> {
        // The overlay's address blocks are IPv4 (an IPv6 address is in none of them).
        let static_ip = static_ip.and_then(v4);
        let (id, have, full, in_block) = {
            let st = self.state.lock().await;
            let Ok(id) = st.network_id(net_ref) else {
                return Ok(());
            };
            let net = &st.networks[&id];
            let (Some(_), Some(pool)) = (net.overlay(), &net.pool) else {
                return Ok(());
            };
            let have: Vec<ipnet::Ipv4Net> = pool
                .range
                .iter()
                .chain(&pool.more)
                .filter_map(|n| v4net(*n))
                .collect();
            let in_block = static_ip.is_some_and(|ip| have.iter().any(|b| b.contains(&ip)));
            let full = static_ip.is_none() && !have.is_empty() && !pool.has_free_dynamic();
            (id, have, full, in_block)
        };
        let ov = self.overlay()?.clone();
        // The view may not have caught up with a network this host just created: ask etcd.
        let record = match ov.view().networks.get(&id).cloned() {
            Some(r) => r,
            None => {
                let fresh = blocking(&ov.cluster, |c| c.view()).await?;
                fresh
                    .networks
                    .get(&id)
                    .cloned()
                    .ok_or(ClusterGone(id.clone()))?
            }
        };
        // A first block, or another when those held are full.
        if have.is_empty() || full {
            let r = record.clone();
            let held = have.clone();
            let block = blocking(&ov.cluster, move |c| c.claim_block(&r, &held)).await?;
            let mut st = self.state.lock().await;
            let keys = [Key::Net(id.clone())];
            let staged = self.stage(&mut st, &keys, |st| {
                if let Some(pool) = st.networks.get_mut(&id).and_then(|n| n.pool.as_mut()) {
                    take_block(pool, block);
                }
                Ok(())
            })?;
            self.commit_staged(&mut st, staged)?;
        }
        let Some(ip) = static_ip.filter(|_| !in_block) else {
            return Ok(());
        };
        let ep = EndpointRecord {
            network: id,
            ip,
            mac: mac_for(ip.into()),
            node: ov.node().to_string(),
            vtep: ov.cluster.addr,
            sandbox: sandbox.to_string(),
            names: std::iter::once(sandbox.to_string())
                .filter(|s| s != DOCKER_HELD)
                .chain(aliases.iter().cloned())
                .collect(),
        };
        blocking(&ov.cluster, move |c| c.claim_static(&record, &ep)).await?;
        Ok(())
    }
}

/// An overlay this host still has a copy of, but the cluster does not.
#[derive(Debug)]
struct ClusterGone(String);

impl From<ClusterGone> for Error {
    fn from(g: ClusterGone) -> Error {
        CoreError::NoSuchNetwork(g.0).into()
    }
}
