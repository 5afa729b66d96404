//! A cluster with a password (`--password`): its nodes find each other;
//! clients without it, or with a wrong one, are refused with a sentence,
//! on the native port and on the Redis port (NOAUTH until AUTH, as Redis
//! with `requirepass`); a node started with another password cannot join.

use std::io::{Read, Write};
use std::time::Duration;

use cassio_client::{Client, ClientConfig, Secret};
use cassio_core::{Node, NodeHandle};
use cassio_tests::harness::{node_config, shutdown_async, start_cluster};

const PASSWORD: &str = "s3cret";

fn with_password(password: &str) -> ClientConfig {
    ClientConfig {
        password: Some(Secret::new(password)),
        request_timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    }
}

fn start(dir: &std::path::Path) -> Vec<NodeHandle> {
    start_cluster(2, dir, |c| {
        c.password = Some(Secret::new(PASSWORD));
        c.resp = Some("127.0.0.1:0".parse().unwrap());
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_clients_must_give_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let nodes = tokio::task::spawn_blocking(move || start(&path))
        .await
        .unwrap();
    let seeds = [nodes[0].native_addr()];
    for (config, expected) in [
        (ClientConfig::default(), "requires a password"),
        (with_password("guess"), "wrong password"),
    ] {
        match Client::connect(&seeds, config).await {
            Err(e) => assert!(e.to_string().contains(expected), "{e}"),
            Ok(_) => panic!("connected without the password ({expected})"),
        }
    }
    let client = Client::connect(&seeds, with_password(PASSWORD))
        .await
        .unwrap();
    client.set(b"k", b"v").await.unwrap();
    // Peers authenticate too: the write reached both replicas.
    let all = client.with_consistency(cassio_client::ConsistencyLevel::All);
    assert_eq!(all.get(b"k").await.unwrap(), Some(b"v".to_vec()));
    shutdown_async(nodes).await;
}

/// What `input` gets back on a fresh connection, once `expect_len` bytes
/// have come.
fn exchange(addr: std::net::SocketAddr, input: &[u8], expect_len: usize) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(input).unwrap();
    let mut answer = vec![0u8; expect_len];
    stream.read_exact(&mut answer).unwrap();
    String::from_utf8(answer).unwrap()
}

#[test]
fn redis_clients_must_authenticate_first() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start(dir.path());
    let addr = nodes[0].resp_addr().unwrap();

    // Nothing runs before AUTH; a pipeline that authenticates midway runs
    // what follows.
    let expected = "-NOAUTH Authentication required.\r\n\
                    -WRONGPASS invalid username-password pair or user is disabled.\r\n\
                    +OK\r\n+OK\r\n$1\r\nc\r\n";
    let answer = exchange(
        addr,
        b"SET a b\r\nAUTH guess\r\nAUTH s3cret\r\nSET a c\r\nGET a\r\n",
        expected.len(),
    );
    assert_eq!(answer, expected);
    // RESET forgets the authentication, as Redis's does.
    let expected = "+OK\r\n$1\r\nc\r\n+RESET\r\n-NOAUTH Authentication required.\r\n";
    let answer = exchange(
        addr,
        b"AUTH s3cret\r\nGET a\r\nRESET\r\nGET a\r\n",
        expected.len(),
    );
    assert_eq!(answer, expected);
    let hello = exchange(addr, b"HELLO 3\r\n", 9);
    assert_eq!(hello, "-NOAUTH H", "HELLO without AUTH is refused");

    // The redis crate: without a password, refused; with it (sent as AUTH
    // on connect), served.
    let url = |password: &str| format!("redis://:{password}@{addr}/");
    let mut anonymous = redis::Client::open(format!("redis://{addr}/"))
        .unwrap()
        .get_connection()
        .unwrap();
    let refused = redis::cmd("GET")
        .arg("a")
        .query::<Option<String>>(&mut anonymous)
        .unwrap_err();
    assert!(
        refused.to_string().contains("Authentication required"),
        "{refused}"
    );
    assert!(
        redis::Client::open(url("guess"))
            .unwrap()
            .get_connection()
            .is_err()
    );
    let mut con = redis::Client::open(url(PASSWORD))
        .unwrap()
        .get_connection()
        .unwrap();
    let value: String = redis::cmd("GET").arg("a").query(&mut con).unwrap();
    assert_eq!(value, "c");
    // HELLO with AUTH authenticates and switches protocol at once.
    let mut resp3 = redis::Client::open(format!("{}?protocol=resp3", url(PASSWORD)))
        .unwrap()
        .get_connection()
        .unwrap();
    let value: String = redis::cmd("GET").arg("a").query(&mut resp3).unwrap();
    assert_eq!(value, "c");
    for node in nodes {
        node.shutdown().unwrap();
    }
}

#[test]
fn auth_on_a_node_without_a_password_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(1, dir.path(), |c| {
        c.resp = Some("127.0.0.1:0".parse().unwrap());
    });
    let addr = nodes[0].resp_addr().unwrap();
    let expected = "-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?\r\n+OK\r\n";
    assert_eq!(
        exchange(addr, b"AUTH x\r\nAUTH default x\r\n", expected.len()),
        expected
    );
    for node in nodes {
        node.shutdown().unwrap();
    }
}

#[test]
fn a_node_with_another_password_cannot_join() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start(dir.path());
    let mut config = node_config("intruder", dir.path(), vec![nodes[0].native_addr()]);
    config.password = Some(Secret::new("other"));
    match Node::start(config) {
        Err(e) => assert!(e.to_string().contains("wrong password"), "{e}"),
        Ok(_) => panic!("a node with the wrong password joined"),
    }
    for node in nodes {
        node.shutdown().unwrap();
    }
}
