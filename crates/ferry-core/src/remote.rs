//! What ferry keeps for dockerd when it serves as Docker's remote network driver and
//! IPAM driver (the plugin). Docker replays nothing after a plugin restart, so all of it
//! lives in the store beside networks and sandboxes:
//!
//! * an [`IpamPool`] per `IpamDriver.RequestPool`. Until `CreateNetwork` names the
//!   network it belongs to, the pool holds its own [`AddressPool`]; then the address
//!   pool moves into the ferry network (one truth for `ferry network inspect` and for
//!   ferry's own sandboxes) and the record only points at it. A pool used by Docker's
//!   built-in bridge driver is never bound.
//! * a [`DockerNetwork`] per network made by `NetworkDriver.CreateNetwork`: the ferry
//!   network of the same ID is Docker's, so `ferry network rm` leaves it to Docker.
//!   With `-o ferry.overlay=NAME` there is no such ferry network: the record points at
//!   the overlay, which every host's dockerd maps its own Docker network onto.
//! * a [`DockerEndpoint`] per `CreateEndpoint`, holding a model [`Endpoint`] (address,
//!   MAC, links, requested and published ports) so it is handled like a sandbox's.
//!
//! Addresses a pool hands to Docker are owned by [`DOCKER_IPAM_OWNER`] until an
//! endpoint claims them (owner: the endpoint ID) and again after it is deleted, until
//! Docker's `ReleaseAddress`: so a late or repeated release can never free an address
//! that was handed out again meanwhile.

use serde::{Deserialize, Serialize};

use crate::ipam::AddressPool;
use crate::model::Endpoint;

/// The owner of an address ferry's IPAM gave Docker that no endpoint holds.
pub const DOCKER_IPAM_OWNER: &str = "docker-ipam";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamPool {
    pub id: String,
    /// The addresses, while no network holds them.
    pub pool: Option<AddressPool>,
    /// The ferry network that holds the addresses, once CreateNetwork named it.
    pub network_id: Option<String>,
    /// Docker released the pool (it does so before DeleteNetwork).
    pub released: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerNetwork {
    pub id: String,
    /// The ferry IPAM pool of its addresses; None with Docker's built-in IPAM.
    pub pool_id: Option<String>,
    /// False when `-o bridge=NAME` named a bridge the user made: ferry never deletes it.
    pub owns_bridge: bool,
    /// `-o ferry.overlay=NAME`: the ID of the ferry overlay this Docker network is this
    /// host's view of. Then no ferry network has Docker's ID: the endpoints are on the
    /// overlay, and the overlay outlives the Docker network (other hosts' dockerds use it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<String>,
}

/// The option naming the ferry overlay a Docker network joins (`-o ferry.overlay=NAME`).
pub const OPT_OVERLAY: &str = "ferry.overlay";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerEndpoint {
    pub id: String,
    /// The model endpoint; `live` is set from CreateEndpoint on (address, MAC, link
    /// names); `live.published` once ProgramExternalConnectivity decided host ports.
    pub endpoint: Endpoint,
    /// Join made the veth pair (Leave does not remove it: Docker moves the container
    /// end back and DeleteEndpoint deletes the pair).
    pub joined: bool,
    /// The container's namespace as Docker named it in Join.
    pub sandbox_key: Option<String>,
    /// Docker's network, when the endpoint is on the overlay that network maps onto
    /// (so a DeleteNetwork finds the endpoints Docker forgot there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_network: Option<String>,
}

impl DockerEndpoint {
    /// The link names ferry made for it in its own namespace: the host end (on the
    /// bridge) and the container end (`SrcName`, until Docker moves it).
    pub fn links(&self) -> Vec<String> {
        self.endpoint
            .live
            .as_ref()
            .map(|l| {
                l.host_if
                    .iter()
                    .map(ToString::to_string)
                    .chain([container_if_name(&self.id)])
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The container end of a Docker endpoint's veth pair while it is in ferryd's
/// namespace: `fy` (this ferryd's link prefix), 11 hex digits of the endpoint ID, `c`
/// (the host end is the same without the `c`, as for ferry's own sandboxes).
pub fn container_if_name(endpoint_id: &str) -> String {
    let p = crate::instance::link_prefix();
    format!("{p}{}c", &endpoint_id[..11])
}
