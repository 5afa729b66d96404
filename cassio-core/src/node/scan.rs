//! Range scans: the live keys of a key range in key order, a page at a
//! time. Keys are placed by hash, so any node may hold any part of a range:
//! the coordinator asks every node of the ring for its first cells after
//! the page's start (each node sends only the keys it replicates, so copies
//! left over from before a join do not vote), merges them newest-wins, and
//! answers with the live keys up to where every node's reply is complete:
//! the smallest last key among the nodes that had more to send. Past it a
//! key might still come from a node that stopped earlier; the next page
//! starts there.
//!
//! Each key of a page is read from every replica of it that answered, so a
//! page at a level sees what a read at that level sees if enough nodes
//! answer: a key's replica set has `rf` nodes and the level needs
//! `required(rf)` of them, so at most `rf - required(rf)` nodes of the ring
//! may be missing, whichever keys they hold. With more missing the scan is
//! answered `QuorumNotReached` (counting nodes), not with a page that may
//! lack keys. Scans do no read repair (anti-entropy repair covers that).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::time::Instant;

use super::shared::NodeShared;
use crate::coordinator::{ConsistencyLevel, Metrics};
use crate::error::{Error, Result};
use crate::net::Transport;
use crate::proto::{KeyRange, KeyedCell, Request, Response, ScanEntry, keyed_cell_bytes};
use crate::storage::{Cell, validate_key};
use crate::types::NodeId;

/// The most keys one scan request may ask for.
pub const SCAN_LIMIT_MAX: u32 = 10_000;

/// Scan steps of up to this many cells run on the node's own thread: a
/// hand-off to a blocking thread costs more than reading them (measured
/// with YCSB E's scans of 1 to 100 keys).
const INLINE_SCAN_CELLS_MAX: usize = 128;

/// An entry's encoded size beyond its key and value, generously.
const ENTRY_OVERHEAD_BYTES: usize = 32;

/// One node's reply to a scan step: its cells in key order, and whether
/// more follow the last.
struct NodePage {
    cells: Vec<KeyedCell>,
    more: bool,
}

impl<T: Transport> NodeShared<T> {
    /// Coordinates a scan: see the module docs.
    pub(crate) async fn coordinate_scan(
        self: &Arc<Self>,
        mut range: KeyRange,
        limit: u32,
        level: ConsistencyLevel,
    ) -> Response {
        if let Err(message) = check_scan(&range, limit, level) {
            Metrics::add(&self.metrics.invalid_requests, 1);
            return Response::Invalid { message };
        }
        if let Some(refusal) = self.wait_until_joined().await {
            return refusal;
        }
        let deadline = Instant::now() + Duration::from_millis(self.config.read_timeout_ms);
        let limit = limit as usize;
        let mut entries: Vec<ScanEntry> = Vec::new();
        // Cells asked of each node per step: the keys still wanted, more
        // after steps that found mostly tombstones.
        let mut step_cells = limit;
        // The answer stays within a frame, as each node's step does.
        let (mut bytes, bytes_max) = (0, self.page_bytes_max());
        loop {
            let (nodes, missing_allowed) = self.scan_targets(level);
            let asked = self.scan_step(&nodes, &range, step_cells, deadline).await;
            let pages: Vec<NodePage> = asked.into_iter().flatten().collect();
            let missing = nodes.len() - pages.len();
            if nodes.is_empty() || missing > missing_allowed {
                Metrics::add(&self.metrics.unavailable, 1);
                return Response::QuorumNotReached {
                    level,
                    required: nodes.len().saturating_sub(missing_allowed).max(1) as u32,
                    received: pages.len() as u32,
                };
            }
            // Every node's cells up to here are in hand.
            let complete_to: Option<Vec<u8>> = pages
                .iter()
                .filter(|p| p.more)
                .filter_map(|p| p.cells.last().map(|c| c.key.clone()))
                .min();
            let merged = newest_cells(pages, complete_to.as_deref());
            let now_ms = (self.clock)();
            let mut merged = merged.into_iter().peekable();
            while let Some((key, cell)) = merged.next() {
                let timestamp = cell.timestamp;
                if let Some(value) = cell.into_live_value(now_ms) {
                    let size = key.len() + value.len() + ENTRY_OVERHEAD_BYTES;
                    if !entries.is_empty() && bytes + size > bytes_max {
                        let next = entries.last().map(|e| e.key.clone());
                        return Response::Scanned { entries, next };
                    }
                    bytes += size;
                    entries.push(ScanEntry {
                        key,
                        value,
                        timestamp,
                    });
                    if entries.len() == limit {
                        let done = merged.peek().is_none() && complete_to.is_none();
                        let next = (!done).then(|| entries[limit - 1].key.clone());
                        return Response::Scanned { entries, next };
                    }
                }
            }
            match complete_to {
                None => {
                    return Response::Scanned {
                        entries,
                        next: None,
                    };
                }
                // The step ended before the page filled (tombstones, or a
                // node whose reply ended early): go on, while there is time.
                Some(key) if Instant::now() < deadline => {
                    range = range.after(key);
                    step_cells = (step_cells * 2).min(SCAN_LIMIT_MAX as usize);
                }
                Some(key) => {
                    return Response::Scanned {
                        entries,
                        next: Some(key),
                    };
                }
            }
        }
    }

