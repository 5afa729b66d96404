//! Model-based test of the storage engine: random operation sequences run
//! against the engine and against a `BTreeMap` oracle with last-write-wins,
//! with flushes, compactions, clock jumps and reopens (clean and unclean)
//! mixed in. Point reads and scans are compared after every step.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cassio_core::storage::{Cell, Engine, StorageConfig, SyncMode};
use proptest::prelude::*;

const KEYS: &[&[u8]] = &[
    b"a", b"ab", b"abc", b"abd", b"b", b"b\x00", b"b\xff", b"c1", b"c2", b"c3", b"d", b"\xff",
];

#[derive(Clone, Debug)]
enum Op {
    Put {
        key: usize,
        value: Vec<u8>,
        ts: u64,
        ttl_ms: Option<u64>,
    },
    Delete {
        key: usize,
        ts: u64,
    },
    Flush,
    Compact,
    AdvanceClock {
        ms: u64,
    },
    Reopen {
        clean: bool,
    },
}

fn op(max_ts: u64) -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (0..KEYS.len(), proptest::collection::vec(any::<u8>(), 0..120), 1..max_ts, prop::option::weighted(0.15, 1..50u64))
            .prop_map(|(key, value, ts, ttl_ms)| Op::Put { key, value, ts, ttl_ms }),
        4 => (0..KEYS.len(), 1..max_ts).prop_map(|(key, ts)| Op::Delete { key, ts }),
        1 => Just(Op::Flush),
        1 => Just(Op::Compact),
        1 => (1..40u64).prop_map(|ms| Op::AdvanceClock { ms }),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
    ]
}

struct Harness {
    dir: tempfile::TempDir,
    now_ms: Arc<AtomicU64>,
    config: StorageConfig,
    engine: Option<Engine>,
    oracle: BTreeMap<Vec<u8>, Cell>,
    /// Timestamps are made unique per write (step index in the low digits),
    /// so the oracle needs no tie-breaking beyond what unit tests cover.
    step: u64,
    monotonic_ts: bool,
}

impl Harness {
    fn new(gc_grace_ms: u64, monotonic_ts: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let now_ms = Arc::new(AtomicU64::new(1_000_000));
        let config = StorageConfig {
            sync_mode: SyncMode::Periodic,
            memtable_bytes_max: 4096,
            block_bytes: 128,
            compaction_min_tables: 2,
            compaction_max_tables: 4,
            gc_grace_ms,
            background_threads: false,
            ..StorageConfig::default()
        };
        let engine = Some(open(dir.path(), &config, &now_ms));
        Harness {
            dir,
            now_ms,
            config,
            engine,
            oracle: BTreeMap::new(),
            step: 0,
            monotonic_ts,
        }
    }

    fn engine(&self) -> &Engine {
        self.engine.as_ref().unwrap()
    }

    fn now(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }

    fn stamp(&mut self, ts: u64) -> u64 {
        self.step += 1;
        if self.monotonic_ts {
            self.now() * 1000 + self.step
        } else {
            ts * 10_000 + self.step
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Put {
                key,
                value,
                ts,
                ttl_ms,
            } => {
                let cell = Cell {
                    timestamp: self.stamp(*ts),
                    expires_at_ms: ttl_ms.map(|ttl| self.now() + ttl),
                    value: cassio_core::storage::CellValue::Value(value.clone()),
                };
                self.engine().write(KEYS[*key], cell.clone()).unwrap();
                self.remember(KEYS[*key], cell);
            }
            Op::Delete { key, ts } => {
                let cell = Cell::tombstone(self.stamp(*ts));
                self.engine().write(KEYS[*key], cell.clone()).unwrap();
                self.remember(KEYS[*key], cell);
            }
            Op::Flush => self.engine().flush().unwrap(),
            Op::Compact => self.engine().compact().unwrap(),
            Op::AdvanceClock { ms } => {
                self.now_ms.fetch_add(*ms, Ordering::SeqCst);
            }
            Op::Reopen { clean } => {
                let engine = self.engine.take().unwrap();
                if *clean {
                    engine.close().unwrap()
                } else {
                    drop(engine)
                }
                self.engine = Some(open(self.dir.path(), &self.config, &self.now_ms));
            }
        }
    }

