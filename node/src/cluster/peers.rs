//! Node-to-node plumbing: a pool of channels to peers, and the `kcache.v1.Peer`
//! service that applies replicated and handed-off entries.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use kcache_client::placement::{Member, View};
use kcache_client::proto::{
    self, ReplicateRequest, ReplicateResponse, SyncRequest, VersionedEntry,
    cache_client::CacheClient, peer_client::PeerClient,
};
use kcache_client::{ConnectOptions, Connection, Tls, Token};
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use super::{Cluster, antientropy};
use crate::store::{ScanCursor, Store, Versioned};

/// How long a connection attempt to a peer may take before the peer counts as
/// unreachable: peers are in the same cluster network, so a second is generous.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Entries per message when streaming entries between peers: large enough to
/// amortise the round trip, small enough to bound memory (about 150 KiB of 100-byte
/// values).
pub const BATCH: usize = 1_000;
/// Key and value bytes per message between peers: a quarter of gRPC's default 4 MiB
/// message limit (the rest is room for framing), so batches of large values still fit
/// what a peer decodes; an entry larger than this travels alone.
pub const BATCH_BYTES: usize = 1 << 20;
/// Room for the protobuf framing around the largest entry a peer may send alone.
const ENTRY_SLACK: usize = 64 << 10;

/// How long after a call to a peer timed out or found it unreachable the peer stays
/// suspect: forwarded reads ask the key's other owners first and writes wait for its
/// copies only briefly, so a frozen or cut-off peer costs each node a deadline about
/// once per this period, not on every call. A forwarded call or a replication batch
/// it answers ends this early.
pub const SUSPECT: Duration = Duration::from_secs(5);

/// Peers whose last call failed, until when ([`SUSPECT`]): read by every forwarded read
/// and replicated write, so a concurrent map.
#[derive(Debug, Default)]
pub struct Suspects(DashMap<String, Instant>);

impl Suspects {
    pub fn failed(&self, address: &str) {
        self.0.insert(address.to_owned(), Instant::now() + SUSPECT);
    }

    pub fn answered(&self, address: &str) {
        // A read lock first: on the hot path the peer is almost never suspect.
        if self.0.contains_key(address) {
            self.0.remove(address);
        }
    }

    pub fn suspect(&self, address: &str) -> bool {
        self.0
            .get(address)
            .is_some_and(|until| Instant::now() < *until)
    }
}

/// What every connection to a peer presents.
#[derive(Debug, Default, Clone)]
struct Credentials {
    tls: Option<Tls>,
    token: Option<Token>,
    peer_token: Option<Token>,
}

/// One lazily connected HTTP/2 connection per peer address, shared by every request
/// to it (HTTP/2 multiplexes them). Clones share the connections, so the replication
/// senders see a reset as forwarded calls do.
#[derive(Debug, Default, Clone)]
pub struct PeerPool {
    /// A concurrent map: every forwarded request and replication batch looks its peer
    /// up here, from every worker thread.
    channels: Arc<DashMap<String, Connection>>,
    /// TLS and token of every peer connection, set once before the first call (their
    /// contents reload in place).
    credentials: Arc<std::sync::OnceLock<Credentials>>,
    /// Shared with the replication senders.
    suspects: Arc<Suspects>,
}

impl PeerPool {
    /// Makes every connection to a peer use `tls` and send `token` (as
    /// `authorization`) and `peer_token` (as the peer token).
    pub fn secure(&self, tls: Option<Tls>, token: Option<Token>, peer_token: Option<Token>) {
        let _ = self.credentials.set(Credentials {
            tls,
            token,
            peer_token,
        });
    }

    pub fn channel(&self, address: &str) -> Connection {
        if let Some(channel) = self.channels.get(address) {
            return channel.clone();
        }
        let Credentials {
            tls,
            token,
            peer_token,
        } = self.credentials.get().cloned().unwrap_or_default();
        self.channels
            .entry(address.to_owned())
            .or_insert_with(|| {
                Connection::new(
                    address,
                    ConnectOptions {
                        tls,
                        token,
                        peer_token,
                        connect_timeout: CONNECT_TIMEOUT,
                        keepalive: Some(Duration::from_secs(30)),
                    },
                )
            })
            .clone()
    }

    /// Forgets the connection to `address`, so that the next call dials a new one. A
    /// connection a call's deadline passed on may be stuck behind TCP retransmissions
    /// (after a partition heals, the kernel resends only on its own back-off, seconds
    /// later), and keepalive would notice only after its interval. Calls already on
    /// the old connection finish or time out as they would.
    ///
    /// Only `used`, the connection the call went out on: a late timeout from before an
    /// earlier reset must not drop the fresh connection other calls now share.
    pub fn reset(&self, address: &str, used: &Connection) {
        self.channels
            .remove_if(address, |_, current| current.same(used));
    }

    /// Forgets the connection to `address`, whichever it is (the address left the
    /// view).
    pub fn forget(&self, address: &str) {
        self.channels.remove(address);
    }

