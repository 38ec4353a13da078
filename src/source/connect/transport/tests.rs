//! The TLS modes against an in-process server that answers the SSLRequest and then speaks
//! TLS with certificates made by `openssl` for each test run.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::super::{ConnectSpec, Endpoint, Host, SslMode};
use super::{open, OpenError, TlsError};

/// CA `ca` signed `other.crt` (names only `other.example`) and `local.crt` (names `localhost`
/// and 127.0.0.1); CA `stranger` signed nothing the server uses.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn make() -> Certs {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("walhook-tls-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        let script = format!(
            "set -e
             for ca in ca stranger; do
               openssl req -x509 {ec} -days 2 -subj /CN=$ca -keyout $ca.key -out $ca.crt
             done
             leaf() {{
               openssl req {ec} -subj /CN=$1 -keyout $2.key -out $2.csr
               printf \"subjectAltName=$3\" > $2.ext
               openssl x509 -req -in $2.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
                 -extfile $2.ext -out $2.crt
             }}
             leaf other.example other DNS:other.example
             leaf localhost local DNS:localhost,IP:127.0.0.1
             echo 'not a certificate' > garbage.pem"
        );
        let out = Command::new("sh")
            .args(["-c", &script])
            .current_dir(&dir)
            .output()
            .expect("openssl is needed for the TLS tests");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Certs { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn server_config(&self, leaf: &str) -> Arc<rustls::ServerConfig> {
        let chain = CertificateDer::pem_file_iter(self.path(&format!("{leaf}.crt")))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(self.path(&format!("{leaf}.key"))).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Arc::new(config)
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How the fake server answers the SSLRequest.
#[derive(Clone, Copy)]
enum Answer {
    /// `S`, then a TLS handshake with this leaf certificate.
    Tls(&'static str),
    /// `S`, then hang up.
    TlsThenHangUp,
    Byte(u8),
    Silence,
}

/// Serves connections until the test ends; returns its port. Each connection's first 8
/// bytes must be an SSLRequest, except after a hang-up (the prefer fallback reconnects plain).
async fn fake_server(certs: &Certs, answer: Answer) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = match answer {
        Answer::Tls(leaf) => Some(certs.server_config(leaf)),
        _ => None,
    };
    tokio::spawn(async move {
        let mut hung_up = false;
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            if hung_up {
                // The plain retry: keep it open, send nothing.
                tokio::spawn(async move {
                    let mut sink = Vec::new();
                    let _ = socket.read_to_end(&mut sink).await;
                });
                continue;
            }
            let mut request = [0; 8];
            socket.read_exact(&mut request).await.unwrap();
            assert_eq!(
                request,
                [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f],
                "not an SSLRequest"
            );
            match answer {
                Answer::Tls(_) => {
                    socket.write_all(b"S").await.unwrap();
                    let acceptor = tokio_rustls::TlsAcceptor::from(config.clone().unwrap());
                    tokio::spawn(async move {
                        if let Ok(mut tls) = acceptor.accept(socket).await {
                            let _ = tls.write_all(b"hello").await;
                            let _ = tls.flush().await;
                            let mut sink = Vec::new();
                            let _ = tls.read_to_end(&mut sink).await;
                        }
                    });
                }
                Answer::TlsThenHangUp => {
                    socket.write_all(b"S").await.unwrap();
                    hung_up = true;
                }
                Answer::Byte(b) => socket.write_all(&[b]).await.unwrap(),
                Answer::Silence => {
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        drop(socket);
                    });
                }
            }
        }
    });
    port
}

fn spec(host: &str, port: u16, sslmode: SslMode, root: Option<PathBuf>) -> ConnectSpec {
    ConnectSpec {
        hosts: vec![Endpoint {
            host: Host::Tcp(host.into()),
            port,
        }],
        user: "u".into(),
        password: None,
        dbname: "d".into(),
        sslmode,
        sslrootcert: root,
        application_name: "walhook".into(),
        connect_timeout: None,
    }
}

