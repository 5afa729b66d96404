//! A hybrid logical clock for write timestamps (microseconds): never behind
//! the wall clock it is given, always ahead of every timestamp it issued or
//! observed, so writes through one coordinator are ordered even if its clock
//! stalls or steps back. The wall time is passed in.

use std::sync::atomic::{AtomicU64, Ordering};

/// Lock-free: client threads of one node draw timestamps concurrently.
#[derive(Debug, Default)]
pub struct HybridClock {
    last_us: AtomicU64,
}

impl HybridClock {
    /// A timestamp greater than any before, at least `wall_us`.
    pub fn now(&self, wall_us: u64) -> u64 {
        self.now_many(wall_us, 1)
    }

    /// `count` consecutive timestamps, greater than any before and at least
    /// `wall_us`; returns the first. A pipeline's writes draw theirs in
    /// command order, so a later command's write wins over an earlier one.
    pub fn now_many(&self, wall_us: u64, count: u64) -> u64 {
        let mut first = 0;
        let _ = self
            .last_us
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                first = last.saturating_add(1).max(wall_us);
                Some(first.saturating_add(count.saturating_sub(1)))
            });
        first
    }

    /// Moves past a timestamp seen elsewhere (a client's, or a replica's).
    pub fn observe(&self, timestamp_us: u64) {
        self.last_us.fetch_max(timestamp_us, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictly_increasing_even_when_the_wall_clock_goes_back() {
        let clock = HybridClock::default();
        let a = clock.now(1_000);
        let b = clock.now(900);
        let c = clock.now(900);
        assert!(a < b && b < c);
        clock.observe(5_000);
        assert!(clock.now(1_000) > 5_000);
        assert_eq!(clock.now(10_000), 10_000);
    }

    #[test]
    fn many_at_once_are_consecutive_and_below_the_next() {
        let clock = HybridClock::default();
        let first = clock.now_many(1_000, 3);
        assert_eq!(first, 1_000);
        assert_eq!(clock.now(0), 1_003, "1_000..=1_002 were handed out");
        assert_eq!(clock.now_many(0, 0), 1_004, "zero still advances");
    }

    #[test]
    fn saturates_instead_of_overflowing() {
        let clock = HybridClock::default();
        clock.observe(u64::MAX);
        assert_eq!(clock.now(0), u64::MAX);
    }
}
