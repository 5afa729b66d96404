//! The calling side of a native-protocol connection: handshake, then many
//! requests in flight at once, matched to responses by id. A writer task and
//! a reader task own the two halves of the stream; callers encode their
//! requests into the connection's [`Outbox`] and wait on their own response
//! slot ([`ResponseSlot`]), which forgets the request if dropped unanswered
//! (a timeout, say).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

use super::READ_BUFFER_BYTES;
use super::outbox::Outbox;
use super::tls::TlsClient;
use super::transport::Transport;
use crate::error::{Error, Result};
use crate::proto::{self, Frame, Hello, HelloReply, Request, RequestFrame, Response};
use crate::types::NodeId;

type Pending = Arc<Mutex<fnv::FnvHashMap<u64, oneshot::Sender<Response>>>>;

pub struct Connection {
    addr: SocketAddr,
    remote: NodeId,
    next_id: AtomicU64,
    pending: Pending,
    outbox: Arc<Outbox>,
    reader: tokio::task::JoinHandle<()>,
}

impl Connection {
    /// Connects to `addr` and performs the handshake within `timeout`.
    pub async fn open<T: Transport>(
        transport: &T,
        addr: SocketAddr,
        hello: Hello,
        frame_bytes_max: usize,
        timeout: Duration,
    ) -> Result<Connection> {
        Self::open_with(transport, addr, hello, frame_bytes_max, timeout, None).await
    }

    /// [`Connection::open`], over TLS if `tls` is given (a node whose
    /// native port speaks TLS), all within `timeout`.
    pub async fn open_with<T: Transport>(
        transport: &T,
        addr: SocketAddr,
        hello: Hello,
        frame_bytes_max: usize,
        timeout: Duration,
        tls: Option<&TlsClient>,
    ) -> Result<Connection> {
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = |what: String| Error::Timeout {
            what,
            after_ms: timeout.as_millis() as u64,
        };
        let stream = tokio::time::timeout_at(deadline, transport.connect(addr))
            .await
            .map_err(|_| timed_out(format!("connecting to {addr}")))?
            .map_err(|e| Error::io(addr.to_string(), e))?;
        let Some(tls) = tls else {
            return Self::start(stream, addr, hello, frame_bytes_max, deadline, timed_out).await;
        };
        let stream = tokio::time::timeout_at(deadline, tls.connect(addr, stream))
            .await
            .map_err(|_| {
                timed_out(format!(
                    "TLS handshake with {addr} (a stalled node, or a port that speaks no TLS)"
                ))
            })??;
        Self::start(stream, addr, hello, frame_bytes_max, deadline, timed_out).await
    }

    /// Says hello on a connected `stream` by `deadline` and, once welcomed,
    /// starts the connection's reader and writer.
    async fn start<S>(
        mut stream: S,
        addr: SocketAddr,
        hello: Hello,
        frame_bytes_max: usize,
        deadline: tokio::time::Instant,
        timed_out: impl Fn(String) -> Error,
    ) -> Result<Connection>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let not_a_node = |reason: String| Error::NotANode {
            addr: addr.to_string(),
            reason,
        };
        let handshake = async {
            proto::write_frame(&mut stream, &hello).await?;
            let reply = proto::read_frame(&mut stream, frame_bytes_max)
                .await?
                .ok_or(Error::ConnectionClosed {
                    addr: addr.to_string(),
                })?;
            proto::decode::<HelloReply>(&reply)
        };
        // An answer no cassio node gives (an absurd frame length, bytes
        // that are no message) means another service; anything else
        // (a closed connection, say) keeps its own error.
        let reply = tokio::time::timeout_at(deadline, handshake)
            .await
            .map_err(|_| {
                timed_out(format!(
                    "handshake with {addr} (a stalled node, or not a node's native port: a Redis port waits for a command line)"
                ))
            })?
            .map_err(|e| match e {
                Error::FrameTooLarge { .. } | Error::MalformedMessage(_) => {
                    not_a_node(e.to_string())
                }
                other => other,
            });
        let remote = match reply? {
            HelloReply::Welcome { node_id } => node_id,
            HelloReply::Refused { reason } => {
                return Err(Error::HandshakeRefused {
                    addr: addr.to_string(),
                    reason,
                });
            }
        };

