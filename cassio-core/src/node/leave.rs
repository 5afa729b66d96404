//! Leaving the cluster, as Cassandra's `nodetool decommission` and
//! `removenode` do it (the data moves as `handover.rs` says).
//!
//! `Decommission` (on the node that leaves): the node turns LEAVING, still a
//! replica of everything it held, and waits until every coordinator also
//! writes to the nodes that replicate its keys without it. Then every node
//! holding data, itself included, streams what it replicates to those
//! nodes. It writes a marker in its data directory (it must not start again
//! on its old data), moves reads off itself (`LeavingStreamed`, still
//! written to) until every live peer reads so, turns LEFT, which takes it
//! out of every ring, waits until its live peers have seen that, refuses
//! the replica writes that still come, and stops.
//!
//! `RemoveNode` (on any node, for a node that is down for good): the dead
//! node is announced LEFT on its behalf, and once the live nodes all know,
//! each of them streams the keys it replicated with the dead node to their
//! new replicas.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::shared::NodeShared;
use crate::cluster::NodeStatus;
use crate::error::Error;
use crate::net::Transport;
use crate::proto::{MoveSummary, Response, StreamSummary};
use crate::types::NodeId;

/// The file in a data directory that says its node has left the cluster.
pub(crate) const LEFT_MARKER: &str = "left";

