//! NetworkDriver: CreateNetwork and DeleteNetwork.

use std::collections::BTreeMap;

use ferry_core::docker::plugin::{
    check_id, flag_option, generic_options, parse_cidr_addr, CreateNetworkRequest, EndpointRef,
    OPT_ENABLE_IPV6, OPT_INTERNAL,
};
use ferry_core::ipam::pools::overlaps;
use ferry_core::ipam::AddressPool;
use ferry_core::model::{IpamEcho, Network, NetworkKind};
use ferry_core::plan::docker as docker_plan;
use ferry_core::remote::{DockerNetwork, DOCKER_IPAM_OWNER, OPT_OVERLAY};
use ferry_core::validate::{bridge_conf, first_host, parse_subnet, OPT_BRIDGE_NAME};
use ferry_core::CoreError;
use ferry_kernel::KernelOps;

use super::{no_ipv6, taken_subnets};
use crate::error::Result;
use crate::ops::{now, Daemon, FirewallFollows};
use crate::state::{Key, State};
use ferry_core::plan::network::bridge_spec;

/// What a CreateNetwork asks for, checked without the state: the one IPv4 subnet, its
/// gateway and aux addresses, the options and the bridge they name.
struct Asked {
    subnet: ipnet::Ipv4Net,
    gateway: Option<std::net::Ipv4Addr>,
    aux: Vec<std::net::Ipv4Addr>,
    options: BTreeMap<String, String>,
    bridge: ferry_core::model::BridgeConf,
    /// `-o bridge=`/`com.docker.network.bridge.name`: the user's bridge, never made.
    user_bridge: bool,
    internal: bool,
}

