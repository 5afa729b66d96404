//! cassio-client: talk to a cassio cluster from Rust.
//!
//! The client learns the cluster's members and placement from any seed and
//! sends each request straight to a replica of its key (falling back to any
//! live node), over pooled connections that carry many requests at once.
//! Every request may name its consistency level; failures are typed
//! ([`Error::QuorumNotReached`] says which level and how many answers).
//!
//! ```no_run
//! use cassio_client::{Client, ClientConfig, ConsistencyLevel, KeyRange};
//! # async fn demo() -> Result<(), cassio_client::Error> {
//! let client = Client::connect(&["127.0.0.1:9000".parse().unwrap()], ClientConfig::default()).await?;
//! client.set(b"user:1", b"ada").await?;
//! assert_eq!(client.get(b"user:1").await?, Some(b"ada".to_vec()));
//! client.delete(b"user:1", Some(ConsistencyLevel::All)).await?;
//! // Per request: a handle with its own level and timeout, sharing the pool.
//! let quick = client.with_consistency(ConsistencyLevel::One).with_timeout(std::time::Duration::from_millis(200));
//! let _ = quick.get(b"user:1").await?;
//! // Keys in order, a page at a time.
//! let mut range = Some(KeyRange::prefix(b"user:"));
//! while let Some(rest) = range {
//!     let page = client.scan(&rest, 100, None).await?;
//!     for entry in &page.entries {
//!         println!("{}", String::from_utf8_lossy(&entry.key));
//!     }
//!     range = page.next;
//! }
//! # Ok(()) }
//! ```
//!
//! Not async? Use [`blocking::Client`], the same API on a private runtime.

pub mod blocking;
mod client;
mod error;
mod routing;

pub use cassio_core::coordinator::ConsistencyLevel;
pub use cassio_core::coordinator::repair::RepairSummary;
pub use cassio_core::net::TlsClient;
pub use cassio_core::proto::{CleanupSummary, KeyRange, MoveSummary, ScanEntry};
pub use cassio_core::types::Secret;
pub use client::{Client, ClientConfig, ScanPage, Versioned};
pub use error::Error;
