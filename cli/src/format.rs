//! How the CLI renders answers: pure functions from replies to text, tested here.

use std::time::Duration;

use bytesize::ByteSize;

use kcache_client::proto::{NodeStats, StatsResponse, TopologyResponse};

/// Seconds with millisecond precision (`12.345s`): the wire's resolution, and a form
/// scripts can parse without a duration library.
pub fn seconds(d: Duration) -> String {
    format!("{}.{:03}s", d.as_secs(), d.subsec_millis())
}

/// One row per node, so the same table serves a single node and, later, a cluster.
pub fn stats_table(stats: &StatsResponse) -> String {
    const HEADER: [&str; 10] = [
        "NODE",
        "ITEMS",
        "BYTES",
        "LIMIT",
        "HIT RATIO",
        "HITS",
        "MISSES",
        "EVICTIONS",
        "EXPIRATIONS",
        "UPTIME",
    ];
    let rows: Vec<Vec<String>> = stats.nodes.iter().map(stats_row).collect();
    table(&HEADER, &rows)
}

fn stats_row(n: &NodeStats) -> Vec<String> {
    vec![
        n.node_id.clone(),
        n.items.to_string(),
        ByteSize::b(n.bytes).display().iec().to_string(),
        ByteSize::b(n.limit_bytes).display().iec().to_string(),
        hit_ratio(n.hits, n.misses),
        n.hits.to_string(),
        n.misses.to_string(),
        n.evictions.to_string(),
        n.expirations.to_string(),
        humantime::format_duration(Duration::from_secs(n.uptime_seconds)).to_string(),
    ]
}

/// A percentage with one decimal; `-` before the first lookup rather than a fake 0%.
fn hit_ratio(hits: u64, misses: u64) -> String {
    let lookups = hits.saturating_add(misses);
    if lookups == 0 {
        return "-".to_owned();
    }
    let ratio = hits as f64 / lookups as f64;
    format!("{:.1}%", ratio * 100.0)
}

/// Members as a table, then the two numbers a smart client keys its routing on.
pub fn topology_text(topology: &TopologyResponse) -> String {
    let rows: Vec<Vec<String>> = topology
        .members
        .iter()
        .map(|m| {
            let ready = if m.ready { "yes" } else { "no" };
            vec![m.id.clone(), m.address.clone(), ready.to_owned()]
        })
        .collect();
    format!(
        "{}replication factor: {}\nepoch: {}\n",
        table(&["ID", "ADDRESS", "READY"], &rows),
        topology.replication_factor,
        topology.epoch
    )
}

/// Left-aligned columns two spaces apart, each as wide as its widest cell, with no
/// trailing spaces so the output diffs cleanly.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    let mut text = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            let pad = width - cell.chars().count();
            line.push_str(cell);
            line.push_str(&" ".repeat(pad + 2));
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use kcache_client::proto::Member;

    #[test]
    fn seconds_keep_millisecond_precision() {
        assert_eq!(seconds(Duration::from_millis(12_345)), "12.345s");
        assert_eq!(seconds(Duration::from_millis(7)), "0.007s");
    }

    #[test]
    fn hit_ratio_is_a_dash_before_any_lookup() {
        assert_eq!(hit_ratio(0, 0), "-");
        assert_eq!(hit_ratio(3, 1), "75.0%");
    }

    #[test]
    fn stats_table_aligns_columns_and_humanises_bytes() {
        let stats = StatsResponse {
            nodes: vec![NodeStats {
                node_id: "node-0".into(),
                items: 12,
                bytes: 1536,
                limit_bytes: 256 * 1024 * 1024,
                hits: 9,
                misses: 1,
                evictions: 0,
                expirations: 2,
                uptime_seconds: 3725,
            }],
        };
        let text = stats_table(&stats);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[1].contains("1.5 KiB"), "{text}");
        assert!(lines[1].contains("256.0 MiB"), "{text}");
        assert!(lines[1].contains("90.0%"), "{text}");
        assert!(lines[1].ends_with("1h 2m 5s"), "{text}");
        let column = |line: &str, word: &str| line.find(word);
        assert_eq!(column(lines[0], "ITEMS"), column(lines[1], "12"));
    }

    #[test]
    fn topology_lists_members_then_factor_and_epoch() {
        let topology = TopologyResponse {
            members: vec![Member {
                id: "node-0".into(),
                address: "10.0.0.1:7000".into(),
                ready: true,
            }],
            replication_factor: 2,
            epoch: 7,
        };
        assert_eq!(
            topology_text(&topology),
            "ID      ADDRESS        READY\n\
             node-0  10.0.0.1:7000  yes\n\
             replication factor: 2\n\
             epoch: 7\n"
        );
    }
}
