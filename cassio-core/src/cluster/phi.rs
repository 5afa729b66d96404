//! Phi-accrual failure detection (Hayashibara et al.), as Cassandra uses it:
//! for each endpoint keep the intervals between heartbeat arrivals and report
//! phi = -log10(P(no heartbeat for this long)), approximating the intervals as
//! exponentially distributed, so phi = (elapsed / mean interval) / ln(10).
//! An endpoint is convicted (DOWN) once phi exceeds the threshold (8: after
//! about 18 mean intervals of silence). No clock is read: callers pass `now_ms`.

use std::collections::VecDeque;

/// How many recent intervals the mean is taken over.
const WINDOW_INTERVALS_MAX: usize = 1000;

#[derive(Clone, Debug)]
pub struct ArrivalWindow {
    last_arrival_ms: Option<u64>,
    intervals_ms: VecDeque<u64>,
    sum_ms: u64,
    /// Assumed interval before any is observed, and the cap on any one
    /// interval (a long pause, such as a restart, must not stretch the mean).
    expected_interval_ms: u64,
}

impl ArrivalWindow {
    pub fn new(expected_interval_ms: u64) -> Self {
        ArrivalWindow {
            last_arrival_ms: None,
            intervals_ms: VecDeque::new(),
            sum_ms: 0,
            expected_interval_ms: expected_interval_ms.max(1),
        }
    }

    /// Records a heartbeat arrival at `now_ms`.
    pub fn heartbeat(&mut self, now_ms: u64) {
        let interval = match self.last_arrival_ms {
            Some(last) => now_ms.saturating_sub(last),
            None => self.expected_interval_ms,
        };
        self.push(interval.clamp(1, self.expected_interval_ms * 4));
        self.last_arrival_ms = Some(now_ms);
    }

    fn push(&mut self, interval_ms: u64) {
        if self.intervals_ms.len() == WINDOW_INTERVALS_MAX
            && let Some(old) = self.intervals_ms.pop_front()
        {
            self.sum_ms -= old;
        }
        self.intervals_ms.push_back(interval_ms);
        self.sum_ms += interval_ms;
    }

    /// Mean of the recent intervals between heartbeats.
    pub fn mean_interval_ms(&self) -> f64 {
        self.sum_ms as f64 / self.intervals_ms.len().max(1) as f64
    }

    /// Moves the last arrival `paused_ms` later, never past `now_ms` (nor back):
    /// silence while this node itself was not running is not the peer's.
    pub fn forgive(&mut self, paused_ms: u64, now_ms: u64) {
        if let Some(last) = &mut self.last_arrival_ms {
            *last = last.saturating_add(paused_ms).min(now_ms).max(*last);
        }
    }

    /// Suspicion at `now_ms`; 0 before the first heartbeat.
    pub fn phi(&self, now_ms: u64) -> f64 {
        let Some(last) = self.last_arrival_ms else {
            return 0.0;
        };
        let mean = self.mean_interval_ms();
        let elapsed = now_ms.saturating_sub(last) as f64;
        elapsed / mean / std::f64::consts::LN_10
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_heartbeats_keep_phi_low_and_silence_raises_it() {
        let mut w = ArrivalWindow::new(1000);
        for t in 0..20 {
            w.heartbeat(t * 1000);
        }
        let last = 19_000;
        assert!(w.phi(last + 1000) < 1.0);
        // Threshold 8 is crossed after about 8 * ln(10) ≈ 18.4 intervals.
        assert!(w.phi(last + 18_000) < 8.0);
        assert!(w.phi(last + 19_000) > 8.0);
    }

    #[test]
    fn a_forgiven_pause_is_not_silence_but_later_silence_is() {
        let mut w = ArrivalWindow::new(1000);
        for t in 0..20 {
            w.heartbeat(t * 1000);
        }
        let now = 19_000 + 30_000;
        assert!(w.phi(now) > 8.0, "30 s of silence convicts");
        w.forgive(29_000, now);
        assert!(w.phi(now) < 1.0, "all but one interval of it forgiven");
        assert!(
            w.phi(now + 19_000) > 8.0,
            "silence after the pause still convicts"
        );
        w.forgive(1_000_000, now);
        assert!(w.phi(now) < f64::EPSILON, "never past now");
    }

    #[test]
    fn a_long_pause_does_not_stretch_the_mean() {
        let mut w = ArrivalWindow::new(100);
        w.heartbeat(0);
        w.heartbeat(100);
        w.heartbeat(1_000_000); // back after a long partition
        // The pause counts as at most 4 expected intervals: mean (100 + 100 +
        // 400) / 3 = 200 ms, so silence is convicted after ~3.7 s, not hours.
        assert!(w.phi(1_000_000 + 3_500) < 8.0);
        assert!(w.phi(1_000_000 + 4_000) > 8.0);
    }
}
