//! Handoff: when the member set changes, every node streams the entries whose owner
//! set gained a member to that member, then drops the entries it no longer owns. A
//! draining node is a membership change of its own (it places keys without itself),
//! so scale-down and rolling restarts go through the same path. A restarted member of
//! a static cluster asks its peers for its entries (`sync_from_peers`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kcache_client::placement::View;
use kcache_client::proto::{ReplicateRequest, ReplicateResponse, SyncRequest};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::Cluster;
use super::peers::{BATCH, BATCH_BYTES, apply, deleted, to_proto};
use crate::metrics::Metrics;
use crate::store::{ScanCursor, Store, Versioned};

/// Membership changes often come in bursts (a StatefulSet scaling by several pods);
/// waiting this long after a change lets one handoff cover the burst.
const SETTLE: Duration = Duration::from_millis(250);
/// Attempts of one handoff pass before each further failure is a warning.
const ATTEMPTS: u32 = 5;
/// First pause between attempts, doubled each time up to [`MAX_BACKOFF`].
const BACKOFF: Duration = Duration::from_millis(200);
/// The longest pause between attempts of a pass a peer keeps failing: retries cost a
/// scan of the store, and a peer down this long is rarely back sooner.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a peer may take to accept a message of a handoff, or to answer its end:
/// peers take a batch in milliseconds, so a peer silent this long is frozen (stopped,
/// cut off), and that attempt gives up on it (the next attempt tries again) instead of
/// holding every later change up.
const STALL: Duration = Duration::from_secs(5);

/// Outcome of one handoff pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Handoff {
    pub sent: u64,
    pub bytes: u64,
    pub dropped: u64,
    pub failed_targets: usize,
}

/// Moves entries for a change from `old` to `new` placement, in two passes over the
/// store. First, entries this node keeps owning are streamed to members that newly
/// own them too (new replicas). Then entries this node no longer owns are sent to
/// their owners and removed here once acknowledged; doing that last also catches
/// writes that reached this node while the change was spreading.
///
/// `done` holds the addresses an earlier attempt of this pass already streamed to:
/// they are skipped (writes since then reached them by replication), and the targets
/// this attempt completes are added.
pub async fn hand_off(
    store: &Arc<Store>,
    cluster: &Cluster,
    old: &View,
    new: &View,
    done: &mut HashSet<String>,
) -> Handoff {
    let r = cluster.replication;
    let me = cluster.me.id.as_str();
    let mut streams: HashMap<String, PeerStream> = HashMap::new();
    let mut outcome = Handoff::default();
    let mut cursor = Some(ScanCursor::default());
    while let Some(at) = cursor {
        let (batch, next) = store.scan(at, BATCH, BATCH_BYTES);
        cursor = next;
        let mut per_target: HashMap<&str, Vec<_>> = HashMap::new();
        for entry in &batch {
            let owners = new.owners(&entry.key, r);
            if !owners.iter().any(|o| o.id == me) {
                continue; // the second pass moves it
            }
            let old_owners = old.owners(&entry.key, r);
            for owner in owners {
                if owner.id != me
                    && !old_owners.iter().any(|o| o.id == owner.id)
                    && !done.contains(&owner.address)
                {
                    per_target
                        .entry(owner.address.as_str())
                        .or_default()
                        .push(entry.clone());
                }
            }
        }
        for (address, entries) in per_target {
            outcome.count(&entries);
            let stream = streams
                .entry(address.to_owned())
                .or_insert_with(|| PeerStream::open(cluster, address));
            if stream.stalled {
                continue; // this attempt failed that peer already
            }
            let message = ReplicateRequest {
                entries: entries.into_iter().map(to_proto).collect(),
                from: me.to_owned(),
            };
            // A closed stream shows up as a failure when it is finished below; a
            // message the peer did not take in time fails the stream.
            if tokio::time::timeout(STALL, stream.tx.send(message))
                .await
                .is_err()
            {
                stream.stalled = true;
            }
        }
    }
    // Deletes travel with the entries: a new owner that learns of a key from another
    // copy (an owner that missed the delete) must refuse it.
    for batch in store.tombstones() {
        let mut per_target: HashMap<&str, Vec<_>> = HashMap::new();
        for tomb in &batch {
            let owners = new.owners(&tomb.key, r);
            let old_owners = old.owners(&tomb.key, r);
            let mine = owners.iter().any(|o| o.id == me);
            for owner in owners {
                let new_owner = !old_owners.iter().any(|o| o.id == owner.id);
                if owner.id != me && (new_owner || !mine) && !done.contains(&owner.address) {
                    per_target
                        .entry(owner.address.as_str())
                        .or_default()
                        .push(deleted(tomb));
                }
            }
        }
        for (address, entries) in per_target {
            let stream = streams
                .entry(address.to_owned())
                .or_insert_with(|| PeerStream::open(cluster, address));
            if stream.stalled {
                continue;
            }
            let message = ReplicateRequest {
                entries,
                from: me.to_owned(),
            };
            if tokio::time::timeout(STALL, stream.tx.send(message))
                .await
                .is_err()
            {
                stream.stalled = true;
            }
        }
    }
    for (address, stream) in streams {
        match stream.finish().await {
            Ok(_) => {
                done.insert(address);
            }
            Err(err) => {
                tracing::warn!(peer = %address, %err, "handoff failed");
                outcome.failed_targets += 1;
            }
        }
    }
    move_unowned(store, cluster, new, &mut outcome).await;
    outcome
}

