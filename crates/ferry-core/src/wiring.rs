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

/// One kernel step of a plan, in the order ferryd's executor runs them. Each knows what
/// takes it back ([`KernelStep::undo`]): a step that fails leaves nothing, and the
/// executor takes back the steps before it in reverse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelStep {
    /// The sandbox's own network namespace, pinned at this path, `lo` up.
    CreateNetns(PathBuf),
    /// The sandbox's /etc/hostname, hosts and resolv.conf, written from the state into
    /// its directory (which goes with the sandbox, so nothing takes them back).
    SandboxFiles,
    /// One endpoint's link.
    Attach(AttachSpec),
    /// The namespace's name where `ip netns` finds it: the symlink `link` → `target`.
    NameNetns { link: PathBuf, target: PathBuf },
}

/// What takes a [`KernelStep`] back; a stop's teardown is a list of these too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelUndo {
    /// An endpoint's link, by its host end (deleting it takes the sandbox's end along;
    /// a plugin's goes back to the plugin). A link without a host end goes with its
    /// namespace.
    DetachLink(String),
    RemoveNetns(PathBuf),
    /// A namespace's name (the symlink).
    Unname(PathBuf),
}

impl KernelStep {
    /// Whether a failure of this step may leave part of it made, so that its own undo
    /// runs too: a namespace file may be there without a namespace on it. (An attach
    /// removes what it made before it fails.)
    pub fn leaves_part(&self) -> bool {
        matches!(self, KernelStep::CreateNetns(_))
    }

    pub fn undo(&self) -> Option<KernelUndo> {
        match self {
            KernelStep::CreateNetns(p) => Some(KernelUndo::RemoveNetns(p.clone())),
            KernelStep::SandboxFiles => None,
            KernelStep::Attach(spec) => spec.host_if().map(|h| KernelUndo::DetachLink(h.into())),
            KernelStep::NameNetns { link, .. } => Some(KernelUndo::Unname(link.clone())),
        }
    }
}
