//! What gossip spreads about each endpoint, and the three gossip messages.
//!
//! Every field of an endpoint's state carries the version it was last set at
//! (one counter per endpoint and generation, bumped by the endpoint itself on
//! every heartbeat and change). A digest is (node, generation, highest
//! version); a delta carries only the fields newer than what the other side
//! has, so a steady cluster gossips heartbeats, not vnode vectors.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::ring::Vector;
use crate::types::NodeId;

/// Where a node is in its life in the cluster.
///
/// A join or a leave goes through two phases, as Cassandra's transactional
/// metadata has it: first every coordinator writes the moving keys to
/// their replicas by both rings and reads by the old one (`Joining`,
/// `Leaving`); once streaming is over, reads move to the new ring while
/// writes still go to both (`JoiningStreamed`, `LeavingStreamed`); only
/// when every live node reads by the new ring does the node turn `Normal`
/// or `Left`, and writes go to the new ring alone. Coordinators one phase
/// apart then always share a quorum. Users see the two phases of a join as
/// JOINING, those of a leave as LEAVING.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeStatus {
    Joining,
    Normal,
    Leaving,
    Left,
    JoiningStreamed,
    LeavingStreamed,
}

impl NodeStatus {
    /// The statuses users see (the phases of a move show as their move).
    pub const ALL: [NodeStatus; 4] = [
        NodeStatus::Joining,
        NodeStatus::Normal,
        NodeStatus::Leaving,
        NodeStatus::Left,
    ];

    pub fn as_str(self) -> &'static str {
        self.shown().name()
    }

    /// The status users see: a move's phases show as the move.
    pub fn shown(self) -> NodeStatus {
        match self {
            NodeStatus::JoiningStreamed => NodeStatus::Joining,
            NodeStatus::LeavingStreamed => NodeStatus::Leaving,
            other => other,
        }
    }

    fn name(self) -> &'static str {
        match self {
            NodeStatus::Joining | NodeStatus::JoiningStreamed => "JOINING",
            NodeStatus::Normal => "NORMAL",
            NodeStatus::Leaving | NodeStatus::LeavingStreamed => "LEAVING",
            NodeStatus::Left => "LEFT",
        }
    }

    /// Whether the node's vnodes take part in placement by the ring (its
    /// writes' natural replicas, repair, cleanup).
    pub fn owns_data(self) -> bool {
        matches!(
            self,
            NodeStatus::Normal | NodeStatus::Leaving | NodeStatus::LeavingStreamed
        )
    }

    /// Either phase of a join.
    pub fn is_joining(self) -> bool {
        matches!(self, NodeStatus::Joining | NodeStatus::JoiningStreamed)
    }

    /// Either phase of a leave.
    pub fn is_leaving(self) -> bool {
        matches!(self, NodeStatus::Leaving | NodeStatus::LeavingStreamed)
    }

    /// The second phase of a move: streamed, reads by the new ring.
    pub fn is_streamed(self) -> bool {
        matches!(
            self,
            NodeStatus::JoiningStreamed | NodeStatus::LeavingStreamed
        )
    }
}

/// The one node whose move the cluster carries out now, and its status,
/// from each member's (name, status, generation): one already streamed,
/// else a leaving one, else the joining one that started first (smallest
/// generation, then name). Other joining nodes wait their turn: no data
/// moves to them yet, and one that starts later never takes the turn of
/// one already waiting or streaming.
pub fn moving_node<'m>(
    members: impl IntoIterator<Item = (&'m NodeId, NodeStatus, u64)>,
) -> Option<(&'m NodeId, NodeStatus)> {
    let rank = |status: NodeStatus| match status {
        NodeStatus::JoiningStreamed | NodeStatus::LeavingStreamed => Some(0),
        NodeStatus::Leaving => Some(1),
        NodeStatus::Joining => Some(2),
        NodeStatus::Normal | NodeStatus::Left => None,
    };
    members
        .into_iter()
        .filter_map(|(node, status, generation)| Some((rank(status)?, generation, node, status)))
        .min_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)))
        .map(|(_, _, node, status)| (node, status))
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Versioned<T> {
    pub value: T,
    pub version: u64,
}

