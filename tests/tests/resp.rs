//! The Redis-protocol endpoint, checked with clients written elsewhere: the
//! `redis` crate (every command, pipelines, binary-safe values), a raw
//! socket (inline commands, malformed input), and `redis-cli` itself.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use cassio_core::{Node, NodeConfig, NodeHandle};

fn start(dir: &std::path::Path) -> NodeHandle {
    Node::start(NodeConfig {
        name: "solo".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        resp: Some("127.0.0.1:0".parse().unwrap()),
        data_dir: Some(dir.to_path_buf()),
        vnodes: 8,
        ..NodeConfig::default()
    })
    .unwrap()
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
    // DBSIZE is an estimate from storage statistics: the 5 live keys (k, bin,
    // fresh, long, b), plus deleted or expired ones until compaction drops
    // them, never more than the 8 keys ever written.
    let keys: i64 = cmd("DBSIZE").query(&mut con).unwrap();
    assert!((5..=8).contains(&keys), "DBSIZE {keys}");

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
        .arg(3)
        .query::<redis::Value>(&mut con)
        .unwrap_err();
    assert!(err.to_string().contains("RESP2"), "{err}");
    let info: String = cmd("INFO").query(&mut con).unwrap();
    assert!(
        info.contains("cassio_version") && info.contains("db0:keys="),
        "{info}"
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
    let err = cmd("FLUSHALL").query::<String>(&mut con).unwrap_err();
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

fn exchange(stream: &mut TcpStream, send: &[u8], expect_len: usize) -> Vec<u8> {
    stream.write_all(send).unwrap();
    let mut got = vec![0u8; expect_len];
    stream.read_exact(&mut got).unwrap();
    got
}

#[test]
fn inline_commands_and_malformed_input_over_a_raw_socket() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let addr = node.resp_addr().unwrap();
    let mut nc = TcpStream::connect(addr).unwrap();
    nc.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(exchange(&mut nc, b"PING\r\n", 7), b"+PONG\r\n");
    assert_eq!(
        exchange(&mut nc, b"SET greeting hello\nGET greeting\n", 16),
        b"+OK\r\n$5\r\nhello\r\n"
    );

    let mut bad = TcpStream::connect(addr).unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    bad.write_all(b"*2\r\n:1\r\n").unwrap();
    let mut reply = String::new();
    bad.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("-ERR Protocol error"), "{reply:?}");

    let mut huge = TcpStream::connect(addr).unwrap();
    huge.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    huge.write_all(b"*1\r\n$999999999999\r\n").unwrap();
    let mut reply = String::new();
    huge.read_to_string(&mut reply).unwrap();
    assert!(reply.contains("invalid bulk length"), "{reply:?}");

    // The first connection is unaffected.
    assert_eq!(
        exchange(&mut nc, b"GET greeting\r\n", 11),
        b"$5\r\nhello\r\n"
    );
    assert_eq!(exchange(&mut nc, b"QUIT\r\n", 5), b"+OK\r\n");
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
    node.shutdown().unwrap();
}
