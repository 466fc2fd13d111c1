//! Where ferry is still IPv4-only: the crossings from the family-neutral model (a pool's
//! subnet, an endpoint's address: `IpAddr`/`IpNet`) into the parts that speak IPv4 alone
//! (nftables sets typed `ipv4_addr`, DNS A records, the overlay's address blocks, the
//! plugin protocol's `IPv4Data`). Each crossing goes through one of these functions, so
//! that dual-stack work finds every one of them by name. Networks are IPv4 today
//! (`validate` refuses IPv6 subnets), so on today's paths these never return `None`;
//! where one would, the caller leaves the IPv6 address out rather than fail.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};

/// The address, if it is IPv4.
pub fn v4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    }
}

/// The subnet, if it is IPv4.
pub fn v4net(net: IpNet) -> Option<Ipv4Net> {
    match net {
        IpNet::V4(n) => Some(n),
        IpNet::V6(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ipv4_crosses() {
        assert_eq!(
            v4("10.0.0.1".parse().unwrap()),
            Some(Ipv4Addr::new(10, 0, 0, 1))
        );
        assert_eq!(v4("fd00::1".parse().unwrap()), None);
        assert_eq!(
            v4net("10.0.0.0/24".parse().unwrap()),
            Some("10.0.0.0/24".parse().unwrap())
        );
        assert_eq!(v4net("fd00::/64".parse().unwrap()), None);
    }
}
