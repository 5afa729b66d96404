//! Several threads write, delete and read while background flushes and
//! compactions run (a tiny memtable makes them constant). Each writer owns its
//! keys, so it knows exactly what it must read back; scanners check that every
//! key they see is one some writer wrote, in order, with a well-formed value.
//! At the end the engine, reopened, holds exactly each writer's last cells.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cassio_core::storage::{Engine, StorageConfig};

const WRITERS: u64 = 4;
const OPS_PER_WRITER: u64 = 3000;
const KEYS_PER_WRITER: u64 = 300;

fn key(writer: u64, k: u64) -> Vec<u8> {
    format!("w{writer}/k{k:04}").into_bytes()
}

fn value(writer: u64, k: u64, op: u64) -> Vec<u8> {
    format!("w{writer}/k{k:04}/op{op}/").repeat(3).into_bytes()
}

fn config() -> StorageConfig {
    StorageConfig {
        memtable_bytes_max: 16 * 1024,
        immutable_memtables_max: 2,
        block_bytes: 512,
        compaction_min_tables: 2,
        ..StorageConfig::default()
    }
}

#[test]
fn concurrent_writes_deletes_reads_with_background_flush_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(dir.path(), config()).unwrap());
    let done = Arc::new(AtomicBool::new(false));

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                let mut model: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
                for op in 0..OPS_PER_WRITER {
                    let k = (op * 7919 + w) % KEYS_PER_WRITER;
                    let ts = op + 1;
                    if op % 5 == 4 {
                        engine.delete(&key(w, k), ts).unwrap();
                        model.insert(key(w, k), None);
                    } else {
                        engine.put(&key(w, k), &value(w, k, op), ts).unwrap();
                        model.insert(key(w, k), Some(value(w, k, op)));
                    }
                    // Read-your-writes on a key written a while ago.
                    let probe = key(w, (op * 31) % KEYS_PER_WRITER);
                    let want = model.get(&probe).cloned().flatten();
                    assert_eq!(engine.get(&probe).unwrap(), want, "writer {w} op {op}");
                }
                model
            })
        })
        .collect();

    let scanners: Vec<_> = (0..2)
        .map(|s| {
            let engine = engine.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut scans = 0u64;
                while !done.load(Ordering::Acquire) && Instant::now() < deadline {
                    let prefix = format!("w{}/", scans % WRITERS);
                    let mut previous: Option<Vec<u8>> = None;
                    for item in engine.scan_prefix(prefix.as_bytes()) {
                        let (k, v) = item.unwrap();
                        assert!(k.starts_with(prefix.as_bytes()), "scanner {s}: foreign key");
                        assert!(
                            previous.as_ref().is_none_or(|p| *p < k),
                            "scanner {s}: out of order"
                        );
                        let text = String::from_utf8(v).unwrap();
                        let key_text = String::from_utf8(k.clone()).unwrap();
                        assert!(
                            text.starts_with(&format!("{key_text}/op")),
                            "phantom value {text} for {key_text}"
                        );
                        previous = Some(k);
                    }
                    scans += 1;
                }
                scans
            })
        })
        .collect();

    let models: Vec<_> = writers.into_iter().map(|t| t.join().unwrap()).collect();
    done.store(true, Ordering::Release);
    let scans: u64 = scanners.into_iter().map(|t| t.join().unwrap()).sum();
    let stats = engine.stats();
    assert!(stats.flushes >= 5, "flushes ran during the test: {stats:?}");
    assert!(
        stats.compactions >= 1,
        "compactions ran during the test: {stats:?}"
    );
    assert!(scans > 0);

    let check = |engine: &Engine| {
        for (w, model) in models.iter().enumerate() {
            for (k, want) in model {
                assert_eq!(&engine.get(k).unwrap(), want, "writer {w} key {k:?}");
            }
            let live: Vec<_> = model
                .iter()
                .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
                .collect();
            let scanned: Vec<_> = engine
                .scan_prefix(format!("w{w}/").as_bytes())
                .map(|r| r.unwrap())
                .collect();
            assert_eq!(scanned, live, "writer {w} final scan");
        }
    };
    check(&engine);
    let engine = Arc::into_inner(engine).expect("threads are done");
    engine.close().unwrap();
    let reopened = Engine::open(dir.path(), config()).unwrap();
    check(&reopened);
}
