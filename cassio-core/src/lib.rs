//! cassio-core: everything a cassio node is.
//!
//! Layers (see ARCHITECTURE.md for the codemap and invariants):
//! - [`storage`]: the LSM engine (commit log, memtable, SSTables, compaction).
//!   Synchronous code on its own threads; it never imports tokio.
//!
//! The ring, wire protocol, membership and coordinator layers arrive with
//! their issues; until then this crate is the storage engine.

pub mod error;
pub mod storage;

pub use error::{Error, Result};
