//! The Redis commands cassio answers. Session commands (PING, CLIENT,
//! `CASSIO.CONSISTENCY`, ...) are answered at once; data commands (GET, SET,
//! DEL, EXISTS, MGET, MSET) run through the node's coordinator at the
//! connection's consistency level.

use std::sync::Arc;
use std::time::Duration;

use fnv::FnvHashSet;

use super::reply::Reply;
use crate::coordinator::ConsistencyLevel;
use crate::net::Transport;
use crate::node::shared::NodeShared;
use crate::proto::Response;
use crate::storage::{Cell, CellValue};

/// Per-connection state.
pub(crate) struct Session {
    pub(crate) level: ConsistencyLevel,
    pub(crate) name: Option<Vec<u8>>,
    pub(crate) quit: bool,
}

/// A command cassio knows, recognized by name in any letter case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Command {
    Ping,
    Echo,
    Quit,
    Select,
    Hello,
    Client,
    /// `COMMAND`, which redis-cli asks on connect.
    Introspect,
    Info,
    Consistency,
    Dbsize,
    Get,
    Set,
    Del,
    Exists,
    Mget,
    Mset,
}

/// Every command with its name (for lookup, arity errors and `COMMAND COUNT`).
const COMMANDS: &[(&str, Command)] = &[
    // The most used first: lookup scans in order.
    ("get", Command::Get),
    ("set", Command::Set),
    ("ping", Command::Ping),
    ("echo", Command::Echo),
    ("quit", Command::Quit),
    ("select", Command::Select),
    ("hello", Command::Hello),
    ("client", Command::Client),
    ("command", Command::Introspect),
    ("info", Command::Info),
    ("cassio.consistency", Command::Consistency),
    ("dbsize", Command::Dbsize),
    ("del", Command::Del),
    ("exists", Command::Exists),
    ("mget", Command::Mget),
    ("mset", Command::Mset),
];

/// Keys (or key-value pairs, for MSET) one command may name: bounds the
/// memory a single reply can take.
const MULTI_KEY_ARGS_MAX: usize = 10_000;

impl Command {
    fn lookup(name: &[u8]) -> Option<Command> {
        COMMANDS
            .iter()
            .find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
            .map(|&(_, c)| c)
    }

    fn name(self) -> &'static str {
        COMMANDS
            .iter()
            .find(|(_, c)| *c == self)
            .map_or("?", |(n, _)| n)
    }

    /// A data command with `argc` arguments (its name included) in the
    /// shape it needs; anything else is answered at once (with an arity
    /// error, if that is what is wrong).
    pub(crate) fn data(args: &[&[u8]]) -> Option<Command> {
        let command = Command::lookup(args.first()?)?;
        let argc = args.len();
        let well_formed = match command {
            Command::Get => argc == 2,
            Command::Set => argc >= 3,
            Command::Del | Command::Exists | Command::Mget => argc >= 2,
            Command::Mset => argc >= 3 && argc % 2 == 1,
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
            Command::Get | Command::Exists | Command::Mget => (&args[1..], none, 1),
            // NX and XX read the key before writing it.
            Command::Set if args.len() > 3 => (&args[1..2], &args[1..2], 1),
            Command::Set => (none, &args[1..2], 1),
            Command::Mset => (none, &args[1..], 2),
            Command::Del => (&args[1..], &args[1..], 1),
            _ => (none, none, 1),
        }
    }

    /// Write timestamps a well-formed data command needs.
    pub(crate) fn writes(self, args: &[&[u8]]) -> u64 {
        let (_, writes, step) = self.access(args);
        writes.len().div_ceil(step) as u64
    }
}

