//! Nodes joining and leaving a cluster of in-process nodes (real TCP on
//! loopback, hinted handoff off so nothing but the membership change itself
//! can move data): a decommissioned node hands every key it held, and every
//! write that reached it while it left, to the nodes that take its keys
//! over, then stops and refuses to start again on its old data; when a dead
//! node is removed, or a new one joins, every key ends up on all of its
//! replicas by the new ring, also where the change moved a key between two
//! nodes that did not change; after a join, a cleanup drops from each old
//! node exactly the keys it no longer replicates; a joiner that died holds
//! the next join until it is removed; and what may not happen
//! (the last node leaving, a leave or cleanup while a peer is down,
//! removing a live node, a removed node restarting on its old data) is
//! refused with a clear answer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cassio_core::NodeConfig;
use cassio_core::cluster::NodeStatus;
use cassio_core::coordinator::ConsistencyLevel::{self, All, One};
use cassio_core::proto::{CleanupSummary, KeyRange, MoveSummary, Request, Response};
use cassio_core::types::NodeId;
use cassio_core::{Node, NodeHandle};
use cassio_tests::harness::{
    TestClient, key, node_config, ring_seen_by, start_cluster, wait_for, wait_until_all_see,
    written,
};

fn no_hints(config: &mut NodeConfig) {
    config.hinted_handoff = false;
}

fn rf2(config: &mut NodeConfig) {
    no_hints(config);
    config.replication_factor = 2;
}

/// A new RF 2 cluster of four nodes holding keys `0..count` (value `v{i}`),
/// written at ALL.
fn rf2_cluster_with(dir: &std::path::Path, count: u32) -> (Vec<NodeHandle>, TestClient) {
    let nodes = start_cluster(4, dir, rf2);
    let client = TestClient::connect(nodes[0].native_addr());
    for i in 0..count {
        written(client.put(&key(i), format!("v{i}").as_bytes(), All));
    }
    (nodes, client)
}

/// Writes keys `first..` (value `during`) through the node at `addr` at
/// `level` until `stop` (at most to key 19,999); the acknowledged ones.
fn write_until(
    addr: std::net::SocketAddr,
    first: u32,
    level: ConsistencyLevel,
    stop: &AtomicBool,
) -> Vec<u32> {
    let client = TestClient::connect(addr);
    let mut acknowledged = Vec::new();
    for i in first..20_000 {
        if stop.load(Ordering::Acquire) {
            break;
        }
        if let Response::Written { .. } = client.put(&key(i), b"during", level) {
            acknowledged.push(i);
        }
    }
    acknowledged
}

fn decommission(node: &NodeHandle) -> MoveSummary {
    match TestClient::connect(node.native_addr()).request(Request::Decommission) {
        Response::Decommissioned(summary) => summary,
        other => panic!("decommission: {other:?}"),
    }
}

fn remove(via: &NodeHandle, node: &NodeId) -> MoveSummary {
    let request = Request::RemoveNode { node: node.clone() };
    match TestClient::connect(via.native_addr()).request(request) {
        Response::NodeRemoved(summary) => summary,
        other => panic!("removenode: {other:?}"),
    }
}

/// The value every replica of key `i` holds by `ring_of`'s ring, which
/// must be the same on all of them.
fn held_by_every_replica(
    ring_of: &NodeHandle,
    nodes: &[NodeHandle],
    replication_factor: usize,
    i: u32,
) -> Option<Vec<u8>> {
    let ring = ring_seen_by(ring_of);
    let replicas = ring.replica_set(&key(i), replication_factor);
    assert_eq!(replicas.len(), replication_factor);
    let values: Vec<Option<Vec<u8>>> = replicas
        .iter()
        .map(|name| {
            let node = nodes.iter().find(|n| n.node_id() == *name).unwrap();
            TestClient::replica_cell(node.native_addr(), &key(i))
                .and_then(|cell| cell.live_value(0).map(<[u8]>::to_vec))
        })
        .collect();
    assert!(
        values.windows(2).all(|w| w[0] == w[1]),
        "replicas of key {i} differ: {values:?}"
    );
    values[0].clone()
}

