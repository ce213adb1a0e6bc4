//! The memory-bounded store: sharded, byte-accounted, with TTLs, versions for
//! compare-and-set, and frequency-aware sampled eviction.
//!
//! Why this engine (figures in the README, `cargo bench -p kcache-node --bench engines`):
//! an entry costs one 32-byte slot plus one heap block for key and value, where moka
//! pays about 250 (measured); popularity lives in a TinyLFU-style count-min sketch (four
//! to eight bytes per entry) instead of per-entry queue links, so sampled eviction beats
//! LRU on skewed traffic without the memory of LRU's lists; and every write is
//! admitted, so a client reads its own write back (moka's TinyLFU admission may drop it).

mod clock;
mod shard;
mod sketch;
mod tombstones;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;

pub use clock::{Clock, Hlc, ManualClock, SystemClock};
use shard::{Counters, Shard};
pub use tombstones::{TOMBSTONE_HORIZON, Tombstone, tombstone_charge};

/// Bytes charged per entry for the structures around it: the 32-byte slot, about
/// 8 bytes of hash index (4-byte ids at hashbrown's load factors), 4 to 8 bytes of
/// frequency sketch, and about 12 of allocator fragmentation under eviction churn
/// (freed blocks wait in per-thread arenas). Set from the resident memory measured in
/// `tests/memory.rs`: 186 bytes per 16-byte-key, 100-byte-value entry, charged 184
/// before the fragmentation share of [`charge`] (200 with it).
pub const ENTRY_OVERHEAD: u64 = 56;

/// What an entry whose key-and-value block is `data_len` bytes is charged: the block
/// as the allocator really hands it out (glibc: 8 bytes of header, 16-byte granules,
/// 32 at least), an eighth of that again, plus [`ENTRY_OVERHEAD`]. Charging real block
/// sizes is what keeps the process's memory near `--max-memory` whatever the value
/// sizes are. The eighth is the heap fragmentation that eviction leaves when values
/// differ in size: it frees blocks in random order, and the holes fit the next values
/// only in part. `tests/memory.rs` measured resident memory grow 1.09-1.15x the limit
/// under floods of 1-8 KiB values (alone, or mixed with 100-byte ones) without it,
/// 1.00x with it.
pub const fn charge(data_len: usize) -> u64 {
    let block = (data_len + 8).next_multiple_of(16);
    let block = if block < 32 { 32 } else { block };
    (block + block / 8) as u64 + ENTRY_OVERHEAD
}

/// memcached's key limit; keys longer than this are rarely keys (the slot stores the
/// length in one byte, so 255 is the hard ceiling).
pub const MAX_KEY_SIZE: usize = 250;
/// The longest TTL accepted: a year. Anything longer is almost always a unit mistake
/// (seconds sent as milliseconds twice over) rather than an intent.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// How far ahead of this node's wall clock a version from elsewhere may be. Versions
/// follow the clocks of the nodes that issue them, which agree to milliseconds where
/// NTP runs; one that is hours ahead is corrupt (or u64::MAX), and taking it would
/// pin the key against every later write and push this node's clock along with it.
pub const MAX_VERSION_AHEAD: Duration = Duration::from_secs(3600);
/// [`Store::set_budget`] never takes the budget below this fraction (1/n) of the
/// memory limit: past that, resident memory is growing for reasons eviction cannot
/// answer (connections, streams), and emptying the cache would only add misses.
pub const MIN_BUDGET_SHARE: u64 = 2;
/// How many times what it adds a write may evict while the store is over a lowered
/// budget: writes help [`Store::set_budget`] bring it down, at a bounded cost each.
const WRITE_EVICTS: u64 = 16;
/// Entries [`Store::set_budget`] evicts from one shard per turn of its round.
const EVICTION_BATCH: usize = 4;
/// Shards per store: enough that two cores rarely contend on one lock, few enough that
/// the fixed cost per shard stays small.
const SHARDS: usize = 64;

/// What a write's time to live is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// The store's default TTL (`--default-ttl`; none means never).
    Default,
    /// Never expires.
    Never,
    /// Expires after this long (at least 1 ms).
    After(Duration),
}

