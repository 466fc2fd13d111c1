//! The desired state: networks, sandboxes and their endpoints, as kept in the store.
//! The kernel is derived from these values; nothing here refers to kernel handles.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::ipam::AddressPool;
use crate::ports::{PortMapping, Published};
use crate::IfName;

pub const DEFAULT_BRIDGE: &str = "bridge";
/// The default bridge's link: `ferry0` (a second ferryd's: [`crate::instance`]).
pub fn default_bridge_if() -> &'static str {
    crate::instance::default_bridge()
}
pub const DEFAULT_MTU: u32 = 1500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    Bridge,
    Host,
    Null,
    /// A network across hosts: on each host a bridge with a VXLAN port (ferry-overlay).
    Overlay,
    /// Sandboxes' links are macvlan devices on a parent interface of this host.
    Macvlan,
    /// A third-party libnetwork plugin drives it (plughost); its name is in
    /// [`Network::remote`].
    Remote,
}

impl Driver {
    pub fn parse(s: &str) -> Option<Driver> {
        match s {
            "" | "bridge" => Some(Driver::Bridge),
            "host" => Some(Driver::Host),
            "null" => Some(Driver::Null),
            "overlay" => Some(Driver::Overlay),
            "macvlan" => Some(Driver::Macvlan),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Bridge => "bridge",
            Driver::Host => "host",
            Driver::Null => "null",
            Driver::Overlay => "overlay",
            Driver::Macvlan => "macvlan",
            Driver::Remote => "remote",
        }
    }
    /// Whether sandboxes join it through a bridge of this host (bridge and overlay).
    pub fn is_bridged(self) -> bool {
        matches!(self, Driver::Bridge | Driver::Overlay)
    }
    /// Whether a sandbox on it has an endpoint of its own (not host, not none).
    pub fn has_endpoints(self) -> bool {
        matches!(
            self,
            Driver::Bridge | Driver::Overlay | Driver::Macvlan | Driver::Remote
        )
    }
}

/// What makes a host's copy of an overlay network: its VXLAN ID and device. The record
/// every host shares lives in the cluster store; this is the host's local copy of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayConf {
    pub vni: u32,
    pub vxlan: IfName,
}

/// The IPAM config as the user gave it, echoed back by inspect exactly as dockerd does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamEcho {
    pub subnet: Option<String>,
    pub ip_range: Option<String>,
    pub gateway: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeConf {
    pub name: IfName,
    pub mtu: u32,
    pub icc: bool,
    pub masquerade: bool,
    /// The bridge existed before the network (an administrator's bridge named by
    /// `com.docker.network.bridge.name`): ferry adds its gateway address to it and takes
    /// that away again, but never deletes the bridge. Records made before this field
    /// read as false: ferry made the bridge.
    #[serde(default)]
    pub adopted: bool,
}

/// How sandboxes' macvlan links talk among themselves (Docker's `macvlan_mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MacvlanMode {
    /// Links on one parent reach each other inside the host.
    #[default]
    Bridge,
    /// Links on one parent never reach each other, even through the parent's segment.
    Private,
}

impl MacvlanMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MacvlanMode::Bridge => "bridge",
            MacvlanMode::Private => "private",
        }
    }
}

/// A macvlan network: the parent interface its sandboxes' links hang from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MacvlanConf {
    pub parent: IfName,
    pub mode: MacvlanMode,
    /// `com.docker.network.driver.mtu`; without it, the parent's.
    pub mtu: Option<u32>,
}

/// What a network is made of on this host: one variant a driver, each with exactly the
/// settings it has (a host network has no bridge, an overlay always has a tunnel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkKind {
    /// A Linux bridge of this host.
    Bridge(BridgeConf),
    /// A network across hosts: this host's bridge with a VXLAN port on it.
    Overlay {
        bridge: BridgeConf,
        tunnel: OverlayConf,
    },
    /// Macvlan links on a parent interface; nothing of the network's own on the host.
    Macvlan(MacvlanConf),
    /// A third-party libnetwork plugin makes its links (plughost).
    Remote(RemoteConf),
    /// The host's own namespace.
    Host,
    /// A namespace with a loopback only.
    Null,
}

