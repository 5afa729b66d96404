//! Anti-entropy repair on a node (the steps are in `coordinator/repair.rs`).
//! A client's `Repair`, or the node's own schedule (`repair_schedule.rs`),
//! makes this node compare the keys it shares with each live peer, one peer
//! after the other, and swap what differs; a peer's `RepairDigests` and
//! `RepairRange` are answered here, after checking them as any input from
//! the network. Storage scans and placement run on tokio's blocking
//! threads, never on the node's own runtime (inline only in the
//! deterministic mode of simulation tests).

use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::shared::{NodeShared, unexpected};
use crate::coordinator::Metrics;
use crate::coordinator::repair::{self, MessageBudget, RangeDigest, RepairSummary};
use crate::error::{Error, Result};
use crate::net::{Caller, Connection, Transport};
use crate::proto::{KeyedCell, Request, Response};
use crate::ring::Ring;
use crate::storage::Cell;
use crate::types::NodeId;

/// A repair step reads at most a few hundred thousand cells: it gets this
/// long.
const REPAIR_STEP_TIMEOUT_MS: u64 = 120_000;

/// Ranges per `RepairDigests` message at most (each up to 1024 keys).
const RANGES_PER_MESSAGE_MAX: usize = 256;

/// A page of cells (either way) stops before passing this many estimated
/// message bytes, or the frame budget if that is smaller.
const PAGE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// One end of a key range; `None` is the start or the end of the key space.
pub(super) type RangeEnd = Option<Vec<u8>>;

/// The keys two nodes both replicate, from one look at the ring.
struct SharedKeys {
    ring: Arc<Ring>,
    replication_factor: usize,
    ours: usize,
    theirs: usize,
}

impl SharedKeys {
    /// Equal on two nodes when they place every key the same way.
    fn placement(&self) -> u64 {
        self.ring.fingerprint(self.replication_factor)
    }

    fn contains(&self, key: &[u8]) -> bool {
        let (mut ours, mut theirs) = (false, false);
        for index in self.ring.replica_set_indexes(key, self.replication_factor) {
            ours |= index == self.ours;
            theirs |= index == self.theirs;
        }
        ours && theirs
    }
}

pub(super) fn bound(key: &RangeEnd, inclusive: bool) -> Bound<&[u8]> {
    match (key.as_deref(), inclusive) {
        (None, _) => Bound::Unbounded,
        (Some(key), true) => Bound::Included(key),
        (Some(key), false) => Bound::Excluded(key),
    }
}

/// Clears its flag when dropped.
pub(super) struct ClearOnDrop<'a>(&'a AtomicBool);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// A peer's answer that breaks the protocol.
fn refused(peer: &Connection, what: &str) -> Error {
    Error::Remote {
        node: peer.remote().to_string(),
        message: format!("repair: {what}"),
    }
}

impl<T: Transport> NodeShared<T> {
    /// Repairs this node's data against every live peer's; one repair at a
    /// time. A peer that fails is reported after the others are done.
    pub(crate) async fn anti_entropy_repair(self: &Arc<Self>) -> Response {
        let Some(_running) = self.claim_repair_slot() else {
            return Response::Error {
                message: "a repair is already running on this node".into(),
            };
        };
        self.repair_with_every_peer().await
    }

