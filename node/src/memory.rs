//! The resident-memory guard: keeps the process's resident memory within its base
//! plus `--max-memory` (and a little slack), whatever the allocator makes of the
//! store's entries.
//!
//! The store charges every entry the block the allocator hands out and a share of
//! fragmentation ([`crate::store::charge`]), which holds resident memory near the
//! limit while value sizes stay alike. When they change (small values evicted for
//! large ones), the holes the small ones leave are too small for the large ones, and
//! the heap grows past the limit (1.44x under `tests/memory.rs`'s flood) until the
//! last small entries are gone; the free memory then stays resident. No allocator
//! answers that on its own (a slab empties only when every entry in it is evicted),
//! so the guard measures: every [`INTERVAL`] it reads resident memory, and while it
//! is over the allowance it lowers the store's budget by the excess, which evicts at
//! once and makes later writes reuse freed memory instead of growing the heap, and
//! asks the allocator to hand whole free pages back, which lets the budget rise
//! again. Redis counts its buffers and the allocator's overhead against `maxmemory`
//! for the same reason.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use tokio::sync::watch;

use crate::store::{MIN_BUDGET_SHARE, Store};

/// How often resident memory is read: often enough that a write flood (hundreds of
/// MB/s) overshoots by a few MB at most; a read of /proc/self/status costs some
/// microseconds.
pub const INTERVAL: Duration = Duration::from_millis(10);
/// Bytes of budget taken per byte of resident memory over the allowance while
/// resident memory is still rising beyond what the store's charges explain
/// ([`Rising`], in the last [`RECENT`]) and writes are evicting entries (in the
/// last [`RECENT`]).
/// Evicting what the excess is worth is not enough then: small entries freed at
/// random leave holes that large values cannot use until most of their neighbours
/// are gone too, so the heap goes on growing; taking several times the excess gets
/// the store past the change sooner, and the trims give the pages back. Otherwise
/// the excess is taken once: 8x on either sign alone halved a full 64 MiB node
/// under `redis-benchmark -c 500` (buffers rise with connections; writes to a full
/// store always evict).
const STRONG_GAIN: u64 = 8;
/// Growth that counts as rising, within [`WINDOW`] readings.
const RISE: u64 = 512 << 10;
const WINDOW: usize = 10;

/// Whether resident memory is rising for reasons the store's charges do not show:
/// by [`RISE`] within the last [`WINDOW`] readings, and by as much beyond what the
/// store's charged bytes grew meanwhile. A store still filling grows resident memory
/// with its charges (one filling for the first time reaches its limit while resident
/// memory is still rising, and cutting the budget several-fold there threw away up
/// to two fifths of a fresh cache); holes that new values cannot use grow it while the
/// charges stay level; a budget cut lowers the charges while resident memory stays.
#[derive(Debug, Default)]
struct Rising {
    /// (resident, resident less charged) of the last [`WINDOW`] readings. The
    /// difference is signed: charges can exceed what a full store keeps resident
    /// (a large limit over a small base), and a rise must count from below zero too.
    readings: std::collections::VecDeque<(u64, i64)>,
}

impl Rising {
    fn observe(&mut self, resident: u64, charged: u64) -> bool {
        if self.readings.len() == WINDOW {
            self.readings.pop_front();
        }
        let unexplained = resident as i64 - charged as i64;
        self.readings.push_back((resident, unexplained));
        let lowest = self.readings.iter().map(|r| r.0).min().unwrap_or(resident);
        let lowest_unexplained = self
            .readings
            .iter()
            .map(|r| r.1)
            .min()
            .unwrap_or(unexplained);
        resident - lowest >= RISE && unexplained - lowest_unexplained >= RISE as i64
    }
}
/// How long a rise or a write's eviction counts: long enough to span a budget
/// raised after a trim, which writes fill before the heap grows again.
const RECENT: Duration = Duration::from_secs(1);
/// Entries one lowering of the budget evicts at most (the rest at the next reading):
/// some milliseconds of a blocking thread.
const EVICTIONS_PER_STEP: usize = 65_536;
/// The least and the most time between two allocator trims: a trim walks every
/// arena's free lists under its lock, a millisecond or more on a large heap, so
/// while trims give nothing back (the excess is live memory) they back off.
const TRIM_EVERY: Duration = Duration::from_millis(100);
const TRIM_AT_MOST_EVERY: Duration = Duration::from_secs(5);
/// Failed readings of resident memory in a row after which the budget goes back to
/// the limit rather than stay where the last reading left it.
const FAILED_READINGS: u32 = 3;

