//! State one node's tasks share: configuration, identity, the gossiper, the
//! storage engine and pooled peer connections; and the request handler.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::background::Background;
use super::config::NodeConfig;
use super::coordinate::ReplicasCache;
use super::durable::write_durably;
use super::hints::HintStore;
use super::peers::PeerPool;
use crate::cluster::{Gossiper, Member};
use crate::coordinator::{HybridClock, Metrics};
use crate::error::{Error, Result};
use crate::net::{Caller, Connection, ConnectionLimit, Handler, TlsClient, Transport};
use crate::proto::{
    ClusterStatus, Hello, KeyedCell, MemberStatus, Request, Response, Role, keyed_cell_bytes,
};
use crate::ring::Ring;
use crate::storage::{Cell, CellValue, Clock, Engine, SyncMode};
use crate::types::NodeId;

/// A client timestamp further ahead of the wall clock than this is refused:
/// it would win every later write and drag every node's clock forward.
const CLIENT_TIMESTAMP_AHEAD_MS_MAX: u64 = 24 * 60 * 60 * 1000;

/// Keys sampled to estimate each node's owned share for status.
const OWNERSHIP_SAMPLES: u32 = 10_000;

/// A ring and each of its nodes' owned share, in ring order.
type RingShares = (Arc<Ring>, Arc<[f64]>);

/// The pool through which a node connects to its peers: it says hello as
/// node `node_id` of `config`'s cluster, over TLS if `tls` is given.
fn peer_pool<T: Transport>(
    config: &NodeConfig,
    node_id: &NodeId,
    transport: T,
    tls: Option<TlsClient>,
) -> PeerPool<T> {
    let hello = Hello::new(&config.cluster_name, Role::Peer, Some(node_id.clone()))
        .with_password(config.password.as_ref());
    let timeout = Duration::from_millis(config.peer_request_timeout_ms);
    PeerPool::new(transport, hello, config.frame_bytes_max, timeout, tls)
}

pub(crate) struct NodeShared<T: Transport> {
    pub(crate) config: NodeConfig,
    pub(crate) node_id: NodeId,
    pub(crate) native_addr: SocketAddr,
    pub(crate) gossiper: Mutex<Gossiper>,
    pub(crate) engine: Engine,
    pub(crate) hints: Option<HintStore>,
    pub(crate) metrics: Metrics,
    pub(crate) transport: T,
    /// Wall clock (ms since the Unix epoch), injected so simulations control it.
    pub(crate) clock: Clock,
    hlc: HybridClock,
    /// Targets whose hints are being replayed now.
    pub(crate) replaying: Mutex<HashSet<NodeId>>,
    /// Set once this node completed a gossip round with a peer (or has no
    /// seeds but itself): only then does it know the ring well enough to
    /// coordinate.
    pub(crate) joined: tokio::sync::watch::Sender<bool>,
    /// Work left running after answers; shutdown waits for it.
    pub(crate) background: Arc<Background>,
    /// Where the RESP endpoint listens, once bound.
    pub(crate) resp_addr: Mutex<Option<SocketAddr>>,
    /// The HTTP address bound, once it is (`--http`).
    pub(crate) http_addr: Mutex<Option<SocketAddr>>,
    /// Client connections open (Redis-protocol and native; peers do not
    /// count), and the most allowed (`max_clients`).
    pub(crate) client_connections: Arc<ConnectionLimit>,
    started: tokio::time::Instant,
    /// Connections to peers, and which peers stalled.
    pub(crate) peers: Arc<PeerPool<T>>,
    /// The replica list batches share while the replication factor covers
    /// the ring.
    pub(super) replicas_cache: ReplicasCache,
    /// Each node's owned share of the ring it was estimated for: the
    /// estimate takes tens of milliseconds, and status, readiness probes
    /// and metrics scrapes ask for it far more often than the ring changes.
    ownership: Mutex<Option<RingShares>>,
    /// Where the SCAN cursors this node handed out on its Redis port go on.
    pub(crate) scan_cursors: crate::resp::scan::ScanCursors,
    /// Set while this node runs a repair, asked for or scheduled (one at a
    /// time).
    pub(super) repair_running: std::sync::atomic::AtomicBool,
    /// Set while a scan's read repair runs after its answer (at ONE).
    pub(super) scan_repair_running: std::sync::atomic::AtomicBool,
    /// Set when the node stops: repair scans and writes end early.
    pub(super) repair_stopping: std::sync::atomic::AtomicBool,
    /// Whether a node joins or leaves (the gossiper has a pending ring),
    /// set by the gossiper as its view changes ([`Gossiper::moving_flag`]):
    /// writes then go to pending replicas too, without the gossiper's lock
    /// when nobody moves.
    pub(crate) ring_moving: Arc<std::sync::atomic::AtomicBool>,
    /// Set once this node has left the cluster: replica writes that still
    /// come (from a coordinator late to see it) are refused, not taken.
    pub(super) refuse_replica_writes: std::sync::atomic::AtomicBool,
    /// Turns true once this node has left the cluster; the node then stops.
    pub(crate) left: tokio::sync::watch::Sender<bool>,
}

