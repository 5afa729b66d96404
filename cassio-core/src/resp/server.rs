//! The RESP listener: read what the client sent, run every complete command
//! in order (a pipeline is answered as one batch), write the replies. Input
//! that is not RESP gets `-ERR Protocol error: ...` and that connection is
//! closed; the node keeps serving everyone else.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{join_all, join3};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio_rustls::rustls;

use super::commands::{Command, is_plain_set, read_level, read_reply, write_reply};
use super::parse::parse_command;
use super::pipeline::Run;
use super::reply::{Protocol, Reply};
use super::session::Session;
use super::transaction::{Step, is_transaction_command};
use crate::net::{Admitted, Transport, close_draining, refuse_and_close, tls_accept};
use crate::node::shared::NodeShared;
use crate::node::workers::ClientThreads;
use crate::storage::Cell;

/// Replies are written out once this much is waiting.
const REPLY_FLUSH_BYTES: usize = 1024 * 1024;

/// Bytes read per syscall.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// How long, and how many bytes, the further input of a connection closed
/// for a protocol error is read and dropped before it is closed (a value
/// over the size limit may still be arriving; [`close_draining`]).
const ERROR_LINGER: Duration = Duration::from_millis(1000);
const ERROR_LINGER_BYTES_MAX: usize = 64 * 1024 * 1024;

type Served = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Serves RESP connections until `shutdown`: on the node's own runtime, or
/// each handed to one of `threads` (real sockets only); over TLS only if
/// `tls` is given.
pub(crate) async fn serve<T: Transport>(
    transport: T,
    listener: T::Listener,
    node: Arc<NodeShared<T>>,
    shutdown: watch::Receiver<bool>,
    threads: Option<Arc<ClientThreads>>,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    crate::net::accept_loop(
        transport,
        listener,
        shutdown,
        "RESP",
        move |stream, addr| {
            let node = node.clone();
            let Some(admitted) = node.client_connections.admit() else {
                return Box::pin(refuse_connection(stream, node, tls.is_some())) as Served;
            };
            let tls = tls.clone();
            let Some(threads) = &threads else {
                return Box::pin(serve_admitted(stream, node, tls, admitted));
            };
            match T::detach(stream) {
                Err(stream) => Box::pin(serve_admitted(stream, node, tls, admitted)),
                Ok(Err(e)) => Box::pin(std::future::ready(Err(format!(
                    "cannot hand the connection to a client thread: {e}"
                )))),
                Ok(Ok(stream)) => {
                    threads.next().spawn(async move {
                        let served = match tokio::net::TcpStream::from_std(stream) {
                            Ok(stream) => serve_admitted(stream, node, tls, admitted).await,
                            Err(e) => Err(e.to_string()),
                        };
                        if let Err(reason) = served {
                            tracing::warn!(peer = %addr, %reason, "closed RESP connection");
                        }
                    });
                    Box::pin(std::future::ready(Ok(())))
                }
            }
        },
    )
    .await
}

/// The reply to a connection over `max_clients`, as Redis words it.
const MAX_CLIENTS_REACHED: &[u8] = b"-ERR max number of clients reached\r\n";

/// Tells a connection over the limit why, and closes it so that the client
/// gets the sentence, not a reset ([`refuse_and_close`]). On a TLS port
/// it is closed without one: a sentence needs a TLS handshake first,
/// which a flood of refused connections should not get.
async fn refuse_connection<S, T>(
    mut stream: S,
    node: Arc<NodeShared<T>>,
    tls: bool,
) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: Transport,
{
    node.client_connections.log_refusal("Redis-protocol");
    let refusal = if tls { &b""[..] } else { MAX_CLIENTS_REACHED };
    refuse_and_close(&mut stream, refusal).await;
    Ok(())
}

/// The plain-text answer to a client that does not speak TLS to a TLS port.
const TLS_REQUIRED: &[u8] =
    b"-ERR this port speaks TLS only: connect with TLS (redis-cli --tls, a rediss:// URL)\r\n";

/// Serves a connection that holds a place under `max_clients` until it
/// ends (or is dropped), after its TLS handshake if `tls` is given.
async fn serve_admitted<S, T>(
    stream: S,
    node: Arc<NodeShared<T>>,
    tls: Option<Arc<rustls::ServerConfig>>,
    _admitted: Admitted,
) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: Transport,
{
    let Some(config) = tls else {
        return serve_connection(stream, node).await;
    };
    match tls_accept(stream, config, TLS_REQUIRED).await? {
        Some(stream) => serve_connection(stream, node).await,
        None => Ok(()),
    }
}

/// The commands parsed from one read: argument ranges into the input
/// buffer, and each command's arguments as a range of those. Kept from read
/// to read so their memory is reused.
#[derive(Default)]
struct Parsed {
    args: Vec<Range<usize>>,
    commands: Vec<Range<usize>>,
}

