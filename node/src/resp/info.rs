//! INFO: the sections and fields Redis clients and tools read (redis-cli, exporters,
//! client libraries checking `redis_version` or `cluster_enabled`), from this node's
//! store and the port's counters.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::exec::REDIS_VERSION;
use super::{ClusterMode, Shared};

/// Sections INFO prints without arguments (and with `default` or `all`).
const SECTIONS: &[&str] = &[
    "server", "clients", "memory", "stats", "cluster", "keyspace",
];

/// INFO [section ...]: the named sections, in Redis's order; unknown ones are skipped.
pub(super) fn render(shared: &Shared, args: &[Bytes]) -> String {
    let wanted: Vec<String> = args
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    let everything = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| matches!(w.as_str(), "all" | "default" | "everything"));
    let mut text = String::new();
    for section in SECTIONS {
        if everything || wanted.iter().any(|w| w == section) {
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            write_section(shared, section, &mut text);
        }
    }
    text
}

fn write_section(shared: &Shared, section: &str, out: &mut String) {
    let service = &shared.service;
    let stats = service.store().stats();
    let counters = &shared.counters;
    let node = service.node();
    let field = |out: &mut String, name: &str, value: &dyn std::fmt::Display| {
        let _ = write!(out, "{name}:{value}\r\n");
    };
    match section {
        "server" => {
            out.push_str("# Server\r\n");
            field(out, "redis_version", &REDIS_VERSION);
            field(out, "kcache_version", &env!("CARGO_PKG_VERSION"));
            field(out, "kcache_node_id", &node.node_id);
            let mode = match shared.config.cluster_mode {
                ClusterMode::Standalone => "standalone",
                ClusterMode::Emulated | ClusterMode::Cluster => "cluster",
            };
            field(out, "redis_mode", &mode);
            field(out, "os", &std::env::consts::OS);
            field(out, "arch_bits", &(usize::BITS));
            field(out, "process_id", &std::process::id());
            field(out, "tcp_port", &shared.config.port);
            let uptime = node.started.elapsed().as_secs();
            field(out, "uptime_in_seconds", &uptime);
            field(out, "uptime_in_days", &(uptime / 86_400));
        }
        "clients" => {
            out.push_str("# Clients\r\n");
            field(
                out,
                "connected_clients",
                &counters.connected.load(Ordering::Relaxed),
            );
            field(out, "maxclients", &super::MAX_CONNECTIONS);
            field(out, "blocked_clients", &0);
        }
        "memory" => {
            out.push_str("# Memory\r\n");
            field(out, "used_memory", &stats.bytes);
            field(out, "used_memory_human", &human(stats.bytes));
            field(out, "maxmemory", &stats.limit);
            field(out, "maxmemory_human", &human(stats.limit));
            // TinyLFU-guided sampling is closest to Redis's allkeys-lfu.
            field(out, "maxmemory_policy", &"allkeys-lfu");
        }
        "stats" => {
            out.push_str("# Stats\r\n");
            let total = counters.connections_total.load(Ordering::Relaxed);
            field(out, "total_connections_received", &total);
            let commands = counters.commands.load(Ordering::Relaxed);
            field(out, "total_commands_processed", &commands);
            let rejected = counters.rejected.load(Ordering::Relaxed);
            field(out, "rejected_connections", &rejected);
            field(out, "expired_keys", &stats.expirations);
            field(out, "evicted_keys", &stats.evictions);
            field(out, "keyspace_hits", &stats.hits);
            field(out, "keyspace_misses", &stats.misses);
        }
        "cluster" => {
            out.push_str("# Cluster\r\n");
            let enabled = u8::from(shared.config.cluster_mode != ClusterMode::Standalone);
            field(out, "cluster_enabled", &enabled);
        }
        "keyspace" => {
            out.push_str("# Keyspace\r\n");
            if stats.items > 0 {
                let _ = write!(out, "db0:keys={},expires=0,avg_ttl=0\r\n", stats.items);
            }
        }
        _ => {}
    }
}

/// Bytes as Redis prints them for people: `1.50M`.
fn human(bytes: u64) -> String {
    const UNITS: &[(u64, &str)] = &[(1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")];
    for &(size, unit) in UNITS {
        if bytes >= size {
            return format!("{:.2}{unit}", bytes as f64 / size as f64);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_print_as_redis_prints_them() {
        assert_eq!(super::human(512), "512B");
        assert_eq!(super::human(3 << 19), "1.50M");
        assert_eq!(super::human(64 << 20), "64.00M");
    }
}