#[test]
fn a_decommissioned_node_hands_over_its_keys_and_the_writes_made_while_it_left() {
    let dir = tempfile::tempdir().unwrap();
    // One copy of each key: only the leave itself can keep a key alive.
    let rf1 = |config: &mut NodeConfig| {
        no_hints(config);
        config.replication_factor = 1;
    };
    let nodes = start_cluster(4, dir.path(), rf1);
    let client = TestClient::connect(nodes[0].native_addr());
    for i in 0..1000 {
        written(client.put(&key(i), format!("v{i}").as_bytes(), One));
    }
    let leaver = nodes[3].node_id().clone();
    let ring = ring_seen_by(&nodes[0]);
    let held = (0..1000)
        .filter(|i| ring.replica_set(&key(*i), 1)[0] == &leaver)
        .count() as u64;
    assert!(held > 100, "n3 holds a share of the keys: {held}");

    // While n3 leaves, a client keeps writing new keys through n0: those
    // written after the stream passed them reach the new owners only
    // because n0 writes them there too (pending replicas).
    let stop = AtomicBool::new(false);
    let (summary, acknowledged) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| write_until(nodes[0].native_addr(), 1000, One, &stop));
        std::thread::sleep(Duration::from_millis(100));
        let summary = decommission(&nodes[3]);
        // Left, and out of its own ring, n3 stops a gossip interval later.
        // A coordinator that still places keys on it must not take an
        // empty page from it for a vote that it holds none of them.
        let scan_step = Request::ReplicaScan {
            range: KeyRange::all(),
            limit: 100,
        };
        match TestClient::try_peer_request(nodes[3].native_addr(), "n0", scan_step) {
            Ok(Response::Error { message }) => {
                assert!(message.contains("not in its own ring"), "{message}")
            }
            Err(_) => {} // already stopped
            Ok(other) => panic!("a left node answered a scan step: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::Release);
        (summary, writer.join().unwrap())
    });
    assert!(summary.failed.is_empty(), "{summary:?}");
    assert_eq!(
        summary.streamed_from.len(),
        4,
        "every node, n3 too: {summary:?}"
    );
    assert!(
        summary.streamed.cells_streamed >= held,
        "every key n3 held was streamed: {summary:?}, held {held}"
    );
    assert_eq!(summary.streamed.nodes_streamed_to, 3, "{summary:?}");
    assert_eq!(summary.peers_unconfirmed, 0, "{summary:?}");
    assert!(acknowledged.len() > 100, "the writer kept writing");

    // n3 stops on its own; the others see it LEFT and place keys without it.
    let mut left = nodes[3].left();
    wait_for(Duration::from_secs(5), "n3 to stop", || {
        *left.borrow_and_update()
    });
    for node in &nodes[..3] {
        let status = node.members();
        let n3 = status.iter().find(|m| m.node == leaver).unwrap();
        assert_eq!(n3.status, NodeStatus::Left);
        assert!(!ring_seen_by(node).nodes().contains(&leaver));
    }
    for i in 0..1000 {
        assert_eq!(
            client.value(&key(i), One),
            Some(format!("v{i}").into_bytes()),
            "key {i} after n3 left"
        );
    }
    let lost: Vec<u32> = acknowledged
        .iter()
        .copied()
        .filter(|i| client.value(&key(*i), One).is_none())
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost, first {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );

    // Its old data directory will not start again.
    let mut nodes = nodes;
    nodes.pop().unwrap().shutdown().unwrap();
    let mut config = node_config("n3", dir.path(), vec![nodes[0].native_addr()]);
    rf1(&mut config);
    let refusal = Node::start(config)
        .err()
        .expect("a left node must not start");
    assert!(
        refusal.to_string().contains("has left the cluster"),
        "{refusal}"
    );
}

