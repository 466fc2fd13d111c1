//! Endpoints: planning an attach (address, MAC, names, default route) as a change of
//! state, and `network connect` / `disconnect`.

use std::net::Ipv4Addr;

use ferry_core::docker::network::{ConnectRequest, DisconnectRequest, EndpointSettingsReq};
use ferry_core::model::{
    host_if_name, mac_for, Driver, Endpoint, LiveEndpoint, Network, NetworkKind, NetworkMode,
    Sandbox,
};
use ferry_core::ports::{decide, Published};
use ferry_core::CoreError;
use ferry_kernel::{AttachSpec, KernelOps, LinkSpec, MacvlanLink, PluginLink, VethLink};
use ipnet::Ipv4Net;

use super::{new_id, Daemon};
use crate::error::Result;
use crate::firewall::{check_publishable, taken_ports};
use crate::state::{Key, State};

/// Give `sb_id`'s endpoint on `net_id` an address and a live record; returns the
/// kernel request. Changes only `st`.
pub(crate) fn plan_plug(
    st: &mut State,
    sb_id: &str,
    net_id: &str,
    netns: std::path::PathBuf,
) -> std::result::Result<AttachSpec, CoreError> {
    let has_default = st.sandboxes[sb_id]
        .endpoints
        .iter()
        .any(|e| e.live.as_ref().is_some_and(|l| l.default_route));
    let ifname = st.sandboxes[sb_id].next_ifname();
    let published = plan_ports(st, sb_id, net_id)?;
    let net = st
        .networks
        .get_mut(net_id)
        .ok_or_else(|| CoreError::NoSuchNetwork(net_id.into()))?;
    let net_name = net.name.clone();
    let internal = net.internal;
    let kind = net.kind.clone();
    let overlay = net.overlay().is_some();
    let ipam_plugin = net.ipam_plugin.as_ref().map(|i| i.driver.clone());
    let pool = net
        .pool
        .as_mut()
        .ok_or_else(|| CoreError::Invalid(format!("network {net_name} has no subnet")))?;
    if overlay && pool.range.is_none() {
        return Err(CoreError::Invalid(format!(
            "overlay {net_name}: this host holds no address block in it yet"
        )));
    }
    let static_ip = st.sandboxes[sb_id]
        .endpoint(net_id)
        .map(|e| e.static_ip)
        .ok_or_else(|| CoreError::NotConnected {
            sandbox: sb_id.into(),
            network: net_name.clone(),
        })?;
    let ip = match static_ip {
        Some(ip) => {
            pool.allocate_static(ip, sb_id)?;
            ip
        }
        // plughost: an IPAM plugin's address was leased and held before the plan.
        None => match ipam_plugin {
            Some(driver) => crate::plughost::ipam::held_by(pool, sb_id).ok_or_else(|| {
                CoreError::Invalid(format!("IPAM plugin {driver} gave no address for {sb_id}"))
            })?,
            None => pool.allocate_dynamic(sb_id, &net_name)?,
        },
    };
    let (gateway, prefix_len) = (pool.gateway, pool.subnet.prefix_len());
    let endpoint_id = new_id();
    let default_route = !has_default && !internal;
    let live = LiveEndpoint {
        id: endpoint_id.clone(),
        ip,
        prefix_len,
        gateway: Some(gateway),
        mac: mac_for(ip),
        // A veth's host end; for a plugin's endpoint, the key of ferryd's record of it.
        host_if: (kind.bridge().is_some() || matches!(kind, NetworkKind::Remote(_)))
            .then(|| host_if_name(&endpoint_id)),
        ifname: ifname.clone(),
        default_route,
        published,
    };
    let spec = attach_spec(&live, &kind, netns).ok_or_else(|| {
        CoreError::Invalid(format!("network {net_name}: sandboxes do not join it"))
    })?;
    let sb = st.sandboxes.get_mut(sb_id).expect("checked above");
    if let Some(e) = sb.endpoints.iter_mut().find(|e| e.network_id == net_id) {
        e.live = Some(live);
    }
    Ok(spec)
}

