//! The `kcache.v1.Cache` gRPC service. Each request is served where its key lives:
//! locally when this node owns the key, otherwise forwarded once to the owners (with
//! hop metadata, so a forwarded request is never forwarded again). Writes are
//! coordinated by the key's primary owner, which replicates them to the others.
//! This is the only place that knows about `tonic::Status`.
//!
//! - this file: placement, forwarding, write coordination and the single-key operations;
//! - [`batch`]: MultiGet and MultiSet, split by owner;
//! - [`pipeline`]: the Pipeline stream, in command order per key;
//! - [`grpc`]: the tonic trait, metadata in and responses out;
//! - [`convert`]: the proto's conventions (TTLs, conditions, errors) to the store's.

mod batch;
mod convert;
mod grpc;
mod pipeline;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kcache_client::Connection;
use kcache_client::placement::Member;
use kcache_client::proto::{
    self, DeleteRequest, DeleteResponse, GetRequest, GetResponse, IncrementRequest,
    IncrementResponse, SetRequest, SetResponse, TouchRequest, TouchResponse,
    cache_client::CacheClient,
};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::cluster::replicate::Route;
use crate::cluster::{Cluster, Placement, WriteAck};
use crate::metrics::Metrics;
use crate::store::{Condition, Store};

pub use convert::to_status;
use convert::{condition, get_response, ttl};

/// Most keys one MultiGet or MultiSet may carry: large enough for any sensible batch,
/// small enough that one request cannot hold a node for long or build a reply of
/// gigabytes.
pub const MAX_BATCH: usize = 10_000;
/// Metadata that marks a request a peer forwarded; such a request is served here.
pub const HOP_HEADER: &str = "kcache-hop";
/// The [`HOP_HEADER`] value of a read-through probe: a GET answered from this node's
/// store alone, so probes never fan out further.
pub const PROBE: &str = "probe";
/// Deadline of a forwarded request or a replication call: peers answer in
/// microseconds, so a second means the peer is in trouble.
const PEER_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a coordinated write waits for its copies (`--write-ack all`) before it
/// answers: well within the deadline a forwarding peer gives the coordinator
/// ([`FORWARDED_WRITE_TIMEOUT`] counts it in), so a write the coordinator applied is
/// never reported to the client as timed out (and retried: an increment counted
/// twice). A replica slower than this
/// counts as unreachable for the write; its copy still goes, in order, behind it.
const REPLICATION_WAIT: Duration = Duration::from_millis(500);
/// Deadline of a read-through probe: a quarter of [`PEER_TIMEOUT`], so a write that
/// first fetches a key it lacks and then waits for its copies still answers within
/// the forwarding deadline, and a frozen previous owner costs a miss little.
const PROBE_TIMEOUT: Duration = Duration::from_millis(250);
/// Deadline of a forwarded write: [`PEER_TIMEOUT`] for the owner itself on top of what
/// the owner may legitimately wait for (a probe of a previous owner, then its
/// replicas), so an owner slowed only by a frozen replica, on a busy machine, is not
/// reported as silent (and marked suspect) for it.
const FORWARDED_WRITE_TIMEOUT: Duration = Duration::from_millis(
    (PEER_TIMEOUT.as_millis() + PROBE_TIMEOUT.as_millis() + REPLICATION_WAIT.as_millis()) as u64,
);

/// A write as applied here: the reply, and whether the key's other owners must follow.
/// A write that changed nothing here (a failed condition, a Touch of a missing key)
/// must leave their copies alone: this node may lack a key they hold (evicted here, or
/// a handoff on its way).
struct Applied<Resp> {
    reply: Resp,
    replicate: bool,
}

/// What a key's other owners hold of it, as read-through probes found.
struct Elsewhere {
    /// The newest copy.
    found: Option<GetResponse>,
    /// The newest delete remembered (a tombstone's version), 0 if none.
    deleted: u64,
}

/// What the service needs to know about the node it runs on.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node_id: String,
    /// host:port clients reach this node at.
    pub address: String,
    pub started: Instant,
}

