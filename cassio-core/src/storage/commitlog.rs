//! The commit log: append-only segment files that make a write durable before
//! it is only in a memtable, and replay them after a restart.
//!
//! One segment belongs to one memtable (same id); once that memtable is in an
//! SSTable the manifest's `log_floor` passes it and the segment is deleted.
//!
//! Segment layout: a 16-byte header (magic u32, version u32, segment id u64),
//! then records `len u32 | crc32(len) u32 | crc32(payload) u32 | payload`,
//! where the payload is one [`codec`](super::codec) entry. The separate length
//! checksum lets replay tell a torn tail (the process died mid-append: only
//! the final record of the newest segment is incomplete) from corruption
//! (anything else), which is an error naming the file and offset.
//!
//! Group commit: writers append under a short lock and get a log sequence
//! number; `sync_to(lsn)` makes one of its callers (a blocking writer, or the
//! engine's sync thread on behalf of writers that must not block) write the
//! buffer out and fsync for everyone whose record it covers. In periodic mode
//! a writer calls `write_out_to(lsn)` instead before its write is
//! acknowledged: the records are then in the OS's page cache, so they
//! survive the process dying (only a machine crash can lose what the next
//! periodic fsync had not covered); one write-out covers every record
//! appended before it.
//!
//! Failure is final: after a write or fsync of a segment fails, what reached
//! the disk is unknown (a partial write; pages an fsync error dropped while a
//! later fsync reports success), so the log never writes or syncs again and
//! every append and sync returns [`Error::CommitLogFailed`] naming the first
//! cause. A restart replays what the disk holds (like Cassandra's default
//! `commit_failure_policy: stop`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use super::cell::Cell;
use super::codec::{decode_entry, encode_entry, get_u32, get_u64};
use super::fsutil::sync_dir;
use crate::error::{Error, Result};

const MAGIC: u32 = 0xCA55_10C0;
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 16;
const RECORD_HEADER_BYTES: usize = 12;
/// The writer hands its buffer to the OS once it holds this much.
const BUFFER_BYTES_MAX: usize = 256 * 1024;

pub(crate) fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("commitlog-{id:020}.log"))
}

/// Appends one commit-log record to `records`: header (length, its CRC, the
/// payload's CRC) and the encoded entry.
pub(crate) fn encode_record(records: &mut Vec<u8>, key: &[u8], cell: &Cell) {
    let start = records.len();
    records.extend_from_slice(&[0; RECORD_HEADER_BYTES]);
    encode_entry(records, key, cell);
    let payload = &records[start + RECORD_HEADER_BYTES..];
    let len = (payload.len() as u32).to_le_bytes();
    let payload_crc = crc32fast::hash(payload);
    let header = &mut records[start..start + RECORD_HEADER_BYTES];
    header[0..4].copy_from_slice(&len);
    header[4..8].copy_from_slice(&crc32fast::hash(&len).to_le_bytes());
    header[8..12].copy_from_slice(&payload_crc.to_le_bytes());
}

