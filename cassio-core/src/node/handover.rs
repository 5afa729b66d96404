//! Moving data when the ring changes, as Cassandra does: announce, write
//! to pending replicas, stream, switch.
//!
//! A key's replicas are its owner (the most similar vnode) and the next
//! nodes by name, so when a node joins or leaves, a key can move to nodes
//! that held nothing of it, not only to or from the node that changed.
//!
//! 1. The node that changes announces JOINING or LEAVING and waits until
//!    every live peer knows ([`NodeShared::wait_until_writes_go_to_pending`]).
//!    From then on every coordinator also writes each key to its pending
//!    replicas (the replicas by [`crate::cluster::Gossiper::pending_ring`]
//!    that are not replicas now), and counts them on top of the level.
//! 2. Every node holding data streams ([`Handover`]): each key it
//!    replicates by the old ring goes to the key's gainers, the replicas by
//!    the new ring that were not by the old. Several old replicas send the
//!    same key; the receivers keep the newest cell.
//! 3. The node turns NORMAL or LEFT, and the new ring is the ring.
//!
//! So every write is either on the old replicas before streaming starts,
//! or acknowledged by the new replicas as well. One change at a time:
//! nodes refuse to stream for a join while another node leaves or a node
//! with a smaller name joins, and a node does not start leaving while
//! another joins or leaves.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::repair::{RangeEnd, bound};
use super::shared::{NodeShared, unexpected};
use crate::cluster::NodeStatus;
use crate::coordinator::repair::take_page;
use crate::error::{Error, Result};
use crate::net::Transport;
use crate::proto::{KeyedCell, Request, Response, StreamSummary};
use crate::ring::{Ring, Vector};
use crate::types::NodeId;

/// A node streams every cell it holds in one request: it gets this long.
const STREAM_TIMEOUT_MS: u64 = 6 * 60 * 60 * 1000;

/// Gossip intervals to wait for every live peer to see a node's new status.
const SPREAD_WAIT_INTERVALS: u64 = 30;

/// Where each key goes when the ring changes from `old` to `new`.
pub(crate) struct Handover {
    old: Arc<Ring>,
    new: Arc<Ring>,
    replication_factor: usize,
}

impl Handover {
    /// The nodes that replicate `key` by the new ring and did not by the
    /// old, if `me` replicated it by the old (a copy a node keeps from
    /// before an earlier change may be older than a purged tombstone: it is
    /// not sent).
    fn gainers_from(&self, me: &NodeId, key: &[u8]) -> Vec<NodeId> {
        let before = self.old.replica_set(key, self.replication_factor);
        if !before.contains(&me) {
            return Vec::new();
        }
        self.new
            .replica_set(key, self.replication_factor)
            .into_iter()
            .filter(|node| !before.contains(node))
            .cloned()
            .collect()
    }
}

/// A ring over the members `include` picks from a topology.
fn ring_of(
    topology: &[(NodeId, std::net::SocketAddr, bool, bool, Vec<Vector>)],
    include: impl Fn(&NodeId, bool) -> bool,
) -> Ring {
    Ring::new(
        topology
            .iter()
            .filter(|(node, _, _, owns_data, _)| include(node, *owns_data))
            .map(|(node, _, _, _, vnodes)| (node.clone(), &vnodes[..])),
    )
}

impl<T: Transport> NodeShared<T> {
    /// Sends each cell to every node that gains its key (all must be UP);
    /// the nodes that received any.
    pub(super) async fn send_to_gainers(
        &self,
        handover: &Handover,
        cells: Vec<KeyedCell>,
    ) -> Result<Vec<NodeId>> {
        let mut by_node: BTreeMap<NodeId, Vec<KeyedCell>> = BTreeMap::new();
        for cell in cells {
            for node in handover.gainers_from(&self.node_id, &cell.key) {
                by_node.entry(node).or_default().push(cell.clone());
            }
        }
        let now = self.now_ms();
        let receivers: Vec<NodeId> = by_node.keys().cloned().collect();
        for (node, cells) in by_node {
            if node == self.node_id {
                // This node gains keys it already holds: nothing to send.
                continue;
            }
            let reach = self.gossiper.lock().reach(&node, now);
            let Some((addr, true)) = reach else {
                return Err(Error::Remote {
                    node: node.to_string(),
                    message: "is DOWN, and it takes keys over".into(),
                });
            };
            self.replica_writes(&node, addr, cells).await?;
        }
        Ok(receivers)
    }

