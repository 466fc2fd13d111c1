//! Typed netlink requests, one verb per file.

pub mod addr;
pub mod adopt;
pub mod bridge;
pub mod check;
pub mod del;
pub mod dump;
pub mod fdb;
pub mod get;
pub mod kind;
pub mod macvlan;
pub mod port;
pub mod retire;
pub mod route;
pub mod up;
pub mod veth;
pub mod vxlan;
