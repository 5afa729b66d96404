//! Child process of the storage crash test: writes the crash workload from
//! several threads in the given sync mode and prints `ack <thread> <op>
//! <flushes> <compactions>` after each write returns, until it is killed (or
//! reaches its bound).

use std::io::Write;
use std::sync::Arc;

use cassio_core::storage::Engine;
use cassio_tests::crash_workload::{THREADS, config, op, parse_sync_mode};

const OPS_MAX: u64 = 200_000;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(round), Some(mode)) = (
        args.get(1),
        args.get(2).and_then(|r| r.parse::<u64>().ok()),
        args.get(3).and_then(|m| parse_sync_mode(m)),
    ) else {
        eprintln!("usage: storage-crash-writer DIR ROUND batch|periodic");
        return std::process::ExitCode::from(2);
    };
    let engine = match Engine::open(dir, config(mode)) {
        Ok(engine) => Arc::new(engine),
        Err(e) => {
            eprintln!("open failed: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                for i in 0..OPS_MAX {
                    let op = op(round, t, i);
                    let result = match &op.value {
                        Some(v) => engine.put(&op.key, v, op.timestamp),
                        None => engine.delete(&op.key, op.timestamp),
                    };
                    if let Err(e) = result {
                        eprintln!("write failed: {e}");
                        std::process::exit(1);
                    }
                    let stats = engine.stats();
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "ack {t} {i} {} {}", stats.flushes, stats.compactions);
                    let _ = out.flush();
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    std::process::ExitCode::SUCCESS
}