impl Asked {
    fn from_request(id: &str, req: &CreateNetworkRequest) -> std::result::Result<Asked, CoreError> {
        let opts = req.options.as_ref();
        if flag_option(opts, OPT_ENABLE_IPV6)
            || req.ipv6_data.as_ref().is_some_and(|v| !v.is_empty())
        {
            return Err(no_ipv6());
        }
        let v4 = req.ipv4_data.clone().unwrap_or_default();
        let [data] = v4.as_slice() else {
            return Err(CoreError::Invalid(format!(
                "ferry supports exactly one IPv4 subnet per network, Docker sent {}",
                v4.len()
            )));
        };
        let subnet = parse_subnet(&data.pool)?;
        let gateway = match data.gateway.trim() {
            "" => None,
            g => Some(parse_cidr_addr("gateway", g)?.addr()),
        };
        if let Some(g) = gateway {
            if !subnet.contains(&g) || g == subnet.network() || g == subnet.broadcast() {
                return Err(CoreError::GatewayOutOfRange(data.gateway.clone()));
            }
        }
        let aux = data
            .aux_addresses
            .iter()
            .flat_map(|m| m.values())
            .map(|a| parse_cidr_addr("aux address", a).map(|n| n.addr()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let options = generic_options(opts)?;
        let bridge = bridge_conf(id, &options)?;
        Ok(Asked {
            subnet,
            gateway,
            aux,
            user_bridge: options.contains_key(OPT_BRIDGE_NAME),
            options,
            bridge,
            internal: flag_option(opts, OPT_INTERNAL),
        })
    }

    fn network(self, id: &str, pool: AddressPool) -> Network {
        Network {
            id: id.to_string(),
            name: format!("docker-{}", &id[..12]),
            created: now().0,
            kind: NetworkKind::Bridge(self.bridge),
            internal: self.internal,
            attachable: false,
            predefined: false,
            labels: BTreeMap::new(),
            options: self.options,
            ipam_options: None,
            ipam_echo: vec![IpamEcho {
                subnet: Some(pool.subnet.to_string()),
                ip_range: pool.range.map(|r| r.to_string()),
                gateway: Some(pool.gateway.to_string()),
            }],
            pool: Some(pool),
            ipam_plugin: None,
        }
    }
}

/// The network's addresses: the pool Docker's RequestPool bound to this subnet (taken
/// out of its record), or a new one that overlaps nothing.
fn pool_for(
    st: &mut crate::state::Desired,
    bound: Option<&String>,
    id: &str,
    a: &Asked,
) -> std::result::Result<AddressPool, CoreError> {
    if let Some(pid) = bound {
        let rec = st.plugin.pools.get_mut(pid).expect("found");
        rec.network_id = Some(id.to_string());
        let mut pool = rec.pool.take().expect("unbound pools hold addresses");
        if let Some(g) = a.gateway {
            pool.gateway = g.into();
        }
        return Ok(pool);
    }
    let subnet = a.subnet.into();
    if taken_subnets(st).iter().any(|t| overlaps(t, &subnet)) {
        return Err(CoreError::PoolOverlap);
    }
    let gateway = a.gateway.map_or_else(|| first_host(subnet), Into::into);
    let mut pool = AddressPool::new(subnet, gateway, None);
    for ip in &a.aux {
        let _ = pool.allocate_static((*ip).into(), DOCKER_IPAM_OWNER);
    }
    Ok(pool)
}

/// A bridge holds one network.
fn bridge_free(st: &State, asked: &Asked) -> Result<()> {
    let taken = st
        .networks
        .values()
        .filter_map(|n| n.bridge())
        .any(|b| b.name == asked.bridge.name);
    match taken {
        false => Ok(()),
        true => Err(CoreError::Invalid(format!(
            "bridge {} is used by another network",
            asked.bridge.name
        ))
        .into()),
    }
}

/// The pool Docker asked ferry's IPAM for with this network's subnet, if one is held.
fn pool_of_subnet(st: &State, asked: &Asked) -> Option<String> {
    st.plugin
        .pools
        .values()
        .find(|p| {
            !p.released
                && p.pool
                    .as_ref()
                    .is_some_and(|a| a.subnet == asked.subnet.into())
        })
        .map(|p| p.id.clone())
}

impl<K: KernelOps> Daemon<K> {
    pub async fn plugin_create_network(&self, req: CreateNetworkRequest) -> Result<()> {
        let id = req.network_id.clone();
        check_id("network ID", &id)?;
        let mut st = self.state.lock().await;
        if st.networks.contains_key(&id) {
            if st.docker_managed(&id) {
                return Ok(());
            }
            return Err(CoreError::Invalid(format!("network {id} already exists in ferry")).into());
        }
        if st
            .plugin
            .networks
            .get(&id)
            .is_some_and(|n| n.overlay.is_some())
        {
            return Ok(());
        }
        let options = generic_options(req.options.as_ref())?;
        if let Some(name) = options.get(OPT_OVERLAY) {
            drop(st);
            return self
                .plugin_create_overlay_network(&id, &req, &options, name)
                .await;
        }
        let asked = Asked::from_request(&id, &req)?;
        bridge_free(&st, &asked)?;
        if asked.user_bridge {
            self.check_user_bridge(asked.bridge.name.as_str()).await?;
        }
        let mut keys = vec![Key::Net(id.clone()), Key::PluginNet(id.clone())];
        let bound = pool_of_subnet(&st, &asked);
        keys.extend(bound.iter().map(|pid| Key::PluginPool(pid.clone())));
        let staged = self.stage(&mut st, &keys, |st| {
            let pool = pool_for(st, bound.as_ref(), &id, &asked)?;
            let owns_bridge = !asked.user_bridge;
            let network = asked.network(&id, pool);
            let spec = bridge_spec(&network);
            st.networks.insert(id.clone(), network);
            st.plugin.networks.insert(
                id.clone(),
                DockerNetwork {
                    id: id.clone(),
                    pool_id: bound,
                    owns_bridge,
                    overlay: None,
                },
            );
            spec.ok_or_else(|| CoreError::Invalid("a Docker plugin network is a bridge".into()))
        })?;
        let applied = self
            .apply_staged(&mut st, staged, FirewallFollows::Adds)
            .await?;
        if let Err(e) = self.make_bridge(&applied.plan).await {
            self.take_back(&mut st, applied.before, &keys, "create network: undo")
                .await;
            return Err(e);
        }
        Ok(())
    }

    /// `-o bridge=NAME`: a Linux bridge the user made, which must exist and be a bridge.
    async fn check_user_bridge(&self, name: &str) -> Result<()> {
        match self.kernel.link_kind(name).await? {
            None => Err(CoreError::Invalid(format!(
                "bridge {name} does not exist: with -o bridge={name} ferry uses a Linux bridge you made; create it first (ip link add {name} type bridge)"
            ))
            .into()),
            Some(k) if k != "bridge" => Err(CoreError::Invalid(format!(
                "{name} is not a bridge (it is a {} link)",
                if k.is_empty() { "physical" } else { &k }
            ))
            .into()),
            Some(_) => Ok(()),
        }
    }

    /// Removes the network and whatever Docker forgot on it (endpoints whose
    /// DeleteEndpoint failed); a network already gone is success.
    pub async fn plugin_delete_network(&self, r: EndpointRef) -> Result<()> {
        let id = r.network_id;
        let mut st = self.state.lock().await;
        if !st.networks.contains_key(&id) {
            // Gone already, or an overlay's mapping (the overlay stays for other hosts):
            // only Docker's record of it, and what Docker forgot on the overlay, is left.
            if !st.plugin.networks.contains_key(&id) {
                return Ok(());
            }
            let keys = docker_plan::forget_network_keys(&st, &id);
            let staged = self.stage(&mut st, &keys, |st| {
                Ok(docker_plan::plan_forget_network(st, &id))
            })?;
            let links = self
                .apply_staged(&mut st, staged, FirewallFollows::Teardown("delete network"))
                .await?
                .plan;
            drop(st);
            for l in links {
                if let Err(e) = self.kernel.delete_link(&l).await {
                    tracing::warn!("delete network {id}: {e}; reconcile will remove it");
                }
            }
            return Ok(());
        }
        let keys = docker_plan::delete_network_keys(&st, &id);
        let staged = self.stage(&mut st, &keys, |st| {
            docker_plan::plan_delete_network(st, &id)
        })?;
        let fw = FirewallFollows::Teardown("delete network");
        let plan = self.apply_staged(&mut st, staged, fw).await?.plan;
        drop(st);
        let errors = self
            .unmake_network(&plan.links, &plan.removed, plan.owns_bridge, plan.gateway)
            .await;
        if !errors.is_empty() {
            tracing::warn!(
                "delete network {}: {}; reconcile will remove the rest",
                plan.removed.name,
                errors.join("; ")
            );
        }
        Ok(())
    }

    /// The kernel half of a delete: the forgotten endpoints' links, then the bridge
    /// (ferry's, deleted; the user's, handed back without ferry's address). Every error.
    async fn unmake_network(
        &self,
        links: &[String],
        net: &Network,
        owns_bridge: bool,
        gateway: Option<ipnet::IpNet>,
    ) -> Vec<String> {
        let mut errors = vec![];
        for l in links {
            if let Err(e) = self.kernel.delete_link(l).await {
                errors.push(e.to_string());
            }
        }
        let undone = match (owns_bridge, net.bridge()) {
            (true, Some(b)) => self
                .kernel
                .delete_link(b.name.as_str())
                .await
                .map_err(|e| e.to_string()),
            (false, Some(b)) => self
                .hand_back_bridge(b.name.as_str(), gateway)
                .await
                .map_err(|e| e.to_string()),
            _ => Ok(()),
        };
        errors.extend(undone.err());
        errors
    }
}
