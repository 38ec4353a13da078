//! The protocol client against a scripted server on a Unix socket: what it sends, how it
//! reads answers that arrive in pieces, and that bad server bytes give errors, not panics.
//! The real-Postgres tests (SCRAM, pgoutput, slots) are in `tests/replication.rs`.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use postgres_protocol::authentication::md5_hash;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use super::*;
use crate::source::connect::{Endpoint, Host, SslMode};

/// A server socket in a fresh directory, and a spec that points at it.
struct FakeServer {
    dir: PathBuf,
    listener: UnixListener,
}

impl FakeServer {
    fn new() -> FakeServer {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("walhook-repl-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let listener = UnixListener::bind(dir.join(".s.PGSQL.5432")).unwrap();
        FakeServer { dir, listener }
    }

    fn spec(&self, password: Option<&str>) -> ConnectSpec {
        ConnectSpec {
            hosts: vec![Endpoint {
                host: Host::Unix(self.dir.clone()),
                port: 5432,
            }],
            user: "walhook".into(),
            password: password.map(str::to_string),
            dbname: "app".into(),
            sslmode: SslMode::Require,
            sslrootcert: None,
            application_name: "wh-test".into(),
            connect_timeout: None,
        }
    }

    /// Accepts one connection and runs `script` on it in the background.
    fn serve<F, Fut>(self, script: F) -> tokio::task::JoinHandle<()>
    where
        F: FnOnce(Peer) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        tokio::spawn(async move {
            let (socket, _) = self.listener.accept().await.unwrap();
            script(Peer(socket)).await;
            let _ = std::fs::remove_dir_all(&self.dir);
        })
    }
}

/// The server's side of one connection.
struct Peer(UnixStream);

impl Peer {
    /// The startup message's parameters.
    async fn startup(&mut self) -> Vec<(String, String)> {
        let len = self.0.read_i32().await.unwrap() as usize;
        let mut body = vec![0; len - 4];
        self.0.read_exact(&mut body).await.unwrap();
        assert_eq!(&body[..4], &[0, 3, 0, 0], "protocol 3.0");
        let strings: Vec<String> = body[4..]
            .split(|b| *b == 0)
            .map(|s| String::from_utf8(s.to_vec()).unwrap())
            .collect();
        strings
            .chunks(2)
            .filter(|kv| kv.len() == 2 && !kv[0].is_empty())
            .map(|kv| (kv[0].clone(), kv[1].clone()))
            .collect()
    }

    /// One tagged message from the client.
    async fn recv(&mut self) -> (u8, Vec<u8>) {
        let tag = self.0.read_u8().await.unwrap();
        let len = self.0.read_i32().await.unwrap() as usize;
        let mut body = vec![0; len - 4];
        self.0.read_exact(&mut body).await.unwrap();
        (tag, body)
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).await.unwrap();
    }

    /// ParameterStatus, BackendKeyData and ReadyForQuery, as after a login.
    async fn ready(&mut self, version: &str) {
        let mut out = auth(0, b"");
        out.extend(msg(b'S', &[cstr("server_version"), cstr(version)].concat()));
        out.extend(msg(b'K', &[0, 0, 0x30, 0x39, 1, 2, 3, 4]));
        out.extend(msg(b'Z', b"I"));
        self.send(&out).await;
    }
}

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(((body.len() + 4) as i32).to_be_bytes());
    out.extend(body);
    out
}

fn cstr(s: &str) -> Vec<u8> {
    [s.as_bytes(), b"\0"].concat()
}

fn auth(code: i32, extra: &[u8]) -> Vec<u8> {
    msg(b'R', &[&code.to_be_bytes()[..], extra].concat())
}

fn error_response(code: &str, message: &str, hint: Option<&str>) -> Vec<u8> {
    let mut body = [
        &b"SERROR\0C"[..],
        &cstr(code),
        b"M",
        &cstr(message),
        b"Dthe detail\0",
    ]
    .concat();
    if let Some(h) = hint {
        body.extend([&b"H"[..], &cstr(h)].concat());
    }
    body.push(0);
    msg(b'E', &body)
}

fn data_row(values: &[Option<&str>]) -> Vec<u8> {
    let mut body = (values.len() as i16).to_be_bytes().to_vec();
    for v in values {
        match v {
            Some(v) => {
                body.extend((v.len() as i32).to_be_bytes());
                body.extend(v.as_bytes());
            }
            None => body.extend((-1i32).to_be_bytes()),
        }
    }
    msg(b'D', &body)
}