    pub fn suspects(&self) -> &Arc<Suspects> {
        &self.suspects
    }

    pub fn cache(&self, address: &str) -> CacheClient<Connection> {
        CacheClient::new(self.channel(address))
    }

    pub fn peer(&self, address: &str) -> PeerClient<Connection> {
        PeerClient::new(self.channel(address))
    }

    /// A Peer client that takes messages of a batch or of one entry of up to
    /// `max_value` bytes (streamed entries, as Sync sends them).
    pub fn peer_receiving(&self, address: &str, max_value: usize) -> PeerClient<Connection> {
        self.peer(address)
            .max_decoding_message_size((max_value + ENTRY_SLACK).max(BATCH_BYTES + ENTRY_SLACK))
    }

    /// Drops channels to addresses no longer in use.
    pub fn retain(&self, addresses: &[&str]) {
        self.channels
            .retain(|address, _| addresses.contains(&address.as_str()));
        self.suspects
            .0
            .retain(|address, _| addresses.contains(&address.as_str()));
    }
}

pub fn to_proto(entry: Versioned) -> VersionedEntry {
    VersionedEntry {
        key: entry.key,
        value: entry.value,
        version: entry.version,
        ttl_ms: entry.ttl_ms,
        deleted: false,
    }
}

/// A remembered delete as sent to a key's other owners.
pub fn deleted(tomb: &crate::store::Tombstone) -> VersionedEntry {
    VersionedEntry {
        key: tomb.key.clone(),
        version: tomb.version,
        deleted: true,
        ..VersionedEntry::default()
    }
}

/// Sends the remembered deletes, then the entries, of the keys `wanted` picks, in
/// messages of at most [`BATCH`] entries or [`BATCH_BYTES`], until `send` says the
/// receiver is gone. Deletes go first, so an older copy of a key (from another peer)
/// is refused however the streams interleave. Sync and anti-entropy's Repair; entries
/// not newer than `floor` are left out (deletes never are).
pub fn copies(
    store: &Store,
    wanted: impl Fn(&[u8]) -> bool,
    floor: u64,
    mut send: impl FnMut(Vec<VersionedEntry>) -> bool,
) {
    for batch in store.tombstones() {
        let entries: Vec<_> = batch
            .iter()
            .filter(|t| wanted(&t.key))
            .map(deleted)
            .collect();
        for chunk in entries.chunks(BATCH) {
            if !send(chunk.to_vec()) {
                return;
            }
        }
    }
    let mut cursor = Some(ScanCursor::default());
    while let Some(at) = cursor {
        let (batch, next) = store.scan(at, BATCH, BATCH_BYTES);
        cursor = next;
        let entries: Vec<_> = batch
            .into_iter()
            .filter(|e| e.version > floor && wanted(&e.key))
            .map(to_proto)
            .collect();
        if !entries.is_empty() && !send(entries) {
            return;
        }
    }
}

/// Applies one replicated entry; returns whether it changed the store.
pub fn apply(store: &Store, entry: VersionedEntry) -> Result<bool, Status> {
    apply_as(store, entry, Store::apply)
}

/// Applies one entry an anti-entropy repair brought ([`Store::apply_repair`]).
pub fn apply_repair(store: &Store, entry: VersionedEntry) -> Result<bool, Status> {
    apply_as(store, entry, Store::apply_repair)
}

fn apply_as(
    store: &Store,
    entry: VersionedEntry,
    set: fn(&Store, &Versioned) -> Result<bool, crate::store::StoreError>,
) -> Result<bool, Status> {
    let result = if entry.deleted {
        store.apply_delete(&entry.key, entry.version)
    } else {
        set(
            store,
            &Versioned {
                key: entry.key,
                value: entry.value,
                version: entry.version,
                ttl_ms: entry.ttl_ms,
            },
        )
    };
    result.map_err(crate::service::to_status)
}

/// The Peer service.
#[derive(Debug, Clone)]
pub struct PeerService {
    store: Arc<Store>,
    cluster: Arc<Cluster>,
}

impl PeerService {
    pub fn new(store: Arc<Store>, cluster: Arc<Cluster>) -> Self {
        Self { store, cluster }
    }

    /// This node's view, if it is the one (by epoch) the asking member has: digests
    /// over different placements would differ for no missing write.
    fn same_view(&self, epoch: u64) -> Result<Arc<View>, Status> {
        let view = self.cluster.view();
        if view.epoch() != epoch {
            return Err(Status::failed_precondition(format!(
                "this member's view is at epoch {}, the asking member's at {epoch}",
                view.epoch()
            )));
        }
        Ok(view)
    }