    /// Streams every cell this node holds to the nodes that gain its key,
    /// a page at a time.
    pub(super) async fn stream_handover(
        self: &Arc<Self>,
        handover: &Arc<Handover>,
    ) -> Result<StreamSummary> {
        let page_bytes_max = self.page_bytes_max();
        let mut summary = StreamSummary::default();
        let mut receivers = BTreeSet::new();
        let mut start: RangeEnd = None;
        loop {
            let (scan_handover, scan_start) = (handover.clone(), start.clone());
            let (page, more, scanned) = self
                .blocking(move |node| {
                    let mut scanned = 0u64;
                    let stopping = &node.repair_stopping;
                    let cells = node
                        .engine
                        .scan_cells(bound(&scan_start, false), Bound::Unbounded)
                        .inspect(|_| scanned += 1)
                        .map(|item| match stopping.load(Ordering::Acquire) {
                            // The node is stopping: the scan ends here.
                            true => Err(Error::Closed),
                            false => item,
                        })
                        .filter(|item| {
                            item.as_ref().map_or(true, |(key, _)| {
                                !scan_handover.gainers_from(&node.node_id, key).is_empty()
                            })
                        });
                    let (page, more) = take_page(cells, page_bytes_max)?;
                    Ok((page, more, scanned))
                })
                .await?;
            // A page that stopped early read one cell it did not take.
            summary.cells_scanned += scanned - u64::from(more);
            start = page.last().map(|cell| cell.key.clone());
            let cells: u64 = page
                .iter()
                .map(|cell| handover.gainers_from(&self.node_id, &cell.key).len() as u64)
                .sum();
            receivers.extend(self.send_to_gainers(handover, page).await?);
            receivers.remove(&self.node_id);
            summary.cells_streamed += cells;
            summary.nodes_streamed_to = receivers.len() as u32;
            if !more {
                return Ok(summary);
            }
        }
    }

    /// A `StreamRingChange` (from a peer, or this node's own): `node` is
    /// joining (`joined`), or leaving or gone; this node streams what it
    /// replicates by the ring before the change to the key's gainers.
    pub(crate) async fn answer_ring_change(
        self: &Arc<Self>,
        node: NodeId,
        joined: bool,
    ) -> Response {
        let handover = match self.handover_for(&node, joined) {
            Ok(handover) => Arc::new(handover),
            Err(message) => return Response::Invalid { message },
        };
        match self.stream_handover(&handover).await {
            Ok(summary) => {
                tracing::info!(%node, joined, ?summary, "streamed for a ring change");
                Response::Streamed(summary)
            }
            Err(e) => Response::Error {
                message: format!("streaming for {node}'s ring change: {e}"),
            },
        }
    }

    /// The rings before and after `node` joins (`joined`) or leaves, as
    /// this node sees them; why not, if this node cannot stream for it now.
    fn handover_for(&self, node: &NodeId, joined: bool) -> std::result::Result<Handover, String> {
        let gossiper = self.gossiper.lock();
        let members = gossiper.members(self.now_ms());
        let status = gossiper.status(node);
        let expected = match joined {
            true => matches!(status, Some(NodeStatus::Joining)),
            false => matches!(status, Some(NodeStatus::Leaving | NodeStatus::Left)),
        };
        if !expected {
            return Err(format!(
                "{} does not see {node} {} yet (it sees it {}); ask again once gossip settles",
                self.node_id,
                if joined { "JOINING" } else { "LEAVING or LEFT" },
                status.map_or("unknown", NodeStatus::as_str)
            ));
        }
        // One change at a time: joins go in name order, after any leave.
        if let Some(other) = members.iter().find(|m| {
            m.node != *node
                && (m.status == NodeStatus::Leaving
                    || (joined && m.status == NodeStatus::Joining && m.node < *node))
        }) {
            return Err(format!(
                "{} is {}: one change at a time; ask again once it is done",
                other.node,
                other.status.as_str()
            ));
        }
        let topology = gossiper.topology(self.now_ms());
        let with = Arc::new(ring_of(&topology, |n, owns_data| owns_data || n == node));
        let without = Arc::new(ring_of(&topology, |n, owns_data| owns_data && n != node));
        let (old, new) = if joined {
            (without, with)
        } else {
            (with, without)
        };
        Ok(Handover {
            old,
            new,
            replication_factor: self.config.replication_factor as usize,
        })
    }

