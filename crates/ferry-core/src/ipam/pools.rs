//! Subnets for networks created without `--subnet`: Docker's default address pools,
//! 172.17.0.0/16 … 172.31.0.0/16 then 192.168.0.0/16 cut into /20s, handed out by a
//! rotating cursor (dockerd does not reuse a freed pool at once, docker-protocols B4),
//! skipping any subnet that overlaps an existing network or a route of the host.

use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};

use crate::CoreError;

/// Every default pool, in Docker's order.
pub fn default_pools() -> Vec<Ipv4Net> {
    let mut v: Vec<Ipv4Net> = (17..=31u8)
        .map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).expect("valid"))
        .collect();
    v.extend(
        (0..16u8).map(|i| Ipv4Net::new(Ipv4Addr::new(192, 168, i * 16, 0), 20).expect("valid")),
    );
    v
}

/// Whether two subnets share an address (never, for subnets of two families).
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Pick the next free default pool after `cursor` (the index of the last one handed
/// out). Returns the subnet and the new cursor.
pub fn next_pool(
    cursor: Option<usize>,
    taken: &[IpNet],
    host_routes: &[IpNet],
) -> Result<(Ipv4Net, usize), CoreError> {
    let pools = default_pools();
    let start = cursor.map(|c| (c + 1) % pools.len()).unwrap_or(0);
    (0..pools.len())
        .map(|k| (start + k) % pools.len())
        .find(|&i| {
            let p = &IpNet::V4(pools[i]);
            !taken
                .iter()
                .chain(host_routes)
                .filter(|r| r.prefix_len() > 0)
                .any(|t| overlaps(p, t))
        })
        .map(|i| (pools[i], i))
        .ok_or(CoreError::NoFreePool)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn net4(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn first_pool_skips_the_default_bridge_and_taken_subnets() {
        let (p, _) = next_pool(None, &[net("172.17.0.0/16"), net("172.18.0.0/16")], &[]).unwrap();
        assert_eq!(p, net4("172.19.0.0/16"));
    }

    #[test]
    fn a_freed_pool_is_not_reused_at_once() {
        let (a, c) = next_pool(None, &[net("172.17.0.0/16")], &[]).unwrap();
        assert_eq!(a, net4("172.18.0.0/16"));
        let (b, _) = next_pool(Some(c), &[net("172.17.0.0/16")], &[]).unwrap();
        assert_eq!(b, net4("172.19.0.0/16"));
    }

    #[test]
    fn host_routes_are_skipped_but_a_default_route_is_not_an_overlap() {
        let routes = [net("0.0.0.0/0"), net("172.18.5.0/24")];
        let (p, _) = next_pool(None, &[net("172.17.0.0/16")], &routes).unwrap();
        assert_eq!(p, net4("172.19.0.0/16"));
    }

    #[test]
    fn after_172_31_come_the_192_168_slash_20s() {
        let taken: Vec<_> = (17..=31).map(|b| net(&format!("172.{b}.0.0/16"))).collect();
        let (p, _) = next_pool(None, &taken, &[]).unwrap();
        assert_eq!(p, net4("192.168.0.0/20"));
    }

    #[test]
    fn an_ipv6_subnet_or_route_never_overlaps_an_ipv4_pool() {
        let (p, _) = next_pool(None, &[net("::/0")], &[net("fd00::/8")]).unwrap();
        assert_eq!(p, net4("172.17.0.0/16"));
    }

    #[test]
    fn no_free_pool_is_an_error() {
        let all: Vec<IpNet> = default_pools().into_iter().map(IpNet::V4).collect();
        assert_eq!(next_pool(None, &all, &[]), Err(CoreError::NoFreePool));
    }
}
