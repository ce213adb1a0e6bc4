//! Command-line and environment configuration of a node. Every flag also reads a
//! `KCACHE_*` variable, so a pod spec can set either.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use clap::builder::TypedValueParser as _;
use clap::{Parser, ValueEnum};

use crate::cluster::{WriteAck, membership::parse_peers};
use crate::resp::ClusterMode;
use crate::security::{SecurityConfig, TlsFiles};
use crate::server::Discovery;
use crate::store::{Limits, MAX_KEY_SIZE};

/// kcache-node: one member of a kcache cluster.
#[derive(Debug, Clone, Parser)]
#[command(name = "kcache-node", version, about)]
pub struct Args {
    /// Address of the gRPC API (kcache.v1.Cache, health, reflection).
    #[arg(long, env = "KCACHE_GRPC_ADDR", default_value = "0.0.0.0:7000")]
    pub grpc_addr: SocketAddr,

    /// Address of the Redis-protocol port (RESP2/RESP3, e.g. 0.0.0.0:6379); off when
    /// unset.
    #[arg(long, env = "KCACHE_REDIS_ADDR")]
    pub redis_addr: Option<SocketAddr>,

    /// How the Redis port presents the cluster: standalone (a plain Redis server;
    /// CLUSTER commands are refused), emulated (a one-shard Redis Cluster of this node, so
    /// Redis Cluster clients connect too; every node forwards keys to their owners) or
    /// cluster (the real slot table, each member at its host and this node's Redis
    /// port, and MOVED to a slot's primary, so cluster clients go straight to owners).
    #[arg(long, env = "KCACHE_REDIS_CLUSTER_MODE", value_enum, default_value_t = ClusterMode::Standalone)]
    pub redis_cluster_mode: ClusterMode,

    /// Address of the admin HTTP endpoints: /metrics, /healthz, /readyz.
    #[arg(long, env = "KCACHE_ADMIN_ADDR", default_value = "0.0.0.0:7001")]
    pub admin_addr: SocketAddr,

    /// Memory for keys, values and per-entry overhead (e.g. 256MiB, 1GiB). Writes
    /// beyond it evict the least frequently used entries.
    #[arg(long, env = "KCACHE_MAX_MEMORY", default_value = "256MiB")]
    pub max_memory: ByteSize,

    /// Largest value accepted; larger ones get INVALID_ARGUMENT.
    #[arg(long, env = "KCACHE_MAX_VALUE_SIZE", default_value = "1MiB")]
    pub max_value_size: ByteSize,

