//! The embedded engine: one redb file under `--data-root`. redb commits are durable and
//! atomic, so a ferryd killed at any point finds either the old transaction or the new one.
//!
//! Tables: `kv` (key → value, as ferry has always stored it), `kv_rev` (key → create and
//! mod revision and lease, 0 for none), `meta` (the store's revision and lease counter) and
//! `leases` (ID → TTL and wall-clock deadline, so a lease outlives a restart as etcd's do).
//! Keys written before revisions existed read as created and changed at revision 1.
//! Compares are evaluated inside the write transaction, which redb serialises; one writer
//! lock also orders the watch hub's publications. Leases are swept when a call finds the
//! earliest deadline passed; ending one scans `kv_rev` (local leases are few).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};

use crate::hub::Hub;
use crate::mem::holds;
use crate::{
    Clock, Compare, Entry, Lease, LeaseId, Listing, Op, Outcome, Revision, Store, StoreError,
    SystemClock, WatchEvent, Watcher,
};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const KV_REV: TableDefinition<&str, (i64, i64, i64)> = TableDefinition::new("kv_rev");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
const LEASES: TableDefinition<i64, (u64, u64)> = TableDefinition::new("leases");

pub struct RedbStore {
    db: Database,
    hub: Hub,
    clock: Arc<dyn Clock>,
    /// Held across a write transaction and its publication; the earliest lease deadline.
    writer: Mutex<Option<u64>>,
}

fn txn<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Txn(e.to_string())
}

fn meta(w: &WriteTransaction, key: &str) -> Result<i64, StoreError> {
    let t = w.open_table(META).map_err(txn)?;
    let v = t.get(key).map_err(txn)?.map(|v| v.value());
    Ok(v.unwrap_or(1))
}

fn set_meta(w: &WriteTransaction, key: &str, value: i64) -> Result<(), StoreError> {
    let mut t = w.open_table(META).map_err(txn)?;
    t.insert(key, value).map_err(txn)?;
    Ok(())
}

/// The earliest deadline among the stored leases.
fn earliest(w: &WriteTransaction) -> Result<Option<u64>, StoreError> {
    let t = w.open_table(LEASES).map_err(txn)?;
    let mut min = None;
    for item in t.iter().map_err(txn)? {
        let (_, v) = item.map_err(txn)?;
        let d = v.value().1;
        min = Some(min.map_or(d, |m: u64| m.min(d)));
    }
    Ok(min)
}

/// Make the store file if missing, and leave it (new or old) at mode 0600.
fn owner_only(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |action, source| StoreError::Io {
        action,
        path: path.display().to_string(),
        source,
    };
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io("create", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io("set mode 0600 on", e))
}

impl RedbStore {
    /// Open or make the store file, readable and writable by its owner only (it holds
    /// every network, sandbox and address: 0600, also for a file an older ferryd made
    /// world-readable).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_clock(path, Arc::new(SystemClock))
    }

    /// [`RedbStore::open`], with the clock its leases expire by.
    pub fn open_with_clock(path: &Path, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        owner_only(path)?;
        let db = Database::create(path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        let w = db.begin_write().map_err(txn)?;
        w.open_table(KV).map_err(txn)?;
        w.open_table(KV_REV).map_err(txn)?;
        let revision = meta(&w, "revision")?;
        let deadline = earliest(&w)?;
        w.commit().map_err(txn)?;
        Ok(RedbStore {
            db,
            hub: Hub::new(revision),
            clock,
            writer: Mutex::new(deadline),
        })
    }

    /// One write transaction under the writer lock, after sweeping expired leases:
    /// `f` returns the outcome and the events to publish at the new revision.
    fn write<T>(
        &self,
        f: impl FnOnce(&WriteTransaction, Revision) -> Result<(T, Vec<WatchEvent>), StoreError>,
    ) -> Result<T, StoreError> {
        let mut next_deadline = self.writer.lock().expect("store writer");
        self.sweep(&mut next_deadline)?;
        let w = self.db.begin_write().map_err(txn)?;
        let rev = meta(&w, "revision")? + 1;
        let (out, events) = f(&w, rev)?;
        if !events.is_empty() {
            set_meta(&w, "revision", rev)?;
        }
        *next_deadline = earliest(&w)?;
        w.commit().map_err(txn)?;
        self.hub.publish(rev, events);
        Ok(out)
    }

    /// End every lease past its deadline, one revision each, as etcd does.
    fn sweep(&self, next_deadline: &mut Option<u64>) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        if next_deadline.is_none_or(|d| d > now) {
            return Ok(());
        }
        let w = self.db.begin_write().map_err(txn)?;
        let dead: Vec<i64> = {
            let t = w.open_table(LEASES).map_err(txn)?;
            let mut dead = Vec::new();
            for item in t.iter().map_err(txn)? {
                let (k, v) = item.map_err(txn)?;
                if v.value().1 <= now {
                    dead.push(k.value());
                }
            }
            dead
        };
        let mut rev = meta(&w, "revision")?;
        let mut published = Vec::new();
        for id in dead {
            let events = end_lease(&w, id, rev + 1)?;
            if !events.is_empty() {
                rev += 1;
                published.push((rev, events));
            }
        }
        set_meta(&w, "revision", rev)?;
        *next_deadline = earliest(&w)?;
        w.commit().map_err(txn)?;
        for (rev, events) in published {
            self.hub.publish(rev, events);
        }
        Ok(())
    }
}

