//! Leaving the cluster, as Cassandra's `nodetool decommission` and
//! `removenode` do it.
//!
//! `Decommission` (on the node that leaves): the node turns LEAVING, still a
//! replica of everything it held, and streams its cells to the nodes that
//! replicate their keys once it is gone and do not yet (`handover.rs`).
//! Writes that reach it meanwhile are passed on to those nodes as well.
//! Then it turns LEFT, which takes it out of every ring, waits until its
//! live peers have seen that, leaves a marker in its data directory (so it
//! is not started again with its old data) and stops.
//!
//! `RemoveNode` (on any node, for a node that is down for good): the dead
//! node is announced LEFT on its behalf, and once the live nodes all know,
//! each of them streams the keys it holds to the nodes that gained them.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::handover::{ForwardFor, Handover, ring_of};
use super::repair::ClearOnDrop;
use super::shared::NodeShared;
use crate::cluster::NodeStatus;
use crate::error::Error;
use crate::net::Transport;
use crate::proto::{LeaveSummary, RemovalSummary, Request, Response, StreamSummary};
use crate::types::NodeId;

/// The file in a data directory that says its node has left the cluster.
pub(crate) const LEFT_MARKER: &str = "left";

/// Gossip intervals to wait for every live peer to see a node LEFT.
const SPREAD_WAIT_INTERVALS: u64 = 30;

/// The marker's text, and where it is.
pub(crate) fn left_marker_refusal(data_dir: &Path, name: &str) -> Option<Error> {
    let marker = data_dir.join(LEFT_MARKER);
    marker.exists().then(|| {
        Error::InvalidConfig(format!(
            "node {name} has left the cluster (decommissioned; see {}): its data now lives on other nodes. To join again as a new node, start it with an empty data directory",
            marker.display()
        ))
    })
}

