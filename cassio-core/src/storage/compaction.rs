//! Size-tiered compaction: tables of similar size are grouped into buckets;
//! a bucket with `compaction_min_tables` or more is merged into one table.
//! A major compaction merges every table; a cleanup is a major compaction
//! that also drops the keys its caller no longer keeps.
//!
//! Merging keeps one cell per key (the last-write-wins winner). Expired values
//! become tombstones. A tombstone is dropped only when `gc_grace` has passed
//! since its deletion time *and* nothing outside the compaction (another
//! table or a memtable) may hold an older cell for its key: dropping it then
//! would resurrect that cell.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::cell::{Cell, CellValue};
use super::engine::Shared;
use super::memtable::Memtable;
use super::merge::{MergeIter, Source};
use super::table::{Table, TableIter};
use super::table_writer::TableWriter;
use crate::error::{Error, Result};

/// Tables below this size share one bucket whatever their ratio, so a stream
/// of small flushes does not leave many one-table buckets.
const SMALL_TABLE_BYTES: u64 = 4 * 1024 * 1024;
/// A table joins a bucket when its size is within this factor of the
/// bucket's average.
const BUCKET_LOW: f64 = 0.5;
const BUCKET_HIGH: f64 = 1.5;

/// Picks the tables of one bucket to merge, or nothing. Among eligible
/// buckets the one of smallest tables goes first: it is cheapest and cuts the
/// table count (and so read cost) the most per byte written.
pub(crate) fn pick_size_tiered(
    tables: &[Arc<Table>],
    min_tables: usize,
    max_tables: usize,
) -> Vec<Arc<Table>> {
    let mut by_size: Vec<_> = tables.to_vec();
    by_size.sort_by_key(|t| t.file_bytes);
    let mut buckets: Vec<Vec<Arc<Table>>> = Vec::new();
    for table in by_size {
        let fits = buckets.last().is_some_and(|bucket| {
            let avg = bucket.iter().map(|t| t.file_bytes).sum::<u64>() as f64 / bucket.len() as f64;
            let size = table.file_bytes as f64;
            (table.file_bytes <= SMALL_TABLE_BYTES && avg <= SMALL_TABLE_BYTES as f64)
                || (size >= avg * BUCKET_LOW && size <= avg * BUCKET_HIGH)
        });
        match buckets.last_mut() {
            Some(bucket) if fits => bucket.push(table),
            _ => buckets.push(vec![table]),
        }
    }
    buckets
        .into_iter()
        .find(|b| b.len() >= min_tables)
        .map(|mut b| {
            b.truncate(max_tables);
            b
        })
        .unwrap_or_default()
}

/// Says whether a compaction keeps a key.
type KeepKey<'a> = &'a dyn Fn(&[u8]) -> bool;

impl Shared {
    /// Runs one compaction: the size-tiered pick, or every table when
    /// `everything` (a major compaction). Returns false when there was nothing
    /// to do.
    pub(crate) fn compact_once(&self, everything: bool) -> Result<bool> {
        Ok(self.run_compaction(everything, None)?.is_some())
    }

    /// Merges every table into one, leaving out each key `keep` refuses.
    /// Returns how many keys it left out.
    pub(crate) fn compact_keeping(&self, keep: KeepKey) -> Result<u64> {
        Ok(self.run_compaction(true, Some(keep))?.unwrap_or(0))
    }

    /// One compaction (see [`Shared::compact_once`]), leaving out the keys
    /// `keep` refuses, if given. Returns the keys left out that way, or
    /// `None` when there was nothing to do.
    fn run_compaction(&self, everything: bool, keep: Option<KeepKey>) -> Result<Option<u64>> {
        let _one_compaction_at_a_time = self.compaction_lock.lock();
        let version = self.version.read().clone();
        let inputs = if everything {
            version.tables.clone()
        } else {
            pick_size_tiered(
                &version.tables,
                self.config.compaction_min_tables,
                self.config.compaction_max_tables,
            )
        };
        let single_clean_table =
            inputs.len() == 1 && inputs[0].meta.tombstones == 0 && keep.is_none();
        if inputs.is_empty() || (everything && single_clean_table) {
            return Ok(None);
        }
        let input_ids: Vec<u64> = inputs.iter().map(|t| t.id).collect();
        let others: Vec<Arc<Table>> = version
            .tables
            .iter()
            .filter(|t| !input_ids.contains(&t.id))
            .cloned()
            .collect();
        let memtables: Vec<Arc<Memtable>> = std::iter::once(version.active.clone())
            .chain(version.immutables.iter().cloned())
            .collect();
        let now_ms = (self.clock)();

        let id = self.allocate_table_id();
        let expected: u64 = inputs.iter().map(|t| t.meta.entries).sum();
        let mut writer = TableWriter::create(
            &self.dir,
            id,
            expected as usize,
            self.config.block_bytes,
            self.config.bloom_false_positive_rate,
        )?;
        let sources: Vec<Source> = inputs
            .iter()
            .map(|t| {
                Box::new(TableIter::new(
                    t.clone(),
                    std::ops::Bound::Unbounded,
                    std::ops::Bound::Unbounded,
                )) as Source
            })
            .collect();
        let mut purged = 0u64;
        let mut left_out = 0u64;
        for item in MergeIter::new(sources) {
            let (key, mut cell) = item?;
            if keep.is_some_and(|keep| !keep(&key)) {
                left_out += 1;
                continue;
            }
            if cell.is_expired(now_ms) {
                cell = Cell {
                    timestamp: cell.timestamp,
                    expires_at_ms: cell.expires_at_ms,
                    value: CellValue::Tombstone,
                };
            }
            if cell.is_tombstone()
                && cell
                    .deletion_time_ms()
                    .saturating_add(self.config.gc_grace_ms)
                    <= now_ms
                && !others
                    .iter()
                    .any(|t| t.meta.min_timestamp <= cell.timestamp && t.may_contain(&key))
                && !memtables
                    .iter()
                    .any(|m| m.holds_older(&key, cell.timestamp))
            {
                purged += 1;
                continue;
            }
            writer.add(&key, &cell)?;
        }
        let output = if writer.entries() == 0 {
            drop(writer);
            let tmp = super::table_format::table_path(&self.dir, id).with_extension("sst.tmp");
            std::fs::remove_file(&tmp).map_err(|e| Error::io(&tmp, e))?;
            None
        } else {
            let (path, _) = writer.finish()?;
            Some(Arc::new(Table::open(&path, id)?))
        };
        {
            let mut manifest = self.manifest.lock();
            let mut next = manifest.clone();
            next.tables.retain(|t| !input_ids.contains(t));
            next.tables.extend(output.as_ref().map(|t| t.id));
            next.store(&self.dir)?;
            *manifest = next;
            let mut version = self.version.write();
            *version = Arc::new(version.with_tables(&input_ids, output));
        }
        // Readers holding an older version keep their open file handles, so
        // deleting now is safe on Unix.
        for table in &inputs {
            std::fs::remove_file(table.path()).map_err(|e| Error::io(table.path(), e))?;
        }
        self.counters.compactions.fetch_add(1, Ordering::Relaxed);
        self.counters
            .tombstones_purged
            .fetch_add(purged, Ordering::Relaxed);
        tracing::debug!(
            inputs = inputs.len(),
            purged,
            left_out,
            "compaction finished"
        );
        Ok(Some(left_out))
    }
}
