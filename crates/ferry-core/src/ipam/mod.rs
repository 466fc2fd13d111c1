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
//! A pool is of one family, its subnet's: IPv4 or IPv6, the same code for both. The
//! bitmap keeps only words with an address taken, so a /64 costs what its allocations
//! cost, not its size. The rules that differ by family are [`AddressPool::reserved_why`]'s
//! (IPv6 has no broadcast address). ferry's behaviour is IPv4-only for now: the network
//! model above the pool refuses IPv6 subnets (`validate`), the pool does not.
//!
//! [`pools`] chooses subnets for networks created without `--subnet`.

pub mod aux;
mod occupancy;
pub mod pools;

use occupancy::Occupancy;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::CoreError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "PoolRecord")]
pub struct AddressPool {
    pub subnet: IpNet,
    pub gateway: IpAddr,
    pub range: Option<IpNet>,
    /// Further spans dynamic addresses may come from, after `range`: the extra address
    /// blocks an overlay's host claimed when its first one filled (ferry-overlay).
    pub more: Vec<IpNet>,
    /// address → owner (a sandbox ID). Absent in a network's store record (see
    /// [`serialize_without_allocations`]). A persistent map: copying a pool (ferryd's
    /// rollback copy, its record of what the store holds) costs O(1), and comparing two
    /// copies skips what they share.
    allocated: imbl::OrdMap<IpAddr, String>,
    /// the last dynamic address handed out
    pub cursor: Option<IpAddr>,
    /// `--aux-address` name → address: never handed to a sandbox.
    pub aux: BTreeMap<String, IpAddr>,
    /// ferry chose the subnet (no `--subnet`): Docker takes no `--ip` on such a network.
    pub auto_subnet: bool,
    /// The keys of `allocated`, as a bitmap: derived, never stored.
    #[serde(skip)]
    taken: Occupancy,
}

/// A pool as it is read back: the bitmap is rebuilt from the allocations.
#[derive(Deserialize)]
struct PoolRecord {
    subnet: IpNet,
    gateway: IpAddr,
    range: Option<IpNet>,
    #[serde(default)]
    more: Vec<IpNet>,
    #[serde(default)]
    allocated: imbl::OrdMap<IpAddr, String>,
    cursor: Option<IpAddr>,
    #[serde(default)]
    aux: BTreeMap<String, IpAddr>,
    #[serde(default)]
    auto_subnet: bool,
}

impl From<PoolRecord> for AddressPool {
    fn from(r: PoolRecord) -> Self {
        let mut taken = Occupancy::default();
        for ip in r.allocated.keys() {
            taken.set(number(*ip));
        }
        AddressPool {
            subnet: r.subnet,
            gateway: r.gateway,
            range: r.range,
            more: r.more,
            allocated: r.allocated,
            cursor: r.cursor,
            aux: r.aux,
            auto_subnet: r.auto_subnet,
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
        subnet: &'a IpNet,
        gateway: &'a IpAddr,
        range: &'a Option<IpNet>,
        #[serde(skip_serializing_if = "<[IpNet]>::is_empty")]
        more: &'a [IpNet],
        cursor: &'a Option<IpAddr>,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        aux: &'a BTreeMap<String, IpAddr>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        auto_subnet: bool,
    }
    pool.as_ref()
        .map(|p| Bare {
            subnet: &p.subnet,
            gateway: &p.gateway,
            range: &p.range,
            more: &p.more,
            cursor: &p.cursor,
            aux: &p.aux,
            auto_subnet: p.auto_subnet,
        })
        .serialize(s)
}

impl AddressPool {
    pub fn new(subnet: IpNet, gateway: IpAddr, range: Option<IpNet>) -> Self {
        AddressPool {
            subnet,
            gateway,
            range,
            more: Vec::new(),
            allocated: imbl::OrdMap::new(),
            cursor: None,
            aux: BTreeMap::new(),
            auto_subnet: false,
            taken: Occupancy::default(),
        }
    }

    /// The pool of a subnet ferry chose from its default pools.
    pub fn with_auto_subnet(mut self) -> Self {
        self.auto_subnet = true;
        self
    }

    /// Docker's rule for `--ip`: only on a network whose subnet the user gave.
    pub fn check_static_allowed(&self) -> Result<(), CoreError> {
        match self.auto_subnet {
            true => Err(CoreError::StaticIpNeedsUserSubnet),
            false => Ok(()),
        }
    }

    /// The pool with `--aux-address`es set aside (checked by [`aux::parse`]).
    pub fn with_aux(mut self, aux: BTreeMap<String, IpAddr>) -> Self {
        self.aux = aux;
        self
    }

    fn is_aux(&self, ip: IpAddr) -> bool {
        self.aux.values().any(|a| *a == ip)
    }

