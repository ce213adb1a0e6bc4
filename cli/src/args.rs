//! The command line's shape: flags, subcommands, and the parsers of their values.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use super::AFTER_HELP;
use kcache_client::{ClientBuilder, Condition, Error, SetOptions, Tls, Token, Ttl};

/// Talk to a kcache node.
#[derive(Debug, Parser)]
#[command(name = "kcache", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// The node, or a cluster's headless Service: host:port, http://host:port or
    /// dns:///name:port (calls go round robin over every address the name has).
    #[arg(
        long,
        env = "KCACHE_ADDR",
        default_value = "127.0.0.1:7000",
        global = true
    )]
    pub addr: String,
    /// Deadline of each call, e.g. 500ms or 2s.
    #[arg(
        long,
        env = "KCACHE_TIMEOUT",
        default_value = "2s",
        global = true,
        value_parser = parse_timeout
    )]
    pub timeout: Duration,
    /// Send each key's calls straight to its owner (fetches the cluster topology).
    #[arg(long, env = "KCACHE_SMART", global = true)]
    pub smart: bool,
    /// Resolve dns:/// names with this DNS server (ip:port) instead of the system's.
    #[arg(long, env = "KCACHE_DNS_SERVER", global = true)]
    pub dns_server: Option<std::net::SocketAddr>,
    /// Speak TLS and trust the CA certificates in this PEM file (a Secret's ca.crt).
    #[arg(long, env = "KCACHE_TLS_CA_FILE", global = true, value_name = "PEM")]
    pub tls_ca_file: Option<PathBuf>,
    /// Present this client certificate (PEM chain), for nodes that require mutual TLS.
    #[arg(
        long,
        env = "KCACHE_TLS_CERT_FILE",
        global = true,
        value_name = "PEM",
        requires_all = ["tls_key_file", "tls_ca_file"]
    )]
    pub tls_cert_file: Option<PathBuf>,
    /// The private key of --tls-cert-file (PEM).
    #[arg(
        long,
        env = "KCACHE_TLS_KEY_FILE",
        global = true,
        value_name = "PEM",
        requires = "tls_cert_file"
    )]
    pub tls_key_file: Option<PathBuf>,
    /// Check the node's certificate against this name instead of the host of --addr.
    #[arg(
        long,
        env = "KCACHE_TLS_SERVER_NAME",
        global = true,
        requires = "tls_ca_file"
    )]
    pub tls_server_name: Option<String>,
    /// Send the first token in this file (one a line) as `authorization: Bearer`.
    #[arg(long, env = "KCACHE_TOKEN_FILE", global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The token itself; prefer the KCACHE_TOKEN variable or --token-file, since
    /// other users can read a command line.
    #[arg(
        long,
        env = "KCACHE_TOKEN",
        global = true,
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// How every client of this command connects: deadline, routing and credentials
    /// (files read now, so a bad one fails before any call, naming the file).
    pub fn connect(&self) -> Result<Connect, Error> {
        let tls = match &self.tls_ca_file {
            None => None,
            Some(ca) => {
                let identity = self
                    .tls_cert_file
                    .as_deref()
                    .zip(self.tls_key_file.as_deref());
                let tls = Tls::from_pem_files(ca, identity)?;
                Some(match &self.tls_server_name {
                    Some(name) => tls.with_server_name(name)?,
                    None => tls,
                })
            }
        };
        let token = match (&self.token_file, &self.token) {
            (Some(path), _) => Some(Token::from_file(path)?),
            (None, Some(token)) => Some(
                Token::new(token.trim())
                    .map_err(|e| Error::Credentials(format!("--token / KCACHE_TOKEN: {e}")))?,
            ),
            (None, None) => None,
        };
        Ok(Connect {
            timeout: self.timeout,
            smart: self.smart,
            dns_server: self.dns_server,
            tls,
            token,
        })
    }
}

/// What every client a command makes shares.
#[derive(Debug, Clone)]
pub struct Connect {
    pub timeout: Duration,
    pub smart: bool,
    pub dns_server: Option<std::net::SocketAddr>,
    pub tls: Option<Tls>,
    pub token: Option<Token>,
}

impl Connect {
    /// A client builder for `addr` with these settings.
    pub fn builder(&self, addr: &str) -> ClientBuilder {
        let mut builder = kcache_client::Client::builder(addr)
            .timeout(self.timeout)
            .smart(self.smart);
        if let Some(server) = self.dns_server {
            builder = builder.dns_server(server);
        }
        if let Some(tls) = &self.tls {
            builder = builder.tls(tls.clone());
        }
        if let Some(token) = &self.token {
            builder = builder.token(token.clone());
        }
        builder
    }
}

