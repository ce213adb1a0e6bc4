//! Node-to-node plumbing: a pool of channels to peers, and the `kcache.v1.Peer`
//! service that applies replicated and handed-off entries.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kcache_client::placement::{Member, View};
use kcache_client::proto::{
    self, ReplicateRequest, ReplicateResponse, SyncRequest, VersionedEntry,
    cache_client::CacheClient, peer_client::PeerClient,
};
use kcache_client::{ConnectOptions, Connection};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use super::Cluster;
use crate::store::{ScanCursor, Store, Versioned};

/// How long a connection attempt to a peer may take before the peer counts as
/// unreachable: peers are in the same cluster network, so a second is generous.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Entries per message when streaming entries between peers: large enough to
/// amortise the round trip, small enough to bound memory (about 150 KiB of 100-byte
/// values).
pub const BATCH: usize = 1_000;

/// One lazily connected HTTP/2 connection per peer address, shared by every request
/// to it (HTTP/2 multiplexes them).
#[derive(Debug, Default)]
pub struct PeerPool {
    channels: Mutex<HashMap<String, Connection>>,
}

impl PeerPool {
    pub fn channel(&self, address: &str) -> Connection {
        let mut channels = self.channels.lock();
        channels
            .entry(address.to_owned())
            .or_insert_with(|| {
                Connection::new(
                    address,
                    ConnectOptions {
                        connect_timeout: CONNECT_TIMEOUT,
                        keepalive: Some(Duration::from_secs(30)),
                    },
                )
            })
            .clone()
    }

    pub fn cache(&self, address: &str) -> CacheClient<Connection> {
        CacheClient::new(self.channel(address))
    }

    pub fn peer(&self, address: &str) -> PeerClient<Connection> {
        PeerClient::new(self.channel(address))
    }

    /// Drops channels to addresses no longer in use.
    pub fn retain(&self, addresses: &[&str]) {
        self.channels
            .lock()
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

/// Applies one replicated entry; returns whether it changed the store.
pub fn apply(store: &Store, entry: VersionedEntry) -> Result<bool, Status> {
    let result = if entry.deleted {
        store.apply_delete(&entry.key, entry.version)
    } else {
        store.apply(&Versioned {
            key: entry.key,
            value: entry.value,
            version: entry.version,
            ttl_ms: entry.ttl_ms,
        })
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

    fn apply_all(&self, entries: Vec<VersionedEntry>) -> Result<ReplicateResponse, Status> {
        let received = entries.len() as u64;
        let mut applied = 0;
        for entry in entries {
            applied += u64::from(apply(&self.store, entry)?);
        }
        Ok(ReplicateResponse { received, applied })
    }
}

type SyncStream = Pin<Box<dyn Stream<Item = Result<ReplicateRequest, Status>> + Send>>;

#[tonic::async_trait]
impl proto::peer_server::Peer for PeerService {
    async fn replicate(
        &self,
        req: Request<ReplicateRequest>,
    ) -> Result<Response<ReplicateResponse>, Status> {
        self.apply_all(req.into_inner().entries).map(Response::new)
    }

    async fn handoff(
        &self,
        req: Request<Streaming<ReplicateRequest>>,
    ) -> Result<Response<ReplicateResponse>, Status> {
        let mut batches = req.into_inner();
        let mut total = ReplicateResponse::default();
        while let Some(batch) = batches.next().await {
            let done = self.apply_all(batch?.entries)?;
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
        tokio::spawn(async move {
            let mut cursor = Some(ScanCursor::default());
            while let Some(at) = cursor {
                let (batch, next) = store.scan(at, BATCH);
                cursor = next;
                // The asking member may not be in this node's view yet (it turns
                // ready, and becomes an endpoint, only after this sync): place keys as
                // they will be once it is.
                let view = cluster.view();
                let mut members = view.members().to_vec();
                members.push(Member {
                    id: member.clone(),
                    address: String::new(),
                });
                let joined = View::new(members);
                let entries: Vec<_> = batch
                    .into_iter()
                    .filter(|e| {
                        joined
                            .owners(&e.key, cluster.replication)
                            .iter()
                            .any(|m| m.id == member)
                    })
                    .map(to_proto)
                    .collect();
                if entries.is_empty() {
                    continue;
                }
                let message = ReplicateRequest {
                    entries,
                    from: cluster.me.id.clone(),
                };
                if tx.send(Ok(message)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