impl<T: Transport> NodeShared<T> {
    pub(crate) fn new(
        config: NodeConfig,
        native_addr: SocketAddr,
        gossiper: Gossiper,
        engine: Engine,
        hints: Option<HintStore>,
        transport: T,
        clock: Clock,
    ) -> Self {
        let client_connections = ConnectionLimit::new(config.max_clients);
        let node_id = gossiper.local().clone();
        let peers = Arc::new(peer_pool(&config, &node_id, transport.clone(), None));
        let ring_moving = gossiper.moving_flag();
        NodeShared {
            node_id,
            config,
            native_addr,
            gossiper: Mutex::new(gossiper),
            engine,
            hints,
            metrics: Metrics::default(),
            transport,
            clock,
            hlc: HybridClock::default(),
            replaying: Mutex::new(HashSet::new()),
            joined: tokio::sync::watch::Sender::new(false),
            background: Arc::default(),
            resp_addr: Mutex::new(None),
            http_addr: Mutex::new(None),
            client_connections,
            started: tokio::time::Instant::now(),
            peers,
            replicas_cache: ReplicasCache::default(),
            ownership: Mutex::new(None),
            scan_cursors: Default::default(),
            repair_running: std::sync::atomic::AtomicBool::new(false),
            scan_repair_running: std::sync::atomic::AtomicBool::new(false),
            repair_stopping: std::sync::atomic::AtomicBool::new(false),
            ring_moving,
            refuse_replica_writes: std::sync::atomic::AtomicBool::new(false),
            left: tokio::sync::watch::Sender::new(false),
        }
    }

    /// A write timestamp (µs): the client's if given (the clock moves past
    /// it), else the hybrid logical clock's.
    pub(crate) fn write_timestamp(&self, client: Option<u64>) -> u64 {
        match client {
            Some(ts) => {
                self.hlc.observe(ts);
                ts
            }
            None => self.write_timestamps(1),
        }
    }

    /// The first of `count` consecutive write timestamps (µs) from the
    /// hybrid logical clock.
    pub(crate) fn write_timestamps(&self, count: u64) -> u64 {
        let wall_us = (self.clock)().saturating_mul(1000);
        self.hlc.now_many(wall_us, count)
    }

    /// The timestamp to write a key's value again with (a new expiry) after
    /// reading its cell, written at `read_us`: just past it, so the rewrite
    /// replaces that cell but loses to any newer write the read did not see
    /// (a stale read must not bring an older value back over it). The
    /// clock moves past it, so later commands write newer cells.
    pub(crate) fn rewrite_timestamp(&self, read_us: u64) -> u64 {
        let timestamp = read_us.saturating_add(1);
        self.hlc.observe(timestamp);
        timestamp
    }

    /// The timestamp of a tombstone for a key whose cell, written at
    /// `read_us`, was read: `drawn`, the command's own (drawn in pipeline
    /// order), or just past the cell if that is newer (written by a clock
    /// ahead of this one), so the delete always covers the cell it saw.
    pub(crate) fn delete_timestamp(&self, drawn: u64, read_us: u64) -> u64 {
        match drawn > read_us {
            true => drawn,
            false => self.rewrite_timestamp(read_us),
        }
    }

