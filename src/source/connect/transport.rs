//! Opening the socket to Postgres and negotiating TLS, the same way for the SQL and the
//! replication connection: TCP or a Unix socket, then (TCP only) an SSLRequest per sslmode and
//! a rustls handshake that checks the certificate as much as sslmode asks.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, InvalidDnsNameError, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
#[cfg(unix)]
use tokio::net::UnixStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tracing::debug;

use super::{io_advice, ConnectSpec, Endpoint, Host, SslMode};

/// Why TLS could not be set up. Each message names what to change.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("could not read sslrootcert `{path}`; check the path in source.url")]
    ReadRootCert {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("sslrootcert `{path}` holds no usable CA certificate; it must be a PEM file with `-----BEGIN CERTIFICATE-----` blocks")]
    BadRootCert { path: PathBuf },
    #[error("the server does not accept TLS, but sslmode={mode} requires it; enable ssl on the server, or set sslmode=prefer or disable in source.url")]
    NotSupported { mode: SslMode },
    #[error("the server answered the TLS request with byte {byte:#04x} instead of `S` or `N`; is this port a Postgres server?")]
    BadAnswer { byte: u8 },
    #[error("`{host}` cannot be used as a TLS server name; use a DNS name or an IP address")]
    ServerName {
        host: String,
        #[source]
        source: InvalidDnsNameError,
    },
    #[error("could not set up TLS")]
    Config {
        #[source]
        source: rustls::Error,
    },
    #[error("the TLS handshake failed{}", handshake_advice(.source))]
    Handshake {
        #[source]
        source: io::Error,
    },
}

/// What can go wrong before the first Postgres message: the socket or TLS. The SQL and the
/// replication connection both open through [`open`] and pass this on as it is.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("could not reach Postgres at {addr}{}", io_advice(.source, .addr))]
    Io {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("TLS with Postgres at {addr} failed")]
    Tls {
        addr: String,
        #[source]
        source: TlsError,
    },
}

fn handshake_advice(err: &io::Error) -> &'static str {
    let rustls_err = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    match rustls_err {
        Some(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => "; the server's certificate does not name this host: connect by a name the certificate lists, or use sslmode=verify-ca",
        Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
            "; the server's certificate is not signed by a trusted CA: set sslrootcert in source.url to the CA's PEM file"
        }
        Some(rustls::Error::InvalidCertificate(_)) => {
            "; the server's certificate is not acceptable (expired, or not for TLS servers?)"
        }
        _ => "",
    }
}

/// A connected socket to Postgres, encrypted or not.
pub(crate) enum PgStream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    #[cfg(unix)]
    Unix(UnixStream),
}

impl std::fmt::Debug for PgStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PgStream::Tcp(_) => "PgStream::Tcp",
            PgStream::Tls(_) => "PgStream::Tls",
            #[cfg(unix)]
            PgStream::Unix(_) => "PgStream::Unix",
        })
    }
}

impl PgStream {
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, PgStream::Tls(_))
    }
}

/// Opens a connection to the first of `spec.hosts` that answers, negotiating TLS per sslmode.
/// Returns the stream and the address it reached, for messages.
pub(crate) async fn open(spec: &ConnectSpec) -> Result<(PgStream, String), OpenError> {
    let tls = tls_config(spec).map_err(|source| OpenError::Tls {
        addr: spec.addresses(),
        source,
    })?;
    let mut last = OpenError::Io {
        addr: spec.addresses(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "source.url names no host"),
    };
    for endpoint in &spec.hosts {
        let attempt = open_one(endpoint, spec.sslmode, tls.as_ref());
        let result = match spec.connect_timeout {
            Some(limit) => tokio::time::timeout(limit, attempt)
                .await
                .unwrap_or_else(|_| Err(timed_out(endpoint))),
            None => attempt.await,
        };
        match result {
            Ok(stream) => return Ok((stream, endpoint.to_string())),
            Err(err) => {
                debug!(addr = %endpoint, error = %err, "could not open a connection; trying the next host");
                last = err;
            }
        }
    }
    Err(last)
}

fn timed_out(endpoint: &Endpoint) -> OpenError {
    OpenError::Io {
        addr: endpoint.to_string(),
        source: io::Error::new(io::ErrorKind::TimedOut, "connect_timeout expired"),
    }
}