/// How a run's data command goes to the coordinator.
#[derive(Clone, Copy, PartialEq)]
enum Batched {
    /// With the run's other GETs.
    Get,
    /// With the run's other plain SETs.
    Set,
    /// On its own.
    Alone,
}

/// A connection's pipeline state, reused from batch to batch.
#[derive(Default)]
struct Pipeline {
    run: Run,
    /// The current run's data commands: (index in the batch, command, first
    /// write timestamp).
    admitted: Vec<(usize, Command, u64)>,
    /// The batch's replies in command order (`None` until its run
    /// finished), each with how it goes out (see [`Session::next_delivery`]).
    replies: Vec<(Option<Reply>, Option<Protocol>)>,
}

async fn serve_connection<S, T>(mut stream: S, node: Arc<NodeShared<T>>) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: Transport,
{
    let bulk_bytes_max = node.config.frame_bytes_max;
    let mut session = Session::new(node.config.read_consistency, node.config.password.is_none());
    let mut buffer: Vec<u8> = Vec::with_capacity(READ_CHUNK_BYTES);
    let mut parsed = Parsed::default();
    let mut pipeline = Pipeline::default();
    let mut out = Vec::new();
    loop {
        buffer.reserve(READ_CHUNK_BYTES);
        let read = match stream.read_buf(&mut buffer).await {
            Ok(read) => read,
            // A TLS client that closed without TLS's close_notify (most
            // do): a close like any other.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e.to_string()),
        };
        if read == 0 {
            return Ok(());
        }
        parsed.args.clear();
        parsed.commands.clear();
        let mut consumed = 0;
        let mut protocol_error = None;
        loop {
            let first_arg = parsed.args.len();
            match parse_command(&mut buffer[consumed..], bulk_bytes_max, &mut parsed.args) {
                Ok(Some(used)) => {
                    for range in &mut parsed.args[first_arg..] {
                        *range = range.start + consumed..range.end + consumed;
                    }
                    if parsed.args.len() > first_arg {
                        parsed.commands.push(first_arg..parsed.args.len());
                    }
                    consumed += used;
                }
                Ok(None) => break,
                Err(e) => {
                    protocol_error = Some(e);
                    break;
                }
            }
        }
        run_batch(
            &node,
            &mut session,
            &buffer,
            &parsed,
            &mut pipeline,
            &mut stream,
            &mut out,
        )
        .await?;
        buffer.drain(..consumed);
        if buffer.is_empty() && buffer.capacity() > 4 * READ_CHUNK_BYTES {
            // After a large command: reads go back to chunks of the usual
            // size, and the memory is returned.
            buffer = Vec::with_capacity(READ_CHUNK_BYTES);
        }
        if protocol_error.is_none() && buffer.len() > bulk_bytes_max + 1024 {
            protocol_error = Some("request too large".into());
        }
        if let Some(e) = &protocol_error {
            Reply::err(format!("ERR Protocol error: {e}")).encode(&mut out, session.protocol);
        }
        stream.write_all(&out).await.map_err(|e| e.to_string())?;
        // A TLS stream may keep the end of the replies encrypted but
        // unsent until flushed (a plain socket's flush does nothing).
        stream.flush().await.map_err(|e| e.to_string())?;
        out.clear();
        if out.capacity() > REPLY_FLUSH_BYTES {
            out = Vec::new();
        }
        if let Some(e) = protocol_error {
            close_draining(&mut stream, ERROR_LINGER, ERROR_LINGER_BYTES_MAX).await;
            return Err(e);
        }
        if session.quit {
            let _ = stream.shutdown().await;
            return Ok(());
        }
    }
}

const NOAUTH: &str = "NOAUTH Authentication required.";

/// AUTH, HELLO (which may carry AUTH), RESET and QUIT: what a connection
/// to a node with a password may send before it authenticates.
fn allowed_before_auth(args: &[&[u8]]) -> bool {
    matches!(
        Command::lookup(args[0]),
        Some(Command::Auth | Command::Hello | Command::Reset | Command::Quit)
    )
}

/// Encodes the replies that go out (in command order) and empties `replies`.
fn encode_replies(replies: &mut Vec<(Option<Reply>, Option<Protocol>)>, out: &mut Vec<u8>) {
    for (reply, delivery) in replies.drain(..) {
        if let Some(protocol) = delivery {
            reply
                .unwrap_or_else(|| Reply::err("ERR internal: a command was not run"))
                .encode(out, protocol);
        }
    }
}