/// The subcommands. Keys are taken as UTF-8 text; values from stdin may be any bytes.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a key's value followed by a newline.
    Get {
        /// The key.
        key: String,
        /// Also print the version and the remaining TTL.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Store a value, always or under a condition.
    Set(SetArgs),
    /// Delete a key.
    Del {
        /// The key.
        key: String,
        /// Delete only if the current version is VERSION.
        #[arg(long, value_name = "VERSION")]
        cas: Option<u64>,
    },
    /// Print a key's remaining TTL, or set a new one with --set.
    Ttl {
        /// The key.
        key: String,
        /// Give the key this TTL (e.g. 30s, 1h, or never) instead of printing it.
        #[arg(long, value_name = "DURATION|never", value_parser = parse_ttl)]
        set: Option<Ttl>,
    },
    /// Add to a decimal integer value and print the result.
    Incr(IncrArgs),
    /// Print the node's counters.
    Stats,
    /// Print the members, replication factor and epoch.
    Topology,
    /// Drive load at kcache, Redis or memcached and report throughput and latency.
    Bench(Box<super::bench::BenchArgs>),
}

/// Arguments of `set`.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// The key.
    pub key: String,
    /// The value; `-` reads it from stdin byte for byte (a trailing newline is kept).
    #[arg(allow_negative_numbers = true)]
    pub value: String,
    /// Time to live, e.g. 30s or 1h; `never` for no expiry. Default: the node's.
    #[arg(long, value_name = "DURATION|never", value_parser = parse_ttl)]
    pub ttl: Option<Ttl>,
    /// Store only if the key is absent.
    #[arg(long, conflicts_with_all = ["xx", "cas"])]
    pub nx: bool,
    /// Store only if the key is present.
    #[arg(long, conflicts_with = "cas")]
    pub xx: bool,
    /// Store only if the current version is VERSION.
    #[arg(long, value_name = "VERSION")]
    pub cas: Option<u64>,
}

impl SetArgs {
    /// The options these flags stand for.
    pub fn options(&self) -> SetOptions {
        let condition = match (self.nx, self.xx, self.cas) {
            (true, _, _) => Condition::IfAbsent,
            (_, true, _) => Condition::IfPresent,
            (_, _, Some(version)) => Condition::IfVersion(version),
            _ => Condition::Always,
        };
        SetOptions {
            ttl: self.ttl.unwrap_or_default(),
            condition,
        }
    }
}

/// Arguments of `incr`. Negative deltas work as `incr k -5`, `incr k -- -5` and
/// `incr k --by -5`.
#[derive(Debug, Args)]
pub struct IncrArgs {
    /// The key.
    pub key: String,
    /// Amount to add (default 1); may be negative.
    #[arg(allow_negative_numbers = true, conflicts_with = "by")]
    pub delta: Option<i64>,
    /// Amount to add, as a flag.
    #[arg(long, value_name = "DELTA", allow_negative_numbers = true)]
    pub by: Option<i64>,
    /// Value to start from when the key is absent.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub initial: i64,
    /// TTL of a key this creates (an existing key keeps its own); `never` for no expiry.
    #[arg(long, value_name = "DURATION|never", value_parser = parse_ttl)]
    pub ttl: Option<Ttl>,
}

impl IncrArgs {
    /// The delta given either way, 1 when none was.
    pub fn delta(&self) -> i64 {
        self.delta.or(self.by).unwrap_or(1)
    }
}

/// Parses a TTL: a humantime duration (`30s`, `1h 30m`) or `never`. Zero is refused:
/// on the wire 0 means "never", which is surely not what `--ttl 0s` meant.
pub fn parse_ttl(s: &str) -> Result<Ttl, String> {
    if s == "never" {
        return Ok(Ttl::Never);
    }
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("a TTL of 0 would expire at once; use `never`".into()),
        Ok(d) => Ok(Ttl::After(d)),
        Err(e) => Err(format!("{e}; expected e.g. 30s, 1h or never")),
    }
}

/// Parses `--timeout`; zero is refused because every call would time out.
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("the timeout must be more than 0".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{e}; expected e.g. 500ms or 2s")),
    }
}
