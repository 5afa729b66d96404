//! When a node repairs on its own: every `repair_interval_ms`, and once
//! when it starts with empty storage and a peer appears: then it first asks
//! every peer to stream the keys the ring change moved (`handover.rs`); that
//! is how a new node, and the nodes whose keys it reshuffled, get the keys
//! they now replicate. The repair itself is `node/repair.rs`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::Rng;
use tokio::task::JoinSet;

use super::config::NodeConfig;
use super::shared::NodeShared;
use crate::net::Transport;
use crate::proto::Response;

/// A new node repairs once every other data-owning member is UP, or this
/// many gossip intervals after it first saw one, with those that are.
const JOIN_REPAIR_WAIT_INTERVALS: u64 = 30;

/// A new node's repair is tried again after this many gossip intervals
/// while a peer was down or refused it (it may not know the new node yet),
/// at most [`JOIN_REPAIR_ATTEMPTS`] times.
const JOIN_REPAIR_RETRY_INTERVALS: u64 = 10;
const JOIN_REPAIR_ATTEMPTS: u32 = 10;

/// A new node's first repair, until it starts.
enum Join {
    /// No other data-owning member seen yet.
    Waiting,
    /// One seen at this time.
    Seen { at_ms: u64 },
}

pub(super) struct RepairSchedule {
    interval_ms: u64,
    next_ms: Option<u64>,
    join: Option<Join>,
    gossip_interval_ms: u64,
    running: JoinSet<()>,
}

impl RepairSchedule {
    /// The first scheduled repair falls at a random time in the second half
    /// of the first interval, so that nodes started together spread out.
    /// `storage_empty`: the node holds no data yet, so it repairs as soon
    /// as it has peers.
    pub(super) fn new(
        config: &NodeConfig,
        now_ms: u64,
        storage_empty: bool,
        rng: &mut impl Rng,
    ) -> RepairSchedule {
        let interval_ms = config.repair_interval_ms;
        if interval_ms > 0 && interval_ms >= config.storage.gc_grace_ms {
            tracing::warn!(
                repair_interval_ms = interval_ms,
                gc_grace_ms = config.storage.gc_grace_ms,
                "scheduled repair is not shorter than gc_grace: a replica that missed a delete may get its value back"
            );
        }
        let half = interval_ms / 2;
        RepairSchedule {
            interval_ms,
            next_ms: (interval_ms > 0).then(|| {
                now_ms
                    .saturating_add(half)
                    .saturating_add(rng.random_range(0..=interval_ms - half))
            }),
            join: storage_empty.then_some(Join::Waiting),
            gossip_interval_ms: config.gossip_interval_ms,
            running: JoinSet::new(),
        }
    }

    /// Starts a repair in the background if one is due (called every
    /// gossip tick).
    pub(super) fn start_if_due<T: Transport>(&mut self, node: &Arc<NodeShared<T>>) {
        while self.running.try_join_next().is_some() {}
        let now_ms = node.now_ms();
        if self.join_due(node, now_ms) {
            self.join = None;
            let node = node.clone();
            let retry =
                Duration::from_millis(JOIN_REPAIR_RETRY_INTERVALS * self.gossip_interval_ms);
            self.running.spawn(async move {
                tracing::info!("asking peers to stream this new node's data, then repairing");
                for attempt in 1..=JOIN_REPAIR_ATTEMPTS {
                    // Each peer sends the keys that now belong to nodes that
                    // did not hold them (this one, and others: see
                    // `handover.rs`); the repair then checks what this node
                    // shares with each.
                    let refused: Vec<String> = node
                        .stream_everywhere(&node.node_id, true)
                        .await
                        .into_iter()
                        .filter_map(|(peer, streamed)| {
                            streamed.err().map(|e| format!("{peer}: {e}"))
                        })
                        .collect();
                    match node.anti_entropy_repair().await {
                        Response::Repaired(done)
                            if refused.is_empty() && done.peers > 0 && done.peers_down == 0 =>
                        {
                            return;
                        }
                        answer => {
                            tracing::info!(
                                attempt,
                                ?refused,
                                ?answer,
                                "new node's join to be tried again"
                            )
                        }
                    }
                    tokio::time::sleep(retry).await;
                }
                tracing::warn!(
                    "new node's repair did not reach every peer; the scheduled repair will"
                );
            });
        } else if self.next_ms.is_some_and(|due| now_ms >= due) {
            self.next_ms = Some(now_ms.saturating_add(self.interval_ms));
            let node = node.clone();
            self.running.spawn(async move {
                if let answer @ (Response::Error { .. } | Response::Invalid { .. }) =
                    node.anti_entropy_repair().await
                {
                    tracing::warn!(?answer, "scheduled repair did not complete");
                }
            });
        }
    }

    fn join_due<T: Transport>(&mut self, node: &NodeShared<T>, now_ms: u64) -> bool {
        let Some(join) = &mut self.join else {
            return false;
        };
        let members = node.members();
        let mut others = members
            .iter()
            .filter(|m| m.node != node.node_id && m.status.owns_data())
            .peekable();
        if others.peek().is_none() {
            return false;
        }
        let all_up = others.all(|m| m.up);
        let seen_at_ms = match join {
            Join::Waiting => {
                *join = Join::Seen { at_ms: now_ms };
                now_ms
            }
            Join::Seen { at_ms } => *at_ms,
        };
        all_up || now_ms >= seen_at_ms + JOIN_REPAIR_WAIT_INTERVALS * self.gossip_interval_ms
    }

    /// The node is stopping: repairs end at their next key or write, and
    /// their tasks are cancelled.
    pub(super) fn stop<T: Transport>(mut self, node: &NodeShared<T>) {
        node.repair_stopping.store(true, Ordering::Release);
        self.running.abort_all();
    }
}
