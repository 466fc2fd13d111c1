//! `network connect` and `disconnect` as plans: dockerd's rules for who may join what,
//! then the edits of the state and the kernel's work, decided without doing any of it.

use std::net::{IpAddr, Ipv4Addr};

use super::attach::{
    cursor_of, default_route_if, default_route_network, move_default_route, plan_attach,
    plan_detach, Detached, Live,
};
use super::publish::check_publishable;
use crate::docker::network::EndpointSettingsReq;
use crate::model::{Driver, Endpoint, Membership, Network, NetworkMode, Sandbox};
use crate::ports::Published;
use crate::state::{Key, State};
use crate::wiring::AttachSpec;
use crate::CoreError;

/// `IPAMConfig.IPv4Address` (`--ip`): an IPv4 address, by Docker's protocol.
fn parse_static(s: Option<&str>) -> Result<Option<IpAddr>, CoreError> {
    match s.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse::<Ipv4Addr>()
            .map(|a| Some(a.into()))
            .map_err(|_| CoreError::BadValue {
                what: "IPv4 address",
                value: s.into(),
                why: "not an IPv4 address".into(),
            }),
    }
}

/// What a `network connect` asks for: a static address, aliases, published ports; and
/// who asks (the user, or ferry for the sandbox's way out).
#[derive(Debug, Clone, Default)]
pub struct Asked {
    pub static_ip: Option<IpAddr>,
    pub aliases: Vec<String>,
    pub ports: Vec<crate::ports::PortMapping>,
    pub membership: Membership,
}

impl Asked {
    pub fn from_request(cfg: Option<&EndpointSettingsReq>) -> Result<Asked, CoreError> {
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
                Some(b) => crate::ports::from_bindings(b)?,
                None => vec![],
            },
            membership: Membership::Asked,
        })
    }
}

/// dockerd's rules for connecting `sb` to `net`, in dockerd's order and words.
pub fn check_connect(net: &Network, sb: &Sandbox, a: &Asked) -> Result<(), CoreError> {
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

/// A `network connect`, decided: what it changed in the state and what is left to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectPlan {
    /// The records it edits, committed as one store transaction.
    pub keys: Vec<Key>,
    /// For a running sandbox, the link the kernel makes.
    pub attach: Option<AttachSpec>,
    /// The host ports the endpoint takes: the executor checks no host process holds one.
    pub published: Vec<Published>,
    /// The pool's cursor before the plan, for an undo after other operations ran
    /// ([`super::attach::unplan_attach`]).
    pub cursor_before: Option<IpAddr>,
    /// The network whose endpoint held the default route before this one took it
    /// (dockerd's order), for an undo to give it back.
    pub default_from: Option<String>,
}

/// The records a connect or disconnect of `sb_id` and `net_id` edits.
pub fn endpoint_keys(sb_id: &str, net_id: &str) -> Vec<Key> {
    vec![Key::Net(net_id.to_string()), Key::Sbx(sb_id.to_string())]
}

/// Plan `network connect`: dockerd's rules, then the endpoint in the state (its static
/// address reserved) and, when the sandbox runs (`live` given), its live part. Edits
/// only `st`; on an error the caller puts back what it saved of [`ConnectPlan::keys`].
pub fn plan_connect(
    st: &mut State,
    sb_id: &str,
    net_id: &str,
    a: Asked,
    live: Option<Live>,
) -> Result<ConnectPlan, CoreError> {
    let net = st
        .networks
        .get(net_id)
        .ok_or_else(|| CoreError::NoSuchNetwork(net_id.into()))?;
    let sb = st
        .sandboxes
        .get(sb_id)
        .ok_or_else(|| CoreError::NoSuchContainer(sb_id.into()))?;
    check_connect(net, sb, &a)?;
    let cursor_before = cursor_of(st, net_id);
    if let Some(ip) = a.static_ip {
        st.networks
            .get_mut(net_id)
            .and_then(|n| n.pool.as_mut())
            .ok_or_else(|| CoreError::Invalid(format!("network {net_id} has no subnet")))?
            .allocate_static(ip, sb_id)?;
    }
    if let Some(sb) = st.sandboxes.get_mut(sb_id) {
        sb.endpoints.push(Endpoint {
            network_id: net_id.to_string(),
            static_ip: a.static_ip,
            aliases: a.aliases,
            ports: a.ports,
            live: None,
            membership: a.membership,
        });
    }
    let held = default_route_network(st, sb_id);
    let attach = live
        .map(|at| plan_attach(st, sb_id, net_id, at))
        .transpose()?;
    let default_from = held.filter(|h| default_route_network(st, sb_id).as_ref() != Some(h));
    Ok(ConnectPlan {
        keys: endpoint_keys(sb_id, net_id),
        attach,
        published: published_on(st, sb_id, net_id),
        cursor_before,
        default_from,
    })
}

/// A `network disconnect`, decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisconnectPlan {
    pub keys: Vec<Key>,
    /// What the kernel removes, if the endpoint was live.
    pub detached: Option<Detached>,
    /// The gateway the sandbox's default route moves to, when the endpoint held it and
    /// another one takes it, with that endpoint's host link.
    pub new_default: Option<(IpAddr, Option<String>)>,
}

/// Plan `network disconnect`: the endpoint leaves the sandbox, its address is freed, and
/// the default route goes to the next endpoint that can take it. Edits only `st`.
pub fn plan_disconnect(
    st: &mut State,
    sb_id: &str,
    net_id: &str,
) -> Result<DisconnectPlan, CoreError> {
    let net = st
        .networks
        .get(net_id)
        .ok_or_else(|| CoreError::NoSuchNetwork(net_id.into()))?;
    let connected = st
        .sandboxes
        .get(sb_id)
        .is_some_and(|sb| sb.endpoint(net_id).is_some());
    if !connected {
        return Err(CoreError::NotConnected {
            sandbox: sb_id.to_string(),
            network: net.name.clone(),
        });
    }
    let detached = plan_detach(st, sb_id, net_id, false);
    if let Some(sb) = st.sandboxes.get_mut(sb_id) {
        sb.endpoints.retain(|e| e.network_id != net_id);
    }
    let new_default = match &detached {
        Some(u) if u.default_route => {
            move_default_route(st, sb_id).map(|gw| (gw, default_route_if(st, sb_id)))
        }
        _ => None,
    };
    Ok(DisconnectPlan {
        keys: endpoint_keys(sb_id, net_id),
        detached,
        new_default,
    })
}

/// The host ports the endpoint of `sb_id` on `net_id` was given.
pub fn published_on(st: &State, sb_id: &str, net_id: &str) -> Vec<Published> {
    st.sandboxes[sb_id]
        .endpoint(net_id)
        .and_then(|e| e.live.as_ref())
        .map(|l| l.published.clone())
        .unwrap_or_default()
}
