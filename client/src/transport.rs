//! A lean HTTP/2 transport for kcache's gRPC stubs, built on the `h2` crate.
//!
//! tonic's `Channel` puts a request through a `tower::Buffer` worker, hyper's
//! connection task and, for the body, a pipe task that waits for flow-control
//! capacity the stream only gets once the connection task has written its HEADERS.
//! A unary call therefore goes out as two or three writes (HEADERS, DATA and often an
//! empty END_STREAM DATA), each a TCP segment the server must receive and acknowledge.
//! Profiling `kcache bench` showed that this shape costs the node about 45% more CPU
//! per GET than the same requests written by h2load, and the client as much again.
//!
//! [`Connection`] sends a request's HEADERS and whatever body is ready at once from
//! the caller's task, so h2 writes a unary call in one go. Only a body that is not
//! ready (a client stream) gets a task of its own, which then waits for flow-control
//! capacity before each chunk so buffering stays bounded. The connection is made on
//! first use and remade after it breaks; a failure before anything was sent is
//! retried once on a fresh connection, so a node that restarted (and whose old
//! connection the client has seen close) costs no failed call. Errors map to gRPC
//! codes as tonic's transport maps them: only a request the node provably did not
//! process is UNAVAILABLE, so callers never retry one that may have been applied.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{Reason, RecvStream, SendStream};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Request, Response, Uri};
use http_body::{Body as _, Frame};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tonic::body::Body;
use tonic::{Status, TimeoutExpired};

use crate::security::{Tls, Token};

/// Per-stream receive window: large values and handoff batches arrive without
/// waiting for window updates (hyper's client default).
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
/// Connection receive window, shared by all streams (hyper's client default).
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
/// Largest header block accepted from a node.
const MAX_HEADER_LIST: u32 = 16 * 1024;
/// Body bytes sent from the caller's task before the rest goes through a task that
/// respects flow control; a unary request is far below it.
const EAGER_BYTES: usize = 64 * 1024;
/// Longest a keepalive PING may go unanswered before the connection is dropped
/// (gRPC's default); shorter intervals wait one interval.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Shortest keepalive interval honoured.
const MIN_KEEPALIVE: Duration = Duration::from_secs(1);
/// Connection-specific headers HTTP/2 forbids (RFC 9113, 8.2.2).
const CONNECTION_HEADERS: [http::header::HeaderName; 5] = [
    http::header::CONNECTION,
    http::header::HeaderName::from_static("keep-alive"),
    http::header::HeaderName::from_static("proxy-connection"),
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
];

/// The metadata in which nodes present their peer token to each other.
pub const PEER_TOKEN_HEADER: &str = "kcache-peer-token";

/// Settings of a [`Connection`].
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Speak TLS (`https`) with these settings; plaintext `http` when unset.
    pub tls: Option<Tls>,
    /// Send `authorization: Bearer <token>` with every call.
    pub token: Option<Token>,
    /// Send `kcache-peer-token: Bearer <token>` with every call: the credential nodes
    /// present to each other's Peer service (see `--peer-token-file`).
    pub peer_token: Option<Token>,
    /// How long the TCP connect plus writing the HTTP/2 preface may take. h2 does not
    /// wait for the node's SETTINGS, so a node that accepts connections but never
    /// answers is caught by the call's deadline (or keepalive), not by this.
    pub connect_timeout: Duration,
    /// Send an HTTP/2 PING this often and drop the connection when one goes
    /// unanswered, so a peer that vanished without closing its socket is noticed.
    pub keepalive: Option<Duration>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            tls: None,
            token: None,
            peer_token: None,
            connect_timeout: Duration::from_secs(5),
            keepalive: None,
        }
    }
}

