//! Two hosts, each a network namespace this test creates (joined by a veth
//! pair, 10.201.0.1 and 10.201.0.2), each running one `cassio-node` that
//! listens on every interface and announces its host's address with
//! `--broadcast`, as a node on a real machine or a Kubernetes pod does. The
//! nodes find each other, show each other's reachable addresses (never
//! 0.0.0.0), and a key written through one host is read at ALL through the
//! other. Needs root and iproute2 (`ip netns`), and redis-cli for the client
//! side; without root it says so and does nothing.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const HOSTS: [&str; 2] = ["10.201.0.1", "10.201.0.2"];
const NATIVE_PORT: u16 = 9000;
const RESP_PORT: u16 = 6379;

/// The namespaces and the nodes in them; dropping it ends exactly those
/// processes (by PID) and deletes exactly those namespaces.
struct Hosts {
    namespaces: Vec<String>,
    nodes: Vec<Child>,
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn ip(args: &[&str]) {
    let out = run("ip", args);
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(1) == Some("0"))
    })
}

/// Two namespaces joined by a veth pair, named after this process so that
/// parallel runs do not meet.
fn make_hosts() -> Hosts {
    let id = std::process::id();
    let mut hosts = Hosts {
        namespaces: Vec::new(),
        nodes: Vec::new(),
    };
    for i in 0..HOSTS.len() {
        let ns = format!("cassio-{id}-{i}");
        ip(&["netns", "add", &ns]);
        hosts.namespaces.push(ns);
    }
    let (a, b) = (&hosts.namespaces[0], &hosts.namespaces[1]);
    ip(&[
        "link", "add", "cassio0", "netns", a, "type", "veth", "peer", "name", "cassio1", "netns", b,
    ]);
    for (i, ns) in hosts.namespaces.iter().enumerate() {
        let dev = format!("cassio{i}");
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{}/24", HOSTS[i]),
            "dev",
            &dev,
        ]);
        ip(&["-n", ns, "link", "set", &dev, "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }
    hosts
}

fn start_node(ns: &str, name: &str, host: &str, seed: &str, dir: &Path) -> Child {
    Command::new("ip")
        .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_cassio-node")])
        .args(["--name", name])
        .args(["--listen", &format!("0.0.0.0:{NATIVE_PORT}")])
        .args(["--broadcast", &format!("{host}:{NATIVE_PORT}")])
        .args(["--resp", &format!("0.0.0.0:{RESP_PORT}")])
        .args(["--seeds", &format!("{seed}:{NATIVE_PORT}")])
        .args(["--data-dir", dir.join(name).to_str().unwrap()])
        .args(["--replication-factor", "2", "--vnodes", "16"])
        .args(["--gossip-interval-ms", "200", "--log", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cannot start cassio-node under ip netns exec")
}

/// `redis-cli` in namespace `ns` against `host`, fed `commands` one per line
/// on one connection; its stdout.
fn redis_cli(ns: &str, host: &str, commands: &str) -> String {
    use std::io::Write;
    let mut cli = Command::new("ip")
        .args(["netns", "exec", ns, "redis-cli", "-h", host])
        .args(["-p", &RESP_PORT.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run redis-cli (Debian's redis-tools; .ci/run installs it)");
    cli.stdin
        .take()
        .unwrap()
        .write_all(commands.as_bytes())
        .unwrap();
    let out = cli.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn nodes_on_two_hosts_listen_everywhere_and_announce_their_broadcast_address() {
    if !is_root() {
        eprintln!("skipped: network namespaces need root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut hosts = make_hosts();
    let namespaces = hosts.namespaces.clone();
    hosts.nodes.push(start_node(
        &namespaces[0],
        "a",
        HOSTS[0],
        HOSTS[0],
        dir.path(),
    ));
    hosts.nodes.push(start_node(
        &namespaces[1],
        "b",
        HOSTS[1],
        HOSTS[0],
        dir.path(),
    ));

    // Each node's INFO lists both members UP under their broadcast address.
    let expected = [
        format!("member:a,{}:{NATIVE_PORT},UP,NORMAL", HOSTS[0]),
        format!("member:b,{}:{NATIVE_PORT},UP,NORMAL", HOSTS[1]),
    ];
    let start = Instant::now();
    loop {
        let views: Vec<String> = (0..2)
            .map(|i| redis_cli(&namespaces[i], HOSTS[i], "INFO cluster\n"))
            .collect();
        if views
            .iter()
            .all(|view| expected.iter().all(|m| view.contains(m.as_str())))
        {
            for view in &views {
                assert!(!view.contains("0.0.0.0"), "an unreachable address: {view}");
            }
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the nodes did not see each other at their broadcast addresses within 30 s: {views:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Written through host a, read through host b at ALL: both replicas
    // (RF 2 of 2 nodes) answer across the link.
    let keys = 50;
    let sets: String = (0..keys)
        .map(|i| format!("SET key{i} value{i}\n"))
        .collect();
    let written = redis_cli(&namespaces[0], HOSTS[0], &sets);
    assert_eq!(
        written.lines().filter(|l| *l == "OK").count(),
        keys,
        "{written}"
    );
    let gets: String = std::iter::once("CASSIO.CONSISTENCY ALL\n".to_string())
        .chain((0..keys).map(|i| format!("GET key{i}\n")))
        .collect();
    let read = redis_cli(&namespaces[1], HOSTS[1], &gets);
    let values: Vec<&str> = read.lines().skip(1).collect();
    let wanted: Vec<String> = (0..keys).map(|i| format!("value{i}")).collect();
    assert_eq!(values, wanted, "reads at ALL through host b: {read}");
}

#[test]
fn listening_on_every_interface_without_a_broadcast_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cassio-node"))
        .args(["--listen", "0.0.0.0:0", "--resp", "127.0.0.1:0"])
        .args(["--data-dir", dir.path().join("n").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("binds every interface") && stderr.contains("--broadcast"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("n").exists(),
        "refused before it touched the data directory"
    );
}