    /// Longest key accepted, 1 to 250 bytes.
    #[arg(long, env = "KCACHE_MAX_KEY_SIZE", default_value_t = MAX_KEY_SIZE,
          value_parser = clap::value_parser!(u16).range(1..=MAX_KEY_SIZE as i64).map(usize::from))]
    pub max_key_size: usize,

    /// TTL of writes that name none (e.g. 10m, 1h); "0" or absent means never expire.
    #[arg(long, env = "KCACHE_DEFAULT_TTL", value_parser = parse_ttl)]
    pub default_ttl: Option<Duration>,

    /// This node's member id; defaults to $POD_NAME, then the hostname.
    #[arg(long, env = "KCACHE_NODE_ID")]
    pub node_id: Option<String>,

    /// Where members come from: none (this node alone), static (--peers) or
    /// kubernetes (the EndpointSlices of --service).
    #[arg(long, env = "KCACHE_DISCOVERY", value_enum, default_value_t = DiscoveryKind::None)]
    pub discovery: DiscoveryKind,

    /// Members for --discovery static: id=host:port,... (this node may be listed).
    #[arg(long, env = "KCACHE_PEERS", default_value = "")]
    pub peers: String,

    /// Headless Service whose EndpointSlices list the members (--discovery kubernetes).
    #[arg(long, env = "KCACHE_SERVICE")]
    pub service: Option<String>,

    /// Namespace of --service; defaults to $POD_NAMESPACE, then the pod's own.
    #[arg(long, env = "KCACHE_NAMESPACE")]
    pub namespace: Option<String>,

    /// Owners per key: writes are copied to this many members.
    #[arg(long, env = "KCACHE_REPLICATION_FACTOR", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=16).map(usize::from))]
    pub replication_factor: usize,

    /// When a write answers: after the coordinating owner stored it (one) or after
    /// every reachable owner did (all).
    #[arg(long, env = "KCACHE_WRITE_ACK", value_enum, default_value_t = WriteAck::All)]
    pub write_ack: WriteAck,

    /// On SIGTERM, how long the node may spend handing its entries to the owners
    /// that remain before it exits anyway.
    #[arg(long, env = "KCACHE_DRAIN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// How often the node compares what it holds with each member it shares keys
    /// with, and repairs differences (writes a frozen or cut-off replica missed).
    /// 0s turns anti-entropy off.
    #[arg(long, env = "KCACHE_ANTI_ENTROPY_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub anti_entropy_interval: Duration,

    /// host:port peers and clients reach this node at; defaults to $POD_IP with the
    /// --grpc-addr port, else --grpc-addr itself.
    #[arg(long, env = "KCACHE_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,

    /// Serve TLS on the gRPC port with this certificate chain (PEM; a
    /// kubernetes.io/tls Secret's tls.crt). Also presented to peers. Re-read when it
    /// changes.
    #[arg(
        long,
        env = "KCACHE_TLS_CERT_FILE",
        value_name = "PEM",
        requires = "tls_key_file"
    )]
    pub tls_cert_file: Option<PathBuf>,

    /// The private key of --tls-cert-file (PEM; tls.key).
    #[arg(
        long,
        env = "KCACHE_TLS_KEY_FILE",
        value_name = "PEM",
        requires = "tls_cert_file"
    )]
    pub tls_key_file: Option<PathBuf>,

    /// Demand a client certificate signed by a CA in this file (PEM; ca.crt) from
    /// every client and peer: mutual TLS.
    #[arg(
        long,
        env = "KCACHE_TLS_CLIENT_CA_FILE",
        value_name = "PEM",
        requires = "tls_cert_file"
    )]
    pub tls_client_ca_file: Option<PathBuf>,

    /// CAs that peers' certificates are checked against when this node calls them
    /// (PEM); defaults to --tls-client-ca-file.
    #[arg(
        long,
        env = "KCACHE_TLS_CA_FILE",
        value_name = "PEM",
        requires = "tls_cert_file"
    )]
    pub tls_ca_file: Option<PathBuf>,

    /// The name peers' certificates must carry when this node calls them; defaults to
    /// <service>.<namespace>.svc with --discovery kubernetes, else each peer's host.
    /// With --tls-client-ca-file, the Peer service also answers only callers whose
    /// certificate is valid for this name.
    #[arg(long, env = "KCACHE_TLS_SERVER_NAME", requires = "tls_cert_file")]
    pub tls_server_name: Option<String>,

    /// Demand `authorization: Bearer <token>` on every Cache call (and Peer call,
    /// without --peer-token-file), with one of the tokens in this file (one a line;
    /// the first is sent to peers). Re-read when it changes, so a rotation can accept
    /// the old and the new token at once.
    #[arg(long, env = "KCACHE_AUTH_TOKEN_FILE", value_name = "FILE")]
    pub auth_token_file: Option<PathBuf>,

    /// Tokens only the cluster's nodes hold (one a line; the first is sent to peers in
    /// the `kcache-peer-token` metadata): the Peer service, whose Sync streams out the
    /// whole store, then wants one of these there, and --auth-token-file's do not open
    /// it. Re-read when it changes.
    #[arg(long, env = "KCACHE_PEER_TOKEN_FILE", value_name = "FILE")]
    pub peer_token_file: Option<PathBuf>,

    /// With --peer-token-file, let the Peer service accept --auth-token-file's tokens
    /// too: only while a rolling update brings peer tokens to nodes that still send
    /// the application token (the operator sets it for that rollout alone).
    #[arg(
        long,
        env = "KCACHE_PEER_ACCEPTS_APP_TOKENS",
        requires = "peer_token_file"
    )]
    pub peer_accepts_app_tokens: bool,

    /// With --auth-token-file, also admit calls and Redis connections that carry no
    /// token at all (a token that is sent must still be accepted): only while a
    /// rolling update turns authentication on or off, so that nodes without tokens
    /// can still replicate, hand off and forward to the ones with them (the operator
    /// sets it for those rollouts alone).
    #[arg(
        long,
        env = "KCACHE_AUTH_ACCEPTS_ANONYMOUS",
        requires = "auth_token_file"
    )]
    pub auth_accepts_anonymous: bool,

    /// How often the TLS and token files are checked for changes.
    #[arg(long, env = "KCACHE_CREDENTIAL_RELOAD_INTERVAL", default_value = "2s",
          value_parser = parse_interval)]
    pub credential_reload_interval: Duration,

    /// Log format.
    #[arg(long, env = "KCACHE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter in tracing's EnvFilter syntax (e.g. info, kcache_node=debug).
    #[arg(long, env = "KCACHE_LOG", default_value = "info")]
    pub log: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiscoveryKind {
    None,
    Static,
    Kubernetes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("the interval must be more than 0".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_ttl(s: &str) -> Result<Duration, humantime::DurationError> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s)
}

