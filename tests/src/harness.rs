//! Helpers for cluster tests: start in-process nodes on free loopback ports,
//! talk to them over the native protocol, wait for conditions with a bound.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use cassio_core::coordinator::ConsistencyLevel;
use cassio_core::net::{Connection, Tcp};
use cassio_core::proto::{ClusterStatus, Hello, Request, Response, Role};
use cassio_core::{Node, NodeConfig, NodeHandle};

pub const GOSSIP_INTERVAL_MS: u64 = 100;

/// The test key numbered `i`, in key order with the others.
pub fn key(i: u32) -> Vec<u8> {
    format!("key{i:05}").into_bytes()
}

/// Asserts that a write was acknowledged.
pub fn written(response: Response) {
    assert!(
        matches!(response, Response::Written { .. }),
        "write failed: {response:?}"
    );
}

/// A test node's configuration: loopback, free port, fast gossip.
pub fn node_config(name: &str, dir: &Path, seeds: Vec<SocketAddr>) -> NodeConfig {
    NodeConfig {
        name: name.to_string(),
        listen: "127.0.0.1:0".parse().expect("address"),
        resp: None,
        seeds,
        data_dir: Some(dir.join(name)),
        vnodes: 16,
        gossip_interval_ms: GOSSIP_INTERVAL_MS,
        ..NodeConfig::default()
    }
}

/// Starts `n` nodes of a new cluster (`n0` is everyone's seed) and waits
/// until all see all UP.
pub fn start_cluster(n: usize, dir: &Path, tweak: impl Fn(&mut NodeConfig)) -> Vec<NodeHandle> {
    let mut first = node_config("n0", dir, vec![]);
    tweak(&mut first);
    let seed = Node::start(first).expect("start n0");
    let seed_addr = seed.native_addr();
    let mut nodes = vec![seed];
    for i in 1..n {
        let mut config = node_config(&format!("n{i}"), dir, vec![seed_addr]);
        // The nodes of a new cluster: nothing to stream.
        config.bootstrap = false;
        tweak(&mut config);
        nodes.push(Node::start(config).expect("start node"));
    }
    wait_for(Duration::from_secs(10), "all nodes UP everywhere", || {
        nodes.iter().all(|node| {
            let members = node.members();
            members.len() == n && members.iter().all(|m| m.up)
        })
    });
    nodes
}

/// [`start_cluster`] from an async test, off its runtime's threads.
pub async fn start_cluster_async(
    n: usize,
    dir: &Path,
    tweak: impl Fn(&mut NodeConfig) + Send + 'static,
) -> Vec<NodeHandle> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || start_cluster(n, &dir, tweak))
        .await
        .expect("starting the cluster")
}

/// Shuts every node down from an async test, off its runtime's threads.
pub async fn shutdown_async(nodes: Vec<NodeHandle>) {
    tokio::task::spawn_blocking(move || {
        for node in nodes {
            node.shutdown().expect("node shuts down");
        }
    })
    .await
    .expect("shutting the nodes down");
}

/// Waits until every node in `nodes` sees `node` UP at its current address,
/// that is, has learned of its (re)start, not just an old generation.
pub fn wait_until_all_see(nodes: &[&NodeHandle], node: &NodeHandle, limit: Duration) {
    wait_for(
        limit,
        &format!(
            "every node to see {} at {}",
            node.node_id(),
            node.native_addr()
        ),
        || {
            nodes.iter().all(|observer| {
                observer.members().iter().any(|m| {
                    m.node == *node.node_id() && m.native_addr == node.native_addr() && m.up
                })
            })
        },
    );
}

