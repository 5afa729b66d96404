//! cassio-tests: integration tests live in `tests/tests/`; helper binaries
//! they spawn live in `src/bin/`, and workloads both sides must agree on live
//! here.

pub mod crash_workload;
pub mod harness;
pub mod sim_node;
