//! The Redis-protocol endpoint, checked with clients written elsewhere: the
//! `redis` crate (every command, pipelines, binary-safe values, RESP2 and
//! RESP3), a raw socket (inline commands, protocol switches, malformed
//! input, exact bytes), and `redis-cli` itself; and
//! pipelines from many connections at once on a 3-node cluster, where a
//! node runs a pipeline's independent commands concurrently.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use cassio_core::{Node, NodeConfig, NodeHandle};
use cassio_tests::harness::{node_config, start_cluster, wait_for, wait_until_all_see};

/// One node on free loopback ports, its data in `dir`.
fn solo_config(dir: &std::path::Path) -> NodeConfig {
    NodeConfig {
        name: "solo".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        resp: Some("127.0.0.1:0".parse().unwrap()),
        data_dir: Some(dir.to_path_buf()),
        vnodes: 8,
        ..NodeConfig::default()
    }
}

/// One node; `client_threads` 0 serves RESP on the node's own thread.
fn start_with(dir: &std::path::Path, client_threads: usize) -> NodeHandle {
    Node::start(NodeConfig {
        client_threads,
        ..solo_config(dir)
    })
    .unwrap()
}

fn start(dir: &std::path::Path) -> NodeHandle {
    start_with(dir, NodeConfig::default().client_threads.max(2))
}

fn connection(node: &NodeHandle) -> redis::Connection {
    let addr = node.resp_addr().expect("RESP enabled");
    redis::Client::open(format!("redis://{addr}/"))
        .unwrap()
        .get_connection()
        .unwrap()
}

