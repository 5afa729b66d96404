//! TLS. The Redis-protocol port: clients that trust the node's
//! certificate read and write through it (a rustls client, and `redis-cli
//! --tls`); a plain-text client is told the port speaks TLS, a broken
//! handshake closes only its own connection. The native port, once the
//! cluster's CA is given: nodes gossip and replicate over TLS, showing
//! each other certificates the CA signed, cassio clients with the CA read
//! and write, a plain-text peer or one without a node's certificate is
//! refused with the reason, and a client with another CA fails on the
//! certificate. TLS
//! files that are missing, hold no certificate or do not match stop the
//! start with the file and the reason.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cassio_client::blocking::Client;
use cassio_client::{ClientConfig, ConsistencyLevel};
use cassio_core::net::{Connection, Tcp, TlsClient, TlsFiles};
use cassio_core::proto::{Hello, Request, Role};
use cassio_core::{Node, NodeConfig, NodeHandle};
use cassio_tests::harness::{TestClient, answer_until_closed, node_config, start_cluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, RootCertStore};

/// A self-signed certificate for 127.0.0.1 and its key, written as PEM
/// files under `dir` (`name.crt`, `name.key`); the certificate's PEM too,
/// for clients to trust.
fn certificate(dir: &Path, name: &str) -> (TlsFiles, String) {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let files = TlsFiles {
        cert_file: dir.join(format!("{name}.crt")),
        key_file: dir.join(format!("{name}.key")),
        ca_cert_file: None,
    };
    std::fs::write(&files.cert_file, cert.pem()).unwrap();
    std::fs::write(&files.key_file, signing_key.serialize_pem()).unwrap();
    (files, cert.pem())
}

/// A CA of its own, and a node certificate it signed for the name
/// `node.invalid` only (nodes are reached by address, so names must not
/// matter), written under `dir` as `name-ca.crt`, `name.crt`, `name.key`.
fn cluster_pki(dir: &Path, name: &str) -> TlsFiles {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let node_key = rcgen::KeyPair::generate().unwrap();
    let node_cert = rcgen::CertificateParams::new(vec!["node.invalid".to_string()])
        .unwrap()
        .signed_by(&node_key, &issuer)
        .unwrap();
    let files = TlsFiles {
        cert_file: dir.join(format!("{name}.crt")),
        key_file: dir.join(format!("{name}.key")),
        ca_cert_file: Some(dir.join(format!("{name}-ca.crt"))),
    };
    std::fs::write(&files.cert_file, node_cert.pem()).unwrap();
    std::fs::write(&files.key_file, node_key.serialize_pem()).unwrap();
    std::fs::write(files.ca_cert_file.as_ref().unwrap(), ca_cert.pem()).unwrap();
    files
}

fn tls_config(dir: &Path, tls: TlsFiles) -> NodeConfig {
    NodeConfig {
        name: "solo".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        resp: Some("127.0.0.1:0".parse().unwrap()),
        data_dir: Some(dir.join("data")),
        vnodes: 8,
        tls: Some(tls),
        ..NodeConfig::default()
    }
}

/// Sends `request` over a TLS connection that trusts `cert_pem`, and reads
/// `reply_len` bytes back.
async fn over_tls(addr: SocketAddr, cert_pem: &str, request: &[u8], reply_len: usize) -> Vec<u8> {
    over_tls_reading_late(addr, cert_pem, request, reply_len, Duration::ZERO).await
}

/// [`over_tls`], starting to read only `delay` after the request is sent.
async fn over_tls_reading_late(
    addr: SocketAddr,
    cert_pem: &str,
    request: &[u8],
    reply_len: usize,
    delay: Duration,
) -> Vec<u8> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let server = ServerName::try_from("127.0.0.1").unwrap();
    let mut stream = TlsConnector::from(Arc::new(config))
        .connect(server, tcp)
        .await
        .expect("TLS handshake with the node");
    stream.write_all(request).await.unwrap();
    // The end of a large request may still sit encrypted in the TLS
    // session (the socket was full when it was written): send it.
    stream.flush().await.unwrap();
    tokio::time::sleep(delay).await;
    let mut reply = vec![0u8; reply_len];
    tokio::time::timeout(Duration::from_secs(15), stream.read_exact(&mut reply))
        .await
        .expect("a reply in time")
        .unwrap();
    reply
}

/// What a plain TCP connection gets back for `input`, until it closes.
fn plain(addr: SocketAddr, input: &[u8]) -> Vec<u8> {
    answer_until_closed(addr, input, Duration::from_secs(15))
}

