//! Who may talk to a node, and how privately: TLS (optionally mutual) on the gRPC
//! port, bearer tokens on the `Cache` and `Peer` services, the same credentials on the
//! node's own connections to its peers, and the reloading of every file without a
//! restart (Kubernetes rewrites a mounted Secret by swapping a symlink; cert-manager
//! renews certificates weeks before they expire).
//!
//! Health and reflection stay open: the kubelet's gRPC probes speak neither TLS nor
//! tokens, and the proto is published anyway. The admin HTTP port stays plaintext for
//! the same reason (see SECURITY.md).

pub mod auth;
pub mod metrics;
pub mod reload;
pub mod tls;

use std::path::PathBuf;
use std::time::Duration;

use kcache_client::{Tls, Token};
use rustls::pki_types::ServerName;

pub use auth::{Authenticator, PEER_TOKEN_HEADER, PeerGate};
pub use metrics::SecurityMetrics;
pub use tls::ServerTls;

/// How often credential files are checked for changes by default: a rotated
/// certificate or token takes effect within this long of the kubelet writing it
/// (which itself takes up to a minute or so), at the cost of reading a few small files.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// The files a node's credentials come from.
#[derive(Debug, Clone, Default)]
pub struct SecurityConfig {
    /// Serve TLS with these files; plaintext when unset.
    pub tls: Option<TlsFiles>,
    /// Accepted tokens, one a line; the first is what this node sends to its peers
    /// (`authorization`). No authentication when unset.
    pub token_file: Option<PathBuf>,
    /// Tokens only the cluster's nodes hold, one a line; the first is what this node
    /// sends to its peers in [`PEER_TOKEN_HEADER`]. When set, the Peer service wants
    /// one of these there and ignores `authorization`; when unset, it takes
    /// `token_file`'s tokens, so every application holding one could dump the store
    /// with `Peer.Sync`.
    pub peer_token_file: Option<PathBuf>,
    /// With `peer_token_file`, the Peer service also admits calls with no peer token
    /// but an accepted `authorization`: for the rolling update that introduces peer
    /// tokens, while nodes that send none still run.
    pub peer_accepts_app_tokens: bool,
    /// With `token_file`, also admit calls (and Redis connections) that carry no
    /// token at all; a token that is sent must still be accepted. For the rolling
    /// updates that turn authentication on or off, while nodes without tokens run
    /// beside nodes with them and call (replicate, hand off, forward to) them.
    pub auth_accepts_anonymous: bool,
    /// The name peers' certificates must carry when this node calls them; the host of
    /// each peer's address when unset.
    pub peer_server_name: Option<String>,
    /// How often the files are checked for changes; [`DEFAULT_RELOAD_INTERVAL`] when
    /// zero.
    pub reload_interval: Duration,
}

/// Certificate files in the layout of a `kubernetes.io/tls` Secret (cert-manager's:
/// tls.crt, tls.key, ca.crt).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// This node's certificate chain (PEM), served to clients and presented to peers.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// When set, clients and peers must present a certificate signed by a CA in this
    /// file (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// The CAs peers' certificates are checked against when this node calls them;
    /// `client_ca` when unset.
    pub peer_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// The CA file peer certificates are verified with, if any.
    pub fn peer_roots(&self) -> Option<&PathBuf> {
        self.peer_ca.as_ref().or(self.client_ca.as_ref())
    }
}

/// Why credentials could not be loaded; the message names the file or flag.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Credentials(#[from] kcache_client::Error),
    #[error("{0}")]
    Config(String),
}

/// A node's loaded credentials. Each part is a shared handle the reload task updates.
#[derive(Debug, Clone)]
pub struct Security {
    /// TLS of the gRPC listener.
    pub tls: Option<ServerTls>,
    /// The token check on the Cache service (and on the Peer service without
    /// `peer_auth`).
    pub auth: Option<Authenticator>,
    /// The peer token check on the Peer service, with a peer token file.
    pub peer_auth: Option<Authenticator>,
    /// TLS of this node's connections to its peers (present when it has peers).
    pub peer_tls: Option<Tls>,
    /// The token this node sends to its peers in `authorization`.
    pub peer_token: Option<Token>,
    /// The peer token this node sends in [`PEER_TOKEN_HEADER`].
    pub node_token: Option<Token>,
    pub metrics: SecurityMetrics,
}

impl Security {
    /// Reads every file once; `clustered` nodes also need what peer connections use.
    pub fn load(
        config: &SecurityConfig,
        clustered: bool,
        metrics: SecurityMetrics,
    ) -> Result<Security, Error> {
        let (tls, peer_tls) = match &config.tls {
            None => (None, None),
            Some(files) => {
                let mut server = ServerTls::new(tls::server_config(files)?);
                if files.client_ca.is_some()
                    && let Some(name) = &config.peer_server_name
                {
                    // Mutual TLS and the name nodes' certificates carry: the Peer
                    // service answers only connections with such a certificate.
                    let name = ServerName::try_from(name.clone())
                        .map_err(|e| Error::Config(format!("--tls-server-name {name}: {e}")))?;
                    server = server.with_peer_name(name);
                }
                let peer = if clustered {
                    let Some(_) = files.peer_roots() else {
                        return Err(Error::Config(
                            "TLS between peers needs a CA to check their certificates: set \
                             --tls-ca-file (or --tls-client-ca-file)"
                                .into(),
                        ));
                    };
                    let peer = Tls::from_config(tls::peer_config(files)?);
                    Some(match &config.peer_server_name {
                        Some(name) => peer.with_server_name(name)?,
                        None => peer,
                    })
                } else {
                    None
                };
                (Some(server), peer)
            }
        };
        let tokens = Tokens::read(config)?;
        let authenticator = |tokens: &Vec<String>| Authenticator::new(tokens, metrics.clone());
        let first = |tokens: &Vec<String>| Token::new(&tokens[0]);
        Ok(Security {
            tls,
            auth: tokens.app.as_ref().map(|tokens| {
                authenticator(tokens).admitting_anonymous(config.auth_accepts_anonymous)
            }),
            peer_auth: tokens.peer.as_ref().map(authenticator),
            peer_tls,
            peer_token: tokens.app.as_ref().map(first).transpose()?,
            node_token: tokens.peer.as_ref().map(first).transpose()?,
            metrics,
        })
    }
}

/// The tokens of both token files, as last read.
#[derive(Debug)]
pub(crate) struct Tokens {
    /// `--auth-token-file`'s.
    pub app: Option<Vec<String>>,
    /// `--peer-token-file`'s.
    pub peer: Option<Vec<String>>,
}

impl Tokens {
    pub fn read(config: &SecurityConfig) -> Result<Tokens, Error> {
        let read = |path: &Option<PathBuf>| path.as_deref().map(auth::read_tokens).transpose();
        Ok(Tokens {
            app: read(&config.token_file)?,
            peer: read(&config.peer_token_file)?,
        })
    }
}