#[test]
fn redis_crate_commands() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let mut con = connection(&node);
    let cmd = redis::cmd;

    assert_eq!(cmd("PING").query::<String>(&mut con).unwrap(), "PONG");
    assert_eq!(
        cmd("ECHO").arg("hi").query::<String>(&mut con).unwrap(),
        "hi"
    );
    assert_eq!(
        cmd("SELECT").arg(0).query::<String>(&mut con).unwrap(),
        "OK"
    );
    assert!(cmd("SELECT").arg(1).query::<String>(&mut con).is_err());
    // CONFIG GET, as tools ask it on connecting; CONFIG SET is refused.
    let config: std::collections::HashMap<String, String> = cmd("CONFIG")
        .arg("GET")
        .arg("max*")
        .arg("appendonly")
        .query(&mut con)
        .unwrap();
    let expected = [
        ("maxclients", "10000"),
        ("maxmemory", "0"),
        ("maxmemory-policy", "noeviction"),
        ("appendonly", "yes"),
    ];
    assert_eq!(
        config,
        expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    );
    let refused = cmd("CONFIG")
        .arg("SET")
        .arg("maxclients")
        .arg("1")
        .query::<String>(&mut con)
        .unwrap_err();
    assert!(refused.to_string().contains("not supported"), "{refused}");
    assert_eq!(
        cmd("SET")
            .arg("k")
            .arg("v")
            .query::<String>(&mut con)
            .unwrap(),
        "OK"
    );
    assert_eq!(
        cmd("GET")
            .arg("k")
            .query::<Option<String>>(&mut con)
            .unwrap(),
        Some("v".into())
    );
    assert_eq!(
        cmd("GET")
            .arg("missing")
            .query::<Option<String>>(&mut con)
            .unwrap(),
        None
    );

    // Binary-safe: every byte value, CRLF included.
    let binary: Vec<u8> = (0..=255u8).chain(*b"\r\n\r\n").collect();
    let _: () = cmd("SET")
        .arg(b"bin\x00key")
        .arg(&binary)
        .query(&mut con)
        .unwrap();
    assert_eq!(
        cmd("GET")
            .arg(b"bin\x00key")
            .query::<Vec<u8>>(&mut con)
            .unwrap(),
        binary
    );

    // NX / XX.
    assert_eq!(
        cmd("SET")
            .arg("k")
            .arg("other")
            .arg("NX")
            .query::<Option<String>>(&mut con)
            .unwrap(),
        None
    );
    assert_eq!(
        cmd("SET")
            .arg("fresh")
            .arg("1")
            .arg("NX")
            .query::<Option<String>>(&mut con)
            .unwrap(),
        Some("OK".into())
    );
    assert_eq!(
        cmd("SET")
            .arg("nothere")
            .arg("1")
            .arg("XX")
            .query::<Option<String>>(&mut con)
            .unwrap(),
        None
    );
    assert_eq!(
        cmd("SET")
            .arg("k")
            .arg("v2")
            .arg("XX")
            .query::<Option<String>>(&mut con)
            .unwrap(),
        Some("OK".into())
    );
    assert_eq!(cmd("GET").arg("k").query::<String>(&mut con).unwrap(), "v2");

    // Expiry.
    let _: () = cmd("SET")
        .arg("short")
        .arg("x")
        .arg("PX")
        .arg(150)
        .query(&mut con)
        .unwrap();
    assert_eq!(
        cmd("GET")
            .arg("short")
            .query::<Option<String>>(&mut con)
            .unwrap(),
        Some("x".into())
    );
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        cmd("GET")
            .arg("short")
            .query::<Option<String>>(&mut con)
            .unwrap(),
        None
    );
    let _: () = cmd("SET")
        .arg("long")
        .arg("x")
        .arg("EX")
        .arg(100)
        .query(&mut con)
        .unwrap();
    assert!(
        cmd("SET")
            .arg("k")
            .arg("v")
            .arg("EX")
            .arg(0)
            .query::<String>(&mut con)
            .is_err()
    );
    // Absolute expiry: an hour ahead the key is there; a time already past
    // is taken, and the key reads as gone at once.
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let _: () = cmd("SET")
        .arg("at")
        .arg("x")
        .arg("EXAT")
        .arg(now_s + 3600)
        .query(&mut con)
        .unwrap();
    let _: () = cmd("SET")
        .arg("past")
        .arg("x")
        .arg("PXAT")
        .arg(1)
        .query(&mut con)
        .unwrap();
    let values: Vec<Option<String>> = cmd("MGET").arg("at").arg("past").query(&mut con).unwrap();
    assert_eq!(values, vec![Some("x".into()), None]);
    // GET answers with the value the key had; with NX on a key that exists
    // it answers that value and writes nothing.
    let set_get = |con: &mut redis::Connection, key: &str, value: &str, options: &[&str]| {
        let mut command = cmd("SET");
        command.arg(key).arg(value);
        for option in options {
            command.arg(*option);
        }
        command.arg("GET").query::<Option<String>>(con).unwrap()
    };
    assert_eq!(set_get(&mut con, "swap", "1", &[]), None);
    assert_eq!(set_get(&mut con, "swap", "2", &[]), Some("1".into()));
    assert_eq!(set_get(&mut con, "swap", "3", &["NX"]), Some("2".into()));
    assert_eq!(
        cmd("GET").arg("swap").query::<String>(&mut con).unwrap(),
        "2"
    );
    let _: () = cmd("DEL").arg("swap").query(&mut con).unwrap();

    // Multi-key commands.
    let _: () = cmd("MSET")
        .arg("a")
        .arg("1")
        .arg("b")
        .arg("2")
        .query(&mut con)
        .unwrap();
    let values: Vec<Option<String>> = cmd("MGET")
        .arg("a")
        .arg("nope")
        .arg("b")
        .query(&mut con)
        .unwrap();
    assert_eq!(values, vec![Some("1".into()), None, Some("2".into())]);
    assert_eq!(
        cmd("EXISTS")
            .arg("a")
            .arg("b")
            .arg("nope")
            .query::<i64>(&mut con)
            .unwrap(),
        2
    );
    assert_eq!(
        cmd("DEL")
            .arg("a")
            .arg("nope")
            .query::<i64>(&mut con)
            .unwrap(),
        1
    );
    assert_eq!(cmd("EXISTS").arg("a").query::<i64>(&mut con).unwrap(), 0);
    // A key named twice is deleted and counted once, as in Redis.
    assert_eq!(
        cmd("DEL")
            .arg("b")
            .arg("b")
            .arg("a")
            .query::<i64>(&mut con)
            .unwrap(),
        1
    );
    assert_eq!(cmd("EXISTS").arg("b").query::<i64>(&mut con).unwrap(), 0);
    // DBSIZE is an estimate from storage statistics: the 5 live keys (k, bin,
    // fresh, long, at), plus deleted or expired ones until compaction drops
    // them, never more than the 11 keys ever written.
    let keys: i64 = cmd("DBSIZE").query(&mut con).unwrap();
    assert!((5..=11).contains(&keys), "DBSIZE {keys}");

    // Connection commands.
    let _: () = cmd("CLIENT")
        .arg("SETNAME")
        .arg("tester")
        .query(&mut con)
        .unwrap();
    assert_eq!(
        cmd("CLIENT")
            .arg("GETNAME")
            .query::<String>(&mut con)
            .unwrap(),
        "tester"
    );
    let hello: Vec<redis::Value> = cmd("HELLO").arg(2).query(&mut con).unwrap();
    assert!(hello.len() >= 6);
    let err = cmd("HELLO")
        .arg(4)
        .query::<redis::Value>(&mut con)
        .unwrap_err();
    assert!(
        err.to_string().contains("unsupported protocol version"),
        "{err}"
    );
    // COMMAND, as client libraries use it: one entry per name asked for
    // (nil if unknown), and which arguments are keys.
    let entries: Vec<redis::Value> = cmd("COMMAND")
        .arg("INFO")
        .arg("get")
        .arg("nope")
        .query(&mut con)
        .unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1], redis::Value::Nil);
    let keys: Vec<String> = cmd("COMMAND")
        .arg("GETKEYS")
        .arg("MSET")
        .arg("a")
        .arg("1")
        .arg("b")
        .arg("2")
        .query(&mut con)
        .unwrap();
    assert_eq!(keys, ["a", "b"]);
    let info: String = cmd("INFO").query(&mut con).unwrap();
    assert!(
        info.contains("cassio_version") && info.contains("db0:keys="),
        "{info}"
    );
    // The Stats section counts this node's coordinated requests: the SETs
    // and the MSET above are among them.
    let writes: u64 = info
        .lines()
        .find_map(|line| line.strip_prefix("writes:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("INFO has no writes counter: {info}"));
    assert!(writes >= 2, "writes:{writes}");
    assert!(
        info.contains("\r\n# Stats\r\n") && info.contains("hints_stored:0"),
        "{info}"
    );
    let keyspace: String = cmd("INFO").arg("keyspace").query(&mut con).unwrap();
    assert!(
        keyspace.starts_with("# Keyspace\r\ndb0:keys=") && !keyspace.contains("# Stats"),
        "{keyspace}"
    );
    assert_eq!(
        cmd("CASSIO.CONSISTENCY")
            .arg("all")
            .query::<String>(&mut con)
            .unwrap(),
        "OK"
    );
    assert_eq!(
        cmd("CASSIO.CONSISTENCY").query::<String>(&mut con).unwrap(),
        "ALL"
    );
    assert_eq!(
        cmd("GET").arg("k").query::<String>(&mut con).unwrap(),
        "v2",
        "reads work at ALL"
    );
    assert!(
        cmd("CASSIO.CONSISTENCY")
            .arg("most")
            .query::<String>(&mut con)
            .is_err()
    );

    // Errors: unknown command, wrong arity.
    let err = cmd("HSET")
        .arg("h")
        .arg("f")
        .arg("v")
        .query::<String>(&mut con)
        .unwrap_err();
    assert!(err.to_string().contains("unknown command"), "{err}");
    let err = cmd("GET").query::<String>(&mut con).unwrap_err();
    assert!(
        err.to_string().contains("wrong number of arguments"),
        "{err}"
    );

    // A pipeline of 200 commands, answered in order.
    let mut pipe = redis::pipe();
    for i in 0..100 {
        pipe.cmd("SET").arg(format!("p{i}")).arg(i).ignore();
    }
    for i in 0..100 {
        pipe.cmd("GET").arg(format!("p{i}"));
    }
    let got: Vec<i64> = pipe.query(&mut con).unwrap();
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    node.shutdown().unwrap();
}

/// INFO's keyspace line counts the keys with a TTL (`expires`), as
/// redis-cli and monitoring tools read it; a plain SET over a key with a
/// TTL takes it out of the count.
#[test]
fn info_keyspace_counts_keys_with_a_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let mut con = connection(&node);
    let cmd = redis::cmd;
    let keyspace =
        |con: &mut redis::Connection| -> String { cmd("INFO").arg("keyspace").query(con).unwrap() };
    for args in [
        &["a", "1"][..],
        &["b", "2", "EX", "100"],
        &["c", "3", "PX", "100000"],
    ] {
        let _: () = cmd("SET").arg(args).query(&mut con).unwrap();
    }
    assert_eq!(
        keyspace(&mut con),
        "# Keyspace\r\ndb0:keys=3,expires=2,avg_ttl=0\r\n"
    );
    let _: () = cmd("SET").arg("b").arg("2").query(&mut con).unwrap();
    assert_eq!(
        keyspace(&mut con),
        "# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=0\r\n"
    );
    node.shutdown().unwrap();
}

