//! The daemon's side of plughost (see crate::plughost for the design and the plugin
//! clients): endpoints on a plugin's network, remote IPAM, networks a plugin drives, and
//! the task releasing the addresses an IPAM plugin granted.

pub(crate) mod endpoint;
pub(crate) mod ipam;
mod leases;
pub(crate) mod network;

pub use endpoint::is_plugin_link;
pub use leases::release_leases;