impl<T: Clone> Versioned<T> {
    fn newer_than(&self, version: u64) -> Option<Versioned<T>> {
        (self.version > version).then(|| self.clone())
    }

    /// Takes `other` if it is newer.
    fn merge(&mut self, other: Option<Versioned<T>>) -> bool {
        match other {
            Some(o) if o.version > self.version => {
                *self = o;
                true
            }
            _ => false,
        }
    }
}

/// Everything gossip knows about one endpoint in one generation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointState {
    /// The endpoint's start time (ms); a restart gives a higher generation.
    pub generation: u64,
    /// Version of the endpoint's latest heartbeat.
    pub heartbeat: u64,
    pub status: Versioned<NodeStatus>,
    pub native_addr: Versioned<SocketAddr>,
    pub resp_addr: Versioned<Option<SocketAddr>>,
    pub vnodes: Versioned<Vec<Vector>>,
    pub load_bytes: Versioned<u64>,
}

impl EndpointState {
    pub fn max_version(&self) -> u64 {
        self.heartbeat
            .max(self.status.version)
            .max(self.native_addr.version)
            .max(self.resp_addr.version)
            .max(self.vnodes.version)
            .max(self.load_bytes.version)
    }

    /// The fields set after `version` (everything for 0).
    pub fn delta_after(&self, node: &NodeId, version: u64) -> EndpointDelta {
        EndpointDelta {
            node: node.clone(),
            generation: self.generation,
            heartbeat: self.heartbeat,
            status: self.status.newer_than(version),
            native_addr: self.native_addr.newer_than(version),
            resp_addr: self.resp_addr.newer_than(version),
            vnodes: self.vnodes.newer_than(version),
            load_bytes: self.load_bytes.newer_than(version),
        }
    }

    /// Merges a delta of the same generation; true if anything but the
    /// heartbeat changed.
    pub(crate) fn merge(&mut self, delta: EndpointDelta) -> bool {
        self.heartbeat = self.heartbeat.max(delta.heartbeat);
        let mut changed = self.status.merge(delta.status);
        changed |= self.native_addr.merge(delta.native_addr);
        changed |= self.resp_addr.merge(delta.resp_addr);
        changed |= self.vnodes.merge(delta.vnodes);
        self.load_bytes.merge(delta.load_bytes);
        changed
    }
}

/// Part (or all) of an endpoint's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointDelta {
    pub node: NodeId,
    pub generation: u64,
    pub heartbeat: u64,
    pub status: Option<Versioned<NodeStatus>>,
    pub native_addr: Option<Versioned<SocketAddr>>,
    pub resp_addr: Option<Versioned<Option<SocketAddr>>>,
    pub vnodes: Option<Versioned<Vec<Vector>>>,
    pub load_bytes: Option<Versioned<u64>>,
}

impl EndpointDelta {
    /// The whole state, if this delta carries every field (required to learn
    /// a new endpoint or a new generation).
    pub(crate) fn into_full(self) -> Option<EndpointState> {
        Some(EndpointState {
            generation: self.generation,
            heartbeat: self.heartbeat,
            status: self.status?,
            native_addr: self.native_addr?,
            resp_addr: self.resp_addr?,
            vnodes: self.vnodes?,
            load_bytes: self.load_bytes?,
        })
    }
}

/// (node, generation, highest version known).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub node: NodeId,
    pub generation: u64,
    pub max_version: u64,
}

/// Gossip round, step 1 (initiator → peer): what the initiator knows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GossipSyn {
    pub digests: Vec<Digest>,
}

/// Step 2 (peer → initiator): what the initiator lacks, and what the peer lacks.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GossipAck {
    pub deltas: Vec<EndpointDelta>,
    pub requests: Vec<Digest>,
}

/// Step 3 (initiator → peer): what the peer asked for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GossipAck2 {
    pub deltas: Vec<EndpointDelta>,
}
