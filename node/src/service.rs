//! The `kcache.v1.Cache` gRPC service: translates requests into store calls and store
//! errors into gRPC statuses. This is the only place that knows about `tonic::Status`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kcache_client::proto::{
    self, Command, GetRequest, GetResponse, IncrementRequest, IncrementResponse, Reply,
    SetCondition, SetRequest, SetResponse, command, reply,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use crate::metrics::Metrics;
use crate::store::{Condition, Entry, Store, StoreError, Ttl};

/// Most keys one MultiGet or MultiSet may carry: large enough for any sensible batch,
/// small enough that one request cannot hold a shard lock set for long or build a
/// reply of gigabytes.
pub const MAX_BATCH: usize = 10_000;
/// Replies a pipeline may have waiting for the client before it stops reading
/// commands; bounds a pipeline's memory when its client reads slowly.
const PIPELINE_BACKLOG: usize = 1024;

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
    /// Turns true when the node stops; open pipelines end then.
    stop: watch::Receiver<bool>,
}

impl CacheService {
    pub fn new(
        store: Arc<Store>,
        metrics: Metrics,
        node: NodeInfo,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Self {
            store,
            metrics,
            node,
            stop,
        }
    }

    /// Runs one operation and records its outcome.
    fn observed<T>(&self, op: &str, f: impl FnOnce() -> Result<T, Status>) -> Result<T, Status> {
        let started = Instant::now();
        let result = f();
        let code = result
            .as_ref()
            .map_or_else(Status::code, |_| tonic::Code::Ok);
        self.metrics.observe(op, code, started);
        result
    }

    fn get(&self, req: &GetRequest) -> Result<GetResponse, Status> {
        let entry = self.store.get(&req.key).map_err(to_status)?;
        Ok(get_response(entry))
    }

    fn set(&self, req: &SetRequest) -> Result<SetResponse, Status> {
        let condition = condition(req)?;
        let out = self
            .store
            .set(&req.key, &req.value, ttl(req.ttl_ms), condition)
            .map_err(to_status)?;
        Ok(SetResponse {
            stored: out.stored,
            version: out.version,
        })
    }

    fn delete(&self, req: &proto::DeleteRequest) -> Result<proto::DeleteResponse, Status> {
        let deleted = self
            .store
            .delete(&req.key, req.if_version)
            .map_err(to_status)?;
        Ok(proto::DeleteResponse { deleted })
    }

    fn touch(&self, req: &proto::TouchRequest) -> Result<proto::TouchResponse, Status> {
        let found = self
            .store
            .touch(&req.key, ttl(req.ttl_ms))
            .map_err(to_status)?;
        Ok(proto::TouchResponse { found })
    }

    fn increment(&self, req: &IncrementRequest) -> Result<IncrementResponse, Status> {
        let (value, version) = self
            .store
            .incr(&req.key, req.delta, req.initial, ttl(req.ttl_ms))
            .map_err(to_status)?;
        Ok(IncrementResponse { value, version })
    }

    fn multi_set(&self, items: &[SetRequest]) -> Result<Vec<SetResponse>, Status> {
        check_batch(items.len())?;
        // Refuse the whole batch before writing any of it.
        for (i, item) in items.iter().enumerate() {
            condition(item)
                .map_err(|s| Status::new(s.code(), format!("items[{i}]: {}", s.message())))?;
            self.store
                .check_set(&item.key, &item.value, ttl(item.ttl_ms))
                .map_err(|e| {
                    let status = to_status(e);
                    Status::new(status.code(), format!("items[{i}]: {}", status.message()))
                })?;
        }
        items.iter().map(|item| self.set(item)).collect()
    }

