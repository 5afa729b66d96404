//! Dropping the keys a node no longer replicates, as Cassandra's `nodetool
//! cleanup` does. After a node joins, the nodes that handed it keys still
//! hold them: disk spent for nothing, and worse, stale copies. Were the
//! ring to give such a key back to a node later (the joiner leaves again),
//! its old copy would vote in reads beside the current replicas, and a
//! delete whose tombstone had since been purged would come undone.
//!
//! A cleanup runs on one node, asked for (`cassio cleanup`): it flushes,
//! then rewrites its tables without the keys it does not replicate by the
//! ring it sees. It refuses while that ring may be about to change or may
//! be wrong: while any node joins or leaves, or any member is DOWN. Cells
//! that arrive while it runs are kept; a write meant for a pending replica
//! that it drops all the same is streamed to it again with the change.

use std::sync::Arc;

use super::shared::NodeShared;
use crate::cluster::NodeStatus;
use crate::net::Transport;
use crate::proto::{CleanupSummary, Response};

impl<T: Transport> NodeShared<T> {
    /// This node drops the keys it does not replicate: see the module docs.
    pub(crate) async fn cleanup(self: &Arc<Self>) -> Response {
        // Repairs, leaves and cleanups exclude each other on a node.
        let Some(_running) = self.claim_repair_slot() else {
            return Response::Error {
                message: "a repair, decommission or cleanup is already running on this node".into(),
            };
        };
        if let Err(refusal) = self.check_ring_settled() {
            return *refusal;
        }
        let ring = self.gossiper.lock().ring();
        let replication_factor = self.config.replication_factor as usize;
        let Some(me) = ring.nodes().iter().position(|n| *n == self.node_id) else {
            return Response::Invalid {
                message: format!("{} is not in its own ring", self.node_id),
            };
        };
        tracing::info!(node = %self.node_id, "cleanup: dropping the keys this node does not replicate");
        let outcome = self
            .blocking(move |node| {
                node.engine.flush()?;
                let bytes_before = node.engine.stats().sstable_bytes;
                let dropped = node.engine.cleanup(&|key| {
                    ring.replica_set_indexes(key, replication_factor)
                        .any(|i| i == me)
                })?;
                Ok((bytes_before, dropped))
            })
            .await;
        match outcome {
            Ok((sstable_bytes_before, keys_dropped)) => {
                let summary = CleanupSummary {
                    node: self.node_id.clone(),
                    keys_dropped,
                    sstable_bytes_before,
                    sstable_bytes_after: self.engine.stats().sstable_bytes,
                };
                tracing::info!(?summary, "cleanup finished");
                Response::CleanedUp(summary)
            }
            Err(e) => Response::Error {
                message: format!("cleanup of {} failed: {e}", self.node_id),
            },
        }
    }

    /// Why the ring this node sees may not be trusted to drop data by now,
    /// if it may not.
    fn check_ring_settled(&self) -> Result<(), Box<Response>> {
        for member in self.members() {
            if member.status == NodeStatus::Left {
                continue;
            }
            if member.status != NodeStatus::Normal {
                return Err(Box::new(Response::Error {
                    message: format!(
                        "{} is {}: cleanup drops keys by the ring, which changes until it is done; run it once it is NORMAL",
                        member.node,
                        member.status.as_str()
                    ),
                }));
            }
            if !member.up {
                return Err(Box::new(Response::Error {
                    message: format!(
                        "{} at {} is DOWN: bring it back, or remove it (cassio removenode {}), before a cleanup",
                        member.node, member.native_addr, member.node
                    ),
                }));
            }
        }
        Ok(())
    }
}
