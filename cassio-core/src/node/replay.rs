//! Hinted handoff's delivery: every gossip tick, hints kept for replicas
//! that gossip sees UP again are sent to them, a batch per message, and
//! dropped once acknowledged.

use std::net::SocketAddr;
use std::sync::Arc;

use super::shared::NodeShared;
use crate::coordinator::Metrics;
use crate::error::Result;
use crate::net::Transport;
use crate::proto::KeyedCell;
use crate::proto::keyed_cell_bytes;
use crate::types::NodeId;

/// Hints sent per message.
const HINT_BATCH: usize = 128;

impl<T: Transport> NodeShared<T> {
    /// Replays hints to every target gossip sees UP (one replay per target
    /// at a time). Called every gossip tick.
    pub(crate) fn replay_hints(self: &Arc<Self>) {
        let Some(hints) = &self.hints else { return };
        let now = self.now_ms();
        for target in hints.targets() {
            let addr = {
                let gossiper = self.gossiper.lock();
                if !gossiper.is_up(&target, now) {
                    continue;
                }
                gossiper
                    .members(now)
                    .into_iter()
                    .find(|m| m.node == target)
                    .map(|m| m.native_addr)
            };
            let Some(addr) = addr else { continue };
            if !self.replaying.lock().insert(target.clone()) {
                continue;
            }
            let shared = self.clone();
            tokio::spawn(async move {
                if let Err(e) = shared.replay_to(&target, addr).await {
                    tracing::debug!(target_node = %target, error = %e, "hint replay paused");
                }
                shared.replaying.lock().remove(&target);
            });
        }
    }

    async fn replay_to(&self, target: &NodeId, addr: SocketAddr) -> Result<()> {
        let hints = self.hints.as_ref().expect("replay only runs with hints");
        // The last hint delivered: the next batch starts after it.
        let mut after: Option<Vec<u8>> = None;
        let (mut replayed, mut expired_total) = (0u64, 0u64);
        loop {
            let (batch, expired) = hints.next_batch(target, HINT_BATCH, after.as_deref())?;
            Metrics::add(&self.metrics.hints_expired, expired);
            expired_total += expired;
            if batch.is_empty() {
                if after.take().is_some() {
                    // Once more from the start: a hint stored while the
                    // clock stood earlier sorts before the cursor.
                    continue;
                }
                if replayed + expired_total > 0 {
                    tracing::info!(target_node = %target, replayed, expired = expired_total, "hints replayed");
                }
                return Ok(());
            }
            // Sent in messages that fit a frame, whatever the values' sizes.
            let budget = self.message_budget_bytes();
            let mut message = Vec::new();
            let mut bytes = 0;
            for hint in &batch {
                let size = keyed_cell_bytes(&hint.key, &hint.cell);
                if !message.is_empty() && bytes + size > budget {
                    self.replica_writes(target, addr, std::mem::take(&mut message))
                        .await?;
                    bytes = 0;
                }
                bytes += size;
                message.push(KeyedCell {
                    key: hint.key.clone(),
                    cell: hint.cell.clone(),
                });
            }
            self.replica_writes(target, addr, message).await?;
            for hint in &batch {
                hints.delivered(hint)?;
            }
            Metrics::add(&self.metrics.hints_replayed, batch.len() as u64);
            replayed += batch.len() as u64;
            after = batch.last().map(|hint| hint.id.clone());
        }
    }
}
