//! The name table and the lookup: plain data in, a pure function out.
//!
//! Design note. The table is keyed first by the *asker's* address: a query's source
//! address says which sandbox asks, and so which networks' names it may see (its own
//! networks, all of them). This is aardvark-dns's model (`src/backend/mod.rs`): one
//! immutable structure per configuration, answering `(asker, name) → records`, rebuilt
//! whole from the desired state on every change and swapped in atomically by the
//! server. Nothing here is updated in place, so a lookup never sees half a change and
//! a query is never dropped while the table changes.
//!
//! Cost: one `Zone` per network (a name → addresses map and an address → names map),
//! one entry per sandbox address in `askers`; building is linear in the endpoints, a
//! lookup is two hash probes per network of the asker.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use hickory_proto::rr::RecordType;

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

#[derive(Debug, Default)]
struct Zone {
    names: HashMap<String, Vec<Ipv4Addr>>,
    ptr: HashMap<Ipv4Addr, Vec<String>>,
}

#[derive(Debug)]
struct Asker {
    zones: Vec<usize>,
    forward: bool,
    upstreams: Arc<[SocketAddr]>,
}

/// Everything the responder answers from. Immutable once built.
#[derive(Debug, Default)]
pub struct Table {
    askers: HashMap<Ipv4Addr, Arc<Asker>>,
    zones: Vec<Zone>,
    /// Every name on any network, so that a name that lives elsewhere answers
    /// NXDOMAIN instead of leaking upstream.
    owned_names: HashSet<String>,
    owned_addrs: HashSet<Ipv4Addr>,
}

/// What to do with one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A records.
    A(Vec<Ipv4Addr>),
    /// PTR records, as fully qualified names.
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
    /// Build the table. `default_upstreams` serve sandboxes without `--dns`.
    pub fn build(sandboxes: &[SandboxRecord], default_upstreams: &[SocketAddr]) -> Table {
        let default_upstreams: Arc<[SocketAddr]> = default_upstreams.into();
        let mut t = Table::default();
        let mut zone_of: HashMap<&str, usize> = HashMap::new();
        for sb in sandboxes {
            let mut zones = vec![];
            for m in &sb.memberships {
                let z = *zone_of.entry(m.network.as_str()).or_insert_with(|| {
                    t.zones.push(Zone::default());
                    t.zones.len() - 1
                });
                if !zones.contains(&z) {
                    zones.push(z);
                }
                let zone = &mut t.zones[z];
                for n in &m.names {
                    let n = normalize(n).into_owned();
                    if n.is_empty() {
                        continue;
                    }
                    let ips = zone.names.entry(n.clone()).or_default();
                    if !ips.contains(&m.ip) {
                        ips.push(m.ip);
                    }
                    t.owned_names.insert(n);
                }
                if let Some(first) = m.names.first() {
                    let fq = format!("{}.", normalize(first));
                    let ptrs = zone.ptr.entry(m.ip).or_default();
                    if !ptrs.contains(&fq) {
                        ptrs.push(fq);
                    }
                }
                t.owned_addrs.insert(m.ip);
            }
            if zones.is_empty() {
                continue;
            }
            let asker = Arc::new(Asker {
                zones,
                forward: sb.forward,
                upstreams: if sb.upstreams.is_empty() {
                    default_upstreams.clone()
                } else {
                    sb.upstreams.as_slice().into()
                },
            });
            for ip in sb
                .memberships
                .iter()
                .map(|m| m.ip)
                .chain(sb.other_addrs.iter().copied())
            {
                t.askers.insert(ip, asker.clone());
            }
        }
        t
    }

    /// True if `asker` is a sandbox this table serves.
    pub fn knows(&self, asker: IpAddr) -> bool {
        matches!(asker, IpAddr::V4(a) if self.askers.contains_key(&a))
    }

    /// How many names and askers it holds (for logs).
    pub fn len(&self) -> (usize, usize) {
        (self.owned_names.len(), self.askers.len())
    }

    pub fn is_empty(&self) -> bool {
        self.askers.is_empty()
    }
}

