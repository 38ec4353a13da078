//! The store contract as tests, written once and run against every backend: a backend's
//! tests call [`contract_tests!`] with a value that opens its store (see `sqlite/tests`, and
//! `tests/state_postgres.rs` for Postgres, which needs a server the integration tests start).
//! Public for that reason only: it is no part of walhook's interface.
//!
//! Each test takes a [`Backend`] whose [`Backend::open`] opens the same store on every call,
//! so a test can check what survives closing and opening it again.

// Test code, though not `cfg(test)`: the integration tests run it against Postgres.
#![allow(clippy::unwrap_used)]

pub mod backfills;
pub mod dead_letter_filters;
pub mod dead_letters;
pub mod pending;
pub mod status;

use std::sync::Arc;

use async_trait::async_trait;

use super::{PendingEvent, PendingInsert, Store, UnixMillis};
use crate::model::{Event, Lsn};

/// A store under test.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Opens the store: a new handle on the same, initially empty, store each time.
    async fn open(&self) -> Arc<dyn Store>;
}

/// One `#[tokio::test]` per contract test, each with a backend from `$backend` (an
/// expression evaluated once per test, inside the test's runtime, so it may `.await`).
#[doc(hidden)]
#[macro_export]
macro_rules! __contract_tests {
    ($backend:expr) => {
        $crate::state::contract::contract_tests!(@each $backend;
            pending::storing_the_same_event_twice_keeps_the_first,
            pending::only_the_head_of_each_key_is_due_and_only_when_its_time_has_come,
            pending::removing_an_event_that_is_not_a_head_keeps_the_head,
            pending::removing_a_head_with_the_events_behind_it_makes_the_next_one_the_head,
            pending::order_per_key_survives_reopening,
            pending::reschedule_records_the_attempt_and_keeps_the_first_failure,
            pending::a_truncate_waits_for_its_table_and_holds_back_what_follows,
            pending::must_hold_says_when_a_live_event_goes_behind_held_ones,
            pending::ten_thousand_events_are_stored_in_one_call,
            pending::due_events_never_overtake_one_they_must_follow,
            dead_letters::dead_lettering_a_head_releases_its_key,
            dead_letters::a_live_event_can_be_dead_lettered_directly,
            dead_letters::replay_puts_dead_letters_back_behind_their_key_due_now_and_fresh,
            dead_letters::replayed_events_keep_commit_order_among_themselves,
            dead_letters::replaying_an_event_that_is_held_again_keeps_its_place,
            dead_letters::filters_select_by_subscriber_and_id,
            dead_letter_filters::filters_select_by_type_table_and_commit_time,
            dead_letter_filters::replaying_many_keys_keeps_commit_order_per_key,
            status::the_checkpoint_never_moves_backward_and_survives_reopening,
            status::an_unknown_subscriber_has_an_empty_status,
            status::status_counts_per_subscriber,
            status::a_pause_survives_reopening,
            status::a_pause_holds_until_resumed_and_a_second_pause_keeps_the_first,
            backfills::a_backfill_goes_from_pending_through_progress_to_done,
        );
    };
    (@each $backend:expr; $($module:ident :: $name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let backend = $backend;
                $crate::state::contract::$module::$name(&backend).await;
            }
        )*
    };
}
pub use __contract_tests as contract_tests;

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

/// Holds `events` for `subscriber` as never attempted, due at `at`.
async fn hold(store: &dyn Store, subscriber: &str, events: &[Event], at: i64) -> usize {
    let items: Vec<_> = events
        .iter()
        .map(|e| PendingInsert::held(Arc::new(e.clone()), UnixMillis(at)))
        .collect();
    store.store_pending(subscriber, items).await.expect("store")
}

fn ids(events: &[PendingEvent]) -> Vec<String> {
    events.iter().map(|p| p.event.id.clone()).collect()
}

async fn due_ids(store: &dyn Store, subscriber: &str, now: i64) -> Vec<String> {
    let due = store
        .due(subscriber, UnixMillis(now), 100)
        .await
        .expect("due");
    ids(&due)
}

fn id_list(events: &[&Event]) -> Vec<String> {
    events.iter().map(|e| e.id.clone()).collect()
}
