//! The tonic side of the Cache service: metadata in, `Response` out.

use kcache_client::proto::{
    self, Command, DeleteRequest, DeleteResponse, GetRequest, GetResponse, IncrementRequest,
    IncrementResponse, MultiGetRequest, MultiGetResponse, MultiSetRequest, MultiSetResponse,
    SetRequest, SetResponse, TouchRequest, TouchResponse,
};
use tonic::{Request, Response, Status, Streaming};

use super::convert::{get_response, to_status};
use super::{CacheService, HOP_HEADER, PROBE};
fn is_forwarded<T>(req: &Request<T>) -> bool {
    req.metadata().contains_key(HOP_HEADER)
}

#[tonic::async_trait]
impl proto::cache_server::Cache for CacheService {
    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        if req.metadata().get(HOP_HEADER).is_some_and(|v| v == PROBE) {
            let key = &req.get_ref().key;
            let found = self.store.get(key).map_err(to_status).map(|entry| {
                let mut reply = get_response(entry);
                if !reply.found {
                    reply.deleted_version = self.store.tombstone(key).unwrap_or(0);
                }
                reply
            });
            return self
                .observed("probe", async { found })
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

    type PipelineStream = super::pipeline::ReplyStream;

    async fn pipeline(
        &self,
        req: Request<Streaming<Command>>,
    ) -> Result<Response<Self::PipelineStream>, Status> {
        Ok(Response::new(self.pipeline(req.into_inner())))
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