impl NetworkKind {
    pub fn driver(&self) -> Driver {
        match self {
            NetworkKind::Bridge(_) => Driver::Bridge,
            NetworkKind::Overlay { .. } => Driver::Overlay,
            NetworkKind::Macvlan(_) => Driver::Macvlan,
            NetworkKind::Remote(_) => Driver::Remote,
            NetworkKind::Host => Driver::Host,
            NetworkKind::Null => Driver::Null,
        }
    }
    /// The bridge of this host that sandboxes' veths hang from (bridge and overlay).
    pub fn bridge(&self) -> Option<&BridgeConf> {
        match self {
            NetworkKind::Bridge(b) | NetworkKind::Overlay { bridge: b, .. } => Some(b),
            _ => None,
        }
    }
    pub fn bridge_mut(&mut self) -> Option<&mut BridgeConf> {
        match self {
            NetworkKind::Bridge(b) | NetworkKind::Overlay { bridge: b, .. } => Some(b),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "NetworkRecord", try_from = "NetworkRecord")]
pub struct Network {
    pub id: String,
    pub name: String,
    pub created: String,
    pub kind: NetworkKind,
    pub internal: bool,
    pub attachable: bool,
    pub predefined: bool,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
    pub ipam_options: Option<BTreeMap<String, String>>,
    pub ipam_echo: Vec<IpamEcho>,
    pub pool: Option<AddressPool>,
    /// plughost: set when a third-party IPAM plugin gave the pool (`--ipam-driver`).
    pub ipam_plugin: Option<RemoteIpam>,
}

/// A network as the store keeps it (the layout of every ferry so far): the driver's
/// name and its settings side by side, checked into a [`NetworkKind`] when read.
#[derive(Serialize, Deserialize)]
struct NetworkRecord {
    id: String,
    name: String,
    created: String,
    driver: Driver,
    internal: bool,
    attachable: bool,
    predefined: bool,
    labels: BTreeMap<String, String>,
    options: BTreeMap<String, String>,
    ipam_options: Option<BTreeMap<String, String>>,
    ipam_echo: Vec<IpamEcho>,
    bridge: Option<BridgeConf>,
    /// Serialised without its allocations: ferryd keeps those under keys of their own.
    #[serde(serialize_with = "crate::ipam::serialize_without_allocations")]
    pool: Option<AddressPool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    overlay: Option<OverlayConf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    macvlan: Option<MacvlanConf>,
    /// plughost: the plugin that drives a remote network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    remote: Option<RemoteConf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ipam_plugin: Option<RemoteIpam>,
}

impl From<Network> for NetworkRecord {
    fn from(n: Network) -> Self {
        let driver = n.kind.driver();
        let (mut bridge, mut overlay, mut macvlan, mut remote) = (None, None, None, None);
        match n.kind {
            NetworkKind::Bridge(b) => bridge = Some(b),
            NetworkKind::Overlay { bridge: b, tunnel } => {
                (bridge, overlay) = (Some(b), Some(tunnel))
            }
            NetworkKind::Macvlan(m) => macvlan = Some(m),
            NetworkKind::Remote(r) => remote = Some(r),
            NetworkKind::Host | NetworkKind::Null => {}
        }
        NetworkRecord {
            id: n.id,
            name: n.name,
            created: n.created,
            driver,
            internal: n.internal,
            attachable: n.attachable,
            predefined: n.predefined,
            labels: n.labels,
            options: n.options,
            ipam_options: n.ipam_options,
            ipam_echo: n.ipam_echo,
            bridge,
            pool: n.pool,
            overlay,
            macvlan,
            remote,
            ipam_plugin: n.ipam_plugin,
        }
    }
}

impl TryFrom<NetworkRecord> for Network {
    type Error = String;
    fn try_from(r: NetworkRecord) -> Result<Self, String> {
        let missing = |what: &str| format!("{} network {}: no {what}", r.driver.as_str(), r.id);
        let kind = match (r.driver, r.bridge, r.overlay, r.macvlan, r.remote) {
            (Driver::Bridge, Some(b), None, None, None) => NetworkKind::Bridge(b),
            (Driver::Overlay, Some(bridge), Some(tunnel), None, None) => {
                NetworkKind::Overlay { bridge, tunnel }
            }
            (Driver::Macvlan, None, None, Some(m), None) => NetworkKind::Macvlan(m),
            (Driver::Remote, None, None, None, Some(p)) => NetworkKind::Remote(p),
            (Driver::Host, None, None, None, None) => NetworkKind::Host,
            (Driver::Null, None, None, None, None) => NetworkKind::Null,
            (Driver::Bridge | Driver::Overlay, None, ..) => return Err(missing("bridge")),
            (Driver::Overlay, _, None, ..) => return Err(missing("tunnel")),
            (Driver::Macvlan, _, _, None, _) => return Err(missing("parent")),
            (Driver::Remote, .., None) => return Err(missing("plugin")),
            _ => return Err(format!("network {}: settings of another driver", r.id)),
        };
        Ok(Network {
            id: r.id,
            name: r.name,
            created: r.created,
            kind,
            internal: r.internal,
            attachable: r.attachable,
            predefined: r.predefined,
            labels: r.labels,
            options: r.options,
            ipam_options: r.ipam_options,
            ipam_echo: r.ipam_echo,
            pool: r.pool,
            ipam_plugin: r.ipam_plugin,
        })
    }
}

/// plughost: the IPAM plugin's pool behind a network: ferry's pool mirrors it, and every
/// address in it was granted by the plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteIpam {
    pub driver: String,
    pub pool_id: String,
    /// The gateway came from `RequestAddress` (not from the pool's data): released at rm.
    pub gateway_requested: bool,
}

