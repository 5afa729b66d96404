//! Storage engine benchmark: cassio's engine beside fjall, same process, same
//! workload, printed as ops/s of each and the ratio cassio/fjall per row.
//!
//! ```text
//! cargo run --release -p cassio-core --example storage_bench [-- --keys N --rounds R --json]
//! ```
//!
//! Rows: fillrandom (16 B keys, 100 B values, random order), readrandom
//! (hits), readmissing (keys never written), overwrite, prefixscan (100 keys
//! per scan). Two passes: durability off in both engines (no fsync per write)
//! and one fsync per batch of 1,000 writes in both. Each pass also reports
//! bytes on disk and peak RSS growth per million keys. Each engine's pass
//! runs in a child process of its own (same binary, same seeded workload),
//! so peak RSS is that engine's alone. Passes run in ABBA order for `--rounds`
//! (default 2) and each row reports each engine's best (peak RSS: worst).

use std::path::Path;
use std::time::Instant;

use cassio_core::storage::{Engine, StorageConfig, SyncMode};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const VALUE_BYTES: usize = 100;
const SYNC_BATCH: usize = 1000;
const SCAN_KEYS: u64 = 100;

#[derive(Clone, Copy, PartialEq)]
enum Durability {
    Off,
    FsyncPer1000,
}

impl Durability {
    fn name(self) -> &'static str {
        match self {
            Durability::Off => "durability off",
            Durability::FsyncPer1000 => "fsync per 1000 writes",
        }
    }
}

/// What one engine has to offer the benchmark.
trait Store {
    fn put(&mut self, key: &[u8], value: &[u8]);
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
    fn sync(&self);
    /// Number of entries under `prefix`, read through the engine's scan.
    fn prefix_count(&self, prefix: &[u8]) -> u64;
}

struct Cassio {
    engine: Engine,
    timestamp: u64,
}

impl Store for Cassio {
    fn put(&mut self, key: &[u8], value: &[u8]) {
        self.timestamp += 1;
        self.engine
            .put(key, value, self.timestamp)
            .expect("cassio put");
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.engine.get(key).expect("cassio get")
    }
    fn sync(&self) {
        self.engine.sync().expect("cassio sync");
    }
    fn prefix_count(&self, prefix: &[u8]) -> u64 {
        self.engine.scan_prefix(prefix).fold(0, |n, r| {
            let (_, v) = r.expect("cassio scan");
            assert_eq!(v.len(), VALUE_BYTES);
            n + 1
        })
    }
}

struct Fjall {
    db: fjall::Database,
    keyspace: fjall::Keyspace,
}

impl Store for Fjall {
    fn put(&mut self, key: &[u8], value: &[u8]) {
        self.keyspace.insert(key, value).expect("fjall insert");
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.keyspace
            .get(key)
            .expect("fjall get")
            .map(|v| v.to_vec())
    }
    fn sync(&self) {
        self.db
            .persist(fjall::PersistMode::SyncData)
            .expect("fjall persist");
    }
    fn prefix_count(&self, prefix: &[u8]) -> u64 {
        self.keyspace.prefix(prefix).fold(0, |n, g| {
            let (_, v) = g.into_inner().expect("fjall scan");
            assert_eq!(v.len(), VALUE_BYTES);
            n + 1
        })
    }
}

fn open_cassio(dir: &Path) -> Cassio {
    let config = StorageConfig {
        sync_mode: SyncMode::Periodic,
        ..StorageConfig::default()
    };
    Cassio {
        engine: Engine::open(dir, config).expect("open cassio"),
        timestamp: 0,
    }
}

fn open_fjall(dir: &Path) -> Fjall {
    let db = fjall::Database::builder(dir)
        .manual_journal_persist(true)
        .open()
        .expect("open fjall");
    let keyspace = db
        .keyspace("bench", || {
            fjall::KeyspaceCreateOptions::default().manual_journal_persist(true)
        })
        .expect("open fjall keyspace");
    Fjall { db, keyspace }
}

fn key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k.copy_from_slice(format!("{i:016}").as_bytes());
    k
}

fn value(i: u64, round: u64) -> [u8; VALUE_BYTES] {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(i ^ (round << 40));
    let mut v = [0u8; VALUE_BYTES];
    rng.fill(&mut v[..]);
    v
}

struct Workload {
    keys: u64,
    fill_order: Vec<u64>,
    read_order: Vec<u64>,
    overwrite_order: Vec<u64>,
    scans: u64,
}

