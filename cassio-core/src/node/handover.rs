//! Moving data when the ring changes. A key's replicas are its owner (the
//! most similar vnode) and the next nodes by id, so when a node joins or
//! leaves, a key can move to nodes that held nothing of it before, not only
//! to or from the node that changed. Every node that holds a key under the
//! old ring therefore sends it to each node that replicates it under the
//! new ring and did not under the old (a [`Handover`]): the leaving node
//! for its own data (`leave.rs`), and every live node when a dead node is
//! removed or a new node joins (`StreamRingChange`). Several old replicas
//! send the same key; the receivers keep the newest cell, as every write.

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

/// Where each key goes when the ring changes from `old` to `new`.
pub(crate) struct Handover {
    pub(super) old: Arc<Ring>,
    pub(super) new: Arc<Ring>,
    pub(super) replication_factor: usize,
}

impl Handover {
    /// The nodes that replicate `key` by the new ring and did not by the
    /// old.
    pub(super) fn gainers(&self, key: &[u8]) -> Vec<NodeId> {
        let before = self.old.replica_set(key, self.replication_factor);
        self.new
            .replica_set(key, self.replication_factor)
            .into_iter()
            .filter(|node| !before.contains(node))
            .cloned()
            .collect()
    }
}

/// A ring over the members `include` picks from a topology.
pub(super) fn ring_of(
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
            for node in handover.gainers(&cell.key) {
                by_node.entry(node).or_default().push(cell.clone());
            }
        }
        let now = self.now_ms();
        for (node, cells) in &by_node {
            if *node == self.node_id {
                // This node gains keys it already holds: nothing to send.
                continue;
            }
            let reach = self.gossiper.lock().reach(node, now);
            let Some((addr, true)) = reach else {
                return Err(Error::Remote {
                    node: node.to_string(),
                    message: "is DOWN, and it takes keys over".into(),
                });
            };
            self.replica_writes(node, addr, cells.clone()).await?;
        }
        Ok(by_node.into_keys().collect())
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
                            item.as_ref()
                                .map_or(true, |(key, _)| !scan_handover.gainers(key).is_empty())
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
                .map(|cell| handover.gainers(&cell.key).len() as u64)
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

    /// A peer's `StreamRingChange`: `node` joined or left this node's ring.
    pub(crate) async fn answer_ring_change(
        self: &Arc<Self>,
        node: NodeId,
        joined: bool,
    ) -> Response {
        let handover = {
            let gossiper = self.gossiper.lock();
            let status = gossiper.status(&node);
            let known = match joined {
                true => status.is_some_and(NodeStatus::owns_data),
                false => status == Some(NodeStatus::Left),
            };
            if !known {
                return Response::Invalid {
                    message: format!(
                        "{} does not know {node} as {} yet; ask again once gossip settles",
                        self.node_id,
                        if joined { "a member" } else { "LEFT" }
                    ),
                };
            }
            let topology = gossiper.topology(self.now_ms());
            let old = ring_of(&topology, |n, owns_data| match joined {
                true => owns_data && *n != node,
                false => owns_data || *n == node,
            });
            Handover {
                old: Arc::new(old),
                new: gossiper.ring(),
                replication_factor: self.config.replication_factor as usize,
            }
        };
        match self.stream_handover(&Arc::new(handover)).await {
            Ok(summary) => {
                tracing::info!(%node, joined, ?summary, "streamed for a ring change");
                Response::Streamed(summary)
            }
            Err(e) => Response::Error {
                message: format!("streaming for {node}'s ring change: {e}"),
            },
        }
    }

    /// Asks every live node holding data (this one inline) to stream for
    /// `node`'s ring change; what each sent, or why it could not.
    pub(super) async fn stream_everywhere(
        self: &Arc<Self>,
        node: &NodeId,
        joined: bool,
    ) -> Vec<(NodeId, std::result::Result<StreamSummary, String>)> {
        let targets: Vec<_> = self
            .members()
            .into_iter()
            .filter(|m| m.up && m.status.owns_data() && m.node != *node)
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
                    let conn = self.peer(addr).await?;
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
}
