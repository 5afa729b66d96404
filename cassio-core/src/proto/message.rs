//! Every message cassio sends over its native protocol, for clients and peers
//! alike. The first frame of a connection is a [`Hello`]; the server answers
//! [`HelloReply`]; then frames are [`Frame`]s whose requests carry ids, so
//! many can be in flight on one connection.

use std::net::SocketAddr;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::cluster::{GossipAck, GossipAck2, GossipSyn, NodeStatus};
use crate::coordinator::repair::{RangeDigest, RepairSummary};
use crate::coordinator::{ConsistencyLevel, MetricsSnapshot};
use crate::ring::Vector;
use crate::storage::Cell;
use crate::types::{NodeId, Secret};

/// First four bytes of every handshake: "not a cassio peer" is caught at once.
pub const MAGIC: u32 = 0xCA55_10F0;
/// Bumped on any incompatible change to these messages (3: the handshake
/// carries a password; 4: node statuses for a move's streamed phase).
pub const PROTOCOL_VERSION: u32 = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Client,
    Peer,
}

/// The handshake, first frame on every connection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub magic: u32,
    pub protocol_version: u32,
    pub cluster_name: String,
    pub role: Role,
    /// The connecting node (peers) or `None` (clients).
    pub node_id: Option<NodeId>,
    /// The cluster's password, if it has one (`--password`).
    pub password: Option<Secret>,
}

impl Hello {
    pub fn new(cluster_name: &str, role: Role, node_id: Option<NodeId>) -> Self {
        Hello {
            magic: MAGIC,
            protocol_version: PROTOCOL_VERSION,
            cluster_name: cluster_name.to_string(),
            role,
            node_id,
            password: None,
        }
    }

    /// This hello with the cluster's password.
    pub fn with_password(mut self, password: Option<&Secret>) -> Self {
        self.password = password.cloned();
        self
    }

    /// Why a node named `own` of cluster `cluster_name`, with `password`
    /// if it has one, refuses this hello, if it does.
    pub fn refusal(
        &self,
        cluster_name: &str,
        own: &NodeId,
        password: Option<&Secret>,
    ) -> Option<String> {
        if self.magic != MAGIC {
            return Some(format!(
                "bad magic {:#010x}: not a cassio client",
                self.magic
            ));
        }
        if self.protocol_version != PROTOCOL_VERSION {
            return Some(version_refusal(self.protocol_version));
        }
        if self.cluster_name != cluster_name {
            return Some(format!(
                "cluster name {:?} does not match this node's cluster {cluster_name:?}",
                self.cluster_name
            ));
        }
        if let Some(expected) = password {
            match &self.password {
                None => {
                    return Some(
                        "this cluster requires a password: give it with --password or CASSIO_PASSWORD"
                            .into(),
                    );
                }
                Some(given) if given != expected => {
                    return Some("wrong password".into());
                }
                Some(_) => {}
            }
        }
        if self.role == Role::Peer && self.node_id.is_none() {
            return Some("a peer must say its node id".to_string());
        }
        if self.role == Role::Peer && self.node_id.as_ref() == Some(own) {
            return Some(format!(
                "node name {own} is this node's own: every node needs its own --name"
            ));
        }
        None
    }
}

/// The fields every version's [`Hello`] starts with.
#[derive(Deserialize)]
struct HelloStart {
    magic: u32,
    protocol_version: u32,
}

impl Hello {
    /// Why a handshake that does not decode as this version's [`Hello`] is
    /// refused, if it is a cassio hello of another protocol version (whose
    /// later fields differ): so an older client hears why, rather than
    /// seeing the connection close.
    pub fn other_version_refusal(payload: &[u8]) -> Option<String> {
        let start: HelloStart = super::codec::decode_prefix(payload).ok()?;
        (start.magic == MAGIC && start.protocol_version != PROTOCOL_VERSION)
            .then(|| version_refusal(start.protocol_version))
    }
}

