//! Replication cost: QUORUM writes and reads on a 3-node RF 3 cluster beside
//! a 1-node RF 1 cluster (same protocol, no replication) and the local
//! storage engine called directly, all in one run, at 1, 16 and 64
//! concurrent clients. Prints ops/s, p50 and p99 latency and the ratios.
//!
//! ```text
//! cargo run --release -p cassio-core --example cluster_bench [-- --seconds S --json]
//! ```
//! Nodes run in this process (`Node::start`, loopback TCP); each client is a
//! task with its own connection, spread over the nodes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cassio_core::coordinator::ConsistencyLevel;
use cassio_core::net::{Connection, Tcp};
use cassio_core::proto::{Hello, Request, Response, Role};
use cassio_core::storage::{Engine, StorageConfig};
use cassio_core::{Node, NodeConfig, NodeHandle};
use hdrhistogram::Histogram;

const KEYS: u64 = 100_000;
const VALUE_BYTES: usize = 100;
const CONCURRENCY: [usize; 3] = [1, 16, 64];

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Write,
    Read,
}

struct Measured {
    ops_per_s: f64,
    p50_us: u64,
    p99_us: u64,
}

fn key(i: u64) -> Vec<u8> {
    format!("bench{:012}", i % KEYS).into_bytes()
}

fn summarize(histogram: &Histogram<u64>, elapsed: Duration) -> Measured {
    Measured {
        ops_per_s: histogram.len() as f64 / elapsed.as_secs_f64(),
        p50_us: histogram.value_at_quantile(0.50),
        p99_us: histogram.value_at_quantile(0.99),
    }
}

