//! Reads one SSTable: point lookups through the bloom filter and sparse index,
//! and ordered iteration for scans and compaction. The index, bloom filter and
//! meta stay in memory; data blocks are read with positioned reads, so many
//! threads share one open file without a lock.

use std::fs::File;
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bloomfilter::Bloom;

use super::cell::Cell;
use super::codec::decode_entry_ref;
use super::table_format::{
    BlockHandle, FOOTER_BYTES, IndexEntry, TableMeta, decode_footer, decode_index, decode_meta,
    open_block,
};
use crate::error::{Error, Result};

pub(crate) struct Table {
    pub(crate) id: u64,
    path: PathBuf,
    file: File,
    index: Vec<IndexEntry>,
    bloom: Bloom<[u8]>,
    pub(crate) meta: TableMeta,
    pub(crate) file_bytes: u64,
}

impl Table {
    /// Opens and verifies the footer, index, bloom filter and meta block.
    pub(crate) fn open(path: &Path, id: u64) -> Result<Table> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let file_bytes = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let corrupt = |offset: u64, reason: &str| Error::Corrupt {
            file: path.to_path_buf(),
            offset,
            reason: reason.to_string(),
        };
        if file_bytes < FOOTER_BYTES as u64 {
            return Err(corrupt(0, "file too short for an SSTable footer"));
        }
        let footer_at = file_bytes - FOOTER_BYTES as u64;
        let footer_bytes = read_at(&file, path, footer_at, FOOTER_BYTES)?;
        let footer = decode_footer(path, footer_at, &footer_bytes)?;
        for handle in [footer.index, footer.bloom, footer.meta] {
            if handle.offset.saturating_add(u64::from(handle.len)) > footer_at {
                return Err(corrupt(footer_at, "footer points past the end of the file"));
            }
        }
        let block = |handle: BlockHandle| -> Result<Vec<u8>> {
            let bytes = read_at(&file, path, handle.offset, handle.len as usize)?;
            let body_len = open_block(path, handle.offset, &bytes)?.len();
            let mut bytes = bytes;
            bytes.truncate(body_len);
            Ok(bytes)
        };
        let index = decode_index(&block(footer.index)?)
            .map_err(|reason| corrupt(footer.index.offset, reason))?;
        let bloom = Bloom::from_slice(&block(footer.bloom)?)
            .map_err(|reason| corrupt(footer.bloom.offset, reason))?;
        let meta = decode_meta(&block(footer.meta)?, footer.version)
            .map_err(|reason| corrupt(footer.meta.offset, reason))?;
        if let Some(entry) = index
            .iter()
            .find(|e| e.block.offset.saturating_add(u64::from(e.block.len)) > footer.index.offset)
        {
            return Err(corrupt(
                footer.index.offset,
                &format!(
                    "index names a data block at {} beyond the data",
                    entry.block.offset
                ),
            ));
        }
        Ok(Table {
            id,
            path: path.to_path_buf(),
            file,
            index,
            bloom,
            meta,
            file_bytes,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// False when the key is certainly absent (outside the key range, or not
    /// in the bloom filter).
    pub(crate) fn may_contain(&self, key: &[u8]) -> bool {
        self.meta.entries > 0
            && key >= self.meta.min_key.as_slice()
            && key <= self.meta.max_key.as_slice()
            && self.bloom.check(key)
    }

    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Cell>> {
        if !self.may_contain(key) {
            return Ok(None);
        }
        let block_no = self.index.partition_point(|e| e.last_key.as_slice() < key);
        if block_no == self.index.len() {
            return Ok(None);
        }
        let handle = self.index[block_no].block;
        let body = self.read_block(handle)?;
        let mut at = 0;
        while at < body.len() {
            let (entry, used) =
                decode_entry_ref(&body[at..]).map_err(|r| self.corrupt(handle.offset, r))?;
            if entry.key == key {
                return Ok(Some(entry.to_cell()));
            }
            if entry.key > key {
                break;
            }
            at += used;
        }
        Ok(None)
    }

    /// Reads a data block and checks its CRC; returns the body without it.
    fn read_block(&self, handle: BlockHandle) -> Result<Vec<u8>> {
        let mut bytes = read_at(&self.file, &self.path, handle.offset, handle.len as usize)?;
        let body_len = open_block(&self.path, handle.offset, &bytes)?.len();
        bytes.truncate(body_len);
        Ok(bytes)
    }

    fn corrupt(&self, offset: u64, reason: &str) -> Error {
        Error::Corrupt {
            file: self.path.clone(),
            offset,
            reason: reason.to_string(),
        }
    }

    /// Decodes every entry of data block `block_no`.
    fn block_entries(&self, block_no: usize) -> Result<Vec<(Vec<u8>, Cell)>> {
        let handle = self.index[block_no].block;
        let body = self.read_block(handle)?;
        let mut entries = Vec::new();
        let mut at = 0;
        while at < body.len() {
            let (entry, used) =
                decode_entry_ref(&body[at..]).map_err(|r| self.corrupt(handle.offset, r))?;
            entries.push((entry.key.to_vec(), entry.to_cell()));
            at += used;
        }
        Ok(entries)
    }
}

fn read_at(file: &File, path: &Path, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)
        .map_err(|e| Error::io(path, e))?;
    Ok(buf)
}

/// Ordered iteration over a table's entries within a key range.
pub(crate) struct TableIter {
    table: Arc<Table>,
    next_block: usize,
    entries: std::vec::IntoIter<(Vec<u8>, Cell)>,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    done: bool,
}

impl TableIter {
    pub(crate) fn new(table: Arc<Table>, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> Self {
        let next_block = match &start {
            Bound::Included(k) | Bound::Excluded(k) => table
                .index
                .partition_point(|e| e.last_key.as_slice() < k.as_slice()),
            Bound::Unbounded => 0,
        };
        TableIter {
            table,
            next_block,
            entries: Vec::new().into_iter(),
            start,
            end,
            done: false,
        }
    }

    fn before_start(&self, key: &[u8]) -> bool {
        match &self.start {
            Bound::Included(s) => key < s.as_slice(),
            Bound::Excluded(s) => key <= s.as_slice(),
            Bound::Unbounded => false,
        }
    }

    fn past_end(&self, key: &[u8]) -> bool {
        match &self.end {
            Bound::Included(e) => key > e.as_slice(),
            Bound::Excluded(e) => key >= e.as_slice(),
            Bound::Unbounded => false,
        }
    }
}

impl Iterator for TableIter {
    type Item = Result<(Vec<u8>, Cell)>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            if let Some((key, cell)) = self.entries.next() {
                if self.before_start(&key) {
                    continue;
                }
                if self.past_end(&key) {
                    self.done = true;
                    return None;
                }
                return Some(Ok((key, cell)));
            }
            if self.next_block >= self.table.index.len() {
                self.done = true;
                return None;
            }
            match self.table.block_entries(self.next_block) {
                Ok(entries) => {
                    self.next_block += 1;
                    self.entries = entries.into_iter();
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}