fn version_refusal(version: u32) -> String {
    format!(
        "protocol version {version} is not supported; this node speaks version {PROTOCOL_VERSION}"
    )
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum HelloReply {
    Welcome { node_id: NodeId },
    Refused { reason: String },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    Request { id: u64, body: Request },
    Response { id: u64, body: Response },
}

/// Encodes exactly as [`Frame::Request`], from a borrowed request (a
/// [`Request`], or a [`ReplicaRequest`] of borrowed data): one request sent
/// to several replicas is built once and never copied.
#[derive(Serialize)]
pub enum RequestFrame<'a, B = Request> {
    Request { id: u64, body: &'a B },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Peers only: gossip round step 1.
    GossipSyn(GossipSyn),
    /// Peers only: gossip round step 3.
    GossipAck2(GossipAck2),
    /// Anyone: this node's view of the cluster.
    ClusterStatus,
    /// Anyone: members with their vnode vectors, so a client can compute
    /// replicas itself and send each request straight to one.
    Topology,
    /// Read a key through this node as coordinator.
    Get {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        level: Option<ConsistencyLevel>,
    },
    /// Write a key; `timestamp` (µs) overrides the coordinator's clock.
    Put {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        level: Option<ConsistencyLevel>,
        timestamp: Option<u64>,
        ttl_ms: Option<u64>,
    },
    /// Delete a key (write a tombstone).
    Delete {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        level: Option<ConsistencyLevel>,
        timestamp: Option<u64>,
    },
    /// Peers only: apply cells on this replica (every write of a pipeline
    /// that this replica holds, in one message).
    ReplicaWrites(Vec<KeyedCell>),
    /// Peers only: this replica's cell for each key, in order.
    ReplicaReads(Vec<serde_bytes::ByteBuf>),
    /// Anyone: compare this node's data with every live peer's and swap
    /// what differs (anti-entropy repair).
    Repair,
    /// Peers only, repair step 1: the hashes of the ranges of keys the
    /// sender and this node both replicate, from after `start` (`None`: the
    /// start of the key space), and the fingerprint of the placement the
    /// sender cut them by; answered by [`Response::RangesDiffering`].
    RepairDigests {
        #[serde(with = "serde_bytes")]
        start: Option<Vec<u8>>,
        ranges: Vec<RangeDigest>,
        placement: u64,
    },
    /// Peers only, repair step 2: the sender's cells of the keys both
    /// replicate, after `start` up to `end` (inclusive; `None`: the end of
    /// the key space); answered by [`Response::RepairCells`].
    RepairRange {
        #[serde(with = "serde_bytes")]
        start: Option<Vec<u8>>,
        #[serde(with = "serde_bytes")]
        end: Option<Vec<u8>>,
        cells: Vec<KeyedCell>,
    },
    /// Anyone: this node leaves the cluster (LEAVING, then LEFT): every
    /// node holding data streams the keys it replicates to the nodes that
    /// replicate them without it; it waits until its peers know LEFT, and
    /// stops. Answered by [`Response::Decommissioned`].
    Decommission,
    /// Anyone: `node`, down for good, is removed from the ring (its status
    /// becomes LEFT on its behalf), then every live node streams the keys
    /// it replicated with it to their new replicas (again, if `node` is
    /// LEFT already). Answered by [`Response::NodeRemoved`].
    RemoveNode { node: NodeId },
    /// Peers only: `node` is joining the ring (`joined`), or leaving or
    /// gone; this node sends each cell it replicates by the ring before the
    /// change to the nodes that replicate its key after it and did not
    /// before. Answered by [`Response::Streamed`].
    StreamRingChange { node: NodeId, joined: bool },
    /// Anyone: this node drops the keys it does not replicate by the ring
    /// (kept from before a node joined, say). Refused while a node joins
    /// or leaves or a member is DOWN. Answered by [`Response::CleanedUp`].
    Cleanup,
    /// Anyone: the live keys of `range` in key order, at most `limit`,
    /// with their values; read through this node as coordinator from every
    /// node of the ring. Answered by [`Response::Scanned`].
    Scan {
        range: KeyRange,
        limit: u32,
        level: Option<ConsistencyLevel>,
    },
    /// Peers only, a scan's step: this node's cells (tombstones included)
    /// of the keys of `range` it replicates, in key order, at most `limit`.
    /// Answered by [`Response::ReplicaScanned`].
    ReplicaScan { range: KeyRange, limit: u32 },
}

/// Encodes exactly as [`Request::ReplicaWrites`] or
/// [`Request::ReplicaReads`], from borrowed keys and cells: a coordinator
/// sends its clients' data to the replicas without copying it first.
pub enum ReplicaRequest<'a> {
    Writes(Vec<KeyedCellRef<'a>>),
    Reads(Vec<&'a serde_bytes::Bytes>),
}

impl ReplicaRequest<'_> {
    /// The same request, owning its keys and cells (for a request that
    /// outlives the batch it borrows from).
    pub fn to_request(&self) -> Request {
        match self {
            ReplicaRequest::Writes(writes) => Request::ReplicaWrites(
                writes
                    .iter()
                    .map(|w| KeyedCell {
                        key: w.key.to_vec(),
                        cell: w.cell.clone(),
                    })
                    .collect(),
            ),
            ReplicaRequest::Reads(keys) => Request::ReplicaReads(
                keys.iter()
                    .map(|key| serde_bytes::ByteBuf::from(key.to_vec()))
                    .collect(),
            ),
        }
    }
}

/// [`Request`]'s variant indexes that [`ReplicaRequest`] encodes (a test
/// checks they match).
const REPLICA_WRITES_VARIANT: u32 = 7;
const REPLICA_READS_VARIANT: u32 = 8;

impl Serialize for ReplicaRequest<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ReplicaRequest::Writes(writes) => serializer.serialize_newtype_variant(
                "Request",
                REPLICA_WRITES_VARIANT,
                "ReplicaWrites",
                writes,
            ),
            ReplicaRequest::Reads(keys) => serializer.serialize_newtype_variant(
                "Request",
                REPLICA_READS_VARIANT,
                "ReplicaReads",
                keys,
            ),
        }
    }
}

