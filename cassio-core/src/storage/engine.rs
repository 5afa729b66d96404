//! The engine: the public API over the commit log, memtables and SSTables,
//! and the shared state that flush, compaction and recovery work on.
//!
//! Concurrency: one short lock (`active`) orders appends to the commit log and
//! inserts into the active memtable; readers take an immutable `Version`
//! snapshot (memtables + tables) and never block writers. Flushes run one at a
//! time in memtable order; compactions one at a time; both publish a new
//! manifest and then a new version.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};

use super::cell::{Cell, newest};
use super::commitlog::{CommitLog, encode_record};
use super::config::{KEY_BYTES_MAX, StorageConfig, SyncMode};
use super::manifest::Manifest;
use super::memtable::{Memtable, MemtableIter};
use super::merge::{MergeIter, Source};
use super::table::{Table, TableIter};
use crate::error::{Error, Result};

/// A batch's commit-log records, encoded one after another, and where each
/// ends.
#[derive(Default)]
struct Records {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

thread_local! {
    /// Each writing thread's scratch space for commit-log records.
    static RECORDS: std::cell::RefCell<Records> = std::cell::RefCell::default();
}

/// A record scratch buffer larger than this is freed after use.
const RECORD_SCRATCH_BYTES_MAX: usize = 1024 * 1024;

/// A commit-log sequence number: the position a write must be fsynced up to
/// before it is durable ([`Engine::write_batch_unsynced`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a write in batch sync mode is durable only once synced up to its Lsn"]
pub struct Lsn(pub(crate) u64);

/// Told whether a write reached the disk ([`Engine::when_synced`]).
pub type SyncDone = Box<dyn FnOnce(Result<()>) + Send>;

/// Wall-clock milliseconds since the Unix epoch. Passed in so tests and
/// simulations control expiry and `gc_grace`.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    })
}

/// What a reader sees: the memtables and tables at one moment.
#[derive(Clone)]
pub(crate) struct Version {
    pub(crate) active: Arc<Memtable>,
    /// Oldest first: they are flushed in this order.
    pub(crate) immutables: Vec<Arc<Memtable>>,
    /// Newest data first (by max timestamp), so point reads can stop early.
    pub(crate) tables: Vec<Arc<Table>>,
}

impl Version {
    pub(crate) fn with_tables(&self, removed: &[u64], added: Option<Arc<Table>>) -> Version {
        let mut next = self.clone();
        next.tables.retain(|t| !removed.contains(&t.id));
        next.tables.extend(added);
        next.tables
            .sort_by_key(|t| std::cmp::Reverse(t.meta.max_timestamp));
        next
    }
}

/// The engine's data at one moment (see [`Engine::snapshot`]); holding it
/// keeps the tables it reads from open.
pub struct Snapshot(Arc<Version>);

impl Snapshot {
    /// [`Engine::get_cell`] as of this snapshot.
    pub fn cell(&self, key: &[u8]) -> Result<Option<Cell>> {
        let version = &self.0;
        let mut best = version.active.get(key).map(Arc::unwrap_or_clone);
        for memtable in version.immutables.iter().rev() {
            best = newest(best, memtable.get(key).map(Arc::unwrap_or_clone));
        }
        for table in &version.tables {
            // Tables are ordered by max timestamp, newest first: once the best
            // cell is newer than everything in a table, it is newer than every
            // table after it too.
            if best
                .as_ref()
                .is_some_and(|b| b.timestamp > table.meta.max_timestamp)
            {
                break;
            }
            best = newest(best, table.get(key)?);
        }
        Ok(best)
    }
}

/// Counters reported by [`Engine::stats`].
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) flushes: AtomicU64,
    pub(crate) compactions: AtomicU64,
    pub(crate) tombstones_purged: AtomicU64,
    pub(crate) write_stalls: AtomicU64,
}

