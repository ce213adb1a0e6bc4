use std::collections::{BTreeMap, HashMap};

use super::*;

fn store_with(limits: Limits) -> (Store, ManualClock) {
    let clock = ManualClock::default();
    (Store::with_clock(limits, Arc::new(clock.clone())), clock)
}

fn store() -> (Store, ManualClock) {
    store_with(Limits::default())
}

fn secs(s: u64) -> Ttl {
    Ttl::After(Duration::from_secs(s))
}

#[test]
fn a_set_value_reads_back_with_its_version_and_no_ttl() {
    let (store, _) = store();
    let out = store
        .set(b"k", b"v", Ttl::Never, Condition::Always)
        .unwrap();
    assert!(out.stored);
    let entry = store.get(b"k").unwrap().unwrap();
    assert_eq!(entry.value.as_ref(), b"v");
    assert_eq!(entry.version, out.version);
    assert_eq!(entry.ttl_ms, None);
    assert_eq!(store.get(b"missing").unwrap(), None);
}

#[test]
fn every_write_gets_a_higher_version() {
    let (store, _) = store();
    let a = store
        .set(b"k", b"1", Ttl::Never, Condition::Always)
        .unwrap();
    let b = store
        .set(b"k", b"2", Ttl::Never, Condition::Always)
        .unwrap();
    let (_, c) = store.incr(b"n", 1, 0, Ttl::Never).unwrap();
    assert!(a.version < b.version && b.version < c);
}

#[test]
fn an_entry_expires_when_its_ttl_passes_and_reports_what_remains_before() {
    let (store, clock) = store();
    store.set(b"k", b"v", secs(10), Condition::Always).unwrap();
    clock.advance(Duration::from_secs(4));
    assert_eq!(store.get(b"k").unwrap().unwrap().ttl_ms, Some(6_000));
    clock.advance(Duration::from_secs(6));
    assert_eq!(store.get(b"k").unwrap(), None);
    let stats = store.stats();
    assert_eq!((stats.items, stats.expirations, stats.bytes), (0, 1, 0));
}

#[test]
fn the_default_ttl_applies_when_a_write_names_none() {
    let (store, clock) = store_with(Limits {
        default_ttl: Some(Duration::from_secs(5)),
        ..Limits::default()
    });
    store
        .set(b"d", b"v", Ttl::Default, Condition::Always)
        .unwrap();
    store
        .set(b"n", b"v", Ttl::Never, Condition::Always)
        .unwrap();
    clock.advance(Duration::from_secs(5));
    assert_eq!(store.get(b"d").unwrap(), None);
    assert!(store.get(b"n").unwrap().is_some());
}

#[test]
fn touch_moves_the_expiry_and_reports_misses() {
    let (store, clock) = store();
    store.set(b"k", b"v", secs(2), Condition::Always).unwrap();
    clock.advance(Duration::from_secs(1));
    assert!(store.touch(b"k", secs(10)).unwrap());
    clock.advance(Duration::from_secs(5));
    assert!(store.get(b"k").unwrap().is_some());
    assert!(store.touch(b"k", Ttl::Never).unwrap());
    clock.advance(MAX_TTL);
    assert_eq!(store.get(b"k").unwrap().unwrap().ttl_ms, None);
    assert!(!store.touch(b"absent", secs(1)).unwrap());
}

#[test]
fn the_sweep_removes_expired_entries_nobody_reads() {
    let (store, clock) = store();
    for i in 0..1_000u32 {
        let ttl = if i % 2 == 0 { secs(1) } else { Ttl::Never };
        store
            .set(&i.to_be_bytes(), b"v", ttl, Condition::Always)
            .unwrap();
    }
    clock.advance(Duration::from_secs(1));
    let removed: usize = (0..10).map(|_| store.sweep_expired(64)).sum();
    assert_eq!(removed, 500);
    let stats = store.stats();
    assert_eq!((stats.items, stats.expirations), (500, 500));
}