#[test]
fn removing_a_dead_node_restores_the_replicas_of_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, client) = rf2_cluster_with(dir.path(), 400);
    let dead = nodes[3].node_id().clone();
    nodes.pop().unwrap().shutdown().unwrap();
    wait_for(Duration::from_secs(20), "every node to see n3 DOWN", || {
        nodes
            .iter()
            .all(|node| node.members().iter().any(|m| m.node == dead && !m.up))
    });

    // What may not happen now is refused, and changes nothing.
    for (request, what) in [
        (Request::Decommission, "a leave"),
        (Request::Cleanup, "a cleanup"),
    ] {
        match TestClient::connect(nodes[0].native_addr()).request(request) {
            Response::Error { message } => assert!(message.contains("n3"), "{message}"),
            other => panic!("{what} while n3 is down: {other:?}"),
        }
    }
    for (node, why) in [("n1", "is UP"), ("n9", "no node named")] {
        let request = Request::RemoveNode { node: node.into() };
        match client.request(request) {
            Response::Invalid { message } => assert!(message.contains(why), "{message}"),
            other => panic!("removing {node}: {other:?}"),
        }
    }
    assert_eq!(ring_seen_by(&nodes[0]).nodes().len(), 4);

    let summary = remove(&nodes[1], &dead);
    assert_eq!(summary.node, dead);
    assert!(summary.failed.is_empty(), "{summary:?}");
    assert_eq!(summary.streamed_from.len(), 3, "{summary:?}");
    assert!(summary.streamed.cells_streamed > 0, "{summary:?}");
    assert_eq!(summary.peers_unconfirmed, 0, "{summary:?}");
    for node in &nodes {
        assert!(!ring_seen_by(node).nodes().contains(&dead));
    }
    // Every key is on both of its replicas by the new ring, without a read
    // to repair it: also keys whose new replicas are two nodes that held
    // nothing of them (a removed owner moves a key to its next most
    // similar vnode and that node's ring neighbour).
    for i in 0..400 {
        assert_eq!(
            held_by_every_replica(&nodes[0], &nodes, 2, i),
            Some(format!("v{i}").into_bytes()),
            "key {i}"
        );
    }
    // Removing it again streams again (say, after a node was down during
    // the first removal), and changes nothing.
    let again = remove(&nodes[0], &dead);
    assert!(again.failed.is_empty(), "{again:?}");
    assert_eq!(
        held_by_every_replica(&nodes[0], &nodes, 2, 7),
        Some(b"v7".to_vec())
    );

    // The removed node comes back on its old data: refused, with why and
    // what to do. With its data directory emptied, it joins as a new node.
    let mut config = node_config("n3", dir.path(), vec![nodes[0].native_addr()]);
    rf2(&mut config);
    let refused = Node::start(config.clone())
        .err()
        .expect("a removed node restarting");
    assert!(
        matches!(refused, cassio_core::Error::RemovedFromCluster { .. }),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("empty its data directory"),
        "{refused}"
    );
    assert!(
        !ring_seen_by(&nodes[0]).nodes().contains(&dead),
        "nothing changed"
    );
    std::fs::remove_dir_all(dir.path().join("n3")).unwrap();
    nodes.push(Node::start(config).unwrap());
    wait_for(
        Duration::from_secs(30),
        "n3 NORMAL again everywhere",
        || {
            nodes.iter().all(|node| {
                node.members()
                    .iter()
                    .all(|m| m.status == NodeStatus::Normal && m.up)
            })
        },
    );
    for i in 0..400 {
        assert_eq!(
            held_by_every_replica(&nodes[0], &nodes, 2, i),
            Some(format!("v{i}").into_bytes()),
            "key {i} after n3 joined again"
        );
    }
}

