//! NetworkDriver: endpoints (CreateEndpoint, Join, Leave, DeleteEndpoint), their
//! published ports and EndpointOperInfo.

use std::collections::BTreeMap;

use ferry_core::docker::plugin::{
    check_id, parse_cidr_addr, parse_mac, portmap, CreateEndpointRequest, CreateEndpointResponse,
    EndpointRef, InterfaceMac, InterfaceName, JoinRequest, JoinResponse, OperInfoResponse,
    ProgramExternalRequest,
};
use ferry_core::model::{
    host_if_name, mac_for, mac_string, Endpoint, LiveEndpoint, Membership, WayOut,
};
use ferry_core::ports::decide;
use ferry_core::remote::{container_if_name, DockerEndpoint, DOCKER_IPAM_OWNER};
use ferry_core::{CoreError, IfName};
use ferry_kernel::{KernelOps, VethPairSpec};
use serde_json::Value;

use super::{docker_ep, docker_ep_mut, no_endpoint, no_ipv6};
use crate::error::Result;
use crate::ops::{Daemon, FirewallFollows};
use crate::state::{Key, State};
use ferry_core::plan::publish::{check_publishable, taken_ports};

/// The endpoint's IPv4 address and MAC as Docker's IPAM gave them (the MAC ferry's rule
/// when Docker gave none).
fn address_of(
    iface: &ferry_core::docker::plugin::EndpointInterface,
) -> std::result::Result<(ipnet::IpNet, [u8; 6]), CoreError> {
    if !iface.address_ipv6.trim().is_empty() {
        return Err(no_ipv6());
    }
    if iface.address.trim().is_empty() {
        return Err(CoreError::Invalid(
            "Docker gave the endpoint no IPv4 address; ferry needs one".into(),
        ));
    }
    let addr = ipnet::IpNet::from(parse_cidr_addr("address", &iface.address)?);
    let mac = match iface.mac_address.trim() {
        "" => mac_for(addr.addr()),
        m => parse_mac(m)?,
    };
    Ok((addr, mac))
}

/// The endpoint's address in the network's pool: one Docker's IPAM reserved passes to
/// the endpoint; a free one is taken; another endpoint's is refused.
fn take_address(
    pool: &mut ferry_core::ipam::AddressPool,
    ip: std::net::IpAddr,
    ep_id: &str,
) -> std::result::Result<(), CoreError> {
    if !pool.subnet.contains(&ip) {
        return Err(CoreError::AddressOutsideSubnet(ip));
    }
    match pool.owner(ip) {
        Some(DOCKER_IPAM_OWNER) => {
            pool.hold(ip, ep_id.to_string());
            Ok(())
        }
        Some(_) => Err(CoreError::AddressInUse(ip)),
        None => pool.allocate_static(ip, ep_id),
    }
}

/// Docker's network is not (or no more) in ferry; for one mapped onto an overlay, the
/// overlay was removed under it.
fn network_gone(docker_id: &str, net_id: &str) -> CoreError {
    if net_id == docker_id {
        return CoreError::NoSuchNetwork(docker_id.to_string());
    }
    CoreError::Invalid(format!(
        "the ferry overlay {net_id} this Docker network maps onto was removed (by ferry network rm on another host?): remove the Docker network and create it again"
    ))
}

/// A new Docker endpoint, not joined yet, on `endpoint.network_id` (an overlay's when
/// Docker's network `docker_network` maps onto one).
fn docker_endpoint(id: &str, endpoint: Endpoint, docker_network: &str) -> DockerEndpoint {
    DockerEndpoint {
        id: id.to_string(),
        docker_network: (endpoint.network_id != docker_network).then(|| docker_network.into()),
        endpoint,
        joined: false,
        sandbox_key: None,
    }
}

/// The MAC of an endpoint Docker created before on the same network (a repeated
/// CreateEndpoint is answered again); an ID taken on another network is refused.
fn known_endpoint(st: &State, ep_id: &str, net_id: &str) -> Result<Option<[u8; 6]>> {
    let Some(e) = st.plugin.endpoints.get(ep_id) else {
        return Ok(None);
    };
    if e.endpoint.network_id == net_id {
        let live = e.endpoint.live.as_ref().expect("docker endpoints are live");
        return Ok(Some(live.mac));
    }
    Err(CoreError::Invalid(format!("endpoint {ep_id} exists on another network")).into())
}