/// plughost: which plugin drives a network, by the name it was found under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteConf {
    pub driver: String,
}

impl Network {
    pub fn driver(&self) -> Driver {
        self.kind.driver()
    }
    pub fn bridge(&self) -> Option<&BridgeConf> {
        self.kind.bridge()
    }
    pub fn bridge_mut(&mut self) -> Option<&mut BridgeConf> {
        self.kind.bridge_mut()
    }
    /// An overlay's VXLAN settings, on this host's copy of it.
    pub fn overlay(&self) -> Option<&OverlayConf> {
        match &self.kind {
            NetworkKind::Overlay { tunnel, .. } => Some(tunnel),
            _ => None,
        }
    }
    pub fn macvlan(&self) -> Option<&MacvlanConf> {
        match &self.kind {
            NetworkKind::Macvlan(m) => Some(m),
            _ => None,
        }
    }
    /// The plugin that drives a remote network.
    pub fn remote(&self) -> Option<&RemoteConf> {
        match &self.kind {
            NetworkKind::Remote(r) => Some(r),
            _ => None,
        }
    }
    pub fn is_default_bridge(&self) -> bool {
        self.predefined && self.driver() == Driver::Bridge
    }
    /// The driver's name as Docker shows it: a plugin's own name for a remote network.
    pub fn driver_name(&self) -> &str {
        match self.remote() {
            Some(r) => &r.driver,
            None => self.driver().as_str(),
        }
    }
    pub fn subnet(&self) -> Option<IpNet> {
        self.pool.as_ref().map(|p| p.subnet)
    }
    /// Docker's scope: "global" for an overlay, "local" for everything else.
    pub fn scope(&self) -> &'static str {
        match self.driver() {
            Driver::Overlay => "global",
            _ => "local",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum RunState {
    Created,
    Running { pid: u32, start_time: u64 },
    Exited { code: i32 },
}

/// One sandbox's membership of one network. `live` is set while the sandbox runs and
/// holds what the kernel was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub network_id: String,
    pub static_ip: Option<IpAddr>,
    pub aliases: Vec<String>,
    /// Published ports as requested (`-p`, `connect --publish`).
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    pub live: Option<LiveEndpoint>,
    /// Who put the sandbox on the network. Records made before this field read as
    /// [`Membership::Asked`].
    #[serde(default, skip_serializing_if = "Membership::is_asked")]
    pub membership: Membership,
}

/// Why a sandbox is on a network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Membership {
    /// The user asked for it: `run --network`, `network connect`.
    #[default]
    Asked,
    /// ferry added it, as dockerd adds a `docker_gwbridge` endpoint: no other network
    /// of the sandbox gives it a way out (a plugin's `Join` named no gateway). It goes
    /// when another network gives one, or when the sandbox stops; a container's inspect
    /// does not show it.
    GatewayService,
}

