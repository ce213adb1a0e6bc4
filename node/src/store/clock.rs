//! Time for the store: a monotonic clock for expiry, a wall clock for versions, and a
//! manual clock so expiry tests control time instead of sleeping.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The two readings the store needs. Injected so tests can move time by hand.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds on a monotonic clock; only differences matter (expiry).
    fn monotonic_ms(&self) -> u64;
    /// Milliseconds since the Unix epoch; feeds the hybrid logical clock of versions,
    /// which must be comparable across nodes.
    fn wall_ms(&self) -> u64;
}

/// The real clocks.
#[derive(Debug)]
pub struct SystemClock {
    start: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        Self {
            start: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn monotonic_ms(&self) -> u64 {
        // Start at 1 so that 0 can mean "never expires" in a slot.
        self.start.elapsed().as_millis() as u64 + 1
    }

    fn wall_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// A clock that moves only when told to; both readings move together.
#[derive(Debug, Clone)]
pub struct ManualClock {
    ms: Arc<AtomicU64>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self {
            ms: Arc::new(AtomicU64::new(1_000)),
        }
    }
}

impl ManualClock {
    /// Moves time forward.
    pub fn advance(&self, by: std::time::Duration) {
        self.ms.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn monotonic_ms(&self) -> u64 {
        self.ms.load(Ordering::SeqCst)
    }

    fn wall_ms(&self) -> u64 {
        1_700_000_000_000 + self.ms.load(Ordering::SeqCst)
    }
}

/// Bits of a version below the millisecond: up to 65,536 versions per millisecond
/// before the logical part borrows from the next millisecond.
const LOGICAL_BITS: u32 = 16;

/// A hybrid logical clock: versions are `wall_ms << 16 | counter`, strictly increasing
/// on this node even if the wall clock steps back, and close to real time, so that
/// last-writer-wins between nodes picks the later write.
#[derive(Debug, Default)]
pub struct Hlc {
    last: AtomicU64,
}

impl Hlc {
    /// The next version, greater than every version this clock issued or observed.
    pub fn next(&self, wall_ms: u64) -> u64 {
        let physical = wall_ms << LOGICAL_BITS;
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = physical.max(last.saturating_add(1));
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    /// Records a version seen from elsewhere, so later local versions exceed it.
    pub fn observe(&self, version: u64) {
        self.last.fetch_max(version, Ordering::AcqRel);
    }

    /// The wall-clock millisecond a version was issued at.
    pub fn wall_ms_of(version: u64) -> u64 {
        version >> LOGICAL_BITS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hlc_is_strictly_increasing_when_the_wall_clock_steps_back() {
        let hlc = Hlc::default();
        let a = hlc.next(10_000);
        let b = hlc.next(9_000);
        let c = hlc.next(10_000);
        assert!(a < b && b < c);
    }

    #[test]
    fn hlc_follows_the_wall_clock_when_it_moves_on() {
        let hlc = Hlc::default();
        let a = hlc.next(10_000);
        assert_eq!(hlc.next(20_000), 20_000 << LOGICAL_BITS);
        assert!(a < 20_000 << LOGICAL_BITS);
    }

    #[test]
    fn hlc_issues_versions_above_observed_ones() {
        let hlc = Hlc::default();
        hlc.observe(50_000 << LOGICAL_BITS);
        assert!(hlc.next(10_000) > 50_000 << LOGICAL_BITS);
    }
}
