//! The `kcache.v1.Cache` gRPC service. Each request is served where its key lives:
//! locally when this node owns the key, otherwise forwarded once to the owners (with
//! hop metadata, so a forwarded request is never forwarded again). Writes are
//! coordinated by the key's primary owner, which replicates them to the others.
//! This is the only place that knows about `tonic::Status`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use futures::future::{FutureExt as _, Shared};
use kcache_client::Connection;
use kcache_client::placement::Member;
use kcache_client::proto::{
    self, Command, DeleteRequest, DeleteResponse, GetRequest, GetResponse, IncrementRequest,
    IncrementResponse, MultiGetRequest, MultiGetResponse, MultiSetRequest, MultiSetResponse, Reply,
    SetCondition, SetRequest, SetResponse, TouchRequest, TouchResponse, cache_client::CacheClient,
    command, reply,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use crate::cluster::replicate::Route;
use crate::cluster::{Cluster, Placement, WriteAck};
use crate::metrics::Metrics;
use crate::store::{Condition, Entry, Store, StoreError, Ttl};

/// Most keys one MultiGet or MultiSet may carry: large enough for any sensible batch,
/// small enough that one request cannot hold a node for long or build a reply of
/// gigabytes.
pub const MAX_BATCH: usize = 10_000;
/// Replies a pipeline may have waiting for the client before it stops reading
/// commands; bounds a pipeline's memory when its client reads slowly.
const PIPELINE_BACKLOG: usize = 1024;
/// Commands of one pipeline in flight at once (forwarded ones wait on peers).
const PIPELINE_DEPTH: usize = 128;
/// Metadata that marks a request a peer forwarded; such a request is served here.
pub const HOP_HEADER: &str = "kcache-hop";
/// The [`HOP_HEADER`] value of a read-through probe: a GET answered from this node's
/// store alone, so probes never fan out further.
pub const PROBE: &str = "probe";
/// Deadline of a forwarded request or a replication call: peers answer in
/// microseconds, so a second means the peer is in trouble.
const PEER_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a coordinated write waits for its copies (`--write-ack all`) before it
/// answers: half of [`PEER_TIMEOUT`], the deadline a forwarding peer gives the
/// coordinator, so a write the coordinator applied is never reported to the client as
/// timed out (and retried: an increment counted twice). A replica slower than this
/// counts as unreachable for the write; its copy still goes, in order, behind it.
const REPLICATION_WAIT: Duration = Duration::from_millis(500);
/// Deadline of a read-through probe: a quarter of [`PEER_TIMEOUT`], so a write that
/// first fetches a key it lacks and then waits for its copies still answers within
/// the forwarding deadline, and a frozen previous owner costs a miss little.
const PROBE_TIMEOUT: Duration = Duration::from_millis(250);

/// A write as applied here: the reply, and whether the key's other owners must follow.
/// A write that changed nothing here (a failed condition, a Touch of a missing key)
/// must leave their copies alone: this node may lack a key they hold (evicted here, or
/// a handoff on its way).
struct Applied<Resp> {
    reply: Resp,
    replicate: bool,
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

    /// Runs one operation and records its outcome.
    async fn observed<T>(
        &self,
        op: &str,
        f: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let started = Instant::now();
        let result = f.await;
        let code = result
            .as_ref()
            .map_or_else(Status::code, |_| tonic::Code::Ok);
        self.metrics.observe(op, code, started);
        result
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
    /// provably did not take the request) moves on to the next; so does
    /// DEADLINE_EXCEEDED for a `read`, but not for a write, which the owner may have
    /// applied: taking it elsewhere could apply an increment twice.
    async fn forward<Req: Clone, Resp>(
        &self,
        op: &str,
        read: bool,
        targets: impl IntoIterator<Item = &Member>,
        message: Req,
        call: Call<Req, Resp>,
    ) -> Result<Resp, Status> {
        let mut last = Status::unavailable("no owner of the key is reachable");
        for member in targets {
            let mut request = Request::new(message.clone());
            request.set_timeout(PEER_TIMEOUT);
            request
                .metadata_mut()
                .insert(HOP_HEADER, tonic::metadata::MetadataValue::from_static("1"));
            match call(self.cluster.peers.cache(&member.address), request).await {
                Ok(response) => {
                    self.metrics.forwarded(op);
                    return Ok(response.into_inner());
                }
                Err(status)
                    if status.code() == tonic::Code::Unavailable
                        || read && status.code() == tonic::Code::DeadlineExceeded =>
                {
                    tracing::debug!(peer = %member.id, %status, "owner unreachable");
                    last = Status::unavailable(format!(
                        "owner {} of the key is unreachable: {}",
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
    /// key's current state (a condition, an increment, a touch) first fetches a key this
    /// node lacks from where a handoff may still be bringing it.
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
            self.fetch_missing(key).await;
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

    async fn get(&self, req: GetRequest, forwarded: bool) -> Result<GetResponse, Status> {
        match self.place(&req.key, forwarded) {
            Some(p) if !p.local => {
                self.forward("get", true, &p.owners, req, |mut c, r| {
                    Box::pin(async move { c.get(r).await })
                })
                .await
            }
            _ => {
                let found = get_response(self.store.get(&req.key).map_err(to_status)?);
                Ok(self.read_through(&req.key, found).await)
            }
        }
    }

    /// A local miss while a handoff may still be on its way here is looked for at the
    /// key's previous and other owners, so a key that moved is not reported missing
    /// before it arrives; the newest copy found wins.
    async fn read_through(&self, key: &Bytes, local: GetResponse) -> GetResponse {
        if local.found {
            return local;
        }
        let elsewhere = self.cluster.read_through(key);
        if elsewhere.is_empty() {
            return local;
        }
        let probes = elsewhere.iter().map(|member| {
            let mut client = self.cluster.peers.cache(&member.address);
            let mut request = Request::new(GetRequest { key: key.clone() });
            request.set_timeout(PROBE_TIMEOUT);
            request.metadata_mut().insert(
                HOP_HEADER,
                tonic::metadata::MetadataValue::from_static(PROBE),
            );
            async move { client.get(request).await }
        });
        let newest = futures::future::join_all(probes)
            .await
            .into_iter()
            .filter_map(|reply| reply.ok().map(Response::into_inner))
            .filter(|reply| reply.found)
            .max_by_key(|reply| reply.version);
        if newest.is_some() {
            self.metrics.read_through();
        }
        newest.unwrap_or(local)
    }

    /// Takes in the newest copy of a key this node lacks from the key's previous and
    /// other owners while a handoff may be on its way ([`Cluster::read_through`]), so
    /// a write that depends on the key's state sees it: an increment goes on from the
    /// value the key had, an IfAbsent set does not succeed twice.
    async fn fetch_missing(&self, key: &Bytes) {
        if self.store.peek(key).is_some() {
            return;
        }
        let found = self.read_through(key, GetResponse::default()).await;
        if !found.found {
            return;
        }
        let entry = crate::store::Versioned {
            key: key.clone(),
            value: found.value,
            version: found.version,
            ttl_ms: found.ttl_ms,
        };
        if let Err(err) = self.store.apply(&entry) {
            tracing::debug!(%err, "could not take in a fetched entry");
        }
    }

    async fn set(&self, req: SetRequest, forwarded: bool) -> Result<SetResponse, Status> {
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
                    },
                    replicate: out.stored,
                })
            },
        )
        .await
    }

    async fn delete(&self, req: DeleteRequest, forwarded: bool) -> Result<DeleteResponse, Status> {
        let key = req.key.clone();
        self.write(
            "delete",
            &key,
            forwarded,
            req.if_version.is_some(),
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

    async fn touch(&self, req: TouchRequest, forwarded: bool) -> Result<TouchResponse, Status> {
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

    async fn increment(
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

    async fn multi_get(
        &self,
        keys: Vec<Bytes>,
        forwarded: bool,
    ) -> Result<Vec<GetResponse>, Status> {
        check_batch(keys.len())?;
        for (i, key) in keys.iter().enumerate() {
            self.store
                .check_key(key)
                .map_err(|e| prefixed(&format!("keys[{i}]"), to_status(e)))?;
        }
        let mut replies = vec![GetResponse::default(); keys.len()];
        let mut remote: HashMap<String, (Member, Vec<usize>)> = HashMap::new();
        let mut misses = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            match self.place(key, forwarded) {
                Some(p) if !p.local => {
                    let primary = first_owner(&p)?;
                    remote
                        .entry(primary.id.clone())
                        .or_insert((primary, vec![]))
                        .1
                        .push(i);
                }
                _ => {
                    replies[i] = get_response(self.store.get(key).map_err(to_status)?);
                    if !replies[i].found {
                        misses.push(i);
                    }
                }
            }
        }
        let keys = &keys;
        let lookups = misses.into_iter().map(|i| {
            let miss = replies[i].clone();
            async move { (i, self.read_through(&keys[i], miss).await) }
        });
        for (i, reply) in futures::future::join_all(lookups).await {
            replies[i] = reply;
        }
        let groups = remote.into_values().map(|(member, indexes)| {
            let subset = MultiGetRequest {
                keys: indexes.iter().map(|&i| keys[i].clone()).collect(),
            };
            async move {
                let result = self
                    .forward("multi_get", true, [&member], subset, |mut c, r| {
                        Box::pin(async move { c.multi_get(r).await })
                    })
                    .await;
                (indexes, result)
            }
        });
        for (indexes, result) in futures::future::join_all(groups).await {
            match result {
                Ok(reply) if reply.values.len() == indexes.len() => {
                    for (i, value) in indexes.into_iter().zip(reply.values) {
                        replies[i] = value;
                    }
                }
                // The primary is down or answered oddly: each key goes its own way,
                // which falls back to the next owner.
                _ => {
                    for i in indexes {
                        replies[i] = Box::pin(self.get(
                            GetRequest {
                                key: keys[i].clone(),
                            },
                            false,
                        ))
                        .await?;
                    }
                }
            }
        }
        Ok(replies)
    }

    async fn multi_set(
        &self,
        items: Vec<SetRequest>,
        forwarded: bool,
    ) -> Result<Vec<SetResponse>, Status> {
        check_batch(items.len())?;
        // Refuse the whole batch before writing any of it.
        for (i, item) in items.iter().enumerate() {
            let label = format!("items[{i}]");
            condition(item).map_err(|s| prefixed(&label, s))?;
            self.store
                .check_set(&item.key, &item.value, ttl(item.ttl_ms))
                .map_err(|e| prefixed(&label, to_status(e)))?;
        }
        let mut replies = vec![SetResponse::default(); items.len()];
        let mut remote: HashMap<String, (Member, Vec<usize>)> = HashMap::new();
        let mut local = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match self.place(&item.key, forwarded) {
                Some(p) if !p.primary => {
                    let primary = first_owner(&p)?;
                    remote
                        .entry(primary.id.clone())
                        .or_insert((primary, vec![]))
                        .1
                        .push(i);
                }
                _ => local.push(i),
            }
        }
        for i in local {
            replies[i] = self.set(items[i].clone(), forwarded).await?;
        }
        let groups = remote.into_values().map(|(member, indexes)| {
            let subset = MultiSetRequest {
                items: indexes.iter().map(|&i| items[i].clone()).collect(),
            };
            async move {
                let result = self
                    .forward("multi_set", false, [&member], subset, |mut c, r| {
                        Box::pin(async move { c.multi_set(r).await })
                    })
                    .await;
                (indexes, result)
            }
        });
        for (indexes, result) in futures::future::join_all(groups).await {
            match result {
                Ok(reply) if reply.results.len() == indexes.len() => {
                    for (i, value) in indexes.into_iter().zip(reply.results) {
                        replies[i] = value;
                    }
                }
                Err(status) if status.code() != tonic::Code::Unavailable => return Err(status),
                _ => {
                    for i in indexes {
                        replies[i] = Box::pin(self.set(items[i].clone(), false)).await?;
                    }
                }
            }
        }
        Ok(replies)
    }

    /// Executes one pipelined command; errors become in-band replies.
    async fn execute(&self, command: Command) -> Reply {
        let result = match command.op {
            Some(command::Op::Get(r)) => self
                .observed("get", self.get(r, false))
                .await
                .map(reply::Result::Get),
            Some(command::Op::Set(r)) => self
                .observed("set", self.set(r, false))
                .await
                .map(reply::Result::Set),
            Some(command::Op::Delete(r)) => self
                .observed("delete", self.delete(r, false))
                .await
                .map(reply::Result::Delete),
            Some(command::Op::Touch(r)) => self
                .observed("touch", self.touch(r, false))
                .await
                .map(reply::Result::Touch),
            Some(command::Op::Increment(r)) => self
                .observed("increment", self.increment(r, false))
                .await
                .map(reply::Result::Increment),
            None => Err(Status::invalid_argument(
                "command has no op: set one of get, set, delete, touch, increment",
            )),
        };
        let result = result.unwrap_or_else(|status| {
            reply::Result::Error(proto::Error {
                code: status.code() as i32,
                message: status.message().to_owned(),
            })
        });
        Reply {
            id: command.id,
            result: Some(result),
        }
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

/// The key's primary owner. A node that drains while every other member leaves (a
/// scale to zero) places keys on nobody.
fn first_owner(placement: &Placement) -> Result<Member, Status> {
    placement.owners.first().cloned().ok_or_else(|| {
        Status::unavailable("this node is leaving and no member is left to own the key")
    })
}

/// The key a pipelined command is about.
fn command_key(command: &Command) -> Option<Bytes> {
    match command.op.as_ref()? {
        command::Op::Get(r) => Some(r.key.clone()),
        command::Op::Set(r) => Some(r.key.clone()),
        command::Op::Delete(r) => Some(r.key.clone()),
        command::Op::Touch(r) => Some(r.key.clone()),
        command::Op::Increment(r) => Some(r.key.clone()),
    }
}

/// Which command of a pipeline each key waits for: the last one on it so far. A
/// command's turn comes when the one before it on its key has finished (its sender
/// dropped).
#[derive(Default)]
struct KeyOrder {
    last: HashMap<Bytes, Shared<oneshot::Receiver<()>>>,
}

type Turn = (Option<Shared<oneshot::Receiver<()>>>, oneshot::Sender<()>);

impl KeyOrder {
    /// Registers the next command on `key`: what it waits for, and what it drops when
    /// done.
    fn turn(&mut self, key: Bytes) -> Turn {
        if self.last.len() > 4 * PIPELINE_DEPTH {
            self.last.retain(|_, done| done.peek().is_none());
        }
        let (done, finished) = oneshot::channel();
        let before = self.last.insert(key, finished.shared());
        (before, done)
    }
}

fn is_forwarded<T>(req: &Request<T>) -> bool {
    req.metadata().contains_key(HOP_HEADER)
}

fn prefixed(label: &str, status: Status) -> Status {
    Status::new(status.code(), format!("{label}: {}", status.message()))
}

fn get_response(entry: Option<Entry>) -> GetResponse {
    match entry {
        Some(entry) => GetResponse {
            found: true,
            value: entry.value,
            version: entry.version,
            ttl_ms: entry.ttl_ms,
        },
        None => GetResponse::default(),
    }
}

/// The proto's TTL convention: absent = the node default, 0 = never, else milliseconds.
fn ttl(ttl_ms: Option<u64>) -> Ttl {
    match ttl_ms {
        None => Ttl::Default,
        Some(0) => Ttl::Never,
        Some(ms) => Ttl::After(Duration::from_millis(ms)),
    }
}

fn condition(req: &SetRequest) -> Result<Condition, Status> {
    match SetCondition::try_from(req.condition) {
        Ok(SetCondition::Always) => Ok(Condition::Always),
        Ok(SetCondition::IfAbsent) => Ok(Condition::IfAbsent),
        Ok(SetCondition::IfPresent) => Ok(Condition::IfPresent),
        Ok(SetCondition::IfVersion) => Ok(Condition::IfVersion(req.version)),
        Err(_) => Err(Status::invalid_argument(format!(
            "condition {} is not a SetCondition (0 always, 1 if absent, 2 if present, 3 if version)",
            req.condition
        ))),
    }
}

fn check_batch(len: usize) -> Result<(), Status> {
    if len > MAX_BATCH {
        return Err(Status::invalid_argument(format!(
            "batch has {len} keys; the limit is {MAX_BATCH}"
        )));
    }
    Ok(())
}

/// Store errors as the statuses the API documents.
pub fn to_status(err: StoreError) -> Status {
    let message = err.to_string();
    match err {
        StoreError::EmptyKey { .. }
        | StoreError::KeyTooLong { .. }
        | StoreError::ValueTooLarge { .. }
        | StoreError::TtlTooLong { .. }
        | StoreError::TtlZero => Status::invalid_argument(message),
        StoreError::LargerThanMemory { .. } => Status::resource_exhausted(message),
        StoreError::NotAnInteger | StoreError::Overflow { .. } => {
            Status::failed_precondition(message)
        }
        StoreError::VersionAhead { .. } => Status::invalid_argument(message),
    }
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<Reply, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl proto::cache_server::Cache for CacheService {
    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        if req.metadata().get(HOP_HEADER).is_some_and(|v| v == PROBE) {
            let found = self.store.get(&req.get_ref().key).map_err(to_status);
            return self
                .observed("probe", async { found.map(get_response) })
                .await
                .map(Response::new);
        }
        let forwarded = is_forwarded(&req);
        self.observed("get", self.get(req.into_inner(), forwarded))
            .await
            .map(Response::new)
    }

    async fn set(&self, req: Request<SetRequest>) -> Result<Response<SetResponse>, Status> {
        let forwarded = is_forwarded(&req);
        self.observed("set", self.set(req.into_inner(), forwarded))
            .await
            .map(Response::new)
    }

    async fn delete(
        &self,
        req: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let forwarded = is_forwarded(&req);
        self.observed("delete", self.delete(req.into_inner(), forwarded))
            .await
            .map(Response::new)
    }

    async fn touch(&self, req: Request<TouchRequest>) -> Result<Response<TouchResponse>, Status> {
        let forwarded = is_forwarded(&req);
        self.observed("touch", self.touch(req.into_inner(), forwarded))
            .await
            .map(Response::new)
    }

    async fn increment(
        &self,
        req: Request<IncrementRequest>,
    ) -> Result<Response<IncrementResponse>, Status> {
        let forwarded = is_forwarded(&req);
        self.observed("increment", self.increment(req.into_inner(), forwarded))
            .await
            .map(Response::new)
    }

    async fn multi_get(
        &self,
        req: Request<MultiGetRequest>,
    ) -> Result<Response<MultiGetResponse>, Status> {
        let forwarded = is_forwarded(&req);
        let keys = req.into_inner().keys;
        self.observed("multi_get", self.multi_get(keys, forwarded))
            .await
            .map(|values| Response::new(MultiGetResponse { values }))
    }

    async fn multi_set(
        &self,
        req: Request<MultiSetRequest>,
    ) -> Result<Response<MultiSetResponse>, Status> {
        let forwarded = is_forwarded(&req);
        let items = req.into_inner().items;
        self.observed("multi_set", self.multi_set(items, forwarded))
            .await
            .map(|results| Response::new(MultiSetResponse { results }))
    }

    type PipelineStream = ReplyStream;

    async fn pipeline(
        &self,
        req: Request<Streaming<Command>>,
    ) -> Result<Response<Self::PipelineStream>, Status> {
        let commands = req.into_inner();
        let (tx, rx) = mpsc::channel(PIPELINE_BACKLOG);
        let service = self.clone();
        let stop = crate::server::stopped(self.stop.clone());
        tokio::spawn(async move {
            // Commands run up to PIPELINE_DEPTH at a time; `buffered` yields their
            // replies in command order. They borrow the service rather than clone it:
            // a clone per command (metrics handles, node id strings) cost more than
            // serving a local GET.
            // Commands on one key run one after another, in command order, so a GET
            // sees the SET before it even when both are forwarded.
            let service = &service;
            let mut order = KeyOrder::default();
            let mut replies = commands
                .map(|next| {
                    let turn = next
                        .as_ref()
                        .ok()
                        .and_then(command_key)
                        .map(|k| order.turn(k));
                    async move {
                        let command = next?;
                        let done = match turn {
                            Some((before, done)) => {
                                if let Some(before) = before {
                                    let _ = before.await;
                                }
                                Some(done)
                            }
                            None => None,
                        };
                        let reply = service.execute(command).await;
                        drop(done);
                        Ok(reply)
                    }
                })
                .buffered(PIPELINE_DEPTH);
            tokio::pin!(stop);
            loop {
                let next = tokio::select! {
                    next = replies.next() => next,
                    () = &mut stop => break,
                };
                let Some(reply) = next else { break };
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn stats(
        &self,
        req: Request<proto::StatsRequest>,
    ) -> Result<Response<proto::StatsResponse>, Status> {
        let forwarded = is_forwarded(&req);
        self.observed("stats", async {
            let mut nodes = vec![self.node_stats()];
            if !forwarded && !self.cluster.is_single() {
                // Every member's own figures, so one call shows the whole cluster.
                let view = self.cluster.view();
                let others = view.members().iter().filter(|m| m.id != self.cluster.me.id);
                let calls = others.map(|member| {
                    self.forward(
                        "stats",
                        true,
                        [member],
                        proto::StatsRequest {},
                        |mut c, r| Box::pin(async move { c.stats(r).await }),
                    )
                });
                for reply in futures::future::join_all(calls).await.into_iter().flatten() {
                    nodes.extend(reply.nodes);
                }
            }
            Ok(proto::StatsResponse { nodes })
        })
        .await
        .map(Response::new)
    }

    async fn topology(
        &self,
        _req: Request<proto::TopologyRequest>,
    ) -> Result<Response<proto::TopologyResponse>, Status> {
        self.observed("topology", async {
            let view = self.cluster.view();
            Ok(proto::TopologyResponse {
                members: view
                    .members()
                    .iter()
                    .map(|m| proto::Member {
                        id: m.id.clone(),
                        address: m.address.clone(),
                        ready: true,
                    })
                    .collect(),
                replication_factor: self.cluster.replication as u32,
                epoch: view.epoch(),
            })
        })
        .await
        .map(Response::new)
    }
}