    /// The nodes of the ring, each with its address and whether it is up,
    /// and how many of them a scan at `level` may miss.
    fn scan_targets(&self, level: ConsistencyLevel) -> (Vec<(NodeId, SocketAddr, bool)>, usize) {
        let now = self.now_ms();
        let gossiper = self.gossiper.lock();
        let ring = gossiper.ring();
        let nodes: Vec<_> = ring
            .nodes()
            .iter()
            .filter_map(|node| {
                if *node == self.node_id {
                    return Some((node.clone(), self.native_addr, true));
                }
                let (addr, up) = gossiper.reach(node, now)?;
                Some((node.clone(), addr, up))
            })
            .collect();
        let replicas = (self.config.replication_factor as usize).min(ring.nodes().len());
        let missing_allowed = replicas.saturating_sub(level.required(replicas));
        (nodes, missing_allowed)
    }

    /// Asks every node (this one from its own storage) for up to `limit`
    /// cells of the range; `None` for a node that is down or did not
    /// answer by `deadline`.
    async fn scan_step(
        self: &Arc<Self>,
        nodes: &[(NodeId, SocketAddr, bool)],
        range: &KeyRange,
        limit: usize,
        deadline: Instant,
    ) -> Vec<Option<NodePage>> {
        let asks = nodes.iter().map(|(node, addr, up)| async move {
            let page = if *node == self.node_id {
                self.local_scan(range, limit).await
            } else if !up {
                return None;
            } else {
                self.remote_scan(node, *addr, range, limit, deadline).await
            };
            page.map_err(|e| tracing::debug!(%node, error = %e, "scan step failed"))
                .ok()
        });
        join_all(asks).await
    }

    async fn remote_scan(
        &self,
        node: &NodeId,
        addr: SocketAddr,
        range: &KeyRange,
        limit: usize,
        deadline: Instant,
    ) -> Result<NodePage> {
        let request = Request::ReplicaScan {
            range: range.clone(),
            limit: limit as u32,
        };
        let conn = self.peer(addr).await?;
        let timeout = deadline.saturating_duration_since(Instant::now());
        match conn.request(request, timeout).await {
            Ok(Response::ReplicaScanned { cells, more }) if cells.len() <= limit => {
                Ok(NodePage { cells, more })
            }
            Ok(other) => Err(Error::Remote {
                node: node.to_string(),
                message: format!("unexpected answer to a scan: {other:?}"),
            }),
            Err(e) => {
                self.forget_peer(addr);
                Err(e)
            }
        }
    }

    /// A peer's scan step, answered from this node's storage.
    pub(crate) async fn answer_replica_scan(
        self: &Arc<Self>,
        range: KeyRange,
        limit: u32,
    ) -> Response {
        if limit == 0 || limit > SCAN_LIMIT_MAX {
            return Response::Invalid {
                message: format!("a scan step asks for 1 to {SCAN_LIMIT_MAX} cells, not {limit}"),
            };
        }
        match self.local_scan(&range, limit as usize).await {
            Ok(NodePage { cells, more }) => Response::ReplicaScanned { cells, more },
            Err(e) => Response::Error {
                message: format!("scan on {} failed: {e}", self.node_id),
            },
        }
    }

    /// [`Self::replica_scan`]: a short one right here, as point reads are
    /// done; a longer one on a blocking thread, so that the node's thread
    /// goes on serving meanwhile.
    async fn local_scan(self: &Arc<Self>, range: &KeyRange, limit: usize) -> Result<NodePage> {
        if limit <= INLINE_SCAN_CELLS_MAX {
            return self.replica_scan(range, limit);
        }
        let range = range.clone();
        self.blocking(move |node| node.replica_scan(&range, limit))
            .await
    }