#[test]
fn conditional_sets_follow_absent_present_and_version() {
    let (store, _) = store();
    let first = store
        .set(b"k", b"1", Ttl::Never, Condition::IfPresent)
        .unwrap();
    assert_eq!(
        first,
        SetOutcome {
            stored: false,
            version: 0
        }
    );
    let added = store
        .set(b"k", b"1", Ttl::Never, Condition::IfAbsent)
        .unwrap();
    assert!(added.stored);
    let again = store
        .set(b"k", b"2", Ttl::Never, Condition::IfAbsent)
        .unwrap();
    assert_eq!(
        again,
        SetOutcome {
            stored: false,
            version: added.version
        }
    );
    let stale = store
        .set(
            b"k",
            b"3",
            Ttl::Never,
            Condition::IfVersion(added.version + 1),
        )
        .unwrap();
    assert!(!stale.stored);
    let cas = store
        .set(b"k", b"3", Ttl::Never, Condition::IfVersion(added.version))
        .unwrap();
    assert!(cas.stored && cas.version > added.version);
    assert_eq!(store.get(b"k").unwrap().unwrap().value.as_ref(), b"3");
}

#[test]
fn delete_by_version_only_removes_the_matching_version() {
    let (store, clock) = store();
    let v = store
        .set(b"k", b"v", Ttl::Never, Condition::Always)
        .unwrap()
        .version;
    assert!(!store.delete(b"k", Some(v + 1)).unwrap());
    assert!(store.delete(b"k", Some(v)).unwrap());
    assert!(!store.delete(b"k", None).unwrap());
    // What is left is the delete's tombstone, until its horizon.
    assert_eq!(store.stats().bytes, tombstone_charge(1));
    clock.advance(TOMBSTONE_HORIZON);
    store.sweep_expired(16);
    assert_eq!(store.stats().bytes, 0);
}

#[test]
fn incr_starts_at_initial_then_adds_and_keeps_the_ttl() {
    let (store, clock) = store();
    assert_eq!(store.incr(b"n", 5, 100, secs(10)).unwrap().0, 105);
    assert_eq!(store.incr(b"n", -7, 0, Ttl::Never).unwrap().0, 98);
    assert_eq!(store.get(b"n").unwrap().unwrap().value.as_ref(), b"98");
    clock.advance(Duration::from_secs(10));
    assert_eq!(store.get(b"n").unwrap(), None);
}

#[test]
fn incr_refuses_non_integers_and_overflow_without_changing_the_value() {
    let (store, _) = store();
    store
        .set(b"s", b"abc", Ttl::Never, Condition::Always)
        .unwrap();
    assert_eq!(
        store.incr(b"s", 1, 0, Ttl::Never),
        Err(StoreError::NotAnInteger)
    );
    store
        .set(b"p", b"+5", Ttl::Never, Condition::Always)
        .unwrap();
    assert_eq!(
        store.incr(b"p", 1, 0, Ttl::Never),
        Err(StoreError::NotAnInteger)
    );
    store
        .set(
            b"m",
            i64::MAX.to_string().as_bytes(),
            Ttl::Never,
            Condition::Always,
        )
        .unwrap();
    assert!(matches!(
        store.incr(b"m", 1, 0, Ttl::Never),
        Err(StoreError::Overflow { .. })
    ));
    assert_eq!(
        store.get(b"m").unwrap().unwrap().value.as_ref(),
        i64::MAX.to_string().as_bytes()
    );
}

#[test]
fn bad_keys_values_and_ttls_are_refused_with_the_limit_named() {
    let (store, _) = store_with(Limits {
        max_memory: 4096,
        max_value_size: 8192,
        ..Limits::default()
    });
    let long_key = [b'k'; 251];
    assert_eq!(
        store.set(b"", b"v", Ttl::Never, Condition::Always),
        Err(StoreError::EmptyKey { limit: 250 })
    );
    let err = store.get(&long_key).unwrap_err();
    assert_eq!(
        err,
        StoreError::KeyTooLong {
            len: 251,
            limit: 250
        }
    );
    assert!(err.to_string().contains("250"));
    let err = store
        .set(b"k", &[0; 8193], Ttl::Never, Condition::Always)
        .unwrap_err();
    assert!(err.to_string().contains("8192"), "{err}");
    let err = store
        .set(b"k", &[0; 5000], Ttl::Never, Condition::Always)
        .unwrap_err();
    assert!(
        matches!(err, StoreError::LargerThanMemory { limit: 4096, .. }),
        "{err}"
    );
    let year_and_a_day = Ttl::After(MAX_TTL + Duration::from_secs(86_400));
    assert!(matches!(
        store.set(b"k", b"v", year_and_a_day, Condition::Always),
        Err(StoreError::TtlTooLong { .. })
    ));
    assert_eq!(
        store.touch(b"k", Ttl::After(Duration::ZERO)),
        Err(StoreError::TtlZero)
    );
    assert_eq!(store.stats().items, 0);
}

