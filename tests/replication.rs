//! The replication connection and the SQL connection against a real Postgres: login with each
//! password method, TLS modes, IDENTIFY_SYSTEM, a slot streaming pgoutput, standby status
//! updates moving the slot, and a clean finish.

use std::time::{Duration, SystemTime};

use walhook::model::Lsn;
use walhook::source::{
    connect_sql, connect_sql_url, AuthFailure, ConnectError, ConnectSpec, OpenError, PgTimestamp,
    ReplicationClient, ReplicationError, ReplicationMessage, StandbyStatusUpdate, TlsError,
};

use crate::support::{Server, TestDb};

fn spec(url: &str) -> ConnectSpec {
    url.parse().unwrap()
}

async fn query_lsn(client: &tokio_postgres::Client, sql: &str) -> Option<Lsn> {
    let text: Option<String> = client.query_one(sql, &[]).await.unwrap().get(0);
    text.map(|t| t.parse().unwrap())
}

/// Polls `check` every 50 ms until it holds, for at most 10 s.
async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn identify_system_reports_the_current_wal_position() {
    // GIVEN a database and the WAL position before connecting
    let db = TestDb::new().await;
    let sql = db.client().await;
    let before = query_lsn(&sql, "SELECT pg_current_wal_lsn()::text")
        .await
        .unwrap();
    let system_id: String = sql
        .query_one(
            "SELECT system_identifier::text FROM pg_control_system()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // WHEN a replication connection identifies the system
    let mut repl = ReplicationClient::connect(&spec(&db.url())).await.unwrap();
    let id = repl.identify_system().await.unwrap();
    let after = query_lsn(&sql, "SELECT pg_current_wal_lsn()::text")
        .await
        .unwrap();
    // THEN it names this cluster and database, and a WAL position between the two readings
    assert_eq!(id.system_id, system_id);
    assert_eq!(id.dbname.as_deref(), Some(db.name()));
    assert_eq!(id.timeline, 1);
    assert!(
        before <= id.xlogpos && id.xlogpos <= after,
        "{before} <= {} <= {after}",
        id.xlogpos
    );
    let server_version: String = sql
        .query_one("SHOW server_version_num", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(repl.server_version_num().to_string(), server_version);
    // AND the session settings walhook relies on for pgoutput's text are in force
    let settings = repl
        .simple_query("SELECT current_setting('TimeZone'), current_setting('DateStyle'), current_setting('IntervalStyle'), current_setting('extra_float_digits')")
        .await
        .unwrap();
    let expected = ["UTC", "ISO, MDY", "postgres", "1"].map(|s| Some(s.to_string()));
    assert_eq!(settings, vec![expected.to_vec()]);
    repl.close().await.unwrap();
}

#[tokio::test]
async fn streams_inserts_confirms_progress_and_finishes_cleanly() {
    // GIVEN a table in a publication, a slot created by walhook, and two inserts after it
    let db = TestDb::new().await;
    let sql = db.client().await;
    let (slot, publication) = (db.name().to_string(), format!("{}_pub", db.name()));
    sql.batch_execute(&format!(
        "CREATE TABLE items (id int PRIMARY KEY, name text);
         CREATE PUBLICATION {publication} FOR TABLE items;"
    ))
    .await
    .unwrap();
    let mut repl = ReplicationClient::connect(&spec(&db.url())).await.unwrap();
    let consistent_point = repl.create_slot(&slot).await.unwrap();
    sql.batch_execute("INSERT INTO items VALUES (1, 'alpha'), (2, 'beta')")
        .await
        .unwrap();
    sql.batch_execute("SELECT pg_logical_emit_message(true, 'walhook-test', 'hello')")
        .await
        .unwrap();
    let after_inserts = query_lsn(&sql, "SELECT pg_current_wal_lsn()::text")
        .await
        .unwrap();
    assert!(consistent_point < after_inserts);
    let pid = repl.backend_pid();
    // (pgoutput sends logical messages from Postgres 14 on.)
    let with_messages = repl.server_version_num() >= 140_000;

    // WHEN it streams the slot
    let mut stream = repl
        .start_replication(&slot, &publication, Lsn(0))
        .await
        .unwrap();
    let mut tags = Vec::new();
    let mut inserts = Vec::new();
    let mut message = None;
    while tags.last() != Some(&b'C') || (with_messages && message.is_none()) {
        let payload = tokio::time::timeout(Duration::from_secs(10), stream.recv())
            .await
            .expect("no data from the slot")
            .unwrap()
            .expect("the server ended the stream");
        let ReplicationMessage::XLogData(x) = ReplicationMessage::decode(&payload).unwrap() else {
            continue;
        };
        tags.push(x.data[0]);
        match x.data[0] {
            b'I' => inserts.push(x.data.to_vec()),
            b'M' => message = Some(x.data.to_vec()),
            _ => {}
        }
    }

    // THEN the transactions arrive as pgoutput: begin, relation, two inserts, commit; then
    // the message's own transaction
    let want: &[u8] = if with_messages { b"BRIICBMC" } else { b"BRIIC" };
    assert_eq!(tags, want, "tags: {:?}", String::from_utf8_lossy(&tags));
    for (insert, text) in inserts.iter().zip(["alpha", "beta"]) {
        // 'I', relation id, 'N' (new tuple), 2 columns
        assert_eq!((insert[5], &insert[6..8]), (b'N', &[0, 2][..]));
        assert!(
            insert.windows(text.len()).any(|w| w == text.as_bytes()),
            "{text} not in {insert:?}"
        );
    }
    // AND logical messages are on (Postgres 14+; before, pgoutput has none)
    if with_messages {
        let message = message.unwrap();
        assert!(
            message.ends_with(b"walhook-test\0\0\0\0\x05hello"),
            "{message:?}"
        );
    } else {
        assert_eq!(message, None);
    }
    let active_pid: Option<i32> = sql
        .query_one(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(active_pid, Some(pid));

    // WHEN walhook confirms everything up to after the inserts
    let update = StandbyStatusUpdate {
        write: after_inserts,
        flush: after_inserts,
        apply: after_inserts,
        client_time: PgTimestamp::from_system_time(SystemTime::now()),
        reply_requested: false,
    };
    stream.send_status(&update).await.unwrap();
    // THEN the slot's confirmed position moves exactly there
    let confirmed_sql = format!(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = '{slot}'"
    );
    wait_until("the slot confirms the status update", || async {
        query_lsn(&sql, &confirmed_sql).await == Some(after_inserts)
    })
    .await;

    // WHEN the stream is finished
    stream.finish().await.unwrap();
    // THEN the slot is released
    wait_until("the slot is inactive", || async {
        let active: bool = sql
            .query_one(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .unwrap()
            .get(0);
        !active
    })
    .await;
    sql.execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .unwrap();
}

#[tokio::test]
async fn starting_a_missing_slot_is_a_server_error_with_advice() {
    let db = TestDb::new().await;
    let repl = ReplicationClient::connect(&spec(&db.url())).await.unwrap();
    let err = repl
        .start_replication("no_such_slot", "no_such_pub", Lsn(0))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Some("42704"), "{err}");
    assert!(err.to_string().contains("walhook setup"), "{err}");
}

/// Creates (or resets) a login role with REPLICATION and `password` hashed per `encryption`.
async fn password_role(sql: &tokio_postgres::Client, role: &str, encryption: &str, password: &str) {
    // Roles are cluster-wide; concurrent tests may race to create the shared one.
    sql.batch_execute(&format!(
        "SET password_encryption = '{encryption}';
         DO $$ BEGIN CREATE ROLE {role};
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
         ALTER ROLE {role} LOGIN REPLICATION PASSWORD '{password}';"
    ))
    .await
    .unwrap();
    let stored: String = sql
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&role],
        )
        .await
        .unwrap()
        .get(0);
    let prefix = if encryption == "md5" {
        "md5"
    } else {
        "SCRAM-SHA-256$"
    };
    assert!(
        stored.starts_with(prefix),
        "{role}'s password is stored as {stored:.14}"
    );
}

#[tokio::test]
async fn scram_md5_and_cleartext_passwords_log_in_and_wrong_ones_do_not() {
    // GIVEN a SCRAM role and an MD5 role (pg_hba: md5, which does SCRAM for SCRAM-stored
    // passwords), and the support's cleartext_user (pg_hba: password)
    let db = TestDb::new().await;
    let sql = db.client().await;
    let server = Server::get();
    let scram = format!("{}_scram", db.name());
    let md5 = format!("{}_md5", db.name());
    password_role(&sql, &scram, "scram-sha-256", "pw-scram").await;
    password_role(&sql, &md5, "md5", "pw-md5").await;
    password_role(&sql, "cleartext_user", "scram-sha-256", "pw-cleartext").await;

    for (role, password) in [
        (&*scram, "pw-scram"),
        (&*md5, "pw-md5"),
        ("cleartext_user", "pw-cleartext"),
    ] {
        // WHEN each logs in with its password, on both connections
        let url = server.url_for(role, password, db.name());
        let mut repl = ReplicationClient::connect(&spec(&url))
            .await
            .unwrap_or_else(|e| panic!("{role}: {e}"));
        let client = connect_sql(&spec(&url))
            .await
            .unwrap_or_else(|e| panic!("{role}: {e}"));
        // THEN both sessions are that user's
        let rows = repl.simple_query("SELECT current_user").await.unwrap();
        assert_eq!(rows, vec![vec![Some(role.to_string())]]);
        let user: String = client
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(user, role);
        // AND the SQL session runs in UTC
        let tz: String = client.query_one("SHOW TimeZone", &[]).await.unwrap().get(0);
        assert_eq!(tz, "UTC");
        repl.close().await.unwrap();

        // WHEN the password is wrong
        let bad = server.url_for(role, "wrong", db.name());
        let err = ReplicationClient::connect(&spec(&bad)).await.err().unwrap();
        // THEN both fail as authentication errors that say what to fix
        match &err {
            ReplicationError::Auth {
                user,
                source: AuthFailure::Rejected { code, .. },
                ..
            } => {
                assert_eq!((user.as_str(), code.as_str()), (role, "28P01"));
            }
            other => panic!("{role}: {other:?}"),
        }
        assert!(err
            .to_string()
            .contains("check the user and password in source.url"));
        let err = connect_sql(&spec(&bad)).await.err().unwrap();
        assert!(matches!(err, ConnectError::Auth { .. }), "{role}: {err:?}");
        assert!(
            err.to_string()
                .contains("check the user and password in source.url"),
            "{err}"
        );
    }

    // WHEN no password is given at all
    let url = format!(
        "postgres://{scram}@{}:{}/{}?sslmode=disable",
        server.host(),
        server.port(),
        db.name()
    );
    let err = ReplicationClient::connect(&spec(&url)).await.err().unwrap();
    assert!(
        matches!(
            err,
            ReplicationError::Auth {
                source: AuthFailure::PasswordMissing,
                ..
            }
        ),
        "{err:?}"
    );
    sql.batch_execute(&format!("DROP ROLE {scram}; DROP ROLE {md5};"))
        .await
        .unwrap();
}

/// Whether the server sees the session with backend `pid` as TLS.
async fn uses_tls(sql: &tokio_postgres::Client, pid: i32) -> bool {
    sql.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = $1", &[&pid])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn tls_modes_encrypt_and_verify_as_libpq_does() {
    let server = Server::get();
    let Some(ca) = server.ca_cert() else {
        eprintln!("skipped: the test server has no TLS (external server?)");
        return;
    };
    let db = TestDb::new().await;
    let sql = db.client().await;
    let base = |host: &str, mode: &str| {
        format!(
            "postgres://postgres:{}@{host}:{}/{}?sslmode={mode}&sslrootcert={}",
            crate::support::SUPERUSER_PASSWORD,
            server.port(),
            db.name(),
            ca.display()
        )
    };
    // The server's certificate names localhost and 127.0.0.1, signed by the test CA.
    for (host, mode, tls) in [
        ("127.0.0.1", "disable", false),
        ("127.0.0.1", "prefer", true),
        ("127.0.0.1", "require", true),
        ("127.0.0.1", "verify-ca", true),
        ("localhost", "verify-full", true),
        ("127.0.0.1", "verify-full", true),
    ] {
        let url = base(host, mode);
        let repl = ReplicationClient::connect(&spec(&url))
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert_eq!(
            uses_tls(&sql, repl.backend_pid()).await,
            tls,
            "replication, {mode}"
        );
        let client = connect_sql(&spec(&url))
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        let pid: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(uses_tls(&sql, pid).await, tls, "sql, {mode}");
        repl.close().await.unwrap();
    }
    // Without the test CA (the public web roots), verification must fail.
    let url =
        base("127.0.0.1", "verify-full").replace(&format!("&sslrootcert={}", ca.display()), "");
    match ReplicationClient::connect(&spec(&url)).await.err().unwrap() {
        ReplicationError::Open(OpenError::Tls {
            source: TlsError::Handshake { .. },
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    match connect_sql(&spec(&url)).await.err().unwrap() {
        ConnectError::Open(OpenError::Tls {
            source: TlsError::Handshake { .. },
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn connects_over_the_unix_socket() {
    let server = Server::get();
    let Some(socket_dir) = server
        .data_dir()
        .and_then(|d| d.parent().map(|p| p.to_path_buf()))
    else {
        eprintln!("skipped: external server");
        return;
    };
    let db = TestDb::new().await;
    let encoded: String = socket_dir.display().to_string().replace('/', "%2F");
    let url = format!(
        "postgres://postgres@{encoded}:{}/{}",
        server.port(),
        db.name()
    );
    let mut repl = ReplicationClient::connect(&spec(&url)).await.unwrap();
    assert_eq!(
        repl.identify_system().await.unwrap().dbname.as_deref(),
        Some(db.name())
    );
    repl.close().await.unwrap();
    let client = connect_sql(&spec(&url)).await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn unreachable_servers_and_missing_databases_say_what_to_fix() {
    let db = TestDb::new().await;
    let server = Server::get();
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = connect_sql_url(&format!("postgres://u@127.0.0.1:{port}/db"))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, ConnectError::Open(OpenError::Io { .. })),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("could not reach Postgres at 127.0.0.1:{port}; is Postgres running at 127.0.0.1:{port}?")
    );
    let url = format!(
        "postgres://postgres:{}@{}:{}/{}_missing?sslmode=disable",
        crate::support::SUPERUSER_PASSWORD,
        server.host(),
        server.port(),
        db.name()
    );
    let err = ReplicationClient::connect(&spec(&url)).await.err().unwrap();
    assert_eq!(err.code(), Some("3D000"), "{err}");
    assert!(
        err.to_string()
            .contains("check the database name in source.url"),
        "{err}"
    );
    let err = connect_sql(&spec(&url)).await.err().unwrap();
    assert!(
        err.to_string()
            .contains("check the database name in source.url"),
        "{err}"
    );
}
