//! Networking: the transport seam (real TCP or a simulated network), the
//! multiplexed client [`Connection`] and the request [`server`](serve).

mod connection;
mod server;
#[cfg(feature = "simulation")]
mod sim;
mod transport;

pub use connection::Connection;
pub(crate) use server::accept_loop;
pub use server::{Caller, Handler, ServerConfig, serve};
#[cfg(feature = "simulation")]
pub use sim::Sim;
pub use transport::{Tcp, Transport};
