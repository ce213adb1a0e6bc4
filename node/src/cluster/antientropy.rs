//! Anti-entropy: owners of the same keys compare what they hold and repair the
//! difference, so copies converge after a missed replication (a peer frozen or cut
//! off while a write was copied) without waiting for a membership change.
//!
//! Every `--anti-entropy-interval`, a node asks each member it shares keys with for a
//! digest of those keys: [`BUCKETS`] order-independent hashes of (key, version), by
//! key hash. For each bucket that differs it pulls the peer's entries and remembered
//! deletes of that bucket (`Peer.Repair`) and applies them, newest version winning.
//! The peer does the same the other way, so both end with the newest of each key, and
//! a delete one of them missed reaches it as the other's tombstone. Rounds are skipped
//! while membership moves (a handoff is then on its way) and with a peer whose view
//! differs (their digests would cover different keys).
//!
//! A member that evicted since its last round repairs only the keys it holds (and
//! deletes): full owners evict different keys, and refilling them would undo eviction.
//!
//! Entries not newer than either member's [`floor`] (the newest delete it forgot early,
//! its tombstones' share of memory being full) are left out of both digests and of
//! the repair: they may be copies that missed one of those deletes, and bringing a
//! deleted key back is worse than leaving a key on one copy.
//!
//! Each round also hands off entries this node holds but does not own
//! ([`super::rebalance::tidy`]): copies that arrived after its own handoff pass.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use kcache_client::placement::{Member, View, stable_hash};
use kcache_client::proto::{DigestRequest, RepairRequest, ReplicateRequest, VersionedEntry};
use prometheus::IntCounter;
use prometheus::core::Collector;
use tokio::sync::watch;
use tokio_stream::StreamExt;

use super::Cluster;
use super::peers::{BATCH, apply_repair, copies};
use crate::store::{ScanCursor, Store};

/// Buckets of a digest: enough that a few missed writes repair a small part of the
/// store, few enough that a digest is a 2 KiB message.
pub const BUCKETS: usize = 256;
/// How long a peer may take to answer a digest, or to send the next message of a
/// repair, before the round gives up on it.
const PEER_WAIT: Duration = Duration::from_secs(5);

/// The bucket of a key.
pub fn bucket(key: &[u8]) -> usize {
    // The placement hash's high bits: rendezvous weights mix the hash again, so the
    // buckets are independent of who owns the key.
    (stable_hash(key) >> 40) as usize % BUCKETS
}

/// Whether `a` and `b` both own `key` in `view`.
fn shared(view: &View, replication: usize, a: &str, b: &str, key: &[u8]) -> bool {
    let owners = view.owners(key, replication);
    owners.iter().any(|m| m.id == a) && owners.iter().any(|m| m.id == b)
}

/// This node's floor: the newest version of a delete it forgot before its horizon
/// (its tombstones' share of memory was full), 0 when it forgot none. An entry not
/// newer than it may be a copy that missed one of those deletes, so anti-entropy
/// neither compares nor copies it: it would rather leave a key with one copy than
/// bring a deleted one back.
pub fn floor(store: &Store) -> u64 {
    store.stats().tombstones_forgotten_below
}

/// The digest of the live entries newer than `floor` that this node and `peer` both
/// own in `view`.
pub fn digest(
    store: &Store,
    view: &View,
    replication: usize,
    me: &str,
    peer: &str,
    floor: u64,
) -> Vec<u64> {
    let mut buckets = vec![0u64; BUCKETS];
    let mut cursor = Some(ScanCursor::default());
    while let Some(at) = cursor {
        let (batch, next) = store.scan_versions(at, BATCH);
        cursor = next;
        for (key, version) in batch {
            if version > floor && shared(view, replication, me, peer, &key) {
                let b = bucket(&key);
                buckets[b] = buckets[b].wrapping_add(mix(stable_hash(&key) ^ version));
            }
        }
    }
    buckets
}

/// The entries newer than `floor` and the remembered deletes in `buckets` that this
/// node and `peer` both own, in messages of at most [`BATCH`] entries or
/// [`BATCH_BYTES`].
#[allow(clippy::too_many_arguments)] // what to send, and to whom
pub fn contents(
    store: &Store,
    view: &View,
    replication: usize,
    me: &str,
    peer: &str,
    buckets: &HashSet<usize>,
    floor: u64,
    send: impl FnMut(Vec<VersionedEntry>) -> bool,
) {
    let wanted =
        |key: &[u8]| buckets.contains(&bucket(key)) && shared(view, replication, me, peer, key);
    copies(store, wanted, floor, send);
}

/// splitmix64's finalizer: spreads one hash over all 64 bits, so sums of them collide
/// only by chance.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// What anti-entropy counts, for /metrics.
#[derive(Debug, Clone)]
pub struct AntiEntropyMetrics {
    rounds: IntCounter,
    buckets: IntCounter,
    repaired: IntCounter,
    failures: IntCounter,
}

