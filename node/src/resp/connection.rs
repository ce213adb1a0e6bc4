//! One client connection: read what the socket has, run every whole command in it in
//! order, write all their replies with one write, repeat. A pipelining client thus
//! costs one read and one write per batch, like Redis.

use std::borrow::Borrow;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::exec::{Flow, PROTOCOL, Session};
use super::parse::next_command;
use super::reply::Out;
use super::{MAX_CONNECTIONS, Shared};

/// Read buffer to start with; grows to the largest command (a bulk's length is
/// reserved at once when its header arrives).
const READ_BUFFER: usize = 16 * 1024;
/// Replies held before they are written even though more commands are waiting: a
/// pipeline of large MGETs must not build a reply of gigabytes.
const FLUSH_AT: usize = 256 * 1024;

/// Commands in a batch from which its replies wait for the other connections'
/// batches before they are written (a yield to the runtime, which polls the
/// sockets first). Each write to a client that sleeps wakes it, and on loopback the
/// writer pays for that wake; writes that come in a burst find it awake, as Redis's
/// do (it writes every client's replies once per event-loop turn). Measured with
/// redis-benchmark -c 50 -P 16, the node on one core (`bench/redis-cpu.sh`): CPU
/// per GET 1.73/1.60 -> 1.11/1.04 us, per SET 1.87/1.84 -> 1.22/1.12 us. A
/// connection that sends one command at a time does not wait: there the yield cost
/// more than it saved (GET -P 1: 166k -> 108k requests/s).
const YIELD_AT: u64 = 2;

pub(super) async fn run<S>(
    mut socket: S,
    id: u64,
    shared: &Shared,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Connected<ConnectInfo: Borrow<TcpConnectInfo>> + Unpin,
{
    let info = socket.connect_info();
    let info: &TcpConnectInfo = info.borrow();
    let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
    let (peer, local) = (
        info.remote_addr().unwrap_or(unknown),
        info.local_addr().unwrap_or(unknown),
    );
    let mut input = BytesMut::with_capacity(READ_BUFFER);
    let mut output = BytesMut::with_capacity(READ_BUFFER);
    // Without tokens, or while a rollout that turns them on or off admits anonymous
    // callers, a connection starts authenticated (AUTH still checks a password sent).
    let open = shared
        .config
        .auth
        .as_ref()
        .is_none_or(|auth| auth.admits_anonymous());
    let mut session = Session::new(id, peer, local, open);
    // Request metrics are added per batch, not per command: figures every core
    // writes. (The command count stays exact per command: INFO reports it.)
    let requests = shared.service.metrics().local_requests(PROTOCOL);
    let mut batch = 0;
    let stopped = stop.wait_for(|&s| s);
    tokio::pin!(stopped);
    loop {
        loop {
            let command = match next_command(&mut input, &shared.config.limits) {
                Ok(Some(command)) => command,
                Ok(None) => break,
                Err(err) => {
                    // Where the next command starts is unknown: answer and close.
                    let mut out = Out {
                        buf: &mut output,
                        proto: session.proto,
                    };
                    out.error(&format!("ERR {err}"));
                    requests.flush();
                    socket.write_all(&output).await?;
                    return Ok(());
                }
            };
            batch += 1;
            shared.counters.commands.fetch_add(1, Ordering::Relaxed);
            let flow = session.run(shared, &requests, command, &mut output).await;
            if flow == Flow::Close {
                requests.flush();
                socket.write_all(&output).await?;
                return Ok(());
            }
            if output.len() >= FLUSH_AT {
                requests.flush();
                socket.write_all(&output).await?;
                output.clear();
            }
        }
        requests.flush();
        // Counted from the read on, whether or not a FLUSH_AT write emptied `output`.
        let burst = std::mem::take(&mut batch) >= YIELD_AT;
        if !output.is_empty() {
            if burst {
                tokio::task::yield_now().await;
            }
            socket.write_all(&output).await?;
            output.clear();
        }
        if input.capacity() - input.len() < 1024 {
            input.reserve(READ_BUFFER);
        }
        let read = tokio::select! {
            read = socket.read_buf(&mut input) => read?,
            _ = &mut stopped => return Ok(()),
        };
        if read == 0 {
            return Ok(());
        }
    }
}

/// Answers a connection over [`MAX_CONNECTIONS`] as Redis does, then closes it.
pub(super) async fn refuse<S: AsyncWrite + Unpin>(mut socket: S) {
    let message = format!("-ERR max number of clients reached ({MAX_CONNECTIONS})\r\n");
    let _ = socket.write_all(message.as_bytes()).await;
}
