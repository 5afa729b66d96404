//! Membership with several nodes in one process (`Node::start`, real TCP on
//! 127.0.0.1 with free ports): five nodes given one seed converge; a stopped
//! node is marked DOWN by every other within the phi timeout; restarted, it
//! is UP again with a higher generation; peers are remembered across
//! restarts.

use std::time::Duration;

use cassio_core::cluster::NodeStatus;
use cassio_core::{Node, NodeConfig, NodeHandle};
use cassio_tests::harness::{node_config, wait_for};

const GOSSIP_INTERVAL_MS: u64 = 200;

/// The harness's test node, gossiping at this test's slower pace, in a new
/// cluster (nothing to stream when it starts).
fn config(name: &str, dir: &std::path::Path, seeds: Vec<std::net::SocketAddr>) -> NodeConfig {
    NodeConfig {
        gossip_interval_ms: GOSSIP_INTERVAL_MS,
        bootstrap: false,
        ..node_config(name, dir, seeds)
    }
}

fn sees_all_up(node: &NodeHandle, count: usize) -> bool {
    let members = node.members();
    members.len() == count
        && members
            .iter()
            .all(|m| m.up && m.status == NodeStatus::Normal)
}

#[test]
fn five_nodes_converge_detect_a_failure_and_see_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let seed = Node::start(config("n0", dir.path(), vec![])).unwrap();
    let seed_addr = seed.native_addr();
    let mut nodes = vec![seed];
    for i in 1..5 {
        nodes.push(Node::start(config(&format!("n{i}"), dir.path(), vec![seed_addr])).unwrap());
    }

    let rounds = Duration::from_millis(GOSSIP_INTERVAL_MS * 10);
    let took = wait_for(rounds, "5 UP/NORMAL members on every node", || {
        nodes.iter().all(|n| sees_all_up(n, 5))
    });
    println!(
        "converged in {took:?} ({} gossip rounds)",
        took.as_millis() as u64 / GOSSIP_INTERVAL_MS + 1
    );
    // Every node answers status with the same membership and a ring over all.
    let status = nodes[2].cluster_status();
    assert_eq!(status.members.len(), 5);
    let owned: f64 = status.members.iter().map(|m| m.owns).sum();
    assert!(
        (owned - 1.0).abs() < 1e-9,
        "owned shares sum to 1, got {owned}"
    );
    assert!(status.members.iter().all(|m| m.owns > 0.05), "{status:?}");

    // Let the detectors learn the heartbeat rhythm, as in a cluster that has
    // been up a while.
    std::thread::sleep(Duration::from_millis(GOSSIP_INTERVAL_MS * 15));
    let victim = nodes.remove(3);
    let victim_id = victim.node_id().clone();
    let old_generation = victim
        .members()
        .iter()
        .find(|m| m.node == victim_id)
        .unwrap()
        .generation;
    // The phi timeout: phi = silence / (mean interval * ln 10) crosses 8 after
    // 8 * ln(10) mean intervals, as each observer learned the mean; plus four
    // rounds for the victim's last heartbeat to finish spreading and for polling.
    let slowest_mean_ms = nodes
        .iter()
        .map(|n| {
            n.members()
                .into_iter()
                .find(|m| m.node == victim_id)
                .unwrap()
                .heartbeat_interval_ms
        })
        .fold(0.0, f64::max);
    let phi_timeout = Duration::from_millis(
        (8.0 * std::f64::consts::LN_10 * slowest_mean_ms) as u64 + 4 * GOSSIP_INTERVAL_MS,
    );
    victim.shutdown().unwrap();
    let took = wait_for(
        phi_timeout * 3,
        "the stopped node DOWN on every other node",
        || {
            nodes
                .iter()
                .all(|n| n.members().iter().any(|m| m.node == victim_id && !m.up))
        },
    );
    println!(
        "stopped node marked DOWN everywhere after {took:?} (phi timeout {phi_timeout:?}, slowest learned mean {slowest_mean_ms:.0} ms)"
    );
    // The mean each observer goes by moves with the victim's last
    // heartbeats, and a loaded 2-core machine delays ticks: half again as
    // slack (a run in CI took 4.99 s against 4.93 s). A detector off by
    // twice still fails here.
    assert!(
        took <= phi_timeout * 3 / 2,
        "detection took {took:?}, phi timeout {phi_timeout:?}"
    );
    assert!(
        nodes
            .iter()
            .all(|n| n.members().iter().filter(|m| m.up).count() == 4)
    );

    let restarted = Node::start(config("n3", dir.path(), vec![seed_addr])).unwrap();
    nodes.push(restarted);
    wait_for(
        rounds * 2,
        "the restarted node UP everywhere with a higher generation",
        || {
            nodes.iter().all(|n| {
                sees_all_up(n, 5)
                    && n.members()
                        .iter()
                        .any(|m| m.node == victim_id && m.generation > old_generation)
            })
        },
    );
    for node in nodes {
        node.shutdown().unwrap();
    }
}