/// The Cache service over one store.
#[derive(Debug, Clone)]
pub struct CacheService {
    store: Arc<Store>,
    metrics: Metrics,
    node: NodeInfo,
    cluster: Arc<Cluster>,
    /// Turns true when the node stops; open pipelines end then.
    stop: watch::Receiver<bool>,
}

type Call<Req, Resp> = fn(
    CacheClient<Connection>,
    Request<Req>,
) -> Pin<Box<dyn Future<Output = Result<Response<Resp>, Status>> + Send>>;

impl CacheService {
    pub fn new(
        store: Arc<Store>,
        metrics: Metrics,
        node: NodeInfo,
        cluster: Arc<Cluster>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Self {
            store,
            metrics,
            node,
            cluster,
            stop,
        }
    }

    /// Runs one gRPC operation and records its outcome.
    pub(crate) async fn observed<T>(
        &self,
        op: &'static str,
        f: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        self.observed_by("grpc", op, f).await
    }

    /// Runs one operation that came in over `protocol` (`grpc`, `redis`) and records
    /// its outcome.
    pub(crate) async fn observed_by<T>(
        &self,
        protocol: &'static str,
        op: &'static str,
        f: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let started = Instant::now();
        let result = f.await;
        let code = result
            .as_ref()
            .map_or_else(Status::code, |_| tonic::Code::Ok);
        self.metrics.observe(protocol, op, code, started);
        result
    }

    /// The instruments this service records into (a second protocol records too).
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The store this service serves from (a second protocol reads its figures).
    pub(crate) fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub(crate) fn node(&self) -> &NodeInfo {
        &self.node
    }

    /// The node's place in its cluster (the Redis port's `cluster` mode reports it).
    pub(crate) fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Where `key` lives, or `None` when it is to be served here without asking
    /// (a forwarded request, or a cluster of one).
    fn place(&self, key: &[u8], forwarded: bool) -> Option<Placement> {
        if forwarded || self.cluster.is_single() && !self.cluster.is_draining() {
            return None;
        }
        Some(self.cluster.placement(key))
    }

    /// Sends a request to the first of `targets` that answers. UNAVAILABLE (the owner
    /// provably did not take the request) moves on to the next; so does a timeout for
    /// a `read`, but not for a write, which the owner may have applied: taking it
    /// elsewhere could apply an increment twice, so the write answers
    /// DEADLINE_EXCEEDED.
    async fn forward<Req: Clone, Resp>(
        &self,
        op: &str,
        read: bool,
        targets: impl IntoIterator<Item = &Member>,
        message: Req,
        call: Call<Req, Resp>,
    ) -> Result<Resp, Status> {
        let mut last = Status::unavailable("no owner of the key is reachable");
        let suspects = self.cluster.peers.suspects();
        let mut targets: Vec<&Member> = targets.into_iter().collect();
        if read {
            // Any owner answers a read: one whose last call failed goes last, so a
            // frozen or cut-off owner costs a deadline once, not on every read.
            targets.sort_by_key(|m| suspects.suspect(&m.address));
        }
        for member in targets {
            let mut request = Request::new(message.clone());
            let deadline = if read {
                PEER_TIMEOUT
            } else {
                FORWARDED_WRITE_TIMEOUT
            };
            request.set_timeout(deadline);
            request
                .metadata_mut()
                .insert(HOP_HEADER, tonic::metadata::MetadataValue::from_static("1"));
            let connection = self.cluster.peers.channel(&member.address);
            match call(CacheClient::new(connection.clone()), request).await {
                Ok(response) => {
                    suspects.answered(&member.address);
                    self.metrics.forwarded(op);
                    return Ok(response.into_inner());
                }
                Err(status)
                    if status.code() == tonic::Code::Unavailable
                        || kcache_client::timed_out(&status) =>
                {
                    suspects.failed(&member.address);
                    if kcache_client::timed_out(&status) {
                        self.cluster.peers.reset(&member.address, &connection);
                    }
                    if !read && status.code() != tonic::Code::Unavailable {
                        // tonic's own timeout arrives as CANCELLED: the caller must
                        // learn that the owner did not answer, not that someone gave up.
                        return Err(Status::deadline_exceeded(format!(
                            "owner {} of the key did not answer within {deadline:?}; \
                             the write may have been applied",
                            member.id
                        )));
                    }
                    tracing::debug!(peer = %member.id, %status, "owner unreachable");
                    last = Status::unavailable(format!(
                        "owner {} of the key is unreachable: {}",
                        member.id,
                        status.message()
                    ));
                }
                // The owner refused this node's credentials (an expired peer
                // certificate, a CA or token rotated on one side only), before taking
                // the request: not the caller's credentials, so not the caller's
                // UNAUTHENTICATED, and another owner may take it.
                Err(status)
                    if matches!(
                        status.code(),
                        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                    ) =>
                {
                    suspects.failed(&member.address);
                    tracing::warn!(peer = %member.id, %status, "owner refused this node's credentials");
                    last = Status::unavailable(format!(
                        "owner {} of the key refused this node's credentials: {}",
                        member.id,
                        status.message()
                    ));
                }
                Err(status) => return Err(status),
            }
        }
        Err(last)
    }

