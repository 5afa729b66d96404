//! Fewer syscalls per message: both ends of a native-protocol connection
//! read through a buffer (many frames per `read`) and write through
//! [`write_frames`], which sends every frame already queued in one `write`.

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Read buffer of a connection: frames up to this size often arrive in one
/// syscall.
pub(crate) const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Queued frames are gathered into one write up to about this size.
const WRITE_BATCH_BYTES: usize = 256 * 1024;

/// Writes the encoded frames from `queue` until it closes (`Ok`) or a write
/// fails. Frames queued while a write was under way go out together.
pub(crate) async fn write_frames<W: AsyncWrite + Unpin>(
    writer: &mut W,
    queue: &mut mpsc::Receiver<Vec<u8>>,
) -> std::io::Result<()> {
    let mut batch = Vec::new();
    while let Some(frame) = queue.recv().await {
        if queue.is_empty() {
            writer.write_all(&frame).await?;
            continue;
        }
        batch.extend_from_slice(&frame);
        while batch.len() < WRITE_BATCH_BYTES {
            match queue.try_recv() {
                Ok(frame) => batch.extend_from_slice(&frame),
                Err(_) => break,
            }
        }
        writer.write_all(&batch).await?;
        batch.clear();
        if batch.capacity() > 4 * WRITE_BATCH_BYTES {
            // One huge frame must not keep its buffer for the connection's life.
            batch = Vec::new();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts the writes that reach it.
    struct CountingWriter {
        bytes: Vec<u8>,
        writes: usize,
    }

    impl AsyncWrite for CountingWriter {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.writes += 1;
            self.bytes.extend_from_slice(buf);
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn queued_frames_go_out_in_one_write_in_order() {
        let (tx, mut rx) = mpsc::channel(16);
        for i in 0..10u8 {
            tx.send(vec![i; 3]).await.unwrap();
        }
        drop(tx);
        let mut writer = CountingWriter {
            bytes: Vec::new(),
            writes: 0,
        };
        write_frames(&mut writer, &mut rx).await.unwrap();
        assert_eq!(writer.writes, 1);
        let expected: Vec<u8> = (0..10u8).flat_map(|i| [i; 3]).collect();
        assert_eq!(writer.bytes, expected);
    }
}
