//! Closing a connection whose input was refused so that the refusal reaches
//! the client: closing a socket with unread input resets the connection,
//! and a reset can lose the reply written just before it. So what the
//! client still sends is read and dropped for a bounded time first.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Ends the sending side (the reply is written), then reads and drops what
/// the client sends, until it closes, `linger` passes or `bytes_max` were
/// read.
pub(crate) async fn close_draining<S>(stream: &mut S, linger: Duration, bytes_max: usize)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = stream.shutdown().await;
    let drain = async {
        let mut sink = vec![0u8; 16 * 1024];
        let mut drained = 0;
        while drained < bytes_max {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(linger, drain).await;
}

/// How long, and how many bytes, a connection refused for being over a
/// connection limit is drained: enough for the request a client sends
/// as it connects, short so that a flood of refusals holds few sockets.
pub(crate) const REFUSAL_LINGER: Duration = Duration::from_millis(250);
pub(crate) const REFUSAL_DRAIN_BYTES_MAX: usize = 64 * 1024;
