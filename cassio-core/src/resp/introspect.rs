//! The `COMMAND` command: what cassio tells a client about the commands it
//! knows (arity, flags, where the keys are), in the shape Redis 7 uses, so
//! that client libraries which look commands up before using them, or ask
//! which arguments are keys, work.

use super::commands::Command;
use super::reply::Reply;

/// What `COMMAND INFO` says of one command.
struct Spec {
    /// Arguments, the name included; negative: at least that many.
    arity: i64,
    flags: &'static [&'static str],
    /// Positions of the first and last key (-1: the last argument), and the
    /// step between keys; 0, 0, 0 for a command without keys.
    keys: (i64, i64, i64),
}

/// The flags of AUTH and RESET: commands a connection may send at any time
/// (before AUTH too).
const ANYTIME: &[&str] = &[
    "noscript",
    "loading",
    "stale",
    "fast",
    "no_auth",
    "allow_busy",
];

fn spec(command: Command) -> Spec {
    let spec = |arity, flags, keys| Spec { arity, flags, keys };
    const NO_KEYS: (i64, i64, i64) = (0, 0, 0);
    match command {
        Command::Get => spec(2, &["readonly", "fast"], (1, 1, 1)),
        Command::Set => spec(-3, &["write", "denyoom"], (1, 1, 1)),
        Command::Del => spec(-2, &["write"], (1, -1, 1)),
        Command::Exists => spec(-2, &["readonly", "fast"], (1, -1, 1)),
        Command::Mget => spec(-2, &["readonly", "fast"], (1, -1, 1)),
        Command::Mset => spec(-3, &["write", "denyoom"], (1, -1, 2)),
        Command::Setex | Command::Psetex => spec(4, &["write", "denyoom"], (1, 1, 1)),
        Command::Setnx | Command::Getset => spec(3, &["write", "denyoom", "fast"], (1, 1, 1)),
        Command::Getdel | Command::Persist => spec(2, &["write", "fast"], (1, 1, 1)),
        Command::Getex => spec(-2, &["write", "fast"], (1, 1, 1)),
        Command::Unlink => spec(-2, &["write", "fast"], (1, -1, 1)),
        Command::Strlen
        | Command::Type
        | Command::Ttl
        | Command::Pttl
        | Command::Expiretime
        | Command::Pexpiretime => spec(2, &["readonly", "fast"], (1, 1, 1)),
        Command::Expire | Command::Pexpire | Command::Expireat | Command::Pexpireat => {
            spec(-3, &["write", "fast"], (1, 1, 1))
        }
        Command::Scan => spec(-2, &["readonly"], NO_KEYS),
        Command::Keys => spec(2, &["readonly"], NO_KEYS),
        Command::Dbsize => spec(1, &["readonly", "fast"], NO_KEYS),
        Command::Ping => spec(-1, &["fast"], NO_KEYS),
        Command::Echo => spec(2, &["fast"], NO_KEYS),
        Command::Quit => spec(-1, &["fast", "no_auth"], NO_KEYS),
        Command::Select => spec(2, &["loading", "stale", "fast"], NO_KEYS),
        Command::Hello => spec(-1, &["loading", "stale", "fast", "no_auth"], NO_KEYS),
        Command::Auth => spec(-2, ANYTIME, NO_KEYS),
        Command::Client => spec(-2, &["loading", "stale"], NO_KEYS),
        Command::Introspect => spec(-1, &["loading", "stale"], NO_KEYS),
        Command::Info => spec(-1, &["loading", "stale"], NO_KEYS),
        Command::Config => spec(-2, &["admin", "noscript", "loading", "stale"], NO_KEYS),
        Command::Consistency => spec(-1, &["fast"], NO_KEYS),
        Command::Time => spec(1, &["loading", "stale", "fast"], NO_KEYS),
        Command::Role => spec(1, &["noscript", "loading", "stale", "fast"], NO_KEYS),
        Command::Reset => spec(1, ANYTIME, NO_KEYS),
        Command::Multi | Command::Discard | Command::Unwatch => spec(
            1,
            &["noscript", "loading", "stale", "fast", "allow_busy"],
            NO_KEYS,
        ),
        Command::Exec => spec(
            1,
            &["noscript", "loading", "stale", "skip_slowlog"],
            NO_KEYS,
        ),
        Command::Watch => spec(
            -2,
            &["noscript", "loading", "stale", "fast", "allow_busy"],
            (1, -1, 1),
        ),
    }
}

/// Arguments `command` takes, its name included; negative: at least that many.
pub(crate) fn arity(command: Command) -> i64 {
    spec(command).arity
}

/// One command's `COMMAND INFO` entry: name, arity, flags, first key, last
/// key, step, then ACL categories, tips, key specs and subcommands (empty).
fn info(name: &str, command: Command) -> Reply {
    let Spec { arity, flags, keys } = spec(command);
    Reply::Array(vec![
        Reply::bulk(name),
        Reply::Integer(arity),
        Reply::Array(flags.iter().map(|&f| Reply::Simple(f)).collect()),
        Reply::Integer(keys.0),
        Reply::Integer(keys.1),
        Reply::Integer(keys.2),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
    ])
}