/// [`KeyedCell`], borrowed.
#[derive(Serialize)]
#[serde(rename = "KeyedCell")]
pub struct KeyedCellRef<'a> {
    #[serde(with = "serde_bytes")]
    pub key: &'a [u8],
    pub cell: &'a Cell,
}

/// A generous estimate of one (key, cell)'s encoded size in a message, for
/// keeping batches under a frame.
pub fn keyed_cell_bytes(key: &[u8], cell: &Cell) -> usize {
    let value = match &cell.value {
        crate::storage::CellValue::Value(v) => v.len(),
        crate::storage::CellValue::Tombstone => 0,
    };
    key.len() + value + 64
}

/// A key and the cell to apply to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyedCell {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    pub cell: Cell,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    GossipAck(GossipAck),
    Done,
    ClusterStatus(ClusterStatus),
    Topology(Topology),
    /// Answer to `Get`: the live value and its write timestamp, or nothing.
    Value {
        #[serde(with = "serde_bytes")]
        value: Option<Vec<u8>>,
        timestamp: Option<u64>,
    },
    /// Answer to `Put` / `Delete`: the timestamp the write carries.
    Written {
        timestamp: u64,
    },
    /// Answer to `ReplicaReads`: one cell (or none) per key, in order.
    ReplicaCells(Vec<Option<Cell>>),
    /// The consistency level was not met (in time).
    QuorumNotReached {
        level: ConsistencyLevel,
        required: u32,
        received: u32,
    },
    /// The request itself is wrong (too large, unknown level...): do not retry.
    Invalid {
        message: String,
    },
    Error {
        message: String,
    },
    /// Answer to `Repair`.
    Repaired(RepairSummary),
    /// Answer to `RepairDigests`: the indexes of the ranges that differ.
    RangesDiffering(Vec<u32>),
    /// Answer to `RepairRange`: how many of the sender's cells this node
    /// kept, and its own cells that supersede the sender's or that it
    /// lacks, in key order; `more` when the answer stopped early (ask again
    /// from after its last key).
    RepairCells {
        kept: u32,
        cells: Vec<KeyedCell>,
        more: bool,
    },
    /// Answer to `Decommission`.
    Decommissioned(MoveSummary),
    /// Answer to `RemoveNode`.
    NodeRemoved(MoveSummary),
    /// Answer to `StreamRingChange`.
    Streamed(StreamSummary),
    /// Answer to `Cleanup`.
    CleanedUp(CleanupSummary),
    /// Answer to `Scan`: live keys in key order; `next` when the range
    /// goes on past them (the next page starts after that key:
    /// [`KeyRange::after`]).
    Scanned {
        entries: Vec<ScanEntry>,
        #[serde(with = "serde_bytes")]
        next: Option<Vec<u8>>,
    },
    /// Answer to `ReplicaScan`: `more` when cells of the range remain past
    /// the last one sent (it stopped at `limit` or a frame's size).
    ReplicaScanned {
        cells: Vec<KeyedCell>,
        more: bool,
    },
}

/// The keys a scan covers: from `start` up to `end` (exclusive; `None`:
/// to the last key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRange {
    pub start: Bound<Vec<u8>>,
    pub end: Option<Vec<u8>>,
}

impl KeyRange {
    /// Every key.
    pub fn all() -> KeyRange {
        KeyRange {
            start: Bound::Unbounded,
            end: None,
        }
    }

