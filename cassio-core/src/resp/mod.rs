//! The Redis-protocol (RESP2) endpoint, so redis-cli, redis-benchmark and
//! Redis client libraries work against any node: [`parse`] (RESP arrays and
//! inline commands), [`reply`], [`commands`] (each through the coordinator
//! at the connection's consistency level) and the listener ([`server`]).

mod commands;
mod parse;
mod reply;
pub(crate) mod server;