/// What the kernel is asked to make for a live endpoint on a network of `kind`: at
/// attach, and again when reconcile finds the endpoint not wired. The one place a
/// driver's links are decided: a veth on the bridge (bridge, overlay) or a macvlan link
/// on the parent; host and none networks have no endpoints to wire.
pub(crate) fn attach_spec(
    live: &LiveEndpoint,
    kind: &NetworkKind,
    netns: std::path::PathBuf,
) -> Option<AttachSpec> {
    let link = match (kind, &live.host_if) {
        (NetworkKind::Bridge(b) | NetworkKind::Overlay { bridge: b, .. }, Some(host_if)) => {
            LinkSpec::Veth(VethLink {
                bridge: b.name.to_string(),
                host_if: host_if.to_string(),
                mtu: b.mtu,
                hairpin: !live.published.is_empty(),
            })
        }
        (NetworkKind::Remote(_), Some(host_if)) => LinkSpec::Plugin(PluginLink {
            host_if: host_if.to_string(),
        }),
        (NetworkKind::Macvlan(m), _) => LinkSpec::Macvlan(MacvlanLink {
            parent: m.parent.to_string(),
            mode: m.mode,
            mtu: m.mtu,
        }),
        _ => return None,
    };
    Some(AttachSpec {
        netns,
        ifname: live.ifname.to_string(),
        mac: live.mac,
        addr: Ipv4Net::new(live.ip, live.prefix_len).expect("prefix from a subnet"),
        default_via: live.default_route.then_some(live.gateway).flatten(),
        link,
    })
}

/// Decide the host ports of the endpoint's published ports against every other live
/// endpoint's (whether a host process holds one is the caller's check:
/// [`Daemon::check_host_free`], before the commit).
fn plan_ports(
    st: &State,
    sb_id: &str,
    net_id: &str,
) -> std::result::Result<Vec<Published>, CoreError> {
    let ports = st.sandboxes[sb_id]
        .endpoint(net_id)
        .map(|e| e.ports.as_slice())
        .unwrap_or_default();
    if ports.is_empty() {
        return Ok(vec![]);
    }
    let net = st
        .networks
        .get(net_id)
        .ok_or_else(|| CoreError::NoSuchNetwork(net_id.into()))?;
    check_publishable(net, true)?;
    decide(ports, &taken_ports(st, sb_id, net_id))
}

/// The decided ports of a sandbox's live endpoints.
pub(crate) fn published_of(st: &State, sb_id: &str) -> Vec<Published> {
    st.sandboxes
        .get(sb_id)
        .map(ferry_core::docker::container::published_ports)
        .unwrap_or_default()
}

/// What a live endpoint taken down in the state leaves for the kernel.
pub(crate) struct Unplugged {
    /// Its veth's host end, to delete (deleting it takes the sandbox's end too).
    pub host_if: Option<String>,
    /// Its interface in the sandbox: to delete there when there is no host end.
    pub ifname: String,
    /// It carried the sandbox's default route.
    pub default_route: bool,
}

/// Take down the live part of an endpoint in `st`: free its address (a static one
/// stays reserved if `keep_static`). Returns what the kernel must remove.
pub(crate) fn plan_unplug(
    st: &mut State,
    sb_id: &str,
    net_id: &str,
    keep_static: bool,
) -> Option<Unplugged> {
    let sb = st.sandboxes.get_mut(sb_id)?;
    let ep = sb.endpoints.iter_mut().find(|e| e.network_id == net_id)?;
    let static_ip = ep.static_ip;
    let live = ep.live.take();
    if let Some(pool) = st.networks.get_mut(net_id).and_then(|n| n.pool.as_mut()) {
        let release = |pool: &mut ferry_core::ipam::AddressPool, ip: Ipv4Addr| {
            if pool.owner(ip) == Some(sb_id) {
                pool.release(ip);
            }
        };
        if let Some(l) = &live {
            if !(keep_static && static_ip == Some(l.ip)) {
                release(pool, l.ip);
            }
        }
        if let (Some(ip), false) = (static_ip, keep_static) {
            release(pool, ip);
        }
    }
    live.map(|l| Unplugged {
        host_if: l.host_if.map(|h| h.to_string()),
        ifname: l.ifname.to_string(),
        default_route: l.default_route,
    })
}

