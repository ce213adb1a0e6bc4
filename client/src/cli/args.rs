//! The command line's shape: flags, subcommands, and the parsers of their values.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use super::AFTER_HELP;
use crate::{Condition, SetOptions, Ttl};

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
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
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
