//! The commit log: append-only segment files that make a write durable before
//! it is only in a memtable, and replay them after a restart.
//!
//! One segment belongs to one memtable (same id); once that memtable is in an
//! SSTable the manifest's `log_floor` passes it and the segment is deleted.
//!
//! Segment layout: a 16-byte header (magic u32, version u32, segment id u64),
//! then records `len u32 | crc32(len) u32 | crc32(payload) u32 | payload`,
//! where the payload is one [`codec`](super::codec) entry. Version 2 starts
//! every record at a multiple of 4 bytes; in the live segment a zero length
//! ends the records (the file's preallocated tail is zeros), and rotation,
//! clean shutdown and the replay of the newest segment trim a segment to its
//! records, so an older segment ends with its file. Version 1 (written
//! before 2026-11-23, still replayed) packs records and ends with the file.
//! The separate length checksum lets replay tell a torn tail (the process
//! died mid-append: only the final record of the newest segment is
//! incomplete) from corruption (anything else, including a zero length with
//! valid records after it), which is an error naming the file and offset.
//!
//! Segments are written through a shared memory mapping of the file, in
//! windows of 64 KiB growing to 8 MiB that are allocated (`fallocate`)
//! before they are mapped, so a full disk is an error on the append rather
//! than a fault on a store. An append copies the record into the page cache
//! with no syscall, so it survives the process dying as soon as it returns;
//! the record's length is stored last, by one aligned atomic store, so a
//! process killed mid-append leaves a zero length that replay reads as the
//! end of the records. Cassandra writes its segments the same way.
//!
//! Group commit: writers append under a short lock and get a log sequence
//! number; `sync_to(lsn)` makes one of its callers (a blocking writer, or the
//! engine's sync thread on behalf of writers that must not block) fsync for
//! everyone whose record it covers (`fdatasync` writes back the pages the
//! mapping dirtied). In periodic mode nothing waits for a sync: only a
//! machine crash can lose what the next periodic fsync had not covered.
//!
//! Failure is final: after the allocation of a window or an fsync of a
//! segment fails, what reached the disk is unknown (pages an fsync error
//! dropped while a later fsync reports success), so the log never writes or
//! syncs again and every append and sync returns
//! [`Error::CommitLogFailed`] naming the first cause. A restart replays what
//! the disk holds (like Cassandra's default `commit_failure_policy: stop`).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use memmap2::{MmapMut, MmapOptions};
use parking_lot::{Condvar, Mutex};

use super::cell::Cell;
use super::codec::{decode_entry, encode_entry, get_u32};
use super::fsutil::sync_dir;
use crate::error::{Error, Result};

const MAGIC: u32 = 0xCA55_10C0;
/// Written by this build; 1 is still replayed.
const VERSION: u32 = 2;
const HEADER_BYTES: usize = 16;
const RECORD_HEADER_BYTES: usize = 12;
/// Version 2 records start at multiples of this: a record's length field is
/// then an aligned `u32` that one atomic store publishes.
const RECORD_ALIGN_BYTES: usize = 4;
/// The first mapped window of a segment; each next one is twice the last,
/// up to [`WINDOW_BYTES_MAX`] (or the size of the record that needs it).
pub(crate) const FIRST_WINDOW_BYTES: usize = 64 * 1024;
const WINDOW_BYTES_MAX: usize = 8 * 1024 * 1024;

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

/// Allocates the file's blocks for `len` bytes from `offset`, growing the
/// file to cover them, so that stores into a mapping of them cannot fail
/// for want of space (a store into a hole the disk has no room for would
/// kill the process with SIGBUS).
#[cfg(target_os = "linux")]
fn allocate(file: &File, offset: u64, len: usize) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(start), Ok(count)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(std::io::Error::other(
            "commit-log window beyond the largest file offset",
        ));
    };
    // SAFETY: a plain syscall on a descriptor `file` keeps open; it touches
    // no memory of this process.
    if unsafe { libc::fallocate(file.as_raw_fd(), 0, start, count) } == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EOPNOTSUPP) {
        return write_zeros(file, offset, len);
    }
    Err(error)
}