/// `COMMAND [COUNT | LIST | INFO name... | DOCS name... | GETKEYS command
/// arg...]`.
pub(crate) fn command(args: &[&[u8]]) -> Reply {
    let Some((subcommand, rest)) = args[1..].split_first() else {
        return Reply::Array(
            Command::all()
                .map(|(name, command)| info(name, command))
                .collect(),
        );
    };
    match (subcommand.to_ascii_lowercase().as_slice(), rest) {
        (b"count", []) => Reply::Integer(Command::all().count() as i64),
        (b"list", []) => Reply::Array(Command::all().map(|(name, _)| Reply::bulk(name)).collect()),
        (b"info", []) => command(&args[..1]),
        (b"info", names) => Reply::Array(
            names
                .iter()
                .map(|name| match Command::lookup(name) {
                    Some(command) => info(&String::from_utf8_lossy(name).to_lowercase(), command),
                    None => Reply::Bulk(None),
                })
                .collect(),
        ),
        // Documentation is optional for clients (redis-cli uses it for
        // hints): none is given.
        (b"docs", _) => Reply::Map(Vec::new()),
        (b"getkeys", [name, ..]) => getkeys(name, &rest[1..]),
        _ => Reply::err(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try COMMAND HELP.",
            String::from_utf8_lossy(subcommand)
        )),
    }
}

/// `COMMAND GETKEYS`: the keys among a command's arguments.
fn getkeys(name: &[u8], command_args: &[&[u8]]) -> Reply {
    let Some(command) = Command::lookup(name) else {
        return Reply::err("ERR Invalid command specified");
    };
    let Spec { arity, keys, .. } = spec(command);
    let argc = command_args.len() as i64 + 1;
    if (arity >= 0 && argc != arity) || argc < arity.abs() {
        return Reply::err("ERR Invalid number of arguments specified for command");
    }
    let (first, last, step) = keys;
    if step == 0 {
        return Reply::err("ERR The command has no key arguments");
    }
    let last = if last < 0 { argc + last } else { last };
    Reply::Array(
        (first..=last)
            .step_by(step as usize)
            .map(|i| Reply::bulk(command_args[i as usize - 1]))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulks(reply: Reply) -> Vec<Vec<u8>> {
        let Reply::Array(items) = reply else {
            panic!("not an array: {reply:?}");
        };
        items
            .into_iter()
            .map(|item| match item {
                Reply::Bulk(Some(bytes)) => bytes,
                other => panic!("not a string: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn getkeys_finds_the_keys_of_each_shape() {
        let keys = |args: &[&[u8]]| bulks(command(args));
        assert_eq!(keys(&[b"COMMAND", b"GETKEYS", b"get", b"k"]), vec![b"k"]);
        assert_eq!(
            keys(&[b"command", b"getkeys", b"MSET", b"a", b"1", b"b", b"2"]),
            vec![b"a", b"b"]
        );
        assert_eq!(
            keys(&[b"command", b"getkeys", b"del", b"a", b"b", b"c"]),
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
        assert_eq!(
            keys(&[b"command", b"getkeys", b"set", b"k", b"v", b"EX", b"5"]),
            vec![b"k"]
        );
        for (args, error) in [
            (
                &[b"command" as &[u8], b"getkeys", b"get"][..],
                "Invalid number",
            ),
            (
                &[b"command", b"getkeys", b"get", b"a", b"b"],
                "Invalid number",
            ),
            (&[b"command", b"getkeys", b"ping"], "no key arguments"),
            (&[b"command", b"getkeys", b"nope", b"k"], "Invalid command"),
        ] {
            let reply = command(args);
            assert!(
                matches!(&reply, Reply::Error(e) if e.contains(error)),
                "{args:?}: {reply:?}"
            );
        }
    }

    #[test]
    fn info_answers_each_name_in_order_and_null_for_unknown_ones() {
        let Reply::Array(entries) = command(&[b"COMMAND", b"INFO", b"GET", b"nope", b"mset"])
        else {
            panic!("not an array");
        };
        assert_eq!(entries.len(), 3);
        let Reply::Array(get) = &entries[0] else {
            panic!("not an entry: {:?}", entries[0]);
        };
        assert_eq!(get[0], Reply::bulk("get"));
        assert_eq!(get[1], Reply::Integer(2));
        assert_eq!(entries[1], Reply::Bulk(None));
        let Reply::Array(mset) = &entries[2] else {
            panic!("not an entry");
        };
        assert_eq!(
            &mset[3..6],
            &[Reply::Integer(1), Reply::Integer(-1), Reply::Integer(2)]
        );
        let Reply::Integer(count) = command(&[b"command", b"count"]) else {
            panic!("not a count");
        };
        assert_eq!(bulks(command(&[b"command", b"list"])).len() as i64, count);
        let Reply::Array(all) = command(&[b"command"]) else {
            panic!("not an array");
        };
        assert_eq!(all.len() as i64, count);
    }
}
