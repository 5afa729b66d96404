//! The unit of data: a cell is a value or a tombstone with a timestamp and an
//! optional expiry, and the last-write-wins order that every replica, memtable
//! and compaction uses to pick one cell among several for the same key.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// What a cell holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CellValue {
    /// Live bytes (as one byte string on the wire, not a sequence of
    /// numbers).
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A deletion marker. It shadows every older cell for its key.
    Tombstone,
}

/// One version of one key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cell {
    /// Write time in microseconds since the Unix epoch (the coordinator's
    /// hybrid logical clock, or the client's own).
    pub timestamp: u64,
    /// For a value: the wall-clock millisecond after which it reads as absent.
    /// For a tombstone: when the deletion became effective, if that differs
    /// from `timestamp` (an expired value turned into a tombstone by
    /// compaction keeps its expiry here so `gc_grace` counts from it).
    pub expires_at_ms: Option<u64>,
    pub value: CellValue,
}

impl Cell {
    /// A live value without expiry.
    pub fn value(value: impl Into<Vec<u8>>, timestamp: u64) -> Self {
        Cell {
            timestamp,
            expires_at_ms: None,
            value: CellValue::Value(value.into()),
        }
    }

    /// A tombstone written at `timestamp`.
    pub fn tombstone(timestamp: u64) -> Self {
        Cell {
            timestamp,
            expires_at_ms: None,
            value: CellValue::Tombstone,
        }
    }

    pub fn is_tombstone(&self) -> bool {
        matches!(self.value, CellValue::Tombstone)
    }

    /// The bytes a reader sees at `now_ms`: `None` for tombstones and expired values.
    pub fn live_value(&self, now_ms: u64) -> Option<&[u8]> {
        match &self.value {
            CellValue::Value(v) if !self.is_expired(now_ms) => Some(v),
            _ => None,
        }
    }

    /// The bytes of a value (expired or not), taken out of the cell; `None`
    /// for a tombstone.
    pub fn into_value(self) -> Option<Vec<u8>> {
        match self.value {
            CellValue::Value(v) => Some(v),
            CellValue::Tombstone => None,
        }
    }

    /// [`Cell::live_value`], taking the bytes out of the cell.
    pub fn into_live_value(self, now_ms: u64) -> Option<Vec<u8>> {
        match self.value {
            CellValue::Value(v) if !self.is_expired(now_ms) => Some(v),
            _ => None,
        }
    }

    /// True for a value with a TTL, expired or not (Redis's "volatile"
    /// keys).
    pub fn has_ttl(&self) -> bool {
        !self.is_tombstone() && self.expires_at_ms.is_some()
    }

    /// True for a value whose expiry has passed (tombstones never "expire").
    pub fn is_expired(&self, now_ms: u64) -> bool {
        !self.is_tombstone() && self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }

    /// The wall-clock millisecond from which `gc_grace` is counted for a
    /// tombstone or expired value.
    pub fn deletion_time_ms(&self) -> u64 {
        self.expires_at_ms.unwrap_or(self.timestamp / 1000)
    }

    /// Last-write-wins order. Greater wins. Newer timestamp first; on an exact
    /// tie a tombstone beats a value, then greater value bytes, then the later
    /// expiry (no expiry counts as latest), so every replica picks the same
    /// cell whatever order it saw them in.
    pub fn lww_cmp(&self, other: &Cell) -> Ordering {
        self.timestamp
            .cmp(&other.timestamp)
            .then_with(|| match (&self.value, &other.value) {
                (CellValue::Tombstone, CellValue::Tombstone) => Ordering::Equal,
                (CellValue::Tombstone, CellValue::Value(_)) => Ordering::Greater,
                (CellValue::Value(_), CellValue::Tombstone) => Ordering::Less,
                (CellValue::Value(a), CellValue::Value(b)) => a.cmp(b),
            })
            .then_with(|| {
                let a = self.expires_at_ms.unwrap_or(u64::MAX);
                let b = other.expires_at_ms.unwrap_or(u64::MAX);
                a.cmp(&b)
            })
    }

    /// True when `self` wins over `other` under [`Cell::lww_cmp`].
    pub fn supersedes(&self, other: &Cell) -> bool {
        self.lww_cmp(other) == Ordering::Greater
    }

    /// Approximate memory a cell and its key occupy, for memtable accounting.
    pub(crate) fn footprint_bytes(&self, key_len: usize) -> usize {
        const OVERHEAD_BYTES: usize = 64;
        let value_len = match &self.value {
            CellValue::Value(v) => v.len(),
            CellValue::Tombstone => 0,
        };
        key_len + value_len + OVERHEAD_BYTES
    }
}

/// Of two optional cells, the one that wins last-write-wins.
pub(crate) fn newest(a: Option<Cell>, b: Option<Cell>) -> Option<Cell> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.supersedes(&a) { b } else { a }),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_timestamp_wins() {
        let old = Cell::value("z", 1);
        let new = Cell::value("a", 2);
        assert!(new.supersedes(&old));
        assert!(!old.supersedes(&new));
    }

    #[test]
    fn tie_breaks_are_deterministic() {
        let tomb = Cell::tombstone(5);
        let value = Cell::value("v", 5);
        assert!(tomb.supersedes(&value), "tombstone wins an exact tie");
        assert!(Cell::value("b", 5).supersedes(&Cell::value("a", 5)));
        let mut expiring = Cell::value("v", 5);
        expiring.expires_at_ms = Some(10);
        assert!(value.supersedes(&expiring), "no expiry counts as latest");
        assert_eq!(value.lww_cmp(&value.clone()), Ordering::Equal);
    }

    #[test]
    fn expired_values_read_as_absent() {
        let mut cell = Cell::value("v", 1);
        cell.expires_at_ms = Some(100);
        assert_eq!(cell.live_value(99), Some(&b"v"[..]));
        assert_eq!(cell.live_value(100), None);
        assert_eq!(Cell::tombstone(1).live_value(0), None);
    }
}
