//! The etcd engine: what spans hosts (global networks, VNIs, address blocks, host records)
//! lives in an etcd v3 cluster, every key under one prefix (`/ferry/` by default), so one
//! etcd can serve other users too.
//!
//! The [`Store`] trait is synchronous and etcd's client is async, so the engine owns a small
//! tokio runtime of its own: each call is spawned there and the caller waits for its answer,
//! never longer than the configured timeout, which then names etcd and the action. That
//! works from plain threads and from inside another runtime alike (ferryd's), where a
//! nested `block_on` would panic. Watches run as tasks on the same runtime and feed the
//! [`Watcher`]'s channel; dropping the watcher aborts its task.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, CompareOp, ConnectOptions, EventType, GetOptions, Identity, PutOptions,
    TlsOptions, Txn, TxnOp, WatchOptions,
};

use crate::{
    Compare, Entry, Lease, LeaseId, Listing, Op, Outcome, Revision, Store, StoreError, WatchEvent,
    WatchMessage, Watcher,
};

/// The client certificate files of `--cluster-store-opt kv.cacertfile=…,kv.certfile=…,kv.keyfile=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// `HOST:PORT` or `http(s)://HOST:PORT`, one per member.
    pub endpoints: Vec<String>,
    /// Every key ferry writes starts with this.
    pub prefix: String,
    pub tls: Option<TlsFiles>,
    /// The longest any one call may take.
    pub timeout: Duration,
}

impl EtcdConfig {
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdConfig {
            endpoints,
            prefix: "/ferry/".into(),
            tls: None,
            timeout: Duration::from_secs(3),
        }
    }

    fn urls(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        self.endpoints
            .iter()
            .map(|e| {
                if e.contains("://") {
                    e.clone()
                } else {
                    format!("{scheme}://{e}")
                }
            })
            .collect()
    }

    fn tls_options(&self) -> Result<Option<TlsOptions>, StoreError> {
        let Some(files) = &self.tls else {
            return Ok(None);
        };
        let read = |p: &PathBuf| {
            std::fs::read(p)
                .map_err(|e| StoreError::EtcdConfig(format!("read {}: {e}", p.display())))
        };
        let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(read(&files.ca)?));
        match (&files.cert, &files.key) {
            (Some(c), Some(k)) => tls = tls.identity(Identity::from_pem(read(c)?, read(k)?)),
            (None, None) => {}
            _ => {
                return Err(StoreError::EtcdConfig(
                    "kv.certfile and kv.keyfile go together".into(),
                ))
            }
        }
        Ok(Some(tls))
    }
}

pub struct EtcdStore {
    cfg: EtcdConfig,
    client: Client,
    rt: Option<tokio::runtime::Runtime>,
}

