//! The Redis commands cassio knows (and those it refuses, with the reason),
//! and the data commands (GET, SET and its variants, DEL, EXISTS, MGET,
//! MSET, STRLEN, TYPE; SCAN and KEYS in [`super::scan`], TTL and EXPIRE
//! and their kin in [`super::expiry`]), which run through the node's
//! coordinator at the connection's consistency level. Session commands are
//! in [`super::session`].

use std::sync::Arc;

use fnv::FnvHashSet;

use super::expiry::ExpiryUnit;
use super::reply::Reply;
use crate::coordinator::ConsistencyLevel;
use crate::net::Transport;
use crate::node::CellRead;
use crate::node::shared::NodeShared;
use crate::proto::Response;
use crate::storage::{Cell, CellValue};

/// A command cassio knows, recognized by name in any letter case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Command {
    Ping,
    Echo,
    Quit,
    Select,
    Hello,
    Auth,
    Client,
    /// `COMMAND`, which redis-cli asks on connect.
    Introspect,
    Info,
    Time,
    Role,
    Reset,
    /// `CONFIG GET` (the rest is refused).
    Config,
    Consistency,
    Dbsize,
    Get,
    Set,
    Del,
    Exists,
    Mget,
    Mset,
    Scan,
    Keys,
    Setex,
    Psetex,
    Setnx,
    Getset,
    Getdel,
    Getex,
    Unlink,
    Strlen,
    Type,
    Ttl,
    Pttl,
    Expiretime,
    Pexpiretime,
    Expire,
    Pexpire,
    Expireat,
    Pexpireat,
    Persist,
    Multi,
    Exec,
    Discard,
    Watch,
    Unwatch,
}

/// Every command with its name (for lookup, arity errors and `COMMAND`).
const COMMANDS: &[(&str, Command)] = &[
    // The most used first: lookup scans in order.
    ("get", Command::Get),
    ("set", Command::Set),
    ("ping", Command::Ping),
    ("echo", Command::Echo),
    ("quit", Command::Quit),
    ("select", Command::Select),
    ("hello", Command::Hello),
    ("auth", Command::Auth),
    ("client", Command::Client),
    ("command", Command::Introspect),
    ("info", Command::Info),
    ("time", Command::Time),
    ("role", Command::Role),
    ("reset", Command::Reset),
    ("config", Command::Config),
    ("cassio.consistency", Command::Consistency),
    ("dbsize", Command::Dbsize),
    ("del", Command::Del),
    ("exists", Command::Exists),
    ("mget", Command::Mget),
    ("mset", Command::Mset),
    ("scan", Command::Scan),
    ("keys", Command::Keys),
    ("setex", Command::Setex),
    ("psetex", Command::Psetex),
    ("setnx", Command::Setnx),
    ("getset", Command::Getset),
    ("getdel", Command::Getdel),
    ("getex", Command::Getex),
    ("unlink", Command::Unlink),
    ("strlen", Command::Strlen),
    ("type", Command::Type),
    ("ttl", Command::Ttl),
    ("pttl", Command::Pttl),
    ("expiretime", Command::Expiretime),
    ("pexpiretime", Command::Pexpiretime),
    ("expire", Command::Expire),
    ("pexpire", Command::Pexpire),
    ("expireat", Command::Expireat),
    ("pexpireat", Command::Pexpireat),
    ("persist", Command::Persist),
    ("multi", Command::Multi),
    ("exec", Command::Exec),
    ("discard", Command::Discard),
    ("watch", Command::Watch),
    ("unwatch", Command::Unwatch),
];

