//! Bearer-token authentication of the `Cache` and `Peer` services, as a tonic
//! interceptor: a call must carry `authorization: Bearer <token>` with one of the
//! tokens of `--auth-token-file`, or it gets UNAUTHENTICATED before any handler runs.
//!
//! Tokens are kept as SHA-256 digests and a presented token is hashed and compared
//! with every accepted one in constant time, so neither the comparison's duration nor
//! an early exit tells an attacker how much of a guess was right, or how long the
//! tokens are.

use std::path::Path;
use std::sync::Arc;

use parking_lot::RwLock;
use ring::digest::{SHA256, digest};
use subtle::ConstantTimeEq;
use tonic::{Request, Status};

use super::SecurityMetrics;
use super::tls::TlsConnectInfo;
use kcache_client::Error;
use kcache_client::security::tokens_in;

type Digest = [u8; 32];

/// Reads every token of a token file, refusing a file without any (which would lock
/// every client out) and tokens a client could not send.
pub fn read_tokens(path: &Path) -> Result<Vec<String>, Error> {
    let named = |what: String| Error::Credentials(format!("{}: {what}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| named(e.to_string()))?;
    let tokens: Vec<String> = tokens_in(&text).map(str::to_owned).collect();
    if tokens.is_empty() {
        return Err(named("no token in the file".into()));
    }
    for (line, token) in tokens.iter().enumerate() {
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(named(format!(
                "token {} has characters other than visible ASCII",
                line + 1
            )));
        }
    }
    Ok(tokens)
}

/// The accepted tokens, replaceable while calls are checked against them.
#[derive(Debug, Clone)]
pub struct Authenticator {
    digests: Arc<RwLock<Arc<[Digest]>>>,
    /// Admit a call that carries no token (`--auth-accepts-anonymous`).
    anonymous: bool,
    metrics: SecurityMetrics,
}

fn hash(token: &[u8]) -> Digest {
    let mut out = [0; 32];
    out.copy_from_slice(digest(&SHA256, token).as_ref());
    out
}

impl Authenticator {
    pub fn new(tokens: &[String], metrics: SecurityMetrics) -> Self {
        Self {
            digests: Arc::new(RwLock::new(Self::digests(tokens))),
            anonymous: false,
            metrics,
        }
    }

    /// Also admits calls that carry no token at all (a token that is sent must still
    /// be accepted): for the rollouts that turn authentication on or off.
    pub fn admitting_anonymous(mut self, anonymous: bool) -> Self {
        self.anonymous = anonymous;
        self
    }

    /// Whether calls without a token are admitted.
    pub fn admits_anonymous(&self) -> bool {
        self.anonymous
    }

    fn digests(tokens: &[String]) -> Arc<[Digest]> {
        tokens.iter().map(|t| hash(t.as_bytes())).collect()
    }

    /// Accepts exactly `tokens` from now on.
    pub fn replace(&self, tokens: &[String]) {
        *self.digests.write() = Self::digests(tokens);
    }

    /// Whether `authorization` (the metadata value, if any) carries an accepted token.
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<(), Status> {
        let Some(value) = authorization else {
            if self.anonymous {
                self.metrics.anonymous_admitted();
                return Ok(());
            }
            self.metrics.unauthenticated("missing");
            return Err(Status::unauthenticated(
                "this node requires a token: send the metadata `authorization: Bearer \
                 <token>` (kcache: --token-file or KCACHE_TOKEN)",
            ));
        };
        let Some(token) = bearer(value) else {
            self.metrics.unauthenticated("malformed");
            return Err(Status::unauthenticated(
                "the authorization metadata must be `Bearer <token>`",
            ));
        };
        if self.accepts(token) {
            Ok(())
        } else {
            Err(Status::unauthenticated(
                "the token is not accepted by this node (mistyped, or rotated out of the \
                 Secret?)",
            ))
        }
    }
}

impl Authenticator {
    /// Whether `token` is one of the accepted tokens (gRPC's bearer token, the Redis
    /// port's AUTH password); a rejection is counted.
    pub fn accepts(&self, token: &[u8]) -> bool {
        let presented = hash(token);
        let digests = self.digests.read().clone();
        // Every accepted digest is compared, whatever matched before.
        let matched = digests
            .iter()
            .fold(subtle::Choice::from(0), |any, d| any | d.ct_eq(&presented));
        let accepted = bool::from(matched);
        if !accepted {
            self.metrics.unauthenticated("rejected");
        }
        accepted
    }
}

impl tonic::service::Interceptor for Authenticator {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        self.check(header)?;
        Ok(request)
    }
}

/// Who may call the `Peer` service, whose `Sync` streams out the whole store and whose
/// `Replicate` and `Handoff` write entries at any version: a caller with an accepted
/// token (when there are tokens) and, with mutual TLS and `--tls-server-name`, only
/// over a connection whose client certificate is valid for that name — a node's
/// certificate, not one issued to an application.
#[derive(Debug, Clone)]
pub struct PeerGate {
    auth: Option<Authenticator>,
    /// The peer tokens, when there are: then the Peer service wants one of them in
    /// [`PEER_TOKEN_HEADER`] instead of an application token in `authorization`.
    peer_auth: Option<Authenticator>,
    /// Also admit a call with no peer token whose `authorization` `auth` accepts
    /// (nodes that predate peer tokens, during the rollout that brings them).
    accepts_app_tokens: bool,
    /// The name a caller's certificate must carry; checked once a connection
    /// ([`TlsConnectInfo::is_peer`]).
    name: Option<String>,
    metrics: SecurityMetrics,
}