/// Runs one batch of parsed commands and encodes their replies, in order,
/// into `out`. Data commands run together in runs (see [`super::pipeline`]),
/// each drawing its write timestamps when admitted, that is in command
/// order; a session command ends a run and is answered after it. Stops
/// after QUIT.
async fn run_batch<S, T>(
    node: &Arc<NodeShared<T>>,
    session: &mut Session,
    buffer: &[u8],
    parsed: &Parsed,
    pipeline: &mut Pipeline,
    stream: &mut S,
    out: &mut Vec<u8>,
) -> Result<(), String>
where
    S: tokio::io::AsyncWrite + Unpin,
    T: Transport,
{
    let args: Vec<&[u8]> = parsed.args.iter().map(|r| &buffer[r.clone()]).collect();
    let argv = |index: usize| &args[parsed.commands[index].clone()];
    let mut next = 0;
    while next < parsed.commands.len() && !session.quit {
        pipeline.run.clear();
        pipeline.admitted.clear();
        pipeline.replies.clear();
        while next < parsed.commands.len() && !session.quit {
            let args = argv(next);
            if !session.authenticated && !allowed_before_auth(args) {
                // Nothing runs before AUTH, so no run is pending here.
                let delivery = session.next_delivery();
                pipeline.replies.push((Some(Reply::err(NOAUTH)), delivery));
                next += 1;
                continue;
            }
            let data = match session.transaction {
                None => Command::data(args),
                // Every command is queued (or ends the transaction).
                Some(_) => None,
            };
            match data {
                Some(command) => {
                    if !pipeline.run.admit(command, args) {
                        break;
                    }
                    let first_timestamp = node.draw_write_timestamps(command, args);
                    pipeline.admitted.push((next, command, first_timestamp));
                    pipeline.replies.push((None, session.next_delivery()));
                }
                None => {
                    // A session command (it may change the level, or ask for
                    // DBSIZE) or a transaction's command runs after the data
                    // commands before it.
                    if !pipeline.admitted.is_empty() {
                        break;
                    }
                    if session.transaction.is_some() || is_transaction_command(args) {
                        let delivery = session.next_delivery();
                        let step = node.transaction_command(session, args);
                        let protocol = delivery.map(|_| session.protocol);
                        match step {
                            Step::Reply(reply) => pipeline.replies.push((Some(reply), protocol)),
                            Step::Exec(queued) => {
                                // The replies before it go out first; EXEC's
                                // array is written as its commands run.
                                encode_replies(&mut pipeline.replies, out);
                                node.exec(
                                    session,
                                    queued,
                                    protocol,
                                    stream,
                                    out,
                                    REPLY_FLUSH_BYTES,
                                )
                                .await?;
                                // What follows starts a new run.
                                next += 1;
                                break;
                            }
                        }
                    } else {
                        let (reply, delivery) = node.answer_session_command(session, args);
                        pipeline.replies.push((Some(reply), delivery));
                    }
                }
            }
            next += 1;
        }
        let first_index = next - pipeline.replies.len();
        let level = session.level;
        // GETs and plain SETs go to the coordinator as one batch each; the
        // other data commands run alongside, each on its own.
        let kind = |&(index, command, _): &(usize, Command, u64)| match command {
            Command::Get => Batched::Get,
            _ if is_plain_set(command, argv(index)) => Batched::Set,
            _ => Batched::Alone,
        };
        let admitted = |of: Batched| pipeline.admitted.iter().filter(move |c| kind(c) == of);
        let keys: Vec<&[u8]> = admitted(Batched::Get)
            .map(|&(index, _, _)| argv(index)[1])
            .collect();
        let writes: Vec<(Vec<u8>, Cell)> = admitted(Batched::Set)
            .map(|&(index, _, timestamp)| {
                let args = argv(index);
                (args[1].to_vec(), Cell::value(args[2], timestamp))
            })
            .collect();
        let others: Vec<_> = admitted(Batched::Alone)
            .map(|&(index, command, timestamp)| {
                node.data_command(command, argv(index), level, timestamp)
            })
            .collect();
        let (only_reads, only_writes) = (
            writes.is_empty() && others.is_empty(),
            keys.is_empty() && others.is_empty(),
        );
        let reads = async {
            match keys.is_empty() {
                true => Vec::new(),
                false => node.coordinate_cell_reads(&keys, read_level(level)).await,
            }
        };
        let writes = async {
            match writes.is_empty() {
                true => Vec::new(),
                false => node.coordinate_writes(writes, level).await,
            }
        };
        // A run of one kind (the usual case) is awaited directly: joining
        // costs more than the rest of a one-command batch.
        let (read_answers, write_answers, other_replies) = if only_reads {
            (reads.await, Vec::new(), Vec::new())
        } else if only_writes {
            (Vec::new(), writes.await, Vec::new())
        } else {
            join3(reads, writes, join_all(others)).await
        };
        let mut read_replies = read_answers.into_iter().map(read_reply);
        let mut write_replies = write_answers.into_iter().map(write_reply);
        let mut other_replies = other_replies.into_iter();
        for command in &pipeline.admitted {
            pipeline.replies[command.0 - first_index].0 = match kind(command) {
                Batched::Get => read_replies.next(),
                Batched::Set => write_replies.next(),
                Batched::Alone => other_replies.next(),
            };
        }
        encode_replies(&mut pipeline.replies, out);
        if out.len() >= REPLY_FLUSH_BYTES {
            // A long pipeline must not pile its replies up in memory.
            stream.write_all(out).await.map_err(|e| e.to_string())?;
            out.clear();
        }
    }
    Ok(())
}
