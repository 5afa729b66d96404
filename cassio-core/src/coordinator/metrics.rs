//! Counters a node reports in its status: requests, failures by kind,
//! hints and read repairs; and, for `/metrics` only, how long reads and
//! writes took, and how often slow or stalled replicas were worked around.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::LatencyHistogram;

#[derive(Debug, Default)]
pub struct Metrics {
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    pub unavailable: AtomicU64,
    pub timeouts: AtomicU64,
    pub invalid_requests: AtomicU64,
    pub hints_stored: AtomicU64,
    pub hints_replayed: AtomicU64,
    pub hints_expired: AtomicU64,
    pub hints_dropped: AtomicU64,
    pub read_repairs: AtomicU64,
    /// Anti-entropy repairs this node ran to the end, with every live peer.
    pub repairs: AtomicU64,
    /// Per key read as coordinator: from the batch's start to its answer.
    pub read_latency: LatencyHistogram,
    /// Per key written as coordinator: from the batch's start to its answer.
    pub write_latency: LatencyHistogram,
    /// Keys whose read asked its other live replicas too, as the ones asked
    /// had not answered within `read_speculative_retry_ms` (`/metrics` only).
    pub speculative_retries: AtomicU64,
    /// Replica requests not sent because the replica had stopped answering
    /// (a stalled peer): the write was hinted, the read asked another
    /// replica (`/metrics` only).
    pub stalled_replica_requests: AtomicU64,
}

/// A copy of [`Metrics`] for the wire.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    pub reads: u64,
    pub writes: u64,
    pub unavailable: u64,
    pub timeouts: u64,
    pub invalid_requests: u64,
    pub hints_stored: u64,
    pub hints_replayed: u64,
    pub hints_expired: u64,
    pub hints_dropped: u64,
    pub read_repairs: u64,
    pub repairs: u64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let get = Self::get;
        MetricsSnapshot {
            reads: get(&self.reads),
            writes: get(&self.writes),
            unavailable: get(&self.unavailable),
            timeouts: get(&self.timeouts),
            invalid_requests: get(&self.invalid_requests),
            hints_stored: get(&self.hints_stored),
            hints_replayed: get(&self.hints_replayed),
            hints_expired: get(&self.hints_expired),
            hints_dropped: get(&self.hints_dropped),
            read_repairs: get(&self.read_repairs),
            repairs: get(&self.repairs),
        }
    }
}
