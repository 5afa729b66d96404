//! A connection's session: its consistency level, name, protocol (RESP2 or
//! RESP3) and which replies it is sent, and the commands that read or set
//! them or ask about the node (PING, ECHO, SELECT, HELLO, AUTH, CLIENT,
//! COMMAND, INFO, TIME, ROLE, RESET, DBSIZE, `CASSIO.CONSISTENCY`, QUIT).
//! On a node with a password a connection must authenticate (AUTH, or
//! HELLO's AUTH) before anything but those two, RESET and QUIT. They are
//! answered at once, without the coordinator.

use super::commands::{Command, MULTI_KEY_ARGS_MAX, arity_error, redis_integer, refusal, text};
use super::introspect::arity;
use super::reply::{Protocol, Reply};
use super::transaction::Transaction;
use crate::coordinator::ConsistencyLevel;
use crate::net::Transport;
use crate::node::shared::NodeShared;
use crate::storage::StorageStats;

/// Per-connection state.
pub(crate) struct Session {
    pub(crate) level: ConsistencyLevel,
    pub(crate) name: Option<Vec<u8>>,
    /// RESP2 until `HELLO 3`.
    pub(crate) protocol: Protocol,
    pub(crate) replies: ReplyMode,
    pub(crate) quit: bool,
    /// Commands queued since MULTI.
    pub(crate) transaction: Option<Transaction>,
    /// False until AUTH succeeds, on a node with a password.
    pub(crate) authenticated: bool,
}

/// Which replies a connection is sent (`CLIENT REPLY ON | OFF | SKIP`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReplyMode {
    On,
    Off,
    /// None for the next command, then on again.
    SkipNext,
}

impl Session {
    /// A new connection's session; `authenticated` unless the node has a
    /// password.
    pub(crate) fn new(level: ConsistencyLevel, authenticated: bool) -> Session {
        Session {
            authenticated,
            level,
            name: None,
            protocol: Protocol::Resp2,
            replies: ReplyMode::On,
            quit: false,
            transaction: None,
        }
    }

    /// How the reply to the command about to run goes out: in the
    /// connection's protocol, or (`None`) not at all.
    pub(crate) fn next_delivery(&mut self) -> Option<Protocol> {
        match self.replies {
            ReplyMode::On => Some(self.protocol),
            ReplyMode::Off => None,
            ReplyMode::SkipNext => {
                self.replies = ReplyMode::On;
                None
            }
        }
    }
}

