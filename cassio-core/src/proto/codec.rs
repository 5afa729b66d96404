//! Encoding of messages (bincode 2, standard config) and length-prefixed
//! framing: `len u32 LE | payload`. A frame longer than `frame_bytes_max` is
//! refused before its payload is read; bincode's own limit bounds what a
//! malformed length inside a payload can make the decoder allocate.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{Error, Result};

/// The hard upper bound on `frame_bytes_max`, and so on any allocation a
/// decoder makes.
pub const FRAME_BYTES_LIMIT: usize = 64 * 1024 * 1024;

const CONFIG: bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<FRAME_BYTES_LIMIT>,
> = bincode::config::standard().with_limit::<FRAME_BYTES_LIMIT>();

pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>> {
    bincode::serde::encode_to_vec(message, CONFIG)
        .map_err(|e| Error::MalformedMessage(format!("cannot encode: {e}")))
}

/// Decodes one message that must fill `bytes` exactly.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let (message, used) = bincode::serde::decode_from_slice(bytes, CONFIG)
        .map_err(|e| Error::MalformedMessage(e.to_string()))?;
    if used != bytes.len() {
        return Err(Error::MalformedMessage(format!(
            "{} trailing bytes after the message",
            bytes.len() - used
        )));
    }
    Ok(message)
}

/// Decodes the message `bytes` start with, whatever follows it.
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    bincode::serde::decode_from_slice(bytes, CONFIG)
        .map(|(message, _)| message)
        .map_err(|e| Error::MalformedMessage(e.to_string()))
}

/// Reads one frame's payload. `Ok(None)` is a clean end of stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    frame_bytes_max: usize,
) -> Result<Option<Vec<u8>>> {
    let mut payload = Vec::new();
    let read = read_frame_into(reader, &mut payload, frame_bytes_max).await?;
    Ok(read.then_some(payload))
}

/// A payload buffer larger than this is not kept for the next frame.
const KEPT_PAYLOAD_BYTES_MAX: usize = 1024 * 1024;

/// [`read_frame`] into `payload`, which a connection's loop reuses from
/// frame to frame; false at a clean end of stream.
pub async fn read_frame_into<R: AsyncRead + Unpin>(
    reader: &mut R,
    payload: &mut Vec<u8>,
    frame_bytes_max: usize,
) -> Result<bool> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(Error::io("connection", e)),
    }
    let len = payload_len(len, frame_bytes_max)?;
    if payload.capacity() > KEPT_PAYLOAD_BYTES_MAX && len <= KEPT_PAYLOAD_BYTES_MAX {
        *payload = Vec::new();
    }
    payload.clear();
    payload.resize(len, 0);
    reader
        .read_exact(payload)
        .await
        .map_err(|e| Error::io("connection", e))?;
    Ok(true)
}

/// Encodes one message as a whole frame: length prefix and payload.
pub fn encode_frame<T: Serialize>(message: &T) -> Result<Vec<u8>> {
    let mut frame = Vec::with_capacity(128);
    encode_frame_into(&mut frame, message)?;
    Ok(frame)
}

/// Appends one message as a whole frame to `out`; on error `out` is as it was.
pub fn encode_frame_into<T: Serialize>(out: &mut Vec<u8>, message: &T) -> Result<()> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    if let Err(e) = bincode::serde::encode_into_std_write(message, out, CONFIG) {
        out.truncate(start);
        return Err(Error::MalformedMessage(format!("cannot encode: {e}")));
    }
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// The payload length of the frame at the start of `buf`, if all of it has
/// arrived; an error if its length prefix is over `frame_bytes_max`.
pub fn whole_frame_len(buf: &[u8], frame_bytes_max: usize) -> Result<Option<usize>> {
    let Some(prefix) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = payload_len(*prefix, frame_bytes_max)?;
    Ok((buf.len() - 4 >= len).then_some(len))
}

