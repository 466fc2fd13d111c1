//! The name table and the lookup: plain data in, a pure function out.
//!
//! Design note. The table is keyed first by the *asker's* address: a query's source
//! address says which sandbox asks, and so which networks' names it may see (its own
//! networks, all of them). This is aardvark-dns's model (`src/backend/mod.rs`): one
//! immutable table per configuration, answering `(asker, name) → records`, swapped in
//! whole by the server, so a lookup never sees half a change and a query is never
//! dropped while the table changes.
//!
//! The table used to be rebuilt from every record on every change: with 900 sandboxes
//! that was a sixth of ferryd's CPU per `network connect`. Now its maps are persistent
//! (`imbl`: a clone shares everything, a change copies one path), and
//! [`Table::apply`] makes the next table from this one minus the records that went
//! plus the ones that came, in O(changed · log n); the old table stays valid for the
//! queries still reading it. Every entry counts its contributors (an alias two
//! sandboxes share, one address claimed twice), so taking one record away is the exact
//! inverse of adding it, and the table is the same whatever the order of changes that
//! led to it: [`Table::build`] is `apply` on an empty table.
//!
//! Cost: a name → holders map over all networks (the asker's networks filter it), an
//! address → reverse names map, one entry per sandbox address in `askers`; a lookup is
//! two probes (a map per network, as before, would cost one more per network of the
//! asker). A change of one sandbox costs O(its names · log n), plus a copy of the
//! holder list of each of its names: O(k) for an alias k sandboxes share, the size of
//! that name's answer anyway.

mod apply;
#[cfg(test)]
mod equivalence;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use hickory_proto::rr::RecordType;

use apply::Bag;

/// A persistent hash map: O(1) clone, O(log n) insert and remove.
type PMap<K, V> = imbl::HashMap<K, V>;
/// A network's ID.
type NetId = Arc<str>;
/// A fully qualified name, with the final dot.
type Fqdn = Arc<str>;

/// The TTL of every answer about a sandbox. Short, so that a client cache forgets a
/// removed or moved sandbox quickly; the responder itself always answers from the
/// current table.
pub const TTL: u32 = 10;

/// One sandbox as the responder sees it: plain data, built by the daemon from its
/// desired state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxRecord {
    /// Its endpoints on networks that have name resolution.
    pub memberships: Vec<Membership>,
    /// Every other address it may ask from (endpoints on networks without names).
    pub other_addrs: Vec<Ipv4Addr>,
    /// Whether names it does not own may be forwarded upstream for it: false when all
    /// its networks are `--internal` (CVE-2024-29018).
    pub forward: bool,
    /// Its own upstream servers (`--dns`); empty means the daemon's.
    pub upstreams: Vec<SocketAddr>,
}

/// One endpoint of a sandbox on a network with name resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// The network's ID: endpoints with the same ID see each other.
    pub network: String,
    pub ip: Ipv4Addr,
    /// Its names on this network: name, hostname, aliases. The first one is the
    /// answer to a reverse (PTR) query.
    pub names: Vec<String>,
}

/// A sandbox as an asker: what it may see and where its other questions go. Ordered
/// only so that an address two sandboxes claim (never in a consistent state) asks as
/// the same one whatever the order of changes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Asker {
    /// The IDs of its networks with names, in membership order.
    zones: Arc<[NetId]>,
    forward: bool,
    upstreams: Arc<[SocketAddr]>,
}

impl Asker {
    fn sees(&self, network: &NetId) -> bool {
        self.zones.iter().any(|z| z == network)
    }
}

/// Everything the responder answers from. Immutable: a change makes a new table
/// ([`Table::apply`]) that shares what did not change with this one.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// The upstreams of sandboxes without `--dns`.
    default_upstreams: Arc<[SocketAddr]>,
    /// Asker address → the sandbox asking from it (the first, if two claim it).
    askers: PMap<Ipv4Addr, Bag<Asker>>,
    /// Name → (address, network) of every holder on any network. A name held only
    /// on networks the asker is not on answers NXDOMAIN instead of leaking upstream.
    names: PMap<Arc<str>, Bag<(Ipv4Addr, NetId)>>,
    /// Address → (its first name, fully qualified; network).
    ptr: PMap<Ipv4Addr, Bag<(Fqdn, NetId)>>,
    /// Every address of a membership, named or not: its reverse name is ours.
    owned_addrs: PMap<Ipv4Addr, u32>,
}

