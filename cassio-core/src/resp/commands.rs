//! The Redis commands cassio answers, each run through the node's
//! coordinator at the connection's consistency level (`CASSIO.CONSISTENCY`).

use std::sync::Arc;
use std::time::Duration;

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

fn arity_error(command: &str) -> Reply {
    Reply::err(format!(
        "ERR wrong number of arguments for '{command}' command"
    ))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
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
        match self.coordinate_read(key.to_vec(), level).await {
            Response::Value { value, .. } => Ok(value),
            other => Err(failure(other)),
        }
    }

    async fn write_cell(
        self: &Arc<Self>,
        key: &[u8],
        value: Option<Vec<u8>>,
        ttl: Option<Duration>,
        level: ConsistencyLevel,
    ) -> Result<(), Reply> {
        let timestamp = self.write_timestamp(None);
        let cell = Cell {
            timestamp,
            expires_at_ms: ttl.map(|t| (self.clock)().saturating_add(t.as_millis() as u64)),
            value: value.map_or(CellValue::Tombstone, CellValue::Value),
        };
        match self.coordinate_write(key.to_vec(), cell, level).await {
            Response::Written { .. } => Ok(()),
            other => Err(failure(other)),
        }
    }

    /// Runs one command.
    pub(crate) async fn resp_command(
        self: &Arc<Self>,
        session: &mut Session,
        args: Vec<Vec<u8>>,
    ) -> Reply {
        let Some(name) = args.first() else {
            return Reply::err("ERR empty command");
        };
        let command = text(name).to_ascii_lowercase();
        let level = session.level;
        let argc = args.len();
        if argc > MULTI_KEY_ARGS_MAX + 1 {
            return Reply::err(format!(
                "ERR too many arguments: at most {MULTI_KEY_ARGS_MAX} per command"
            ));
        }
        match command.as_str() {
            "ping" => match argc {
                1 => Reply::Simple("PONG"),
                2 => Reply::bulk(args[1].clone()),
                _ => arity_error("ping"),
            },
            "echo" if argc == 2 => Reply::bulk(args[1].clone()),
            "quit" => {
                session.quit = true;
                Reply::ok()
            }
            "select" if argc == 2 => match text(&args[1]).as_str() {
                "0" => Reply::ok(),
                _ => Reply::err("ERR DB index is out of range (cassio has one keyspace, db 0)"),
            },
            "hello" => match args.get(1).map(|v| text(v)) {
                None => self.hello(),
                Some(v) if v == "2" => self.hello(),
                Some(v) if v == "3" => {
                    Reply::err("NOPROTO this server speaks RESP2 only; use HELLO 2")
                }
                Some(v) => Reply::err(format!("NOPROTO unsupported protocol version {v}")),
            },
            "client" if argc >= 2 => match text(&args[1]).to_ascii_lowercase().as_str() {
                "setname" if argc == 3 => {
                    session.name = Some(args[2].clone());
                    Reply::ok()
                }
                "getname" => Reply::Bulk(session.name.clone()),
                "setinfo" | "no-evict" | "no-touch" | "reply" => Reply::ok(),
                "id" => Reply::Integer(1),
                other => Reply::err(format!("ERR unknown subcommand '{other}' for 'client'")),
            },
            "command" => match args.get(1).map(|v| text(v).to_ascii_lowercase()).as_deref() {
                Some("count") => Reply::Integer(COMMANDS.len() as i64),
                _ => Reply::Array(Vec::new()),
            },
            "info" => Reply::bulk(self.info()),
            "cassio.consistency" => match args.get(1) {
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
            "get" if argc == 2 => match self.read_value(&args[1], read_level(level)).await {
                Ok(value) => Reply::Bulk(value),
                Err(reply) => reply,
            },
            "set" if argc >= 3 => self.set(&args, level).await,
            "del" if argc >= 2 => {
                let mut deleted = 0;
                for key in &args[1..] {
                    match self.read_value(key, read_level(level)).await {
                        Ok(Some(_)) => deleted += 1,
                        Ok(None) => {}
                        Err(reply) => return reply,
                    }
                    if let Err(reply) = self.write_cell(key, None, None, level).await {
                        return reply;
                    }
                }
                Reply::Integer(deleted)
            }
            "exists" if argc >= 2 => {
                let mut found = 0;
                for key in &args[1..] {
                    match self.read_value(key, read_level(level)).await {
                        Ok(Some(_)) => found += 1,
                        Ok(None) => {}
                        Err(reply) => return reply,
                    }
                }
                Reply::Integer(found)
            }
            "mget" if argc >= 2 => {
                let mut values = Vec::with_capacity(argc - 1);
                for key in &args[1..] {
                    match self.read_value(key, read_level(level)).await {
                        Ok(v) => values.push(Reply::Bulk(v)),
                        Err(reply) => return reply,
                    }
                }
                Reply::Array(values)
            }
            "mset" if argc >= 3 && argc % 2 == 1 => {
                for pair in args[1..].chunks(2) {
                    if let Err(reply) = self
                        .write_cell(&pair[0], Some(pair[1].clone()), None, level)
                        .await
                    {
                        return reply;
                    }
                }
                Reply::ok()
            }
            "dbsize" if argc == 1 => Reply::Integer(self.local_key_count() as i64),
            _ if COMMANDS.contains(&command.as_str()) => arity_error(&command),
            _ => {
                let rest: Vec<String> = args[1..]
                    .iter()
                    .take(3)
                    .map(|a| format!("'{}'", text(a)))
                    .collect();
                Reply::err(format!(
                    "ERR unknown command '{}', with args beginning with: {}",
                    text(name),
                    rest.join(" ")
                ))
            }
        }
    }

    /// SET key value [EX seconds | PX milliseconds] [NX | XX]. NX and XX
    /// read first: they are not atomic across concurrent writers.
    async fn set(self: &Arc<Self>, args: &[Vec<u8>], level: ConsistencyLevel) -> Reply {
        let (mut ttl, mut nx, mut xx) = (None, false, false);
        let mut i = 3;
        while i < args.len() {
            let option = text(&args[i]).to_ascii_uppercase();
            match option.as_str() {
                "EX" | "PX" => {
                    let Some(amount) = args
                        .get(i + 1)
                        .and_then(|a| text(a).parse::<u64>().ok())
                        .filter(|n| *n > 0)
                    else {
                        return Reply::err("ERR invalid expire time in 'set' command");
                    };
                    ttl = Some(if option == "EX" {
                        Duration::from_secs(amount)
                    } else {
                        Duration::from_millis(amount)
                    });
                    i += 2;
                }
                "NX" => (nx, i) = (true, i + 1),
                "XX" => (xx, i) = (true, i + 1),
                _ => return Reply::err("ERR syntax error"),
            }
        }
        if nx && xx {
            return Reply::err("ERR syntax error");
        }
        if nx || xx {
            match self.read_value(&args[1], read_level(level)).await {
                Ok(existing) if existing.is_some() == nx => return Reply::Bulk(None),
                Ok(_) => {}
                Err(reply) => return reply,
            }
        }
        match self
            .write_cell(&args[1], Some(args[2].clone()), ttl, level)
            .await
        {
            Ok(()) => Reply::ok(),
            Err(reply) => reply,
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
        out
    }
}

/// Reads cannot run at ANY; a connection set to ANY reads at ONE.
fn read_level(level: ConsistencyLevel) -> ConsistencyLevel {
    if level == ConsistencyLevel::Any {
        ConsistencyLevel::One
    } else {
        level
    }
}

/// Keys (or key-value pairs, for MSET) one command may name: bounds the
/// memory a single reply can take.
const MULTI_KEY_ARGS_MAX: usize = 10_000;

/// Commands cassio knows (for arity errors and `COMMAND COUNT`).
const COMMANDS: &[&str] = &[
    "ping",
    "echo",
    "quit",
    "select",
    "hello",
    "client",
    "command",
    "info",
    "cassio.consistency",
    "get",
    "set",
    "del",
    "exists",
    "mget",
    "mset",
    "dbsize",
];