/// The IPAM cursor of `net_id`'s pool, for an undo to put back ([`unplan_plug`]).
pub(crate) fn cursor_of(st: &State, net_id: &str) -> Option<Ipv4Addr> {
    st.networks
        .get(net_id)
        .and_then(|n| n.pool.as_ref())
        .and_then(|p| p.cursor)
}

/// Undo [`plan_plug`] after the state lock was let go: [`plan_unplug`], and the pool's
/// cursor back to `cursor_before` if it still points at the address the undone plug
/// took (no allocation has moved it since), so the next sandbox gets that address as if
/// the undone operation had not happened.
pub(crate) fn unplan_plug(
    st: &mut State,
    sb_id: &str,
    net_id: &str,
    keep_static: bool,
    cursor_before: Option<Ipv4Addr>,
) {
    let took = st
        .sandboxes
        .get(sb_id)
        .and_then(|sb| sb.endpoint(net_id))
        .and_then(|e| e.live.as_ref())
        .map(|l| l.ip);
    plan_unplug(st, sb_id, net_id, keep_static);
    if let Some(pool) = st.networks.get_mut(net_id).and_then(|n| n.pool.as_mut()) {
        if took.is_some() && pool.cursor == took {
            pool.cursor = cursor_before;
        }
    }
}

/// After the default-route endpoint went away, give the role to the first remaining
/// live endpoint on a non-internal network. Returns its gateway.
pub(crate) fn move_default_route(st: &mut State, sb_id: &str) -> Option<Ipv4Addr> {
    let internal: Vec<String> = st
        .networks
        .values()
        .filter(|n| n.internal)
        .map(|n| n.id.clone())
        .collect();
    let sb = st.sandboxes.get_mut(sb_id)?;
    if sb
        .endpoints
        .iter()
        .any(|e| e.live.as_ref().is_some_and(|l| l.default_route))
    {
        return None;
    }
    let ep = sb
        .endpoints
        .iter_mut()
        .find(|e| e.live.is_some() && !internal.contains(&e.network_id))?;
    let live = ep.live.as_mut()?;
    live.default_route = true;
    live.gateway
}

/// The host link of the sandbox's endpoint holding the default route.
fn default_route_if(st: &State, sb_id: &str) -> Option<String> {
    st.sandboxes
        .get(sb_id)?
        .endpoints
        .iter()
        .filter_map(|e| e.live.as_ref())
        .find(|l| l.default_route)
        .and_then(|l| l.host_if.as_ref().map(|h| h.to_string()))
}

fn parse_static(s: Option<&str>) -> std::result::Result<Option<Ipv4Addr>, CoreError> {
    match s.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| CoreError::BadValue {
            what: "IPv4 address",
            value: s.into(),
            why: "not an IPv4 address".into(),
        }),
    }
}

/// What a `network connect` asks for: a static address, aliases, published ports.
#[derive(Default)]
struct Asked {
    static_ip: Option<Ipv4Addr>,
    aliases: Vec<String>,
    ports: Vec<ferry_core::ports::PortMapping>,
}

impl Asked {
    fn from_request(cfg: Option<&EndpointSettingsReq>) -> std::result::Result<Asked, CoreError> {
        let Some(cfg) = cfg else {
            return Ok(Asked::default());
        };
        Ok(Asked {
            static_ip: parse_static(
                cfg.ipam_config
                    .as_ref()
                    .and_then(|c| c.ipv4_address.as_deref()),
            )?,
            aliases: cfg.aliases.clone().unwrap_or_default(),
            ports: match &cfg.port_bindings {
                Some(b) => ferry_core::ports::from_bindings(b)?,
                None => vec![],
            },
        })
    }
}

