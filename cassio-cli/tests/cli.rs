//! The `cassio` CLI end to end: `cassio up --nodes 3` in a child process,
//! then `cassio set/get/del/status` as separate processes, checking their
//! output and exit codes; SIGTERM stops the cluster cleanly.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A base port with `count` free consecutive ports after it.
fn free_ports(count: u16) -> u16 {
    for _ in 0..200 {
        let base = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if base > 65000 {
            continue;
        }
        let all_free =
            (0..count).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no free port range");
}

/// The `cassio up` child: killed if the test fails before it stops it
/// cleanly, so a failed run leaves no cluster behind.
struct Up(std::process::Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cassio(host: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cassio"))
        .args(["--host", host])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

#[test]
fn up_then_set_get_del_status() {
    let dir = tempfile::tempdir().unwrap();
    // One range for both: two separate picks could overlap.
    let native = free_ports(6);
    let resp = native + 3;
    let mut up = Up(Command::new(env!("CARGO_BIN_EXE_cassio"))
        .args([
            "up",
            "--nodes",
            "3",
            "--base-port",
            &native.to_string(),
            "--resp-base-port",
            &resp.to_string(),
        ])
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    let stdout = up.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let start = Instant::now();
    let mut banner = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("cassio up printed its banner");
        let done = line.contains("Ctrl-C stops");
        banner.push(line);
        if done {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30));
    }
    let banner = banner.join("\n");
    assert_eq!(
        banner.matches("UN ").count(),
        3,
        "three nodes Up/Normal:\n{banner}"
    );
    assert!(banner.contains("redis-cli -p"), "{banner}");
    assert!(
        banner.contains(&format!(
            "cassio --host 127.0.0.1:{native} set greeting hello"
        )),
        "the advice names the cluster's port:\n{banner}"
    );

    let host = format!("127.0.0.1:{native}");
    assert_eq!(
        cassio(&host, &["set", "greeting", "hello"]),
        (0, "OK".into(), String::new())
    );
    assert_eq!(cassio(&host, &["get", "greeting"]).1, "hello");
    let by_name = format!("localhost:{native}");
    assert_eq!(
        cassio(&by_name, &["get", "greeting"]).1,
        "hello",
        "a host name"
    );
    let other = format!("127.0.0.1:{}", native + 2);
    assert_eq!(
        cassio(&other, &["-c", "ALL", "get", "greeting"]).1,
        "hello",
        "any node coordinates"
    );
    let (code, json, _) = cassio(&host, &["--json", "get", "greeting"]);
    assert_eq!(code, 0);
    assert!(
        json.starts_with(r#"{"key":"greeting","value":"hello","timestamp":"#),
        "{json}"
    );
    assert_eq!(cassio(&host, &["del", "greeting"]).0, 0);
    assert_eq!(cassio(&host, &["get", "greeting"]).1, "(nil)");

    let (code, status, _) = cassio(&host, &["status"]);
    assert_eq!(code, 0);
    assert_eq!(
        status.lines().filter(|l| l.starts_with("UN ")).count(),
        3,
        "{status}"
    );
    assert!(status.contains("replication factor 3"), "{status}");
    let (_, json, _) = cassio(&host, &["--json", "status"]);
    assert_eq!(json.matches(r#""up":true"#).count(), 3, "{json}");

    // Repair: every write went to all three replicas, so nothing differs.
    let (code, out, err) = cassio(&host, &["repair"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("against 2 peer(s) (0 down, skipped)") && out.contains(", 0 differed;"),
        "{out}"
    );
    let (code, json, _) = cassio(&host, &["--json", "repair", "--timeout-s", "60"]);
    assert_eq!(code, 0);
    assert!(
        json.starts_with(r#"{"peers":2,"peers_down":0,"ranges":"#),
        "{json}"
    );
    assert!(
        json.ends_with(r#""ranges_differing":0,"pages":0,"cells_sent":0,"cells_received":0}"#),
        "{json}"
    );
    let (code, _, err) = cassio(&host, &["repair", "--timeout-s", "0"]);
    assert_eq!(code, 2, "a zero timeout is refused by the parser: {err}");

    // Ready (the chart's readiness probe): a NORMAL node is; no node is not.
    let (code, out, err) = cassio(&host, &["ready"]);
    assert_eq!((code, out.trim()), (0, "node1 is NORMAL: ready"), "{err}");
    let (code, _, err) = cassio("127.0.0.1:1", &["ready"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot reach a cassio node"), "{err}");

    // Cleanup: with RF 3 on three nodes each node replicates every key.
    let (code, out, err) = cassio(&host, &["cleanup"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("dropped 0 key(s) it does not replicate"),
        "{out}"
    );

    // The shell: the same commands from a REPL (here fed through a pipe).
    let mut shell = Command::new(env!("CARGO_BIN_EXE_cassio"))
        .args(["--host", &host, "shell"])
        .env("HOME", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    shell
        .stdin
        .take()
        .unwrap()
        .write_all(b"set s1 'two words'\nget s1\nconsistency one\nget nope\nbogus\nquit\n")
        .unwrap();
    let out = shell.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "OK\ntwo words\nconsistency is now ONE\n(nil)\n(error) unknown command \"bogus\""
        ),
        "{text}"
    );
    assert!(
        !out.status.success(),
        "piped input with a failed command exits non-zero: {text}"
    );

    // The benchmark: a small YCSB A run, JSON out, no errors.
    let (code, json, err) = cassio(
        &host,
        &[
            "--json",
            "bench",
            "--workload",
            "a",
            "--records",
            "200",
            "--operations",
            "2000",
            "--threads",
            "4",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = json.lines().collect();
    assert_eq!(lines.len(), 2, "a load and a run line: {json}");
    assert!(
        lines[0].contains(r#""phase":"load""#) && lines[0].contains(r#""ops":200,"errors":0"#),
        "{json}"
    );
    assert!(
        lines[1].contains(r#""phase":"run""#) && lines[1].contains(r#""ops":2000,"errors":0"#),
        "{json}"
    );
    assert!(
        lines[1].contains(r#""op":"READ""#) && lines[1].contains(r#""op":"UPDATE""#),
        "{json}"
    );

    // Errors: a sentence and a non-zero exit.
    let (code, _, err) = cassio("127.0.0.1:1", &["get", "x"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot reach a cassio node at 127.0.0.1:1"),
        "{err}"
    );
    let resp_port = format!("127.0.0.1:{resp}");
    let (code, _, err) = cassio(&resp_port, &["get", "x"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("not a node's native port") && err.contains("Redis port"),
        "a RESP port is named as the likely mistake: {err}"
    );
    // Another service (here one that answers like an HTTP server).
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http_addr = http.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = http.accept() {
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });
    let (code, _, err) = cassio(&http_addr, &["get", "x"]);
    assert_eq!(code, 1);
    assert!(err.contains("did not answer as a cassio node"), "{err}");
    let (code, _, err) = cassio(&host, &["-c", "MOST", "get", "x"]);
    assert_ne!(code, 0);
    assert!(err.contains("unknown consistency level"), "{err}");
    let (code, _, err) = cassio(&host, &["set", "k", "v", "--ttl-ms", "0"]);
    assert_ne!(code, 0, "a value that expires at once is refused");
    assert!(err.contains("--ttl-ms"), "{err}");
    let (code, _, err) = cassio(&host, &["up", "--nodes", "2", "--replication-factor", "3"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--replication-factor must be between 1 and --nodes (2)"),
        "{err}"
    );

    // Scans: keys in key order with their values, from any node.
    for (key, value) in [
        ("fruit:b", "banana"),
        ("fruit:a", "apple"),
        ("fruit:c", "cherry"),
    ] {
        assert_eq!(cassio(&host, &["set", key, value]).0, 0);
    }
    assert_eq!(cassio(&host, &["del", "fruit:b"]).0, 0);
    assert_eq!(
        cassio(&other, &["scan", "--prefix", "fruit:"]),
        (0, "fruit:a\tapple\nfruit:c\tcherry".into(), String::new())
    );
    let (code, out, err) = cassio(&host, &["scan", "--prefix", "fruit:", "--limit", "1"]);
    assert_eq!((code, out.as_str()), (0, "fruit:a\tapple"));
    assert!(err.contains("--after \"fruit:a\""), "where to go on: {err}");
    assert_eq!(
        cassio(&host, &["scan", "--prefix", "fruit:", "--after", "fruit:a"]).1,
        "fruit:c\tcherry"
    );
    let (code, json, _) = cassio(
        &host,
        &["--json", "scan", "--from", "fruit:c", "--limit", "1"],
    );
    assert_eq!(code, 0);
    assert!(
        json.starts_with(r#"{"key":"fruit:c","value":"cherry","timestamp":"#),
        "{json}"
    );
    let (code, _, err) = cassio(&host, &["scan", "--limit", "20000"]);
    assert_eq!(code, 0, "a large limit is read in pages: {err}");
    // YCSB E: scans and inserts.
    let (code, json, err) = cassio(
        &host,
        &[
            "--json",
            "bench",
            "--workload",
            "E",
            "--records",
            "200",
            "--operations",
            "400",
            "--threads",
            "4",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let run = json.lines().nth(1).unwrap_or_default();
    assert!(
        run.contains(r#""ops":400,"errors":0"#) && run.contains(r#""op":"SCAN""#),
        "{json}"
    );

    // A node leaves: the third hands its data over and stops; the others
    // show it LEFT and keep serving what was written before.
    assert_eq!(cassio(&host, &["set", "before-leave", "kept"]).0, 0);
    let (code, out, err) = cassio(&other, &["decommission"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("left the cluster and stops"), "{out}");
    let start = Instant::now();
    loop {
        let (_, status, _) = cassio(&host, &["status"]);
        let lines = |code: &str| status.lines().filter(|l| l.starts_with(code)).count();
        // LEFT at once; DOWN once the failure detector convicts it.
        if lines("UN ") == 2 && lines("UL ") + lines("DL ") == 1 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the third node shown LEFT:\n{status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        cassio(&host, &["-c", "ALL", "get", "before-leave"]).1,
        "kept"
    );
    let (code, _, err) = cassio(&host, &["removenode", "nobody"]);
    assert_eq!(code, 1);
    assert!(err.contains("no node named nobody"), "{err}");

    let pid = up.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let exit = up.0.wait().unwrap();
    assert!(
        exit.success(),
        "SIGTERM stops `cassio up` cleanly: {exit:?}"
    );
}

#[test]
fn up_on_a_taken_port_says_which_flags_choose_others() {
    let dir = tempfile::tempdir().unwrap();
    let native = free_ports(2);
    // Something else (a redis-server, say) holds the first RESP port.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let resp = taken.local_addr().unwrap().port().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_cassio"))
        .args(["up", "--nodes", "1", "--base-port", &native.to_string()])
        .args(["--resp-base-port", &resp, "--data-dir"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("a port is taken")
            && stderr.contains("--resp-base-port")
            && stderr.contains(&format!("127.0.0.1:{resp}: Address already in use")),
        "{stderr}"
    );
}
