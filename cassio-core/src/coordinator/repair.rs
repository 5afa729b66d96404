//! Anti-entropy repair between two replicas, as pure functions over the
//! cells each holds (in key order), so that what hints and read repair miss
//! is found without reading every value over the network:
//!
//! 1. the initiator cuts the keys both nodes replicate into ranges of at
//!    most [`RANGE_KEYS_MAX`] keys and about [`RANGE_BYTES_MAX`] bytes, and
//!    sends each range's end key, key count and hash ([`digest_ranges`]);
//! 2. the peer hashes its own cells over each range and answers which
//!    differ ([`range_differs`]);
//! 3. for each differing range the initiator sends its cells, a page at a
//!    time ([`take_page`]); the peer keeps those that supersede its own and
//!    answers with its cells that supersede the initiator's or that the
//!    initiator lacks, a page at a time too ([`exchange`]).
//!
//! Tombstones and expired cells take part like values: a replica that
//! missed a delete must get the tombstone. No IO and no clock here; the node
//! (`node/repair.rs`) scans storage and does the sending.

use serde::{Deserialize, Serialize};

use crate::proto::{KeyedCell, keyed_cell_bytes};
use crate::storage::{Cell, CellValue};

/// Keys in one range at most.
pub const RANGE_KEYS_MAX: u32 = 1024;

/// Estimated message bytes of one range's cells at most (a single larger
/// cell makes a range of its own).
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
    /// Pages of cells swapped (one request and its answer each).
    pub pages: u64,
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
        self.pages += other.pages;
        self.cells_sent += other.cells_sent;
        self.cells_received += other.cells_received;
    }
}

/// The bound every range and page of repair keeps: items are taken while
/// their estimated message bytes fit, and always at least one (a single
/// larger item goes alone).
pub struct MessageBudget {
    bytes_max: usize,
    bytes: usize,
    items: usize,
}

impl MessageBudget {
    pub fn new(bytes_max: usize) -> MessageBudget {
        MessageBudget {
            bytes_max,
            bytes: 0,
            items: 0,
        }
    }

    /// Takes an item of `size` bytes if it fits; false when it would pass
    /// the bound (it then starts the next range or page).
    pub fn take(&mut self, size: usize) -> bool {
        if self.items > 0 && self.bytes + size > self.bytes_max {
            return false;
        }
        self.bytes += size;
        self.items += 1;
        true
    }
}