/// Pipelines from 12 connections spread over 3 nodes (RF 3, QUORUM), all
/// at once: every reply is the one a one-by-one execution gives. Within a
/// pipeline, reads see the writes before them, and the last of several
/// writes to one key wins, although independent commands run concurrently.
#[test]
fn concurrent_pipelines_on_three_nodes_answer_as_if_run_in_order() {
    const CONNECTIONS: usize = 12;
    const ROUNDS: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(3, dir.path(), |config| {
        config.resp = Some("127.0.0.1:0".parse().unwrap());
    });
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let mut con = connection(&nodes[c % nodes.len()]);
            std::thread::spawn(move || {
                for round in 0..ROUNDS {
                    let mut pipe = redis::pipe();
                    for k in 0..8 {
                        pipe.cmd("SET").arg(format!("c{c}k{k}")).arg(round);
                    }
                    // Four writes to one key in one pipeline: the last wins.
                    for v in 0..4 {
                        pipe.cmd("SET").arg(format!("c{c}hot")).arg(round * 4 + v);
                    }
                    for k in 0..8 {
                        pipe.cmd("GET").arg(format!("c{c}k{k}"));
                    }
                    pipe.cmd("GET").arg(format!("c{c}hot"));
                    pipe.cmd("MSET")
                        .arg(format!("c{c}m"))
                        .arg("first")
                        .arg(format!("c{c}m"))
                        .arg("second");
                    pipe.cmd("GET").arg(format!("c{c}m"));
                    pipe.cmd("DEL").arg(format!("c{c}m"));
                    pipe.cmd("EXISTS")
                        .arg(format!("c{c}m"))
                        .arg(format!("c{c}k0"));
                    let replies: Vec<redis::Value> = pipe
                        .query(&mut con)
                        .unwrap_or_else(|e| panic!("connection {c} round {round}: {e}"));
                    let text = |v: &redis::Value| redis::from_redis_value::<String>(v.clone());
                    for (i, reply) in replies[..12].iter().enumerate() {
                        assert_eq!(text(reply).unwrap(), "OK", "SET {i}, round {round}");
                    }
                    for reply in &replies[12..20] {
                        assert_eq!(text(reply).unwrap(), round.to_string());
                    }
                    assert_eq!(text(&replies[20]).unwrap(), (round * 4 + 3).to_string());
                    assert_eq!(text(&replies[21]).unwrap(), "OK");
                    assert_eq!(
                        text(&replies[22]).unwrap(),
                        "second",
                        "MSET: the last pair wins"
                    );
                    assert_eq!(
                        redis::from_redis_value::<i64>(replies[23].clone()).unwrap(),
                        1
                    );
                    assert_eq!(
                        redis::from_redis_value::<i64>(replies[24].clone()).unwrap(),
                        1
                    );
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("a connection's checks failed");
    }
    // Every node reads the final values at ALL.
    for node in &nodes {
        let mut con = connection(node);
        let _: () = redis::cmd("CASSIO.CONSISTENCY")
            .arg("ALL")
            .query(&mut con)
            .unwrap();
        for c in 0..CONNECTIONS {
            let hot: String = redis::cmd("GET")
                .arg(format!("c{c}hot"))
                .query(&mut con)
                .unwrap();
            assert_eq!(hot, (ROUNDS * 4 - 1).to_string());
        }
    }
    for node in nodes {
        node.shutdown().unwrap();
    }
}

/// Restarts the stopped node `name` (seeded by `nodes[0]`), waits until every
/// node sees it and `nodes[0]` replayed every hint it stored, and returns it
/// with a RESP connection to it at ONE.
fn restart_after_hints(
    nodes: &[NodeHandle],
    name: &str,
    dir: &std::path::Path,
    tweak: impl Fn(&mut NodeConfig),
) -> (NodeHandle, redis::Connection) {
    let mut config = node_config(name, dir, vec![nodes[0].native_addr()]);
    tweak(&mut config);
    let restarted = Node::start(config).unwrap();
    let mut everyone: Vec<&NodeHandle> = nodes.iter().collect();
    everyone.push(&restarted);
    wait_until_all_see(&everyone, &restarted, Duration::from_secs(10));
    wait_for(Duration::from_secs(20), "n0 to replay every hint", || {
        let metrics = nodes[0].cluster_status().metrics;
        metrics.hints_stored > 0 && metrics.hints_replayed >= metrics.hints_stored
    });
    let mut one = connection(&restarted);
    let _: () = redis::cmd("CASSIO.CONSISTENCY")
        .arg("ONE")
        .query(&mut one)
        .unwrap();
    (restarted, one)
}

/// Pipelined GETs and SETs reach the replicas in one batch per replica. On
/// 4 nodes with RF 3 each replica holds a different subset of a pipeline's
/// keys; with one node stopped, QUORUM batches still succeed and the stopped
/// node's share becomes hints, replayed (in batches too) once it is back:
/// then it answers every key at ONE from its own storage.
#[test]
fn pipelined_batches_survive_a_stopped_replica_and_hints_catch_it_up() {
    const KEYS: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let with_resp = |config: &mut NodeConfig| {
        config.resp = Some("127.0.0.1:0".parse().unwrap());
    };
    let mut nodes = start_cluster(4, dir.path(), with_resp);
    let mut con = connection(&nodes[0]);
    let pipeline_round = |con: &mut redis::Connection, value: &str| {
        let mut pipe = redis::pipe();
        for k in 0..KEYS {
            pipe.cmd("SET").arg(format!("key{k}")).arg(value).ignore();
        }
        for k in 0..KEYS {
            pipe.cmd("GET").arg(format!("key{k}"));
        }
        let got: Vec<String> = pipe.query(con).expect("a QUORUM pipeline");
        assert!(got.iter().all(|v| v == value), "every GET sees its SET");
    };
    pipeline_round(&mut con, "old");

    nodes.remove(3).shutdown().unwrap();
    pipeline_round(&mut con, "new");

    // At ONE, n3 answers the keys it holds from its own storage: the first
    // read already sees what the hints brought.
    let (restarted, mut one) = restart_after_hints(&nodes, "n3", dir.path(), with_resp);
    let mut pipe = redis::pipe();
    for k in 0..KEYS {
        pipe.cmd("GET").arg(format!("key{k}"));
    }
    let got: Vec<String> = pipe.query(&mut one).unwrap();
    let stale = got.iter().filter(|v| *v != "new").count();
    assert_eq!(stale, 0, "keys n3 still answers with the old value");
    restarted.shutdown().unwrap();
    for node in nodes {
        node.shutdown().unwrap();
    }
}

/// Batches larger than a frame are split: an MGET of values that together
/// exceed `frame_bytes_max` several times over succeeds at ALL (replicas
/// answer what fits and are asked again for the rest), and hints that add up
/// to more than a frame are replayed in several messages.
#[test]
fn batches_larger_than_a_frame_are_split() {
    const VALUES: usize = 12;
    const VALUE_BYTES: usize = 60 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let small_frames = |config: &mut NodeConfig| {
        config.resp = Some("127.0.0.1:0".parse().unwrap());
        config.storage.value_bytes_max = 64 * 1024;
        config.frame_bytes_max = 160 * 1024;
    };
    let mut nodes = start_cluster(3, dir.path(), small_frames);
    let mut con = connection(&nodes[0]);
    let _: () = redis::cmd("CASSIO.CONSISTENCY")
        .arg("ALL")
        .query(&mut con)
        .unwrap();
    let value = |round: u8, i: usize| vec![round.wrapping_add(i as u8); VALUE_BYTES];
    let write_all = |con: &mut redis::Connection, round: u8| {
        let mut pipe = redis::pipe();
        for i in 0..VALUES {
            pipe.cmd("SET")
                .arg(format!("big{i}"))
                .arg(value(round, i))
                .ignore();
        }
        pipe.query::<()>(con)
            .expect("pipelined SETs of 720 KiB in all");
    };
    let keys: Vec<String> = (0..VALUES).map(|i| format!("big{i}")).collect();
    write_all(&mut con, 1);
    let got: Vec<Vec<u8>> = redis::cmd("MGET").arg(&keys).query(&mut con).unwrap();
    assert_eq!(got, (0..VALUES).map(|i| value(1, i)).collect::<Vec<_>>());
    nodes.remove(2).shutdown().unwrap();
    // A level set in a pipeline applies to the commands after it only.
    let mut pipe = redis::pipe();
    pipe.cmd("CASSIO.CONSISTENCY").arg("ALL").ignore();
    pipe.cmd("SET").arg("levels").arg("x");
    pipe.cmd("CASSIO.CONSISTENCY").arg("ONE").ignore();
    let err = pipe.query::<Vec<String>>(&mut con).unwrap_err();
    assert!(err.to_string().contains("level ALL not reached"), "{err}");
    let _: () = redis::cmd("CASSIO.CONSISTENCY")
        .arg("QUORUM")
        .query(&mut con)
        .unwrap();
    write_all(&mut con, 2);
    let (restarted, mut one) = restart_after_hints(&nodes, "n2", dir.path(), small_frames);
    let got: Vec<Vec<u8>> = redis::cmd("MGET").arg(&keys).query(&mut one).unwrap();
    assert_eq!(got, (0..VALUES).map(|i| value(2, i)).collect::<Vec<_>>());
    restarted.shutdown().unwrap();
    for node in nodes {
        node.shutdown().unwrap();
    }
}

fn exchange(stream: &mut TcpStream, send: &[u8], expect_len: usize) -> Vec<u8> {
    stream.write_all(send).unwrap();
    let mut got = vec![0u8; expect_len];
    stream.read_exact(&mut got).unwrap();
    got
}

/// A raw connection to a RESP port, reads bounded by 10 s.
fn raw_socket(addr: std::net::SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Sends `input` on a new connection and returns everything the node
/// answers until it closes the connection.
fn answer_until_closed(addr: std::net::SocketAddr, input: &[u8]) -> String {
    let mut stream = raw_socket(addr);
    stream.write_all(input).unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply
}

#[test]
fn connections_over_max_clients_are_refused_and_the_others_serve_on() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(NodeConfig {
        max_clients: 3,
        ..solo_config(dir.path())
    })
    .unwrap();
    let addr = node.resp_addr().unwrap();
    let mut open: Vec<TcpStream> = (0..3).map(|_| raw_socket(addr)).collect();
    for stream in &mut open {
        assert_eq!(exchange(stream, b"PING\r\n", 7), b"+PONG\r\n");
    }
    let refused = "-ERR max number of clients reached\r\n";
    // A fourth: told why, and closed; whether it says something first
    // (as redis-cli and the redis crate do) or not.
    assert_eq!(answer_until_closed(addr, b""), refused);
    assert_eq!(answer_until_closed(addr, b"SET k v\r\n"), refused);
    // A client still sending after the refusal was written is not reset:
    // what it sends is read and dropped before the connection closes, so
    // its writes go through and it reads the sentence.
    let mut late = raw_socket(addr);
    let value = vec![b'x'; 16 * 1024];
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(30));
        late.write_all(format!("SET k ${}\r\n", value.len()).as_bytes())
            .and_then(|()| late.write_all(&value))
            .expect("a refused client's writes are drained, not reset");
    }
    let mut reply = String::new();
    late.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, refused);
    // The redis crate sends CLIENT SETINFO on connecting and takes the
    // refusal as that command's (ignored) answer: it sees the connection
    // end. redis-cli prints the sentence (checked by hand).
    let client = redis::Client::open(format!("redis://{addr}/")).unwrap();
    let refused_too = client
        .get_connection()
        .and_then(|mut con| redis::cmd("PING").query::<String>(&mut con));
    assert!(refused_too.is_err(), "{refused_too:?}");

    // Those admitted serve on, and INFO counts them.
    for stream in &mut open {
        assert_eq!(exchange(stream, b"SET k v\r\n", 5), b"+OK\r\n");
    }
    open[0]
        .write_all(b"INFO clients\r\nINFO stats\r\nQUIT\r\n")
        .unwrap();
    let mut info = String::new();
    open.remove(0).read_to_string(&mut info).unwrap();
    assert!(
        info.contains("connected_clients:3\r\nmaxclients:3\r\n")
            && info.contains("rejected_connections:4\r\n"),
        "{info}"
    );
    // One closed (QUIT): its place is taken again.
    wait_for(Duration::from_secs(5), "a freed place", || {
        let mut stream = raw_socket(addr);
        stream.write_all(b"GET k\r\n").unwrap();
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).is_ok() && &reply == b"$1\r\nv\r\n"
    });
    node.shutdown().unwrap();
}