/// When a `set` may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Always,
    IfAbsent,
    IfPresent,
    IfVersion(u64),
}

/// An entry as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: Bytes,
    pub version: u64,
    /// Remaining milliseconds; `None` when it never expires.
    pub ttl_ms: Option<u64>,
}

/// The result of a conditional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetOutcome {
    pub stored: bool,
    /// The new version when stored, otherwise the current one (0 when absent).
    pub version: u64,
}

/// The store's limits and defaults.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_memory: u64,
    pub max_key_size: usize,
    pub max_value_size: usize,
    pub default_ttl: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_memory: 64 << 20,
            max_key_size: MAX_KEY_SIZE,
            max_value_size: 1 << 20,
            default_ttl: None,
        }
    }
}

/// Why the store refused a request. Each message names the limit or the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("key is empty; keys are 1 to {limit} bytes")]
    EmptyKey { limit: usize },
    #[error("key is {len} bytes; the limit is {limit} bytes")]
    KeyTooLong { len: usize, limit: usize },
    #[error("value is {len} bytes; the limit is {limit} bytes (--max-value-size)")]
    ValueTooLarge { len: usize, limit: usize },
    #[error(
        "entry needs {needed} bytes but the node's whole memory limit is {limit} bytes (--max-memory)"
    )]
    LargerThanMemory { needed: u64, limit: u64 },
    #[error("ttl of {ttl_ms} ms is over the limit of {limit_ms} ms (365 days)")]
    TtlTooLong { ttl_ms: u128, limit_ms: u128 },
    #[error("ttl must be at least 1 ms (use no ttl for keys that never expire)")]
    TtlZero,
    #[error("value is not a decimal 64-bit integer, so it cannot be incremented")]
    NotAnInteger,
    #[error("incrementing {value} by {delta} overflows a signed 64-bit integer")]
    Overflow { value: i64, delta: i64 },
    #[error(
        "version {version} was issued {ahead_ms} ms ahead of this node's clock; the limit is {limit_ms} ms"
    )]
    VersionAhead {
        version: u64,
        ahead_ms: u64,
        limit_ms: u64,
    },
}

/// An entry with its key, as scanned for handoff or replicated between owners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub key: Bytes,
    pub value: Bytes,
    pub version: u64,
    /// Remaining milliseconds; `None` when it never expires.
    pub ttl_ms: Option<u64>,
}

/// Where a scan goes on: a shard, a slot in it, and the shard's compaction count when
/// the scan got there (a compaction moves live slots below the cursor).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanCursor {
    shard: usize,
    slot: u32,
    compactions: u64,
}

/// Store-wide figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub items: u64,
    /// Bytes charged against the limit (keys, values, per-entry overhead).
    pub bytes: u64,
    pub limit: u64,
    /// What the store may hold now: `limit`, or less while the resident-memory guard
    /// lowers it ([`Store::set_budget`]).
    pub budget: u64,
    /// Heap bytes of slabs, indexes and sketches, some of which is charged per entry.
    pub structure_bytes: u64,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub expirations: u64,
    /// Deletes remembered ([`TOMBSTONE_HORIZON`]), and those forgotten early to stay
    /// within their share of the memory limit.
    pub tombstones: u64,
    pub tombstones_dropped: u64,
    /// The newest version of a tombstone forgotten early (0: none was).
    pub tombstones_forgotten_below: u64,
}

/// Hashes keys with a per-store seed, so one store's layout says nothing of another's.
#[derive(Debug, Clone)]
pub(crate) struct KeyHasher(foldhash::fast::FixedState);

impl KeyHasher {
    pub(crate) fn hash(&self, key: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        self.0.hash_one(key)
    }
}

/// A memory-bounded key-value store, safe to share between threads.
#[derive(Debug)]
pub struct Store {
    shards: Box<[Mutex<Shard>]>,
    hasher: KeyHasher,
    limits: Limits,
    /// Bytes charged store-wide; the sum of the shards' published bytes.
    used: AtomicU64,
    /// What the store may hold now: `max_memory`, less what [`Store::set_budget`]
    /// takes away while the process's resident memory is over its allowance.
    budget: AtomicU64,
    /// Entries writes evicted (not [`Store::set_budget`]): how the resident-memory
    /// guard tells that writes are replacing entries.
    write_evictions: AtomicU64,
    clock: Arc<dyn Clock>,
    hlc: Hlc,
}