/// A lazily (re)connected HTTP/2 connection to one node, usable by tonic stubs
/// (`CacheClient::new(connection)`). Clones share the connection.
#[derive(Debug, Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `host:port` as given, for connecting and for messages.
    address: String,
    /// The same as a URI authority, or why it is not one.
    authority: Result<Authority, String>,
    options: ConnectOptions,
    /// The live connection, if any, with the generation it was made in.
    current: parking_lot::Mutex<Option<(u64, SendRequest<Bytes>)>>,
    /// Held while connecting, so concurrent callers share one new connection.
    connecting: tokio::sync::Mutex<Dialing>,
}

#[derive(Debug, Default)]
struct Dialing {
    /// Connections made so far.
    generation: u64,
    /// When the last attempt failed, and how.
    failed: Option<(Instant, Status)>,
}

impl Connection {
    /// Whether `self` and `other` are clones of one connection.
    pub fn same(&self, other: &Connection) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// A connection to `address` (`host:port`); nothing is dialled until the first
    /// call.
    pub fn new(address: impl Into<String>, options: ConnectOptions) -> Connection {
        let address = address.into();
        let authority = address
            .parse::<Authority>()
            .map_err(|e| format!("invalid node address {address:?}: {e}"));
        Connection {
            inner: Arc::new(Inner {
                address,
                authority,
                options,
                current: parking_lot::Mutex::new(None),
                connecting: tokio::sync::Mutex::default(),
            }),
        }
    }

    /// The address this connection dials.
    pub fn address(&self) -> &str {
        &self.inner.address
    }

    /// A sender ready for one more stream, connecting (once, for all waiting
    /// callers) when there is no live connection.
    async fn sender(&self) -> Result<(u64, SendRequest<Bytes>), Status> {
        let cached = self.inner.current.lock().clone();
        if let Some((generation, send)) = cached {
            match send.ready().await {
                Ok(send) => return Ok((generation, send)),
                Err(_) => self.forget(generation),
            }
        }
        let asked = Instant::now();
        let mut dialing = self.inner.connecting.lock().await;
        // Someone else may have connected while this caller waited for the lock.
        let cached = self.inner.current.lock().clone();
        if let Some((generation, send)) = cached {
            if let Ok(send) = send.ready().await {
                return Ok((generation, send));
            }
            self.forget(generation);
        }
        // Or failed to: then that is this caller's answer too. Dialling again would
        // make every caller waiting on an unreachable node pay a connect timeout of
        // its own, one after another.
        if let Some((at, status)) = &dialing.failed
            && *at >= asked
        {
            return Err(status.clone());
        }
        let send = match self.connect().await {
            Ok(send) => send,
            Err(status) => {
                dialing.failed = Some((Instant::now(), status.clone()));
                return Err(status);
            }
        };
        dialing.failed = None;
        dialing.generation += 1;
        let generation = dialing.generation;
        *self.inner.current.lock() = Some((generation, send.clone()));
        let send = send.ready().await.map_err(|e| self.unavailable(&e))?;
        Ok((generation, send))
    }

