//! Acknowledged writes survive SIGKILL of real `cassio-node` processes: a
//! client writes at QUORUM for 20 s (through n0 and n1 in turn) while n2 is
//! SIGKILLed and restarted every 5 s; afterwards every key reads back at ALL
//! with its last acknowledged value (or a later write whose acknowledgement
//! was lost, which may legitimately have landed).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cassio_core::coordinator::ConsistencyLevel;
use cassio_core::net::{Connection, Tcp};
use cassio_core::proto::{Hello, Request, Response, Role};

const KEYS: u32 = 300;
const LOAD_SECONDS: u64 = 20;
const KILL_EVERY: Duration = Duration::from_secs(5);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(name: &str, port: u16, seed: u16, dir: &std::path::Path) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_cassio-node"))
        .args(["--name", name, "--listen", &format!("127.0.0.1:{port}")])
        .args(["--resp", &format!("127.0.0.1:{}", free_port())])
        .args(["--data-dir", dir.join(name).to_str().unwrap()])
        .args(["--seeds", &format!("127.0.0.1:{seed}")])
        .args([
            "--vnodes",
            "16",
            "--gossip-interval-ms",
            "200",
            "--log",
            "error",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Proc(child)
}

async fn connect(port: u16) -> Option<Connection> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    Connection::open(
        &Tcp,
        addr,
        Hello::new("cassio", Role::Client, None),
        1 << 20,
        Duration::from_secs(1),
    )
    .await
    .ok()
}

async fn call(port: u16, request: Request) -> Option<Response> {
    connect(port)
        .await?
        .request(request, Duration::from_secs(5))
        .await
        .ok()
}

async fn all_up(ports: &[u16]) -> bool {
    for &port in ports {
        match call(port, Request::ClusterStatus).await {
            Some(Response::ClusterStatus(s))
                if s.members.len() == ports.len() && s.members.iter().all(|m| m.up) => {}
            _ => return false,
        }
    }
    true
}

async fn wait_all_up(ports: &[u16], limit: Duration) {
    let start = Instant::now();
    while !all_up(ports).await {
        assert!(
            start.elapsed() < limit,
            "cluster not all UP after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a key may read as at the end: its last acknowledged value, or any
/// value written after it whose outcome is unknown.
#[derive(Default)]
struct Expect {
    acked: Option<String>,
    unknown_after: Vec<String>,
}

#[tokio::test(flavor = "current_thread")]
async fn acknowledged_quorum_writes_survive_repeated_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port(), free_port()];
    let _n0 = spawn("n0", ports[0], ports[0], dir.path());
    let _n1 = spawn("n1", ports[1], ports[0], dir.path());
    let mut n2 = spawn("n2", ports[2], ports[0], dir.path());
    wait_all_up(&ports, Duration::from_secs(20)).await;

    let mut expect: BTreeMap<u32, Expect> = BTreeMap::new();
    let mut coordinators = [connect(ports[0]).await, connect(ports[1]).await];
    let (start, mut last_kill) = (Instant::now(), Instant::now());
    let (mut acked, mut failed, mut kills, mut n) = (0u64, 0u64, 0, 0u64);
    while start.elapsed() < Duration::from_secs(LOAD_SECONDS) {
        if last_kill.elapsed() >= KILL_EVERY {
            n2.0.kill().unwrap(); // SIGKILL
            n2.0.wait().unwrap();
            n2 = spawn("n2", ports[2], ports[0], dir.path());
            last_kill = Instant::now();
            kills += 1;
        }
        let key = (n % u64::from(KEYS)) as u32;
        let value = format!("v{n}");
        let which = (n % 2) as usize;
        if coordinators[which].as_ref().is_none_or(|c| c.is_closed()) {
            coordinators[which] = connect(ports[which]).await;
        }
        let request = Request::Put {
            key: format!("key{key}").into_bytes(),
            value: value.clone().into_bytes(),
            level: Some(ConsistencyLevel::Quorum),
            timestamp: None,
            ttl_ms: None,
        };
        let outcome = match &coordinators[which] {
            Some(conn) => conn.request(request, Duration::from_secs(5)).await.ok(),
            None => None,
        };
        let slot = expect.entry(key).or_default();
        if matches!(outcome, Some(Response::Written { .. })) {
            slot.acked = Some(value);
            slot.unknown_after.clear();
            acked += 1;
        } else {
            slot.unknown_after.push(value);
            failed += 1;
        }
        n += 1;
    }
    println!("{acked} writes acknowledged, {failed} not, {kills} SIGKILLs of n2");
    assert!(
        kills >= 3 && acked > 1000,
        "the load must run through the kills"
    );

    wait_all_up(&ports, Duration::from_secs(30)).await;
    let reader = connect(ports[1])
        .await
        .expect("connect for the final reads");
    for (key, slot) in &expect {
        let request = Request::Get {
            key: format!("key{key}").into_bytes(),
            level: Some(ConsistencyLevel::All),
        };
        let got = match reader.request(request, Duration::from_secs(5)).await {
            Ok(Response::Value { value, .. }) => value.map(|v| String::from_utf8(v).unwrap()),
            other => panic!("ALL read of key{key} failed: {other:?}"),
        };
        let allowed = got.as_ref() == slot.acked.as_ref()
            || got.as_ref().is_some_and(|g| slot.unknown_after.contains(g));
        assert!(
            allowed,
            "key{key}: read {got:?}, last acknowledged {:?}",
            slot.acked
        );
    }
}
