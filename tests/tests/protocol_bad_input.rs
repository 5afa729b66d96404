//! Bad input on the native protocol, over a real socket: garbage, an oversize
//! frame, a wrong protocol version, a wrong cluster name, a frame that is not
//! a message. Each gets a clear refusal or a closed connection, never a
//! crash, and the node keeps answering a well-behaved client throughout.
//! And framing a server must cope with: more requests in flight on one
//! connection than it runs at once, a frame in many pieces, a frame larger
//! than one read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cassio_core::net::{Connection, Tcp};
use cassio_core::proto::{self, Hello, HelloReply, Request, Response, Role};
use cassio_core::{Node, NodeConfig, NodeHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn start(dir: &std::path::Path) -> NodeHandle {
    Node::start(NodeConfig {
        name: "solo".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        resp: None,
        data_dir: Some(dir.to_path_buf()),
        vnodes: 8,
        frame_bytes_max: 256 * 1024,
        storage: cassio_core::storage::StorageConfig {
            value_bytes_max: 128 * 1024,
            ..Default::default()
        },
        ..NodeConfig::default()
    })
    .unwrap()
}

/// Reads until the server closes; returns what it sent.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "the server must close a connection that sent bad input"
    );
    out
}

/// A client connection to `addr`, as a driver opens one.
async fn open_client(addr: SocketAddr) -> cassio_core::Result<Connection> {
    Connection::open(
        &Tcp,
        addr,
        Hello::new("cassio", Role::Client, None),
        1 << 20,
        Duration::from_secs(2),
    )
    .await
}

