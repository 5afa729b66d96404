//! Anti-entropy repair across in-process nodes (real TCP on loopback, hinted
//! handoff off so only repair can heal): a replica that was down while
//! values were overwritten, deleted and added gets every change from one
//! `Repair`, whichever side starts it; a second repair finds nothing to do;
//! with RF 2 of 3 a node receives only the keys it is a replica of; with
//! `repair_interval_ms` the nodes heal it on their own. (A new node gets
//! its keys by streaming: `membership_inprocess.rs`.)

use std::time::Duration;

use cassio_core::NodeHandle;
use cassio_core::coordinator::ConsistencyLevel::{All, One, Quorum};
use cassio_core::coordinator::repair::{RangeDigest, RepairSummary};
use cassio_core::proto::{KeyedCell, Request, Response};
use cassio_core::storage::Cell;
use cassio_core::{Node, NodeConfig};
use cassio_tests::harness::{
    TestClient, key, node_config, ring_seen_by, start_cluster, wait_for, wait_until_all_see,
    written,
};

fn no_hints(config: &mut NodeConfig) {
    config.hinted_handoff = false;
}

fn repair(node: &NodeHandle) -> RepairSummary {
    match TestClient::connect(node.native_addr()).request(Request::Repair) {
        Response::Repaired(summary) => summary,
        other => panic!("repair: {other:?}"),
    }
}

/// Stops `nodes[index]`, runs `while_down` against `nodes[0]`, restarts the
/// node and waits until everyone sees it again and it sees everyone.
fn with_node_down(
    nodes: &mut Vec<NodeHandle>,
    index: usize,
    dir: &std::path::Path,
    tweak: impl Fn(&mut NodeConfig),
    while_down: impl FnOnce(&TestClient),
) {
    let stopped = nodes.remove(index);
    stopped.shutdown().unwrap();
    while_down(&TestClient::connect(nodes[0].native_addr()));
    let mut config = node_config(&format!("n{index}"), dir, vec![nodes[0].native_addr()]);
    // A replica coming back, though it may hold no data yet (the cluster
    // held none when it stopped): not a new node to bootstrap.
    config.bootstrap = false;
    tweak(&mut config);
    nodes.insert(index, Node::start(config).unwrap());
    let all: Vec<&NodeHandle> = nodes.iter().collect();
    wait_until_all_see(&all, &nodes[index], Duration::from_secs(10));
    wait_for(
        Duration::from_secs(10),
        "the restarted node to see all UP",
        || {
            let members = nodes[index].members();
            members.len() == nodes.len() && members.iter().all(|m| m.up)
        },
    );
}

/// The value first written to key `i`.
fn value(i: u32) -> Vec<u8> {
    format!("v{i}").into_bytes()
}

/// The value `node` holds for key `i`, or `None` for no cell or a tombstone.
fn held(node: &NodeHandle, i: u32) -> Option<Vec<u8>> {
    TestClient::replica_cell(node.native_addr(), &key(i))
        .and_then(|cell| cell.live_value(0).map(<[u8]>::to_vec))
}

/// Keys spread over every range and every kind of change below.
fn sample() -> impl Iterator<Item = u32> {
    (0..3500)
        .step_by(41)
        .chain([0, 499, 500, 699, 700, 2999, 3000, 3499])
}

/// What key `i` should read after the changes made while a node was down.
fn expected(i: u32) -> Option<Vec<u8>> {
    match i {
        0..500 => Some(format!("new{i}").into_bytes()),
        500..700 => None,
        _ => Some(value(i)),
    }
}

