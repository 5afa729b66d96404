//! Anti-entropy repair on a node (the steps are in `coordinator/repair.rs`).
//! A client's `Repair` makes this node compare the keys it shares with each
//! live peer, one peer after the other, and swap what differs; a peer's
//! `RepairDigests` and `RepairRange` are answered here. Storage scans run on
//! tokio's blocking threads, never on the node's own runtime.

use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use super::shared::NodeShared;
use crate::coordinator::repair::{self, RANGE_BYTES_MAX, RangeDigest, RepairSummary};
use crate::error::{Error, Result};
use crate::net::{Caller, Transport};
use crate::proto::{KeyedCell, Request, Response};
use crate::ring::Ring;
use crate::storage::validate_write;
use crate::types::NodeId;

/// A repair step may scan much of a node's data: it gets this long.
const REPAIR_STEP_TIMEOUT_MS: u64 = 120_000;

/// Ranges per `RepairDigests` message at most (each up to 1024 keys).
const RANGES_PER_MESSAGE_MAX: usize = 256;

/// A peer's answer to one range stops after about this many bytes of cells.
const REPLY_BYTES_MAX: usize = 4 * RANGE_BYTES_MAX;

/// One end of a key range; `None` is the start or end of the key space.
type RangeEnd = Option<Vec<u8>>;

/// The keys two nodes both replicate, from one look at the ring.
struct SharedKeys {
    ring: Arc<Ring>,
    replication_factor: usize,
    ours: usize,
    theirs: usize,
}

impl SharedKeys {
    fn contains(&self, key: &[u8]) -> bool {
        let (mut ours, mut theirs) = (false, false);
        for index in self.ring.replica_set_indexes(key, self.replication_factor) {
            ours |= index == self.ours;
            theirs |= index == self.theirs;
        }
        ours && theirs
    }
}

fn bound(key: &RangeEnd, inclusive: bool) -> Bound<&[u8]> {
    match (key.as_deref(), inclusive) {
        (None, _) => Bound::Unbounded,
        (Some(key), true) => Bound::Included(key),
        (Some(key), false) => Bound::Excluded(key),
    }
}

fn unexpected(peer: &NodeId, response: Response) -> Error {
    Error::Remote {
        node: peer.to_string(),
        message: match response {
            Response::Error { message } | Response::Invalid { message } => message,
            other => format!("unexpected answer to a repair step: {other:?}"),
        },
    }
}

impl<T: Transport> NodeShared<T> {
    /// Repairs this node's data against every live peer's.
    pub(crate) async fn anti_entropy_repair(self: &Arc<Self>) -> Response {
        let now = self.now_ms();
        let peers: Vec<(NodeId, SocketAddr, bool)> = {
            let gossiper = self.gossiper.lock();
            let ring = gossiper.ring();
            ring.nodes()
                .iter()
                .filter(|node| **node != self.node_id)
                .filter_map(|node| {
                    let (addr, up) = gossiper.reach(node, now)?;
                    Some((node.clone(), addr, up))
                })
                .collect()
        };
        let mut summary = RepairSummary::default();
        for (peer, addr, up) in peers {
            if !up {
                summary.peers_down += 1;
                continue;
            }
            match self.repair_with(&peer, addr).await {
                Ok(done) => summary.add(&done),
                Err(e) => {
                    return Response::Error {
                        message: format!("repair with {peer} at {addr} failed: {e}"),
                    };
                }
            }
        }
        tracing::info!(?summary, "repair done");
        Response::Repaired(summary)
    }

    fn shared_keys(&self, peer: &NodeId) -> Option<Arc<SharedKeys>> {
        let ring = self.gossiper.lock().ring();
        let position = |node: &NodeId| ring.nodes().iter().position(|n| n == node);
        Some(Arc::new(SharedKeys {
            ours: position(&self.node_id)?,
            theirs: position(peer)?,
            replication_factor: self.config.replication_factor as usize,
            ring: ring.clone(),
        }))
    }

