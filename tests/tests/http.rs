//! The operators' HTTP endpoint of real nodes: Prometheus metrics that
//! follow the cluster, liveness and readiness probes, and clear answers to
//! wrong methods, unknown pages, input that is not HTTP and connections
//! over the limit.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use cassio_core::Node;
use cassio_core::coordinator::ConsistencyLevel;
use cassio_tests::harness::{TestClient, key, node_config, start_cluster, wait_for, written};

/// Sends `request` (bytes as they go on the wire) and reads the whole
/// answer: (status code, head, body).
fn exchange(addr: SocketAddr, request: &[u8]) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the HTTP port");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).expect("send the request");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read the answer");
    let answer = String::from_utf8(answer).expect("the answer is text");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (status, head.to_string(), body.to_string())
}

fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: cassio\r\nConnection: close\r\n\r\n");
    exchange(addr, request.as_bytes())
}

/// The value of one series of a metrics page, if present.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().expect("a number"))
}

#[test]
fn metrics_and_probes_follow_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(3, dir.path(), |config| {
        config.http = Some("127.0.0.1:0".parse().unwrap());
    });
    let http = nodes[0].http_addr().expect("n0 serves HTTP");

    let client = TestClient::connect(nodes[0].native_addr());
    for i in 0..20 {
        written(client.put(&key(i), b"v", ConsistencyLevel::Quorum));
    }
    assert_eq!(
        client.value(&key(3), ConsistencyLevel::Quorum),
        Some(b"v".to_vec())
    );

    let (status, head, page) = get(http, "/metrics");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert_eq!(
        sample(&page, "cassio_coordinator_writes_total"),
        Some(20.0),
        "{page}"
    );
    assert_eq!(sample(&page, "cassio_coordinator_reads_total"), Some(1.0));
    assert_eq!(sample(&page, "cassio_replication_factor"), Some(3.0));
    // Every key coordinated is timed, and each took some time.
    let writes_timed = "cassio_coordinator_write_latency_seconds_count";
    assert_eq!(sample(&page, writes_timed), Some(20.0));
    let reads_timed = "cassio_coordinator_read_latency_seconds_bucket{le=\"+Inf\"}";
    assert_eq!(sample(&page, reads_timed), Some(1.0));
    assert!(sample(&page, "cassio_coordinator_write_latency_seconds_sum") > Some(0.0));
    for node in ["n0", "n1", "n2"] {
        assert_eq!(
            sample(&page, &format!("cassio_member_up{{node=\"{node}\"}}")),
            Some(1.0)
        );
        let normal = format!("cassio_member_state{{node=\"{node}\",state=\"NORMAL\"}}");
        assert_eq!(sample(&page, &normal), Some(1.0));
    }
    // Twenty writes sit in n0's memtable (it replicates every key at RF 3).
    assert_eq!(sample(&page, "cassio_storage_memtable_entries"), Some(20.0));

    let (status, _, body) = get(http, "/health");
    assert_eq!((status, body.as_str()), (200, "n0 is serving\n"));
    let (status, _, body) = get(http, "/ready");
    assert_eq!((status, body.as_str()), (200, "n0 is NORMAL: ready\n"));

    // A node that stops is DOWN on the others' pages.
    nodes.pop().unwrap().shutdown().unwrap();
    wait_for(Duration::from_secs(10), "n2 DOWN on n0's metrics", || {
        let (_, _, page) = get(http, "/metrics");
        sample(&page, "cassio_member_up{node=\"n2\"}") == Some(0.0)
    });
}

#[test]
fn wrong_requests_get_clear_answers_and_the_node_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(1, dir.path(), |config| {
        config.http = Some("127.0.0.1:0".parse().unwrap());
        config.replication_factor = 1;
    });
    let http = nodes[0].http_addr().expect("n0 serves HTTP");

    let (status, head, body) = exchange(
        http,
        b"POST /metrics HTTP/1.1\r\nHost: c\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 405, "{head}");
    assert!(head.to_lowercase().contains("allow: get, head"), "{head}");
    assert_eq!(body, "POST is not served here: only GET and HEAD\n");

    let (status, _, body) = get(http, "/nope");
    assert_eq!(status, 404);
    assert!(
        body.starts_with("nothing at /nope; this node serves:\n/metrics"),
        "{body}"
    );

    // HEAD: the head of the page, no body.
    let (status, head, body) = exchange(
        http,
        b"HEAD /metrics HTTP/1.1\r\nHost: c\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((status, body.as_str()), (200, ""), "{head}");

    // Bytes that are not HTTP: 400, the connection closed.
    let (status, _, _) = exchange(http, b"\x00\x01 this is not HTTP\r\n\r\n");
    assert_eq!(status, 400);
    // A head larger than hyper's buffer: refused, not buffered forever.
    let huge = format!(
        "GET / HTTP/1.1\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let mut stream = TcpStream::connect(http).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(huge.as_bytes());
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => {
            let answer = String::from_utf8_lossy(&answer);
            assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
        }
        // Closed with the rest of the head unread: a reset may come first.
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }

    // More connections than the port holds (128): the next is told so
    // and closed; once they close, it serves again.
    let idle: Vec<TcpStream> = (0..128)
        .map(|_| TcpStream::connect(http).unwrap())
        .collect();
    let mut stream = TcpStream::connect(http).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 503 ")
            && answer.ends_with("\r\n\r\ntoo many HTTP connections open\n"),
        "{answer}"
    );
    drop(idle);

    // Everyone else is still served.
    wait_for(
        Duration::from_secs(5),
        "the idle connections closed",
        || {
            // While still refused the answer may end in a reset: no panic.
            let mut stream = TcpStream::connect(http).unwrap();
            let request = b"GET /health HTTP/1.1\r\nHost: c\r\nConnection: close\r\n\r\n";
            let _ = stream.write_all(request);
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer);
            answer.starts_with(b"HTTP/1.1 200 ")
        },
    );
    let (status, _, body) = get(http, "/health");
    assert_eq!((status, body.as_str()), (200, "n0 is serving\n"));
    let client = TestClient::connect(nodes[0].native_addr());
    written(client.put(b"k", b"v", ConsistencyLevel::One));
    assert_eq!(
        client.value(b"k", ConsistencyLevel::One),
        Some(b"v".to_vec())
    );
}

#[test]
fn a_joining_node_is_live_but_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    // A new node whose seed never answers stays JOINING: it has no one to
    // stream its keys from. The seed is a loopback address no test binds
    // (the tests' nodes bind 127.0.0.1), so connections are refused at
    // once. A port freed on 127.0.0.1 could be taken by a node of a test
    // running beside this one, and "lonely" would join that cluster.
    let seed: std::net::SocketAddr = "127.0.0.2:1".parse().unwrap();
    let mut config = node_config("lonely", dir.path(), vec![seed]);
    config.http = Some("127.0.0.1:0".parse().unwrap());
    let node = Node::start(config).expect("the node starts");
    let http = node.http_addr().expect("it serves HTTP");
    let (status, _, body) = get(http, "/ready");
    assert_eq!(
        (status, body.as_str()),
        (503, "lonely is JOINING: not ready\n")
    );
    let (status, _, _) = get(http, "/health");
    assert_eq!(status, 200);
    let (_, _, page) = get(http, "/metrics");
    let joining = "cassio_member_state{node=\"lonely\",state=\"JOINING\"}";
    assert_eq!(sample(&page, joining), Some(1.0), "{page}");
}