#[test]
fn inline_commands_and_malformed_input_over_a_raw_socket() {
    let dir = tempfile::tempdir().unwrap();
    // Served on the node's own thread (the other tests use client threads).
    let node = start_with(dir.path(), 0);
    let addr = node.resp_addr().unwrap();
    let mut nc = raw_socket(addr);
    assert_eq!(exchange(&mut nc, b"PING\r\n", 7), b"+PONG\r\n");
    assert_eq!(
        exchange(&mut nc, b"SET greeting hello\nGET greeting\n", 16),
        b"+OK\r\n$5\r\nhello\r\n"
    );

    let reply = answer_until_closed(addr, b"*2\r\n:1\r\n");
    assert!(reply.starts_with("-ERR Protocol error"), "{reply:?}");

    let reply = answer_until_closed(addr, b"*1\r\n$999999999999\r\n");
    assert!(reply.contains("invalid bulk length"), "{reply:?}");

    // A value over the size limit, sent in full: the client reads the error
    // (the node drains what it still sends before closing, instead of
    // resetting the connection under it).
    let oversize = raw_socket(addr);
    let mut writer = oversize.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let value = vec![b'v'; 17 * 1024 * 1024];
        let mut request =
            format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${}\r\n", value.len()).into_bytes();
        request.extend_from_slice(&value);
        request.extend_from_slice(b"\r\n");
        writer.write_all(&request).is_ok()
    });
    let mut reply = String::new();
    (&oversize).read_to_string(&mut reply).unwrap();
    assert!(
        reply.starts_with("-ERR Protocol error: invalid bulk length"),
        "{reply:?}"
    );
    assert!(sender.join().unwrap(), "the whole request was taken");

    // The first connection is unaffected.
    assert_eq!(
        exchange(&mut nc, b"GET greeting\r\n", 11),
        b"$5\r\nhello\r\n"
    );
    assert_eq!(exchange(&mut nc, b"QUIT\r\n", 5), b"+OK\r\n");
    node.shutdown().unwrap();
}

