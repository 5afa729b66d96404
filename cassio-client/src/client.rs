//! The asynchronous client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cassio_core::coordinator::ConsistencyLevel;
use cassio_core::coordinator::repair::RepairSummary;
use cassio_core::net::{Connection, Tcp, TlsClient};
use cassio_core::proto::{
    CleanupSummary, ClusterStatus, Hello, KeyRange, MoveSummary, Request, Response, Role, ScanEntry,
};
use cassio_core::types::{NodeId, Secret};
use parking_lot::{Mutex, RwLock};

use crate::error::Error;
use crate::routing::Routes;

/// How a client talks to the cluster.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Must match the nodes' `cluster_name`.
    pub cluster_name: String,
    /// Level of reads and writes that do not name one.
    pub consistency: ConsistencyLevel,
    /// Deadline of one attempt of one request.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Further nodes tried after a transport failure (reads, and writes,
    /// which carry a client timestamp and so are idempotent).
    pub retries: usize,
    /// Largest frame accepted from a node.
    pub frame_bytes_max: usize,
    /// The cluster's password, if it has one.
    pub password: Option<Secret>,
    /// TLS, for a cluster whose native port speaks it: nodes' certificates
    /// are checked against its CA ([`TlsClient::from_ca_cert_file`]).
    pub tls: Option<TlsClient>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            cluster_name: "cassio".into(),
            consistency: ConsistencyLevel::Quorum,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            retries: 2,
            frame_bytes_max: 64 * 1024 * 1024,
            password: None,
            tls: None,
        }
    }
}

/// A value read back, with its write timestamp (µs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    pub value: Vec<u8>,
    pub timestamp: u64,
}

/// One page of a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanPage {
    /// Live keys in key order, with their values and write timestamps.
    pub entries: Vec<ScanEntry>,
    /// The rest of the range when keys may follow (scan it for the next
    /// page); `None` once the range is done. A page may hold fewer than
    /// `limit` keys and still have a next one.
    pub next: Option<KeyRange>,
}

/// A connection pool to one cluster, routing each key to its replicas.
/// Cheap to clone; many requests may be in flight at once. A clone may carry
/// its own level and timeout ([`Client::with_consistency`],
/// [`Client::with_timeout`]) while sharing the pool.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    consistency: ConsistencyLevel,
    timeout: Duration,
}

struct Inner {
    config: ClientConfig,
    seeds: Vec<SocketAddr>,
    routes: RwLock<Routes>,
    pool: Mutex<HashMap<SocketAddr, Arc<Connection>>>,
}

impl Client {
    /// Connects through any of `seeds` and learns the cluster's topology.
    pub async fn connect(seeds: &[SocketAddr], config: ClientConfig) -> Result<Client, Error> {
        let client = Client {
            consistency: config.consistency,
            timeout: config.request_timeout,
            inner: Arc::new(Inner {
                config,
                seeds: seeds.to_vec(),
                routes: RwLock::new(Routes::default()),
                pool: Mutex::new(HashMap::new()),
            }),
        };
        client.refresh_topology().await?;
        Ok(client)
    }

    /// This client with another default consistency level (same pool).
    pub fn with_consistency(&self, level: ConsistencyLevel) -> Client {
        Client {
            consistency: level,
            ..self.clone()
        }
    }