#[derive(Debug, PartialEq)]
enum Session {
    Tls,
    Plain,
}

/// Opens and, for TLS, reads the server's greeting through the session.
async fn try_open(spec: &ConnectSpec) -> Result<Session, OpenError> {
    let (mut stream, _) = open(spec).await?;
    if !stream.is_tls() {
        return Ok(Session::Plain);
    }
    let mut hello = [0; 5];
    stream.read_exact(&mut hello).await.unwrap();
    assert_eq!(&hello, b"hello");
    Ok(Session::Tls)
}

fn handshake_error(result: Result<Session, OpenError>) -> String {
    match result {
        Err(OpenError::Tls {
            source: source @ TlsError::Handshake { .. },
            ..
        }) => source.to_string(),
        other => panic!("expected a handshake error, got {other:?}"),
    }
}

#[tokio::test]
async fn verify_full_checks_chain_and_name_verify_ca_only_the_chain() {
    let certs = Certs::make();
    let other = fake_server(&certs, Answer::Tls("other")).await;
    let local = fake_server(&certs, Answer::Tls("local")).await;
    let ca = Some(certs.path("ca.crt"));
    let stranger = Some(certs.path("stranger.crt"));

    // The certificate names other.example, not 127.0.0.1.
    let err =
        handshake_error(try_open(&spec("127.0.0.1", other, SslMode::VerifyFull, ca.clone())).await);
    assert!(err.contains("does not name this host"), "{err}");
    assert_eq!(
        try_open(&spec("127.0.0.1", other, SslMode::VerifyCa, ca.clone()))
            .await
            .unwrap(),
        Session::Tls
    );
    // By name and by IP address when the certificate lists them.
    assert_eq!(
        try_open(&spec("localhost", local, SslMode::VerifyFull, ca.clone()))
            .await
            .unwrap(),
        Session::Tls
    );
    assert_eq!(
        try_open(&spec("127.0.0.1", local, SslMode::VerifyFull, ca.clone()))
            .await
            .unwrap(),
        Session::Tls
    );
    // A CA that did not sign it, or the public web roots, must not be trusted.
    for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
        let err =
            handshake_error(try_open(&spec("127.0.0.1", other, mode, stranger.clone())).await);
        assert!(err.contains("not signed by a trusted CA"), "{err}");
        let err = handshake_error(try_open(&spec("localhost", local, mode, None)).await);
        assert!(err.contains("not signed by a trusted CA"), "{err}");
    }
}

#[tokio::test]
async fn require_encrypts_without_checking_unless_given_a_root_cert() {
    let certs = Certs::make();
    let port = fake_server(&certs, Answer::Tls("other")).await;
    assert_eq!(
        try_open(&spec("127.0.0.1", port, SslMode::Require, None))
            .await
            .unwrap(),
        Session::Tls
    );
    assert_eq!(
        try_open(&spec("127.0.0.1", port, SslMode::Prefer, None))
            .await
            .unwrap(),
        Session::Tls
    );
    // As libpq: require with an sslrootcert file verifies the chain.
    let stranger = Some(certs.path("stranger.crt"));
    handshake_error(try_open(&spec("127.0.0.1", port, SslMode::Require, stranger)).await);
    let ca = Some(certs.path("ca.crt"));
    assert_eq!(
        try_open(&spec("127.0.0.1", port, SslMode::Require, ca))
            .await
            .unwrap(),
        Session::Tls
    );
}