    /// Drops the cached connection if it is still the one from `generation`.
    fn forget(&self, generation: u64) {
        let mut current = self.inner.current.lock();
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            *current = None;
        }
    }

    async fn connect(&self) -> Result<SendRequest<Bytes>, Status> {
        let inner = &self.inner;
        let address = &inner.address;
        let dial = async {
            let tcp = TcpStream::connect(address.as_str())
                .await
                .map_err(|e| Status::unavailable(format!("connect to {address}: {e}")))?;
            tcp.set_nodelay(true)
                .map_err(|e| Status::unavailable(format!("connect to {address}: {e}")))?;
            let Some(tls) = &inner.options.tls else {
                return handshake(tcp, address, inner.options.keepalive).await;
            };
            let name = tls
                .name_for(address)
                .map_err(|e| Status::unavailable(format!("connect to {address}: {e}")))?;
            let stream = tokio_rustls::TlsConnector::from(tls.config())
                .connect(name, tcp)
                .await
                .map_err(|e| {
                    // Under TLS 1.2 the node checks the client's certificate during
                    // the handshake (under 1.3, after it: see `refused_certificate`).
                    refused_alert(&e).map_or_else(
                        || {
                            Status::unavailable(format!(
                                "TLS handshake with {address}: {e} (does the node serve TLS, \
                                 and does its certificate match the CA and the server name?)"
                            ))
                        },
                        |alert| refusal(address, alert),
                    )
                })?;
            handshake(stream, address, inner.options.keepalive).await
        };
        tokio::time::timeout(inner.options.connect_timeout, dial)
            .await
            .map_err(|_| {
                Status::unavailable(format!(
                    "connect to {address}: no connection within {:?}",
                    inner.options.connect_timeout
                ))
            })?
    }

    fn unavailable(&self, e: &h2::Error) -> Status {
        let address = &self.inner.address;
        refused_certificate(e, address)
            .unwrap_or_else(|| Status::unavailable(format!("connection to {address} lost: {e}")))
    }

    /// Sends one request and waits for the response head.
    async fn round_trip(self, request: Request<Body>) -> Result<Response<Body>, Status> {
        // An address membership produced but that is no URI authority: unreachable,
        // like a node that refuses connections, so callers move on to the next one.
        let authority = self.inner.authority.clone().map_err(Status::unavailable)?;
        let (mut head, body) = request.into_parts();
        // HTTP/2 forbids connection-specific headers; h2 would refuse the request.
        for name in CONNECTION_HEADERS {
            head.headers.remove(name);
        }
        if head
            .headers
            .get(http::header::TE)
            .is_some_and(|te| te != "trailers")
        {
            head.headers.remove(http::header::TE);
        }
        if let Some(token) = &self.inner.options.token
            && !head.headers.contains_key(http::header::AUTHORIZATION)
        {
            head.headers
                .insert(http::header::AUTHORIZATION, token.header());
        }
        if let Some(token) = &self.inner.options.peer_token {
            head.headers.insert(
                http::HeaderName::from_static(PEER_TOKEN_HEADER),
                token.header(),
            );
        }
        let mut uri = head.uri.into_parts();
        uri.scheme = Some(match self.inner.options.tls {
            Some(_) => Scheme::HTTPS,
            None => Scheme::HTTP,
        });
        uri.authority = Some(authority);
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        head.uri = Uri::from_parts(uri).map_err(|e| Status::internal(e.to_string()))?;
        let head = Request::from_parts(head, ());
        let end_of_stream = body.is_end_stream();

        // A connection can break between being cached and this call (a node
        // restarted); nothing was sent on it, so one more try on a new one is safe.
        let mut attempts = 0;
        let (response, stream) = loop {
            attempts += 1;
            let (generation, mut send) = self.sender().await?;
            match send.send_request(head.clone(), end_of_stream) {
                Ok(sent) => break sent,
                Err(e) if e.is_io() || e.is_go_away() => {
                    self.forget(generation);
                    if attempts == 2 {
                        return Err(self.unavailable(&e));
                    }
                }
                // h2 refused the request itself (malformed headers, say): no
                // connection problem, and no other node would take it either.
                Err(e) => {
                    return Err(Status::internal(format!(
                        "request to {} refused by HTTP/2: {e}",
                        self.inner.address
                    )));
                }
            }
        };
        // Until the response head arrives, dropping this future (a deadline, a
        // caller that gave up) must reset the stream, also when a task still pipes
        // the request body; without such a task h2 resets it by itself.
        let mut cancel = None;
        if !end_of_stream {
            cancel = send_body(body, stream)?;
        }
        let response = response
            .await
            .map_err(|e| status_of(&e, &self.inner.address))?;
        if let Some(cancel) = cancel.as_mut() {
            cancel.disarm();
        }
        let (head, recv) = response.into_parts();
        let body = Body::new(ResponseBody {
            recv,
            data_done: false,
            address: self.inner.address.clone(),
        });
        Ok(Response::from_parts(head, body))
    }
}

