//! Copies of writes to a key's other owners, in the order the writes happened here.
//!
//! One queue per peer: a write takes the key's state from the store and queues it in
//! one step under the queue's lock, so a peer receives the states of a key in the
//! order the store went through them (a set's copy never lands after the delete that
//! followed it, which would bring the key back there). One task per peer sends what
//! is queued in batches, so ordering costs no throughput; the queue is bounded, so
//! `--write-ack one` cannot pile up copies without limit.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use kcache_client::proto::{ReplicateRequest, VersionedEntry, peer_client::PeerClient};
use parking_lot::Mutex;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};

use super::peers::{BATCH, BATCH_BYTES, PeerPool, to_proto};
use crate::metrics::Metrics;
use crate::store::{Store, Versioned};

/// Copies one peer may have queued: about a second of writes at a busy node's rate;
/// beyond it writes wait for the peer rather than grow the queue.
const QUEUE_LIMIT: usize = 65_536;
/// Deadline of one batch: peers answer in microseconds, so a second means trouble.
const BATCH_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a write waits for a suspect peer: enough for one that recovered (peers
/// answer in milliseconds), so an acknowledged write is on it again, too short for a
/// frozen one to slow every write.
const SUSPECT_WAIT: Duration = Duration::from_millis(50);

/// The per-peer queues.
#[derive(Debug, Default)]
pub struct Replicator {
    /// Every replicated write looks its peers' queues up here, from every worker.
    queues: DashMap<String, Arc<Queue>>,
}

#[derive(Debug)]
struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    queued: Notify,
    room: Arc<Semaphore>,
}

#[derive(Debug)]
struct Job {
    entry: VersionedEntry,
    done: Option<oneshot::Sender<bool>>,
    _room: OwnedSemaphorePermit,
}

/// Who sends, to whom, through what.
#[derive(Debug)]
pub struct Route<'a> {
    pub peers: &'a PeerPool,
    pub me: &'a str,
    pub metrics: &'a Metrics,
}

impl Replicator {
    /// Queues the key's current state in `store` (or its deletion) for each of
    /// `addresses`; with `wait`, returns once every peer applied it or failed to,
    /// waiting no more than [`SUSPECT_WAIT`] for a peer whose last batch failed within
    /// [`SUSPECT`](super::peers::SUSPECT). Returns how many peers did not take it in time (only known when
    /// waiting).
    pub async fn copy(
        &self,
        route: Route<'_>,
        store: &Store,
        key: &Bytes,
        addresses: &[&str],
        wait: bool,
    ) -> usize {
        let mut pending = Vec::new();
        for address in addresses {
            let queue = self.queue(&route, address);
            let room = queue.room.clone().acquire_owned().await;
            let Ok(room) = room else { continue };
            let (done, finished) = oneshot::channel();
            // A suspect peer's copies still queue, in order, but a frozen or cut-off
            // replica would otherwise cost every write the full replication wait.
            let patience = route
                .peers
                .suspects()
                .suspect(address)
                .then_some(SUSPECT_WAIT);
            {
                let mut jobs = queue.jobs.lock();
                jobs.push_back(Job {
                    entry: state(store, key),
                    done: wait.then_some(done),
                    _room: room,
                });
            }
            queue.queued.notify_one();
            pending.push((finished, patience));
        }
        if !wait {
            return 0;
        }
        let mut failed = 0;
        for (finished, patience) in pending {
            let applied = match patience {
                Some(limit) => tokio::time::timeout(limit, finished)
                    .await
                    .is_ok_and(|r| r.unwrap_or(false)),
                None => finished.await.unwrap_or(false),
            };
            failed += usize::from(!applied);
        }
        failed
    }

    /// Stops the queues of addresses no longer in use (once they are sent).
    pub fn retain(&self, addresses: &[&str]) {
        self.queues.retain(|address, queue| {
            let keep = addresses.contains(&address.as_str());
            if !keep {
                queue.room.close();
                queue.queued.notify_one();
            }
            keep
        });
    }

    fn queue(&self, route: &Route<'_>, address: &str) -> Arc<Queue> {
        if let Some(queue) = self.queues.get(address) {
            return queue.clone();
        }
        self.queues
            .entry(address.to_owned())
            .or_insert_with(|| {
                let queue = Arc::new(Queue {
                    jobs: Mutex::new(VecDeque::new()),
                    queued: Notify::new(),
                    room: Arc::new(Semaphore::new(QUEUE_LIMIT)),
                });
                let (me, metrics) = (route.me.to_owned(), route.metrics.clone());
                let peer = (route.peers.clone(), address.to_owned());
                tokio::spawn(send(queue.clone(), peer, me, metrics));
                queue
            })
            .clone()
    }
}

/// The key's state as the store holds it now: its entry, or its deletion at the
/// version of its tombstone (a fresh one, above the entry it removed, if none).
fn state(store: &Store, key: &Bytes) -> VersionedEntry {
    match store.peek(key) {
        Some(entry) => to_proto(Versioned {
            key: key.clone(),
            value: entry.value,
            version: entry.version,
            ttl_ms: entry.ttl_ms,
        }),
        None => VersionedEntry {
            key: key.clone(),
            version: store.tombstone(key).unwrap_or_else(|| store.next_version()),
            deleted: true,
            ..VersionedEntry::default()
        },
    }
}

/// Sends a peer's queue in order, a batch at a time, until the queue is closed and
/// empty.
async fn send(
    queue: Arc<Queue>,
    (peers, address): (PeerPool, String),
    me: String,
    metrics: Metrics,
) {
    let suspects = peers.suspects().clone();
    loop {
        let batch = take_batch(&queue);
        if batch.is_empty() {
            if queue.room.is_closed() {
                // The address left the view (`retain`); the last batches may have
                // dialled it again through the pool: let that connection go too.
                peers.forget(&address);
                return;
            }
            queue.queued.notified().await;
            continue;
        }
        let mut request = tonic::Request::new(ReplicateRequest {
            entries: batch.iter().map(|job| job.entry.clone()).collect(),
            from: me.clone(),
        });
        request.set_timeout(BATCH_TIMEOUT);
        // The pool's current connection: one a call timed out on is replaced there.
        let connection = peers.channel(&address);
        let applied = match PeerClient::new(connection.clone()).replicate(request).await {
            Ok(_) => {
                suspects.answered(&address);
                true
            }
            Err(status) => {
                // Refused credentials are a configuration to fix, not a passing fault.
                if status.code() == tonic::Code::Unauthenticated {
                    tracing::warn!(%status, entries = batch.len(), %address, "replication refused");
                } else {
                    tracing::debug!(%status, entries = batch.len(), "replication failed");
                }
                metrics.replication_error();
                suspects.failed(&address);
                if kcache_client::timed_out(&status) {
                    // The connection may be stuck behind TCP retransmissions (a
                    // partition that healed): the next batch dials a new one.
                    peers.reset(&address, &connection);
                }
                false
            }
        };
        for job in batch {
            if let Some(done) = job.done {
                let _ = done.send(applied);
            }
        }
    }
}

/// Up to a batch of the oldest queued copies.
fn take_batch(queue: &Queue) -> Vec<Job> {
    let mut jobs = queue.jobs.lock();
    let mut batch = Vec::new();
    let mut bytes = 0;
    while let Some(job) = jobs.front() {
        let size = job.entry.key.len() + job.entry.value.len();
        if batch.len() == BATCH || !batch.is_empty() && bytes + size > BATCH_BYTES {
            break;
        }
        bytes += size;
        batch.extend(jobs.pop_front());
    }
    batch
}
