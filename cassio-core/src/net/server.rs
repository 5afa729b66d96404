//! The serving side of the native protocol: accept connections, check each
//! one's handshake, then read requests and answer them concurrently (bounded
//! per connection). Bad input (garbage, oversize frames, a wrong version or
//! cluster name) closes that one connection with a logged reason; the node
//! keeps serving everyone else.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, mpsc, watch};

use super::batching::{READ_BUFFER_BYTES, write_frames};
use super::transport::Transport;
use crate::error::{Error, Result};
use crate::proto::{self, Frame, Hello, HelloReply, Request, Response, Role};
use crate::types::NodeId;

pub struct ServerConfig {
    pub cluster_name: String,
    pub node_id: NodeId,
    pub frame_bytes_max: usize,
    /// Requests of one connection being handled at once; more wait.
    pub in_flight_per_connection_max: usize,
    pub handshake_timeout: Duration,
}

/// Responses answered at once are handed to the writer in batches of about
/// this size at most.
const ANSWERED_BATCH_BYTES: usize = 256 * 1024;

/// Who is on the other end of a connection.
#[derive(Clone, Debug)]
pub struct Caller {
    pub addr: SocketAddr,
    pub role: Role,
    pub node_id: Option<NodeId>,
}

/// Answers requests; the node implements it.
pub trait Handler: Send + Sync + 'static {
    /// The answer to a request that needs no waiting (on peers, timers or
    /// other tasks), given right away on the connection's own task; any
    /// other request is handed back, to be answered by [`Handler::handle`]
    /// in a task of its own.
    fn answer_now(
        &self,
        caller: &Caller,
        request: Request,
    ) -> std::result::Result<Response, Request>;

    fn handle(
        self: &Arc<Self>,
        caller: &Caller,
        request: Request,
    ) -> impl Future<Output = Response> + Send;
}

/// Accepts connections until `shutdown` turns true, serving each in its own
/// task; a connection that ends in an error is logged with its reason. The
/// native protocol and the RESP endpoint both listen through this.
pub(crate) async fn accept_loop<T, F, Fut>(
    transport: T,
    listener: T::Listener,
    mut shutdown: watch::Receiver<bool>,
    what: &'static str,
    serve_one: F,
) where
    T: Transport,
    F: Fn(T::Stream, SocketAddr) -> Fut,
    Fut: Future<Output = std::result::Result<(), String>> + Send + 'static,
{
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            accepted = transport.accept(&listener) => match accepted {
                Ok((stream, addr)) => {
                    let connection = serve_one(stream, addr);
                    tokio::spawn(async move {
                        if let Err(reason) = connection.await {
                            tracing::warn!(peer = %addr, %reason, "closed {what} connection");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "{what} accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Serves the native protocol until `shutdown` turns true.
pub async fn serve<T: Transport, H: Handler>(
    transport: T,
    listener: T::Listener,
    handler: Arc<H>,
    config: Arc<ServerConfig>,
    shutdown: watch::Receiver<bool>,
) {
    accept_loop(
        transport,
        listener,
        shutdown,
        "native",
        move |stream, addr| {
            let (handler, config) = (handler.clone(), config.clone());
            async move {
                serve_connection(stream, addr, handler, config)
                    .await
                    .map_err(|e| e.to_string())
            }
        },
    )
    .await
}

async fn serve_connection<S, H>(
    mut stream: S,
    addr: SocketAddr,
    handler: Arc<H>,
    config: Arc<ServerConfig>,
) -> Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let hello = tokio::time::timeout(
        config.handshake_timeout,
        proto::read_frame(&mut stream, config.frame_bytes_max),
    )
    .await
    .map_err(|_| Error::Timeout {
        what: "handshake".into(),
        after_ms: config.handshake_timeout.as_millis() as u64,
    })??;
    let Some(hello) = hello else { return Ok(()) };
    let hello: Hello = proto::decode(&hello)?;
    if let Some(reason) = hello.refusal(&config.cluster_name) {
        let _ = proto::write_frame(
            &mut stream,
            &HelloReply::Refused {
                reason: reason.clone(),
            },
        )
        .await;
        let _ = stream.shutdown().await;
        return Err(Error::HandshakeRefused {
            addr: addr.to_string(),
            reason,
        });
    }
    proto::write_frame(
        &mut stream,
        &HelloReply::Welcome {
            node_id: config.node_id.clone(),
        },
    )
    .await?;
    let caller = Arc::new(Caller {
        addr,
        role: hello.role,
        node_id: hello.node_id,
    });

    let (read_half, mut write_half) = tokio::io::split(stream);
    let mut read_half = tokio::io::BufReader::with_capacity(READ_BUFFER_BYTES, read_half);
    let (responses, mut queue) = mpsc::channel::<Vec<u8>>(config.in_flight_per_connection_max);
    let writer = tokio::spawn(async move {
        let _ = write_frames(&mut write_half, &mut queue).await;
        let _ = write_half.shutdown().await;
    });
    let in_flight = Arc::new(Semaphore::new(config.in_flight_per_connection_max));
    // Responses answered at once, encoded back to back: they go to the
    // writer together once no whole request is left in the read buffer (or
    // enough piled up).
    let mut answered = Vec::new();
    let mut payload = Vec::new();
    let outcome = loop {
        let flush =
            answered.len() >= ANSWERED_BATCH_BYTES || !proto::holds_whole_frame(read_half.buffer());
        if !answered.is_empty()
            && flush
            && responses.send(std::mem::take(&mut answered)).await.is_err()
        {
            break Ok(());
        }
        match proto::read_frame_into(&mut read_half, &mut payload, config.frame_bytes_max).await {
            Ok(true) => {}
            Ok(false) => break Ok(()),
            Err(e) => break Err(e),
        }
        let (id, body) = match proto::decode::<Frame>(&payload) {
            Ok(Frame::Request { id, body }) => (id, body),
            Ok(Frame::Response { .. }) => {
                break Err(Error::MalformedMessage(
                    "a response where a request belongs".into(),
                ));
            }
            Err(e) => break Err(e),
        };
        let body = match handler.answer_now(&caller, body) {
            Ok(answer) => {
                encode_response(&mut answered, id, answer);
                continue;
            }
            Err(body) => body,
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break Ok(());
        };
        let (handler, caller, responses) = (handler.clone(), caller.clone(), responses.clone());
        tokio::spawn(async move {
            let mut frame = Vec::new();
            encode_response(&mut frame, id, handler.handle(&caller, body).await);
            let _ = responses.send(frame).await;
            drop(permit);
        });
    };
    if !answered.is_empty() {
        let _ = responses.send(answered).await;
    }
    drop(responses);
    let _ = writer.await;
    outcome
}

/// Appends the response to request `id`, as a frame, to `out`. A response
/// that cannot be encoded is answered with an error saying so.
fn encode_response(out: &mut Vec<u8>, id: u64, body: Response) {
    if let Err(e) = proto::encode_frame_into(out, &Frame::Response { id, body }) {
        tracing::error!(error = %e, "cannot encode a response");
        let body = Response::Error {
            message: format!("cannot encode the response: {e}"),
        };
        let _ = proto::encode_frame_into(out, &Frame::Response { id, body });
    }
}