/// A snapshot of the engine's shape and activity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StorageStats {
    pub memtable_bytes: usize,
    /// Cells in the active and immutable memtables.
    pub memtable_entries: usize,
    pub immutable_memtables: usize,
    pub sstables: usize,
    pub sstable_bytes: u64,
    /// Entries across tables (a key in several tables counts in each).
    pub sstable_entries: u64,
    pub sstable_tombstones: u64,
    /// Values with a TTL, expired or not, in memtables and tables (counted
    /// as entries are: once per table holding one).
    pub expiring: u64,
    pub flushes: u64,
    pub compactions: u64,
    pub tombstones_purged: u64,
    pub write_stalls: u64,
    /// Commit-log fsyncs made for waiting writers and periodic syncs; in
    /// batch mode, fewer than writes when group commit shares them.
    pub commit_log_syncs: u64,
}

pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) config: StorageConfig,
    pub(crate) clock: Clock,
    pub(crate) log: CommitLog,
    /// The active memtable; holding this lock orders log appends with inserts.
    pub(crate) active: Mutex<Arc<Memtable>>,
    pub(crate) version: RwLock<Arc<Version>>,
    pub(crate) manifest: Mutex<Manifest>,
    pub(crate) flush_lock: Mutex<()>,
    pub(crate) compaction_lock: Mutex<()>,
    /// Signalled after each flush, for writers waiting on a full flush queue.
    pub(crate) flushed: Condvar,
    pub(crate) flushed_lock: Mutex<()>,
    pub(crate) work: Option<super::worker::WorkSignals>,
    pub(crate) closing: AtomicBool,
    pub(crate) failed: AtomicBool,
    pub(crate) failure: Mutex<Option<String>>,
    pub(crate) last_sync_ms: AtomicU64,
    pub(crate) counters: Counters,
    /// Held (locked) for the engine's lifetime so no second engine opens the directory.
    pub(crate) _dir_lock: std::fs::File,
}

/// An LSM storage engine over one directory. Cheap to share: wrap it in an
/// `Arc`; every method takes `&self`.
pub struct Engine {
    pub(crate) shared: Arc<Shared>,
    pub(crate) workers: Vec<JoinHandle<()>>,
}

impl Engine {
    /// Opens (or creates) the engine in `dir`, replaying the commit log.
    pub fn open(dir: impl AsRef<Path>, config: StorageConfig) -> Result<Engine> {
        Self::open_with_clock(dir, config, system_clock())
    }

    /// As [`Engine::open`], with the wall clock supplied by the caller.
    pub fn open_with_clock(
        dir: impl AsRef<Path>,
        config: StorageConfig,
        clock: Clock,
    ) -> Result<Engine> {
        super::recovery::open(dir.as_ref(), config, clock)
    }

    /// Writes `value` for `key` at `timestamp` (microseconds).
    pub fn put(&self, key: &[u8], value: &[u8], timestamp: u64) -> Result<()> {
        self.write(key, Cell::value(value, timestamp))
    }

    /// Writes a tombstone for `key` at `timestamp`: the delete is logged and
    /// shadows every older cell until compaction may purge it after `gc_grace`.
    pub fn delete(&self, key: &[u8], timestamp: u64) -> Result<()> {
        self.write(key, Cell::tombstone(timestamp))
    }

    /// Writes any cell (value with expiry, tombstone). It is kept only if it
    /// wins last-write-wins against what the engine already holds.
    pub fn write(&self, key: &[u8], cell: Cell) -> Result<()> {
        self.write_batch(vec![(key, cell)])
    }

    /// [`Engine::write`] for several cells, under one acquisition of the
    /// write lock. Nothing is written if any cell is invalid; on an IO error
    /// the cells before it may be written. In `batch` sync mode it returns
    /// once the cells' commit-log records are fsynced.
    pub fn write_batch<K: AsRef<[u8]>>(&self, writes: Vec<(K, Cell)>) -> Result<()> {
        match self.write_batch_unsynced(writes)? {
            Some(Lsn(lsn)) => self.shared.log.sync_to(lsn),
            None => Ok(()),
        }
    }