    /// The right to move this node's data (a repair or a decommission: one
    /// at a time), held until the guard drops, however the work ends;
    /// `None` while someone else holds it.
    pub(super) fn claim_repair_slot(&self) -> Option<ClearOnDrop<'_>> {
        (!self.repair_running.swap(true, Ordering::AcqRel))
            .then(|| ClearOnDrop(&self.repair_running))
    }

    async fn repair_with_every_peer(self: &Arc<Self>) -> Response {
        let now = self.now_ms();
        let peers: Vec<(NodeId, Option<(SocketAddr, bool)>)> = {
            let gossiper = self.gossiper.lock();
            let ring = gossiper.ring();
            if !ring.nodes().contains(&self.node_id) {
                return Response::Invalid {
                    message: format!("{} holds no data to repair (not in the ring)", self.node_id),
                };
            }
            ring.nodes()
                .iter()
                .filter(|node| **node != self.node_id)
                .map(|node| (node.clone(), gossiper.reach(node, now)))
                .collect()
        };
        let mut summary = RepairSummary::default();
        let mut failed = Vec::new();
        for (peer, reach) in peers {
            let Some((addr, true)) = reach else {
                summary.peers_down += 1;
                continue;
            };
            match self.repair_with(&peer, addr).await {
                Ok(done) => summary.add(&done),
                Err(e) => failed.push(format!("with {peer} at {addr}: {e}")),
            }
        }
        tracing::info!(?summary, failed = failed.len(), "repair done");
        if failed.is_empty() {
            Metrics::add(&self.metrics.repairs, 1);
            Response::Repaired(summary)
        } else {
            Response::Error {
                message: format!(
                    "repair failed {}; the other peers were repaired: {summary:?}",
                    failed.join("; ")
                ),
            }
        }
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

    /// This node's cells of keys shared with a peer, after `start` up to
    /// `end` (inclusive), in key order.
    fn shared_cells<'a>(
        &'a self,
        shared: &'a SharedKeys,
        start: &RangeEnd,
        end: &RangeEnd,
    ) -> impl Iterator<Item = Result<(Vec<u8>, Cell)>> + 'a {
        let stopping = &self.repair_stopping;
        self.engine
            .scan_cells(bound(start, false), bound(end, true))
            .filter(move |item| item.as_ref().map_or(true, |(key, _)| shared.contains(key)))
            .map(move |item| match stopping.load(Ordering::Acquire) {
                // The node is stopping: a long scan ends at the next key.
                true => Err(Error::Closed),
                false => item,
            })
    }

    /// Runs `work` on a blocking thread (it scans storage or places keys),
    /// or right here when storage runs without threads of its own (the
    /// deterministic mode of simulation tests).
    pub(super) async fn blocking<R: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&NodeShared<T>) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        if !self.config.storage.background_threads {
            return work(self);
        }
        let node = self.clone();
        tokio::task::spawn_blocking(move || work(&node))
            .await
            .map_err(|e| Error::TaskFailed {
                what: "a repair scan".into(),
                reason: e.to_string(),
            })?
    }

    /// The most estimated bytes of cells one repair message carries.
    pub(super) fn page_bytes_max(&self) -> usize {
        PAGE_BYTES_MAX.min(self.message_budget_bytes())
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
        let shared = self.shared_keys(peer).ok_or_else(|| Error::Remote {
            node: peer.to_string(),
            message: "left the ring during the repair".into(),
        })?;
        let scan_shared = shared.clone();
        let ranges = self
            .blocking(move |node| {
                repair::digest_ranges(node.shared_cells(&scan_shared, &None, &None))
            })
            .await?;
        summary.ranges = ranges.len() as u64;
        let conn = self.peers.get(addr).await?;
        let differing = self
            .differing_ranges(&conn, ranges, shared.placement())
            .await?;
        summary.ranges_differing = differing.len() as u64;
        for (start, end) in differing {
            self.swap_range(&conn, &shared, start, end, &mut summary)
                .await?;
        }
        Ok(summary)
    }

    /// Step 1: sends the digests in messages of at most
    /// [`RANGES_PER_MESSAGE_MAX`] ranges and the frame budget; the ranges
    /// that differ, as (start exclusive, end inclusive).
    async fn differing_ranges(
        &self,
        conn: &Connection,
        ranges: Vec<RangeDigest>,
        placement: u64,
    ) -> Result<Vec<(RangeEnd, RangeEnd)>> {
        let timeout = Duration::from_millis(REPAIR_STEP_TIMEOUT_MS);
        let mut differing = Vec::new();
        let mut start: RangeEnd = None;
        let mut rest = &ranges[..];
        while !rest.is_empty() {
            let mut budget = MessageBudget::new(self.message_budget_bytes());
            let mut count = 0;
            while count < rest.len().min(RANGES_PER_MESSAGE_MAX)
                && budget.take(rest[count].end.as_ref().map_or(0, Vec::len) + 32)
            {
                count += 1;
            }
            let (chunk, after) = rest.split_at(count);
            let request = Request::RepairDigests {
                start: start.clone(),
                ranges: chunk.to_vec(),
                placement,
            };
            let indexes = match conn.request(request, timeout).await? {
                Response::RangesDiffering(indexes) => indexes,
                other => return Err(unexpected(conn, other)),
            };
            let mut previous = None;
            for index in indexes {
                let index = index as usize;
                if chunk.get(index).is_none() || previous.is_some_and(|p| index <= p) {
                    return Err(refused(
                        conn,
                        "range indexes must rise and stay in the message",
                    ));
                }
                previous = Some(index);
                let range_start = match index.checked_sub(1) {
                    None => start.clone(),
                    Some(before) => chunk[before].end.clone(),
                };
                differing.push((range_start, chunk[index].end.clone()));
            }
            start = chunk.last().and_then(|range| range.end.clone());
            rest = after;
        }
        Ok(differing)
    }

    /// Step 3 for one range: this node's cells go a page at a time, and the
    /// peer answers a page at a time, until both are through to `end`.
    async fn swap_range(
        self: &Arc<Self>,
        conn: &Connection,
        shared: &Arc<SharedKeys>,
        mut start: RangeEnd,
        end: RangeEnd,
        summary: &mut RepairSummary,
    ) -> Result<()> {
        let timeout = Duration::from_millis(REPAIR_STEP_TIMEOUT_MS);
        let page_bytes_max = self.page_bytes_max();
        loop {
            let (scan_shared, scan_start, scan_end) = (shared.clone(), start.clone(), end.clone());
            let (cells, more_here) = self
                .blocking(move |node| {
                    let cells = node.shared_cells(&scan_shared, &scan_start, &scan_end);
                    repair::take_page(cells, page_bytes_max)
                })
                .await?;
            // A page that stopped early covers the range up to its last key.
            let upto = match (more_here, cells.last()) {
                (true, Some(last)) => Some(last.key.clone()),
                _ => end.clone(),
            };
            let request = Request::RepairRange {
                start: start.clone(),
                end: upto.clone(),
                cells,
            };
            let (kept, theirs, more_there) = match conn.request(request, timeout).await? {
                Response::RepairCells { kept, cells, more } => (kept, cells, more),
                other => return Err(unexpected(conn, other)),
            };
            if let Some(problem) = check_range_cells(&start, &upto, &theirs) {
                return Err(refused(conn, &problem));
            }
            summary.pages += 1;
            summary.cells_sent += u64::from(kept);
            // Whichever side stopped early, the next page starts after the
            // last key both have been through.
            let next = match (more_there, theirs.last(), more_here) {
                (true, Some(last), _) => Some(Some(last.key.clone())),
                (true, None, _) => return Err(refused(conn, "an empty page with more to come")),
                (false, _, true) => Some(upto),
                (false, _, false) => None,
            };
            let shared = shared.clone();
            summary.cells_received += self
                .blocking(move |node| node.write_repaired(&shared, theirs))
                .await? as u64;
            match next {
                Some(after) => start = after,
                None => return Ok(()),
            }
        }
    }

    /// Writes cells a repair found missing or older here (the side that
    /// sent them compared them with this node's); a write racing the repair
    /// still wins on every read by last-write-wins. Keys this node does not
    /// replicate by its own ring (the peer's may differ for a moment) are
    /// not taken. How many were written.
    fn write_repaired(&self, shared: &SharedKeys, mut cells: Vec<KeyedCell>) -> Result<usize> {
        if self.repair_stopping.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        cells.retain(|cell| shared.contains(&cell.key));
        let count = cells.len();
        if count > 0 {
            self.engine.write_batch(self.observe(cells))?;
        }
        Ok(count)
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
        let problem = match &request {
            Request::RepairDigests { placement, .. } if *placement != shared.placement() => Some(
                "the two nodes place keys differently for now (membership or replication factor differ); repair again once gossip settles".into(),
            ),
            Request::RepairDigests { start, ranges, .. } => check_digests(start, ranges),
            Request::RepairRange { start, end, cells } => {
                check_range(start, end).or_else(|| check_range_cells(start, end, cells))
            }
            _ => Some("not a repair step".into()),
        };
        if let Some(message) = problem {
            return Response::Invalid { message };
        }
        let page_bytes_max = self.page_bytes_max();
        let answer = self
            .blocking(move |node| match request {
                Request::RepairDigests { start, ranges, .. } => {
                    let mut differing = Vec::new();
                    let mut range_start = start;
                    for (index, range) in ranges.iter().enumerate() {
                        let cells = node.shared_cells(&shared, &range_start, &range.end);
                        if repair::range_differs(range, cells)? {
                            differing.push(index as u32);
                        }
                        range_start = range.end.clone();
                    }
                    Ok(Response::RangesDiffering(differing))
                }
                Request::RepairRange { start, end, cells } => {
                    let mine = node.shared_cells(&shared, &start, &end);
                    let exchange = repair::exchange(cells, mine, page_bytes_max)?;
                    let kept = node.write_repaired(&shared, exchange.keep)?;
                    Ok(Response::RepairCells {
                        kept: kept as u32,
                        cells: exchange.reply,
                        more: exchange.more,
                    })
                }
                _ => Ok(Response::Error {
                    message: "internal: not a repair step".into(),
                }),
            })
            .await;
        answer.unwrap_or_else(|e| Response::Error {
            message: e.to_string(),
        })
    }
}