#[tokio::test]
async fn a_server_without_tls_is_fine_for_prefer_and_an_error_for_require() {
    let certs = Certs::make();
    let port = fake_server(&certs, Answer::Byte(b'N')).await;
    assert_eq!(
        try_open(&spec("127.0.0.1", port, SslMode::Prefer, None))
            .await
            .unwrap(),
        Session::Plain
    );
    for mode in [SslMode::Require, SslMode::VerifyCa, SslMode::VerifyFull] {
        match try_open(&spec("127.0.0.1", port, mode, None)).await {
            Err(OpenError::Tls {
                source: TlsError::NotSupported { mode: m },
                ..
            }) => assert_eq!(m, mode),
            other => panic!("{mode}: {other:?}"),
        }
    }
    let odd = fake_server(&certs, Answer::Byte(b'E')).await;
    match try_open(&spec("127.0.0.1", odd, SslMode::Require, None)).await {
        Err(OpenError::Tls {
            source: TlsError::BadAnswer { byte: b'E' },
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn prefer_falls_back_to_plain_when_the_handshake_fails() {
    let certs = Certs::make();
    let port = fake_server(&certs, Answer::TlsThenHangUp).await;
    assert_eq!(
        try_open(&spec("127.0.0.1", port, SslMode::Prefer, None))
            .await
            .unwrap(),
        Session::Plain
    );
}

#[tokio::test]
async fn disable_sends_no_ssl_request() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stream, _) = open(&spec("127.0.0.1", port, SslMode::Disable, None))
        .await
        .unwrap();
    assert!(!stream.is_tls());
    drop(stream);
    let (mut socket, _) = listener.accept().await.unwrap();
    let mut sent = Vec::new();
    socket.read_to_end(&mut sent).await.unwrap();
    assert_eq!(sent, b"");
}

#[tokio::test]
async fn unreadable_or_empty_root_certs_are_named() {
    let certs = Certs::make();
    let missing = certs.path("missing.pem");
    let garbage = certs.path("garbage.pem");
    match open(&spec(
        "127.0.0.1",
        1,
        SslMode::VerifyCa,
        Some(missing.clone()),
    ))
    .await
    {
        Err(OpenError::Tls {
            source: TlsError::ReadRootCert { path, .. },
            ..
        }) => assert_eq!(path, missing),
        other => panic!("{other:?}"),
    }
    match open(&spec(
        "127.0.0.1",
        1,
        SslMode::VerifyFull,
        Some(garbage.clone()),
    ))
    .await
    {
        Err(OpenError::Tls {
            source: TlsError::BadRootCert { path },
            ..
        }) => assert_eq!(path, garbage),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn refused_and_silent_servers_give_io_errors_and_later_hosts_are_tried() {
    // A port nobody listens on: bind, note it, close.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    match open(&spec("127.0.0.1", closed, SslMode::Disable, None)).await {
        Err(OpenError::Io { addr, source }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused);
            assert_eq!(addr, format!("127.0.0.1:{closed}"));
        }
        other => panic!("{other:?}"),
    }
    let certs = Certs::make();
    let silent = fake_server(&certs, Answer::Silence).await;
    let mut slow = spec("127.0.0.1", silent, SslMode::Require, None);
    slow.connect_timeout = Some(Duration::from_secs(1));
    match open(&slow).await {
        Err(OpenError::Io { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::TimedOut)
        }
        other => panic!("{other:?}"),
    }
    // The first host refuses, the second answers.
    let good = fake_server(&certs, Answer::Tls("local")).await;
    let mut two = spec("127.0.0.1", closed, SslMode::Require, None);
    two.hosts.push(Endpoint {
        host: Host::Tcp("127.0.0.1".into()),
        port: good,
    });
    let (_, addr) = open(&two).await.unwrap();
    assert_eq!(addr, format!("127.0.0.1:{good}"));
}

#[cfg(unix)]
#[tokio::test]
async fn unix_sockets_never_use_tls() {
    let certs = Certs::make();
    let listener = tokio::net::UnixListener::bind(certs.path(".s.PGSQL.6001")).unwrap();
    let mut unix = spec("unused", 6001, SslMode::VerifyFull, None);
    unix.hosts[0].host = Host::Unix(certs.dir.clone());
    let (stream, addr) = open(&unix).await.unwrap();
    assert!(!stream.is_tls());
    assert_eq!(addr, certs.path(".s.PGSQL.6001").display().to_string());
    drop(listener);
}
