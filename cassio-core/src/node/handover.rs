//! Moving data when the ring changes, as Cassandra does: announce, write
//! to pending replicas, stream, switch.
//!
//! A key's replicas are its owner (the most similar vnode) and the next
//! nodes by name, so when a node joins or leaves, a key can move to nodes
//! that held nothing of it, not only to or from the node that changed.
//!
//! 1. The node that changes announces JOINING or LEAVING and waits until
//!    every live peer sees it as the node moving now
//!    ([`NodeShared::wait_until_peers_act_on`], [`moving_node`]: a leave
//!    first, joins in name order, one at a time). From then on every
//!    coordinator also writes each key to its pending replicas (the
//!    replicas by [`crate::cluster::Gossiper::pending_ring`] that are not
//!    replicas now), and counts them on top of the level.
//! 2. Every node holding data streams ([`Handover`]): each key it
//!    replicates by the old ring goes to the key's gainers, the replicas by
//!    the new ring that were not by the old. Several old replicas send the
//!    same key; the receivers keep the newest cell.
//! 3. The node turns `JoiningStreamed` or `LeavingStreamed`: reads use the
//!    new ring, writes still go to both. It waits until every live peer
//!    reads so.
//! 4. The node turns NORMAL or LEFT, and the new ring is the ring.
//!
//! So every write is either on the old replicas before streaming starts,
//! or acknowledged by the new replicas as well; and two coordinators are
//! at most one step apart, so a read and a write always share a quorum (a
//! reader by the old ring and a writer by the new one alone never meet).
//! Nodes refuse to stream for any node but the one moving.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::repair::{RangeEnd, bound};
use super::shared::{NodeShared, unexpected};
use crate::cluster::{NodeStatus, moving_node};
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

/// Whether a view of `members` has `node` in `status`; for a move's phase,
/// as the node moving ([`moving_node`]), which is when a coordinator acts
/// on it.
fn sees<'m>(
    members: impl IntoIterator<Item = (&'m NodeId, NodeStatus, u64)>,
    node: &NodeId,
    status: NodeStatus,
) -> bool {
    match status {
        NodeStatus::Joining
        | NodeStatus::JoiningStreamed
        | NodeStatus::Leaving
        | NodeStatus::LeavingStreamed => moving_node(members) == Some((node, status)),
        NodeStatus::Normal | NodeStatus::Left => members
            .into_iter()
            .any(|(n, s, _)| n == node && s == status),
    }
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
            true => status.is_some_and(NodeStatus::is_joining),
            false => status.is_some_and(|s| s.is_leaving() || s == NodeStatus::Left),
        };
        if !expected {
            return Err(format!(
                "{} does not see {node} {} yet (it sees it {}); ask again once gossip settles",
                self.node_id,
                if joined { "JOINING" } else { "LEAVING or LEFT" },
                status.map_or("unknown", NodeStatus::as_str)
            ));
        }
        // One change at a time: a leave first, joins in name order (the
        // moving node is the one coordinators write to as pending). A node
        // removed (LEFT) waits only for a leave.
        let moving = match status {
            Some(NodeStatus::Left) => members
                .iter()
                .find(|m| m.status.is_leaving())
                .map(|m| (&m.node, m.status)),
            _ => moving_node(members.iter().map(|m| (&m.node, m.status, m.generation))),
        };
        if let Some((other, other_status)) = moving.filter(|(mover, _)| *mover != node) {
            return Err(format!(
                "{other} is {}: one change at a time; ask again once it is done",
                other_status.as_str()
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
    /// live peer answers that `node` is `status` (for a move's phase: that
    /// `node` is the node moving, [`moving_node`]); how many did not in
    /// time.
    pub(super) async fn wait_until_peers_see(&self, node: &NodeId, status: NodeStatus) -> u32 {
        let interval = Duration::from_millis(self.config.gossip_interval_ms);
        let mut unconfirmed = 0;
        for attempt in 0..=SPREAD_WAIT_INTERVALS {
            if attempt > 0 {
                tokio::time::sleep(interval).await;
            }
            let members = self.members();
            let peers: Vec<_> = members
                .iter()
                .filter(|m| m.up && m.node != self.node_id && m.node != *node)
                .filter(|m| m.status != NodeStatus::Left)
                .collect();
            // Peers are asked once this node sees it so itself (which
            // counts as one more unconfirmed until then).
            let view = members.iter().map(|m| (&m.node, m.status, m.generation));
            if !sees(view, node, status) {
                unconfirmed = peers.len() as u32 + 1;
                continue;
            }
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
            Ok(Response::ClusterStatus(seen)) => sees(
                seen.members
                    .iter()
                    .map(|m| (&m.node, m.status, m.generation)),
                node,
                status,
            ),
            _ => false,
        }
    }

    /// Waits until every live peer sees `node` as the moving node in
    /// `status` (see [`moving_node`]), then two gossip intervals more, for
    /// requests that began under the view before; how many did not confirm
    /// in time.
    pub(super) async fn wait_until_peers_act_on(&self, node: &NodeId, status: NodeStatus) -> u32 {
        let unconfirmed = self.wait_until_peers_see(node, status).await;
        tokio::time::sleep(Duration::from_millis(2 * self.config.gossip_interval_ms)).await;
        unconfirmed
    }

    /// [`Self::wait_until_peers_act_on`] until every live peer confirms,
    /// however long that takes: a move's streamed phase cannot be undone
    /// (a coordinator still reading by the old ring would then meet one
    /// writing to the new ring alone), so the next step waits for all. A
    /// peer that goes DOWN drops out.
    pub(super) async fn wait_until_all_peers_act_on(&self, node: &NodeId, status: NodeStatus) {
        loop {
            let unconfirmed = self.wait_until_peers_act_on(node, status).await;
            if unconfirmed == 0 {
                return;
            }
            tracing::warn!(%node, unconfirmed, status = ?status, "waiting for every live peer to act on the move's phase");
        }
    }
}
