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

use super::commands::{Command, MULTI_KEY_ARGS_MAX, arity_error};
use super::introspect::arity;
use super::reply::Reply;
use super::session::{Session, unknown_command};
use crate::net::Transport;
use crate::node::shared::NodeShared;

/// Commands queued after MULTI, with their arguments copied.
#[derive(Default)]
pub(crate) struct Transaction {
    queued: Vec<Vec<Vec<u8>>>,
    queued_bytes: usize,
    /// A command was refused while queueing: EXEC discards everything.
    refused: bool,
}

/// Whether `args` is MULTI, EXEC, DISCARD, WATCH or UNWATCH, the commands
/// that start, end or guard a transaction.
pub(crate) fn is_transaction_command(args: &[&[u8]]) -> bool {
    matches!(
        args.first().and_then(|name| Command::lookup(name)),
        Some(Command::Multi | Command::Exec | Command::Discard | Command::Watch | Command::Unwatch)
    )
}

/// Why a command cannot be queued: the errors Redis gives before running it.
fn queue_error(args: &[&[u8]]) -> Option<Reply> {
    let command = match Command::lookup(args[0]) {
        Some(command) => command,
        None => return Some(unknown_command(args)),
    };
    if args.len() > MULTI_KEY_ARGS_MAX + 1 {
        return Some(Reply::err(format!(
            "ERR too many arguments: at most {MULTI_KEY_ARGS_MAX} per command"
        )));
    }
    let shaped = match command.is_data() {
        true => Command::data(args).is_some(),
        false => match arity(command) {
            exact if exact > 0 => args.len() as i64 == exact,
            at_least => args.len() as i64 >= -at_least,
        },
    };
    (!shaped).then(|| arity_error(command.name()))
}

impl<T: Transport> NodeShared<T> {
    /// Answers MULTI, EXEC, DISCARD, WATCH or UNWATCH, or (inside a
    /// transaction) queues any other command; QUIT still closes the
    /// connection at once.
    pub(crate) async fn transaction_command(
        self: &Arc<Self>,
        session: &mut Session,
        args: &[&[u8]],
    ) -> Reply {
        let command = args.first().and_then(|name| Command::lookup(name));
        let in_transaction = session.transaction.is_some();
        match command {
            Some(Command::Quit) => self.session_command(session, args),
            Some(Command::Multi | Command::Exec | Command::Discard | Command::Unwatch)
                if args.len() != 1 =>
            {
                if let Some(transaction) = &mut session.transaction {
                    transaction.refused = true;
                }
                arity_error(command.map_or("?", Command::name))
            }
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
                Some(transaction) => self.exec(session, transaction.queued).await,
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
        }
    }

    /// Runs the queued commands one after another, each at the session's
    /// consistency level, and answers with their replies.
    async fn exec(self: &Arc<Self>, session: &mut Session, queued: Vec<Vec<Vec<u8>>>) -> Reply {
        let mut replies = Vec::with_capacity(queued.len());
        for owned in &queued {
            let args: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
            let reply = match Command::data(&args) {
                Some(command) => {
                    let writes = command.writes(&args);
                    let first_timestamp = match writes {
                        0 => 0,
                        n => self.write_timestamps(n),
                    };
                    self.data_command(command, &args, session.level, first_timestamp)
                        .await
                }
                None => self.session_command(session, &args),
            };
            replies.push(reply);
        }
        Reply::Array(replies)
    }
}

/// Queues `args`, or refuses it (and with it the transaction).
fn queue(transaction: &mut Transaction, args: &[&[u8]], queued_bytes_max: usize) -> Reply {
    if let Some(error) = queue_error(args) {
        transaction.refused = true;
        return error;
    }
    let bytes: usize = args.iter().map(|a| a.len()).sum();
    if transaction.queued.len() >= MULTI_KEY_ARGS_MAX
        || transaction.queued_bytes + bytes > queued_bytes_max
    {
        transaction.refused = true;
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
        let big = "v".repeat(600);
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