/// Answer one question (`name`, `qtype`, class IN) asked by `asker`. Pure.
pub fn lookup(table: &Table, asker: IpAddr, name: &str, qtype: RecordType) -> Answer {
    let Some(who) = (match asker {
        IpAddr::V4(a) => table.askers.get(&a),
        IpAddr::V6(_) => None,
    }) else {
        return Answer::Refused;
    };
    let name = normalize(name);
    let zones = || who.zones.iter().map(|&z| &table.zones[z]);
    if qtype == RecordType::PTR {
        if let Some(ip) = reverse_v4(&name) {
            let mut names: Vec<String> = vec![];
            for z in zones() {
                for n in z.ptr.get(&ip).into_iter().flatten() {
                    if !names.contains(n) {
                        names.push(n.clone());
                    }
                }
            }
            if !names.is_empty() {
                return Answer::Ptr(names);
            }
            if table.owned_addrs.contains(&ip) {
                return Answer::NxDomain;
            }
        }
    } else {
        let mut ips: Vec<Ipv4Addr> = vec![];
        for z in zones() {
            for ip in z.names.get(name.as_ref()).into_iter().flatten() {
                if !ips.contains(ip) {
                    ips.push(*ip);
                }
            }
        }
        if !ips.is_empty() {
            return match qtype {
                RecordType::A | RecordType::ANY => Answer::A(ips),
                _ => Answer::NoData,
            };
        }
        if table.owned_names.contains(name.as_ref()) {
            return Answer::NxDomain;
        }
    }
    forward_for(who)
}

