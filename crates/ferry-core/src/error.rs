//! Errors of the core, each naming the object and what is wrong with it. Every variant
//! maps to the HTTP status dockerd answers for the same case (docker-protocols.md B3).

use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    #[error("network with name {0} already exists")]
    DuplicateNetwork(String),
    #[error("Pool overlaps with other one on this address space")]
    PoolOverlap,
    #[error("Invalid subnet {0} : invalid CIDR address: {0}")]
    BadSubnet(String),
    #[error("invalid {what} {value}: {why}")]
    BadValue {
        what: &'static str,
        value: String,
        why: String,
    },
    #[error("failed to allocate gateway ({0}): Requested address is out of range")]
    GatewayOutOfRange(String),
    #[error("ip-range {range} is not inside subnet {subnet}")]
    RangeOutOfSubnet { range: String, subnet: String },
    #[error("plugin \"{0}\" not found")]
    UnknownDriver(String),
    #[error("network {0} not found")]
    NoSuchNetwork(String),
    #[error("No such container: {0}")]
    NoSuchContainer(String),
    #[error("network {0} is ambiguous: more than one network matches this ID prefix")]
    AmbiguousNetwork(String),
    #[error("Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name.")]
    ContainerNameInUse { name: String, id: String },
    #[error("user specified IP address is supported on user defined networks only")]
    StaticIpOnDefaultBridge,
    #[error("network-scoped alias is supported only for containers in user defined networks")]
    AliasOnDefaultBridge,
    #[error("user specified IP address is supported only when connecting to networks with user configured subnets")]
    StaticIpNeedsUserSubnet,
    #[error("Address already in use: {0}")]
    AddressInUse(IpAddr),
    #[error("Invalid address {0}: It does not belong to any of this network's subnets")]
    AddressOutsideSubnet(IpAddr),
    #[error("Invalid address {ip}: {why}")]
    AddressReserved { ip: IpAddr, why: &'static str },
    #[error("no available addresses on network {0}")]
    NetworkFull(String),
    #[error("could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network")]
    NoFreePool,
    #[error("endpoint with name {sandbox} already exists in network {network}")]
    AlreadyConnected { sandbox: String, network: String },
    #[error("container {sandbox} is not connected to network {network}")]
    NotConnected { sandbox: String, network: String },
    #[error("error while removing network: network {name} id {id} has active endpoints")]
    NetworkInUse { name: String, id: String },
    #[error("{0} is a pre-defined network and cannot be removed")]
    Predefined(String),
    #[error("container sharing network namespace with another container or host cannot be connected to any other network")]
    SharedNamespace,
    #[error("container cannot be connected to multiple networks with one of the networks in private (none) mode")]
    NoneNetworkConflict,
    #[error("Container {0} is not running")]
    NotRunning(String),
    #[error("You cannot remove a running container {0}. Stop the container before attempting removal or force remove")]
    RemoveRunning(String),
    #[error("Bind for {host_ip}:{port} failed: port is already allocated")]
    PortTaken { host_ip: String, port: u16 },
    #[error("{0}")]
    Invalid(String),
    /// A Docker call ferry does not do; the message names the ferry way.
    #[error("{0}")]
    NotSupported(String),
}

impl CoreError {
    /// The HTTP status of the failure: dockerd's, except that a client's mistake is
    /// never a 500 here (dockerd answers 500 for a malformed subnet, a gateway or static
    /// address outside the subnet, a disconnect of what is not connected, a port taken).
    pub fn status(&self) -> u16 {
        use CoreError::*;
        match self {
            DuplicateNetwork(_)
            | ContainerNameInUse { .. }
            | RemoveRunning(_)
            | NotRunning(_)
            | PortTaken { .. } => 409,
            PoolOverlap
            | AddressInUse(_)
            | AlreadyConnected { .. }
            | NetworkInUse { .. }
            | Predefined(_)
            | SharedNamespace => 403,
            StaticIpOnDefaultBridge
            | AliasOnDefaultBridge
            | StaticIpNeedsUserSubnet
            | NoneNetworkConflict
            | BadValue { .. }
            | RangeOutOfSubnet { .. }
            | Invalid(_)
            | AmbiguousNetwork(_)
            | BadSubnet(_)
            | GatewayOutOfRange(_)
            | AddressOutsideSubnet(_)
            | AddressReserved { .. } => 400,
            UnknownDriver(_) | NoSuchNetwork(_) | NoSuchContainer(_) | NotConnected { .. } => 404,
            // Not a mistake of the request: the addresses ran out (libnetwork's
            // ErrNoAvailableIPs and pool exhaustion are "unavailable" errors, 503).
            NetworkFull(_) | NoFreePool => 503,
            NotSupported(_) => 501,
        }
    }
}