    /// Runs `work` on a blocking thread (it scans storage).
    async fn blocking<R: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&NodeShared<T>) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let node = self.clone();
        tokio::task::spawn_blocking(move || work(&node))
            .await
            .map_err(|e| Error::TaskFailed {
                what: "a repair scan".into(),
                reason: e.to_string(),
            })?
    }

    async fn repair_with(
        self: &Arc<Self>,
        peer: &NodeId,
        addr: SocketAddr,
    ) -> Result<RepairSummary> {
        let mut summary = RepairSummary {
            peers: 1,
            ..RepairSummary::default()
        };
        let Some(shared) = self.shared_keys(peer) else {
            return Ok(summary);
        };
        let scan_shared = shared.clone();
        let ranges = self
            .blocking(move |node| {
                let cells = node.engine.scan_cells(Bound::Unbounded, Bound::Unbounded);
                repair::digest_ranges(cells, |key| scan_shared.contains(key))
            })
            .await?;
        summary.ranges = ranges.len() as u64;
        let conn = self.peer(addr).await?;
        let timeout = Duration::from_millis(REPAIR_STEP_TIMEOUT_MS);

        // Step 1: which ranges differ, as (start exclusive, end inclusive).
        let mut differing: Vec<(RangeEnd, RangeEnd)> = Vec::new();
        let mut start: RangeEnd = None;
        for chunk in ranges.chunks(RANGES_PER_MESSAGE_MAX) {
            let request = Request::RepairDigests {
                start: start.clone(),
                ranges: chunk.to_vec(),
            };
            let indexes = match conn.request(request, timeout).await? {
                Response::RangesDiffering(indexes) => indexes,
                other => return Err(unexpected(peer, other)),
            };
            for index in indexes {
                let index = index as usize;
                let Some(range) = chunk.get(index) else {
                    return Err(unexpected(
                        peer,
                        Response::Error {
                            message: format!("range {index} of {} differs", chunk.len()),
                        },
                    ));
                };
                let range_start = match index {
                    0 => start.clone(),
                    _ => chunk[index - 1].end.clone(),
                };
                differing.push((range_start, range.end.clone()));
            }
            start = chunk
                .last()
                .and_then(|range: &RangeDigest| range.end.clone());
        }
        summary.ranges_differing = differing.len() as u64;

        // Step 2: swap the cells of each differing range.
        for (mut start, end) in differing {
            loop {
                let (scan_shared, scan_start, scan_end) =
                    (shared.clone(), start.clone(), end.clone());
                let cells = self
                    .blocking(move |node| {
                        let scan = node
                            .engine
                            .scan_cells(bound(&scan_start, false), bound(&scan_end, true));
                        let mut cells = Vec::new();
                        for item in scan {
                            let (key, cell) = item?;
                            if scan_shared.contains(&key) {
                                cells.push(KeyedCell { key, cell });
                            }
                        }
                        Ok(cells)
                    })
                    .await?;
                let request = Request::RepairRange {
                    start: start.clone(),
                    end: end.clone(),
                    cells,
                };
                let (kept, theirs, resume) = match conn.request(request, timeout).await? {
                    Response::RepairCells {
                        kept,
                        cells,
                        resume,
                    } => (kept, cells, resume),
                    other => return Err(unexpected(peer, other)),
                };
                summary.cells_sent += u64::from(kept);
                summary.cells_received += self.keep_newer(theirs, shared.clone()).await? as u64;
                match resume {
                    Some(key) => start = Some(key),
                    None => break,
                }
            }
        }
        Ok(summary)
    }

    /// Writes the cells of shared keys that supersede what this node holds
    /// (or that it lacks); how many.
    async fn keep_newer(
        self: &Arc<Self>,
        cells: Vec<KeyedCell>,
        shared: Arc<SharedKeys>,
    ) -> Result<usize> {
        if cells.is_empty() {
            return Ok(0);
        }
        let value_bytes_max = self.config.storage.value_bytes_max;
        self.blocking(move |node| {
            let mut newer = Vec::new();
            for KeyedCell { key, cell } in cells {
                validate_write(&key, &cell, value_bytes_max)?;
                if !shared.contains(&key) {
                    // The peer's ring differs from this node's for now.
                    continue;
                }
                let supersedes = match node.engine.get_cell(&key)? {
                    Some(local) => cell.supersedes(&local),
                    None => true,
                };
                if supersedes {
                    newer.push(KeyedCell { key, cell });
                }
            }
            let count = newer.len();
            if count > 0 {
                node.engine.write_batch(node.observe(newer))?;
            }
            Ok(count)
        })
        .await
    }

    /// A peer's repair step (`RepairDigests` or `RepairRange`).
    pub(crate) async fn answer_repair_step(
        self: &Arc<Self>,
        caller: &Caller,
        request: Request,
    ) -> Response {
        let Some(shared) = caller
            .node_id
            .as_ref()
            .and_then(|peer| self.shared_keys(peer))
        else {
            return Response::Invalid {
                message: "repair steps come from a peer in this node's ring".into(),
            };
        };
        let answer = match request {
            Request::RepairDigests { start, ranges } => {
                self.blocking(move |node| {
                    let end = ranges.last().and_then(|range| range.end.clone());
                    let cells = node
                        .engine
                        .scan_cells(bound(&start, false), bound(&end, true));
                    repair::differing_ranges(&ranges, cells, |key| shared.contains(key))
                        .map(Response::RangesDiffering)
                })
                .await
            }
            Request::RepairRange {
                start,
                end,
                mut cells,
            } => {
                if let Some(message) = check_range_cells(&start, &end, &cells) {
                    return Response::Invalid { message };
                }
                // Keys this node does not replicate by its own ring (the
                // sender's view may differ for a moment) are not taken.
                cells.retain(|cell| shared.contains(&cell.key));
                let value_bytes_max = self.config.storage.value_bytes_max;
                self.blocking(move |node| {
                    for KeyedCell { key, cell } in &cells {
                        validate_write(key, cell, value_bytes_max)?;
                    }
                    let mine = node
                        .engine
                        .scan_cells(bound(&start, false), bound(&end, true))
                        .filter(|item| item.as_ref().map_or(true, |(key, _)| shared.contains(key)));
                    let exchange = repair::exchange(cells, mine, REPLY_BYTES_MAX)?;
                    let kept = exchange.keep.len() as u32;
                    if kept > 0 {
                        node.engine.write_batch(node.observe(exchange.keep))?;
                    }
                    Ok(Response::RepairCells {
                        kept,
                        cells: exchange.reply,
                        resume: exchange.resume,
                    })
                })
                .await
            }
            _ => {
                return Response::Error {
                    message: "internal: not a repair step".into(),
                };
            }
        };
        answer.unwrap_or_else(|e| Response::Error {
            message: e.to_string(),
        })
    }
}