/// RESP3 (`HELLO 3`), the default of newer client libraries, with the
/// `redis` crate: nulls, and the commands it sends on connect.
#[test]
fn redis_crate_speaks_resp3() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let addr = node.resp_addr().unwrap();
    let mut con = redis::Client::open(format!("redis://{addr}/?protocol=resp3"))
        .unwrap()
        .get_connection()
        .unwrap();
    let cmd = redis::cmd;
    let _: () = cmd("SET").arg("k").arg("v").query(&mut con).unwrap();
    let got: Option<String> = cmd("GET").arg("k").query(&mut con).unwrap();
    assert_eq!(got.as_deref(), Some("v"));
    assert_eq!(
        cmd("GET")
            .arg("missing")
            .query::<redis::Value>(&mut con)
            .unwrap(),
        redis::Value::Nil
    );
    let values: Vec<Option<String>> = cmd("MGET").arg("k").arg("missing").query(&mut con).unwrap();
    assert_eq!(values, [Some("v".to_string()), None]);
    let hello = cmd("HELLO").arg(3).query::<redis::Value>(&mut con).unwrap();
    let redis::Value::Map(fields) = hello else {
        panic!("HELLO 3 answers a map, not {hello:?}");
    };
    assert!(
        fields.contains(&(
            redis::Value::BulkString(b"proto".to_vec()),
            redis::Value::Int(3)
        )),
        "{fields:?}"
    );
    node.shutdown().unwrap();
}

