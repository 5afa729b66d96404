//! A replica that is slow or unreachable from the coordinator while gossip
//! still calls it UP, in turmoil's deterministic simulation: three nodes,
//! RF 3, and the link between the coordinator n0 and the replica n1 held
//! (its messages wait, as a stalled node's would).
//!
//! - A QUORUM read asks the coordinator's own copy and one remote replica:
//!   reads that picked the held one are answered by the other after the
//!   speculative retry delay, long before the read timeout, and the rest
//!   without waiting. With speculative retry off (0), every live replica is
//!   asked at once and no read waits.
//! - Held for good (n2 still relays n1's heartbeats, so n0 never marks it
//!   DOWN): once a request to n1 timed out, writes and reads through n0 do
//!   not wait for new connections to n1, which are tried in the background.
//! - n0 restarted while the link is held: its first connects to n1 hang,
//!   and writes through n0 do not wait for them either.
//! - Held right after n0 connected to n1: the first timeout on that fresh
//!   connection stalls n1 too, and reads stop waiting for it.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use cassio_core::NodeConfig;
use cassio_core::coordinator::ConsistencyLevel;
use cassio_core::proto::{Request, Response};
use cassio_tests::sim_node::{self, PORT, name};

const KEYS: usize = 24;
const SPECULATIVE_RETRY_MS: u64 = 50;
const READ_TIMEOUT_MS: u64 = 2000;
const WRITE_TIMEOUT_MS: u64 = 1000;

fn now_ms() -> u64 {
    turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64
}

/// What a client gets for `request` sent to node `n0`.
async fn call(request: Request) -> Result<Response, String> {
    let me = turmoil::lookup("client");
    let addr = SocketAddr::new(turmoil::lookup("n0"), PORT);
    let (connect, answer) = (Duration::from_secs(1), Duration::from_secs(10));
    sim_node::request(me, addr, request, connect, answer)
        .await
        .map_err(|e| e.to_string())
}

/// A simulation of three nodes n0, n1, n2 (RF 3, formed, nothing
/// written) with `speculative_retry_ms`, and a host named "client".
fn cluster(dir: &std::path::Path, speculative_retry_ms: u64) -> turmoil::Sim<'static> {
    let mut sim = turmoil::Builder::new()
        .rng_seed(7)
        .epoch(UNIX_EPOCH + Duration::from_secs(1_800_000_000))
        .simulation_duration(Duration::from_secs(90))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(2))
        .build();
    let seed_addr = SocketAddr::new(sim.lookup(name(0)), PORT);
    for i in 0..3 {
        let data_dir = dir.join(name(i));
        sim.host(name(i), move || {
            let data_dir = data_dir.clone();
            async move {
                let config = NodeConfig {
                    bootstrap: false,
                    gossip_interval_ms: 200,
                    read_timeout_ms: READ_TIMEOUT_MS,
                    write_timeout_ms: WRITE_TIMEOUT_MS,
                    read_speculative_retry_ms: speculative_retry_ms,
                    ..sim_node::config(i, vec![seed_addr], data_dir)
                };
                sim_node::run(config, i as u64).await
            }
        });
    }
    sim
}

/// A write of `v{key}` to `key` at `level`.
fn put(key: usize, level: ConsistencyLevel) -> Request {
    Request::Put {
        key: format!("k{key}").into_bytes(),
        value: format!("v{key}").into_bytes(),
        level: Some(level),
        timestamp: None,
        ttl_ms: None,
    }
}

/// Writes `v{key}` to `key` at `level` through n0.
async fn write(key: usize, level: ConsistencyLevel) -> Result<(), String> {
    match call(put(key, level)).await? {
        Response::Written { .. } => Ok(()),
        other => Err(format!("write of k{key} at {level:?}: {other:?}")),
    }
}

/// Reads `key` at QUORUM through n0; an error unless it holds `v{key}`.
async fn read_back(key: usize) -> Result<(), String> {
    let get = Request::Get {
        key: format!("k{key}").into_bytes(),
        level: Some(ConsistencyLevel::Quorum),
    };
    match call(get).await? {
        Response::Value { value: Some(v), .. } if v == format!("v{key}").as_bytes() => Ok(()),
        other => Err(format!("QUORUM read of k{key}: {other:?}")),
    }
}

