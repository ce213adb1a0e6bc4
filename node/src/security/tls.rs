//! TLS on the gRPC port: the rustls configurations built from the certificate files,
//! and the stream of accepted connections tonic serves once their handshake is done.
//!
//! Handshakes run in tasks of their own, so one slow or hostile client cannot hold up
//! the accept loop, and each takes the configuration current when its connection
//! arrived, so a reloaded certificate applies to every connection after the reload.
//! A client that speaks plaintext HTTP/2 to the TLS port is answered in gRPC with a
//! status that says so, rather than with a TLS alert it would print as garbage.

use std::borrow::Borrow;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use kcache_client::security::{self, ALPN_H2, provider};
use parking_lot::RwLock;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};

use super::{Error, SecurityMetrics, TlsFiles};

/// How long a connection may take to complete its TLS handshake (or to show it
/// speaks plaintext): generous for any real client, short enough that idle sockets
/// do not pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; beyond it new connections wait to be accepted,
/// so a flood of half-open connections costs bounded memory and CPU.
const MAX_HANDSHAKES: usize = 1024;
/// Accepted connections waiting for tonic to take them.
const READY_QUEUE: usize = 128;
/// The first byte of a TLS record carrying a handshake (a ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The server configuration for `files`: this node's certificate, and with a client
/// CA, the demand for a client certificate it signed.
pub fn server_config(files: &TlsFiles) -> Result<ServerConfig, Error> {
    let (chain, key) = security::read_identity(&files.cert, &files.key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS versions: {e}")))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let roots = security::read_roots(ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| Error::Config(format!("{}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        Error::Config(format!(
            "{} / {}: {e}",
            files.cert.display(),
            files.key.display()
        ))
    })?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// The client configuration of this node's connections to its peers: it trusts the
/// peer CA and presents this node's own certificate, so peers that demand client
/// certificates accept it.
pub fn peer_config(files: &TlsFiles) -> Result<ClientConfig, Error> {
    let ca = files
        .peer_roots()
        .ok_or_else(|| Error::Config("no CA for peer certificates".into()))?;
    let roots = security::read_roots(ca)?;
    let identity = security::read_identity(&files.cert, &files.key)?;
    Ok(security::client_config(roots, Some(identity))?)
}

/// The listener's TLS configuration; clones share it, so a reload reaches the
/// accept loop.
#[derive(Debug, Clone)]
pub struct ServerTls {
    config: Arc<RwLock<Arc<ServerConfig>>>,
    /// With mutual TLS, the name nodes' certificates carry (`--tls-server-name`): a
    /// connection whose client certificate is valid for it is a peer's.
    peer_name: Option<ServerName<'static>>,
}

impl ServerTls {
    pub fn new(config: ServerConfig) -> Self {
        Self {
            config: Arc::new(RwLock::new(Arc::new(config))),
            peer_name: None,
        }
    }

    /// Tells peers' connections from clients' by `name` in their certificates.
    pub fn with_peer_name(mut self, name: ServerName<'static>) -> Self {
        self.peer_name = Some(name);
        self
    }

    /// Whether connections are told apart by their certificate's name.
    pub fn checks_peer_name(&self) -> bool {
        self.peer_name.is_some()
    }

    /// New handshakes use `config` from now on.
    pub fn replace(&self, config: ServerConfig) {
        *self.config.write() = Arc::new(config);
    }

    fn current(&self) -> Arc<ServerConfig> {
        self.config.read().clone()
    }
}

/// A connection whose TLS handshake is done.
#[derive(Debug)]
pub struct TlsConnection {
    stream: TlsStream<TcpStream>,
    peer: bool,
}

/// What a call learns of its TLS connection (tonic puts it in every request's
/// extensions): the TCP addresses, and whether the client's certificate is valid for
/// the name nodes' certificates carry, that is whether the caller is a peer.
#[derive(Debug, Clone)]
pub struct TlsConnectInfo {
    tcp: TcpConnectInfo,
    peer: bool,
}

impl TlsConnectInfo {
    /// Whether the client presented a certificate valid for the peers' name (always
    /// false without mutual TLS and `--tls-server-name`).
    pub fn is_peer(&self) -> bool {
        self.peer
    }
}

