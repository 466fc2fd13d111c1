//! The pure choices of allocation: a subnet for an overlay created without one, its VNI,
//! the size of its per-host blocks, and which block a host claims next.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Docker's default global pool: 10.0.0.0/8 in /24 steps.
pub const GLOBAL_POOL: (Ipv4Addr, u8, u8) = (Ipv4Addr::new(10, 0, 0, 0), 8, 24);
/// VXLAN IDs ferry hands out, as Docker's overlay: from 4096 up to 2^24 - 1.
pub const VNI_FIRST: u32 = 4096;
pub const VNI_LAST: u32 = (1 << 24) - 1;

/// The first /24 of the global pool that overlaps none of `taken`.
pub fn default_subnet(taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    let (base, plen, step) = GLOBAL_POOL;
    let pool = Ipv4Net::new(base, plen).expect("valid pool");
    pool.subnets(step)
        .ok()?
        .find(|s| !taken.iter().any(|t| overlaps(*t, *s)))
}

pub fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    ferry_core::ipam::pools::overlaps(&a.into(), &b.into())
}

/// The lowest VNI not in `taken`.
pub fn next_vni(taken: &[u32]) -> Option<u32> {
    (VNI_FIRST..=VNI_LAST).find(|v| !taken.contains(v))
}

/// Blocks of /26 (64 addresses, Calico's default), smaller when the subnet is small so
/// that it still has four; a subnet of /29 or smaller is one block.
pub fn block_prefix(span: Ipv4Net) -> u8 {
    let p = span.prefix_len();
    if p >= 29 {
        p
    } else {
        (p + 2).clamp(26, 30)
    }
}

/// The block of `prefix` that holds `ip`.
pub fn block_of(ip: Ipv4Addr, prefix: u8) -> Ipv4Net {
    Ipv4Net::new(ip, prefix).expect("prefix ≤ 32").trunc()
}

/// The blocks of `span` in order, skipping those in `claimed`.
pub fn free_blocks(span: Ipv4Net, prefix: u8, claimed: &[Ipv4Net]) -> Vec<Ipv4Net> {
    span.subnets(prefix.max(span.prefix_len()))
        .map(|it| it.filter(|b| !claimed.contains(b)).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn default_subnets_follow_dockers_global_pool_and_skip_overlaps() {
        assert_eq!(default_subnet(&[]), Some(net("10.0.0.0/24")));
        assert_eq!(
            default_subnet(&[net("10.0.0.0/24"), net("10.0.1.0/25")]),
            Some(net("10.0.2.0/24"))
        );
        assert_eq!(
            default_subnet(&[net("10.0.0.0/16")]),
            Some(net("10.1.0.0/24"))
        );
        assert_eq!(default_subnet(&[net("10.0.0.0/8")]), None);
    }

    #[test]
    fn vnis_start_at_4096_and_fill_holes() {
        assert_eq!(next_vni(&[]), Some(4096));
        assert_eq!(next_vni(&[4096, 4098]), Some(4097));
    }

    #[test]
    fn blocks_are_slash_26_with_at_least_four_per_subnet() {
        assert_eq!(block_prefix(net("10.0.0.0/16")), 26);
        assert_eq!(block_prefix(net("10.0.0.0/24")), 26);
        assert_eq!(block_prefix(net("10.0.0.0/25")), 27);
        assert_eq!(block_prefix(net("10.0.0.0/28")), 30);
        assert_eq!(block_prefix(net("10.0.0.0/29")), 29);
        assert_eq!(
            block_of("10.0.0.77".parse().unwrap(), 26),
            net("10.0.0.64/26")
        );
        assert_eq!(
            free_blocks(
                net("10.0.0.0/24"),
                26,
                &[net("10.0.0.0/26"), net("10.0.0.128/26")]
            ),
            [net("10.0.0.64/26"), net("10.0.0.192/26")]
        );
    }
}