    /// [`Engine::write_batch`] without waiting for the fsync of `batch` sync
    /// mode: the cells are applied (readers see them) and, in that mode, the
    /// returned [`Lsn`] is what must be fsynced before the write may be
    /// acknowledged; pass it to [`Engine::when_synced`]. `None`: nothing to
    /// wait for (`periodic` mode).
    pub fn write_batch_unsynced<K: AsRef<[u8]>>(
        &self,
        writes: Vec<(K, Cell)>,
    ) -> Result<Option<Lsn>> {
        let s = &*self.shared;
        if writes.is_empty() {
            return Ok(None);
        }
        for (key, cell) in &writes {
            validate_write(key.as_ref(), cell, s.config.value_bytes_max)?;
        }
        s.check_writable()?;
        s.wait_for_flush_room()?;
        // Encoded before the lock: only the copy into the log is ordered.
        let (lsn, rotated) = RECORDS.with_borrow_mut(|records| -> Result<(u64, bool)> {
            let Records {
                bytes: record,
                ends,
            } = records;
            record.clear();
            ends.clear();
            for (key, cell) in &writes {
                encode_record(record, key.as_ref(), cell);
                ends.push(record.len());
            }
            let mut active = s.active.lock();
            let (mut lsn, mut rotated, mut start) = (0, false, 0);
            for ((key, cell), &end) in writes.into_iter().zip(ends.iter()) {
                // Record by record: a rotation starts a new log segment, and
                // each cell's record must be in the segment of its memtable.
                lsn = s.log.append_record(&record[start..end])?;
                start = end;
                active.insert(key.as_ref(), cell);
                if active.bytes() >= s.config.memtable_bytes_max {
                    s.rotate(&mut active)?;
                    rotated = true;
                }
            }
            drop(active);
            if record.capacity() > RECORD_SCRATCH_BYTES_MAX {
                // A huge value must not keep its buffer for the thread's life.
                *record = Vec::new();
            }
            if ends.capacity() > RECORD_SCRATCH_BYTES_MAX / 8 {
                *ends = Vec::new();
            }
            Ok((lsn, rotated))
        })?;
        if rotated {
            s.after_rotation()?;
        }
        match s.config.sync_mode {
            SyncMode::Batch => Ok(Some(Lsn(lsn))),
            SyncMode::Periodic => {
                // The records are in the page cache already: a process crash
                // loses nothing, only a machine crash the unsynced period.
                if s.work.is_none() {
                    s.sync_if_due()?;
                }
                Ok(None)
            }
        }
    }

    /// Calls `done` once the commit log is fsynced up to `lsn`, with the
    /// outcome (an error: the log failed and the write is not durable). With
    /// background threads it is called from the engine's sync thread, which
    /// makes one fsync for every write waiting (group commit), so the caller
    /// never blocks on the disk. Without them, or once that thread has
    /// stopped (the engine is closing), it syncs and calls `done` on this
    /// thread. Should the sync thread die, `done` is dropped uncalled.
    pub fn when_synced(&self, lsn: Lsn, done: SyncDone) {
        let s = &*self.shared;
        let unqueued = match &s.work {
            Some(work) => work.sync_queue.push(lsn.0, done),
            None => Some((lsn.0, done)),
        };
        // No sync thread (inline mode), or it has stopped (closing).
        if let Some((lsn, done)) = unqueued {
            done(s.log.sync_to(lsn));
        }
    }

