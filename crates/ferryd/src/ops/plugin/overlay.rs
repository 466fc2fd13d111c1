//! Docker networks that are a host's view of a ferry overlay (`-o ferry.overlay=NAME`).
//!
//! Design note. dockerd 20.10 shares a network between hosts only through a global-scope
//! driver, and that needs its deprecated `--cluster-store` (libkv on etcd's v2 API) and
//! gives every host's dockerd the pool and network IDs one host's plugin made. ferry's
//! plugin stays local-scope instead: each dockerd makes its own Docker network with the
//! same `docker network create -d ferry --ipam-driver ferry --subnet S -o ferry.overlay=NAME`,
//! and each host's ferryd maps it onto the one overlay NAME, which lives in etcd as every
//! overlay does (made by the first such create if no host had it). Docker's endpoints are
//! then endpoints on the overlay's local copy (its bridge, its firewall rules), published
//! to etcd like a sandbox's, so every host's tunnel reaches them.
//!
//! Addresses must come from ferry's IPAM: Docker's own would hand the same addresses to
//! containers on every host. ferry's IPAM binds a pool whose subnet is an overlay's to that
//! overlay, and hands out addresses in this host's block of it (claimed in etcd on first
//! use, as for a sandbox); the gateway is the overlay's, the same on every host.
//!
//! Removing the Docker network forgets only the mapping: other hosts' containers may use
//! the overlay, which goes with `ferry network rm` once no host has an endpoint on it.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferry_core::docker::network::{IpamConfigReq, IpamReq, NetworkCreateRequest};
use ferry_core::docker::plugin::{
    flag_option, parse_cidr_addr, CreateNetworkRequest, LOCAL_ADDRESS_SPACE, OPT_INTERNAL,
};
use ferry_core::remote::{DockerNetwork, OPT_OVERLAY};
use ferry_core::validate::parse_subnet;
use ferry_core::CoreError;
use ferry_kernel::KernelOps;

use crate::error::Result;
use crate::ops::Daemon;
use crate::overlay::{blocking, Overlay};
use crate::state::Key;

/// What a CreateNetwork naming an overlay asks for.
struct Asked {
    overlay: String,
    subnet: ipnet::Ipv4Net,
    gateway: Option<std::net::Ipv4Addr>,
    internal: bool,
    /// The `-o` pairs other than `ferry.overlay` (the MTU, say), for a new overlay.
    options: BTreeMap<String, String>,
}

fn invalid(msg: String) -> crate::error::Error {
    CoreError::Invalid(msg).into()
}

impl Asked {
    fn from_request(
        req: &CreateNetworkRequest,
        options: &BTreeMap<String, String>,
        overlay: &str,
    ) -> std::result::Result<Asked, CoreError> {
        let v4 = req.ipv4_data.clone().unwrap_or_default();
        let [data] = v4.as_slice() else {
            return Err(CoreError::Invalid(format!(
                "ferry supports exactly one IPv4 subnet per network, Docker sent {}",
                v4.len()
            )));
        };
        if data.address_space != LOCAL_ADDRESS_SPACE {
            return Err(CoreError::Invalid(format!(
                "-o {OPT_OVERLAY}={overlay} needs ferry's IPAM: create the network with --ipam-driver ferry (Docker's own IPAM would give containers on every host the same addresses)"
            )));
        }
        let gateway = match data.gateway.trim() {
            "" => None,
            g => Some(parse_cidr_addr("gateway", g)?.addr()),
        };
        let mut options = options.clone();
        options.remove(OPT_OVERLAY);
        Ok(Asked {
            overlay: overlay.to_string(),
            subnet: parse_subnet(&data.pool)?,
            gateway,
            internal: flag_option(req.options.as_ref(), OPT_INTERNAL),
            options,
        })
    }

    /// `network create -d overlay` for an overlay no host has yet.
    fn create_request(&self) -> NetworkCreateRequest {
        NetworkCreateRequest {
            name: self.overlay.clone(),
            driver: Some("overlay".into()),
            ipam: Some(IpamReq {
                config: Some(vec![IpamConfigReq {
                    subnet: Some(self.subnet.to_string()),
                    gateway: self.gateway.map(|g| g.to_string()),
                    ..IpamConfigReq::default()
                }]),
                ..IpamReq::default()
            }),
            internal: self.internal,
            attachable: true,
            options: Some(self.options.clone()),
            ..NetworkCreateRequest::default()
        }
    }
}

