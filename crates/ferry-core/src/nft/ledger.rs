//! The firewall's elements kept by where they come from, so that a change costs only the
//! sources it touched.
//!
//! Design note. Every element of ferry's sets comes from one *source*: a network (its
//! bridge, subnet, gateway, role) or an endpoint-holder (a sandbox's or a Docker
//! endpoint's published ports and ICC-off host end). [`super::desired_for_endpoints`]
//! computes all of them from the whole state, which with 1000 sandboxes publishing a port
//! each was a fifth of ferryd's time per attach. The ledger keeps each source's elements
//! and how many sources hold each (set, key), so replacing a few sources' elements yields
//! the same [`Delta`] a full recomputation would, in time proportional to those sources.
//! [`Ledger::delta_for`] only computes; [`Ledger::replace`] records, once the kernel has
//! taken the delta (a refused transaction leaves the ledger as the kernel last saw it —
//! ferryd then reloads everything anyway).
//!
//! Two sources holding the same key (which ferry's own checks prevent: a host port is
//! published once, bridge and host-end names are unique) keep it while either holds it;
//! its value is the last one written, as in the full computation.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use super::{Delta, Elements, SetName};

type Slot = (SetName, String);

#[derive(Debug, Clone)]
pub struct Ledger<S> {
    by_source: HashMap<S, Elements>,
    /// (set, key) → (sources holding it, its value).
    held: HashMap<Slot, (u32, Option<String>)>,
    all: Elements,
}

impl<S> Default for Ledger<S> {
    fn default() -> Self {
        Ledger {
            by_source: HashMap::new(),
            held: HashMap::new(),
            all: Elements::default(),
        }
    }
}

/// What one batch of replacements does to each slot it touches.
#[derive(Default)]
struct Effect {
    /// Slots whose holder count changes, with the new count.
    counts: BTreeMap<Slot, u32>,
    /// Slots written by the new elements, with the value (last writer wins).
    written: BTreeMap<Slot, Option<String>>,
}

impl<S: Hash + Eq + Clone> Ledger<S> {
    /// A ledger holding these sources' elements.
    pub fn of(sources: impl IntoIterator<Item = (S, Elements)>) -> Ledger<S> {
        let mut l = Ledger::default();
        l.replace(sources.into_iter().collect());
        l
    }

    /// Every element, as the kernel should hold them.
    pub fn all(&self) -> &Elements {
        &self.all
    }

    fn effect(&self, changes: &[(S, Elements)]) -> Effect {
        let mut fx = Effect::default();
        for (src, new) in changes {
            if let Some(old) = self.by_source.get(src) {
                for (set, k, _) in old.iter() {
                    let slot = (set, k.clone());
                    let n = fx
                        .counts
                        .entry(slot)
                        .or_insert_with_key(|s| self.held.get(s).map_or(0, |h| h.0));
                    *n = n.saturating_sub(1);
                }
            }
            for (set, k, v) in new.iter() {
                let slot = (set, k.clone());
                let n = fx
                    .counts
                    .entry(slot.clone())
                    .or_insert_with_key(|s| self.held.get(s).map_or(0, |h| h.0));
                *n += 1;
                fx.written.insert(slot, v.clone());
            }
        }
        fx
    }

    /// The element changes that replacing each source's elements with the given ones
    /// (empty: the source is gone) would make. Does not change the ledger.
    pub fn delta_for(&self, changes: &[(S, Elements)]) -> Delta {
        let fx = self.effect(changes);
        let mut d = Delta::default();
        for (slot, n) in &fx.counts {
            let before = self.held.get(slot).map(|h| &h.1);
            let after = match (n, fx.written.get(slot)) {
                (0, _) => None,
                (_, Some(v)) => Some(v),
                (_, None) => before,
            };
            if before.is_some() && before != after {
                d.delete.push(slot.clone());
            }
            if let Some(v) = after.filter(|v| Some(*v) != before) {
                d.add.push((slot.0, slot.1.clone(), v.clone()));
            }
        }
        d
    }

    /// Record the replacements (after the kernel took [`Ledger::delta_for`]'s delta).
    pub fn replace(&mut self, changes: Vec<(S, Elements)>) {
        let fx = self.effect(&changes);
        for (slot, n) in fx.counts {
            let written = fx.written.get(&slot).cloned();
            let set = self.all.sets.entry(slot.0).or_default();
            if n == 0 {
                self.held.remove(&slot);
                set.remove(&slot.1);
                continue;
            }
            let held = self.held.entry(slot.clone()).or_insert((0, None));
            held.0 = n;
            if let Some(v) = written {
                held.1 = v.clone();
                set.insert(slot.1, v);
            }
        }
        self.all.sets.retain(|_, items| !items.is_empty());
        for (src, new) in changes {
            if new.count() == 0 {
                self.by_source.remove(&src);
            } else {
                self.by_source.insert(src, new);
            }
        }
    }
}

#[cfg(test)]
mod tests;
