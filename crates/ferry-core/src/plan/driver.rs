//! The driver seam: what a network's driver decides, one implementation per driver.
//!
//! Design note. A network is a [`NetworkKind`], one variant per driver holding exactly
//! its settings; [`NetworkKind::driver`] hands out the variant's settings as a
//! [`NetworkDriver`], the trait the planners ask. Everything a driver decides on its own
//! is here: what the host makes for the network (a bridge, or nothing), the link behind
//! a live endpoint (a veth on the bridge, a macvlan link on the parent, a link a plugin
//! makes), whether that link has an end in ferryd's namespace, and what becomes of ports
//! published on it. Adding a driver is a variant, its validation arm, and one
//! implementation of this trait (netavark's `NetworkDriver` is the model). What every
//! driver shares (addresses, names, the default route, the firewall's sets) stays in the
//! planners.

use crate::ipam::AddressPool;
use crate::model::{BridgeConf, LiveEndpoint, MacvlanConf, NetworkKind, RemoteConf};
use crate::wiring::{BridgeSpec, LinkSpec, MacvlanLink, PluginLink, VethLink};

/// What a network's driver decides.
pub trait NetworkDriver {
    /// What the host makes for the network itself, with the pool's gateway on it.
    fn setup(&self, pool: Option<&AddressPool>) -> Option<BridgeSpec>;
    /// Whether an endpoint has a link of its own in ferryd's namespace (a veth's host
    /// end; for a plugin's endpoint, the key of ferryd's record of it).
    fn host_end(&self) -> bool;
    /// The link behind a live endpoint; none for a network sandboxes do not join.
    fn link(&self, live: &LiveEndpoint) -> Option<LinkSpec>;
    /// What becomes of ports published (`-p`) on the network named `net`.
    fn publishing(&self, net: &str) -> Publishing;
}

/// What becomes of a sandbox's published ports on a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publishing {
    /// ferry publishes them: the firewall's DNAT to the endpoint.
    Here,
    /// They go to the network's plugin with the endpoint's calls, as dockerd passes them
    /// (`P:p10`); ferry publishes nothing (`P:p11`), unless the sandbox gets the gateway
    /// bridge, which publishes them as dockerd's `docker_gwbridge` endpoint does.
    ToPlugin,
    /// Taken and dropped, as dockerd drops them (with `--network host`).
    Dropped,
    /// Refused, saying why.
    Refused(String),
}

impl NetworkKind {
    /// The driver of this kind of network, with its settings.
    pub fn network_driver(&self) -> &dyn NetworkDriver {
        match self {
            NetworkKind::Bridge(b) | NetworkKind::Overlay { bridge: b, .. } => b,
            NetworkKind::Macvlan(m) => m,
            NetworkKind::Remote(r) => r,
            NetworkKind::Host | NetworkKind::Null => &NoEndpoints,
        }
    }
}

/// A bridge of this host, sandboxes' veths on it (bridge and overlay networks).
impl NetworkDriver for BridgeConf {
    fn setup(&self, pool: Option<&AddressPool>) -> Option<BridgeSpec> {
        let gateway = pool.and_then(|p| ipnet::IpNet::new(p.gateway, p.subnet.prefix_len()).ok());
        Some(BridgeSpec {
            name: self.name.to_string(),
            gateway,
            mtu: self.mtu,
        })
    }
    fn host_end(&self) -> bool {
        true
    }
    fn link(&self, live: &LiveEndpoint) -> Option<LinkSpec> {
        Some(LinkSpec::Veth(VethLink {
            bridge: self.name.to_string(),
            host_if: live.host_if.as_ref()?.to_string(),
            mtu: self.mtu,
            hairpin: !live.published.is_empty(),
        }))
    }
    fn publishing(&self, _net: &str) -> Publishing {
        Publishing::Here
    }
}

/// Macvlan links on a parent interface; nothing of the network's own on the host.
impl NetworkDriver for MacvlanConf {
    fn setup(&self, _pool: Option<&AddressPool>) -> Option<BridgeSpec> {
        None
    }
    fn host_end(&self) -> bool {
        false
    }
    fn link(&self, _live: &LiveEndpoint) -> Option<LinkSpec> {
        Some(LinkSpec::Macvlan(MacvlanLink {
            parent: self.parent.to_string(),
            mode: self.mode,
            mtu: self.mtu,
        }))
    }
    fn publishing(&self, net: &str) -> Publishing {
        Publishing::Refused(format!("network {net} is a macvlan network: its sandboxes are reached at their own addresses on the parent's segment, and ports cannot be published on it"))
    }
}

/// plughost: a third-party plugin makes the links at its Join; ferryd adopts them.
impl NetworkDriver for RemoteConf {
    fn setup(&self, _pool: Option<&AddressPool>) -> Option<BridgeSpec> {
        None
    }
    fn host_end(&self) -> bool {
        true
    }
    fn link(&self, live: &LiveEndpoint) -> Option<LinkSpec> {
        Some(LinkSpec::Plugin(PluginLink {
            host_if: live.host_if.as_ref()?.to_string(),
        }))
    }
    // The plugin's network is the plugin's to publish on (dockerd publishes nothing for
    // remote drivers); ferry's maps would point at a bridge it does not know.
    fn publishing(&self, _net: &str) -> Publishing {
        Publishing::ToPlugin
    }
}

/// host and none: sandboxes share the host's namespace or have none; no endpoints.
struct NoEndpoints;

impl NetworkDriver for NoEndpoints {
    fn setup(&self, _pool: Option<&AddressPool>) -> Option<BridgeSpec> {
        None
    }
    fn host_end(&self) -> bool {
        false
    }
    fn link(&self, _live: &LiveEndpoint) -> Option<LinkSpec> {
        None
    }
    // dockerd takes `-p` with `--network host` and discards the ports (with a warning);
    // ferry does the same, so nothing is refused here.
    fn publishing(&self, _net: &str) -> Publishing {
        Publishing::Dropped
    }
}