#[test]
fn the_only_node_holding_data_cannot_leave() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(1, dir.path(), no_hints);
    match TestClient::connect(nodes[0].native_addr()).request(Request::Decommission) {
        Response::Invalid { message } => assert!(message.contains("only node"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(!*nodes[0].left().borrow());
    let client = TestClient::connect(nodes[0].native_addr());
    written(client.put(&key(1), b"v", One));
    assert_eq!(client.value(&key(1), One), Some(b"v".to_vec()));
}

#[test]
fn a_new_node_may_not_take_the_name_of_a_member() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(3, dir.path(), rf2);
    let client = TestClient::connect(nodes[0].native_addr());
    for i in 0..50 {
        written(client.put(&key(i), format!("v{i}").as_bytes(), All));
    }
    // n1's name again, on another address and an empty directory: before
    // it gossips it asks its seed, which knows n1 NORMAL.
    let mut twin = node_config("n1", &dir.path().join("twin"), vec![nodes[0].native_addr()]);
    rf2(&mut twin);
    let refused = Node::start(twin).map(|_| ()).unwrap_err().to_string();
    assert!(
        refused.contains("node name n1 is already taken in this cluster (NORMAL at")
            && refused.contains("cassio removenode n1"),
        "{refused}"
    );
    // The seed's own name: the seed refuses its handshake.
    let mut seed_twin = node_config("n0", &dir.path().join("twin"), vec![nodes[0].native_addr()]);
    rf2(&mut seed_twin);
    let refused = Node::start(seed_twin).map(|_| ()).unwrap_err().to_string();
    assert!(refused.contains("is this node's own"), "{refused}");
    assert!(
        !dir.path().join("twin/n1/joining").exists(),
        "a refused node does not leave a joining marker"
    );

    // Nothing changed: every node sees the three members NORMAL at their
    // own addresses, and every key is read at ALL.
    std::thread::sleep(Duration::from_millis(500));
    for node in &nodes {
        let members = node.members();
        assert_eq!(members.len(), 3);
        for (member, holder) in members.iter().zip(&nodes) {
            assert_eq!(member.node, *holder.node_id());
            assert_eq!(member.native_addr, holder.native_addr());
            assert_eq!(member.status, NodeStatus::Normal);
        }
    }
    for i in 0..50 {
        assert_eq!(
            client.value(&key(i), All),
            Some(format!("v{i}").into_bytes())
        );
    }
}

#[test]
fn a_joining_node_and_the_nodes_it_reshuffles_get_every_key_they_replicate() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, _) = rf2_cluster_with(dir.path(), 600);
    let before = ring_seen_by(&nodes[0]);
    // A client keeps writing through n0 while n4 joins: writes after the
    // streams passed their keys reach the new replicas only because n0
    // writes them there too (pending replicas).
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let writer = {
        let (n0, stop) = (nodes[0].native_addr(), stop.clone());
        std::thread::spawn(move || write_until(n0, 600, All, &stop))
    };
    let mut config = node_config("n4", dir.path(), vec![nodes[0].native_addr()]);
    rf2(&mut config);
    nodes.push(Node::start(config).unwrap());
    let own_status = |node: &NodeHandle| {
        let members = node.members();
        members
            .iter()
            .find(|m| m.node == *node.node_id())
            .unwrap()
            .status
    };
    assert_eq!(
        own_status(&nodes[4]),
        NodeStatus::Joining,
        "a new node starts JOINING"
    );
    let all: Vec<&NodeHandle> = nodes.iter().collect();
    wait_until_all_see(&all, &nodes[4], Duration::from_secs(10));
    wait_for(Duration::from_secs(30), "n4 NORMAL everywhere", || {
        nodes.iter().all(|node| {
            node.members()
                .iter()
                .all(|m| m.status == NodeStatus::Normal)
        })
    });
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Release);
    let acknowledged = writer.join().unwrap();
    assert!(acknowledged.len() > 10, "the writer kept writing");
    let after = ring_seen_by(&nodes[0]);
    assert_eq!(after.nodes().len(), 5);
    // Keys that moved to a node other than n4 which did not hold them.
    let n4 = nodes[4].node_id().clone();
    let reshuffled = (0..600)
        .filter(|i| {
            let old = before.replica_set(&key(*i), 2);
            after
                .replica_set(&key(*i), 2)
                .iter()
                .any(|node| **node != n4 && !old.contains(node))
        })
        .count();
    assert!(reshuffled > 0, "the join moved keys between old nodes too");
    for i in 0..600 {
        assert_eq!(
            held_by_every_replica(&nodes[0], &nodes, 2, i),
            Some(format!("v{i}").into_bytes()),
            "key {i}"
        );
    }
    for i in acknowledged {
        assert_eq!(
            held_by_every_replica(&nodes[0], &nodes, 2, i),
            Some(b"during".to_vec()),
            "key {i}, written during the join"
        );
    }
}