    /// Milliseconds since this node started, on the runtime's clock (which a
    /// simulation controls).
    pub(crate) fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub(crate) fn peer_timeout(&self) -> Duration {
        Duration::from_millis(self.config.peer_request_timeout_ms)
    }

    /// A coordinator's writes as engine writes; this node's clock moves past
    /// their timestamps.
    pub(super) fn observe(&self, writes: Vec<KeyedCell>) -> Vec<(Vec<u8>, Cell)> {
        writes
            .into_iter()
            .map(|KeyedCell { key, cell }| {
                self.hlc.observe(cell.timestamp);
                (key, cell)
            })
            .collect()
    }

    /// This replica's cell for each key, as many as fit in a frame (at
    /// least one): the coordinator asks again for the rest.
    fn replica_reads(&self, keys: &[serde_bytes::ByteBuf]) -> Response {
        let snapshot = self.engine.snapshot();
        let budget = self.message_budget_bytes();
        let (mut cells, mut bytes) = (Vec::with_capacity(keys.len()), 0);
        for key in keys {
            let cell = match snapshot.cell(key) {
                Ok(cell) => cell,
                Err(e) => {
                    return Response::Error {
                        message: e.to_string(),
                    };
                }
            };
            bytes += cell.as_ref().map_or(16, |c| keyed_cell_bytes(key, c));
            if bytes > budget && !cells.is_empty() {
                break;
            }
            cells.push(cell);
        }
        Response::ReplicaCells(cells)
    }

    /// This node, connecting to its peers over TLS with `peer_tls` (the
    /// native port speaks TLS).
    pub(crate) fn with_peer_tls(self, peer_tls: Option<TlsClient>) -> Self {
        let peers = peer_pool(
            &self.config,
            &self.node_id,
            self.transport.clone(),
            peer_tls,
        );
        NodeShared {
            peers: Arc::new(peers),
            ..self
        }
    }

    pub(crate) fn members(&self) -> Vec<Member> {
        self.gossiper.lock().members(self.now_ms())
    }

    /// Each node's owned share of `ring`, estimated once per ring.
    fn ownership_of(&self, ring: &Arc<Ring>) -> Arc<[f64]> {
        let mut cached = self.ownership.lock();
        match &*cached {
            Some((of, shares)) if Arc::ptr_eq(of, ring) => shares.clone(),
            _ => {
                let shares: Arc<[f64]> = ring.ownership(OWNERSHIP_SAMPLES).into();
                *cached = Some((ring.clone(), shares.clone()));
                shares
            }
        }
    }

    pub(crate) fn cluster_status(&self) -> ClusterStatus {
        let (members, ring) = {
            let gossiper = self.gossiper.lock();
            (gossiper.members(self.now_ms()), gossiper.ring())
        };
        let shares = self.ownership_of(&ring);
        let owns = |node: &NodeId| {
            ring.nodes()
                .iter()
                .position(|n| n == node)
                .map_or(0.0, |i| shares[i])
        };
        ClusterStatus {
            answered_by: self.node_id.clone(),
            cluster_name: self.config.cluster_name.clone(),
            replication_factor: self.config.replication_factor,
            metrics: self.metrics.snapshot(),
            members: members
                .into_iter()
                .map(|m| MemberStatus {
                    owns: owns(&m.node),
                    native_addr: m.native_addr,
                    resp_addr: m.resp_addr,
                    up: m.up,
                    status: m.status,
                    generation: m.generation,
                    heartbeat: m.heartbeat,
                    load_bytes: m.load_bytes,
                    vnodes: m.vnodes as u32,
                    node: m.node,
                })
                .collect(),
        }
    }

