//! The Docker plugin's operations: what dockerd's NetworkDriver and IpamDriver calls
//! do to ferry's state and kernel.
//!
//! Mechanism. A Docker network is a ferry network with Docker's ID (bridge, subnet,
//! address pool), plus a `DockerNetwork` record saying Docker owns it. A Docker
//! endpoint is a `DockerEndpoint` holding a model `Endpoint`. Each call follows the
//! core's rule: validate, change a copy of the state, commit the changed keys in one
//! store transaction, then program the kernel; if the kernel refuses, state and store
//! go back. The kernel work is small: CreateNetwork makes (or adopts) the bridge, Join
//! makes a veth pair in ferryd's namespace (dockerd moves one end into the container and
//! configures it), DeleteEndpoint and DeleteNetwork delete what those made.
//!
//! Docker's orders. Docker releases IPAM before it deletes a network, rolls back its own
//! failures with DeleteEndpoint / ReleaseAddress / ReleasePool, ignores teardown errors
//! and may repeat calls. So every teardown call on something already gone succeeds,
//! every setup call repeated with the same arguments answers the same, and addresses
//! carry an owner (see ferry_core::remote) so a late release frees nothing reused.

use std::collections::BTreeMap;

use ferry_core::docker::plugin::{
    check_id, flag_option, generic_options, parse_addr, parse_cidr_addr, parse_mac, portmap,
    CreateEndpointRequest, CreateEndpointResponse, CreateNetworkRequest, EndpointRef, InterfaceMac,
    InterfaceName, JoinRequest, JoinResponse, OperInfoResponse, ProgramExternalRequest,
    ReleaseAddressRequest, ReleasePoolRequest, RequestAddressRequest, RequestAddressResponse,
    RequestPoolRequest, RequestPoolResponse, OPT_ENABLE_IPV6, OPT_INTERNAL,
};
use ferry_core::ipam::pools::{next_pool, overlaps};
use ferry_core::ipam::AddressPool;
use ferry_core::model::{
    host_if_name, mac_for, mac_string, Driver, Endpoint, IpamEcho, LiveEndpoint, Network,
};
use ferry_core::ports::decide;
use ferry_core::remote::{
    container_if_name, DockerEndpoint, DockerNetwork, IpamPool, DOCKER_IPAM_OWNER,
};
use ferry_core::validate::{bridge_conf, first_host, parse_subnet, OPT_BRIDGE_NAME};
use ferry_core::{CoreError, IfName};
use ferry_kernel::{KernelOps, VethPairSpec};
use ipnet::Ipv4Net;
use serde_json::Value;

use super::network::bridge_spec;
use super::{new_id, now, Daemon};
use crate::error::Result;
use crate::firewall::{check_host_free, check_publishable, taken_ports};
use crate::state::{Key, State};

fn no_ipv6() -> CoreError {
    CoreError::Invalid("ferry does not support IPv6 yet: create the network without --ipv6".into())
}

fn no_pool(id: &str) -> CoreError {
    CoreError::Invalid(format!("IPAM pool {id} not found"))
}

fn no_endpoint(id: &str) -> CoreError {
    CoreError::Invalid(format!("endpoint {id} not found"))
}

/// The addresses of an IPAM pool: its own while unbound, else its network's.
fn pool_mut<'a>(st: &'a mut State, pool_id: &str) -> Option<&'a mut AddressPool> {
    let rec = st.plugin.pools.get_mut(pool_id)?;
    match rec.network_id.clone() {
        Some(nid) => st.networks.get_mut(&nid)?.pool.as_mut(),
        None => rec.pool.as_mut(),
    }
}

/// The key that holds a pool's addresses.
fn pool_key(st: &State, pool_id: &str) -> Key {
    match st
        .plugin
        .pools
        .get(pool_id)
        .and_then(|r| r.network_id.clone())
    {
        Some(nid) => Key::Net(nid),
        None => Key::PluginPool(pool_id.to_string()),
    }
}

