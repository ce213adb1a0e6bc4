//! Deletes remembered for a while, so that a copy of a key which missed its delete (a
//! replica that was unreachable when it was sent, a previous owner handing the key
//! off, a peer answering a read-through) cannot bring the key back: an entry whose
//! version is not newer than the key's tombstone is refused.
//!
//! A tombstone lives [`TOMBSTONE_HORIZON`]: far longer than a handoff or a replication
//! retry takes, and long enough for several anti-entropy rounds to remove the stale
//! copy itself. Tombstones are charged against the memory limit like entries, and may
//! take at most a sixteenth of it; past that the oldest go first (counted), and the
//! newest version forgotten so is kept ([`Tombstones::forgotten_below`]): anti-entropy
//! then leaves alone any entry not newer than it, which it can no longer tell from a
//! copy that missed one of those deletes.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;

/// How long a delete is remembered.
pub const TOMBSTONE_HORIZON: Duration = Duration::from_secs(600);

/// Bytes charged per tombstone besides its key: the map entry (key handle, version,
/// deadline), its place in the expiry queue and the key's heap block.
const OVERHEAD: u64 = 112;

/// What a tombstone of a `key_len`-byte key is charged against the memory limit.
pub const fn tombstone_charge(key_len: usize) -> u64 {
    key_len as u64 + OVERHEAD
}

/// A remembered delete, as scanned for handoff and sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    pub key: Bytes,
    pub version: u64,
}

#[derive(Debug, Clone, Copy)]
struct Mark {
    version: u64,
    /// Monotonic millisecond after which it is forgotten.
    until: u64,
}

/// One shard's tombstones. Runs under the shard's lock; reads no clock.
#[derive(Debug, Default)]
pub(crate) struct Tombstones {
    marks: HashMap<Bytes, Mark>,
    /// Keys in the order their marks were last set; an element whose deadline no
    /// longer matches its mark is stale and skipped.
    queue: VecDeque<(u64, Bytes)>,
    /// Bytes charged for the marks.
    pub bytes: u64,
    /// Marks forgotten before their horizon to stay within the cap.
    pub dropped: u64,
    /// The newest version of a mark forgotten before its horizon (0: none was, or
    /// the horizons of all such marks have passed since).
    pub forgotten_below: u64,
    /// When the last of those marks would have expired.
    forgotten_until: u64,
}

fn cost(key: &[u8]) -> u64 {
    tombstone_charge(key.len())
}

impl Tombstones {
    pub(crate) fn len(&self) -> usize {
        self.marks.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.marks.is_empty()
    }

    /// The version of the key's live tombstone, if any.
    pub(crate) fn version(&self, key: &[u8], now: u64) -> Option<u64> {
        if self.is_empty() {
            return None;
        }
        self.marks
            .get(key)
            .filter(|m| m.until > now)
            .map(|m| m.version)
    }

    /// Remembers that `key` was deleted at `version` (the newer of two deletes wins)
    /// until `until`; forgets the oldest marks while their bytes exceed `cap`.
    pub(crate) fn record(&mut self, key: &[u8], version: u64, until: u64, cap: u64) {
        let key = Bytes::copy_from_slice(key);
        match self.marks.get_mut(&key) {
            Some(mark) => {
                mark.version = mark.version.max(version);
                mark.until = until;
            }
            None => {
                self.bytes += cost(&key);
                self.marks.insert(key.clone(), Mark { version, until });
            }
        }
        self.queue.push_back((until, key));
        while self.bytes > cap && !self.queue.is_empty() {
            // Stale queue elements (a mark re-recorded or cleared) go without a mark.
            if let Some((version, until)) = self.pop_oldest() {
                self.dropped += 1;
                self.forgotten_below = self.forgotten_below.max(version);
                self.forgotten_until = self.forgotten_until.max(until);
            }
        }
        if self.queue.len() > 2 * self.marks.len() + 64 {
            self.rebuild_queue();
        }
    }