impl Membership {
    pub fn is_asked(&self) -> bool {
        *self == Membership::Asked
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveEndpoint {
    pub id: String,
    pub ip: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
    pub mac: [u8; 6],
    /// The endpoint's link in ferryd's namespace: a veth's host end. A macvlan
    /// endpoint has none.
    pub host_if: Option<IfName>,
    pub ifname: IfName,
    pub default_route: bool,
    /// The published ports with their host ports decided, as the firewall has them.
    #[serde(default)]
    pub published: Vec<Published>,
    /// What the endpoint gives the sandbox towards the outside: its gateway, except on a
    /// plugin's network, where `Join` tells. Records made before this field read as
    /// [`WayOut::Gateway`].
    #[serde(default, skip_serializing_if = "WayOut::is_gateway")]
    pub way_out: WayOut,
}

/// What an endpoint gives its sandbox towards the outside (dockerd's
/// `sandbox.needDefaultGW` and `getGatewayEndpoint` read the same facts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WayOut {
    /// A gateway: the endpoint may carry the sandbox's default route.
    #[default]
    Gateway,
    /// No gateway, but a plugin's static route to 0.0.0.0/0: the sandbox needs nothing
    /// more, and the endpoint does not carry the default route.
    Routes,
    /// Nothing: the sandbox needs a way out from elsewhere
    /// ([`crate::plan::gateway_service`]).
    Lacks,
    /// `DisableGatewayService`: the endpoint asks for no way out at all.
    Waived,
}

impl WayOut {
    pub fn is_gateway(&self) -> bool {
        *self == WayOut::Gateway
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConf {
    pub servers: Vec<String>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

/// A sandbox's network mode, as Docker's `HostConfig.NetworkMode` names it; stored as
/// that string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum NetworkMode {
    /// ferryd's own namespace: no namespace, no endpoints, no files of its own.
    Host,
    /// A namespace of its own with a loopback only.
    None,
    /// A namespace of its own on a network: "default" (the bridge), a name or an ID.
    Joined(String),
}

impl NetworkMode {
    pub fn as_str(&self) -> &str {
        match self {
            NetworkMode::Host => "host",
            NetworkMode::None => "none",
            NetworkMode::Joined(n) => n,
        }
    }
    /// Whether the sandbox has a network namespace of its own (all but host).
    pub fn own_netns(&self) -> bool {
        !matches!(self, NetworkMode::Host)
    }
    /// Whether the sandbox may have endpoints (neither host nor none).
    pub fn joins_networks(&self) -> bool {
        matches!(self, NetworkMode::Joined(_))
    }
}

impl From<String> for NetworkMode {
    fn from(s: String) -> Self {
        match s.as_str() {
            "host" => NetworkMode::Host,
            "none" => NetworkMode::None,
            _ => NetworkMode::Joined(s),
        }
    }
}

impl From<NetworkMode> for String {
    fn from(m: NetworkMode) -> Self {
        m.as_str().to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    pub id: String,
    pub name: String,
    pub created: String,
    pub created_unix: i64,
    pub hostname: String,
    pub cmd: Vec<String>,
    /// The network mode as requested (Docker's `HostConfig.NetworkMode`).
    pub network_mode: NetworkMode,
    pub auto_remove: bool,
    pub dns: DnsConf,
    pub state: RunState,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub endpoints: Vec<Endpoint>,
    /// `--label`s, as `docker run` takes them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Sandbox {
    pub fn is_running(&self) -> bool {
        matches!(self.state, RunState::Running { .. })
    }
    pub fn endpoint(&self, network_id: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.network_id == network_id)
    }
    /// The lowest `ethN` not used by a live endpoint.
    pub fn next_ifname(&self) -> IfName {
        let used: Vec<&str> = self
            .endpoints
            .iter()
            .filter_map(|e| e.live.as_ref())
            .map(|l| l.ifname.as_str())
            .collect();
        (0..)
            .map(|i| format!("eth{i}"))
            .find(|n| !used.contains(&n.as_str()))
            .and_then(|n| IfName::new(n).ok())
            .expect("an unused ethN exists")
    }
}

/// Docker's bridge-driver MAC: 02:42 followed by the four IPv4 bytes (for an IPv6
/// address, its last four).
pub fn mac_for(ip: IpAddr) -> [u8; 6] {
    let o = match ip {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(a) => {
            let b = a.octets();
            [b[12], b[13], b[14], b[15]]
        }
    };
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Host-side veth name for an endpoint: `fy` (this ferryd's link prefix,
/// [`crate::instance`]) and 11 hex characters of its ID.
pub fn host_if_name(endpoint_id: &str) -> IfName {
    let p = crate::instance::link_prefix();
    IfName::new(format!("{p}{}", &endpoint_id[..11])).expect("13 bytes is a valid name")
}

/// The MAC of every overlay's VXLAN device on the host whose tunnel address is `vtep`:
/// `02:fe` and the address, so that any host can address another's device from the
/// node record alone.
pub fn tunnel_mac(vtep: std::net::Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = vtep.octets();
    [0x02, 0xfe, a, b, c, d]
}

/// The bridge and VXLAN device of an overlay network on each host: `fo-` and `fv-` and
/// 8 hex characters of its ID (a second ferryd's, [`crate::instance`]: its prefix, then
/// `o-` and `v-`).
pub fn overlay_if_names(network_id: &str) -> (IfName, IfName) {
    let (b, v) = match crate::instance::link_prefix() {
        "fy" => ("fo-".to_string(), "fv-".to_string()),
        p => (format!("{p}o-"), format!("{p}v-")),
    };
    let id = &network_id[..8];
    (
        IfName::new(format!("{b}{id}")).expect("at most 12 bytes is a valid name"),
        IfName::new(format!("{v}{id}")).expect("at most 12 bytes is a valid name"),
    )
}

/// Bridge name of a user network without `com.docker.network.bridge.name`: `fy-` (with
/// this ferryd's link prefix) and 8 hex characters of its ID.
pub fn bridge_name_for(network_id: &str) -> IfName {
    let p = crate::instance::link_prefix();
    IfName::new(format!("{p}-{}", &network_id[..8])).expect("11 bytes is a valid name")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_network_is_stored_in_the_layout_every_ferry_wrote_and_read_back_whole() {
        let nets = crate::validate::predefined_networks(
            ["a".repeat(64), "b".repeat(64), "c".repeat(64)],
            "now",
            "172.17.0.1/16".parse().unwrap(),
        );
        let bridge = serde_json::to_value(&nets[0]).unwrap();
        assert_eq!(bridge["driver"], "bridge");
        assert_eq!(bridge["bridge"]["name"], "ferry0");
        assert!(bridge.get("kind").is_none() && bridge.get("macvlan").is_none());
        for n in &nets {
            let back: Network = serde_json::from_value(serde_json::to_value(n).unwrap()).unwrap();
            assert_eq!(back.kind, n.kind);
        }
        let host = serde_json::to_value(&nets[1]).unwrap();
        assert!(host["bridge"].is_null(), "{host}");
    }

    #[test]
    fn a_record_whose_settings_do_not_fit_its_driver_is_refused() {
        let nets = crate::validate::predefined_networks(
            ["a".repeat(64), "b".repeat(64), "c".repeat(64)],
            "now",
            "172.17.0.1/16".parse().unwrap(),
        );
        let mut v = serde_json::to_value(&nets[0]).unwrap();
        v["driver"] = "overlay".into();
        let e = serde_json::from_value::<Network>(v.clone())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no tunnel"), "{e}");
        v["driver"] = "host".into();
        assert!(serde_json::from_value::<Network>(v).is_err());
        let mut v = serde_json::to_value(&nets[0]).unwrap();
        v["driver"] = "macvlan".into();
        v["bridge"] = serde_json::Value::Null;
        let e = serde_json::from_value::<Network>(v)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no parent"), "{e}");
    }

    #[test]
    fn mac_follows_docker_for_172_17_0_2() {
        assert_eq!(
            mac_string(&mac_for("172.17.0.2".parse().unwrap())),
            "02:42:ac:11:00:02"
        );
        assert_eq!(
            mac_string(&mac_for("10.77.0.200".parse().unwrap())),
            "02:42:0a:4d:00:c8"
        );
    }
}