/// Subnets in use: every network's and every unbound pool's.
fn taken_subnets(st: &State) -> Vec<Ipv4Net> {
    st.networks
        .values()
        .filter_map(Network::subnet)
        .chain(
            st.plugin
                .pools
                .values()
                .filter_map(|p| p.pool.as_ref().map(|a| a.subnet)),
        )
        .collect()
}

fn with_len(ip: std::net::Ipv4Addr, pool: &AddressPool) -> String {
    format!("{ip}/{}", pool.subnet.prefix_len())
}

impl<K: KernelOps> Daemon<K> {
    // ---- IpamDriver ----

    pub async fn plugin_request_pool(
        &self,
        req: RequestPoolRequest,
    ) -> Result<RequestPoolResponse> {
        if req.v6 {
            return Err(no_ipv6().into());
        }
        let mut st = self.state.lock().await;
        let routes = self.kernel.route_destinations().await?;
        let taken = taken_subnets(&st);
        let mut cursor = st.meta.pool_cursor;
        let subnet = match req.pool.trim() {
            "" => {
                let (subnet, c) = next_pool(cursor, &taken, &routes)?;
                cursor = Some(c);
                subnet
            }
            s => {
                let subnet = parse_subnet(s)?;
                if subnet.prefix_len() > 30 {
                    return Err(CoreError::BadValue {
                        what: "subnet",
                        value: s.into(),
                        why: "it has room for no host".into(),
                    }
                    .into());
                }
                if taken.iter().any(|t| overlaps(t, &subnet)) {
                    return Err(CoreError::PoolOverlap.into());
                }
                subnet
            }
        };
        let range = match req.sub_pool.trim() {
            "" => None,
            r => {
                let range = parse_subnet(r).map_err(|_| CoreError::BadValue {
                    what: "ip-range",
                    value: r.into(),
                    why: "invalid CIDR address".into(),
                })?;
                if !(subnet.contains(&range.network()) && range.prefix_len() >= subnet.prefix_len())
                {
                    return Err(CoreError::RangeOutOfSubnet {
                        range: r.into(),
                        subnet: subnet.to_string(),
                    }
                    .into());
                }
                Some(range)
            }
        };
        let id = format!("ferry-{}", &new_id()[..24]);
        st.plugin.pools.insert(
            id.clone(),
            IpamPool {
                id: id.clone(),
                pool: Some(AddressPool::new(subnet, first_host(subnet), range)),
                network_id: None,
                released: false,
            },
        );
        st.meta.pool_cursor = cursor;
        self.commit(&st, &[Key::PluginPool(id.clone()), Key::Meta])?;
        Ok(RequestPoolResponse {
            pool_id: id,
            pool: subnet.to_string(),
            data: BTreeMap::new(),
        })
    }

    pub async fn plugin_request_address(
        &self,
        req: RequestAddressRequest,
    ) -> Result<RequestAddressResponse> {
        let mut st = self.state.lock().await;
        let key = pool_key(&st, &req.pool_id);
        let net_name = match &key {
            Key::Net(id) => st.networks[id].name.clone(),
            _ => req.pool_id.clone(),
        };
        let pool = pool_mut(&mut st, &req.pool_id).ok_or_else(|| no_pool(&req.pool_id))?;
        let asked = match req.address.trim() {
            "" => None,
            a => Some(parse_addr("address", a)?),
        };
        let ip = if req.is_gateway() {
            let ip = asked.unwrap_or_else(|| first_host(pool.subnet));
            let s = pool.subnet;
            if !s.contains(&ip) || ip == s.network() || ip == s.broadcast() {
                return Err(CoreError::GatewayOutOfRange(ip.to_string()).into());
            }
            if pool.owner(ip).is_some() {
                return Err(CoreError::AddressInUse(ip).into());
            }
            pool.gateway = ip;
            ip
        } else if let Some(ip) = asked {
            if pool.owner(ip).is_some() {
                return Err(CoreError::AddressInUse(ip).into());
            }
            pool.allocate_static(ip, DOCKER_IPAM_OWNER)?;
            ip
        } else {
            pool.allocate_dynamic(DOCKER_IPAM_OWNER, &net_name)?
        };
        let address = with_len(ip, pool);
        self.commit(&st, &[key])?;
        Ok(RequestAddressResponse {
            address,
            data: BTreeMap::new(),
        })
    }

