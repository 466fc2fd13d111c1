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
    /// Further spans dynamic addresses may come from, after `range`: the extra address
    /// blocks an overlay's host claimed when its first one filled (ferry-overlay).
    pub more: Vec<Ipv4Net>,
    /// address → owner (a sandbox ID). Absent in a network's store record (see
    /// [`serialize_without_allocations`]). A persistent map: copying a pool (ferryd's
    /// rollback copy, its record of what the store holds) costs O(1), and comparing two
    /// copies skips what they share.
    allocated: imbl::OrdMap<Ipv4Addr, String>,
    /// the last dynamic address handed out
    pub cursor: Option<Ipv4Addr>,
    /// `--aux-address` name → address: never handed to a sandbox.
    pub aux: BTreeMap<String, Ipv4Addr>,
    /// ferry chose the subnet (no `--subnet`): Docker takes no `--ip` on such a network.
    pub auto_subnet: bool,
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
    more: Vec<Ipv4Net>,
    #[serde(default)]
    allocated: imbl::OrdMap<Ipv4Addr, String>,
    cursor: Option<Ipv4Addr>,
    #[serde(default)]
    aux: BTreeMap<String, Ipv4Addr>,
    #[serde(default)]
    auto_subnet: bool,
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
        subnet: &'a Ipv4Net,
        gateway: &'a Ipv4Addr,
        range: &'a Option<Ipv4Net>,
        #[serde(skip_serializing_if = "<[Ipv4Net]>::is_empty")]
        more: &'a [Ipv4Net],
        cursor: &'a Option<Ipv4Addr>,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        aux: &'a BTreeMap<String, Ipv4Addr>,
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
    pub fn new(subnet: Ipv4Net, gateway: Ipv4Addr, range: Option<Ipv4Net>) -> Self {
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
    /// was given (its network address included, as dockerd does), wrapping once; then
    /// in the further spans ([`AddressPool::more`]), the cursor's own span first.
    pub fn allocate_dynamic(&mut self, owner: &str, network: &str) -> Result<Ipv4Addr, CoreError> {
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

    fn next_dynamic(&self) -> Option<Ipv4Addr> {
        let spans: Vec<Ipv4Net> = std::iter::once(self.range.unwrap_or(self.subnet))
            .chain(self.more.iter().copied())
            .collect();
        let at = self
            .cursor
            .and_then(|c| spans.iter().position(|s| s.contains(&c)))
            .unwrap_or(0);
        (0..spans.len()).find_map(|k| self.next_in(spans[(at + k) % spans.len()]))
    }

    /// The next free address of one span after the cursor (if it lies there), wrapping once.
    fn next_in(&self, span: Ipv4Net) -> Option<Ipv4Addr> {
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
        self.next_free(start, last).or_else(wrapped)
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
mod tests;
