use std::sync::Arc;

use super::super::db::Db;
use super::super::schema::SCHEMA_VERSION;
use super::TempDir;
use crate::model::{Event, Lsn};
use crate::state::{PendingInsert, SqliteStore, StateError, UnixMillis};

#[test]
fn the_store_can_be_shared_between_tasks() {
    fn assert_shared<T: Send + Sync>() {}
    assert_shared::<SqliteStore>();
}

fn event(n: u64) -> Event {
    Event {
        id: format!("evt_{n:016X}_0"),
        event_type: "row.changed".to_string(),
        key: format!("public.t:{n}"),
        table: "public.t".to_string(),
        body: format!(r#"{{"n":{n}}}"#),
        commit_lsn: Lsn(0x1_0000_0000 + n),
        commit_time_micros: 1_700_000_000_000_000,
        is_truncate: false,
    }
}

fn held(events: &[Event]) -> Vec<PendingInsert> {
    events
        .iter()
        .map(|e| PendingInsert::held(Arc::new(e.clone()), UnixMillis(0)))
        .collect()
}

#[test]
fn a_new_file_gets_the_schema_wal_mode_and_full_sync() {
    let dir = TempDir::new();
    let store = Db::open(dir.path().join("state.db")).expect("open");
    let pragma = |name: &str| -> String {
        store
            .conn
            .pragma_query_value(None, name, |r| r.get::<_, rusqlite::types::Value>(0))
            .map(|v| format!("{v:?}"))
            .expect("pragma")
    };
    assert_eq!(pragma("journal_mode"), r#"Text("wal")"#);
    assert_eq!(pragma("synchronous"), "Integer(2)"); // FULL
    assert_eq!(pragma("user_version"), format!("Integer({SCHEMA_VERSION})"));
    drop(store);
    // Reopening an up-to-date file changes nothing and works.
    Db::open(dir.path().join("state.db")).expect("reopen");
}

#[test]
fn a_missing_directory_is_named_with_the_fix() {
    let dir = TempDir::new();
    let path = dir.path().join("no-such-dir").join("state.db");
    let err = Db::open(&path).expect_err("must fail");
    assert!(
        matches!(err, StateError::MissingDirectory { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&dir.path().join("no-such-dir").display().to_string()),
        "{message}"
    );
    assert!(message.contains("[state] path"), "{message}");
    assert!(!path.exists());
}

#[test]
fn a_file_where_the_directory_should_be_is_refused() {
    let dir = TempDir::new();
    std::fs::write(dir.path().join("file"), "x").expect("write");
    let err = Db::open(dir.path().join("file").join("state.db")).expect_err("must fail");
    assert!(
        matches!(err, StateError::MissingDirectory { .. }),
        "{err:?}"
    );
}

#[test]
fn a_directory_where_the_file_should_be_cannot_be_opened() {
    let dir = TempDir::new();
    let path = dir.path().join("state.db");
    std::fs::create_dir(&path).expect("mkdir");
    let err = Db::open(&path).expect_err("must fail");
    assert!(matches!(err, StateError::Open { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("permissions"), "{message}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the SQLite cause is attached"
    );
}

#[test]
fn a_file_that_is_not_sqlite_is_corrupt() {
    let dir = TempDir::new();
    let path = dir.path().join("state.db");
    std::fs::write(&path, vec![0x5a_u8; 8192]).expect("write");
    let err = Db::open(&path).expect_err("must fail");
    assert!(matches!(err, StateError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("not an SQLite database"), "{err}");
}

#[test]
fn another_applications_database_is_refused() {
    let dir = TempDir::new();
    let path = dir.path().join("app.db");
    let other = rusqlite::Connection::open(&path).expect("open");
    other
        .execute_batch("CREATE TABLE users (id INTEGER)")
        .expect("create");
    drop(other);
    let err = Db::open(&path).expect_err("must fail");
    assert!(matches!(err, StateError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("another application"), "{err}");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = TempDir::new();
    let path = dir.path().join("state.db");
    let store = Db::open(&path).expect("open");
    store
        .conn
        .pragma_update(None, "user_version", 99)
        .expect("bump");
    drop(store);
    let err = Db::open(&path).expect_err("must fail");
    assert!(
        matches!(err, StateError::NewerSchema { found: 99, supported, .. } if supported == SCHEMA_VERSION),
        "{err:?}"
    );
}

/// A full disk surfaces as `DiskFull` from the failing call, which changes nothing; what was
/// committed before stays, and the store keeps working once there is room.
#[test]
fn a_full_disk_is_an_error_and_loses_nothing() {
    let mut store = Db::open_in_memory().expect("open");
    let kept: Vec<_> = (0..10).map(event).collect();
    store.store_pending("s", &held(&kept)).expect("store");

    let pages: i64 = store
        .conn
        .pragma_query_value(None, "page_count", |r| r.get(0))
        .expect("page_count");
    store
        .conn
        .pragma_update(None, "max_page_count", pages + 2)
        .expect("cap the file");
    let big: Vec<_> = (100..2_100).map(event).collect();
    let err = store
        .store_pending("s", &held(&big))
        .expect_err("must fail");
    assert!(matches!(err, StateError::DiskFull { .. }), "{err:?}");
    assert!(err.to_string().contains("free space"), "{err}");

    assert_eq!(store.subscriber_status("s").expect("status").pending, 10);
    assert_eq!(
        store
            .remove_pending("s", &[kept[0].id.clone()])
            .expect("remove"),
        1
    );
    assert_eq!(store.subscriber_status("s").expect("status").pending, 9);
}