#[test]
fn a_joiner_that_died_holds_the_next_join_until_it_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, _) = rf2_cluster_with(dir.path(), 300);
    let joiner = |name: &str, nodes: &[NodeHandle]| {
        let mut config = node_config(name, dir.path(), vec![nodes[0].native_addr()]);
        rf2(&mut config);
        Node::start(config).unwrap()
    };
    let status_of = |observer: &NodeHandle, name: &str| {
        let members = observer.members();
        members
            .iter()
            .find(|m| m.node.as_str() == name)
            .map(|m| (m.status.shown(), m.up))
    };
    // n4 starts joining and dies before its join is done: its turn stays.
    let n4 = joiner("n4", &nodes);
    let all: Vec<&NodeHandle> = nodes.iter().collect();
    wait_until_all_see(&all, &n4, Duration::from_secs(10));
    n4.shutdown().unwrap();
    wait_for(Duration::from_secs(20), "every node to see n4 DOWN", || {
        nodes
            .iter()
            .all(|node| status_of(node, "n4") == Some((NodeStatus::Joining, false)))
    });

    // n5 waits for it: it gets no data, and nobody counts it a replica.
    nodes.push(joiner("n5", &nodes));
    let all: Vec<&NodeHandle> = nodes.iter().collect();
    wait_until_all_see(&all, &nodes[4], Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    for node in &nodes {
        assert_eq!(
            status_of(node, "n5"),
            Some((NodeStatus::Joining, true)),
            "n5 as {} sees it, while n4 holds the turn",
            node.node_id()
        );
    }
    let held = (0..300)
        .filter(|&i| TestClient::replica_cell(nodes[4].native_addr(), &key(i)).is_some())
        .count();
    assert_eq!(held, 0, "keys streamed to n5 before its turn");

    // Removing n4 gives n5 the turn: it joins and gets its keys.
    let removed = remove(&nodes[0], &NodeId::from("n4"));
    assert_eq!(removed.node.as_str(), "n4");
    wait_for(Duration::from_secs(30), "n5 NORMAL everywhere", || {
        nodes
            .iter()
            .all(|node| status_of(node, "n5") == Some((NodeStatus::Normal, true)))
    });
    let ring = ring_seen_by(&nodes[0]);
    assert!(ring.nodes().iter().any(|n| n.as_str() == "n5"));
    assert!(!ring.nodes().iter().any(|n| n.as_str() == "n4"));
    for i in 0..300 {
        assert_eq!(
            held_by_every_replica(&nodes[0], &nodes, 2, i),
            Some(format!("v{i}").into_bytes()),
            "key {i}"
        );
    }
}

fn cleanup(node: &NodeHandle) -> CleanupSummary {
    match TestClient::connect(node.native_addr()).request(Request::Cleanup) {
        Response::CleanedUp(summary) => summary,
        other => panic!("cleanup of {}: {other:?}", node.node_id()),
    }
}

#[test]
fn after_a_join_cleanup_drops_exactly_the_keys_a_node_no_longer_replicates() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, client) = rf2_cluster_with(dir.path(), 600);
    let unchanged = cleanup(&nodes[0]);
    assert_eq!(unchanged.keys_dropped, 0, "a settled ring: {unchanged:?}");

    let mut config = node_config("n4", dir.path(), vec![nodes[0].native_addr()]);
    rf2(&mut config);
    nodes.push(Node::start(config).unwrap());
    wait_for(Duration::from_secs(30), "n4 NORMAL everywhere", || {
        nodes.iter().all(|node| {
            let members = node.members();
            members.len() == 5 && members.iter().all(|m| m.status == NodeStatus::Normal)
        })
    });
    let ring = ring_seen_by(&nodes[0]);
    let replicates =
        |node: &NodeHandle, i: u32| ring.replica_set(&key(i), 2).contains(&node.node_id());
    let held =
        |node: &NodeHandle, i: u32| TestClient::replica_cell(node.native_addr(), &key(i)).is_some();
    let mut dropped_in_all = 0;
    for node in &nodes[..4] {
        let stale = (0..600)
            .filter(|i| held(node, *i) && !replicates(node, *i))
            .count() as u64;
        let summary = cleanup(node);
        assert_eq!(summary.keys_dropped, stale, "{summary:?}");
        assert!(
            summary.sstable_bytes_after < summary.sstable_bytes_before || stale == 0,
            "{summary:?}"
        );
        dropped_in_all += stale;
        for i in 0..600 {
            assert_eq!(
                held(node, i),
                replicates(node, i),
                "key {i} on {}",
                node.node_id()
            );
        }
    }
    assert!(
        dropped_in_all > 0,
        "the join left keys on nodes that no longer replicate them"
    );
    for i in 0..600 {
        assert_eq!(
            held_by_every_replica(&nodes[0], &nodes, 2, i),
            Some(format!("v{i}").into_bytes()),
            "key {i}"
        );
        assert_eq!(
            client.value(&key(i), All),
            Some(format!("v{i}").into_bytes())
        );
    }
}
