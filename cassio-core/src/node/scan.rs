//! Range scans: the live keys of a key range in key order, a page at a
//! time. Keys are placed by hash, so any node may hold any part of a range:
//! the coordinator asks every node of the ring for its first cells after
//! the page's start (each node sends only the keys it replicates, so copies
//! left over from before a join do not vote), merges them newest-wins, and
//! answers with the live keys up to where every node's reply is complete:
//! the smallest last key among the nodes that had more to send. Past it a
//! key might still come from a node that stopped earlier; the next page
//! starts there. A node that is not in its own ring (joining, or left while
//! the coordinator has not seen it yet) refuses a step rather than answer
//! it empty, so it counts as a node that did not answer, not as one that
//! holds none of the range's keys.
//!
//! Each key of a page is read from every replica of it that answered, so a
//! page at a level sees what a read at that level sees if enough nodes
//! answer: a key's replica set has `rf` nodes and the level needs
//! `required(rf)` of them, so at most `rf - required(rf)` nodes of the ring
//! may be missing, whichever keys they hold. With more missing the scan is
//! answered `QuorumNotReached` (counting nodes), not with a page that may
//! lack keys.
//!
//! Read repair, as for point reads: every replica of a key that answered
//! without its newest cell (older, or missing where its reply covered the
//! key) is written that cell, before the page is answered at TWO and
//! above (waiting one write timeout at most), after it at ONE (one such
//! repair at a time per node); so a key a scan returned is then returned
//! by every read at a level that reaches one of those replicas.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::time::Instant;

use super::shared::NodeShared;
use crate::coordinator::{ConsistencyLevel, Metrics};
use crate::error::{Error, Result};
use crate::net::Transport;
use crate::proto::{KeyRange, KeyedCell, Request, Response, ScanEntry, keyed_cell_bytes};
use crate::ring::Ring;
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

/// A node of the ring as a scan sees it: its address, and whether it is up.
type ScanTarget = (NodeId, SocketAddr, bool);

/// A key's newest cell among the replies, and which replies (by place in
/// the step's list of answering nodes) held that very cell.
#[derive(Debug)]
struct Newest {
    cell: Cell,
    holders: Vec<usize>,
}