/// A range's running hash: FNV-1a over each cell's fields in key order,
/// written out explicitly so every node computes the same number.
struct RangeHasher {
    keys: u32,
    hash: u64,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl RangeHasher {
    fn new() -> RangeHasher {
        RangeHasher {
            keys: 0,
            hash: FNV_OFFSET,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.hash = (self.hash ^ u64::from(b)).wrapping_mul(FNV_PRIME);
        }
    }

    fn add(&mut self, key: &[u8], cell: &Cell) {
        self.keys += 1;
        self.feed(&(key.len() as u64).to_le_bytes());
        self.feed(key);
        self.feed(&cell.timestamp.to_le_bytes());
        match cell.expires_at_ms {
            None => self.feed(&[0]),
            Some(at) => {
                self.feed(&[1]);
                self.feed(&at.to_le_bytes());
            }
        }
        match &cell.value {
            CellValue::Tombstone => self.feed(&[0]),
            CellValue::Value(value) => {
                self.feed(&[1]);
                self.feed(&(value.len() as u64).to_le_bytes());
                self.feed(value);
            }
        }
    }

    fn finish(&self, end: Option<Vec<u8>>) -> RangeDigest {
        RangeDigest {
            end,
            keys: self.keys,
            hash: self.hash,
        }
    }
}

/// Step 1: cuts the cells (in key order, only the keys both nodes
/// replicate) into ranges. A range ends before the cell that would take it
/// past [`RANGE_KEYS_MAX`] or [`RANGE_BYTES_MAX`]. The last range always
/// ends at the end of the key space, so keys the peer holds after this
/// node's last key are compared too.
pub fn digest_ranges<E>(
    cells: impl Iterator<Item = Result<(Vec<u8>, Cell), E>>,
) -> Result<Vec<RangeDigest>, E> {
    let mut ranges = Vec::new();
    let mut range = RangeHasher::new();
    let mut budget = MessageBudget::new(RANGE_BYTES_MAX);
    let mut last_key: Option<Vec<u8>> = None;
    for item in cells {
        let (key, cell) = item?;
        let size = keyed_cell_bytes(&key, &cell);
        if range.keys >= RANGE_KEYS_MAX || !budget.take(size) {
            ranges.push(range.finish(last_key.take()));
            range = RangeHasher::new();
            budget = MessageBudget::new(RANGE_BYTES_MAX);
            budget.take(size);
        }
        range.add(&key, &cell);
        last_key = Some(key);
    }
    ranges.push(range.finish(None));
    Ok(ranges)
}

/// Step 2: whether this node's cells of one range (in key order, only the
/// keys both replicate) differ from the initiator's digest of it. Stops
/// reading once it holds more keys than the initiator: a near-empty
/// initiator costs the peer no more than it sends.
pub fn range_differs<E>(
    theirs: &RangeDigest,
    cells: impl Iterator<Item = Result<(Vec<u8>, Cell), E>>,
) -> Result<bool, E> {
    let mut mine = RangeHasher::new();
    for item in cells {
        let (key, cell) = item?;
        if mine.keys == theirs.keys {
            return Ok(true);
        }
        mine.add(&key, &cell);
    }
    Ok(mine.keys != theirs.keys || mine.hash != theirs.hash)
}

/// The first cells (in key order) that fit in `bytes_max` of message (at
/// least one), and whether more were left.
pub fn take_page<E>(
    cells: impl Iterator<Item = Result<(Vec<u8>, Cell), E>>,
    bytes_max: usize,
) -> Result<(Vec<KeyedCell>, bool), E> {
    let mut page = Vec::new();
    let mut budget = MessageBudget::new(bytes_max);
    for item in cells {
        let (key, cell) = item?;
        if !budget.take(keyed_cell_bytes(&key, &cell)) {
            return Ok((page, true));
        }
        page.push(KeyedCell { key, cell });
    }
    Ok((page, false))
}

/// What the peer does with a page of the initiator's cells after
/// [`exchange`].
#[derive(Debug, Default, PartialEq)]
pub struct Exchange {
    /// The initiator's cells that supersede this node's (or that it lacks):
    /// to write here.
    pub keep: Vec<KeyedCell>,
    /// This node's cells that supersede the initiator's (or that it lacks),
    /// at most `reply_bytes_max` of message (at least one).
    pub reply: Vec<KeyedCell>,
    /// Set when `reply` stopped early; the initiator asks again from after
    /// its last key (and sends its cells from there again).
    pub more: bool,
}

/// Step 3, on the peer: merges a page of the initiator's cells (`theirs`,
/// sorted by key) with this node's over the same span (`mine`, in key
/// order, only the keys both replicate).
pub fn exchange<E>(
    theirs: Vec<KeyedCell>,
    mine: impl Iterator<Item = Result<(Vec<u8>, Cell), E>>,
    reply_bytes_max: usize,
) -> Result<Exchange, E> {
    let mut out = Exchange::default();
    let mut budget = MessageBudget::new(reply_bytes_max);
    let mut theirs = theirs.into_iter().peekable();
    for item in mine {
        let (key, cell) = item?;
        // Their keys before this one: this node lacks them.
        while let Some(first) = theirs.next_if(|t| t.key < key) {
            out.keep.push(first);
        }
        if let Some(same) = theirs.next_if(|t| t.key == key) {
            if same.cell.supersedes(&cell) {
                out.keep.push(same);
                continue;
            }
            if !cell.supersedes(&same.cell) {
                // The same cell on both sides.
                continue;
            }
        }
        if !budget.take(keyed_cell_bytes(&key, &cell)) {
            // Stop before the cell that would pass the bound. The initiator
            // asks again from after the reply's last key and sends its
            // cells from there again, so the rest of theirs waits for that.
            out.more = true;
            return Ok(out);
        }
        out.reply.push(KeyedCell { key, cell });
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

    fn numbered(count: u32) -> Vec<(String, Cell)> {
        (0..count)
            .map(|i| (format!("k{i:06}"), Cell::value(format!("v{i}"), 10)))
            .collect()
    }

    fn iter(
        items: &[(String, Cell)],
    ) -> impl Iterator<Item = Result<(Vec<u8>, Cell), Infallible>> + '_ {
        items
            .iter()
            .map(|(k, c)| Ok((k.clone().into_bytes(), c.clone())))
    }

    fn digest(items: &[(String, Cell)]) -> Vec<RangeDigest> {
        digest_ranges(iter(items)).unwrap()
    }

    /// The indexes of the ranges that differ, each range's cells read on
    /// their own, as the node reads them.
    fn differing(ranges: &[RangeDigest], items: &[(String, Cell)]) -> Vec<u32> {
        let mut start: Option<&[u8]> = None;
        let mut differing = Vec::new();
        for (index, range) in ranges.iter().enumerate() {
            let end = range.end.as_deref();
            let inside: Vec<(String, Cell)> = items
                .iter()
                .filter(|(k, _)| start.is_none_or(|s| k.as_bytes() > s))
                .filter(|(k, _)| end.is_none_or(|e| k.as_bytes() <= e))
                .cloned()
                .collect();
            if range_differs(range, iter(&inside)).unwrap() {
                differing.push(index as u32);
            }
            start = end;
        }
        differing
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
    fn ranges_end_before_the_cell_that_would_pass_the_byte_bound() {
        let value_bytes = RANGE_BYTES_MAX / 2 - 100;
        let items: Vec<(String, Cell)> = (0..5)
            .map(|i| (format!("k{i}"), Cell::value(vec![7u8; value_bytes], 1)))
            .collect();
        let keys = |ranges: Vec<RangeDigest>| ranges.iter().map(|r| r.keys).collect::<Vec<_>>();
        assert_eq!(
            keys(digest(&items)),
            vec![2, 2, 1],
            "two values fill a range"
        );
        let huge = vec![(
            "a".to_string(),
            Cell::value(vec![0u8; 3 * RANGE_BYTES_MAX], 1),
        )];
        let with_huge: Vec<_> = items.iter().cloned().chain(huge).collect();
        let mut sorted = with_huge.clone();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            keys(digest(&sorted)),
            vec![1, 2, 2, 1],
            "a larger cell is a range alone"
        );
    }

    #[test]
    fn a_peer_stops_reading_a_range_once_it_holds_more_keys() {
        let ranges = digest(&[]);
        let mut read = 0;
        let endless = std::iter::repeat_with(|| {
            read += 1;
            Ok::<_, Infallible>((format!("k{read:09}").into_bytes(), Cell::value("v", 1)))
        });
        assert!(range_differs(&ranges[0], endless).unwrap());
        assert_eq!(read, 1);
    }

    #[test]
    fn a_page_holds_at_least_one_cell_and_says_if_more_were_left() {
        let items = numbered(10);
        let one = keyed_cell_bytes(b"k000000", &items[0].1);
        let (page, more) = take_page(iter(&items), 3 * one).unwrap();
        assert_eq!((page.len(), more), (3, true));
        let (page, more) = take_page(iter(&items), 1).unwrap();
        assert_eq!(
            (page.len(), more),
            (1, true),
            "a cell over the bound goes alone"
        );
        let (page, more) = take_page(iter(&items), usize::MAX).unwrap();
        assert_eq!((page.len(), more), (10, false));
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
        assert!(!out.more);
    }

    #[test]
    fn exchange_stops_its_reply_before_the_bound_and_says_so() {
        let mine = cells(&[
            ("a", Cell::value(vec![0u8; 60], 1)),
            ("b", Cell::value(vec![0u8; 60], 1)),
            ("c", Cell::value(vec![0u8; 60], 1)),
        ]);
        let one = keyed_cell_bytes(b"a", &Cell::value(vec![0u8; 60], 1));
        let theirs = vec![
            keyed("0", Cell::value("before the stop", 1)),
            keyed("c", Cell::value("after the stop", 0)),
        ];
        let out = exchange(theirs, mine, 2 * one + 1).unwrap();
        assert_eq!(out.reply.len(), 2, "a, b; c would pass the bound");
        assert!(out.more);
        assert_eq!(
            out.keep,
            vec![keyed("0", Cell::value("before the stop", 1))],
            "their cells after the stop come again with the next request"
        );
    }
}
