//! The serving side of the native protocol: accept connections, check each
//! one's handshake (a client past `max_clients` is refused; peers always
//! get in), then read requests and answer them concurrently (bounded
//! per connection). Bad input (garbage, oversize frames, a wrong version or
//! cluster name) closes that one connection with a logged reason; the node
//! keeps serving everyone else.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio_rustls::rustls;

use super::READ_BUFFER_BYTES;
use super::connection_limit::ConnectionLimit;
use super::outbox::Outbox;
use super::tls::accept as tls_accept;
use super::transport::Transport;
use crate::error::{Error, Result};
use crate::proto::{self, Frame, Hello, HelloReply, Request, Response, Role};
use crate::types::{NodeId, Secret};

pub(crate) struct ServerConfig {
    pub cluster_name: String,
    pub node_id: NodeId,
    pub frame_bytes_max: usize,
    /// Requests of one connection being handled at once; more wait.
    pub in_flight_per_connection_max: usize,
    pub handshake_timeout: Duration,
    /// Clients and peers must give it in their hello.
    pub password: Option<Secret>,
    /// Client connections open at once, shared with the Redis-protocol
    /// port; a client's handshake past it is refused. Peers do not count:
    /// refusing one would split the cluster.
    pub clients: Arc<ConnectionLimit>,
    /// Given, the port speaks TLS only.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

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
    /// other tasks), given right away; any other request is handed back, to
    /// be answered by [`Handler::handle`], whose future the connection's task
    /// polls beside its other requests.
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
pub(crate) async fn serve<T: Transport, H: Handler>(
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

/// Tells the other end why its handshake is refused, closes the
/// connection, and returns the error that ends it.
async fn refuse<S>(stream: &mut S, addr: SocketAddr, reason: String) -> Error
where
    S: tokio::io::AsyncWrite + Unpin,
{
    let refused = HelloReply::Refused {
        reason: reason.clone(),
    };
    let _ = proto::write_frame(stream, &refused).await;
    let _ = stream.shutdown().await;
    Error::HandshakeRefused {
        addr: addr.to_string(),
        reason,
    }
}

/// The frame a plain-text hello on a TLS port is answered with.
static PLAIN_TEXT_REFUSAL: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let refusal = HelloReply::Refused {
        reason: "this node's native port speaks TLS only: connect with the cluster's CA \
                 (cassio --tls-ca-cert-file, ClientConfig::tls)"
            .into(),
    };
    proto::encode_frame(&refusal).unwrap_or_default()
});

/// Serves one connection: over TLS if the port speaks it. A peer or client
/// that speaks plain text to a TLS port is refused in its own protocol, a
/// hello refusal that says why.
async fn serve_connection<S, H>(
    stream: S,
    addr: SocketAddr,
    handler: Arc<H>,
    config: Arc<ServerConfig>,
) -> Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let Some(tls) = config.tls.clone() else {
        return serve_stream(stream, addr, handler, config, None).await;
    };
    match tls_accept(stream, tls, &PLAIN_TEXT_REFUSAL).await {
        Ok(Some(stream)) => {
            // rustls checked it against the CA if one was shown.
            let certified = stream.get_ref().1.peer_certificates().is_some();
            match serve_stream(stream, addr, handler, config, Some(certified)).await {
                // A TLS peer that closed without TLS's close_notify (a process
                // that exited, say): a close like any other.
                Err(Error::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::UnexpectedEof =>
                {
                    Ok(())
                }
                served => served,
            }
        }
        Ok(None) => Ok(()),
        Err(reason) => Err(Error::Tls {
            addr: addr.to_string(),
            reason,
        }),
    }
}