impl Args {
    /// The store's limits, or a message naming the flag that is out of range.
    pub fn limits(&self) -> Result<Limits, String> {
        let ttl = self.default_ttl.filter(|d| !d.is_zero());
        if let Some(ttl) = ttl
            && ttl > crate::store::MAX_TTL
        {
            return Err(format!(
                "--default-ttl {} is over the limit of 365 days",
                humantime::format_duration(ttl)
            ));
        }
        if self.max_memory.as_u64() < 1 << 20 {
            return Err(format!(
                "--max-memory {} is below the minimum of 1MiB",
                self.max_memory
            ));
        }
        Ok(Limits {
            max_memory: self.max_memory.as_u64(),
            max_key_size: self.max_key_size,
            max_value_size: usize::try_from(self.max_value_size.as_u64())
                .map_err(|_| "--max-value-size does not fit in memory".to_owned())?,
            default_ttl: ttl,
        })
    }

    /// The membership source, or a message naming the flag that is missing or wrong.
    pub fn discovery(&self) -> Result<Discovery, String> {
        match self.discovery {
            DiscoveryKind::None => Ok(Discovery::None),
            DiscoveryKind::Static => {
                let members = parse_peers(&self.peers)?;
                if members.is_empty() {
                    return Err("--discovery static needs --peers id=host:port,...".into());
                }
                Ok(Discovery::Static(members))
            }
            DiscoveryKind::Kubernetes => {
                let service = self
                    .service
                    .clone()
                    .ok_or("--discovery kubernetes needs --service (the headless Service)")?;
                let namespace = self
                    .namespace
                    .clone()
                    .or_else(|| std::env::var("POD_NAMESPACE").ok())
                    .or_else(|| {
                        std::fs::read_to_string(
                            "/var/run/secrets/kubernetes.io/serviceaccount/namespace",
                        )
                        .ok()
                    })
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .ok_or("--discovery kubernetes needs --namespace (or $POD_NAMESPACE)")?;
                Ok(Discovery::Kubernetes { service, namespace })
            }
        }
    }

    /// The credential files; `discovery` settles the name peers' certificates carry.
    pub fn security(&self, discovery: &Discovery) -> SecurityConfig {
        let tls = self
            .tls_cert_file
            .clone()
            .zip(self.tls_key_file.clone())
            .map(|(cert, key)| TlsFiles {
                cert,
                key,
                client_ca: self.tls_client_ca_file.clone(),
                peer_ca: self.tls_ca_file.clone(),
            });
        let peer_server_name = self.tls_server_name.clone().or_else(|| match discovery {
            Discovery::Kubernetes { service, namespace } => {
                Some(format!("{service}.{namespace}.svc"))
            }
            _ => None,
        });
        SecurityConfig {
            tls,
            token_file: self.auth_token_file.clone(),
            peer_token_file: self.peer_token_file.clone(),
            peer_accepts_app_tokens: self.peer_accepts_app_tokens,
            auth_accepts_anonymous: self.auth_accepts_anonymous,
            peer_server_name,
            reload_interval: self.credential_reload_interval,
        }
    }