impl Handoff {
    fn count(&mut self, entries: &[Versioned]) {
        self.sent += entries.len() as u64;
        self.bytes += entries
            .iter()
            .map(|e| (e.key.len() + e.value.len()) as u64)
            .sum::<u64>();
    }
}

/// Hands the entries this node holds but does not own in the current view to their
/// owners, and drops them here: entries that reached it after its own handoff pass
/// for a change had scanned past them (another member's pass for an older placement
/// still sending) would otherwise stay as extra, aging copies until the next change.
/// Run when membership is still.
pub async fn tidy(store: &Store, cluster: &Cluster) -> Handoff {
    let mut outcome = Handoff::default();
    let view = cluster.view();
    // Most rounds find nothing to move: look at keys alone before copying values.
    let me = cluster.me.id.as_str();
    let mut cursor = Some(ScanCursor::default());
    let mut unowned = false;
    while let (Some(at), false) = (cursor, unowned) {
        let (batch, next) = store.scan_versions(at, BATCH);
        cursor = next;
        unowned = batch.iter().any(|(key, _)| {
            !view
                .owners(key, cluster.replication)
                .iter()
                .any(|m| m.id == me)
        });
    }
    if unowned {
        move_unowned(store, cluster, &view, &mut outcome).await;
    }
    outcome
}

/// Sends the entries `view` places elsewhere to all their owners and removes them
/// here once every owner acknowledged (and only if unchanged since the scan).
async fn move_unowned(store: &Store, cluster: &Cluster, view: &View, outcome: &mut Handoff) {
    let me = cluster.me.id.as_str();
    let mut cursor = Some(ScanCursor::default());
    while let Some(at) = cursor {
        let (batch, next) = store.scan(at, BATCH, BATCH_BYTES);
        cursor = next;
        let mut per_target: HashMap<&str, Vec<Versioned>> = HashMap::new();
        let mut leaving = Vec::new();
        for entry in batch {
            let owners = view.owners(&entry.key, cluster.replication);
            if owners.iter().any(|m| m.id == me) {
                continue;
            }
            for owner in owners {
                per_target
                    .entry(owner.address.as_str())
                    .or_default()
                    .push(entry.clone());
            }
            leaving.push(entry);
        }
        let mut failed: Vec<&str> = Vec::new();
        for (address, entries) in &per_target {
            outcome.count(entries);
            let request = ReplicateRequest {
                entries: entries.iter().cloned().map(to_proto).collect(),
                from: me.to_owned(),
            };
            let mut request = tonic::Request::new(request);
            request.set_timeout(STALL);
            if let Err(status) = cluster.peers.peer(address).replicate(request).await {
                tracing::warn!(peer = %address, %status, "handoff failed");
                failed.push(address);
            }
        }
        outcome.failed_targets += failed.len();
        for entry in leaving {
            let delivered = view
                .owners(&entry.key, cluster.replication)
                .iter()
                .all(|o| !failed.contains(&o.address.as_str()));
            if delivered && store.forget(&entry.key, entry.version) {
                outcome.dropped += 1;
            }
        }
    }
}

