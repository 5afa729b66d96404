//! The simulated transport: turmoil's in-memory network, for deterministic
//! multi-node tests (feature `simulation`). A simulated host binds the
//! unspecified address (turmoil's rule) and advertises its own host IP.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::transport::Transport;

#[derive(Clone, Copy, Debug)]
pub struct Sim {
    /// This host's address in the simulation (`turmoil::lookup(name)`).
    pub host_ip: IpAddr,
}

impl Transport for Sim {
    type Stream = turmoil::net::TcpStream;
    type Listener = turmoil::net::TcpListener;

    async fn bind(&self, addr: SocketAddr) -> io::Result<Self::Listener> {
        turmoil::net::TcpListener::bind((IpAddr::from(Ipv4Addr::UNSPECIFIED), addr.port())).await
    }

    fn local_addr(&self, listener: &Self::Listener) -> io::Result<SocketAddr> {
        Ok(SocketAddr::new(self.host_ip, listener.local_addr()?.port()))
    }

    async fn accept(&self, listener: &Self::Listener) -> io::Result<(Self::Stream, SocketAddr)> {
        listener.accept().await
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<Self::Stream> {
        turmoil::net::TcpStream::connect(addr).await
    }
}