#[test]
fn reads_server_versions_like_postgres_does() {
    for (text, num) in [
        ("15.4 (Debian 15.4-1.pgdg120+1)", 150_004),
        ("12.0", 120_000),
        ("16beta1", 160_000),
        ("14devel", 140_000),
        ("9.6.3", 90_603),
        ("", 0),
    ] {
        assert_eq!(parse_server_version(text), num, "{text}");
    }
}

#[test]
fn quotes_names_and_literals() {
    assert_eq!(quote_ident("walhook"), r#""walhook""#);
    assert_eq!(quote_ident(r#"we"ird"#), r#""we""ird""#);
    assert_eq!(quote_literal(&quote_ident("it's")), r#"'"it''s"'"#);
}

#[tokio::test]
async fn logs_in_with_md5_and_sends_the_session_settings() {
    let server = FakeServer::new();
    let spec = server.spec(Some("secret"));
    let done = server.serve(|mut peer| async move {
        let params = peer.startup().await;
        let expected: Vec<(String, String)> = [
            ("user", "walhook"),
            ("database", "app"),
            ("replication", "database"),
            ("application_name", "wh-test"),
            ("client_encoding", "UTF8"),
            ("TimeZone", "UTC"),
            ("DateStyle", "ISO, MDY"),
            ("IntervalStyle", "postgres"),
            ("extra_float_digits", "1"),
            ("bytea_output", "hex"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(params, expected);
        peer.send(&auth(5, &[1, 2, 3, 4])).await;
        let (tag, body) = peer.recv().await;
        assert_eq!(tag, b'p');
        let hash = md5_hash(b"walhook", b"secret", [1, 2, 3, 4]);
        assert_eq!(body, cstr(&hash));
        peer.ready("13.11").await;
        let (tag, body) = peer.recv().await;
        assert_eq!((tag, body), (b'X', vec![]));
    });
    let client = ReplicationClient::connect(&spec).await.unwrap();
    assert_eq!(client.server_version_num(), 130_011);
    assert_eq!(client.backend_pid(), 12345);
    client.close().await.unwrap();
    done.await.unwrap();
}

#[tokio::test]
async fn cleartext_password_and_missing_password() {
    let server = FakeServer::new();
    let spec = server.spec(Some("pw"));
    let done = server.serve(|mut peer| async move {
        peer.startup().await;
        peer.send(&auth(3, b"")).await;
        assert_eq!(peer.recv().await, (b'p', cstr("pw")));
        peer.ready("15.1").await;
    });
    ReplicationClient::connect(&spec).await.unwrap();
    done.await.unwrap();

    let server = FakeServer::new();
    let spec = server.spec(None);
    let done = server.serve(|mut peer| async move {
        peer.startup().await;
        peer.send(&auth(3, b"")).await;
    });
    let err = ReplicationClient::connect(&spec).await.err().unwrap();
    assert!(
        matches!(&err, ReplicationError::Auth { source: AuthFailure::PasswordMissing, user, .. } if user == "walhook"),
        "{err:?}"
    );
    done.await.unwrap();
}

#[tokio::test]
async fn a_rejected_password_and_unsupported_methods_are_auth_errors() {
    let server = FakeServer::new();
    let spec = server.spec(Some("wrong"));
    let done = server.serve(|mut peer| async move {
        peer.startup().await;
        peer.send(&auth(3, b"")).await;
        peer.recv().await;
        let e = error_response(
            "28P01",
            "password authentication failed for user \"walhook\"",
            None,
        );
        peer.send(&e).await;
    });
    let err = ReplicationClient::connect(&spec).await.err().unwrap();
    assert_eq!(err.code(), Some("28P01"));
    let text = err.to_string();
    assert!(
        text.contains("check the user and password in source.url"),
        "{text}"
    );
    done.await.unwrap();

    let server = FakeServer::new();
    let spec = server.spec(Some("pw"));
    let done = server.serve(|mut peer| async move {
        peer.startup().await;
        peer.send(&auth(7, b"")).await;
    });
    let err = ReplicationClient::connect(&spec).await.err().unwrap();
    assert!(
        matches!(
            err,
            ReplicationError::Auth {
                source: AuthFailure::Unsupported { method: "GSSAPI" },
                ..
            }
        ),
        "{err:?}"
    );
    done.await.unwrap();
}

#[tokio::test]
async fn runs_commands_and_stays_usable_after_a_server_error() {
    let server = FakeServer::new();
    let spec = server.spec(None);
    let done = server.serve(|mut peer| async move {
        peer.startup().await;
        peer.ready("15.4").await;
        assert_eq!(peer.recv().await, (b'Q', cstr("IDENTIFY_SYSTEM")));
        let mut out = msg(b'T', &[0, 0]);
        out.extend(data_row(&[
            Some("7312345678901234567"),
            Some("1"),
            Some("0/16B3748"),
            Some("app"),
        ]));
        out.extend(msg(b'C', &cstr("IDENTIFY_SYSTEM")));
        out.extend(msg(b'Z', b"I"));
        peer.send(&out).await;
        let (_, query) = peer.recv().await;
        assert_eq!(
            query,
            cstr(r#"CREATE_REPLICATION_SLOT "s""x" LOGICAL pgoutput NOEXPORT_SNAPSHOT"#)
        );
        let mut out = error_response(
            "42710",
            "replication slot \"s\"\"x\" already exists",
            Some("drop it"),
        );
        out.extend(msg(b'Z', b"I"));
        peer.send(&out).await;
        peer.recv().await;
        let mut out = data_row(&[None, Some("")]);
        out.extend(msg(b'C', &cstr("SELECT 1")));
        out.extend(msg(b'Z', b"I"));
        peer.send(&out).await;
    });
    let mut client = ReplicationClient::connect(&spec).await.unwrap();
    let id = client.identify_system().await.unwrap();
    assert_eq!(
        id,
        SystemIdentity {
            system_id: "7312345678901234567".into(),
            timeline: 1,
            xlogpos: Lsn(0x16B_3748),
            dbname: Some("app".into()),
        }
    );
    let err = client.create_slot(r#"s"x"#).await.unwrap_err();
    assert_eq!(err.code(), Some("42710"));
    assert_eq!(
        err.to_string(),
        r#"replication slot "s""x" already exists (SQLSTATE 42710); the detail; hint: drop it; it already exists"#
    );
    let rows = client.simple_query("SELECT NULL, ''").await.unwrap();
    assert_eq!(rows, vec![vec![None, Some(String::new())]]);
    done.await.unwrap();
}

#[tokio::test]
async fn streams_copy_data_arriving_in_pieces_and_recv_survives_cancellation() {
    let server = FakeServer::new();
    let spec = server.spec(None);
    let (go_on, mut wait) = tokio::sync::mpsc::channel::<()>(1);
    let done = server.serve(|mut peer| async move {
        peer.startup().await;
        peer.ready("14.9").await;
        let (tag, query) = peer.recv().await;
        assert_eq!(tag, b'Q');
        assert_eq!(
            String::from_utf8(query).unwrap(),
            "START_REPLICATION SLOT \"slot\" LOGICAL 16/B374D848 (proto_version '1', \
             publication_names '\"pub\"', messages 'true')\0"
        );
        peer.send(&msg(b'W', &[0, 0, 0])).await;
        // One CopyData split mid-header and mid-body, then a whole one.
        let first = msg(b'd', b"wfirst payload");
        peer.send(&first[..3]).await;
        wait.recv().await;
        peer.send(&first[3..8]).await;
        wait.recv().await;
        let mut rest = first[8..].to_vec();
        rest.extend(msg(b'd', b"k"));
        peer.send(&rest).await;
        // The client's CopyData, sent while its recv was pending and then cancelled.
        assert_eq!(peer.recv().await, (b'd', b"r-status".to_vec()));
        // finish(): CopyDone, then data still in flight, then the server's end.
        assert_eq!(peer.recv().await, (b'c', vec![]));
        let mut out = msg(b'd', b"late");
        out.extend(msg(b'c', b""));
        out.extend(msg(b'C', &cstr("COPY 0")));
        out.extend(msg(b'C', &cstr("START_STREAMING")));
        out.extend(msg(b'Z', b"I"));
        peer.send(&out).await;
        assert_eq!(peer.recv().await, (b'X', vec![]));
    });
    let client = ReplicationClient::connect(&spec).await.unwrap();
    let mut stream = client
        .start_replication("slot", "pub", Lsn(0x16_B374_D848))
        .await
        .unwrap();
    for _ in 0..2 {
        tokio::select! {
            got = stream.recv() => panic!("a partial message was returned: {got:?}"),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        go_on.send(()).await.unwrap();
    }
    stream.send_copy_data(b"r-status").await.unwrap();
    assert_eq!(
        stream.recv().await.unwrap().unwrap(),
        &b"wfirst payload"[..]
    );
    assert_eq!(stream.recv().await.unwrap().unwrap(), &b"k"[..]);
    stream.finish().await.unwrap();
    done.await.unwrap();
}

#[tokio::test]
async fn omits_the_messages_option_before_postgres_14_and_reports_start_errors() {
    let server = FakeServer::new();
    let spec = server.spec(None);
    let done = server.serve(|mut peer| async move {
        peer.startup().await;
        peer.ready("13.2").await;
        let (_, query) = peer.recv().await;
        assert_eq!(
            String::from_utf8(query).unwrap(),
            "START_REPLICATION SLOT \"s\" LOGICAL 0/0 (proto_version '1', publication_names '\"p\"')\0"
        );
        let mut out = error_response("42704", "replication slot \"s\" does not exist", None);
        out.extend(msg(b'Z', b"I"));
        peer.send(&out).await;
    });
    let client = ReplicationClient::connect(&spec).await.unwrap();
    let err = client
        .start_replication("s", "p", Lsn(0))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Some("42704"));
    assert!(err.to_string().contains("run `walhook setup`"), "{err}");
    done.await.unwrap();
}

#[tokio::test]
async fn a_server_error_or_hang_up_mid_stream_is_an_error() {
    for (ending, check) in [
        (
            error_response(
                "57P01",
                "terminating connection due to administrator command",
                None,
            ),
            (|e: &ReplicationError| e.code() == Some("57P01")) as fn(&ReplicationError) -> bool,
        ),
        (
            msg(b'd', b"cut short")[..6].to_vec(),
            |e: &ReplicationError| matches!(e, ReplicationError::Io { source, .. } if source.kind() == io::ErrorKind::UnexpectedEof),
        ),
    ] {
        let server = FakeServer::new();
        let spec = server.spec(None);
        let done = server.serve(|mut peer| async move {
            peer.startup().await;
            peer.ready("15.0").await;
            peer.recv().await;
            peer.send(&msg(b'W', &[0, 0, 0])).await;
            peer.send(&ending).await;
        });
        let client = ReplicationClient::connect(&spec).await.unwrap();
        let mut stream = client.start_replication("s", "p", Lsn(0)).await.unwrap();
        let err = stream.recv().await.unwrap_err();
        assert!(check(&err), "{err:?}");
        done.await.unwrap();
    }
}

/// Feeds `bytes` as the server's whole answer to the startup message.
async fn connect_against(bytes: Vec<u8>) -> Result<ReplicationClient, ReplicationError> {
    let server = FakeServer::new();
    let spec = server.spec(Some("pw"));
    let done = server.serve(|mut peer| async move {
        peer.startup().await;
        let _ = peer.0.write_all(&bytes).await;
    });
    let result = ReplicationClient::connect(&spec).await;
    done.await.unwrap();
    result
}

#[tokio::test]
async fn malformed_server_bytes_give_protocol_errors() {
    let cases: Vec<Vec<u8>> = vec![
        vec![b'R', 0, 0, 0, 3],                                  // length below 4
        vec![b'R', 0x7f, 0xff, 0xff, 0xff],                      // 2 GiB message
        vec![b'R', 0xff, 0xff, 0xff, 0xff],                      // negative length
        msg(b'?', b""),                                          // unknown tag
        msg(b'R', &[0, 0, 0]),                                   // truncated auth code
        msg(b'R', &[0, 0, 0, 99]),                               // unknown auth code
        auth(11, b"x"),                                          // SASLContinue before SASL
        [auth(0, b""), msg(b'D', &[0, 1, 0, 0, 0, 9])].concat(), // DataRow at startup
        [auth(0, b""), msg(b'E', b"Cbad")].concat(),             // unterminated error fields
    ];
    for bytes in cases {
        match connect_against(bytes.clone()).await {
            Err(ReplicationError::Protocol { .. }) => {}
            other => panic!("{bytes:?}: {:?}", other.err()),
        }
    }
}

#[tokio::test]
async fn random_server_bytes_never_panic() {
    // xorshift: deterministic, so a failure reproduces.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let valid = [
        auth(0, b""),
        auth(5, &[1, 2, 3, 4]),
        msg(b'S', b"server_version\x0015\x00"),
        msg(b'K', &[0; 8]),
        error_response("XX000", "x", Some("h")),
        msg(b'Z', b"I"),
    ]
    .concat();
    for _ in 0..200 {
        let mut bytes = valid.clone();
        for _ in 0..(next() % 4 + 1) {
            let i = (next() as usize) % bytes.len();
            bytes[i] = next() as u8;
        }
        bytes.truncate((next() as usize) % (bytes.len() + 1));
        // Any outcome but a panic (or a hang) is fine.
        let _ = tokio::time::timeout(Duration::from_secs(5), connect_against(bytes))
            .await
            .expect("the client hung on garbage");
    }
}
