//! Coordination logic, without IO: consistency levels, the hybrid logical
//! clock that stamps writes, the per-request rounds that count acks and
//! votes, anti-entropy repair's range hashes and cell exchange, and the
//! counters and latency histograms. The node (`node/coordinate.rs`) does the sending.

mod consistency;
mod hlc;
mod latency;
mod metrics;
pub mod repair;
mod rounds;

pub use consistency::ConsistencyLevel;
pub use hlc::HybridClock;
pub use latency::{LATENCY_BOUNDS_US, LatencyHistogram, LatencySnapshot};
pub use metrics::{Metrics, MetricsSnapshot};
pub use rounds::{Outcome, ReadRound, Round, WriteRound};