    /// Frees an address only while no endpoint holds it; anything else (the gateway, an
    /// address already free or handed out again) is left alone, successfully.
    pub async fn plugin_release_address(&self, req: ReleaseAddressRequest) -> Result<()> {
        let mut st = self.state.lock().await;
        let ip = parse_addr("address", &req.address)?;
        let key = pool_key(&st, &req.pool_id);
        let Some(pool) = pool_mut(&mut st, &req.pool_id) else {
            return Ok(());
        };
        if pool.owner(ip) != Some(DOCKER_IPAM_OWNER) {
            return Ok(());
        }
        pool.release(ip);
        self.commit(&st, &[key])
    }

    /// Docker releases the pool before DeleteNetwork: a bound pool is only marked, and
    /// goes with its network.
    pub async fn plugin_release_pool(&self, req: ReleasePoolRequest) -> Result<()> {
        let mut st = self.state.lock().await;
        let Some(rec) = st.plugin.pools.get(&req.pool_id) else {
            return Ok(());
        };
        let bound = rec
            .network_id
            .as_ref()
            .is_some_and(|n| st.networks.contains_key(n));
        if bound {
            st.plugin
                .pools
                .get_mut(&req.pool_id)
                .expect("looked up")
                .released = true;
        } else {
            st.plugin.pools.remove(&req.pool_id);
        }
        self.commit(&st, &[Key::PluginPool(req.pool_id)])
    }