/// Polls `check` every 20 ms until it holds; panics after `limit`.
pub fn wait_for(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// A blocking native-protocol client for tests (one connection, its own runtime).
pub struct TestClient {
    runtime: tokio::runtime::Runtime,
    conn: Connection,
}

impl TestClient {
    pub fn connect(addr: SocketAddr) -> TestClient {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let hello = Hello::new("cassio", Role::Client, None);
        let conn = runtime
            .block_on(Connection::open(
                &Tcp,
                addr,
                hello,
                32 << 20,
                Duration::from_secs(5),
            ))
            .expect("connect");
        TestClient { runtime, conn }
    }

    pub fn request(&self, request: Request) -> Response {
        self.runtime
            .block_on(self.conn.request(request, Duration::from_secs(10)))
            .expect("request")
    }

    pub fn put(&self, key: &[u8], value: &[u8], level: ConsistencyLevel) -> Response {
        self.request(Request::Put {
            key: key.to_vec(),
            value: value.to_vec(),
            level: Some(level),
            timestamp: None,
            ttl_ms: None,
        })
    }

    pub fn delete(&self, key: &[u8], level: ConsistencyLevel) -> Response {
        self.request(Request::Delete {
            key: key.to_vec(),
            level: Some(level),
            timestamp: None,
        })
    }

    pub fn get(&self, key: &[u8], level: ConsistencyLevel) -> Response {
        self.request(Request::Get {
            key: key.to_vec(),
            level: Some(level),
        })
    }

    /// The value a `get` returned; panics on anything but a value answer.
    pub fn value(&self, key: &[u8], level: ConsistencyLevel) -> Option<Vec<u8>> {
        match self.get(key, level) {
            Response::Value { value, .. } => value,
            other => panic!(
                "get {:?} at {level}: {other:?}",
                String::from_utf8_lossy(key)
            ),
        }
    }

    pub fn status(&self) -> ClusterStatus {
        match self.request(Request::ClusterStatus) {
            Response::ClusterStatus(s) => s,
            other => panic!("status: {other:?}"),
        }
    }

    /// Reads one replica's stored cell directly (as a peer would).
    pub fn replica_cell(addr: SocketAddr, key: &[u8]) -> Option<cassio_core::storage::Cell> {
        let request = Request::ReplicaReads(vec![key.to_vec().into()]);
        match TestClient::peer_request(addr, "test-probe", request) {
            Response::ReplicaCells(mut cells) if cells.len() == 1 => cells.pop().flatten(),
            other => panic!("replica read: {other:?}"),
        }
    }

    /// Sends one request on a new connection that says it is the peer
    /// `as_node`.
    pub fn peer_request(addr: SocketAddr, as_node: &str, request: Request) -> Response {
        TestClient::try_peer_request(addr, as_node, request).expect("peer request")
    }

    /// [`TestClient::peer_request`], or the error if the node cannot be
    /// reached or did not answer.
    pub fn try_peer_request(
        addr: SocketAddr,
        as_node: &str,
        request: Request,
    ) -> cassio_core::Result<Response> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let hello = Hello::new("cassio", Role::Peer, Some(as_node.into()));
            let conn =
                Connection::open(&Tcp, addr, hello, 32 << 20, Duration::from_secs(5)).await?;
            conn.request(request, Duration::from_secs(5)).await
        })
    }
}

/// The ring as `node` places keys (its members that own data).
pub fn ring_seen_by(node: &NodeHandle) -> cassio_core::ring::Ring {
    let topology = match TestClient::connect(node.native_addr()).request(Request::Topology) {
        Response::Topology(topology) => topology,
        other => panic!("topology: {other:?}"),
    };
    cassio_core::ring::Ring::new(
        topology
            .members
            .iter()
            .filter(|m| m.owns_data)
            .map(|m| (m.node.clone(), &m.vnodes[..])),
    )
}

/// What a plain TCP connection to `addr` is answered to `input`, up to when
/// the other side closes (or `read_timeout` passes without a byte).
pub fn answer_until_closed(addr: SocketAddr, input: &[u8], read_timeout: Duration) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(read_timeout))
        .expect("timeout");
    stream.write_all(input).expect("write");
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    reply
}
