//! Which entries eviction takes when nothing tells them apart but their age.

use std::sync::Arc;

use kcache_node::store::{Condition, Limits, ManualClock, Store, Ttl, charge};

fn key(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

/// The eviction sample is scored by how often each key was asked for, then by the age
/// of its write: among keys asked for equally (here: never), the oldest writes go
/// first. A store that took the newest instead kept a workload's old generation and
/// threw away the new one.
#[test]
fn among_entries_asked_for_equally_eviction_takes_the_oldest_writes_first() {
    let limit = 1 << 20;
    let store = Store::with_clock(
        Limits {
            max_memory: limit,
            ..Limits::default()
        },
        Arc::new(ManualClock::default()),
    );
    let fits = limit / charge(1 + 8 + 100);
    for i in 0..2 * fits {
        store
            .set(&key(i), &[1; 100], Ttl::Never, Condition::Always)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let held =
        |range: std::ops::Range<u64>| range.filter(|&i| store.peek(&key(i)).is_some()).count();
    let (old, new) = (held(0..fits), held(fits..2 * fits));
    eprintln!("of {fits} old and {fits} new entries, {old} old and {new} new are held");
    assert!(
        new > 4 * old,
        "{old} of the first {fits} writes outlived all but {new} of the next {fits}"
    );
}