    /// The live value of `key`, or `None` if absent, deleted or expired.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let now_ms = (self.shared.clock)();
        Ok(self
            .get_cell(key)?
            .and_then(|c| c.live_value(now_ms).map(<[u8]>::to_vec)))
    }

    /// The winning cell for `key` as stored, tombstones and expired values
    /// included (what a replica reports to a coordinator).
    pub fn get_cell(&self, key: &[u8]) -> Result<Option<Cell>> {
        self.snapshot().cell(key)
    }

    /// The memtables and tables as they are now, for several point reads
    /// that see one state.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot(self.shared.version.read().clone())
    }

    /// Live (key, value) pairs with keys in `[start, end)` per the bounds, in key order.
    pub fn scan(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Scan {
        Scan {
            cells: self.scan_cells(start, end),
            now_ms: (self.shared.clock)(),
        }
    }

    /// Live (key, value) pairs whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Scan {
        let end = crate::types::prefix_successor(prefix);
        self.scan(
            Bound::Included(prefix),
            end.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
        )
    }

    /// Every key's winning cell in the range, tombstones and expired values
    /// included (for streaming and repair). A range that ends before it
    /// starts holds nothing.
    pub fn scan_cells(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> MergeIter {
        if range_is_empty(start, end) {
            return MergeIter::new(Vec::new());
        }
        let start = start.map(<[u8]>::to_vec);
        let end = end.map(<[u8]>::to_vec);
        let version = self.shared.version.read().clone();
        let mut sources: Vec<Source> = Vec::new();
        for memtable in std::iter::once(&version.active).chain(&version.immutables) {
            sources.push(Box::new(MemtableIter::new(
                memtable.clone(),
                start.clone(),
                end.clone(),
            )));
        }
        for table in &version.tables {
            sources.push(Box::new(TableIter::new(
                table.clone(),
                start.clone(),
                end.clone(),
            )));
        }
        MergeIter::new(sources)
    }

    /// Makes every acknowledged write durable now (fsyncs the commit log).
    pub fn sync(&self) -> Result<()> {
        self.shared.log.sync_all()
    }

    /// Turns the active memtable into an SSTable and waits until every
    /// memtable is flushed.
    pub fn flush(&self) -> Result<()> {
        self.shared.check_writable()?;
        self.flush_all()
    }

    fn flush_all(&self) -> Result<()> {
        let s = &*self.shared;
        {
            let mut active = s.active.lock();
            if !active.is_empty() {
                s.rotate(&mut active)?;
            }
        }
        while s.flush_oldest()? {}
        s.signal_compaction();
        Ok(())
    }

    /// Compacts every SSTable into one (a major compaction), purging
    /// tombstones older than `gc_grace` where no other data needs them.
    pub fn compact(&self) -> Result<()> {
        self.shared.check_writable()?;
        self.shared.compact_once(true).map(|_| ())
    }

    /// Flushes every memtable, then rewrites every SSTable into one without
    /// the keys `keep` refuses, whatever their cells (a node's cleanup of
    /// the keys it no longer replicates). Writes that arrive meanwhile are
    /// kept. Returns how many keys were dropped.
    pub fn cleanup(&self, keep: &dyn Fn(&[u8]) -> bool) -> Result<u64> {
        self.shared.check_writable()?;
        self.flush_all()?;
        self.shared.compact_keeping(keep)
    }

    pub fn stats(&self) -> StorageStats {
        let s = &*self.shared;
        let version = s.version.read().clone();
        StorageStats {
            memtable_bytes: version.active.bytes(),
            memtable_entries: version.active.len()
                + version.immutables.iter().map(|m| m.len()).sum::<usize>(),
            immutable_memtables: version.immutables.len(),
            sstables: version.tables.len(),
            sstable_bytes: version.tables.iter().map(|t| t.file_bytes).sum(),
            sstable_entries: version.tables.iter().map(|t| t.meta.entries).sum(),
            sstable_tombstones: version.tables.iter().map(|t| t.meta.tombstones).sum(),
            expiring: (version.active.expiring()
                + version
                    .immutables
                    .iter()
                    .map(|m| m.expiring())
                    .sum::<usize>()) as u64
                + version.tables.iter().map(|t| t.meta.expiring).sum::<u64>(),
            flushes: s.counters.flushes.load(Ordering::Relaxed),
            compactions: s.counters.compactions.load(Ordering::Relaxed),
            tombstones_purged: s.counters.tombstones_purged.load(Ordering::Relaxed),
            write_stalls: s.counters.write_stalls.load(Ordering::Relaxed),
            commit_log_syncs: s.log.syncs(),
        }
    }

    /// Whether the engine takes writes: an error once a background flush,
    /// compaction or commit-log sync failed (the node must be restarted),
    /// or once it is closing.
    pub fn health(&self) -> Result<()> {
        self.shared.check_writable()
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Stops background work, fsyncs the log and flushes every memtable, so
    /// the next open has nothing to replay.
    pub fn close(mut self) -> Result<()> {
        self.stop_workers();
        self.shared.log.sync_all()?;
        if self.shared.failed.load(Ordering::Acquire) {
            return Ok(());
        }
        self.flush_all()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop_workers();
        if let Err(e) = self.shared.log.close() {
            tracing::error!(error = %e, "commit log sync at engine drop failed");
        }
    }
}

/// Iterator over live (key, value) pairs; see [`Engine::scan`].
pub struct Scan {
    cells: MergeIter,
    now_ms: u64,
}

impl Iterator for Scan {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        for item in self.cells.by_ref() {
            match item {
                Ok((key, cell)) => {
                    if let Some(value) = cell.live_value(self.now_ms) {
                        return Some(Ok((key, value.to_vec())));
                    }
                }
                Err(e) => return Some(Err(e)),
            }
        }
        None
    }
}

