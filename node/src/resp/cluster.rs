//! CLUSTER commands for Redis Cluster clients (redis-py's RedisCluster, redis-rs
//! cluster, go-redis ClusterClient, lettuce), in two modes.
//!
//! `emulated`: every node answers as a one-shard cluster that it alone serves, with all
//! 16,384 slots, at the address the client reached it on. A cluster client then sends
//! every key to the node it was given, which forwards it to its owner as for any
//! client — as Dragonfly's `cluster_mode=emulated` does. No client ever sees MOVED.
//!
//! `cluster`: every node reports the real slot table of its view (the one gRPC places
//! keys by), each member at its host and this node's Redis port — the operator gives
//! every pod the same port — and answers `-MOVED <slot> <host>:<port>` for a key whose
//! slot it is not the primary of ([`redirect`]), so a cluster client sends each key
//! straight to its primary.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::ops::RangeInclusive;

use bytes::Bytes;

use kcache_client::placement::{Member, SLOTS, View, key_slot};

use super::reply::Out;

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

/// CLUSTER <subcommand> in the `emulated` mode, from a client connected to this node
/// at `local`.
pub fn emulated(out: &mut Out<'_>, args: &[Bytes], member: &str, local: SocketAddr) {
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
        (b"info", 2) => out.verbatim(
            "cluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:16384\r\n\
             cluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:1\r\n\
             cluster_size:1\r\ncluster_current_epoch:1\r\ncluster_my_epoch:1\r\n",
        ),
        _ => other(out, args, &sub),
    }
}

/// The subcommands both modes answer alike, and errors for the rest.
fn other(out: &mut Out<'_>, args: &[Bytes], sub: &[u8]) {
    match (sub, args.len()) {
        (b"keyslot", 3) => out.int(i64::from(key_slot(&args[2]))),
        (b"slots" | b"shards" | b"nodes" | b"myid" | b"keyslot" | b"info", _) => {
            out.error(&format!(
                "ERR wrong number of arguments for 'cluster|{}' command",
                String::from_utf8_lossy(sub)
            ))
        }
        _ => out.error(&format!(
            "ERR unknown subcommand '{}'. Try CLUSTER HELP.",
            String::from_utf8_lossy(&args[1])
        )),
    }
}

/// The slot table as the `cluster` mode reports it: the view's members, each at its
/// Redis address, and each slot's owners.
pub struct Slots<'a> {
    pub view: &'a View,
    /// Owners a slot: the node's replication factor.
    pub replication: usize,
    /// This node's member id.
    pub me: &'a str,
    /// The Redis port every member serves on (this node's own).
    pub port: u16,
}

impl Slots<'_> {
    /// Runs of consecutive slots with the same owners, primary first.
    fn ranges(&self) -> Vec<(RangeInclusive<u16>, Vec<&Member>)> {
        let mut ranges: Vec<(RangeInclusive<u16>, Vec<&Member>)> = Vec::new();
        for slot in 0..SLOTS {
            let owners = self.view.slot_owners(slot, self.replication);
            match ranges.last_mut() {
                Some((range, last)) if *last == owners => *range = *range.start()..=slot,
                _ => ranges.push((slot..=slot, owners)),
            }
        }
        ranges
    }

    /// Runs of consecutive slots each member is the primary of, by member.
    fn primaries(&self) -> Vec<(&Member, Vec<RangeInclusive<u16>>)> {
        let mut by_member: Vec<(&Member, Vec<RangeInclusive<u16>>)> = self
            .view
            .members()
            .iter()
            .map(|m| (m, Vec::new()))
            .collect();
        for (range, owners) in self.ranges() {
            let Some(primary) = owners.first() else {
                continue;
            };
            if let Some((_, ranges)) = by_member.iter_mut().find(|(m, _)| m.id == primary.id) {
                match ranges.last_mut() {
                    Some(last) if *last.end() + 1 == *range.start() => {
                        *last = *last.start()..=*range.end();
                    }
                    _ => ranges.push(range),
                }
            }
        }
        by_member
    }

    /// Where a member's Redis port is: its host (from its gRPC address) and `port`.
    pub fn host(member: &Member) -> &str {
        let host = member
            .address
            .rsplit_once(':')
            .map_or(member.address.as_str(), |(host, _)| host);
        host.trim_start_matches('[').trim_end_matches(']')
    }

    fn node(&self, out: &mut Out<'_>, member: &Member) {
        out.array(3);
        out.bulk(Self::host(member).as_bytes());
        out.int(i64::from(self.port));
        out.bulk(node_id(&member.id).as_bytes());
    }

    /// CLUSTER <subcommand> in the `cluster` mode.
    pub fn command(&self, out: &mut Out<'_>, args: &[Bytes]) {
        let sub = args[1].to_ascii_lowercase();
        let port = i64::from(self.port);
        match (sub.as_slice(), args.len()) {
            (b"slots", 2) => {
                let ranges = self.ranges();
                out.array(ranges.len());
                for (range, owners) in ranges {
                    out.array(2 + owners.len());
                    out.int(i64::from(*range.start()));
                    out.int(i64::from(*range.end()));
                    owners.iter().for_each(|m| self.node(out, m));
                }
            }
            (b"shards", 2) => {
                let shards = self.primaries();
                out.array(shards.len());
                for (member, ranges) in shards {
                    out.map(2);
                    out.bulk(b"slots");
                    out.array(2 * ranges.len());
                    for range in &ranges {
                        out.int(i64::from(*range.start()));
                        out.int(i64::from(*range.end()));
                    }
                    out.bulk(b"nodes");
                    out.array(1);
                    out.map(7);
                    out.bulk(b"id");
                    out.bulk(node_id(&member.id).as_bytes());
                    out.bulk(b"port");
                    out.int(port);
                    out.bulk(b"ip");
                    out.bulk(Self::host(member).as_bytes());
                    out.bulk(b"endpoint");
                    out.bulk(Self::host(member).as_bytes());
                    out.bulk(b"role");
                    out.bulk(b"master");
                    out.bulk(b"replication-offset");
                    out.int(0);
                    out.bulk(b"health");
                    out.bulk(b"online");
                }
            }
            (b"nodes", 2) => {
                let mut text = String::new();
                for (member, ranges) in self.primaries() {
                    let myself = if member.id == self.me { "myself," } else { "" };
                    let _ = write!(
                        text,
                        "{} {}:{port}@{port} {myself}master - 0 0 1 connected",
                        node_id(&member.id),
                        Self::host(member),
                    );
                    for range in ranges {
                        if range.start() == range.end() {
                            let _ = write!(text, " {}", range.start());
                        } else {
                            let _ = write!(text, " {}-{}", range.start(), range.end());
                        }
                    }
                    text.push('\n');
                }
                out.verbatim(&text);
            }
            (b"myid", 2) => out.bulk(node_id(self.me).as_bytes()),
            (b"info", 2) => {
                let n = self.view.len();
                let assigned = if n == 0 { 0 } else { SLOTS };
                let state = if n == 0 { "fail" } else { "ok" };
                out.verbatim(&format!(
                    "cluster_state:{state}\r\ncluster_slots_assigned:{assigned}\r\n\
                     cluster_slots_ok:{assigned}\r\ncluster_slots_pfail:0\r\n\
                     cluster_slots_fail:0\r\ncluster_known_nodes:{n}\r\n\
                     cluster_size:{n}\r\ncluster_current_epoch:1\r\ncluster_my_epoch:1\r\n",
                ));
            }
            _ => other(out, args, &sub),
        }
    }

    /// Whether a command on `slot` is served here or redirected: `Err` holds the
    /// `MOVED` error naming the slot's primary. A read on a READONLY connection is
    /// served by any owner, as a Redis replica serves it.
    pub fn redirect(&self, slot: u16, read_on_replica: bool) -> Result<(), String> {
        let owners = self.view.slot_owners(slot, self.replication);
        let Some(primary) = owners.first() else {
            return Ok(());
        };
        if primary.id == self.me || read_on_replica && owners.iter().any(|m| m.id == self.me) {
            return Ok(());
        }
        Err(format!(
            "MOVED {slot} {}:{}",
            Self::host(primary),
            self.port
        ))
    }
}

