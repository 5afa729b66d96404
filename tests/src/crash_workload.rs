//! The deterministic workload of the storage crash test, shared by the child
//! that writes it (`storage-crash-writer`) and the test that checks what
//! survived: op `i` of thread `t` in round `r` is always the same write.

use cassio_core::storage::{StorageConfig, SyncMode};

pub const THREADS: u64 = 4;
pub const KEYS_PER_THREAD: u64 = 150;

/// Small memtables and eager compaction, so kills land during flushes and
/// compactions as well as during plain appends.
pub fn config(sync_mode: SyncMode) -> StorageConfig {
    StorageConfig {
        sync_mode,
        memtable_bytes_max: 8 * 1024,
        block_bytes: 512,
        compaction_min_tables: 2,
        ..StorageConfig::default()
    }
}

/// One write: `value == None` is a delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
    pub timestamp: u64,
}

pub fn op(round: u64, thread: u64, i: u64) -> Op {
    let k = (i * 7 + thread) % KEYS_PER_THREAD;
    let key = format!("r{round:02}/t{thread}/k{k:03}").into_bytes();
    let value = (i % 6 != 5).then(|| format!("r{round}-t{thread}-op{i}|").repeat(6).into_bytes());
    Op {
        key,
        value,
        timestamp: i + 1,
    }
}

/// The sync mode's name on the writer's command line.
pub fn sync_mode_name(mode: SyncMode) -> &'static str {
    match mode {
        SyncMode::Batch => "batch",
        SyncMode::Periodic => "periodic",
    }
}

pub fn parse_sync_mode(name: &str) -> Option<SyncMode> {
    [SyncMode::Batch, SyncMode::Periodic]
        .into_iter()
        .find(|&mode| sync_mode_name(mode) == name)
}
