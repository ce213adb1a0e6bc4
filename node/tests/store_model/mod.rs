//! A model of the store, checked against the real one op by op: what a sequence of
//! sets, gets, deletes, touches, increments, replicated writes, clock steps and sweeps
//! must answer, and what the store must hold after each.
//!
//! Shared by the proptest properties (`tests/store_props.rs`) and the cargo-fuzz
//! target `store_ops` (`node/fuzz`), which include this file by path: proptest shrinks
//! a failing sequence to a short one, the fuzzer finds sequences nobody thought of.
//!
//! What is checked after every op:
//! - the op's answer is exactly the model's (value, version, remaining TTL, error);
//! - every entry the store holds is the model's, byte for byte, version for version
//!   (nothing stale, nothing brought back after a delete or its expiry);
//! - an entry missing from the store was evicted (the eviction count moved since it
//!   was written) or has expired: an entry is never lost otherwise;
//! - versions only grow: every write gets a version above every version the store
//!   issued or applied before;
//! - the bytes charged are at least the charge of the live entries, never above
//!   `--max-memory`, and exactly the live entries' once time has moved past every TTL
//!   and every remembered delete and a sweep has run ([`Op::Settle`]).
//!
//! Deletes may leave tombstones (remembered deletes, charged against the limit): a
//! replicated write of a key deleted within the last [`SETTLE`] may be refused, and
//! the bytes charged between settles may include the tombstones'.
#![allow(dead_code)] // each includer uses its own part of the model

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kcache_node::store::{
    Clock, Condition, Limits, MAX_TTL, MAX_VERSION_AHEAD, ManualClock, SetOutcome, Store,
    StoreError, Ttl, Versioned, charge,
};

/// Keys an op may name, by index: an empty key and one over the limit (refused), one at
/// the limit, and short ones. Few keys, so that ops meet on the same key often.
pub const KEYS: u8 = 24;

pub fn key(k: u8) -> Vec<u8> {
    match k % KEYS {
        0 => Vec::new(),
        1 => vec![b'l'; 251],
        2 => vec![b'm'; 250],
        n => format!("key{n}").into_bytes(),
    }
}

/// A value: `len` copies of `fill`, the decimal text of an integer (so increments
/// meet values they can add to), or raw bytes.
#[derive(Debug, Clone)]
pub enum Value {
    Fill { len: u16, fill: u8 },
    Int(i64),
    Raw(Vec<u8>),
}

impl Value {
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Value::Fill { len, fill } => vec![*fill; usize::from(*len)],
            Value::Int(n) => n.to_string().into_bytes(),
            Value::Raw(bytes) => bytes.clone(),
        }
    }
}

/// A TTL as a request names it, valid or not.
#[derive(Debug, Clone, Copy)]
pub enum TtlChoice {
    Default,
    Never,
    Ms(u32),
    Zero,
    OverMax,
}

impl TtlChoice {
    pub fn ttl(self) -> Ttl {
        match self {
            TtlChoice::Default => Ttl::Default,
            TtlChoice::Never => Ttl::Never,
            TtlChoice::Ms(ms) => Ttl::After(Duration::from_millis(u64::from(ms.max(1)))),
            TtlChoice::Zero => Ttl::After(Duration::ZERO),
            TtlChoice::OverMax => Ttl::After(MAX_TTL + Duration::from_millis(1)),
        }
    }
}

/// A version a request names, relative to what the key holds.
#[derive(Debug, Clone, Copy)]
pub enum VersionChoice {
    Current,
    Off(i16),
    Zero,
    Max,
}

/// The version a replicated write carries, relative to the key's version (or the
/// clock's, for an absent key).
#[derive(Debug, Clone, Copy)]
pub enum RemoteVersion {
    Off(i32),
    FarAhead,
    Max,
}

#[derive(Debug, Clone, Copy)]
pub enum CondChoice {
    Always,
    IfAbsent,
    IfPresent,
    IfVersion(VersionChoice),
}