impl<T: Transport> NodeShared<T> {
    /// Answers a session command, or a data command in the wrong shape
    /// (an arity or unknown-command error).
    pub(crate) fn session_command(&self, session: &mut Session, args: &[&[u8]]) -> Reply {
        if args.is_empty() {
            return Reply::err("ERR empty command");
        }
        let argc = args.len();
        let command = match checked_command(args) {
            Ok(command) => command,
            Err(error) => return error,
        };
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
            Command::Select if argc == 2 => match redis_integer(args[1]) {
                Some(0) => Reply::ok(),
                Some(_) => {
                    Reply::err("ERR DB index is out of range (cassio has one keyspace, db 0)")
                }
                None => Reply::err("ERR value is not an integer or out of range"),
            },
            Command::Hello => self.hello(session, &args[1..]),
            Command::Auth => match &args[1..] {
                [password] => self.authenticate(session, None, password),
                [user, password] => self.authenticate(session, Some(user), password),
                _ => Reply::err("ERR syntax error"),
            },
            Command::Client if argc >= 2 => client(session, args),
            Command::Introspect => super::introspect::command(args),
            Command::Info => Reply::bulk(self.info(&args[1..])),
            Command::Time if argc == 1 => {
                let now_ms = (self.clock)();
                Reply::Array(vec![
                    Reply::bulk((now_ms / 1000).to_string()),
                    Reply::bulk((now_ms % 1000 * 1000).to_string()),
                ])
            }
            // Every node takes writes: as Redis, a primary without replicas
            // (cassio replicates by key; INFO's Cluster section tells).
            Command::Role if argc == 1 => Reply::Array(vec![
                Reply::bulk("master"),
                Reply::Integer(0),
                Reply::Array(Vec::new()),
            ]),
            Command::Reset if argc == 1 => {
                *session =
                    Session::new(self.config.read_consistency, self.config.password.is_none());
                Reply::Simple("RESET")
            }
            Command::Config => super::config::config(&self.config, *self.resp_addr.lock(), args),
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
            Command::Dbsize if argc == 1 => {
                Reply::Integer(local_key_count(&self.engine.stats()) as i64)
            }
            other => arity_error(other.name()),
        }
    }

    /// Runs a session command and says how its reply goes out (see
    /// [`Session::next_delivery`]). `CLIENT REPLY` is answered only if
    /// replies are now on (ON is, even right after SKIP; OFF and SKIP are
    /// not); HELLO is answered in the protocol it chose.
    pub(crate) fn answer_session_command(
        &self,
        session: &mut Session,
        args: &[&[u8]],
    ) -> (Reply, Option<Protocol>) {
        let replies_before = session.replies;
        let delivery = session.next_delivery();
        let reply = self.session_command(session, args);
        let sets_replies = args.len() == 3
            && args[0].eq_ignore_ascii_case(b"client")
            && args[1].eq_ignore_ascii_case(b"reply")
            && !matches!(reply, Reply::Error(_));
        // RESET turns replies back on, its own included (unless skipped).
        let resets_replies = reply == Reply::Simple("RESET") && replies_before == ReplyMode::Off;
        let delivery = if sets_replies {
            (session.replies == ReplyMode::On).then_some(session.protocol)
        } else if resets_replies {
            Some(session.protocol)
        } else {
            delivery.map(|_| session.protocol)
        };
        (reply, delivery)
    }

    /// `HELLO [protover [AUTH username password] [SETNAME name]]`: changes
    /// nothing unless every option is valid. There are no passwords, so AUTH
    /// accepts the `default` user, as Redis does when none is set.
    fn hello(&self, session: &mut Session, options: &[&[u8]]) -> Reply {
        let mut protocol = session.protocol;
        let mut name = None;
        let mut authenticates = false;
        if let Some((version, mut rest)) = options.split_first() {
            protocol = match redis_integer(version) {
                Some(2) => Protocol::Resp2,
                Some(3) => Protocol::Resp3,
                Some(_) => return Reply::err("NOPROTO unsupported protocol version"),
                None => {
                    return Reply::err("ERR Protocol version is not an integer or out of range");
                }
            };
            while let Some((option, tail)) = rest.split_first() {
                rest = match (text(option).to_ascii_uppercase().as_str(), tail) {
                    ("AUTH", [user, password, tail @ ..]) => {
                        if let Err(refused) = self.check_password(Some(user), password) {
                            return refused;
                        }
                        authenticates = true;
                        tail
                    }
                    ("SETNAME", [new_name, tail @ ..]) => {
                        name = match client_name(new_name) {
                            Ok(new_name) => Some(new_name),
                            Err(reply) => return reply,
                        };
                        tail
                    }
                    _ => {
                        return Reply::err(format!(
                            "ERR Syntax error in HELLO option '{}'",
                            text(option)
                        ));
                    }
                };
            }
        }
        if !session.authenticated && !authenticates {
            return Reply::err(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
            );
        }
        session.authenticated = true;
        session.protocol = protocol;
        if let Some(name) = name {
            session.name = name;
        }
        // "standalone": a client talks to any one node for every key, and
        // must not look for Redis Cluster's slots.
        Reply::Map(vec![
            (Reply::bulk("server"), Reply::bulk("cassio")),
            (
                Reply::bulk("version"),
                Reply::bulk(env!("CARGO_PKG_VERSION")),
            ),
            (Reply::bulk("proto"), Reply::Integer(protocol.version())),
            (Reply::bulk("id"), Reply::Integer(1)),
            (Reply::bulk("mode"), Reply::bulk("standalone")),
            (Reply::bulk("role"), Reply::bulk("master")),
            (Reply::bulk("modules"), Reply::Array(Vec::new())),
        ])
    }

    /// `AUTH [user] password`, as Redis answers it: the only user is
    /// `default`.
    fn authenticate(&self, session: &mut Session, user: Option<&[u8]>, password: &[u8]) -> Reply {
        if self.config.password.is_none() && user.is_none() {
            return Reply::err(
                "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            );
        }
        match self.check_password(user, password) {
            Ok(()) => {
                session.authenticated = true;
                Reply::ok()
            }
            Err(refused) => refused,
        }
    }

    /// Whether `user` (the default user if `None`) may log in with
    /// `password`: with no password set, the default user with any.
    fn check_password(&self, user: Option<&[u8]>, password: &[u8]) -> Result<(), Reply> {
        let default_user = user.is_none_or(|u| u == b"default");
        let accepted = match &self.config.password {
            None => default_user,
            Some(secret) => default_user && secret.matches(password),
        };
        match accepted {
            true => Ok(()),
            false => Err(Reply::err(
                "WRONGPASS invalid username-password pair or user is disabled.",
            )),
        }
    }

    /// `INFO [section ...]`: Server, Clients (this node's Redis-protocol
    /// connections), Keyspace, Cluster (every member as this node sees it)
    /// and Stats; all of them without a section name (or with `all`,
    /// `default`, `everything`).
    fn info(&self, sections: &[&[u8]]) -> String {
        let wanted = |name: &str| {
            sections.is_empty()
                || sections.iter().any(|s| {
                    s.eq_ignore_ascii_case(name.as_bytes())
                        || [&b"all"[..], b"default", b"everything"]
                            .iter()
                            .any(|every| s.eq_ignore_ascii_case(every))
                })
        };
        let status = self.cluster_status();
        let mut out = String::new();
        let mut section = |name: &str, body: String| {
            if wanted(name) {
                if !out.is_empty() {
                    out.push_str("\r\n");
                }
                out.push_str(&format!("# {name}\r\n{body}"));
            }
        };
        section(
            "Server",
            format!(
                "redis_version:7.0.0\r\ncassio_version:{}\r\nnode:{}\r\ncluster_name:{}\r\n",
                env!("CARGO_PKG_VERSION"),
                self.node_id,
                self.config.cluster_name
            ),
        );
        let connections = &self.client_connections;
        section(
            "Clients",
            format!(
                "connected_clients:{}\r\nmaxclients:{}\r\n",
                connections.open(),
                connections.max()
            ),
        );
        section(
            "Replication",
            "role:master\r\nconnected_slaves:0\r\n".into(),
        );
        let storage = self.engine.stats();
        section(
            "Keyspace",
            format!(
                "db0:keys={},expires={},avg_ttl=0\r\n",
                local_key_count(&storage),
                storage.expiring
            ),
        );
        let mut cluster = format!(
            "replication_factor:{}\r\nmembers:{}\r\n",
            status.replication_factor,
            status.members.len()
        );
        for m in &status.members {
            cluster.push_str(&format!(
                "member:{},{},{},{},load={},owns={:.3}\r\n",
                m.node,
                m.native_addr,
                if m.up { "UP" } else { "DOWN" },
                m.status.as_str(),
                m.load_bytes,
                m.owns
            ));
        }
        section("Cluster", cluster);
        let m = &status.metrics;
        section(
            "Stats",
            format!(
                "rejected_connections:{}\r\nreads:{}\r\nwrites:{}\r\nunavailable:{}\r\ntimeouts:{}\r\ninvalid_requests:{}\r\nhints_stored:{}\r\nhints_replayed:{}\r\nhints_expired:{}\r\nhints_dropped:{}\r\nread_repairs:{}\r\nrepairs:{}\r\n",
                connections.refused(),
                m.reads,
                m.writes,
                m.unavailable,
                m.timeouts,
                m.invalid_requests,
                m.hints_stored,
                m.hints_replayed,
                m.hints_expired,
                m.hints_dropped,
                m.read_repairs,
                m.repairs
            ),
        );
        out
    }
}