/// The segment id in a file name written by [`segment_path`].
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_prefix("commitlog-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

struct SegmentWriter {
    path: PathBuf,
    file: Arc<File>,
    /// The first write or fsync failure; from then on nothing is written.
    failure: Option<String>,
    /// Records appended but not yet handed to the OS.
    buffer: Vec<u8>,
    /// Sequence number of the last appended record (across segments).
    appended_lsn: u64,
    /// Sequence number of the last record handed to the OS.
    written_lsn: u64,
}

impl SegmentWriter {
    fn create(dir: &Path, id: u64, appended_lsn: u64) -> Result<Self> {
        let path = segment_path(dir, id);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        // The segment's name must survive a crash once a record in it is acknowledged.
        sync_dir(dir)?;
        let mut buffer = Vec::with_capacity(BUFFER_BYTES_MAX);
        buffer.extend_from_slice(&MAGIC.to_le_bytes());
        buffer.extend_from_slice(&VERSION.to_le_bytes());
        buffer.extend_from_slice(&id.to_le_bytes());
        Ok(SegmentWriter {
            path,
            file: Arc::new(file),
            failure: None,
            buffer,
            appended_lsn,
            written_lsn: appended_lsn,
        })
    }

    /// [`Error::CommitLogFailed`] once a write or fsync failed.
    fn check(&self) -> Result<()> {
        match &self.failure {
            None => Ok(()),
            Some(reason) => Err(Error::CommitLogFailed {
                path: self.path.clone(),
                reason: reason.clone(),
            }),
        }
    }

    /// Records `error` as the log's failure and returns it.
    fn failed(&mut self, error: Error) -> Error {
        tracing::error!(%error, "commit log failed; it refuses writes until the node restarts");
        self.failure.get_or_insert_with(|| error.to_string());
        error
    }

    fn write_out(&mut self) -> Result<()> {
        self.check()?;
        if !self.buffer.is_empty() {
            if let Err(e) = (&*self.file).write_all(&self.buffer) {
                let error = Error::io(&self.path, e);
                return Err(self.failed(error));
            }
            self.buffer.clear();
        }
        self.written_lsn = self.appended_lsn;
        Ok(())
    }

    fn write_out_and_sync(&mut self) -> Result<()> {
        self.write_out()?;
        if let Err(e) = self.file.sync_data() {
            let error = Error::io(&self.path, e);
            return Err(self.failed(error));
        }
        Ok(())
    }
}

struct SyncState {
    synced_lsn: u64,
    syncing: bool,
    /// Fsyncs made by `sync_to`: group commits, periodic syncs and the sync
    /// at close (not those of segment rotation).
    syncs: u64,
}

/// The live commit log: the newest segment plus group-commit state.
pub(crate) struct CommitLog {
    dir: PathBuf,
    writer: Mutex<SegmentWriter>,
    sync: Mutex<SyncState>,
    synced: Condvar,
}

impl CommitLog {
    /// Starts a new segment `id` in `dir`.
    pub(crate) fn create(dir: &Path, id: u64) -> Result<Self> {
        Ok(CommitLog {
            dir: dir.to_path_buf(),
            writer: Mutex::new(SegmentWriter::create(dir, id, 0)?),
            sync: Mutex::new(SyncState {
                synced_lsn: 0,
                syncs: 0,
                syncing: false,
            }),
            synced: Condvar::new(),
        })
    }

    /// Appends one record and returns its sequence number. It is durable once
    /// `sync_to` with that number returns.
    #[cfg(test)]
    pub(crate) fn append(&self, key: &[u8], cell: &Cell) -> Result<u64> {
        let mut record = Vec::new();
        encode_record(&mut record, key, cell);
        self.append_record(&record)
    }

    /// Appends one record made by [`encode_record`] (which a writer can do
    /// before taking any lock) and returns its sequence number.
    pub(crate) fn append_record(&self, record: &[u8]) -> Result<u64> {
        let mut w = self.writer.lock();
        w.check()?;
        w.buffer.extend_from_slice(record);
        w.appended_lsn += 1;
        let lsn = w.appended_lsn;
        if w.buffer.len() >= BUFFER_BYTES_MAX {
            w.write_out()?;
        }
        Ok(lsn)
    }

    /// Hands every record up to `lsn` to the OS (no fsync): from then on it
    /// survives the process dying. A caller whose record an earlier
    /// write-out covered makes no syscall.
    pub(crate) fn write_out_to(&self, lsn: u64) -> Result<()> {
        let mut w = self.writer.lock();
        if w.written_lsn >= lsn {
            return w.check();
        }
        w.write_out()
    }

    /// Returns once every record up to `lsn` is fsynced. Concurrent callers
    /// share fsyncs: one syncs, the others wait for it and usually find their
    /// record covered.
    pub(crate) fn sync_to(&self, lsn: u64) -> Result<()> {
        let mut state = self.sync.lock();
        loop {
            if state.synced_lsn >= lsn {
                return Ok(());
            }
            if state.syncing {
                self.synced.wait(&mut state);
                continue;
            }
            state.syncing = true;
            drop(state);
            let outcome = self.write_out_and_sync();
            state = self.sync.lock();
            state.syncing = false;
            self.synced.notify_all();
            match outcome {
                Ok(covered) => {
                    state.synced_lsn = state.synced_lsn.max(covered);
                    state.syncs += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Fsyncs made by `sync_to` so far.
    pub(crate) fn syncs(&self) -> u64 {
        self.sync.lock().syncs
    }

    /// Fsyncs everything appended so far.
    pub(crate) fn sync_all(&self) -> Result<()> {
        let lsn = self.writer.lock().appended_lsn;
        self.sync_to(lsn)
    }

    fn write_out_and_sync(&self) -> Result<u64> {
        let (file, path, covered) = {
            let mut w = self.writer.lock();
            w.write_out()?;
            (w.file.clone(), w.path.clone(), w.appended_lsn)
        };
        // Outside the writer lock: appends continue while the disk works.
        if let Err(e) = file.sync_data() {
            let mut w = self.writer.lock();
            return Err(w.failed(Error::io(path, e)));
        }
        Ok(covered)
    }

    /// Closes the current segment (written out and fsynced) and starts
    /// segment `id`. The caller holds the engine's write lock, so no append
    /// races between the two segments.
    pub(crate) fn rotate(&self, id: u64) -> Result<()> {
        let covered = {
            let mut w = self.writer.lock();
            w.write_out_and_sync()?;
            let lsn = w.appended_lsn;
            *w = SegmentWriter::create(&self.dir, id, lsn)?;
            lsn
        };
        let mut state = self.sync.lock();
        state.synced_lsn = state.synced_lsn.max(covered);
        self.synced.notify_all();
        Ok(())
    }
}

#[cfg(test)]
impl CommitLog {
    /// Swaps the segment's file for a read-only handle on it, so the next
    /// write-out fails as a full or broken disk would.
    pub(crate) fn break_file_for_test(&self) {
        let mut w = self.writer.lock();
        let read_only = File::open(&w.path).unwrap();
        w.file = Arc::new(read_only);
    }
}

/// What replaying one segment found.
#[derive(Debug, Default)]
pub(crate) struct ReplayReport {
    pub(crate) records: u64,
    /// Set when a torn tail was cut off: the valid length kept.
    pub(crate) truncated_to: Option<u64>,
}

/// Replays segment `path`, calling `apply` for every record in order. Only in
/// the newest segment (`is_last`) is an incomplete final record a torn tail,
/// truncated with a warning; any other damage is an error.
pub(crate) fn replay_segment(
    path: &Path,
    is_last: bool,
    mut apply: impl FnMut(&[u8], Cell),
) -> Result<ReplayReport> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let corrupt = |offset: usize, reason: &str| Error::Corrupt {
        file: path.to_path_buf(),
        offset: offset as u64,
        reason: reason.to_string(),
    };
    let mut report = ReplayReport::default();
    if bytes.is_empty() {
        // A segment no record reached (its header is written with the first
        // one): nothing to replay, nothing torn. Rotation writes the header
        // of the segment it closes, so an empty older segment is one a
        // crash during startup left, before the next start made another.
        return Ok(report);
    }
    if bytes.len() < HEADER_BYTES {
        if is_last {
            truncate(path, 0, &mut report)?;
            return Ok(report);
        }
        return Err(corrupt(0, "segment shorter than its header"));
    }
    if get_u32(&bytes, 0) != Ok(MAGIC) {
        return Err(corrupt(0, "not a cassio commit-log segment (bad magic)"));
    }
    let version = get_u32(&bytes, 4).map_err(|r| corrupt(4, r))?;
    if version != VERSION {
        return Err(Error::UnsupportedVersion {
            file: path.to_path_buf(),
            found: version,
            supported: VERSION,
        });
    }
    get_u64(&bytes, 8).map_err(|r| corrupt(8, r))?;

    let mut at = HEADER_BYTES;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let torn = |report: &mut ReplayReport| truncate(path, at as u64, report);
        if rest.len() < RECORD_HEADER_BYTES {
            if is_last {
                torn(&mut report)?;
                break;
            }
            return Err(corrupt(at, "truncated record header"));
        }
        let len_bytes = &rest[0..4];
        let len_crc = get_u32(rest, 4).map_err(|r| corrupt(at, r))?;
        if crc32fast::hash(len_bytes) != len_crc {
            if is_last && rest.iter().all(|&b| b == 0) {
                torn(&mut report)?;
                break;
            }
            return Err(Error::ChecksumMismatch {
                file: path.to_path_buf(),
                offset: at as u64,
                expected: len_crc,
                got: crc32fast::hash(len_bytes),
            });
        }
        let len = get_u32(rest, 0).map_err(|r| corrupt(at, r))? as usize;
        let end = RECORD_HEADER_BYTES + len;
        if rest.len() < end {
            if is_last {
                torn(&mut report)?;
                break;
            }
            return Err(corrupt(at, "record extends past the end of the segment"));
        }
        let payload = &rest[RECORD_HEADER_BYTES..end];
        let stored = get_u32(rest, 8).map_err(|r| corrupt(at, r))?;
        let computed = crc32fast::hash(payload);
        if stored != computed {
            if is_last && rest.len() == end {
                torn(&mut report)?;
                break;
            }
            return Err(Error::ChecksumMismatch {
                file: path.to_path_buf(),
                offset: at as u64,
                expected: stored,
                got: computed,
            });
        }
        let (key, cell, used) = decode_entry(payload).map_err(|r| corrupt(at, r))?;
        if used != payload.len() {
            return Err(corrupt(at, "record has trailing bytes"));
        }
        apply(key, cell);
        report.records += 1;
        at += end;
    }
    Ok(report)
}

fn truncate(path: &Path, len: u64, report: &mut ReplayReport) -> Result<()> {
    tracing::warn!(
        file = %path.display(),
        valid_bytes = len,
        "commit log ends in a torn record (the process stopped mid-write); truncating it"
    );
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    file.set_len(len).map_err(|e| Error::io(path, e))?;
    file.sync_all().map_err(|e| Error::io(path, e))?;
    report.truncated_to = Some(len);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_segment(dir: &Path, id: u64, n: u64) -> PathBuf {
        let log = CommitLog::create(dir, id).unwrap();
        for i in 0..n {
            log.append(format!("key{i}").as_bytes(), &Cell::value(vec![7; 50], i))
                .unwrap();
        }
        log.sync_all().unwrap();
        segment_path(dir, id)
    }

    fn replayed(path: &Path, is_last: bool) -> Result<Vec<(Vec<u8>, Cell)>> {
        let mut out = Vec::new();
        replay_segment(path, is_last, |k, c| out.push((k.to_vec(), c)))?;
        Ok(out)
    }

    #[test]
    fn appended_records_replay_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_segment(dir.path(), 1, 100);
        let records = replayed(&path, true).unwrap();
        assert_eq!(records.len(), 100);
        assert_eq!(records[42].0, b"key42");
        assert_eq!(records[42].1.timestamp, 42);
    }

    /// A new segment no record reached is empty: nothing to replay, and
    /// not torn (no truncation, no warning), whether it is the newest or a
    /// crash during startup left it before another. A partial header is
    /// torn.
    #[test]
    fn an_empty_segment_is_not_torn() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 3);
        File::create(&path).unwrap();
        for is_last in [true, false] {
            let report = replay_segment(&path, is_last, |_, _| ()).unwrap();
            assert_eq!((report.records, report.truncated_to), (0, None));
        }
        std::fs::write(&path, [0xC0, 0x10]).unwrap();
        let report = replay_segment(&path, true, |_, _| ()).unwrap();
        assert_eq!(report.truncated_to, Some(0));
    }

    #[test]
    fn torn_tail_of_the_last_segment_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_segment(dir.path(), 1, 10);
        let full = std::fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(full - 5).unwrap();
        let records = replayed(&path, true).unwrap();
        assert_eq!(records.len(), 9);
        assert!(std::fs::metadata(&path).unwrap().len() < full - 5);
        // The same damage in an older segment is an error, not data loss.
        file.set_len(full - 5).unwrap();
        let path2 = write_segment(dir.path(), 2, 10);
        let file2 = OpenOptions::new().write(true).open(&path2).unwrap();
        file2.set_len(full - 5).unwrap();
        assert!(matches!(
            replayed(&path2, false),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn a_flipped_byte_mid_segment_names_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_segment(dir.path(), 1, 100);
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        match replayed(&path, true) {
            Err(Error::ChecksumMismatch { file, offset, .. }) => {
                assert_eq!(file, path);
                assert!(offset as usize <= middle && middle < offset as usize + 100);
            }
            other => panic!("expected a checksum error, got {other:?}"),
        }
    }

    #[test]
    fn concurrent_writers_share_fsyncs_and_all_become_durable() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(CommitLog::create(dir.path(), 1).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..50u64 {
                        let lsn = log
                            .append(format!("{t}-{i}").as_bytes(), &Cell::value("v", i))
                            .unwrap();
                        log.sync_to(lsn).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            replayed(&segment_path(dir.path(), 1), true).unwrap().len(),
            200
        );
    }

    /// After one failed write-out, every append, sync and rotation is
    /// refused with the first cause (nothing is written twice or fsynced as
    /// if nothing happened), and what was synced before still replays.
    #[test]
    fn a_failed_write_is_final_and_what_was_synced_replays() {
        let dir = tempfile::tempdir().unwrap();
        let log = CommitLog::create(dir.path(), 1).unwrap();
        for i in 0..10u64 {
            log.append(format!("key{i}").as_bytes(), &Cell::value("v", i))
                .unwrap();
        }
        log.sync_all().unwrap();
        log.break_file_for_test();
        let lsn = log.append(b"lost", &Cell::value("v", 11)).unwrap();
        let first = log.sync_to(lsn).unwrap_err();
        assert!(matches!(first, Error::Io { .. }), "got {first:?}");

        let refused = [
            log.append(b"after", &Cell::value("v", 12)).map(|_| ()),
            log.sync_all(),
            log.sync_to(lsn),
            log.rotate(2),
        ];
        for outcome in refused {
            match outcome {
                Err(Error::CommitLogFailed { path, reason }) => {
                    assert_eq!(path, segment_path(dir.path(), 1));
                    assert_eq!(reason, first.to_string());
                }
                other => panic!("expected CommitLogFailed, got {other:?}"),
            }
        }
        assert!(!segment_path(dir.path(), 2).exists(), "no rotation");
        let records = replayed(&segment_path(dir.path(), 1), true).unwrap();
        assert_eq!(records.len(), 10);
    }
}