#[test]
fn writes_far_beyond_the_limit_keep_the_charged_bytes_within_it() {
    let limit = 1 << 20;
    let (store, _) = store_with(Limits {
        max_memory: limit,
        ..Limits::default()
    });
    for i in 0..100_000u32 {
        store
            .set(&i.to_be_bytes(), &[7; 100], Ttl::Never, Condition::Always)
            .unwrap();
        assert!(store.stats().bytes <= limit || i % 1000 != 0);
    }
    let stats = store.stats();
    assert!(stats.bytes <= limit);
    let per_entry = charge(1 + 4 + 100);
    assert!(stats.items >= (limit / per_entry) * 95 / 100, "{stats:?}");
    assert!(stats.evictions > 90_000, "{stats:?}");
    // The newest write always survives its own eviction round.
    assert!(store.get(&99_999u32.to_be_bytes()).unwrap().is_some());
}

#[test]
fn a_lowered_budget_evicts_at_once_from_every_shard_and_writes_keep_to_it() {
    let limit = 1 << 20;
    let (store, _) = store_with(Limits {
        max_memory: limit,
        ..Limits::default()
    });
    for i in 0..20_000u32 {
        store
            .set(&i.to_be_bytes(), &[7; 100], Ttl::Never, Condition::Always)
            .unwrap();
    }
    let full = store.stats();
    assert!(full.bytes > limit * 95 / 100, "{full:?}");
    let per_shard: Vec<usize> = store.shards.iter().map(|s| s.lock().len()).collect();

    store.set_budget(limit * 3 / 4, usize::MAX);
    let lowered = store.stats();
    assert_eq!(lowered.budget, limit * 3 / 4);
    assert!(lowered.bytes <= limit * 3 / 4, "{lowered:?}");
    assert!(
        lowered.bytes > limit * 3 / 4 - 4 * charge(105),
        "{lowered:?}"
    );
    // Every shard gave up about a quarter, none was emptied.
    for (shard, before) in store.shards.iter().zip(per_shard) {
        let after = shard.lock().len();
        assert!(after < before && after > before / 2, "{after} of {before}");
    }
    for i in 20_000..40_000u32 {
        store
            .set(&i.to_be_bytes(), &[7; 100], Ttl::Never, Condition::Always)
            .unwrap();
        assert!(store.used.load(Ordering::Relaxed) <= limit * 3 / 4);
    }

    // A capped call stops short; a write meanwhile evicts up to 16 times what it
    // adds, so the store shrinks, and the next calls go on down.
    let before = store.stats().bytes;
    store.set_budget(limit / 2, 100);
    let after = store.stats();
    assert_eq!(after.budget, limit / 2);
    assert_eq!(before - after.bytes, 100 * charge(1 + 4 + 100));
    store
        .set(b"one more", &[7; 100], Ttl::Never, Condition::Always)
        .unwrap();
    let written = store.stats().bytes;
    assert!(written <= after.bytes, "{written} after {}", after.bytes);
    assert!(
        written + 17 * charge(1 + 4 + 100) >= after.bytes,
        "a write evicts no more than 16 times what it adds"
    );
    let mut calls = 1;
    while store.stats().bytes > limit / 2 {
        store.set_budget(limit / 2, 100);
        calls += 1;
    }
    assert!(calls > 10, "{calls}");
    // Never below half the limit, never above it; raised, writes fill it again.
    store.set_budget(0, usize::MAX);
    assert_eq!(store.stats().budget, limit / MIN_BUDGET_SHARE);
    assert!(store.stats().bytes <= limit / 2);
    store.set_budget(u64::MAX, usize::MAX);
    assert_eq!(store.stats().budget, limit);
    for i in 40_000..60_000u32 {
        store
            .set(&i.to_be_bytes(), &[7; 100], Ttl::Never, Condition::Always)
            .unwrap();
    }
    assert!(store.stats().bytes > limit * 95 / 100);
}

