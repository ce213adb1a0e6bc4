//! One shard of the store: a slab of fixed-size slots, a hash index of slot ids, and
//! the frequency sketch that picks eviction victims. Everything here runs under the
//! shard's lock; nothing here does I/O or reads a clock.

use bytes::Bytes;
use hashbrown::HashTable;

use super::tombstones::Tombstones;
use super::{Entry, KeyHasher, charge, sketch::FrequencySketch};

/// Slots per slab chunk. Chunks never move, so the slab grows without copying and
/// without the up-to-2x slack of a doubling `Vec`; 256 × 32 bytes = 8 KiB.
const CHUNK: usize = 256;
/// Live entries an eviction compares. More candidates pick a better victim (Redis
/// samples 5); 8 keeps an eviction to about a microsecond.
const EVICTION_SAMPLES: usize = 8;
/// Random probes an eviction may spend finding its candidates in a sparse slab before
/// it falls back to a scan.
const EVICTION_PROBES: usize = 64;

/// One entry, 32 bytes. Key and value share one allocation so an entry costs a single
/// heap block; the key length is its first byte (keys are at most 250 bytes).
#[derive(Debug, Default)]
struct Slot {
    /// `[key_len][key][value]`; empty when the slot is free.
    data: Box<[u8]>,
    version: u64,
    /// Monotonic millisecond at which the entry expires; 0 = never.
    expires_at: u64,
}

impl Slot {
    fn key(&self) -> &[u8] {
        &self.data[1..=self.data[0] as usize]
    }

    fn value(&self) -> &[u8] {
        &self.data[1 + self.data[0] as usize..]
    }

    fn is_free(&self) -> bool {
        self.data.is_empty()
    }

    fn is_expired(&self, now: u64) -> bool {
        self.expires_at != 0 && self.expires_at <= now
    }

    fn cost(&self) -> u64 {
        charge(self.data.len())
    }

    fn entry(&self, now: u64) -> Entry {
        Entry {
            value: Bytes::copy_from_slice(self.value()),
            version: self.version,
            ttl_ms: (self.expires_at != 0).then(|| self.expires_at.saturating_sub(now)),
        }
    }
}

fn encode(key: &[u8], value: &[u8]) -> Box<[u8]> {
    let mut data = Vec::with_capacity(1 + key.len() + value.len());
    data.push(key.len() as u8);
    data.extend_from_slice(key);
    data.extend_from_slice(value);
    data.into_boxed_slice()
}

/// What a shard counts; summed over shards for stats.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counters {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub expirations: u64,
}

/// Why an entry was removed, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Removal {
    Deleted,
    Evicted,
    Expired,
}

#[derive(Debug)]
pub(crate) struct Shard {
    hasher: KeyHasher,
    /// Slot ids, hashed by their key.
    index: HashTable<u32>,
    chunks: Vec<Box<[Slot]>>,
    /// Slots handed out so far; ids below it are live or on the free list.
    high_water: u32,
    free: Vec<u32>,
    sketch: FrequencySketch,
    rng: u64,
    /// Where the active-expiry sweep continues.
    sweep_cursor: u32,
    /// Compactions so far: a scan that sees this change under it knows slots moved.
    pub compactions: u64,
    /// Bytes of the live entries, as charged against the memory limit.
    pub bytes: u64,
    /// The part of [`Shard::charged`] already added to the store-wide total.
    pub published: u64,
    pub counters: Counters,
    /// Deletes remembered (their bytes are charged too).
    pub tombs: Tombstones,
}

impl Shard {
    pub(crate) fn new(hasher: KeyHasher, seed: u64) -> Self {
        Self {
            hasher,
            index: HashTable::new(),
            chunks: Vec::new(),
            high_water: 0,
            free: Vec::new(),
            sketch: FrequencySketch::with_capacity(16),
            rng: seed | 1,
            sweep_cursor: 0,
            compactions: 0,
            bytes: 0,
            published: 0,
            counters: Counters::default(),
            tombs: Tombstones::default(),
        }
    }

