//! Moving data when the ring changes. A key's replicas are its owner (the
//! most similar vnode) and the next nodes by id, so when a node joins or
//! leaves, a key can move to nodes that held nothing of it before, not only
//! to or from the node that changed. Every node that holds a key under the
//! old ring therefore sends it to each node that replicates it under the
//! new ring and did not under the old (a [`Handover`]): the leaving node
//! for its own data (`leave.rs`), and every live node when a dead node is
//! removed or a new node joins (`StreamRingChange`). Several old replicas
//! send the same key; the receivers keep the newest cell, as every write.
//!
//! While data moves, writes keep coming to the old replicas; a node that
//! streams for a leave or a join also passes each write it applies on to
//! the nodes that gain its key ([`Forwarding`]): the leaving node until it
//! stops, the others until the joining node is NORMAL everywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::repair::{RangeEnd, bound};
use super::shared::{NodeShared, unexpected};
use crate::cluster::NodeStatus;
use crate::coordinator::repair::take_page;
use crate::error::{Error, Result};
use crate::net::Transport;
use crate::proto::{KeyedCell, Request, Response, StreamSummary};
use crate::ring::{Ring, Vector};
use crate::storage::Cell;
use crate::types::NodeId;

/// A node streams every cell it holds in one request: it gets this long.
const STREAM_TIMEOUT_MS: u64 = 6 * 60 * 60 * 1000;

/// Batches of passed-on writes waiting to be sent, at most; a write that
/// finds the queue full is counted as not passed on (its other replicas
/// have it; a repair restores the new one's copy).
const FORWARD_QUEUE_BATCHES_MAX: usize = 4096;

/// Gossip intervals a node keeps passing writes on after it saw a joining
/// node NORMAL: coordinators that have not seen it yet still write to the
/// old replicas only.
const JOIN_FORWARD_GRACE_INTERVALS: u64 = 10;

/// A join that takes longer than this (the joining node died, say) stops
/// the passing on.
const JOIN_FORWARD_MAX_MS: u64 = 30 * 60 * 1000;

/// Why a node passes the writes it applies on.
pub(crate) enum ForwardFor {
    /// It is leaving; it stops when done.
    Leaving,
    /// `node` is joining; it stops [`JOIN_FORWARD_GRACE_INTERVALS`] after
    /// `node` is seen NORMAL.
    Join {
        node: NodeId,
        started_ms: u64,
        normal_seen_ms: Option<u64>,
    },
}

#[derive(Default)]
pub(crate) struct ForwardCounts {
    pub(crate) forwarded: AtomicU64,
    pub(crate) not_forwarded: AtomicU64,
}