    /// Executes one pipelined command; errors become in-band replies.
    fn execute(&self, command: Command) -> Reply {
        let result = match command.op {
            Some(command::Op::Get(r)) => self
                .observed("get", || self.get(&r))
                .map(reply::Result::Get),
            Some(command::Op::Set(r)) => self
                .observed("set", || self.set(&r))
                .map(reply::Result::Set),
            Some(command::Op::Delete(r)) => self
                .observed("delete", || self.delete(&r))
                .map(reply::Result::Delete),
            Some(command::Op::Touch(r)) => self
                .observed("touch", || self.touch(&r))
                .map(reply::Result::Touch),
            Some(command::Op::Increment(r)) => self
                .observed("increment", || self.increment(&r))
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
    }
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<Reply, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl proto::cache_server::Cache for CacheService {
    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        self.observed("get", || self.get(req.get_ref()))
            .map(Response::new)
    }

    async fn set(&self, req: Request<SetRequest>) -> Result<Response<SetResponse>, Status> {
        self.observed("set", || self.set(req.get_ref()))
            .map(Response::new)
    }

    async fn delete(
        &self,
        req: Request<proto::DeleteRequest>,
    ) -> Result<Response<proto::DeleteResponse>, Status> {
        self.observed("delete", || self.delete(req.get_ref()))
            .map(Response::new)
    }

    async fn touch(
        &self,
        req: Request<proto::TouchRequest>,
    ) -> Result<Response<proto::TouchResponse>, Status> {
        self.observed("touch", || self.touch(req.get_ref()))
            .map(Response::new)
    }

    async fn increment(
        &self,
        req: Request<IncrementRequest>,
    ) -> Result<Response<IncrementResponse>, Status> {
        self.observed("increment", || self.increment(req.get_ref()))
            .map(Response::new)
    }

    async fn multi_get(
        &self,
        req: Request<proto::MultiGetRequest>,
    ) -> Result<Response<proto::MultiGetResponse>, Status> {
        self.observed("multi_get", || {
            let keys = &req.get_ref().keys;
            check_batch(keys.len())?;
            let values = keys
                .iter()
                .enumerate()
                .map(|(i, key)| {
                    self.store
                        .get(key)
                        .map(get_response)
                        .map_err(|e| Status::invalid_argument(format!("keys[{i}]: {e}")))
                })
                .collect::<Result<_, _>>()?;
            Ok(proto::MultiGetResponse { values })
        })
        .map(Response::new)
    }

    async fn multi_set(
        &self,
        req: Request<proto::MultiSetRequest>,
    ) -> Result<Response<proto::MultiSetResponse>, Status> {
        self.observed("multi_set", || {
            let results = self.multi_set(&req.get_ref().items)?;
            Ok(proto::MultiSetResponse { results })
        })
        .map(Response::new)
    }

    type PipelineStream = ReplyStream;

    async fn pipeline(
        &self,
        req: Request<Streaming<Command>>,
    ) -> Result<Response<Self::PipelineStream>, Status> {
        let mut commands = req.into_inner();
        let (tx, rx) = mpsc::channel(PIPELINE_BACKLOG);
        let service = self.clone();
        let stop = crate::server::stopped(self.stop.clone());
        tokio::spawn(async move {
            tokio::pin!(stop);
            loop {
                let next = tokio::select! {
                    next = commands.next() => next,
                    () = &mut stop => break,
                };
                let Some(next) = next else { break };
                let reply = next.map(|command| service.execute(command));
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
        _req: Request<proto::StatsRequest>,
    ) -> Result<Response<proto::StatsResponse>, Status> {
        self.observed("stats", || {
            let s = self.store.stats();
            Ok(proto::StatsResponse {
                nodes: vec![proto::NodeStats {
                    node_id: self.node.node_id.clone(),
                    items: s.items,
                    bytes: s.bytes,
                    limit_bytes: s.limit,
                    hits: s.hits,
                    misses: s.misses,
                    evictions: s.evictions,
                    expirations: s.expirations,
                    uptime_seconds: self.node.started.elapsed().as_secs(),
                }],
            })
        })
        .map(Response::new)
    }

    async fn topology(
        &self,
        _req: Request<proto::TopologyRequest>,
    ) -> Result<Response<proto::TopologyResponse>, Status> {
        // A single node (--discovery none): it is the only member and owns every key.
        self.observed("topology", || {
            Ok(proto::TopologyResponse {
                members: vec![proto::Member {
                    id: self.node.node_id.clone(),
                    address: self.node.address.clone(),
                    ready: true,
                }],
                replication_factor: 1,
                epoch: 1,
            })
        })
        .map(Response::new)
    }
}