/// A client stream of entries to one peer; the channel bounds what is in flight.
struct PeerStream {
    tx: mpsc::Sender<ReplicateRequest>,
    call: JoinHandle<Result<ReplicateResponse, tonic::Status>>,
    /// A message was dropped because the peer did not take it within [`STALL`].
    stalled: bool,
}

impl PeerStream {
    fn open(cluster: &Cluster, address: &str) -> Self {
        let (tx, rx) = mpsc::channel(4);
        let mut peer = cluster.peers.peer(address);
        let call = tokio::spawn(async move {
            peer.handoff(ReceiverStream::new(rx))
                .await
                .map(tonic::Response::into_inner)
        });
        Self {
            tx,
            call,
            stalled: false,
        }
    }

    async fn finish(self) -> Result<ReplicateResponse, String> {
        drop(self.tx);
        let call = self.call.abort_handle();
        if self.stalled {
            call.abort();
            return Err(format!("the peer took no message in {STALL:?}"));
        }
        match tokio::time::timeout(STALL, self.call).await {
            Ok(Ok(Ok(reply))) => Ok(reply),
            Ok(Ok(Err(status))) => Err(status.to_string()),
            Ok(Err(join)) => Err(join.to_string()),
            Err(_) => {
                call.abort();
                Err(format!("no answer in {STALL:?}"))
            }
        }
    }
}

/// How a handoff pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Passed {
    Completed,
    /// Membership (or this node's drain) moved on first: the next pass is over the
    /// newer placement, at once.
    Moved,
    Stopped,
}