    /// Forgets the key's mark: a newer entry was written.
    pub(crate) fn clear(&mut self, key: &[u8]) {
        if self.is_empty() {
            return;
        }
        if self.marks.remove(key).is_some() {
            self.bytes -= cost(key);
        }
    }

    /// Forgets the marks past their horizon; returns how many.
    pub(crate) fn expire(&mut self, now: u64) -> usize {
        if self.forgotten_below > 0 && now >= self.forgotten_until {
            // Those deletes would be forgotten by now anyway.
            self.forgotten_below = 0;
        }
        let mut removed = 0;
        while let Some((until, _)) = self.queue.front() {
            if *until > now {
                break;
            }
            removed += usize::from(self.pop_oldest().is_some());
        }
        removed
    }

    /// Every live mark, for handoff and sync.
    pub(crate) fn snapshot(&self, now: u64) -> Vec<Tombstone> {
        self.marks
            .iter()
            .filter(|(_, m)| m.until > now)
            .map(|(key, m)| Tombstone {
                key: key.clone(),
                version: m.version,
            })
            .collect()
    }

    /// Removes the queue's front and, unless it is stale, its mark. Returns the
    /// version and deadline of the mark that went, if one did.
    fn pop_oldest(&mut self) -> Option<(u64, u64)> {
        let (until, key) = self.queue.pop_front()?;
        match self.marks.get(&key) {
            Some(mark) if mark.until == until => {
                let version = mark.version;
                self.marks.remove(&key);
                self.bytes -= cost(&key);
                Some((version, until))
            }
            _ => None,
        }
    }

    fn rebuild_queue(&mut self) {
        let mut queue: Vec<(u64, Bytes)> = self
            .marks
            .iter()
            .map(|(key, m)| (m.until, key.clone()))
            .collect();
        queue.sort_unstable_by_key(|(until, _)| *until);
        self.queue = queue.into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_delete_wins_and_marks_expire_at_their_horizon() {
        let mut t = Tombstones::default();
        t.record(b"k", 10, 100, u64::MAX);
        t.record(b"k", 7, 200, u64::MAX);
        assert_eq!(t.version(b"k", 150), Some(10));
        assert_eq!(t.len(), 1);
        assert_eq!(t.bytes, cost(b"k"));
        // The first queue element is stale (its deadline moved to 200).
        assert_eq!(t.expire(150), 0);
        assert_eq!(t.version(b"k", 150), Some(10));
        assert_eq!(t.expire(200), 1);
        assert_eq!(t.version(b"k", 150), None);
        assert_eq!(t.bytes, 0);
    }

    #[test]
    fn the_cap_forgets_the_oldest_first() {
        let mut t = Tombstones::default();
        let cap = 3 * cost(b"k1");
        for (i, key) in [b"k1", b"k2", b"k3", b"k4"].iter().enumerate() {
            t.record(*key, 10 + i as u64, 100 + i as u64, cap);
        }
        assert_eq!(t.len(), 3);
        assert_eq!(t.dropped, 1);
        assert_eq!(t.version(b"k1", 0), None);
        assert_eq!(t.version(b"k4", 0), Some(13));
        assert_eq!(t.forgotten_below, 10, "k1's delete, forgotten early");
        // Marks reaching their horizon are not forgotten early; once k1's would have
        // been forgotten anyway, so is the floor.
        assert_eq!(t.expire(99), 0);
        assert_eq!(t.forgotten_below, 10);
        assert_eq!(t.expire(200), 3);
        assert_eq!(t.forgotten_below, 0);
        assert!(t.bytes <= cap);
    }

    #[test]
    fn clearing_returns_the_bytes_and_the_queue_stays_bounded() {
        let mut t = Tombstones::default();
        for i in 0..10_000u64 {
            t.record(b"same", i, i, u64::MAX);
        }
        assert!(t.queue.len() <= 2 * t.len() + 65, "{}", t.queue.len());
        t.clear(b"same");
        assert!(t.is_empty());
        assert_eq!(t.bytes, 0);
        assert_eq!(t.snapshot(0), vec![]);
    }
}
