//! cassio-core: everything a cassio node is.
//!
//! Layers (see ARCHITECTURE.md for the codemap and invariants):
//! - [`storage`]: the LSM engine (commit log, memtable, SSTables, compaction).
//!   Synchronous code on its own threads; it never imports tokio.
//! - [`ring`]: key and vnode vectors, ring order, replica lists.
//! - [`cluster`]: gossip membership and phi-accrual failure detection (no IO).

pub mod cluster;
pub mod error;
pub mod ring;
pub mod storage;
pub mod types;

pub use error::{Error, Result};
