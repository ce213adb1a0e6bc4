//! The Pipeline stream: commands in, replies out in command order, commands on one key
//! one after another.

use std::collections::HashMap;
use std::pin::Pin;

use bytes::Bytes;
use futures::StreamExt as _;
use kcache_client::proto::{self, Command, Reply, command, reply};
use tokio::sync::oneshot::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Status, Streaming};

use super::CacheService;
/// Replies a pipeline may have waiting for the client before it stops reading
/// commands; bounds a pipeline's memory when its client reads slowly.
const PIPELINE_BACKLOG: usize = 1024;
/// Commands of one pipeline in flight at once (forwarded ones wait on peers).
const PIPELINE_DEPTH: usize = 128;

pub(super) type ReplyStream = Pin<Box<dyn Stream<Item = Result<Reply, Status>> + Send + 'static>>;

impl CacheService {
    /// Serves one Pipeline stream: replies go out in command order until the client
    /// closes its side, a command stream fails, or the node stops.
    pub(super) fn pipeline(&self, commands: Streaming<Command>) -> ReplyStream {
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
        Box::pin(ReceiverStream::new(rx))
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
/// dropped). The map holds the receiver of each key's latest command, which no one
/// awaits yet: the next command on the key takes it out.
#[derive(Default)]
struct KeyOrder {
    last: HashMap<Bytes, oneshot::Receiver<()>>,
}

type Turn = (Option<oneshot::Receiver<()>>, oneshot::Sender<()>);

impl KeyOrder {
    /// Registers the next command on `key`: what it waits for, and what it drops when
    /// done.
    fn turn(&mut self, key: Bytes) -> Turn {
        if self.last.len() > 4 * PIPELINE_DEPTH {
            // Keys whose latest command finished: `try_recv` sees a dropped sender
            // without polling (a poll would spend the task's coop budget and report
            // finished commands as pending once it ran out). At most the commands in
            // flight (PIPELINE_DEPTH) stay, so this runs once every few hundred
            // commands.
            self.last
                .retain(|_, done| matches!(done.try_recv(), Err(TryRecvError::Empty)));
        }
        let (done, finished) = oneshot::channel();
        let before = self.last.insert(key, finished);
        (before, done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // In a runtime, as a pipeline runs: a poll-based check would run out of the task's
    // coop budget after 128 receivers and keep the rest.
    #[tokio::test]
    async fn the_keys_of_finished_commands_are_forgotten() {
        // A pipeline over many keys: remembering every key made each command scan
        // them all (24.8 µs of node CPU per key at 100,000 keys).
        let mut order = KeyOrder::default();
        for i in 0..10_000 {
            let (before, done) = order.turn(Bytes::from(format!("key-{i}")));
            assert!(before.is_none());
            drop(done);
        }
        assert!(
            order.last.len() <= 4 * PIPELINE_DEPTH + 1,
            "{} keys remembered after 10,000 finished commands",
            order.last.len()
        );
    }

    #[tokio::test]
    async fn a_key_of_a_command_in_flight_is_remembered() {
        let mut order = KeyOrder::default();
        let (_, running) = order.turn(Bytes::from_static(b"busy"));
        for i in 0..10_000 {
            let (_, done) = order.turn(Bytes::from(format!("key-{i}")));
            drop(done);
        }
        let (before, _) = order.turn(Bytes::from_static(b"busy"));
        let mut before = before.expect("the running command is waited for");
        assert!(matches!(before.try_recv(), Err(TryRecvError::Empty)));
        drop(running);
        assert!(matches!(before.try_recv(), Err(TryRecvError::Closed)));
    }
}
