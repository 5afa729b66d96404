//! TLS: the certificate chain and private key a node serves (PEM files, as
//! Redis's `tls-cert-file` and `tls-key-file`), loaded once at start with
//! rustls's safe defaults (TLS 1.2 and 1.3), and the server side of each
//! connection's handshake, bounded in time; a client that speaks plain text
//! to a TLS port is answered in plain text (in its own protocol), so it
//! learns why. The Redis-protocol port speaks TLS with the files and asks
//! for no client certificate; the native port too once the cluster's CA is
//! given (`ca_cert_file`), and then asks for one (a node shows it, a client
//! need not), and nodes and cassio clients connect through [`TlsClient`],
//! which checks a node's certificate against that CA.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio_rustls::client::TlsStream as ClientTlsStream;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::server::danger::ClientCertVerifier;
use tokio_rustls::rustls::{
    self, CertificateError, DigitallySignedStruct, ServerConfig, SignatureScheme,
};
use tokio_rustls::server::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

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
    /// PEM: the CA that signed every node's certificate. Given, the native
    /// port (peers and cassio clients) speaks TLS too; nodes show each other
    /// their certificates, checked against it, and a connection that says
    /// it is a peer without one is refused (clients show none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_cert_file: Option<PathBuf>,
}

/// What a node serves and connects with over TLS, made from [`TlsFiles`]
/// once, at start.
pub(crate) struct TlsSetup {
    /// The Redis port's server side (no client certificates).
    pub(crate) resp: Arc<ServerConfig>,
    /// With the cluster's CA: the native port's server side (a connecting
    /// node shows its certificate, which must chain to the CA; clients show
    /// none) and how this node connects to its peers.
    pub(crate) native: Option<(Arc<ServerConfig>, TlsClient)>,
}

impl TlsFiles {
    /// Reads the files and checks that they make a usable server identity
    /// (one the CA signed, if a CA is given), as a node does at start: the
    /// error names the file and what is wrong with it (`cassio-node
    /// --check-config`).
    pub fn check(&self) -> Result<()> {
        self.load().map(drop)
    }

    /// Everything TLS needs from these files, or why they make none: each
    /// file is read once.
    pub(crate) fn load(&self) -> Result<TlsSetup> {
        let certs = read_certs(&self.cert_file)?;
        let key = read_key(&self.key_file)?;
        let resp = self.server_config(&certs, &key, None)?;
        let native = match &self.ca_cert_file {
            None => None,
            Some(ca) => {
                let server = self.server_config(&certs, &key, Some(peer_verifier(ca, true)?))?;
                Some((server, self.peer_client(ca, certs, key)?))
            }
        };
        Ok(TlsSetup { resp, native })
    }

    /// How this node connects to its peers, showing `certs`, or why it
    /// cannot: its certificate must chain to the CA `ca` for a server and
    /// for a client, since its peers check it both ways.
    fn peer_client(
        &self,
        ca: &Path,
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<TlsClient> {
        let client = TlsClient::with_ca(ca, Some((certs.clone(), key)))?;
        let any_address = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
        let as_client = peer_verifier(ca, false)?;
        client
            .verifier
            .verify_server_cert(&certs[0], &certs[1..], &any_address, &[], UnixTime::now())
            .and_then(|_| as_client.verify_client_cert(&certs[0], &certs[1..], UnixTime::now()))
            .map_err(|e| {
                Error::InvalidConfig(format!(
                    "TLS certificate {} is not one its peers take: {} with the CA {}{}",
                    self.cert_file.display(),
                    e,
                    ca.display(),
                    ca_used_as_node_hint(&e.to_string())
                ))
            })?;
        Ok(client)
    }

    /// A server side showing `certs`, asking connecting `peers` for
    /// certificates if given.
    fn server_config(
        &self,
        certs: &[CertificateDer<'static>],
        key: &PrivateKeyDer<'static>,
        peers: Option<Arc<dyn ClientCertVerifier>>,
    ) -> Result<Arc<ServerConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::InvalidConfig(format!("TLS set-up: {e}")))?;
        let builder = match peers {
            Some(peers) => builder.with_client_cert_verifier(peers),
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(certs.to_vec(), key.clone_key())
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
/// spoke plain text: a client whose first bytes are no TLS record header
/// is sent `plain_refusal`, in plain text, and closed. The error says why
/// a handshake failed.
pub(crate) async fn accept<S>(
    mut stream: S,
    config: Arc<ServerConfig>,
    plain_refusal: &[u8],
) -> std::result::Result<Option<TlsStream<Replayed<S>>>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    let mut head = [0u8; RECORD_HEAD_BYTES];
    let mut got = 0;
    while got < head.len() {
        match tokio::time::timeout_at(deadline, stream.read(&mut head[got..])).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => got += n,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err(format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}")),
        }
    }
    if got == 0 {
        // A port check (connect, close): nothing to say.
        return Ok(None);
    }
    if !is_tls_record_head(&head[..got]) {
        tracing::debug!("a plain-text client on the TLS port: told so, closed");
        refuse_and_close(&mut stream, plain_refusal).await;
        return Ok(None);
    }
    let stream = Replayed {
        head,
        read: 0,
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

/// The client side of TLS to a node's native port: the node's certificate
/// must chain to the cluster's CA. Its names are not checked, since nodes
/// are reached at the addresses they gossip (as Cassandra's internode
/// encryption without endpoint verification): give a CA that signs this
/// cluster's certificates only.
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
    verifier: Arc<ChainToCa>,
    ca_cert_file: PathBuf,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("ca_cert_file", &self.ca_cert_file)
            .finish()
    }
}

impl TlsClient {
    /// Trusts the CA certificates of the PEM file `path` (`--tls-ca-cert-file`).
    pub fn from_ca_cert_file(path: &Path) -> Result<TlsClient> {
        Self::with_ca(path, None)
    }