/// Aborts a watch's task when its [`Watcher`] goes.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl EtcdStore {
    /// Connect to the cluster; fails (within the timeout) when no member answers.
    pub fn connect(cfg: EtcdConfig) -> Result<Self, StoreError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ferry-etcd")
            .enable_all()
            .build()
            .map_err(|e| StoreError::EtcdConfig(format!("start the etcd client's runtime: {e}")))?;
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(cfg.timeout)
            .with_timeout(cfg.timeout)
            .with_keep_alive(Duration::from_secs(2), cfg.timeout);
        if let Some(tls) = cfg.tls_options()? {
            opts = opts.with_tls(tls);
        }
        let urls = cfg.urls();
        let endpoints = cfg.endpoints.join(",");
        let timeout = cfg.timeout;
        let connect = async move {
            let mut client = Client::connect(urls, Some(opts)).await?;
            // connect() is lazy about members; ask one thing to know etcd answers.
            client.status().await?;
            Ok::<_, etcd_client::Error>(client)
        };
        let client = wait(&rt, &endpoints, "connect", timeout, connect)?;
        Ok(EtcdStore {
            cfg,
            client,
            rt: Some(rt),
        })
    }

    pub fn endpoints(&self) -> String {
        self.cfg.endpoints.join(",")
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt
            .as_ref()
            .expect("etcd runtime lives as long as the store")
    }

    /// One call, tried again while etcd says it is briefly unavailable (a leader
    /// election after a member went: "leader changed", "no leader"), within the timeout.
    /// Every call ferry makes is safe to repeat: reads, keep-alives and puts are
    /// idempotent, and a conditional transaction that did apply before the error
    /// reports a conflict on its repeat, which the claims read back as their own.
    fn call<T, F>(&self, action: &'static str, f: impl Fn(Client) -> F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    {
        let deadline = std::time::Instant::now() + self.cfg.timeout;
        loop {
            let fut = f(self.client.clone());
            match wait(self.rt(), &self.endpoints(), action, self.cfg.timeout, fut) {
                Err(StoreError::Etcd { source, .. })
                    if transient(&source) && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                other => return other,
            }
        }
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.cfg.prefix)
    }

    fn entry(&self, kv: &etcd_client::KeyValue) -> Entry {
        let key = String::from_utf8_lossy(kv.key());
        Entry {
            key: key
                .strip_prefix(&self.cfg.prefix)
                .unwrap_or(&key)
                .to_string(),
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            lease: (kv.lease() != 0).then_some(kv.lease()),
        }
    }

    fn compare(&self, c: &Compare) -> etcd_client::Compare {
        match c {
            Compare::Absent(k) => {
                etcd_client::Compare::create_revision(self.full(k), CompareOp::Equal, 0)
            }
            Compare::ModRevision(k, r) => {
                etcd_client::Compare::mod_revision(self.full(k), CompareOp::Equal, *r)
            }
            Compare::Value(k, v) => {
                etcd_client::Compare::value(self.full(k), CompareOp::Equal, v.clone())
            }
            // Over a range, every key must hold the compare: an empty range holds it.
            Compare::NoneUnder(p) => {
                etcd_client::Compare::create_revision(self.full(p), CompareOp::Equal, 0)
                    .with_prefix()
            }
        }
    }

    fn op(&self, op: &Op) -> TxnOp {
        match op {
            Op::Put(k, v) => TxnOp::put(self.full(k), v.clone(), None),
            Op::PutLeased(k, v, l) => TxnOp::put(
                self.full(k),
                v.clone(),
                Some(PutOptions::new().with_lease(*l)),
            ),
            Op::Delete(k) => TxnOp::delete(self.full(k), None),
        }
    }
}

/// Run `fut` on `rt` and wait for it, at most `timeout`.
fn wait<T, F>(
    rt: &tokio::runtime::Runtime,
    endpoints: &str,
    action: &'static str,
    timeout: Duration,
    fut: F,
) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(tokio::time::timeout(timeout, fut).await);
    });
    let timed_out = || StoreError::EtcdTimeout {
        endpoints: endpoints.to_string(),
        action,
        timeout,
    };
    match rx.recv_timeout(timeout + Duration::from_millis(500)) {
        Ok(Ok(Ok(v))) => Ok(v),
        Ok(Ok(Err(source))) => Err(StoreError::Etcd {
            endpoints: endpoints.to_string(),
            action,
            source,
        }),
        Ok(Err(_)) | Err(_) => Err(timed_out()),
    }
}

/// A failure that passes on its own: etcd electing a leader, or a member gone.
fn transient(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::Unavailable)
}

/// etcd says "requested lease not found" (a put, a revoke) or "lease not found" (a
/// keep-alive) for a lease that expired or was revoked.
fn is_lease_not_found(e: &etcd_client::Error) -> bool {
    e.to_string().contains("lease not found")
}

impl Store for EtcdStore {
    fn range(&self, prefix: &str) -> Result<Listing, StoreError> {
        let key = self.full(prefix);
        let resp = self.call("range", |mut c| {
            let key = key.clone();
            async move { c.get(key, Some(GetOptions::new().with_prefix())).await }
        })?;
        Ok(Listing {
            revision: resp.header().map_or(0, |h| h.revision()),
            entries: resp.kvs().iter().map(|kv| self.entry(kv)).collect(),
        })
    }

