//! `cassio bench`: YCSB core workloads against a running cluster. A load
//! phase inserts `--records` keys; the run phase issues `--operations`
//! operations from `--threads` concurrent clients with the workload's mix and
//! request distribution, showing a progress bar, then prints throughput and
//! p50 / p95 / p99 / p99.9 latency per operation (or JSON).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cassio_client::{Client, ClientConfig, ConsistencyLevel, KeyRange};
use clap::ValueEnum;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};

use crate::zipf::{Zipfian, scramble};

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
pub(crate) enum Workload {
    /// 50% reads, 50% updates, zipfian.
    A,
    /// 95% reads, 5% updates, zipfian.
    B,
    /// 100% reads, zipfian.
    C,
    /// 95% reads, 5% inserts, latest.
    D,
    /// 95% short scans (1 to 100 keys, uniform), 5% inserts, zipfian.
    E,
    /// 50% reads, 50% read-modify-writes, zipfian.
    F,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
pub(crate) enum Distribution {
    Uniform,
    Zipfian,
    Latest,
}

#[derive(clap::Args, Debug)]
pub(crate) struct BenchArgs {
    /// YCSB core workload.
    #[arg(long, value_enum, ignore_case = true, default_value = "a")]
    workload: Workload,
    /// Keys inserted by the load phase.
    #[arg(long, default_value_t = 10_000)]
    records: u64,
    /// Operations in the run phase.
    #[arg(long, default_value_t = 100_000)]
    operations: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    threads: usize,
    /// Request distribution [default: the workload's].
    #[arg(long, value_enum, ignore_case = true)]
    distribution: Option<Distribution>,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Skip the load phase (the records are already there).
    #[arg(long)]
    skip_load: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Op {
    Insert,
    Read,
    Update,
    ReadModifyWrite,
    Scan,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Insert => "INSERT",
            Op::Read => "READ",
            Op::Update => "UPDATE",
            Op::ReadModifyWrite => "READ-MODIFY-WRITE",
            Op::Scan => "SCAN",
        }
    }
}

const OPS: [Op; 5] = [
    Op::Insert,
    Op::Read,
    Op::Update,
    Op::ReadModifyWrite,
    Op::Scan,
];

/// Workload E's scans ask for 1 to this many keys, uniformly (YCSB's
/// `maxscanlength`).
const SCAN_KEYS_MAX: u32 = 100;

fn key(i: u64) -> Vec<u8> {
    format!("user{:019}", scramble(i, u64::MAX)).into_bytes()
}

/// The run phase's operation mix: fractions of (read, update, insert,
/// rmw, scan).
fn mix(workload: Workload) -> [(Op, f64); 5] {
    let (read, update, insert, rmw, scan) = match workload {
        Workload::A => (0.5, 0.5, 0.0, 0.0, 0.0),
        Workload::B => (0.95, 0.05, 0.0, 0.0, 0.0),
        Workload::C => (1.0, 0.0, 0.0, 0.0, 0.0),
        Workload::D => (0.95, 0.0, 0.05, 0.0, 0.0),
        Workload::E => (0.0, 0.0, 0.05, 0.0, 0.95),
        Workload::F => (0.5, 0.0, 0.0, 0.5, 0.0),
    };
    [
        (Op::Read, read),
        (Op::Update, update),
        (Op::Insert, insert),
        (Op::ReadModifyWrite, rmw),
        (Op::Scan, scan),
    ]
}

struct Results {
    histograms: Mutex<Vec<(Op, Histogram<u64>)>>,
    errors: AtomicU64,
    /// The first failure's message, to say why operations failed.
    first_error: Mutex<Option<String>>,
}

impl Results {
    fn new() -> Results {
        Results {
            histograms: Mutex::new(
                OPS.iter()
                    .map(|&op| (op, Histogram::new(3).expect("histogram")))
                    .collect(),
            ),
            errors: AtomicU64::new(0),
            first_error: Mutex::new(None),
        }
    }