/// Redis commands cassio knows but does not run, with the reason: each
/// needs an atomic read-modify-write of a key, or of every key, which a
/// leaderless store does not have.
const REFUSED: &[(&str, &str)] = &[
    ("incr", INCREMENTS),
    ("incrby", INCREMENTS),
    ("incrbyfloat", INCREMENTS),
    ("decr", INCREMENTS),
    ("decrby", INCREMENTS),
    ("append", CHANGES_IN_PLACE),
    ("setrange", CHANGES_IN_PLACE),
    (
        "msetnx",
        "cassio cannot set several keys at once only if none exists",
    ),
    ("rename", MOVES),
    ("renamenx", MOVES),
    ("flushall", FLUSHES),
    ("flushdb", FLUSHES),
];
const INCREMENTS: &str =
    "cassio has no atomic read-modify-write, so increments racing on one key would be lost";
const CHANGES_IN_PLACE: &str =
    "cassio has no atomic read-modify-write, so changes racing on one key would be lost";
const MOVES: &str =
    "cassio cannot move a value to another key atomically; SET the new key, then DEL the old";
const FLUSHES: &str = "cassio has no cluster-wide truncate yet; delete keys with DEL";

/// The error for a command cassio knows but refuses (see [`REFUSED`]).
pub(crate) fn refusal(name: &[u8]) -> Option<Reply> {
    REFUSED
        .iter()
        .find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
        .map(|(n, reason)| {
            Reply::err(format!(
                "ERR {} is not supported: {reason}",
                n.to_ascii_uppercase()
            ))
        })
}

/// Keys (or key-value pairs, for MSET) one command may name: bounds the
/// memory a single reply can take.
pub(crate) const MULTI_KEY_ARGS_MAX: usize = 10_000;

impl Command {
    /// Every command, with its name in lower case.
    pub(crate) fn all() -> impl Iterator<Item = (&'static str, Command)> {
        COMMANDS.iter().copied()
    }

    pub(crate) fn lookup(name: &[u8]) -> Option<Command> {
        COMMANDS
            .iter()
            .find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
            .map(|&(_, c)| c)
    }