    /// Bytes charged against the memory limit: entries and tombstones.
    pub(crate) fn charged(&self) -> u64 {
        self.bytes + self.tombs.bytes
    }

    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// Heap bytes of the structures around the entries (slab, index, sketch).
    pub(crate) fn structure_bytes(&self) -> usize {
        self.chunks.len() * CHUNK * size_of::<Slot>()
            + self.index.capacity() * (size_of::<u32>() + 1)
            + self.sketch.heap_bytes()
            + self.free.capacity() * size_of::<u32>()
    }

    fn slot(&self, id: u32) -> &Slot {
        &self.chunks[id as usize / CHUNK][id as usize % CHUNK]
    }

    fn slot_mut(&mut self, id: u32) -> &mut Slot {
        &mut self.chunks[id as usize / CHUNK][id as usize % CHUNK]
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: quality is plenty for picking eviction candidates.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Records an access for the eviction policy (hits, misses and writes all count).
    pub(crate) fn record_access(&mut self, hash: u64) {
        self.sketch.increment(hash);
    }

    fn find(&self, hash: u64, key: &[u8]) -> Option<u32> {
        self.index
            .find(hash, |&id| self.slot(id).key() == key)
            .copied()
    }

    /// The slot of a live entry; an expired one is removed on the way (lazy expiry).
    pub(crate) fn find_live(&mut self, hash: u64, key: &[u8], now: u64) -> Option<u32> {
        let id = self.find(hash, key)?;
        if self.slot(id).is_expired(now) {
            self.remove(id, hash, Removal::Expired);
            return None;
        }
        Some(id)
    }

    /// A read: counts a hit or a miss and copies the entry out.
    pub(crate) fn get(&mut self, hash: u64, key: &[u8], now: u64) -> Option<Entry> {
        self.read(hash, key, now, |slot| slot.entry(now))
    }

    /// A read that hands the value to `f` where it lies, copying nothing out.
    pub(crate) fn get_with<R>(
        &mut self,
        hash: u64,
        key: &[u8],
        now: u64,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Option<R> {
        self.read(hash, key, now, |slot| f(slot.value()))
    }

    /// Counts a hit or a miss, and runs `f` on the live slot of a hit.
    fn read<R>(
        &mut self,
        hash: u64,
        key: &[u8],
        now: u64,
        f: impl FnOnce(&Slot) -> R,
    ) -> Option<R> {
        self.record_access(hash);
        match self.find_live(hash, key, now) {
            Some(id) => {
                self.counters.hits += 1;
                Some(f(self.slot(id)))
            }
            None => {
                self.counters.misses += 1;
                None
            }
        }
    }

    pub(crate) fn version(&self, id: u32) -> u64 {
        self.slot(id).version
    }

    pub(crate) fn expires_at(&self, id: u32) -> u64 {
        self.slot(id).expires_at
    }

    pub(crate) fn value(&self, id: u32) -> &[u8] {
        self.slot(id).value()
    }

    /// Copies out live entries from slot `from` on until `out` holds `max` of them or
    /// the next would take `bytes` (key and value bytes in `out`) past `max_bytes` (an
    /// entry larger than that goes alone); returns where to go on, or `None` at the end
    /// of the shard.
    pub(crate) fn scan(
        &self,
        from: u32,
        (max, max_bytes): (usize, usize),
        bytes: &mut usize,
        now: u64,
        out: &mut Vec<super::Versioned>,
    ) -> Option<u32> {
        let mut id = from;
        while id < self.high_water {
            if out.len() >= max {
                return Some(id);
            }
            let slot = self.slot(id);
            if !slot.is_free() && !slot.is_expired(now) {
                let size = slot.key().len() + slot.value().len();
                if !out.is_empty() && bytes.saturating_add(size) > max_bytes {
                    return Some(id);
                }
                *bytes += size;
                let entry = slot.entry(now);
                out.push(super::Versioned {
                    key: Bytes::copy_from_slice(slot.key()),
                    value: entry.value,
                    version: entry.version,
                    ttl_ms: entry.ttl_ms,
                });
            }
            id += 1;
        }
        None
    }

    /// As [`Shard::scan`], but copies out only keys and versions, up to `max`.
    pub(crate) fn scan_versions(
        &self,
        from: u32,
        max: usize,
        now: u64,
        out: &mut Vec<(Bytes, u64)>,
    ) -> Option<u32> {
        let mut id = from;
        while id < self.high_water {
            if out.len() >= max {
                return Some(id);
            }
            let slot = self.slot(id);
            if !slot.is_free() && !slot.is_expired(now) {
                out.push((Bytes::copy_from_slice(slot.key()), slot.version));
            }
            id += 1;
        }
        None
    }

    /// The entry without counting a hit or feeding the sketch (replication reads).
    pub(crate) fn peek(&self, hash: u64, key: &[u8], now: u64) -> Option<Entry> {
        let id = self.find(hash, key)?;
        let slot = self.slot(id);
        (!slot.is_expired(now)).then(|| slot.entry(now))
    }

    pub(crate) fn set_expiry(&mut self, id: u32, expires_at: u64) {
        self.slot_mut(id).expires_at = expires_at;
    }

    /// Writes an entry, replacing the key's current one if any; returns its slot.
    pub(crate) fn upsert(
        &mut self,
        hash: u64,
        key: &[u8],
        value: &[u8],
        version: u64,
        expires_at: u64,
    ) -> u32 {
        let data = encode(key, value);
        let new_cost = charge(data.len());
        if let Some(id) = self.find(hash, key) {
            let slot = self.slot_mut(id);
            let old_cost = slot.cost();
            *slot = Slot {
                data,
                version,
                expires_at,
            };
            self.bytes = self.bytes - old_cost + new_cost;
            return id;
        }
        let id = self.allocate(Slot {
            data,
            version,
            expires_at,
        });
        let Self {
            index,
            chunks,
            hasher,
            ..
        } = self;
        index.insert_unique(hash, id, |&other| {
            hasher.hash(chunks[other as usize / CHUNK][other as usize % CHUNK].key())
        });
        self.bytes += new_cost;
        if self.index.len() > self.sketch.capacity() {
            self.sketch = FrequencySketch::with_capacity(self.index.len());
        }
        id
    }

    fn allocate(&mut self, slot: Slot) -> u32 {
        if let Some(id) = self.free.pop() {
            *self.slot_mut(id) = slot;
            return id;
        }
        let id = self.high_water;
        if id as usize == self.chunks.len() * CHUNK {
            self.chunks
                .push(std::iter::repeat_with(Slot::default).take(CHUNK).collect());
        }
        self.high_water += 1;
        *self.slot_mut(id) = slot;
        id
    }

    /// Deletes the entry in `id`; `hash` must be its key's hash.
    pub(crate) fn delete(&mut self, id: u32, hash: u64) {
        self.remove(id, hash, Removal::Deleted);
    }

    fn remove(&mut self, id: u32, hash: u64, why: Removal) {
        if let Ok(entry) = self.index.find_entry(hash, |&other| other == id) {
            entry.remove();
        }
        let slot = std::mem::take(self.slot_mut(id));
        self.bytes -= slot.cost();
        self.free.push(id);
        match why {
            Removal::Deleted => {}
            Removal::Evicted => self.counters.evictions += 1,
            Removal::Expired => self.counters.expirations += 1,
        }
    }

    /// Evicts one entry, never `protect` (the entry being written). Expired entries go
    /// first; otherwise, among a random sample of live entries, the one the sketch says
    /// was asked for least. Returns false when there is nothing to evict.
    pub(crate) fn evict_one(&mut self, now: u64, protect: Option<u32>) -> bool {
        let evictable = self.index.len() - usize::from(protect.is_some());
        if evictable == 0 {
            return false;
        }
        let mut best: Option<(u32, u64, (u8, u64))> = None;
        let mut sampled = 0;
        for _ in 0..EVICTION_PROBES {
            if sampled == EVICTION_SAMPLES {
                break;
            }
            let id = (self.next_random() % u64::from(self.high_water)) as u32;
            let slot = self.slot(id);
            if slot.is_free() || Some(id) == protect {
                continue;
            }
            sampled += 1;
            let hash = self.hasher.hash(slot.key());
            if slot.is_expired(now) {
                self.remove(id, hash, Removal::Expired);
                return true;
            }
            // Least asked-for first; among equals the oldest write (versions grow
            // with time), which gives the policy a sense of recency for free.
            let score = (self.sketch.estimate(hash), slot.version);
            if best.is_none_or(|(_, _, s)| score < s) {
                best = Some((id, hash, score));
            }
        }
        let (id, hash) = match best {
            Some((id, hash, _)) => (id, hash),
            None => {
                // A sparse slab (after many deletes): take the first live slot after a
                // random point.
                let start = self.next_random() % u64::from(self.high_water);
                let Some(id) = (0..u64::from(self.high_water))
                    .map(|i| ((start + i) % u64::from(self.high_water)) as u32)
                    .find(|&id| !self.slot(id).is_free() && Some(id) != protect)
                else {
                    return false;
                };
                (id, self.hasher.hash(self.slot(id).key()))
            }
        };
        self.remove(id, hash, Removal::Evicted);
        true
    }

    /// Active expiry: examines up to `budget` slots from where the last sweep stopped
    /// and removes the expired ones, so memory held by keys nobody reads comes back.
    /// Returns how many it removed.
    pub(crate) fn sweep(&mut self, now: u64, budget: usize) -> usize {
        let mut removed = 0;
        for _ in 0..budget.min(self.high_water as usize) {
            if self.sweep_cursor >= self.high_water {
                self.sweep_cursor = 0;
            }
            let id = self.sweep_cursor;
            self.sweep_cursor += 1;
            let slot = self.slot(id);
            if !slot.is_free() && slot.is_expired(now) {
                let hash = self.hasher.hash(slot.key());
                self.remove(id, hash, Removal::Expired);
                removed += 1;
            }
        }
        self.tombs.expire(now);
        self.compact_if_sparse();
        removed
    }

    /// When more than half the slab is free (after mass deletes or a change to larger
    /// values), moves the live entries down and frees the empty chunks, so that memory
    /// not charged to any entry is returned.
    fn compact_if_sparse(&mut self) {
        let live = self.index.len();
        if self.high_water as usize <= 4 * CHUNK || self.free.len() * 2 <= self.high_water as usize
        {
            return;
        }
        let mut holes: Vec<u32> = self
            .free
            .iter()
            .copied()
            .filter(|&id| (id as usize) < live)
            .collect();
        for id in live as u32..self.high_water {
            if self.slot(id).is_free() {
                continue;
            }
            let Some(to) = holes.pop() else { break };
            let slot = std::mem::take(self.slot_mut(id));
            let hash = self.hasher.hash(slot.key());
            if let Ok(mut entry) = self.index.find_entry(hash, |&other| other == id) {
                *entry.get_mut() = to;
            }
            *self.slot_mut(to) = slot;
        }
        self.high_water = live as u32;
        self.sweep_cursor = 0;
        self.compactions += 1;
        self.free.clear();
        self.free.shrink_to_fit();
        self.chunks.truncate(live.div_ceil(CHUNK));
        self.chunks.shrink_to_fit();
        let Self {
            index,
            chunks,
            hasher,
            ..
        } = self;
        index.shrink_to(live, |&other| {
            hasher.hash(chunks[other as usize / CHUNK][other as usize % CHUNK].key())
        });
    }
}
