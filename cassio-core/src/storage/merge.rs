//! Merges ordered sources (memtables, SSTables) into one ordered stream with
//! one cell per key: the last-write-wins winner among the sources' cells.
//! Scans and compaction both read through it, so they resolve conflicts the
//! same way point reads do.

use super::cell::Cell;
use crate::error::Result;

/// An ordered stream of (key, cell) with strictly increasing keys.
pub(crate) type Source = Box<dyn Iterator<Item = Result<(Vec<u8>, Cell)>> + Send>;

/// Ordered (key, winning cell) pairs merged from several sources; see the module docs.
pub struct MergeIter {
    sources: Vec<Source>,
    /// The next entry of each source; `None` once it is exhausted.
    heads: Vec<Option<(Vec<u8>, Cell)>>,
    started: bool,
    failed: bool,
}

impl MergeIter {
    pub(crate) fn new(sources: Vec<Source>) -> Self {
        let heads = sources.iter().map(|_| None).collect();
        MergeIter {
            sources,
            heads,
            started: false,
            failed: false,
        }
    }

    fn advance(&mut self, i: usize) -> Result<()> {
        self.heads[i] = self.sources[i].next().transpose()?;
        Ok(())
    }

    fn step(&mut self) -> Result<Option<(Vec<u8>, Cell)>> {
        if !self.started {
            self.started = true;
            for i in 0..self.sources.len() {
                self.advance(i)?;
            }
        }
        // Few sources (memtables plus tables), so a linear pass beats a heap.
        let mut first: Option<usize> = None;
        for (i, head) in self.heads.iter().enumerate() {
            if let Some((key, _)) = head
                && first.is_none_or(|f| key < &self.heads[f].as_ref().expect("set").0)
            {
                first = Some(i);
            }
        }
        let Some(first) = first else {
            return Ok(None);
        };
        let (key, mut winner) = self.heads[first].take().expect("chosen above");
        self.advance(first)?;
        for i in first + 1..self.heads.len() {
            if self.heads[i].as_ref().is_some_and(|(k, _)| *k == key) {
                let (_, cell) = self.heads[i].take().expect("checked above");
                if cell.supersedes(&winner) {
                    winner = cell;
                }
                self.advance(i)?;
            }
        }
        Ok(Some((key, winner)))
    }
}

impl Iterator for MergeIter {
    type Item = Result<(Vec<u8>, Cell)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let item = self.step().transpose();
        if matches!(item, Some(Err(_))) {
            self.failed = true;
        }
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(entries: &[(&str, Cell)]) -> Source {
        let v: Vec<_> = entries
            .iter()
            .map(|(k, c)| Ok((k.as_bytes().to_vec(), c.clone())))
            .collect();
        Box::new(v.into_iter())
    }

    #[test]
    fn one_winner_per_key_in_key_order() {
        let merged: Vec<_> = MergeIter::new(vec![
            source(&[("a", Cell::value("a1", 1)), ("c", Cell::value("c9", 9))]),
            source(&[("a", Cell::value("a2", 2)), ("b", Cell::tombstone(3))]),
            source(&[("c", Cell::value("c1", 1))]),
        ])
        .map(|r| r.unwrap())
        .collect();
        assert_eq!(
            merged,
            vec![
                (b"a".to_vec(), Cell::value("a2", 2)),
                (b"b".to_vec(), Cell::tombstone(3)),
                (b"c".to_vec(), Cell::value("c9", 9)),
            ]
        );
    }
}