#[test]
fn repair_brings_a_replica_that_was_down_up_to_date_from_either_side() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(3, dir.path(), no_hints);
    let client = TestClient::connect(nodes[0].native_addr());
    for i in 0..3000 {
        written(client.put(&key(i), &value(i), All));
    }
    let change = |client: &TestClient| {
        for i in 0..500 {
            written(client.put(&key(i), format!("new{i}").as_bytes(), Quorum));
        }
        for i in 500..700 {
            written(client.delete(&key(i), Quorum));
        }
        for i in 3000..3500 {
            written(client.put(&key(i), &value(i), Quorum));
        }
    };

    // The stale node starts the repair: it receives.
    with_node_down(&mut nodes, 2, dir.path(), no_hints, change);
    assert_eq!(
        held(&nodes[2], 0),
        Some(b"v0".to_vec()),
        "n2 missed the overwrite"
    );
    assert_eq!(
        held(&nodes[2], 600),
        Some(b"v600".to_vec()),
        "n2 missed the delete"
    );
    assert_eq!(held(&nodes[2], 3100), None, "n2 missed the new key");
    let summary = repair(&nodes[2]);
    assert_eq!((summary.peers, summary.peers_down), (2, 0), "{summary:?}");
    assert_eq!(
        summary.cells_received, 1200,
        "from the first peer only: {summary:?}"
    );
    assert_eq!(summary.cells_sent, 0, "{summary:?}");
    assert!(
        summary.ranges >= 4 && summary.ranges_differing >= 1,
        "{summary:?}"
    );
    for i in sample() {
        assert_eq!(
            held(&nodes[2], i),
            expected(i),
            "key {i} on n2 after repair"
        );
    }
    let again = repair(&nodes[2]);
    assert_eq!(
        (
            again.ranges_differing,
            again.cells_sent,
            again.cells_received
        ),
        (0, 0, 0),
        "a second repair finds the replicas equal: {again:?}"
    );

    // An up-to-date node starts the repair: it sends.
    with_node_down(&mut nodes, 1, dir.path(), no_hints, |client| {
        for i in 0..100 {
            written(client.put(&key(i), b"newest", Quorum));
        }
    });
    assert_eq!(held(&nodes[1], 5), Some(b"new5".to_vec()));
    let summary = repair(&nodes[0]);
    assert_eq!(summary.cells_sent, 100, "{summary:?}");
    assert_eq!(summary.cells_received, 0, "{summary:?}");
    for i in (0..100).step_by(7) {
        assert_eq!(
            held(&nodes[1], i),
            Some(b"newest".to_vec()),
            "key {i} on n1"
        );
    }
    let via_repaired = TestClient::connect(nodes[1].native_addr());

    // Repair steps are for peers: a client's is refused, nothing written.
    let refused = via_repaired.request(Request::RepairRange {
        start: None,
        end: None,
        cells: vec![KeyedCell {
            key: key(1),
            cell: Cell::value("forged", u64::MAX / 2),
        }],
    });
    assert!(
        matches!(&refused, Response::Error { message } if message.contains("for peers")),
        "{refused:?}"
    );
    assert_eq!(held(&nodes[1], 1), Some(b"newest".to_vec()));

    // A peer's malformed steps get a clear refusal; the node keeps serving.
    let as_n1 = |request| TestClient::peer_request(nodes[0].native_addr(), "n1", request);
    let bad = |key: &str| Some(key.as_bytes().to_vec());
    let digest = |end| RangeDigest {
        end,
        keys: 0,
        hash: 0,
    };
    let placement = ring_seen_by(&nodes[0]).fingerprint(3);
    let malformed = [
        Request::RepairRange {
            start: bad("b"),
            end: bad("a"),
            cells: vec![],
        },
        Request::RepairRange {
            start: None,
            end: None,
            cells: vec![
                KeyedCell {
                    key: key(2),
                    cell: Cell::value("x", 1),
                },
                KeyedCell {
                    key: key(1),
                    cell: Cell::value("x", 1),
                },
            ],
        },
        Request::RepairDigests {
            start: bad("b"),
            ranges: vec![digest(bad("a"))],
            placement,
        },
        Request::RepairDigests {
            start: None,
            ranges: vec![digest(None), digest(bad("a"))],
            placement,
        },
        Request::RepairDigests {
            start: None,
            ranges: vec![],
            placement,
        },
    ];
    let elsewhere = as_n1(Request::RepairDigests {
        start: None,
        ranges: vec![digest(None)],
        placement: placement ^ 1,
    });
    assert!(
        matches!(&elsewhere, Response::Invalid { message } if message.contains("place keys differently")),
        "{elsewhere:?}"
    );
    let well_formed = Request::RepairDigests {
        start: None,
        ranges: vec![digest(None)],
        placement,
    };
    assert!(
        matches!(as_n1(well_formed), Response::RangesDiffering(_)),
        "the same step, well formed, is answered"
    );
    for request in malformed {
        let answer = as_n1(request.clone());
        assert!(
            matches!(answer, Response::Invalid { .. }),
            "{request:?}: {answer:?}"
        );
    }
    let stranger = TestClient::peer_request(
        nodes[0].native_addr(),
        "stranger",
        Request::RepairDigests {
            start: None,
            ranges: vec![digest(None)],
            placement,
        },
    );
    assert!(
        matches!(&stranger, Response::Invalid { message } if message.contains("in this node's ring")),
        "{stranger:?}"
    );
    assert_eq!(client.value(&key(1), All), Some(b"newest".to_vec()));
    for node in nodes {
        node.shutdown().unwrap();
    }
}