/// Whether no key lies between `start` and `end` (the memtable's B-tree
/// refuses such a range outright).
fn range_is_empty(start: Bound<&[u8]>, end: Bound<&[u8]>) -> bool {
    match (start, end) {
        (Bound::Included(s), Bound::Included(e)) => s > e,
        (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) => {
            s >= e
        }
        _ => false,
    }
}

/// Checks that a key is one the engine can store (reads and writes alike).
pub fn validate_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(Error::KeyTooLarge {
            len: key.len(),
            max: KEY_BYTES_MAX,
        });
    }
    Ok(())
}

/// Checks a write's key and value sizes before anything is logged.
pub fn validate_write(key: &[u8], cell: &Cell, value_bytes_max: usize) -> Result<()> {
    validate_key(key)?;
    if let super::cell::CellValue::Value(v) = &cell.value
        && v.len() > value_bytes_max
    {
        return Err(Error::ValueTooLarge {
            len: v.len(),
            max: value_bytes_max,
        });
    }
    Ok(())
}

impl Shared {
    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.closing.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if self.failed.load(Ordering::Acquire) {
            let reason = self.failure.lock().clone().unwrap_or_default();
            return Err(Error::BackgroundFailed(reason));
        }
        Ok(())
    }

    /// Records a background failure; from now on writes are refused.
    pub(crate) fn fail(&self, what: &str, error: &Error) {
        tracing::error!(%error, "{what} failed; the engine now refuses writes");
        *self.failure.lock() = Some(format!("{what}: {error}"));
        self.failed.store(true, Ordering::Release);
        self.flushed.notify_all();
    }

    /// Writers wait here while the flush queue is full (only with background
    /// threads; inline mode flushes in the writing thread).
    fn wait_for_flush_room(&self) -> Result<()> {
        let max = self.config.immutable_memtables_max;
        if self.work.is_none() || self.version.read().immutables.len() < max {
            return Ok(());
        }
        self.counters.write_stalls.fetch_add(1, Ordering::Relaxed);
        let mut guard = self.flushed_lock.lock();
        while self.version.read().immutables.len() >= max {
            self.check_writable()?;
            self.flushed.wait_for(&mut guard, Duration::from_millis(50));
        }
        Ok(())
    }

    /// Makes the active memtable immutable and starts a new one with its own
    /// commit-log segment. The caller holds the `active` lock.
    pub(crate) fn rotate(&self, active: &mut Arc<Memtable>) -> Result<()> {
        let next_id = active.id + 1;
        self.log.rotate(next_id)?;
        let fresh = Arc::new(Memtable::new(next_id));
        let mut version = self.version.write();
        let mut next = (**version).clone();
        next.immutables.push(active.clone());
        next.active = fresh.clone();
        *version = Arc::new(next);
        *active = fresh;
        Ok(())
    }

    fn after_rotation(&self) -> Result<()> {
        match &self.work {
            Some(work) => {
                work.wake_flusher();
                Ok(())
            }
            None => {
                while self.flush_oldest()? {}
                while self.compact_once(false)? {}
                Ok(())
            }
        }
    }

    fn sync_if_due(&self) -> Result<()> {
        let now = (self.clock)();
        let last = self.last_sync_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= self.config.sync_period_ms {
            self.last_sync_ms.store(now, Ordering::Relaxed);
            self.log.sync_all()?;
        }
        Ok(())
    }

    pub(crate) fn signal_compaction(&self) {
        if let Some(work) = &self.work {
            work.wake_compactor();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::commitlog::{FIRST_WINDOW_BYTES, parse_segment_name};
    use super::*;

    /// Storage that rotates its memtable every 4 KiB and does its flushes
    /// and compactions inline, so a test sees several tables soon.
    fn small_memtables_inline() -> StorageConfig {
        StorageConfig {
            memtable_bytes_max: 4 * 1024,
            background_threads: false,
            ..StorageConfig::default()
        }
    }

    /// A batch is all or nothing when a cell is invalid, keeps last-write-
    /// wins within itself, rotates memtables mid-batch, and survives a
    /// reopen (its records replay from the commit log).
    #[test]
    fn write_batch_validates_first_and_replays() {
        let dir = tempfile::tempdir().unwrap();
        let config = small_memtables_inline();
        let engine = Engine::open(dir.path(), config.clone()).unwrap();
        let too_big = Cell::value(vec![0; config.value_bytes_max + 1], 1);
        let refused = engine.write_batch(vec![(&b"a"[..], Cell::value("x", 1)), (b"b", too_big)]);
        assert!(refused.is_err());
        assert_eq!(
            engine.get(b"a").unwrap(),
            None,
            "nothing of a refused batch"
        );

        let mut batch: Vec<(Vec<u8>, Cell)> = (0..200u64)
            .map(|i| {
                (
                    format!("k{i}").into_bytes(),
                    Cell::value(vec![b'v'; 100], i + 1),
                )
            })
            .collect();
        batch.push((b"k7".to_vec(), Cell::value("older", 1)));
        batch.push((b"k8".to_vec(), Cell::tombstone(1_000)));
        engine.write_batch(batch).unwrap();
        assert_eq!(
            engine.get(b"k7").unwrap(),
            Some(vec![b'v'; 100]),
            "the older cell loses"
        );
        assert_eq!(engine.get(b"k8").unwrap(), None, "the newer tombstone wins");
        drop(engine);

        let engine = Engine::open(dir.path(), config).unwrap();
        for i in (0..200).filter(|i| *i != 8) {
            let key = format!("k{i}");
            assert_eq!(
                engine.get(key.as_bytes()).unwrap(),
                Some(vec![b'v'; 100]),
                "{key}"
            );
        }
        assert_eq!(engine.get(b"k8").unwrap(), None);
    }

    /// A cleanup drops every cell of the keys it is told to drop, flushed
    /// or still in a memtable, tombstones too; it keeps the rest, tombstones
    /// included, and what it dropped stays dropped after a reopen.
    #[test]
    fn cleanup_drops_the_refused_keys_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let config = small_memtables_inline();
        let engine = Engine::open(dir.path(), config.clone()).unwrap();
        for i in 0..300u64 {
            engine
                .put(format!("k{i}").as_bytes(), b"value", i + 1)
                .unwrap();
        }
        // Deleted now, so within gc_grace: a major compaction keeps k10's.
        let now_us = system_clock()() * 1000;
        engine.delete(b"k10", now_us).unwrap();
        engine.delete(b"k11", now_us).unwrap();
        assert!(engine.stats().sstables > 1, "some keys are in tables");
        assert!(engine.stats().memtable_entries > 0, "some are not");

        let kept = |key: &[u8]| {
            let index: u64 = std::str::from_utf8(&key[1..]).unwrap().parse().unwrap();
            index.is_multiple_of(2)
        };
        assert_eq!(engine.cleanup(&kept).unwrap(), 150);
        let check = |engine: &Engine| {
            for i in 0..300u64 {
                let key = format!("k{i}");
                let cell = engine.get_cell(key.as_bytes()).unwrap();
                match i {
                    10 => assert!(cell.is_some_and(|c| c.is_tombstone()), "{key}"),
                    _ if i.is_multiple_of(2) => assert_eq!(
                        engine.get(key.as_bytes()).unwrap(),
                        Some(b"value".to_vec()),
                        "{key}"
                    ),
                    _ => assert_eq!(cell, None, "{key}"),
                }
            }
        };
        check(&engine);
        let stats = engine.stats();
        assert_eq!((stats.sstables, stats.sstable_entries), (1, 150));
        drop(engine);
        check(&Engine::open(dir.path(), config).unwrap());
    }

    /// Values with a TTL are counted in the memtable, then in the table a
    /// flush writes (its meta block), which a reopen reads back.
    #[test]
    fn values_with_a_ttl_are_counted_through_flushes_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), small_memtables_inline()).unwrap();
        let far_ms = system_clock()() + 3_600_000;
        for i in 0..5u64 {
            let cell = Cell {
                expires_at_ms: (i < 3).then_some(far_ms),
                ..Cell::value("v", i + 1)
            };
            engine.write(format!("k{i}").as_bytes(), cell).unwrap();
        }
        assert_eq!(engine.stats().expiring, 3);
        engine.flush().unwrap();
        let stats = engine.stats();
        assert_eq!((stats.memtable_entries, stats.expiring), (0, 3));
        engine.close().unwrap();
        let engine = Engine::open(dir.path(), small_memtables_inline()).unwrap();
        assert_eq!(engine.stats().expiring, 3);
    }

    #[test]
    fn ranges_that_end_before_they_start_hold_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), StorageConfig::default()).unwrap();
        engine.put(b"a", b"1", 1).unwrap();
        engine.put(b"b", b"2", 1).unwrap();
        let count = |start, end| engine.scan_cells(start, end).count();
        assert_eq!(count(Bound::Included(b"b"), Bound::Excluded(b"a")), 0);
        assert_eq!(count(Bound::Excluded(b"a"), Bound::Excluded(b"a")), 0);
        assert_eq!(count(Bound::Included(b"a"), Bound::Excluded(b"a")), 0);
        assert_eq!(count(Bound::Included(b"a"), Bound::Included(b"a")), 1);
        assert_eq!(count(Bound::Excluded(b"a"), Bound::Included(b"b")), 1);
        assert_eq!(count(Bound::Unbounded, Bound::Unbounded), 2);
    }

    /// A commit-log failure in batch sync mode: the write that hit it is
    /// not acknowledged, every later write is refused with the cause, reads
    /// go on, and a reopen finds every write acknowledged before.
    #[test]
    fn a_commit_log_failure_refuses_later_writes_and_loses_no_acknowledged_one() {
        let dir = tempfile::tempdir().unwrap();
        let config = StorageConfig {
            sync_mode: SyncMode::Batch,
            background_threads: false,
            ..StorageConfig::default()
        };
        let engine = Engine::open(dir.path(), config.clone()).unwrap();
        for i in 0..20u64 {
            engine
                .write(format!("k{i}").as_bytes(), Cell::value("v", i + 1))
                .unwrap();
        }
        engine.shared.log.break_file_for_test(false);
        let failed = engine.write(b"k-failed", Cell::value("v", 100));
        assert!(matches!(failed, Err(Error::Io { .. })), "got {failed:?}");
        for attempt in 0..3u64 {
            let refused = engine.write(b"k-later", Cell::value("v", 101 + attempt));
            assert!(
                matches!(refused, Err(Error::CommitLogFailed { .. })),
                "got {refused:?}"
            );
        }
        assert_eq!(engine.get(b"k7").unwrap(), Some(b"v".to_vec()));
        assert!(engine.close().is_err(), "close reports the failed log");

        let reopened = Engine::open(dir.path(), config).unwrap();
        for i in 0..20u64 {
            assert_eq!(
                reopened.get(format!("k{i}").as_bytes()).unwrap(),
                Some(b"v".to_vec()),
                "acknowledged write k{i}"
            );
        }
        assert_eq!(reopened.get(b"k-later").unwrap(), None);
    }

    /// Batch mode without blocking the writer: `write_batch_unsynced` hands
    /// back the position to sync, and the engine's sync thread (not the
    /// writer) reports each write durable, sharing fsyncs among the writes
    /// waiting. Every write reported durable is there after a reopen.
    #[test]
    fn the_sync_thread_group_commits_writes_that_do_not_wait() {
        let dir = tempfile::tempdir().unwrap();
        let config = StorageConfig {
            sync_mode: SyncMode::Batch,
            ..StorageConfig::default()
        };
        let engine = Arc::new(Engine::open(dir.path(), config.clone()).unwrap());
        let (outcomes_tx, outcomes) = std::sync::mpsc::channel();
        let writers: Vec<_> = (0..4)
            .map(|writer| {
                let engine = engine.clone();
                let outcomes_tx = outcomes_tx.clone();
                std::thread::spawn(move || {
                    for i in 0..250u64 {
                        let key = format!("w{writer}-{i:03}");
                        let lsn = engine
                            .write_batch_unsynced(vec![(key.clone(), Cell::value("v", i + 1))])
                            .unwrap()
                            .expect("batch mode has an fsync to wait for");
                        let outcomes_tx = outcomes_tx.clone();
                        engine.when_synced(
                            lsn,
                            Box::new(move |outcome| {
                                let thread = std::thread::current().name().map(str::to_string);
                                let _ = outcomes_tx.send((key, thread, outcome));
                            }),
                        );
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        let mut durable = Vec::new();
        for _ in 0..1_000 {
            let (key, thread, outcome) = outcomes
                .recv_timeout(Duration::from_secs(10))
                .expect("every write is reported");
            assert!(outcome.is_ok(), "{key}: {outcome:?}");
            assert_eq!(thread.as_deref(), Some("cassio-sync"), "{key}");
            durable.push(key);
        }
        let syncs = engine.stats().commit_log_syncs;
        assert!(
            (1..1_000).contains(&syncs),
            "1,000 writes waiting took {syncs} fsyncs"
        );
        drop(engine);

        let reopened = Engine::open(dir.path(), config).unwrap();
        for key in &durable {
            assert_eq!(
                reopened.get(key.as_bytes()).unwrap(),
                Some(b"v".to_vec()),
                "{key}"
            );
        }
    }

    /// A write waiting for a group commit whose fsync fails hears the
    /// error, and a later write is refused: neither is reported durable.
    #[test]
    fn a_failed_group_commit_reports_the_error_to_its_writers() {
        let dir = tempfile::tempdir().unwrap();
        let config = StorageConfig {
            sync_mode: SyncMode::Batch,
            ..StorageConfig::default()
        };
        let engine = Engine::open(dir.path(), config).unwrap();
        let wait = |key: &str| {
            let lsn = engine
                .write_batch_unsynced(vec![(key, Cell::value("v", 1))])?
                .expect("batch mode has an fsync to wait for");
            let (done_tx, done) = std::sync::mpsc::channel();
            engine.when_synced(
                lsn,
                Box::new(move |outcome| {
                    let _ = done_tx.send(outcome);
                }),
            );
            done.recv_timeout(Duration::from_secs(10))
                .expect("the write is reported")
        };
        wait("before").unwrap();
        engine.shared.log.break_file_for_test(false);
        let failed = wait("failing");
        assert!(matches!(failed, Err(Error::Io { .. })), "got {failed:?}");
        let refused = wait("after");
        assert!(
            matches!(refused, Err(Error::CommitLogFailed { .. })),
            "got {refused:?}"
        );
    }

    /// One key overwritten again and again still rotates the memtable, so
    /// the commit log does not grow for ever: old segments are deleted
    /// once flushed, and the key reads back as its newest value.
    #[test]
    fn a_hot_key_keeps_the_commit_log_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let config = StorageConfig {
            memtable_bytes_max: 16 * 1024,
            background_threads: false,
            ..StorageConfig::default()
        };
        let engine = Engine::open(dir.path(), config.clone()).unwrap();
        for timestamp in 1..=2_000u64 {
            engine
                .write(b"hot", Cell::value(vec![b'v'; 100], timestamp))
                .unwrap();
        }
        engine.sync().unwrap();
        let log_bytes: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| parse_segment_name(&e.file_name().to_string_lossy()).is_some())
            .map(|e| e.metadata().unwrap().len())
            .sum();
        // 2,000 records of ~130 bytes were written; at most the live
        // segment (a memtable's worth, in its preallocated first window)
        // and one rotated but not yet flushed may remain.
        assert!(
            log_bytes < (2 * config.memtable_bytes_max + FIRST_WINDOW_BYTES) as u64,
            "commit log holds {log_bytes} bytes"
        );
        assert_eq!(engine.get(b"hot").unwrap(), Some(vec![b'v'; 100]));
    }
}
