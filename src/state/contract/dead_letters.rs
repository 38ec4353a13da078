use std::sync::Arc;

use super::{due_ids, event, hold, id_list, Backend};
use crate::state::{
    DeadLetterFilter, DeadLetterInsert, Failure, PendingEvent, Retry, Store, UnixMillis,
};

fn gone(id: &str, attempts: u32, at: i64) -> Failure {
    Failure {
        id: id.to_string(),
        attempts,
        at: UnixMillis(at),
        status: Some(422),
        error: Some("422 Unprocessable Entity".to_string()),
    }
}

fn all() -> DeadLetterFilter {
    DeadLetterFilter::default()
}

async fn dead_ids(store: &dyn Store, filter: DeadLetterFilter) -> Vec<String> {
    let dead = store.list_dead_letters(filter, 100).await.expect("list");
    dead.into_iter().map(|d| d.event.id).collect()
}

pub async fn dead_lettering_a_head_releases_its_key(backend: &dyn Backend) {
    let store = backend.open().await;
    let first = event(1, "public.t", "k");
    let second = event(2, "public.t", "k");
    hold(&*store, "s", &[first.clone(), second.clone()], 0).await;
    let retry = Retry {
        failure: Failure {
            status: Some(500),
            ..gone(&first.id, 1, 100)
        },
        next_attempt_at: UnixMillis(200),
    };
    store
        .reschedule("s", vec![retry])
        .await
        .expect("reschedule");

    let moved = store
        .move_to_dead_letters(
            "s",
            vec![gone(&first.id, 2, 300), gone("evt_unknown", 1, 300)],
        )
        .await
        .expect("move");
    assert_eq!(moved, 1);
    assert_eq!(due_ids(&*store, "s", 0).await, id_list(&[&second]));

    let dead = store.list_dead_letters(all(), 10).await.expect("list");
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(d.subscriber, "s");
    assert_eq!(d.event, first);
    assert_eq!(d.attempts, 2);
    assert_eq!(d.first_attempt_at, UnixMillis(100));
    assert_eq!(d.dead_at, UnixMillis(300));
    assert_eq!(d.last_status, Some(422));
    assert_eq!(d.last_error.as_deref(), Some("422 Unprocessable Entity"));
}

pub async fn a_live_event_can_be_dead_lettered_directly(backend: &dyn Backend) {
    let store = backend.open().await;
    let e = event(1, "public.t", "k");
    let item = DeadLetterInsert {
        event: Arc::new(e.clone()),
        attempts: 1,
        first_attempt_at: UnixMillis(10),
        dead_at: UnixMillis(10),
        last_status: Some(400),
        last_error: Some("400 Bad Request".to_string()),
    };
    assert_eq!(
        store
            .store_dead_letters("s", vec![item.clone()])
            .await
            .expect("store"),
        1
    );
    // Dead-lettered again (replayed, failed again): replaced, not duplicated.
    let again = DeadLetterInsert {
        dead_at: UnixMillis(20),
        ..item
    };
    store
        .store_dead_letters("s", vec![again])
        .await
        .expect("store");
    let dead = store.list_dead_letters(all(), 10).await.expect("list");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].dead_at, UnixMillis(20));
    assert_eq!(dead[0].event, e);
}

pub async fn replay_puts_dead_letters_back_behind_their_key_due_now_and_fresh(
    backend: &dyn Backend,
) {
    let store = backend.open().await;
    let old_a = event(1, "public.t", "a");
    let old_b = event(2, "public.t", "b");
    let held_a = event(3, "public.t", "a");
    hold(&*store, "s", &[old_b.clone(), old_a.clone()], 0).await;
    store
        .move_to_dead_letters("s", vec![gone(&old_b.id, 1, 5), gone(&old_a.id, 1, 6)])
        .await
        .expect("move");
    hold(&*store, "s", std::slice::from_ref(&held_a), 7).await;

    let replayed = store
        .replay_dead_letters(all(), UnixMillis(1_000))
        .await
        .expect("replay");
    assert_eq!(replayed, 2);
    assert_eq!(store.count_dead_letters(all()).await.expect("count"), 0);

    // old_a waits behind held_a; old_b's key is free.
    let due = store.due("s", UnixMillis(1_000), 10).await.expect("due");
    assert_eq!(
        due.iter().map(|p| &p.event).collect::<Vec<_>>(),
        [&held_a, &old_b]
    );
    let fresh = |p: &PendingEvent| {
        p.attempts == 0 && p.first_failure_at.is_none() && p.last_status.is_none()
    };
    assert!(fresh(&due[1]), "{:?}", due[1]);
    assert_eq!(due[1].next_attempt_at, UnixMillis(1_000));
    store
        .remove_pending("s", vec![held_a.id.clone()])
        .await
        .expect("remove");
    // Both due at 1000: replayed in commit order.
    assert_eq!(
        due_ids(&*store, "s", 1_000).await,
        id_list(&[&old_a, &old_b])
    );
}