    fn txn(&self, compares: &[Compare], ops: &[Op]) -> Result<Outcome, StoreError> {
        let txn = Txn::new()
            .when(compares.iter().map(|c| self.compare(c)).collect::<Vec<_>>())
            .and_then(ops.iter().map(|o| self.op(o)).collect::<Vec<_>>());
        let lease = ops.iter().find_map(|o| match o {
            Op::PutLeased(_, _, l) => Some(*l),
            _ => None,
        });
        let resp = self
            .call("transaction", |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .map_err(|e| match (e, lease) {
                (StoreError::Etcd { source, .. }, Some(l)) if is_lease_not_found(&source) => {
                    StoreError::LeaseNotFound(l)
                }
                (e, _) => e,
            })?;
        Ok(if resp.succeeded() {
            Outcome::Committed(resp.header().map_or(0, |h| h.revision()))
        } else {
            Outcome::Conflict
        })
    }

    fn grant(&self, ttl: Duration) -> Result<Lease, StoreError> {
        let secs = ttl.as_secs().max(1) as i64;
        let resp = self.call("grant a lease", move |mut c| async move {
            c.lease_grant(secs, None).await
        })?;
        Ok(Lease {
            id: resp.id(),
            ttl: Duration::from_secs(resp.ttl().max(0) as u64),
        })
    }

    fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        let ttl = self
            .call("keep a lease alive", move |mut c| async move {
                let (mut keeper, mut stream) = c.lease_keep_alive(lease).await?;
                keeper.keep_alive().await?;
                Ok(stream.message().await?.map_or(0, |m| m.ttl()))
            })
            .or_else(|e| match e {
                StoreError::Etcd { source, .. } if is_lease_not_found(&source) => Ok(0),
                e => Err(e),
            })?;
        if ttl <= 0 {
            return Err(StoreError::LeaseNotFound(lease));
        }
        Ok(Duration::from_secs(ttl as u64))
    }

    fn revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        match self.call("revoke a lease", move |mut c| async move {
            c.lease_revoke(lease).await
        }) {
            Err(StoreError::Etcd { source, .. }) if is_lease_not_found(&source) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    fn watch(&self, prefix: &str, from: Revision) -> Result<Watcher, StoreError> {
        let key = self.full(prefix);
        let opts = WatchOptions::new().with_prefix().with_start_revision(from);
        let stream = self.call("watch", |mut c| {
            let (key, opts) = (key.clone(), opts.clone());
            async move { c.watch(key, Some(opts)).await }
        })?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let strip = self.cfg.prefix.clone();
        let task = self.rt().spawn(forward(stream, tx, strip));
        Ok(Watcher::new(
            rx,
            Some(Box::new(AbortOnDrop(task.abort_handle()))),
        ))
    }

    fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.call("compact", move |mut c| async move {
            c.compact(revision, None).await
        })
        .map(|_| ())
    }
}

/// Forward one etcd watch stream into a [`Watcher`]'s channel until it ends.
async fn forward(
    mut stream: etcd_client::WatchStream,
    tx: tokio::sync::mpsc::UnboundedSender<WatchMessage>,
    prefix: String,
) {
    let strip = |k: &[u8]| {
        let k = String::from_utf8_lossy(k);
        k.strip_prefix(&prefix).unwrap_or(&k).to_string()
    };
    while let Ok(Some(resp)) = stream.message().await {
        if resp.compact_revision() > 0 {
            let _ = tx.send(WatchMessage::Compacted {
                compact_revision: resp.compact_revision(),
            });
            return;
        }
        if resp.canceled() {
            return;
        }
        let revision = resp.header().map_or(0, |h| h.revision());
        // One response may carry several revisions; split them so each message is one.
        let mut batch: Vec<WatchEvent> = Vec::new();
        let mut at = 0;
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            if at != 0 && kv.mod_revision() != at {
                let events = std::mem::take(&mut batch);
                if tx
                    .send(WatchMessage::Changes {
                        revision: at,
                        events,
                    })
                    .is_err()
                {
                    return;
                }
            }
            at = kv.mod_revision();
            batch.push(match ev.event_type() {
                EventType::Put => WatchEvent::Put(Entry {
                    key: strip(kv.key()),
                    value: kv.value().to_vec(),
                    create_revision: kv.create_revision(),
                    mod_revision: kv.mod_revision(),
                    lease: (kv.lease() != 0).then_some(kv.lease()),
                }),
                EventType::Delete => WatchEvent::Delete {
                    key: strip(kv.key()),
                    mod_revision: kv.mod_revision(),
                },
            });
        }
        if !batch.is_empty() {
            let revision = if at != 0 { at } else { revision };
            if tx
                .send(WatchMessage::Changes {
                    revision,
                    events: batch,
                })
                .is_err()
            {
                return;
            }
        }
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
