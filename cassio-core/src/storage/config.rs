//! Storage configuration: one serde struct with defaults, a doc line per
//! field, and `validate()` that says in a sentence what is wrong.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The longest key any cassio component accepts.
pub const KEY_BYTES_MAX: usize = 64 * 1024;

/// When the commit log reaches the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// A write is acknowledged only once its record is fsynced: `write`
    /// returns then, and `write_batch_unsynced` hands back what to wait for
    /// (`Engine::when_synced`). Concurrent writers share one fsync (group
    /// commit).
    Batch,
    /// Records are written to the OS at once and fsynced every
    /// `sync_period_ms`; a machine crash may lose that window.
    Periodic,
}

/// How the engine stores data. Every size bound is named with its unit last.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Commit-log durability mode.
    pub sync_mode: SyncMode,
    /// In `periodic` mode, the longest a record waits for its fsync.
    pub sync_period_ms: u64,
    /// A memtable this large becomes immutable and is flushed to an SSTable.
    pub memtable_bytes_max: usize,
    /// Immutable memtables waiting for flush; writers wait (not fail) beyond it.
    pub immutable_memtables_max: usize,
    /// Target size of an SSTable data block before compression-free encoding.
    pub block_bytes: usize,
    /// Bloom filter false-positive rate per SSTable.
    pub bloom_false_positive_rate: f64,
    /// Size-tiered compaction merges a bucket once it holds this many tables.
    pub compaction_min_tables: usize,
    /// The most tables one compaction merges.
    pub compaction_max_tables: usize,
    /// How long tombstones (and expired values) are kept before compaction may
    /// drop them, so a replica that was down cannot resurrect deleted data.
    pub gc_grace_ms: u64,
    /// Largest value accepted; larger writes get `ValueTooLarge`.
    pub value_bytes_max: usize,
    /// Flush and compaction on background threads (true) or inline in the
    /// writing thread (false: deterministic, for simulation tests).
    pub background_threads: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            sync_mode: SyncMode::Periodic,
            sync_period_ms: 1000,
            memtable_bytes_max: 64 * 1024 * 1024,
            immutable_memtables_max: 4,
            block_bytes: 4096,
            bloom_false_positive_rate: 0.01,
            compaction_min_tables: 4,
            compaction_max_tables: 32,
            gc_grace_ms: 10 * 24 * 60 * 60 * 1000,
            value_bytes_max: 16 * 1024 * 1024,
            background_threads: true,
        }
    }
}

impl StorageConfig {
    /// Rejects settings that cannot work, naming the setting and the value.
    pub fn validate(&self) -> Result<()> {
        let fail = |msg: String| Err(Error::InvalidConfig(msg));
        if self.sync_mode == SyncMode::Periodic && self.sync_period_ms == 0 {
            return fail(
                "storage.sync_period_ms must be at least 1 in periodic mode, got 0".into(),
            );
        }
        if self.memtable_bytes_max < 4096 {
            return fail(format!(
                "storage.memtable_bytes_max must be at least 4096, got {}",
                self.memtable_bytes_max
            ));
        }
        if self.immutable_memtables_max == 0 {
            return fail("storage.immutable_memtables_max must be at least 1, got 0".into());
        }
        if !(64..=1024 * 1024).contains(&self.block_bytes) {
            return fail(format!(
                "storage.block_bytes must be between 64 and 1048576, got {}",
                self.block_bytes
            ));
        }
        if !(self.bloom_false_positive_rate > 0.0 && self.bloom_false_positive_rate < 1.0) {
            return fail(format!(
                "storage.bloom_false_positive_rate must be between 0 and 1 exclusive, got {}",
                self.bloom_false_positive_rate
            ));
        }
        if self.compaction_min_tables < 2 {
            return fail(format!(
                "storage.compaction_min_tables must be at least 2, got {}",
                self.compaction_min_tables
            ));
        }
        if self.compaction_max_tables < self.compaction_min_tables {
            return fail(format!(
                "storage.compaction_max_tables ({}) must be at least compaction_min_tables ({})",
                self.compaction_max_tables, self.compaction_min_tables
            ));
        }
        if self.value_bytes_max == 0 || self.value_bytes_max > u32::MAX as usize {
            return fail(format!(
                "storage.value_bytes_max must be between 1 and {}, got {}",
                u32::MAX,
                self.value_bytes_max
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        StorageConfig::default().validate().unwrap();
    }

    #[test]
    fn nonsense_is_rejected_with_the_setting_named() {
        let config = StorageConfig {
            compaction_min_tables: 1,
            ..StorageConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("compaction_min_tables"), "{err}");
        assert!(err.contains("got 1"), "{err}");
    }
}