/// Why a `RepairRange`'s cells cannot be merged, if they cannot: they must
/// be sorted by key, without repeats, inside the range.
fn check_range_cells(start: &RangeEnd, end: &RangeEnd, cells: &[KeyedCell]) -> Option<String> {
    let mut previous = start.as_deref();
    for KeyedCell { key, .. } in cells {
        if previous.is_some_and(|p| key.as_slice() <= p) {
            return Some("repair cells must be sorted by key and after the range's start".into());
        }
        previous = Some(key);
    }
    match (cells.last(), end.as_deref()) {
        (Some(last), Some(end)) if last.key.as_slice() > end => {
            Some("repair cells must not pass the range's end".into())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Cell;

    fn cells(keys: &[&str]) -> Vec<KeyedCell> {
        keys.iter()
            .map(|key| KeyedCell {
                key: key.as_bytes().to_vec(),
                cell: Cell::value("v", 1),
            })
            .collect()
    }

    fn key(key: &str) -> Option<Vec<u8>> {
        Some(key.as_bytes().to_vec())
    }

    #[test]
    fn range_cells_must_be_sorted_unique_and_inside_the_range() {
        assert_eq!(check_range_cells(&None, &None, &[]), None);
        assert_eq!(
            check_range_cells(&key("a"), &key("c"), &cells(&["b", "c"])),
            None
        );
        let refused = [
            (None, None, cells(&["b", "a"])),
            (None, None, cells(&["a", "a"])),
            (key("b"), None, cells(&["b"])),
            (key("b"), None, cells(&["a"])),
            (None, key("b"), cells(&["a", "c"])),
        ];
        for (start, end, cells) in refused {
            assert!(
                check_range_cells(&start, &end, &cells).is_some(),
                "{start:?}..={end:?} {cells:?}"
            );
        }
    }
}
