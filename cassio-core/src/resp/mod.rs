//! The Redis-protocol (RESP2) endpoint, so redis-cli, redis-benchmark and
//! Redis client libraries work against any node: [`parse`] (RESP arrays and
//! inline commands), [`reply`], [`commands`] (each through the coordinator
//! at the connection's consistency level), [`pipeline`] (which pipelined
//! commands may run at once) and the listener ([`server`]).

mod commands;
mod parse;
mod pipeline;
mod reply;
pub(crate) mod server;