impl<K: KernelOps> Daemon<K> {
    /// CreateNetwork with `-o ferry.overlay=NAME`: find (or make) the overlay, check that
    /// Docker's subnet, gateway and `--internal` are the overlay's, and record the mapping
    /// with the IPAM pool Docker got for it.
    pub(super) async fn plugin_create_overlay_network(
        &self,
        id: &str,
        req: &CreateNetworkRequest,
        options: &BTreeMap<String, String>,
        overlay: &str,
    ) -> Result<()> {
        let asked = Asked::from_request(req, options, overlay)?;
        let ov = self.overlay()?.clone();
        let net_id = self.overlay_for_docker(&ov, &asked).await?;
        let mut st = self.state.lock().await;
        let net = st.networks.get(&net_id).ok_or_else(|| {
            invalid(format!(
                "overlay {overlay} is not usable on this host (a local network has its name?)"
            ))
        })?;
        let pool = net.pool.as_ref().expect("overlays have a subnet");
        if pool.subnet != ipnet::IpNet::V4(asked.subnet) {
            return Err(invalid(format!(
                "overlay {overlay} has subnet {}: create the Docker network with --subnet {} (Docker asked for {})",
                pool.subnet, pool.subnet, asked.subnet
            )));
        }
        if let Some(g) = asked
            .gateway
            .filter(|g| pool.gateway != std::net::IpAddr::V4(*g))
        {
            return Err(invalid(format!(
                "overlay {overlay} has gateway {}, not {g}",
                pool.gateway
            )));
        }
        if net.internal != asked.internal {
            let (is, not) = if net.internal {
                ("", "out")
            } else {
                (" not", "")
            };
            return Err(invalid(format!(
                "overlay {overlay} is{is} internal: create the Docker network with{not} --internal"
            )));
        }
        // The pool Docker's RequestPool got for this subnet: bound to the overlay already
        // (it existed here then), or unbound (this create made the overlay).
        let used: Vec<String> = st
            .plugin
            .networks
            .values()
            .filter_map(|n| n.pool_id.clone())
            .collect();
        let subnet = pool.subnet;
        let pool_id = st
            .plugin
            .pools
            .values()
            .filter(|p| !p.released && !used.contains(&p.id))
            .find(|p| match (&p.network_id, &p.pool) {
                (Some(n), _) => *n == net_id,
                (None, Some(a)) => a.subnet == subnet,
                (None, None) => false,
            })
            .map(|p| p.id.clone());
        let mut keys = vec![Key::PluginNet(id.to_string())];
        keys.extend(pool_id.iter().cloned().map(Key::PluginPool));
        let staged = self.stage(&mut st, &keys, |st| {
            if let Some(rec) = pool_id.as_ref().and_then(|p| st.plugin.pools.get_mut(p)) {
                rec.network_id = Some(net_id.clone());
                rec.pool = None;
            }
            st.plugin.networks.insert(
                id.to_string(),
                DockerNetwork {
                    id: id.to_string(),
                    pool_id: pool_id.clone(),
                    owns_bridge: false,
                    overlay: Some(net_id.clone()),
                },
            );
            Ok(())
        })?;
        self.commit_staged(&mut st, staged).map(drop)
    }

    /// The ID of overlay `asked.overlay`: this host's copy, else the cluster's record
    /// (copied here now), else a new overlay with Docker's subnet. Two hosts racing to
    /// make it: the loser finds the winner's.
    async fn overlay_for_docker(&self, ov: &Arc<Overlay>, asked: &Asked) -> Result<String> {
        let name = asked.overlay.clone();
        if let Some(n) = self
            .state
            .lock()
            .await
            .networks
            .values()
            .find(|n| n.name == name)
        {
            if n.overlay().is_none() {
                return Err(invalid(format!(
                    "-o {OPT_OVERLAY}={name}: network {name} is not an overlay"
                )));
            }
            return Ok(n.id.clone());
        }
        let mut made = None;
        for attempt in 0..2 {
            let n = name.clone();
            let found = blocking(&ov.cluster, move |c| {
                Ok(c.view()?.networks.into_values().find(|r| r.name == n))
            })
            .await?;
            if let Some(record) = found {
                self.materialize(ov, &record).await?;
                return Ok(record.id);
            }
            if attempt > 0 {
                break;
            }
            match self.create_overlay(asked.create_request()).await {
                Ok(id) => {
                    tracing::info!("Docker plugin: made overlay {name} ({id}) for dockerd");
                    return Ok(id);
                }
                Err(e) => made = Some(e),
            }
        }
        Err(made.unwrap_or_else(|| invalid(format!("overlay {name}: not found"))))
    }
}

/// The overlay a pool's addresses belong to, if they belong to one.
pub(super) fn overlay_of_pool(st: &crate::state::State, pool_id: &str) -> Option<String> {
    let nid = st.plugin.pools.get(pool_id)?.network_id.clone()?;
    st.networks
        .get(&nid)
        .filter(|n| n.overlay().is_some())
        .map(|n| n.id.clone())
}
