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

use super::exec::{Flow, Session};
use super::parse::next_command;
use super::reply::Out;
use super::{MAX_CONNECTIONS, Shared};

/// Read buffer to start with; grows to the largest command (a bulk's length is
/// reserved at once when its header arrives).
const READ_BUFFER: usize = 16 * 1024;
/// Replies held before they are written even though more commands are waiting: a
/// pipeline of large MGETs must not build a reply of gigabytes.
const FLUSH_AT: usize = 256 * 1024;

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
                    socket.write_all(&output).await?;
                    return Ok(());
                }
            };
            shared.counters.commands.fetch_add(1, Ordering::Relaxed);
            let flow = session.run(shared, command, &mut output).await;
            if flow == Flow::Close {
                socket.write_all(&output).await?;
                return Ok(());
            }
            if output.len() >= FLUSH_AT {
                socket.write_all(&output).await?;
                output.clear();
            }
        }
        if !output.is_empty() {
            socket.write_all(&output).await?;
            output.clear();
        }
        if input.capacity() - input.len() < 1024 {
            input.reserve(READ_BUFFER);
        }
        let read = tokio::select! {
            read = socket.read_buf(&mut input) => read?,
            _ = stop.wait_for(|&s| s) => return Ok(()),
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
