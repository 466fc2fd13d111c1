//! The embedded engines' watch: every committed revision is published here, kept in a
//! bounded history, and sent to every watcher whose prefix it touches. History starts
//! when the store is opened (the redb file keeps no change log), so a watch from a
//! revision before that is told it was compacted and resyncs from a range, exactly as an
//! etcd watcher past compaction does.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

use crate::{Revision, WatchEvent, WatchMessage, Watcher};

/// How many revisions of history are kept for watches that start in the past.
const HISTORY: usize = 10_000;

pub(crate) struct Hub {
    inner: Mutex<Inner>,
}

struct Inner {
    /// The oldest revision a watch may start from.
    floor: Revision,
    history: VecDeque<(Revision, Vec<WatchEvent>)>,
    watchers: Vec<Subscriber>,
}

struct Subscriber {
    prefix: String,
    from: Revision,
    tx: UnboundedSender<WatchMessage>,
}

impl Subscriber {
    /// Send the part of one revision this watcher asked for; false once it is gone.
    fn send(&self, revision: Revision, events: &[WatchEvent]) -> bool {
        if revision < self.from {
            return true;
        }
        let mine: Vec<WatchEvent> = events
            .iter()
            .filter(|e| e.key().starts_with(&self.prefix))
            .cloned()
            .collect();
        if mine.is_empty() {
            return !self.tx.is_closed();
        }
        self.tx
            .send(WatchMessage::Changes {
                revision,
                events: mine,
            })
            .is_ok()
    }
}

impl Hub {
    /// A hub for a store whose revision is `current` now.
    pub(crate) fn new(current: Revision) -> Hub {
        Hub {
            inner: Mutex::new(Inner {
                floor: current + 1,
                history: VecDeque::new(),
                watchers: Vec::new(),
            }),
        }
    }

    /// Called by the engine, in revision order, for every revision that changed something.
    pub(crate) fn publish(&self, revision: Revision, events: Vec<WatchEvent>) {
        if events.is_empty() {
            return;
        }
        let mut inner = self.inner.lock().expect("watch hub");
        inner.watchers.retain(|w| w.send(revision, &events));
        inner.history.push_back((revision, events));
        if inner.history.len() > HISTORY {
            inner.history.pop_front();
            inner.floor = inner.history.front().map_or(revision + 1, |(r, _)| *r);
        }
    }

    pub(crate) fn subscribe(&self, prefix: &str, from: Revision) -> Watcher {
        let (tx, rx) = unbounded_channel();
        let mut inner = self.inner.lock().expect("watch hub");
        if from < inner.floor {
            let _ = tx.send(WatchMessage::Compacted {
                compact_revision: inner.floor,
            });
            return Watcher::new(rx, None);
        }
        let sub = Subscriber {
            prefix: prefix.to_string(),
            from,
            tx,
        };
        for (revision, events) in &inner.history {
            sub.send(*revision, events);
        }
        inner.watchers.push(sub);
        Watcher::new(rx, None)
    }

    pub(crate) fn compact(&self, revision: Revision) {
        let mut inner = self.inner.lock().expect("watch hub");
        inner.floor = inner.floor.max(revision);
        while inner.history.front().is_some_and(|(r, _)| *r < revision) {
            inner.history.pop_front();
        }
    }
}
