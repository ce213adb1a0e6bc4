//! Watches: a filtered, in-order view of the store's history for one resource, namespace
//! and selector, as both the HTTP watch endpoint and in-process controllers consume it.

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::Value;

use super::{Cluster, to_served};
use crate::apiserver::error::ApiError;
use crate::apiserver::meta;
use crate::apiserver::resources::ResourceType;
use crate::apiserver::select::Selectors;
use crate::apiserver::store::{Event, EventType, Subscription, Wake};

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// With ADDED events for every current object (`resourceVersion` unset or `0`).
    /// `initial_events_end`: then a BOOKMARK annotated `k8s.io/initial-events-end`
    /// (`sendInitialEvents=true`, the streaming list).
    Snapshot {
        /// Whether to mark the end of the initial events with a bookmark.
        initial_events_end: bool,
    },
    /// With the changes after this resourceVersion.
    After(u64),
}

/// One item of a watch stream.
#[derive(Debug, Clone)]
pub enum Item {
    /// ADDED, MODIFIED or DELETED with the object (served form).
    Event(&'static str, Value),
    /// A BOOKMARK at this resourceVersion.
    Bookmark {
        /// The resourceVersion everything up to which was sent.
        rv: u64,
        /// Whether this bookmark ends a streaming list's initial events.
        initial_events_end: bool,
    },
    /// An ERROR (then the stream ends): the resume point is too old.
    Error(ApiError),
}

/// A running watch.
#[derive(Debug)]
pub struct Watch {
    rt: Arc<ResourceType>,
    namespace: Option<String>,
    selectors: Selectors,
    subscription: Subscription,
    pending: VecDeque<Item>,
    requested: u64,
    done: bool,
}

impl Cluster {
    /// Starts a watch of `rt` objects in `namespace` (all if `None`) matching `selectors`.
    pub fn watch(
        &self,
        rt: Arc<ResourceType>,
        namespace: Option<&str>,
        selectors: Selectors,
        start: Start,
    ) -> Watch {
        let mut pending = VecDeque::new();
        let (from, requested) = match start {
            Start::After(rv) => (rv, rv),
            Start::Snapshot { initial_events_end } => {
                let (items, rv) = self.list(&rt, namespace, &selectors);
                pending.extend(items.into_iter().map(|o| Item::Event("ADDED", o)));
                if initial_events_end {
                    pending.push_back(Item::Bookmark {
                        rv,
                        initial_events_end: true,
                    });
                }
                (rv, rv)
            }
        };
        let subscription = self.store.subscribe(from);
        Watch {
            rt,
            namespace: namespace.map(str::to_string),
            selectors,
            subscription,
            pending,
            requested,
            done: false,
        }
    }
}

impl Watch {
    /// The resourceVersion up to which every change has been considered; a bookmark at
    /// this version is truthful.
    pub fn cursor(&self) -> u64 {
        self.subscription.cursor()
    }

    /// The next item; `None` when the stream is over (after an ERROR, or when the
    /// server restarted its watches). Cancel-safe: it only awaits between items.
    pub async fn next(&mut self) -> Option<Item> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                if matches!(item, Item::Error(_)) {
                    self.done = true;
                }
                return Some(item);
            }
            if self.done {
                return None;
            }
            match self.subscription.poll() {
                Err(expired) => {
                    let message = format!(
                        "too old resource version: {} ({})",
                        self.requested, expired.oldest
                    );
                    self.pending
                        .push_back(Item::Error(ApiError::expired(message)));
                }
                Ok(events) if !events.is_empty() => {
                    for event in events {
                        if let Some(item) = self.filter(&event) {
                            self.pending.push_back(item);
                        }
                    }
                }
                Ok(_) => {
                    if self.subscription.wait().await == Wake::Restarted {
                        self.done = true;
                    }
                }
            }
        }
    }

    /// The item a store event is for this watch, if any. An object that starts matching
    /// arrives as ADDED, one that stops matching as DELETED, as the real server sends.
    fn filter(&self, event: &Event) -> Option<Item> {
        if event.key != self.rt.storage {
            return None;
        }
        let object = to_served(&self.rt, &event.object);
        let in_scope = |obj: &Value| {
            self.namespace
                .as_deref()
                .is_none_or(|ns| meta::namespace(obj) == Some(ns))
        };
        let matches = |obj: &Value| in_scope(obj) && self.selectors.matches(obj);
        let now = matches(&object);
        let before = event
            .previous
            .as_deref()
            .map(|p| to_served(&self.rt, p))
            .is_some_and(|p| matches(&p));
        let type_ = match (event.type_, before, now) {
            (EventType::Added, _, true) => "ADDED",
            (EventType::Deleted, _, true) => "DELETED",
            (EventType::Modified, true, true) => "MODIFIED",
            (EventType::Modified, false, true) => "ADDED",
            (EventType::Modified, true, false) => "DELETED",
            _ => return None,
        };
        Some(Item::Event(type_, object))
    }
}