/// Why a range (after `start`, up to `end`) is empty or reversed, if it is.
fn check_range(start: &RangeEnd, end: &RangeEnd) -> Option<String> {
    match (start, end) {
        (Some(start), Some(end)) if start >= end => {
            Some("a repair range must end after it starts".into())
        }
        _ => None,
    }
}

/// Why a `RepairDigests` message cannot be answered, if it cannot: 1 to
/// [`RANGES_PER_MESSAGE_MAX`] ranges whose ends rise after `start`, only the
/// last open.
fn check_digests(start: &RangeEnd, ranges: &[RangeDigest]) -> Option<String> {
    if ranges.is_empty() || ranges.len() > RANGES_PER_MESSAGE_MAX {
        return Some(format!(
            "a repair digest message holds 1 to {RANGES_PER_MESSAGE_MAX} ranges, not {}",
            ranges.len()
        ));
    }
    let mut previous = start;
    for (index, range) in ranges.iter().enumerate() {
        if range.end.is_none() && index + 1 < ranges.len() {
            return Some("only the last repair range may run to the end of the keys".into());
        }
        if let Some(problem) = check_range(previous, &range.end) {
            return Some(problem);
        }
        previous = &range.end;
    }
    None
}

/// Why cells of a range cannot be merged, if they cannot: they must be
/// sorted by key, without repeats, after `start` and up to `end`.
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

    fn cells(keys: &[&str]) -> Vec<KeyedCell> {
        keys.iter()
            .map(|key| KeyedCell {
                key: key.as_bytes().to_vec(),
                cell: Cell::value("v", 1),
            })
            .collect()
    }

    fn key(key: &str) -> RangeEnd {
        Some(key.as_bytes().to_vec())
    }

    fn range(end: RangeEnd) -> RangeDigest {
        RangeDigest {
            end,
            keys: 0,
            hash: 0,
        }
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

    #[test]
    fn ranges_must_rise_and_only_the_last_may_be_open() {
        assert_eq!(check_range(&None, &None), None);
        assert_eq!(check_range(&key("a"), &key("b")), None);
        assert!(check_range(&key("b"), &key("b")).is_some());
        assert!(check_range(&key("c"), &key("b")).is_some());

        assert_eq!(check_digests(&None, &[range(key("a")), range(None)]), None);
        assert!(check_digests(&None, &[]).is_some());
        assert!(check_digests(&None, &[range(None), range(key("a"))]).is_some());
        assert!(check_digests(&key("b"), &[range(key("a"))]).is_some());
        assert!(check_digests(&None, &[range(key("b")), range(key("a"))]).is_some());
        let too_many: Vec<RangeDigest> = (0..=RANGES_PER_MESSAGE_MAX)
            .map(|i| range(key(&format!("{i:04}"))))
            .collect();
        assert!(check_digests(&None, &too_many).is_some());
    }
}
