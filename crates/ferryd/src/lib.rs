//! ferryd: orchestration only. It owns the store and the kernel objects it made, and
//! runs every change as validate → reserve in one store transaction → program the
//! kernel, undoing both on failure. On start it reconciles the kernel with the store.

pub mod api;
pub mod br_netfilter;
pub mod config;
pub mod dns;
pub mod error;
pub mod firewall;
pub mod ops;
pub mod overlay;
pub mod plughost;
pub mod plugin;
pub mod reconcile;
pub mod serve;
pub mod shortcut;
pub mod state;

pub use config::Config;
pub use ops::Daemon;
