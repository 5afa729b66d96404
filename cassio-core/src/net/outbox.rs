//! The sending side of a native-protocol connection, at both ends: callers
//! encode their frames (requests, or a server's responses) straight into one
//! shared buffer, and the connection's writer takes all of it at once, so a
//! frame costs neither a buffer of its own nor a channel message, and frames
//! queued together leave in one `write`.

use parking_lot::Mutex;
use tokio::io::AsyncWrite;
use tokio::sync::Notify;

/// Callers wait for room once this much waits to be written (a larger frame
/// still goes in when the outbox is below it).
const OUTBOX_BYTES_MAX: usize = 4 * 1024 * 1024;

/// A writer's buffer larger than this is let go after use.
const KEPT_BUFFER_BYTES_MAX: usize = 1024 * 1024;

/// The outbox is closed: the connection is shutting down or its writer
/// failed.
#[derive(Debug)]
pub(crate) struct Closed;

#[derive(Default)]
struct State {
    bytes: Vec<u8>,
    closed: bool,
}

#[derive(Default)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    /// Wakes the writer: bytes arrived, or the outbox closed.
    ready: Notify,
    /// Wakes callers waiting for room.
    room: Notify,
}

impl Outbox {
    /// Appends what `encode` writes (one whole frame, or nothing on error),
    /// waiting while the outbox is full.
    pub(crate) async fn push<E>(
        &self,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<Result<(), E>, Closed> {
        loop {
            // Created before the check: a wake-up in between is not lost.
            let room = self.room.notified();
            {
                let mut state = self.state.lock();
                if state.closed {
                    return Err(Closed);
                }
                if state.bytes.len() < OUTBOX_BYTES_MAX {
                    let was_empty = state.bytes.is_empty();
                    let encoded = encode(&mut state.bytes);
                    drop(state);
                    if was_empty {
                        self.ready.notify_one();
                    }
                    return Ok(encoded);
                }
            }
            room.await;
        }
    }

    /// True once closed: pushes fail.
    pub(crate) fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// No more pushes; the writer sends what is left and ends.
    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
        self.ready.notify_one();
        self.room.notify_waiters();
    }

    /// The connection's writer: writes whatever was pushed, all of it at
    /// once, until the outbox is closed and empty or a write fails (then
    /// the outbox closes).
    pub(crate) async fn write_to<W: AsyncWrite + Unpin>(
        &self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        let mut out = Vec::new();
        loop {
            let ready = self.ready.notified();
            {
                let mut state = self.state.lock();
                if !state.bytes.is_empty() {
                    std::mem::swap(&mut state.bytes, &mut out);
                } else if state.closed {
                    return Ok(());
                }
            }
            if out.is_empty() {
                ready.await;
                continue;
            }
            self.room.notify_waiters();
            if let Err(e) = crate::proto::write_flushed(writer, &out).await {
                self.close();
                return Err(e);
            }
            out.clear();
            if out.capacity() > KEPT_BUFFER_BYTES_MAX {
                out = Vec::new();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn push_bytes(outbox: &Outbox, bytes: &[u8]) -> impl Future<Output = Result<(), Closed>> {
        let bytes = bytes.to_vec();
        async move {
            let pushed = outbox
                .push(|out| {
                    out.extend_from_slice(&bytes);
                    Ok::<(), ()>(())
                })
                .await?;
            pushed.expect("the encoder cannot fail");
            Ok(())
        }
    }

    #[tokio::test]
    async fn frames_pushed_together_leave_in_order_then_the_writer_ends() {
        let outbox = Arc::new(Outbox::default());
        for i in 0..10u8 {
            push_bytes(&outbox, &[i; 3]).await.unwrap();
        }
        outbox.close();
        assert!(push_bytes(&outbox, b"late").await.is_err(), "closed");
        let mut written = Vec::new();
        outbox.write_to(&mut written).await.unwrap();
        let expected: Vec<u8> = (0..10u8).flat_map(|i| [i; 3]).collect();
        assert_eq!(written, expected, "everything pushed before the close");
    }

    #[tokio::test]
    async fn a_full_outbox_makes_callers_wait_until_the_writer_drains_it() {
        let outbox = Arc::new(Outbox::default());
        let big = vec![7u8; OUTBOX_BYTES_MAX];
        push_bytes(&outbox, &big).await.unwrap();
        let waiting = tokio::spawn({
            let outbox = outbox.clone();
            async move { push_bytes(&outbox, b"next").await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "no room until the writer runs");
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let writer = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.write_to(&mut client).await }
        });
        let mut received = Vec::new();
        let reading = async {
            use tokio::io::AsyncReadExt;
            let mut chunk = vec![0u8; 64 * 1024];
            while received.len() < big.len() + 4 {
                let n = server.read(&mut chunk).await.unwrap();
                received.extend_from_slice(&chunk[..n]);
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), reading)
            .await
            .expect("the writer drains the outbox");
        waiting.await.unwrap().unwrap();
        assert_eq!(&received[big.len()..], b"next");
        outbox.close();
        writer.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_failed_write_closes_the_outbox() {
        let outbox = Outbox::default();
        push_bytes(&outbox, b"frame").await.unwrap();
        let (client, server) = tokio::io::duplex(16);
        drop(server);
        let mut client = client;
        assert!(outbox.write_to(&mut client).await.is_err());
        assert!(push_bytes(&outbox, b"more").await.is_err());
    }
}
