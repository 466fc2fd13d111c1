//! Turning a `POST /networks/create` body into a [`Network`], with dockerd's rules and
//! error messages. Pure: the caller passes in what exists (networks, host routes, the
//! pool cursor) and a fresh ID and timestamp.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net};

use crate::docker::network::{IpamConfigReq as IpamConfig, NetworkCreateRequest};
use crate::ipam::pools::{next_pool, overlaps};
use crate::ipam::AddressPool;
use crate::model::{
    bridge_name_for, BridgeConf, Driver, IpamEcho, Network, NetworkKind, DEFAULT_MTU,
};
use crate::{CoreError, IfName};

pub const OPT_BRIDGE_NAME: &str = "com.docker.network.bridge.name";
pub const OPT_MTU: &str = "com.docker.network.driver.mtu";
pub const OPT_ICC: &str = "com.docker.network.bridge.enable_icc";
pub const OPT_MASQ: &str = "com.docker.network.bridge.enable_ip_masquerade";
pub const OPT_HOST_BINDING: &str = "com.docker.network.bridge.host_binding_ipv4";
pub const OPT_DEFAULT_BRIDGE: &str = "com.docker.network.bridge.default_bridge";

pub struct CreateContext<'a> {
    pub existing: &'a [Network],
    pub host_routes: &'a [IpNet],
    pub pool_cursor: Option<usize>,
    pub id: String,
    pub created: String,
}

pub struct Created {
    pub network: Network,
    pub pool_cursor: Option<usize>,
}

/// Docker's rule for object names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn valid_name(name: &str) -> Result<(), CoreError> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(CoreError::BadValue {
            what: "name",
            value: name.to_string(),
            why: "only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed".into(),
        })
    }
}

pub fn parse_subnet(s: &str) -> Result<Ipv4Net, CoreError> {
    s.parse::<Ipv4Net>()
        .map(|n| n.trunc())
        .map_err(|_| CoreError::BadSubnet(s.to_string()))
}

fn parse_ip(what: &'static str, s: &str) -> Result<Ipv4Addr, CoreError> {
    s.parse().map_err(|_| CoreError::BadValue {
        what,
        value: s.into(),
        why: "not an IPv4 address".into(),
    })
}

fn parse_bool_opt(key: &str, v: &str) -> Result<bool, CoreError> {
    v.parse::<bool>().map_err(|_| CoreError::BadValue {
        what: "option",
        value: format!("{key}={v}"),
        why: "must be true or false".into(),
    })
}

/// `com.docker.network.driver.mtu`, checked, if given.
pub fn mtu_option(opts: &BTreeMap<String, String>) -> Result<Option<u32>, CoreError> {
    opts.get(OPT_MTU)
        .map(|v| {
            v.parse::<u32>()
                .ok()
                .filter(|m| (68..=65535).contains(m))
                .ok_or_else(|| CoreError::BadValue {
                    what: "option",
                    value: format!("{OPT_MTU}={v}"),
                    why: "MTU must be 68..65535".into(),
                })
        })
        .transpose()
}

/// The bridge settings from `--opt` values, each checked.
pub fn bridge_conf(id: &str, opts: &BTreeMap<String, String>) -> Result<BridgeConf, CoreError> {
    let name = match opts.get(OPT_BRIDGE_NAME) {
        Some(n) => IfName::new(n.clone())?,
        None => bridge_name_for(id),
    };
    let mtu = mtu_option(opts)?.unwrap_or(DEFAULT_MTU);
    let icc = opts
        .get(OPT_ICC)
        .map(|v| parse_bool_opt(OPT_ICC, v))
        .transpose()?
        .unwrap_or(true);
    let masquerade = opts
        .get(OPT_MASQ)
        .map(|v| parse_bool_opt(OPT_MASQ, v))
        .transpose()?
        .unwrap_or(true);
    if let Some(v) = opts.get(OPT_HOST_BINDING) {
        parse_ip("option com.docker.network.bridge.host_binding_ipv4", v)?;
    }
    if opts.contains_key(OPT_DEFAULT_BRIDGE) {
        return Err(CoreError::Invalid(format!(
            "option {OPT_DEFAULT_BRIDGE} is reserved for the predefined network"
        )));
    }
    Ok(BridgeConf {
        name,
        mtu,
        icc,
        masquerade,
        adopted: false,
    })
}

struct Addressing {
    pool: AddressPool,
    echo: IpamEcho,
    cursor: Option<usize>,
}

fn addressing(req: &NetworkCreateRequest, ctx: &CreateContext) -> Result<Addressing, CoreError> {
    let ipam = req.ipam.clone().unwrap_or_default();
    if let Some(d) = ipam
        .driver
        .as_deref()
        .filter(|d| !d.is_empty() && *d != "default")
    {
        return Err(CoreError::UnknownDriver(d.to_string()));
    }
    let configs = ipam.config.unwrap_or_default();
    if configs.len() > 1 {
        return Err(CoreError::Invalid(
            "ferry supports one IPv4 subnet per network".into(),
        ));
    }
    let taken: Vec<IpNet> = ctx.existing.iter().filter_map(Network::subnet).collect();
    let cfg = configs.into_iter().next().unwrap_or_default();
    match cfg.subnet.clone().filter(|s| !s.is_empty()) {
        None => chosen_subnet(&cfg, ctx, &taken),
        Some(subnet) => given_subnet(&cfg, &subnet, &taken, ctx.pool_cursor),
    }
}

