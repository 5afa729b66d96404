//! MULTI / EXEC / DISCARD: a connection's commands queued after MULTI and
//! run, in order, at EXEC, whose reply is the array of their replies.
//!
//! What Redis checks when a command is queued is checked here too (unknown
//! commands, wrong arity): such a command is refused at once, and EXEC then
//! discards the whole transaction (`EXECABORT`), as Redis does. A command
//! that fails while running (a consistency level not met) is an error in
//! EXEC's array and the others still run, as in Redis.
//!
//! Unlike Redis, a transaction is not isolated: other clients' commands can
//! run between its commands, on this node and on the others, exactly as
//! between the commands of a pipeline. So WATCH, which only makes sense
//! with isolation, is refused rather than pretended. What a transaction
//! gives here is what a client library's "atomic pipeline" needs: every
//! command queued, then run in order once the client says EXEC.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;

use super::commands::{Command, MULTI_KEY_ARGS_MAX};
use super::reply::{Protocol, Reply};
use super::session::{Session, checked_command};
use crate::net::Transport;
use crate::node::shared::NodeShared;

/// What a queued argument costs beyond its bytes (its own allocation),
/// counted against the queue's bound.
const QUEUED_ARG_OVERHEAD_BYTES: usize = 32;

/// Commands queued after MULTI, with their arguments copied.
#[derive(Default)]
pub(crate) struct Transaction {
    queued: Vec<Vec<Vec<u8>>>,
    queued_bytes: usize,
    /// A command was refused while queueing: EXEC discards everything, so
    /// nothing more is kept.
    refused: bool,
}

/// What a command does to a transaction.
pub(crate) enum Step {
    /// Answered at once (queued, refused, MULTI, DISCARD...).
    Reply(Reply),
    /// EXEC of these commands: the caller runs them with [`NodeShared::exec`].
    Exec(Vec<Vec<Vec<u8>>>),
}

/// Whether `args` is MULTI, EXEC, DISCARD, WATCH or UNWATCH, the commands
/// that start, end or guard a transaction.
pub(crate) fn is_transaction_command(args: &[&[u8]]) -> bool {
    matches!(
        args.first().and_then(|name| Command::lookup(name)),
        Some(Command::Multi | Command::Exec | Command::Discard | Command::Watch | Command::Unwatch)
    )
}

impl<T: Transport> NodeShared<T> {
    /// Answers MULTI, EXEC, DISCARD, WATCH or UNWATCH, or (inside a
    /// transaction) queues any other command; QUIT still closes the
    /// connection at once, and RESET resets it (leaving the transaction).
    pub(crate) fn transaction_command(&self, session: &mut Session, args: &[&[u8]]) -> Step {
        let command = args.first().and_then(|name| Command::lookup(name));
        if is_transaction_command(args)
            && let Err(error) = checked_command(args)
        {
            return Step::Reply(match session.transaction.as_mut() {
                // As Redis 7: EXEC in the wrong shape ends the transaction.
                Some(_) if command == Some(Command::Exec) => {
                    session.transaction = None;
                    let Reply::Error(reason) = error else {
                        return Step::Reply(error);
                    };
                    let reason = reason.strip_prefix("ERR ").unwrap_or(&reason).to_string();
                    Reply::err(format!(
                        "EXECABORT Transaction discarded because of: {reason}"
                    ))
                }
                Some(transaction) => {
                    transaction.refused = true;
                    error
                }
                None => error,
            });
        }
        let in_transaction = session.transaction.is_some();
        Step::Reply(match command {
            // As in Redis, QUIT and RESET act at once, even after MULTI
            // (RESET leaves the transaction).
            Some(Command::Quit) => self.session_command(session, args),
            // RESET in the wrong shape is queued, that is refused.
            Some(Command::Reset) if args.len() == 1 => self.session_command(session, args),
            Some(Command::Multi) if in_transaction => {
                Reply::err("ERR MULTI calls can not be nested")
            }
            Some(Command::Multi) => {
                session.transaction = Some(Transaction::default());
                Reply::ok()
            }
            Some(Command::Exec) => match session.transaction.take() {
                None => Reply::err("ERR EXEC without MULTI"),
                Some(transaction) if transaction.refused => {
                    Reply::err("EXECABORT Transaction discarded because of previous errors.")
                }
                Some(transaction) => return Step::Exec(transaction.queued),
            },
            Some(Command::Discard) => match session.transaction.take() {
                None => Reply::err("ERR DISCARD without MULTI"),
                Some(_) => Reply::ok(),
            },
            Some(Command::Watch) if in_transaction => {
                Reply::err("ERR WATCH inside MULTI is not allowed")
            }
            Some(Command::Watch) => Reply::err(
                "ERR WATCH is not supported: cassio transactions are not isolated, so a watched key could change unseen",
            ),
            Some(Command::Unwatch) => Reply::ok(),
            _ => match &mut session.transaction {
                Some(transaction) => queue(transaction, args, self.config.frame_bytes_max),
                None => self.session_command(session, args),
            },
        })
    }

