//! Networking: the transport seam (real TCP or a simulated network), the
//! multiplexed client [`Connection`], the request [`server`](serve), and
//! the buffered reads and coalesced writes both use ([`batching`]), and the
//! shared send buffer of a client connection ([`outbox`]).

mod batching;
mod connection;
mod outbox;
mod server;
#[cfg(feature = "simulation")]
mod sim;
mod transport;

pub use connection::{Connection, ResponseSlot};
pub(crate) use server::accept_loop;
pub use server::{Caller, Handler, ServerConfig, serve};
#[cfg(feature = "simulation")]
pub use sim::Sim;
pub use transport::{Tcp, Transport};