    /// Copies the key's current state (or its deletion) to the other owners, after
    /// every copy queued before it; waits for them with `--write-ack all`.
    async fn replicate(&self, key: &Bytes, placement: Option<&Placement>) {
        let Some(placement) = placement else { return };
        let me = self.cluster.me.id.as_str();
        let others: Vec<&str> = placement.others(me).map(|m| m.address.as_str()).collect();
        if others.is_empty() {
            return;
        }
        let route = Route {
            peers: &self.cluster.peers,
            me,
            metrics: &self.metrics,
        };
        let wait = self.cluster.write_ack == WriteAck::All;
        let copied = self
            .cluster
            .replicas
            .copy(route, &self.store, key, &others, wait);
        if tokio::time::timeout(REPLICATION_WAIT, copied)
            .await
            .is_err()
        {
            tracing::debug!("replicas slower than the write may wait; answering");
        }
    }

    /// Runs a write where it belongs: here when this node is the primary owner (or the
    /// first reachable one), otherwise at the owners in order. A write that `reads` the
    /// key's current state (a condition, an increment, a touch) first takes in a newer
    /// copy from where a handoff may still be bringing it ([`Self::fetch_newer`]).
    #[allow(clippy::too_many_arguments)] // the write's parts, each used once
    async fn write<Req: Clone + Send, Resp>(
        &self,
        op: &str,
        key: &Bytes,
        forwarded: bool,
        reads: bool,
        message: Req,
        call: Call<Req, Resp>,
        local: impl FnOnce(&Self, &Req) -> Result<Applied<Resp>, Status>,
    ) -> Result<Resp, Status> {
        let placement = self.place(key, forwarded);
        let me = self.cluster.me.id.as_str();
        if let Some(p) = placement.as_ref().filter(|p| !p.primary) {
            // Owners ahead of this node, in order; this node coordinates only if all
            // of them are unreachable.
            let ahead: Vec<&Member> = p.owners.iter().take_while(|m| m.id != me).collect();
            let result = self.forward(op, false, ahead, message.clone(), call).await;
            if !p.local || !matches!(&result, Err(s) if s.code() == tonic::Code::Unavailable) {
                return result;
            }
        }
        if reads {
            self.fetch_newer(key).await;
        }
        let applied = local(self, &message)?;
        if applied.replicate {
            let replica_placement = placement.or_else(|| self.replica_placement(key, forwarded));
            self.replicate(key, replica_placement.as_ref()).await;
        }
        Ok(applied.reply)
    }

    /// A forwarded write is coordinated here; its replicas are the key's other owners.
    fn replica_placement(&self, key: &[u8], forwarded: bool) -> Option<Placement> {
        (forwarded && !self.cluster.is_single()).then(|| self.cluster.placement(key))
    }

    pub(crate) async fn get(
        &self,
        req: GetRequest,
        forwarded: bool,
    ) -> Result<GetResponse, Status> {
        match self.place(&req.key, forwarded) {
            Some(p) if !p.local => self.forward_get(req, &p).await,
            _ => {
                let found = get_response(self.store.get(&req.key).map_err(to_status)?);
                Ok(self.read_through(&req.key, found).await)
            }
        }
    }