#[test]
fn a_value_bigger_than_a_shard_still_fits_by_evicting_elsewhere() {
    let (store, _) = store_with(Limits {
        max_memory: 256 << 10,
        ..Limits::default()
    });
    for i in 0..2_000u32 {
        store
            .set(&i.to_be_bytes(), &[1; 100], Ttl::Never, Condition::Always)
            .unwrap();
    }
    store
        .set(b"big", &[2; 200 << 10], Ttl::Never, Condition::Always)
        .unwrap();
    assert!(store.stats().bytes <= 256 << 10);
    assert_eq!(store.get(b"big").unwrap().unwrap().value.len(), 200 << 10);
}

#[test]
fn deleting_most_entries_compacts_the_slab_and_keeps_the_rest_readable() {
    let (store, _) = store();
    for i in 0..100_000u32 {
        store
            .set(&i.to_be_bytes(), b"v", Ttl::Never, Condition::Always)
            .unwrap();
    }
    let full = store.stats().structure_bytes;
    for i in 0..100_000u32 {
        if i % 10 != 0 {
            store.delete(&i.to_be_bytes(), None).unwrap();
        }
    }
    store.sweep_expired(1);
    let after = store.stats();
    assert_eq!(after.items, 10_000);
    assert!(
        after.structure_bytes < full / 2,
        "{full} -> {}",
        after.structure_bytes
    );
    for i in (0..100_000u32).step_by(10) {
        assert!(store.get(&i.to_be_bytes()).unwrap().is_some(), "key {i}");
    }
}

