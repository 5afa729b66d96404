//! Closing a connection whose input was refused so that the refusal reaches
//! the client: closing a socket with unread input resets the connection,
//! and a reset can lose the reply written just before it. So what the
//! client still sends is read and dropped for a bounded time first.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How long, and how many bytes, a connection refused for being over a
/// connection limit is drained: enough for the request a client sends
/// as it connects, short so that refusals hold few sockets.
const REFUSAL_LINGER: Duration = Duration::from_millis(250);
const REFUSAL_DRAIN_BYTES_MAX: usize = 64 * 1024;

/// Refused connections drained at once at most, node-wide: past it a
/// refusal is written and the connection closed at once, so that a flood
/// of refused connections cannot hold the file descriptors the limits
/// protect.
const REFUSALS_LINGERING_MAX: usize = 256;

static REFUSALS_LINGERING: AtomicUsize = AtomicUsize::new(0);

/// Ends the sending side (the reply is written), then reads and drops what
/// the client sends, until it closes, `linger` passes or `bytes_max` were
/// read. The whole close, shutdown included, takes `linger` at most.
pub(crate) async fn close_draining<S>(stream: &mut S, linger: Duration, bytes_max: usize)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let close = async {
        let _ = stream.shutdown().await;
        let mut sink = vec![0u8; 16 * 1024];
        let mut drained = 0;
        while drained < bytes_max {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(linger, close).await;
}

/// Writes `refusal` to a connection refused before it was served (over a
/// limit, or plain text on a TLS port) and closes it: drained as
/// [`close_draining`] does, unless [`REFUSALS_LINGERING_MAX`] refusals are
/// draining already.
pub(crate) async fn refuse_and_close<S>(stream: &mut S, refusal: &[u8])
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(REFUSAL_LINGER, stream.write_all(refusal)).await;
    let lingering = REFUSALS_LINGERING.fetch_add(1, Ordering::Relaxed);
    if lingering < REFUSALS_LINGERING_MAX {
        close_draining(stream, REFUSAL_LINGER, REFUSAL_DRAIN_BYTES_MAX).await;
    } else {
        let _ = tokio::time::timeout(REFUSAL_LINGER, stream.shutdown()).await;
    }
    REFUSALS_LINGERING.fetch_sub(1, Ordering::Relaxed);
}
