//! The bytes the store reports charged follow every removal at once, including the
//! ones a refused write makes on its way.

use std::sync::Arc;
use std::time::Duration;

use kcache_node::store::{Condition, Limits, ManualClock, Store, StoreError, Ttl};

/// An increment looks its key up first, which removes the entry if it has expired;
/// when the increment is then refused (overflow, or a value that is not an integer),
/// the removed entry's bytes must leave the charged total too. Found by the store_ops
/// fuzz target: the total went on counting the expired entry until some later write
/// or sweep in its shard.
#[test]
fn a_refused_increment_that_expired_its_entry_on_the_way_leaves_nothing_charged() {
    let clock = ManualClock::default();
    let store = Store::with_clock(Limits::default(), Arc::new(clock.clone()));
    let one_second = Ttl::After(Duration::from_secs(1));
    store
        .set(b"n", b"1", one_second, Condition::Always)
        .unwrap_or_else(|e| panic!("{e}"));
    clock.advance(Duration::from_secs(2));
    assert_eq!(
        store.incr(b"n", 1, i64::MAX, Ttl::Never),
        Err(StoreError::Overflow {
            value: i64::MAX,
            delta: 1
        })
    );
    let stats = store.stats();
    assert_eq!((stats.items, stats.bytes), (0, 0));
}