#[derive(Debug, Clone)]
pub enum Op {
    Set {
        key: u8,
        value: Value,
        ttl: TtlChoice,
        condition: CondChoice,
    },
    Get {
        key: u8,
    },
    Delete {
        key: u8,
        if_version: Option<VersionChoice>,
    },
    Touch {
        key: u8,
        ttl: TtlChoice,
    },
    Incr {
        key: u8,
        delta: i64,
        initial: i64,
        ttl: TtlChoice,
    },
    Apply {
        key: u8,
        value: Value,
        version: RemoteVersion,
        ttl_ms: Option<u32>,
    },
    ApplyDelete {
        key: u8,
        version: RemoteVersion,
    },
    /// Moves the clock on by this many milliseconds.
    Advance {
        ms: u32,
    },
    /// Active expiry with this budget per shard.
    Sweep {
        budget: u16,
    },
    /// Active expiry over every slot: afterwards nothing expired is charged.
    SweepAll,
    /// Moves the clock past every TTL and every remembered delete, then sweeps: the
    /// bytes charged must then be exactly the live entries'.
    Settle,
}

/// The most a remembered delete may be charged besides its key.
pub const TOMBSTONE_ALLOWANCE: u64 = 256;

/// How far [`Op::Settle`] moves the clock: a day, beyond the longest TTL the ops use
/// and any tombstone horizon.
pub const SETTLE: Duration = Duration::from_secs(24 * 3600);

/// Limits a run may use: small memory so evictions happen within a few ops, a value
/// limit above and below the memory limit, a default TTL or none.
pub fn limits(choice: u8) -> Limits {
    let max_memory = [4 << 10, 16 << 10, 64 << 10, 1 << 20][usize::from(choice % 4)];
    let max_value_size = [1 << 10, 8 << 10][usize::from(choice / 4 % 2)];
    let default_ttl = (choice / 8 % 2 == 1).then(|| Duration::from_millis(500));
    Limits {
        max_memory,
        max_value_size,
        default_ttl,
        ..Limits::default()
    }
}

#[derive(Debug, Clone)]
struct Held {
    value: Vec<u8>,
    version: u64,
    /// Clock millisecond it expires at; 0 = never.
    expires_at: u64,
    /// The store's eviction count right after it was written: while the count stays
    /// there, nothing was evicted, so the entry must still be there.
    evictions: u64,
}

impl Held {
    fn charge(&self, key: &[u8]) -> u64 {
        charge(1 + key.len() + self.value.len())
    }

    fn ttl_ms(&self, now: u64) -> Option<u64> {
        (self.expires_at != 0).then(|| self.expires_at - now)
    }
}

/// The store under test and what it should hold.
#[derive(Debug)]
pub struct Checker {
    store: Store,
    clock: ManualClock,
    limits: Limits,
    live: HashMap<Vec<u8>, Held>,
    /// Expired entries the store may still charge for (removed lazily).
    expired: HashMap<Vec<u8>, u64>,
    /// The highest version issued or applied so far.
    last_version: u64,
    /// When each key was last deleted (clock ms), while a tombstone may remember it.
    deleted: HashMap<Vec<u8>, u64>,
    pub ops: usize,
}

type Outcome = Result<(), String>;

fn expect<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Outcome {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}"))
    }
}

impl Checker {
    pub fn new(limits: Limits) -> Self {
        let clock = ManualClock::default();
        Self {
            store: Store::with_clock(limits.clone(), Arc::new(clock.clone())),
            clock,
            limits,
            live: HashMap::new(),
            expired: HashMap::new(),
            last_version: 0,
            deleted: HashMap::new(),
            ops: 0,
        }
    }

    /// Runs a sequence; the first disagreement ends it with what went wrong.
    pub fn run(limits: Limits, ops: &[Op]) -> Outcome {
        let mut checker = Self::new(limits);
        for (i, op) in ops.iter().enumerate() {
            checker
                .step(op)
                .map_err(|e| format!("op {i} {op:?}: {e}"))?;
        }
        Ok(())
    }