fn start_cluster(n: usize, dir: &std::path::Path) -> Vec<NodeHandle> {
    let config = |i: usize, seeds| NodeConfig {
        name: format!("n{i}"),
        listen: "127.0.0.1:0".parse().expect("address"),
        resp: None,
        seeds,
        data_dir: Some(dir.join(format!("n{i}"))),
        replication_factor: n as u32,
        gossip_interval_ms: 200,
        ..NodeConfig::default()
    };
    let first = Node::start(config(0, vec![])).expect("start node");
    let seed = first.native_addr();
    let mut nodes = vec![first];
    for i in 1..n {
        nodes.push(Node::start(config(i, vec![seed])).expect("start node"));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !nodes
        .iter()
        .all(|node| node.members().iter().filter(|m| m.up).count() == n)
    {
        assert!(Instant::now() < deadline, "cluster did not form");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    nodes
}

/// `clients` tasks hammer the cluster for `seconds`; returns the merged histogram.
fn run_cluster(
    runtime: &tokio::runtime::Runtime,
    nodes: &[NodeHandle],
    op: Op,
    clients: usize,
    seconds: f64,
) -> Measured {
    let addrs: Vec<_> = nodes.iter().map(|n| n.native_addr()).collect();
    let value = vec![b'v'; VALUE_BYTES];
    let start = Instant::now();
    let histogram = runtime.block_on(async {
        let mut tasks = Vec::new();
        for c in 0..clients {
            let addr = addrs[c % addrs.len()];
            let value = value.clone();
            tasks.push(tokio::spawn(async move {
                let hello = Hello::new("cassio", Role::Client, None);
                let conn = Connection::open(&Tcp, addr, hello, 1 << 24, Duration::from_secs(5))
                    .await
                    .expect("connect");
                let mut histogram = Histogram::<u64>::new(3).expect("histogram");
                let deadline = Instant::now() + Duration::from_secs_f64(seconds);
                let mut i = c as u64 * 7919;
                while Instant::now() < deadline {
                    i = i.wrapping_add(104_729);
                    let request = match op {
                        Op::Write => Request::Put {
                            key: key(i),
                            value: value.clone(),
                            level: Some(ConsistencyLevel::Quorum),
                            timestamp: None,
                            ttl_ms: None,
                        },
                        Op::Read => Request::Get {
                            key: key(i),
                            level: Some(ConsistencyLevel::Quorum),
                        },
                    };
                    let sent = Instant::now();
                    let response = conn
                        .request(request, Duration::from_secs(10))
                        .await
                        .expect("request");
                    assert!(
                        matches!(response, Response::Written { .. } | Response::Value { .. }),
                        "{response:?}"
                    );
                    histogram
                        .record(sent.elapsed().as_micros() as u64)
                        .expect("record");
                }
                histogram
            }));
        }
        let mut merged = Histogram::<u64>::new(3).expect("histogram");
        for task in tasks {
            merged.add(task.await.expect("client task")).expect("merge");
        }
        merged
    });
    summarize(&histogram, start.elapsed())
}

/// The same load on the storage engine directly, `clients` threads.
fn run_local(engine: &Arc<Engine>, op: Op, clients: usize, seconds: f64) -> Measured {
    let start = Instant::now();
    let histograms: Vec<_> = (0..clients)
        .map(|c| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                let mut histogram = Histogram::<u64>::new(3).expect("histogram");
                let value = vec![b'v'; VALUE_BYTES];
                let deadline = Instant::now() + Duration::from_secs_f64(seconds);
                let mut i = c as u64 * 7919;
                while Instant::now() < deadline {
                    i = i.wrapping_add(104_729);
                    let sent = Instant::now();
                    match op {
                        Op::Write => engine.put(&key(i), &value, i).expect("put"),
                        Op::Read => {
                            engine.get(&key(i)).expect("get");
                        }
                    }
                    histogram
                        .record(sent.elapsed().as_micros() as u64)
                        .expect("record");
                }
                histogram
            })
        })
        .collect();
    let mut merged = Histogram::<u64>::new(3).expect("histogram");
    for h in histograms {
        merged.add(h.join().expect("thread")).expect("merge");
    }
    summarize(&merged, start.elapsed())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let seconds: f64 = flag("--seconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(3.0);
    let json = args.iter().any(|a| a == "--json");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let engine =
        Arc::new(Engine::open(dir.path().join("local"), StorageConfig::default()).expect("engine"));
    let single = start_cluster(1, &dir.path().join("single"));
    let triple = start_cluster(3, &dir.path().join("triple"));

    let mut rows = Vec::new();
    for op in [Op::Write, Op::Read] {
        for clients in CONCURRENCY {
            let local = run_local(&engine, op, clients, seconds);
            let one = run_cluster(&runtime, &single, op, clients, seconds);
            let three = run_cluster(&runtime, &triple, op, clients, seconds);
            rows.push((op, clients, local, one, three));
        }
    }
    if json {
        let items: Vec<String> = rows
            .iter()
            .map(|(op, clients, local, one, three)| {
                format!(
                    r#"{{"op":"{}","clients":{clients},"local_ops_per_s":{:.0},"node1_ops_per_s":{:.0},"node3_quorum_ops_per_s":{:.0},"node3_p50_us":{},"node3_p99_us":{},"node1_p50_us":{},"node1_p99_us":{},"node3_over_local":{:.4},"node3_over_node1":{:.4}}}"#,
                    if *op == Op::Write { "write" } else { "read" },
                    local.ops_per_s,
                    one.ops_per_s,
                    three.ops_per_s,
                    three.p50_us,
                    three.p99_us,
                    one.p50_us,
                    one.p99_us,
                    three.ops_per_s / local.ops_per_s,
                    three.ops_per_s / one.ops_per_s
                )
            })
            .collect();
        println!(
            r#"{{"seconds_per_cell":{seconds},"rows":[{}]}}"#,
            items.join(",")
        );
    } else {
        println!(
            "cluster_bench: {seconds} s per cell, 100 B values, QUORUM, nodes in this process over loopback"
        );
        println!(
            "{:<6} {:>7} {:>12} {:>12} {:>12} {:>10} {:>10} {:>11} {:>11}",
            "op",
            "clients",
            "local ops/s",
            "1-node ops/s",
            "3-node ops/s",
            "3n p50 µs",
            "3n p99 µs",
            "3n/local",
            "3n/1n"
        );
        for (op, clients, local, one, three) in &rows {
            println!(
                "{:<6} {:>7} {:>12.0} {:>12.0} {:>12.0} {:>10} {:>10} {:>11.3} {:>11.3}",
                if *op == Op::Write { "write" } else { "read" },
                clients,
                local.ops_per_s,
                one.ops_per_s,
                three.ops_per_s,
                three.p50_us,
                three.p99_us,
                three.ops_per_s / local.ops_per_s,
                three.ops_per_s / one.ops_per_s
            );
        }
    }
    for node in triple.into_iter().chain(single) {
        node.shutdown().expect("shutdown");
    }
}