fn redis_cli(args: &[&str]) -> Option<std::process::Output> {
    match std::process::Command::new("redis-cli").args(args).output() {
        Ok(out) => Some(out),
        Err(_) => {
            assert!(
                std::env::var("CI").is_err(),
                "CI must have redis-cli (.ci/run installs redis-tools)"
            );
            eprintln!("redis-cli not installed: its part skipped here (CI installs it)");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_read_and_write_and_plain_text_clients_are_told() {
    let dir = tempfile::tempdir().unwrap();
    let (files, cert_pem) = certificate(dir.path(), "node");
    let config = tls_config(dir.path(), files.clone());
    let node: NodeHandle = tokio::task::spawn_blocking(move || Node::start(config).unwrap())
        .await
        .unwrap();
    let addr = node.resp_addr().unwrap();

    let reply = over_tls(
        addr,
        &cert_pem,
        b"SET greeting hello\r\nGET greeting\r\n",
        16,
    )
    .await;
    assert_eq!(reply, b"+OK\r\n$5\r\nhello\r\n");

    // Replies larger than the socket's buffers, to a client that reads
    // late: all of it arrives.
    let big = vec![b'v'; 4 << 20];
    let head = format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${}\r\n", big.len());
    let request = [head.as_bytes(), &big, b"\r\nGET big\r\n"].concat();
    let length = format!("${}\r\n", big.len());
    let expected = [&b"+OK\r\n"[..], length.as_bytes(), &big, b"\r\n"].concat();
    let late = Duration::from_millis(300);
    let reply = over_tls_reading_late(addr, &cert_pem, &request, expected.len(), late).await;
    assert!(
        reply == expected,
        "a 4 MiB reply over TLS came back short or changed"
    );

    // Plain text on the TLS port: told why, in plain text, then closed.
    let refused = tokio::task::spawn_blocking(move || plain(addr, b"PING\r\n"))
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&refused),
        "-ERR this port speaks TLS only: connect with TLS (redis-cli --tls, a rediss:// URL)\r\n"
    );
    // A handshake that breaks off (a TLS record header, then nonsense):
    // that connection closes, nothing else does.
    let (broken, took) = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let answer = plain(addr, &[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]);
        (answer, started.elapsed())
    })
    .await
    .unwrap();
    // Nothing, or a TLS alert record (0x15), and closed at once.
    assert!(broken.is_empty() || broken[0] == 0x15, "{broken:?}");
    assert!(took < Duration::from_secs(5), "closed after {took:?}");

    let port = addr.port().to_string();
    let cacert = files.cert_file.to_str().unwrap().to_string();
    let cli = tokio::task::spawn_blocking(move || {
        let tls = ["--tls", "--cacert", &cacert, "-h", "127.0.0.1", "-p", &port];
        let set = redis_cli(&[&tls[..], &["SET", "from-cli", "yes"]].concat())?;
        let get = redis_cli(&[&tls[..], &["GET", "greeting"]].concat())?;
        let without_tls = redis_cli(&["-h", "127.0.0.1", "-p", &port, "PING"])?;
        Some((set, get, without_tls))
    })
    .await
    .unwrap();
    if let Some((set, get, without_tls)) = cli {
        let text =
            |out: &std::process::Output| String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(text(&set), "OK", "{set:?}");
        assert_eq!(text(&get), "hello", "{get:?}");
        assert!(
            text(&without_tls).contains("this port speaks TLS only"),
            "{without_tls:?}"
        );
    }

    // Still serving TLS clients, with what redis-cli wrote.
    let reply = over_tls(addr, &cert_pem, b"GET from-cli\r\n", 9).await;
    assert_eq!(reply, b"$3\r\nyes\r\n");
    tokio::task::spawn_blocking(move || node.shutdown().unwrap())
        .await
        .unwrap();
}