    /// This node's cells of the keys of `range` it replicates by its ring,
    /// at most `limit` and about a frame's worth.
    fn replica_scan(&self, range: &KeyRange, limit: usize) -> Result<NodePage> {
        let ring = self.gossiper.lock().ring();
        let replication_factor = self.config.replication_factor as usize;
        let Some(me) = ring.nodes().iter().position(|n| *n == self.node_id) else {
            // Not in the ring (yet, or any more): it replicates nothing.
            return Ok(NodePage {
                cells: Vec::new(),
                more: false,
            });
        };
        let every_key = replication_factor >= ring.nodes().len();
        let bytes_max = self.page_bytes_max();
        let mut cells = Vec::new();
        let mut bytes = 0;
        let (start, end) = range.bounds();
        for item in self.engine.scan_cells(start, end) {
            let (key, cell) = item?;
            if !every_key
                && !ring
                    .replica_set_indexes(&key, replication_factor)
                    .any(|i| i == me)
            {
                continue;
            }
            let size = keyed_cell_bytes(&key, &cell);
            if cells.len() == limit || (!cells.is_empty() && bytes + size > bytes_max) {
                return Ok(NodePage { cells, more: true });
            }
            bytes += size;
            cells.push(KeyedCell { key, cell });
        }
        Ok(NodePage { cells, more: false })
    }
}

/// Why a scan request is refused, if it is.
fn check_scan(
    range: &KeyRange,
    limit: u32,
    level: ConsistencyLevel,
) -> std::result::Result<(), String> {
    if level == ConsistencyLevel::Any {
        return Err("consistency level ANY is for writes only".into());
    }
    if limit == 0 || limit > SCAN_LIMIT_MAX {
        return Err(format!(
            "a scan returns 1 to {SCAN_LIMIT_MAX} keys per page, not {limit}"
        ));
    }
    let start = match &range.start {
        Bound::Included(key) | Bound::Excluded(key) => Some(key),
        Bound::Unbounded => None,
    };
    for key in start.into_iter().chain(&range.end) {
        validate_key(key).map_err(|e| format!("scan bound: {e}"))?;
    }
    Ok(())
}

/// Every key of `pages` up to `complete_to` (all when `None`) with its
/// newest cell, in key order.
fn newest_cells(pages: Vec<NodePage>, complete_to: Option<&[u8]>) -> BTreeMap<Vec<u8>, Cell> {
    let mut merged: BTreeMap<Vec<u8>, Cell> = BTreeMap::new();
    for page in pages {
        for KeyedCell { key, cell } in page.cells {
            if complete_to.is_some_and(|last| key.as_slice() > last) {
                break;
            }
            match merged.get_mut(&key) {
                Some(held) if cell.supersedes(held) => *held = cell,
                Some(_) => {}
                None => {
                    merged.insert(key, cell);
                }
            }
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(cells: &[(&str, Cell)], more: bool) -> NodePage {
        NodePage {
            cells: cells
                .iter()
                .map(|(k, c)| KeyedCell {
                    key: k.as_bytes().to_vec(),
                    cell: c.clone(),
                })
                .collect(),
            more,
        }
    }

    #[test]
    fn merging_keeps_the_newest_cell_of_each_key_up_to_the_complete_bound() {
        let a = page(
            &[("a", Cell::value("old", 1)), ("b", Cell::value("b", 1))],
            true,
        );
        let b = page(
            &[
                ("a", Cell::value("new", 2)),
                ("b", Cell::tombstone(3)),
                ("c", Cell::value("c", 1)),
            ],
            false,
        );
        let merged = newest_cells(vec![a, b], Some(b"b"));
        let keys: Vec<&[u8]> = merged.keys().map(|k| &k[..]).collect();
        assert_eq!(keys, [b"a", b"b"], "c lies past what node a sent in full");
        assert_eq!(merged[&b"a"[..]], Cell::value("new", 2));
        assert!(merged[&b"b"[..]].is_tombstone(), "the newer tombstone wins");
    }

    #[test]
    fn bad_scans_are_refused_with_the_reason() {
        let quorum = ConsistencyLevel::Quorum;
        let all = KeyRange::all();
        assert!(check_scan(&all, 100, quorum).is_ok());
        assert!(check_scan(&KeyRange::prefix(b"user:"), 100, quorum).is_ok());
        let zero = check_scan(&all, 0, quorum).unwrap_err();
        assert!(zero.contains("1 to 10000"), "{zero}");
        assert!(check_scan(&all, SCAN_LIMIT_MAX + 1, quorum).is_err());
        let any = check_scan(&all, 10, ConsistencyLevel::Any).unwrap_err();
        assert!(any.contains("ANY"), "{any}");
        let empty = check_scan(&KeyRange::from(b""), 10, quorum).unwrap_err();
        assert!(empty.starts_with("scan bound"), "{empty}");
    }
}