/// Exact bytes: RESP3 nulls and maps after `HELLO 3` and back to RESP2,
/// `CLIENT REPLY OFF | SKIP | ON` in a pipeline, quoted inline words, and
/// SET's expiry checks.
#[test]
fn protocol_switches_and_reply_control_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let addr = node.resp_addr().unwrap();
    let mut nc = raw_socket(addr);
    let version = env!("CARGO_PKG_VERSION");
    let hello = |proto: &str, header: &str, modules: &str| {
        format!(
            "{header}$6\r\nserver\r\n$6\r\ncassio\r\n$7\r\nversion\r\n${}\r\n{version}\r\n\
             $5\r\nproto\r\n:{proto}\r\n$2\r\nid\r\n:1\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n\
             $4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n{modules}",
            version.len()
        )
        .into_bytes()
    };
    let resp3_hello = hello("3", "%7\r\n", "*0\r\n");
    let mut send = b"HELLO 3 SETNAME conn1\r\n".to_vec();
    send.extend_from_slice(b"SET a 1\r\nMGET a nothing\r\nCLIENT GETNAME\r\n");
    let mut expected = resp3_hello;
    expected.extend_from_slice(b"+OK\r\n*2\r\n$1\r\n1\r\n_\r\n$5\r\nconn1\r\n");
    assert_eq!(
        String::from_utf8(exchange(&mut nc, &send, expected.len())).unwrap(),
        String::from_utf8(expected).unwrap()
    );
    let resp2_hello = hello("2", "*14\r\n", "*0\r\n");
    let mut expected = resp2_hello;
    expected.extend_from_slice(b"$-1\r\n");
    assert_eq!(
        exchange(&mut nc, b"HELLO 2\r\nGET nothing\r\n", expected.len()),
        expected
    );

    let send = b"CLIENT REPLY SKIP\r\nPING a\r\nPING b\r\nCLIENT REPLY OFF\r\nSET x 1\r\n\
                 GET x\r\nCLIENT REPLY ON\r\nGET x\r\n";
    let expected = b"$1\r\nb\r\n+OK\r\n$1\r\n1\r\n";
    assert_eq!(exchange(&mut nc, send, expected.len()), expected);
    // As in Redis: SKIP changes nothing while replies are off, and ON is
    // answered even right after SKIP.
    let send = b"CLIENT REPLY OFF\r\nCLIENT REPLY SKIP\r\nPING c\r\nPING d\r\n\
                 CLIENT REPLY ON\r\nPING e\r\nCLIENT REPLY SKIP\r\nCLIENT REPLY ON\r\nPING f\r\n";
    let expected = b"+OK\r\n$1\r\ne\r\n+OK\r\n$1\r\nf\r\n";
    assert_eq!(exchange(&mut nc, send, expected.len()), expected);
    // RESET turns replies on, its own included, unless it is skipped.
    let send = b"CLIENT REPLY OFF\r\nPING g\r\nRESET\r\nPING h\r\n\
                 CLIENT REPLY SKIP\r\nRESET\r\nPING i\r\n";
    let expected = b"+RESET\r\n$1\r\nh\r\n$1\r\ni\r\n";
    assert_eq!(exchange(&mut nc, send, expected.len()), expected);

    let send = b"SET \"a b\" 'c d'\r\nGET \"a\\x20b\"\r\nCLIENT SETNAME \"x y\"\r\n\
                 SET k v EX 18446744073709552\r\nSET k v EX 10 PX 10\r\nGET k\r\n";
    let expected = "+OK\r\n$3\r\nc d\r\n\
                    -ERR Client names cannot contain spaces, newlines or special characters.\r\n\
                    -ERR invalid expire time in 'set' command\r\n-ERR syntax error\r\n$-1\r\n";
    assert_eq!(
        String::from_utf8(exchange(&mut nc, send, expected.len())).unwrap(),
        expected
    );

    assert_eq!(
        answer_until_closed(addr, b"SET \"abc def\r\n"),
        "-ERR Protocol error: unbalanced quotes in request\r\n"
    );
    assert_eq!(exchange(&mut nc, b"PING\r\n", 7), b"+PONG\r\n");
    node.shutdown().unwrap();
}

