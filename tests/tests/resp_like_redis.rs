//! The same commands sent to redis-server and to cassio get the same
//! replies, errors included, word for word: the key-expiry commands (TTL,
//! PTTL, EXPIRETIME, PEXPIRETIME, EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT,
//! PERSIST, GETEX) and SET's kin (SETEX, PSETEX, SETNX, GETSET, GETDEL,
//! STRLEN, TYPE, UNLINK) against a 3-node cluster, alone and pipelined, and
//! the core commands in their wrong shapes against one node. redis-server
//! (Debian's redis-server package; `.ci/run` installs it) listens on a Unix
//! socket in a temporary directory, so no port is shared with other tests.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cassio_core::NodeHandle;
use cassio_core::coordinator::ConsistencyLevel;
use cassio_core::proto::{KeyedCell, Request, Response};
use cassio_core::storage::Cell;
use cassio_tests::harness::{TestClient, ring_seen_by, start_cluster, wait_for};
use redis::Value;

/// A redis-server this test started; killed (by its PID) when dropped.
struct RedisServer {
    child: Child,
    socket: String,
}

impl RedisServer {
    fn start(dir: &Path) -> RedisServer {
        let socket = dir.join("redis.sock").display().to_string();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket", &socket, "--save", ""])
            .args(["--appendonly", "no", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs (Debian's redis-server package; .ci/run installs it)");
        let server = RedisServer { child, socket };
        wait_for(Duration::from_secs(10), "redis-server to listen", || {
            server.try_connection().is_some()
        });
        server
    }

    fn try_connection(&self) -> Option<redis::Connection> {
        let client = redis::Client::open(format!("unix://{}", self.socket)).ok()?;
        client.get_connection().ok()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `redis` crate connection to `node`'s Redis port.
fn connect(node: &NodeHandle) -> redis::Connection {
    let addr = node.resp_addr().expect("RESP enabled");
    redis::Client::open(format!("redis://{addr}/"))
        .unwrap()
        .get_connection()
        .unwrap()
}

/// A reply, with errors as their text.
type Answer = Result<Value, String>;

fn send(con: &mut redis::Connection, args: &[String]) -> Answer {
    let mut cmd = redis::cmd(&args[0]);
    for arg in &args[1..] {
        cmd.arg(arg);
    }
    cmd.query::<Value>(con).map_err(|e| e.to_string())
}

/// How two replies must agree.
#[derive(Clone, Copy)]
enum Agree {
    Exactly,
    /// Integers at most this far apart (a PTTL read a few ms apart).
    Within(i64),
}

fn agrees(redis: &Answer, cassio: &Answer, agree: Agree) -> bool {
    match (agree, redis, cassio) {
        (Agree::Within(slack), Ok(Value::Int(a)), Ok(Value::Int(b))) => (a - b).abs() <= slack,
        _ => redis == cassio,
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

#[test]
fn expiry_and_string_commands_answer_as_redis_does() {
    let dir = tempfile::tempdir().unwrap();
    let redis_server = RedisServer::start(dir.path());
    let nodes = start_cluster(3, dir.path(), |config| {
        config.resp = Some("127.0.0.1:0".parse().unwrap());
        config.replication_factor = 3;
    });
    let mut redis_con = redis_server.try_connection().expect("redis-server");
    let mut cassio = connect(&nodes[0]);

    // Absolute times a while ahead, and one in the past.
    let at_s = now_s() + 1000;
    let at_ms = (now_s() + 2000) * 1000;
    let past_s = now_s() - 10;
    let script: Vec<(String, Agree)> = [
        "SET k v",
        "TTL k",
        "PTTL k",
        "EXPIRETIME k",
        "TTL missing",
        "PEXPIRETIME missing",
        "EXPIRE k 100",
        "TTL k",
        "~PTTL k",
        "EXPIRE k 50 GT",
        "EXPIRE k 200 gt",
        "EXPIRE k 300 LT",
        "EXPIRE k 150 LT",
        "EXPIRE k 10 NX",
        "EXPIRE k 120 XX GT",
        "TTL k",
        "EXPIRE k 10 NX XX",
        "EXPIRE k 10 GT LT",
        "EXPIRE k 10 FOO",
        "EXPIRE k abc",
        "EXPIRE k abc FOO",
        "EXPIRE k 9223372036854775807",
        "PEXPIRE k 9223372036854775807",
        "EXPIRE missing 10",
        "EXPIRE k",
        "PERSIST k",
        "PERSIST k",
        "PERSIST missing",
        "TTL k",
        "GET k",
        "EXPIRE k 10 XX",
        "EXPIRE k 10 GT",
        "EXPIRE k 10 LT",
        "TTL k",
        &format!("EXPIREAT k {at_s}"),
        "EXPIRETIME k",
        "PEXPIRETIME k",
        &format!("PEXPIREAT k {at_ms}"),
        "PEXPIRETIME k",
        "EXPIRETIME k",
        &format!("PEXPIREAT k {}", at_ms + 600),
        "EXPIRETIME k",
        &format!("PEXPIREAT k {}", at_ms + 499),
        "EXPIRETIME k",
        "GET k",
        "EXPIRE k 0",
        "GET k",
        "EXISTS k",
        "EXPIRE k 10",
        "SET k v2",
        "PEXPIRE k -1",
        "GET k",
        "SET k v3",
        &format!("EXPIREAT k {past_s}"),
        "EXISTS k",
        "SETEX s 100 v",
        "TTL s",
        "GET s",
        "SETEX s 0 v",
        "SETEX s -1 v",
        "SETEX s abc v",
        "SETEX s 10",
        "PSETEX p 100000 v",
        "~PTTL p",
        "PSETEX p 0 v",
        "SETEX s 9223372036854775807 v",
        "PSETEX s 9223372036854775807 v",
        "SET e v",
        "EXPIRE e -9223372036854775808",
        "SET e v",
        "EXPIRE e 10 NX NX",
        "PEXPIRE e -9223372036854775808",
        "EXISTS e",
        "SET e v",
        "EXPIREAT e 0",
        "EXISTS e",
        "SET e v",
        "GETEX e EXAT 0",
        "GETEX e PXAT -1",
        "TTL e",
        "SETNX n 1",
        "SETNX n 2",
        "GET n",
        "GETSET n 3",
        "GET n",
        "GETSET fresh x",
        "SETEX n 100 v",
        "GETSET n w",
        "TTL n",
        "GETDEL n",
        "GETDEL n",
        "EXISTS n",
        "SETEX kt 100 v",
        "SET kt w KEEPTTL",
        "TTL kt",
        "GET kt",
        "SET kt x XX KEEPTTL GET",
        "TTL kt",
        "SET kt y",
        "TTL kt",
        "SET kt z KEEPTTL EX 5",
        "SET kt z EX 5 KEEPTTL",
        "SET fresh-kt v KEEPTTL",
        "TTL fresh-kt",
        "SET g v",
        "GETEX g",
        "TTL g",
        "GETEX g EX 100",
        "TTL g",
        "GETEX g persist",
        "TTL g",
        "GETEX g PX 0",
        "GETEX g EX 1 PX 1",
        "GETEX g PERSIST EX 1",
        "GETEX g FOO",
        "GETEX missing EX 10",
        "GETEX missing EX 0",
        "GETEX missing PX abc",
        "GETEX g EX 0",
        "GETEX g EX 1 EX 100",
        "TTL g",
        "GETEX g PERSIST PERSIST",
        "TTL g",
        "EXISTS missing",
        &format!("GETEX g EXAT {past_s}"),
        "GET g",
        "SET k2 hello",
        "STRLEN k2",
        "STRLEN missing",
        "TYPE k2",
        "TYPE missing",
        "UNLINK k2 missing k2",
        "GET k2",
        "TTL",
        "GETDEL a b",
        "ROLE",
        "CLIENT SETNAME before-reset",
        "RESET",
        "CLIENT GETNAME",
        "MULTI",
        "SET inside 1",
        "RESET",
        "EXEC",
        "EXISTS inside",
        "MULTI",
        "RESET now",
        "EXEC",
        "TIME extra",
    ]
    .iter()
    .map(|line| match line.strip_prefix('~') {
        Some(line) => (line.to_string(), Agree::Within(1000)),
        None => (line.to_string(), Agree::Exactly),
    })
    .collect();
    for (line, agree) in &script {
        let args: Vec<String> = line.split(' ').map(str::to_string).collect();
        let (expected, got) = (send(&mut redis_con, &args), send(&mut cassio, &args));
        assert!(
            agrees(&expected, &got, agree.to_owned()),
            "{line}: redis-server answered {expected:?}, cassio {got:?}"
        );
    }

    // In one pipeline (as one write, and as MULTI/EXEC), each command sees
    // the ones before it, as in Redis.
    let lines = [
        "SET p v",
        "EXPIRE p 100",
        "TTL p",
        "PERSIST p",
        "TTL p",
        "SETEX p 50 w",
        "GETEX p EX 70",
        "TTL p",
        "GETSET p x",
        "TTL p",
        "SET p y KEEPTTL",
        "EXPIRE p 30 NX",
        "SET p z KEEPTTL",
        "TTL p",
        "GETDEL p",
        "TTL p",
        "SETNX p again",
        "STRLEN p",
        "UNLINK p",
        "TYPE p",
    ];
    for atomic in [false, true] {
        let mut pipe = redis::pipe();
        if atomic {
            pipe.atomic();
        }
        for line in lines {
            let mut words = line.split(' ');
            let cmd = pipe.cmd(words.next().expect("a command"));
            for word in words {
                cmd.arg(word);
            }
        }
        let expected: Vec<Value> = pipe.query(&mut redis_con).unwrap();
        let got: Vec<Value> = pipe.query(&mut cassio).unwrap();
        assert_eq!(expected, got, "pipelined (atomic: {atomic})");
    }

    // Rewrites reach every replica: written at ALL through one node, each
    // rewrite is read at ONE (its own replica's cell) on another.
    let _: () = redis::cmd("CASSIO.CONSISTENCY")
        .arg("ALL")
        .query(&mut cassio)
        .unwrap();
    let mut other = connect(&nodes[2]);
    let _: () = redis::cmd("CASSIO.CONSISTENCY")
        .arg("ONE")
        .query(&mut other)
        .unwrap();
    let mut on_both = |line: &str| {
        let args: Vec<String> = line.split(' ').map(str::to_string).collect();
        let (expected, got) = (send(&mut redis_con, &args), send(&mut cassio, &args));
        assert_eq!(expected, got, "{line}");
    };
    let mut ttl_elsewhere = || -> i64 { redis::cmd("TTL").arg("x").query(&mut other).unwrap() };
    on_both("SETEX x 500 v");
    assert_eq!(ttl_elsewhere(), 500);
    on_both("EXPIRE x 900");
    assert_eq!(
        ttl_elsewhere(),
        900,
        "the other node's replica has the new expiry"
    );
    on_both("PERSIST x");
    assert_eq!(ttl_elsewhere(), -1, "and then none");
    on_both("GETEX x EX 700");
    assert_eq!(ttl_elsewhere(), 700);
    on_both("GETDEL x");
    assert_eq!(ttl_elsewhere(), -2, "and the key is gone");
}

/// The commands cassio had before this file's, with the errors clients
/// get for their wrong shapes. (Deliberate differences are left out:
/// SELECT of another db, and CONFIG's help hint.)
#[test]
fn core_commands_and_their_errors_answer_as_redis_does() {
    let dir = tempfile::tempdir().unwrap();
    let redis_server = RedisServer::start(dir.path());
    let nodes = start_cluster(1, dir.path(), |config| {
        config.resp = Some("127.0.0.1:0".parse().unwrap());
    });
    let mut redis_con = redis_server.try_connection().expect("redis-server");
    let mut cassio = connect(&nodes[0]);
    let lines = [
        "PING",
        "PING hi",
        "PING a b",
        "ECHO",
        "ECHO x y",
        "SELECT 0",
        "SELECT x",
        "SET",
        "SET k",
        "SET k v",
        "SET k v EX",
        "SET k v EX 0",
        "SET k v EX -1",
        "SET k v PX 1.5",
        "SET k v NX XX",
        "SET k v FOO",
        "SET k v GET",
        "SET k w NX GET",
        "SET k2 v XX",
        "SET k2 v XX GET",
        "GET",
        "GET k extra",
        "GET k",
        "MSET",
        "MSET a",
        "MSET a 1 b",
        "MSET a 1 b 2",
        "MGET",
        "MGET a b nope",
        "DEL",
        "DEL a a nope",
        "EXISTS",
        "EXISTS b b nope",
        "CLIENT",
        "CLIENT SETNAME",
        "CLIENT SETNAME n1",
        "CLIENT GETNAME",
        "CLIENT FOO",
        "HELLO 4",
        "HELLO x",
        "HELLO 2 FOO",
        "AUTH x",
        "AUTH a b c",
        "DBSIZE x",
        "CONFIG",
        "CONFIG GET",
        "MULTI",
        "MULTI",
        "EXEC",
        "DISCARD",
        "EXEC",
        "WATCH",
        "UNWATCH",
        "KEYS",
        "SCAN",
        "SCAN x",
        "SCAN 0 COUNT 0",
        "SCAN 0 COUNT x",
        "SCAN 0 MATCH",
        "SCAN 0 FOO 1",
        "NOPE",
        "NOPE a b",
    ];
    for line in lines {
        let args: Vec<String> = line.split(' ').map(str::to_string).collect();
        let (expected, got) = (send(&mut redis_con, &args), send(&mut cassio, &args));
        assert_eq!(expected, got, "{line}: redis-server, then cassio");
    }
}

#[test]
fn read_modify_write_commands_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(1, dir.path(), |config| {
        config.resp = Some("127.0.0.1:0".parse().unwrap());
    });
    let mut con = connect(&nodes[0]);
    let _: () = redis::cmd("SET").arg("n").arg("1").query(&mut con).unwrap();
    for (args, expected) in [
        (
            &["INCR", "n"][..],
            "INCR is not supported: cassio has no atomic read-modify-write",
        ),
        (&["incrby", "n", "5"], "INCRBY is not supported"),
        (&["DECR", "n"], "DECR is not supported"),
        (&["APPEND", "n", "x"], "APPEND is not supported"),
        (&["MSETNX", "a", "1"], "MSETNX is not supported"),
        (&["RENAME", "n", "m"], "RENAME is not supported"),
        (
            &["FLUSHALL"],
            "FLUSHALL is not supported: cassio has no cluster-wide truncate",
        ),
    ] {
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        let error = cmd.query::<Value>(&mut con).unwrap_err().to_string();
        assert!(error.contains(expected), "{args:?}: {error}");
    }
    let value: String = redis::cmd("GET").arg("n").query(&mut con).unwrap();
    assert_eq!(value, "1", "nothing was changed");

    // Tools that look for a primary find one.
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query(&mut con)
        .unwrap();
    assert!(info.contains("role:master\r\n"), "{info}");

    // TIME: the node's clock, as Unix seconds and microseconds.
    let (seconds, micros): (String, String) = redis::cmd("TIME").query(&mut con).unwrap();
    let seconds: u64 = seconds.parse().unwrap();
    let micros: u64 = micros.parse().unwrap();
    assert!(
        seconds.abs_diff(now_s()) <= 5 && micros < 1_000_000,
        "{seconds} {micros}"
    );
}

/// A cell written with a timestamp ahead of a coordinator's clock (a
/// client's own, or a node whose clock runs ahead) is still replaced by
/// EXPIRE, PERSIST, GETDEL and DEL through that coordinator: each writes at
/// a timestamp past the cell's, not its own older one, which would lose.
#[test]
fn rewrites_win_over_a_cell_from_a_clock_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(2, dir.path(), |config| {
        config.resp = Some("127.0.0.1:0".parse().unwrap());
        config.replication_factor = 1;
    });
    // A key that only nodes[1] holds: written through it, only it sees the
    // timestamp, so nodes[0]'s clock stays behind.
    let ring = ring_seen_by(&nodes[0]);
    let key = (0..1000)
        .map(|i| format!("skew{i}"))
        .find(|key| ring.replicas(key.as_bytes(), 1) == [nodes[1].node_id()])
        .expect("a key nodes[1] replicates");
    let ahead_us = (now_s() + 3600) * 1_000_000;
    let put = |value: &str, ahead_us: u64| {
        let answer = TestClient::connect(nodes[1].native_addr()).request(Request::Put {
            key: key.clone().into_bytes(),
            value: value.into(),
            level: Some(ConsistencyLevel::One),
            timestamp: Some(ahead_us),
            ttl_ms: None,
        });
        assert!(matches!(answer, Response::Written { .. }), "{answer:?}");
    };
    put("ahead", ahead_us);
    let mut con = connect(&nodes[0]);
    let mut send_key = |command: &str, arg: Option<&str>| -> redis::RedisResult<Value> {
        let mut cmd = redis::cmd(command);
        cmd.arg(&key);
        if let Some(arg) = arg {
            cmd.arg(arg);
        }
        cmd.query(&mut con)
    };
    assert_eq!(send_key("EXPIRE", Some("100")), Ok(Value::Int(1)));
    assert_eq!(
        send_key("TTL", None),
        Ok(Value::Int(100)),
        "the rewrite won over the cell ahead"
    );
    assert_eq!(send_key("PERSIST", None), Ok(Value::Int(1)));
    assert_eq!(send_key("TTL", None), Ok(Value::Int(-1)));
    assert_eq!(
        send_key("GETDEL", None),
        Ok(Value::BulkString(b"ahead".to_vec()))
    );
    assert_eq!(
        send_key("EXISTS", None),
        Ok(Value::Int(0)),
        "the tombstone won too"
    );
    put("ahead again", ahead_us + 1_000_000);
    assert_eq!(send_key("DEL", None), Ok(Value::Int(1)));
    assert_eq!(
        send_key("EXISTS", None),
        Ok(Value::Int(0)),
        "DEL's tombstone covers the cell it counted"
    );
}

/// A rewrite after a stale read does not bring the older value back: a
/// replica holds a newer value than the one EXPIRE reads at ONE, and after
/// the EXPIRE a read at ALL still finds the newer value. Reads and writes
/// at ANY read at ONE.
#[test]
fn a_rewrite_after_a_stale_read_loses_to_the_newer_value() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(2, dir.path(), |config| {
        config.resp = Some("127.0.0.1:0".parse().unwrap());
        config.replication_factor = 2;
        config.hinted_handoff = false;
    });
    let mut con = connect(&nodes[0]);
    let mut run = |line: &str| -> Answer {
        let args: Vec<String> = line.split(' ').map(str::to_string).collect();
        send(&mut con, &args)
    };
    assert_eq!(run("CASSIO.CONSISTENCY ALL"), Ok(Value::Okay));
    assert_eq!(run("SET k old"), Ok(Value::Okay));
    let old = TestClient::replica_cell(nodes[0].native_addr(), b"k").expect("written");
    // Only nodes[1] gets the newer value (as if nodes[0] missed it).
    let newer = Request::ReplicaWrites(vec![KeyedCell {
        key: b"k".to_vec(),
        cell: Cell::value("newer", old.timestamp + 10),
    }]);
    let answer = TestClient::peer_request(nodes[1].native_addr(), "test", newer);
    assert_eq!(answer, Response::Done);

    assert_eq!(run("CASSIO.CONSISTENCY ONE"), Ok(Value::Okay));
    assert_eq!(
        run("GET k"),
        Ok(Value::BulkString(b"old".to_vec())),
        "nodes[0] answers ONE from its own, stale replica"
    );
    assert_eq!(run("EXPIRE k 100"), Ok(Value::Int(1)));
    assert_eq!(run("CASSIO.CONSISTENCY ALL"), Ok(Value::Okay));
    assert_eq!(
        run("GET k"),
        Ok(Value::BulkString(b"newer".to_vec())),
        "the rewrite of the stale value lost to the newer one"
    );
    assert_eq!(
        run("TTL k"),
        Ok(Value::Int(-1)),
        "the newer value's own expiry"
    );

    // ANY reads at ONE, as GET does.
    assert_eq!(run("CASSIO.CONSISTENCY ANY"), Ok(Value::Okay));
    for (line, expected) in [
        ("SET any v NX", Value::Okay),
        ("TTL any", Value::Int(-1)),
        ("EXPIRE any 50", Value::Int(1)),
        ("TTL any", Value::Int(50)),
        ("GETDEL any", Value::BulkString(b"v".to_vec())),
    ] {
        assert_eq!(run(line), Ok(expected), "{line}");
    }
}
