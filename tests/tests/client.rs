//! cassio-client against a 3-node cluster: token-aware requests land on a
//! replica of their key, and with one node stopped requests keep succeeding
//! at QUORUM. Native clients share `max_clients` with Redis-protocol ones,
//! and peers never count.

use std::time::Duration;

use cassio_client::{Client, ClientConfig, ConsistencyLevel, Error};
use cassio_tests::harness::{
    TestClient, answer_until_closed, shutdown_async, start_cluster_async, wait_for,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_land_on_replicas() {
    let dir = tempfile::tempdir().unwrap();
    // RF 1: a request that lands on a replica is coordinated by the one node
    // holding the key, so each node coordinates exactly the writes it stores.
    let nodes = start_cluster_async(3, dir.path(), |c| c.replication_factor = 1).await;
    let seeds: Vec<_> = nodes.iter().map(|n| n.native_addr()).collect();
    let client = Client::connect(&seeds[..1], ClientConfig::default())
        .await
        .unwrap();
    let keys: Vec<String> = (0..300).map(|i| format!("user:{i}")).collect();
    for key in &keys {
        client.set(key.as_bytes(), b"value").await.unwrap();
        assert_eq!(
            client.get(key.as_bytes()).await.unwrap(),
            Some(b"value".to_vec())
        );
    }
    let holdings = tokio::task::spawn_blocking(move || {
        let mut held = vec![0u64; seeds.len()];
        for key in &keys {
            for (i, addr) in seeds.iter().enumerate() {
                held[i] += u64::from(TestClient::replica_cell(*addr, key.as_bytes()).is_some());
            }
        }
        (held, nodes)
    })
    .await
    .unwrap();
    let (held, nodes) = holdings;
    assert_eq!(held.iter().sum::<u64>(), 300, "RF 1: each key on one node");
    for (node, held) in nodes.iter().zip(&held) {
        let coordinated = node.cluster_status().metrics.writes;
        assert_eq!(
            coordinated,
            *held,
            "{} coordinated {coordinated} writes but holds {held} keys",
            node.node_id()
        );
        assert!(*held > 30, "placement spreads keys: {held}");
    }
    shutdown_async(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_requests_keep_succeeding_with_a_node_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster_async(3, dir.path(), |_| {}).await;
    let seeds: Vec<_> = nodes.iter().map(|n| n.native_addr()).collect();
    let config = ClientConfig {
        request_timeout: Duration::from_secs(3),
        ..ClientConfig::default()
    };
    let client = Client::connect(&seeds, config).await.unwrap();
    for i in 0..100 {
        client
            .set(format!("k{i}").as_bytes(), b"before")
            .await
            .unwrap();
    }
    let stopped = nodes.remove(2);
    tokio::task::spawn_blocking(move || stopped.shutdown().unwrap())
        .await
        .unwrap();
    for i in 0..100 {
        let key = format!("k{i}");
        assert_eq!(
            client.get(key.as_bytes()).await.unwrap(),
            Some(b"before".to_vec()),
            "{key}"
        );
        client.set(key.as_bytes(), b"after").await.unwrap();
        assert_eq!(
            client.get(key.as_bytes()).await.unwrap(),
            Some(b"after".to_vec()),
            "{key}"
        );
    }
    match client
        .get_versioned(b"k1", Some(ConsistencyLevel::All))
        .await
    {
        Err(Error::QuorumNotReached {
            level,
            required,
            received,
        }) => {
            assert_eq!((level, required, received), (ConsistencyLevel::All, 3, 2));
        }
        other => panic!("ALL with a node down must fail with the facts: {other:?}"),
    }
    shutdown_async(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_clients_share_max_clients_and_peers_never_count() {
    let dir = tempfile::tempdir().unwrap();
    // One client place per node: the two nodes still connect to each other
    // (several peer connections each way) and form their cluster.
    let nodes = start_cluster_async(2, dir.path(), |c| {
        c.max_clients = 1;
        c.resp = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let seeds: Vec<_> = nodes.iter().map(|n| n.native_addr()).collect();
    let first = Client::connect(&seeds, ClientConfig::default())
        .await
        .unwrap();
    // Writes at ALL: both nodes, so peer messages flow.
    let all = first.with_consistency(ConsistencyLevel::All);
    for i in 0..20 {
        all.set(format!("k{i}").as_bytes(), b"v").await.unwrap();
    }

    // A second client is refused by both nodes, with the reason.
    let refused = Client::connect(&seeds, ClientConfig::default()).await;
    match &refused {
        Err(Error::Transport(cassio_core::Error::HandshakeRefused { reason, .. })) => {
            assert!(reason.contains("max number of clients reached"), "{reason}");
        }
        other => panic!("a client past max_clients: {:?}", other.as_ref().err()),
    }
    // The Redis-protocol port shares the limit.
    let resp = nodes[0].resp_addr().unwrap();
    let reply = tokio::task::spawn_blocking(move || until_closed(resp, b"PING\r\n"))
        .await
        .unwrap();
    assert_eq!(reply, "-ERR max number of clients reached\r\n");
    // Peers still get in: a peer request (as the other node would send it)
    // is answered while the client place is taken.
    let peer = seeds[0];
    let stored = tokio::task::spawn_blocking(move || TestClient::replica_cell(peer, b"k1"))
        .await
        .unwrap();
    assert!(stored.is_some(), "k1 was written at ALL");

    // The first client gone, its places are free again.
    drop((first, all));
    let seeds_again = seeds.clone();
    tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        wait_for(Duration::from_secs(5), "a freed client place", || {
            runtime.block_on(async {
                match Client::connect(&seeds_again, ClientConfig::default()).await {
                    Ok(client) => client.get(b"k1").await.ok() == Some(Some(b"v".to_vec())),
                    Err(_) => false,
                }
            })
        });
        // Both refusals on node 0 (the native client's and the
        // Redis-protocol one) are counted.
        let mut info = String::new();
        wait_for(Duration::from_secs(5), "INFO on a free place", || {
            info = until_closed(resp, b"INFO stats\r\nQUIT\r\n");
            info.contains("rejected_connections:")
        });
        let rejected: u64 = info
            .lines()
            .find_map(|line| line.strip_prefix("rejected_connections:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        assert!(rejected >= 2, "{info}");
    })
    .await
    .unwrap();
    shutdown_async(nodes).await;
}

/// What a Redis-protocol port answers `input` with, up to when it closes.
fn until_closed(addr: std::net::SocketAddr, input: &[u8]) -> String {
    let reply = answer_until_closed(addr, input, Duration::from_secs(5));
    String::from_utf8_lossy(&reply).into_owned()
}