/// The native protocol on an open stream (plain, or TLS already
/// handshaken): the hello, then requests until either side closes. Over
/// TLS (`certified` given), a hello that says it is a peer needs a
/// certificate the cluster's CA signed (`certified` true).
async fn serve_stream<S, H>(
    mut stream: S,
    addr: SocketAddr,
    handler: Arc<H>,
    config: Arc<ServerConfig>,
    certified: Option<bool>,
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
    let hello = match proto::decode::<Hello>(&hello) {
        Ok(hello) => hello,
        Err(e) => match Hello::other_version_refusal(&hello) {
            Some(reason) => return Err(refuse(&mut stream, addr, reason).await),
            None => return Err(e),
        },
    };
    let uncertified_peer = hello.role == Role::Peer && certified == Some(false);
    let refusal = hello
        .refusal(
            &config.cluster_name,
            &config.node_id,
            config.password.as_ref(),
        )
        .or_else(|| {
            uncertified_peer.then(|| {
                "a peer must show a certificate the cluster's CA signed (its node's --tls-cert-file); this connection showed none"
                    .to_string()
            })
        });
    if let Some(reason) = refusal {
        return Err(refuse(&mut stream, addr, reason).await);
    }
    // Held until the connection ends.
    let _admitted = match hello.role {
        Role::Peer => None,
        Role::Client => match config.clients.admit() {
            Some(admitted) => Some(admitted),
            None => {
                // Logged here, the first and every thousandth: a flood
                // must not flood the log.
                config.clients.log_refusal("native");
                let reason = format!(
                    "max number of clients reached ({} client connections are open; \
                     see max_clients)",
                    config.clients.max()
                );
                refuse(&mut stream, addr, reason).await;
                return Ok(());
            }
        },
    };
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

    let (mut read_half, mut write_half) = tokio::io::split(stream);
    // Responses are encoded into the outbox as they are ready; the writer
    // sends all that waits in one `write`.
    let outbox = Arc::new(Outbox::default());
    let writer = tokio::spawn({
        let outbox = outbox.clone();
        async move {
            let _ = outbox.write_to(&mut write_half).await;
            let _ = write_half.shutdown().await;
        }
    });
    let in_flight_max = config.in_flight_per_connection_max.max(1);
    // Requests that wait (on replicas, timers) run here, polled by this
    // task: no task per request.
    let mut running = FuturesUnordered::new();
    let mut input: Vec<u8> = Vec::with_capacity(READ_BUFFER_BYTES);
    let outcome = loop {
        let mut consumed = 0;
        let mut failed = None;
        while running.len() < in_flight_max {
            let frame = &input[consumed..];
            let len = match proto::whole_frame_len(frame, config.frame_bytes_max) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            let decoded = proto::decode::<Frame>(&frame[4..4 + len]);
            consumed += 4 + len;
            let (id, body) = match decoded {
                Ok(Frame::Request { id, body }) => (id, body),
                Ok(Frame::Response { .. }) => {
                    failed = Some(Error::MalformedMessage(
                        "a response where a request belongs".into(),
                    ));
                    break;
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            match handler.answer_now(&caller, body) {
                Ok(answer) => respond(&outbox, id, answer).await,
                Err(body) => {
                    let (handler, caller) = (&handler, &caller);
                    running.push(async move { (id, handler.handle(caller, body).await) });
                }
            }
        }
        input.drain(..consumed);
        if input.is_empty() && input.capacity() > 4 * READ_BUFFER_BYTES {
            // After a large request: the memory is returned.
            input = Vec::with_capacity(READ_BUFFER_BYTES);
        }
        if let Some(e) = failed {
            break Err(e);
        }
        if outbox.is_closed() {
            // The writer failed: nobody hears the answers.
            break Ok(());
        }
        let reading = running.len() < in_flight_max;
        if reading {
            input.reserve(READ_BUFFER_BYTES);
        }
        // Biased, answers first: tokio would otherwise pick a ready branch
        // at random, from a seed no simulation controls.
        tokio::select! {
            biased;
            Some((id, answer)) = running.next(), if !running.is_empty() => {
                respond(&outbox, id, answer).await;
            }
            read = read_half.read_buf(&mut input), if reading => match read {
                Ok(0) => break Ok(()),
                Ok(_) => {}
                Err(e) => break Err(Error::io("connection", e)),
            },
        }
    };
    // Requests already started are still answered.
    while let Some((id, answer)) = running.next().await {
        respond(&outbox, id, answer).await;
    }
    outbox.close();
    let _ = writer.await;
    outcome
}

/// Queues the response to request `id` (dropped if the writer failed).
async fn respond(outbox: &Outbox, id: u64, body: Response) {
    let _ = outbox
        .push(|out| {
            encode_response(out, id, body);
            Ok::<(), std::convert::Infallible>(())
        })
        .await;
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
