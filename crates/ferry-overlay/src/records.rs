//! What the cluster store holds, and under which keys.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ferry_core::model::IpamEcho;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// One ferryd of the cluster, kept under its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    /// Its tunnel endpoint (`--cluster-advertise`).
    pub addr: Ipv4Addr,
    pub started: String,
    pub lease: i64,
}

/// An overlay network, the same on every host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayNetwork {
    pub id: String,
    pub name: String,
    pub created: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// Dynamic addresses come from here (`--ip-range`), else from the whole subnet.
    pub ip_range: Option<Ipv4Net>,
    pub vni: u32,
    /// The prefix length of the per-host address blocks.
    pub block_prefix: u8,
    pub internal: bool,
    pub attachable: bool,
    /// `com.docker.network.driver.mtu`, if given; else each host derives it.
    pub mtu: Option<u32>,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
    pub ipam_echo: Vec<IpamEcho>,
}

/// One sandbox's endpoint on an overlay, published by the host it runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub network: String,
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    pub node: String,
    /// The node's tunnel address, so a host can program the entry without the node's record.
    pub vtep: Ipv4Addr,
    pub sandbox: String,
    /// Names it answers to on this network: name, hostname, aliases.
    pub names: Vec<String>,
}

pub const NODES: &str = "node/";
pub const NETS: &str = "ov/net/";
pub const ENDPOINTS: &str = "ov/ep/";
pub const BLOCKS: &str = "ov/blk/";
/// `ov/dead/<node>`: a host whose registration was seen gone, while it still held
/// address blocks. Removed when it registers again.
pub const DEAD: &str = "ov/dead/";
/// `ov/grace/<node>`: beside a [`DEAD`] marker, under a lease as long as the grace
/// period: while it lives, the dead host's blocks are still its own.
pub const GRACE: &str = "ov/grace/";
/// Touched by every create and remove of a network: creations compare its revision.
pub const NETS_REVISION: &str = "ov/nets";

pub fn node_key(name: &str) -> String {
    format!("{NODES}{name}")
}
pub fn dead_key(node: &str) -> String {
    format!("{DEAD}{node}")
}
pub fn grace_key(node: &str) -> String {
    format!("{GRACE}{node}")
}
pub fn net_key(id: &str) -> String {
    format!("{NETS}{id}")
}
pub fn name_key(name: &str) -> String {
    format!("ov/name/{name}")
}
pub fn vni_key(vni: u32) -> String {
    format!("ov/vni/{vni}")
}
pub fn block_key(net: &str, block: Ipv4Net) -> String {
    format!("{BLOCKS}{net}/{}", block.to_string().replace('/', "_"))
}
pub fn endpoint_key(net: &str, ip: Ipv4Addr) -> String {
    format!("{ENDPOINTS}{net}/{ip}")
}
pub fn endpoints_of(net: &str) -> String {
    format!("{ENDPOINTS}{net}/")
}
pub fn blocks_of(net: &str) -> String {
    format!("{BLOCKS}{net}/")
}

/// The network and block a block key names.
pub fn parse_block_key(key: &str) -> Option<(&str, Ipv4Net)> {
    let (net, block) = key.strip_prefix(BLOCKS)?.split_once('/')?;
    Some((net, block.replace('_', "/").parse().ok()?))
}