    pub(crate) fn name(self) -> &'static str {
        COMMANDS
            .iter()
            .find(|(_, c)| *c == self)
            .map_or("?", |(n, _)| n)
    }

    /// A command that reads or writes keys through the coordinator.
    pub(crate) fn is_data(self) -> bool {
        matches!(
            self,
            Command::Get
                | Command::Set
                | Command::Del
                | Command::Exists
                | Command::Mget
                | Command::Mset
                | Command::Scan
                | Command::Keys
                | Command::Setex
                | Command::Psetex
                | Command::Setnx
                | Command::Getset
                | Command::Getdel
                | Command::Unlink
                | Command::Strlen
                | Command::Type
        ) || self.is_expiry()
    }

    /// A command [`super::expiry`] runs.
    pub(crate) fn is_expiry(self) -> bool {
        matches!(
            self,
            Command::Ttl
                | Command::Pttl
                | Command::Expiretime
                | Command::Pexpiretime
                | Command::Expire
                | Command::Pexpire
                | Command::Expireat
                | Command::Pexpireat
                | Command::Persist
                | Command::Getex
        )
    }

    /// SCAN or KEYS: reads any key, so it runs after the commands before it
    /// and before those after it, alone.
    pub(crate) fn reads_every_key(self) -> bool {
        matches!(self, Command::Scan | Command::Keys)
    }

    /// A data command with `argc` arguments (its name included) in the
    /// shape it needs; anything else is answered at once (with an arity
    /// error, if that is what is wrong).
    pub(crate) fn data(args: &[&[u8]]) -> Option<Command> {
        let command = Command::lookup(args.first()?)?;
        let argc = args.len();
        let well_formed = match command {
            Command::Get
            | Command::Getdel
            | Command::Strlen
            | Command::Type
            | Command::Ttl
            | Command::Pttl
            | Command::Expiretime
            | Command::Pexpiretime
            | Command::Persist => argc == 2,
            Command::Set => argc >= 3,
            Command::Setnx | Command::Getset => argc == 3,
            Command::Setex | Command::Psetex => argc == 4,
            Command::Expire | Command::Pexpire | Command::Expireat | Command::Pexpireat => {
                argc >= 3
            }
            Command::Del | Command::Unlink | Command::Exists | Command::Mget | Command::Getex => {
                argc >= 2
            }
            Command::Mset => argc >= 3 && argc % 2 == 1,
            Command::Scan => argc >= 2,
            Command::Keys => argc == 2,
            _ => false,
        };
        (well_formed && argc <= MULTI_KEY_ARGS_MAX + 1).then_some(command)
    }

    /// The keys a well-formed data command reads and those it writes (MSET
    /// writes every other argument: `writes.step_by(step)`).
    pub(crate) fn access<'a, 'k>(
        self,
        args: &'a [&'k [u8]],
    ) -> (&'a [&'k [u8]], &'a [&'k [u8]], usize) {
        let none = &args[..0];
        match self {
            Command::Get
            | Command::Exists
            | Command::Mget
            | Command::Strlen
            | Command::Type
            | Command::Ttl
            | Command::Pttl
            | Command::Expiretime
            | Command::Pexpiretime => (&args[1..], none, 1),
            // NX, XX and GET read the key before writing it (other
            // options take this path too: conservative); so do the
            // commands that write the value they read again.
            Command::Set if args.len() > 3 => (&args[1..2], &args[1..2], 1),
            Command::Setnx
            | Command::Getset
            | Command::Getdel
            | Command::Getex
            | Command::Expire
            | Command::Pexpire
            | Command::Expireat
            | Command::Pexpireat
            | Command::Persist => (&args[1..2], &args[1..2], 1),
            Command::Set | Command::Setex | Command::Psetex => (none, &args[1..2], 1),
            Command::Mset => (none, &args[1..], 2),
            Command::Del | Command::Unlink => (&args[1..], &args[1..], 1),
            _ => (none, none, 1),
        }
    }

    /// Write timestamps a well-formed data command needs.
    pub(crate) fn writes(self, args: &[&[u8]]) -> u64 {
        let (_, writes, step) = self.access(args);
        writes.len().div_ceil(step) as u64
    }
}