/// Cells to write to one replica by read repair.
type Repairs = HashMap<usize, Vec<KeyedCell>>;

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
            let (ring, nodes, missing_allowed) = self.scan_targets(level);
            let asked = self.scan_step(&nodes, &range, step_cells, deadline).await;
            let (answered, pages): (Vec<&ScanTarget>, Vec<NodePage>) = nodes
                .iter()
                .zip(asked)
                .filter_map(|(node, page)| Some((node, page?)))
                .unzip();
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
            let rf = self.config.replication_factor as usize;
            let repairs = stale_replicas(&merged, &ring, rf, &answered);
            if !repairs.is_empty() {
                let targets: Vec<ScanTarget> = answered.into_iter().cloned().collect();
                if level != ConsistencyLevel::One {
                    // The page waits one write timeout at most, as a read
                    // does; what is not written by then is left to the next
                    // scan or read, or to anti-entropy.
                    let bound = Duration::from_millis(self.config.write_timeout_ms);
                    let _ = tokio::time::timeout(bound, self.read_repair(&targets, repairs)).await;
                } else if !self.scan_repair_running.swap(true, AtomicOrdering::AcqRel) {
                    // At ONE, after the answer, one at a time: scans that
                    // find stale replicas meanwhile leave them to the next.
                    let node = self.clone();
                    self.background.run(async move {
                        node.read_repair(&targets, repairs).await;
                        node.scan_repair_running
                            .store(false, AtomicOrdering::Release);
                    });
                }
            }
            let now_ms = (self.clock)();
            let mut merged = merged.into_iter().peekable();
            while let Some((key, Newest { cell, .. })) = merged.next() {
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

    /// Writes each stale replica its newest cells (see the module docs), a
    /// message's worth at a time, all replicas at once.
    async fn read_repair(&self, targets: &[ScanTarget], repairs: Repairs) {
        let bytes_max = self.page_bytes_max();
        let writes = repairs.into_iter().map(|(place, cells)| async move {
            let (node, addr, _) = &targets[place];
            for chunk in chunk_by_bytes(cells, bytes_max) {
                let count = chunk.len() as u64;
                match self.replica_writes(node, *addr, chunk).await {
                    Ok(()) => Metrics::add(&self.metrics.read_repairs, count),
                    Err(e) => {
                        tracing::debug!(replica = %node, error = %e, "scan read repair failed");
                        return;
                    }
                }
            }
        });
        join_all(writes).await;
    }

    /// The ring, its nodes, each with its address and whether it is up, and
    /// how many of them a scan at `level` may miss.
    fn scan_targets(&self, level: ConsistencyLevel) -> (Arc<Ring>, Vec<ScanTarget>, usize) {
        let now = self.now_ms();
        let gossiper = self.gossiper.lock();
        let ring = gossiper.read_ring();
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
        (ring, nodes, missing_allowed)
    }

    /// Asks every node (this one from its own storage) for up to `limit`
    /// cells of the range; `None` for a node that is down or did not
    /// answer by `deadline`.
    async fn scan_step(
        self: &Arc<Self>,
        nodes: &[ScanTarget],
        range: &KeyRange,
        limit: usize,
        deadline: Instant,
    ) -> Vec<Option<NodePage>> {
        let asks = nodes.iter().map(|(node, addr, up)| async move {
            let page = if *node == self.node_id {
                // The coordinator asks the nodes of its own ring, so it is
                // in it, unless the ring changed since.
                self.local_scan(range, limit).await.transpose()?
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
        let conn = self.peers.get(addr).await?;
        let timeout = deadline.saturating_duration_since(Instant::now());
        // A scan's time is what its deadline left, often little: running
        // out of it says nothing of the peer, which stays pooled.
        match conn.request(request, timeout).await? {
            Response::ReplicaScanned { cells, more } if cells.len() <= limit => {
                Ok(NodePage { cells, more })
            }
            other => Err(Error::Remote {
                node: node.to_string(),
                message: format!("unexpected answer to a scan: {other:?}"),
            }),
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
            Ok(Some(NodePage { cells, more })) => Response::ReplicaScanned { cells, more },
            // An empty page would count as this node's vote that it holds
            // none of the range's keys, where the coordinator places some
            // here: so it counts as a node that did not answer.
            Ok(None) => Response::Error {
                message: format!(
                    "{} is not in its own ring (joining, or left): it answers no scan step",
                    self.node_id
                ),
            },
            Err(e) => Response::Error {
                message: format!("scan on {} failed: {e}", self.node_id),
            },
        }
    }

    /// [`Self::replica_scan`]: a short one right here, as point reads are
    /// done; a longer one on a blocking thread, so that the node's thread
    /// goes on serving meanwhile.
    async fn local_scan(
        self: &Arc<Self>,
        range: &KeyRange,
        limit: usize,
    ) -> Result<Option<NodePage>> {
        if limit <= INLINE_SCAN_CELLS_MAX {
            return self.replica_scan(range, limit);
        }
        let range = range.clone();
        self.blocking(move |node| node.replica_scan(&range, limit))
            .await
    }

    /// This node's cells of the keys of `range` it replicates by its read ring,
    /// at most `limit` and about a frame's worth; `None` if it is not in its
    /// ring (not yet, or no more), where it replicates nothing.
    fn replica_scan(&self, range: &KeyRange, limit: usize) -> Result<Option<NodePage>> {
        let ring = self.gossiper.lock().read_ring();
        let replication_factor = self.config.replication_factor as usize;
        let Some(me) = ring.nodes().iter().position(|n| *n == self.node_id) else {
            return Ok(None);
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
                return Ok(Some(NodePage { cells, more: true }));
            }
            bytes += size;
            cells.push(KeyedCell { key, cell });
        }
        Ok(Some(NodePage { cells, more: false }))
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
/// newest cell and the pages that held it, in key order.
fn newest_cells(pages: Vec<NodePage>, complete_to: Option<&[u8]>) -> BTreeMap<Vec<u8>, Newest> {
    let mut merged: BTreeMap<Vec<u8>, Newest> = BTreeMap::new();
    for (place, page) in pages.into_iter().enumerate() {
        for KeyedCell { key, cell } in page.cells {
            if complete_to.is_some_and(|last| key.as_slice() > last) {
                break;
            }
            match merged.get_mut(&key) {
                Some(held) => match cell.lww_cmp(&held.cell) {
                    Ordering::Greater => {
                        *held = Newest {
                            cell,
                            holders: vec![place],
                        }
                    }
                    Ordering::Equal => held.holders.push(place),
                    Ordering::Less => {}
                },
                None => {
                    let holders = vec![place];
                    merged.insert(key, Newest { cell, holders });
                }
            }
        }
    }
    merged
}

/// For each answering node (by place in `answered`), the newest cells of
/// the keys it replicates but answered without: it held an older cell, or
/// none, though its reply reached past the key. Each node sends only the
/// keys it replicates, so a key every replica holds the newest of (the
/// usual case) needs no placement.
fn stale_replicas(
    merged: &BTreeMap<Vec<u8>, Newest>,
    ring: &Ring,
    replication_factor: usize,
    answered: &[&ScanTarget],
) -> Repairs {
    let replicas = replication_factor.min(ring.nodes().len());
    let mut repairs = Repairs::new();
    for (key, newest) in merged {
        if newest.holders.len() >= replicas {
            continue;
        }
        for index in ring.replica_set_indexes(key, replication_factor) {
            let node = &ring.nodes()[index];
            let Some(place) = answered.iter().position(|(n, _, _)| n == node) else {
                continue;
            };
            if !newest.holders.contains(&place) {
                repairs.entry(place).or_default().push(KeyedCell {
                    key: key.clone(),
                    cell: newest.cell.clone(),
                });
            }
        }
    }
    repairs
}

/// `cells` cut into runs of about `bytes_max` encoded bytes (a single larger
/// cell makes a run of its own).
fn chunk_by_bytes(cells: Vec<KeyedCell>, bytes_max: usize) -> Vec<Vec<KeyedCell>> {
    let mut chunks: Vec<Vec<KeyedCell>> = Vec::new();
    let mut bytes = 0;
    for cell in cells {
        let size = keyed_cell_bytes(&cell.key, &cell.cell);
        match chunks.last_mut() {
            Some(chunk) if bytes + size <= bytes_max => chunk.push(cell),
            _ => {
                bytes = 0;
                chunks.push(vec![cell]);
            }
        }
        bytes += size;
    }
    chunks
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
        assert_eq!(merged[&b"a"[..]].cell, Cell::value("new", 2));
        assert_eq!(merged[&b"a"[..]].holders, [1]);
        assert!(
            merged[&b"b"[..]].cell.is_tombstone(),
            "the newer tombstone wins"
        );
    }

    #[test]
    fn replicas_without_the_newest_cell_are_repaired_and_others_are_not() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let vectors: Vec<Vec<crate::ring::Vector>> = (0..3)
            .map(|_| crate::ring::random_vnode_vectors(8, &mut rng))
            .collect();
        let ids: Vec<NodeId> = ["n0", "n1", "n2"].map(NodeId::from).to_vec();
        let ring = Ring::new(ids.iter().cloned().zip(vectors.iter().map(|v| &v[..])));
        // RF 2 of 3: each key has two replicas. n0 and n1 answered (places
        // 0 and 1), n2 did not.
        let rf = 2;
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let targets: Vec<ScanTarget> = ids[..2].iter().map(|id| (id.clone(), addr, true)).collect();
        let answered: Vec<&ScanTarget> = targets.iter().collect();
        // The places of a key's replicas among those that answered.
        let replicas_of = |key: &str| -> Vec<usize> {
            let mut places: Vec<usize> = ring
                .replica_set_indexes(key.as_bytes(), rf)
                .filter_map(|i| ids[..2].iter().position(|id| *id == ring.nodes()[i]))
                .collect();
            places.sort();
            places
        };
        let key_with = |wanted: &[usize]| {
            (0..10_000)
                .map(|i| format!("k{i}"))
                .find(|k| replicas_of(k) == wanted)
                .expect("some key has those replicas")
        };
        let (both, only0) = (key_with(&[0, 1]), key_with(&[0]));
        let cell = |key: &str, value: &str, ts| KeyedCell {
            key: key.as_bytes().to_vec(),
            cell: Cell::value(value, ts),
        };
        let node0 = NodePage {
            cells: vec![cell(&both, "new", 2), cell(&only0, "x", 1)],
            more: false,
        };
        let node1 = NodePage {
            cells: vec![cell(&both, "old", 1)],
            more: false,
        };
        let merged = newest_cells(vec![node0, node1], None);
        let repairs = stale_replicas(&merged, &ring, rf, &answered);
        // n1 gets the newer cell of the key both replicate; the key only n0
        // (of those that answered) replicates is whole; n2 did not answer.
        assert_eq!(repairs.len(), 1, "{repairs:?}");
        assert_eq!(repairs[&1], [cell(&both, "new", 2)]);

        let agreed = NodePage {
            cells: vec![cell(&both, "new", 2)],
            more: false,
        };
        let node0 = NodePage {
            cells: vec![cell(&both, "new", 2)],
            more: false,
        };
        let merged = newest_cells(vec![node0, agreed], None);
        assert!(stale_replicas(&merged, &ring, rf, &answered).is_empty());
        // A replica that answered without the key at all is repaired too.
        let node0 = NodePage {
            cells: vec![cell(&both, "new", 2)],
            more: false,
        };
        let empty = NodePage {
            cells: Vec::new(),
            more: false,
        };
        let merged = newest_cells(vec![node0, empty], None);
        let repairs = stale_replicas(&merged, &ring, rf, &answered);
        assert_eq!(repairs[&1], [cell(&both, "new", 2)]);
    }

    #[test]
    fn repairs_are_cut_into_messages_of_bounded_size() {
        let cells: Vec<KeyedCell> = (0..10)
            .map(|i| KeyedCell {
                key: format!("key{i}").into_bytes(),
                cell: Cell::value(vec![0u8; 100], 1),
            })
            .collect();
        let one = keyed_cell_bytes(&cells[0].key, &cells[0].cell);
        let chunks = chunk_by_bytes(cells.clone(), 3 * one);
        let sizes: Vec<usize> = chunks.iter().map(Vec::len).collect();
        assert_eq!(sizes, [3, 3, 3, 1]);
        assert_eq!(chunks.concat(), cells, "every cell once, in order");
        let oversized = chunk_by_bytes(cells[..2].to_vec(), 1);
        assert_eq!(oversized.len(), 2, "a cell over the limit goes alone");
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