#[test]
fn repair_with_rf_2_moves_only_the_keys_a_node_replicates() {
    let dir = tempfile::tempdir().unwrap();
    let rf2 = |config: &mut NodeConfig| {
        no_hints(config);
        config.replication_factor = 2;
    };
    let mut nodes = start_cluster(3, dir.path(), rf2);
    with_node_down(&mut nodes, 2, dir.path(), rf2, |client| {
        for i in 0..600 {
            written(client.put(&key(i), &value(i), One));
        }
    });
    let ring = ring_seen_by(&nodes[0]);
    let n2 = nodes[2].node_id().clone();
    let replicated_by_n2 = |i: u32| ring.replica_set(&key(i), 2).contains(&&n2);
    let expected_count = (0..600).filter(|&i| replicated_by_n2(i)).count() as u64;
    assert!(
        expected_count > 50 && expected_count < 550,
        "the sample must split: {expected_count} of 600 on n2"
    );

    let summary = repair(&nodes[2]);
    assert_eq!(summary.cells_received, expected_count, "{summary:?}");
    assert_eq!(summary.cells_sent, 0, "{summary:?}");
    for i in (0..600).step_by(5) {
        let on_n2 = held(&nodes[2], i);
        if replicated_by_n2(i) {
            assert_eq!(on_n2, Some(value(i)), "key {i} belongs on n2");
        } else {
            assert_eq!(on_n2, None, "key {i} is not n2's to hold");
        }
    }
    for node in nodes {
        node.shutdown().unwrap();
    }
}

#[test]
fn an_answer_larger_than_one_message_comes_in_parts() {
    let dir = tempfile::tempdir().unwrap();
    // Two nodes, so that the one peer must send everything.
    let mut nodes = start_cluster(2, dir.path(), no_hints);
    let big = |i: u32| vec![b'a' + i as u8; 1024 * 1024];
    with_node_down(&mut nodes, 1, dir.path(), no_hints, |client| {
        for i in 0..6 {
            written(client.put(&key(i), &big(i), One));
        }
    });
    // n1 holds none of them: one range of 6 MiB to send, more than a peer
    // answers at once (4 MiB).
    let summary = repair(&nodes[1]);
    assert_eq!(
        (summary.peers, summary.cells_received),
        (1, 6),
        "{summary:?}"
    );
    for i in 0..6 {
        assert_eq!(held(&nodes[1], i), Some(big(i)), "key {i}");
    }
    for node in nodes {
        node.shutdown().unwrap();
    }
}

#[test]
fn scheduled_repair_heals_a_replica_without_being_asked() {
    let dir = tempfile::tempdir().unwrap();
    let often = |config: &mut NodeConfig| {
        no_hints(config);
        config.repair_interval_ms = 500;
    };
    let mut nodes = start_cluster(3, dir.path(), often);
    with_node_down(&mut nodes, 2, dir.path(), often, |client| {
        for i in 0..200 {
            written(client.put(&key(i), &value(i), Quorum));
        }
    });
    // Hints are off and nothing reads: only a repair can bring these.
    wait_for(Duration::from_secs(15), "n2 repaired on schedule", || {
        (0..200)
            .step_by(19)
            .all(|i| held(&nodes[2], i) == Some(value(i)))
    });
    for node in nodes {
        node.shutdown().unwrap();
    }
}
