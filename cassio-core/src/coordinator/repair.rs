//! Anti-entropy repair between two replicas, as pure functions over the
//! cells each holds (in key order), so that what hints and read repair miss
//! is found without reading every value over the network:
//!
//! 1. the initiator cuts the keys both nodes replicate into ranges of at
//!    most [`RANGE_KEYS_MAX`] keys or [`RANGE_BYTES_MAX`] bytes, and sends
//!    each range's end key, key count and hash ([`digest_ranges`]);
//! 2. the peer hashes its own cells over the same ranges and answers which
//!    differ ([`differing_ranges`]);
//! 3. for each differing range the initiator sends its cells; the peer keeps
//!    those that supersede its own and answers with its cells that supersede
//!    the initiator's or that the initiator lacks ([`exchange`]).
//!
//! Tombstones and expired cells take part like values: a replica that
//! missed a delete must get the tombstone. No IO and no clock here; the node
//! (`node/repair.rs`) scans storage and does the sending.

use serde::{Deserialize, Serialize};

use crate::proto::KeyedCell;
use crate::storage::{Cell, CellValue};

/// Keys in one range at most.
pub const RANGE_KEYS_MAX: u32 = 1024;

/// Key and value bytes in one range at most (a single larger cell makes a
/// range of its own).
pub const RANGE_BYTES_MAX: usize = 1024 * 1024;

/// One range of the keys two replicas share: from the previous range's end
/// (exclusive; the first range starts at the start of the key space) to
/// `end` (inclusive; `None` is the end of the key space).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeDigest {
    #[serde(with = "serde_bytes")]
    pub end: Option<Vec<u8>>,
    pub keys: u32,
    pub hash: u64,
}

/// What one repair did, added up over peers and ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairSummary {
    /// Peers whose shared keys were compared.
    pub peers: u32,
    /// Peers skipped because they were down.
    pub peers_down: u32,
    /// Ranges compared, and of those the ones whose hashes differed.
    pub ranges: u64,
    pub ranges_differing: u64,
    /// Cells the peers kept from this node, and cells this node kept from
    /// the peers.
    pub cells_sent: u64,
    pub cells_received: u64,
}

impl RepairSummary {
    pub fn add(&mut self, other: &RepairSummary) {
        self.peers += other.peers;
        self.peers_down += other.peers_down;
        self.ranges += other.ranges;
        self.ranges_differing += other.ranges_differing;
        self.cells_sent += other.cells_sent;
        self.cells_received += other.cells_received;
    }
}

/// A range's running hash: FNV-1a over each cell's fields in key order,
/// written out explicitly so every node computes the same number.
struct RangeHasher {
    keys: u32,
    bytes: usize,
    hash: u64,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl RangeHasher {
    fn new() -> RangeHasher {
        RangeHasher {
            keys: 0,
            bytes: 0,
            hash: FNV_OFFSET,
        }
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.hash = (self.hash ^ u64::from(b)).wrapping_mul(FNV_PRIME);
        }
    }

    fn add(&mut self, key: &[u8], cell: &Cell) {
        self.keys += 1;
        self.bytes += key.len() + cell_value_len(cell);
        self.bytes(&(key.len() as u64).to_le_bytes());
        self.bytes(key);
        self.bytes(&cell.timestamp.to_le_bytes());
        match cell.expires_at_ms {
            None => self.bytes(&[0]),
            Some(at) => {
                self.bytes(&[1]);
                self.bytes(&at.to_le_bytes());
            }
        }
        match &cell.value {
            CellValue::Tombstone => self.bytes(&[0]),
            CellValue::Value(value) => {
                self.bytes(&[1]);
                self.bytes(&(value.len() as u64).to_le_bytes());
                self.bytes(value);
            }
        }
    }

    fn full(&self) -> bool {
        self.keys >= RANGE_KEYS_MAX || self.bytes >= RANGE_BYTES_MAX
    }

    fn finish(&self, end: Option<Vec<u8>>) -> RangeDigest {
        RangeDigest {
            end,
            keys: self.keys,
            hash: self.hash,
        }
    }
}

fn cell_value_len(cell: &Cell) -> usize {
    match &cell.value {
        CellValue::Value(value) => value.len(),
        CellValue::Tombstone => 0,
    }
}

/// Step 1: cuts the cells (in key order) that `shared` accepts into ranges.
/// The last range always ends at the end of the key space, so keys the peer
/// holds after this node's last key are compared too.
pub fn digest_ranges<E>(
    cells: impl Iterator<Item = Result<(Vec<u8>, Cell), E>>,
    shared: impl Fn(&[u8]) -> bool,
) -> Result<Vec<RangeDigest>, E> {
    let mut ranges = Vec::new();
    let mut range = RangeHasher::new();
    for item in cells {
        let (key, cell) = item?;
        if !shared(&key) {
            continue;
        }
        range.add(&key, &cell);
        if range.full() {
            ranges.push(range.finish(Some(key)));
            range = RangeHasher::new();
        }
    }
    ranges.push(range.finish(None));
    Ok(ranges)
}