/// The one slot of a command's keys, or Redis's CROSSSLOT error when they span more.
pub fn slot_of<'a>(mut keys: impl Iterator<Item = &'a Bytes>) -> Result<Option<u16>, String> {
    let Some(first) = keys.next() else {
        return Ok(None);
    };
    let slot = key_slot(first);
    if keys.any(|k| key_slot(k) != slot) {
        return Err("CROSSSLOT Keys in request don't hash to the same slot".into());
    }
    Ok(Some(slot))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, address: &str) -> Member {
        Member {
            id: id.into(),
            address: address.into(),
        }
    }

    fn three() -> View {
        View::new(vec![
            member("a", "10.0.0.1:7000"),
            member("b", "10.0.0.2:7000"),
            member("c", "[fd00::3]:7000"),
        ])
    }

    #[test]
    fn ranges_cover_every_slot_once_with_the_views_owners() {
        let view = three();
        let slots = Slots {
            view: &view,
            replication: 2,
            me: "a",
            port: 6379,
        };
        let mut next = 0u32;
        for (range, owners) in slots.ranges() {
            assert_eq!(u32::from(*range.start()), next);
            for slot in range.clone() {
                assert_eq!(owners, view.slot_owners(slot, 2));
            }
            next = u32::from(*range.end()) + 1;
        }
        assert_eq!(next, u32::from(SLOTS));
        let primaries: usize = slots
            .primaries()
            .iter()
            .flat_map(|(_, ranges)| ranges.iter().map(|r| r.len()))
            .sum();
        assert_eq!(primaries, usize::from(SLOTS));
    }

    #[test]
    fn a_slot_another_member_is_primary_of_is_moved_to_its_host_and_the_redis_port() {
        let view = three();
        let slots = Slots {
            view: &view,
            replication: 2,
            me: "a",
            port: 6380,
        };
        let owned_by = |id: &str, rank: usize| {
            (0..SLOTS)
                .find(|&s| view.slot_owners(s, 2)[rank].id == id)
                .unwrap()
        };
        assert_eq!(slots.redirect(owned_by("a", 0), false), Ok(()));
        let c = owned_by("c", 0);
        assert_eq!(
            slots.redirect(c, false),
            Err(format!("MOVED {c} fd00::3:6380"))
        );
        let replica = (0..SLOTS)
            .find(|&s| view.slot_owners(s, 2)[1].id == "a")
            .unwrap();
        assert!(slots.redirect(replica, false).is_err());
        assert_eq!(slots.redirect(replica, true), Ok(()));
    }

    #[test]
    fn keys_of_two_slots_are_crossslot_and_a_hash_tag_joins_them() {
        let keys = |ks: &[&str]| {
            ks.iter()
                .map(|k| Bytes::from(k.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(slot_of(keys(&[]).iter()), Ok(None));
        assert_eq!(
            slot_of(keys(&["{u1}a", "{u1}b"]).iter()),
            Ok(Some(key_slot(b"u1")))
        );
        assert_eq!(
            slot_of(keys(&["foo", "bar"]).iter()),
            Err("CROSSSLOT Keys in request don't hash to the same slot".into())
        );
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