/// The process's resident memory in bytes (Linux), or None where it cannot be read.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kb << 10)
}

/// What the guard allows and how far over it the process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// Resident memory when the node started, before any entry.
    pub base: u64,
    /// Room above `base + max_memory` for what grows without entries (connection
    /// buffers, streams): a 64th of the limit, at least 4 MiB.
    pub slack: u64,
    pub max_memory: u64,
}

impl Allowance {
    pub fn new(base: u64, max_memory: u64) -> Self {
        Self {
            base,
            slack: (max_memory / 64).max(4 << 20),
            max_memory,
        }
    }

    /// The resident memory the guard holds the process to.
    pub fn resident(&self) -> u64 {
        self.base + self.max_memory + self.slack
    }

    /// The store's budget at this resident memory: the limit less the excess, or
    /// less [`STRONG_GAIN`] times it (`strong`: rising while writes evict).
    pub fn budget(&self, resident: u64, strong: bool) -> u64 {
        let excess = resident.saturating_sub(self.resident());
        let gain = if strong { STRONG_GAIN } else { 1 };
        self.max_memory.saturating_sub(excess.saturating_mul(gain))
    }
}

/// Runs until `stop`: reads resident memory every [`INTERVAL`] and sets the store's
/// budget from it. Does nothing where resident memory cannot be read. One per
/// process: resident memory is the whole process's (`NodeConfig::memory_guard`).
pub async fn guard(store: Arc<Store>, mut stop: watch::Receiver<bool>) {
    let Some(base) = resident_bytes() else {
        tracing::warn!(
            "resident memory cannot be read here: the store keeps to --max-memory alone"
        );
        return;
    };
    let allowance = Allowance::new(base, store.limits().max_memory);
    tracing::info!(
        base,
        allowance = allowance.resident(),
        "resident memory guard: the store's budget shrinks while resident memory is over the allowance"
    );
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rising = Rising::default();
    let mut last_rise: Option<Instant> = None;
    let mut evictions = store.write_evictions();
    let mut last_eviction: Option<Instant> = None;
    let mut failed = 0;
    let mut trim = Trim::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let Some(resident) = resident_bytes() else {
            failed += 1;
            if failed == FAILED_READINGS {
                tracing::warn!(
                    "resident memory cannot be read any more: the store's budget goes back to --max-memory"
                );
                store.set_budget(u64::MAX, 0);
            }
            continue;
        };
        failed = 0;
        if rising.observe(resident, store.used()) && resident > allowance.resident() {
            last_rise = Some(Instant::now());
        }
        let evicted = store.write_evictions();
        if evicted != evictions {
            evictions = evicted;
            last_eviction = Some(Instant::now());
        }
        let recent = |at: Option<Instant>| at.is_some_and(|at| at.elapsed() < RECENT);
        let strong = recent(last_rise) && recent(last_eviction);
        let floor = allowance.max_memory / MIN_BUDGET_SHARE;
        let budget = allowance.budget(resident, strong).max(floor);
        if budget > store.budget() {
            store.set_budget(budget, 0);
        } else if budget < store.budget() || store.used() > budget {
            let store = store.clone();
            let _ =
                tokio::task::spawn_blocking(move || store.set_budget(budget, EVICTIONS_PER_STEP))
                    .await;
        }
        if budget < allowance.max_memory {
            trim.maybe();
        }
    }
}

