//! When a node repairs on its own: every `repair_interval_ms`. The repair
//! itself is `node/repair.rs`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rand::Rng;
use tokio::task::JoinSet;

use super::config::NodeConfig;
use super::shared::NodeShared;
use crate::net::Transport;
use crate::proto::Response;

pub(super) struct RepairSchedule {
    interval_ms: u64,
    next_ms: Option<u64>,
    running: JoinSet<()>,
}

impl RepairSchedule {
    /// The first scheduled repair falls at a random time in the second half
    /// of the first interval, so that nodes started together spread out.
    pub(super) fn new(config: &NodeConfig, now_ms: u64, rng: &mut impl Rng) -> RepairSchedule {
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
            running: JoinSet::new(),
        }
    }

    /// Starts a repair in the background if one is due (called every
    /// gossip tick).
    pub(super) fn start_if_due<T: Transport>(&mut self, node: &Arc<NodeShared<T>>) {
        while self.running.try_join_next().is_some() {}
        let now_ms = node.now_ms();
        if self.next_ms.is_some_and(|due| now_ms >= due) {
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

    /// The node is stopping: repairs end at their next key or write, and
    /// their tasks are cancelled.
    pub(super) fn stop<T: Transport>(mut self, node: &NodeShared<T>) {
        node.repair_stopping.store(true, Ordering::Release);
        self.running.abort_all();
    }
}