async fn open_one(
    endpoint: &Endpoint,
    mode: SslMode,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<PgStream, OpenError> {
    let addr = endpoint.to_string();
    let io_err = |source| OpenError::Io {
        addr: addr.clone(),
        source,
    };
    let tls_err = |source| OpenError::Tls {
        addr: addr.clone(),
        source,
    };
    let name = match &endpoint.host {
        #[cfg(unix)]
        Host::Unix(dir) => {
            let path = dir.join(format!(".s.PGSQL.{}", endpoint.port));
            return Ok(PgStream::Unix(
                UnixStream::connect(path).await.map_err(io_err)?,
            ));
        }
        #[cfg(not(unix))]
        Host::Unix(_) => {
            let unsupported = io::Error::new(io::ErrorKind::Unsupported, "no Unix sockets here");
            return Err(io_err(unsupported));
        }
        Host::Tcp(name) => name,
    };
    let connect = || async {
        let tcp = TcpStream::connect((name.as_str(), endpoint.port))
            .await
            .map_err(io_err)?;
        // Status updates are tiny and latency matters more than packet count.
        tcp.set_nodelay(true).map_err(io_err)?;
        Ok::<_, OpenError>(tcp)
    };
    let Some(config) = tls else {
        return Ok(PgStream::Tcp(connect().await?));
    };
    let mut tcp = connect().await?;
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    tcp.write_all(&request).await.map_err(io_err)?;
    // Exactly one byte: anything the server sent after it would be outside the TLS session.
    let answer = tcp.read_u8().await.map_err(io_err)?;
    match answer {
        b'S' => {}
        b'N' if mode == SslMode::Prefer => return Ok(PgStream::Tcp(tcp)),
        b'N' => return Err(tls_err(TlsError::NotSupported { mode })),
        byte => return Err(tls_err(TlsError::BadAnswer { byte })),
    }
    let server_name = ServerName::try_from(name.clone()).map_err(|source| {
        tls_err(TlsError::ServerName {
            host: name.clone(),
            source,
        })
    })?;
    match TlsConnector::from(Arc::clone(config))
        .connect(server_name, tcp)
        .await
    {
        Ok(stream) => Ok(PgStream::Tls(Box::new(stream))),
        // As libpq does: prefer means plain is acceptable, so try again without TLS.
        Err(err) if mode == SslMode::Prefer => {
            debug!(addr = %addr, error = %err, "TLS handshake failed; sslmode=prefer, so retrying without TLS");
            Ok(PgStream::Tcp(connect().await?))
        }
        Err(source) => Err(tls_err(TlsError::Handshake { source })),
    }
}

/// The rustls configuration for `spec.sslmode`; `None` when TLS is off.
fn tls_config(spec: &ConnectSpec) -> Result<Option<Arc<ClientConfig>>, TlsError> {
    let root_file = spec
        .sslrootcert
        .as_deref()
        .filter(|p| *p != Path::new("system"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match (spec.sslmode, root_file) {
        (SslMode::Disable, _) => return Ok(None),
        (SslMode::Prefer, _) | (SslMode::Require, None) => Arc::new(AcceptAnyCertificate {
            provider: Arc::clone(&provider),
        }),
        (SslMode::Require | SslMode::VerifyCa, _) => Arc::new(ChainOnly {
            webpki: webpki_verifier(root_file, &provider)?,
        }),
        (SslMode::VerifyFull, _) => webpki_verifier(root_file, &provider)?,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Config { source })?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // Postgres 17 requires this ALPN for direct TLS and checks it when sent; older servers
    // ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Some(Arc::new(config)))
}

fn webpki_verifier(
    root_file: Option<&Path>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    match root_file {
        Some(path) => {
            let bad = || TlsError::BadRootCert {
                path: path.to_path_buf(),
            };
            let pem = std::fs::read(path).map_err(|source| TlsError::ReadRootCert {
                path: path.to_path_buf(),
                source,
            })?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                roots.add(cert.map_err(|_| bad())?).map_err(|_| bad())?;
            }
            if roots.is_empty() {
                return Err(bad());
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
        .build()
        .map_err(|_| TlsError::BadRootCert {
            path: root_file.map(Path::to_path_buf).unwrap_or_default(),
        })
}

/// sslmode=prefer and require: encryption without authentication of the server, as libpq.
/// The handshake signatures are still checked, so the session is bound to the presented key.
#[derive(Debug)]
struct AcceptAnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// sslmode=verify-ca: the chain must verify, the host name need not match. rustls's verifier
/// checks the chain before the name, so a name-only failure means the chain was good.
#[derive(Debug)]
struct ChainOnly {
    webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
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
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

impl AsyncRead for PgStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            #[cfg(unix)]
            PgStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PgStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PgStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            #[cfg(unix)]
            PgStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            #[cfg(unix)]
            PgStream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            #[cfg(unix)]
            PgStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests;