/// Step 2: the indexes of `ranges` whose hash or key count differs from
/// this node's cells over the same ranges. `cells` are this node's cells in
/// key order from the first range's start to the last range's end.
pub fn differing_ranges<E>(
    ranges: &[RangeDigest],
    cells: impl Iterator<Item = Result<(Vec<u8>, Cell), E>>,
    shared: impl Fn(&[u8]) -> bool,
) -> Result<Vec<u32>, E> {
    let mut mine: Vec<RangeHasher> = ranges.iter().map(|_| RangeHasher::new()).collect();
    let mut index = 0;
    for item in cells {
        let (key, cell) = item?;
        if !shared(&key) {
            continue;
        }
        while index < ranges.len()
            && ranges[index]
                .end
                .as_deref()
                .is_some_and(|end| key.as_slice() > end)
        {
            index += 1;
        }
        let Some(range) = mine.get_mut(index) else {
            break;
        };
        range.add(&key, &cell);
    }
    Ok(ranges
        .iter()
        .zip(&mine)
        .enumerate()
        .filter(|(_, (theirs, mine))| theirs.keys != mine.keys || theirs.hash != mine.hash)
        .map(|(index, _)| index as u32)
        .collect())
}

/// What one side does with a range after [`exchange`].
#[derive(Debug, Default, PartialEq)]
pub struct Exchange {
    /// The initiator's cells that supersede this node's (or that it lacks):
    /// to write here.
    pub keep: Vec<KeyedCell>,
    /// This node's cells that supersede the initiator's (or that it lacks):
    /// to send back, at most `reply_bytes_max` of key and value bytes.
    pub reply: Vec<KeyedCell>,
    /// Set when `reply` stopped early: the last key it covers; the
    /// initiator asks again from after it.
    pub resume: Option<Vec<u8>>,
}

