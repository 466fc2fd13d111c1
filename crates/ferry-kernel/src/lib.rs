//! ferry-kernel: the only crate of ferry that touches the kernel.
//!
//! Links, addresses and routes go through rtnetlink; namespaces and mounts through nix
//! syscalls. Nothing here runs `ip`. Orchestration talks to the kernel only through the
//! [`KernelOps`] trait, which has a netlink implementation ([`Netlink`]) and a recording
//! fake ([`fake::Recorder`]) so that ferryd's operations are unit-tested by the kernel
//! work they ask for.

pub mod conntrack;
pub mod error;
pub mod fake;
pub mod fault;
pub mod files;
pub mod kfuncs;
pub mod link;
pub mod netns;
pub mod nft;
pub mod nft_watch;
pub mod ops;
pub mod process;
pub mod reaper;
pub mod rtnl;
pub mod shortcut;
pub mod sysctl;

pub use error::KernelError;
pub use fault::AttachStep;
pub use ops::{
    AdoptSpec, AttachSpec, BridgeSpec, KernelOps, LinkSpec, MacvlanLink, Netlink, PluginLink,
    StaticRoute, VethLink, VethPairSpec, VxlanSpec,
};