    /// Where peers reach this node: --advertise-addr, else $POD_IP with the gRPC port.
    pub fn advertise_addr(&self) -> Option<String> {
        self.advertise_addr.clone().or_else(|| {
            std::env::var("POD_IP")
                .ok()
                .filter(|ip| !ip.is_empty())
                .map(|ip| {
                    let port = self.grpc_addr.port();
                    if ip.contains(':') {
                        format!("[{ip}]:{port}")
                    } else {
                        format!("{ip}:{port}")
                    }
                })
        })
    }

    /// The member id: --node-id, else $POD_NAME, else the hostname.
    pub fn node_id(&self) -> String {
        self.node_id
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok())
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "kcache-node".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_sizes_and_durations() {
        let args = Args::try_parse_from([
            "kcache-node",
            "--max-memory",
            "64MiB",
            "--max-value-size",
            "512KiB",
            "--default-ttl",
            "10m",
        ])
        .unwrap();
        let limits = args.limits().unwrap();
        assert_eq!(limits.max_memory, 64 << 20);
        assert_eq!(limits.max_value_size, 512 << 10);
        assert_eq!(limits.default_ttl, Some(Duration::from_secs(600)));
    }

    #[test]
    fn key_size_above_250_is_refused_by_the_parser() {
        let err = Args::try_parse_from(["kcache-node", "--max-key-size", "300"]).unwrap_err();
        assert!(err.to_string().contains("1..=250"), "{err}");
    }

    #[test]
    fn cluster_flags_parse_and_missing_ones_are_named() {
        let args = Args::try_parse_from([
            "kcache-node",
            "--discovery",
            "static",
            "--peers",
            "a=127.0.0.1:7000,b=127.0.0.2:7000",
            "--replication-factor",
            "2",
            "--write-ack",
            "one",
            "--drain-timeout",
            "5s",
        ])
        .unwrap();
        assert!(matches!(args.discovery().unwrap(), Discovery::Static(m) if m.len() == 2));
        assert_eq!(args.replication_factor, 2);
        assert_eq!(args.write_ack, WriteAck::One);
        assert_eq!(args.drain_timeout, Duration::from_secs(5));
        let args = Args::try_parse_from(["kcache-node", "--discovery", "kubernetes"]).unwrap();
        assert!(args.discovery().unwrap_err().contains("--service"));
        let args = Args::try_parse_from(["kcache-node", "--discovery", "static"]).unwrap();
        assert!(args.discovery().unwrap_err().contains("--peers"));
    }

    #[test]
    fn security_flags_make_the_files_and_the_peer_name() {
        let args = Args::try_parse_from([
            "kcache-node",
            "--discovery",
            "kubernetes",
            "--service",
            "demo-headless",
            "--namespace",
            "prod",
            "--tls-cert-file",
            "/tls/tls.crt",
            "--tls-key-file",
            "/tls/tls.key",
            "--tls-client-ca-file",
            "/tls/ca.crt",
            "--auth-token-file",
            "/auth/token",
            "--peer-token-file",
            "/peer-auth/token",
        ])
        .unwrap();
        let security = args.security(&args.discovery().unwrap());
        let tls = security.tls.unwrap();
        assert_eq!(tls.cert, PathBuf::from("/tls/tls.crt"));
        assert_eq!(tls.peer_roots(), Some(&PathBuf::from("/tls/ca.crt")));
        assert_eq!(
            security.peer_server_name.as_deref(),
            Some("demo-headless.prod.svc")
        );
        assert_eq!(security.token_file, Some(PathBuf::from("/auth/token")));
        assert_eq!(
            security.peer_token_file,
            Some(PathBuf::from("/peer-auth/token"))
        );
        assert_eq!(security.reload_interval, Duration::from_secs(2));
    }

    #[test]
    fn a_certificate_without_its_key_is_refused_by_the_parser() {
        let err = Args::try_parse_from(["kcache-node", "--tls-cert-file", "/tls/tls.crt"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--tls-key-file"), "{err}");
        let err = Args::try_parse_from(["kcache-node", "--tls-client-ca-file", "/tls/ca.crt"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--tls-cert-file"), "{err}");
    }

    #[test]
    fn a_tiny_memory_limit_names_the_flag() {
        let args = Args::try_parse_from(["kcache-node", "--max-memory", "10KiB"]).unwrap();
        assert!(args.limits().unwrap_err().contains("--max-memory"));
    }
}