/// Step 3, on the peer: merges the initiator's cells of a range (`theirs`,
/// sorted by key) with this node's (`mine`, in key order, already limited
/// to the range and to shared keys).
pub fn exchange<E>(
    theirs: Vec<KeyedCell>,
    mine: impl Iterator<Item = Result<(Vec<u8>, Cell), E>>,
    reply_bytes_max: usize,
) -> Result<Exchange, E> {
    let mut out = Exchange::default();
    let mut reply_bytes = 0;
    let mut theirs = theirs.into_iter().peekable();
    for item in mine {
        let (key, cell) = item?;
        // Their keys before this one: this node lacks them.
        while let Some(first) = theirs.next_if(|t| t.key < key) {
            out.keep.push(first);
        }
        let answer = match theirs.next_if(|t| t.key == key) {
            Some(same) if same.cell.supersedes(&cell) => {
                out.keep.push(same);
                false
            }
            Some(same) => cell.supersedes(&same.cell),
            None => true,
        };
        if answer {
            if reply_bytes >= reply_bytes_max && !out.reply.is_empty() {
                // What is left of theirs is still kept: it was sent whole.
                out.keep.extend(theirs);
                out.resume = out.reply.last().map(|c| c.key.clone());
                return Ok(out);
            }
            reply_bytes += key.len() + cell_value_len(&cell);
            out.reply.push(KeyedCell { key, cell });
        }
    }
    out.keep.extend(theirs);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    fn cells(
        items: &[(&str, Cell)],
    ) -> impl Iterator<Item = Result<(Vec<u8>, Cell), Infallible>> + use<> {
        items
            .iter()
            .map(|(k, c)| Ok((k.as_bytes().to_vec(), c.clone())))
            .collect::<Vec<_>>()
            .into_iter()
    }

    fn keyed(key: &str, cell: Cell) -> KeyedCell {
        KeyedCell {
            key: key.as_bytes().to_vec(),
            cell,
        }
    }

    fn all(_: &[u8]) -> bool {
        true
    }

    fn numbered(count: u32) -> Vec<(String, Cell)> {
        (0..count)
            .map(|i| (format!("k{i:06}"), Cell::value(format!("v{i}"), 10)))
            .collect()
    }

    fn digest(items: &[(String, Cell)]) -> Vec<RangeDigest> {
        let iter = items
            .iter()
            .map(|(k, c)| Ok::<_, Infallible>((k.clone().into_bytes(), c.clone())));
        digest_ranges(iter, all).unwrap()
    }

    fn differing(ranges: &[RangeDigest], items: &[(String, Cell)]) -> Vec<u32> {
        let iter = items
            .iter()
            .map(|(k, c)| Ok::<_, Infallible>((k.clone().into_bytes(), c.clone())));
        differing_ranges(ranges, iter, all).unwrap()
    }

    #[test]
    fn equal_replicas_have_no_differing_range() {
        let items = numbered(3000);
        let ranges = digest(&items);
        assert_eq!(ranges.len(), 3, "1024 + 1024 + 952 (open end)");
        assert_eq!(ranges[0].end.as_deref(), Some(&b"k001023"[..]));
        assert_eq!(ranges[2].end, None);
        assert_eq!(ranges.iter().map(|r| r.keys).sum::<u32>(), 3000);
        assert!(differing(&ranges, &items).is_empty());
    }

    #[test]
    fn each_kind_of_difference_marks_only_its_range() {
        let items = numbered(3000);
        let ranges = digest(&items);
        // A newer value in range 1.
        let mut newer = items.clone();
        newer[1500].1 = Cell::value("v1500", 11);
        assert_eq!(differing(&ranges, &newer), vec![1]);
        // A tombstone instead of a value in range 0.
        let mut deleted = items.clone();
        deleted[3].1 = Cell::tombstone(10);
        assert_eq!(differing(&ranges, &deleted), vec![0]);
        // An expiry added in range 2.
        let mut expiring = items.clone();
        expiring[2999].1.expires_at_ms = Some(5);
        assert_eq!(differing(&ranges, &expiring), vec![2]);
        // A key missing in range 0 and one extra after the last key.
        let mut other = items.clone();
        other.remove(0);
        other.push(("zzz".into(), Cell::value("x", 1)));
        assert_eq!(differing(&ranges, &other), vec![0, 2]);
        // A peer that holds nothing differs wherever this node has keys.
        assert_eq!(differing(&ranges, &[]), vec![0, 1, 2]);
    }

    #[test]
    fn an_empty_replica_still_compares_the_whole_key_space() {
        let ranges = digest(&[]);
        assert_eq!(
            ranges,
            vec![RangeDigest {
                end: None,
                keys: 0,
                hash: FNV_OFFSET
            }]
        );
        assert_eq!(differing(&ranges, &numbered(2)), vec![0]);
        assert!(differing(&ranges, &[]).is_empty());
    }

    #[test]
    fn ranges_are_cut_by_bytes_too_and_unshared_keys_are_left_out() {
        let big = vec![7u8; RANGE_BYTES_MAX / 2];
        let items: Vec<(String, Cell)> = (0..5)
            .map(|i| (format!("k{i}"), Cell::value(big.clone(), 1)))
            .collect();
        let ranges = digest(&items);
        assert_eq!(
            ranges.iter().map(|r| r.keys).collect::<Vec<_>>(),
            vec![2, 2, 1],
            "two half-MiB values fill a range"
        );
        let odd_only = |key: &[u8]| key.last().is_some_and(|b| b % 2 == 1);
        let iter = items
            .iter()
            .map(|(k, c)| Ok::<_, Infallible>((k.clone().into_bytes(), c.clone())));
        let shared = digest_ranges(iter, odd_only).unwrap();
        assert_eq!(shared.iter().map(|r| r.keys).sum::<u32>(), 2, "k1 and k3");
    }

    #[test]
    fn exchange_keeps_what_supersedes_and_answers_the_rest() {
        let theirs = vec![
            keyed("a", Cell::value("only theirs", 5)),
            keyed("b", Cell::value("theirs newer", 9)),
            keyed("c", Cell::value("theirs older", 1)),
            keyed("d", Cell::value("same", 3)),
            keyed("f", Cell::tombstone(7)),
        ];
        let mine = cells(&[
            ("b", Cell::value("mine older", 2)),
            ("c", Cell::value("mine newer", 4)),
            ("d", Cell::value("same", 3)),
            ("e", Cell::value("only mine", 1)),
            ("f", Cell::value("deleted there", 6)),
        ]);
        let out = exchange(theirs, mine, usize::MAX).unwrap();
        let keys = |cells: &[KeyedCell]| -> Vec<String> {
            cells
                .iter()
                .map(|c| String::from_utf8_lossy(&c.key).into_owned())
                .collect()
        };
        assert_eq!(keys(&out.keep), ["a", "b", "f"]);
        assert_eq!(keys(&out.reply), ["c", "e"]);
        assert_eq!(out.resume, None);
    }

    #[test]
    fn exchange_stops_its_reply_at_the_byte_bound_and_says_where() {
        let mine = cells(&[
            ("a", Cell::value(vec![0u8; 60], 1)),
            ("b", Cell::value(vec![0u8; 60], 1)),
            ("c", Cell::value(vec![0u8; 60], 1)),
        ]);
        let theirs = vec![keyed("z", Cell::value("theirs", 1))];
        let out = exchange(theirs, mine, 100).unwrap();
        assert_eq!(
            out.reply.len(),
            2,
            "the bound is passed by at most one cell"
        );
        assert_eq!(out.resume.as_deref(), Some(&b"b"[..]));
        assert_eq!(
            out.keep.len(),
            1,
            "their cells are kept even when the reply stops"
        );
    }
}