#[cfg(not(target_os = "linux"))]
fn allocate(file: &File, offset: u64, len: usize) -> std::io::Result<()> {
    write_zeros(file, offset, len)
}

/// Allocates by writing zeros, for filesystems without `fallocate`.
#[cfg(unix)]
fn write_zeros(file: &File, offset: u64, len: usize) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let zeros = vec![0u8; len.min(FIRST_WINDOW_BYTES)];
    let mut written = 0;
    while written < len {
        let n = zeros.len().min(len - written);
        file.write_all_at(&zeros[..n], offset + written as u64)?;
        written += n;
    }
    Ok(())
}

struct SegmentWriter {
    path: PathBuf,
    file: Arc<File>,
    /// The first allocation or fsync failure; from then on nothing is written.
    failure: Option<String>,
    /// The mapped window: file bytes `[window_start, window_start + len)`.
    window: Option<MmapMut>,
    window_start: u64,
    /// File offset where the next record goes.
    end: u64,
    /// Sequence number of the last appended record (across segments).
    appended_lsn: u64,
}

impl SegmentWriter {
    fn create(dir: &Path, id: u64, appended_lsn: u64) -> Result<Self> {
        let path = segment_path(dir, id);
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        // The segment's name must survive a crash once a record in it is acknowledged.
        sync_dir(dir)?;
        let mut writer = SegmentWriter {
            path: path.clone(),
            file: Arc::new(file),
            failure: None,
            window: None,
            window_start: 0,
            end: 0,
            appended_lsn,
        };
        let mut header = [0u8; HEADER_BYTES];
        header[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        header[4..8].copy_from_slice(&VERSION.to_le_bytes());
        header[8..16].copy_from_slice(&id.to_le_bytes());
        match writer.reserve(HEADER_BYTES) {
            Ok(target) => target.copy_from_slice(&header),
            Err(error) => {
                // No segment is left behind for a retry to trip over (its
                // name is taken) or for replay to take for the newest.
                drop(writer);
                if std::fs::remove_file(&path).is_ok() {
                    let _ = sync_dir(dir);
                }
                return Err(error);
            }
        }
        writer.end = HEADER_BYTES as u64;
        Ok(writer)
    }

    /// [`Error::CommitLogFailed`] once an allocation or fsync failed.
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

    /// The mapped bytes `[end, end + bytes)`, mapping a new window (and
    /// allocating its blocks) when the current one ends before them.
    fn reserve(&mut self, bytes: usize) -> Result<&mut [u8]> {
        let mapped = self.window.as_ref().map_or(0, |w| w.len());
        let from = (self.end - self.window_start) as usize;
        if self.window.is_none() || from + bytes > mapped {
            let len = (mapped * 2)
                .clamp(FIRST_WINDOW_BYTES, WINDOW_BYTES_MAX)
                .max(bytes);
            // Unmapped first: a window's dirty pages stay in the page cache
            // for the next fsync.
            self.window = None;
            allocate(&self.file, self.end, len).map_err(|e| Error::io(&self.path, e))?;
            // SAFETY: the file is this writer's own (created with
            // `create_new`, open until the writer is dropped), and nothing
            // truncates or writes it while the window is mapped: rotation
            // drops the window before it trims the file, and replay reads
            // only segments no writer holds.
            let window = unsafe {
                MmapOptions::new()
                    .offset(self.end)
                    .len(len)
                    .map_mut(&*self.file)
            }
            .map_err(|e| Error::io(&self.path, e))?;
            self.window = Some(window);
            self.window_start = self.end;
        }
        let from = (self.end - self.window_start) as usize;
        match self.window.as_mut() {
            Some(window) => Ok(&mut window[from..from + bytes]),
            None => unreachable!("a window was mapped above"),
        }
    }

    /// Copies `record` (made by [`encode_record`]) into the page cache.
    fn append(&mut self, record: &[u8]) -> Result<()> {
        let padded = record.len().next_multiple_of(RECORD_ALIGN_BYTES);
        let target = match self.reserve(padded) {
            Ok(target) => target,
            Err(error) => return Err(self.failed(error)),
        };
        // The length goes in last, so a process killed during the copy
        // leaves a zero length, which replay reads as the end of the records.
        target[4..record.len()].copy_from_slice(&record[4..]);
        let len = u32::from_ne_bytes([record[0], record[1], record[2], record[3]]);
        // SAFETY: the window's address is congruent to its file offset
        // modulo the page size, and records start at multiples of
        // RECORD_ALIGN_BYTES in the file, so the pointer is aligned for a
        // u32; the four bytes are in the window and borrowed mutably here.
        let len_field = unsafe { AtomicU32::from_ptr(target.as_mut_ptr().cast::<u32>()) };
        len_field.store(len, Ordering::Release);
        self.end += padded as u64;
        Ok(())
    }

    /// Ends the segment: unmapped, trimmed to its records, fsynced.
    fn close(&mut self) -> Result<()> {
        self.check()?;
        self.window = None;
        let outcome = self
            .file
            .set_len(self.end)
            .and_then(|()| self.file.sync_data());
        outcome.map_err(|e| {
            let error = Error::io(&self.path, e);
            self.failed(error)
        })
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
    /// before taking any lock) and returns its sequence number. Once this
    /// returns, the record survives the process dying; it survives a machine
    /// crash once `sync_to` with that number returns.
    pub(crate) fn append_record(&self, record: &[u8]) -> Result<u64> {
        let mut w = self.writer.lock();
        w.check()?;
        w.append(record)?;
        w.appended_lsn += 1;
        Ok(w.appended_lsn)
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
            let outcome = self.sync_appended();
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

    /// Fsyncs the segment; returns the last sequence number it covers.
    fn sync_appended(&self) -> Result<u64> {
        let (file, path, covered) = {
            let w = self.writer.lock();
            w.check()?;
            (w.file.clone(), w.path.clone(), w.appended_lsn)
        };
        // Outside the writer lock: appends continue while the disk works.
        if let Err(e) = file.sync_data() {
            let mut w = self.writer.lock();
            return Err(w.failed(Error::io(path, e)));
        }
        Ok(covered)
    }

    /// Closes the current segment (trimmed and fsynced) and starts segment
    /// `id`. The caller holds the engine's write lock, so no append races
    /// between the two segments.
    pub(crate) fn rotate(&self, id: u64) -> Result<()> {
        let covered = {
            let mut w = self.writer.lock();
            w.close()?;
            let lsn = w.appended_lsn;
            match SegmentWriter::create(&self.dir, id, lsn) {
                Ok(next) => *w = next,
                // The closed segment takes no more records.
                Err(error) => return Err(w.failed(error)),
            }
            lsn
        };
        self.synced_up_to(covered);
        Ok(())
    }

    /// Trims the current segment to its records and fsyncs it: the last
    /// step of a clean shutdown, after which the segment holds no
    /// preallocated space. (A later append would map a new window.)
    pub(crate) fn close(&self) -> Result<()> {
        let covered = {
            let mut w = self.writer.lock();
            w.close()?;
            w.appended_lsn
        };
        self.synced_up_to(covered);
        Ok(())
    }

    fn synced_up_to(&self, lsn: u64) {
        let mut state = self.sync.lock();
        state.synced_lsn = state.synced_lsn.max(lsn);
        self.synced.notify_all();
    }
}

#[cfg(test)]
impl CommitLog {
    /// Swaps the segment's file for a handle that can neither sync nor
    /// allocate (`O_PATH`), as a broken disk would: the next fsync fails,
    /// and so does the next append that needs a new window (at once with
    /// `unmap`).
    pub(crate) fn break_file_for_test(&self, unmap: bool) {
        use std::os::unix::fs::OpenOptionsExt;
        let mut w = self.writer.lock();
        let path_only = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(&w.path)
            .unwrap();
        w.file = Arc::new(path_only);
        if unmap {
            w.window = None;
        }
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
/// truncated with a warning; any other damage is an error. The newest
/// segment is also trimmed to its records (dropping a live segment's
/// preallocated zeros), so that every older segment ends with its file.
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
    let zeros_from = |offset: usize| {
        bytes
            .get(offset..)
            .is_none_or(|rest| rest.iter().all(|&b| b == 0))
    };
    let mut report = ReplayReport::default();
    if zeros_from(0) {
        // A segment no record reached: a crash during startup left it
        // before its header went in (version 1 wrote the header with the
        // first record). Nothing to replay, nothing torn.
        return Ok(report);
    }
    let version = get_u32(&bytes, 4);
    let header_whole = get_u32(&bytes, 0) == Ok(MAGIC) && matches!(version, Ok(1 | VERSION));
    if !header_whole && is_last && zeros_from(HEADER_BYTES) {
        // The process stopped while writing the header of its newest segment.
        truncate(path, 0, &mut report)?;
        return Ok(report);
    }
    if bytes.len() < HEADER_BYTES {
        return Err(corrupt(0, "segment shorter than its header"));
    }
    if get_u32(&bytes, 0) != Ok(MAGIC) {
        return Err(corrupt(0, "not a cassio commit-log segment (bad magic)"));
    }
    let version = version.map_err(|r| corrupt(4, r))?;
    let align = match version {
        1 => 1,
        VERSION => RECORD_ALIGN_BYTES,
        _ => {
            return Err(Error::UnsupportedVersion {
                file: path.to_path_buf(),
                found: version,
                supported: VERSION,
            });
        }
    };

    let mut at = HEADER_BYTES;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let torn = |report: &mut ReplayReport| truncate(path, at as u64, report);
        if version >= 2 && get_u32(rest, 0).unwrap_or(0) == 0 {
            // The end of the records: the zeros of the preallocated window
            // follow, or the bytes of the one record whose append the
            // process did not finish (its length is stored last).
            if !is_last {
                // Rotation and the replay of a newest segment trim it.
                return Err(corrupt(at, "zero record length in a closed segment"));
            }
            if let Some(next) = valid_record_after(&bytes, at) {
                return Err(corrupt(
                    at,
                    &format!("zero record length with a valid record after it (at {next})"),
                ));
            }
            if zeros_from(at) {
                trim(path, at as u64)?;
            } else {
                torn(&mut report)?;
            }
            break;
        }
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
            // Version 1: a tail of zeros is what a torn append left.
            if is_last && zeros_from(at) {
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
        let next = at + end.next_multiple_of(align);
        let payload = &rest[RECORD_HEADER_BYTES..end];
        let stored = get_u32(rest, 8).map_err(|r| corrupt(at, r))?;
        let computed = crc32fast::hash(payload);
        if stored != computed {
            if is_last && zeros_from(next) {
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
        at = next;
    }
    Ok(report)
}

/// The offset of the first whole, checksummed version 2 record that starts
/// after `at`, if any: records after a zero length mean a length was
/// damaged, not that an append was cut short.
fn valid_record_after(bytes: &[u8], at: usize) -> Option<usize> {
    let mut offset = at + RECORD_ALIGN_BYTES;
    while offset + RECORD_HEADER_BYTES <= bytes.len() {
        let rest = &bytes[offset..];
        let field = |i: usize| get_u32(rest, i).unwrap_or(0);
        let len = field(0) as usize;
        if len != 0
            && crc32fast::hash(&rest[0..4]) == field(4)
            && RECORD_HEADER_BYTES + len <= rest.len()
            && crc32fast::hash(&rest[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + len]) == field(8)
        {
            return Some(offset);
        }
        offset += RECORD_ALIGN_BYTES;
    }
    None
}

/// Cuts the newest segment's torn tail off at `len`, with a warning.
fn truncate(path: &Path, len: u64, report: &mut ReplayReport) -> Result<()> {
    tracing::warn!(
        file = %path.display(),
        valid_bytes = len,
        "commit log ends in a torn record (the process stopped mid-write); truncating it"
    );
    trim(path, len)?;
    report.truncated_to = Some(len);
    Ok(())
}

/// Shortens `path` to `len` bytes, durably; nothing to do if it is that long.
fn trim(path: &Path, len: u64) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if file_len == len {
        return Ok(());
    }
    file.set_len(len).map_err(|e| Error::io(path, e))?;
    file.sync_all().map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A live segment `id` holding `n` records; returns it and where its
    /// records end (the preallocated zeros of its window follow).
    fn live_segment(dir: &Path, id: u64, n: u64) -> (CommitLog, usize) {
        let log = CommitLog::create(dir, id).unwrap();
        for i in 0..n {
            log.append(format!("key{i}").as_bytes(), &Cell::value(vec![7; 50], i))
                .unwrap();
        }
        let end = log.writer.lock().end as usize;
        (log, end)
    }

    /// Segment `id` holding `n` records, closed as rotation closes it
    /// (trimmed to its records and fsynced).
    fn write_segment(dir: &Path, id: u64, n: u64) -> PathBuf {
        let (log, end) = live_segment(dir, id, n);
        log.rotate(id + 1_000_000).unwrap();
        let path = segment_path(dir, id);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), end as u64);
        path
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
        log.break_file_for_test(false);
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
        // The unsynced record reached the page cache, so it may replay too.
        let records = replayed(&segment_path(dir.path(), 1), true).unwrap();
        assert!((10..=11).contains(&records.len()), "{records:?}");
        assert_eq!(records[9].0, b"key9");
    }

    /// A full disk (here: a file that cannot allocate) fails the append
    /// that needs a new window, with the cause; later appends are refused
    /// and what was appended before still replays.
    #[test]
    fn an_append_that_cannot_allocate_fails_and_the_log_stays_failed() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = live_segment(dir.path(), 1, 10);
        log.break_file_for_test(true);
        let first = log.append(b"no room", &Cell::value("v", 11)).unwrap_err();
        assert!(matches!(first, Error::Io { .. }), "got {first:?}");
        let refused = log.append(b"after", &Cell::value("v", 12)).unwrap_err();
        assert!(
            matches!(refused, Error::CommitLogFailed { .. }),
            "got {refused:?}"
        );
        let records = replayed(&segment_path(dir.path(), 1), true).unwrap();
        assert_eq!(records.len(), 10);
    }

    /// A live segment ends in the zeros of its window: all its records
    /// replay, and nothing is torn or truncated.
    #[test]
    fn a_live_segment_replays_up_to_its_preallocated_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let (log, end) = live_segment(dir.path(), 1, 100);
        let path = segment_path(dir.path(), 1);
        let file_len = std::fs::metadata(&path).unwrap().len();
        assert!(file_len > end as u64, "the window is preallocated");
        drop(log);
        let report = replay_segment(&path, true, |_, _| ()).unwrap();
        assert_eq!((report.records, report.truncated_to), (100, None));
        // Trimmed to its records: once a newer segment exists it must end
        // with its file, and a zero length in it would be corruption.
        assert_eq!(std::fs::metadata(&path).unwrap().len(), end as u64);
        assert_eq!(replayed(&path, false).unwrap().len(), 100);
    }

    /// A closed segment ends with its file (rotation trims it): a zero
    /// length in it is corruption, not an end.
    #[test]
    fn zeros_in_a_closed_segment_are_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (log, end) = live_segment(dir.path(), 1, 10);
        drop(log);
        let path = segment_path(dir.path(), 1);
        assert!(matches!(
            replayed(&path, false),
            Err(Error::Corrupt { offset, .. }) if offset == end as u64
        ));
    }