    /// [`get`](Self::get) for a caller that writes the value out at once (the Redis
    /// port): a value this node holds is handed to `found` where it lies, and the
    /// answer is `None`; one found elsewhere (its owner, or its previous owner while a
    /// handoff is on its way) or a miss comes back as the reply [`get`](Self::get)
    /// would give.
    pub(crate) async fn get_in_place(
        &self,
        key: &Bytes,
        found: impl FnOnce(&[u8]),
    ) -> Result<Option<GetResponse>, Status> {
        match self.place(key, false) {
            Some(p) if !p.local => {
                let request = GetRequest { key: key.clone() };
                self.forward_get(request, &p).await.map(Some)
            }
            _ => match self.store.get_with(key, found).map_err(to_status)? {
                Some(()) => Ok(None),
                None => Ok(Some(self.read_through(key, GetResponse::default()).await)),
            },
        }
    }

    /// A read sent on to the key's owners.
    async fn forward_get(&self, req: GetRequest, p: &Placement) -> Result<GetResponse, Status> {
        self.forward("get", true, &p.owners, req, |mut c, r| {
            Box::pin(async move { c.get(r).await })
        })
        .await
    }

    /// A local miss while a handoff may still be on its way here is looked for at the
    /// key's previous and other owners, so a key that moved is not reported missing
    /// before it arrives; the newest copy found wins, unless a newer delete of the key
    /// is remembered here or there (a copy that missed the delete must not bring it
    /// back).
    async fn read_through(&self, key: &Bytes, local: GetResponse) -> GetResponse {
        if local.found {
            return local;
        }
        let elsewhere = self.cluster.read_through(key);
        if elsewhere.is_empty() {
            return local;
        }
        let seen = self.newest_at(key, &elsewhere).await;
        let deleted = self.store.tombstone(key).unwrap_or(0).max(seen.deleted);
        match seen.found {
            Some(found) if found.version > deleted => {
                self.metrics.read_through();
                found
            }
            _ => local,
        }
    }

    /// What the given members hold of `key` in their own stores: the newest copy, and
    /// the newest delete they remember.
    async fn newest_at(&self, key: &Bytes, members: &[Member]) -> Elsewhere {
        let probes = members.iter().map(|member| {
            let mut client = self.cluster.peers.cache(&member.address);
            let mut request = Request::new(GetRequest { key: key.clone() });
            request.set_timeout(PROBE_TIMEOUT);
            request.metadata_mut().insert(
                HOP_HEADER,
                tonic::metadata::MetadataValue::from_static(PROBE),
            );
            async move { client.get(request).await }
        });
        let replies: Vec<GetResponse> = futures::future::join_all(probes)
            .await
            .into_iter()
            .filter_map(|reply| reply.ok().map(Response::into_inner))
            .collect();
        Elsewhere {
            deleted: replies.iter().map(|r| r.deleted_version).max().unwrap_or(0),
            found: replies
                .into_iter()
                .filter(|reply| reply.found)
                .max_by_key(|reply| reply.version),
        }
    }

    /// Takes in a newer copy of the key, or a newer delete of it, from its previous
    /// and other owners while a handoff may be on its way
    /// ([`Cluster::write_through`]), so a write that depends on the key's state sees
    /// it: an increment goes on from the value the key has, not from nothing or from
    /// the copy this node synced before it joined; an IfAbsent set does not succeed
    /// twice; a key deleted at its previous owner stays deleted. The store keeps the
    /// newer version and refuses a copy older than a delete it remembers.
    async fn fetch_newer(&self, key: &Bytes) {
        let elsewhere = self.cluster.write_through(key);
        if elsewhere.is_empty() {
            return;
        }
        let seen = self.newest_at(key, &elsewhere).await;
        let local = self.store.peek(key).map_or(0, |entry| entry.version);
        if seen.deleted > local {
            match self.store.apply_delete(key, seen.deleted) {
                Ok(_) => self.metrics.read_through(),
                Err(err) => tracing::debug!(%err, "could not take in a fetched delete"),
            }
        }
        let Some(found) = seen.found.filter(|f| f.version > local) else {
            return;
        };
        let entry = crate::store::Versioned {
            key: key.clone(),
            value: found.value,
            version: found.version,
            ttl_ms: found.ttl_ms,
        };
        match self.store.apply(&entry) {
            Ok(true) => self.metrics.read_through(),
            Ok(false) => {}
            Err(err) => tracing::debug!(%err, "could not take in a fetched entry"),
        }
    }