    /// [`Self::from_ca_cert_file`], showing `identity` (a node's certificate
    /// chain and key) to the nodes it connects to, as peers must.
    fn with_ca(
        path: &Path,
        identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    ) -> Result<TlsClient> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots(path)?), provider.clone())
                .build()
                .map_err(|e| tls_error(path, e))?;
        let verifier = Arc::new(ChainToCa(chain));
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::InvalidConfig(format!("TLS set-up: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone());
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some((certs, key)) => builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| Error::InvalidConfig(format!("TLS client identity: {e}")))?,
        };
        Ok(TlsClient {
            connector: TlsConnector::from(Arc::new(config)),
            verifier,
            ca_cert_file: path.to_path_buf(),
        })
    }

    /// The client side of a TLS handshake with the node at `addr`. What
    /// TLS refused (a certificate, an alert) is [`Error::Tls`], and so is a
    /// close in mid-handshake (most likely a port without TLS); other
    /// failures of the network stay [`Error::Io`].
    pub(crate) async fn connect<S>(&self, addr: SocketAddr, stream: S) -> Result<ClientTlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let name = ServerName::IpAddress(addr.ip().into());
        self.connector.connect(name, stream).await.map_err(|e| {
            let refused_by_tls = e
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
            let hint = if refused_by_tls {
                ca_used_as_node_hint(&e.to_string())
            } else if e.kind() == io::ErrorKind::UnexpectedEof {
                ": the node closed the connection; does its native port speak TLS (every node needs --tls-ca-cert-file)?"
            } else {
                return Error::io(addr.to_string(), e);
            };
            Error::Tls {
                addr: addr.to_string(),
                reason: format!(
                    "{e} (checked against {}){hint}",
                    self.ca_cert_file.display()
                ),
            }
        })
    }
}

/// What to do when a CA certificate is served as a node's (webpki's
/// `CaUsedAsEndEntity`, which rustls only shows in its message).
fn ca_used_as_node_hint(error: &str) -> &'static str {
    if error.contains("CaUsedAsEndEntity") {
        ": that certificate is a CA's (CA:TRUE); give each node a certificate the CA signed"
    } else {
        ""
    }
}

/// Checks a server's certificate chain against the CA, not its names.
#[derive(Debug)]
struct ChainToCa(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainToCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        // The chain is checked first; a name is checked only after it
        // held, so a name error means the chain is good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, signature)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, signature)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A TLS connection starts with a record header: a handshake record's type
/// (0x16), then its version, 3.1 to 3.4. Neither protocol's plain text
/// starts so: a RESP command starts with `*` or a letter, and a native
/// hello with its length, little-endian, whose third byte is 0 for any
/// hello under 64 KiB.
const RECORD_HEAD_BYTES: usize = 3;

fn is_tls_record_head(head: &[u8]) -> bool {
    matches!(head, [0x16, 0x03, 0x01..=0x04])
}

/// A stream whose first bytes were read to tell TLS from plain text, and
/// are read again, first, by the handshake.
pub(crate) struct Replayed<S> {
    head: [u8; RECORD_HEAD_BYTES],
    /// How many of `head` were read again.
    read: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Replayed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.read < RECORD_HEAD_BYTES && buf.remaining() > 0 {
            let rest = &self.head[self.read..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            self.read += n;
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

/// Checks a certificate a connecting node shows against the CA `ca`;
/// `clients_too` lets connections that show none through (clients).
fn peer_verifier(ca: &Path, clients_too: bool) -> Result<Arc<dyn ClientCertVerifier>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider);
    let builder = match clients_too {
        true => builder.allow_unauthenticated(),
        false => builder,
    };
    builder.build().map_err(|e| tls_error(ca, e))
}

/// The CA certificates of the PEM file `path`.
fn roots(path: &Path) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| tls_error(path, format!("not a CA certificate: {e}")))?;
    }
    Ok(roots)
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