/// Allocator trims, one at a time, backing off while they give nothing back.
#[derive(Debug)]
struct Trim {
    running: Option<tokio::task::JoinHandle<bool>>,
    last: Option<Instant>,
    every: Duration,
}

impl Default for Trim {
    fn default() -> Self {
        Self {
            running: None,
            last: None,
            every: TRIM_EVERY,
        }
    }
}

impl Trim {
    fn maybe(&mut self) {
        if let Some(running) = &self.running {
            if !running.is_finished() {
                return;
            }
            let released = self
                .running
                .take()
                .and_then(|t| t.now_or_never())
                .and_then(Result::ok)
                .unwrap_or(false);
            self.every = if released {
                TRIM_EVERY
            } else {
                (self.every * 2).min(TRIM_AT_MOST_EVERY)
            };
        }
        if self.last.is_some_and(|at| at.elapsed() < self.every) {
            return;
        }
        self.last = Some(Instant::now());
        self.running = Some(tokio::task::spawn_blocking(trim_allocator));
    }
}

/// Asks glibc to give free pages inside its heaps back to the kernel (it returns
/// only the top of a heap on its own). Live allocations stay where they are.
/// Returns whether it released anything.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim_allocator() -> bool {
    // SAFETY: malloc_trim takes no pointers and glibc serialises it with every other
    // allocator call; it has no preconditions.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Other allocators (musl, macOS) have no such call.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_allocator() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// Feeds (resident, charged) readings in MiB; answers the last reading's verdict.
    fn rising(readings: &[(u64, u64)]) -> bool {
        let mut rising = Rising::default();
        readings
            .iter()
            .map(|&(resident, charged)| rising.observe(resident * MIB, charged * MIB))
            .last()
            .unwrap()
    }

    #[test]
    fn only_a_rise_the_charges_do_not_explain_counts_as_rising() {
        // A store filling: resident memory and charges grow together.
        assert!(!rising(&[(100, 60), (101, 61), (102, 62), (103, 63)]));
        // Holes: resident memory grows while the charges stay level at the budget.
        assert!(rising(&[(100, 64), (101, 64), (102, 64)]));
        // Holes while the store still grows a little: the rest is unexplained.
        assert!(rising(&[(100, 60), (102, 61)]));
        // A budget cut: the charges fall, resident memory stays.
        assert!(!rising(&[(100, 64), (100, 56), (100, 48)]));
        // Level.
        assert!(!rising(&[(100, 64), (100, 64)]));
        // Charges above resident memory (a full store over a small base): the rise
        // counts from below zero.
        assert!(rising(&[(100, 102), (101, 102), (102, 102)]));
        // A rise older than the window is forgotten.
        let mut readings = vec![(90, 64)];
        readings.extend(std::iter::repeat_n((100, 64), WINDOW));
        assert!(!rising(&readings));
    }

    #[test]
    fn the_budget_falls_by_the_excess_or_eight_times_it_while_rising_under_writes() {
        let a = Allowance::new(20 << 20, 64 << 20);
        assert_eq!(a.slack, 4 << 20);
        assert_eq!(a.resident(), 88 << 20);
        for strong in [false, true] {
            assert_eq!(a.budget(10 << 20, strong), 64 << 20);
            assert_eq!(a.budget(88 << 20, strong), 64 << 20);
            assert_eq!(a.budget(500 << 20, strong), 0);
        }
        assert_eq!(a.budget(90 << 20, false), 62 << 20);
        assert_eq!(a.budget(90 << 20, true), 48 << 20);
        // A 64th of a large limit.
        assert_eq!(Allowance::new(0, 4 << 30).slack, 64 << 20);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn resident_memory_grows_with_what_the_process_touches() {
        let before = resident_bytes().expect("Linux has /proc/self/status");
        let touched = vec![1u8; 64 << 20];
        std::hint::black_box(&touched);
        let after = resident_bytes().unwrap();
        assert!(after >= before + (60 << 20), "{before} then {after}");
        drop(touched);
    }
}