/// What to do with one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A records, in address order.
    A(Vec<Ipv4Addr>),
    /// PTR records, as fully qualified names, in name order.
    Ptr(Vec<String>),
    /// The name exists but has no record of that type (AAAA until IPv6 arrives).
    NoData,
    NxDomain,
    /// Not ours: ask these servers, in order.
    Forward(Arc<[SocketAddr]>),
    /// Not ours, and there is no upstream to ask.
    ServFail,
    /// The asker is not a sandbox we serve, or may not have names forwarded.
    Refused,
}

/// Lower-case, without the final dot. Borrowed when already in that form.
fn normalize(name: &str) -> std::borrow::Cow<'_, str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        name.to_ascii_lowercase().into()
    } else {
        name.into()
    }
}

/// `4.3.2.1.in-addr.arpa` → 1.2.3.4.
fn reverse_v4(name: &str) -> Option<Ipv4Addr> {
    let rest = name.strip_suffix(".in-addr.arpa")?;
    let mut o = [0u8; 4];
    let mut parts = rest.split('.');
    for i in (0..4).rev() {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        o[i] = p.parse().ok()?;
    }
    parts.next().is_none().then(|| Ipv4Addr::from(o))
}

impl Table {
    /// True if `asker` is a sandbox this table serves.
    pub fn knows(&self, asker: IpAddr) -> bool {
        self.asker(asker).is_some()
    }

    /// How many names and askers it holds (for logs).
    pub fn len(&self) -> (usize, usize) {
        (self.names.len(), self.askers.len())
    }

    pub fn is_empty(&self) -> bool {
        self.askers.is_empty()
    }

    fn asker(&self, asker: IpAddr) -> Option<&Asker> {
        match asker {
            IpAddr::V4(a) => self.askers.get(&a).and_then(Bag::first),
            IpAddr::V6(_) => None,
        }
    }
}

/// Answer one question (`name`, `qtype`, class IN) asked by `asker`. Pure.
pub fn lookup(table: &Table, asker: IpAddr, name: &str, qtype: RecordType) -> Answer {
    let Some(who) = table.asker(asker) else {
        return Answer::Refused;
    };
    let name = normalize(name);
    if qtype == RecordType::PTR {
        if let Some(ip) = reverse_v4(&name) {
            if let Some(held) = table.ptr.get(&ip) {
                let mut names: Vec<String> = vec![];
                for (n, _) in held.items().filter(|(_, net)| who.sees(net)) {
                    if names.last().map(String::as_str) != Some(n) {
                        names.push(n.to_string());
                    }
                }
                if !names.is_empty() {
                    return Answer::Ptr(names);
                }
            }
            if table.owned_addrs.contains_key(&ip) {
                return Answer::NxDomain;
            }
        }
    } else if let Some(held) = table.names.get(name.as_ref()) {
        let mut ips: Vec<Ipv4Addr> = vec![];
        for (ip, _) in held.items().filter(|(_, net)| who.sees(net)) {
            if ips.last() != Some(ip) {
                ips.push(*ip);
            }
        }
        return match qtype {
            _ if ips.is_empty() => Answer::NxDomain,
            RecordType::A | RecordType::ANY => Answer::A(ips),
            _ => Answer::NoData,
        };
    }
    forward_for(who)
}

/// What to do with a question that is not about names ferry owns (or not class IN).
pub fn unowned(table: &Table, asker: IpAddr) -> Answer {
    table.asker(asker).map_or(Answer::Refused, forward_for)
}

fn forward_for(who: &Asker) -> Answer {
    if !who.forward {
        Answer::Refused
    } else if who.upstreams.is_empty() {
        Answer::ServFail
    } else {
        Answer::Forward(who.upstreams.clone())
    }
}
