//! cassio-client against a 3-node cluster: token-aware requests land on a
//! replica of their key, and with one node stopped requests keep succeeding
//! at QUORUM.

use std::time::Duration;

use cassio_client::{Client, ClientConfig, ConsistencyLevel, Error};
use cassio_tests::harness::{TestClient, shutdown_async, start_cluster_async};

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
