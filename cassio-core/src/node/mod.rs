//! A node: storage, placement, membership and the native protocol wired
//! together on a tokio runtime. [`Node::start`] runs one on its own thread
//! and runtime and returns a [`NodeHandle`]; a process may run many (tests
//! and `cassio up` do).

mod background;
mod cleanup;
mod config;
mod coordinate;
mod durable;
mod handover;
mod hints;
mod identity;
mod join;
mod leave;
mod open_files;
mod peers;
mod peers_file;
mod repair;
mod repair_schedule;
mod replay;
mod runtime;
mod scan;
pub(crate) mod shared;
pub(crate) mod workers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::watch;

pub use config::NodeConfig;
pub(crate) use coordinate::CellRead;
pub use open_files::{open_files_shortfall, raise_open_files_limit};
pub use runtime::{NodeEnv, next_generation};
pub use scan::SCAN_LIMIT_MAX;

use crate::cluster::Member;
use crate::error::{Error, Result};
use crate::net::Tcp;
use crate::proto::ClusterStatus;
use crate::types::NodeId;
use shared::NodeShared;

/// Runs a node on the caller's runtime and transport until `shutdown` turns
/// true: how simulation tests run many nodes on a simulated network.
pub async fn run_node_on<T: crate::net::Transport>(
    config: NodeConfig,
    transport: T,
    env: NodeEnv,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    runtime::run_node(config, transport, env, shutdown, |_| {}).await
}

/// Namespace for starting nodes.
pub struct Node;

impl Node {
    /// Starts a node on its own thread with its own runtime and returns once
    /// it listens (or failed to start).
    pub fn start(config: NodeConfig) -> Result<NodeHandle> {
        config.validate()?;
        let data_dir = config.data_dir();
        crate::storage::create_dir(&data_dir)?;
        let clock = crate::storage::system_clock();
        let generation = next_generation(&data_dir, clock())?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let name = config.name.clone();
        let thread = std::thread::Builder::new()
            .name(format!("cassio-node-{name}"))
            .spawn(move || -> Result<()> {
                let runtime = workers::node_runtime().map_err(|e| Error::io("tokio runtime", e))?;
                let failed_tx = ready_tx.clone();
                let env = NodeEnv {
                    generation,
                    rng_seed: rand::random(),
                    clock,
                    client_threads: true,
                };
                let outcome = runtime.block_on(runtime::run_node(
                    config,
                    Tcp,
                    env,
                    shutdown_rx,
                    move |shared| {
                        let _ = ready_tx.send(Ok(shared));
                    },
                ));
                if let Err(e) = &outcome {
                    let _ = failed_tx.send(Err(e.to_string()));
                }
                outcome
            })
            .map_err(|e| Error::io("node thread", e))?;
        match ready_rx.recv() {
            Ok(Ok(shared)) => Ok(NodeHandle {
                shared,
                shutdown: shutdown_tx,
                thread: Some(thread),
            }),
            Ok(Err(_)) | Err(_) => match thread.join() {
                Ok(Err(e)) => Err(e),
                _ => Err(Error::InvalidConfig(format!(
                    "node {name} stopped while starting"
                ))),
            },
        }
    }
}

/// A running node. Dropping it stops the node too; `shutdown` reports errors.
pub struct NodeHandle {
    shared: Arc<NodeShared<Tcp>>,
    shutdown: watch::Sender<bool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl NodeHandle {
    pub fn node_id(&self) -> &NodeId {
        &self.shared.node_id
    }

    /// The native-protocol address the node listens on.
    pub fn native_addr(&self) -> SocketAddr {
        self.shared.native_addr
    }

    /// The Redis-protocol address, if the node serves one.
    pub fn resp_addr(&self) -> Option<SocketAddr> {
        *self.shared.resp_addr.lock()
    }

    /// The HTTP address (metrics and probes), if the node serves one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        *self.shared.http_addr.lock()
    }

    /// This node's current view of the membership.
    pub fn members(&self) -> Vec<Member> {
        self.shared.members()
    }

    /// What `cassio status` shows, as answered by this node.
    pub fn cluster_status(&self) -> ClusterStatus {
        self.shared.cluster_status()
    }

    /// Turns true once the node has left the cluster (`Decommission`); it
    /// then stops on its own.
    pub fn left(&self) -> watch::Receiver<bool> {
        self.shared.left.subscribe()
    }

    /// Stops serving and gossiping, flushes storage and waits for the node's
    /// thread to end.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> Result<()> {
        let _ = self.shutdown.send(true);
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(Error::InvalidConfig("node thread panicked".into()))),
            None => Ok(()),
        }
    }
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::error!(error = %e, "node stopped with an error");
        }
    }
}