/// Runs one handoff pass until it completes, however long a peer stays frozen or cut
/// off: a pass given up would leave that peer without the entries it now owns until
/// the next change, and once its read-through window closed it would serve misses and
/// count increments from nothing. Each attempt streams only to the targets no earlier
/// attempt completed, so healthy ones are not sent their share again.
async fn pass(
    store: &Arc<Store>,
    cluster: &Cluster,
    metrics: &Metrics,
    (old, new): (&View, &View),
    events: &mut Events,
) -> Passed {
    let mut backoff = BACKOFF;
    let mut attempt: u32 = 0;
    let mut done = HashSet::new();
    loop {
        attempt = attempt.saturating_add(1);
        let started = Instant::now();
        let outcome = hand_off(store, cluster, old, new, &mut done).await;
        metrics.handoff(outcome.sent, outcome.bytes, started.elapsed());
        tracing::info!(
            attempt,
            sent = outcome.sent,
            dropped = outcome.dropped,
            failed_targets = outcome.failed_targets,
            elapsed_ms = started.elapsed().as_millis() as u64,
            members = new.len(),
            "handoff pass"
        );
        if outcome.failed_targets == 0 {
            return Passed::Completed;
        }
        if cluster.view().epoch() != new.epoch() {
            return Passed::Moved;
        }
        if attempt >= ATTEMPTS {
            tracing::warn!(
                attempt,
                failed_targets = outcome.failed_targets,
                retry_in_ms = backoff.as_millis() as u64,
                "handoff incomplete; retrying until it completes or membership changes"
            );
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            changed = events.views.changed() => {
                return if changed.is_err() { Passed::Stopped } else { Passed::Moved };
            }
            changed = events.drain.changed() => {
                return if changed.is_err() { Passed::Stopped } else { Passed::Moved };
            }
            _ = events.stop.changed() => return Passed::Stopped,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// What ends a wait of the handoff loop.
struct Events {
    views: watch::Receiver<Arc<View>>,
    drain: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
}

/// Watches the membership (and this node's drain) and hands entries off on every
/// change, until `stop`. `placed` reports the epoch of the view whose handoff last
/// completed (a drain waits for its own).
pub async fn run(
    store: Arc<Store>,
    cluster: Arc<Cluster>,
    metrics: Metrics,
    stop: watch::Receiver<bool>,
    placed_epoch: watch::Sender<u64>,
) {
    let mut events = Events {
        views: cluster.subscribe(),
        drain: cluster.drain_events(),
        stop,
    };
    let mut placed = cluster.view();
    metrics.set_members(placed.len());
    cluster.moved(Some(Arc::new(cluster.others())));
    // Until the first change is placed, `placed` is this node alone, a view no member
    // ever served: keys were on the others then.
    let mut joining = true;
    // A change a pass was interrupted by, not yet handed off.
    let mut pending = false;
    loop {
        if !std::mem::take(&mut pending) {
            tokio::select! {
                changed = events.views.changed() => if changed.is_err() { return },
                changed = events.drain.changed() => if changed.is_err() { return },
                _ = events.stop.changed() => return,
            }
        }
        // Even a change that leaves this node's placement as it was (its own endpoint
        // turning ready) starts the others' handoffs to it.
        cluster.moved(None);
        tokio::time::sleep(SETTLE).await;
        // Changes so far are in the view read next: they need no wake-up of their own.
        events.views.borrow_and_update();
        events.drain.borrow_and_update();
        let next = cluster.view();
        metrics.set_members(next.len());
        let first = std::mem::replace(&mut joining, false);
        if next.epoch() == placed.epoch() {
            continue;
        }
        let addresses: Vec<&str> = next.members().iter().map(|m| m.address.as_str()).collect();
        cluster.peers.retain(&addresses);
        cluster.replicas.retain(&addresses);
        let previous = if first {
            // The members as this node found them at its start (the endpoints before
            // it joined): in a burst of joins, a fellow joiner in `next` holds only a
            // synced copy. A node that started seeing nobody takes the others now.
            let before = placed.without(&cluster.me.id);
            Arc::new(if before.is_empty() {
                next.without(&cluster.me.id)
            } else {
                before
            })
        } else {
            placed.clone()
        };
        cluster.moved(Some(previous));
        let passed = pass(&store, &cluster, &metrics, (&placed, &next), &mut events).await;
        cluster.moved(None);
        match passed {
            Passed::Completed => {
                placed_epoch.send_replace(next.epoch());
                placed = next;
            }
            Passed::Moved => pending = true,
            Passed::Stopped => return,
        }
    }
}

/// Asks every other member for the entries this node owns, before it turns ready: a
/// restarted member of a static cluster gets no handoff at all (membership does not
/// change), and a Kubernetes one gets it only once it is an endpoint, after it turned
/// ready.
pub async fn sync_from_peers(store: &Store, cluster: &Cluster) -> u64 {
    let view = cluster.view();
    let calls = view
        .members()
        .iter()
        .filter(|m| m.id != cluster.me.id)
        .map(|m| {
            let max_value = store.limits().max_value_size + store.limits().max_key_size;
            let mut peer = cluster.peers.peer_receiving(&m.address, max_value);
            let request = SyncRequest {
                member_id: cluster.me.id.clone(),
            };
            async move {
                let mut applied = 0;
                // Each message within STALL, not the whole stream: a big store takes
                // long to sync, a frozen peer does not get to hold this one up.
                let mut stream = match tokio::time::timeout(STALL, peer.sync(request)).await {
                    Ok(Ok(reply)) => reply.into_inner(),
                    Ok(Err(status)) => {
                        tracing::debug!(%status, "sync: peer unavailable");
                        return 0;
                    }
                    Err(_) => {
                        tracing::warn!(?STALL, "sync: the peer does not answer");
                        return 0;
                    }
                };
                loop {
                    let batch = match tokio::time::timeout(STALL, stream.next()).await {
                        Ok(None) => break,
                        Ok(Some(Ok(batch))) => batch,
                        Ok(Some(Err(status))) => {
                            tracing::warn!(%status, "sync from a peer ended early");
                            break;
                        }
                        Err(_) => {
                            tracing::warn!(?STALL, "sync: the peer stopped sending");
                            break;
                        }
                    };
                    for entry in batch.entries {
                        applied += u64::from(apply(store, entry).unwrap_or(false));
                    }
                }
                applied
            }
        });
    futures::future::join_all(calls).await.into_iter().sum()
}