/// What to do with a question that is not about names ferry owns (or not class IN).
pub fn unowned(table: &Table, asker: IpAddr) -> Answer {
    match asker {
        IpAddr::V4(a) => table
            .askers
            .get(&a)
            .map_or(Answer::Refused, |w| forward_for(w)),
        IpAddr::V6(_) => Answer::Refused,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }
    fn asker(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn member(net: &str, addr: &str, names: &[&str]) -> Membership {
        Membership {
            network: net.into(),
            ip: ip(addr),
            names: names.iter().map(|s| s.to_string()).collect(),
        }
    }
    fn sandbox(members: Vec<Membership>) -> SandboxRecord {
        SandboxRecord {
            memberships: members,
            forward: true,
            ..Default::default()
        }
    }
    fn up() -> Vec<SocketAddr> {
        vec!["127.0.0.1:5353".parse().unwrap()]
    }

    /// web and client on net a; db on net b; both on a and b: bridge.
    fn two_networks() -> Table {
        Table::build(
            &[
                sandbox(vec![member("a", "10.1.0.2", &["web", "h-web", "www"])]),
                sandbox(vec![member("a", "10.1.0.3", &["client"])]),
                sandbox(vec![member("b", "10.2.0.2", &["db"])]),
                sandbox(vec![
                    member("a", "10.1.0.4", &["bridge"]),
                    member("b", "10.2.0.4", &["bridge", "br-alias"]),
                ]),
            ],
            &up(),
        )
    }

    #[test]
    fn name_hostname_and_alias_resolve_on_the_same_network() {
        let t = two_networks();
        for n in ["web", "h-web", "www", "web."] {
            assert_eq!(
                lookup(&t, asker("10.1.0.3"), n, RecordType::A),
                Answer::A(vec![ip("10.1.0.2")]),
                "{n}"
            );
        }
    }

    #[test]
    fn names_match_case_insensitively() {
        let t = two_networks();
        assert_eq!(
            lookup(&t, asker("10.1.0.3"), "WeB.", RecordType::A),
            Answer::A(vec![ip("10.1.0.2")])
        );
    }

    #[test]
    fn a_name_on_another_network_is_nxdomain_not_forwarded() {
        let t = two_networks();
        assert_eq!(
            lookup(&t, asker("10.1.0.3"), "db", RecordType::A),
            Answer::NxDomain
        );
        assert_eq!(
            lookup(&t, asker("10.2.0.2"), "web", RecordType::A),
            Answer::NxDomain
        );
    }

    #[test]
    fn a_sandbox_on_two_networks_resolves_names_of_both_from_either_address() {
        let t = two_networks();
        for a in ["10.1.0.4", "10.2.0.4"] {
            assert_eq!(
                lookup(&t, asker(a), "web", RecordType::A),
                Answer::A(vec![ip("10.1.0.2")])
            );
            assert_eq!(
                lookup(&t, asker(a), "db", RecordType::A),
                Answer::A(vec![ip("10.2.0.2")])
            );
        }
        // Its own name answers with its address on each network the asker shares.
        assert_eq!(
            lookup(&t, asker("10.1.0.3"), "bridge", RecordType::A),
            Answer::A(vec![ip("10.1.0.4")])
        );
        assert_eq!(
            lookup(&t, asker("10.2.0.4"), "bridge", RecordType::A),
            Answer::A(vec![ip("10.1.0.4"), ip("10.2.0.4")])
        );
    }

    #[test]
    fn aaaa_and_other_types_of_a_local_name_are_empty_noerror() {
        let t = two_networks();
        assert_eq!(
            lookup(&t, asker("10.1.0.3"), "web", RecordType::AAAA),
            Answer::NoData
        );
        assert_eq!(
            lookup(&t, asker("10.1.0.3"), "web", RecordType::MX),
            Answer::NoData
        );
    }

    #[test]
    fn reverse_lookup_answers_the_first_name_on_shared_networks_only() {
        let t = two_networks();
        assert_eq!(
            lookup(
                &t,
                asker("10.1.0.3"),
                "2.0.1.10.in-addr.arpa.",
                RecordType::PTR
            ),
            Answer::Ptr(vec!["web.".into()])
        );
        assert_eq!(
            lookup(
                &t,
                asker("10.1.0.3"),
                "2.0.2.10.in-addr.arpa",
                RecordType::PTR
            ),
            Answer::NxDomain
        );
        assert!(matches!(
            lookup(
                &t,
                asker("10.1.0.3"),
                "9.9.9.10.in-addr.arpa",
                RecordType::PTR
            ),
            Answer::Forward(_)
        ));
    }

    #[test]
    fn unknown_names_are_forwarded_to_the_askers_upstreams() {
        let own: SocketAddr = "10.9.0.53:53".parse().unwrap();
        let mut with_dns = sandbox(vec![member("a", "10.1.0.9", &["x"])]);
        with_dns.upstreams = vec![own];
        let mut t = vec![sandbox(vec![member("a", "10.1.0.3", &["client"])])];
        t.push(with_dns);
        let t = Table::build(&t, &up());
        assert_eq!(
            lookup(&t, asker("10.1.0.3"), "example.test", RecordType::A),
            Answer::Forward(up().into())
        );
        assert_eq!(
            lookup(&t, asker("10.1.0.9"), "example.test", RecordType::A),
            Answer::Forward(vec![own].into())
        );
        // Search-domain forms of a local name are not local names.
        assert!(matches!(
            lookup(&t, asker("10.1.0.3"), "x.corp.test", RecordType::A),
            Answer::Forward(_)
        ));
    }

    #[test]
    fn internal_only_sandboxes_never_forward() {
        let mut s = sandbox(vec![member("i", "10.3.0.2", &["secret"])]);
        s.forward = false;
        let t = Table::build(&[s, sandbox(vec![member("i", "10.3.0.3", &["b"])])], &up());
        assert_eq!(
            lookup(&t, asker("10.3.0.2"), "b", RecordType::A),
            Answer::A(vec![ip("10.3.0.3")])
        );
        assert_eq!(
            lookup(&t, asker("10.3.0.2"), "exfil.example.test", RecordType::A),
            Answer::Refused
        );
        assert_eq!(
            lookup(&t, asker("10.3.0.2"), "exfil.example.test", RecordType::TXT),
            Answer::Refused
        );
    }

    #[test]
    fn strangers_are_refused_and_no_upstream_is_servfail() {
        let t = Table::build(&[sandbox(vec![member("a", "10.1.0.3", &["c"])])], &[]);
        assert_eq!(
            lookup(&t, asker("10.1.0.77"), "c", RecordType::A),
            Answer::Refused
        );
        assert_eq!(
            lookup(&t, asker("fd00::1"), "c", RecordType::A),
            Answer::Refused
        );
        assert_eq!(
            lookup(&t, asker("10.1.0.3"), "example.test", RecordType::A),
            Answer::ServFail
        );
    }

    #[test]
    fn other_addresses_of_a_sandbox_ask_as_it() {
        let mut s = sandbox(vec![member("a", "10.1.0.3", &["c"])]);
        s.other_addrs = vec![ip("172.17.0.5")];
        let t = Table::build(&[s], &up());
        assert_eq!(
            lookup(&t, asker("172.17.0.5"), "c", RecordType::A),
            Answer::A(vec![ip("10.1.0.3")])
        );
    }

    #[test]
    fn shared_alias_answers_every_holder() {
        let t = Table::build(
            &[
                sandbox(vec![member("a", "10.1.0.2", &["w1", "web"])]),
                sandbox(vec![member("a", "10.1.0.3", &["w2", "web"])]),
            ],
            &up(),
        );
        assert_eq!(
            lookup(&t, asker("10.1.0.2"), "web", RecordType::A),
            Answer::A(vec![ip("10.1.0.2"), ip("10.1.0.3")])
        );
    }

    #[test]
    fn reverse_names_parse_strictly() {
        assert_eq!(reverse_v4("4.3.2.1.in-addr.arpa"), Some(ip("1.2.3.4")));
        assert_eq!(reverse_v4("3.2.1.in-addr.arpa"), None);
        assert_eq!(reverse_v4("5.4.3.2.1.in-addr.arpa"), None);
        assert_eq!(reverse_v4("256.3.2.1.in-addr.arpa"), None);
        assert_eq!(reverse_v4("x.3.2.1.in-addr.arpa"), None);
    }
}