impl Workload {
    fn new(keys: u64, reads: u64) -> Self {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut fill_order: Vec<u64> = (0..keys).collect();
        fill_order.shuffle(&mut rng);
        let read_order = (0..reads).map(|_| rng.random_range(0..keys)).collect();
        let overwrite_order = (0..keys).map(|_| rng.random_range(0..keys)).collect();
        Workload {
            keys,
            fill_order,
            read_order,
            overwrite_order,
            scans: (keys / SCAN_KEYS).min(20_000),
        }
    }
}

/// Runs one row on one store and returns ops/s.
fn timed(ops: u64, f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    ops as f64 / start.elapsed().as_secs_f64()
}

fn writes(store: &mut dyn Store, order: &[u64], round: u64, durability: Durability) -> f64 {
    timed(order.len() as u64, || {
        for (n, &i) in order.iter().enumerate() {
            store.put(&key(i), &value(i, round));
            if durability == Durability::FsyncPer1000 && (n + 1) % SYNC_BATCH == 0 {
                store.sync();
            }
        }
        store.sync();
    })
}

fn read_hits(store: &dyn Store, w: &Workload) -> f64 {
    timed(w.read_order.len() as u64, || {
        for &i in &w.read_order {
            assert!(store.get(&key(i)).is_some(), "key {i} must be present");
        }
    })
}

fn read_missing(store: &dyn Store, w: &Workload) -> f64 {
    timed(w.read_order.len() as u64, || {
        for &i in &w.read_order {
            // Same distribution of key shapes, never written (beyond `keys`).
            assert!(store.get(&key(i + w.keys)).is_none());
        }
    })
}