    /// The keys from `key` (included) on.
    pub fn from(key: &[u8]) -> KeyRange {
        KeyRange {
            start: Bound::Included(key.to_vec()),
            end: None,
        }
    }

    /// The keys that start with `prefix`.
    pub fn prefix(prefix: &[u8]) -> KeyRange {
        KeyRange {
            start: Bound::Included(prefix.to_vec()),
            end: crate::types::prefix_successor(prefix),
        }
    }

    /// The rest of this range after `key`: where the page after one that
    /// ended at `key` starts.
    pub fn after(&self, key: Vec<u8>) -> KeyRange {
        KeyRange {
            start: Bound::Excluded(key),
            end: self.end.clone(),
        }
    }

    /// The range as the storage engine's bounds.
    pub fn bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        let start = match &self.start {
            Bound::Included(key) => Bound::Included(&key[..]),
            Bound::Excluded(key) => Bound::Excluded(&key[..]),
            Bound::Unbounded => Bound::Unbounded,
        };
        (
            start,
            self.end
                .as_deref()
                .map_or(Bound::Unbounded, Bound::Excluded),
        )
    }
}

/// A live key found by a scan, with its value and write timestamp (µs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanEntry {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub timestamp: u64,
}

/// What a cleanup did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CleanupSummary {
    /// The node that cleaned up.
    pub node: NodeId,
    /// Keys it dropped, since it does not replicate them.
    pub keys_dropped: u64,
    /// Bytes of its SSTables before the cleanup (after its flush) and after.
    pub sstable_bytes_before: u64,
    pub sstable_bytes_after: u64,
}

/// What one node sent when the ring changed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamSummary {
    /// Cells the node held, read once.
    pub cells_scanned: u64,
    /// Cells sent (a cell goes to each node that gains its key).
    pub cells_streamed: u64,
    /// Nodes that received any.
    pub nodes_streamed_to: u32,
}

impl StreamSummary {
    pub fn add(&mut self, other: &StreamSummary) {
        self.cells_scanned += other.cells_scanned;
        self.cells_streamed += other.cells_streamed;
        self.nodes_streamed_to = self.nodes_streamed_to.max(other.nodes_streamed_to);
    }
}

/// What a decommission or a removal did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MoveSummary {
    /// The node that left or was removed.
    pub node: NodeId,
    /// Live nodes that sent the keys they replicated to the nodes that
    /// replicate them now.
    pub streamed_from: Vec<NodeId>,
    /// What they sent, summed (`nodes_streamed_to`: the most any sent to).
    pub streamed: StreamSummary,
    /// Live peers that had not seen the node LEFT in time.
    pub peers_unconfirmed: u32,
    /// Nodes that could not stream, each with why.
    pub failed: Vec<String>,
}

/// The placement inputs: who is in the ring and their vectors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Topology {
    pub replication_factor: u32,
    pub members: Vec<TopologyMember>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopologyMember {
    pub node: NodeId,
    pub native_addr: SocketAddr,
    pub up: bool,
    /// Whether its vnodes take part in placement (NORMAL, LEAVING).
    pub owns_data: bool,
    pub vnodes: Vec<Vector>,
}

/// One node's view of the cluster (`cassio status`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub answered_by: NodeId,
    pub cluster_name: String,
    pub replication_factor: u32,
    pub members: Vec<MemberStatus>,
    /// The answering node's counters.
    pub metrics: MetricsSnapshot,
}

impl ClusterStatus {
    /// Whether the node that answered is a full member, NORMAL in its own
    /// view (a JOINING node still streams and is in no ring): a sentence
    /// either way. `cassio ready` and the HTTP `/ready` probe answer this.
    pub fn readiness(&self) -> std::result::Result<String, String> {
        let me = &self.answered_by;
        match self.members.iter().find(|m| m.node == *me) {
            Some(m) if m.status == NodeStatus::Normal => Ok(format!("{me} is NORMAL: ready")),
            Some(m) => Err(format!("{me} is {}: not ready", m.status.as_str())),
            None => Err(format!(
                "{me} is not in its own view of the cluster: not ready"
            )),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub node: NodeId,
    pub native_addr: SocketAddr,
    pub resp_addr: Option<SocketAddr>,
    pub up: bool,
    pub status: NodeStatus,
    pub generation: u64,
    pub heartbeat: u64,
    pub load_bytes: u64,
    /// Fraction of keys this node owns (as first replica), estimated.
    pub owns: f64,
    pub vnodes: u32,
}