/// Runs `sim` to its end, holding the link n0 - n1 from when `hold` turns
/// true.
fn run_holding_n0_n1(mut sim: turmoil::Sim<'_>, hold: &std::cell::Cell<bool>) {
    let mut held = false;
    while !sim.step().unwrap() {
        if !held && hold.get() {
            sim.hold("n0", "n1");
            held = true;
        }
    }
}

/// How long each of the QUORUM reads took (sim ms), in key order, with the
/// link n0 - n1 held from before the first read.
fn read_times_with_a_held_replica(speculative_retry_ms: u64) -> Vec<u64> {
    let dir = tempfile::tempdir().unwrap();
    let mut sim = cluster(dir.path(), speculative_retry_ms);
    let times = Rc::new(RefCell::new(Vec::new()));
    let written = Rc::new(std::cell::Cell::new(false));
    {
        let (times, written) = (times.clone(), written.clone());
        sim.client("client", async move {
            // Gossip forms the ring.
            tokio::time::sleep(Duration::from_secs(5)).await;
            for key in 0..KEYS {
                write(key, ConsistencyLevel::All).await?;
            }
            written.set(true);
            // The test holds n0 - n1 now.
            tokio::time::sleep(Duration::from_millis(100)).await;
            for key in 0..KEYS {
                let started = now_ms();
                read_back(key).await?;
                times.borrow_mut().push(now_ms() - started);
            }
            Ok(())
        });
    }
    run_holding_n0_n1(sim, &written);
    let times = times.borrow().clone();
    assert_eq!(times.len(), KEYS, "every read answered");
    times
}

#[test]
fn a_quorum_read_asks_one_remote_replica_and_another_when_it_is_slow() {
    let times = read_times_with_a_held_replica(SPECULATIVE_RETRY_MS);
    let waited: Vec<u64> = times
        .iter()
        .copied()
        .filter(|&ms| ms >= SPECULATIVE_RETRY_MS)
        .collect();
    // Reads spread over both remote replicas: some picked the held one.
    assert!(
        !waited.is_empty() && waited.len() < KEYS,
        "some reads, not all, waited for the retry: {times:?}"
    );
    // Those were answered by the other replica once the retry fired,
    // long before the read timeout.
    assert!(
        waited.iter().all(|&ms| ms < SPECULATIVE_RETRY_MS + 100),
        "a read waited past its retry: {times:?}"
    );
}

#[test]
fn with_speculative_retry_off_a_read_asks_every_replica_at_once() {
    let times = read_times_with_a_held_replica(0);
    assert!(
        times.iter().all(|&ms| ms < SPECULATIVE_RETRY_MS),
        "a read waited although every replica was asked: {times:?}"
    );
}

#[test]
fn requests_do_not_wait_on_connections_to_a_replica_that_stopped_answering() {
    let dir = tempfile::tempdir().unwrap();
    let mut sim = cluster(dir.path(), SPECULATIVE_RETRY_MS);
    let times = Rc::new(RefCell::new(Vec::new()));
    let hold = Rc::new(std::cell::Cell::new(false));
    {
        let (times, hold) = (times.clone(), hold.clone());
        sim.client("client", async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            hold.set(true);
            tokio::time::sleep(Duration::from_millis(100)).await;
            // Long enough for writes to n1 to time out (its connection
            // is then dropped) and for gossip to judge n1 many times over.
            let end_ms = now_ms() + 20_000;
            let mut key = 0;
            while now_ms() < end_ms {
                let started = now_ms();
                write(key, ConsistencyLevel::Quorum).await?;
                read_back(key).await?;
                times.borrow_mut().push((now_ms() - started, started));
                key += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(())
        });
    }
    run_holding_n0_n1(sim, &hold);
    let times = times.borrow().clone();
    assert!(times.len() > 100, "{} writes and reads", times.len());
    // A write waits for no reply from n1 (QUORUM is n0 and n2), a read at
    // most for the speculative retry; neither for a connection to n1.
    let slow: Vec<_> = times.iter().filter(|(ms, _)| *ms >= 500).collect();
    assert!(slow.is_empty(), "slow (ms, at sim ms): {slow:?}");
}