    fn remember(&mut self, key: &[u8], cell: Cell) {
        let slot = self
            .oracle
            .entry(key.to_vec())
            .or_insert_with(|| cell.clone());
        if cell.supersedes(slot) {
            *slot = cell;
        }
    }

    fn expected_live(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let now = self.now();
        self.oracle
            .iter()
            .filter_map(|(k, c)| c.live_value(now).map(|v| (k.clone(), v.to_vec())))
            .collect()
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let expected = self.expected_live();
        for key in KEYS {
            let want = expected
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone());
            prop_assert_eq!(self.engine().get(key).unwrap(), want, "get {:?}", key);
        }
        let all: Vec<_> = self
            .engine()
            .scan(Bound::Unbounded, Bound::Unbounded)
            .map(|r| r.unwrap())
            .collect();
        prop_assert_eq!(&all, &expected, "full scan");
        for prefix in [&b"a"[..], b"ab", b"b", b"c", b"\xff"] {
            let got: Vec<_> = self
                .engine()
                .scan_prefix(prefix)
                .map(|r| r.unwrap())
                .collect();
            let want: Vec<_> = expected
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .cloned()
                .collect();
            prop_assert_eq!(got, want, "prefix scan {:?}", prefix);
        }
        let range: Vec<_> = self
            .engine()
            .scan(Bound::Excluded(b"ab"), Bound::Included(b"c2"))
            .map(|r| r.unwrap())
            .collect();
        let want: Vec<_> = expected
            .iter()
            .filter(|(k, _)| k.as_slice() > &b"ab"[..] && k.as_slice() <= &b"c2"[..])
            .cloned()
            .collect();
        prop_assert_eq!(range, want, "range scan");
        Ok(())
    }
}

fn open(dir: &Path, config: &StorageConfig, now_ms: &Arc<AtomicU64>) -> Engine {
    let clock = now_ms.clone();
    Engine::open_with_clock(
        dir,
        config.clone(),
        Arc::new(move || clock.load(Ordering::SeqCst)),
    )
    .unwrap()
}

fn run(ops: &[Op], gc_grace_ms: u64, monotonic_ts: bool) -> Result<(), TestCaseError> {
    let mut h = Harness::new(gc_grace_ms, monotonic_ts);
    for op in ops {
        h.apply(op);
        h.check()?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Timestamps out of order, tombstones never purgeable: the engine must
    /// match last-write-wins exactly.
    #[test]
    fn engine_matches_lww_oracle_with_out_of_order_timestamps(ops in proptest::collection::vec(op(50), 1..80)) {
        run(&ops, u64::MAX / 4, false)?;
    }

    /// `gc_grace` of zero with timestamps in write order: compaction purges
    /// tombstones as soon as nothing older needs them, and no deleted value
    /// comes back.
    #[test]
    fn purging_tombstones_never_resurrects_values(ops in proptest::collection::vec(op(50), 1..80)) {
        run(&ops, 0, true)?;
    }
}

/// After deletes and a major compaction past gc_grace, the tombstones are gone
/// from disk, and the deleted keys still read as absent.
#[test]
fn major_compaction_purges_tombstones_after_gc_grace() {
    let mut h = Harness::new(10, true);
    for i in 0..50u8 {
        h.apply(&Op::Put {
            key: (i as usize) % KEYS.len(),
            value: vec![i; 10],
            ts: 1,
            ttl_ms: None,
        });
    }
    h.apply(&Op::Flush);
    for key in 0..KEYS.len() {
        h.apply(&Op::Delete { key, ts: 1 });
    }
    h.apply(&Op::Flush);
    h.apply(&Op::Compact);
    assert!(
        h.engine().stats().sstable_tombstones > 0,
        "tombstones kept inside gc_grace"
    );
    h.apply(&Op::AdvanceClock { ms: 11 });
    h.apply(&Op::Compact);
    let stats = h.engine().stats();
    assert_eq!(stats.sstable_tombstones, 0, "{stats:?}");
    assert_eq!(stats.sstables, 0, "everything was deleted: {stats:?}");
    h.check().unwrap();
}
