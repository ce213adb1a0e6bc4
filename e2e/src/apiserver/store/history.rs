//! The bounded event history and subscriptions to it.

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::watch;

use super::Store;
use crate::apiserver::resources::StorageKey;

/// The kind of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed.
    Deleted,
}

/// One committed change.
#[derive(Debug)]
pub struct Event {
    /// The resourceVersion of the change.
    pub rv: u64,
    /// Created, changed or removed.
    pub type_: EventType,
    /// Which storage it happened in.
    pub key: StorageKey,
    /// The object after the change (for a delete, its final state at the delete's rv).
    pub object: Arc<Value>,
    /// The object before the change: a watch with a selector needs it to tell an object
    /// that stopped matching (sent as DELETED) from one it never saw.
    pub previous: Option<Arc<Value>>,
}

/// The requested resourceVersion is older than the kept history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    /// The oldest resourceVersion a watch can still resume from.
    pub oldest: u64,
}

#[derive(Debug)]
pub(super) struct History {
    events: VecDeque<Arc<Event>>,
    capacity: usize,
    /// Events with rv ≤ this are gone; a resume from an older rv is `Expired`.
    compacted_through: u64,
}

impl History {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            events: VecDeque::new(),
            capacity: capacity.max(1),
            compacted_through: 0,
        }
    }

    pub(super) fn push(&mut self, event: Event) {
        if self.events.len() == self.capacity
            && let Some(dropped) = self.events.pop_front()
        {
            self.compacted_through = dropped.rv;
        }
        self.events.push_back(Arc::new(event));
    }

    pub(super) fn after(&self, cursor: u64) -> Result<Vec<Arc<Event>>, Expired> {
        if cursor < self.compacted_through {
            return Err(Expired {
                oldest: self.compacted_through,
            });
        }
        let start = self.events.partition_point(|e| e.rv <= cursor);
        Ok(self.events.range(start..).cloned().collect())
    }

    pub(super) fn compact(&mut self, through: u64) {
        self.events.clear();
        self.compacted_through = through;
    }
}

/// Why [`Subscription::wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// There may be new events.
    Changed,
    /// The store was compacted: end the watch, the client resumes and learns it is too old.
    Restarted,
}

/// A cursor into the store's history, for watches over HTTP and for in-process
/// controllers (garbage collector now; StatefulSet/kubelet/EndpointSlice emulation later).
#[derive(Debug)]
pub struct Subscription {
    store: Arc<Store>,
    cursor: u64,
    rv_rx: watch::Receiver<u64>,
    epoch_rx: watch::Receiver<u64>,
}

impl Subscription {
    pub(super) fn new(
        store: Arc<Store>,
        cursor: u64,
        rv_rx: watch::Receiver<u64>,
        epoch_rx: watch::Receiver<u64>,
    ) -> Self {
        Self {
            store,
            cursor,
            rv_rx,
            epoch_rx,
        }
    }

    /// The resourceVersion everything up to which has been returned.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Events since the last call (possibly none), advancing the cursor.
    pub fn poll(&mut self) -> Result<Vec<Arc<Event>>, Expired> {
        let events = self.store.events_after(self.cursor)?;
        if let Some(last) = events.last() {
            self.cursor = last.rv;
        }
        Ok(events)
    }

    /// Waits until something was written (or the store restarted). Call `poll` after.
    pub async fn wait(&mut self) -> Wake {
        if self.store.current_rv() > self.cursor {
            return Wake::Changed;
        }
        tokio::select! {
            changed = self.rv_rx.changed() => if changed.is_ok() { Wake::Changed } else { Wake::Restarted },
            _ = self.epoch_rx.changed() => Wake::Restarted,
        }
    }

    /// The next batch of events, waiting for one. `None` when the store restarted.
    pub async fn next_batch(&mut self) -> Option<Result<Vec<Arc<Event>>, Expired>> {
        loop {
            match self.poll() {
                Ok(events) if events.is_empty() => {}
                other => return Some(other),
            }
            if self.wait().await == Wake::Restarted {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(rv: u64) -> Event {
        Event {
            rv,
            type_: EventType::Added,
            key: StorageKey::new("", "x"),
            object: Arc::new(Value::Null),
            previous: None,
        }
    }

    #[test]
    fn resuming_inside_the_kept_history_returns_the_rest() {
        let mut history = History::new(3);
        (1..=5).for_each(|rv| history.push(event(rv)));
        let rvs: Vec<u64> = history.after(2).unwrap().iter().map(|e| e.rv).collect();
        assert_eq!(rvs, vec![3, 4, 5]);
    }

    #[test]
    fn resuming_before_the_kept_history_is_expired() {
        let mut history = History::new(3);
        (1..=5).for_each(|rv| history.push(event(rv)));
        assert_eq!(history.after(1).unwrap_err(), Expired { oldest: 2 });
    }

    #[test]
    fn after_compaction_only_the_newest_version_resumes() {
        let mut history = History::new(10);
        (1..=5).for_each(|rv| history.push(event(rv)));
        history.compact(5);
        assert!(history.after(4).is_err());
        assert!(history.after(5).unwrap().is_empty());
    }
}