    /// Every allocation: address → owner.
    pub fn allocations(&self) -> &imbl::OrdMap<IpAddr, String> {
        &self.allocated
    }

    /// Record an allocation as it is, without Docker's checks (one read back from the
    /// store, or made by Docker's IPAM for a plugin network).
    pub fn hold(&mut self, ip: IpAddr, owner: String) {
        self.taken.set(number(ip));
        self.allocated.insert(ip, owner);
    }

    /// Why an address of the subnet is never a sandbox's: the network address (IPv4's,
    /// or IPv6's subnet-router anycast), IPv4's broadcast address (both only where the
    /// subnet is larger than a point-to-point one), the gateway.
    fn reserved_why(&self, ip: IpAddr) -> Option<&'static str> {
        let wide = self.subnet.prefix_len() + 1 < self.subnet.max_prefix_len();
        if ip == self.subnet.network() && wide {
            Some("it is the network address")
        } else if ip == self.subnet.broadcast() && wide && self.subnet.addr().is_ipv4() {
            Some("it is the broadcast address")
        } else if ip == self.gateway {
            Some("it is the gateway address")
        } else {
            None
        }
    }

    /// Reserve a user-chosen address (`--ip`).
    pub fn allocate_static(&mut self, ip: IpAddr, owner: &str) -> Result<(), CoreError> {
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
    /// was given (its network address included, as dockerd does), wrapping once; then
    /// in the further spans ([`AddressPool::more`]), the cursor's own span first.
    pub fn allocate_dynamic(&mut self, owner: &str, network: &str) -> Result<IpAddr, CoreError> {
        let ip = self
            .next_dynamic()
            .ok_or_else(|| CoreError::NetworkFull(network.to_string()))?;
        self.hold(ip, owner.to_string());
        self.cursor = Some(ip);
        Ok(ip)
    }

    /// Whether a dynamic address is left.
    pub fn has_free_dynamic(&self) -> bool {
        self.next_dynamic().is_some()
    }

    fn next_dynamic(&self) -> Option<IpAddr> {
        let spans: Vec<IpNet> = std::iter::once(self.range.unwrap_or(self.subnet))
            .chain(self.more.iter().copied())
            .collect();
        let at = self
            .cursor
            .and_then(|c| spans.iter().position(|s| s.contains(&c)))
            .unwrap_or(0);
        (0..spans.len()).find_map(|k| self.next_in(spans[(at + k) % spans.len()]))
    }

    /// The next free address of one span after the cursor (if it lies there), wrapping once.
    fn next_in(&self, span: IpNet) -> Option<IpAddr> {
        if span.addr().is_ipv4() != self.subnet.addr().is_ipv4() {
            return None;
        }
        let first = number(span.network()).max(number(self.subnet.network()));
        let last = number(span.broadcast()).min(number(self.subnet.broadcast()));
        let start = match self.cursor.map(number) {
            Some(c) if c >= first && c < last => c + 1,
            _ => first,
        };
        let wrapped = || match start > first {
            true => self.next_free(first, start - 1),
            false => None,
        };
        self.next_free(start, last).or_else(wrapped)
    }

    /// The first address in `from..=to` neither allocated nor reserved.
    fn next_free(&self, mut from: u128, to: u128) -> Option<IpAddr> {
        loop {
            let n = self.taken.next_clear(from, to)?;
            let ip = address(n, self.subnet.addr().is_ipv4())?;
            if self.reserved_why(ip).is_none() && !self.is_aux(ip) {
                return Some(ip);
            }
            from = n.checked_add(1)?;
        }
    }

    /// Free an address; freeing one that is not held is not an error.
    pub fn release(&mut self, ip: IpAddr) {
        if self.allocated.remove(&ip).is_some() {
            self.taken.clear(number(ip));
        }
    }

    /// The address `owner` holds (the first, if it holds more).
    pub fn held_by(&self, owner: &str) -> Option<IpAddr> {
        self.allocated
            .iter()
            .find(|(_, o)| o.as_str() == owner)
            .map(|(ip, _)| *ip)
    }

    pub fn owner(&self, ip: IpAddr) -> Option<&str> {
        self.allocated.get(&ip).map(String::as_str)
    }
}

/// An address as a number of its family: the bitmap's index.
fn number(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a).into(),
        IpAddr::V6(a) => a.into(),
    }
}

/// The address of `n` in the family asked for (`None` for a number too large for IPv4).
fn address(n: u128, v4: bool) -> Option<IpAddr> {
    match v4 {
        true => u32::try_from(n).ok().map(|a| Ipv4Addr::from(a).into()),
        false => Some(Ipv6Addr::from(n).into()),
    }
}

#[cfg(test)]
mod tests;