    fn now(&self) -> u64 {
        self.clock.monotonic_ms()
    }

    fn evictions(&self) -> u64 {
        self.store.stats().evictions
    }

    /// A new version: above every earlier one.
    fn issued(&mut self, version: u64) -> Outcome {
        if version <= self.last_version {
            return Err(format!(
                "version {version} is not above the last one, {}",
                self.last_version
            ));
        }
        self.last_version = version;
        Ok(())
    }

    fn key_error(&self, key: &[u8]) -> Option<StoreError> {
        let limit = self.limits.max_key_size;
        match key.len() {
            0 => Some(StoreError::EmptyKey { limit }),
            len if len > limit => Some(StoreError::KeyTooLong { len, limit }),
            _ => None,
        }
    }

    fn ttl_error(ttl: Ttl) -> Option<StoreError> {
        match ttl {
            Ttl::After(d) if d.is_zero() => Some(StoreError::TtlZero),
            Ttl::After(d) if d > MAX_TTL => Some(StoreError::TtlTooLong {
                ttl_ms: d.as_millis(),
                limit_ms: MAX_TTL.as_millis(),
            }),
            _ => None,
        }
    }

    fn set_error(&self, key: &[u8], value: &[u8], ttl: Ttl) -> Option<StoreError> {
        if let Some(err) = self.key_error(key) {
            return Some(err);
        }
        let limit = self.limits.max_value_size;
        if value.len() > limit {
            return Some(StoreError::ValueTooLarge {
                len: value.len(),
                limit,
            });
        }
        let needed = charge(1 + key.len() + value.len());
        if needed > self.limits.max_memory {
            return Some(StoreError::LargerThanMemory {
                needed,
                limit: self.limits.max_memory,
            });
        }
        Self::ttl_error(ttl)
    }

    fn expires_at(&self, ttl: Ttl) -> u64 {
        let ttl = match ttl {
            Ttl::Default => self.limits.default_ttl,
            Ttl::Never => None,
            Ttl::After(d) => Some(d),
        };
        ttl.map_or(0, |d| self.now() + (d.as_millis() as u64).max(1))
    }

    /// The store looked the key up (and so removed it if it had expired).
    fn looked_up(&mut self, key: &[u8]) {
        self.expired.remove(key);
    }

    fn current_version(&self, key: &[u8]) -> Option<u64> {
        self.live.get(key).map(|h| h.version)
    }

    fn version_of(&self, key: &[u8], choice: VersionChoice) -> u64 {
        let current = self.current_version(key).unwrap_or(0);
        match choice {
            VersionChoice::Current => current,
            VersionChoice::Off(d) => current.wrapping_add_signed(i64::from(d)),
            VersionChoice::Zero => 0,
            VersionChoice::Max => u64::MAX,
        }
    }

    fn remote_version(&self, key: &[u8], choice: RemoteVersion) -> u64 {
        let base = self
            .current_version(key)
            .unwrap_or(self.clock.wall_ms() << 16);
        match choice {
            RemoteVersion::Off(d) => base.saturating_add_signed(i64::from(d)),
            RemoteVersion::FarAhead => {
                (self.clock.wall_ms() + MAX_VERSION_AHEAD.as_millis() as u64 + 1) << 16
            }
            RemoteVersion::Max => u64::MAX,
        }
    }

    /// Writes an entry into the model.
    fn hold(&mut self, key: Vec<u8>, value: Vec<u8>, version: u64, expires_at: u64) {
        self.expired.remove(&key);
        self.deleted.remove(&key);
        let evictions = self.evictions();
        self.live.insert(
            key,
            Held {
                value,
                version,
                expires_at,
                evictions,
            },
        );
    }

