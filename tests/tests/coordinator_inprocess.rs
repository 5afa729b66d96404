//! Replicated reads and writes through any node (3 nodes, RF 3, real TCP on
//! loopback): acknowledged QUORUM writes survive a node failure, an
//! impossible level fails fast with the facts, hints catch the node up, read
//! repair fixes a stale replica, and a delete made while a replica was down
//! does not let the value come back.

use std::time::{Duration, Instant};

use cassio_core::coordinator::ConsistencyLevel::{All, One, Quorum};
use cassio_core::proto::Response;
use cassio_core::storage::SyncMode;
use cassio_core::{Node, NodeConfig};
use cassio_tests::harness::{
    TestClient, key, node_config, start_cluster, wait_for, wait_until_all_see, written,
};

#[test]
fn quorum_writes_survive_a_failure_and_hints_catch_the_node_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(3, dir.path(), |_| {});
    let client = TestClient::connect(nodes[0].native_addr());
    for i in 0..10_000 {
        written(client.put(&key(i), format!("v1-{i}").as_bytes(), Quorum));
    }

    let stopped = nodes.remove(2);
    let seed = nodes[0].native_addr();
    stopped.shutdown().unwrap();
    for i in 0..10_000 {
        assert_eq!(
            client.value(&key(i), Quorum),
            Some(format!("v1-{i}").into_bytes()),
            "key {i}"
        );
    }
    // 1,000 more writes: half overwrite old keys, half are new.
    for i in 9_500..10_500 {
        written(client.put(&key(i), format!("v2-{i}").as_bytes(), Quorum));
    }
    let started = Instant::now();
    match client.get(&key(1), All) {
        Response::QuorumNotReached {
            level,
            required,
            received,
        } => {
            assert_eq!((level, required, received), (All, 3, 2));
        }
        other => panic!("an ALL read with a node down must fail, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "it failed fast: {:?}",
        started.elapsed()
    );
    let hints = client.status().metrics.hints_stored;
    assert!(hints >= 1000, "the missed writes were hinted: {hints}");

    let restarted = Node::start(node_config("n2", dir.path(), vec![seed])).unwrap();
    wait_until_all_see(
        &[&nodes[0], &nodes[1], &restarted],
        &restarted,
        Duration::from_secs(10),
    );
    wait_for(
        Duration::from_secs(20),
        "hints replayed to the restarted node",
        || {
            let m = client.status().metrics;
            m.hints_replayed + m.hints_expired >= m.hints_stored
        },
    );
    assert_eq!(client.status().metrics.hints_expired, 0);
    // Reads at ONE coordinated by the restarted node are served by its own
    // replica alone: it has every newest value.
    let local = TestClient::connect(restarted.native_addr());
    for i in 0..10_500 {
        let want = if i >= 9_500 {
            format!("v2-{i}")
        } else {
            format!("v1-{i}")
        };
        assert_eq!(
            local.value(&key(i), One),
            Some(want.into_bytes()),
            "key {i} on the restarted node"
        );
    }
    assert_eq!(local.status().metrics.reads, 10_500);
    restarted.shutdown().unwrap();
    for node in nodes {
        node.shutdown().unwrap();
    }
}

fn no_hints(config: &mut NodeConfig) {
    config.hinted_handoff = false;
}

#[test]
fn one_quorum_read_repairs_a_stale_replica() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(3, dir.path(), no_hints);
    let client = TestClient::connect(nodes[0].native_addr());
    written(client.put(b"k", b"old", All));
    let stopped = nodes.remove(2);
    stopped.shutdown().unwrap();
    written(client.put(b"k", b"new", Quorum));
    let mut config = node_config("n2", dir.path(), vec![nodes[0].native_addr()]);
    no_hints(&mut config);
    let restarted = Node::start(config).unwrap();
    let addr = restarted.native_addr();
    wait_until_all_see(
        &[&nodes[0], &nodes[1], &restarted],
        &restarted,
        Duration::from_secs(10),
    );
    let stale = TestClient::replica_cell(addr, b"k").unwrap();
    assert_eq!(
        stale.live_value(0),
        Some(&b"old"[..]),
        "the replica missed the write"
    );

    // Through the stale replica: a QUORUM read asks its own copy and one
    // other, which holds the new value.
    let via_stale = TestClient::connect(addr);
    assert_eq!(via_stale.value(b"k", Quorum), Some(b"new".to_vec()));
    wait_for(Duration::from_secs(5), "the stale replica repaired", || {
        TestClient::replica_cell(addr, b"k").is_some_and(|c| c.live_value(0) == Some(&b"new"[..]))
    });
    // The replica applies the repair before the coordinator counts its
    // acknowledgement: the count may trail the value a moment.
    wait_for(Duration::from_secs(5), "the read repair counted", || {
        via_stale.status().metrics.read_repairs >= 1
    });
    restarted.shutdown().unwrap();
    for node in nodes {
        node.shutdown().unwrap();
    }
}