    /// One gossip round with the peer at `addr` (steps 1 and 3 of
    /// Syn / Ack / Ack2).
    pub(crate) async fn gossip_with(
        &self,
        addr: SocketAddr,
        syn: crate::cluster::GossipSyn,
    ) -> Result<()> {
        let conn = self.peers.get(addr).await?;
        let ack = match self.gossip_request(&conn, Request::GossipSyn(syn)).await? {
            Response::GossipAck(ack) => ack,
            other => return Err(unexpected(&conn, other)),
        };
        let ack2 = {
            let mut gossiper = self.gossiper.lock();
            let ack2 = gossiper.handle_ack(ack, self.now_ms());
            gossiper.heard_from(conn.remote(), self.now_ms());
            ack2
        };
        match self
            .gossip_request(&conn, Request::GossipAck2(ack2))
            .await?
        {
            Response::Done => {
                self.joined.send_replace(true);
                Ok(())
            }
            other => Err(unexpected(&conn, other)),
        }
    }

    /// `body` to the peer on `conn`, answered within the peer timeout; a
    /// timeout stalls the peer (for this thread: the node's own).
    async fn gossip_request(&self, conn: &Arc<Connection>, body: Request) -> Result<Response> {
        let reply = conn.request(body, self.peer_timeout()).await;
        if let Err(e) = &reply {
            self.peers.failed(conn, e);
        }
        reply
    }

    /// Waits (up to the write timeout) until this node may coordinate: it
    /// heard from a peer, or gave up waiting and uses the ring it kept; an
    /// error answer if neither happened in time.
    pub(crate) async fn wait_until_joined(&self) -> Option<Response> {
        if *self.joined.borrow() {
            return None;
        }
        let limit = Duration::from_millis(self.config.write_timeout_ms);
        let mut joined = self.joined.subscribe();
        match tokio::time::timeout(limit, joined.wait_for(|j| *j)).await {
            Ok(Ok(_)) => None,
            _ => Some(Response::Error {
                message: format!(
                    "node {} has not joined the cluster yet: no seed or known peer has answered gossip",
                    self.node_id
                ),
            }),
        }
    }
}

/// What a replica answers to a coordinator's writes.
fn replica_writes_answer(written: Result<()>) -> Response {
    match written {
        Ok(()) => Response::Done,
        Err(e) => Response::Error {
            message: e.to_string(),
        },
    }
}

pub(super) fn unexpected(conn: &Connection, response: Response) -> Error {
    let message = match response {
        Response::Error { message } => message,
        other => format!("unexpected response {other:?}"),
    };
    Error::Remote {
        node: conn.remote().to_string(),
        message,
    }
}

impl<T: Transport> Handler for NodeShared<T> {
    /// Everything but client reads and writes (those coordinate, and wait on
    /// peers) and replica writes in batch sync mode (those wait for the disk).
    fn answer_now(
        &self,
        caller: &Caller,
        request: Request,
    ) -> std::result::Result<Response, Request> {
        let peer_only = matches!(
            request,
            Request::GossipSyn(_)
                | Request::GossipAck2(_)
                | Request::ReplicaWrites(_)
                | Request::ReplicaReads(_)
                | Request::RepairDigests { .. }
                | Request::RepairRange { .. }
                | Request::StreamRingChange { .. }
                | Request::ReplicaScan { .. }
        );
        if peer_only && caller.role != Role::Peer {
            return Ok(Response::Error {
                message: "gossip and replica messages are for peers".into(),
            });
        }
        if matches!(request, Request::ReplicaWrites(_))
            && self
                .refuse_replica_writes
                .load(std::sync::atomic::Ordering::Acquire)
        {
            return Ok(Response::Error {
                message: format!("{} has left the cluster", self.node_id),
            });
        }
        Ok(match request {
            Request::GossipSyn(syn) => {
                Response::GossipAck(self.gossiper.lock().handle_syn(syn, self.now_ms()))
            }
            Request::GossipAck2(ack2) => {
                let mut gossiper = self.gossiper.lock();
                gossiper.handle_ack2(ack2, self.now_ms());
                if let Some(peer) = &caller.node_id {
                    gossiper.heard_from(peer, self.now_ms());
                }
                drop(gossiper);
                // A completed round started by a peer teaches this node the
                // ring as well as one it started.
                self.joined.send_replace(true);
                Response::Done
            }
            Request::ClusterStatus => Response::ClusterStatus(self.cluster_status()),
            Request::Topology => {
                let members = self.gossiper.lock().topology(self.now_ms());
                Response::Topology(crate::proto::Topology {
                    replication_factor: self.config.replication_factor,
                    members: members
                        .into_iter()
                        .map(|(node, native_addr, up, owns_data, vnodes)| {
                            crate::proto::TopologyMember {
                                node,
                                native_addr,
                                up,
                                owns_data,
                                vnodes,
                            }
                        })
                        .collect(),
                })
            }
            // In batch sync mode a write waits for its fsync: in `handle`.
            Request::ReplicaWrites(writes)
                if self.config.storage.sync_mode == SyncMode::Periodic =>
            {
                replica_writes_answer(self.engine.write_batch(self.observe(writes)))
            }
            Request::ReplicaReads(keys) => self.replica_reads(&keys),
            waits @ (Request::Get { .. }
            | Request::Put { .. }
            | Request::Delete { .. }
            | Request::ReplicaWrites(_)
            | Request::Repair
            | Request::Decommission
            | Request::RemoveNode { .. }
            | Request::Cleanup
            | Request::StreamRingChange { .. }
            | Request::RepairDigests { .. }
            | Request::RepairRange { .. }
            | Request::Scan { .. }
            | Request::ReplicaScan { .. }) => {
                return Err(waits);
            }
        })
    }