/// Delete lease `id` and its keys at revision `rev`; the events, empty if it held none.
fn end_lease(
    w: &WriteTransaction,
    id: LeaseId,
    rev: Revision,
) -> Result<Vec<WatchEvent>, StoreError> {
    w.open_table(LEASES).map_err(txn)?.remove(id).map_err(txn)?;
    let keys: Vec<String> = {
        let t = w.open_table(KV_REV).map_err(txn)?;
        let mut keys = Vec::new();
        for item in t.iter().map_err(txn)? {
            let (k, v) = item.map_err(txn)?;
            if v.value().2 == id {
                keys.push(k.value().to_string());
            }
        }
        keys
    };
    let ops: Vec<Op> = keys.into_iter().map(Op::Delete).collect();
    apply(w, &ops, rev)
}

/// Write `ops` at revision `rev`; the events they make.
fn apply(w: &WriteTransaction, ops: &[Op], rev: Revision) -> Result<Vec<WatchEvent>, StoreError> {
    let mut kv = w.open_table(KV).map_err(txn)?;
    let mut revs = w.open_table(KV_REV).map_err(txn)?;
    let mut events = Vec::with_capacity(ops.len());
    for op in ops {
        let (key, value, lease) = match op {
            Op::Delete(k) => {
                revs.remove(k.as_str()).map_err(txn)?;
                if kv.remove(k.as_str()).map_err(txn)?.is_some() {
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
        let existed = kv
            .insert(key.as_str(), value.as_slice())
            .map_err(txn)?
            .is_some();
        let old = revs.get(key.as_str()).map_err(txn)?.map(|v| v.value().0);
        let create_revision = match (existed, old) {
            (true, Some(c)) => c,
            (true, None) => 1,
            (false, _) => rev,
        };
        revs.insert(key.as_str(), (create_revision, rev, lease.unwrap_or(0)))
            .map_err(txn)?;
        events.push(WatchEvent::Put(Entry {
            key: key.clone(),
            value: value.clone(),
            create_revision,
            mod_revision: rev,
            lease,
        }));
    }
    Ok(events)
}

/// Whether some key starts with `prefix`.
fn any_under(w: &WriteTransaction, prefix: &str) -> Result<bool, StoreError> {
    let kv = w.open_table(KV).map_err(txn)?;
    let mut keys = kv.range(prefix..).map_err(txn)?;
    let any = match keys.next() {
        Some(item) => item.map_err(txn)?.0.value().starts_with(prefix),
        None => false,
    };
    Ok(any)
}

fn lookup(w: &WriteTransaction, key: &str) -> Result<Option<(Revision, Vec<u8>)>, StoreError> {
    let kv = w.open_table(KV).map_err(txn)?;
    let Some(v) = kv.get(key).map_err(txn)? else {
        return Ok(None);
    };
    let revs = w.open_table(KV_REV).map_err(txn)?;
    let m = revs.get(key).map_err(txn)?.map_or(1, |r| r.value().1);
    Ok(Some((m, v.value().to_vec())))
}

impl Store for RedbStore {
    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.sweep(&mut self.writer.lock().expect("store writer"))?;
        let r = self.db.begin_read().map_err(txn)?;
        let t = r.open_table(KV).map_err(txn)?;
        let mut out = Vec::new();
        for item in t.range(prefix..).map_err(txn)? {
            let (k, v) = item.map_err(txn)?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn range(&self, prefix: &str) -> Result<Listing, StoreError> {
        self.sweep(&mut self.writer.lock().expect("store writer"))?;
        let r = self.db.begin_read().map_err(txn)?;
        let kv = r.open_table(KV).map_err(txn)?;
        let revs = r.open_table(KV_REV).map_err(txn)?;
        let revision = match r.open_table(META) {
            Ok(t) => t.get("revision").map_err(txn)?.map_or(1, |v| v.value()),
            Err(redb::TableError::TableDoesNotExist(_)) => 1,
            Err(e) => return Err(txn(e)),
        };
        let mut entries = Vec::new();
        for item in kv.range(prefix..).map_err(txn)? {
            let (k, v) = item.map_err(txn)?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            let (c, m, l) = revs.get(key).map_err(txn)?.map_or((1, 1, 0), |r| r.value());
            entries.push(Entry {
                key: key.to_string(),
                value: v.value().to_vec(),
                create_revision: c,
                mod_revision: m,
                lease: (l != 0).then_some(l),
            });
        }
        Ok(Listing { revision, entries })
    }

    fn txn(&self, compares: &[Compare], ops: &[Op]) -> Result<Outcome, StoreError> {
        self.write(|w, rev| {
            for c in compares {
                let held = match c {
                    Compare::Absent(k) | Compare::ModRevision(k, _) | Compare::Value(k, _) => {
                        let found = lookup(w, k)?;
                        holds(c, |_| found.clone(), |_| false)
                    }
                    Compare::NoneUnder(p) => {
                        let any = any_under(w, p)?;
                        holds(c, |_| None, |_| any)
                    }
                };
                if !held {
                    return Ok((Outcome::Conflict, Vec::new()));
                }
            }
            let leases = w.open_table(LEASES).map_err(txn)?;
            for op in ops {
                if let Op::PutLeased(_, _, l) = op {
                    if leases.get(*l).map_err(txn)?.is_none() {
                        return Err(StoreError::LeaseNotFound(*l));
                    }
                }
            }
            drop(leases);
            let events = apply(w, ops, rev)?;
            let at = if events.is_empty() { rev - 1 } else { rev };
            Ok((Outcome::Committed(at), events))
        })
    }

    fn grant(&self, ttl: Duration) -> Result<Lease, StoreError> {
        let now = self.clock.now_ms();
        self.write(|w, _| {
            let id = meta(w, "next_lease")?.max(0x6679_0000) + 1;
            set_meta(w, "next_lease", id)?;
            let ttl_ms = ttl.as_millis() as u64;
            let mut t = w.open_table(LEASES).map_err(txn)?;
            t.insert(id, (ttl_ms, now + ttl_ms)).map_err(txn)?;
            Ok((Lease { id, ttl }, Vec::new()))
        })
    }

    fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        let now = self.clock.now_ms();
        self.write(|w, _| {
            let mut t = w.open_table(LEASES).map_err(txn)?;
            let ttl_ms = t
                .get(lease)
                .map_err(txn)?
                .map(|v| v.value().0)
                .ok_or(StoreError::LeaseNotFound(lease))?;
            t.insert(lease, (ttl_ms, now + ttl_ms)).map_err(txn)?;
            Ok((Duration::from_millis(ttl_ms), Vec::new()))
        })
    }

    fn revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.write(|w, rev| {
            let known = w
                .open_table(LEASES)
                .map_err(txn)?
                .get(lease)
                .map_err(txn)?
                .is_some();
            let events = if known {
                end_lease(w, lease, rev)?
            } else {
                Vec::new()
            };
            Ok(((), events))
        })
    }

    fn watch(&self, prefix: &str, from: Revision) -> Result<Watcher, StoreError> {
        let _writer = self.writer.lock().expect("store writer");
        Ok(self.hub.subscribe(prefix, from))
    }

    fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let _writer = self.writer.lock().expect("store writer");
        self.hub.compact(revision);
        Ok(())
    }
}