    /// Applies a batch entry by entry: one the store refuses (a key or value over this
    /// node's limits, a version from far ahead) is logged and skipped, so it cannot
    /// fail the handoff of the rest, which would otherwise be retried, fail again and
    /// leave the sender's drain to time out.
    fn apply_all(&self, from: &str, entries: Vec<VersionedEntry>) -> ReplicateResponse {
        let received = entries.len() as u64;
        let mut applied = 0;
        for entry in entries {
            let key = entry.key.clone();
            match apply(&self.store, entry) {
                Ok(changed) => applied += u64::from(changed),
                Err(status) => tracing::warn!(
                    peer = %from,
                    key = %String::from_utf8_lossy(&key),
                    %status,
                    "refused a replicated entry"
                ),
            }
        }
        ReplicateResponse { received, applied }
    }
}

type SyncStream = Pin<Box<dyn Stream<Item = Result<ReplicateRequest, Status>> + Send>>;

#[tonic::async_trait]
impl proto::peer_server::Peer for PeerService {
    async fn replicate(
        &self,
        req: Request<ReplicateRequest>,
    ) -> Result<Response<ReplicateResponse>, Status> {
        let request = req.into_inner();
        Ok(Response::new(
            self.apply_all(&request.from, request.entries),
        ))
    }

    async fn handoff(
        &self,
        req: Request<Streaming<ReplicateRequest>>,
    ) -> Result<Response<ReplicateResponse>, Status> {
        let mut batches = req.into_inner();
        let mut total = ReplicateResponse::default();
        while let Some(batch) = batches.next().await {
            let batch = batch?;
            let done = self.apply_all(&batch.from, batch.entries);
            if done.applied > 0 && total.applied == 0 {
                // Entries still arriving, perhaps from a pass retried long after the
                // change: keep reading through to the previous owners meanwhile.
                self.cluster.moved(None);
            }
            total.received += done.received;
            total.applied += done.applied;
        }
        Ok(Response::new(total))
    }

    type SyncStream = SyncStream;

    async fn sync(&self, req: Request<SyncRequest>) -> Result<Response<SyncStream>, Status> {
        let member = req.into_inner().member_id;
        let (tx, rx) = mpsc::channel(2);
        let (store, cluster) = (self.store.clone(), self.cluster.clone());
        // The asking member may not be in this node's view yet (it turns ready, and
        // becomes an endpoint, only after this sync): place keys as they will be once
        // it is.
        let mut members = cluster.view().members().to_vec();
        members.push(Member {
            id: member.clone(),
            address: String::new(),
        });
        let joined = View::new(members);
        tokio::task::spawn_blocking(move || {
            let owned = |key: &[u8]| {
                joined
                    .owners(key, cluster.replication)
                    .iter()
                    .any(|m| m.id == member)
            };
            copies(&store, owned, 0, |entries| {
                let message = ReplicateRequest {
                    entries,
                    from: cluster.me.id.clone(),
                };
                tx.blocking_send(Ok(message)).is_ok()
            });
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn digest(
        &self,
        req: Request<proto::DigestRequest>,
    ) -> Result<Response<proto::DigestResponse>, Status> {
        let req = req.into_inner();
        let view = self.same_view(req.epoch)?;
        let (store, cluster) = (self.store.clone(), self.cluster.clone());
        let floor = req.floor.max(antientropy::floor(&store));
        let buckets = tokio::task::spawn_blocking(move || {
            antientropy::digest(
                &store,
                &view,
                cluster.replication,
                &cluster.me.id,
                &req.member_id,
                floor,
            )
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(proto::DigestResponse { buckets, floor }))
    }

    type RepairStream = SyncStream;

    async fn repair(
        &self,
        req: Request<proto::RepairRequest>,
    ) -> Result<Response<SyncStream>, Status> {
        let req = req.into_inner();
        let view = self.same_view(req.epoch)?;
        let buckets = req.buckets.iter().map(|&b| b as usize).collect();
        let (tx, rx) = mpsc::channel(2);
        let (store, cluster) = (self.store.clone(), self.cluster.clone());
        tokio::task::spawn_blocking(move || {
            antientropy::contents(
                &store,
                &view,
                cluster.replication,
                &cluster.me.id,
                &req.member_id,
                &buckets,
                req.floor.max(antientropy::floor(&store)),
                |entries| {
                    let message = ReplicateRequest {
                        entries,
                        from: cluster.me.id.clone(),
                    };
                    tx.blocking_send(Ok(message)).is_ok()
                },
            );
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_reset_keeps_the_connection_dialled_since() {
        let pool = PeerPool::default();
        let first = pool.channel("127.0.0.1:1");
        assert!(
            pool.channel("127.0.0.1:1").same(&first),
            "the pool shares one"
        );
        pool.reset("127.0.0.1:1", &first);
        let second = pool.channel("127.0.0.1:1");
        assert!(!second.same(&first), "a reset connection is not used again");
        // A second call that went out on `first` times out only now.
        pool.reset("127.0.0.1:1", &first);
        assert!(
            pool.channel("127.0.0.1:1").same(&second),
            "a late reset of the old connection dropped the new one"
        );
        pool.forget("127.0.0.1:1");
        assert!(!pool.channel("127.0.0.1:1").same(&second));
    }
}