/// Why a node whose data directory holds the marker must not start.
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
        let Some(_running) = self.claim_repair_slot() else {
            return Response::Error {
                message: "a repair or decommission is already running on this node".into(),
            };
        };
        if let Err(refusal) = self.check_may_leave() {
            return *refusal;
        }
        let me = self.node_id.clone();
        self.gossiper.lock().set_status(NodeStatus::Leaving);
        tracing::info!(node = %me, "leaving the cluster");
        let unconfirmed = self.wait_until_peers_act_on(&me, NodeStatus::Leaving).await;
        if unconfirmed > 0 {
            // Streaming now could miss writes from a coordinator that does
            // not yet write to this node's successors.
            self.gossiper.lock().set_status(NodeStatus::Normal);
            return Response::Error {
                message: format!(
                    "decommission failed, the node stays in the cluster (NORMAL): {unconfirmed} live peer(s) did not confirm in time that they see it LEAVING; run it again"
                ),
            };
        }
        let mut summary = MoveSummary {
            node: me.clone(),
            streamed_from: Vec::new(),
            streamed: StreamSummary::default(),
            peers_unconfirmed: 0,
            failed: Vec::new(),
        };
        self.collect_streams(&mut summary, false).await;
        if !summary.failed.is_empty() {
            self.gossiper.lock().set_status(NodeStatus::Normal);
            tracing::warn!(failed = ?summary.failed, "decommission failed; the node stays NORMAL");
            return Response::Error {
                message: format!(
                    "decommission failed, the node stays in the cluster (NORMAL); run it again once the cause is fixed: {}",
                    summary.failed.join("; ")
                ),
            };
        }
        // The marker first: a crash from here on must not bring the node
        // back into the ring with the data it handed over.
        let marker = self.config.data_dir().join(LEFT_MARKER);
        let text = format!("node {me} left the cluster: {summary:?}\n");
        if let Err(e) = crate::storage::write_atomically(&marker, text.as_bytes()) {
            self.gossiper.lock().set_status(NodeStatus::Normal);
            return Response::Error {
                message: format!("decommission failed, the node stays NORMAL: {e}"),
            };
        }
        // Reads move to the ring without this node while writes still come
        // to it; once every node reads so, it leaves the rings.
        self.gossiper.lock().set_status(NodeStatus::LeavingStreamed);
        self.wait_until_all_peers_act_on(&me, NodeStatus::LeavingStreamed)
            .await;
        self.gossiper.lock().set_status(NodeStatus::Left);
        summary.peers_unconfirmed = self.wait_until_peers_see(&me, NodeStatus::Left).await;
        // Coordinators late to see LEFT get an error (and hint), rather than
        // an acknowledgement from a node about to vanish.
        self.refuse_replica_writes.store(true, Ordering::Release);
        tracing::info!(node = %me, ?summary, "left the cluster; stopping");
        // The answer goes out before the node stops.
        let node = self.clone();
        let delay = Duration::from_millis(self.config.gossip_interval_ms);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            node.left.send_replace(true);
        });
        Response::Decommissioned(summary)
    }

    /// Why this node may not start leaving now, if it may not.
    fn check_may_leave(&self) -> std::result::Result<(), Box<Response>> {
        let members = self.members();
        let me = members.iter().find(|m| m.node == self.node_id);
        if let Some(me) = me.filter(|me| me.status != NodeStatus::Normal) {
            return Err(Box::new(Response::Invalid {
                message: format!(
                    "{} is {}, not NORMAL: it cannot start leaving",
                    self.node_id,
                    me.status.as_str()
                ),
            }));
        }
        let others: Vec<_> = members
            .iter()
            .filter(|m| m.node != self.node_id && m.status != NodeStatus::Left)
            .collect();
        if !others.iter().any(|m| m.status.owns_data()) {
            return Err(Box::new(Response::Invalid {
                message: format!(
                    "{} is the only node holding data: it has nowhere to hand its keys to",
                    self.node_id
                ),
            }));
        }
        if let Some(moving) = others
            .iter()
            .find(|m| !m.status.owns_data() || m.status.is_leaving())
        {
            return Err(Box::new(Response::Error {
                message: format!(
                    "{} is {}: one change at a time; decommission once it is done",
                    moving.node,
                    moving.status.as_str()
                ),
            }));
        }
        if let Some(down) = others.iter().find(|m| !m.up) {
            return Err(Box::new(Response::Error {
                message: format!(
                    "{} at {} is DOWN: bring it back, or remove it (cassio removenode {}), before a node leaves",
                    down.node, down.native_addr, down.node
                ),
            }));
        }
        Ok(())
    }

    /// Asks every live node holding data to stream for `summary.node`'s
    /// change and records what each did.
    async fn collect_streams(self: &Arc<Self>, summary: &mut MoveSummary, joined: bool) {
        let node = summary.node.clone();
        for (target, outcome) in self.stream_everywhere(&node, joined).await {
            match outcome {
                Ok(streamed) => {
                    summary.streamed.add(&streamed);
                    summary.streamed_from.push(target);
                }
                Err(message) => summary.failed.push(format!("{target}: {message}")),
            }
        }
    }

    /// Removes `node`, down for good, from the cluster: see the module docs.
    pub(crate) async fn remove_node(self: &Arc<Self>, node: NodeId) -> Response {
        let was = {
            let mut gossiper = self.gossiper.lock();
            let was = gossiper.status(&node);
            if node == self.node_id || gossiper.is_up(&node, self.now_ms()) {
                return Response::Invalid {
                    message: format!(
                        "{node} is UP: decommission it (cassio --host <its address> decommission) rather than remove it"
                    ),
                };
            }
            if was != Some(NodeStatus::Left)
                && let Err(message) = gossiper.remove_peer(&node)
            {
                return Response::Invalid { message };
            }
            was
        };
        tracing::warn!(%node, "removed from the cluster; the live nodes stream its keys");
        let mut summary = MoveSummary {
            node: node.clone(),
            streamed_from: Vec::new(),
            streamed: StreamSummary::default(),
            peers_unconfirmed: self.wait_until_peers_see(&node, NodeStatus::Left).await,
            failed: Vec::new(),
        };
        // A node that never finished joining replicated nothing.
        if !was.is_some_and(NodeStatus::is_joining) {
            self.collect_streams(&mut summary, false).await;
        }
        Response::NodeRemoved(summary)
    }
}
