//! The manifest: which SSTables are live and which commit-log segments are
//! already covered by them. It is small and rewritten whole, atomically
//! (temporary file, fsync, rename, directory fsync), after every flush and
//! compaction, so a crash leaves either the old or the new set of files.
//!
//! Layout: magic u32, version u32, next_table_id u64, log_floor u64,
//! table count u32, table ids u64*, crc32 u32 of everything before it.

use std::path::{Path, PathBuf};

use super::codec::{get_u32, get_u64};
use super::fsutil::write_atomically;
use crate::error::{Error, Result};

const MAGIC: u32 = 0xCA55_10AF;
const VERSION: u32 = 1;
pub(crate) const FILE_NAME: &str = "MANIFEST";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Manifest {
    /// Ids below this are taken (by live tables or by files being written).
    pub(crate) next_table_id: u64,
    /// Commit-log segments with a lower id are fully in live tables.
    pub(crate) log_floor: u64,
    /// Live tables, in no particular order (reads order them by timestamp).
    pub(crate) tables: Vec<u64>,
}

pub(crate) fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

impl Manifest {
    /// Reads the manifest in `dir`; `None` when there is none (a new engine).
    pub(crate) fn load(dir: &Path) -> Result<Option<Manifest>> {
        let path = path(dir);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let corrupt = |offset: usize, reason: &str| Error::Corrupt {
            file: path.clone(),
            offset: offset as u64,
            reason: reason.to_string(),
        };
        if bytes.len() < 32 {
            return Err(corrupt(0, "manifest shorter than its header"));
        }
        let body_len = bytes.len() - 4;
        let expected = get_u32(&bytes, body_len).map_err(|r| corrupt(body_len, r))?;
        let got = crc32fast::hash(&bytes[..body_len]);
        if expected != got {
            return Err(Error::ChecksumMismatch {
                file: path,
                offset: 0,
                expected,
                got,
            });
        }
        if get_u32(&bytes, 0) != Ok(MAGIC) {
            return Err(corrupt(0, "not a cassio manifest (bad magic)"));
        }
        let version = get_u32(&bytes, 4).map_err(|r| corrupt(4, r))?;
        if version != VERSION {
            return Err(Error::UnsupportedVersion {
                file: path,
                found: version,
                supported: VERSION,
            });
        }
        let next_table_id = get_u64(&bytes, 8).map_err(|r| corrupt(8, r))?;
        let log_floor = get_u64(&bytes, 16).map_err(|r| corrupt(16, r))?;
        let count = get_u32(&bytes, 24).map_err(|r| corrupt(24, r))? as usize;
        if 28 + count * 8 != body_len {
            return Err(corrupt(
                24,
                "table count does not match the manifest's length",
            ));
        }
        let tables = (0..count)
            .map(|i| get_u64(&bytes, 28 + i * 8).map_err(|r| corrupt(28 + i * 8, r)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Manifest {
            next_table_id,
            log_floor,
            tables,
        }))
    }

    /// Replaces the manifest in `dir` atomically.
    pub(crate) fn store(&self, dir: &Path) -> Result<()> {
        let mut bytes = Vec::with_capacity(32 + self.tables.len() * 8);
        bytes.extend_from_slice(&MAGIC.to_le_bytes());
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&self.next_table_id.to_le_bytes());
        bytes.extend_from_slice(&self.log_floor.to_le_bytes());
        bytes.extend_from_slice(&(self.tables.len() as u32).to_le_bytes());
        for id in &self.tables {
            bytes.extend_from_slice(&id.to_le_bytes());
        }
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        write_atomically(&path(dir), &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), None);
        let manifest = Manifest {
            next_table_id: 9,
            log_floor: 4,
            tables: vec![3, 7, 8],
        };
        manifest.store(dir.path()).unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), Some(manifest));
        let mut bytes = std::fs::read(path(dir.path())).unwrap();
        bytes[20] ^= 1;
        std::fs::write(path(dir.path()), bytes).unwrap();
        assert!(matches!(
            Manifest::load(dir.path()),
            Err(Error::ChecksumMismatch { .. })
        ));
    }
}