impl PeerGate {
    pub fn new(
        auth: Option<Authenticator>,
        name: Option<String>,
        metrics: SecurityMetrics,
    ) -> Self {
        Self {
            auth,
            peer_auth: None,
            accepts_app_tokens: false,
            name,
            metrics,
        }
    }

    /// Demands one of `peer_auth`'s tokens in [`PEER_TOKEN_HEADER`] when there are
    /// such tokens (and with `accepts_app_tokens`, admits calls that carry none but an
    /// accepted `authorization`).
    pub fn with_peer_tokens(
        mut self,
        peer_auth: Option<Authenticator>,
        accepts_app_tokens: bool,
    ) -> Self {
        self.peer_auth = peer_auth;
        self.accepts_app_tokens = accepts_app_tokens;
        self
    }

    fn check_tokens(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(peer_auth) = &self.peer_auth else {
            return match &mut self.auth {
                Some(auth) => tonic::service::Interceptor::call(auth, request),
                None => Ok(request),
            };
        };
        let presented = request.metadata().get(PEER_TOKEN_HEADER);
        // Without a peer token: an application token while peer tokens roll out, or
        // nothing at all while authentication itself rolls out (the app-token check
        // admits a call without `authorization` then, and checks one that has it).
        if presented.is_none()
            && let Some(auth) = &mut self.auth
            && (self.accepts_app_tokens || auth.admits_anonymous())
        {
            return tonic::service::Interceptor::call(auth, request);
        }
        let Some(value) = presented else {
            peer_auth.metrics.unauthenticated("missing");
            return Err(Status::unauthenticated(format!(
                "the Peer service answers the cluster's nodes only: a call must carry one \
                 of their tokens in `{PEER_TOKEN_HEADER}`"
            )));
        };
        match bearer(value.as_bytes()) {
            Some(token) if peer_auth.accepts(token) => Ok(request),
            Some(_) => Err(Status::unauthenticated(
                "the peer token is not accepted by this node (rotated out of the Secret?)",
            )),
            None => {
                peer_auth.metrics.unauthenticated("malformed");
                Err(Status::unauthenticated(format!(
                    "`{PEER_TOKEN_HEADER}` must be `Bearer <token>`"
                )))
            }
        }
    }
}

/// The metadata in which nodes present their peer token to each other, beside the
/// application token in `authorization` (which nodes without peer tokens check).
pub use kcache_client::PEER_TOKEN_HEADER;

/// The token of a `Bearer <token>` metadata value.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    value
        .strip_prefix(b"Bearer ")
        .or_else(|| value.strip_prefix(b"bearer "))
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

impl tonic::service::Interceptor for PeerGate {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let request = self.check_tokens(request)?;
        if let Some(name) = &self.name {
            let peer = request
                .extensions()
                .get::<TlsConnectInfo>()
                .is_some_and(TlsConnectInfo::is_peer);
            if !peer {
                self.metrics.not_a_peer();
                return Err(Status::permission_denied(format!(
                    "the Peer service answers the cluster's nodes only: the client \
                     certificate of this connection is not valid for {name}, the name \
                     the nodes' certificates carry"
                )));
            }
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(tokens: &[&str]) -> Authenticator {
        let tokens: Vec<String> = tokens.iter().map(|t| (*t).to_owned()).collect();
        Authenticator::new(&tokens, SecurityMetrics::new())
    }

    #[test]
    fn any_listed_token_is_accepted_and_nothing_else() {
        let auth = auth(&["new-token", "old-token"]);
        assert!(auth.check(Some(b"Bearer new-token")).is_ok());
        assert!(auth.check(Some(b"Bearer old-token")).is_ok());
        let wrong = auth.check(Some(b"Bearer new-token2")).unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        assert!(wrong.message().contains("not accepted"), "{wrong}");
        let prefix = auth.check(Some(b"Bearer new")).unwrap_err();
        assert_eq!(prefix.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn missing_and_malformed_headers_say_what_to_send() {
        let auth = auth(&["t"]);
        let missing = auth.check(None).unwrap_err();
        assert!(
            missing.message().contains("authorization: Bearer"),
            "{missing}"
        );
        for bad in [&b"t"[..], b"Basic dDp0", b"Bearer ", b"Bearer   "] {
            let status = auth.check(Some(bad)).unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
            assert!(status.message().contains("must be `Bearer"), "{status}");
        }
    }

    #[test]
    fn replacing_the_tokens_drops_the_old_ones() {
        let auth = auth(&["old"]);
        auth.replace(&["new".to_owned()]);
        assert!(auth.check(Some(b"Bearer new")).is_ok());
        assert!(auth.check(Some(b"Bearer old")).is_err());
    }

    #[test]
    fn a_token_file_without_tokens_is_refused_with_its_name() {
        let path = std::env::temp_dir().join(format!("kcache-tokens-{}", std::process::id()));
        std::fs::write(&path, "\n# nothing yet\n").unwrap();
        let err = read_tokens(&path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("no token"), "{err}");
        std::fs::write(&path, "good\nwith\u{7f}del\n").unwrap();
        let err = read_tokens(&path).unwrap_err().to_string();
        assert!(err.contains("token 2"), "{err}");
        std::fs::remove_file(&path).unwrap();
    }
}