impl<K: KernelOps> Daemon<K> {
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
        // Docker's network, or the overlay it maps onto.
        let net_id = st.ferry_net_of(&req.network_id);
        if let Some(mac) = known_endpoint(&st, &req.endpoint_id, &net_id)? {
            return Ok(answer(&mac));
        }
        let net = st
            .networks
            .get(&net_id)
            .ok_or_else(|| network_gone(&req.network_id, &net_id))?;
        if !st.docker_managed(&req.network_id) {
            return Err(CoreError::Invalid(format!(
                "network {} was not made through the Docker plugin",
                net.name
            ))
            .into());
        }
        let (addr, mac) = address_of(&iface)?;
        let ip = addr.addr();
        let ports = portmap(req.options.as_ref())?;
        let internal = net.internal;
        let ep_id = req.endpoint_id.clone();
        let net_name = net.name.clone();
        let keys = [Key::Net(net_id.clone()), Key::PluginEp(ep_id.clone())];
        let ifname = IfName::new(container_if_name(&ep_id))?;
        let staged = self.stage(&mut st, &keys, |st| {
            let pool = st
                .networks
                .get_mut(&net_id)
                .and_then(|n| n.pool.as_mut())
                .ok_or_else(|| CoreError::Invalid(format!("network {net_name} has no subnet")))?;
            take_address(pool, ip, &ep_id)?;
            let gateway = (!internal).then_some(pool.gateway);
            let live = LiveEndpoint {
                id: ep_id.clone(),
                ip,
                prefix_len: addr.prefix_len(),
                gateway,
                mac,
                host_if: Some(host_if_name(&ep_id)),
                ifname,
                default_route: gateway.is_some(),
                published: vec![],
                way_out: WayOut::Gateway,
            };
            let endpoint = Endpoint {
                network_id: net_id.clone(),
                static_ip: None,
                aliases: vec![],
                ports,
                live: Some(live),
                membership: Membership::Asked,
            };
            st.plugin.endpoints.insert(
                ep_id.clone(),
                docker_endpoint(&ep_id, endpoint, &req.network_id),
            );
            Ok(())
        })?;
        self.apply_staged(&mut st, staged, FirewallFollows::Adds)
            .await?;
        Ok(answer(&mac))
    }

    pub async fn plugin_join(&self, req: JoinRequest) -> Result<JoinResponse> {
        let mut st = self.state.lock().await;
        let ep = docker_ep(&st, &req.endpoint_id)?;
        let net = st
            .networks
            .get(&ep.endpoint.network_id)
            .ok_or_else(|| CoreError::NoSuchNetwork(ep.endpoint.network_id.clone()))?;
        let live = ep.endpoint.live.clone().expect("docker endpoints are live");
        let bridge = net
            .bridge()
            .cloned()
            .expect("docker networks have a bridge");
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
        // Docker's endpoints are veths on ferry's bridge: they always have a host end.
        let host_if = live
            .host_if
            .as_ref()
            .map(|h| h.to_string())
            .ok_or_else(|| CoreError::Invalid("endpoint has no host-side link".into()))?;
        if ep.joined && self.kernel.link_kind(&host_if).await?.is_some() {
            return Ok(answer);
        }
        let keys = [Key::PluginEp(req.endpoint_id.clone())];
        let staged = self.stage(&mut st, &keys, |st| {
            let ep = docker_ep_mut(st, &req.endpoint_id)?;
            ep.joined = true;
            ep.sandbox_key = Some(req.sandbox_key.clone()).filter(|k| !k.is_empty());
            Ok(())
        })?;
        let before = self.commit_staged(&mut st, staged)?.before;
        let spec = VethPairSpec {
            bridge: bridge.name.to_string(),
            host_if,
            peer_if: live.ifname.to_string(),
            peer_mac: live.mac,
            mtu: bridge.mtu,
            hairpin: !ports.is_empty(),
        };
        // What an earlier, interrupted Join may have left.
        let _ = self.kernel.delete_link(&spec.host_if).await;
        let _ = self.kernel.delete_link(&spec.peer_if).await;
        if let Err(e) = self.kernel.create_veth_pair(&spec).await {
            self.take_back(&mut st, before, &keys, "undoing a Join")
                .await;
            return Err(e.into());
        }
        Ok(answer)
    }

    /// Nothing in the kernel: dockerd moves the container end back itself and
    /// DeleteEndpoint deletes the pair.
    pub async fn plugin_leave(&self, r: EndpointRef) -> Result<()> {
        let mut st = self.state.lock().await;
        let joined = st
            .plugin
            .endpoints
            .get(&r.endpoint_id)
            .is_some_and(|ep| ep.joined);
        if !joined {
            return Ok(());
        }
        let keys = [Key::PluginEp(r.endpoint_id.clone())];
        let staged = self.stage(&mut st, &keys, |st| {
            if let Some(ep) = st.plugin.endpoints.get_mut(&r.endpoint_id) {
                ep.joined = false;
            }
            Ok(())
        })?;
        self.commit_staged(&mut st, staged).map(drop)
    }

    pub async fn plugin_delete_endpoint(&self, r: EndpointRef) -> Result<()> {
        let mut st = self.state.lock().await;
        let Some(nid) = st
            .plugin
            .endpoints
            .get(&r.endpoint_id)
            .map(|e| e.endpoint.network_id.clone())
        else {
            return Ok(());
        };
        let keys = [Key::PluginEp(r.endpoint_id.clone()), Key::Net(nid.clone())];
        let staged = self.stage(&mut st, &keys, |st| {
            let ep = st
                .plugin
                .endpoints
                .remove(&r.endpoint_id)
                .ok_or_else(|| no_endpoint(&r.endpoint_id))?;
            // On an overlay (no Docker record under its ID) the address is freed now;
            // Docker's ReleaseAddress then finds it free and leaves it.
            let ferry_ipam = st
                .plugin
                .networks
                .get(&nid)
                .is_some_and(|n| n.pool_id.is_some());
            let pool = st.networks.get_mut(&nid).and_then(|n| n.pool.as_mut());
            if let (Some(pool), Some(live)) = (pool, ep.endpoint.live.as_ref()) {
                if pool.owner(live.ip) == Some(ep.id.as_str()) {
                    if ferry_ipam {
                        // Docker's ReleaseAddress follows and frees it.
                        pool.hold(live.ip, DOCKER_IPAM_OWNER.into());
                    } else {
                        pool.release(live.ip);
                    }
                }
            }
            Ok(ep)
        })?;
        let fw = FirewallFollows::Teardown("delete endpoint");
        let ep = self.apply_staged(&mut st, staged, fw).await?.plan;
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
        let ep = docker_ep(&st, &req.endpoint_id)?;
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
        self.check_host_free(&published).await?;
        let keys = [Key::PluginEp(req.endpoint_id.clone())];
        let staged = self.stage(&mut st, &keys, |st| {
            let ep = docker_ep_mut(st, &req.endpoint_id)?;
            ep.endpoint.ports = maps;
            if let Some(live) = ep.endpoint.live.as_mut() {
                live.published = published;
            }
            Ok(())
        })?;
        self.apply_staged(&mut st, staged, FirewallFollows::Adds)
            .await?;
        Ok(())
    }

    pub async fn plugin_revoke_external(&self, r: EndpointRef) -> Result<()> {
        let mut st = self.state.lock().await;
        let published = st
            .plugin
            .endpoints
            .get(&r.endpoint_id)
            .and_then(|e| e.endpoint.live.as_ref())
            .is_some_and(|l| !l.published.is_empty());
        if !published {
            return Ok(());
        }
        let keys = [Key::PluginEp(r.endpoint_id.clone())];
        let staged = self.stage(&mut st, &keys, |st| {
            let live = st
                .plugin
                .endpoints
                .get_mut(&r.endpoint_id)
                .and_then(|e| e.endpoint.live.as_mut());
            if let Some(live) = live {
                live.published.clear();
            }
            Ok(())
        })?;
        let fw = FirewallFollows::Teardown("revoke external connectivity");
        self.apply_staged(&mut st, staged, fw).await?;
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
                Value::from(live.host_if.as_ref().map(ToString::to_string)),
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
}
