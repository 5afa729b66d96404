//! TLS for the Redis-protocol port: the certificate chain and private key a
//! node serves (PEM files, as Redis's `tls-cert-file` and `tls-key-file`),
//! loaded once at start with rustls's safe defaults (TLS 1.2 and 1.3; no
//! client certificates), and the server side of each connection's
//! handshake, bounded in time. A client that speaks plain text to a TLS
//! port is answered in plain text, so it learns why.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;

use super::linger::refuse_and_close;
use crate::error::{Error, Result};

/// A client has this long to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a node's certificate chain and private key are (`[tls]` in the
/// config file, `--tls-cert-file` and `--tls-key-file`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM: the node's certificate first, then any intermediates.
    pub cert_file: PathBuf,
    /// PEM: the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

impl TlsFiles {
    /// Reads both files and checks that they make a usable server
    /// identity, as a node does at start: the error names the file and
    /// what is wrong with it (`cassio-node --check-config`).
    pub fn check(&self) -> Result<()> {
        self.load().map(drop)
    }

    /// The server side of TLS with these files, or why they make none.
    pub(crate) fn load(&self) -> Result<Arc<ServerConfig>> {
        let certs = read_certs(&self.cert_file)?;
        let key = read_key(&self.key_file)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::InvalidConfig(format!("TLS set-up: {e}")))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| {
                Error::InvalidConfig(format!(
                    "TLS certificate {} and key {} do not make a server identity: {e}",
                    self.cert_file.display(),
                    self.key_file.display()
                ))
            })?;
        Ok(Arc::new(config))
    }
}

/// The server side of a TLS handshake on `stream`, within
/// [`HANDSHAKE_TIMEOUT`]; `None` if the client closed before it began, or
/// spoke plain text: a client whose first byte starts no TLS handshake
/// record is sent `plain_refusal`, in plain text, and closed. The error
/// says why a handshake failed.
pub(crate) async fn accept<S>(
    mut stream: S,
    config: Arc<ServerConfig>,
    plain_refusal: &[u8],
) -> std::result::Result<Option<TlsStream<Replayed<S>>>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, stream.read(&mut first)).await {
        Ok(Ok(1)) => {}
        // A port check (connect, close): nothing to say.
        Ok(Ok(_)) => return Ok(None),
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err(format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}")),
    }
    if first[0] != HANDSHAKE_RECORD {
        tracing::debug!("a plain-text client on the TLS port: told so, closed");
        refuse_and_close(&mut stream, plain_refusal).await;
        return Ok(None);
    }
    let stream = Replayed {
        first: Some(first[0]),
        inner: stream,
    };
    match tokio::time::timeout_at(deadline, TlsAcceptor::from(config).accept(stream)).await {
        Ok(Ok(stream)) => Ok(Some(stream)),
        Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
        Err(_) => Err(format!(
            "TLS handshake not done within {HANDSHAKE_TIMEOUT:?}"
        )),
    }
}

/// The first byte of every TLS connection: a handshake record's type.
const HANDSHAKE_RECORD: u8 = 0x16;

/// A stream whose first byte was read to tell TLS from plain text, and is
/// read again, first, by the handshake.
pub(crate) struct Replayed<S> {
    first: Option<u8>,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Replayed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() > 0
            && let Some(byte) = self.first.take()
        {
            buf.put_slice(&[byte]);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replayed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, data)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn tls_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::InvalidConfig(format!("TLS file {}: {e}", path.display()))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| tls_error(path, format!("not a PEM certificate chain ({e})")))?;
    if certs.is_empty() {
        return Err(tls_error(
            path,
            "holds no certificate (expected -----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| {
        tls_error(
            path,
            format!("holds no private key in PEM (PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })
}
