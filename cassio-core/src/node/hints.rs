//! Hinted handoff storage: writes a replica missed, kept durably on the
//! coordinator (its own storage engine in `DATA_DIR/hints`) until the replica
//! is back. A hint's key is `target node id, 0x00, created ms, sequence`, so
//! one prefix scan finds a target's hints in order. The hint window is the
//! cells' expiry: an expired hint reads as absent and is counted as expired.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::durable::{write_durably, write_eventually};
use crate::error::{Error, Result};
use crate::proto;
use crate::storage::{Cell, CellValue, Clock, Engine, StorageConfig, SyncMode};
use crate::types::NodeId;

/// One hint ready to replay.
pub(crate) struct Hint {
    pub(crate) id: Vec<u8>,
    /// The hint cell's own timestamp: its deletion must be newer.
    stored_at: u64,
    pub(crate) key: Vec<u8>,
    pub(crate) cell: Cell,
}

pub(crate) struct HintStore {
    engine: Engine,
    clock: Clock,
    window_ms: u64,
    bytes_max: u64,
    sequence: AtomicU64,
    /// Targets that may have hints.
    targets: Mutex<BTreeSet<NodeId>>,
}

fn prefix(target: &NodeId) -> Vec<u8> {
    let mut p = target.as_str().as_bytes().to_vec();
    p.push(0);
    p
}

impl HintStore {
    pub(crate) fn open(
        dir: &Path,
        window_ms: u64,
        bytes_max: u64,
        background_threads: bool,
        clock: Clock,
    ) -> Result<Self> {
        let config = StorageConfig {
            // A hint stands for an acknowledged write: make it durable.
            sync_mode: SyncMode::Batch,
            memtable_bytes_max: 4 * 1024 * 1024,
            // Hints never meet other replicas' data: nothing to resurrect.
            gc_grace_ms: 0,
            background_threads,
            ..StorageConfig::default()
        };
        let engine = Engine::open_with_clock(dir, config, clock.clone())?;
        let mut targets = BTreeSet::new();
        for item in engine.scan(std::ops::Bound::Unbounded, std::ops::Bound::Unbounded) {
            let (id, _) = item?;
            if let Some(end) = id.iter().position(|&b| b == 0) {
                targets.insert(NodeId::new(String::from_utf8_lossy(&id[..end])));
            }
        }
        Ok(HintStore {
            engine,
            clock,
            window_ms,
            bytes_max,
            sequence: AtomicU64::new(0),
            targets: Mutex::new(targets),
        })
    }

    /// Keeps a hint for each (target, key, cell) in one write, durable (in
    /// batch sync mode, without blocking the thread) before it returns;
    /// false, and none kept, when the store is full. Fullness is checked
    /// once a batch, so the store may pass `hints_bytes_max` by one batch.
    pub(crate) async fn store(&self, missed: &[(&NodeId, &[u8], &Cell)]) -> Result<bool> {
        let stats = self.engine.stats();
        if stats.sstable_bytes + stats.memtable_bytes as u64 >= self.bytes_max {
            return Ok(false);
        }
        let now_ms = (self.clock)();
        let mut writes = Vec::with_capacity(missed.len());
        for &(target, key, cell) in missed {
            let mut id = prefix(target);
            id.extend_from_slice(&now_ms.to_be_bytes());
            id.extend_from_slice(&self.sequence.fetch_add(1, Ordering::Relaxed).to_be_bytes());
            let hint = Cell {
                timestamp: now_ms * 1000,
                expires_at_ms: Some(now_ms + self.window_ms),
                value: CellValue::Value(proto::encode(&(key, cell))?),
            };
            writes.push((id, hint));
        }
        write_durably(&self.engine, writes).await?;
        let mut targets = self.targets.lock();
        for &(target, _, _) in missed {
            if !targets.contains(target) {
                targets.insert(target.clone());
            }
        }
        Ok(true)
    }

    pub(crate) fn targets(&self) -> Vec<NodeId> {
        self.targets.lock().iter().cloned().collect()
    }

