//! Tests of the state store: in-memory stores, and files in a throwaway directory where
//! durability across reopening matters.

mod dead_letters;
mod open;
mod pending;
mod status;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{PendingEvent, PendingInsert, Store, UnixMillis};
use crate::model::{Event, Lsn};

/// An event of `table` with ordering key `key`; its LSN and commit time follow its number.
fn event(n: u64, table: &str, key: &str) -> Event {
    let id = format!("evt_{n:016X}_0");
    Event {
        body: format!(r#"{{"id":"{id}","type":"row.changed","data":{{"n":{n}}}}}"#),
        id,
        event_type: "row.changed".to_string(),
        key: format!("{table}:{key}"),
        table: table.to_string(),
        commit_lsn: Lsn(0x1_0000_0000 + n),
        commit_time_micros: 1_700_000_000_000_000 + i64::try_from(n).unwrap_or(0) * 1_000,
        is_truncate: false,
    }
}

fn truncate(n: u64, table: &str) -> Event {
    Event {
        is_truncate: true,
        event_type: "table.truncated".to_string(),
        ..event(n, table, "truncate")
    }
}

fn memory() -> Store {
    Store::open_in_memory().expect("in-memory store")
}

/// Holds `events` for `subscriber` as never attempted, due at `at`.
fn hold(store: &mut Store, subscriber: &str, events: &[Event], at: i64) -> usize {
    let items: Vec<_> = events
        .iter()
        .map(|e| PendingInsert::held(e, UnixMillis(at)))
        .collect();
    store.store_pending(subscriber, &items).expect("store")
}

fn ids(events: &[PendingEvent]) -> Vec<&str> {
    events.iter().map(|p| p.event.id.as_str()).collect()
}

fn due_ids(store: &Store, subscriber: &str, now: i64) -> Vec<String> {
    let due = store.due(subscriber, UnixMillis(now), 100).expect("due");
    ids(&due).into_iter().map(str::to_string).collect()
}

/// A directory of its own under the system temp directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "walhook-state-test-{}-{}-{n}",
            std::process::id(),
            UnixMillis::now().0
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn id_list(events: &[&Event]) -> Vec<String> {
    events.iter().map(|e| e.id.clone()).collect()
}