impl<T: Transport> NodeShared<T> {
    /// This node leaves the cluster: see the module docs.
    pub(crate) async fn decommission(self: &Arc<Self>) -> Response {
        // Repairs and a leave exclude each other: a repair would compare
        // keys under a ring that is about to change.
        if self.repair_running.swap(true, Ordering::AcqRel) {
            return Response::Error {
                message: "a repair or decommission is already running on this node".into(),
            };
        }
        let _running = ClearOnDrop(&self.repair_running);
        let handover = match self.plan_handover() {
            Ok(handover) => Arc::new(handover),
            Err(refusal) => return *refusal,
        };
        let Some((counts, forwarder)) =
            self.start_forwarding(handover.clone(), ForwardFor::Leaving)
        else {
            return Response::Error {
                message: "a node is joining through this one; decommission once it is NORMAL"
                    .into(),
            };
        };
        self.gossiper.lock().set_status(NodeStatus::Leaving);
        tracing::info!(node = %self.node_id, "leaving the cluster: streaming data");
        let streamed = match self.stream_handover(&handover).await {
            Ok(streamed) => streamed,
            Err(e) => {
                self.stop_forwarding();
                let _ = forwarder.await;
                self.gossiper.lock().set_status(NodeStatus::Normal);
                tracing::warn!(error = %e, "decommission failed; the node stays NORMAL");
                return Response::Error {
                    message: format!(
                        "decommission failed, the node stays in the cluster (NORMAL); run it again once the cause is fixed: {e}"
                    ),
                };
            }
        };
        self.gossiper.lock().set_status(NodeStatus::Left);
        tracing::info!(node = %self.node_id, ?streamed, "streamed; announcing LEFT");
        let peers_unconfirmed = self.wait_until_peers_see_left(&self.node_id).await;
        // Writes from coordinators that had not seen LEFT yet are passed
        // on until here; later ones are refused (the coordinator hints or
        // fails them), never taken and dropped.
        self.refuse_replica_writes.store(true, Ordering::Release);
        self.stop_forwarding();
        let _ = forwarder.await;
        let summary = LeaveSummary {
            streamed,
            writes_forwarded: counts.forwarded.load(Ordering::Relaxed),
            writes_not_forwarded: counts.not_forwarded.load(Ordering::Relaxed),
            peers_unconfirmed,
        };
        let marker = self.config.data_dir().join(LEFT_MARKER);
        let text = format!("node {} left the cluster: {summary:?}\n", self.node_id);
        if let Err(e) = crate::storage::write_atomically(&marker, text.as_bytes()) {
            tracing::error!(error = %e, "cannot write the left marker");
        }
        tracing::info!(node = %self.node_id, ?summary, "left the cluster; stopping");
        // The answer goes out before the node stops.
        let node = self.clone();
        let delay = Duration::from_millis(self.config.gossip_interval_ms);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            node.left.send_replace(true);
        });
        Response::Decommissioned(summary)
    }

    /// The rings with and without this node, if it may leave now.
    fn plan_handover(&self) -> std::result::Result<Handover, Box<Response>> {
        let now = self.now_ms();
        let gossiper = self.gossiper.lock();
        match gossiper.status(&self.node_id) {
            Some(NodeStatus::Normal) => {}
            other => {
                return Err(Box::new(Response::Invalid {
                    message: format!(
                        "{} is {}, not NORMAL: it cannot start leaving",
                        self.node_id,
                        other.map_or("unknown", NodeStatus::as_str)
                    ),
                }));
            }
        }
        let others: Vec<_> = gossiper
            .topology(now)
            .into_iter()
            .filter(|(node, _, _, owns_data, _)| *owns_data && *node != self.node_id)
            .collect();
        if others.is_empty() {
            return Err(Box::new(Response::Invalid {
                message: format!(
                    "{} is the only node holding data: it has nowhere to hand its keys to",
                    self.node_id
                ),
            }));
        }
        if let Some((down, addr, ..)) = others.iter().find(|(_, _, up, ..)| !up) {
            return Err(Box::new(Response::Error {
                message: format!(
                    "{down} at {addr} is DOWN: bring it back, or remove it (cassio removenode {down}), before a node leaves"
                ),
            }));
        }
        Ok(Handover {
            old: gossiper.ring(),
            new: Arc::new(ring_of(&others, |_, _| true)),
            replication_factor: self.config.replication_factor as usize,
        })
    }

    /// Waits (up to [`SPREAD_WAIT_INTERVALS`] gossip intervals) until every
    /// live peer answers that `node` is LEFT; how many did not in time.
    async fn wait_until_peers_see_left(&self, node: &NodeId) -> u32 {
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
                if !self.peer_sees_left(peer.native_addr, node).await {
                    unconfirmed += 1;
                }
            }
            if unconfirmed == 0 {
                return 0;
            }
            tracing::debug!(%node, unconfirmed, "waiting for peers to see LEFT");
        }
        tracing::warn!(%node, unconfirmed, "some live peers have not seen LEFT yet");
        unconfirmed
    }

    async fn peer_sees_left(&self, addr: std::net::SocketAddr, node: &NodeId) -> bool {
        let Ok(conn) = self.peer(addr).await else {
            return false;
        };
        match conn
            .request(Request::ClusterStatus, self.peer_timeout())
            .await
        {
            Ok(Response::ClusterStatus(status)) => status
                .members
                .iter()
                .any(|m| m.node == *node && m.status == NodeStatus::Left),
            _ => false,
        }
    }

    /// Removes `node`, down for good, from the cluster: see the module docs.
    pub(crate) async fn remove_node(self: &Arc<Self>, node: NodeId) -> Response {
        {
            let mut gossiper = self.gossiper.lock();
            if gossiper.is_up(&node, self.now_ms()) {
                return Response::Invalid {
                    message: format!(
                        "{node} is UP: decommission it (cassio --host <its address> decommission) rather than remove it"
                    ),
                };
            }
            if let Err(message) = gossiper.remove_peer(&node) {
                return Response::Invalid { message };
            }
        }
        tracing::warn!(%node, "removed from the cluster; the live nodes stream its keys");
        let mut summary = RemovalSummary {
            node: node.clone(),
            streamed_from: Vec::new(),
            streamed: StreamSummary::default(),
            failed: Vec::new(),
        };
        let unconfirmed = self.wait_until_peers_see_left(&node).await;
        if unconfirmed > 0 {
            summary.failed.push(format!(
                "{unconfirmed} live node(s) had not seen {node} LEFT after {SPREAD_WAIT_INTERVALS} gossip intervals"
            ));
        }
        for (target, outcome) in self.stream_everywhere(&node, false).await {
            match outcome {
                Ok(streamed) => {
                    summary.streamed.add(&streamed);
                    summary.streamed_from.push(target);
                }
                Err(message) => summary.failed.push(format!("{target}: {message}")),
            }
        }
        Response::NodeRemoved(summary)
    }
}
