//! Networking: the transport seam (real TCP or a simulated network), the
//! multiplexed client [`Connection`], the native protocol's server, the
//! shared send buffer both ends write through ([`outbox`]), the client
//! connection limit (`max_clients`), closing refused connections
//! ([`linger`]), and the Redis port's TLS ([`tls`]).

mod connection;
mod connection_limit;
mod linger;
mod outbox;
mod server;
#[cfg(feature = "simulation")]
mod sim;
mod tls;
mod transport;

pub use connection::{Connection, ResponseSlot};

/// Both ends read through a buffer this size: frames up to it often arrive
/// many to one syscall.
pub(crate) const READ_BUFFER_BYTES: usize = 64 * 1024;
pub(crate) use connection_limit::{Admitted, ConnectionLimit};
pub(crate) use linger::{close_draining, refuse_and_close};
pub(crate) use server::accept_loop;
pub use server::{Caller, Handler};
pub(crate) use server::{ServerConfig, serve};
#[cfg(feature = "simulation")]
pub use sim::Sim;
pub(crate) use tls::accept as tls_accept;
pub use tls::{TlsClient, TlsFiles};
pub use transport::{Tcp, Transport};

/// A `host:port` as a user writes it, by address or by name (resolved
/// now, an IPv4 address first, as nodes listen on 127.0.0.1 by default):
/// for command-line flags.
pub fn parse_host_port(text: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<_> = text
        .to_socket_addrs()
        .map_err(|e| format!("{text:?} is not a reachable host:port ({e})"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}