    // ---- NetworkDriver: networks ----

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
        let opts = req.options.as_ref();
        if flag_option(opts, OPT_ENABLE_IPV6)
            || req.ipv6_data.as_ref().is_some_and(|v| !v.is_empty())
        {
            return Err(no_ipv6().into());
        }
        let v4 = req.ipv4_data.clone().unwrap_or_default();
        let [data] = v4.as_slice() else {
            return Err(CoreError::Invalid(format!(
                "ferry supports exactly one IPv4 subnet per network, Docker sent {}",
                v4.len()
            ))
            .into());
        };
        let subnet = parse_subnet(&data.pool)?;
        let gateway = match data.gateway.trim() {
            "" => None,
            g => Some(parse_cidr_addr("gateway", g)?.addr()),
        };
        let options = generic_options(opts)?;
        let bridge = bridge_conf(&id, &options)?;
        let user_bridge = options.contains_key(OPT_BRIDGE_NAME);
        if st
            .networks
            .values()
            .filter_map(|n| n.bridge.as_ref())
            .any(|b| b.name == bridge.name)
        {
            return Err(CoreError::Invalid(format!(
                "bridge {} is used by another network",
                bridge.name
            ))
            .into());
        }
        if user_bridge {
            match self.kernel.link_kind(bridge.name.as_str()).await? {
                None => {
                    return Err(CoreError::Invalid(format!(
                        "bridge {0} does not exist: with -o bridge={0} ferry uses a Linux bridge you made; create it first (ip link add {0} type bridge)",
                        bridge.name
                    ))
                    .into())
                }
                Some(k) if k != "bridge" => {
                    return Err(CoreError::Invalid(format!(
                        "{} is not a bridge (it is a {} link)",
                        bridge.name,
                        if k.is_empty() { "physical" } else { &k }
                    ))
                    .into())
                }
                Some(_) => {}
            }
        }
        let before = st.clone();
        let mut keys = vec![Key::Net(id.clone()), Key::PluginNet(id.clone())];
        let bound = st
            .plugin
            .pools
            .values()
            .find(|p| !p.released && p.pool.as_ref().is_some_and(|a| a.subnet == subnet))
            .map(|p| p.id.clone());
        let pool = match &bound {
            Some(pid) => {
                let rec = st.plugin.pools.get_mut(pid).expect("found");
                rec.network_id = Some(id.clone());
                keys.push(Key::PluginPool(pid.clone()));
                let mut pool = rec.pool.take().expect("unbound pools hold addresses");
                if let Some(g) = gateway {
                    pool.gateway = g;
                }
                pool
            }
            None => {
                if taken_subnets(&st).iter().any(|t| overlaps(t, &subnet)) {
                    return Err(CoreError::PoolOverlap.into());
                }
                let mut pool =
                    AddressPool::new(subnet, gateway.unwrap_or_else(|| first_host(subnet)), None);
                for aux in data.aux_addresses.iter().flat_map(|m| m.values()) {
                    let ip = parse_cidr_addr("aux address", aux)?.addr();
                    let _ = pool.allocate_static(ip, DOCKER_IPAM_OWNER);
                }
                pool
            }
        };
        let network = Network {
            id: id.clone(),
            name: format!("docker-{}", &id[..12]),
            created: now().0,
            driver: Driver::Bridge,
            internal: flag_option(opts, OPT_INTERNAL),
            attachable: false,
            predefined: false,
            labels: BTreeMap::new(),
            options,
            ipam_options: None,
            ipam_echo: vec![IpamEcho {
                subnet: Some(pool.subnet.to_string()),
                ip_range: pool.range.map(|r| r.to_string()),
                gateway: Some(pool.gateway.to_string()),
            }],
            bridge: Some(bridge),
            pool: Some(pool),
        };
        let spec = bridge_spec(&network).expect("a bridge network");
        st.networks.insert(id.clone(), network);
        st.plugin.networks.insert(
            id.clone(),
            DockerNetwork {
                id: id.clone(),
                pool_id: bound,
                owns_bridge: !user_bridge,
            },
        );
        self.commit(&st, &keys)?;
        let existed = self.kernel.link_kind(&spec.name).await?.is_some();
        let programmed = match self.prepare_bridge(&spec).await {
            Ok(()) => self.sync_firewall(&st).await,
            Err(e) => Err(e),
        };
        if let Err(e) = programmed {
            if !existed {
                let _ = self.kernel.delete_link(&spec.name).await;
            }
            self.rollback(&mut st, before, &keys);
            self.sync_firewall_or_warn(&st, "create network: undo")
                .await;
            return Err(e);
        }
        Ok(())
    }

    /// Removes the network and whatever Docker forgot on it (endpoints whose
    /// DeleteEndpoint failed); a network already gone is success.
    pub async fn plugin_delete_network(&self, r: EndpointRef) -> Result<()> {
        let id = r.network_id;
        let mut st = self.state.lock().await;
        let Some(net) = st.networks.get(&id) else {
            if st.plugin.networks.remove(&id).is_some() {
                self.commit(&st, &[Key::PluginNet(id)])?;
            }
            return Ok(());
        };
        if !st.docker_managed(&id) {
            return Err(CoreError::Invalid(format!(
                "network {} was not made through the Docker plugin",
                net.name
            ))
            .into());
        }
        if !st.users_of(&id).is_empty() {
            return Err(CoreError::NetworkInUse {
                name: net.name.clone(),
                id: id.clone(),
            }
            .into());
        }
        let mut keys = vec![Key::Net(id.clone()), Key::PluginNet(id.clone())];
        let forgotten: Vec<String> = st
            .plugin
            .endpoints
            .values()
            .filter(|e| e.endpoint.network_id == id)
            .map(|e| e.id.clone())
            .collect();
        let mut links = vec![];
        for ep in &forgotten {
            if let Some(e) = st.plugin.endpoints.remove(ep) {
                links.extend(e.links());
            }
            keys.push(Key::PluginEp(ep.clone()));
        }
        let mut net = st.networks.remove(&id).expect("looked up");
        let dn = st.plugin.networks.remove(&id).expect("docker managed");
        if let Some(pid) = &dn.pool_id {
            keys.push(Key::PluginPool(pid.clone()));
            if let Some(rec) = st.plugin.pools.get_mut(pid) {
                if rec.released {
                    st.plugin.pools.remove(pid);
                } else {
                    // Docker has not released the pool yet: it keeps its addresses.
                    rec.network_id = None;
                    rec.pool = net.pool.take();
                }
            }
        }
        self.commit(&st, &keys)?;
        self.sync_firewall_or_warn(&st, "delete network").await;
        drop(st);
        let mut errors = vec![];
        for l in &links {
            if let Err(e) = self.kernel.delete_link(l).await {
                errors.push(e.to_string());
            }
        }
        if let (true, Some(b)) = (dn.owns_bridge, &net.bridge) {
            if let Err(e) = self.kernel.delete_link(b.name.as_str()).await {
                errors.push(e.to_string());
            }
        }
        if !errors.is_empty() {
            tracing::warn!(
                "delete network {}: {}; reconcile will remove the rest",
                net.name,
                errors.join("; ")
            );
        }
        Ok(())
    }

    // ---- NetworkDriver: endpoints ----

    pub async fn plugin_create_endpoint(
        &self,
        req: CreateEndpointRequest,
    ) -> Result<CreateEndpointResponse> {
        check_id("endpoint ID", &req.endpoint_id)?;
        let iface = req.interface.clone().unwrap_or_default();
        let mut st = self.state.lock().await;
        let answer = |mac: &[u8; 6]| CreateEndpointResponse {
            interface: iface.mac_address.trim().is_empty().then(|| InterfaceMac {
                mac_address: mac_string(mac),
            }),
        };
        if let Some(e) = st.plugin.endpoints.get(&req.endpoint_id) {
            if e.endpoint.network_id == req.network_id {
                let live = e.endpoint.live.as_ref().expect("docker endpoints are live");
                return Ok(answer(&live.mac));
            }
            return Err(CoreError::Invalid(format!(
                "endpoint {} exists on another network",
                req.endpoint_id
            ))
            .into());
        }
        let net = st
            .networks
            .get(&req.network_id)
            .ok_or_else(|| CoreError::NoSuchNetwork(req.network_id.clone()))?;
        if !st.docker_managed(&req.network_id) {
            return Err(CoreError::Invalid(format!(
                "network {} was not made through the Docker plugin",
                net.name
            ))
            .into());
        }
        if !iface.address_ipv6.trim().is_empty() {
            return Err(no_ipv6().into());
        }
        if iface.address.trim().is_empty() {
            return Err(CoreError::Invalid(
                "Docker gave the endpoint no IPv4 address; ferry needs one".into(),
            )
            .into());
        }
        let addr = parse_cidr_addr("address", &iface.address)?;
        let ip = addr.addr();
        let mac = match iface.mac_address.trim() {
            "" => mac_for(ip),
            m => parse_mac(m)?,
        };
        let ports = portmap(req.options.as_ref())?;
        let internal = net.internal;
        let ep_id = req.endpoint_id.clone();
        let net_name = net.name.clone();
        let before = st.clone();
        let pool = st
            .networks
            .get_mut(&req.network_id)
            .and_then(|n| n.pool.as_mut())
            .ok_or_else(|| CoreError::Invalid(format!("network {net_name} has no subnet")))?;
        if !pool.subnet.contains(&ip) {
            return Err(CoreError::AddressOutsideSubnet(ip).into());
        }
        let ifname = IfName::new(container_if_name(&ep_id))?;
        match pool.owner(ip) {
            Some(DOCKER_IPAM_OWNER) => {
                pool.allocated.insert(ip, ep_id.clone());
            }
            Some(_) => return Err(CoreError::AddressInUse(ip).into()),
            None => pool.allocate_static(ip, &ep_id)?,
        }
        let gateway = (!internal).then_some(pool.gateway);
        let live = LiveEndpoint {
            id: ep_id.clone(),
            ip,
            prefix_len: addr.prefix_len(),
            gateway,
            mac,
            host_if: host_if_name(&ep_id),
            ifname,
            default_route: gateway.is_some(),
            published: vec![],
        };
        st.plugin.endpoints.insert(
            ep_id.clone(),
            DockerEndpoint {
                id: ep_id.clone(),
                endpoint: Endpoint {
                    network_id: req.network_id.clone(),
                    static_ip: None,
                    aliases: vec![],
                    ports,
                    live: Some(live),
                },
                joined: false,
                sandbox_key: None,
            },
        );
        let keys = [Key::Net(req.network_id), Key::PluginEp(ep_id)];
        self.commit(&st, &keys)?;
        if let Err(e) = self.sync_firewall(&st).await {
            self.rollback(&mut st, before, &keys);
            return Err(e);
        }
        Ok(answer(&mac))
    }

    pub async fn plugin_join(&self, req: JoinRequest) -> Result<JoinResponse> {
        let mut st = self.state.lock().await;
        let ep = st
            .plugin
            .endpoints
            .get(&req.endpoint_id)
            .ok_or_else(|| no_endpoint(&req.endpoint_id))?;
        let net = st
            .networks
            .get(&ep.endpoint.network_id)
            .ok_or_else(|| CoreError::NoSuchNetwork(ep.endpoint.network_id.clone()))?;
        let live = ep.endpoint.live.clone().expect("docker endpoints are live");
        let bridge = net.bridge.clone().expect("docker networks have a bridge");
        // Docker sends the port map with Join too; ProgramExternalConnectivity decides
        // the host ports later, but the bridge port must be hairpin from the start.
        let ports = match portmap(req.options.as_ref())? {
            p if p.is_empty() => ep.endpoint.ports.clone(),
            p => p,
        };
        let answer = JoinResponse {
            interface_name: InterfaceName {
                src_name: live.ifname.to_string(),
                dst_prefix: "eth".into(),
            },
            gateway: live.gateway.map(|g| g.to_string()).unwrap_or_default(),
            disable_gateway_service: live.gateway.is_none(),
        };
        if ep.joined
            && self
                .kernel
                .link_names()
                .await?
                .contains(&live.host_if.to_string())
        {
            return Ok(answer);
        }
        let before = st.clone();
        let keys = [Key::PluginEp(req.endpoint_id.clone())];
        let ep = st
            .plugin
            .endpoints
            .get_mut(&req.endpoint_id)
            .expect("looked up");
        ep.joined = true;
        ep.sandbox_key = Some(req.sandbox_key.clone()).filter(|k| !k.is_empty());
        self.commit(&st, &keys)?;
        let spec = VethPairSpec {
            bridge: bridge.name.to_string(),
            host_if: live.host_if.to_string(),
            peer_if: live.ifname.to_string(),
            peer_mac: live.mac,
            mtu: bridge.mtu,
            hairpin: !ports.is_empty(),
        };
        // What an earlier, interrupted Join may have left.
        let _ = self.kernel.delete_link(&spec.host_if).await;
        let _ = self.kernel.delete_link(&spec.peer_if).await;
        if let Err(e) = self.kernel.create_veth_pair(&spec).await {
            self.rollback(&mut st, before, &keys);
            return Err(e.into());
        }
        Ok(answer)
    }

    /// Nothing in the kernel: dockerd moves the container end back itself and
    /// DeleteEndpoint deletes the pair.
    pub async fn plugin_leave(&self, r: EndpointRef) -> Result<()> {
        let mut st = self.state.lock().await;
        match st.plugin.endpoints.get_mut(&r.endpoint_id) {
            Some(ep) if ep.joined => {
                ep.joined = false;
                self.commit(&st, &[Key::PluginEp(r.endpoint_id)])
            }
            _ => Ok(()),
        }
    }

    pub async fn plugin_delete_endpoint(&self, r: EndpointRef) -> Result<()> {
        let mut st = self.state.lock().await;
        let Some(ep) = st.plugin.endpoints.remove(&r.endpoint_id) else {
            return Ok(());
        };
        let nid = ep.endpoint.network_id.clone();
        let ferry_ipam = st
            .plugin
            .networks
            .get(&nid)
            .is_some_and(|n| n.pool_id.is_some());
        let mut keys = vec![Key::PluginEp(r.endpoint_id.clone())];
        if let (Some(pool), Some(live)) = (
            st.networks.get_mut(&nid).and_then(|n| n.pool.as_mut()),
            ep.endpoint.live.as_ref(),
        ) {
            if pool.owner(live.ip) == Some(ep.id.as_str()) {
                if ferry_ipam {
                    // Docker's ReleaseAddress follows and frees it.
                    pool.allocated.insert(live.ip, DOCKER_IPAM_OWNER.into());
                } else {
                    pool.release(live.ip);
                }
                keys.push(Key::Net(nid));
            }
        }
        self.commit(&st, &keys)?;
        self.sync_firewall_or_warn(&st, "delete endpoint").await;
        drop(st);
        for l in ep.links() {
            if let Err(e) = self.kernel.delete_link(&l).await {
                tracing::warn!("delete endpoint {}: {e}; reconcile will remove it", ep.id);
            }
        }
        Ok(())
    }

    /// Decide the host ports of `com.docker.network.portmap` (Docker publishes nothing
    /// itself for a remote driver) and record them on the endpoint.
    pub async fn plugin_program_external(&self, req: ProgramExternalRequest) -> Result<()> {
        let mut st = self.state.lock().await;
        let Some(ep) = st.plugin.endpoints.get(&req.endpoint_id) else {
            return Err(no_endpoint(&req.endpoint_id).into());
        };
        let nid = ep.endpoint.network_id.clone();
        let maps = portmap(req.options.as_ref())?;
        let net = st
            .networks
            .get(&nid)
            .ok_or_else(|| CoreError::NoSuchNetwork(nid.clone()))?;
        check_publishable(net, !maps.is_empty())?;
        let published = decide(&maps, &taken_ports(&st, &req.endpoint_id, &nid))?;
        let live = ep
            .endpoint
            .live
            .as_ref()
            .expect("docker endpoints are live");
        if ep.endpoint.ports == maps && live.published == published {
            return Ok(());
        }
        check_host_free(&published)?;
        let before = st.clone();
        let keys = [Key::PluginEp(req.endpoint_id.clone())];
        let ep = st
            .plugin
            .endpoints
            .get_mut(&req.endpoint_id)
            .expect("looked up");
        ep.endpoint.ports = maps;
        ep.endpoint.live.as_mut().expect("live").published = published;
        self.commit(&st, &keys)?;
        if let Err(e) = self.sync_firewall(&st).await {
            self.rollback(&mut st, before, &keys);
            return Err(e);
        }
        Ok(())
    }

    pub async fn plugin_revoke_external(&self, r: EndpointRef) -> Result<()> {
        let mut st = self.state.lock().await;
        let Some(live) = st
            .plugin
            .endpoints
            .get_mut(&r.endpoint_id)
            .and_then(|e| e.endpoint.live.as_mut())
        else {
            return Ok(());
        };
        if live.published.is_empty() {
            return Ok(());
        }
        live.published.clear();
        self.commit(&st, &[Key::PluginEp(r.endpoint_id)])?;
        self.sync_firewall_or_warn(&st, "revoke external connectivity")
            .await;
        Ok(())
    }

    /// Free-form facts about the endpoint (Docker shows them nowhere, but the call is
    /// mandatory); `{}` for an endpoint ferry does not know.
    pub async fn plugin_oper_info(&self, r: EndpointRef) -> Result<OperInfoResponse> {
        let st = self.state.lock().await;
        let mut value = BTreeMap::new();
        if let Some(live) = st
            .plugin
            .endpoints
            .get(&r.endpoint_id)
            .and_then(|e| e.endpoint.live.as_ref())
        {
            value.insert(
                "ferry.host_if".into(),
                Value::from(live.host_if.to_string()),
            );
            value.insert(
                "ferry.address".into(),
                Value::from(format!("{}/{}", live.ip, live.prefix_len)),
            );
            value.insert("ferry.mac".into(), Value::from(mac_string(&live.mac)));
            let published: Vec<String> = live
                .published
                .iter()
                .map(|p| {
                    format!(
                        "{}:{}->{}/{}",
                        p.host_ip_string(),
                        p.host_ports,
                        p.container_ports,
                        p.proto.as_str()
                    )
                })
                .collect();
            value.insert("ferry.published".into(), Value::from(published));
        }
        Ok(OperInfoResponse { value })
    }

    /// `ferry system cleanup`: drop everything the plugin holds for dockerd (its networks
    /// with their endpoints, links and bridges, then every IPAM pool), whatever Docker
    /// still believes. Errors come back together; every step runs.
    pub async fn plugin_forget_all(&self) -> Vec<String> {
        let mut errors = vec![];
        let nets: Vec<String> = self
            .state
            .lock()
            .await
            .plugin
            .networks
            .keys()
            .cloned()
            .collect();
        for id in nets {
            let r = EndpointRef {
                network_id: id.clone(),
                endpoint_id: String::new(),
            };
            if let Err(e) = self.plugin_delete_network(r).await {
                errors.push(format!("Docker network {id}: {e}"));
            }
        }
        let mut st = self.state.lock().await;
        let mut keys: Vec<Key> = st
            .plugin
            .pools
            .keys()
            .cloned()
            .map(Key::PluginPool)
            .collect();
        keys.extend(st.plugin.endpoints.keys().cloned().map(Key::PluginEp));
        st.plugin.pools.clear();
        let links: Vec<String> = std::mem::take(&mut st.plugin.endpoints)
            .values()
            .flat_map(|e| e.links())
            .collect();
        if let Err(e) = self.commit(&st, &keys) {
            errors.push(e.to_string());
        }
        drop(st);
        for l in links {
            if let Err(e) = self.kernel.delete_link(&l).await {
                errors.push(e.to_string());
            }
        }
        errors
    }

    /// At start. A veth pair dies with either end's namespace, so a joined Docker
    /// endpoint whose host link is gone lost its container while ferryd was away, and
    /// Docker, which gives up on an unreachable plugin after 15 s, will not say so: forget
    /// the endpoint and free its address.
    pub async fn plugin_reconcile(&self) -> Result<()> {
        let links = self.kernel.link_names().await?;
        let mut st = self.state.lock().await;
        let gone: Vec<(String, String, std::net::Ipv4Addr)> = st
            .plugin
            .endpoints
            .values()
            .filter(|e| e.joined)
            .filter_map(|e| {
                let l = e.endpoint.live.as_ref()?;
                (!links.contains(&l.host_if.to_string()))
                    .then(|| (e.id.clone(), e.endpoint.network_id.clone(), l.ip))
            })
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        let mut keys = vec![];
        for (id, nid, ip) in gone {
            tracing::info!("reconcile: Docker endpoint {id} lost its link while ferryd was away; forgetting it");
            st.plugin.endpoints.remove(&id);
            keys.push(Key::PluginEp(id.clone()));
            if let Some(pool) = st.networks.get_mut(&nid).and_then(|n| n.pool.as_mut()) {
                if pool.owner(ip) == Some(id.as_str()) {
                    pool.release(ip);
                    keys.push(Key::Net(nid));
                }
            }
        }
        self.commit(&st, &keys)
    }
}