/// MULTI/EXEC as client libraries use it (the `redis` crate's atomic
/// pipeline, which redis-py's default pipeline also sends), and Redis's
/// replies byte for byte: QUEUED, EXEC's array, EXECABORT after a command
/// refused while queueing, DISCARD, and the errors for EXEC, DISCARD and
/// WATCH out of place.
#[test]
fn transactions_queue_and_run_at_exec() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let mut con = connection(&node);
    let () = redis::pipe()
        .atomic()
        .set("tx-a", "1")
        .ignore()
        .mset(&[("tx-b", "2"), ("tx-c", "3")])
        .ignore()
        .query(&mut con)
        .unwrap();
    let (a, missing, count): (String, Option<String>, i64) = redis::pipe()
        .atomic()
        .get("tx-a")
        .get("tx-missing")
        .exists(&["tx-a", "tx-b", "tx-c", "tx-missing"])
        .query(&mut con)
        .unwrap();
    assert_eq!((a.as_str(), missing, count), ("1", None, 3));

    let addr = node.resp_addr().unwrap();
    let mut nc = raw_socket(addr);
    let send = b"MULTI\r\nSET tx-d 4\r\nGET tx-d\r\nPING\r\nEXEC\r\nGET tx-d\r\n";
    let expected =
        "+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n+OK\r\n$1\r\n4\r\n+PONG\r\n$1\r\n4\r\n";
    assert_eq!(
        String::from_utf8(exchange(&mut nc, send, expected.len())).unwrap(),
        expected
    );
    // A command refused while queueing discards the transaction at EXEC:
    // nothing queued runs.
    let send = b"MULTI\r\nSET tx-e 5\r\nGET\r\nNOSUCH x\r\nEXEC\r\nEXISTS tx-e\r\n";
    let expected = "+OK\r\n+QUEUED\r\n-ERR wrong number of arguments for 'get' command\r\n\
                    -ERR unknown command 'NOSUCH', with args beginning with: 'x' \r\n\
                    -EXECABORT Transaction discarded because of previous errors.\r\n:0\r\n";
    assert_eq!(
        String::from_utf8(exchange(&mut nc, send, expected.len())).unwrap(),
        expected
    );
    let send = b"EXEC\r\nDISCARD\r\nMULTI\r\nMULTI\r\nWATCH k\r\nSET tx-f 6\r\nDISCARD\r\n\
                 EXISTS tx-f\r\nUNWATCH\r\n";
    let expected = "-ERR EXEC without MULTI\r\n-ERR DISCARD without MULTI\r\n+OK\r\n\
                    -ERR MULTI calls can not be nested\r\n-ERR WATCH inside MULTI is not allowed\r\n\
                    +QUEUED\r\n+OK\r\n:0\r\n+OK\r\n";
    assert_eq!(
        String::from_utf8(exchange(&mut nc, send, expected.len())).unwrap(),
        expected
    );
    // An error inside EXEC is one element of its array; the commands
    // around it still run. EXEC in the wrong shape ends the transaction.
    let send = b"MULTI\r\nSET tx-g 7\r\nSELECT 1\r\nSET tx-h 8 BADOPT\r\nGET tx-g\r\nEXEC\r\n\
                 MULTI\r\nSET tx-i 9\r\nEXEC now\r\nEXISTS tx-i\r\n\
                 MULTI\r\nWATCH\r\nDISCARD\r\n";
    let expected = "+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*4\r\n+OK\r\n\
                    -ERR DB index is out of range (cassio has one keyspace, db 0)\r\n\
                    -ERR syntax error\r\n$1\r\n7\r\n\
                    +OK\r\n+QUEUED\r\n\
                    -EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command\r\n\
                    :0\r\n+OK\r\n-ERR wrong number of arguments for 'watch' command\r\n+OK\r\n";
    assert_eq!(
        String::from_utf8(exchange(&mut nc, send, expected.len())).unwrap(),
        expected
    );
    // RESP3: a missing key inside EXEC's array is `_`.
    let send = b"HELLO 3\r\nMULTI\r\nGET tx-missing\r\nEXEC\r\nHELLO 2\r\n";
    let mut got = Vec::new();
    nc.write_all(send).unwrap();
    // Both HELLO replies end with their (empty) module list.
    let end = b"modules\r\n*0\r\n";
    let hello_ends = |got: &[u8]| got.windows(end.len()).filter(|w| w == end).count();
    while hello_ends(&got) < 2 {
        let mut chunk = [0u8; 4096];
        let n = nc.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed");
        got.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8(got).unwrap();
    assert!(
        text.contains("+OK\r\n+QUEUED\r\n*1\r\n_\r\n*14\r\n"),
        "{text:?}"
    );

    // A transaction whose replies outgrow the 1 MiB write buffer: its array
    // goes out in pieces, whole and in order.
    let big = vec![b'z'; 8 * 1024];
    let _: () = redis::cmd("SET")
        .arg("tx-big")
        .arg(&big[..])
        .query(&mut con)
        .unwrap();
    let mut pipe = redis::pipe();
    pipe.atomic();
    for _ in 0..300 {
        pipe.get("tx-big");
    }
    let values: Vec<Vec<u8>> = pipe.query(&mut con).unwrap();
    assert_eq!(values.len(), 300);
    assert!(values.iter().all(|v| *v == big));

    let watch = redis::cmd("WATCH").arg("k").query::<String>(&mut con);
    assert!(
        watch.unwrap_err().to_string().contains("not supported"),
        "WATCH must fail loudly, not pretend"
    );
    node.shutdown().unwrap();
}

