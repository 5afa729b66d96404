//! Flush: writes the oldest immutable memtable to an SSTable, records it in
//! the manifest together with the commit-log floor it now covers, publishes
//! the new version and deletes the commit-log segments it made obsolete.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::commitlog::parse_segment_name;
use super::engine::Shared;
use super::table::Table;
use super::table_writer::TableWriter;
use crate::error::{Error, Result};

impl Shared {
    /// Takes the next table id (persisted with the next manifest; ids of files
    /// a crash left behind are skipped at open).
    pub(crate) fn allocate_table_id(&self) -> u64 {
        let mut manifest = self.manifest.lock();
        let id = manifest.next_table_id;
        manifest.next_table_id += 1;
        id
    }

    /// Flushes the oldest immutable memtable. Returns false when there was none.
    pub(crate) fn flush_oldest(&self) -> Result<bool> {
        let _one_flush_at_a_time = self.flush_lock.lock();
        let Some(memtable) = self.version.read().immutables.first().cloned() else {
            return Ok(false);
        };
        let table = if memtable.is_empty() {
            None
        } else {
            let id = self.allocate_table_id();
            let mut writer = TableWriter::create(
                &self.dir,
                id,
                memtable.len(),
                self.config.block_bytes,
                self.config.bloom_false_positive_rate,
            )?;
            memtable.for_each_entry(|key, cell| writer.add(key, cell))?;
            let (path, _) = writer.finish()?;
            Some(Arc::new(Table::open(&path, id)?))
        };
        let log_floor = memtable.id + 1;
        {
            let mut manifest = self.manifest.lock();
            let mut next = manifest.clone();
            next.tables.extend(table.as_ref().map(|t| t.id));
            next.log_floor = log_floor;
            next.store(&self.dir)?;
            *manifest = next;
            let mut version = self.version.write();
            let mut next = version.with_tables(&[], table);
            next.immutables.retain(|m| !Arc::ptr_eq(m, &memtable));
            *version = Arc::new(next);
        }
        self.delete_segments_below(log_floor)?;
        self.counters.flushes.fetch_add(1, Ordering::Relaxed);
        let _wake = self.flushed_lock.lock();
        self.flushed.notify_all();
        Ok(true)
    }

    /// Deletes commit-log segments whose records are all in live tables.
    pub(crate) fn delete_segments_below(&self, log_floor: u64) -> Result<()> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&self.dir, e))?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(parse_segment_name) else {
                continue;
            };
            if id < log_floor {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            }
        }
        Ok(())
    }
}