/// A frame's length prefix, checked against the limit.
fn payload_len(prefix: [u8; 4], frame_bytes_max: usize) -> Result<usize> {
    let len = u32::from_le_bytes(prefix) as usize;
    if len > frame_bytes_max {
        return Err(Error::FrameTooLarge {
            len,
            max: frame_bytes_max,
        });
    }
    Ok(len)
}

/// Writes one message as a frame.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    writer: &mut W,
    message: &T,
) -> Result<()> {
    let frame = encode_frame(message)?;
    write_flushed(writer, &frame)
        .await
        .map_err(|e| Error::io("connection", e))
}

/// Writes `bytes` and flushes: over TLS, what was written may otherwise
/// wait, encrypted, unsent (a socket's flush does nothing).
pub(crate) async fn write_flushed<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
) -> std::io::Result<()> {
    writer.write_all(bytes).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{
        Frame, Hello, KeyedCell, KeyedCellRef, ReplicaRequest, Request, RequestFrame, Role,
    };
    use crate::storage::Cell;
    use proptest::prelude::*;

    #[test]
    fn messages_round_trip() {
        let frame = Frame::Request {
            id: 7,
            body: Request::ClusterStatus,
        };
        assert_eq!(decode::<Frame>(&encode(&frame).unwrap()).unwrap(), frame);
        let hello = Hello::new("prod", Role::Client, None);
        assert_eq!(decode::<Hello>(&encode(&hello).unwrap()).unwrap(), hello);
    }

    #[test]
    fn frames_append_and_are_recognized_whole() {
        let message = Frame::Request {
            id: 9,
            body: Request::ReplicaReads(vec![b"key".to_vec().into()]),
        };
        let mut out = b"xy".to_vec();
        encode_frame_into(&mut out, &message).unwrap();
        assert_eq!(&out[2..], &encode_frame(&message).unwrap()[..]);
        let frame = &out[2..];
        let whole = |buf: &[u8]| whole_frame_len(buf, 1 << 20).unwrap().is_some();
        assert!(whole(frame));
        assert!(!whole(&frame[..frame.len() - 1]));
        assert!(!whole(&frame[..3]));
        assert_eq!(decode::<Frame>(&frame[4..]).unwrap(), message);
        let Frame::Request { id, body } = &message else {
            unreachable!()
        };
        let borrowed = encode_frame(&RequestFrame::Request { id: *id, body }).unwrap();
        assert_eq!(borrowed, frame, "a borrowed request encodes the same");
    }

    #[test]
    fn borrowed_replica_requests_encode_as_owned_ones() {
        let cells = [
            (b"k1".to_vec(), Cell::value("v1", 10)),
            (b"k2".to_vec(), Cell::tombstone(11)),
        ];
        let owned = Request::ReplicaWrites(
            (cells.iter())
                .map(|(key, cell)| KeyedCell {
                    key: key.clone(),
                    cell: cell.clone(),
                })
                .collect(),
        );
        let borrowed = ReplicaRequest::Writes(
            (cells.iter())
                .map(|(key, cell)| KeyedCellRef { key, cell })
                .collect(),
        );
        let frame = |body: &Request| encode_frame(&RequestFrame::Request { id: 3, body }).unwrap();
        let owned_frame = frame(&owned);
        assert_eq!(
            encode_frame(&RequestFrame::Request {
                id: 3,
                body: &borrowed
            })
            .unwrap(),
            owned_frame
        );
        assert_eq!(
            decode::<Frame>(&owned_frame[4..]).unwrap(),
            Frame::Request { id: 3, body: owned }
        );

        let keys: [&[u8]; 2] = [b"a", b"bc"];
        let owned = Request::ReplicaReads(keys.iter().map(|k| k.to_vec().into()).collect());
        let borrowed =
            ReplicaRequest::Reads(keys.iter().map(|k| serde_bytes::Bytes::new(k)).collect());
        assert_eq!(
            encode_frame(&RequestFrame::Request {
                id: 3,
                body: &borrowed
            })
            .unwrap(),
            frame(&owned)
        );
    }

    #[tokio::test]
    async fn one_payload_buffer_reads_frame_after_frame() {
        let big = vec![7u8; 2 * KEPT_PAYLOAD_BYTES_MAX];
        let mut stream = Vec::new();
        for payload in [&b"first"[..], &big, b"x"] {
            stream.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            stream.extend_from_slice(payload);
        }
        stream.extend_from_slice(&100u32.to_le_bytes());
        let max = 4 * KEPT_PAYLOAD_BYTES_MAX;
        let mut reader = &stream[..];
        let mut payload = Vec::new();
        assert!(
            read_frame_into(&mut reader, &mut payload, max)
                .await
                .unwrap()
        );
        assert_eq!(payload, b"first");
        assert!(
            read_frame_into(&mut reader, &mut payload, max)
                .await
                .unwrap()
        );
        assert_eq!(payload, big);
        assert!(
            read_frame_into(&mut reader, &mut payload, max)
                .await
                .unwrap()
        );
        assert_eq!(payload, b"x");
        assert!(
            payload.capacity() <= KEPT_PAYLOAD_BYTES_MAX,
            "the big frame's buffer was let go"
        );
        let truncated = read_frame_into(&mut reader, &mut payload, max).await;
        assert!(matches!(truncated, Err(Error::Io { .. })), "{truncated:?}");
        let mut empty = &b""[..];
        assert!(
            !read_frame_into(&mut empty, &mut payload, max)
                .await
                .unwrap()
        );
        let mut oversize = &stream[..];
        let refused = read_frame_into(&mut oversize, &mut payload, 4).await;
        assert!(matches!(
            refused,
            Err(Error::FrameTooLarge { len: 5, max: 4 })
        ));
    }

    #[test]
    fn refusals_say_why() {
        let own = crate::types::NodeId::from("n0");
        let refusal = |hello: &Hello, cluster: &str| hello.refusal(cluster, &own, None);
        let mut hello = Hello::new("prod", Role::Peer, None);
        assert!(refusal(&hello, "prod").unwrap().contains("node id"));
        hello.node_id = Some("n1".into());
        assert_eq!(refusal(&hello, "prod"), None);
        assert!(refusal(&hello, "test").unwrap().contains("does not match"));
        hello.node_id = Some(own.clone());
        assert!(
            refusal(&hello, "prod")
                .unwrap()
                .contains("node name n0 is this node's own")
        );
        hello.protocol_version = 99;
        assert!(refusal(&hello, "prod").unwrap().contains("version 99"));
    }

    #[test]
    fn a_cluster_with_a_password_refuses_hellos_without_it() {
        let own = crate::types::NodeId::from("n0");
        let password = crate::types::Secret::new("s3cret");
        let refusal = |hello: &Hello| hello.refusal("prod", &own, Some(&password));
        let hello = Hello::new("prod", Role::Client, None);
        assert!(refusal(&hello).unwrap().contains("requires a password"));
        let wrong = crate::types::Secret::new("guess");
        let hello = hello.with_password(Some(&wrong));
        assert_eq!(refusal(&hello).as_deref(), Some("wrong password"));
        let hello = hello.with_password(Some(&password));
        assert_eq!(refusal(&hello), None);
        assert_eq!(
            hello.refusal("prod", &own, None),
            None,
            "a password given to a cluster without one is ignored"
        );
        let encoded = encode(&hello).unwrap();
        assert_eq!(decode::<Hello>(&encoded).unwrap(), hello, "it travels");
    }

    proptest! {
        /// Arbitrary bytes decode to an error or a message, never a panic
        /// or an allocation beyond the limit.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Frame>(&bytes);
            let _ = decode::<Hello>(&bytes);
        }

        #[test]
        fn truncated_frames_are_errors(cut in 0usize..20) {
            let frame = Frame::Request { id: 1, body: Request::ClusterStatus };
            let bytes = encode(&frame).unwrap();
            let cut = cut.min(bytes.len().saturating_sub(1));
            prop_assert!(decode::<Frame>(&bytes[..cut]).is_err());
        }
    }
}