/// The HTTP/2 handshake over a connected stream (TCP or TLS), and the task that drives
/// the connection (and its keepalive pings) from then on.
async fn handshake<T>(
    io: T,
    address: &str,
    keepalive: Option<Duration>,
) -> Result<SendRequest<Bytes>, Status>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, mut connection) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEADER_LIST)
        .enable_push(false)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| {
            refused_certificate(&e, address).unwrap_or_else(|| {
                Status::unavailable(format!("HTTP/2 handshake with {address}: {e}"))
            })
        })?;
    let keepalive =
        keepalive.and_then(|every| Some((every.max(MIN_KEEPALIVE), connection.ping_pong()?)));
    tokio::spawn(async move {
        match keepalive {
            // Dropping the connection fails its streams and its senders.
            Some((every, mut pings)) => tokio::select! {
                _ = &mut connection => {}
                () = async {
                    loop {
                        tokio::time::sleep(every).await;
                        let pong = tokio::time::timeout(
                            every.min(KEEPALIVE_TIMEOUT),
                            pings.ping(h2::Ping::opaque()),
                        );
                        if !matches!(pong.await, Ok(Ok(_))) {
                            return;
                        }
                    }
                } => {}
            },
            None => {
                let _ = connection.await;
            }
        }
    });
    Ok(send)
}

impl tower_service::Service<Request<Body>> for Connection {
    type Response = Response<Body>;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Status>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        // A live connection is awaited per call. Streams beyond the node's
        // concurrency limit queue inside h2 rather than here.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // tonic stubs send their deadline as `grpc-timeout`; enforce it here too so a
        // call cannot hang on a node that stopped answering.
        let deadline = grpc_timeout(request.headers());
        let call = self.clone().round_trip(request);
        Box::pin(async move {
            match deadline {
                // Reported as tonic's own timeout is (CANCELLED, caused by
                // TimeoutExpired): the request may have been applied, so callers
                // must not take it for an unreachable node.
                Some(deadline) => tokio::time::timeout(deadline, call)
                    .await
                    .unwrap_or_else(|_| Err(Status::from_error(Box::new(TimeoutExpired(()))))),
                None => call.await,
            }
        })
    }
}

/// Sends the request body: what is ready now from this task (with the HEADERS, in
/// one write), the rest from a task of its own, which resets the stream when the
/// returned guard is dropped armed. A body that fails at once (a message over the
/// size limit, say) resets the stream and its error is the call's.
fn send_body(
    mut body: Body,
    mut stream: SendStream<Bytes>,
) -> Result<Option<CancelOnDrop>, Status> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut eager = 0;
    while eager < EAGER_BYTES {
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => {
                eager += frame.data_ref().map_or(0, Bytes::len);
                if send_frame(frame, &body, &mut stream) {
                    return Ok(None);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                stream.send_reset(Reason::CANCEL);
                return Err(Status::from_error(e.into()));
            }
            Poll::Ready(None) => {
                let _ = stream.send_data(Bytes::new(), true);
                return Ok(None);
            }
            // The noop waker is not kept: the task below polls again with its own.
            Poll::Pending => break,
        }
    }
    let (cancel, cancelled) = tokio::sync::oneshot::channel();
    tokio::spawn(pipe_body(body, stream, cancelled));
    Ok(Some(CancelOnDrop(Some(cancel))))
}

/// Sends one body frame; true when the stream is finished (or broken).
fn send_frame(frame: Frame<Bytes>, body: &Body, stream: &mut SendStream<Bytes>) -> bool {
    match frame.into_data() {
        Ok(data) => {
            let end = body.is_end_stream();
            stream.send_data(data, end).is_err() || end
        }
        Err(frame) => match frame.into_trailers() {
            Ok(trailers) => {
                let _ = stream.send_trailers(trailers);
                true
            }
            Err(_) => false,
        },
    }
}

