//! CLUSTER commands for Redis Cluster clients in the `emulated` cluster mode: every
//! node answers as a one-shard cluster that it alone serves, with all 16,384 slots, at
//! the address the client reached it on. A cluster client (redis-py's RedisCluster,
//! redis-rs cluster, go-redis ClusterClient, lettuce) then sends every key to the node
//! it was given, which forwards it to its owner as for any client — as Dragonfly's
//! `cluster_mode=emulated` does. No client ever sees MOVED, so membership changes need
//! nothing from it.

use std::fmt::Write as _;
use std::net::SocketAddr;

use bytes::Bytes;

use super::reply::Out;

/// Slots of Redis Cluster's key space.
pub const SLOTS: u16 = 16_384;

/// The slot of a key as Redis Cluster computes it: CRC16 (XMODEM) of the key, or of
/// the part between the first `{` and the next `}` when that part is not empty.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16(tagged.unwrap_or(key)) % SLOTS
}

/// CRC16-CCITT (XMODEM: polynomial 0x1021, initial 0), as in Redis's crc16.c.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// A 40-character node id, as Redis Cluster's, stable for a member id.
pub fn node_id(member: &str) -> String {
    let mut id = String::with_capacity(40);
    for round in 0u64..3 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ round;
        for &b in member.as_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        let _ = write!(id, "{h:016x}");
    }
    id.truncate(40);
    id
}

/// CLUSTER <subcommand> from a client connected to this node at `local`.
pub fn command(out: &mut Out<'_>, args: &[Bytes], member: &str, local: SocketAddr) {
    let id = node_id(member);
    let ip = local.ip().to_string();
    let port = i64::from(local.port());
    let sub = args[1].to_ascii_lowercase();
    match (sub.as_slice(), args.len()) {
        (b"slots", 2) => {
            out.array(1);
            out.array(3);
            out.int(0);
            out.int(i64::from(SLOTS - 1));
            out.array(3);
            out.bulk(ip.as_bytes());
            out.int(port);
            out.bulk(id.as_bytes());
        }
        (b"shards", 2) => {
            out.array(1);
            out.map(2);
            out.bulk(b"slots");
            out.array(2);
            out.int(0);
            out.int(i64::from(SLOTS - 1));
            out.bulk(b"nodes");
            out.array(1);
            out.map(7);
            out.bulk(b"id");
            out.bulk(id.as_bytes());
            out.bulk(b"port");
            out.int(port);
            out.bulk(b"ip");
            out.bulk(ip.as_bytes());
            out.bulk(b"endpoint");
            out.bulk(ip.as_bytes());
            out.bulk(b"role");
            out.bulk(b"master");
            out.bulk(b"replication-offset");
            out.int(0);
            out.bulk(b"health");
            out.bulk(b"online");
        }
        (b"nodes", 2) => out.verbatim(&format!(
            "{id} {ip}:{port}@{port} myself,master - 0 0 1 connected 0-{}\n",
            SLOTS - 1
        )),
        (b"myid", 2) => out.bulk(id.as_bytes()),
        (b"keyslot", 3) => out.int(i64::from(key_slot(&args[2]))),
        (b"info", 2) => out.verbatim(
            "cluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:16384\r\n\
             cluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:1\r\n\
             cluster_size:1\r\ncluster_current_epoch:1\r\ncluster_my_epoch:1\r\n",
        ),
        (b"slots" | b"shards" | b"nodes" | b"myid" | b"keyslot" | b"info", _) => {
            out.error(&format!(
                "ERR wrong number of arguments for 'cluster|{}' command",
                String::from_utf8_lossy(&sub)
            ))
        }
        _ => out.error(&format!(
            "ERR unknown subcommand '{}'. Try CLUSTER HELP.",
            String::from_utf8_lossy(&args[1])
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_match_redis_cluster() {
        // Values from Redis's own documentation and test suite.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
    }

    #[test]
    fn node_ids_are_forty_hex_digits_and_stable() {
        let id = node_id("kcache-0");
        assert_eq!(id.len(), 40);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(id, node_id("kcache-0"));
        assert_ne!(id, node_id("kcache-1"));
    }
}
