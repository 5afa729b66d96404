//! The memtable: a sorted, concurrent in-memory map holding the newest cell
//! per key written since the last flush. Readers never block; writers are
//! serialised by the engine's write lock, so "insert only if newer" is atomic.

use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_skiplist::SkipMap;

use super::cell::Cell;
use super::memkey::MemKey;

pub(crate) struct Memtable {
    /// The commit-log segment holding this memtable's records.
    pub(crate) id: u64,
    /// Cells behind an `Arc` so "insert if newer" is one skiplist traversal
    /// (`compare_insert`) and readers clone a pointer, not a value.
    map: SkipMap<MemKey, Arc<Cell>>,
    bytes: AtomicUsize,
}

impl Memtable {
    pub(crate) fn new(id: u64) -> Self {
        Memtable {
            id,
            map: SkipMap::new(),
            bytes: AtomicUsize::new(0),
        }
    }

    /// Keeps `cell` unless the memtable already holds a cell for `key` that
    /// wins last-write-wins. Callers hold the engine's write lock.
    pub(crate) fn insert(&self, key: &[u8], cell: Cell) {
        let footprint = cell.footprint_bytes(key.len());
        let cell = Arc::new(cell);
        let challenger = cell.clone();
        let entry = self
            .map
            .compare_insert(MemKey::new(key), cell, |old| challenger.supersedes(old));
        if Arc::ptr_eq(entry.value(), &challenger) {
            self.bytes.fetch_add(footprint, Ordering::Relaxed);
        }
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<Arc<Cell>> {
        self.map.get(key).map(|e| e.value().clone())
    }

    /// True if the memtable holds any cell for `key` at or before `timestamp`.
    pub(crate) fn holds_older(&self, key: &[u8], timestamp: u64) -> bool {
        self.map
            .get(key)
            .is_some_and(|e| e.value().timestamp <= timestamp)
    }

    /// Approximate memory held (keys, values, per-entry overhead; replaced
    /// cells are still counted, as their memory is only freed with the table).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Up to `limit` entries after `from` and within `end`, in key order.
    pub(crate) fn range_batch(
        &self,
        from: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Vec<(Vec<u8>, Cell)> {
        self.map
            .range::<[u8], _>((from, end))
            .take(limit)
            .map(|e| (e.key().as_slice().to_vec(), Cell::clone(e.value())))
            .collect()
    }

    /// Calls `f` on every entry in key order without copying (for flushing).
    pub(crate) fn for_each_entry(
        &self,
        mut f: impl FnMut(&[u8], &Cell) -> crate::error::Result<()>,
    ) -> crate::error::Result<()> {
        for entry in self.map.iter() {
            f(entry.key().as_slice(), entry.value())?;
        }
        Ok(())
    }
}

/// Ordered iteration over a memtable within a key range. It re-seeks in
/// batches instead of holding a skiplist iterator, so it can own its memtable
/// and live inside a scan while writers keep inserting.
pub(crate) struct MemtableIter {
    memtable: Arc<Memtable>,
    from: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    batch: std::vec::IntoIter<(Vec<u8>, Cell)>,
    done: bool,
}

const SCAN_BATCH_ENTRIES: usize = 256;

impl MemtableIter {
    pub(crate) fn new(memtable: Arc<Memtable>, from: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> Self {
        MemtableIter {
            memtable,
            from,
            end,
            batch: Vec::new().into_iter(),
            done: false,
        }
    }
}

impl Iterator for MemtableIter {
    type Item = crate::error::Result<(Vec<u8>, Cell)>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(entry) = self.batch.next() {
            return Some(Ok(entry));
        }
        if self.done {
            return None;
        }
        let batch = self.memtable.range_batch(
            self.from.as_ref().map(Vec::as_slice),
            self.end.as_ref().map(Vec::as_slice),
            SCAN_BATCH_ENTRIES,
        );
        if batch.len() < SCAN_BATCH_ENTRIES {
            self.done = true;
        }
        if let Some((last, _)) = batch.last() {
            self.from = Bound::Excluded(last.clone());
        }
        self.batch = batch.into_iter();
        self.batch.next().map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_cell_whatever_the_arrival_order() {
        let m = Memtable::new(1);
        m.insert(b"k", Cell::value("new", 10));
        m.insert(b"k", Cell::value("old", 5));
        assert_eq!(m.get(b"k").as_deref(), Some(&Cell::value("new", 10)));
        m.insert(b"k", Cell::tombstone(10));
        assert_eq!(m.get(b"k").as_deref(), Some(&Cell::tombstone(10)));
        assert!(m.holds_older(b"k", 10));
        assert!(!m.holds_older(b"k", 9));
    }

    #[test]
    fn range_batches_are_ordered_and_bounded() {
        let m = Memtable::new(1);
        for k in [b"c", b"a", b"d", b"b"] {
            m.insert(k, Cell::value("v", 1));
        }
        let keys: Vec<_> = m
            .range_batch(Bound::Excluded(b"a"), Bound::Included(b"d"), 2)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![b"b".to_vec(), b"c".to_vec()]);
    }
}
