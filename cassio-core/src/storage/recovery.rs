//! Opening an engine: lock the directory, read the manifest, remove what a
//! crash left half-done (temporary files, tables the manifest never named),
//! open the live tables, replay commit-log segments the tables do not cover
//! and flush them, then start the background workers.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use parking_lot::{Condvar, Mutex, RwLock};

use super::commitlog::{CommitLog, parse_segment_name, replay_segment, segment_path};
use super::config::StorageConfig;
use super::engine::{Clock, Counters, Engine, Shared, Version};
use super::fsutil::sync_dir;
use super::manifest::Manifest;
use super::memtable::Memtable;
use super::table::Table;
use super::table_format::{parse_table_name, table_path};
use super::worker;
use crate::error::{Error, Result};

const LOCK_FILE: &str = "LOCK";

pub(crate) fn open(dir: &Path, config: StorageConfig, clock: Clock) -> Result<Engine> {
    config.validate()?;
    super::fsutil::create_dir(dir)?;
    let dir_lock = lock_dir(dir)?;
    let stored = Manifest::load(dir)?;
    let is_new = stored.is_none();
    let mut manifest = stored.unwrap_or_default();

    let listing = list_dir(dir)?;
    for path in &listing.temporary {
        tracing::info!(file = %path.display(), "removing a temporary file left by an interrupted write");
        std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
    }
    for &id in &listing.tables {
        if !manifest.tables.contains(&id) {
            let path = table_path(dir, id);
            tracing::info!(file = %path.display(), "removing a table no manifest names (interrupted flush or compaction)");
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    let highest_on_disk = listing.tables.iter().max().map_or(0, |id| id + 1);
    manifest.next_table_id = manifest.next_table_id.max(highest_on_disk);

    let tables = manifest
        .tables
        .iter()
        .map(|&id| Table::open(&table_path(dir, id), id).map(Arc::new))
        .collect::<Result<Vec<_>>>()?;

    // Segments below the floor are in tables already; a crash between the
    // manifest update and their deletion leaves them behind.
    let mut segments: Vec<u64> = listing.segments;
    segments.sort_unstable();
    let (obsolete, live): (Vec<u64>, Vec<u64>) = segments
        .into_iter()
        .partition(|&id| id < manifest.log_floor);
    for id in obsolete {
        let path = segment_path(dir, id);
        std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
    }
    let recovered = live.last().map(|&last| Memtable::new(last));
    if let Some(memtable) = &recovered {
        for (i, &id) in live.iter().enumerate() {
            let path = segment_path(dir, id);
            let report = replay_segment(&path, i + 1 == live.len(), |key, cell| {
                memtable.insert(key, cell)
            })?;
            tracing::info!(file = %path.display(), records = report.records, "replayed commit-log segment");
        }
    }
    let active_id = live
        .last()
        .map_or(manifest.log_floor, |last| last + 1)
        .max(manifest.log_floor);
    if is_new {
        manifest.log_floor = active_id;
        manifest.store(dir)?;
    }
    let log = CommitLog::create(dir, active_id)?;
    let active = Arc::new(Memtable::new(active_id));
    let version = Version {
        active: active.clone(),
        immutables: recovered.map(Arc::new).into_iter().collect(),
        tables: Vec::new(),
    }
    .with_tables(&[], None);
    let version = Version { tables, ..version }.with_tables(&[], None);

    let shared = Arc::new(Shared {
        dir: dir.to_path_buf(),
        work: config.background_threads.then(worker::WorkSignals::new),
        config,
        last_sync_ms: AtomicU64::new(clock()),
        clock,
        log,
        active: Mutex::new(active),
        version: RwLock::new(Arc::new(version)),
        manifest: Mutex::new(manifest),
        flush_lock: Mutex::new(()),
        compaction_lock: Mutex::new(()),
        flushed: Condvar::new(),
        flushed_lock: Mutex::new(()),
        closing: AtomicBool::new(false),
        failed: AtomicBool::new(false),
        failure: Mutex::new(None),
        counters: Counters::default(),
        _dir_lock: dir_lock,
    });
    // The replayed memtable becomes a table before the engine serves, so the
    // old segments can go and a second crash replays nothing twice.
    while shared.flush_oldest()? {}
    let workers = worker::start(&shared)?;
    shared.signal_compaction();
    Ok(Engine { shared, workers })
}

fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::DirectoryLocked {
            path: dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
    }
}

#[derive(Default)]
struct Listing {
    tables: Vec<u64>,
    segments: Vec<u64>,
    temporary: Vec<std::path::PathBuf>,
}

fn list_dir(dir: &Path) -> Result<Listing> {
    let mut listing = Listing::default();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".tmp") {
            listing.temporary.push(entry.path());
        } else if let Some(id) = parse_table_name(name) {
            listing.tables.push(id);
        } else if let Some(id) = parse_segment_name(name) {
            listing.segments.push(id);
        }
    }
    if !listing.temporary.is_empty() {
        sync_dir(dir)?;
    }
    Ok(listing)
}
