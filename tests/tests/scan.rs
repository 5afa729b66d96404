//! Range scans through cassio-client against in-process clusters: every
//! live key comes back once, in key order, with its newest value, page by
//! page, whichever nodes hold it; deleted keys stay out; replicas that
//! disagree are read-repaired; a scan with more nodes missing than its
//! level allows fails with the facts.

use std::time::Duration;

use cassio_client::{Client, ClientConfig, ConsistencyLevel, Error, KeyRange, ScanEntry};
use cassio_core::proto::{KeyedCell, Request, Response};
use cassio_core::storage::Cell;
use cassio_tests::harness::{TestClient, key, shutdown_async, start_cluster_async, wait_for};

/// Every page of `range`, `limit` keys at a time.
async fn scan_all(client: &Client, range: KeyRange, limit: u32) -> Vec<ScanEntry> {
    let mut entries = Vec::new();
    let mut rest = Some(range);
    let mut pages = 0;
    while let Some(range) = rest {
        let page = client.scan(&range, limit, None).await.unwrap();
        assert!(page.entries.len() <= limit as usize);
        entries.extend(page.entries);
        rest = page.next;
        pages += 1;
        assert!(pages < 10_000, "a scan that never ends");
    }
    entries
}

fn pairs(entries: &[ScanEntry]) -> Vec<(Vec<u8>, Vec<u8>)> {
    entries
        .iter()
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_return_every_live_key_once_in_order_with_its_newest_value() {
    let dir = tempfile::tempdir().unwrap();
    // RF 2 of 4: each node holds about half the keys, and each node's
    // share differs.
    let nodes = start_cluster_async(4, dir.path(), |c| c.replication_factor = 2).await;
    let seeds: Vec<_> = nodes.iter().map(|n| n.native_addr()).collect();
    let client = Client::connect(&seeds[..1], ClientConfig::default())
        .await
        .unwrap();
    let value = |i: u32| format!("value-{i}").into_bytes();
    for i in 0..600 {
        client.set(&key(i), &value(i)).await.unwrap();
    }
    // A run of deletes longer than a page: pages made only of tombstones.
    for i in 100..400 {
        client.delete(&key(i), None).await.unwrap();
    }
    for i in (400..600).step_by(7) {
        client.delete(&key(i), None).await.unwrap();
    }
    let deleted = |i: u32| (100..400).contains(&i) || (i >= 400 && (i - 400).is_multiple_of(7));
    let live = |i: &u32| !deleted(*i);
    let expected: Vec<(Vec<u8>, Vec<u8>)> =
        (0..600).filter(live).map(|i| (key(i), value(i))).collect();

    for limit in [1, 37, 1000] {
        let found = scan_all(&client, KeyRange::all(), limit).await;
        assert_eq!(pairs(&found), expected, "pages of {limit}");
    }
    // Only the keys of a prefix; from a key on.
    let prefix = scan_all(&client, KeyRange::prefix(b"key005"), 10).await;
    let in_prefix: Vec<_> = expected
        .iter()
        .filter(|(k, _)| k.starts_with(b"key005"))
        .cloned()
        .collect();
    assert_eq!(pairs(&prefix), in_prefix);
    let page = client
        .scan(&KeyRange::from(&key(99)), 3, None)
        .await
        .unwrap();
    let keys: Vec<Vec<u8>> = page.entries.iter().map(|e| e.key.clone()).collect();
    assert_eq!(
        keys,
        [key(99), key(400 + 1), key(400 + 2)],
        "past the deletes"
    );

    // Replicas that disagree: one replica of key 1 holds a newer value the
    // other lacks, and one replica of key 2 holds an older one. The scan
    // answers with the newest of each, as a read at ALL does.
    let addrs = seeds.clone();
    let replicas = move |k: &[u8]| -> Vec<std::net::SocketAddr> {
        addrs
            .iter()
            .copied()
            .filter(|addr| TestClient::replica_cell(*addr, k).is_some())
            .collect()
    };
    let (key1, key2) = (key(1), key(2));
    let (replicas1, replicas2) = tokio::task::spawn_blocking({
        let (key1, key2) = (key1.clone(), key2.clone());
        move || (replicas(&key1), replicas(&key2))
    })
    .await
    .unwrap();
    assert_eq!((replicas1.len(), replicas2.len()), (2, 2), "RF 2");
    let newest = client.get_versioned(&key1, None).await.unwrap().unwrap();
    tokio::task::spawn_blocking({
        let (key1, key2) = (key1.clone(), key2.clone());
        let (replicas1, replicas2) = (replicas1.clone(), replicas2.clone());
        move || {
            let write = |addr, key: Vec<u8>, cell: Cell| {
                let request = Request::ReplicaWrites(vec![KeyedCell { key, cell }]);
                let answer = TestClient::peer_request(addr, "scan-test", request);
                assert_eq!(answer, Response::Done);
            };
            write(
                replicas1[0],
                key1,
                Cell::value("newer", newest.timestamp + 1),
            );
            write(replicas2[0], key2, Cell::value("older", 1));
        }
    })
    .await
    .unwrap();
    let page = client.scan(&KeyRange::all(), 3, None).await.unwrap();
    assert_eq!(
        pairs(&page.entries),
        [
            (key(0), value(0)),
            (key1.clone(), b"newer".to_vec()),
            (key2.clone(), value(2))
        ]
    );
    // And read repair: the scan (at QUORUM) answered once the replica that
    // lacked key 1's newer value was written it. (Key 2's older cell
    // changes nothing a read sees: the newer one wins on that replica.)
    let live = |addr, key: &[u8]| {
        TestClient::replica_cell(addr, key).and_then(|c| c.live_value(0).map(<[u8]>::to_vec))
    };
    // Socket addresses are Copy: each closure takes the ones it needs.
    let (stale1, lagging2, ahead2) = (replicas1[1], replicas2[0], replicas2[1]);
    let repaired = tokio::task::spawn_blocking({
        let key1 = key1.clone();
        move || live(stale1, &key1)
    })
    .await
    .unwrap();
    assert_eq!(repaired, Some(b"newer".to_vec()));
    // At ONE the page is answered first and the repair follows: one
    // replica of key 2 now holds a newer value the other lacks.
    let newest2 = client.get_versioned(&key2, None).await.unwrap().unwrap();
    tokio::task::spawn_blocking({
        let key2 = key2.clone();
        move || {
            let request = Request::ReplicaWrites(vec![KeyedCell {
                key: key2,
                cell: Cell::value("newest", newest2.timestamp + 1),
            }]);
            let answer = TestClient::peer_request(ahead2, "scan-test", request);
            assert_eq!(answer, Response::Done);
        }
    })
    .await
    .unwrap();
    let one = client.with_consistency(ConsistencyLevel::One);
    let page = one.scan(&KeyRange::all(), 3, None).await.unwrap();
    assert_eq!(page.entries[2].value, b"newest");
    tokio::task::spawn_blocking(move || {
        wait_for(Duration::from_secs(5), "the ONE scan's repair", || {
            live(lagging2, &key2) == Some(b"newest".to_vec())
        })
    })
    .await
    .unwrap();

    // Bad requests: a sentence, and the node goes on serving.
    match client.scan(&KeyRange::all(), 0, None).await {
        Err(Error::Invalid(message)) => assert!(message.contains("1 to 10000"), "{message}"),
        other => panic!("a scan of 0 keys is refused: {other:?}"),
    }
    match client.scan(&KeyRange::from(b""), 5, None).await {
        Err(Error::Invalid(message)) => assert!(message.contains("scan bound"), "{message}"),
        other => panic!("an empty start key is refused: {other:?}"),
    }
    // A range that ends before it starts holds nothing.
    let backwards = KeyRange {
        start: std::ops::Bound::Included(key(500)),
        end: Some(key(5)),
    };
    let page = client.scan(&backwards, 10, None).await.unwrap();
    assert!(page.entries.is_empty() && page.next.is_none());
    assert_eq!(client.get(&key(0)).await.unwrap(), Some(value(0)));
    shutdown_async(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_with_a_node_down_succeeds_at_quorum_and_fails_at_all_with_the_facts() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster_async(3, dir.path(), |_| {}).await;
    let seeds: Vec<_> = nodes.iter().map(|n| n.native_addr()).collect();
    let config = ClientConfig {
        request_timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    };
    let client = Client::connect(&seeds[..1], config).await.unwrap();
    let all = client.with_consistency(ConsistencyLevel::All);
    for i in 0..200 {
        all.set(&key(i), b"v").await.unwrap();
    }
    let stopped = nodes.remove(2);
    tokio::task::spawn_blocking(move || stopped.shutdown().unwrap())
        .await
        .unwrap();
    let found = scan_all(&client, KeyRange::all(), 64).await;
    let expected: Vec<Vec<u8>> = (0..200).map(key).collect();
    let keys: Vec<Vec<u8>> = found.into_iter().map(|e| e.key).collect();
    assert_eq!(keys, expected, "QUORUM of RF 3 spares one node");
    match all.scan(&KeyRange::all(), 10, None).await {
        Err(Error::QuorumNotReached {
            level,
            required,
            received,
        }) => assert_eq!((level, required, received), (ConsistencyLevel::All, 3, 2)),
        other => panic!("ALL with a node down must fail with the facts: {other:?}"),
    }
    shutdown_async(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_large_values_stay_within_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster_async(2, dir.path(), |c| c.replication_factor = 1).await;
    let client = Client::connect(&[nodes[0].native_addr()], ClientConfig::default())
        .await
        .unwrap();
    // 12 values of 1 MiB: more than one page's 4 MiB, on either node.
    let value = |i: u32| vec![b'a' + i as u8; 1024 * 1024];
    for i in 0..12 {
        client.set(&key(i), &value(i)).await.unwrap();
    }
    let mut found = Vec::new();
    let mut rest = Some(KeyRange::all());
    let mut pages = 0;
    while let Some(range) = rest {
        let page = client.scan(&range, 100, None).await.unwrap();
        let bytes: usize = page.entries.iter().map(|e| e.value.len()).sum();
        assert!(bytes <= 4 * 1024 * 1024, "a page of {bytes} bytes");
        found.extend(page.entries);
        rest = page.next;
        pages += 1;
        assert!(pages <= 12, "every page holds at least one key");
    }
    assert!(pages >= 3, "12 MiB in pages of at most 4: {pages}");
    assert_eq!(
        pairs(&found),
        (0..12).map(|i| (key(i), value(i))).collect::<Vec<_>>()
    );
    shutdown_async(nodes).await;
}