impl Borrow<TcpConnectInfo> for TlsConnectInfo {
    fn borrow(&self) -> &TcpConnectInfo {
        &self.tcp
    }
}

impl Connected for TlsConnection {
    type ConnectInfo = TlsConnectInfo;

    fn connect_info(&self) -> TlsConnectInfo {
        TlsConnectInfo {
            tcp: self.stream.get_ref().0.connect_info(),
            peer: self.peer,
        }
    }
}

/// Whether `cert` (a client certificate the handshake verified against the CA) is
/// valid for `name`, as a server certificate for `name` would be checked.
fn valid_for(cert: &CertificateDer<'_>, name: &ServerName<'_>) -> bool {
    webpki::EndEntityCert::try_from(cert)
        .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(name).is_ok())
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The connections of `tcp` once their TLS handshake succeeded; failed handshakes
/// are counted and logged (at debug: a port scanner is no news) and dropped.
pub fn incoming(
    mut tcp: TcpIncoming,
    tls: ServerTls,
    metrics: SecurityMetrics,
) -> ReceiverStream<io::Result<TlsConnection>> {
    let (ready, accepted) = mpsc::channel(READY_QUEUE);
    tokio::spawn(async move {
        let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let next = tokio::select! {
                next = tcp.next() => next,
                // tonic stopped serving: stop accepting.
                () = ready.closed() => return,
            };
            let stream = match next {
                Some(Ok(stream)) => stream,
                Some(Err(e)) => {
                    // tonic decides which accept errors are fatal.
                    if ready.send(Err(e)).await.is_err() {
                        return;
                    }
                    continue;
                }
                None => return,
            };
            let (config, ready, metrics) = (tls.current(), ready.clone(), metrics.clone());
            let peer_name = tls.peer_name.clone();
            tokio::spawn(async move {
                let outcome = tokio::time::timeout(
                    HANDSHAKE_TIMEOUT,
                    accept(stream, config, peer_name.as_ref()),
                )
                .await;
                drop(permit);
                match outcome {
                    Ok(Ok(Accepted::Tls(connection))) => {
                        let _ = ready.send(Ok(*connection)).await;
                    }
                    Ok(Ok(Accepted::Plaintext(stream))) => {
                        metrics.handshake_failed("plaintext");
                        refuse_plaintext(stream).await;
                    }
                    Ok(Err(e)) => {
                        metrics.handshake_failed("handshake");
                        tracing::debug!(error = %e, "TLS handshake failed");
                    }
                    Err(_) => metrics.handshake_failed("timeout"),
                }
            });
        }
    });
    ReceiverStream::new(accepted)
}

enum Accepted {
    Tls(Box<TlsConnection>),
    Plaintext(TcpStream),
}

async fn accept(
    stream: TcpStream,
    config: Arc<ServerConfig>,
    peer_name: Option<&ServerName<'static>>,
) -> io::Result<Accepted> {
    let mut first = [0; 1];
    if stream.peek(&mut first).await? == 1 && first[0] != TLS_HANDSHAKE_RECORD {
        return Ok(Accepted::Plaintext(stream));
    }
    let stream = tokio_rustls::TlsAcceptor::from(config)
        .accept(stream)
        .await?;
    // Checked once a connection, not on every call.
    let peer = peer_name.is_some_and(|name| {
        let certs = stream.get_ref().1.peer_certificates();
        certs
            .and_then(|chain| chain.first())
            .is_some_and(|cert| valid_for(cert, name))
    });
    Ok(Accepted::Tls(Box::new(TlsConnection { stream, peer })))
}

/// Answers every call of a plaintext HTTP/2 client with UNAVAILABLE and a message
/// that names the problem, until it goes away or the handshake timeout passes.
async fn refuse_plaintext(stream: TcpStream) {
    let serve = async {
        let Ok(mut connection) = h2::server::handshake(stream).await else {
            return;
        };
        while let Some(Ok((_, mut respond))) = connection.accept().await {
            let response = http::Response::builder()
                .header("content-type", "application/grpc")
                .header("grpc-status", "14")
                .header(
                    "grpc-message",
                    "this kcache node requires TLS; connect with TLS (kcache --tls-ca-file)",
                )
                .body(())
                .expect("a valid response");
            let _ = respond.send_response(response, true);
        }
    };
    let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, serve).await;
}
