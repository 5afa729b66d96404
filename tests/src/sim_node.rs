//! Helpers for turmoil simulations of whole nodes: the hosts' names and
//! port, a node's configuration on a simulated host, running it there with
//! the simulation's clock, and a client's request to it.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cassio_core::NodeConfig;
use cassio_core::net::{Connection, Sim};
use cassio_core::node::{NodeEnv, next_generation, run_node_on};
use cassio_core::proto::{Hello, Request, Response, Role};
use cassio_core::storage::{Clock, StorageConfig};

/// The native port of every simulated node.
pub const PORT: u16 = 9000;

/// The host name of simulated node `i`.
pub fn name(i: usize) -> String {
    format!("n{i}")
}

/// Node [`name`]`(i)` on its simulated host (call it there), listening on
/// [`PORT`], joining through `seeds`, its data under `data_dir`: no Redis
/// port, 8 vnodes, and storage work done inline (no background threads,
/// which a simulation cannot schedule).
pub fn config(i: usize, seeds: Vec<SocketAddr>, data_dir: PathBuf) -> NodeConfig {
    NodeConfig {
        name: name(i),
        listen: SocketAddr::new(turmoil::lookup(name(i)), PORT),
        resp: None,
        seeds,
        data_dir: Some(data_dir),
        vnodes: 8,
        storage: StorageConfig {
            background_threads: false,
            ..StorageConfig::default()
        },
        ..NodeConfig::default()
    }
}

/// Runs the node `config` on the simulated host it listens on until the
/// simulation ends (or crashes the host), on the simulation's clock, with
/// `rng_seed` for its random choices.
pub async fn run(config: NodeConfig, rng_seed: u64) -> Result<(), Box<dyn std::error::Error>> {
    let clock: Clock = Arc::new(|| turmoil::since_epoch().unwrap_or_default().as_millis() as u64);
    let env = NodeEnv {
        generation: next_generation(&config.data_dir(), clock())?,
        rng_seed,
        clock,
        client_threads: false,
    };
    let (keep_running, shutdown) = tokio::sync::watch::channel(false);
    let host_ip = config.listen.ip();
    run_node_on(config, Sim { host_ip }, env, shutdown).await?;
    drop(keep_running);
    Ok(())
}

/// Sends `request` as a client on the simulated host `me` to the node at
/// `addr`, over a new connection: its answer, or what failed (connecting
/// within `connect_timeout`, the answer within `answer_timeout`).
pub async fn request(
    me: IpAddr,
    addr: SocketAddr,
    request: Request,
    connect_timeout: Duration,
    answer_timeout: Duration,
) -> cassio_core::Result<Response> {
    let hello = Hello::new("cassio", Role::Client, None);
    let conn =
        Connection::open(&Sim { host_ip: me }, addr, hello, 1 << 20, connect_timeout).await?;
    conn.request(request, answer_timeout).await
}
