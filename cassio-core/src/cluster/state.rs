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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeStatus {
    Joining,
    Normal,
    Leaving,
    Left,
}

impl NodeStatus {
    pub const ALL: [NodeStatus; 4] = [
        NodeStatus::Joining,
        NodeStatus::Normal,
        NodeStatus::Leaving,
        NodeStatus::Left,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Joining => "JOINING",
            NodeStatus::Normal => "NORMAL",
            NodeStatus::Leaving => "LEAVING",
            NodeStatus::Left => "LEFT",
        }
    }

    /// Whether the node's vnodes take part in placement.
    pub fn owns_data(self) -> bool {
        matches!(self, NodeStatus::Normal | NodeStatus::Leaving)
    }
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
