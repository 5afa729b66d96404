//! The storage engine: a log-structured merge tree on one directory.
//!
//! A write is appended to the [commit log](commitlog) and inserted into the
//! [memtable](memtable); full memtables are [flushed](flush) to immutable
//! [SSTables](table) ([format](table_format), [writer](table_writer)) that
//! [compaction](compaction) merges size-tiered. Reads consult memtables and
//! then tables whose bloom filter may hold the key; the cell with the newest
//! timestamp wins wherever it came from ([`Cell::lww_cmp`]), because replicas
//! receive writes out of order. Deletes are tombstones, kept `gc_grace`.
//!
//! This module is synchronous: it never imports tokio. Background work runs on
//! its own threads ([worker]) or inline (`background_threads = false`).
//!
//! ```
//! use cassio_core::storage::{Engine, StorageConfig};
//! let dir = tempfile::tempdir()?;
//! let engine = Engine::open(dir.path(), StorageConfig::default())?;
//! engine.put(b"user:1", b"ada", 1)?;
//! engine.delete(b"user:2", 2)?;
//! assert_eq!(engine.get(b"user:1")?, Some(b"ada".to_vec()));
//! let users: Vec<_> = engine.scan_prefix(b"user:").collect::<Result<_, _>>()?;
//! assert_eq!(users, vec![(b"user:1".to_vec(), b"ada".to_vec())]);
//! engine.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cell;
mod codec;
mod commitlog;
mod compaction;
mod config;
mod engine;
mod flush;
mod fsutil;
mod manifest;
mod memkey;
mod memtable;
mod merge;
mod recovery;
mod table;
mod table_format;
mod table_writer;
mod worker;

pub use cell::{Cell, CellValue};
pub use config::{KEY_BYTES_MAX, StorageConfig, SyncMode};
pub use engine::{
    Clock, Engine, Lsn, Scan, Snapshot, StorageStats, SyncDone, system_clock, validate_key,
    validate_write,
};
pub use merge::MergeIter;

pub(crate) use fsutil::{create_dir, write_atomically};