    /// Up to `max` live hints for `target`, oldest first, after the hint id
    /// `after` (from the start with `None`), and how many expired hints were
    /// dropped on the way. A replay passes the last id it delivered, so it
    /// does not scan the tombstones of delivered hints again and again. When
    /// a scan from the start finds none, the target is forgotten.
    pub(crate) fn next_batch(
        &self,
        target: &NodeId,
        max: usize,
        after: Option<&[u8]>,
    ) -> Result<(Vec<Hint>, u64)> {
        let now_ms = (self.clock)();
        let start = prefix(target);
        let mut end = start.clone();
        *end.last_mut().expect("prefix ends in 0") = 1;
        let (mut hints, mut expired) = (Vec::new(), 0);
        let from = match after {
            Some(id) => std::ops::Bound::Excluded(id),
            None => std::ops::Bound::Included(&start[..]),
        };
        let cells = self
            .engine
            .scan_cells(from, std::ops::Bound::Excluded(&end[..]));
        for item in cells {
            let (id, cell) = item?;
            if cell.is_tombstone() {
                continue;
            }
            if cell.is_expired(now_ms) {
                self.remove(&id, cell.timestamp)?;
                expired += 1;
                continue;
            }
            let CellValue::Value(payload) = &cell.value else {
                continue;
            };
            let (key, hinted): (Vec<u8>, Cell) = proto::decode(payload)
                .map_err(|e| Error::MalformedMessage(format!("hint for {target}: {e}")))?;
            hints.push(Hint {
                id,
                stored_at: cell.timestamp,
                key,
                cell: hinted,
            });
            if hints.len() == max {
                break;
            }
        }
        if hints.is_empty() && after.is_none() {
            self.targets.lock().remove(target);
        }
        Ok((hints, expired))
    }

    /// Deletes a delivered hint.
    pub(crate) fn delivered(&self, hint: &Hint) -> Result<()> {
        self.remove(&hint.id, hint.stored_at)
    }

    /// A tombstone just newer than the hint, whatever the clock does now.
    /// Not waited for: were it lost, the hint would only be replayed again.
    fn remove(&self, id: &[u8], stored_at: u64) -> Result<()> {
        write_eventually(
            &self.engine,
            vec![(id, Cell::tombstone(stored_at.saturating_add(1)))],
        )
    }

    pub(crate) fn flush(&self) -> Result<()> {
        self.engine.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::system_clock;

    /// A replay walks a target's hints batch by batch from a cursor (the
    /// last id delivered): each hint once, oldest first, none skipped; the
    /// target is forgotten only by a scan from the start that finds none.
    #[test]
    fn batches_after_a_cursor_cover_every_hint_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = HintStore::open(dir.path(), 3_600_000, 1 << 30, false, system_clock()).unwrap();
        let (target, other) = (NodeId::from("n2"), NodeId::from("n3"));
        let cells: Vec<(Vec<u8>, Cell)> = (0..300u64)
            .map(|i| (format!("key{i:03}").into_bytes(), Cell::value("v", i + 1)))
            .collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let missed: Vec<_> = cells.iter().map(|(k, c)| (&target, &k[..], c)).collect();
            assert!(store.store(&missed).await.unwrap());
            let theirs = [(&other, &b"elsewhere"[..], &cells[0].1)];
            assert!(store.store(&theirs).await.unwrap());
        });

        let mut replayed = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let (batch, expired) = store.next_batch(&target, 128, after.as_deref()).unwrap();
            assert_eq!(expired, 0);
            if batch.is_empty() {
                break;
            }
            for hint in &batch {
                store.delivered(hint).unwrap();
                replayed.push(hint.key.clone());
            }
            after = batch.last().map(|h| h.id.clone());
        }
        let stored: Vec<Vec<u8>> = cells.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(replayed, stored, "every hint once, in the order stored");
        assert!(
            store.targets().contains(&target),
            "a cursor scan forgets nothing"
        );
        let (rest, _) = store.next_batch(&target, 128, None).unwrap();
        assert!(rest.is_empty());
        assert_eq!(
            store.targets(),
            vec![other.clone()],
            "n2 is done, n3 is not"
        );
    }
}
