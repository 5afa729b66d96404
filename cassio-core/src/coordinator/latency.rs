//! How long the coordinator took to answer keys: a histogram of fixed
//! buckets, lock-free, cheap enough to record every batch (a relaxed add
//! to one bucket and to the sum), exported as Prometheus histograms.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets in microseconds, from 100 µs to 10 s; a
/// last bucket holds everything slower.
pub const LATENCY_BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Keys answered in each bucket (not cumulative); the last is beyond
    /// every bound.
    buckets: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

/// A copy of a [`LatencyHistogram`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatencySnapshot {
    /// Keys answered in at most each bound of [`LATENCY_BOUNDS_US`]
    /// (cumulative, as Prometheus's `le` buckets).
    pub at_most: [u64; LATENCY_BOUNDS_US.len()],
    pub count: u64,
    pub sum_us: u64,
}

impl LatencyHistogram {
    /// Records `keys` answered together after `elapsed`.
    pub fn record(&self, elapsed: Duration, keys: usize) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BOUNDS_US.partition_point(|&bound| bound < us);
        let keys = keys as u64;
        self.buckets[bucket].fetch_add(keys, Ordering::Relaxed);
        self.sum_us
            .fetch_add(us.saturating_mul(keys), Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LatencySnapshot {
        let mut snapshot = LatencySnapshot {
            sum_us: self.sum_us.load(Ordering::Relaxed),
            ..Default::default()
        };
        for (i, bucket) in self.buckets.iter().enumerate() {
            snapshot.count += bucket.load(Ordering::Relaxed);
            if let Some(at_most) = snapshot.at_most.get_mut(i) {
                *at_most = snapshot.count;
            }
        }
        snapshot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_land_in_the_first_bucket_that_holds_them() {
        let histogram = LatencyHistogram::default();
        histogram.record(Duration::from_micros(100), 1); // on a bound: that bucket
        histogram.record(Duration::from_micros(101), 2);
        histogram.record(Duration::from_millis(3), 1);
        histogram.record(Duration::from_secs(60), 1); // beyond every bound
        let s = histogram.snapshot();
        assert_eq!(s.count, 5);
        assert_eq!(s.sum_us, 100 + 2 * 101 + 3_000 + 60_000_000);
        assert_eq!(s.at_most[0], 1); // <= 100 µs
        assert_eq!(s.at_most[1], 3); // <= 250 µs
        assert_eq!(s.at_most[4], 3); // <= 2.5 ms
        assert_eq!(s.at_most[5], 4); // <= 5 ms
        assert_eq!(s.at_most[LATENCY_BOUNDS_US.len() - 1], 4); // <= 10 s
    }
}
