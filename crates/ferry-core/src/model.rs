//! The desired state: networks, sandboxes and their endpoints, as kept in the store.
//! The kernel is derived from these values; nothing here refers to kernel handles.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::ipam::AddressPool;
use crate::ports::{PortMapping, Published};
use crate::IfName;

pub const DEFAULT_BRIDGE: &str = "bridge";
pub const DEFAULT_BRIDGE_IF: &str = "ferry0";
pub const DEFAULT_MTU: u32 = 1500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    Bridge,
    Host,
    Null,
    /// A network across hosts: on each host a bridge with a VXLAN port (ferry-overlay).
    Overlay,
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
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Bridge => "bridge",
            Driver::Host => "host",
            Driver::Null => "null",
            Driver::Overlay => "overlay",
            Driver::Remote => "remote",
        }
    }
    /// Whether sandboxes join it through a bridge of this host (bridge and overlay).
    pub fn is_bridged(self) -> bool {
        matches!(self, Driver::Bridge | Driver::Overlay)
    }
    /// Whether sandboxes join it by an endpoint of their own (bridged, or a plugin's).
    pub fn has_endpoints(self) -> bool {
        self.is_bridged() || self == Driver::Remote
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub created: String,
    pub driver: Driver,
    pub internal: bool,
    pub attachable: bool,
    pub predefined: bool,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
    pub ipam_options: Option<BTreeMap<String, String>>,
    pub ipam_echo: Vec<IpamEcho>,
    pub bridge: Option<BridgeConf>,
    /// Serialised without its allocations: ferryd keeps those under keys of their own.
    #[serde(serialize_with = "crate::ipam::serialize_without_allocations")]
    pub pool: Option<AddressPool>,
    /// Set for an overlay network's local copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<OverlayConf>,
    /// plughost: set for a network a third-party plugin drives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteConf>,
    /// plughost: set when a third-party IPAM plugin gave the pool (`--ipam-driver`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam_plugin: Option<RemoteIpam>,
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
    pub fn is_default_bridge(&self) -> bool {
        self.predefined && self.driver == Driver::Bridge
    }
    /// The driver's name as Docker shows it: a plugin's own name for a remote network.
    pub fn driver_name(&self) -> &str {
        match &self.remote {
            Some(r) => &r.driver,
            None => self.driver.as_str(),
        }
    }
    pub fn subnet(&self) -> Option<Ipv4Net> {
        self.pool.as_ref().map(|p| p.subnet)
    }
    /// Docker's scope: "global" for an overlay, "local" for everything else.
    pub fn scope(&self) -> &'static str {
        match self.driver {
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
    pub static_ip: Option<Ipv4Addr>,
    pub aliases: Vec<String>,
    /// Published ports as requested (`-p`, `connect --publish`).
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    pub live: Option<LiveEndpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveEndpoint {
    pub id: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub mac: [u8; 6],
    pub host_if: IfName,
    pub ifname: IfName,
    pub default_route: bool,
    /// The published ports with their host ports decided, as the firewall has them.
    #[serde(default)]
    pub published: Vec<Published>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConf {
    pub servers: Vec<String>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    pub id: String,
    pub name: String,
    pub created: String,
    pub created_unix: i64,
    pub hostname: String,
    pub cmd: Vec<String>,
    /// The network mode as requested: "default", "host", "none" or a network name/ID.
    pub network_mode: String,
    pub auto_remove: bool,
    pub dns: DnsConf,
    pub state: RunState,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub endpoints: Vec<Endpoint>,
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

/// Docker's bridge-driver MAC: 02:42 followed by the four IPv4 bytes.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Host-side veth name for an endpoint: `fy` and 11 hex characters of its ID.
pub fn host_if_name(endpoint_id: &str) -> IfName {
    IfName::new(format!("fy{}", &endpoint_id[..11])).expect("13 bytes is a valid name")
}

/// The bridge and VXLAN device of an overlay network on each host.
pub fn overlay_if_names(network_id: &str) -> (IfName, IfName) {
    (
        IfName::new(format!("fo-{}", &network_id[..8])).expect("11 bytes is a valid name"),
        IfName::new(format!("fv-{}", &network_id[..8])).expect("11 bytes is a valid name"),
    )
}

/// Bridge name of a user network without `com.docker.network.bridge.name`.
pub fn bridge_name_for(network_id: &str) -> IfName {
    IfName::new(format!("fy-{}", &network_id[..8])).expect("11 bytes is a valid name")
}

#[cfg(test)]
mod tests {
    use super::*;

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
