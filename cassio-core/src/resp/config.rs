//! `CONFIG GET pattern [pattern ...]`: the node's settings under the names
//! Redis gives them, for the tools that ask (redis-benchmark asks for
//! `save` and `appendonly` when it starts, monitoring tools for
//! `maxclients` and `maxmemory`). A node's settings are fixed when it
//! starts, so CONFIG SET, REWRITE and RESETSTAT are refused with a
//! sentence. The password is never shown.

use std::net::SocketAddr;

use super::commands::arity_error;
use super::glob;
use super::reply::Reply;
use crate::node::NodeConfig;
use crate::storage::SyncMode;

/// The Redis parameters a node answers for, with its values.
fn parameters(config: &NodeConfig, resp: Option<SocketAddr>) -> Vec<(&'static str, String)> {
    let appendfsync = match config.storage.sync_mode {
        SyncMode::Batch => "always",
        SyncMode::Periodic => "everysec",
    };
    vec![
        // Every write goes to the commit log first.
        ("appendonly", "yes".into()),
        ("appendfsync", appendfsync.into()),
        // No snapshots: the log and the tables are the data.
        ("save", String::new()),
        ("databases", "1".into()),
        ("maxclients", config.max_clients.to_string()),
        // Nothing is evicted; memory is bounded by the memtable's size.
        ("maxmemory", "0".into()),
        ("maxmemory-policy", "noeviction".into()),
        ("timeout", "0".into()),
        ("proto-max-bulk-len", config.frame_bytes_max.to_string()),
        ("port", resp.map_or(0, |a| a.port()).to_string()),
        ("bind", resp.map_or(String::new(), |a| a.ip().to_string())),
        ("dir", data_dir(config)),
        ("cluster-enabled", "no".into()),
    ]
}

/// The data directory as an absolute path, as Redis gives `dir`.
fn data_dir(config: &NodeConfig) -> String {
    let dir = config.data_dir();
    std::path::absolute(&dir)
        .unwrap_or(dir)
        .display()
        .to_string()
}

/// `CONFIG ...`: GET answers; the rest is refused.
pub(crate) fn config(config: &NodeConfig, resp: Option<SocketAddr>, args: &[&[u8]]) -> Reply {
    let Some(subcommand) = args.get(1) else {
        return arity_error("config");
    };
    let name = String::from_utf8_lossy(subcommand).to_ascii_lowercase();
    match name.as_str() {
        "get" if args.len() < 3 => arity_error("config|get"),
        "get" => get(&parameters(config, resp), &args[2..]),
        "set" | "rewrite" | "resetstat" => Reply::err(format!(
            "ERR CONFIG {} is not supported: a cassio node's settings are fixed when it starts (flags, CASSIO_* variables, its config file)",
            name.to_ascii_uppercase()
        )),
        _ => Reply::err(format!(
            "ERR unknown subcommand '{}'. Try CONFIG GET.",
            String::from_utf8_lossy(subcommand)
        )),
    }
}

/// Every parameter a pattern matches (in any letter case), once, in table
/// order.
fn get(parameters: &[(&'static str, String)], patterns: &[&[u8]]) -> Reply {
    let patterns: Vec<Vec<u8>> = patterns.iter().map(|p| p.to_ascii_lowercase()).collect();
    let pairs = parameters
        .iter()
        .filter(|(name, _)| patterns.iter().any(|p| glob::matches(p, name.as_bytes())))
        .map(|(name, value)| (Reply::bulk(*name), Reply::bulk(value.as_bytes())))
        .collect();
    Reply::Map(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(reply: &Reply) -> Vec<String> {
        let Reply::Map(pairs) = reply else {
            panic!("a map: {reply:?}")
        };
        pairs
            .iter()
            .map(|(name, _)| match name {
                Reply::Bulk(Some(name)) => String::from_utf8_lossy(name).into_owned(),
                other => panic!("a name: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn get_answers_every_matching_parameter_once_and_refuses_changes() {
        let node = NodeConfig {
            max_clients: 77,
            ..NodeConfig::default()
        };
        let resp = Some("127.0.0.1:6380".parse().unwrap());
        let answer = |args: &[&str]| {
            let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            config(&node, resp, &args)
        };
        let reply = answer(&["config", "get", "maxclients"]);
        assert_eq!(
            reply,
            Reply::Map(vec![(Reply::bulk("maxclients"), Reply::bulk("77"))])
        );
        assert_eq!(
            names(&answer(&["CONFIG", "GET", "MAX*", "maxclients", "save"])),
            ["save", "maxclients", "maxmemory", "maxmemory-policy"]
        );
        assert_eq!(
            answer(&["config", "get", "port"]),
            Reply::Map(vec![(Reply::bulk("port"), Reply::bulk("6380"))])
        );
        assert!(names(&answer(&["config", "get", "requirepass"])).is_empty());
        assert!(!names(&answer(&["config", "get", "*"])).contains(&"requirepass".into()));

        let refused = |args: &[&str], sentence: &str| match answer(args) {
            Reply::Error(e) => assert!(e.contains(sentence), "{args:?}: {e}"),
            other => panic!("{args:?} must be refused: {other:?}"),
        };
        refused(
            &["config", "set", "maxclients", "5"],
            "CONFIG SET is not supported",
        );
        refused(
            &["config", "get"],
            "wrong number of arguments for 'config|get'",
        );
        refused(&["config"], "wrong number of arguments for 'config'");
        refused(&["config", "bogus"], "unknown subcommand 'bogus'");
    }
}
