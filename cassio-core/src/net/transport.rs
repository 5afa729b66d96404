//! The transport seam: how a node binds, accepts and connects. Production
//! uses [`Tcp`] (tokio); simulation tests use turmoil's in-memory network
//! (`Sim`, feature `simulation`). Everything above this trait (connections,
//! the server, gossip) cannot tell which one it runs on.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};

pub trait Transport: Clone + Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    type Listener: Send + Sync + 'static;

    fn bind(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>> + Send;
    fn local_addr(&self, listener: &Self::Listener) -> io::Result<SocketAddr>;
    fn accept(
        &self,
        listener: &Self::Listener,
    ) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;
    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send;

    /// Detaches an accepted stream from this runtime so another runtime can
    /// serve it: `Ok` for a real socket, `Err` (the stream back) where that
    /// cannot be done (a simulated network).
    fn detach(stream: Self::Stream) -> Result<io::Result<std::net::TcpStream>, Self::Stream> {
        Err(stream)
    }
}

/// Real TCP through tokio.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tcp;

impl Transport for Tcp {
    type Stream = tokio::net::TcpStream;
    type Listener = tokio::net::TcpListener;

    async fn bind(&self, addr: SocketAddr) -> io::Result<Self::Listener> {
        tokio::net::TcpListener::bind(addr).await
    }

    fn local_addr(&self, listener: &Self::Listener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    fn detach(stream: Self::Stream) -> Result<io::Result<std::net::TcpStream>, Self::Stream> {
        Ok(stream.into_std())
    }

    async fn accept(&self, listener: &Self::Listener) -> io::Result<(Self::Stream, SocketAddr)> {
        let (stream, addr) = listener.accept().await?;
        stream.set_nodelay(true)?;
        Ok((stream, addr))
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<Self::Stream> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}