/// dockerd's rules for connecting `sb` to `net`, in dockerd's order and words.
fn check_connect(net: &Network, sb: &Sandbox, a: &Asked) -> std::result::Result<(), CoreError> {
    check_publishable(net, !a.ports.is_empty())?;
    // dockerd's words: none is a network of its own, not the host's.
    if net.driver() == Driver::Null || sb.network_mode == NetworkMode::None {
        return Err(CoreError::NoneNetworkConflict);
    }
    if !net.driver().has_endpoints() {
        return Err(CoreError::Invalid(
            "container cannot be disconnected from host network or connected to host network"
                .into(),
        ));
    }
    if !sb.network_mode.joins_networks() {
        return Err(CoreError::SharedNamespace);
    }
    if sb.endpoint(&net.id).is_some() {
        return Err(CoreError::AlreadyConnected {
            sandbox: sb.name.clone(),
            network: net.name.clone(),
        });
    }
    if a.static_ip.is_some() && net.predefined {
        return Err(CoreError::StaticIpOnDefaultBridge);
    }
    if net.predefined && !a.aliases.is_empty() {
        return Err(CoreError::AliasOnDefaultBridge);
    }
    if let (Some(_), Some(pool)) = (a.static_ip, &net.pool) {
        pool.check_static_allowed()?;
    }
    Ok(())
}

/// The endpoint in the state: its static address reserved, and, when the sandbox runs
/// (`netns` given), its live part planned. Returns the kernel's request for a running
/// sandbox. Changes only `st`; the caller restores it on an error.
fn plan_connect(
    st: &mut State,
    sb_id: &str,
    net_id: &str,
    a: Asked,
    netns: Option<std::path::PathBuf>,
) -> std::result::Result<Option<AttachSpec>, CoreError> {
    if let Some(ip) = a.static_ip {
        st.networks
            .get_mut(net_id)
            .and_then(|n| n.pool.as_mut())
            .ok_or_else(|| CoreError::Invalid(format!("network {net_id} has no subnet")))?
            .allocate_static(ip, sb_id)?;
    }
    let sb = st.sandboxes.get_mut(sb_id).expect("resolved");
    sb.endpoints.push(Endpoint {
        network_id: net_id.to_string(),
        static_ip: a.static_ip,
        aliases: a.aliases,
        ports: a.ports,
        live: None,
    });
    match netns {
        Some(netns) => plan_plug(st, sb_id, net_id, netns).map(Some),
        None => Ok(None),
    }
}

/// The host ports the endpoint of `sb_id` on `net_id` was given.
fn published_on(st: &State, sb_id: &str, net_id: &str) -> Vec<Published> {
    st.sandboxes[sb_id]
        .endpoint(net_id)
        .and_then(|e| e.live.as_ref())
        .map(|l| l.published.clone())
        .unwrap_or_default()
}

impl<K: KernelOps> Daemon<K> {
    /// `network connect`: resolve, check, plan in the state, commit; then, for a running
    /// sandbox, the firewall's elements, its /etc/hosts and the kernel's link.
    pub async fn connect(&self, net_ref: &str, req: ConnectRequest) -> Result<()> {
        let asked = Asked::from_request(req.endpoint_config.as_ref())?;
        let name = self.state.lock().await.sandbox_name(&req.container);
        self.prepare_overlay(net_ref, asked.static_ip, &name, &asked.aliases)
            .await?;
        // plughost: an address from an IPAM plugin is leased before anything is planned.
        self.lease_addresses(&req.container, Some(net_ref)).await?;
        let (turn, mut st) = self.sandbox_turn(&req.container).await?;
        let net_id = st.network_id(net_ref)?;
        st.ferry_may_join(&net_id)?;
        let sb_id = turn.id.clone();
        let sb = &st.sandboxes[&sb_id];
        check_connect(&st.networks[&net_id], sb, &asked)?;
        let netns = sb.is_running().then(|| self.netns_path(sb));
        let cursor_before = cursor_of(&st, &net_id);
        let keys = vec![Key::Net(net_id.clone()), Key::Sbx(sb_id.clone())];
        let before = st.snapshot(&keys);
        let spec = match plan_connect(&mut st, &sb_id, &net_id, asked, netns) {
            Ok(s) => s,
            Err(e) => {
                st.restore(before);
                return Err(e.into());
            }
        };
        if let Err(e) = self
            .check_host_free(&published_on(&st, &sb_id, &net_id))
            .await
        {
            st.restore(before);
            return Err(e);
        }
        self.commit_or_restore(&mut st, &before, &keys)?;
        let Some(spec) = spec else {
            return Ok(());
        };
        // The endpoint's set elements go in before its veth exists: nothing can match
        // them until it does.
        if let Err(e) = self.attach_firewall(&st).await {
            self.rollback(&mut st, before, &keys);
            return Err(e);
        }
        if let Err(e) = self.attach_names(&st, &sb_id) {
            self.rollback(&mut st, before, &keys);
            self.sync_firewall_or_warn(&st, "undoing a connect").await;
            self.write_hosts(&st, &sb_id);
            return Err(e);
        }
        drop(st);
        // The kernel work runs without the state lock; this sandbox's turn is still held.
        // plughost: attach_endpoint is kernel.attach, or a plugin's Join.
        if let Err(e) = self.attach_endpoint(&spec).await {
            let mut st = self.state.lock().await;
            self.undo_connect(&mut st, &sb_id, &net_id, cursor_before)
                .await;
            return Err(e);
        }
        Ok(())
    }

