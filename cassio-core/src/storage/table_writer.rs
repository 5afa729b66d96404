//! Builds one SSTable from entries given in key order: data blocks, sparse
//! index, bloom filter, meta and footer, written to a temporary name, fsynced,
//! renamed into place and the directory fsynced.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use bloomfilter::Bloom;

use super::cell::Cell;
use super::codec::encode_entry;
use super::fsutil::sync_dir;
use super::table_format::{
    BLOOM_SEED, BlockHandle, Footer, IndexEntry, TableMeta, VERSION, encode_footer, encode_index,
    encode_meta, seal_block, table_path,
};
use crate::error::{Error, Result};

pub(crate) struct TableWriter {
    dir: PathBuf,
    id: u64,
    tmp_path: PathBuf,
    out: BufWriter<File>,
    offset: u64,
    block: Vec<u8>,
    block_bytes: usize,
    last_key: Vec<u8>,
    index: Vec<IndexEntry>,
    bloom: Bloom<[u8]>,
    meta: TableMeta,
}

impl TableWriter {
    /// Starts table `id` in `dir`, sized for about `expected_entries` keys.
    pub(crate) fn create(
        dir: &Path,
        id: u64,
        expected_entries: usize,
        block_bytes: usize,
        bloom_false_positive_rate: f64,
    ) -> Result<Self> {
        let tmp_path = table_path(dir, id).with_extension("sst.tmp");
        let file = File::create(&tmp_path).map_err(|e| Error::io(&tmp_path, e))?;
        let bloom = Bloom::new_for_fp_rate_with_seed(
            expected_entries.max(1),
            bloom_false_positive_rate,
            &BLOOM_SEED,
        )
        .map_err(|reason| Error::InvalidConfig(format!("bloom filter: {reason}")))?;
        Ok(TableWriter {
            dir: dir.to_path_buf(),
            id,
            tmp_path,
            out: BufWriter::with_capacity(256 * 1024, file),
            offset: 0,
            block: Vec::with_capacity(block_bytes * 2),
            block_bytes,
            last_key: Vec::new(),
            index: Vec::new(),
            bloom,
            meta: TableMeta {
                min_timestamp: u64::MAX,
                ..TableMeta::default()
            },
        })
    }

    /// Adds the next entry; keys must arrive in strictly increasing order.
    pub(crate) fn add(&mut self, key: &[u8], cell: &Cell) -> Result<()> {
        debug_assert!(
            self.meta.entries == 0 || key > self.last_key.as_slice(),
            "table keys out of order"
        );
        if self.meta.entries == 0 {
            self.meta.min_key = key.to_vec();
        }
        self.meta.entries += 1;
        self.meta.tombstones += u64::from(cell.is_tombstone());
        self.meta.expiring += u64::from(cell.has_ttl());
        self.meta.min_timestamp = self.meta.min_timestamp.min(cell.timestamp);
        self.meta.max_timestamp = self.meta.max_timestamp.max(cell.timestamp);
        self.bloom.set(key);
        encode_entry(&mut self.block, key, cell);
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        if self.block.len() >= self.block_bytes {
            self.finish_block()?;
        }
        Ok(())
    }

    pub(crate) fn entries(&self) -> u64 {
        self.meta.entries
    }

    fn write(&mut self, bytes: &[u8]) -> Result<BlockHandle> {
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io(&self.tmp_path, e))?;
        let handle = BlockHandle {
            offset: self.offset,
            len: bytes.len() as u32,
        };
        self.offset += bytes.len() as u64;
        Ok(handle)
    }

    fn finish_block(&mut self) -> Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let mut block = std::mem::take(&mut self.block);
        seal_block(&mut block);
        let handle = self.write(&block)?;
        self.index.push(IndexEntry {
            last_key: self.last_key.clone(),
            block: handle,
        });
        block.clear();
        self.block = block;
        Ok(())
    }

    /// Writes the index, bloom filter, meta and footer and makes the table
    /// durable under its final name. Returns the file's path and size.
    pub(crate) fn finish(mut self) -> Result<(PathBuf, u64)> {
        self.finish_block()?;
        if self.meta.entries == 0 {
            self.meta.min_timestamp = 0;
        }
        self.meta.max_key = self.last_key.clone();
        let index = encode_index(&self.index);
        let index = self.write(&index)?;
        let mut bloom = self.bloom.to_bytes();
        seal_block(&mut bloom);
        let bloom = self.write(&bloom)?;
        let meta = encode_meta(&self.meta);
        let meta = self.write(&meta)?;
        let footer = encode_footer(&Footer {
            index,
            bloom,
            meta,
            version: VERSION,
        });
        self.write(&footer)?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| Error::io(&self.tmp_path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&self.tmp_path, e))?;
        let path = table_path(&self.dir, self.id);
        std::fs::rename(&self.tmp_path, &path).map_err(|e| Error::io(&path, e))?;
        sync_dir(&self.dir)?;
        Ok((path, self.offset))
    }
}
