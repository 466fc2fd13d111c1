//! ferry-store: where desired state lives.
//!
//! A deliberately narrow interface: read everything under a prefix, and apply a batch of
//! puts and deletes as one atomic transaction. ferryd computes the next state in memory,
//! writes the difference in one [`Store::commit`], and only then programs the kernel; if
//! that fails it commits the inverse batch. Two engines: [`RedbStore`] (embedded, one
//! host, the default) and [`MemStore`] (a fake for tests). etcd joins behind the same
//! trait for multi-host networks.

mod mem;
mod redb_store;

pub use mem::MemStore;
pub use redb_store::RedbStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("open store at {path}: {source}")]
    Open {
        path: String,
        source: redb::DatabaseError,
    },
    #[error("store transaction: {0}")]
    Txn(String),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put(String, Vec<u8>),
    Delete(String),
}

pub trait Store: Send + Sync + 'static {
    /// Every key and value whose key starts with `prefix`, in key order.
    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Apply all of `ops` or none of them.
    fn commit(&self, ops: &[Op]) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(s: &dyn Store) {
        s.commit(&[
            Op::Put("net/a".into(), b"1".to_vec()),
            Op::Put("net/b".into(), b"2".to_vec()),
            Op::Put("sbx/x".into(), b"3".to_vec()),
        ])
        .unwrap();
        let nets = s.list("net/").unwrap();
        assert_eq!(
            nets,
            vec![
                ("net/a".into(), b"1".to_vec()),
                ("net/b".into(), b"2".to_vec())
            ]
        );
        s.commit(&[
            Op::Delete("net/a".into()),
            Op::Put("net/b".into(), b"9".to_vec()),
        ])
        .unwrap();
        assert_eq!(
            s.list("net/").unwrap(),
            vec![("net/b".into(), b"9".to_vec())]
        );
        s.commit(&[Op::Delete("absent".into())]).unwrap();
    }

    #[test]
    fn mem_store_applies_batches() {
        exercise(&MemStore::default());
    }

    #[test]
    fn redb_store_applies_batches_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.redb");
        exercise(&RedbStore::open(&path).unwrap());
        let again = RedbStore::open(&path).unwrap();
        assert_eq!(
            again.list("net/").unwrap(),
            vec![("net/b".into(), b"9".to_vec())]
        );
    }
}