/// No `--subnet`: the next free pool of Docker's defaults, its first host the gateway.
fn chosen_subnet(
    cfg: &IpamConfig,
    ctx: &CreateContext,
    taken: &[IpNet],
) -> Result<Addressing, CoreError> {
    let aux = cfg
        .auxiliary_addresses
        .as_ref()
        .is_some_and(|a| !a.is_empty());
    if cfg.gateway.is_some() || cfg.ip_range.is_some() || aux {
        return Err(CoreError::Invalid(
            "--gateway, --ip-range and --aux-address need --subnet".into(),
        ));
    }
    let (subnet, cursor) = next_pool(ctx.pool_cursor, taken, ctx.host_routes)?;
    let gateway = first_host(subnet.into());
    let echo = IpamEcho {
        subnet: Some(subnet.to_string()),
        ip_range: None,
        gateway: Some(gateway.to_string()),
    };
    Ok(Addressing {
        pool: AddressPool::new(subnet.into(), gateway, None).with_auto_subnet(),
        echo,
        cursor: Some(cursor),
    })
}

/// `--subnet` given: checked, then its gateway, `--ip-range` and `--aux-address`.
fn given_subnet(
    cfg: &IpamConfig,
    subnet_s: &str,
    taken: &[IpNet],
    cursor: Option<usize>,
) -> Result<Addressing, CoreError> {
    let subnet = usable_subnet(subnet_s, taken)?;
    let gateway = match cfg.gateway.as_deref().filter(|g| !g.is_empty()) {
        Some(g) => {
            let ip = parse_ip("gateway", g)?;
            if !subnet.contains(&ip) || ip == subnet.network() || ip == subnet.broadcast() {
                return Err(CoreError::GatewayOutOfRange(g.to_string()));
            }
            ip.into()
        }
        None => first_host(subnet.into()),
    };
    let range = cfg
        .ip_range
        .as_deref()
        .filter(|r| !r.is_empty())
        .map(|r| ip_range(r, subnet))
        .transpose()?;
    let aux = crate::ipam::aux::parse(
        &cfg.auxiliary_addresses.clone().unwrap_or_default(),
        subnet.into(),
        gateway,
    )?;
    let echo = IpamEcho {
        subnet: Some(subnet.to_string()),
        ip_range: range.map(|r| r.to_string()),
        gateway: cfg.gateway.clone().filter(|g| !g.is_empty()),
    };
    Ok(Addressing {
        pool: AddressPool::new(subnet.into(), gateway, range.map(IpNet::V4)).with_aux(aux),
        echo,
        cursor,
    })
}

/// A subnet that parses, can ever work, has room for a host and overlaps no network.
pub fn usable_subnet(subnet_s: &str, taken: &[IpNet]) -> Result<Ipv4Net, CoreError> {
    if subnet_s.contains(':') {
        return Err(CoreError::Invalid(format!(
            "IPv6 subnet {subnet_s}: ferry does not support IPv6 yet"
        )));
    }
    let subnet = parse_subnet(subnet_s)?;
    let bad = |why: &str| CoreError::BadValue {
        what: "subnet",
        value: subnet_s.to_string(),
        why: why.into(),
    };
    if let Some(why) = unroutable(subnet) {
        return Err(bad(why));
    }
    if subnet.prefix_len() > 30 {
        return Err(bad("it has room for no host"));
    }
    if taken.iter().any(|t| overlaps(t, &subnet.into())) {
        return Err(CoreError::PoolOverlap);
    }
    Ok(subnet)
}

/// `--ip-range`, inside the subnet.
pub fn ip_range(r: &str, subnet: Ipv4Net) -> Result<Ipv4Net, CoreError> {
    let range = parse_subnet(r).map_err(|_| CoreError::BadValue {
        what: "ip-range",
        value: r.into(),
        why: "invalid CIDR address".into(),
    })?;
    if !(subnet.contains(&range.network()) && range.prefix_len() >= subnet.prefix_len()) {
        return Err(CoreError::RangeOutOfSubnet {
            range: r.into(),
            subnet: subnet.to_string(),
        });
    }
    Ok(range)
}

/// Blocks no bridge network can use (RFC 6890): an address in them is never routed to a
/// bridge (loopback, "this network"), is a group (multicast), or is reserved and refused
/// by the kernel as a source (240/4, the limited broadcast among it).
const UNROUTABLE: [(&str, &str); 4] = [
    ("0.0.0.0/8", "0.0.0.0/8 is \"this network\", never routed"),
    (
        "127.0.0.0/8",
        "127.0.0.0/8 is loopback, never routed to a bridge",
    ),
    (
        "224.0.0.0/4",
        "224.0.0.0/4 is multicast: its addresses are groups, not hosts",
    ),
    (
        "240.0.0.0/4",
        "240.0.0.0/4 is reserved (255.255.255.255 is the limited broadcast)",
    ),
];

