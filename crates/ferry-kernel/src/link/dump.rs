//! Dumps (RTM_GET… with NLM_F_DUMP), one at a time.
//!
//! The kernel runs one dump per netlink socket: a second dump asked on a socket whose
//! first has not finished is refused with EBUSY (`__netlink_dump_start`). ferryd's tasks
//! share one netlink handle, so a network create listing routes while the periodic check
//! lists links failed now and then with "Device or resource busy". Every dump goes
//! through [`collect`], which holds one lock for the whole dump and reads it to its end:
//! a dump left half-read keeps its socket busy until the connection has drained it.
//!
//! One lock for every socket (the shared handle and the short-lived ones opened inside a
//! sandbox's namespace) is more than the kernel needs, but dumps are short and rare (checks,
//! creates, a start's reconcile), and a lock per socket would need an identity that
//! `rtnetlink::Handle` does not have.

use futures::{Stream, TryStreamExt};
use tokio::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// Every message of the dump that `start` asks for, read while no other dump runs.
pub async fn collect<T, S>(start: impl FnOnce() -> S) -> Result<Vec<T>, rtnetlink::Error>
where
    S: Stream<Item = Result<T, rtnetlink::Error>>,
{
    let _alone = ONE_AT_A_TIME.lock().await;
    start().try_collect().await
}
