//! Where an attach or a wait begins. The docker CLI starts the sandbox once it has the
//! answer to its attach (the 101) or its wait (the headers), so what the stream or the
//! wait compares against — the sandbox's start, whether it runs, the exits to come —
//! is taken in the handler, before that answer: a run that starts (and even ends) at
//! once is then the run after the mark, never taken for the one before it.

use ferry_core::model::Sandbox;
use ferry_kernel::KernelOps;
use tokio::sync::broadcast;

use crate::ops::Daemon;

pub(super) struct Mark {
    /// The exits from the mark on.
    pub(super) exits: broadcast::Receiver<(String, i32)>,
    first_start: Option<String>,
    /// The sandbox ran at the mark.
    pub(super) running: bool,
}

impl Mark {
    pub(super) async fn take<K: KernelOps>(d: &Daemon<K>, id: &str) -> Mark {
        let exits = d.exits.subscribe();
        let st = d.state.lock().await;
        let sb = st.sandboxes.get(id);
        Mark {
            exits,
            first_start: sb.and_then(|s| s.started_at.clone()),
            running: sb.is_some_and(|s| s.is_running()),
        }
    }

    /// `sb` has started since the mark.
    pub(super) fn started_since(&self, sb: &Sandbox) -> bool {
        sb.started_at != self.first_start
    }
}