        let (read_half, mut write_half) = tokio::io::split(stream);
        let mut read_half = tokio::io::BufReader::with_capacity(READ_BUFFER_BYTES, read_half);
        let pending: Pending = Arc::default();
        // Closed by whichever ends first: the writer (a failed write), the
        // reader (the server hung up) or the connection's drop.
        let outbox = Arc::new(Outbox::default());
        let writer_outbox = outbox.clone();
        tokio::spawn(async move {
            let _ = writer_outbox.write_to(&mut write_half).await;
            // Tell the server we are done, so it closes and our reader ends.
            let _ = write_half.shutdown().await;
        });
        let reader_pending = pending.clone();
        let reader_outbox = outbox.clone();
        let reader = tokio::spawn(async move {
            let mut payload = Vec::new();
            loop {
                let frame =
                    match proto::read_frame_into(&mut read_half, &mut payload, frame_bytes_max)
                        .await
                    {
                        Ok(true) => proto::decode::<Frame>(&payload),
                        Ok(false) => break,
                        Err(e) => Err(e),
                    };
                match frame {
                    Ok(Frame::Response { id, body }) => {
                        if let Some(slot) = reader_pending.lock().remove(&id) {
                            let _ = slot.send(body);
                        }
                    }
                    Ok(Frame::Request { .. }) => {
                        tracing::warn!(%addr, "server sent a request on a client connection; closing");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(%addr, error = %e, "closing connection");
                        break;
                    }
                }
            }
            // Closed first: a request sent from now on fails at once, and one
            // pending before is woken by dropping its slot ("connection
            // closed").
            reader_outbox.close();
            reader_pending.lock().clear();
        });
        Ok(Connection {
            addr,
            remote,
            next_id: AtomicU64::new(1),
            pending,
            outbox,
            reader,
        })
    }

    pub fn remote(&self) -> &NodeId {
        &self.remote
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn is_closed(&self) -> bool {
        self.outbox.is_closed()
    }

    /// Queues `body` for sending, waiting only for room in the write queue:
    /// its id and the receiver its response will arrive on.
    async fn enqueue<B: Serialize>(&self, body: &B) -> Result<(u64, oneshot::Receiver<Response>)> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (slot, answer) = oneshot::channel();
        // Pending before it can be sent: the response may come at once.
        self.pending.lock().insert(id, slot);
        let frame = RequestFrame::Request { id, body };
        let pushed = self
            .outbox
            .push(|out| proto::encode_frame_into(out, &frame))
            .await;
        let failed = match pushed {
            Ok(Ok(())) => return Ok((id, answer)),
            Ok(Err(e)) => e,
            Err(_) => Error::ConnectionClosed {
                addr: self.addr.to_string(),
            },
        };
        self.pending.lock().remove(&id);
        Err(failed)
    }

    /// Sends `body` (a [`Request`], or one that encodes as a request) and
    /// returns the slot its response will arrive in; the slot keeps the
    /// connection open until then.
    pub async fn send<B: Serialize>(self: &Arc<Self>, body: &B) -> Result<ResponseSlot> {
        let (id, answer) = self.enqueue(body).await?;
        Ok(ResponseSlot {
            id,
            conn: self.clone(),
            answer,
            answered: false,
        })
    }

    /// Sends `body` and waits up to `timeout` for its response (the wait for
    /// room in the write queue included).
    pub async fn request(&self, body: Request, timeout: Duration) -> Result<Response> {
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || Error::Timeout {
            what: format!("request to {}", self.addr),
            after_ms: timeout.as_millis() as u64,
        };
        let (id, answer) = tokio::time::timeout_at(deadline, self.enqueue(&body))
            .await
            .map_err(|_| timed_out())??;
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(answer) => answer.map_err(|_| Error::ConnectionClosed {
                addr: self.addr.to_string(),
            }),
            Err(_) => {
                self.pending.lock().remove(&id);
                Err(timed_out())
            }
        }
    }
}

/// The response to one sent request, as a future. Dropping it before the
/// response came forgets the request: a late response is discarded.
pub struct ResponseSlot {
    id: u64,
    conn: Arc<Connection>,
    answer: oneshot::Receiver<Response>,
    answered: bool,
}

impl ResponseSlot {
    /// The connection the request went on.
    pub fn connection(&self) -> &Arc<Connection> {
        &self.conn
    }
}

impl Future for ResponseSlot {
    type Output = Result<Response>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let answer = Pin::new(&mut self.answer).poll(cx);
        answer.map(|answer| {
            self.answered = true;
            answer.map_err(|_| Error::ConnectionClosed {
                addr: self.conn.addr.to_string(),
            })
        })
    }
}

impl Drop for ResponseSlot {
    fn drop(&mut self) {
        if !self.answered {
            self.conn.pending.lock().remove(&self.id);
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The writer sends what is queued, then shuts its half down.
        self.outbox.close();
        self.reader.abort();
    }
}