/// Streams the rest of a body, waiting for flow-control capacity before each chunk
/// so no more than about one chunk is ever buffered, and stopping when the node
/// resets the stream.
async fn pipe_body(
    mut body: Body,
    mut stream: SendStream<Bytes>,
    mut cancelled: tokio::sync::oneshot::Receiver<()>,
) {
    let mut armed = true;
    loop {
        let frame = tokio::select! {
            biased;
            _ = std::future::poll_fn(|cx| stream.poll_reset(cx)) => return,
            // Fired: the caller dropped the call. Closed unfired: the response
            // arrived, and the body goes on for as long as it has frames.
            fired = &mut cancelled, if armed => {
                if fired.is_ok() {
                    return stream.send_reset(Reason::CANCEL);
                }
                armed = false;
                continue;
            }
            frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)) => frame,
        };
        match frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref().filter(|d| !d.is_empty()) {
                    stream.reserve_capacity(data.len());
                    while stream.capacity() == 0 {
                        match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
                            Some(Ok(_)) => {}
                            Some(Err(_)) | None => return,
                        }
                    }
                }
                if send_frame(frame, &body, &mut stream) {
                    return;
                }
            }
            Some(Err(_)) => return stream.send_reset(Reason::CANCEL),
            None => {
                let _ = stream.send_data(Bytes::new(), true);
                return;
            }
        }
    }
}

/// A response body read off its h2 stream, giving back flow-control window as data
/// is taken.
struct ResponseBody {
    recv: RecvStream,
    data_done: bool,
    address: String,
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if !this.data_done {
            match std::task::ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(status_of(&e, &this.address)))),
                None => this.data_done = true,
            }
        }
        Poll::Ready(match std::task::ready!(this.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Some(Ok(Frame::trailers(trailers))),
            Ok(None) => None,
            Err(e) => Some(Err(status_of(&e, &this.address))),
        })
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

/// The gRPC status for a stream that failed after its request was sent, mapped as
/// tonic's transport does. Only what proves the node did not process the request is
/// UNAVAILABLE, which callers may retry elsewhere: REFUSED_STREAM, and a GOAWAY from
/// the node (h2 fails only the streams above the last one the node took). A
/// connection that broke mid-call is UNKNOWN: the request may have been applied.
fn status_of(e: &h2::Error, address: &str) -> Status {
    if let Some(refused) = refused_certificate(e, address) {
        return refused;
    }
    let message = format!("{address}: {e}");
    if e.is_go_away() && e.is_remote() {
        return Status::unavailable(message);
    }
    if e.is_io() || e.is_go_away() {
        return Status::unknown(message);
    }
    match e.reason() {
        Some(Reason::REFUSED_STREAM) => Status::unavailable(message),
        Some(Reason::CANCEL) => Status::cancelled(message),
        Some(Reason::ENHANCE_YOUR_CALM) => Status::resource_exhausted(message),
        Some(Reason::INADEQUATE_SECURITY) => Status::permission_denied(message),
        _ => Status::internal(message),
    }
}

/// UNAUTHENTICATED when the node refused this client's certificate (mutual TLS). TLS
/// 1.3 finishes the client's side of the handshake before the node checks the
/// certificate, so the refusal arrives as the node's alert, as the connection's I/O
/// error, often after a request was sent. No request reached the node, and none would
/// at another node with the same client CA: neither UNKNOWN (maybe applied) nor
/// UNAVAILABLE (retry elsewhere) is true.
fn refused_certificate(e: &h2::Error, address: &str) -> Option<Status> {
    let alert = refused_alert(e.get_io()?)?;
    Some(refusal(address, alert))
}