/// The command `args` (not empty) names, or the error Redis gives before
/// running it: unknown command, too many arguments, wrong arity.
pub(crate) fn checked_command(args: &[&[u8]]) -> Result<Command, Reply> {
    let Some(command) = Command::lookup(args[0]) else {
        return Err(refusal(args[0]).unwrap_or_else(|| unknown_command(args)));
    };
    if args.len() > MULTI_KEY_ARGS_MAX + 1 {
        return Err(Reply::err(format!(
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
    match shaped {
        true => Ok(command),
        false => Err(arity_error(command.name())),
    }
}

/// Redis's words for a command it does not know: the name and the first
/// arguments, quoted, each cut so the message stays short.
fn unknown_command(args: &[&[u8]]) -> Reply {
    const SHOWN_BYTES_MAX: usize = 128;
    let name = &args[0][..args[0].len().min(SHOWN_BYTES_MAX)];
    let mut shown = Vec::new();
    for arg in &args[1..] {
        if shown.len() >= SHOWN_BYTES_MAX {
            break;
        }
        let room = SHOWN_BYTES_MAX - shown.len();
        shown.push(b'\'');
        shown.extend_from_slice(&arg[..arg.len().min(room)]);
        shown.extend_from_slice(b"' ");
    }
    Reply::err(format!(
        "ERR unknown command '{}', with args beginning with: {}",
        text(name),
        text(&shown)
    ))
}

/// `CLIENT <subcommand> ...`: the subcommands client libraries send on
/// connect, and naming and reply control.
fn client(session: &mut Session, args: &[&[u8]]) -> Reply {
    let subcommand = text(args[1]).to_ascii_lowercase();
    let on_off = |arg: &[u8]| arg.eq_ignore_ascii_case(b"on") || arg.eq_ignore_ascii_case(b"off");
    match (subcommand.as_str(), &args[2..]) {
        ("setname", [name]) => match client_name(name) {
            Ok(name) => {
                session.name = name;
                Reply::ok()
            }
            Err(reply) => reply,
        },
        ("getname", []) => Reply::Bulk(session.name.clone()),
        ("id", []) => Reply::Integer(1),
        ("reply", [mode]) => {
            session.replies = match text(mode).to_ascii_uppercase().as_str() {
                "ON" => ReplyMode::On,
                "OFF" => ReplyMode::Off,
                // As in Redis, SKIP changes nothing while replies are off.
                "SKIP" if session.replies == ReplyMode::Off => ReplyMode::Off,
                "SKIP" => ReplyMode::SkipNext,
                _ => return Reply::err("ERR syntax error"),
            };
            Reply::ok()
        }
        // Sent by client libraries on connect; nothing here depends on them.
        ("setinfo", [_, _]) => Reply::ok(),
        ("no-evict" | "no-touch", [flag]) if on_off(flag) => Reply::ok(),
        ("no-evict" | "no-touch", [_]) => Reply::err("ERR syntax error"),
        ("setname" | "getname" | "id" | "reply" | "setinfo" | "no-evict" | "no-touch", _) => {
            arity_error(&format!("client|{subcommand}"))
        }
        _ => Reply::err(format!(
            "ERR unknown subcommand '{}'. Try CLIENT HELP.",
            text(args[1])
        )),
    }
}

/// A connection name as Redis allows it: printable ASCII without spaces;
/// empty clears the name.
fn client_name(name: &[u8]) -> Result<Option<Vec<u8>>, Reply> {
    if name.iter().any(|b| !(b'!'..=b'~').contains(b)) {
        return Err(Reply::err(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    Ok((!name.is_empty()).then(|| name.to_vec()))
}

/// Approximate keys in this node's own storage (its replicas of the data):
/// entries in memtables and tables, from statistics, so it costs nothing. A
/// key in several tables, and tombstones, are counted too.
fn local_key_count(stats: &StorageStats) -> u64 {
    (stats.sstable_entries - stats.sstable_tombstones) + stats.memtable_entries as u64
}