#[test]
fn the_native_port_speaks_tls_between_peers_and_to_clients_with_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    // Every node serves the one certificate the cluster's CA signed.
    let files = cluster_pki(dir.path(), "cluster");
    let ca = files.ca_cert_file.clone().unwrap();
    let for_nodes = files.clone();
    let nodes = start_cluster(2, dir.path(), move |config| {
        config.replication_factor = 2;
        config.resp = Some("127.0.0.1:0".parse().unwrap());
        config.tls = Some(for_nodes.clone());
    });
    // Formed: the nodes gossiped over TLS. Writes at ALL reach both.
    let seeds: Vec<SocketAddr> = nodes.iter().map(|n| n.native_addr()).collect();
    let config = |ca: &Path| ClientConfig {
        tls: Some(TlsClient::from_ca_cert_file(ca).unwrap()),
        ..ClientConfig::default()
    };
    let client = Client::connect(&seeds, config(&ca)).unwrap();
    let all = Some(ConsistencyLevel::All);
    for i in 0..20 {
        let key = format!("k{i}");
        client
            .set_with(key.as_bytes(), b"over tls", all, None)
            .unwrap();
    }
    let read = client.get_versioned(b"k7", all).unwrap().map(|v| v.value);
    assert_eq!(read, Some(b"over tls".to_vec()));

    // A peer or client in plain text is told why, in its own protocol;
    // "node1" makes a 22-byte hello, whose first byte (0x16) is a TLS
    // record's.
    for name in ["n9", "node1"] {
        match TestClient::try_peer_request(seeds[0], name, Request::ClusterStatus) {
            Err(cassio_core::Error::HandshakeRefused { reason, .. }) => {
                assert!(reason.contains("speaks TLS only"), "{name}: {reason}")
            }
            other => panic!("a plain-text peer {name} on a TLS port: {other:?}"),
        }
    }
    // A connection with the CA but no node's certificate may be a client,
    // not a peer.
    let as_peer = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(Connection::open_with(
            &Tcp,
            seeds[0],
            Hello::new("cassio", Role::Peer, Some("n9".into())),
            1 << 20,
            Duration::from_secs(5),
            Some(&TlsClient::from_ca_cert_file(&ca).unwrap()),
        ));
    match as_peer {
        Err(cassio_core::Error::HandshakeRefused { reason, .. }) => {
            assert!(
                reason.contains("a peer must show a certificate"),
                "{reason}"
            )
        }
        other => panic!("a peer without a certificate: {:?}", other.err()),
    }
    // A client that trusts another CA does not take the node's certificate.
    let stranger = cluster_pki(dir.path(), "stranger");
    let stranger_ca = stranger.ca_cert_file.clone().unwrap();
    match Client::connect(&seeds, config(&stranger_ca)) {
        Err(cassio_client::Error::Transport(cassio_core::Error::Tls { reason, .. })) => {
            assert!(reason.contains("invalid peer certificate"), "{reason}")
        }
        other => panic!("a client with another CA: {:?}", other.err()),
    }
    // Nor does a node of another CA: it stops at start with the reason.
    let mut outsider = node_config("n9", dir.path(), vec![seeds[0]]);
    outsider.tls = Some(stranger.clone());
    let refusal = Node::start(outsider).err().expect("a node with another CA");
    assert!(
        refusal.to_string().contains("invalid peer certificate"),
        "{refusal}"
    );
    // A certificate of its own the CA did not sign, or a CA file that
    // holds no certificate, stops the start.
    for (tls, why) in [
        (
            TlsFiles {
                ca_cert_file: Some(ca.clone()),
                ..stranger
            },
            "is not one its peers take",
        ),
        (
            TlsFiles {
                ca_cert_file: Some(files.key_file.clone()),
                ..files.clone()
            },
            "holds no certificate",
        ),
    ] {
        let refusal = Node::start(tls_config(dir.path(), tls)).err().expect(why);
        assert!(refusal.to_string().contains(why), "{refusal}");
    }
    for node in nodes {
        node.shutdown().unwrap();
    }
}

#[test]
fn bad_tls_files_stop_the_start_with_the_file_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (good, _) = certificate(dir.path(), "good");
    let (other, _) = certificate(dir.path(), "other");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let cases = [
        (
            TlsFiles {
                cert_file: dir.path().join("missing.crt"),
                ..good.clone()
            },
            "missing.crt",
        ),
        (
            TlsFiles {
                cert_file: not_pem.clone(),
                ..good.clone()
            },
            "holds no certificate",
        ),
        (
            TlsFiles {
                key_file: not_pem,
                ..good.clone()
            },
            "holds no private key",
        ),
        (
            TlsFiles {
                key_file: other.key_file,
                ..good.clone()
            },
            "do not make a server identity",
        ),
    ];
    for (files, why) in cases {
        let refusal = Node::start(tls_config(dir.path(), files.clone()))
            .err()
            .unwrap_or_else(|| panic!("{files:?} must not start"));
        assert!(refusal.to_string().contains(why), "{files:?}: {refusal}");
    }
    let no_resp = NodeConfig {
        resp: None,
        ..tls_config(dir.path(), good)
    };
    let refusal = Node::start(no_resp).err().expect("TLS without a RESP port");
    assert!(refusal.to_string().contains("--resp"), "{refusal}");
}
