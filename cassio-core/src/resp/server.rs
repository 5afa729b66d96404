//! The RESP listener: read what the client sent, run every complete command
//! in order (a pipeline is answered as one batch), write the replies. Input
//! that is not RESP gets `-ERR Protocol error: ...` and that connection is
//! closed; the node keeps serving everyone else.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::commands::Session;
use super::parse::parse_command;
use super::reply::Reply;
use crate::net::Transport;
use crate::node::shared::NodeShared;

/// Replies are written out once this much is waiting.
const REPLY_FLUSH_BYTES: usize = 1024 * 1024;

/// Bytes read per syscall.
const READ_CHUNK_BYTES: usize = 64 * 1024;

pub(crate) async fn serve<T: Transport>(
    transport: T,
    listener: T::Listener,
    node: Arc<NodeShared<T>>,
    shutdown: watch::Receiver<bool>,
) {
    crate::net::accept_loop(transport, listener, shutdown, "RESP", move |stream, _| {
        serve_connection(stream, node.clone())
    })
    .await
}

async fn serve_connection<S, T>(mut stream: S, node: Arc<NodeShared<T>>) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: Transport,
{
    let bulk_bytes_max = node.config.frame_bytes_max;
    let mut session = Session {
        level: node.config.read_consistency,
        name: None,
        quit: false,
    };
    let mut buffer: Vec<u8> = Vec::with_capacity(READ_CHUNK_BYTES);
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    let mut out = Vec::new();
    loop {
        let read = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if read == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..read]);
        let mut consumed = 0;
        let mut protocol_error = None;
        loop {
            match parse_command(&buffer[consumed..], bulk_bytes_max) {
                Ok(Some((args, used))) => {
                    consumed += used;
                    if args.is_empty() {
                        continue;
                    }
                    node.resp_command(&mut session, args).await.encode(&mut out);
                    if out.len() >= REPLY_FLUSH_BYTES {
                        // A long pipeline must not pile its replies up in memory.
                        stream.write_all(&out).await.map_err(|e| e.to_string())?;
                        out.clear();
                    }
                    if session.quit {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    Reply::err(format!("ERR Protocol error: {e}")).encode(&mut out);
                    protocol_error = Some(e);
                    break;
                }
            }
        }
        buffer.drain(..consumed);
        if buffer.len() > bulk_bytes_max + 1024 {
            Reply::err("ERR Protocol error: request too large").encode(&mut out);
            protocol_error = Some("request too large".into());
        }
        stream.write_all(&out).await.map_err(|e| e.to_string())?;
        out.clear();
        if let Some(e) = protocol_error {
            let _ = stream.shutdown().await;
            return Err(e);
        }
        if session.quit {
            let _ = stream.shutdown().await;
            return Ok(());
        }
    }
}