impl Default for AntiEntropyMetrics {
    fn default() -> Self {
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        Self {
            rounds: counter(
                "anti_entropy_rounds_total",
                "Digest comparisons with a peer that shares keys with this node.",
            ),
            buckets: counter(
                "anti_entropy_mismatched_buckets_total",
                "Digest buckets that differed from a peer's and were repaired.",
            ),
            repaired: counter(
                "anti_entropy_repaired_total",
                "Entries and deletes taken from a peer that changed this node's store.",
            ),
            failures: counter(
                "anti_entropy_failures_total",
                "Comparisons that failed: the peer unreachable, slow, or with another view.",
            ),
        }
    }
}

impl AntiEntropyMetrics {
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.rounds.clone()),
            Box::new(self.buckets.clone()),
            Box::new(self.repaired.clone()),
            Box::new(self.failures.clone()),
        ]
    }
}

/// Compares and repairs with every peer that shares keys with this node, every
/// `interval`, until `stop`.
pub async fn run(
    store: Arc<Store>,
    cluster: Arc<Cluster>,
    metrics: AntiEntropyMetrics,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut evictions = store.stats().evictions;
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        if cluster.is_single() || cluster.is_draining() || !cluster.settled() {
            continue;
        }
        let tidied = super::rebalance::tidy(&store, &cluster).await;
        if tidied.dropped > 0 {
            tracing::info!(
                dropped = tidied.dropped,
                "handed off entries this node held but did not own"
            );
        }
        // A store that evicted since the last round is full: copies differ because
        // each owner evicted different keys, and filling this one back up would only
        // evict others. Then only keys it holds are repaired (and deletes).
        let evicted = std::mem::replace(&mut evictions, store.stats().evictions);
        let fill = evicted == evictions;
        let view = cluster.view();
        let me = cluster.me.id.clone();
        for peer in view.members().iter().filter(|m| m.id != me) {
            match round(&store, &cluster, &view, peer, &metrics, fill).await {
                Ok(()) => metrics.rounds.inc(),
                Err(err) => {
                    metrics.failures.inc();
                    tracing::debug!(peer = %peer.id, %err, "anti-entropy round failed");
                }
            }
        }
    }
}

/// One comparison with `peer`: digests, then a repair of the buckets that differ.
async fn round(
    store: &Arc<Store>,
    cluster: &Cluster,
    view: &View,
    peer: &Member,
    metrics: &AntiEntropyMetrics,
    fill: bool,
) -> Result<(), String> {
    let me = cluster.me.id.as_str();
    let replication = cluster.replication;
    let max_entry = store.limits().max_value_size + store.limits().max_key_size;
    let mut client = cluster.peers.peer_receiving(&peer.address, max_entry);
    let request = DigestRequest {
        member_id: me.to_owned(),
        epoch: view.epoch(),
        floor: floor(store),
    };
    let asked = request.floor;
    let theirs = tokio::time::timeout(PEER_WAIT, client.digest(request))
        .await
        .map_err(|_| format!("no digest in {PEER_WAIT:?}"))?
        .map_err(|status| status.to_string())?
        .into_inner();
    // A member from before floors answers 0: then this node's own still holds.
    let floor = theirs.floor.max(asked);
    let theirs = theirs.buckets;
    let ours = {
        let (store, view, me, peer) = (store.clone(), view.clone(), me.to_owned(), peer.id.clone());
        tokio::task::spawn_blocking(move || digest(&store, &view, replication, &me, &peer, floor))
            .await
            .map_err(|e| e.to_string())?
    };
    if theirs.len() != BUCKETS {
        return Err(format!(
            "a digest of {} buckets, not {BUCKETS}",
            theirs.len()
        ));
    }
    let differ: Vec<u32> = (0..BUCKETS)
        .filter(|&b| ours[b] != theirs[b])
        .map(|b| b as u32)
        .collect();
    if differ.is_empty() {
        return Ok(());
    }
    metrics.buckets.inc_by(differ.len() as u64);
    let request = RepairRequest {
        member_id: me.to_owned(),
        epoch: view.epoch(),
        buckets: differ,
        floor,
    };
    let mut stream = tokio::time::timeout(PEER_WAIT, client.repair(request))
        .await
        .map_err(|_| format!("no repair stream in {PEER_WAIT:?}"))?
        .map_err(|status| status.to_string())?
        .into_inner();
    loop {
        let batch: ReplicateRequest = match tokio::time::timeout(PEER_WAIT, stream.next()).await {
            Ok(None) => return Ok(()),
            Ok(Some(Ok(batch))) => batch,
            Ok(Some(Err(status))) => return Err(status.to_string()),
            Err(_) => return Err(format!("the repair stalled for {PEER_WAIT:?}")),
        };
        for entry in batch.entries {
            if !fill && !entry.deleted && store.peek(&entry.key).is_none() {
                continue;
            }
            // A member from before floors sends everything.
            if !entry.deleted && entry.version <= floor {
                continue;
            }
            // The store checks its own floor again as it applies: a delete forgotten
            // since the digests must not let its key back either.
            if apply_repair(store, entry).unwrap_or(false) {
                metrics.repaired.inc();
            }
        }
    }
}