    /// Fails the run if any operation failed, saying how many and why.
    fn check(&self, phase: &str, total: u64) -> anyhow::Result<()> {
        let errors = self.errors.load(Ordering::Relaxed);
        match self.first_error.lock().as_deref() {
            Some(first) if errors > 0 => Err(anyhow::anyhow!(
                "{errors} of {total} operations of the {phase} phase failed; the first: {first}"
            )),
            _ => Ok(()),
        }
    }

    fn merge(&self, local: Vec<(Op, Histogram<u64>)>) {
        let mut all = self.histograms.lock();
        for ((_, mine), (_, theirs)) in all.iter_mut().zip(local) {
            mine.add(theirs).expect("histograms of one shape");
        }
    }
}

pub(crate) fn run(
    args: &BenchArgs,
    config: &ClientConfig,
    host: SocketAddr,
    json: bool,
) -> anyhow::Result<()> {
    let level = config.consistency;
    anyhow::ensure!(
        args.threads >= 1 && args.records >= 1,
        "--threads and --records must be at least 1"
    );
    anyhow::ensure!(
        level != ConsistencyLevel::Any,
        "-c ANY cannot read, and every workload reads; use ONE or higher"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = Client::connect(&[host], config.clone())
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot reach a cassio node at {host} ({e}); `cassio up` starts a local cluster"
                )
            })?;
        let value = vec![b'x'; args.value_size];
        if !args.skip_load {
            let results = Results::new();
            let elapsed = phase(
                &client,
                args,
                "load",
                args.records,
                json,
                &results,
                |_, counter, _| (Op::Insert, counter.fetch_add(1, Ordering::Relaxed)),
                &value,
            )
            .await;
            report("load", args, elapsed, &results, json);
            results.check("load", args.records)?;
        }
        let inserted = Arc::new(AtomicU64::new(args.records));
        let distribution = args.distribution.unwrap_or(match args.workload {
            Workload::D => Distribution::Latest,
            _ => Distribution::Zipfian,
        });
        let zipf = Arc::new(Zipfian::new(args.records));
        let mix = mix(args.workload);
        let results = Results::new();
        let records = args.records;
        let choose = {
            let inserted = inserted.clone();
            move |rng: &mut rand::rngs::StdRng, _: &AtomicU64, _: u64| {
                let roll: f64 = rng.random();
                let mut acc = 0.0;
                let op = mix
                    .iter()
                    .find(|(_, p)| {
                        acc += p;
                        roll < acc
                    })
                    .map_or(Op::Read, |(op, _)| *op);
                if op == Op::Insert {
                    return (op, inserted.fetch_add(1, Ordering::Relaxed));
                }
                let count = inserted.load(Ordering::Relaxed);
                let item = match distribution {
                    Distribution::Uniform => rng.random_range(0..count),
                    Distribution::Zipfian => scramble(zipf.next(rng), records),
                    Distribution::Latest => count.saturating_sub(1 + zipf.next(rng).min(count - 1)),
                };
                (op, item)
            }
        };
        let elapsed = phase(
            &client,
            args,
            "run",
            args.operations,
            json,
            &results,
            choose,
            &value,
        )
        .await;
        report("run", args, elapsed, &results, json);
        results.check("run", args.operations)
    })
}