/// Deletes made while a replica was down, replayed by hints or (hints off)
/// resolved by the read's vote, never let the old value come back.
#[test]
fn a_delete_made_while_a_replica_was_down_stays_deleted() {
    for hints in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let tweak = |c: &mut NodeConfig| c.hinted_handoff = hints;
        let mut nodes = start_cluster(3, dir.path(), tweak);
        let client = TestClient::connect(nodes[0].native_addr());
        written(client.put(b"doomed", b"value", All));
        let stopped = nodes.remove(2);
        stopped.shutdown().unwrap();
        written(client.delete(b"doomed", Quorum));
        let mut config = node_config("n2", dir.path(), vec![nodes[0].native_addr()]);
        tweak(&mut config);
        let restarted = Node::start(config).unwrap();
        wait_until_all_see(
            &[&nodes[0], &nodes[1], &restarted],
            &restarted,
            Duration::from_secs(10),
        );
        if hints {
            wait_for(Duration::from_secs(10), "the tombstone replayed", || {
                TestClient::replica_cell(restarted.native_addr(), b"doomed")
                    .is_some_and(|c| c.is_tombstone())
            });
        }
        // Coordinated by the node that missed the delete: the tombstone wins the vote.
        let via_restarted = TestClient::connect(restarted.native_addr());
        assert_eq!(
            via_restarted.value(b"doomed", Quorum),
            None,
            "hints {hints}"
        );
        assert_eq!(client.value(b"doomed", All), None, "hints {hints}");
        wait_for(
            Duration::from_secs(5),
            "the restarted replica holds the tombstone",
            || {
                TestClient::replica_cell(restarted.native_addr(), b"doomed")
                    .is_some_and(|c| c.is_tombstone())
            },
        );
        assert_eq!(via_restarted.value(b"doomed", One), None, "hints {hints}");
        restarted.shutdown().unwrap();
        for node in nodes {
            node.shutdown().unwrap();
        }
    }
}

/// In batch sync mode every replica acknowledges a write only once its
/// group commit has fsynced it, the coordinator's own replica and those
/// its peers write alike, without blocking the threads that serve other
/// clients: writes at ALL from concurrent clients through every node are
/// all acknowledged, each replica holds each of them, and a node restarted
/// from its disk reads them back alone.
#[test]
fn batch_sync_mode_writes_are_on_every_replica() {
    let dir = tempfile::tempdir().unwrap();
    let batch = |config: &mut NodeConfig| config.storage.sync_mode = SyncMode::Batch;
    let mut nodes = start_cluster(3, dir.path(), batch);
    let writers: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(writer, node)| {
            let addr = node.native_addr();
            std::thread::spawn(move || {
                let client = TestClient::connect(addr);
                for i in 0..200 {
                    let i = writer as u32 * 1_000 + i;
                    written(client.put(&key(i), format!("v-{i}").as_bytes(), All));
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let keys = || (0..3u32).flat_map(|writer| (0..200).map(move |i| writer * 1_000 + i));
    for node in &nodes {
        for i in keys() {
            let cell = TestClient::replica_cell(node.native_addr(), &key(i));
            assert_eq!(
                cell.and_then(|c| c.live_value(u64::MAX / 2).map(<[u8]>::to_vec)),
                Some(format!("v-{i}").into_bytes()),
                "key {i} on {}",
                node.node_id()
            );
        }
    }

    let stopped = nodes.remove(2);
    let seed = nodes[0].native_addr();
    stopped.shutdown().unwrap();
    let mut config = node_config("n2", dir.path(), vec![seed]);
    batch(&mut config);
    let restarted = Node::start(config).unwrap();
    let local = TestClient::connect(restarted.native_addr());
    for i in keys() {
        assert_eq!(
            local.value(&key(i), One),
            Some(format!("v-{i}").into_bytes()),
            "key {i} on the restarted node"
        );
    }
    restarted.shutdown().unwrap();
    for node in nodes {
        node.shutdown().unwrap();
    }
}