fn arity_error(command: &str) -> Reply {
    Reply::err(format!(
        "ERR wrong number of arguments for '{command}' command"
    ))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A SET with no options: written with the other writes of its run, in one
/// batch.
pub(crate) fn is_plain_set(command: Command, args: &[&[u8]]) -> bool {
    command == Command::Set && args.len() == 3
}

/// The reply to GET from the coordinator's answer.
pub(crate) fn read_reply(response: Response) -> Reply {
    match response {
        Response::Value { value, .. } => Reply::Bulk(value),
        other => failure(other),
    }
}

/// The reply to a write from the coordinator's answer: OK or an error.
pub(crate) fn write_reply(response: Response) -> Reply {
    written(response).map_or_else(|failed| failed, |()| Reply::ok())
}

/// Whether the coordinator's answer says written, or the error reply.
fn written(response: Response) -> Result<(), Reply> {
    match response {
        Response::Written { .. } => Ok(()),
        other => Err(failure(other)),
    }
}

/// A coordinator answer that is not the expected one, as a Redis error.
fn failure(response: Response) -> Reply {
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
    async fn read_value(
        self: &Arc<Self>,
        key: &[u8],
        level: ConsistencyLevel,
    ) -> Result<Option<Vec<u8>>, Reply> {
        match self.coordinate_read(key.to_vec(), read_level(level)).await {
            Response::Value { value, .. } => Ok(value),
            other => Err(failure(other)),
        }
    }

    async fn write_cell(
        self: &Arc<Self>,
        key: &[u8],
        cell: Cell,
        level: ConsistencyLevel,
    ) -> Result<(), Reply> {
        written(self.coordinate_write(key.to_vec(), cell, level).await)
    }

    /// Answers a session command, or a data command in the wrong shape
    /// (an arity or unknown-command error).
    pub(crate) fn session_command(&self, session: &mut Session, args: &[&[u8]]) -> Reply {
        let Some(&name) = args.first() else {
            return Reply::err("ERR empty command");
        };
        let argc = args.len();
        let Some(command) = Command::lookup(name) else {
            let rest: Vec<String> = args[1..]
                .iter()
                .take(3)
                .map(|a| format!("'{}'", text(a)))
                .collect();
            return Reply::err(format!(
                "ERR unknown command '{}', with args beginning with: {}",
                text(name),
                rest.join(" ")
            ));
        };
        if argc > MULTI_KEY_ARGS_MAX + 1 {
            return Reply::err(format!(
                "ERR too many arguments: at most {MULTI_KEY_ARGS_MAX} per command"
            ));
        }
        match command {
            Command::Ping => match argc {
                1 => Reply::Simple("PONG"),
                2 => Reply::bulk(args[1]),
                _ => arity_error("ping"),
            },
            Command::Echo if argc == 2 => Reply::bulk(args[1]),
            Command::Quit => {
                session.quit = true;
                Reply::ok()
            }
            Command::Select if argc == 2 => match args[1] {
                b"0" => Reply::ok(),
                _ => Reply::err("ERR DB index is out of range (cassio has one keyspace, db 0)"),
            },
            Command::Hello => match args.get(1).map(|v| text(v)) {
                None => self.hello(),
                Some(v) if v == "2" => self.hello(),
                Some(v) if v == "3" => {
                    Reply::err("NOPROTO this server speaks RESP2 only; use HELLO 2")
                }
                Some(v) => Reply::err(format!("NOPROTO unsupported protocol version {v}")),
            },
            Command::Client if argc >= 2 => match text(args[1]).to_ascii_lowercase().as_str() {
                "setname" if argc == 3 => {
                    session.name = Some(args[2].to_vec());
                    Reply::ok()
                }
                "getname" => Reply::Bulk(session.name.clone()),
                "setinfo" | "no-evict" | "no-touch" | "reply" => Reply::ok(),
                "id" => Reply::Integer(1),
                other => Reply::err(format!("ERR unknown subcommand '{other}' for 'client'")),
            },
            Command::Introspect => match args.get(1) {
                Some(sub) if sub.eq_ignore_ascii_case(b"count") => {
                    Reply::Integer(COMMANDS.len() as i64)
                }
                _ => Reply::Array(Vec::new()),
            },
            Command::Info => Reply::bulk(self.info()),
            Command::Consistency => match args.get(1) {
                None => Reply::bulk(session.level.as_str()),
                Some(v) => match text(v).parse::<ConsistencyLevel>() {
                    Ok(ConsistencyLevel::Any) | Err(_) if argc != 2 => {
                        arity_error("cassio.consistency")
                    }
                    Ok(l) => {
                        session.level = l;
                        Reply::ok()
                    }
                    Err(e) => Reply::err(format!("ERR {e}")),
                },
            },
            Command::Dbsize if argc == 1 => Reply::Integer(self.local_key_count() as i64),
            other => arity_error(other.name()),
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
        let cell = |value: Option<&[u8]>, ttl: Option<Duration>, timestamp: u64| Cell {
            timestamp,
            expires_at_ms: ttl.map(|t| (self.clock)().saturating_add(t.as_millis() as u64)),
            value: value.map_or(CellValue::Tombstone, |v| CellValue::Value(v.to_vec())),
        };
        match command {
            Command::Get => match self.read_value(args[1], level).await {
                Ok(value) => Reply::Bulk(value),
                Err(reply) => reply,
            },
            Command::Set => {
                let (ttl, condition) = match set_options(&args[3..]) {
                    Ok(options) => options,
                    Err(reply) => return reply,
                };
                if let Some(must_exist) = condition {
                    match self.read_value(args[1], level).await {
                        Ok(existing) if existing.is_some() != must_exist => {
                            return Reply::Bulk(None);
                        }
                        Ok(_) => {}
                        Err(reply) => return reply,
                    }
                }
                let cell = cell(Some(args[2]), ttl, first_timestamp);
                match self.write_cell(args[1], cell, level).await {
                    Ok(()) => Reply::ok(),
                    Err(reply) => reply,
                }
            }
            Command::Del => {
                // Every key read in one batch, then every tombstone written
                // in one: `DEL k k` deletes (and counts) k once.
                let mut seen = FnvHashSet::default();
                let keys: Vec<&[u8]> = args[1..]
                    .iter()
                    .copied()
                    .filter(|k| seen.insert(*k))
                    .collect();
                let answers = self.coordinate_reads(&keys, read_level(level)).await;
                let mut deleted = 0;
                for answer in answers {
                    match answer {
                        Response::Value { value, .. } => deleted += i64::from(value.is_some()),
                        other => return failure(other),
                    }
                }
                let tombstones = keys
                    .iter()
                    .zip(first_timestamp..)
                    .map(|(key, timestamp)| (key.to_vec(), cell(None, None, timestamp)))
                    .collect();
                let answers = self.coordinate_writes(tombstones, level).await;
                match answers.into_iter().map(written).find_map(Result::err) {
                    Some(failed) => failed,
                    None => Reply::Integer(deleted),
                }
            }
            Command::Exists | Command::Mget => {
                let answers = self.coordinate_reads(&args[1..], read_level(level)).await;
                let mut values = Vec::with_capacity(answers.len());
                for answer in answers {
                    match answer {
                        Response::Value { value, .. } => values.push(value),
                        other => return failure(other),
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
            other => Reply::err(format!("ERR '{}' is not a data command", other.name())),
        }
    }

    fn hello(&self) -> Reply {
        Reply::Array(vec![
            Reply::bulk("server"),
            Reply::bulk("cassio"),
            Reply::bulk("version"),
            Reply::bulk(env!("CARGO_PKG_VERSION")),
            Reply::bulk("proto"),
            Reply::Integer(2),
            Reply::bulk("id"),
            Reply::Integer(1),
            Reply::bulk("mode"),
            Reply::bulk("cluster"),
            Reply::bulk("role"),
            Reply::bulk("master"),
            Reply::bulk("modules"),
            Reply::Array(Vec::new()),
        ])
    }

    /// Approximate keys in this node's own storage (its replicas of the
    /// data): entries in memtables and tables, from statistics, so it costs
    /// nothing. A key in several tables, and tombstones, are counted too.
    fn local_key_count(&self) -> u64 {
        let stats = self.engine.stats();
        (stats.sstable_entries - stats.sstable_tombstones) + stats.memtable_entries as u64
    }

    fn info(&self) -> String {
        let status = self.cluster_status();
        let mut out = format!(
            "# Server\r\nredis_version:7.0.0\r\ncassio_version:{}\r\nnode:{}\r\ncluster_name:{}\r\n\r\n# Keyspace\r\ndb0:keys={},expires=0,avg_ttl=0\r\n\r\n# Cluster\r\nreplication_factor:{}\r\nmembers:{}\r\n",
            env!("CARGO_PKG_VERSION"),
            self.node_id,
            self.config.cluster_name,
            self.local_key_count(),
            status.replication_factor,
            status.members.len()
        );
        for m in &status.members {
            out.push_str(&format!(
                "member:{},{},{},{},load={},owns={:.3}\r\n",
                m.node,
                m.native_addr,
                if m.up { "UP" } else { "DOWN" },
                m.status.as_str(),
                m.load_bytes,
                m.owns
            ));
        }
        let m = &status.metrics;
        out.push_str(&format!(
            "\r\n# Stats\r\nreads:{}\r\nwrites:{}\r\nunavailable:{}\r\ntimeouts:{}\r\ninvalid_requests:{}\r\nhints_stored:{}\r\nhints_replayed:{}\r\nhints_expired:{}\r\nhints_dropped:{}\r\nread_repairs:{}\r\n",
            m.reads,
            m.writes,
            m.unavailable,
            m.timeouts,
            m.invalid_requests,
            m.hints_stored,
            m.hints_replayed,
            m.hints_expired,
            m.hints_dropped,
            m.read_repairs
        ));
        out
    }
}

/// SET's options after the value: `[EX seconds | PX milliseconds] [NX | XX]`
/// as (time to live, `Some(true)` for XX: the key must exist, `Some(false)`
/// for NX: it must not). NX and XX read first: they are not atomic across
/// concurrent writers.
fn set_options(options: &[&[u8]]) -> Result<(Option<Duration>, Option<bool>), Reply> {
    let (mut ttl, mut condition) = (None, None);
    let mut i = 0;
    while i < options.len() {
        let option = text(options[i]).to_ascii_uppercase();
        match option.as_str() {
            "EX" | "PX" => {
                let Some(amount) = options
                    .get(i + 1)
                    .and_then(|a| text(a).parse::<u64>().ok())
                    .filter(|n| *n > 0)
                else {
                    return Err(Reply::err("ERR invalid expire time in 'set' command"));
                };
                ttl = Some(if option == "EX" {
                    Duration::from_secs(amount)
                } else {
                    Duration::from_millis(amount)
                });
                i += 2;
            }
            "NX" | "XX" => {
                let must_exist = option == "XX";
                if condition.is_some_and(|c| c != must_exist) {
                    return Err(Reply::err("ERR syntax error"));
                }
                condition = Some(must_exist);
                i += 1;
            }
            _ => return Err(Reply::err("ERR syntax error")),
        }
    }
    Ok((ttl, condition))
}

/// Reads cannot run at ANY; a connection set to ANY reads at ONE.
pub(crate) fn read_level(level: ConsistencyLevel) -> ConsistencyLevel {
    if level == ConsistencyLevel::Any {
        ConsistencyLevel::One
    } else {
        level
    }
}