pub async fn replayed_events_keep_commit_order_among_themselves(backend: &dyn Backend) {
    let store = backend.open().await;
    let events: Vec<_> = (1..=3).map(|n| event(n, "public.t", "k")).collect();
    // Dead-lettered out of commit order (stored directly, newest first).
    for e in events.iter().rev() {
        let item = DeadLetterInsert {
            event: Arc::new(e.clone()),
            attempts: 1,
            first_attempt_at: UnixMillis(0),
            dead_at: UnixMillis(0),
            last_status: Some(400),
            last_error: None,
        };
        store
            .store_dead_letters("s", vec![item.clone()])
            .await
            .expect("store");
    }
    store
        .replay_dead_letters(all(), UnixMillis(0))
        .await
        .expect("replay");
    for e in &events {
        assert_eq!(due_ids(&*store, "s", 0).await, id_list(&[e]));
        store
            .remove_pending("s", vec![e.id.clone()])
            .await
            .expect("remove");
    }
}

pub async fn replaying_an_event_that_is_held_again_keeps_its_place(backend: &dyn Backend) {
    let store = backend.open().await;
    let e = event(1, "public.t", "k");
    let later = event(2, "public.t", "k");
    hold(&*store, "s", std::slice::from_ref(&e), 0).await;
    store
        .move_to_dead_letters("s", vec![gone(&e.id, 1, 1)])
        .await
        .expect("move");
    // Re-read from the slot after a crash.
    hold(&*store, "s", &[e.clone(), later.clone()], 2).await;
    assert_eq!(
        store
            .replay_dead_letters(all(), UnixMillis(3))
            .await
            .expect("replay"),
        1
    );
    assert_eq!(
        store.subscriber_status("s").await.expect("status").pending,
        2
    );
    assert_eq!(due_ids(&*store, "s", 3).await, id_list(&[&e]));
}

pub async fn filters_select_by_subscriber_and_id(backend: &dyn Backend) {
    let store = backend.open().await;
    let events: Vec<_> = (1..=3)
        .map(|n| event(n, "public.t", &n.to_string()))
        .collect();
    for subscriber in ["billing", "search"] {
        hold(&*store, subscriber, &events, 0).await;
        let failures: Vec<_> = events.iter().map(|e| gone(&e.id, 1, 1)).collect();
        store
            .move_to_dead_letters(subscriber, failures)
            .await
            .expect("move");
    }
    let billing = DeadLetterFilter {
        subscriber: Some("billing".to_string()),
        ..Default::default()
    };
    let one = DeadLetterFilter {
        id: Some(events[0].id.clone()),
        ..Default::default()
    };
    assert_eq!(store.count_dead_letters(all()).await.expect("count"), 6);
    assert_eq!(
        store
            .count_dead_letters(billing.clone())
            .await
            .expect("count"),
        3
    );
    assert_eq!(
        dead_ids(&*store, one.clone()).await,
        id_list(&[&events[0], &events[0]])
    );
    assert_eq!(
        store.list_dead_letters(all(), 4).await.expect("list").len(),
        4
    );

    // Replay one event everywhere, then discard the rest of billing's.
    assert_eq!(
        store
            .replay_dead_letters(one, UnixMillis(5))
            .await
            .expect("replay"),
        2
    );
    assert_eq!(due_ids(&*store, "search", 5).await, id_list(&[&events[0]]));
    assert_eq!(
        store.discard_dead_letters(billing).await.expect("discard"),
        2
    );
    let search = DeadLetterFilter {
        subscriber: Some("search".to_string()),
        ..Default::default()
    };
    assert_eq!(
        dead_ids(&*store, all()).await,
        dead_ids(&*store, search).await
    );
    assert_eq!(
        dead_ids(&*store, all()).await,
        id_list(&[&events[1], &events[2]])
    );
    assert_eq!(store.discard_dead_letters(all()).await.expect("discard"), 2);
    assert_eq!(store.discard_dead_letters(all()).await.expect("discard"), 0);
}
