//! Background deletion of retired veth pairs (why and how they are retired: link/retire.rs).
//!
//! A netlink request runs in the kernel inside the sender's `sendto`: a veth deletion
//! keeps the sending thread there for 15–20 ms. So the reaper is one thread of its own,
//! started with [`crate::Netlink`], with a current-thread runtime and a netlink socket of
//! its own in the same namespace: while it waits on the kernel, ferryd's tokio workers and
//! its shared netlink socket serve the next requests. Each time it wakes it takes every
//! deletion queued so far and deletes them with one request by link group (retired host
//! ends are in [`grave_group`]): the kernel unregisters them as one batch, so a burst of
//! detaches waits for the kernel's RCU grace periods once, not once per pair. Should the
//! kernel refuse that, it deletes them one by one by their reserved names (never reused
//! while a pair exists). [`Reaper::settle`] waits until
//! every deletion handed over so far is done; if ferryd stops first, the retired pairs are
//! `fy*` links the store does not know, and reconcile deletes them at the next start.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::link::del;
use crate::link::retire::grave_group;

/// Delete the retired links `batch` (and any other link in the grave group).
async fn reap(handle: &rtnetlink::Handle, batch: &[String]) {
    let Err(e) = del::delete_group(handle, grave_group()).await else {
        return;
    };
    tracing::debug!("background delete: {e}; deleting one by one");
    for name in batch {
        if let Err(e) = del::delete(handle, name).await {
            tracing::warn!("background delete: {e}; reconcile will remove it");
        }
    }
}

pub struct Reaper {
    tx: mpsc::UnboundedSender<String>,
    pending: watch::Sender<usize>,
}

impl Reaper {
    /// Start the reaper thread in the calling thread's network namespace; None if its
    /// runtime or socket cannot be made (deletions then stay synchronous).
    pub fn start() -> Option<Reaper> {
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let (pending, _) = watch::channel(0usize);
        let done = pending.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("ferry-reaper".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(_) => {
                        let _ = ready_tx.send(false);
                        return;
                    }
                };
                rt.block_on(async move {
                    let handle = match crate::rtnl::connect() {
                        Ok((conn, handle)) => {
                            tokio::spawn(conn);
                            handle
                        }
                        Err(_) => {
                            let _ = ready_tx.send(false);
                            return;
                        }
                    };
                    let _ = ready_tx.send(true);
                    while let Some(first) = rx.recv().await {
                        let mut batch = vec![first];
                        while let Ok(name) = rx.try_recv() {
                            batch.push(name);
                        }
                        reap(&handle, &batch).await;
                        done.send_modify(|n| *n = n.saturating_sub(batch.len()));
                    }
                });
            })
            .ok()?;
        ready_rx
            .recv()
            .ok()
            .filter(|ok| *ok)
            .map(|_| Reaper { tx, pending })
    }

    /// Queue the deletion of the retired link `name`; false if the reaper is gone (the
    /// caller then deletes it itself).
    pub fn hand_over(&self, name: String) -> bool {
        self.pending.send_modify(|n| *n += 1);
        if self.tx.send(name).is_err() {
            self.pending.send_modify(|n| *n = n.saturating_sub(1));
            return false;
        }
        true
    }

    /// Deletions handed over and not finished yet.
    pub fn pending(&self) -> usize {
        *self.pending.borrow()
    }

    /// Wait until every deletion handed over so far is done, at most `limit`; true if
    /// none is left.
    pub async fn settle(&self, limit: Duration) -> bool {
        let mut rx = self.pending.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|n| *n == 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}
