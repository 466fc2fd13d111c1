//! ferry-overlay: networks that span hosts, with their state in etcd.
//!
//! Design note. Every ferryd started with `--cluster-store` holds a lease in etcd and keeps
//! a record of itself under it (`node/<name>`: its tunnel address). An overlay network is a
//! record every host sees (`ov/net/<id>`), with a VXLAN ID and a subnet that creation
//! claims by compare-and-swap: the transaction compares the name, VNI and subnet keys as
//! absent and the revision of one key (`ov/nets`) that every create and remove touches, so
//! two hosts racing cannot both win, and subnets are checked for overlap against the list
//! the winner saw. Addresses are handed out inside per-host blocks (Calico's affinity
//! blocks): a host claims `ov/blk/<net>/<block>` by compare-and-swap once, then allocates
//! inside it from its local store with no etcd round trip. Each endpoint is published as
//! `ov/ep/<net>/<ip>` under the host's lease, so when a host dies its endpoints vanish
//! from etcd when the lease expires, and every other host removes their tunnel entries on
//! the watch event. A static `--ip` outside every block is claimed in etcd with the block
//! that would hold it compared absent, so a later block claim can never cover it unseen.
//!
//! What is kept where: the cluster's records here ([`records`]), the pure choices
//! ([`alloc`]), the operations over a [`ferry_store::Store`] ([`cluster`]) and the view a
//! host builds from a range plus its watch ([`view`]). ferryd turns the view into kernel
//! state (bridges, VXLAN devices, forwarding entries) and DNS names.
//!
//! The etcd-partition rule: a host that cannot reach etcd claims nothing new (no block, no
//! static address, no network), and keeps serving sandboxes inside the blocks it already
//! holds; blocks are never taken from a host by expiry alone.

#![forbid(unsafe_code)]

pub mod alloc;
pub mod cluster;
pub mod records;
pub mod tunnel;
pub mod view;

pub use cluster::{Cluster, ClusterError};
pub use records::{EndpointRecord, NodeRecord, OverlayNetwork};
pub use tunnel::Tunnel;
pub use view::View;
