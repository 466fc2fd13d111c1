//! ferry-store: where desired state lives.
//!
//! One trait, three engines. [`RedbStore`] (embedded, one host, the default and the home of
//! every local-scope object), [`EtcdStore`] (what spans hosts: global networks, VNIs,
//! address blocks, host records) and [`MemStore`] (the fake the orchestration is tested
//! against). All three give the same semantics, which are etcd's:
//!
//! - Every committed transaction moves the store's **revision** forward by one; every key
//!   remembers the revision that last changed it (`mod_revision`) and the one that made it
//!   (`create_revision`).
//! - A transaction is **conditional**: its [`Compare`]s are checked and its [`Op`]s applied
//!   atomically, or nothing happens and the caller learns of the [`Outcome::Conflict`].
//!   An allocation is a precondition ("this address is absent", "this block is still at the
//!   revision I read"), which is what makes claims race-free across hosts.
//! - A **lease** is a time-to-live that keys can be attached to; when it is revoked or
//!   expires without a keep-alive, its keys are deleted in one revision, which watchers see.
//! - A **watch** streams every change under a prefix from a given revision on, in revision
//!   order; if that revision has been compacted away, the watcher is told so once
//!   ([`WatchMessage::Compacted`]) and must resync from a fresh [`Store::range`], as
//!   flannel's registry does.
//!
//! The trait is synchronous (ferryd commits under its state lock, and redb is synchronous);
//! the etcd engine drives its async client on a runtime of its own. Watches deliver into a
//! tokio channel, which async code awaits and sync code reads with `blocking_recv`.

#![forbid(unsafe_code)]

mod clock;
mod etcd;
mod hub;
mod mem;
mod redb_store;

use std::time::Duration;

pub use clock::{Clock, ManualClock, SystemClock};
pub use etcd::{EtcdConfig, EtcdStore, TlsFiles};
pub use mem::MemStore;
pub use redb_store::RedbStore;

/// A store revision: etcd's, or the embedded engines' own counter. Starts above 0.
pub type Revision = i64;
/// A lease's ID, as etcd numbers them.
pub type LeaseId = i64;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("open store at {path}: {source}")]
    Open {
        path: String,
        source: redb::DatabaseError,
    },
    #[error("store transaction: {0}")]
    Txn(String),
    #[error("lease {0:x} not found (expired or revoked)")]
    LeaseNotFound(LeaseId),
    #[error("etcd at {endpoints}: {action}: {source}")]
    Etcd {
        endpoints: String,
        action: &'static str,
        source: etcd_client::Error,
    },
    #[error("etcd at {endpoints}: {action}: no answer within {timeout:?}")]
    EtcdTimeout {
        endpoints: String,
        action: &'static str,
        timeout: Duration,
    },
    #[error("etcd store options: {0}")]
    EtcdConfig(String),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
}

/// A change in a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put(String, Vec<u8>),
    /// A put whose key goes when the lease does.
    PutLeased(String, Vec<u8>, LeaseId),
    Delete(String),
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Put(k, _) | Op::PutLeased(k, _, _) | Op::Delete(k) => k,
        }
    }
}

/// A precondition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// No value is stored under the key.
    Absent(String),
    /// The key exists and was last changed at this revision.
    ModRevision(String, Revision),
    /// The key exists and holds exactly this value.
    Value(String, Vec<u8>),
    /// No key starts with this prefix (etcd: a create-revision compare over the range).
    NoneUnder(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every compare held; the ops are in, at this revision.
    Committed(Revision),
    /// A compare failed; nothing changed.
    Conflict,
}

/// A key with its value and history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: Revision,
    pub mod_revision: Revision,
    pub lease: Option<LeaseId>,
}

/// What a [`Store::range`] saw, and the revision it saw it at: the revision to watch from
/// (plus one) to miss nothing and see nothing twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub revision: Revision,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: LeaseId,
    pub ttl: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put(Entry),
    Delete { key: String, mod_revision: Revision },
}

impl WatchEvent {
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(e) => &e.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchMessage {
    /// The changes of one revision under the watched prefix.
    Changes {
        revision: Revision,
        events: Vec<WatchEvent>,
    },
    /// The revision asked for is gone; the watch has ended. Resync from a fresh range.
    Compacted { compact_revision: Revision },
}

/// A running watch; dropping it cancels the watch.
pub struct Watcher {
    rx: tokio::sync::mpsc::UnboundedReceiver<WatchMessage>,
    _cancel: Option<Box<dyn Send + Sync>>,
}

impl Watcher {
    fn new(
        rx: tokio::sync::mpsc::UnboundedReceiver<WatchMessage>,
        cancel: Option<Box<dyn Send + Sync>>,
    ) -> Self {
        Watcher {
            rx,
            _cancel: cancel,
        }
    }

    /// The next message; `None` once the watch has ended (after `Compacted`, or when the
    /// store went away).
    pub async fn next(&mut self) -> Option<WatchMessage> {
        self.rx.recv().await
    }

    /// A message already received, without waiting; `None` when there is none yet (or
    /// the watch ended: [`Watcher::next`] says which).
    pub fn try_next(&mut self) -> Option<WatchMessage> {
        self.rx.try_recv().ok()
    }

    /// The next message, waiting at most `timeout`, from synchronous code; `None` when
    /// nothing came in time or the watch ended.
    pub fn next_blocking(&mut self, timeout: Duration) -> Option<WatchMessage> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match self.rx.try_recv() {
                Ok(m) => return Some(m),
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => return None,
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {}
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

pub trait Store: Send + Sync + 'static {
    /// Every key and value whose key starts with `prefix`, in key order.
    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(self
            .range(prefix)?
            .entries
            .into_iter()
            .map(|e| (e.key, e.value))
            .collect())
    }

    /// Every entry under `prefix`, in key order, with the revision they were read at.
    fn range(&self, prefix: &str) -> Result<Listing, StoreError>;

    /// Apply `ops` if every one of `compares` holds, atomically; otherwise change nothing.
    fn txn(&self, compares: &[Compare], ops: &[Op]) -> Result<Outcome, StoreError>;

    /// Apply all of `ops` or none of them.
    fn commit(&self, ops: &[Op]) -> Result<(), StoreError> {
        match self.txn(&[], ops)? {
            Outcome::Committed(_) => Ok(()),
            Outcome::Conflict => Err(StoreError::Txn(
                "an unconditional transaction reported a conflict".into(),
            )),
        }
    }

    /// A new lease that lives `ttl` unless kept alive.
    fn grant(&self, ttl: Duration) -> Result<Lease, StoreError>;

    /// Renew a lease for its whole TTL; [`StoreError::LeaseNotFound`] if it is gone.
    fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError>;

    /// End a lease now, deleting its keys. A lease already gone is not an error.
    fn revoke(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// Every change under `prefix` from revision `from` (inclusive) on.
    fn watch(&self, prefix: &str, from: Revision) -> Result<Watcher, StoreError>;

    /// Forget the history before `revision`: watches from older revisions are compacted.
    fn compact(&self, revision: Revision) -> Result<(), StoreError>;
}
