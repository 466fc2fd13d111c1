//! ferry-core: the pure heart of ferry.
//!
//! Model, validation, IPAM and the Docker Engine API shapes are plain functions over
//! data. Nothing here does I/O, spawns, sleeps or needs root, so all of it is tested
//! with `cargo test` as any user.

#![forbid(unsafe_code)]

pub mod docker;
pub mod error;
pub mod family;
pub mod files;
pub mod filters;
pub mod id;
pub mod ifname;
pub mod instance;
pub mod ipam;
pub mod model;
pub mod nft;
pub mod plan;
pub mod ports;
pub mod remote;
pub mod shortcut;
pub mod state;
pub mod template;
#[cfg(test)]
mod test_networks;
pub mod validate;
pub mod wiring;

pub use error::CoreError;
pub use ifname::IfName;
