//! One benchmark connection per target, all with the same shape: run a batch of ops,
//! answer one flag per op (a GET hit, a stored SET).

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::wire::{Protocol, TextConn};
use super::{BenchError, Op, Target};
use kcache_client::proto::{self, command, reply};
use kcache_client::set_request;
use kcache_client::{Client, SetOptions, Ttl};

/// One connection of a benchmark.
#[derive(Debug)]
pub(super) enum Conn {
    /// A client of its own (one HTTP/2 connection per node); a batch is that many
    /// concurrent unary calls.
    Unary(Client),
    /// A batch is one MultiGet and/or one MultiSet.
    Multi(Client),
    /// An open Pipeline stream: a batch is written whole, then its replies read.
    Pipeline {
        commands: mpsc::Sender<proto::Command>,
        replies: Streaming<proto::Reply>,
        next_id: u64,
    },
    Text(TextConn),
}

/// Writes the benchmark issues: no TTL, like the SETs sent to Redis and memcached.
fn options() -> SetOptions {
    SetOptions {
        ttl: Ttl::Never,
        ..SetOptions::default()
    }
}

impl Conn {
    pub(super) async fn connect(
        target: Target,
        addr: &str,
        connect: &crate::Connect,
    ) -> Result<Self, BenchError> {
        let timeout = connect.timeout;
        let client = || async {
            let client = connect.builder(addr).retries(0).connect().await?;
            Ok::<_, BenchError>(client)
        };
        Ok(match target {
            Target::Kcache => Conn::Unary(client().await?),
            Target::KcacheMulti => Conn::Multi(client().await?),
            Target::KcachePipeline => {
                let (commands, rx) = mpsc::channel(1024);
                let mut raw = client().await?.raw();
                let replies = raw
                    .pipeline(ReceiverStream::new(rx))
                    .await
                    .map_err(|s| kcache_client::Error::from_status(s, timeout))?
                    .into_inner();
                Conn::Pipeline {
                    commands,
                    replies,
                    next_id: 0,
                }
            }
            Target::Redis => Conn::Text(TextConn::connect(addr, Protocol::Resp).await?),
            Target::Memcached => Conn::Text(TextConn::connect(addr, Protocol::Memcached).await?),
        })
    }

    pub(super) async fn run(&mut self, ops: &[Op], value: &Bytes) -> Result<Vec<bool>, BenchError> {
        match self {
            Conn::Unary(client) => {
                let client = &*client;
                let calls = ops.iter().map(|op| async move {
                    if op.set {
                        let outcome = client.set(op.key.clone(), value.clone(), options()).await?;
                        Ok::<_, kcache_client::Error>(outcome.stored)
                    } else {
                        Ok(client.get(op.key.clone()).await?.is_some())
                    }
                });
                let results = futures::future::join_all(calls).await;
                Ok(results.into_iter().collect::<Result<_, _>>()?)
            }
            Conn::Multi(client) => {
                let (sets, gets): (Vec<&Op>, Vec<&Op>) = ops.iter().partition(|op| op.set);
                let mut got = Vec::new().into_iter();
                let mut stored = Vec::new().into_iter();
                if !gets.is_empty() {
                    got = client
                        .mget(gets.iter().map(|op| op.key.clone()))
                        .await?
                        .into_iter();
                }
                if !sets.is_empty() {
                    let items = sets
                        .iter()
                        .map(|op| (op.key.clone(), value.clone(), options()));
                    stored = client.mset(items).await?.into_iter();
                }
                Ok(ops
                    .iter()
                    .map(|op| {
                        if op.set {
                            stored.next().is_some_and(|o| o.is_ok_and(|o| o.stored))
                        } else {
                            got.next().is_some_and(|v| v.is_some())
                        }
                    })
                    .collect())
            }
            Conn::Pipeline {
                commands,
                replies,
                next_id,
            } => {
                for op in ops {
                    *next_id += 1;
                    let op = if op.set {
                        command::Op::Set(set_request(op.key.clone(), value.clone(), options()))
                    } else {
                        command::Op::Get(proto::GetRequest {
                            key: op.key.clone(),
                        })
                    };
                    let cmd = proto::Command {
                        id: *next_id,
                        op: Some(op),
                    };
                    commands
                        .send(cmd)
                        .await
                        .map_err(|_| BenchError::Protocol("the pipeline stream closed".into()))?;
                }
                let mut results = Vec::with_capacity(ops.len());
                for _ in ops {
                    let reply = replies
                        .message()
                        .await
                        .map_err(|s| kcache_client::Error::from_status(s, Duration::ZERO))?
                        .ok_or_else(|| BenchError::Protocol("the pipeline stream ended".into()))?;
                    results.push(match reply.result {
                        Some(reply::Result::Get(get)) => get.found,
                        Some(reply::Result::Set(set)) => set.stored,
                        other => {
                            return Err(BenchError::Protocol(format!("pipeline reply {other:?}")));
                        }
                    });
                }
                Ok(results)
            }
            Conn::Text(conn) => conn.run(ops, value).await,
        }
    }
}