/// Why `subnet` can never work as a network's subnet, if it cannot.
pub fn unroutable(subnet: Ipv4Net) -> Option<&'static str> {
    UNROUTABLE.iter().find_map(|(block, why)| {
        let block: IpNet = block.parse().expect("valid block");
        overlaps(&block, &subnet.into()).then_some(*why)
    })
}

/// The subnet's first address after its network address: the gateway Docker picks.
pub fn first_host(subnet: IpNet) -> IpAddr {
    match subnet.network() {
        IpAddr::V4(a) => Ipv4Addr::from(u32::from(a).wrapping_add(1)).into(),
        IpAddr::V6(a) => Ipv6Addr::from(u128::from(a).wrapping_add(1)).into(),
    }
}

/// Validate a create request against what exists and build the network.
pub fn network_from_request(
    req: &NetworkCreateRequest,
    ctx: &CreateContext,
) -> Result<Created, CoreError> {
    valid_name(&req.name)?;
    if ctx.existing.iter().any(|n| n.name == req.name) {
        return Err(CoreError::DuplicateNetwork(req.name.clone()));
    }
    let driver_s = req.driver.clone().unwrap_or_default();
    let driver =
        Driver::parse(&driver_s).ok_or_else(|| CoreError::UnknownDriver(driver_s.clone()))?;
    if req.enable_ipv6 == Some(true) {
        return Err(CoreError::Invalid(
            "IPv6 networks are not supported by ferry yet".into(),
        ));
    }
    let options = req.options.clone().unwrap_or_default();
    let kind = match driver {
        Driver::Bridge => NetworkKind::Bridge(bridge_kind(&ctx.id, &options, ctx.existing)?),
        Driver::Macvlan => {
            let m = macvlan::conf(&options)?;
            macvlan::check_parent_free(&m, ctx.existing)?;
            NetworkKind::Macvlan(m)
        }
        Driver::Host | Driver::Null | Driver::Overlay | Driver::Remote => {
            return Err(CoreError::Invalid(format!(
                "only one instance of \"{}\" network is allowed",
                driver.as_str()
            )))
        }
    };
    let a = addressing(req, ctx)?;
    let network = Network {
        id: ctx.id.clone(),
        name: req.name.clone(),
        created: ctx.created.clone(),
        kind,
        internal: req.internal,
        attachable: req.attachable,
        predefined: false,
        labels: req.labels.clone().unwrap_or_default(),
        options,
        ipam_options: req.ipam.as_ref().and_then(|i| i.options.clone()),
        ipam_echo: vec![a.echo],
        pool: Some(a.pool),
        ipam_plugin: None,
    };
    Ok(Created {
        network,
        pool_cursor: a.cursor,
    })
}

/// A bridge network's bridge, from its options, under a name no other network uses.
fn bridge_kind(
    id: &str,
    options: &BTreeMap<String, String>,
    existing: &[Network],
) -> Result<BridgeConf, CoreError> {
    let bridge = bridge_conf(id, options)?;
    if existing
        .iter()
        .filter_map(Network::bridge)
        .any(|b| b.name == bridge.name)
    {
        return Err(CoreError::Invalid(format!(
            "bridge name {} is used by another network",
            bridge.name
        )));
    }
    Ok(bridge)
}

/// The three networks dockerd makes on first start: `bridge`, `host`, `none`.
pub fn predefined_networks(ids: [String; 3], created: &str, bip: Ipv4Net) -> Vec<Network> {
    let subnet = bip.trunc();
    let opts: BTreeMap<String, String> = [
        (OPT_DEFAULT_BRIDGE, "true"),
        (OPT_ICC, "true"),
        (OPT_MASQ, "true"),
        (OPT_HOST_BINDING, "0.0.0.0"),
        (OPT_BRIDGE_NAME, crate::model::default_bridge_if()),
        (OPT_MTU, "1500"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let base = |id: String, name: &str, kind| Network {
        id,
        name: name.into(),
        created: created.into(),
        kind,
        internal: false,
        attachable: false,
        predefined: true,
        labels: BTreeMap::new(),
        options: BTreeMap::new(),
        ipam_options: None,
        ipam_echo: vec![],
        pool: None,
        ipam_plugin: None,
    };
    let [b, h, n] = ids;
    let mut bridge = base(
        b,
        crate::model::DEFAULT_BRIDGE,
        NetworkKind::Bridge(BridgeConf {
            name: IfName::new(crate::model::default_bridge_if()).expect("valid"),
            mtu: DEFAULT_MTU,
            icc: true,
            masquerade: true,
            adopted: false,
        }),
    );
    bridge.options = opts;
    bridge.ipam_echo = vec![IpamEcho {
        subnet: Some(subnet.to_string()),
        ip_range: None,
        gateway: None,
    }];
    bridge.pool = Some(AddressPool::new(subnet.into(), bip.addr().into(), None));
    vec![
        bridge,
        base(h, "host", NetworkKind::Host),
        base(n, "none", NetworkKind::Null),
    ]
}

pub mod macvlan;
pub mod overlay;
#[cfg(test)]
mod tests;