/// A well-behaved client still gets answers.
async fn still_serves(addr: SocketAddr) {
    let conn = open_client(addr)
        .await
        .expect("a good client connects after bad ones");
    let response = conn
        .request(Request::ClusterStatus, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(matches!(response, Response::ClusterStatus(s) if s.members.len() == 1));
}

fn refusal(bytes: &[u8]) -> String {
    let len = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
    match proto::decode::<HelloReply>(&bytes[4..4 + len]).unwrap() {
        HelloReply::Refused { reason } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn send_hello(addr: SocketAddr, hello: &Hello) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    proto::write_frame(&mut stream, hello).await.unwrap();
    read_until_closed(&mut stream).await
}

#[tokio::test(flavor = "current_thread")]
async fn bad_input_closes_only_that_connection() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let addr = node.native_addr();

    // A long-lived good connection opened first must survive everything below.
    let survivor = open_client(addr).await.unwrap();

    // Garbage instead of a handshake.
    let mut garbage = TcpStream::connect(addr).await.unwrap();
    garbage
        .write_all(b"\x05\x00\x00\x00GET / HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    read_until_closed(&mut garbage).await;
    still_serves(addr).await;

    // A frame header claiming 1 GiB: refused before reading it.
    let mut oversize = TcpStream::connect(addr).await.unwrap();
    oversize
        .write_all(&(1u32 << 30).to_le_bytes())
        .await
        .unwrap();
    read_until_closed(&mut oversize).await;
    still_serves(addr).await;

    // Wrong protocol version and wrong cluster name: refused with the reason.
    let mut old = Hello::new("cassio", Role::Client, None);
    old.protocol_version = 99;
    let reason = refusal(&send_hello(addr, &old).await);
    assert!(reason.contains("protocol version 99"), "{reason}");
    let reason = refusal(&send_hello(addr, &Hello::new("other", Role::Client, None)).await);
    assert!(reason.contains("does not match"), "{reason}");
    // A client of protocol version 2, whose hello had no password field.
    #[derive(serde::Serialize)]
    struct HelloV2 {
        magic: u32,
        protocol_version: u32,
        cluster_name: String,
        role: Role,
        node_id: Option<String>,
    }
    let v2 = HelloV2 {
        magic: proto::MAGIC,
        protocol_version: 2,
        cluster_name: "cassio".into(),
        role: Role::Client,
        node_id: None,
    };
    let mut stream = TcpStream::connect(addr).await.unwrap();
    proto::write_frame(&mut stream, &v2).await.unwrap();
    let reason = refusal(&read_until_closed(&mut stream).await);
    let expected = format!(
        "protocol version 2 is not supported; this node speaks version {}",
        proto::PROTOCOL_VERSION
    );
    assert!(reason.contains(&expected), "{reason}");
    let mut magic = Hello::new("cassio", Role::Client, None);
    magic.magic = 0xdead_beef;
    assert!(refusal(&send_hello(addr, &magic).await).contains("bad magic"));

    // A good handshake followed by a frame that is not a message.
    let mut junk = TcpStream::connect(addr).await.unwrap();
    proto::write_frame(&mut junk, &Hello::new("cassio", Role::Client, None))
        .await
        .unwrap();
    junk.write_all(&[3, 0, 0, 0, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    let replies = read_until_closed(&mut junk).await;
    assert!(!replies.is_empty(), "the welcome came before the close");

    // A client may not send peer-only messages: an error answer, not a crash.
    let client = open_client(addr).await.unwrap();
    let response = client
        .request(
            Request::GossipAck2(Default::default()),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    assert!(matches!(response, Response::Error { message } if message.contains("peers")));

    let response = survivor
        .request(Request::ClusterStatus, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(
        matches!(response, Response::ClusterStatus(_)),
        "the first connection still works"
    );
    still_serves(addr).await;
    node.shutdown().unwrap();
}

/// A client timestamp far in the future is refused, not absorbed: it would
/// win over every later write and drag every clock forward (at u64::MAX it
/// overflowed the hybrid clock).
#[tokio::test(flavor = "current_thread")]
async fn far_future_client_timestamps_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let conn = open_client(node.native_addr()).await.unwrap();
    for timestamp in [u64::MAX, u64::MAX / 2] {
        let request = Request::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            level: None,
            timestamp: Some(timestamp),
            ttl_ms: None,
        };
        let response = conn.request(request, Duration::from_secs(2)).await.unwrap();
        assert!(
            matches!(&response, Response::Invalid { message } if message.contains("ahead")),
            "{response:?}"
        );
    }
    let request = Request::Put {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        level: None,
        timestamp: None,
        ttl_ms: None,
    };
    assert!(matches!(
        conn.request(request, Duration::from_secs(2)).await.unwrap(),
        Response::Written { .. }
    ));
    node.shutdown().unwrap();
}

/// 1,000 writes and then 1,000 reads in flight at once on one connection
/// (the server runs 256 at a time), with status requests (answered without
/// waiting) among them: every one is answered, each read with its value.
#[tokio::test(flavor = "current_thread")]
async fn a_thousand_requests_in_flight_on_one_connection_are_all_answered() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let conn = Arc::new(open_client(node.native_addr()).await.unwrap());
    let key = |i: usize| format!("key-{i}").into_bytes();
    let mut slots = Vec::new();
    for i in 0..1000 {
        let put = Request::Put {
            key: key(i),
            value: format!("value-{i}").into_bytes(),
            level: None,
            timestamp: None,
            ttl_ms: None,
        };
        slots.push(conn.send(&put).await.unwrap());
    }
    for slot in slots {
        let written = tokio::time::timeout(Duration::from_secs(10), slot).await;
        assert!(
            matches!(written, Ok(Ok(Response::Written { .. }))),
            "{written:?}"
        );
    }
    let mut slots = Vec::new();
    for i in 0..1000 {
        let get = Request::Get {
            key: key(i),
            level: None,
        };
        slots.push((Some(i), conn.send(&get).await.unwrap()));
        if i % 100 == 0 {
            slots.push((None, conn.send(&Request::ClusterStatus).await.unwrap()));
        }
    }
    for (i, slot) in slots {
        let answer = tokio::time::timeout(Duration::from_secs(10), slot)
            .await
            .expect("answered in time")
            .unwrap();
        match (i, answer) {
            (Some(i), Response::Value { value, .. }) => {
                assert_eq!(value, Some(format!("value-{i}").into_bytes()));
            }
            (None, Response::ClusterStatus(_)) => {}
            (i, other) => panic!("request {i:?} got {other:?}"),
        }
    }
    node.shutdown().unwrap();
}

/// A request written a few bytes at a time, and one larger than a read
/// (100 KiB; reads take 64 KiB), are each answered once whole.
#[tokio::test(flavor = "current_thread")]
async fn requests_in_pieces_and_larger_than_a_read_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let mut stream = TcpStream::connect(node.native_addr()).await.unwrap();
    proto::write_frame(&mut stream, &Hello::new("cassio", Role::Client, None))
        .await
        .unwrap();
    let welcome = proto::read_frame(&mut stream, 1 << 20)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        proto::decode::<HelloReply>(&welcome).unwrap(),
        HelloReply::Welcome { .. }
    ));
    let big = vec![b'x'; 100 * 1024];
    let put = proto::Frame::Request {
        id: 1,
        body: Request::Put {
            key: b"big".to_vec(),
            value: big.clone(),
            level: None,
            timestamp: None,
            ttl_ms: None,
        },
    };
    stream
        .write_all(&proto::encode_frame(&put).unwrap())
        .await
        .unwrap();
    let get = proto::Frame::Request {
        id: 2,
        body: Request::Get {
            key: b"big".to_vec(),
            level: None,
        },
    };
    for piece in proto::encode_frame(&get).unwrap().chunks(3) {
        stream.write_all(piece).await.unwrap();
        stream.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut answers = Vec::new();
    while answers.len() < 2 {
        let frame = tokio::time::timeout(
            Duration::from_secs(5),
            proto::read_frame(&mut stream, 1 << 20),
        )
        .await
        .expect("answered in time")
        .unwrap()
        .expect("the connection stays open");
        match proto::decode::<proto::Frame>(&frame).unwrap() {
            proto::Frame::Response { id, body } => answers.push((id, body)),
            other => panic!("not a response: {other:?}"),
        }
    }
    answers.sort_by_key(|(id, _)| *id);
    assert!(
        matches!(answers[0].1, Response::Written { .. }),
        "{:?}",
        answers[0]
    );
    assert!(
        matches!(&answers[1].1, Response::Value { value: Some(v), .. } if *v == big),
        "the 100 KiB value reads back"
    );
    node.shutdown().unwrap();
}