/// The alert of a TLS error in which the node refused this client's certificate.
fn refused_alert(io: &std::io::Error) -> Option<rustls::AlertDescription> {
    use rustls::AlertDescription as Alert;
    const REFUSALS: [Alert; 8] = [
        Alert::CertificateRequired,
        Alert::BadCertificate,
        Alert::UnsupportedCertificate,
        Alert::CertificateRevoked,
        Alert::CertificateExpired,
        Alert::CertificateUnknown,
        Alert::UnknownCA,
        Alert::AccessDenied,
    ];
    match io.get_ref()?.downcast_ref::<rustls::Error>() {
        Some(rustls::Error::AlertReceived(alert)) => REFUSALS.into_iter().find(|a| a == alert),
        Some(_) => None,
        // h2 keeps a connection's I/O error as its kind and text only, so the rustls
        // error is known by the text rustls gives it.
        None => {
            let text = io.to_string();
            REFUSALS
                .into_iter()
                .find(|a| text == rustls::Error::AlertReceived(*a).to_string())
        }
    }
}

fn refusal(address: &str, alert: rustls::AlertDescription) -> Status {
    Status::unauthenticated(format!(
        "{address} refused this client's TLS certificate (alert {alert:?}): the node \
         requires mutual TLS with a certificate its client CA issued"
    ))
}

/// Resets a call's stream when dropped while armed, through its body task.
struct CancelOnDrop(Option<tokio::sync::oneshot::Sender<()>>);

impl CancelOnDrop {
    /// The response arrived: dropping now cancels nothing.
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(cancel) = self.0.take() {
            let _ = cancel.send(());
        }
    }
}

