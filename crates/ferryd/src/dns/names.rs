//! The table in service and what it was made from, so that a commit costs only the
//! sandboxes it touched.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;

use ferry_dns::{SandboxRecord, Table};

use super::records::{record_of, NetKind};
use crate::state::{Key, State};

/// The table and its sources. Invariant: `table` holds exactly the records in
/// `records`, and `records` and `nets` are those of the state last followed.
pub(super) struct Names {
    table: Table,
    /// Sandbox ID → its record, for the sandboxes that have one.
    records: HashMap<String, SandboxRecord>,
    /// Network ID → what records take from it.
    nets: HashMap<String, NetKind>,
    /// Other hosts' sandboxes on overlays, keyed `remote/<network>/<ip>`.
    remote: BTreeMap<String, SandboxRecord>,
}

impl Names {
    /// No records yet.
    pub(super) fn empty(default_upstreams: &[SocketAddr]) -> Names {
        Names {
            table: Table::empty(default_upstreams),
            records: HashMap::new(),
            nets: HashMap::new(),
            remote: BTreeMap::new(),
        }
    }

    /// Everything from the state: at start, and whenever something is unusual.
    pub(super) fn of(
        st: &State,
        default_upstreams: &[SocketAddr],
        remote: &BTreeMap<String, SandboxRecord>,
    ) -> Names {
        let records: HashMap<String, SandboxRecord> = st
            .sandboxes
            .values()
            .filter_map(|sb| Some((sb.id.clone(), record_of(st, sb)?)))
            .collect();
        let all: Vec<SandboxRecord> = records.values().chain(remote.values()).cloned().collect();
        Names {
            table: Table::build(&all, default_upstreams),
            records,
            nets: st
                .networks
                .values()
                .map(|n| (n.id.clone(), NetKind::of(n)))
                .collect(),
            remote: remote.clone(),
        }
    }

    /// Replace the other hosts' records; false if none changed.
    pub(super) fn set_remote(&mut self, new: &BTreeMap<String, SandboxRecord>) -> bool {
        let removed: Vec<SandboxRecord> = self
            .remote
            .iter()
            .filter(|(k, v)| new.get(*k) != Some(v))
            .map(|(_, v)| v.clone())
            .collect();
        let added: Vec<SandboxRecord> = new
            .iter()
            .filter(|(k, v)| self.remote.get(*k) != Some(v))
            .map(|(_, v)| v.clone())
            .collect();
        if removed.is_empty() && added.is_empty() {
            return false;
        }
        self.table = self.table.apply(&removed, &added);
        self.remote = new.clone();
        true
    }

    pub(super) fn table(&self) -> &Table {
        &self.table
    }

    /// Follow a commit of `keys` to `st`: the records of the sandboxes it touched,
    /// again, and their difference applied to the table. False if no record changed
    /// (a pid recorded, an address freed): the table in service stays.
    pub(super) fn follow(&mut self, st: &State, keys: &[Key]) -> bool {
        let (mut removed, mut added) = (vec![], vec![]);
        for id in self.touched(st, keys) {
            let new = st.sandboxes.get(id).and_then(|sb| record_of(st, sb));
            if self.records.get(id) == new.as_ref() {
                continue;
            }
            removed.extend(self.records.remove(id));
            if let Some(new) = new {
                added.push(new.clone());
                self.records.insert(id.to_string(), new);
            }
        }
        if removed.is_empty() && added.is_empty() {
            return false;
        }
        self.table = self.table.apply(&removed, &added);
        true
    }

    /// The sandboxes whose record a commit of `keys` may have changed: those it
    /// names, and every sandbox on a network that came, went or changed kind (rare:
    /// a network with sandboxes on it is neither created nor removed, and its kind is
    /// fixed at creation, so this pass over the sandboxes almost never finds one).
    fn touched<'a>(&mut self, st: &'a State, keys: &'a [Key]) -> BTreeSet<&'a str> {
        let mut ids = BTreeSet::new();
        for key in keys {
            match key {
                Key::Sbx(id) => {
                    ids.insert(id.as_str());
                }
                Key::Net(id) if self.net_changed(st, id) => {
                    ids.extend(st.users_of(id).into_iter().map(|sb| sb.id.as_str()));
                }
                _ => {}
            }
        }
        ids
    }

    /// Note the network's kind; true if it is not the one noted before.
    fn net_changed(&mut self, st: &State, id: &str) -> bool {
        let kind = st.networks.get(id).map(NetKind::of);
        if self.nets.get(id).copied() == kind {
            return false;
        }
        match kind {
            Some(k) => self.nets.insert(id.to_string(), k),
            None => self.nets.remove(id),
        };
        true
    }
}
