//! cassio-core: everything a cassio node is.
//!
//! Layers (see ARCHITECTURE.md for the codemap and invariants):
//! - [`storage`]: the LSM engine (commit log, memtable, SSTables, compaction).
//!   Synchronous code on its own threads; it never imports tokio.
//! - [`ring`]: key and vnode vectors, ring order, replica lists.
//! - [`cluster`]: gossip membership and phi-accrual failure detection (no IO).
//! - [`coordinator`]: consistency levels, HLC, vote counting (no IO).
//! - [`proto`]: wire messages and framing; [`net`]: transport seam,
//!   connections and the request server.
//! - `resp`: the Redis-protocol endpoint every node serves.
//! - [`node`]: the above wired on a tokio runtime: `Node::start` → `NodeHandle`.

pub mod cluster;
pub mod coordinator;
pub mod error;
mod http;
pub mod net;
pub mod node;
pub mod proto;
mod resp;
pub mod ring;
pub mod storage;
pub mod types;

pub use node::{Node, NodeConfig, NodeHandle};

pub use error::{Error, Result};