    /// Runs EXEC's commands one after another, each at the session's
    /// consistency level, and answers with the array of their replies
    /// (`delivery`: in which protocol, if at all). The array goes out as it
    /// is made, written to `stream` whenever `out` holds `flush_bytes`, so a
    /// long transaction does not pile its replies up in memory.
    pub(crate) async fn exec<S>(
        self: &Arc<Self>,
        session: &mut Session,
        queued: Vec<Vec<Vec<u8>>>,
        delivery: Option<Protocol>,
        stream: &mut S,
        out: &mut Vec<u8>,
        flush_bytes: usize,
    ) -> Result<(), String>
    where
        S: tokio::io::AsyncWrite + Unpin,
    {
        if delivery.is_some() {
            Reply::encode_array_header(out, queued.len());
        }
        for owned in &queued {
            let args: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
            let reply = match Command::data(&args) {
                Some(command) => {
                    let first_timestamp = self.draw_write_timestamps(command, &args);
                    self.data_command(command, &args, session.level, first_timestamp)
                        .await
                }
                None => self.session_command(session, &args),
            };
            if delivery.is_some() {
                reply.encode(out, session.protocol);
            }
            if out.len() >= flush_bytes {
                stream.write_all(out).await.map_err(|e| e.to_string())?;
                out.clear();
            }
        }
        Ok(())
    }
}

/// Queues `args`, or refuses it (and with it the transaction).
fn queue(transaction: &mut Transaction, args: &[&[u8]], queued_bytes_max: usize) -> Reply {
    if let Err(error) = checked_command(args) {
        transaction.refused = true;
        transaction.queued = Vec::new();
        return error;
    }
    if transaction.refused {
        return Reply::Simple("QUEUED");
    }
    let bytes: usize = args
        .iter()
        .map(|a| a.len() + QUEUED_ARG_OVERHEAD_BYTES)
        .sum();
    if transaction.queued.len() >= MULTI_KEY_ARGS_MAX
        || transaction.queued_bytes + bytes > queued_bytes_max
    {
        transaction.refused = true;
        transaction.queued = Vec::new();
        return Reply::err(format!(
            "ERR transaction too large: at most {MULTI_KEY_ARGS_MAX} commands and {queued_bytes_max} bytes may be queued"
        ));
    }
    transaction.queued_bytes += bytes;
    transaction
        .queued
        .push(args.iter().map(|a| a.to_vec()).collect());
    Reply::Simple("QUEUED")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(transaction: &mut Transaction, args: &[&str]) -> Reply {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        queue(transaction, &args, 1024)
    }

    #[test]
    fn commands_are_queued_or_refused_as_redis_does() {
        let mut transaction = Transaction::default();
        assert_eq!(
            queued(&mut transaction, &["SET", "a", "1"]),
            Reply::Simple("QUEUED")
        );
        assert_eq!(
            queued(&mut transaction, &["get", "a"]),
            Reply::Simple("QUEUED")
        );
        assert_eq!(queued(&mut transaction, &["PING"]), Reply::Simple("QUEUED"));
        assert!(!transaction.refused);
        assert_eq!(transaction.queued.len(), 3);

        for bad in [
            &["GET"][..],
            &["get", "a", "b"],
            &["MSET", "a"],
            &["ECHO"],
            &["NOSUCH", "x"],
        ] {
            let mut transaction = Transaction::default();
            match queued(&mut transaction, bad) {
                Reply::Error(message) => assert!(
                    message.starts_with("ERR wrong number of arguments")
                        || message.starts_with("ERR unknown command"),
                    "{bad:?}: {message}"
                ),
                other => panic!("{bad:?} was queued: {other:?}"),
            }
            assert!(transaction.refused, "{bad:?} must abort EXEC");
            assert!(transaction.queued.is_empty());
        }
    }

    #[test]
    fn a_queue_is_bounded_in_bytes() {
        let mut transaction = Transaction::default();
        let big = "v".repeat(500);
        assert_eq!(
            queued(&mut transaction, &["SET", "a", &big]),
            Reply::Simple("QUEUED")
        );
        assert!(
            matches!(queued(&mut transaction, &["SET", "b", &big]), Reply::Error(m) if m.contains("too large"))
        );
        assert!(transaction.refused);
    }
}