/// Set on a node while data moves for a ring change: writes it applies are
/// passed on to the nodes that gain their keys.
pub(crate) struct Forwarding {
    handover: Arc<Handover>,
    queue: mpsc::Sender<Vec<KeyedCell>>,
    counts: Arc<ForwardCounts>,
    reason: ForwardFor,
}

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

    /// A peer's `StreamRingChange`: `node` is joining (`joined`), or left
    /// this node's ring. For a join this node passes writes on until the
    /// joining node is NORMAL ([`ForwardFor::Join`]).
    pub(crate) async fn answer_ring_change(
        self: &Arc<Self>,
        node: NodeId,
        joined: bool,
    ) -> Response {
        let handover = {
            let gossiper = self.gossiper.lock();
            let expected = if joined {
                NodeStatus::Joining
            } else {
                NodeStatus::Left
            };
            if gossiper.status(&node) != Some(expected) {
                return Response::Invalid {
                    message: format!(
                        "{} does not know {node} as {} yet; ask again once gossip settles",
                        self.node_id,
                        expected.as_str()
                    ),
                };
            }
            let topology = gossiper.topology(self.now_ms());
            let (old, new) = if joined {
                let with_joiner = ring_of(&topology, |n, owns_data| owns_data || *n == node);
                (gossiper.ring(), Arc::new(with_joiner))
            } else {
                let with_gone = ring_of(&topology, |n, owns_data| owns_data || *n == node);
                (Arc::new(with_gone), gossiper.ring())
            };
            Arc::new(Handover {
                old,
                new,
                replication_factor: self.config.replication_factor as usize,
            })
        };
        if joined && !self.forwarding_for_join_of(&node) {
            let reason = ForwardFor::Join {
                node: node.clone(),
                started_ms: self.now_ms(),
                normal_seen_ms: None,
            };
            if self.start_forwarding(handover.clone(), reason).is_none() {
                return Response::Invalid {
                    message: format!(
                        "{} is moving data for another ring change; ask again later",
                        self.node_id
                    ),
                };
            }
        }
        match self.stream_handover(&handover).await {
            Ok(summary) => {
                tracing::info!(%node, joined, ?summary, "streamed for a ring change");
                Response::Streamed(summary)
            }
            Err(e) => {
                if joined {
                    self.stop_forwarding();
                }
                Response::Error {
                    message: format!("streaming for {node}'s ring change: {e}"),
                }
            }
        }
    }

    /// Whether this node passes writes on for `node`'s join already (the
    /// joining node asks again after a failure elsewhere).
    fn forwarding_for_join_of(&self, node: &NodeId) -> bool {
        matches!(
            &*self.forwarding.lock(),
            Some(Forwarding { reason: ForwardFor::Join { node: joining, .. }, .. }) if joining == node
        )
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

    /// Starts passing applied writes on for `handover`; `None` if this node
    /// does so for another ring change already. The counts, and the task
    /// that sends (it ends once [`NodeShared::stop_forwarding`] was called
    /// and the queue is sent).
    pub(super) fn start_forwarding(
        self: &Arc<Self>,
        handover: Arc<Handover>,
        reason: ForwardFor,
    ) -> Option<(Arc<ForwardCounts>, JoinHandle<()>)> {
        let mut slot = self.forwarding.lock();
        if slot.is_some() {
            return None;
        }
        let (queue, batches) = mpsc::channel(FORWARD_QUEUE_BATCHES_MAX);
        let counts = Arc::new(ForwardCounts::default());
        let sender = tokio::spawn(self.clone().forward_writes(
            handover.clone(),
            counts.clone(),
            batches,
        ));
        *slot = Some(Forwarding {
            handover,
            queue,
            counts: counts.clone(),
            reason,
        });
        self.is_forwarding.store(true, Ordering::Release);
        Some((counts, sender))
    }

    pub(super) fn stop_forwarding(&self) {
        self.is_forwarding.store(false, Ordering::Release);
        // Dropping the queue's sender ends the task once the queue is sent.
        self.forwarding.lock().take();
    }

    /// Passes `writes` on to the nodes that gain their keys, if data is
    /// moving; through a queue, so the caller never waits.
    pub(crate) fn forward_if_moving<K: AsRef<[u8]>>(&self, writes: &[(K, Cell)]) {
        if !self.is_forwarding.load(Ordering::Acquire) {
            return;
        }
        let forwarding = self.forwarding.lock();
        let Some(Forwarding {
            handover,
            queue,
            counts,
            ..
        }) = forwarding.as_ref()
        else {
            return;
        };
        let batch: Vec<KeyedCell> = writes
            .iter()
            .filter(|(key, _)| !handover.gainers(key.as_ref()).is_empty())
            .map(|(key, cell)| KeyedCell {
                key: key.as_ref().to_vec(),
                cell: cell.clone(),
            })
            .collect();
        let count = batch.len() as u64;
        if count > 0 && queue.try_send(batch).is_err() {
            counts.not_forwarded.fetch_add(count, Ordering::Relaxed);
        }
    }

    /// Sends passed-on writes until the queue closes.
    async fn forward_writes(
        self: Arc<Self>,
        handover: Arc<Handover>,
        counts: Arc<ForwardCounts>,
        mut batches: mpsc::Receiver<Vec<KeyedCell>>,
    ) {
        while let Some(batch) = batches.recv().await {
            let count = batch.len() as u64;
            match self.send_to_gainers(&handover, batch).await {
                Ok(_) => counts.forwarded.fetch_add(count, Ordering::Relaxed),
                Err(e) => {
                    tracing::warn!(error = %e, writes = count, "cannot pass writes on to the nodes that gain their keys");
                    counts.not_forwarded.fetch_add(count, Ordering::Relaxed)
                }
            };
        }
    }

    /// Ends the passing on for a join once the joining node has been
    /// NORMAL for a while, or is gone, or took too long (every gossip tick).
    pub(crate) fn end_join_forwarding_if_done(&self) {
        if !self.is_forwarding.load(Ordering::Acquire) {
            return;
        }
        let Some(joiner) = (match &*self.forwarding.lock() {
            Some(Forwarding {
                reason: ForwardFor::Join { node, .. },
                ..
            }) => Some(node.clone()),
            _ => None,
        }) else {
            return;
        };
        let now = self.now_ms();
        let (status, up) = {
            let gossiper = self.gossiper.lock();
            (gossiper.status(&joiner), gossiper.is_up(&joiner, now))
        };
        let grace_ms = JOIN_FORWARD_GRACE_INTERVALS * self.config.gossip_interval_ms;
        let mut forwarding = self.forwarding.lock();
        let Some(Forwarding {
            reason:
                ForwardFor::Join {
                    started_ms,
                    normal_seen_ms,
                    ..
                },
            counts,
            ..
        }) = forwarding.as_mut()
        else {
            return;
        };
        let done = match status {
            Some(NodeStatus::Normal) => now >= *normal_seen_ms.get_or_insert(now) + grace_ms,
            Some(NodeStatus::Joining) => !up || now >= *started_ms + JOIN_FORWARD_MAX_MS,
            _ => true,
        };
        if done {
            tracing::info!(
                node = %joiner,
                status = status.map_or("unknown", NodeStatus::as_str),
                forwarded = counts.forwarded.load(Ordering::Relaxed),
                not_forwarded = counts.not_forwarded.load(Ordering::Relaxed),
                "done passing writes on for a join"
            );
            forwarding.take();
            self.is_forwarding.store(false, Ordering::Release);
        }
    }
}