fn prefix_scans(store: &dyn Store, w: &Workload) -> f64 {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    timed(w.scans, || {
        for _ in 0..w.scans {
            let block = rng.random_range(0..w.keys / SCAN_KEYS);
            let k = key(block * SCAN_KEYS);
            let found = store.prefix_count(&k[..14]);
            assert_eq!(found, SCAN_KEYS, "prefix scan found {found}");
        }
    })
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let meta = entry.metadata().expect("metadata");
        total += if meta.is_dir() {
            dir_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

const ROWS: [&str; 5] = [
    "fillrandom",
    "readrandom",
    "readmissing",
    "overwrite",
    "prefixscan",
];

/// One engine's pass, as its child process reports it on one line:
/// five ops/s figures, bytes on disk, peak RSS growth in KiB.
struct EngineResult {
    ops_per_s: [f64; 5],
    disk_bytes: u64,
    peak_rss_growth_kib: u64,
}

impl EngineResult {
    fn to_line(&self) -> String {
        let ops: Vec<String> = self.ops_per_s.iter().map(|o| format!("{o:.0}")).collect();
        format!(
            "RESULT {} {} {}",
            ops.join(" "),
            self.disk_bytes,
            self.peak_rss_growth_kib
        )
    }

    fn keep_best(&mut self, other: &EngineResult) {
        for (mine, theirs) in self.ops_per_s.iter_mut().zip(other.ops_per_s) {
            *mine = mine.max(theirs);
        }
        self.peak_rss_growth_kib = self.peak_rss_growth_kib.max(other.peak_rss_growth_kib);
    }

    fn from_output(output: &str) -> Option<Self> {
        let line = output.lines().find(|l| l.starts_with("RESULT "))?;
        let fields: Vec<f64> = line
            .split(' ')
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        let [a, b, c, d, e, disk, rss] = fields[..] else {
            return None;
        };
        Some(EngineResult {
            ops_per_s: [a, b, c, d, e],
            disk_bytes: disk as u64,
            peak_rss_growth_kib: rss as u64,
        })
    }
}

fn run_engine(
    store: &mut dyn Store,
    dir: &Path,
    w: &Workload,
    durability: Durability,
    rss_before: u64,
) -> EngineResult {
    let fill = writes(store, &w.fill_order, 0, durability);
    let read = read_hits(store, w);
    let missing = read_missing(store, w);
    let overwrite = writes(store, &w.overwrite_order, 1, durability);
    let scan = prefix_scans(store, w);
    EngineResult {
        ops_per_s: [fill, read, missing, overwrite, scan],
        disk_bytes: dir_bytes(dir),
        peak_rss_growth_kib: status_kib("VmHWM:").saturating_sub(rss_before),
    }
}

/// Child mode: one engine, one durability pass, in a process of its own so
/// its peak RSS is its own.
fn child(engine: &str, durability: Durability, keys: u64, reads: u64) {
    let w = Workload::new(keys, reads);
    let rss_before = status_kib("VmRSS:");
    let dir = tempfile::tempdir().expect("tempdir");
    let result = match engine {
        "cassio" => run_engine(
            &mut open_cassio(dir.path()),
            dir.path(),
            &w,
            durability,
            rss_before,
        ),
        "fjall" => run_engine(
            &mut open_fjall(dir.path()),
            dir.path(),
            &w,
            durability,
            rss_before,
        ),
        other => panic!("unknown engine {other}"),
    };
    println!("{}", result.to_line());
}

fn spawn_child(engine: &str, durability: Durability, keys: u64, reads: u64) -> EngineResult {
    let exe = std::env::current_exe().expect("own path");
    let mode = match durability {
        Durability::Off => "off",
        Durability::FsyncPer1000 => "fsync1000",
    };
    let output = std::process::Command::new(exe)
        .args([
            "--child",
            engine,
            mode,
            "--keys",
            &keys.to_string(),
            "--reads",
            &reads.to_string(),
        ])
        .output()
        .expect("spawn benchmark child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    EngineResult::from_output(&stdout).unwrap_or_else(|| {
        panic!(
            "{engine} pass failed: {}\n{stdout}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let keys: u64 = flag("--keys")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let reads: u64 = flag("--reads").and_then(|v| v.parse().ok()).unwrap_or(keys);
    if let Some(engine) = flag("--child") {
        let durability = match args
            .iter()
            .position(|a| a == "--child")
            .and_then(|i| args.get(i + 2))
        {
            Some(m) if m == "fsync1000" => Durability::FsyncPer1000,
            _ => Durability::Off,
        };
        child(engine, durability, keys, reads);
        return;
    }
    let json = args.iter().any(|a| a == "--json");
    let rounds: u32 = flag("--rounds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
        .max(1);
    let per_million = 1_000_000.0 / keys as f64;
    let mut json_rows = Vec::new();

    if !json {
        println!(
            "storage_bench: {keys} keys (16 B keys, {VALUE_BYTES} B values), {reads} reads, cassio vs fjall, best of {rounds} ABBA rounds"
        );
    }
    for durability in [Durability::Off, Durability::FsyncPer1000] {
        // ABBA rounds (cassio, fjall, fjall, cassio, ...): neither engine
        // always gets the warmer or the more crowded machine. Each row keeps
        // its engine's best round, the same rule for both.
        let mut c = spawn_child("cassio", durability, keys, reads);
        let mut f = spawn_child("fjall", durability, keys, reads);
        for round in 1..rounds {
            let (second_f, second_c) = if round % 2 == 1 {
                let f = spawn_child("fjall", durability, keys, reads);
                (f, spawn_child("cassio", durability, keys, reads))
            } else {
                let c = spawn_child("cassio", durability, keys, reads);
                (spawn_child("fjall", durability, keys, reads), c)
            };
            c.keep_best(&second_c);
            f.keep_best(&second_f);
        }
        if !json {
            println!("\n== {} ==", durability.name());
            println!(
                "{:<14} {:>14} {:>14} {:>8}",
                "row", "cassio ops/s", "fjall ops/s", "ratio"
            );
        }
        for (i, row) in ROWS.iter().enumerate() {
            let ratio = c.ops_per_s[i] / f.ops_per_s[i];
            if !json {
                println!(
                    "{row:<14} {:>14.0} {:>14.0} {:>8.2}",
                    c.ops_per_s[i], f.ops_per_s[i], ratio
                );
            }
            json_rows.push(format!(
                r#"{{"durability":"{}","row":"{row}","cassio_ops_per_s":{:.0},"fjall_ops_per_s":{:.0},"ratio":{ratio:.3}}}"#,
                durability.name(),
                c.ops_per_s[i],
                f.ops_per_s[i]
            ));
        }
        let disk = |r: &EngineResult| r.disk_bytes as f64 * per_million / 1e6;
        let rss = |r: &EngineResult| r.peak_rss_growth_kib as f64 * per_million / 1024.0;
        if !json {
            println!(
                "{:<14} {:>14.1} {:>14.1} {:>8.2}",
                "disk MB/Mkeys",
                disk(&c),
                disk(&f),
                disk(&c) / disk(&f)
            );
            println!(
                "{:<14} {:>14.1} {:>14.1} {:>8.2}",
                "peak RSS MB/Mk",
                rss(&c),
                rss(&f),
                rss(&c) / rss(&f)
            );
        }
        json_rows.push(format!(
            r#"{{"durability":"{}","row":"footprint","cassio_disk_mb_per_mkeys":{:.1},"fjall_disk_mb_per_mkeys":{:.1},"cassio_peak_rss_mb_per_mkeys":{:.1},"fjall_peak_rss_mb_per_mkeys":{:.1}}}"#,
            durability.name(),
            disk(&c),
            disk(&f),
            rss(&c),
            rss(&f)
        ));
    }
    if json {
        println!(
            r#"{{"keys":{keys},"reads":{reads},"rows":[{}]}}"#,
            json_rows.join(",")
        );
    }
}