pub(crate) fn arity_error(command: &str) -> Reply {
    Reply::err(format!(
        "ERR wrong number of arguments for '{command}' command"
    ))
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A SET with no options: written with the other writes of its run, in one
/// batch.
pub(crate) fn is_plain_set(command: Command, args: &[&[u8]]) -> bool {
    command == Command::Set && args.len() == 3
}

/// The reply to GET from the coordinator's read.
pub(crate) fn read_reply(read: CellRead) -> Reply {
    match read {
        Ok(cell) => Reply::Bulk(cell.and_then(Cell::into_value)),
        Err(answer) => failure(*answer),
    }
}

/// The reply to a write from the coordinator's answer: OK or an error.
pub(crate) fn write_reply(response: Response) -> Reply {
    written(response).map_or_else(|failed| failed, |()| Reply::ok())
}

/// Whether the coordinator's answer says written, or the error reply.
pub(crate) fn written(response: Response) -> Result<(), Reply> {
    match response {
        Response::Written { .. } => Ok(()),
        other => Err(failure(other)),
    }
}

/// A coordinator answer that is not the expected one, as a Redis error.
pub(crate) fn failure(response: Response) -> Reply {
    match response {
        Response::QuorumNotReached {
            level,
            required,
            received,
        } => Reply::err(format!(
            "UNAVAILABLE consistency level {level} not reached: {required} replicas required, {received} received"
        )),
        Response::Invalid { message } => Reply::err(format!("ERR {message}")),
        Response::Error { message } => Reply::err(format!("ERR {message}")),
        other => Reply::err(format!("ERR unexpected answer {other:?}")),
    }
}

impl<T: Transport> NodeShared<T> {
    /// SET `key` `value` with `options`, its write at `timestamp`.
    async fn set(
        self: &Arc<Self>,
        key: &[u8],
        value: &[u8],
        options: SetOptions,
        level: ConsistencyLevel,
        timestamp: u64,
    ) -> Reply {
        // NX, XX, GET and KEEPTTL read the key first (not atomically).
        let mut existing = None;
        let mut expires_at_ms = options.expires_at_ms;
        if options.condition.is_some() || options.get_old || options.keep_ttl {
            let cell = match self.read_cell(key, level).await {
                Ok(cell) => cell,
                Err(reply) => return reply,
            };
            if options.keep_ttl {
                expires_at_ms = cell.as_ref().and_then(|c| c.expires_at_ms);
            }
            existing = cell.and_then(Cell::into_value);
        }
        let answer = |written: Reply, existing: Option<Vec<u8>>| match options.get_old {
            true => Reply::Bulk(existing),
            false => written,
        };
        if let Some(must_exist) = options.condition
            && existing.is_some() != must_exist
        {
            return answer(Reply::Bulk(None), existing);
        }
        let cell = Cell {
            timestamp,
            expires_at_ms,
            value: CellValue::Value(value.to_vec()),
        };
        match self.write_cell(key, cell, level).await {
            Ok(()) => answer(Reply::ok(), existing),
            Err(reply) => reply,
        }
    }

    /// A key's live cell, read at `level` (ONE for ANY), or the error reply.
    pub(super) async fn read_cell(
        self: &Arc<Self>,
        key: &[u8],
        level: ConsistencyLevel,
    ) -> Result<Option<Cell>, Reply> {
        let mut reads = self.coordinate_cell_reads(&[key], read_level(level)).await;
        match reads.pop() {
            Some(read) => read.map_err(|answer| failure(*answer)),
            None => Err(Reply::err("ERR internal: a read got no answer")),
        }
    }

    /// A key's live value, read at `level` (ONE for ANY), or the error reply.
    async fn read_value(
        self: &Arc<Self>,
        key: &[u8],
        level: ConsistencyLevel,
    ) -> Result<Option<Vec<u8>>, Reply> {
        Ok(self.read_cell(key, level).await?.and_then(Cell::into_value))
    }

    pub(super) async fn write_cell(
        self: &Arc<Self>,
        key: &[u8],
        cell: Cell,
        level: ConsistencyLevel,
    ) -> Result<(), Reply> {
        written(self.coordinate_write(key.to_vec(), cell, level).await)
    }

    /// Draws the write timestamps `command` needs (as many as
    /// [`Command::writes`], in order) and returns the first; 0 when it
    /// writes nothing.
    pub(crate) fn draw_write_timestamps(&self, command: Command, args: &[&[u8]]) -> u64 {
        match command.writes(args) {
            0 => 0,
            n => self.write_timestamps(n),
        }
    }

    /// Runs a data command (one [`Command::data`] accepted) at `level`.
    /// Its writes use the timestamps from `first_timestamp` on (as many as
    /// [`Command::writes`]), drawn by the caller in pipeline order.
    pub(crate) async fn data_command(
        self: &Arc<Self>,
        command: Command,
        args: &[&[u8]],
        level: ConsistencyLevel,
        first_timestamp: u64,
    ) -> Reply {
        let cell = |value: Option<&[u8]>, expires_at_ms: Option<u64>, timestamp: u64| Cell {
            timestamp,
            expires_at_ms,
            value: value.map_or(CellValue::Tombstone, |v| CellValue::Value(v.to_vec())),
        };
        match command {
            Command::Get => match self.read_value(args[1], level).await {
                Ok(value) => Reply::Bulk(value),
                Err(reply) => reply,
            },
            Command::Set => match set_options(&args[3..], (self.clock)()) {
                Ok(options) => {
                    self.set(args[1], args[2], options, level, first_timestamp)
                        .await
                }
                Err(reply) => reply,
            },
            Command::Setex | Command::Psetex => {
                let unit = match command {
                    Command::Setex => ExpiryUnit::Seconds,
                    _ => ExpiryUnit::Milliseconds,
                };
                let now_ms = (self.clock)();
                let options = match unit.expiry_ms(args[2], now_ms, command.name(), true) {
                    Ok(at) => SetOptions {
                        expires_at_ms: Some(u64::try_from(at).unwrap_or(0).max(now_ms)),
                        ..SetOptions::default()
                    },
                    Err(reply) => return reply,
                };
                self.set(args[1], args[3], options, level, first_timestamp)
                    .await
            }
            Command::Setnx => {
                let options = SetOptions {
                    condition: Some(false),
                    ..SetOptions::default()
                };
                match self
                    .set(args[1], args[2], options, level, first_timestamp)
                    .await
                {
                    Reply::Simple(_) => Reply::Integer(1),
                    Reply::Bulk(None) => Reply::Integer(0),
                    failed => failed,
                }
            }
            Command::Getset => {
                let options = SetOptions {
                    get_old: true,
                    ..SetOptions::default()
                };
                self.set(args[1], args[2], options, level, first_timestamp)
                    .await
            }
            Command::Getdel => {
                let cell = match self.read_cell(args[1], level).await {
                    Ok(Some(cell)) => cell,
                    Ok(None) => return Reply::Bulk(None),
                    Err(reply) => return reply,
                };
                // The tombstone covers the value it returns.
                let timestamp = self.delete_timestamp(first_timestamp, cell.timestamp);
                match self
                    .write_cell(args[1], Cell::tombstone(timestamp), level)
                    .await
                {
                    Ok(()) => Reply::Bulk(cell.into_value()),
                    Err(reply) => reply,
                }
            }
            Command::Strlen => match self.read_value(args[1], level).await {
                Ok(value) => Reply::Integer(value.map_or(0, |v| v.len() as i64)),
                Err(reply) => reply,
            },
            Command::Type => match self.read_value(args[1], level).await {
                Ok(value) => Reply::Simple(if value.is_some() { "string" } else { "none" }),
                Err(reply) => reply,
            },
            command if command.is_expiry() => {
                self.expiry_command(command, args, level, first_timestamp)
                    .await
            }
            Command::Del | Command::Unlink => {
                // Every key read in one batch, then every tombstone written
                // in one: `DEL k k` deletes (and counts) k once.
                let mut seen = FnvHashSet::default();
                let keys: Vec<&[u8]> = args[1..]
                    .iter()
                    .copied()
                    .filter(|k| seen.insert(*k))
                    .collect();
                let reads = self.coordinate_cell_reads(&keys, read_level(level)).await;
                let mut deleted = 0;
                let mut tombstones = Vec::with_capacity(keys.len());
                for ((key, read), drawn) in keys.iter().zip(reads).zip(first_timestamp..) {
                    let timestamp = match read {
                        Ok(Some(cell)) => {
                            deleted += 1;
                            // Covers the cell read, even one from a clock ahead.
                            self.delete_timestamp(drawn, cell.timestamp)
                        }
                        Ok(None) => drawn,
                        Err(answer) => return failure(*answer),
                    };
                    tombstones.push((key.to_vec(), cell(None, None, timestamp)));
                }
                let answers = self.coordinate_writes(tombstones, level).await;
                match answers.into_iter().map(written).find_map(Result::err) {
                    Some(failed) => failed,
                    None => Reply::Integer(deleted),
                }
            }
            Command::Exists | Command::Mget => {
                let reads = self
                    .coordinate_cell_reads(&args[1..], read_level(level))
                    .await;
                let mut values = Vec::with_capacity(reads.len());
                for read in reads {
                    match read {
                        Ok(cell) => values.push(cell.and_then(Cell::into_value)),
                        Err(answer) => return failure(*answer),
                    }
                }
                if command == Command::Exists {
                    Reply::Integer(values.iter().filter(|v| v.is_some()).count() as i64)
                } else {
                    Reply::Array(values.into_iter().map(Reply::Bulk).collect())
                }
            }
            Command::Mset => {
                let writes = args[1..]
                    .chunks(2)
                    .zip(first_timestamp..)
                    .map(|(pair, timestamp)| {
                        (pair[0].to_vec(), cell(Some(pair[1]), None, timestamp))
                    })
                    .collect();
                let answers = self.coordinate_writes(writes, level).await;
                answers
                    .into_iter()
                    .map(write_reply)
                    .find(|reply| *reply != Reply::ok())
                    .unwrap_or_else(Reply::ok)
            }
            Command::Scan => self.resp_scan(args, level).await,
            Command::Keys => self.resp_keys(args[1], level).await,
            other => Reply::err(format!("ERR '{}' is not a data command", other.name())),
        }
    }
}

/// An integer argument as Redis reads one: optional `-`, decimal digits, no
/// leading zero, no `+`, within i64.
pub(crate) fn redis_integer(bytes: &[u8]) -> Option<i64> {
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    let canonical = match digits {
        [] => false,
        [b'0'] => bytes.len() == 1,
        [first, ..] => *first != b'0' && digits.iter().all(u8::is_ascii_digit),
    };
    canonical
        .then(|| std::str::from_utf8(bytes).ok()?.parse().ok())
        .flatten()
}

/// What SET's options after the value ask for.
#[derive(Debug, Default, PartialEq)]
struct SetOptions {
    /// Expiry time in ms since the epoch.
    expires_at_ms: Option<u64>,
    /// `Some(true)` for XX (the key must exist), `Some(false)` for NX (it
    /// must not).
    condition: Option<bool>,
    /// GET: answer with the value the key had.
    get_old: bool,
    /// KEEPTTL: keep the expiry the key had.
    keep_ttl: bool,
}

/// Parses SET's options after the value, `[EX seconds | PX milliseconds |
/// EXAT unix-seconds | PXAT unix-milliseconds | KEEPTTL] [NX | XX] [GET]`
/// in any order, given the time `now_ms`, with Redis's errors.
fn set_options(options: &[&[u8]], now_ms: u64) -> Result<SetOptions, Reply> {
    let mut parsed = SetOptions::default();
    // Which of EX, PX, EXAT, PXAT and KEEPTTL was given: as in Redis, the
    // same one again replaces it, another one is an error.
    let mut expiry_option = None;
    let mut i = 0;
    while i < options.len() {
        let option = text(options[i]).to_ascii_uppercase();
        match option.as_str() {
            name if let Some(unit) = ExpiryUnit::of_option(name)
                && expiry_option.as_ref().is_none_or(|given| *given == option) =>
            {
                let Some(amount) = options.get(i + 1) else {
                    return Err(Reply::err("ERR syntax error"));
                };
                let expires = unit.expiry_ms(amount, now_ms, "set", true)?;
                // An absolute time already past expires the key now, not
                // then: compaction counts gc_grace from the expiry, and an
                // expiry in the distant past would let it purge the cell
                // before every replica has it.
                parsed.expires_at_ms = Some(u64::try_from(expires).unwrap_or(0).max(now_ms));
                expiry_option = Some(option);
                i += 2;
            }
            "KEEPTTL" if expiry_option.as_ref().is_none_or(|given| *given == option) => {
                parsed.keep_ttl = true;
                expiry_option = Some(option);
                i += 1;
            }
            "NX" | "XX" => {
                let must_exist = option == "XX";
                if parsed.condition.is_some_and(|c| c != must_exist) {
                    return Err(Reply::err("ERR syntax error"));
                }
                parsed.condition = Some(must_exist);
                i += 1;
            }
            "GET" => {
                parsed.get_old = true;
                i += 1;
            }
            _ => return Err(Reply::err("ERR syntax error")),
        }
    }
    Ok(parsed)
}

/// Reads cannot run at ANY; a connection set to ANY reads at ONE.
pub(crate) fn read_level(level: ConsistencyLevel) -> ConsistencyLevel {
    if level == ConsistencyLevel::Any {
        ConsistencyLevel::One
    } else {
        level
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_read_as_redis_reads_them() {
        for (text, expected) in [
            (&b"0"[..], Some(0)),
            (b"42", Some(42)),
            (b"-7", Some(-7)),
            (b"9223372036854775807", Some(i64::MAX)),
            (b"9223372036854775808", None),
            (b"+5", None),
            (b"05", None),
            (b"-0", None),
            (b"", None),
            (b"-", None),
            (b"1e3", None),
            (b" 1", None),
        ] {
            assert_eq!(
                redis_integer(text),
                expected,
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn set_options_give_an_expiry_or_redis_errors() {
        let now_ms = 1_000_000;
        let options = |words: &[&[u8]]| {
            set_options(words, now_ms).map(|o| (o.expires_at_ms, o.condition, o.get_old))
        };
        assert_eq!(
            options(&[b"EX", b"10"]),
            Ok((Some(now_ms + 10_000), None, false))
        );
        assert_eq!(
            options(&[b"px", b"5", b"NX"]),
            Ok((Some(now_ms + 5), Some(false), false))
        );
        assert_eq!(options(&[b"XX", b"XX"]), Ok((None, Some(true), false)));
        assert_eq!(
            options(&[b"get", b"NX", b"EX", b"1"]),
            Ok((Some(now_ms + 1000), Some(false), true))
        );
        let error = |words: &[&[u8]]| match options(words) {
            Err(Reply::Error(e)) => e,
            other => panic!("{words:?}: {other:?}"),
        };
        let invalid = "ERR invalid expire time in 'set' command";
        assert_eq!(error(&[b"EX", b"0"]), invalid);
        assert_eq!(error(&[b"PX", b"-1"]), invalid);
        assert_eq!(
            error(&[b"EX", b"18446744073709552"]),
            invalid,
            "wraps in ms"
        );
        assert_eq!(error(&[b"PX", b"9223372036854775807"]), invalid, "past i64");
        assert_eq!(
            error(&[b"EX", b"abc"]),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(
            error(&[b"EX", b"+5"]),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(error(&[b"EX"]), "ERR syntax error");
        assert_eq!(error(&[b"EX", b"1", b"PX", b"1"]), "ERR syntax error");
        assert_eq!(error(&[b"NX", b"XX"]), "ERR syntax error");
        assert_eq!(
            options(&[b"keepttl", b"XX", b"KEEPTTL"]).map(|_| ()),
            Ok(())
        );
        assert_eq!(error(&[b"KEEPTTL", b"EX", b"1"]), "ERR syntax error");
        assert_eq!(error(&[b"PX", b"1", b"KEEPTTL"]), "ERR syntax error");
        assert_eq!(
            options(&[b"exat", b"2000"]),
            Ok((Some(2_000_000), None, false))
        );
        assert_eq!(
            options(&[b"PXAT", b"5", b"XX"]),
            Ok((Some(now_ms), Some(true), false)),
            "an absolute time already past expires the key now"
        );
        assert_eq!(
            options(&[b"EX", b"1", b"ex", b"2"]),
            Ok((Some(now_ms + 2000), None, false)),
            "the same option again replaces it, as in Redis"
        );
        assert_eq!(error(&[b"EXAT", b"0"]), invalid);
        assert_eq!(error(&[b"PXAT", b"-5"]), invalid);
        assert_eq!(
            error(&[b"EXAT", b"9223372036854776"]),
            invalid,
            "past i64 in ms"
        );
        assert_eq!(error(&[b"EX", b"1", b"PXAT", b"1"]), "ERR syntax error");
    }
}
