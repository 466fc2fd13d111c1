//! Changing a table: every record contributes entries, each entry counts its
//! contributors, and removing a record takes away exactly what adding it put in.

use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::Arc;

use super::{normalize, Asker, Fqdn, Membership, NetId, PMap, SandboxRecord, Table};

/// Whether a record comes into the table or goes out of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sign {
    Add,
    Remove,
}

/// A small multiset, sorted, with a count per item: the holders of one key. Cheap to
/// clone (the persistent maps clone the entries of a node they copy); a change copies
/// it, O(its length).
#[derive(Debug, Clone)]
pub(super) struct Bag<T>(Arc<[(T, u32)]>);

impl<T> Default for Bag<T> {
    fn default() -> Self {
        Bag(Arc::new([]))
    }
}

impl<T: Ord + Clone> Bag<T> {
    /// This bag with one more or one less `item`; `None` once it is empty.
    fn changed(&self, item: T, sign: Sign) -> Option<Bag<T>> {
        let mut v = self.0.to_vec();
        match (v.binary_search_by(|(t, _)| t.cmp(&item)), sign) {
            (Ok(i), Sign::Add) => v[i].1 += 1,
            (Err(i), Sign::Add) => v.insert(i, (item, 1)),
            (Ok(i), Sign::Remove) if v[i].1 > 1 => v[i].1 -= 1,
            (Ok(i), Sign::Remove) => {
                v.remove(i);
            }
            (Err(_), Sign::Remove) => {}
        }
        (!v.is_empty()).then(|| Bag(v.into()))
    }
}

impl<T> Bag<T> {
    /// The distinct items, in order.
    pub(super) fn items(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|(t, _)| t)
    }

    pub(super) fn first(&self) -> Option<&T> {
        self.items().next()
    }
}

/// Add `item` to, or take it from, the bag at `key`; an emptied bag leaves the map.
fn bump<K, T>(map: &mut PMap<K, Bag<T>>, key: K, item: T, sign: Sign)
where
    K: Hash + Eq + Clone,
    T: Ord + Clone,
{
    let bag = map.get(&key).cloned().unwrap_or_default();
    match bag.changed(item, sign) {
        Some(bag) => map.insert(key, bag),
        None => map.remove(&key),
    };
}

/// Count one more or one less contributor of `key`.
fn tally<K: Hash + Eq + Clone>(map: &mut PMap<K, u32>, key: K, sign: Sign) {
    let n = map.get(&key).copied().unwrap_or(0);
    match (sign, n) {
        (Sign::Add, _) => map.insert(key, n + 1),
        (Sign::Remove, 0 | 1) => map.remove(&key),
        (Sign::Remove, _) => map.insert(key, n - 1),
    };
}

impl Table {
    /// A table without records; `default_upstreams` serve sandboxes without `--dns`.
    pub fn empty(default_upstreams: &[SocketAddr]) -> Table {
        Table {
            default_upstreams: default_upstreams.into(),
            ..Table::default()
        }
    }

    /// The table of `sandboxes`. `default_upstreams` serve sandboxes without `--dns`.
    pub fn build(sandboxes: &[SandboxRecord], default_upstreams: &[SocketAddr]) -> Table {
        Table::empty(default_upstreams).apply(&[], sandboxes)
    }

    /// A new table: this one without `removed`, with `added`. Costs O(changed · log n);
    /// this table is left as it was. A replaced sandbox is in both lists (its old and
    /// its new record).
    ///
    /// Each of `removed` must be a record this table holds (given to an earlier
    /// `apply` or `build`, equal field for field); the answers are the same as
    /// [`Table::build`] of the records then held, whatever the order of changes.
    pub fn apply(&self, removed: &[SandboxRecord], added: &[SandboxRecord]) -> Table {
        let mut t = self.clone();
        for sb in removed {
            t.count(sb, Sign::Remove);
        }
        for sb in added {
            t.count(sb, Sign::Add);
        }
        t
    }

    /// Add or take away everything one sandbox contributes. A sandbox without a
    /// network with names contributes nothing: it is no asker.
    fn count(&mut self, sb: &SandboxRecord, sign: Sign) {
        if sb.memberships.is_empty() {
            return;
        }
        let mut zones: Vec<NetId> = Vec::with_capacity(sb.memberships.len());
        for m in &sb.memberships {
            let net = match zones.iter().find(|z| ***z == *m.network) {
                Some(z) => z.clone(),
                None => {
                    let z: NetId = m.network.as_str().into();
                    zones.push(z.clone());
                    z
                }
            };
            self.count_membership(m, net, sign);
        }
        let asker = Asker {
            zones: zones.into(),
            forward: sb.forward,
            upstreams: if sb.upstreams.is_empty() {
                self.default_upstreams.clone()
            } else {
                sb.upstreams.as_slice().into()
            },
        };
        let ips = sb.memberships.iter().map(|m| m.ip);
        for ip in ips.chain(sb.other_addrs.iter().copied()) {
            bump(&mut self.askers, ip, asker.clone(), sign);
        }
    }

    /// One endpoint's names, its reverse name (its first name) and its address.
    fn count_membership(&mut self, m: &Membership, net: NetId, sign: Sign) {
        let mut first: Option<Fqdn> = None;
        for n in &m.names {
            let n = normalize(n);
            if n.is_empty() {
                continue;
            }
            let n: Arc<str> = n.as_ref().into();
            if first.is_none() {
                first = Some(format!("{n}.").into());
            }
            bump(&mut self.names, n, (m.ip, net.clone()), sign);
        }
        if let Some(fq) = first {
            bump(&mut self.ptr, m.ip, (fq, net), sign);
        }
        tally(&mut self.owned_addrs, m.ip, sign);
    }

    /// Everything the table holds, with its counts, as sorted lines: two tables that
    /// answer alike from the same records have the same dump.
    #[doc(hidden)]
    pub fn canonical(&self) -> Vec<String> {
        let mut out = vec![format!("upstreams {:?}", self.default_upstreams)];
        for (ip, bag) in &self.askers {
            out.extend(bag.0.iter().map(|(a, c)| {
                format!(
                    "asker {ip} {:?} {} {:?} x{c}",
                    a.zones, a.forward, a.upstreams
                )
            }));
        }
        for (name, bag) in &self.names {
            out.extend(
                bag.0
                    .iter()
                    .map(|((ip, net), c)| format!("name {name} {ip}@{net} x{c}")),
            );
        }
        for (ip, bag) in &self.ptr {
            out.extend(
                bag.0
                    .iter()
                    .map(|((fq, net), c)| format!("ptr {ip} {fq}@{net} x{c}")),
            );
        }
        for (ip, c) in &self.owned_addrs {
            out.push(format!("addr {ip} x{c}"));
        }
        out.sort();
        out
    }
}