    /// A length zeroed by damage in the middle of the newest segment is not
    /// taken for its end: the records after it make it an error, and the
    /// file is left as it is.
    #[test]
    fn a_zeroed_length_before_valid_records_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = live_segment(dir.path(), 1, 50);
        drop(log);
        let path = segment_path(dir.path(), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        let mut at = HEADER_BYTES;
        for _ in 0..20 {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            at += (RECORD_HEADER_BYTES + len).next_multiple_of(RECORD_ALIGN_BYTES);
        }
        bytes[at..at + 4].fill(0);
        std::fs::write(&path, &bytes).unwrap();
        match replayed(&path, true) {
            Err(Error::Corrupt { offset, .. }) => assert_eq!(offset, at as u64),
            other => panic!("expected corruption, got {other:?}"),
        }
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "left as it was");
    }

    /// A process killed while writing the header of its newest segment
    /// leaves a segment with nothing to replay; in an older segment a bad
    /// header is an error.
    #[test]
    fn a_torn_header_of_the_newest_segment_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 1);
        let mut bytes = vec![0u8; FIRST_WINDOW_BYTES];
        bytes[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            replayed(&path, false),
            Err(Error::UnsupportedVersion { found: 0, .. })
        ));
        assert!(replayed(&path, true).unwrap().is_empty());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    /// When the next segment cannot be created, the closed one takes no
    /// more records: the log has failed, and the file in the way is left
    /// alone.
    #[test]
    fn a_rotation_that_cannot_create_the_next_segment_fails_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = live_segment(dir.path(), 1, 10);
        let in_the_way = segment_path(dir.path(), 2);
        std::fs::write(&in_the_way, b"not ours").unwrap();
        assert!(matches!(log.rotate(2), Err(Error::Io { .. })));
        assert!(matches!(
            log.append(b"after", &Cell::value("v", 11)),
            Err(Error::CommitLogFailed { .. })
        ));
        assert_eq!(std::fs::read(&in_the_way).unwrap(), b"not ours");
        assert_eq!(
            replayed(&segment_path(dir.path(), 1), false).unwrap().len(),
            10
        );
    }

    /// A process killed while copying a record leaves its bytes with a zero
    /// length (the length is stored last): in the newest segment that is a
    /// torn tail, cut off so the records before it replay; in an older one
    /// it is corruption.
    #[test]
    fn an_unfinished_append_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (log, end) = live_segment(dir.path(), 1, 20);
        drop(log);
        let path = segment_path(dir.path(), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[end + 4..end + 40].fill(0x5A);
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            replayed(&path, false),
            Err(Error::Corrupt { offset, .. }) if offset == end as u64
        ));
        let records = replayed(&path, true).unwrap();
        assert_eq!(records.len(), 20);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), end as u64);
    }

    /// A multi-window segment: records larger than the first window and
    /// records that cross from one window into the next all replay.
    #[test]
    fn records_replay_across_windows() {
        let dir = tempfile::tempdir().unwrap();
        let log = CommitLog::create(dir.path(), 1).unwrap();
        let big = vec![3u8; FIRST_WINDOW_BYTES * 3];
        for i in 0..2_000u64 {
            let value = if i % 500 == 7 {
                big.clone()
            } else {
                vec![i as u8; 1 + i as usize % 300]
            };
            log.append(format!("k{i}").as_bytes(), &Cell::value(value, i))
                .unwrap();
        }
        log.sync_all().unwrap();
        let records = replayed(&segment_path(dir.path(), 1), true).unwrap();
        assert_eq!(records.len(), 2_000);
        for (i, (key, cell)) in records.iter().enumerate() {
            assert_eq!(key, format!("k{i}").as_bytes());
            assert_eq!(cell.timestamp, i as u64);
        }
        assert_eq!(records[507].1, Cell::value(big, 507));
    }

    /// Segments written before version 2 (records packed, no preallocated
    /// tail) still replay, torn tail included.
    #[test]
    fn version_1_segments_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 1);
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&MAGIC.to_le_bytes());
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&1u64.to_le_bytes());
        for i in 0..5u64 {
            // Odd sizes: version 1 does not pad.
            encode_record(
                &mut bytes,
                format!("key{i}").as_bytes(),
                &Cell::value("abc", i),
            );
        }
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(matches!(replayed(&path, false), Err(Error::Corrupt { .. })));
        let records = replayed(&path, true).unwrap();
        assert_eq!(records.len(), 4);
        assert_eq!(records[3].0, b"key3");
        // A version 1 segment never ends in zeros but for a torn append.
        let whole = std::fs::metadata(&path).unwrap().len() as usize;
        let mut zero_tail = std::fs::read(&path).unwrap();
        zero_tail.resize(whole + 64, 0);
        std::fs::write(&path, &zero_tail).unwrap();
        assert!(matches!(
            replayed(&path, false),
            Err(Error::ChecksumMismatch { .. })
        ));
        assert_eq!(replayed(&path, true).unwrap().len(), 4);
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, whole);
    }
}
