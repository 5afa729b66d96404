//! The SSTable file format, shared by the writer and the reader.
//!
//! ```text
//! [data block]*  entries (codec) then crc32 u32         ~block_bytes each
//! [index block]  count, then (last_key, offset, len)*, crc32
//! [bloom block]  bloomfilter bytes, crc32
//! [meta block]   counts, timestamp range, key range, cells with a TTL
//!                (version 2 on), crc32
//! [footer]       48 bytes: index/bloom/meta (offset u64, len u32),
//!                version u32, crc32 of the preceding 40 bytes, magic u32
//! ```
//! Every block ends in its own CRC32; a mismatch is an error naming the file
//! and the block's offset.

use std::path::{Path, PathBuf};

use super::codec::{DecodeError, get_bytes, get_u32, get_u64, get_varint, put_bytes, put_varint};
use crate::error::{Error, Result};

pub(crate) const MAGIC: u32 = 0xCA55_105D;
/// Version 2 added the count of cells with a TTL to the meta block; version
/// 1 files are still read (that count as 0).
pub(crate) const VERSION: u32 = 2;
pub(crate) const FOOTER_BYTES: usize = 48;
const CRC_BYTES: usize = 4;

/// Seed for every bloom filter, so identical inputs give identical files.
pub(crate) const BLOOM_SEED: [u8; 32] = *b"cassio-sstable-bloom-seed-v1....";

pub(crate) fn table_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.sst"))
}

pub(crate) fn parse_table_name(name: &str) -> Option<u64> {
    name.strip_suffix(".sst")?.parse().ok()
}

/// Where a block lives in the file (`len` includes its trailing CRC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlockHandle {
    pub(crate) offset: u64,
    pub(crate) len: u32,
}

/// One index entry: the last key of a data block and where the block is.
#[derive(Clone, Debug)]
pub(crate) struct IndexEntry {
    pub(crate) last_key: Vec<u8>,
    pub(crate) block: BlockHandle,
}

/// Facts about a table's contents, used by reads and compaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TableMeta {
    pub(crate) entries: u64,
    pub(crate) tombstones: u64,
    /// Values with a TTL (expired or not).
    pub(crate) expiring: u64,
    pub(crate) min_timestamp: u64,
    pub(crate) max_timestamp: u64,
    pub(crate) min_key: Vec<u8>,
    pub(crate) max_key: Vec<u8>,
}

pub(crate) struct Footer {
    pub(crate) index: BlockHandle,
    pub(crate) bloom: BlockHandle,
    pub(crate) meta: BlockHandle,
    /// The file's format version (1 to [`VERSION`]).
    pub(crate) version: u32,
}

/// Appends the CRC32 of `block` to it.
pub(crate) fn seal_block(block: &mut Vec<u8>) {
    let crc = crc32fast::hash(block);
    block.extend_from_slice(&crc.to_le_bytes());
}

/// Checks a block's trailing CRC32 and returns its body.
pub(crate) fn open_block<'a>(file: &Path, offset: u64, block: &'a [u8]) -> Result<&'a [u8]> {
    if block.len() < CRC_BYTES {
        return Err(Error::Corrupt {
            file: file.to_path_buf(),
            offset,
            reason: "block shorter than its checksum".into(),
        });
    }
    let (body, tail) = block.split_at(block.len() - CRC_BYTES);
    let expected = u32::from_le_bytes(tail.try_into().expect("4 bytes"));
    let got = crc32fast::hash(body);
    if expected != got {
        return Err(Error::ChecksumMismatch {
            file: file.to_path_buf(),
            offset,
            expected,
            got,
        });
    }
    Ok(body)
}

pub(crate) fn encode_index(index: &[IndexEntry]) -> Vec<u8> {
    let mut buf = Vec::new();
    put_varint(&mut buf, index.len() as u64);
    for entry in index {
        put_bytes(&mut buf, &entry.last_key);
        put_varint(&mut buf, entry.block.offset);
        put_varint(&mut buf, u64::from(entry.block.len));
    }
    seal_block(&mut buf);
    buf
}

pub(crate) fn decode_index(body: &[u8]) -> Result<Vec<IndexEntry>, DecodeError> {
    let (count, mut at) = get_varint(body)?;
    // Each entry takes at least 3 bytes: bound the allocation by the input.
    if count > body.len() as u64 {
        return Err("index count larger than the index");
    }
    let mut index = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let (key, n) = get_bytes(&body[at..])?;
        at += n;
        let (offset, n) = get_varint(&body[at..])?;
        at += n;
        let (len, n) = get_varint(&body[at..])?;
        at += n;
        let len = u32::try_from(len).map_err(|_| "block length over 4 GiB")?;
        index.push(IndexEntry {
            last_key: key.to_vec(),
            block: BlockHandle { offset, len },
        });
    }
    if at != body.len() {
        return Err("trailing bytes after the index");
    }
    Ok(index)
}