    async fn handle(self: &Arc<Self>, caller: &Caller, request: Request) -> Response {
        let request = match self.answer_now(caller, request) {
            Ok(answer) => return answer,
            Err(Request::ReplicaWrites(writes)) => {
                return replica_writes_answer(
                    write_durably(&self.engine, self.observe(writes)).await,
                );
            }
            Err(request) => request,
        };
        match request {
            Request::Repair => self.anti_entropy_repair().await,
            Request::Decommission => self.decommission().await,
            Request::RemoveNode { node } => self.remove_node(node).await,
            Request::Cleanup => self.cleanup().await,
            Request::StreamRingChange { node, joined } => {
                self.answer_ring_change(node, joined).await
            }
            step @ (Request::RepairDigests { .. } | Request::RepairRange { .. }) => {
                self.answer_repair_step(caller, step).await
            }
            Request::Get { key, level } => {
                self.coordinate_read(key, level.unwrap_or(self.config.read_consistency))
                    .await
            }
            Request::Scan {
                range,
                limit,
                level,
            } => {
                let level = level.unwrap_or(self.config.read_consistency);
                self.coordinate_scan(range, limit, level).await
            }
            Request::ReplicaScan { range, limit } => self.answer_replica_scan(range, limit).await,
            Request::Put {
                timestamp: Some(ts),
                ..
            }
            | Request::Delete {
                timestamp: Some(ts),
                ..
            } if ts
                > (self.clock)()
                    .saturating_add(CLIENT_TIMESTAMP_AHEAD_MS_MAX)
                    .saturating_mul(1000) =>
            {
                Response::Invalid {
                    message: format!(
                        "timestamp {ts} µs is more than {} h ahead of this node's clock",
                        CLIENT_TIMESTAMP_AHEAD_MS_MAX / 3_600_000
                    ),
                }
            }
            Request::Put {
                key,
                value,
                level,
                timestamp,
                ttl_ms,
            } => {
                let cell = Cell {
                    timestamp: self.write_timestamp(timestamp),
                    expires_at_ms: ttl_ms.map(|ttl| (self.clock)().saturating_add(ttl)),
                    value: CellValue::Value(value),
                };
                self.coordinate_write(key, cell, level.unwrap_or(self.config.write_consistency))
                    .await
            }
            Request::Delete {
                key,
                level,
                timestamp,
            } => {
                let cell = Cell::tombstone(self.write_timestamp(timestamp));
                self.coordinate_write(key, cell, level.unwrap_or(self.config.write_consistency))
                    .await
            }
            _ => Response::Error {
                message: "internal: a request that is answered at once reached the coordinator"
                    .into(),
            },
        }
    }
}