/// Runs `total` operations over `args.threads` tasks; `choose` picks each
/// operation and its item.
#[allow(clippy::too_many_arguments)]
async fn phase(
    client: &Client,
    args: &BenchArgs,
    name: &str,
    total: u64,
    json: bool,
    results: &Results,
    choose: impl Fn(&mut rand::rngs::StdRng, &AtomicU64, u64) -> (Op, u64) + Clone + Send + 'static,
    value: &[u8],
) -> Duration {
    let progress = if json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(total)
    };
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>5} [{bar:40}] {pos}/{len} ops {per_sec} eta {eta}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    progress.set_prefix(name.to_string());
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..args.threads {
        let (client, issued, choose, progress, value) = (
            client.clone(),
            issued.clone(),
            choose.clone(),
            progress.clone(),
            value.to_vec(),
        );
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(t as u64 + 1);
            let mut local: Vec<(Op, Histogram<u64>)> = OPS
                .iter()
                .map(|&op| (op, Histogram::new(3).expect("histogram")))
                .collect();
            let counter = AtomicU64::new(0);
            let (mut errors, mut first_error) = (0u64, None);
            while issued.fetch_add(1, Ordering::Relaxed) < total {
                let (op, item) = choose(&mut rng, &counter, t as u64);
                let key = key(item);
                let sent = Instant::now();
                let outcome = match op {
                    Op::Read => client.get(&key).await.map(|_| ()),
                    Op::Insert | Op::Update => client.set(&key, &value).await.map(|_| ()),
                    Op::ReadModifyWrite => match client.get(&key).await {
                        Ok(_) => client.set(&key, &value).await.map(|_| ()),
                        Err(e) => Err(e),
                    },
                    Op::Scan => {
                        let keys = rng.random_range(1..=SCAN_KEYS_MAX);
                        client
                            .scan(&KeyRange::from(&key), keys, None)
                            .await
                            .map(|_| ())
                    }
                };
                match outcome {
                    Ok(()) => {
                        let slot = local
                            .iter_mut()
                            .find(|(o, _)| *o == op)
                            .expect("every op has a histogram");
                        let _ = slot.1.record(sent.elapsed().as_micros() as u64);
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
                progress.inc(1);
            }
            (local, errors, first_error)
        }));
    }
    // The load phase numbers items itself: each task takes the next one.
    for task in tasks {
        if let Ok((local, errors, first_error)) = task.await {
            results.merge(local);
            results.errors.fetch_add(errors, Ordering::Relaxed);
            if let Some(e) = first_error {
                results.first_error.lock().get_or_insert(e);
            }
        }
    }
    progress.finish_and_clear();
    started.elapsed()
}

fn report(phase: &str, args: &BenchArgs, elapsed: Duration, results: &Results, json: bool) {
    let histograms = results.histograms.lock();
    let done: u64 = histograms.iter().map(|(_, h)| h.len()).sum();
    let errors = results.errors.load(Ordering::Relaxed);
    let throughput = done as f64 / elapsed.as_secs_f64();
    if json {
        let ops: Vec<String> = histograms
            .iter()
            .filter(|(_, h)| !h.is_empty())
            .map(|(op, h)| {
                format!(
                    r#"{{"op":"{}","count":{},"p50_us":{},"p95_us":{},"p99_us":{},"p999_us":{}}}"#,
                    op.name(),
                    h.len(),
                    h.value_at_quantile(0.5),
                    h.value_at_quantile(0.95),
                    h.value_at_quantile(0.99),
                    h.value_at_quantile(0.999)
                )
            })
            .collect();
        println!(
            r#"{{"phase":"{phase}","workload":"{:?}","threads":{},"seconds":{:.3},"ops":{done},"errors":{errors},"ops_per_s":{throughput:.0},"latency":[{}]}}"#,
            args.workload,
            args.threads,
            elapsed.as_secs_f64(),
            ops.join(",")
        );
        return;
    }
    println!(
        "[{phase}] workload {:?}, {} clients: {done} ops in {:.2} s = {throughput:.0} ops/s, {errors} errors",
        args.workload,
        args.threads,
        elapsed.as_secs_f64()
    );
    for (op, h) in histograms.iter().filter(|(_, h)| !h.is_empty()) {
        println!(
            "  {:<18} {:>9} ops  p50 {:>6} µs  p95 {:>6} µs  p99 {:>6} µs  p99.9 {:>6} µs",
            op.name(),
            h.len(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.95),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999)
        );
    }
}