    /// Asks every live node holding data, and this one (inline), to stream
    /// for `node`'s ring change; what each sent, or why it could not.
    pub(super) async fn stream_everywhere(
        self: &Arc<Self>,
        node: &NodeId,
        joined: bool,
    ) -> Vec<(NodeId, std::result::Result<StreamSummary, String>)> {
        let targets: Vec<_> = self
            .members()
            .into_iter()
            .filter(|m| m.node == self.node_id || (m.up && m.status.owns_data()))
            .map(|m| (m.node, m.native_addr))
            .collect();
        let timeout = Duration::from_millis(STREAM_TIMEOUT_MS);
        let mut outcomes = Vec::new();
        for (target, addr) in targets {
            let answer = if target == self.node_id {
                self.answer_ring_change(node.clone(), joined).await
            } else {
                let request = Request::StreamRingChange {
                    node: node.clone(),
                    joined,
                };
                let asked = async {
                    let conn = self.peers.get(addr).await?;
                    match conn.request(request, timeout).await? {
                        Response::Streamed(summary) => Ok(Response::Streamed(summary)),
                        other => Err(unexpected(&conn, other)),
                    }
                };
                asked.await.unwrap_or_else(|e: Error| Response::Error {
                    message: e.to_string(),
                })
            };
            let outcome = match answer {
                Response::Streamed(summary) => Ok(summary),
                Response::Error { message } | Response::Invalid { message } => Err(message),
                other => Err(format!("{other:?}")),
            };
            outcomes.push((target, outcome));
        }
        outcomes
    }

    /// Waits (up to [`SPREAD_WAIT_INTERVALS`] gossip intervals) until every
    /// live peer answers that `node` is `status`; how many did not in time.
    pub(super) async fn wait_until_peers_see(&self, node: &NodeId, status: NodeStatus) -> u32 {
        let interval = Duration::from_millis(self.config.gossip_interval_ms);
        let mut unconfirmed = 0;
        for attempt in 0..=SPREAD_WAIT_INTERVALS {
            if attempt > 0 {
                tokio::time::sleep(interval).await;
            }
            let peers: Vec<_> = self
                .members()
                .into_iter()
                .filter(|m| m.up && m.node != self.node_id && m.node != *node)
                .filter(|m| m.status != NodeStatus::Left)
                .collect();
            unconfirmed = 0;
            for peer in peers {
                if !self.peer_sees(peer.native_addr, node, status).await {
                    unconfirmed += 1;
                }
            }
            if unconfirmed == 0 {
                return 0;
            }
        }
        tracing::warn!(%node, unconfirmed, status = status.as_str(), "some live peers have not seen the change yet");
        unconfirmed
    }

    async fn peer_sees(
        &self,
        addr: std::net::SocketAddr,
        node: &NodeId,
        status: NodeStatus,
    ) -> bool {
        let Ok(conn) = self.peers.get(addr).await else {
            return false;
        };
        match conn
            .request(Request::ClusterStatus, self.peer_timeout())
            .await
        {
            Ok(Response::ClusterStatus(seen)) => seen
                .members
                .iter()
                .any(|m| m.node == *node && m.status == status),
            _ => false,
        }
    }

    /// Waits until every live peer sees `node` JOINING or LEAVING, then two
    /// gossip intervals more: each node notices at its next gossip tick
    /// that keys are moving, and from then on writes to their pending
    /// replicas too.
    pub(super) async fn wait_until_writes_go_to_pending(&self, node: &NodeId, status: NodeStatus) {
        self.wait_until_peers_see(node, status).await;
        tokio::time::sleep(Duration::from_millis(2 * self.config.gossip_interval_ms)).await;
    }
}