    pub fn step(&mut self, op: &Op) -> Outcome {
        self.ops += 1;
        match op {
            Op::Set {
                key: k,
                value,
                ttl,
                condition,
            } => self.set(&key(*k), &value.bytes(), ttl.ttl(), *condition)?,
            Op::Get { key: k } => self.get(&key(*k))?,
            Op::Delete { key: k, if_version } => self.delete(&key(*k), *if_version)?,
            Op::Touch { key: k, ttl } => self.touch(&key(*k), ttl.ttl())?,
            Op::Incr {
                key: k,
                delta,
                initial,
                ttl,
            } => self.incr(&key(*k), *delta, *initial, ttl.ttl())?,
            Op::Apply {
                key: k,
                value,
                version,
                ttl_ms,
            } => self.apply(&key(*k), value.bytes(), *version, *ttl_ms)?,
            Op::ApplyDelete { key: k, version } => self.apply_delete(&key(*k), *version)?,
            Op::Advance { ms } => self.clock.advance(Duration::from_millis(u64::from(*ms))),
            Op::Sweep { budget } => {
                self.store.sweep_expired(usize::from(*budget));
            }
            Op::SweepAll => {
                self.store.sweep_expired(usize::MAX);
                self.expire();
                self.expired.clear();
            }
            Op::Settle => {
                self.clock.advance(SETTLE);
                self.store.sweep_expired(usize::MAX);
                self.expire();
                self.expired.clear();
                self.deleted.clear();
                self.reconcile()?;
                let live: u64 = self.live.iter().map(|(k, h)| h.charge(k)).sum();
                return expect(
                    "bytes charged after settling",
                    self.store.stats().bytes,
                    live,
                );
            }
        }
        self.reconcile()
    }

    fn set(&mut self, key: &[u8], value: &[u8], ttl: Ttl, condition: CondChoice) -> Outcome {
        let condition = match condition {
            CondChoice::Always => Condition::Always,
            CondChoice::IfAbsent => Condition::IfAbsent,
            CondChoice::IfPresent => Condition::IfPresent,
            CondChoice::IfVersion(v) => Condition::IfVersion(self.version_of(key, v)),
        };
        let got = self.store.set(key, value, ttl, condition);
        if let Some(err) = self.set_error(key, value, ttl) {
            return expect("refused set", got, Err(err));
        }
        self.looked_up(key);
        let current = self.current_version(key);
        let allowed = match condition {
            Condition::Always => true,
            Condition::IfAbsent => current.is_none(),
            Condition::IfPresent => current.is_some(),
            Condition::IfVersion(v) => current == Some(v),
        };
        if !allowed {
            return expect(
                "set whose condition failed",
                got,
                Ok(SetOutcome {
                    stored: false,
                    version: current.unwrap_or(0),
                }),
            );
        }
        let out = got.map_err(|e| format!("set refused: {e}"))?;
        if !out.stored {
            return Err("set whose condition held was not stored".into());
        }
        self.issued(out.version)?;
        let expires_at = self.expires_at(ttl);
        self.hold(key.to_vec(), value.to_vec(), out.version, expires_at);
        Ok(())
    }

    fn get(&mut self, key: &[u8]) -> Outcome {
        let got = self.store.get(key);
        if let Some(err) = self.key_error(key) {
            return expect("get of a bad key", got, Err(err));
        }
        self.looked_up(key);
        let now = self.now();
        let want = self
            .live
            .get(key)
            .map(|h| (h.value.clone(), h.version, h.ttl_ms(now)));
        let got = got
            .map_err(|e| format!("get refused: {e}"))?
            .map(|e| (e.value.to_vec(), e.version, e.ttl_ms));
        expect("get", got, want)
    }