#[test]
fn redis_cli_works() {
    let Ok(version) = std::process::Command::new("redis-cli")
        .arg("--version")
        .output()
    else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must have redis-cli (.ci/run installs redis-tools)"
        );
        eprintln!("redis-cli not installed: skipped here (CI installs it)");
        return;
    };
    assert!(version.status.success());
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let port = node.resp_addr().unwrap().port().to_string();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &port])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "redis-cli {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    assert_eq!(cli(&["set", "a", "b"]), "OK");
    assert_eq!(cli(&["get", "a"]), "b");
    assert_eq!(cli(&["del", "a"]), "1");
    assert_eq!(cli(&["get", "a"]), "");
    assert_eq!(cli(&["ping"]), "PONG");
    // RESP3, as `redis-cli -3` speaks it.
    assert_eq!(cli(&["-3", "set", "a", "c"]), "OK");
    assert_eq!(cli(&["-3", "get", "a"]), "c");
    // `redis-cli --scan` iterates SCAN's cursor to 0.
    for i in 0..120 {
        cli(&["set", &format!("s:{i:03}"), "v"]);
    }
    let scanned = cli(&["--scan", "--pattern", "s:*"]);
    let expected: Vec<String> = (0..120).map(|i| format!("s:{i:03}")).collect();
    assert_eq!(scanned.lines().collect::<Vec<_>>(), expected);
    assert_eq!(cli(&["keys", "s:11?"]).lines().count(), 10);
    node.shutdown().unwrap();
}

#[test]
fn scan_and_keys_walk_every_key_of_a_cluster() {
    use redis::Commands;
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(3, dir.path(), |c| {
        c.resp = Some("127.0.0.1:0".parse().unwrap());
        c.replication_factor = 2;
    });
    let mut con = connection(&nodes[0]);
    let cmd = redis::cmd;
    let users: Vec<String> = (0..250).map(|i| format!("user:{i:03}")).collect();
    let mut mset = cmd("MSET");
    for key in &users {
        mset.arg(key).arg("v");
    }
    for i in 0..50 {
        mset.arg(format!("other:{i}")).arg("w");
    }
    mset.query::<()>(&mut con).unwrap();

    // The redis crate's own iterator, which reads the cursor as a number.
    let mut seen: Vec<String> = con
        .scan_match::<_, String>("user:*")
        .unwrap()
        .map(|key| key.unwrap())
        .collect();
    seen.sort();
    assert_eq!(seen, users, "every user key once");

    // By hand: small pages, each cursor good on any connection to the node.
    let mut other = connection(&nodes[0]);
    let (mut cursor, mut keys) = (0u64, Vec::<String>::new());
    let mut pages = 0;
    loop {
        let conn = if pages % 2 == 0 { &mut con } else { &mut other };
        let (next, page): (String, Vec<String>) = cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(7)
            .query(conn)
            .unwrap();
        assert!(page.len() <= 7);
        keys.extend(page);
        pages += 1;
        cursor = next.parse().unwrap();
        if cursor == 0 {
            break;
        }
        assert!(pages < 100, "SCAN ends");
    }
    assert_eq!(keys.len(), 300, "in key order, each once");
    assert!(keys.windows(2).all(|w| w[0] < w[1]));

    // A cursor is the node's own; an unknown one is an error, not a restart.
    let (started, _): (String, Vec<String>) = cmd("SCAN")
        .arg(0)
        .arg("COUNT")
        .arg(5)
        .query(&mut con)
        .unwrap();
    let mut elsewhere = connection(&nodes[1]);
    let error = cmd("SCAN")
        .arg(&started)
        .query::<redis::Value>(&mut elsewhere)
        .unwrap_err();
    assert!(error.to_string().contains("unknown SCAN cursor"), "{error}");
    let error = cmd("SCAN")
        .arg("0")
        .arg("COUNT")
        .arg(0)
        .query::<redis::Value>(&mut con);
    assert!(error.unwrap_err().to_string().contains("syntax error"));

    // KEYS, and deleted keys gone from both.
    let _: () = con.del("user:100").unwrap();
    let mut tens: Vec<String> = con.keys("user:1?0").unwrap();
    tens.sort();
    let expected: Vec<String> = (1..10).map(|i| format!("user:1{i}0")).collect();
    assert_eq!(tens, expected, "user:100 deleted");
    let no_hashes: (String, Vec<String>) = cmd("SCAN")
        .arg(0)
        .arg("TYPE")
        .arg("hash")
        .query(&mut con)
        .unwrap();
    assert_eq!(
        no_hashes,
        ("0".to_string(), Vec::new()),
        "every value is a string"
    );

    // In a pipeline, SCAN sees the writes before it, not those after.
    let (_, (_, found), _): ((), (String, Vec<String>), ()) = redis::pipe()
        .cmd("SET")
        .arg("zz:new")
        .arg("1")
        .cmd("SCAN")
        .arg(0)
        .arg("MATCH")
        .arg("zz:*")
        .arg("COUNT")
        .arg(1000)
        .cmd("SET")
        .arg("zz:later")
        .arg("1")
        .query(&mut con)
        .unwrap();
    assert_eq!(found, ["zz:new"]);

    // A node down: RF 2 lets a scan at ONE miss one node, not one at ALL.
    let mut nodes = nodes;
    nodes.pop().unwrap().shutdown().unwrap();
    let _: () = cmd("CASSIO.CONSISTENCY")
        .arg("ONE")
        .query(&mut con)
        .unwrap();
    let keys: Vec<String> = con.keys("user:*").unwrap();
    assert_eq!(keys.len(), 249, "every user key but the deleted one");
    let _: () = cmd("CASSIO.CONSISTENCY")
        .arg("ALL")
        .query(&mut con)
        .unwrap();
    let error = cmd("SCAN")
        .arg(0)
        .query::<redis::Value>(&mut con)
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("not reached for a scan: 3 nodes must answer, 2 did"),
        "{error}"
    );
    for node in nodes {
        node.shutdown().unwrap();
    }
}