    /// This client with another per-attempt request timeout (same pool).
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        Client {
            timeout,
            ..self.clone()
        }
    }

    /// Re-reads members and placement from the cluster.
    pub async fn refresh_topology(&self) -> Result<(), Error> {
        match self.call(None, Request::Topology).await? {
            Response::Topology(topology) => {
                *self.inner.routes.write() = Routes::new(&topology);
                Ok(())
            }
            other => Err(Error::Unexpected {
                node: "seed".into(),
                answer: format!("{other:?}"),
            }),
        }
    }

    /// Reads `key` at the client's default level.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.get_versioned(key, None).await?.map(|v| v.value))
    }

    /// Reads `key` with its timestamp, at `level` (or the default).
    pub async fn get_versioned(
        &self,
        key: &[u8],
        level: Option<ConsistencyLevel>,
    ) -> Result<Option<Versioned>, Error> {
        let level = level.or(Some(self.consistency));
        match self
            .call(
                Some(key),
                Request::Get {
                    key: key.to_vec(),
                    level,
                },
            )
            .await?
        {
            Response::Value { value, timestamp } => Ok(value
                .zip(timestamp)
                .map(|(value, timestamp)| Versioned { value, timestamp })),
            other => Err(unexpected(other)),
        }
    }

    /// Writes `key` at the default level; returns the write's timestamp.
    pub async fn set(&self, key: &[u8], value: &[u8]) -> Result<u64, Error> {
        self.set_with(key, value, None, None).await
    }

    /// Writes `key` at `level`, expiring after `ttl` if given.
    pub async fn set_with(
        &self,
        key: &[u8],
        value: &[u8],
        level: Option<ConsistencyLevel>,
        ttl: Option<Duration>,
    ) -> Result<u64, Error> {
        let request = Request::Put {
            key: key.to_vec(),
            value: value.to_vec(),
            level: level.or(Some(self.consistency)),
            timestamp: Some(client_timestamp()),
            ttl_ms: ttl.map(|t| t.as_millis() as u64),
        };
        match self.call(Some(key), request).await? {
            Response::Written { timestamp } => Ok(timestamp),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes `key` (a tombstone) at `level` or the default.
    pub async fn delete(&self, key: &[u8], level: Option<ConsistencyLevel>) -> Result<u64, Error> {
        let request = Request::Delete {
            key: key.to_vec(),
            level: level.or(Some(self.consistency)),
            timestamp: Some(client_timestamp()),
        };
        match self.call(Some(key), request).await? {
            Response::Written { timestamp } => Ok(timestamp),
            other => Err(unexpected(other)),
        }
    }

    /// One page of at most `limit` (1 to 10,000) live keys of `range`, in
    /// key order, at `level` or the default. Keys are placed by hash, so
    /// the coordinating node asks every node of the ring; each key is read
    /// from all of its replicas that answer. The scan fails
    /// ([`Error::QuorumNotReached`], counting nodes) when more nodes are
    /// missing than the level can spare: a replica set has `rf` nodes and
    /// the level needs some of them, so at QUORUM with RF 3 one node may be
    /// down, at ONE two, at ALL none.
    pub async fn scan(
        &self,
        range: &KeyRange,
        limit: u32,
        level: Option<ConsistencyLevel>,
    ) -> Result<ScanPage, Error> {
        let request = Request::Scan {
            range: range.clone(),
            limit,
            level: level.or(Some(self.consistency)),
        };
        match self.call(None, request).await? {
            Response::Scanned { entries, next } => Ok(ScanPage {
                entries,
                next: next.map(|key| range.after(key)),
            }),
            other => Err(unexpected(other)),
        }
    }

    /// The cluster as one node sees it.
    pub async fn status(&self) -> Result<ClusterStatus, Error> {
        match self.call(None, Request::ClusterStatus).await? {
            Response::ClusterStatus(status) => Ok(status),
            other => Err(unexpected(other)),
        }
    }

    /// Anti-entropy repair of the first node this client was given: it
    /// compares the keys it shares with each live peer, range by range, and
    /// the two swap what differs (newer cells, missing cells, tombstones).
    /// Sent to that node only, never retried elsewhere. It scans the node's
    /// data, so give a large node a long timeout ([`Client::with_timeout`]).
    pub async fn repair(&self) -> Result<RepairSummary, Error> {
        match self.first_node(Request::Repair).await? {
            Response::Repaired(summary) => Ok(summary),
            other => Err(unexpected(other)),
        }
    }

    /// Makes the first node this client was given leave the cluster: the
    /// nodes holding data stream its keys to the nodes that take them over,
    /// then it stops. Every other node holding data must be UP. Sent to
    /// that node only; every node reads all its data, so give a large
    /// cluster a long timeout.
    pub async fn decommission(&self) -> Result<MoveSummary, Error> {
        match self.first_node(Request::Decommission).await? {
            Response::Decommissioned(summary) => Ok(summary),
            other => Err(unexpected(other)),
        }
    }

    /// Makes the first node this client was given drop the keys it does
    /// not replicate (kept from before nodes joined): it flushes and
    /// rewrites its tables. Refused while a node joins or leaves or a
    /// member is DOWN. Sent to that node only.
    pub async fn cleanup(&self) -> Result<CleanupSummary, Error> {
        match self.first_node(Request::Cleanup).await? {
            Response::CleanedUp(summary) => Ok(summary),
            other => Err(unexpected(other)),
        }
    }

    /// Removes `node`, which must be down for good, from the cluster,
    /// through the first node this client was given; every live node then
    /// streams the keys it replicated with `node` to their new replicas.
    pub async fn remove_node(&self, node: &str) -> Result<MoveSummary, Error> {
        let request = Request::RemoveNode {
            node: NodeId::new(node),
        };
        match self.first_node(request).await? {
            Response::NodeRemoved(summary) => Ok(summary),
            other => Err(unexpected(other)),
        }
    }

    /// Sends `request` to the first node this client was given, never
    /// elsewhere: for requests about that node itself.
    async fn first_node(&self, request: Request) -> Result<Response, Error> {
        let Some(addr) = self.inner.seeds.first().copied() else {
            return Err(Error::NoNodeReachable {
                tried: String::new(),
            });
        };
        self.try_node(addr, request).await
    }

    /// Sends `request` to the best node for `key`, trying the next on a
    /// transport failure, up to `retries` more.
    async fn call(&self, key: Option<&[u8]>, request: Request) -> Result<Response, Error> {
        let mut candidates = self.inner.routes.read().candidates(key);
        // Requests about no key (status, topology) go to the nodes the user
        // named first; keyed ones to the key's replicas first.
        if key.is_none() {
            candidates.retain(|c| !self.inner.seeds.contains(c));
            candidates.splice(0..0, self.inner.seeds.iter().copied());
        } else {
            for seed in &self.inner.seeds {
                if !candidates.contains(seed) {
                    candidates.push(*seed);
                }
            }
        }
        let mut last_error = None;
        for addr in candidates.iter().take(self.inner.config.retries + 1) {
            match self.try_node(*addr, request.clone()).await {
                Ok(response) => return Ok(response),
                Err(e) if e.is_retryable() => {
                    tracing::debug!(node = %addr, error = %e, "trying another node");
                    last_error = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| Error::NoNodeReachable {
            tried: candidates
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        }))
    }

    async fn try_node(&self, addr: SocketAddr, request: Request) -> Result<Response, Error> {
        let conn = self.connection(addr).await?;
        let response = conn.request(request, self.timeout).await;
        if response.is_err() {
            self.inner.pool.lock().remove(&addr);
        }
        match response? {
            Response::QuorumNotReached {
                level,
                required,
                received,
            } => Err(Error::QuorumNotReached {
                level,
                required,
                received,
            }),
            Response::Invalid { message } => Err(Error::Invalid(message)),
            Response::Error { message } => Err(Error::Server {
                node: addr.to_string(),
                message,
            }),
            other => Ok(other),
        }
    }

    async fn connection(&self, addr: SocketAddr) -> Result<Arc<Connection>, Error> {
        if let Some(conn) = self.inner.pool.lock().get(&addr).filter(|c| !c.is_closed()) {
            return Ok(conn.clone());
        }
        let config = &self.inner.config;
        let hello = Hello::new(&config.cluster_name, Role::Client, None)
            .with_password(config.password.as_ref());
        let conn = Arc::new(
            Connection::open_with(
                &Tcp,
                addr,
                hello,
                config.frame_bytes_max,
                config.connect_timeout,
                config.tls.as_ref(),
            )
            .await?,
        );
        self.inner.pool.lock().insert(addr, conn.clone());
        Ok(conn)
    }
}

fn unexpected(response: Response) -> Error {
    Error::Unexpected {
        node: "coordinator".into(),
        answer: format!("{response:?}"),
    }
}

/// Microseconds since the Unix epoch: a write's timestamp, fixed before the
/// first attempt so a retry is the same write, not a newer one.
fn client_timestamp() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