    fn delete(&mut self, key: &[u8], if_version: Option<VersionChoice>) -> Outcome {
        let if_version = if_version.map(|v| self.version_of(key, v));
        let got = self.store.delete(key, if_version);
        if let Some(err) = self.key_error(key) {
            return expect("delete of a bad key", got, Err(err));
        }
        self.looked_up(key);
        let deleted = match (self.current_version(key), if_version) {
            (Some(_), None) => true,
            (Some(current), Some(v)) => current == v,
            (None, _) => false,
        };
        if deleted {
            self.live.remove(key);
        }
        if deleted || if_version.is_none() {
            self.deleted.insert(key.to_vec(), self.now());
        }
        expect("delete", got, Ok(deleted))
    }

    fn touch(&mut self, key: &[u8], ttl: Ttl) -> Outcome {
        let got = self.store.touch(key, ttl);
        if let Some(err) = self.key_error(key).or_else(|| Self::ttl_error(ttl)) {
            return expect("refused touch", got, Err(err));
        }
        self.looked_up(key);
        let expires_at = self.expires_at(ttl);
        let found = match self.live.get_mut(key) {
            Some(held) => {
                held.expires_at = expires_at;
                true
            }
            None => false,
        };
        expect("touch", got, Ok(found))
    }

    fn incr(&mut self, key: &[u8], delta: i64, initial: i64, ttl: Ttl) -> Outcome {
        let got = self.store.incr(key, delta, initial, ttl);
        if let Some(err) = self.key_error(key).or_else(|| Self::ttl_error(ttl)) {
            return expect("refused incr", got.map(|(v, _)| v), Err(err));
        }
        self.looked_up(key);
        let (current, expires_at) = match self.live.get(key) {
            Some(held) => {
                let parsed = std::str::from_utf8(&held.value)
                    .ok()
                    .filter(|s| !s.starts_with('+'))
                    .and_then(|s| s.parse::<i64>().ok());
                match parsed {
                    Some(n) => (n, held.expires_at),
                    None => {
                        return expect(
                            "incr of text",
                            got.map(|_| ()),
                            Err(StoreError::NotAnInteger),
                        );
                    }
                }
            }
            None => (initial, self.expires_at(ttl)),
        };
        let Some(value) = current.checked_add(delta) else {
            return expect(
                "incr past i64",
                got.map(|_| ()),
                Err(StoreError::Overflow {
                    value: current,
                    delta,
                }),
            );
        };
        let (got_value, version) = got.map_err(|e| format!("incr refused: {e}"))?;
        expect("incr", got_value, value)?;
        self.issued(version)?;
        self.hold(
            key.to_vec(),
            value.to_string().into_bytes(),
            version,
            expires_at,
        );
        Ok(())
    }

    fn apply(
        &mut self,
        key: &[u8],
        value: Vec<u8>,
        version: RemoteVersion,
        ttl_ms: Option<u32>,
    ) -> Outcome {
        let version = self.remote_version(key, version);
        let entry = Versioned {
            key: key.to_vec().into(),
            value: value.clone().into(),
            version,
            ttl_ms: ttl_ms.map(u64::from),
        };
        let got = self.store.apply(&entry);
        let ttl = match ttl_ms {
            None => Ttl::Never,
            Some(0) => return expect("apply of an expired entry", got, Ok(false)),
            Some(ms) => Ttl::After(Duration::from_millis(u64::from(ms)).min(MAX_TTL)),
        };
        if let Some(err) = self.set_error(key, &value, ttl) {
            return expect("refused apply", got, Err(err));
        }
        if let Some(err) = self.version_error(version) {
            return expect("apply from far ahead", got, Err(err));
        }
        self.looked_up(key);
        self.last_version = self.last_version.max(version);
        let expires_at = self.expires_at(ttl);
        let deleted = self.deleted.contains_key(key) && !self.live.contains_key(key);
        if deleted && got == Ok(false) {
            // A tombstone of the key's delete refused an older copy.
            return Ok(());
        }
        let changed = match self.live.get_mut(key) {
            Some(held) if held.version > version => false,
            Some(held) if held.version == version && held.value >= value => {
                // A copy of what is here already: it takes the TTL only.
                let same = held.value == value;
                if same {
                    held.expires_at = expires_at;
                }
                same
            }
            _ => {
                self.hold(key.to_vec(), value, version, expires_at);
                true
            }
        };
        expect("apply", got, Ok(changed))
    }