/// A node remembers its peers across restarts (their gossip state, in
/// `DATA_DIR/peers`): after a full restart with one node still down, that
/// node is listed DOWN, remains a replica (ALL cannot be met, QUORUM
/// writes hint it, and it catches up when it returns), and a node that
/// restarts while no peer answers still coordinates with the ring it kept.
#[test]
fn restarted_nodes_remember_a_peer_that_stays_down() {
    use cassio_core::coordinator::ConsistencyLevel::{All, One, Quorum};
    use cassio_core::proto::Response;
    use cassio_tests::harness::{GOSSIP_INTERVAL_MS as FAST_MS, TestClient, start_cluster};

    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(3, dir.path(), |_| {});
    let client = TestClient::connect(nodes[0].native_addr());
    assert!(matches!(
        client.put(b"k1", b"v1", All),
        Response::Written { .. }
    ));
    // The peers files are written on the tick after the view changed.
    std::thread::sleep(Duration::from_millis(FAST_MS * 5));
    drop(client);
    let [n0, n1, n2]: [NodeHandle; 3] = nodes.try_into().ok().unwrap();
    n2.shutdown().unwrap();
    n1.shutdown().unwrap();
    n0.shutdown().unwrap();

    // n0 and n1 come back; n2 stays down.
    let n0 = Node::start(node_config("n0", dir.path(), vec![])).unwrap();
    let n1 = Node::start(node_config("n1", dir.path(), vec![n0.native_addr()])).unwrap();
    wait_for(
        Duration::from_secs(10),
        "n0 and n1 to see each other",
        || {
            [&n0, &n1].iter().all(|n| {
                n.members()
                    .iter()
                    .filter(|m| m.node.as_str() != "n2")
                    .all(|m| m.up)
            })
        },
    );
    let n2_seen = n0.members().into_iter().find(|m| m.node.as_str() == "n2");
    assert!(
        n2_seen
            .as_ref()
            .is_some_and(|m| !m.up && m.status == NodeStatus::Normal),
        "n2 is remembered, DOWN: {n2_seen:?}"
    );
    let client = TestClient::connect(n0.native_addr());
    assert!(
        matches!(
            client.put(b"k2", b"v2", All),
            Response::QuorumNotReached { required: 3, .. }
        ),
        "ALL needs n2, which is down"
    );
    assert!(matches!(
        client.put(b"k3", b"v3", Quorum),
        Response::Written { .. }
    ));
    assert!(
        client.status().metrics.hints_stored >= 1,
        "n2's copy was hinted"
    );

    // n2 returns and gets its hint.
    let n2 = Node::start(node_config("n2", dir.path(), vec![n0.native_addr()])).unwrap();
    wait_for(Duration::from_secs(10), "k3 replayed to n2", || {
        TestClient::replica_cell(n2.native_addr(), b"k3").is_some()
    });
    drop(client);
    n2.shutdown().unwrap();
    n0.shutdown().unwrap();

    // n1 alone, every peer down: after a few gossip ticks it coordinates with
    // the ring it kept, instead of refusing for ever.
    n1.shutdown().unwrap();
    let n1 = Node::start(node_config("n1", dir.path(), vec![])).unwrap();
    let client = TestClient::connect(n1.native_addr());
    wait_for(
        Duration::from_secs(10),
        "n1 to serve reads alone",
        || matches!(client.get(b"k1", One), Response::Value { value: Some(ref v), .. } if v == b"v1"),
    );
    assert!(
        matches!(
            client.put(b"k4", b"v4", Quorum),
            Response::QuorumNotReached { .. }
        ),
        "n0 and n2 are remembered as replicas, and down"
    );
    drop(client);
    n1.shutdown().unwrap();
}
