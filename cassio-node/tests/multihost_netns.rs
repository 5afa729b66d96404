//! Two hosts, each a network namespace this test creates (on a bridge,
//! 10.201.0.1 and 10.201.0.2), each running one `cassio-node` that listens
//! on every interface and announces its host's address with `--broadcast`,
//! as a node on a real machine or a Kubernetes pod does. The nodes find
//! each other, show each other's reachable addresses (never 0.0.0.0), and a
//! key written through one host is read at ALL through the other. Needs
//! root and iproute2 (`ip netns`), and redis-cli for the client side;
//! without root it says so and does nothing.

mod netns;

use std::process::Command;
use std::time::Duration;

use netns::Hosts;

const NATIVE_PORT: u16 = 9000;
const RESP_PORT: u16 = 6379;

#[test]
fn nodes_on_two_hosts_listen_everywhere_and_announce_their_broadcast_address() {
    if !netns::is_root() {
        eprintln!("skipped: network namespaces need root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut hosts = Hosts::create("broadcast", &["a.test", "b.test"]);
    let seed = format!("{}:{NATIVE_PORT}", hosts.ips[0]);
    for (i, name) in ["a", "b"].into_iter().enumerate() {
        let broadcast = format!("{}:{NATIVE_PORT}", hosts.ips[i]);
        let data = dir.path().join(name);
        let args = [
            "--name",
            name,
            "--listen",
            &format!("0.0.0.0:{NATIVE_PORT}"),
            "--broadcast",
            &broadcast,
            "--resp",
            &format!("0.0.0.0:{RESP_PORT}"),
            "--seeds",
            &seed,
            "--data-dir",
            data.to_str().unwrap(),
            "--replication-factor",
            "2",
            "--vnodes",
            "16",
            "--gossip-interval-ms",
            "200",
            "--log",
            "warn",
        ];
        hosts.start(i, env!("CARGO_BIN_EXE_cassio-node"), &args, &[]);
    }

    // Each node's INFO lists both members UP under their broadcast address.
    let expected = [
        format!("member:a,{}:{NATIVE_PORT},UP,NORMAL", hosts.ips[0]),
        format!("member:b,{}:{NATIVE_PORT},UP,NORMAL", hosts.ips[1]),
    ];
    let views = || -> Vec<String> {
        (0..2)
            .map(|i| hosts.redis_cli(i, (&hosts.ips[i], RESP_PORT), "INFO cluster\n"))
            .collect()
    };
    hosts.wait_until(
        Duration::from_secs(30),
        "both nodes to see each other at their broadcast addresses",
        || {
            views()
                .iter()
                .all(|view| expected.iter().all(|m| view.contains(m.as_str())))
        },
    );
    for view in views() {
        assert!(!view.contains("0.0.0.0"), "an unreachable address: {view}");
    }

    // Written through host a, read through host b at ALL: both replicas
    // (RF 2 of 2 nodes) answer across the link.
    hosts.write_then_read_at_all(0, 1, RESP_PORT, 50);
}

#[test]
fn listening_on_every_interface_without_a_broadcast_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cassio-node"))
        .args(["--listen", "0.0.0.0:0", "--resp", "127.0.0.1:0"])
        .args(["--data-dir", dir.path().join("n").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("binds every interface") && stderr.contains("--broadcast"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("n").exists(),
        "refused before it touched the data directory"
    );
}