    fn apply_delete(&mut self, key: &[u8], version: RemoteVersion) -> Outcome {
        let version = self.remote_version(key, version);
        let got = self.store.apply_delete(key, version);
        if let Some(err) = self.key_error(key).or_else(|| self.version_error(version)) {
            return expect("refused apply_delete", got, Err(err));
        }
        self.looked_up(key);
        self.last_version = self.last_version.max(version);
        let removed = self.current_version(key).is_some_and(|v| v <= version);
        if removed {
            self.live.remove(key);
        }
        self.deleted.insert(key.to_vec(), self.now());
        expect("apply_delete", got, Ok(removed))
    }

    fn version_error(&self, version: u64) -> Option<StoreError> {
        let wall = self.clock.wall_ms();
        let ahead_ms = (version >> 16).saturating_sub(wall);
        let limit_ms = MAX_VERSION_AHEAD.as_millis() as u64;
        (ahead_ms > limit_ms).then_some(StoreError::VersionAhead {
            version,
            ahead_ms,
            limit_ms,
        })
    }

    /// Moves entries whose time has come from live to expired.
    fn expire(&mut self) {
        let now = self.now();
        let gone: Vec<Vec<u8>> = self
            .live
            .iter()
            .filter(|(_, h)| h.expires_at != 0 && h.expires_at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            if let Some(held) = self.live.remove(&key) {
                let charge = held.charge(&key);
                self.expired.insert(key, charge);
            }
        }
    }

    /// Compares every key's entry with the model, and the accounting with the entries.
    fn reconcile(&mut self) -> Outcome {
        self.expire();
        let now = self.now();
        let evictions = self.evictions();
        for k in 0..KEYS {
            let key = key(k);
            let got = self.store.peek(&key);
            match (got, self.live.get(&key)) {
                (Some(got), Some(held)) => {
                    let want = (held.value.as_slice(), held.version, held.ttl_ms(now));
                    expect(
                        &format!("entry of {}", String::from_utf8_lossy(&key)),
                        (got.value.as_ref(), got.version, got.ttl_ms),
                        want,
                    )?;
                }
                (Some(got), None) => {
                    return Err(format!(
                        "the store holds {:?} (version {}) under {}, which the model says is gone",
                        String::from_utf8_lossy(&got.value),
                        got.version,
                        String::from_utf8_lossy(&key)
                    ));
                }
                (None, Some(held)) if held.evictions == evictions => {
                    return Err(format!(
                        "{} (version {}) is gone though nothing was evicted since it was written",
                        String::from_utf8_lossy(&key),
                        held.version
                    ));
                }
                (None, Some(_)) => {
                    self.live.remove(&key);
                }
                (None, None) => {}
            }
        }
        let stats = self.store.stats();
        let live: u64 = self.live.iter().map(|(k, h)| h.charge(k)).sum();
        let expired: u64 = self.expired.values().sum();
        // A remembered delete may be charged: its key and a bounded overhead.
        let tombstones: u64 = self
            .deleted
            .keys()
            .map(|k| k.len() as u64 + TOMBSTONE_ALLOWANCE)
            .sum();
        if stats.bytes > self.limits.max_memory {
            return Err(format!(
                "{} bytes charged over the limit of {}",
                stats.bytes, self.limits.max_memory
            ));
        }
        if stats.bytes < live || stats.bytes > live + expired + tombstones {
            return Err(format!(
                "{} bytes charged; the live entries are {live} bytes, the expired ones not yet removed {expired}, the deletes that may be remembered at most {tombstones}",
                stats.bytes
            ));
        }
        let (live_items, expired_items) = (self.live.len() as u64, self.expired.len() as u64);
        if stats.items < live_items || stats.items > live_items + expired_items {
            return Err(format!(
                "{} items; the model has {live_items} live and {expired_items} expired",
                stats.items
            ));
        }
        Ok(())
    }
}