pub(crate) fn encode_meta(meta: &TableMeta) -> Vec<u8> {
    let mut buf = Vec::new();
    for v in [
        meta.entries,
        meta.tombstones,
        meta.min_timestamp,
        meta.max_timestamp,
    ] {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    put_bytes(&mut buf, &meta.min_key);
    put_bytes(&mut buf, &meta.max_key);
    buf.extend_from_slice(&meta.expiring.to_le_bytes());
    seal_block(&mut buf);
    buf
}

/// The meta block of a table of format `version`.
pub(crate) fn decode_meta(body: &[u8], version: u32) -> Result<TableMeta, DecodeError> {
    let mut at = 32;
    let (min_key, n) = get_bytes(body.get(at..).ok_or("truncated meta")?)?;
    at += n;
    let (max_key, n) = get_bytes(&body[at..])?;
    at += n;
    // Version 1 ends here; version 2 adds the expiring count.
    let expiring = match (version, body.len() - at) {
        (1, 0) => 0,
        (_, 8) if version > 1 => get_u64(body, at)?,
        _ => return Err("meta block of the wrong length for its version"),
    };
    Ok(TableMeta {
        entries: get_u64(body, 0)?,
        tombstones: get_u64(body, 8)?,
        expiring,
        min_timestamp: get_u64(body, 16)?,
        max_timestamp: get_u64(body, 24)?,
        min_key: min_key.to_vec(),
        max_key: max_key.to_vec(),
    })
}

pub(crate) fn encode_footer(footer: &Footer) -> [u8; FOOTER_BYTES] {
    let mut buf = [0u8; FOOTER_BYTES];
    let mut at = 0;
    for handle in [footer.index, footer.bloom, footer.meta] {
        buf[at..at + 8].copy_from_slice(&handle.offset.to_le_bytes());
        buf[at + 8..at + 12].copy_from_slice(&handle.len.to_le_bytes());
        at += 12;
    }
    buf[36..40].copy_from_slice(&footer.version.to_le_bytes());
    let crc = crc32fast::hash(&buf[..40]);
    buf[40..44].copy_from_slice(&crc.to_le_bytes());
    buf[44..48].copy_from_slice(&MAGIC.to_le_bytes());
    buf
}

/// Parses the footer at `offset` of `file` (for error messages).
pub(crate) fn decode_footer(file: &Path, offset: u64, buf: &[u8]) -> Result<Footer> {
    let corrupt = |reason: &str| Error::Corrupt {
        file: file.to_path_buf(),
        offset,
        reason: reason.to_string(),
    };
    if buf.len() != FOOTER_BYTES {
        return Err(corrupt("file too short for an SSTable footer"));
    }
    if get_u32(buf, 44) != Ok(MAGIC) {
        return Err(corrupt("not a cassio SSTable (bad magic in footer)"));
    }
    let expected = get_u32(buf, 40).map_err(corrupt)?;
    let got = crc32fast::hash(&buf[..40]);
    if expected != got {
        return Err(Error::ChecksumMismatch {
            file: file.to_path_buf(),
            offset,
            expected,
            got,
        });
    }
    let version = get_u32(buf, 36).map_err(corrupt)?;
    if !(1..=VERSION).contains(&version) {
        return Err(Error::UnsupportedVersion {
            file: file.to_path_buf(),
            found: version,
            supported: VERSION,
        });
    }
    let handle = |at: usize| -> Result<BlockHandle> {
        Ok(BlockHandle {
            offset: get_u64(buf, at).map_err(corrupt)?,
            len: get_u32(buf, at + 8).map_err(corrupt)?,
        })
    };
    Ok(Footer {
        index: handle(0)?,
        bloom: handle(12)?,
        meta: handle(24)?,
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> TableMeta {
        TableMeta {
            entries: 10,
            tombstones: 2,
            expiring: 3,
            min_timestamp: 5,
            max_timestamp: 9,
            min_key: b"a".to_vec(),
            max_key: b"z".to_vec(),
        }
    }

    /// The body of a sealed block.
    fn body(block: &[u8]) -> &[u8] {
        &block[..block.len() - CRC_BYTES]
    }

    #[test]
    fn the_meta_block_round_trips() {
        assert_eq!(
            decode_meta(body(&encode_meta(&meta())), VERSION),
            Ok(meta())
        );
    }

    /// Version 1 tables have no expiring count: they read as none. A
    /// block of the other version's length is refused.
    #[test]
    fn a_version_1_meta_block_reads_with_no_expiring_count() {
        let block = encode_meta(&meta());
        let v2 = body(&block);
        let v1 = &v2[..v2.len() - 8];
        let expected = TableMeta {
            expiring: 0,
            ..meta()
        };
        assert_eq!(decode_meta(v1, 1), Ok(expected));
        let wrong = Err("meta block of the wrong length for its version");
        assert_eq!(decode_meta(v2, 1), wrong);
        assert_eq!(decode_meta(v1, 2), wrong);
    }

    #[test]
    fn footers_of_both_versions_open_and_later_ones_are_refused() {
        let handle = BlockHandle { offset: 1, len: 2 };
        let path = Path::new("t.sst");
        let with_version = |version: u32| {
            encode_footer(&Footer {
                index: handle,
                bloom: handle,
                meta: handle,
                version,
            })
        };
        for version in [1, VERSION] {
            let opened = decode_footer(path, 0, &with_version(version)).unwrap();
            assert_eq!((opened.meta, opened.version), (handle, version));
        }
        assert!(matches!(
            decode_footer(path, 0, &with_version(VERSION + 1)),
            Err(Error::UnsupportedVersion { found, .. }) if found == VERSION + 1
        ));
    }
}
