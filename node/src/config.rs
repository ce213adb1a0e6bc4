//! Command-line and environment configuration of a node. Every flag also reads a
//! `KCACHE_*` variable, so a pod spec can set either.

use std::net::SocketAddr;
use std::time::Duration;

use bytesize::ByteSize;
use clap::builder::TypedValueParser as _;
use clap::{Parser, ValueEnum};

use crate::store::{Limits, MAX_KEY_SIZE};

/// kcache-node: one member of a kcache cluster.
#[derive(Debug, Clone, Parser)]
#[command(name = "kcache-node", version, about)]
pub struct Args {
    /// Address of the gRPC API (kcache.v1.Cache, health, reflection).
    #[arg(long, env = "KCACHE_GRPC_ADDR", default_value = "0.0.0.0:7000")]
    pub grpc_addr: SocketAddr,

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

    /// Log format.
    #[arg(long, env = "KCACHE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter in tracing's EnvFilter syntax (e.g. info, kcache_node=debug).
    #[arg(long, env = "KCACHE_LOG", default_value = "info")]
    pub log: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
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
    fn a_tiny_memory_limit_names_the_flag() {
        let args = Args::try_parse_from(["kcache-node", "--max-memory", "10KiB"]).unwrap();
        assert!(args.limits().unwrap_err().contains("--max-memory"));
    }
}
