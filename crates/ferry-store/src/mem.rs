//! An in-memory [`Store`] with etcd's semantics: the fake that orchestration and the
//! overlay are tested against, with a clock the test moves to expire leases.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::hub::Hub;
use crate::{
    Clock, Compare, Entry, Lease, LeaseId, Listing, Op, Outcome, Revision, Store, StoreError,
    SystemClock, WatchEvent, Watcher,
};

pub struct MemStore {
    inner: Mutex<Inner>,
    hub: Hub,
    clock: Arc<dyn Clock>,
    refuse: Arc<AtomicBool>,
}

struct Inner {
    data: BTreeMap<String, Entry>,
    revision: Revision,
    leases: BTreeMap<LeaseId, LeaseRec>,
    next_lease: LeaseId,
}

#[derive(Clone, Copy)]
struct LeaseRec {
    ttl_ms: u64,
    deadline_ms: u64,
}

impl Default for MemStore {
    fn default() -> Self {
        MemStore::with_clock(Arc::new(SystemClock))
    }
}

impl MemStore {
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        MemStore {
            inner: Mutex::new(Inner {
                data: BTreeMap::new(),
                revision: 1,
                leases: BTreeMap::new(),
                next_lease: 0x6679_0000,
            }),
            hub: Hub::new(1),
            clock,
            refuse: Arc::default(),
        }
    }

    /// A switch that makes every commit fail, and change nothing, while it is on: for
    /// tests of what the daemon does when its store refuses a write (a full disk).
    pub fn refusal_switch(&self) -> Arc<AtomicBool> {
        self.refuse.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        let mut inner = self.inner.lock().expect("store lock");
        self.expire(&mut inner);
        inner
    }

    /// Delete the keys of every lease past its deadline, one revision per lease.
    fn expire(&self, inner: &mut Inner) {
        let now = self.clock.now_ms();
        let dead: Vec<LeaseId> = inner
            .leases
            .iter()
            .filter(|(_, l)| l.deadline_ms <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            self.end_lease(inner, id);
        }
    }

    fn end_lease(&self, inner: &mut Inner, id: LeaseId) {
        inner.leases.remove(&id);
        let keys: Vec<Op> = inner
            .data
            .values()
            .filter(|e| e.lease == Some(id))
            .map(|e| Op::Delete(e.key.clone()))
            .collect();
        if !keys.is_empty() {
            self.apply(inner, &keys);
        }
    }

    /// Apply `ops` at the next revision and publish what changed.
    fn apply(&self, inner: &mut Inner, ops: &[Op]) -> Revision {
        inner.revision += 1;
        let rev = inner.revision;
        let mut events = Vec::with_capacity(ops.len());
        for op in ops {
            let (key, value, lease) = match op {
                Op::Delete(k) => {
                    if inner.data.remove(k).is_some() {
                        events.push(WatchEvent::Delete {
                            key: k.clone(),
                            mod_revision: rev,
                        });
                    }
                    continue;
                }
                Op::Put(k, v) => (k, v, None),
                Op::PutLeased(k, v, l) => (k, v, Some(*l)),
            };
            let create_revision = inner.data.get(key).map_or(rev, |e| e.create_revision);
            let entry = Entry {
                key: key.clone(),
                value: value.clone(),
                create_revision,
                mod_revision: rev,
                lease,
            };
            inner.data.insert(key.clone(), entry.clone());
            events.push(WatchEvent::Put(entry));
        }
        self.hub.publish(rev, events);
        rev
    }
}

/// Whether `c` holds over the entries `get` finds (by key) and `any_under` sees (by
/// prefix).
pub(crate) fn holds(
    c: &Compare,
    get: impl Fn(&str) -> Option<(Revision, Vec<u8>)>,
    any_under: impl Fn(&str) -> bool,
) -> bool {
    match c {
        Compare::Absent(k) => get(k).is_none(),
        Compare::ModRevision(k, r) => get(k).is_some_and(|(m, _)| m == *r),
        Compare::Value(k, v) => get(k).is_some_and(|(_, x)| x == *v),
        Compare::NoneUnder(p) => !any_under(p),
    }
}

impl Store for MemStore {
    fn range(&self, prefix: &str) -> Result<Listing, StoreError> {
        let inner = self.lock();
        Ok(Listing {
            revision: inner.revision,
            entries: inner
                .data
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(_, e)| e.clone())
                .collect(),
        })
    }

    fn txn(&self, compares: &[Compare], ops: &[Op]) -> Result<Outcome, StoreError> {
        if self.refuse.load(Ordering::SeqCst) {
            return Err(StoreError::Txn("refused by the test switch".into()));
        }
        let mut inner = self.lock();
        let get = |k: &str| inner.data.get(k).map(|e| (e.mod_revision, e.value.clone()));
        let any_under = |p: &str| {
            inner
                .data
                .range(p.to_string()..)
                .next()
                .is_some_and(|(k, _)| k.starts_with(p))
        };
        if !compares.iter().all(|c| holds(c, get, any_under)) {
            return Ok(Outcome::Conflict);
        }
        for op in ops {
            if let Op::PutLeased(_, _, l) = op {
                if !inner.leases.contains_key(l) {
                    return Err(StoreError::LeaseNotFound(*l));
                }
            }
        }
        if ops.is_empty() {
            return Ok(Outcome::Committed(inner.revision));
        }
        Ok(Outcome::Committed(self.apply(&mut inner, ops)))
    }

    fn grant(&self, ttl: Duration) -> Result<Lease, StoreError> {
        let mut inner = self.lock();
        inner.next_lease += 1;
        let id = inner.next_lease;
        let ttl_ms = ttl.as_millis() as u64;
        let deadline_ms = self.clock.now_ms() + ttl_ms;
        inner.leases.insert(
            id,
            LeaseRec {
                ttl_ms,
                deadline_ms,
            },
        );
        Ok(Lease { id, ttl })
    }

    fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        let mut inner = self.lock();
        let now = self.clock.now_ms();
        let rec = inner
            .leases
            .get_mut(&lease)
            .ok_or(StoreError::LeaseNotFound(lease))?;
        rec.deadline_ms = now + rec.ttl_ms;
        Ok(Duration::from_millis(rec.ttl_ms))
    }

    fn revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.leases.contains_key(&lease) {
            self.end_lease(&mut inner, lease);
        }
        Ok(())
    }

    fn watch(&self, prefix: &str, from: Revision) -> Result<Watcher, StoreError> {
        let _inner = self.lock();
        Ok(self.hub.subscribe(prefix, from))
    }

    fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let _inner = self.lock();
        self.hub.compact(revision);
        Ok(())
    }
}