    pub(crate) async fn set(
        &self,
        req: SetRequest,
        forwarded: bool,
    ) -> Result<SetResponse, Status> {
        let condition = condition(&req)?;
        self.store
            .check_set(&req.key, &req.value, ttl(req.ttl_ms))
            .map_err(to_status)?;
        let key = req.key.clone();
        self.write(
            "set",
            &key,
            forwarded,
            condition != Condition::Always,
            req,
            |mut c, r| Box::pin(async move { c.set(r).await }),
            move |this, req| {
                let out = this
                    .store
                    .set(&req.key, &req.value, ttl(req.ttl_ms), condition)
                    .map_err(to_status)?;
                Ok(Applied {
                    reply: SetResponse {
                        stored: out.stored,
                        version: out.version,
                        error: None,
                    },
                    replicate: out.stored,
                })
            },
        )
        .await
    }

    pub(crate) async fn delete(
        &self,
        req: DeleteRequest,
        forwarded: bool,
    ) -> Result<DeleteResponse, Status> {
        let key = req.key.clone();
        self.write(
            "delete",
            &key,
            forwarded,
            // Even an unconditional delete first takes in a newer copy while a handoff
            // may be on its way: its version must be above that copy's, or the copy
            // (from a member whose clock runs ahead) would bring the key back.
            true,
            req,
            |mut c, r| Box::pin(async move { c.delete(r).await }),
            |this, req| {
                let deleted = this
                    .store
                    .delete(&req.key, req.if_version)
                    .map_err(to_status)?;
                // An unconditional delete removes the other owners' copies even when
                // this node had none; a version that did not match changes nothing.
                Ok(Applied {
                    reply: DeleteResponse { deleted },
                    replicate: deleted || req.if_version.is_none(),
                })
            },
        )
        .await
    }

    pub(crate) async fn touch(
        &self,
        req: TouchRequest,
        forwarded: bool,
    ) -> Result<TouchResponse, Status> {
        let key = req.key.clone();
        self.write(
            "touch",
            &key,
            forwarded,
            true,
            req,
            |mut c, r| Box::pin(async move { c.touch(r).await }),
            |this, req| {
                let found = this
                    .store
                    .touch(&req.key, ttl(req.ttl_ms))
                    .map_err(to_status)?;
                Ok(Applied {
                    reply: TouchResponse { found },
                    replicate: found,
                })
            },
        )
        .await
    }

    pub(crate) async fn increment(
        &self,
        req: IncrementRequest,
        forwarded: bool,
    ) -> Result<IncrementResponse, Status> {
        let key = req.key.clone();
        self.write(
            "increment",
            &key,
            forwarded,
            true,
            req,
            |mut c, r| Box::pin(async move { c.increment(r).await }),
            |this, req| {
                let (value, version) = this
                    .store
                    .incr(&req.key, req.delta, req.initial, ttl(req.ttl_ms))
                    .map_err(to_status)?;
                Ok(Applied {
                    reply: IncrementResponse { value, version },
                    replicate: true,
                })
            },
        )
        .await
    }
    fn node_stats(&self) -> proto::NodeStats {
        let s = self.store.stats();
        proto::NodeStats {
            node_id: self.node.node_id.clone(),
            items: s.items,
            bytes: s.bytes,
            limit_bytes: s.limit,
            hits: s.hits,
            misses: s.misses,
            evictions: s.evictions,
            expirations: s.expirations,
            uptime_seconds: self.node.started.elapsed().as_secs(),
        }
    }
}