#[test]
fn a_restarted_coordinator_does_not_wait_for_its_first_connect_to_a_held_replica() {
    let dir = tempfile::tempdir().unwrap();
    let mut sim = cluster(dir.path(), SPECULATIVE_RETRY_MS);
    let times = Rc::new(RefCell::new(Vec::new()));
    let restart = Rc::new(std::cell::Cell::new(false));
    {
        let (times, restart) = (times.clone(), restart.clone());
        sim.client("client", async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            for key in 0..KEYS {
                write(key, ConsistencyLevel::All).await?;
            }
            // The test holds n0 - n1 and restarts n0 now.
            restart.set(true);
            tokio::time::sleep(Duration::from_millis(100)).await;
            let end_ms = now_ms() + 10_000;
            let mut key = 0;
            while now_ms() < end_ms {
                let started = now_ms();
                match call(put(key, ConsistencyLevel::Quorum)).await {
                    Ok(Response::Written { .. }) => {
                        times.borrow_mut().push((now_ms() - started, started))
                    }
                    // Until n0 is back, it does not answer at all.
                    Err(_) if times.borrow().is_empty() => {}
                    other => return Err(format!("QUORUM write of k{key}: {other:?}").into()),
                }
                key += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(())
        });
    }
    let mut restarted = false;
    while !sim.step().unwrap() {
        if !restarted && restart.get() {
            sim.hold("n0", "n1");
            sim.bounce("n0");
            restarted = true;
        }
    }
    let times = times.borrow().clone();
    assert!(times.len() > 100, "{} writes", times.len());
    // QUORUM is n0 and n2: no write waits for a connection to n1.
    let slow: Vec<_> = times.iter().filter(|(ms, _)| *ms >= 500).collect();
    assert!(slow.is_empty(), "slow (ms, at sim ms): {slow:?}");
}

#[test]
fn a_fresh_connection_that_times_out_stalls_its_peer_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut sim = cluster(dir.path(), SPECULATIVE_RETRY_MS);
    let reads = Rc::new(RefCell::new(Vec::new()));
    let (restart, hold) = (
        Rc::new(std::cell::Cell::new(false)),
        Rc::new(std::cell::Cell::new(false)),
    );
    {
        let (reads, restart, hold) = (reads.clone(), restart.clone(), hold.clone());
        sim.client("client", async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            // n0 restarts, and connects to n1 anew for its first ALL write.
            restart.set(true);
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut key = 0;
            while write(key, ConsistencyLevel::All).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // The test holds n0 - n1 now.
            hold.set(true);
            let held_ms = now_ms();
            while now_ms() < held_ms + 5_000 {
                key += 1;
                write(key, ConsistencyLevel::Quorum).await?;
                let started = now_ms();
                read_back(key).await?;
                reads
                    .borrow_mut()
                    .push((now_ms() - started, started - held_ms));
            }
            Ok(())
        });
    }
    let (mut restarted, mut held) = (false, false);
    while !sim.step().unwrap() {
        if !restarted && restart.get() {
            sim.bounce("n0");
            restarted = true;
        }
        if !held && hold.get() {
            sim.hold("n0", "n1");
            held = true;
        }
    }
    let reads = reads.borrow().clone();
    assert!(reads.len() > 50, "{} reads", reads.len());
    // The first write to time out on the fresh connection (after
    // WRITE_TIMEOUT_MS) stalls n1; after that only the reads that ride on
    // a retried connect wait for the retry: one a second after the stall,
    // whose connect then hangs its 2 s timeout, and one a second after
    // that, about when the reads end.
    let waited_later: Vec<_> = (reads.iter())
        .filter(|&&(ms, at)| ms >= SPECULATIVE_RETRY_MS && at > WRITE_TIMEOUT_MS + 200)
        .collect();
    assert!(
        waited_later.len() <= 2,
        "reads that waited (ms, at ms after the hold): {waited_later:?}"
    );
}