impl Store {
    /// A store on the system clock.
    pub fn new(limits: Limits) -> Self {
        Self::with_clock(limits, Arc::new(SystemClock::default()))
    }

    /// A store on the given clock (tests pass a [`ManualClock`]).
    pub fn with_clock(limits: Limits, clock: Arc<dyn Clock>) -> Self {
        let seed = clock.wall_ms() ^ (&limits as *const Limits as u64);
        let hasher = KeyHasher(foldhash::fast::FixedState::with_seed(seed));
        let shards = (0..SHARDS)
            .map(|i| {
                Mutex::new(Shard::new(
                    hasher.clone(),
                    seed.wrapping_add(i as u64 * 0x9E37),
                ))
            })
            .collect();
        Self {
            shards,
            hasher,
            budget: AtomicU64::new(limits.max_memory),
            limits,
            used: AtomicU64::new(0),
            write_evictions: AtomicU64::new(0),
            clock,
            hlc: Hlc::default(),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Entries evicted so far to make room for writes ([`Store::set_budget`]'s own
    /// evictions are not counted).
    pub fn write_evictions(&self) -> u64 {
        self.write_evictions.load(Ordering::Relaxed)
    }

    /// Bytes charged now (what [`StoreStats::bytes`] reports, without its locks).
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// What the store may hold now (bytes as [`charge`] counts them): the memory
    /// limit, unless [`Store::set_budget`] lowered it.
    pub fn budget(&self) -> u64 {
        self.budget.load(Ordering::Relaxed)
    }

    /// Lets the store hold `bytes` (clamped to [`MIN_BUDGET_SHARE`] of the memory
    /// limit at least, and to the limit at most), from now on. Lowering it evicts,
    /// round-robin over the shards so that each keeps its most valuable entries, at
    /// most `max_evictions` entries; what is still over is for the next call, and
    /// meanwhile a write evicts up to [`WRITE_EVICTS`] times what it adds (so it pays
    /// a bounded share of the lowering, and the store shrinks). The resident-memory guard lowers it
    /// while memory the allocator holds but cannot reuse (fragmentation) keeps the
    /// process over its allowance.
    pub fn set_budget(&self, bytes: u64, max_evictions: usize) {
        let max = self.limits.max_memory;
        let target = bytes.clamp(max / MIN_BUDGET_SHARE, max);
        self.budget.store(target, Ordering::Relaxed);
        let now = self.clock.monotonic_ms();
        let over = || self.used.load(Ordering::Relaxed) > target;
        let mut evicted = 0;
        let mut progress = true;
        while progress && evicted < max_evictions && over() {
            progress = false;
            for shard in self.shards.iter() {
                let mut shard = shard.lock();
                for _ in 0..EVICTION_BATCH {
                    if evicted >= max_evictions || !over() || !shard.evict_one(now, None) {
                        break;
                    }
                    self.publish(&mut shard);
                    evicted += 1;
                    progress = true;
                }
            }
        }
    }

    /// Evicts from one shard (sparing `spare`) while the store is over its budget,
    /// the shard has entries and fewer than `room` bytes were freed; takes what was
    /// freed off `room`.
    fn evict_to_budget(&self, shard: &mut Shard, now: u64, spare: Option<u32>, room: &mut u64) {
        let mut evicted = 0;
        while *room > 0
            && self.used.load(Ordering::Relaxed) > self.budget()
            && shard.evict_one(now, spare)
        {
            let freed = self.publish(shard).unsigned_abs();
            *room = room.saturating_sub(freed);
            evicted += 1;
        }
        if evicted > 0 {
            self.write_evictions.fetch_add(evicted, Ordering::Relaxed);
        }
    }

    /// A fresh version, above every version this store issued or applied (for a
    /// replicated delete, which must win over the entry it removed).
    pub fn next_version(&self) -> u64 {
        self.hlc.next(self.clock.wall_ms())
    }

    fn shard_of(&self, hash: u64) -> usize {
        // hashbrown uses the low bits for the bucket and the top 7 for its tag; the
        // shard takes bits from the middle so neither loses entropy.
        (hash >> 32) as usize % SHARDS
    }

    /// Adds a shard's unpublished byte change to the store-wide total.
    /// Brings the store-wide count up to the shard's; returns how far it moved it
    /// (negative: the shard holds less).
    fn publish(&self, shard: &mut Shard) -> i64 {
        let charged = shard.charged();
        if charged == shard.published {
            // A read: no write to the store-wide counter, which every core shares.
            return 0;
        }
        let moved = if charged > shard.published {
            self.used
                .fetch_add(charged - shard.published, Ordering::Relaxed);
            (charged - shard.published) as i64
        } else {
            self.used
                .fetch_sub(shard.published - charged, Ordering::Relaxed);
            -((shard.published - charged) as i64)
        };
        shard.published = charged;
        moved
    }

    /// Checks a key against the key limits.
    pub fn check_key(&self, key: &[u8]) -> Result<(), StoreError> {
        let limit = self.limits.max_key_size;
        match key.len() {
            0 => Err(StoreError::EmptyKey { limit }),
            len if len > limit => Err(StoreError::KeyTooLong { len, limit }),
            _ => Ok(()),
        }
    }

    fn check_ttl(&self, ttl: Ttl) -> Result<(), StoreError> {
        match ttl {
            Ttl::After(d) if d.is_zero() => Err(StoreError::TtlZero),
            Ttl::After(d) if d > MAX_TTL => Err(StoreError::TtlTooLong {
                ttl_ms: d.as_millis(),
                limit_ms: MAX_TTL.as_millis(),
            }),
            _ => Ok(()),
        }
    }

    /// Checks a write without doing it, so a batch can be refused whole before any
    /// of it is written.
    pub fn check_set(&self, key: &[u8], value: &[u8], ttl: Ttl) -> Result<(), StoreError> {
        self.check_key(key)?;
        let limit = self.limits.max_value_size;
        if value.len() > limit {
            return Err(StoreError::ValueTooLarge {
                len: value.len(),
                limit,
            });
        }
        let needed = charge(1 + key.len() + value.len());
        if needed > self.limits.max_memory {
            return Err(StoreError::LargerThanMemory {
                needed,
                limit: self.limits.max_memory,
            });
        }
        self.check_ttl(ttl)
    }

    /// The monotonic expiry instant for a TTL, 0 for never.
    fn expires_at(&self, ttl: Ttl, now: u64) -> u64 {
        let ttl = match ttl {
            Ttl::Default => self.limits.default_ttl,
            Ttl::Never => None,
            Ttl::After(d) => Some(d),
        };
        ttl.map_or(0, |d| now + (d.as_millis() as u64).max(1))
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Entry>, StoreError> {
        self.read(key, |shard, hash, now| shard.get(hash, key, now))
    }

    /// A read that hands a live entry's value to `f` under its shard's lock, so a
    /// reply can be written from the value where it lies rather than from a copy
    /// (the Redis port's GET). `f` must be quick: the shard waits for it.
    pub fn get_with<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>, StoreError> {
        self.read(key, |shard, hash, now| shard.get_with(hash, key, now, f))
    }

    /// Runs a counted read of `key` on its shard, under the shard's lock.
    fn read<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(&mut Shard, u64, u64) -> R,
    ) -> Result<R, StoreError> {
        self.check_key(key)?;
        let hash = self.hasher.hash(key);
        let now = self.clock.monotonic_ms();
        let mut shard = self.shards[self.shard_of(hash)].lock();
        let read = f(&mut shard, hash, now);
        self.publish(&mut shard);
        Ok(read)
    }

    pub fn set(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: Ttl,
        condition: Condition,
    ) -> Result<SetOutcome, StoreError> {
        self.check_set(key, value, ttl)?;
        let hash = self.hasher.hash(key);
        let now = self.clock.monotonic_ms();
        let index = self.shard_of(hash);
        let mut shard = self.shards[index].lock();
        let current = shard.find_live(hash, key, now).map(|id| shard.version(id));
        let allowed = match condition {
            Condition::Always => true,
            Condition::IfAbsent => current.is_none(),
            Condition::IfPresent => current.is_some(),
            Condition::IfVersion(v) => current == Some(v),
        };
        if !allowed {
            self.publish(&mut shard);
            return Ok(SetOutcome {
                stored: false,
                version: current.unwrap_or(0),
            });
        }
        let version = self.hlc.next(self.clock.wall_ms());
        shard.tombs.clear(key);
        let id = shard.upsert(hash, key, value, version, self.expires_at(ttl, now));
        self.make_room(index, shard, Some(id), now);
        Ok(SetOutcome {
            stored: true,
            version,
        })
    }

    /// Evicts until the store is within its budget, or has freed [`WRITE_EVICTS`]
    /// times what the write just added (the rest of a lowered budget is
    /// [`Store::set_budget`]'s to evict):
    /// first from the shard just written (sparing the new entry), then from the
    /// others.
    fn make_room(
        &self,
        index: usize,
        mut shard: parking_lot::MutexGuard<'_, Shard>,
        written: Option<u32>,
        now: u64,
    ) {
        let mut room = self.publish(&mut shard).max(0).unsigned_abs() * WRITE_EVICTS;
        self.evict_to_budget(&mut shard, now, written, &mut room);
        drop(shard);
        for step in 1..SHARDS {
            if room == 0 || self.used.load(Ordering::Relaxed) <= self.budget() {
                return;
            }
            let mut other = self.shards[(index + step) % SHARDS].lock();
            self.evict_to_budget(&mut other, now, None, &mut room);
        }
    }

    /// Deletes a key, or only if its version matches. Returns whether it deleted.
    /// A delete that may have to reach other copies (it deleted, or it was
    /// unconditional: replicas may hold a key this node lacks) leaves a tombstone at a
    /// fresh version, which [`Store::tombstone`] reports for replication.
    pub fn delete(&self, key: &[u8], if_version: Option<u64>) -> Result<bool, StoreError> {
        self.check_key(key)?;
        let hash = self.hasher.hash(key);
        let now = self.clock.monotonic_ms();
        let index = self.shard_of(hash);
        let mut shard = self.shards[index].lock();
        let deleted = match shard.find_live(hash, key, now) {
            Some(id) if if_version.is_none_or(|v| v == shard.version(id)) => {
                shard.delete(id, hash);
                true
            }
            _ => false,
        };
        if deleted || if_version.is_none() {
            let version = self.hlc.next(self.clock.wall_ms());
            self.remember_delete(&mut shard, key, version, now);
            self.make_room(index, shard, None, now);
        } else {
            self.publish(&mut shard);
        }
        Ok(deleted)
    }

    /// Remembers a delete until [`TOMBSTONE_HORIZON`] after it was made (by the
    /// wall-clock time in its version), not after it arrived here: a tombstone passed
    /// on by handoff, Sync or anti-entropy keeps its first horizon, so members cannot
    /// keep handing an expired delete back and forth. A delete older than the horizon
    /// still removes older copies but is not remembered.
    fn remember_delete(&self, shard: &mut Shard, key: &[u8], version: u64, now: u64) {
        let age = self
            .clock
            .wall_ms()
            .saturating_sub(Hlc::wall_ms_of(version));
        let left = (TOMBSTONE_HORIZON.as_millis() as u64).saturating_sub(age);
        if left == 0 {
            return;
        }
        let cap = self.limits.max_memory / 16 / SHARDS as u64;
        shard.tombs.record(key, version, now + left, cap);
    }

    /// The version at which the key was deleted, while that is remembered
    /// ([`TOMBSTONE_HORIZON`]) and no newer entry replaced it.
    pub fn tombstone(&self, key: &[u8]) -> Option<u64> {
        let hash = self.hasher.hash(key);
        let now = self.clock.monotonic_ms();
        self.shards[self.shard_of(hash)]
            .lock()
            .tombs
            .version(key, now)
    }

    /// The remembered deletes, one shard's at a time (for handoff and sync).
    pub fn tombstones(&self) -> impl Iterator<Item = Vec<Tombstone>> + '_ {
        let now = self.clock.monotonic_ms();
        self.shards
            .iter()
            .map(move |shard| shard.lock().tombs.snapshot(now))
            .filter(|batch| !batch.is_empty())
    }

    /// Gives a key a new TTL. Returns whether the key was there.
    pub fn touch(&self, key: &[u8], ttl: Ttl) -> Result<bool, StoreError> {
        self.check_key(key)?;
        self.check_ttl(ttl)?;
        let hash = self.hasher.hash(key);
        let now = self.clock.monotonic_ms();
        let mut shard = self.shards[self.shard_of(hash)].lock();
        shard.record_access(hash);
        let found = shard.find_live(hash, key, now);
        if let Some(id) = found {
            shard.set_expiry(id, self.expires_at(ttl, now));
        }
        self.publish(&mut shard);
        Ok(found.is_some())
    }

    /// Adds `delta` to a decimal-integer value; an absent key starts at `initial` and
    /// takes `ttl`, a present one keeps its TTL. Returns the new value and version.
    pub fn incr(
        &self,
        key: &[u8],
        delta: i64,
        initial: i64,
        ttl: Ttl,
    ) -> Result<(i64, u64), StoreError> {
        self.check_key(key)?;
        self.check_ttl(ttl)?;
        let hash = self.hasher.hash(key);
        let now = self.clock.monotonic_ms();
        let index = self.shard_of(hash);
        let mut shard = self.shards[index].lock();
        shard.record_access(hash);
        let added = match shard.find_live(hash, key, now) {
            Some(id) => parse_i64(shard.value(id)).map(|n| (n, shard.expires_at(id))),
            None => Ok((initial, self.expires_at(ttl, now))),
        }
        .and_then(|(current, expires_at)| match current.checked_add(delta) {
            Some(value) => Ok((value, expires_at)),
            None => Err(StoreError::Overflow {
                value: current,
                delta,
            }),
        });
        let (value, expires_at) = match added {
            Ok(added) => added,
            Err(err) => {
                // The lookup may have removed an expired entry: its bytes go too.
                self.publish(&mut shard);
                return Err(err);
            }
        };
        let version = self.hlc.next(self.clock.wall_ms());
        let text = value.to_string();
        shard.tombs.clear(key);
        let id = shard.upsert(hash, key, text.as_bytes(), version, expires_at);
        self.make_room(index, shard, Some(id), now);
        Ok((value, version))
    }

    /// The entry as it is, without counting a read (to replicate what a write left).
    pub fn peek(&self, key: &[u8]) -> Option<Entry> {
        let hash = self.hasher.hash(key);
        let now = self.clock.monotonic_ms();
        self.shards[self.shard_of(hash)].lock().peek(hash, key, now)
    }

    /// The TTL a write with `ttl` gets, in milliseconds (`None`: never expires).
    pub fn resolve_ttl(&self, ttl: Ttl) -> Option<u64> {
        match ttl {
            Ttl::Default => self.limits.default_ttl.map(|d| d.as_millis() as u64),
            Ttl::Never => None,
            Ttl::After(d) => Some(d.as_millis() as u64),
        }
    }

    /// Refuses a version from elsewhere that is more than [`MAX_VERSION_AHEAD`] ahead
    /// of this node's clock.
    fn check_version(&self, version: u64) -> Result<(), StoreError> {
        let wall = self.clock.wall_ms();
        let ahead_ms = Hlc::wall_ms_of(version).saturating_sub(wall);
        let limit_ms = MAX_VERSION_AHEAD.as_millis() as u64;
        if ahead_ms > limit_ms {
            return Err(StoreError::VersionAhead {
                version,
                ahead_ms,
                limit_ms,
            });
        }
        Ok(())
    }

    /// Applies an entry written elsewhere, last writer wins: it replaces the local
    /// entry only if its version is newer. At an equal version (two coordinators in one
    /// millisecond) the greater value wins, so that owners converge whatever the order
    /// the copies arrive in; an equal value takes the TTL only (a replicated Touch).
    /// Returns whether anything changed.
    pub fn apply(&self, entry: &Versioned) -> Result<bool, StoreError> {
        self.apply_with(entry, false)
    }

    /// As [`Store::apply`], for anti-entropy's repairs: a key this store lacks is not
    /// taken at a version its shard forgot a delete above (its tombstones' share of
    /// memory being full), since the copy may be one that missed that delete. Checked
    /// under the shard's lock, so a delete forgotten during the round counts too.
    pub fn apply_repair(&self, entry: &Versioned) -> Result<bool, StoreError> {
        self.apply_with(entry, true)
    }

    fn apply_with(&self, entry: &Versioned, repair: bool) -> Result<bool, StoreError> {
        let ttl = match entry.ttl_ms {
            None => Ttl::Never,
            Some(0) => return Ok(false), // expired in flight
            Some(ms) => Ttl::After(Duration::from_millis(ms).min(MAX_TTL)),
        };
        self.check_set(&entry.key, &entry.value, ttl)?;
        self.check_version(entry.version)?;
        self.hlc.observe(entry.version);
        let hash = self.hasher.hash(&entry.key);
        let now = self.clock.monotonic_ms();
        let index = self.shard_of(hash);
        let mut shard = self.shards[index].lock();
        let expires_at = self.expires_at(ttl, now);
        if shard
            .tombs
            .version(&entry.key, now)
            .is_some_and(|deleted| deleted >= entry.version)
        {
            // A copy from before the key's delete: it must not bring the key back.
            self.publish(&mut shard);
            return Ok(false);
        }
        match shard.find_live(hash, &entry.key, now) {
            Some(id) if shard.version(id) > entry.version => {
                self.publish(&mut shard);
                Ok(false)
            }
            Some(id)
                if shard.version(id) == entry.version
                    && shard.value(id) >= entry.value.as_ref() =>
            {
                let same = shard.value(id) == entry.value.as_ref();
                if same {
                    shard.set_expiry(id, expires_at);
                }
                self.publish(&mut shard);
                Ok(same)
            }
            None if repair && entry.version <= shard.tombs.forgotten_below => {
                self.publish(&mut shard);
                Ok(false)
            }
            _ => {
                shard.tombs.clear(&entry.key);
                let id = shard.upsert(hash, &entry.key, &entry.value, entry.version, expires_at);
                self.make_room(index, shard, Some(id), now);
                Ok(true)
            }
        }
    }

    /// Applies a delete made elsewhere: removes the key unless the local entry is newer
    /// than `version`, and remembers the delete (a tombstone) so an older copy that
    /// arrives later is refused. Returns whether it removed anything.
    pub fn apply_delete(&self, key: &[u8], version: u64) -> Result<bool, StoreError> {
        self.check_key(key)?;
        self.check_version(version)?;
        self.hlc.observe(version);
        let hash = self.hasher.hash(key);
        let now = self.clock.monotonic_ms();
        let index = self.shard_of(hash);
        let mut shard = self.shards[index].lock();
        let (removed, newer) = match shard.find_live(hash, key, now) {
            Some(id) if shard.version(id) <= version => {
                shard.delete(id, hash);
                (true, false)
            }
            Some(_) => (false, true),
            None => (false, false),
        };
        if newer {
            self.publish(&mut shard);
        } else {
            self.remember_delete(&mut shard, key, version, now);
            self.make_room(index, shard, None, now);
        }
        Ok(removed)
    }

    /// Drops a key this node handed off, without remembering a delete: its new owners
    /// have it. Removes it only if its version is still `version` or older.
    pub fn forget(&self, key: &[u8], version: u64) -> bool {
        let hash = self.hasher.hash(key);
        let now = self.clock.monotonic_ms();
        let mut shard = self.shards[self.shard_of(hash)].lock();
        let removed = match shard.find_live(hash, key, now) {
            Some(id) if shard.version(id) <= version => {
                shard.delete(id, hash);
                true
            }
            _ => false,
        };
        self.publish(&mut shard);
        removed
    }

    /// Copies out up to `max` live entries, and no more than `max_bytes` of keys and
    /// values (unless one entry alone is larger), from `cursor` on, one shard lock at a
    /// time, for handoff; returns the cursor to continue from, `None` when done. Every entry
    /// present for the whole scan is seen; one written during it may or may not be.
    /// A shard compacted between two steps (slots moved under the cursor) is scanned
    /// again from its start, so some entries may be seen twice.
    pub fn scan(
        &self,
        cursor: ScanCursor,
        max: usize,
        max_bytes: usize,
    ) -> (Vec<Versioned>, Option<ScanCursor>) {
        let now = self.clock.monotonic_ms();
        let mut out = Vec::new();
        let mut bytes = 0;
        let next = self.walk(cursor, |shard, slot| {
            shard.scan(slot, (max, max_bytes), &mut bytes, now, &mut out)
        });
        (out, next)
    }

    /// As [`Store::scan`], but only keys and versions (no value is copied), up to `max`
    /// of them a step: what anti-entropy digests and ownership checks need.
    pub fn scan_versions(
        &self,
        cursor: ScanCursor,
        max: usize,
    ) -> (Vec<(Bytes, u64)>, Option<ScanCursor>) {
        let now = self.clock.monotonic_ms();
        let mut out = Vec::new();
        let next = self.walk(cursor, |shard, slot| {
            shard.scan_versions(slot, max, now, &mut out)
        });
        (out, next)
    }

    /// Runs a scan step over the shards from `cursor` on, one shard lock at a time:
    /// `step` copies out from a slot of a shard and returns where it stopped, or `None`
    /// at the shard's end. A shard compacted since the cursor was taken is scanned
    /// again from its start. Returns where to go on, `None` when every shard is done.
    fn walk(
        &self,
        mut cursor: ScanCursor,
        mut step: impl FnMut(&Shard, u32) -> Option<u32>,
    ) -> Option<ScanCursor> {
        while cursor.shard < SHARDS {
            let shard = self.shards[cursor.shard].lock();
            if shard.compactions != cursor.compactions {
                cursor.slot = 0;
                cursor.compactions = shard.compactions;
            }
            let next = step(&shard, cursor.slot);
            drop(shard);
            match next {
                Some(slot) => {
                    cursor.slot = slot;
                    return Some(cursor);
                }
                None => {
                    cursor = ScanCursor {
                        shard: cursor.shard + 1,
                        ..ScanCursor::default()
                    }
                }
            }
        }
        None
    }

    /// Active expiry over every shard, `budget` slots each; returns entries removed.
    pub fn sweep_expired(&self, budget: usize) -> usize {
        let now = self.clock.monotonic_ms();
        self.shards
            .iter()
            .map(|shard| {
                let mut shard = shard.lock();
                let removed = shard.sweep(now, budget);
                self.publish(&mut shard);
                removed
            })
            .sum()
    }

    pub fn stats(&self) -> StoreStats {
        let mut stats = StoreStats {
            limit: self.limits.max_memory,
            budget: self.budget(),
            ..StoreStats::default()
        };
        for shard in self.shards.iter() {
            let shard = shard.lock();
            let Counters {
                hits,
                misses,
                evictions,
                expirations,
            } = shard.counters;
            stats.items += shard.len() as u64;
            stats.structure_bytes += shard.structure_bytes() as u64;
            stats.hits += hits;
            stats.misses += misses;
            stats.evictions += evictions;
            stats.expirations += expirations;
            stats.tombstones += shard.tombs.len() as u64;
            stats.tombstones_dropped += shard.tombs.dropped;
            stats.tombstones_forgotten_below = stats
                .tombstones_forgotten_below
                .max(shard.tombs.forgotten_below);
        }
        stats.bytes = self.used.load(Ordering::Relaxed);
        stats
    }
}

/// Parses a value as Redis' INCR does: optional sign, decimal digits, nothing else.
fn parse_i64(value: &[u8]) -> Result<i64, StoreError> {
    std::str::from_utf8(value)
        .ok()
        .filter(|s| !s.starts_with('+'))
        .and_then(|s| s.parse().ok())
        .ok_or(StoreError::NotAnInteger)
}

#[cfg(test)]
mod tests;
