//! The memtable: a sorted in-memory map holding the newest cell per key
//! written since the last flush. A B-tree behind a read-write lock: writers
//! are serialised by the engine's write lock anyway, so "insert only if
//! newer" is atomic, and a reader waits at most for one insert. It replaced
//! a lock-free skiplist whose searches chase a pointer (and miss the cache)
//! per node: with a million random 16-byte keys, an insert took 2.0-3.3 µs
//! there and 0.9 µs in the B-tree, a lookup 2.2-2.6 µs and 0.9-1.0 µs.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::RwLock;

use super::cell::Cell;
use super::memkey::MemKey;

pub(crate) struct Memtable {
    /// The commit-log segment holding this memtable's records.
    pub(crate) id: u64,
    /// Cells behind an `Arc` so readers clone a pointer, not a value, and
    /// hold the lock only for the lookup.
    map: RwLock<BTreeMap<MemKey, Arc<Cell>>>,
    bytes: AtomicUsize,
    /// Cells held with a TTL ([`Cell::has_ttl`]).
    expiring: AtomicUsize,
}

impl Memtable {
    pub(crate) fn new(id: u64) -> Self {
        Memtable {
            id,
            map: RwLock::new(BTreeMap::new()),
            bytes: AtomicUsize::new(0),
            expiring: AtomicUsize::new(0),
        }
    }

    /// Keeps `cell` unless the memtable already holds a cell for `key` that
    /// wins last-write-wins. Callers hold the engine's write lock.
    pub(crate) fn insert(&self, key: &[u8], cell: Cell) {
        let footprint = cell.footprint_bytes(key.len());
        let expiring = cell.has_ttl();
        let mut map = self.map.write();
        let replaced_expiring = match map.entry(MemKey::new(key)) {
            Entry::Vacant(entry) => {
                entry.insert(Arc::new(cell));
                false
            }
            Entry::Occupied(mut entry) if cell.supersedes(entry.get()) => {
                entry.insert(Arc::new(cell)).has_ttl()
            }
            Entry::Occupied(_) => return,
        };
        self.bytes.fetch_add(footprint, Ordering::Relaxed);
        match (expiring, replaced_expiring) {
            (true, false) => self.expiring.fetch_add(1, Ordering::Relaxed),
            (false, true) => self.expiring.fetch_sub(1, Ordering::Relaxed),
            _ => 0,
        };
    }

    /// Cells held with a TTL.
    pub(crate) fn expiring(&self) -> usize {
        self.expiring.load(Ordering::Relaxed)
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<Arc<Cell>> {
        self.map.read().get(key).cloned()
    }

    /// True if the memtable holds any cell for `key` at or before `timestamp`.
    pub(crate) fn holds_older(&self, key: &[u8], timestamp: u64) -> bool {
        self.map
            .read()
            .get(key)
            .is_some_and(|cell| cell.timestamp <= timestamp)
    }

    /// Bytes written into this memtable (keys, values and a per-entry
    /// overhead), replaced cells included. It decides when the memtable
    /// rotates, and so also bounds its commit-log segment: one key
    /// overwritten for ever still starts a new segment (and frees the old)
    /// every `memtable_bytes_max` written.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.read().len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.map.read().is_empty()
    }

