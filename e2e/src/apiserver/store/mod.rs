//! The object store: every object of every kind, one global resourceVersion counter, and
//! a bounded history of change events that watches (over HTTP or in-process) read from.
//!
//! All writes go through [`Store::mutate`], which runs the caller's decision under the
//! store lock, so read-modify-write (patches, preconditions, finalizers) is atomic and
//! the watch event is in the history before the write is answered.
//!
//! Why one lock over every kind and not a concurrent map (a `DashMap` per kind, as the
//! resource table has per CRD): the API promises one order over all writes, and each
//! piece of it needs the objects, the counter and the history changed as one step.
//! - Versions are one counter across kinds, and the history must hold events in version
//!   order: a watch resumes with a binary search for "after rv N", so a write that took
//!   version 7 but appended after version 8's event would never be delivered.
//! - A list answers its objects with the version they are consistent with, and the
//!   watcher then watches from that version. Were objects in their own map, a list could
//!   hold a write's object yet report the version before it (the watch sends it again)
//!   or report the write's version without its object (the watch never sends it: lost).
//! - The uid index must agree with the objects, or the garbage collector, looking an
//!   owner up by uid, deletes dependents of an owner that exists.
//!
//! Per-kind maps under a global lock for these would take two locks on every write to
//! save one on a `get`; a lock held for microseconds by the emulator's handful of
//! clients is not worth that.

mod history;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::watch;

pub use history::{Event, EventType, Expired, Subscription, Wake};

use crate::apiserver::error::ApiResult;
use crate::apiserver::meta;
use crate::apiserver::patch::apply::Managed;
use crate::apiserver::resources::StorageKey;
use history::History;

/// `(namespace, name)`; the namespace is empty for cluster-scoped objects.
pub type ObjectKey = (String, String);

/// An object as stored, with the ownership record server-side apply needs.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The object in its storage form, `metadata.resourceVersion` and
    /// `metadata.managedFields` included.
    pub object: Value,
    /// Field ownership, from which `managedFields` is rendered.
    pub managed: Managed,
}

/// What a [`Store::mutate`] decision does.
#[derive(Debug)]
pub enum Write {
    /// Store this (create or replace).
    Put(Stored),
    /// Remove the object; the value is its final state, sent with the DELETED event.
    Delete(Value),
    /// Change nothing (a no-op write): no new resourceVersion, no event.
    Keep,
}

/// The result of a committed (or dry-run) write.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The object after the write (the final state for a delete).
    pub object: Value,
    /// The event the write produced, `None` for a no-op.
    pub event: Option<EventType>,
}

#[derive(Debug)]
struct Inner {
    rv: u64,
    objects: HashMap<StorageKey, BTreeMap<ObjectKey, Stored>>,
    /// uid → where the object is, for owner-reference lookups.
    uids: HashMap<String, (StorageKey, ObjectKey)>,
    history: History,
}

/// The shared store. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Store {
    inner: Mutex<Inner>,
    /// The latest resourceVersion, so watches wake up on writes.
    rv_tx: watch::Sender<u64>,
    /// Bumped by [`Store::compact`]: every open watch ends, as when an apiserver restarts.
    epoch_tx: watch::Sender<u64>,
}

