//! IPAM with Docker's rules.
//!
//! An [`AddressPool`] is one network's subnet: the gateway, an optional `--ip-range`
//! for dynamic addresses, and the allocations, each owned by a sandbox ID. Dynamic
//! allocation moves on from the last address handed out (a rotating cursor, as dockerd
//! and netavark do), so a freed address is not handed out again at once. Static
//! addresses live in the same map, so after a restart no dynamic allocation can take
//! one: the state is rebuilt from the store, never guessed from the kernel.
//!
//! Finding the next free address walks an [`Occupancy`] bitmap kept beside the
//! allocations, a 64-address word at a time, so a nearly full /16 costs microseconds.
//!
//! [`pools`] chooses subnets for networks created without `--subnet`.

pub mod aux;
mod occupancy;
pub mod pools;

use occupancy::Occupancy;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::CoreError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "PoolRecord")]
pub struct AddressPool {
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub range: Option<Ipv4Net>,
    /// address → owner (a sandbox ID). Absent in a network's store record (see
    /// [`serialize_without_allocations`]). A persistent map: copying a pool (ferryd's
    /// rollback copy, its record of what the store holds) costs O(1), and comparing two
    /// copies skips what they share.
    allocated: imbl::OrdMap<Ipv4Addr, String>,
    /// the last dynamic address handed out
    pub cursor: Option<Ipv4Addr>,
    /// `--aux-address` name → address: never handed to a sandbox.
    pub aux: BTreeMap<String, Ipv4Addr>,
    /// The keys of `allocated`, as a bitmap: derived, never stored.
    #[serde(skip)]
    taken: Occupancy,
}

/// A pool as it is read back: the bitmap is rebuilt from the allocations.
#[derive(Deserialize)]
struct PoolRecord {
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    range: Option<Ipv4Net>,
    #[serde(default)]
    allocated: imbl::OrdMap<Ipv4Addr, String>,
    cursor: Option<Ipv4Addr>,
    #[serde(default)]
    aux: BTreeMap<String, Ipv4Addr>,
}

impl From<PoolRecord> for AddressPool {
    fn from(r: PoolRecord) -> Self {
        let mut taken = Occupancy::default();
        for ip in r.allocated.keys() {
            taken.set(u32::from(*ip));
        }
        AddressPool {
            subnet: r.subnet,
            gateway: r.gateway,
            range: r.range,
            allocated: r.allocated,
            cursor: r.cursor,
            aux: r.aux,
            taken,
        }
    }
}

/// A network's pool as its store record holds it: everything but the allocations, which
/// ferryd stores one key per address so that an attach does not rewrite them all.
pub fn serialize_without_allocations<S: serde::Serializer>(
    pool: &Option<AddressPool>,
    s: S,
) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Bare<'a> {
        subnet: &'a Ipv4Net,
        gateway: &'a Ipv4Addr,
        range: &'a Option<Ipv4Net>,
        cursor: &'a Option<Ipv4Addr>,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        aux: &'a BTreeMap<String, Ipv4Addr>,
    }
    pool.as_ref()
        .map(|p| Bare {
            subnet: &p.subnet,
            gateway: &p.gateway,
            range: &p.range,
            cursor: &p.cursor,
            aux: &p.aux,
        })
        .serialize(s)
}

impl AddressPool {
    pub fn new(subnet: Ipv4Net, gateway: Ipv4Addr, range: Option<Ipv4Net>) -> Self {
        AddressPool {
            subnet,
            gateway,
            range,
            allocated: imbl::OrdMap::new(),
            cursor: None,
            aux: BTreeMap::new(),
            taken: Occupancy::default(),
        }
    }

    /// The pool with `--aux-address`es set aside (checked by [`aux::parse`]).
    pub fn with_aux(mut self, aux: BTreeMap<String, Ipv4Addr>) -> Self {
        self.aux = aux;
        self
    }

    fn is_aux(&self, ip: Ipv4Addr) -> bool {
        self.aux.values().any(|a| *a == ip)
    }

    /// Every allocation: address → owner.
    pub fn allocations(&self) -> &imbl::OrdMap<Ipv4Addr, String> {
        &self.allocated
    }

    /// Record an allocation as it is, without Docker's checks (one read back from the
    /// store, or made by Docker's IPAM for a plugin network).
    pub fn hold(&mut self, ip: Ipv4Addr, owner: String) {
        self.taken.set(u32::from(ip));
        self.allocated.insert(ip, owner);
    }