    /// Up to `limit` entries after `from` and within `end`, in key order.
    pub(crate) fn range_batch(
        &self,
        from: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Vec<(Vec<u8>, Cell)> {
        self.map
            .read()
            .range::<[u8], _>((from, end))
            .take(limit)
            .map(|(key, cell)| (key.as_slice().to_vec(), Cell::clone(cell)))
            .collect()
    }

    /// Calls `f` on every entry in key order without copying (for flushing
    /// an immutable memtable: the read lock is held throughout).
    pub(crate) fn for_each_entry(
        &self,
        mut f: impl FnMut(&[u8], &Cell) -> crate::error::Result<()>,
    ) -> crate::error::Result<()> {
        for (key, cell) in self.map.read().iter() {
            f(key.as_slice(), cell)?;
        }
        Ok(())
    }
}

/// Ordered iteration over a memtable within a key range. It re-seeks in
/// batches instead of holding the map's lock, so it can own its memtable
/// and live inside a scan while writers keep inserting.
pub(crate) struct MemtableIter {
    memtable: Arc<Memtable>,
    from: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    batch: std::vec::IntoIter<(Vec<u8>, Cell)>,
    /// Entries the next batch copies: few at first, since a short scan
    /// (a page of a client's scan, say) stops long before a full batch.
    batch_entries: usize,
    done: bool,
}

const SCAN_BATCH_ENTRIES_FIRST: usize = 16;
const SCAN_BATCH_ENTRIES_MAX: usize = 256;

impl MemtableIter {
    pub(crate) fn new(memtable: Arc<Memtable>, from: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> Self {
        MemtableIter {
            memtable,
            from,
            end,
            batch: Vec::new().into_iter(),
            batch_entries: SCAN_BATCH_ENTRIES_FIRST,
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
            self.batch_entries,
        );
        if batch.len() < self.batch_entries {
            self.done = true;
        }
        self.batch_entries = (self.batch_entries * 2).min(SCAN_BATCH_ENTRIES_MAX);
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

    #[test]
    fn counts_the_cells_held_with_a_ttl() {
        let m = Memtable::new(1);
        let with_ttl = |timestamp| Cell {
            expires_at_ms: Some(1_000),
            ..Cell::value("v", timestamp)
        };
        m.insert(b"a", with_ttl(1));
        m.insert(b"b", with_ttl(1));
        m.insert(b"c", Cell::value("v", 1));
        assert_eq!(m.expiring(), 2);
        // An older cell loses and changes nothing.
        m.insert(b"a", Cell::value("v", 0));
        assert_eq!(m.expiring(), 2);
        // A newer value without a TTL, or a tombstone, replaces one.
        m.insert(b"a", Cell::value("v", 2));
        m.insert(b"b", Cell::tombstone(2));
        assert_eq!(m.expiring(), 0);
        m.insert(b"c", with_ttl(2));
        assert_eq!(m.expiring(), 1);
    }

    /// Overwrites count too: a hot key must still fill the memtable, or
    /// its commit-log segment would grow without end.
    #[test]
    fn overwrites_count_towards_a_flush() {
        let m = Memtable::new(1);
        let footprint = Cell::value(vec![0; 100], 1).footprint_bytes(1);
        for timestamp in 1..=100 {
            m.insert(b"k", Cell::value(vec![0; 100], timestamp));
        }
        m.insert(b"k", Cell::value(vec![0; 100], 50));
        assert_eq!(m.len(), 1);
        assert_eq!(m.get(b"k").map(|c| c.timestamp), Some(100));
        assert_eq!(m.bytes(), 100 * footprint, "the older cell was not kept");
    }

    /// Readers on other threads while one writer inserts: a key's cell never
    /// goes back to an older one, and every inserted key is found after.
    #[test]
    fn readers_see_each_key_only_move_forward() {
        let m = Arc::new(Memtable::new(1));
        let keys: Vec<Vec<u8>> = (0..64u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (m, keys) = (m.clone(), keys.clone());
                std::thread::spawn(move || {
                    let mut seen = vec![0u64; keys.len()];
                    for round in 0..2_000 {
                        let i = round % keys.len();
                        if let Some(cell) = m.get(&keys[i]) {
                            assert!(cell.timestamp >= seen[i], "key {i} went back");
                            seen[i] = cell.timestamp;
                        }
                    }
                })
            })
            .collect();
        for timestamp in 1..=50u64 {
            for key in &keys {
                m.insert(key, Cell::value("v", timestamp));
            }
        }
        for reader in readers {
            reader.join().unwrap();
        }
        for key in &keys {
            assert_eq!(m.get(key).map(|c| c.timestamp), Some(50));
        }
        assert_eq!(m.len(), keys.len());
    }
}
