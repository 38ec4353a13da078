//! What only a server gets wrong: a schema the store must refuse, a user without privileges,
//! a database it cannot reach or that restarts, a connection lost in the middle of a call, and
//! writers in two processes at once.

use std::sync::Arc;
use std::time::Duration;

use walhook::model::{Event, Lsn};
use walhook::state::{PendingInsert, PostgresStore, StateError, Store, UnixMillis};

use super::Schema;
use crate::support::{connect, Cluster, Server, SUPERUSER_PASSWORD};

fn event(n: u64, key: &str) -> Event {
    Event {
        id: format!("evt_{n:016X}_0"),
        event_type: "row.changed".to_string(),
        key: format!("public.t:{key}"),
        table: "public.t".to_string(),
        body: format!(r#"{{"n":{n}}}"#),
        commit_lsn: Lsn(0x1_0000_0000 + n),
        commit_time_micros: 1_700_000_000_000_000,
        is_truncate: false,
    }
}

fn held(events: impl IntoIterator<Item = Event>) -> Vec<PendingInsert> {
    events
        .into_iter()
        .map(|e| PendingInsert::held(Arc::new(e), UnixMillis(0)))
        .collect()
}

/// Opens the store in `cluster`'s `postgres` database.
async fn open_in(cluster: &Cluster) -> Result<PostgresStore, StateError> {
    let url = cluster.superuser_url("postgres");
    PostgresStore::open("the test cluster", "walhook", move || {
        let url = url.clone();
        async move { walhook::source::connect_sql_url(&url).await }
    })
    .await
}

#[tokio::test]
async fn a_schema_written_by_a_newer_walhook_is_refused_with_the_fix() {
    // GIVEN a state schema whose version a later walhook set
    let schema = Schema::new().await;
    schema.open().await;
    let client = schema.db.client().await;
    client
        .batch_execute("UPDATE walhook_state.schema_version SET version = 99")
        .await
        .unwrap();
    // WHEN this walhook opens it
    let err = schema
        .open_as(&schema.url())
        .await
        .expect_err("must refuse");
    // THEN it refuses, naming the versions and the fix
    assert!(
        matches!(
            err,
            StateError::PostgresNewerSchema {
                found: 99,
                supported: 3,
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("schema `walhook_state`"), "{text}");
    assert!(
        text.contains("run the newer walhook, or set [state] schema to a new schema"),
        "{text}"
    );
}

#[tokio::test]
async fn a_schema_that_holds_something_else_is_refused() {
    // GIVEN a schema of the configured name holding an application's table
    let schema = Schema::new().await;
    let client = schema.db.client().await;
    client
        .batch_execute("CREATE SCHEMA walhook_state; CREATE TABLE walhook_state.orders (id int)")
        .await
        .unwrap();
    // WHEN walhook opens it THEN it refuses and changes nothing
    let err = schema
        .open_as(&schema.url())
        .await
        .expect_err("must refuse");
    assert!(matches!(err, StateError::PostgresNotOurs { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("set [state] schema to another name"),
        "{err}"
    );
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'walhook_state'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 1);
}

#[tokio::test]
async fn a_user_who_may_not_create_the_schema_is_told_how_and_the_fix_works() {
    // GIVEN a user with no CREATE privilege on the database
    let schema = Schema::new().await;
    let client = schema.db.client().await;
    let user = format!("{}_user", schema.db.name());
    client
        .batch_execute(&format!("CREATE ROLE {user} LOGIN PASSWORD 'pw'"))
        .await
        .unwrap();
    let url = Server::get().url_for(&user, "pw", schema.db.name());
    // WHEN walhook opens the state as that user
    let err = schema.open_as(&url).await.expect_err("must refuse");
    // THEN it says which privilege is missing and how to give it
    assert!(
        matches!(err, StateError::PostgresPrivilege { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(
            "create the schema for it (`CREATE SCHEMA walhook_state AUTHORIZATION <that user>`)"
        ),
        "{text}"
    );
    // AND the fix, run as given, lets it open the state
    client
        .batch_execute(&format!("CREATE SCHEMA walhook_state AUTHORIZATION {user}"))
        .await
        .unwrap();
    let store = schema.open_as(&url).await.expect("open after the fix");
    assert_eq!(store.save_confirmed(Lsn(7)).await.unwrap(), Lsn(7));
    client
        .batch_execute(&format!(
            "DROP SCHEMA walhook_state CASCADE; DROP ROLE {user}"
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_unreachable_database_is_named_with_the_fix() {
    // GIVEN [state] url naming a port nothing listens on
    let schema = Schema::new().await;
    let url = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        format!("postgres://postgres:pw@127.0.0.1:{port}/postgres?sslmode=disable")
    };
    // WHEN walhook opens the state THEN it says it cannot connect and what to check
    let err = schema.open_as(&url).await.expect_err("must fail");
    assert!(
        matches!(err, StateError::PostgresUnreachable { .. }),
        "{err:?}"
    );
    let text = walhook::error_chain(&err);
    assert!(
        text.contains("cannot connect to the state database test database"),
        "{text}"
    );
    assert!(text.contains("in [state] url"), "{text}");
    assert!(text.contains("Connection refused"), "{text}");
}

#[tokio::test]
async fn a_database_that_cannot_store_utf8_is_refused() {
    // GIVEN a LATIN1 database
    let server = Server::get();
    let name = server.unique_name("latin1");
    let admin = connect(&server.superuser_url("postgres")).await;
    admin
        .batch_execute(&format!(
            "CREATE DATABASE {name} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
        ))
        .await
        .unwrap();
    // WHEN walhook opens its state there THEN it refuses before creating anything
    let url = server.superuser_url(&name);
    let err = PostgresStore::open("latin1", "walhook", move || {
        let url = url.clone();
        async move { walhook::source::connect_sql_url(&url).await }
    })
    .await
    .expect_err("must refuse");
    assert!(
        matches!(&err, StateError::PostgresEncoding { encoding, .. } if encoding == "LATIN1"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_connection_lost_in_a_call_fails_that_call_and_the_next_connects_again() {
    // GIVEN a store with an event held, and its connection waiting for the write lock, which
    // another session holds
    let schema = Schema::new().await;
    let store = schema.open().await;
    store
        .store_pending("s", held([event(1, "a")]))
        .await
        .unwrap();
    let mut locker = schema.db.client().await;
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute("SELECT pg_advisory_xact_lock(x'57484B53'::int, hashtext('walhook_state'))")
        .await
        .unwrap();
    let writing = tokio::spawn({
        let store = store.clone();
        async move { store.save_confirmed(Lsn(5)).await }
    });
    let admin = schema.db.client().await;
    let pid = wait_for_lock_waiter(&admin, schema.db.name()).await;
    // WHEN its session is terminated
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    // THEN that call fails with the connection lost, and changed nothing
    let err = writing.await.unwrap().expect_err("must fail");
    assert!(matches!(err, StateError::PostgresLost { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("walhook connects again at the next call"),
        "{err}"
    );
    tx.rollback().await.unwrap();
    // AND the next call connects again and finds what was stored before
    assert_eq!(store.confirmed().await.unwrap(), None);
    let due = store.due("s", UnixMillis(0), 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(store.save_confirmed(Lsn(5)).await.unwrap(), Lsn(5));
}

/// The pid of the session waiting for an advisory lock in database `db`.
async fn wait_for_lock_waiter(client: &tokio_postgres::Client, db: &str) -> i32 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let row = client
            .query_opt(
                "SELECT a.pid FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
                 WHERE a.datname = $1 AND l.locktype = 'advisory' AND NOT l.granted",
                &[&db],
            )
            .await
            .unwrap();
        if let Some(row) = row {
            return row.get(0);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the store never waited for the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_database_fails_calls_while_down_and_loses_nothing() {
    // GIVEN a store in a cluster of the test's own, holding events
    let cluster = Cluster::start("");
    let store = open_in(&cluster).await.expect("open");
    store
        .store_pending("s", held((1..=3).map(|n| event(n, "a"))))
        .await
        .unwrap();
    // WHEN the server stops
    cluster.stop();
    // THEN calls fail, saying the database cannot be reached or the connection was lost
    let err = store
        .store_pending("s", held([event(4, "a")]))
        .await
        .expect_err("must fail while the server is down");
    assert!(
        matches!(
            err,
            StateError::PostgresLost { .. } | StateError::PostgresUnreachable { .. }
        ),
        "{err:?}"
    );
    // AND once it is back, the next calls connect again and find everything stored before
    cluster.start_again();
    store
        .store_pending("s", held([event(4, "a")]))
        .await
        .expect("store after the restart");
    let mut order = Vec::new();
    loop {
        let due = store.due("s", UnixMillis(0), 10).await.unwrap();
        if due.is_empty() {
            break;
        }
        let ids: Vec<String> = due.iter().map(|p| p.event.id.clone()).collect();
        store.remove_pending("s", ids.clone()).await.unwrap();
        order.extend(ids);
    }
    let expected: Vec<String> = (1..=4).map(|n| event(n, "a").id).collect();
    assert_eq!(order, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_in_two_processes_take_turns_and_every_key_keeps_its_oldest_as_head() {
    // GIVEN two stores on one schema, as `walhook run` and `walhook dead-letters replay` would
    // have, opening it at the same time
    let schema = Schema::new().await;
    let url = schema.url();
    let (a, b) = tokio::join!(schema.open_as(&url), schema.open_as(&url));
    let (a, b) = (Arc::new(a.expect("open a")), Arc::new(b.expect("open b")));
    // WHEN both store batches of events of the same keys at once
    let write = |store: Arc<PostgresStore>, from: u64| {
        tokio::spawn(async move {
            for batch in 0..40u64 {
                let first = from + batch * 10;
                let events = (first..first + 10).map(|n| event(n, &(n % 3).to_string()));
                store.store_pending("s", held(events)).await.unwrap();
            }
        })
    };
    let (ra, rb) = tokio::join!(write(a.clone(), 0), write(b.clone(), 100_000));
    ra.unwrap();
    rb.unwrap();
    // THEN each call's events are stored together, in their order
    let client = schema.db.client().await;
    let ids: Vec<String> = client
        .query(
            "SELECT event_id FROM walhook_state.pending ORDER BY seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids.len(), 800);
    for batch in ids.chunks(10) {
        let first = u64::from_str_radix(&batch[0][4..20], 16).unwrap();
        let expected: Vec<String> = (first..first + 10).map(|n| event(n, "").id).collect();
        assert_eq!(batch, expected.as_slice(), "a batch was interleaved");
    }
    // AND each key's head is its oldest event
    let wrong: i64 = client
        .query_one(
            "SELECT count(*) FROM walhook_state.pending_head h
             WHERE h.seq <> (SELECT min(seq) FROM walhook_state.pending p
                             WHERE p.subscriber = h.subscriber AND p.event_key = h.event_key)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(wrong, 0);
    let heads: i64 = client
        .query_one("SELECT count(*) FROM walhook_state.pending_head", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(heads, 3);
}

#[tokio::test]
async fn a_write_dropped_midway_still_commits_whole_and_the_connection_stays_usable() {
    // GIVEN a store that stored events before (its statement is prepared)
    let schema = Schema::new().await;
    let store = schema.open().await;
    store
        .store_pending("s", held([event(1, "a")]))
        .await
        .unwrap();
    let client = schema.db.client().await;
    let before = store_backends(&client, schema.db.name()).await;
    assert_eq!(before.len(), 1, "{before:?}");
    // WHEN a write is dropped right after its first poll, as a cancelled task's would be
    let mut write = store.store_pending("s", held([event(2, "a"), event(3, "b")]));
    std::future::poll_fn(|cx| {
        let first = write.as_mut().poll(cx);
        assert!(
            first.is_pending(),
            "the write finished within its first poll"
        );
        std::task::Poll::Ready(())
    })
    .await;
    drop(write);
    // THEN the dropped write took effect whole (it was sent with its BEGIN and COMMIT), and
    // the next calls run on the same connection
    let due = store.due("s", UnixMillis(0), 10).await.unwrap();
    let ids: Vec<&str> = due.iter().map(|p| p.event.id.as_str()).collect();
    assert_eq!(ids, [event(1, "a").id.as_str(), event(3, "b").id.as_str()]);
    assert_eq!(store.subscriber_status("s").await.unwrap().pending, 3);
    assert_eq!(store_backends(&client, schema.db.name()).await, before);
}

/// The pids of the sessions walhook's connection code opened to database `db`.
async fn store_backends(client: &tokio_postgres::Client, db: &str) -> Vec<i32> {
    client
        .query(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = 'walhook'",
            &[&db],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn open_state_connects_with_the_urls_tls_settings_as_the_source_does() {
    // GIVEN a config whose [state] url asks for a verified TLS connection
    let server = Server::get();
    let Some(ca) = server.ca_cert() else {
        eprintln!("skipped: the test server has no TLS (external server?)");
        return;
    };
    let schema = Schema::new().await;
    let config = format!(
        r#"
        source.url = "{source}"
        subscribers.a.url = "http://127.0.0.1:9/"
        [state]
        url = "postgres://postgres:${{STATE_PASSWORD}}@localhost:{port}/{db}?sslmode=verify-full&sslrootcert={ca}"
        [[events]]
        type = "t"
        table = "public.t"
        subscribers = ["a"]
        "#,
        source = schema.url(),
        port = server.port(),
        db = schema.db.name(),
        ca = ca.display(),
    );
    let lookup = |name: &str| (name == "STATE_PASSWORD").then(|| SUPERUSER_PASSWORD.to_string());
    let config = walhook::config::parse(&config, std::path::Path::new("."), &lookup).unwrap();
    // WHEN walhook opens its state
    let store = walhook::app::open_state(&config).await.expect("open");
    assert_eq!(store.save_confirmed(Lsn(9)).await.unwrap(), Lsn(9));
    // THEN the schema is the default one, and its session is encrypted
    let client = schema.db.client().await;
    let ssl: Vec<bool> = client
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid
             WHERE a.datname = $1 AND a.application_name = 'walhook'",
            &[&schema.db.name()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ssl, [true]);
    let confirmed: String = client
        .query_one("SELECT confirmed_lsn::text FROM walhook.checkpoint", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(confirmed, "0/9");
    // AND a CA that did not sign the server's certificate is refused, naming the state database
    let dir = std::env::temp_dir().join(format!("walhook-state-ca-{}", schema.db.name()));
    std::fs::create_dir_all(&dir).unwrap();
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=some-other-ca", "-keyout"])
        .arg(dir.join("other.key"))
        .arg("-out")
        .arg(dir.join("other.crt"))
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let wrong = dir.join("other.crt");
    let text = format!(
        r#"
        source.url = "{source}"
        subscribers.a.url = "http://127.0.0.1:9/"
        [state]
        url = "postgres://postgres:pw@localhost:{port}/{db}?sslmode=verify-full&sslrootcert={ca}"
        [[events]]
        type = "t"
        table = "public.t"
        subscribers = ["a"]
        "#,
        source = schema.url(),
        port = server.port(),
        db = schema.db.name(),
        ca = wrong.display(),
    );
    let config = walhook::config::parse(&text, std::path::Path::new("."), &|_| None).unwrap();
    let err = walhook::app::open_state(&config)
        .await
        .expect_err("must refuse");
    let _ = std::fs::remove_dir_all(&dir);
    let text = walhook::error_chain(&err);
    assert!(
        text.starts_with(&format!(
            "cannot connect to the state database postgres@localhost:{}/{}",
            server.port(),
            schema.db.name()
        )),
        "{text}"
    );
    assert!(text.contains("TLS"), "{text}");
}

/// How many times Postgres analyzed `walhook_state.pending` (its statistics reach other
/// sessions within about a second).
async fn analyze_count(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT coalesce(analyze_count, 0) FROM pg_stat_user_tables
             WHERE schemaname = 'walhook_state' AND relname = 'pending'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_backlog_that_grows_gets_its_tables_analyzed() {
    // GIVEN a fresh store (whose tables nothing analyzed yet)
    let schema = Schema::new().await;
    let store = schema.open().await;
    let client = schema.db.client().await;
    let before = analyze_count(&client).await;

    // WHEN fewer events than the threshold are stored, then enough to pass it
    store
        .store_pending("s", held((0..1_000).map(|n| event(n, &n.to_string()))))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(analyze_count(&client).await, before, "analyzed too early");
    store
        .store_pending("s", held((1_000..50_000).map(|n| event(n, &n.to_string()))))
        .await
        .unwrap();

    // THEN the store had Postgres analyze them, so its queries are planned with statistics
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while analyze_count(&client).await == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pending was not analyzed after 50,000 events were stored"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
