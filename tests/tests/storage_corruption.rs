//! Damaged files give errors that name the file and offset, never a panic and
//! never silently missing data: a flipped byte in an SSTable's data block,
//! index, bloom filter or footer, or in the middle of a commit-log segment.
//! A torn tail of the newest segment is the one damage that is repaired (by
//! truncation), because it is what a crash mid-append leaves.

use std::path::{Path, PathBuf};

use cassio_core::Error;
use cassio_core::storage::{Engine, StorageConfig};

const KEYS: u32 = 2000;

fn config() -> StorageConfig {
    StorageConfig {
        background_threads: false,
        ..StorageConfig::default()
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("key{i:06}").into_bytes()
}

fn value(i: u32) -> Vec<u8> {
    format!("value-{i}-").repeat(8).into_bytes()
}

/// An engine directory holding one SSTable with every key.
fn one_table() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), config()).unwrap();
    for i in 0..KEYS {
        engine.put(&key(i), &value(i), 1).unwrap();
    }
    engine.close().unwrap();
    let table = files_ending(dir.path(), ".sst").pop().expect("one table");
    (dir, table)
}

fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    files
}

fn flip(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x5a;
    std::fs::write(path, bytes).unwrap();
}

/// (index offset, bloom offset, footer offset) from the table's footer.
fn layout(table: &Path) -> (u64, u64, u64) {
    let bytes = std::fs::read(table).unwrap();
    let footer = bytes.len() - 48;
    let at = |i: usize| u64::from_le_bytes(bytes[footer + i..footer + i + 8].try_into().unwrap());
    (at(0), at(12), footer as u64)
}

fn assert_names(err: &Error, file: &Path, offset: u64) {
    match err {
        Error::ChecksumMismatch {
            file: f, offset: o, ..
        }
        | Error::Corrupt {
            file: f, offset: o, ..
        } => {
            assert_eq!(f, file, "{err}");
            assert_eq!(*o, offset, "{err}");
        }
        other => panic!("expected a checksum or corruption error, got {other}"),
    }
    let message = err.to_string();
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert!(message.contains(&offset.to_string()), "{message}");
}

#[test]
fn flipped_byte_in_a_data_block_fails_reads_of_that_block_only() {
    let (dir, table) = one_table();
    flip(&table, 20);
    let engine = Engine::open(dir.path(), config()).unwrap();
    let err = engine.get(&key(0)).unwrap_err();
    assert_names(&err, &table, 0);
    // Keys in intact blocks are still served.
    assert_eq!(engine.get(&key(KEYS - 1)).unwrap(), Some(value(KEYS - 1)));
    // A scan over the damaged block reports the error instead of skipping data.
    let scanned: Result<Vec<_>, _> = engine.scan_prefix(b"key").collect();
    assert_names(&scanned.unwrap_err(), &table, 0);
}

#[test]
fn flipped_byte_in_the_index_fails_open() {
    let (dir, table) = one_table();
    let (index, _, _) = layout(&table);
    flip(&table, index + 3);
    let err = Engine::open(dir.path(), config())
        .err()
        .expect("open must fail");
    assert_names(&err, &table, index);
}

#[test]
fn flipped_byte_in_the_bloom_filter_fails_open() {
    let (dir, table) = one_table();
    let (_, bloom, _) = layout(&table);
    flip(&table, bloom + 60);
    let err = Engine::open(dir.path(), config())
        .err()
        .expect("open must fail");
    assert_names(&err, &table, bloom);
}

#[test]
fn flipped_byte_in_the_footer_fails_open() {
    let (dir, table) = one_table();
    let (_, _, footer) = layout(&table);
    for offset_in_footer in [2u64, 37, 46] {
        flip(&table, footer + offset_in_footer);
        let err = Engine::open(dir.path(), config())
            .err()
            .expect("open must fail");
        assert_names(&err, &table, footer);
        flip(&table, footer + offset_in_footer);
    }
    // Undamaged again, it opens and serves.
    let engine = Engine::open(dir.path(), config()).unwrap();
    assert_eq!(engine.get(&key(7)).unwrap(), Some(value(7)));
}

/// Writes keys without flushing, so they live only in the commit log.
fn only_in_the_log() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), config()).unwrap();
    for i in 0..KEYS {
        engine.put(&key(i), &value(i), 1).unwrap();
    }
    drop(engine); // syncs and trims the log, does not flush
    let segment = files_ending(dir.path(), ".log").pop().expect("a segment");
    (dir, segment)
}

#[test]
fn flipped_byte_mid_segment_fails_open_naming_file_and_offset() {
    let (dir, segment) = only_in_the_log();
    let len = std::fs::metadata(&segment).unwrap().len();
    flip(&segment, len / 2);
    let err = Engine::open(dir.path(), config())
        .err()
        .expect("open must fail");
    match &err {
        Error::ChecksumMismatch { file, offset, .. } => {
            assert_eq!(file, &segment);
            assert!(*offset <= len / 2 && len / 2 - offset < 200, "{err}");
        }
        other => panic!("expected a checksum error, got {other}"),
    }
}

#[test]
fn torn_tail_is_truncated_and_everything_before_it_survives() {
    let (dir, segment) = only_in_the_log();
    let len = std::fs::metadata(&segment).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    file.set_len(len - 7).unwrap();
    drop(file);
    let engine = Engine::open(dir.path(), config()).unwrap();
    for i in 0..KEYS - 1 {
        assert_eq!(engine.get(&key(i)).unwrap(), Some(value(i)), "key {i}");
    }
    assert_eq!(
        engine.get(&key(KEYS - 1)).unwrap(),
        None,
        "the torn record is gone"
    );
}

#[test]
fn a_truncated_table_is_an_error_not_a_panic() {
    let (dir, table) = one_table();
    let len = std::fs::metadata(&table).unwrap().len();
    for keep in [0, 10, len / 2, len - 1] {
        let bytes = std::fs::read(&table).unwrap();
        std::fs::write(&table, &bytes[..keep as usize]).unwrap();
        let err = Engine::open(dir.path(), config())
            .err()
            .expect("open must fail");
        assert!(
            matches!(err, Error::Corrupt { .. } | Error::ChecksumMismatch { .. }),
            "{err}"
        );
        std::fs::write(&table, &bytes).unwrap();
    }
}

#[test]
fn a_second_engine_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Engine::open(dir.path(), config()).unwrap();
    let err = Engine::open(dir.path(), config())
        .err()
        .expect("second open must fail");
    assert!(matches!(err, Error::DirectoryLocked { .. }), "{err}");
}

#[test]
fn oversize_keys_and_values_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let small = StorageConfig {
        value_bytes_max: 1000,
        ..config()
    };
    let engine = Engine::open(dir.path(), small).unwrap();
    let err = engine.put(b"k", &[0; 1001], 1).unwrap_err();
    assert_eq!(
        err.to_string(),
        "value is 1001 bytes, the maximum is 1000 bytes (storage.value_bytes_max)"
    );
    let err = engine.put(&vec![b'k'; 64 * 1024 + 1], b"v", 1).unwrap_err();
    assert!(
        matches!(
            err,
            Error::KeyTooLarge {
                len: 65537,
                max: 65536
            }
        ),
        "{err}"
    );
    assert!(matches!(engine.put(b"", b"v", 1), Err(Error::EmptyKey)));
    // Nothing was lost or half-written by the refused writes.
    engine.put(b"k", &[1; 1000], 2).unwrap();
    assert_eq!(engine.get(b"k").unwrap(), Some(vec![1; 1000]));
}
