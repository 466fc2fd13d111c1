//! The task that sends the `ReleaseAddress` calls [`crate::plughost::PlugHost::sweep`]
//! queues, each in its sandbox's turn.

use ferry_kernel::KernelOps;

use crate::ops::Daemon;

/// Send the queued `ReleaseAddress` calls, for ferryd's life.
pub fn release_leases<K: KernelOps>(d: std::sync::Arc<Daemon<K>>) {
    d.plughost.load_leases(&d.cfg.plughost);
    tokio::spawn(async move {
        loop {
            for l in d.plughost.next_releases().await {
                // After the sandbox's teardown, as dockerd orders it (Leave,
                // DeleteEndpoint, then ReleaseAddress: `P:p20`): the operation that freed
                // the address holds the sandbox's turn until its links are gone.
                let turn = d.sandbox_locks.lock(&l.owner).await;
                d.release_address(&l.driver, &l.pool_id, l.ip.into()).await;
                drop(turn);
                if !d.state.lock().await.sandboxes.contains_key(&l.owner) {
                    d.sandbox_locks.forget(&l.owner);
                }
            }
        }
    });
}
