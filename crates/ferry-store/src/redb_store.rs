//! The embedded engine: one redb file under `--data-root`, one table of string keys to
//! JSON values. redb commits are durable and atomic, so a ferryd killed at any point
//! finds either the old batch or the new one.

use std::path::Path;

use redb::{Database, TableDefinition};

use crate::{Op, Store, StoreError};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");

pub struct RedbStore {
    db: Database,
}

fn txn<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Txn(e.to_string())
}

impl RedbStore {
    /// Open or make the store file, readable and writable by its owner only (it holds
    /// every network, sandbox and address: 0600, also for a file an older ferryd made
    /// world-readable).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
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
            .map_err(|e| io("set mode 0600 on", e))?;
        let db = Database::create(path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        let w = db.begin_write().map_err(txn)?;
        w.open_table(KV).map_err(txn)?;
        w.commit().map_err(txn)?;
        Ok(RedbStore { db })
    }
}

impl Store for RedbStore {
    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
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

    fn commit(&self, ops: &[Op]) -> Result<(), StoreError> {
        let w = self.db.begin_write().map_err(txn)?;
        {
            let mut t = w.open_table(KV).map_err(txn)?;
            for op in ops {
                match op {
                    Op::Put(k, v) => {
                        t.insert(k.as_str(), v.as_slice()).map_err(txn)?;
                    }
                    Op::Delete(k) => {
                        t.remove(k.as_str()).map_err(txn)?;
                    }
                }
            }
        }
        w.commit().map_err(txn)
    }
}