    fn reserved_why(&self, ip: Ipv4Addr) -> Option<&'static str> {
        if ip == self.subnet.network() && self.subnet.prefix_len() < 31 {
            Some("it is the network address")
        } else if ip == self.subnet.broadcast() && self.subnet.prefix_len() < 31 {
            Some("it is the broadcast address")
        } else if ip == self.gateway {
            Some("it is the gateway address")
        } else {
            None
        }
    }

    /// Reserve a user-chosen address (`--ip`).
    pub fn allocate_static(&mut self, ip: Ipv4Addr, owner: &str) -> Result<(), CoreError> {
        if !self.subnet.contains(&ip) {
            return Err(CoreError::AddressOutsideSubnet(ip));
        }
        if let Some(why) = self.reserved_why(ip) {
            return Err(CoreError::AddressReserved { ip, why });
        }
        if self.is_aux(ip) {
            return Err(CoreError::AddressInUse(ip));
        }
        match self.allocated.get(&ip) {
            Some(o) if o == owner => Ok(()),
            Some(_) => Err(CoreError::AddressInUse(ip)),
            None => {
                self.hold(ip, owner.to_string());
                Ok(())
            }
        }
    }

    /// Hand out the next free address after the cursor, within the ip-range if one
    /// was given (its network address included, as dockerd does), wrapping once.
    pub fn allocate_dynamic(&mut self, owner: &str, network: &str) -> Result<Ipv4Addr, CoreError> {
        let span = self.range.unwrap_or(self.subnet);
        let first = u32::from(span.network()).max(u32::from(self.subnet.network()));
        let last = u32::from(span.broadcast()).min(u32::from(self.subnet.broadcast()));
        let start = match self.cursor.map(u32::from) {
            Some(c) if c >= first && c < last => c + 1,
            _ => first,
        };
        let wrapped = || match start > first {
            true => self.next_free(first, start - 1),
            false => None,
        };
        let ip = self
            .next_free(start, last)
            .or_else(wrapped)
            .ok_or_else(|| CoreError::NetworkFull(network.to_string()))?;
        self.hold(ip, owner.to_string());
        self.cursor = Some(ip);
        Ok(ip)
    }

    /// The first address in `from..=to` neither allocated nor reserved.
    fn next_free(&self, mut from: u32, to: u32) -> Option<Ipv4Addr> {
        loop {
            let n = self.taken.next_clear(from, to)?;
            let ip = Ipv4Addr::from(n);
            if self.reserved_why(ip).is_none() && !self.is_aux(ip) {
                return Some(ip);
            }
            from = n.checked_add(1)?;
        }
    }

    /// Free an address; freeing one that is not held is not an error.
    pub fn release(&mut self, ip: Ipv4Addr) {
        if self.allocated.remove(&ip).is_some() {
            self.taken.clear(u32::from(ip));
        }
    }

    pub fn owner(&self, ip: Ipv4Addr) -> Option<&str> {
        self.allocated.get(&ip).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(subnet: &str, gw: &str, range: Option<&str>) -> AddressPool {
        AddressPool::new(
            subnet.parse().unwrap(),
            gw.parse().unwrap(),
            range.map(|r| r.parse().unwrap()),
        )
    }
    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn dynamic_addresses_skip_network_and_gateway() {
        let mut p = pool("172.17.0.0/16", "172.17.0.1", None);
        assert_eq!(p.allocate_dynamic("a", "n").unwrap(), ip("172.17.0.2"));
        assert_eq!(p.allocate_dynamic("b", "n").unwrap(), ip("172.17.0.3"));
    }

    #[test]
    fn dynamic_addresses_follow_the_ip_range_from_its_first_address() {
        let mut p = pool("10.77.0.0/24", "10.77.0.1", Some("10.77.0.128/25"));
        let got: Vec<_> = (0..3)
            .map(|i| p.allocate_dynamic(&i.to_string(), "n").unwrap())
            .collect();
        assert_eq!(
            got,
            [ip("10.77.0.128"), ip("10.77.0.129"), ip("10.77.0.130")]
        );
    }

    #[test]
    fn a_freed_address_is_not_handed_out_again_at_once() {
        let mut p = pool("10.0.0.0/24", "10.0.0.1", None);
        let a = p.allocate_dynamic("a", "n").unwrap();
        p.release(a);
        assert_eq!(p.allocate_dynamic("b", "n").unwrap(), ip("10.0.0.3"));
    }

    #[test]
    fn the_cursor_wraps_and_skips_static_addresses() {
        let mut p = pool("10.0.0.0/29", "10.0.0.1", None);
        p.allocate_static(ip("10.0.0.3"), "s").unwrap();
        let got: Vec<_> = (0..4)
            .map(|i| p.allocate_dynamic(&i.to_string(), "n").unwrap())
            .collect();
        assert_eq!(
            got,
            [
                ip("10.0.0.2"),
                ip("10.0.0.4"),
                ip("10.0.0.5"),
                ip("10.0.0.6")
            ]
        );
        p.release(ip("10.0.0.4"));
        assert_eq!(p.allocate_dynamic("x", "n").unwrap(), ip("10.0.0.4"));
        assert!(matches!(
            p.allocate_dynamic("y", "n"),
            Err(CoreError::NetworkFull(_))
        ));
    }

    #[test]
    fn static_addresses_obey_dockers_rules() {
        let mut p = pool("10.77.0.0/24", "10.77.0.1", None);
        assert!(matches!(
            p.allocate_static(ip("10.99.0.5"), "a"),
            Err(CoreError::AddressOutsideSubnet(_))
        ));
        for reserved in ["10.77.0.0", "10.77.0.255", "10.77.0.1"] {
            assert!(matches!(
                p.allocate_static(ip(reserved), "a"),
                Err(CoreError::AddressReserved { .. })
            ));
        }
        p.allocate_static(ip("10.77.0.200"), "a").unwrap();
        assert_eq!(
            p.allocate_static(ip("10.77.0.200"), "b"),
            Err(CoreError::AddressInUse(ip("10.77.0.200")))
        );
        // the owner may claim it again (restart, reconnect)
        p.allocate_static(ip("10.77.0.200"), "a").unwrap();
    }

    #[test]
    fn a_static_address_survives_a_round_trip_through_the_store_format() {
        let mut p = pool("10.0.0.0/24", "10.0.0.1", None);
        p.allocate_static(ip("10.0.0.2"), "web").unwrap();
        let back: AddressPool = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        let mut back = back;
        assert_eq!(back.allocate_dynamic("other", "n").unwrap(), ip("10.0.0.3"));
    }

    /// The address-by-address walk the bitmap replaced, as the reference.
    fn walk(p: &AddressPool) -> Option<Ipv4Addr> {
        let span = p.range.unwrap_or(p.subnet);
        let (first, last) = (u32::from(span.network()), u32::from(span.broadcast()));
        let start = match p.cursor.map(u32::from) {
            Some(c) if c >= first && c < last => c + 1,
            _ => first,
        };
        (start..=last)
            .chain(first..start)
            .map(Ipv4Addr::from)
            .find(|&ip| {
                p.reserved_why(ip).is_none() && p.owner(ip).is_none() && p.subnet.contains(&ip)
            })
    }

    #[test]
    fn dynamic_allocation_agrees_with_the_address_by_address_walk() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(16);
        let shapes = [
            ("10.0.0.0/24", "10.0.0.1", None),
            ("10.0.0.0/22", "10.0.1.77", Some("10.0.1.0/24")),
            ("10.0.0.0/29", "10.0.0.6", None),
            ("10.0.0.0/30", "10.0.0.1", Some("10.0.0.0/31")),
            ("10.0.0.0/31", "10.0.0.0", None),
            ("10.0.0.0/20", "10.0.15.254", Some("10.0.8.0/21")),
        ];
        for (subnet, gw, range) in shapes {
            let mut p = pool(subnet, gw, range);
            let size = 1u32 << (32 - p.subnet.prefix_len());
            let base = u32::from(p.subnet.network());
            for step in 0..3000 {
                let ip = Ipv4Addr::from(base + rng.gen_range(0..size));
                match rng.gen_range(0..10) {
                    0..=5 => {
                        let want = walk(&p);
                        let got = p.allocate_dynamic("o", "n").ok();
                        assert_eq!(got, want, "{subnet} step {step}");
                    }
                    6 => {
                        let _ = p.allocate_static(ip, "s");
                    }
                    _ => p.release(ip),
                }
            }
            let back: AddressPool =
                serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
            assert_eq!(back, p, "{subnet}: the bitmap is rebuilt on reading");
        }
    }

    #[test]
    fn allocating_every_address_of_a_slash_16_hands_out_each_once() {
        let mut p = pool("10.1.0.0/16", "10.1.0.1", None);
        let mut seen = std::collections::HashSet::new();
        while let Ok(a) = p.allocate_dynamic("o", "n") {
            assert!(seen.insert(a));
        }
        assert_eq!(seen.len(), 65536 - 3);
    }
}
