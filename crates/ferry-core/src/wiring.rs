//! What the kernel is asked to make for a network and an endpoint: plain values the
//! planners decide ([`crate::plan`]) and ferry-kernel carries out. No I/O here.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSpec {
    pub name: String,
    /// The gateway address with the subnet's prefix length.
    pub gateway: Option<IpNet>,
    pub mtu: u32,
}

/// One endpoint of a sandbox: its interface inside the sandbox (name, MAC, address,
/// default route) and the link it is, as its network's driver makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachSpec {
    pub netns: PathBuf,
    pub ifname: String,
    pub mac: [u8; 6],
    pub addr: IpNet,
    /// Set the sandbox's default route via this address.
    pub default_via: Option<IpAddr>,
    pub link: LinkSpec,
}

/// The link behind a sandbox's interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkSpec {
    /// A veth pair whose host end is a port of a bridge (bridge and overlay networks).
    Veth(VethLink),
    /// A macvlan device on a parent interface of the host (macvlan networks).
    Macvlan(MacvlanLink),
    /// A link a third-party plugin makes at its Join; ferryd adopts it into the sandbox
    /// (ferry-kernel's `KernelOps::adopt_link`), the kernel alone cannot make it.
    Plugin(PluginLink),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginLink {
    /// ferry's name for the endpoint's link, the key of ferryd's record of it.
    pub host_if: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethLink {
    pub bridge: String,
    pub host_if: String,
    pub mtu: u32,
    /// Hairpin mode on the bridge port (the endpoint publishes ports).
    pub hairpin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacvlanLink {
    pub parent: String,
    pub mode: crate::model::MacvlanMode,
    /// Without one, the parent's.
    pub mtu: Option<u32>,
}

impl AttachSpec {
    /// The endpoint's link in ferryd's namespace, if it has one (a veth's host end).
    pub fn host_if(&self) -> Option<&str> {
        match &self.link {
            LinkSpec::Veth(v) => Some(&v.host_if),
            LinkSpec::Plugin(p) => Some(&p.host_if),
            LinkSpec::Macvlan(_) => None,
        }
    }
}
