//! The Redis-protocol endpoint (RESP2, and RESP3 after `HELLO 3`), so
//! redis-cli, redis-benchmark and Redis client libraries work against any
//! node: [`parse`] (RESP arrays and inline commands), [`reply`],
//! [`commands`] (data commands, each through the coordinator at the
//! connection's consistency level), [`expiry`] (TTL, EXPIRE and their
//! kin), [`session`] (connection state and the
//! commands answered at once), [`introspect`] (`COMMAND`), [`transaction`]
//! (MULTI/EXEC), [`scan`] (SCAN and KEYS, with [`glob`] patterns),
//! [`pipeline`] (which pipelined commands may run at once) and the listener
//! ([`server`]).

mod commands;
mod config;
mod expiry;
mod glob;
mod introspect;
mod parse;
mod pipeline;
mod reply;
pub(crate) mod scan;
pub(crate) mod server;
mod session;
mod transaction;