    /// Take back a connect whose kernel work failed after the state lock was let go:
    /// only this endpoint and its address, since other operations may have changed the
    /// same network meanwhile. (attach removes what it made before it fails.)
    async fn undo_connect(
        &self,
        st: &mut State,
        sb_id: &str,
        net_id: &str,
        cursor_before: Option<Ipv4Addr>,
    ) {
        unplan_plug(st, sb_id, net_id, false, cursor_before);
        if let Some(sb) = st.sandboxes.get_mut(sb_id) {
            sb.endpoints.retain(|e| e.network_id != net_id);
        }
        let keys = [Key::Net(net_id.to_string()), Key::Sbx(sb_id.to_string())];
        self.commit_or_log(st, &keys, "undoing a connect");
        self.sync_firewall_or_warn(st, "undoing a connect").await;
        self.write_hosts(st, sb_id);
    }

    pub async fn disconnect(&self, net_ref: &str, req: DisconnectRequest) -> Result<()> {
        let (turn, mut st) = self.sandbox_turn(&req.container).await?;
        let net_id = st.network_id(net_ref)?;
        let sb_id = turn.id.clone();
        let sb = &st.sandboxes[&sb_id];
        if sb.endpoint(&net_id).is_none() {
            return Err(CoreError::NotConnected {
                sandbox: sb_id.clone(),
                network: st.networks[&net_id].name.clone(),
            }
            .into());
        }
        let netns = self.netns_path(sb);
        let keys = [Key::Net(net_id.clone()), Key::Sbx(sb_id.clone())];
        let before = st.snapshot(&keys);
        let unplugged = plan_unplug(&mut st, &sb_id, &net_id, false);
        if let Some(sb) = st.sandboxes.get_mut(&sb_id) {
            sb.endpoints.retain(|e| e.network_id != net_id);
        }
        let new_gw = match &unplugged {
            Some(u) if u.default_route => move_default_route(&mut st, &sb_id),
            _ => None,
        };
        self.commit_or_restore(&mut st, &before, &keys)?;
        self.sync_firewall_or_warn(&st, "disconnect").await;
        self.write_hosts(&st, &sb_id);
        // The veth is retired (down and renamed: well under a millisecond) before the
        // state lock goes: its address is free in the state now, and another connect must
        // not bring the same address and MAC up on the bridge while the old pair is up.
        let removed = match &unplugged {
            // plughost: detach_link is kernel.delete_link, or a plugin's Leave.
            Some(Unplugged {
                host_if: Some(h), ..
            }) => Some(self.detach_link(h).await),
            Some(u) => Some(self.kernel.delete_link_in(&netns, &u.ifname).await),
            None => None,
        };
        if let Some(Err(e)) = removed {
            tracing::warn!("disconnect: {e}; reconcile will remove it");
        }
        // plughost: the endpoint that took the default route, in case it is a plugin's.
        let new_gw_if = new_gw.and(default_route_if(&st, &sb_id));
        drop(st);
        // The default route is the sandbox's own: this sandbox's turn is still held.
        if let Some(gw) = new_gw {
            // plughost: kernel.set_default_route, or a plugin endpoint's gateway role.
            if let Err(e) = self
                .default_route_moved(&netns, gw, new_gw_if.as_deref())
                .await
            {
                tracing::warn!("disconnect: moving the default route: {e}");
            }
        }
        Ok(())
    }
}
