//! Three real `cassio-node` processes on 127.0.0.1 (free ports): they form a
//! cluster; a SIGKILLed node is marked DOWN by the others; restarted on its
//! data directory it is UP again with a higher generation; a SIGSTOPped node
//! is marked DOWN and, resumed, does not take its own pause for its peers'
//! silence; SIGTERM stops a node cleanly. Status is read over the native protocol, as `cassio status`
//! will.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cassio_core::net::{Connection, Tcp};
use cassio_core::proto::{ClusterStatus, Hello, Request, Response, Role};

const GOSSIP_INTERVAL_MS: u64 = 200;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(name: &str, port: u16, seed: Option<u16>, dir: &std::path::Path) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cassio-node"));
    cmd.args(["--name", name, "--listen", &format!("127.0.0.1:{port}")])
        .args(["--resp", &format!("127.0.0.1:{}", free_port())])
        .args(["--data-dir", dir.join(name).to_str().unwrap()])
        .args([
            "--vnodes",
            "16",
            "--gossip-interval-ms",
            &GOSSIP_INTERVAL_MS.to_string(),
        ])
        .args(["--log", "warn"])
        .stdout(Stdio::null())
        .stderr(log_file(dir, name));
    if let Some(seed) = seed {
        cmd.args(["--seeds", &format!("127.0.0.1:{seed}")]);
    }
    Proc {
        child: cmd.spawn().unwrap(),
    }
}

/// The node's log (stderr), appended to across restarts.
fn log_file(dir: &std::path::Path, name: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .unwrap()
}

/// Sends `kill -SIGNAL` to a node this test started.
fn signal(node: &Proc, name: &str) {
    let pid = node.child.id().to_string();
    let sent = Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{name} {pid}");
}

async fn status(port: u16) -> Option<ClusterStatus> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let hello = Hello::new("cassio", Role::Client, None);
    let conn = Connection::open(&Tcp, addr, hello, 1 << 20, Duration::from_secs(1))
        .await
        .ok()?;
    match conn
        .request(Request::ClusterStatus, Duration::from_secs(1))
        .await
        .ok()?
    {
        Response::ClusterStatus(status) => Some(status),
        _ => None,
    }
}

async fn wait_for(limit: Duration, what: &str, check: impl AsyncFn() -> bool) -> Duration {
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

/// Each listed node sees `name` with the given liveness (and, if given, a
/// generation above `after`).
async fn all_see(ports: &[u16], name: &str, up: bool, after: Option<u64>) -> bool {
    for &port in ports {
        let Some(status) = status(port).await else {
            return false;
        };
        let Some(m) = status.members.iter().find(|m| m.node.as_str() == name) else {
            return false;
        };
        if m.up != up || after.is_some_and(|g| m.generation <= g) {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "current_thread")]
async fn three_processes_detect_sigkill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port(), free_port()];
    let mut n0 = spawn("n0", ports[0], None, dir.path());
    let n1 = spawn("n1", ports[1], Some(ports[0]), dir.path());
    let mut n2 = spawn("n2", ports[2], Some(ports[0]), dir.path());

    let took = wait_for(
        Duration::from_secs(20),
        "3 UP/NORMAL members on every node",
        async || {
            for &port in &ports {
                let Some(s) = status(port).await else {
                    return false;
                };
                if s.members.len() != 3
                    || !s
                        .members
                        .iter()
                        .all(|m| m.up && m.status.as_str() == "NORMAL")
                {
                    return false;
                }
            }
            true
        },
    )
    .await;
    println!("3 processes converged in {took:?} (including process start)");
    let before = status(ports[0]).await.unwrap();
    let old_generation = before
        .members
        .iter()
        .find(|m| m.node.as_str() == "n2")
        .unwrap()
        .generation;

    n2.child.kill().unwrap(); // SIGKILL
    n2.child.wait().unwrap();
    // Phi 8 is crossed after ~18 mean intervals of silence; allow twice that.
    let limit = Duration::from_millis(GOSSIP_INTERVAL_MS * 40);
    let took = wait_for(limit, "n2 DOWN on n0 and n1", async || {
        all_see(&ports[..2], "n2", false, None).await
    })
    .await;
    println!("SIGKILLed node marked DOWN after {took:?}");

    let _n2 = spawn("n2", ports[2], Some(ports[0]), dir.path());
    let took = wait_for(
        Duration::from_secs(20),
        "n2 UP again with a higher generation",
        async || all_see(&ports, "n2", true, Some(old_generation)).await,
    )
    .await;
    println!("restarted node UP everywhere after {took:?}");

    // SIGSTOP n1 until the others convict it, then a while longer: back,
    // it must not take its own pause for its peers' silence.
    signal(&n1, "STOP");
    let took = wait_for(limit, "stopped n1 DOWN on n0 and n2", async || {
        all_see(&[ports[0], ports[2]], "n1", false, None).await
    })
    .await;
    println!("SIGSTOPped node marked DOWN after {took:?}");
    tokio::time::sleep(Duration::from_millis(GOSSIP_INTERVAL_MS * 10)).await;
    let log = dir.path().join("n1.log");
    let before_resume = std::fs::metadata(&log).unwrap().len() as usize;
    signal(&n1, "CONT");
    let took = wait_for(limit, "resumed n1 UP on n0 and n2", async || {
        all_see(&[ports[0], ports[2]], "n1", true, None).await
    })
    .await;
    println!("resumed node UP again after {took:?}");
    tokio::time::sleep(Duration::from_millis(GOSSIP_INTERVAL_MS * 3)).await;
    let since_resume = std::fs::read_to_string(&log).unwrap()[before_resume..].to_string();
    assert!(
        since_resume.contains("did not run for a while"),
        "n1 logs its pause: {since_resume}"
    );
    assert!(
        !since_resume.contains("peer is DOWN"),
        "n1 took its own pause for its peers' silence: {since_resume}"
    );

    // SIGTERM: a clean shutdown with exit status 0.
    signal(&n0, "TERM");
    let exit = n0.child.wait().unwrap();
    assert!(
        exit.success(),
        "SIGTERM must stop the node cleanly: {exit:?}"
    );
}