#[test]
fn concurrent_writers_and_readers_keep_the_accounting_exact() {
    let (store, _) = store_with(Limits {
        max_memory: 512 << 10,
        ..Limits::default()
    });
    let store = Arc::new(store);
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..20_000u32 {
                    let key = (i % 5_000 + t * 5_000).to_be_bytes();
                    store
                        .set(&key, &[t as u8; 64], Ttl::Never, Condition::Always)
                        .unwrap();
                    store.get(&key).unwrap();
                    if i % 7 == 0 {
                        store.delete(&key, None).unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = store.stats();
    assert!(stats.bytes <= 512 << 10);
    let per_entry = charge(1 + 4 + 64);
    assert_eq!(
        stats.bytes,
        stats.items * per_entry + stats.tombstones * tombstone_charge(4),
        "{stats:?}"
    );
}

/// Reference LRU by entry count, for the hit-ratio comparison.
fn lru_hit_ratio(trace: &[u32], capacity: usize) -> f64 {
    let mut stamp_of: HashMap<u32, u64> = HashMap::new();
    let mut by_stamp: BTreeMap<u64, u32> = BTreeMap::new();
    let mut hits = 0;
    for (t, &key) in trace.iter().enumerate() {
        let t = t as u64;
        if let Some(old) = stamp_of.insert(key, t) {
            by_stamp.remove(&old);
            hits += 1;
        } else if stamp_of.len() > capacity {
            let (_, victim) = by_stamp.pop_first().unwrap();
            stamp_of.remove(&victim);
        }
        by_stamp.insert(t, key);
    }
    hits as f64 / trace.len() as f64
}

#[test]
fn eviction_beats_lru_hit_ratio_on_a_zipf_trace_at_equal_memory() {
    let keys = 100_000;
    let mut zipf = kcache_cli::workload::Zipf::new(keys, 0.99, 42);
    let trace: Vec<u32> = (0..500_000).map(|_| zipf.next_rank() as u32).collect();
    let capacity = keys / 10;
    let per_entry = charge(1 + 4 + 16);
    let (store, _) = store_with(Limits {
        max_memory: capacity as u64 * per_entry,
        ..Limits::default()
    });
    for &key in &trace {
        let key = key.to_be_bytes();
        if store.get(&key).unwrap().is_none() {
            store
                .set(&key, &[0; 16], Ttl::Never, Condition::Always)
                .unwrap();
        }
    }
    let stats = store.stats();
    let ours = stats.hits as f64 / trace.len() as f64;
    let lru = lru_hit_ratio(&trace, capacity);
    assert!(ours > lru + 0.02, "kcache {ours:.4} vs LRU {lru:.4}");
}

/// A version made now by the clock's wall time, as a peer's would be.
fn recent(clock: &ManualClock) -> u64 {
    clock.wall_ms() << 16
}

fn versioned(key: &str, value: &str, version: u64) -> Versioned {
    Versioned {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        version,
        ttl_ms: None,
    }
}

#[test]
fn apply_keeps_the_newest_version_whatever_the_arrival_order() {
    let (store, _) = store();
    assert!(store.apply(&versioned("k", "new", 20)).unwrap());
    assert!(!store.apply(&versioned("k", "old", 10)).unwrap());
    assert_eq!(store.get(b"k").unwrap().unwrap().value.as_ref(), b"new");
    assert!(store.apply(&versioned("k", "newer", 30)).unwrap());
    assert_eq!(store.get(b"k").unwrap().unwrap().version, 30);
    // Local writes after an apply get higher versions than anything applied.
    let local = store
        .set(b"k", b"local", Ttl::Never, Condition::Always)
        .unwrap();
    assert!(local.version > 30);
}

#[test]
fn apply_of_the_same_value_at_an_equal_version_takes_the_ttl_only() {
    // A replicated Touch: the primary's entry, same value and version, new TTL.
    let (store, clock) = store();
    store.apply(&versioned("k", "v", 5)).unwrap();
    let touched = Versioned {
        ttl_ms: Some(1_000),
        ..versioned("k", "v", 5)
    };
    assert!(store.apply(&touched).unwrap());
    assert_eq!(store.get(b"k").unwrap().unwrap().value.as_ref(), b"v");
    clock.advance(Duration::from_secs(1));
    assert_eq!(store.get(b"k").unwrap(), None);
}

#[test]
fn apply_delete_spares_a_newer_entry() {
    let (store, _) = store();
    store.apply(&versioned("k", "v", 50)).unwrap();
    assert!(!store.apply_delete(b"k", 40).unwrap());
    assert!(store.apply_delete(b"k", 50).unwrap());
    assert_eq!(store.get(b"k").unwrap(), None);
}

#[test]
fn a_scan_in_small_steps_sees_every_live_entry_once() {
    let (store, clock) = store();
    for i in 0..5_000u32 {
        let ttl = if i % 5 == 0 { secs(1) } else { Ttl::Never };
        store
            .set(&i.to_be_bytes(), b"v", ttl, Condition::Always)
            .unwrap();
    }
    clock.advance(Duration::from_secs(1));
    let mut seen = std::collections::HashSet::new();
    let mut cursor = Some(ScanCursor::default());
    while let Some(at) = cursor {
        let (batch, next) = store.scan(at, 97, usize::MAX);
        assert!(batch.len() <= 97);
        for entry in batch {
            assert!(seen.insert(entry.key));
        }
        cursor = next;
    }
    assert_eq!(seen.len(), 4_000);
}

#[test]
fn peek_reads_without_counting() {
    let (store, _) = store();
    store
        .set(b"k", b"v", Ttl::Never, Condition::Always)
        .unwrap();
    assert!(store.peek(b"k").is_some());
    assert!(store.peek(b"x").is_none());
    let stats = store.stats();
    assert_eq!((stats.hits, stats.misses), (0, 0));
}

#[test]
fn get_with_hands_over_live_values_only_and_counts_as_get_does() {
    let (store, clock) = store();
    store
        .set(b"k", b"value", secs(10), Condition::Always)
        .unwrap();
    let mut seen = Vec::new();
    let found = store.get_with(b"k", |value| seen.extend_from_slice(value));
    assert_eq!((found.unwrap(), seen.as_slice()), (Some(()), &b"value"[..]));
    assert_eq!(
        store.get_with(b"missing", |_| unreachable!()).unwrap(),
        None
    );
    clock.advance(Duration::from_secs(10));
    assert_eq!(store.get_with(b"k", |_| unreachable!()).unwrap(), None);
    assert!(matches!(
        store.get_with(b"", |_| ()),
        Err(StoreError::EmptyKey { .. })
    ));
    let stats = store.stats();
    assert_eq!(
        (
            stats.hits,
            stats.misses,
            stats.expirations,
            stats.items,
            stats.bytes
        ),
        (1, 2, 1, 0, 0)
    );
}

#[test]
fn a_scan_sees_every_entry_that_stays_while_compaction_moves_slots_under_it() {
    // As a handoff's move-unowned pass does: nine in ten scanned entries leave, the
    // sweep compacts the emptied shards, and the scan goes on.
    let (store, _) = store();
    for i in 0..100_000u32 {
        store
            .set(&i.to_be_bytes(), b"v", Ttl::Never, Condition::Always)
            .unwrap();
    }
    let mut seen = std::collections::HashSet::new();
    let mut cursor = Some(ScanCursor::default());
    while let Some(at) = cursor {
        let (batch, next) = store.scan(at, 1_000, usize::MAX);
        for entry in batch {
            let i = u32::from_be_bytes(entry.key[..].try_into().unwrap());
            if i % 10 != 0 {
                store.delete(&entry.key, None).unwrap();
            }
            seen.insert(entry.key);
        }
        store.sweep_expired(1);
        cursor = next;
    }
    let skipped = (0..100_000u32)
        .step_by(10)
        .filter(|i| !seen.contains(&i.to_be_bytes()[..]))
        .count();
    assert_eq!(skipped, 0, "entries that stayed but the scan never saw");
    assert_eq!(store.stats().items, 10_000);
}

#[test]
fn two_owners_that_wrote_a_key_at_the_same_version_converge_on_one_value() {
    // Two coordinators in one millisecond (owners that disagree on membership for a
    // moment) issue equal versions; replicating each to the other must not leave them
    // holding different values for good.
    let (a, _) = store();
    let (b, _) = store();
    let on_a = a
        .set(b"k", b"from-a", Ttl::Never, Condition::Always)
        .unwrap();
    let on_b = b
        .set(b"k", b"from-b", Ttl::Never, Condition::Always)
        .unwrap();
    assert_eq!(on_a.version, on_b.version, "the clocks are the same");
    a.apply(&versioned("k", "from-b", on_b.version)).unwrap();
    b.apply(&versioned("k", "from-a", on_a.version)).unwrap();
    assert_eq!(
        a.get(b"k").unwrap().unwrap().value,
        b.get(b"k").unwrap().unwrap().value
    );
}

#[test]
fn a_version_from_far_in_the_future_is_refused_and_the_clock_goes_on() {
    let (store, _) = store();
    for version in [u64::MAX, u64::MAX - 1, store.next_version() + (1 << 40)] {
        let err = store.apply(&versioned("k", "v", version)).unwrap_err();
        assert!(matches!(err, StoreError::VersionAhead { .. }), "{err}");
        assert!(store.apply_delete(b"k", version).is_err());
    }
    let set = store
        .set(b"k", b"v", Ttl::Never, Condition::Always)
        .unwrap();
    assert!(set.stored);
    assert!(store.next_version() > set.version);
}

#[test]
fn a_scan_batch_keeps_to_its_byte_budget_unless_one_entry_alone_is_larger() {
    let (store, _) = store();
    for i in 0..100u32 {
        let size = if i == 7 { 5_000 } else { 100 };
        store
            .set(
                &i.to_be_bytes(),
                &vec![b'v'; size],
                Ttl::Never,
                Condition::Always,
            )
            .unwrap();
    }
    let mut seen = 0;
    let mut cursor = Some(ScanCursor::default());
    while let Some(at) = cursor {
        let (batch, next) = store.scan(at, 1_000, 1_000);
        let bytes: usize = batch.iter().map(|e| e.key.len() + e.value.len()).sum();
        assert!(!batch.is_empty() || next.is_none());
        assert!(
            bytes <= 1_000 || batch.len() == 1,
            "{} entries, {bytes} bytes",
            batch.len()
        );
        seen += batch.len();
        cursor = next;
    }
    assert_eq!(seen, 100);
}

#[test]
fn a_copy_older_than_a_delete_cannot_bring_the_key_back() {
    // The replica that missed the delete hands its old copy over, or answers a
    // read-through: the delete's tombstone refuses it.
    let (store, _) = store();
    let written = store
        .set(b"k", b"v", Ttl::Never, Condition::Always)
        .unwrap();
    assert!(store.delete(b"k", None).unwrap());
    let deleted_at = store.tombstone(b"k").expect("a delete leaves a tombstone");
    assert!(deleted_at > written.version);
    assert!(!store.apply(&versioned("k", "v", written.version)).unwrap());
    assert_eq!(store.get(b"k").unwrap(), None);
    // A write after the delete is newer and wins, and clears the tombstone.
    assert!(
        store
            .apply(&versioned("k", "later", deleted_at + 1))
            .unwrap()
    );
    assert_eq!(store.get(b"k").unwrap().unwrap().value.as_ref(), b"later");
    assert_eq!(store.tombstone(b"k"), None);
}

#[test]
fn a_replicated_delete_is_remembered_even_for_a_key_never_seen() {
    let (store, clock) = store();
    let deleted = recent(&clock);
    assert!(!store.apply_delete(b"k", deleted).unwrap());
    assert!(!store.apply(&versioned("k", "stale", deleted - 1)).unwrap());
    assert!(!store.apply(&versioned("k", "stale", deleted)).unwrap());
    assert_eq!(store.get(b"k").unwrap(), None);
    // An unconditional local delete of a missing key also remembers (its replicas may
    // hold the key); a failed conditional one changes nothing.
    assert!(!store.delete(b"absent", None).unwrap());
    assert!(store.tombstone(b"absent").is_some());
    store
        .set(b"c", b"v", Ttl::Never, Condition::Always)
        .unwrap();
    assert!(!store.delete(b"c", Some(1)).unwrap());
    assert_eq!(store.tombstone(b"c"), None);
}

#[test]
fn tombstones_are_forgotten_after_their_horizon_and_are_charged_meanwhile() {
    let (store, clock) = store();
    let before = store.stats().bytes;
    let deleted = recent(&clock);
    store.apply_delete(b"gone", deleted).unwrap();
    let stats = store.stats();
    assert_eq!(stats.tombstones, 1);
    assert!(stats.bytes > before, "tombstones count against the limit");
    assert_eq!(
        store.tombstones().flatten().collect::<Vec<_>>(),
        vec![Tombstone {
            key: Bytes::from_static(b"gone"),
            version: deleted
        }]
    );
    clock.advance(TOMBSTONE_HORIZON);
    store.sweep_expired(16);
    assert_eq!(store.tombstone(b"gone"), None);
    assert_eq!(store.stats().tombstones, 0);
    assert_eq!(store.stats().bytes, before);
    assert!(
        store
            .apply(&versioned("gone", "back", deleted - 1))
            .unwrap()
    );
}

#[test]
fn a_delete_passed_on_keeps_the_horizon_it_was_made_with() {
    let (store, clock) = store();
    let made = recent(&clock);
    // It reaches this member (by handoff, Sync or anti-entropy) a minute before its
    // horizon: it is remembered for that minute, not ten more, so members cannot hand
    // an old delete back and forth for ever.
    clock.advance(TOMBSTONE_HORIZON - Duration::from_secs(60));
    store.apply_delete(b"k", made).unwrap();
    assert_eq!(store.tombstone(b"k"), Some(made));
    assert!(!store.apply(&versioned("k", "stale", made - 1)).unwrap());
    clock.advance(Duration::from_secs(60));
    store.sweep_expired(16);
    assert_eq!(store.tombstone(b"k"), None);
    assert_eq!(store.stats().tombstones, 0);
    // Past its horizon, a delete still removes an older copy, and leaves no tombstone.
    assert!(store.apply(&versioned("old", "v", made - 1)).unwrap());
    assert!(store.apply_delete(b"old", made).unwrap());
    assert_eq!(store.get(b"old").unwrap(), None);
    assert_eq!(store.tombstone(b"old"), None);
    assert_eq!(store.stats().tombstones, 0);
}

#[test]
fn handing_a_key_off_forgets_it_without_a_tombstone() {
    let (store, _) = store();
    let written = store
        .set(b"k", b"v", Ttl::Never, Condition::Always)
        .unwrap();
    assert!(store.forget(b"k", written.version));
    assert_eq!(store.tombstone(b"k"), None);
    // Handed back later (the member set moved again), it is taken.
    assert!(store.apply(&versioned("k", "v", written.version)).unwrap());
}

#[test]
fn a_flood_of_deletes_keeps_tombstones_within_their_share_of_the_limit() {
    let limit = 1 << 20;
    let (store, clock) = store_with(Limits {
        max_memory: limit,
        ..Limits::default()
    });
    for i in 0..100_000u32 {
        store
            .apply_delete(&i.to_be_bytes(), recent(&clock))
            .unwrap();
    }
    let stats = store.stats();
    assert!(
        stats.bytes <= limit / 16 + limit / 64,
        "{} bytes",
        stats.bytes
    );
    assert!(stats.tombstones_dropped > 0);
    assert_eq!(
        stats.tombstones + stats.tombstones_dropped,
        100_000,
        "every delete is remembered or counted as forgotten"
    );
}