/// The deadline a tonic stub put in `grpc-timeout` (`<digits><unit>`).
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;
    use tower_service::Service;

    /// How a test server answers each request.
    #[derive(Clone, Copy)]
    enum Answer {
        /// A gRPC OK whose `x-received` header counts the request body's bytes.
        Count,
        /// Never.
        Silence,
        /// By closing the connection once the request is in.
        Hangup,
    }

    /// An HTTP/2 server on a free port; dropping the handle stops it and its
    /// connections.
    async fn server(answer: Answer, listener: Option<TcpListener>) -> (String, ServerHandle) {
        let listener = match listener {
            Some(l) => l,
            None => TcpListener::bind("127.0.0.1:0").await.unwrap(),
        };
        let address = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            // Aborting this task drops the set, which aborts every connection.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                connections.spawn(async move {
                    let mut conn = h2::server::handshake(tcp).await.unwrap();
                    while let Some(Ok((request, mut respond))) = conn.accept().await {
                        if let Answer::Hangup = answer {
                            return;
                        }
                        tokio::spawn(async move {
                            let mut body = request.into_body();
                            let mut received = 0;
                            while let Some(Ok(data)) = body.data().await {
                                received += data.len();
                                let _ = body.flow_control().release_capacity(data.len());
                            }
                            if !matches!(answer, Answer::Count) {
                                return std::future::pending::<()>().await;
                            }
                            let response = http::Response::builder()
                                .header("content-type", "application/grpc")
                                .header("x-received", received)
                                .body(())
                                .unwrap();
                            let mut send = respond.send_response(response, false).unwrap();
                            let mut trailers = HeaderMap::new();
                            trailers.insert("grpc-status", "0".parse().unwrap());
                            send.send_trailers(trailers).unwrap();
                        });
                    }
                });
            }
        });
        (address, ServerHandle(task))
    }

    struct ServerHandle(tokio::task::JoinHandle<()>);
    impl Drop for ServerHandle {
        fn drop(&mut self) {
            self.0.abort();
        }
    }

    fn request(body: Body, timeout: Option<&str>) -> Request<Body> {
        let mut request = Request::builder().uri("/kcache.v1.Cache/Get");
        if let Some(t) = timeout {
            request = request.header("grpc-timeout", t);
        }
        request.body(body).unwrap()
    }

    fn options() -> ConnectOptions {
        ConnectOptions {
            connect_timeout: Duration::from_secs(2),
            ..ConnectOptions::default()
        }
    }

    /// A request body of `chunks` chunks of `size` bytes that is not ready every
    /// other poll, so part of it goes through the flow-controlled pipe task.
    struct Chunks {
        left: usize,
        size: usize,
        stall: bool,
    }

    impl http_body::Body for Chunks {
        type Data = Bytes;
        type Error = Status;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            if self.left == 0 {
                return Poll::Ready(None);
            }
            self.stall = !self.stall;
            if self.stall {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.left -= 1;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![7; self.size])))))
        }
    }

    #[tokio::test]
    async fn streams_a_body_larger_than_every_window() {
        let (address, _server) = server(Answer::Count, None).await;
        let mut connection = Connection::new(&address, options());
        // 12 MiB: more than the 64 KiB default stream window and the eager budget.
        let body = Body::new(Chunks {
            left: 96,
            size: 128 * 1024,
            stall: false,
        });
        let response = connection.call(request(body, None)).await.unwrap();
        assert_eq!(
            response.headers()["x-received"],
            (96 * 128 * 1024).to_string()
        );
        // A small unary-like body goes out whole with the headers.
        let body = Body::new(Chunks {
            left: 1,
            size: 21,
            stall: true,
        });
        let response = connection.call(request(body, None)).await.unwrap();
        assert_eq!(response.headers()["x-received"], "21");
    }

    #[tokio::test]
    async fn grpc_timeout_bounds_a_silent_server() {
        let (address, _server) = server(Answer::Silence, None).await;
        let mut connection = Connection::new(&address, options());
        let started = std::time::Instant::now();
        let status = connection
            .call(request(Body::empty(), Some("150m")))
            .await
            .unwrap_err();
        // As tonic's own timeout reports it, which the client maps to Timeout.
        assert_eq!(status.code(), tonic::Code::Cancelled, "{status}");
        assert!(matches!(
            crate::Error::from_status(status, Duration::from_millis(150)),
            crate::Error::Timeout(_)
        ));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_connection_lost_mid_call_is_not_unavailable() {
        // The node may have applied the request: callers must not retry it elsewhere.
        let (address, _server) = server(Answer::Hangup, None).await;
        let mut connection = Connection::new(&address, options());
        let status = connection
            .call(request(Body::empty(), None))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unknown, "{status}");
    }

    #[tokio::test]
    async fn a_dropped_streaming_call_resets_its_stream() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (ended, mut outcome) = tokio::sync::mpsc::unbounded_channel();
        let _server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut conn = h2::server::handshake(tcp).await.unwrap();
            let (request, _respond) = conn.accept().await.unwrap().unwrap();
            tokio::spawn(async move {
                let mut body = request.into_body();
                loop {
                    match body.data().await {
                        Some(Ok(data)) => {
                            let _ = body.flow_control().release_capacity(data.len());
                        }
                        Some(Err(e)) => break ended.send(e.reason()).unwrap(),
                        None => break ended.send(None).unwrap(),
                    }
                }
            });
            // Keep driving the connection; never answer.
            while conn.accept().await.is_some() {}
        });
        let mut connection = Connection::new(&address, options());
        // A client stream that never ends: only a reset can stop it.
        let body = Body::new(Chunks {
            left: usize::MAX,
            size: 16,
            stall: false,
        });
        let status = connection
            .call(request(body, Some("200m")))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Cancelled, "{status}");
        let reason = tokio::time::timeout(Duration::from_secs(5), outcome.recv())
            .await
            .expect("the node saw the stream end")
            .unwrap();
        assert_eq!(reason, Some(Reason::CANCEL));
    }

    #[tokio::test]
    async fn nothing_listening_is_unavailable_and_named() {
        let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = free.local_addr().unwrap().to_string();
        drop(free);
        let mut connection = Connection::new(&address, options());
        let status = connection
            .call(request(Body::empty(), None))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().contains(&address), "{status}");
        let mut bad = Connection::new("not an address", options());
        let status = bad.call(request(Body::empty(), None)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
        assert!(status.message().contains("not an address"), "{status}");
    }

    #[tokio::test]
    async fn callers_waiting_on_one_failed_connect_share_its_outcome() {
        // A listener that never accepts, with its backlog filled: further SYNs are
        // dropped, so every connect runs into the connect timeout.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let mute = socket.listen(1).unwrap();
        let address = mute.local_addr().unwrap().to_string();
        let mut fill = Vec::new();
        for _ in 0..4 {
            let connect = TcpStream::connect(address.as_str());
            if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_millis(200), connect).await
            {
                fill.push(stream);
            }
        }
        let timeout = Duration::from_millis(300);
        let connection = Connection::new(
            &address,
            ConnectOptions {
                connect_timeout: timeout,
                ..ConnectOptions::default()
            },
        );
        let started = std::time::Instant::now();
        let calls = (0..5).map(|_| {
            let mut connection = connection.clone();
            async move { connection.call(request(Body::empty(), None)).await }
        });
        for result in futures::future::join_all(calls).await {
            assert_eq!(result.unwrap_err().code(), tonic::Code::Unavailable);
        }
        // One timeout for all five, not five in a row.
        assert!(started.elapsed() < timeout * 3, "{:?}", started.elapsed());
        // A later call dials afresh rather than replaying the old failure.
        let later = std::time::Instant::now();
        let mut connection = connection.clone();
        let status = connection
            .call(request(Body::empty(), None))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(later.elapsed() >= timeout, "{:?}", later.elapsed());
        drop(mute);
    }

    #[tokio::test]
    async fn keepalive_drops_a_connection_whose_node_stopped_answering() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        let _server = tokio::spawn(async move {
            let mut frozen = Vec::new();
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // Handshake, then never poll the connection again: no pongs, no
                // answers, but the socket stays open.
                frozen.push(h2::server::handshake(tcp).await.unwrap());
            }
        });
        let mut connection = Connection::new(
            &address,
            ConnectOptions {
                connect_timeout: Duration::from_secs(2),
                keepalive: Some(Duration::from_secs(1)),
                ..ConnectOptions::default()
            },
        );
        let status = connection
            .call(request(Body::empty(), Some("300m")))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Cancelled, "{status}");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
        // One interval to the ping, one to give up on it.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let _ = connection.call(request(Body::empty(), Some("300m"))).await;
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "the dead connection was dropped and a new one made"
        );
    }

    #[tokio::test]
    async fn a_restarted_server_costs_no_failed_call() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (address, server1) = server(Answer::Count, Some(listener)).await;
        let mut connection = Connection::new(&address, options());
        connection.call(request(Body::empty(), None)).await.unwrap();
        drop(server1);
        // Let the aborted server's connection close, then listen again on the port.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let (_, _server2) = server(Answer::Count, Some(listener)).await;
        let response = connection.call(request(Body::empty(), None)).await;
        assert!(response.is_ok(), "{response:?}");
    }

    #[test]
    fn grpc_timeout_units() {
        let mut headers = HeaderMap::new();
        for (value, expected) in [
            ("2H", Some(Duration::from_secs(7200))),
            ("3M", Some(Duration::from_secs(180))),
            ("5S", Some(Duration::from_secs(5))),
            ("250m", Some(Duration::from_millis(250))),
            ("7u", Some(Duration::from_micros(7))),
            ("9n", Some(Duration::from_nanos(9))),
            ("5", None),
            ("S", None),
            ("1x", None),
            ("", None),
        ] {
            headers.insert("grpc-timeout", value.parse().unwrap());
            assert_eq!(grpc_timeout(&headers), expected, "{value:?}");
        }
        assert_eq!(grpc_timeout(&HeaderMap::new()), None);
    }

    #[test]
    fn broken_streams_map_to_grpc_codes() {
        let cases = [
            (Reason::REFUSED_STREAM, tonic::Code::Unavailable),
            (Reason::CANCEL, tonic::Code::Cancelled),
            (Reason::ENHANCE_YOUR_CALM, tonic::Code::ResourceExhausted),
            (Reason::PROTOCOL_ERROR, tonic::Code::Internal),
        ];
        for (reason, code) in cases {
            assert_eq!(status_of(&h2::Error::from(reason), "n:1").code(), code);
        }
    }
}