impl Store {
    /// An empty store that keeps the last `history_capacity` events for watch resumes.
    pub fn new(history_capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                rv: 0,
                objects: HashMap::new(),
                uids: HashMap::new(),
                history: History::new(history_capacity),
            }),
            rv_tx: watch::channel(0).0,
            epoch_tx: watch::channel(0).0,
        }
    }

    /// The latest resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.inner.lock().rv
    }

    /// One object.
    pub fn get(&self, key: &StorageKey, id: &ObjectKey) -> Option<Stored> {
        self.inner.lock().objects.get(key)?.get(id).cloned()
    }

    /// All objects under `key` (in `namespace`, if given) and the resourceVersion they are
    /// consistent with.
    pub fn list(&self, key: &StorageKey, namespace: Option<&str>) -> (Vec<Value>, u64) {
        let inner = self.inner.lock();
        let objects = inner
            .objects
            .get(key)
            .map(|objects| {
                objects
                    .iter()
                    .filter(|((ns, _), _)| namespace.is_none_or(|want| want == ns))
                    .map(|(_, stored)| stored.object.clone())
                    .collect()
            })
            .unwrap_or_default();
        (objects, inner.rv)
    }

    /// Where the object with `uid` is, if it exists.
    pub fn locate_uid(&self, uid: &str) -> Option<(StorageKey, ObjectKey)> {
        self.inner.lock().uids.get(uid).cloned()
    }

    /// Every object whose ownerReferences name `uid`.
    pub fn dependents_of(&self, uid: &str) -> Vec<(StorageKey, ObjectKey)> {
        self.scan(|obj| meta::owner_uids(obj).iter().any(|u| u == uid))
    }

    /// Every object with at least one ownerReference.
    pub fn owned_objects(&self) -> Vec<(StorageKey, ObjectKey, Vec<String>)> {
        let inner = self.inner.lock();
        let mut out = Vec::new();
        for (key, objects) in &inner.objects {
            for (id, stored) in objects {
                let owners = meta::owner_uids(&stored.object);
                if !owners.is_empty() {
                    out.push((key.clone(), id.clone(), owners));
                }
            }
        }
        out
    }

    /// Every object in `namespace`, of any kind.
    pub fn in_namespace(&self, namespace: &str) -> Vec<(StorageKey, ObjectKey)> {
        let inner = self.inner.lock();
        let mut out = Vec::new();
        for (key, objects) in &inner.objects {
            out.extend(
                objects
                    .keys()
                    .filter(|(ns, _)| ns == namespace)
                    .map(|id| (key.clone(), id.clone())),
            );
        }
        out
    }

    /// Every object under `key`.
    pub fn keys_of(&self, key: &StorageKey) -> Vec<ObjectKey> {
        self.inner
            .lock()
            .objects
            .get(key)
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn scan(&self, wanted: impl Fn(&Value) -> bool) -> Vec<(StorageKey, ObjectKey)> {
        let inner = self.inner.lock();
        let mut out = Vec::new();
        for (key, objects) in &inner.objects {
            out.extend(
                objects
                    .iter()
                    .filter(|(_, s)| wanted(&s.object))
                    .map(|(id, _)| (key.clone(), id.clone())),
            );
        }
        out
    }

    /// Runs `decide` on the current object under the store lock and commits its decision:
    /// a new resourceVersion, the object stored or removed, the event appended to the
    /// history, watches woken. With `dry_run`, nothing is committed.
    pub fn mutate(
        &self,
        key: &StorageKey,
        id: &ObjectKey,
        dry_run: bool,
        decide: impl FnOnce(Option<&Stored>) -> ApiResult<Write>,
    ) -> ApiResult<Committed> {
        let mut inner = self.inner.lock();
        let current = inner.objects.get(key).and_then(|objects| objects.get(id));
        let previous = current.map(|s| s.object.clone());
        let write = decide(current)?;
        if dry_run {
            return Ok(match write {
                Write::Put(stored) => Committed {
                    object: stored.object,
                    event: None,
                },
                Write::Delete(object) => Committed {
                    object,
                    event: None,
                },
                Write::Keep => Committed {
                    object: previous.unwrap_or(Value::Null),
                    event: None,
                },
            });
        }
        let (event_type, mut object) = match write {
            Write::Keep => {
                return Ok(Committed {
                    object: previous.unwrap_or(Value::Null),
                    event: None,
                });
            }
            Write::Put(stored) => {
                let event_type = if previous.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                (event_type, Some(stored))
            }
            Write::Delete(object) => (
                EventType::Deleted,
                Some(Stored {
                    object,
                    managed: Managed::default(),
                }),
            ),
        };
        inner.rv += 1;
        let rv = inner.rv;
        let stored = object.as_mut().expect("set above");
        meta::meta_mut(&mut stored.object).insert("resourceVersion".into(), rv.to_string().into());
        let result = stored.object.clone();
        let uid = meta::uid(&result).map(str::to_string);
        let objects = inner.objects.entry(key.clone()).or_default();
        if event_type == EventType::Deleted {
            objects.remove(id);
            if let Some(uid) = &uid {
                inner.uids.remove(uid);
            }
        } else {
            objects.insert(id.clone(), object.take().expect("set above"));
            if let Some(uid) = uid {
                inner.uids.insert(uid, (key.clone(), id.clone()));
            }
        }
        inner.history.push(Event {
            rv,
            type_: event_type,
            key: key.clone(),
            object: Arc::new(result.clone()),
            previous: previous.map(Arc::new),
        });
        drop(inner);
        self.rv_tx.send_replace(rv);
        Ok(Committed {
            object: result,
            event: Some(event_type),
        })
    }

    /// A subscription to changes after `from_rv` (events of every kind; filter by `key`).
    pub fn subscribe(self: &Arc<Self>, from_rv: u64) -> Subscription {
        Subscription::new(
            self.clone(),
            from_rv,
            self.rv_tx.subscribe(),
            self.epoch_tx.subscribe(),
        )
    }

    /// Events after `cursor`, or `Expired` when some of them are no longer kept.
    pub(crate) fn events_after(&self, cursor: u64) -> Result<Vec<Arc<Event>>, Expired> {
        self.inner.lock().history.after(cursor)
    }

    /// Forgets all history and ends every open watch, as an etcd compaction plus an
    /// apiserver restart would: every client resuming from a version it had seen gets
    /// 410 Expired and must relist. The version moves on by one without an event, as
    /// writes to other keys move it in a real cluster, so that resume points at the
    /// latest version are expired too while a fresh list still yields a valid one.
    pub fn compact(&self) {
        let mut inner = self.inner.lock();
        inner.rv += 1;
        let rv = inner.rv;
        inner.history.compact(rv);
        drop(inner);
        self.rv_tx.send_replace(rv);
        self.epoch_tx.send_modify(|epoch| *epoch += 1);
    }
}
