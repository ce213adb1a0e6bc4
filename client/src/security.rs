//! Credentials of a connection to a node: TLS (rustls with ring, the crypto backend
//! the rest of the workspace already links through kube) and a bearer token.
//!
//! Both are shared handles whose contents can be replaced while connections use them,
//! so a long-running program (the node's peer connections) picks up rotated files
//! without a restart: a new TLS configuration applies to the next handshake, a new
//! token to the next call.
//!
//! PEM and token files are read by the helpers here so the node and the client agree
//! on one format, and every error names the file it came from.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use http::HeaderValue;
use parking_lot::RwLock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use crate::Error;

/// The ALPN protocol of gRPC: grpc-go and others refuse a TLS connection without it.
pub const ALPN_H2: &[u8] = b"h2";

/// The crypto provider every kcache TLS configuration uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn credential_error(path: &Path, what: impl fmt::Display) -> Error {
    Error::Credentials(format!("{}: {what}", path.display()))
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| credential_error(path, e))
}

/// Every certificate in a PEM file, in order (a chain: leaf first).
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| credential_error(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(credential_error(path, "no CERTIFICATE block found"));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| credential_error(path, format!("no usable PEM private key: {e}")))
}

/// The certificates of a CA bundle as trust anchors.
pub fn read_roots(path: &Path) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(path)? {
        roots
            .add(cert)
            .map_err(|e| credential_error(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// A certificate chain and its key, checked to belong together.
pub fn read_identity(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
    let chain = read_certificates(cert)?;
    let private = read_private_key(key)?;
    let signing = provider()
        .key_provider
        .load_private_key(private.clone_key())
        .map_err(|e| credential_error(key, format!("unsupported private key: {e}")))?;
    let certified = rustls::sign::CertifiedKey::new(chain.clone(), signing);
    if let Err(e) = certified.keys_match() {
        return Err(Error::Credentials(format!(
            "{} and {} do not belong together: {e}",
            cert.display(),
            key.display()
        )));
    }
    Ok((chain, private))
}

/// A client configuration that trusts `roots` and, when given, presents `identity`
/// (mutual TLS).
pub fn client_config(
    roots: RootCertStore,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<ClientConfig, Error> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Credentials(format!("TLS versions: {e}")))?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| Error::Credentials(format!("client certificate: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// TLS for connections to nodes: whom to trust, what to present, and which name the
/// node's certificate must carry. Clones share the configuration, so [`Tls::replace`]
/// reaches every connection made from any of them.
#[derive(Clone)]
pub struct Tls {
    config: Arc<RwLock<Arc<ClientConfig>>>,
    server_name: Option<ServerName<'static>>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Trust the CA certificates in `ca` (PEM) and, with `identity` (certificate
    /// chain and key files, PEM), present that client certificate.
    pub fn from_pem_files(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<Tls, Error> {
        let roots = read_roots(ca)?;
        let identity = identity
            .map(|(cert, key)| read_identity(cert, key))
            .transpose()?;
        Ok(Tls::from_config(client_config(roots, identity)?))
    }

    /// A ready rustls configuration. Its ALPN protocols should include `h2`.
    pub fn from_config(config: ClientConfig) -> Tls {
        Tls {
            config: Arc::new(RwLock::new(Arc::new(config))),
            server_name: None,
        }
    }

    /// Check nodes' certificates against `name` instead of the host each connection
    /// dials (needed when dialing IP addresses whose certificate names a DNS name).
    pub fn with_server_name(mut self, name: &str) -> Result<Tls, Error> {
        let name = ServerName::try_from(name.to_owned())
            .map_err(|e| Error::Credentials(format!("TLS server name {name:?}: {e}")))?;
        self.server_name = Some(name);
        Ok(self)
    }

    /// The name set by [`Tls::with_server_name`], if any.
    pub fn server_name(&self) -> Option<&ServerName<'static>> {
        self.server_name.as_ref()
    }

    /// Uses `config` for every handshake from now on (connections already made keep
    /// theirs).
    pub fn replace(&self, config: ClientConfig) {
        *self.config.write() = Arc::new(config);
    }

    pub(crate) fn config(&self) -> Arc<ClientConfig> {
        self.config.read().clone()
    }

    /// The name a connection to `address` (`host:port`) verifies.
    pub(crate) fn name_for(&self, address: &str) -> Result<ServerName<'static>, String> {
        if let Some(name) = &self.server_name {
            return Ok(name.clone());
        }
        let host = address
            .rsplit_once(':')
            .map_or(address, |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']');
        ServerName::try_from(host.to_owned())
            .map_err(|e| format!("{host:?} is no TLS server name ({e}); set a server name"))
    }
}

/// The tokens in a token file's text: one a line, surrounding whitespace trimmed,
/// blank lines and `#` comments skipped. A node accepts each of them; a client and a
/// node's peer connections send the first.
pub fn tokens_in(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
}

/// Reads the first token of a token file.
pub fn read_token(path: &Path) -> Result<String, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| credential_error(path, e))?;
    tokens_in(&text)
        .next()
        .map(str::to_owned)
        .ok_or_else(|| credential_error(path, "no token in the file"))
}

/// The bearer token sent as `authorization: Bearer <token>` with every call. Clones
/// share it, so [`Token::replace`] reaches every connection.
#[derive(Clone)]
pub struct Token(Arc<RwLock<HeaderValue>>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// A token of visible ASCII characters without spaces.
    pub fn new(token: &str) -> Result<Token, Error> {
        Ok(Token(Arc::new(RwLock::new(header(token)?))))
    }

    /// The first token of a token file (see [`tokens_in`]).
    pub fn from_file(path: &Path) -> Result<Token, Error> {
        Token::new(&read_token(path)?).map_err(|e| credential_error(path, e))
    }

    /// Sends `token` from the next call on.
    pub fn replace(&self, token: &str) -> Result<(), Error> {
        *self.0.write() = header(token)?;
        Ok(())
    }

    pub(crate) fn header(&self) -> HeaderValue {
        self.0.read().clone()
    }
}

fn header(token: &str) -> Result<HeaderValue, Error> {
    let valid = !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic());
    if !valid {
        return Err(Error::Credentials(
            "a token must be visible ASCII characters without spaces".into(),
        ));
    }
    let mut value = HeaderValue::try_from(format!("Bearer {token}"))
        .map_err(|e| Error::Credentials(format!("token: {e}")))?;
    // Never put the token in HPACK's dynamic table, where a compression side channel
    // could recover it (RFC 7541, 7.1.3).
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_skip_blanks_and_comments_and_keep_order() {
        let text = "\n# rotated 2026-01-02\n  new-token \nold-token\n\n";
        assert_eq!(
            tokens_in(text).collect::<Vec<_>>(),
            ["new-token", "old-token"]
        );
    }

    #[test]
    fn tokens_with_spaces_or_control_characters_are_refused() {
        for bad in ["", "two words", "tab\there", "é"] {
            let err = Token::new(bad).unwrap_err();
            assert!(err.to_string().contains("visible ASCII"), "{bad:?}: {err}");
        }
        let token = Token::new("s3cr3t").unwrap();
        assert_eq!(token.header(), "Bearer s3cr3t");
        assert!(token.header().is_sensitive());
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
    }

    #[test]
    fn missing_and_malformed_files_are_named() {
        let dir = std::env::temp_dir().join(format!("kcache-sec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let err = read_certificates(&missing).unwrap_err().to_string();
        assert!(err.contains("missing.pem"), "{err}");
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not pem").unwrap();
        let err = read_certificates(&junk).unwrap_err().to_string();
        assert!(
            err.contains("junk.pem") && err.contains("no CERTIFICATE"),
            "{err}"
        );
        let err = read_private_key(&junk).unwrap_err().to_string();
        assert!(
            err.contains("junk.pem") && err.contains("private key"),
            "{err}"
        );
        let empty = dir.join("token");
        std::fs::write(&empty, "# only a comment\n").unwrap();
        let err = Token::from_file(&empty).unwrap_err().to_string();
        assert!(err.contains("no token"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_server_name_is_the_dialed_host_unless_set() {
        let roots = RootCertStore::empty();
        let tls = Tls::from_config(client_config(roots, None).unwrap());
        assert_eq!(
            tls.name_for("node-0.example:7000").unwrap().to_str(),
            "node-0.example"
        );
        assert_eq!(tls.name_for("[::1]:7000").unwrap().to_str(), "::1");
        let named = tls.with_server_name("kcache.default.svc").unwrap();
        assert_eq!(
            named.name_for("10.0.0.1:7000").unwrap().to_str(),
            "kcache.default.svc"
        );
    }
}