/// Reads ops from bytes, for the fuzzer: the first byte picks the limits, then each op
/// is a tag byte, a key byte and its operands; a short input ends the sequence.
pub fn decode(data: &[u8]) -> (Limits, Vec<Op>) {
    let mut reader = Reader(data);
    let limits = limits(reader.byte().unwrap_or(0));
    let mut ops = Vec::new();
    while let Some(op) = reader.op() {
        ops.push(op);
    }
    (limits, ops)
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take::<1>().map(|[b]| b)
    }

    fn op(&mut self) -> Option<Op> {
        let tag = self.byte()?;
        let key = self.byte()?;
        let op = match tag % 10 {
            0 => {
                let [a, b, c] = self.take()?;
                Op::Set {
                    key,
                    value: value_of(a, b),
                    ttl: ttl_of(c),
                    condition: match c >> 4 & 3 {
                        0 => CondChoice::Always,
                        1 => CondChoice::IfAbsent,
                        2 => CondChoice::IfPresent,
                        _ => CondChoice::IfVersion(version_of(c >> 6)),
                    },
                }
            }
            1 => Op::Get { key },
            2 => {
                let v = self.byte()?;
                Op::Delete {
                    key,
                    if_version: (v & 4 != 0).then(|| version_of(v)),
                }
            }
            3 => Op::Touch {
                key,
                ttl: ttl_of(self.byte()?),
            },
            4 => {
                let delta = i64::from_le_bytes(self.take()?);
                let c = self.byte()?;
                Op::Incr {
                    key,
                    // Mostly small steps, sometimes any i64 (overflow).
                    delta: if c & 0x80 == 0 { delta % 100 } else { delta },
                    initial: i64::from(c as i8) * (i64::MAX / 128),
                    ttl: ttl_of(c),
                }
            }
            5 => {
                let [a, b, v, t] = self.take()?;
                Op::Apply {
                    key,
                    value: value_of(a, b),
                    version: remote_of(v),
                    ttl_ms: (t != 0).then(|| u32::from(t - 1) * 100),
                }
            }
            6 => Op::ApplyDelete {
                key,
                version: remote_of(self.byte()?),
            },
            7 => Op::Advance {
                ms: u32::from(key) * 10,
            },
            8 => Op::Sweep {
                budget: u16::from(key),
            },
            _ if key % 2 == 0 => Op::SweepAll,
            _ => Op::Settle,
        };
        Some(op)
    }
}

fn value_of(a: u8, b: u8) -> Value {
    match a % 4 {
        0 => Value::Int(i64::from(b as i8)),
        1 => Value::Int(if b & 1 == 0 { i64::MAX } else { i64::MIN }),
        2 => Value::Raw(vec![b'+', b'0' + b % 10]),
        _ => Value::Fill {
            len: u16::from(a >> 2) * 64 + u16::from(b),
            fill: a,
        },
    }
}

fn ttl_of(c: u8) -> TtlChoice {
    match c % 8 {
        0 => TtlChoice::Default,
        1 => TtlChoice::Never,
        2 => TtlChoice::Zero,
        3 => TtlChoice::OverMax,
        n => TtlChoice::Ms(u32::from(n) * 250 - 900),
    }
}

fn version_of(v: u8) -> VersionChoice {
    match v % 4 {
        0 => VersionChoice::Current,
        1 => VersionChoice::Off(i16::from(v as i8)),
        2 => VersionChoice::Zero,
        _ => VersionChoice::Max,
    }
}

fn remote_of(v: u8) -> RemoteVersion {
    match v % 8 {
        0 => RemoteVersion::FarAhead,
        1 => RemoteVersion::Max,
        _ => RemoteVersion::Off(i32::from(v as i8) * 1000),
    }
}
