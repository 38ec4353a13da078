use std::sync::Arc;
use std::time::Instant;

use super::{due_ids, event, hold, id_list, ids, truncate, Backend};
use crate::model::Event;
use crate::state::{Failure, PendingInsert, Retry, UnixMillis};

fn failure(id: &str, attempts: u32, at: i64) -> Failure {
    Failure {
        id: id.to_string(),
        attempts,
        at: UnixMillis(at),
        status: Some(503),
        error: Some("503 Service Unavailable".to_string()),
    }
}

pub async fn storing_the_same_event_twice_keeps_the_first(backend: &dyn Backend) {
    let store = backend.open().await;
    let e = event(1, "public.t", "1");
    let first = PendingInsert {
        event: Arc::new(e.clone()),
        attempts: 3,
        first_failure_at: Some(UnixMillis(100)),
        next_attempt_at: UnixMillis(500),
        last_status: Some(502),
        last_error: Some("bad gateway".to_string()),
    };
    assert_eq!(
        store.store_pending("s", vec![first]).await.expect("store"),
        1
    );
    // Re-read from the slot after a crash: stored again, as if never attempted.
    let again = PendingInsert::held(Arc::new(e.clone()), UnixMillis(900));
    assert_eq!(
        store
            .store_pending("s", vec![again.clone(), again.clone()])
            .await
            .expect("store"),
        0
    );

    let due = store.due("s", UnixMillis(500), 10).await.expect("due");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].event, e);
    assert_eq!(due[0].attempts, 3);
    assert_eq!(due[0].first_failure_at, Some(UnixMillis(100)));
    assert_eq!(due[0].next_attempt_at, UnixMillis(500));
    assert_eq!(due[0].last_status, Some(502));
    assert_eq!(due[0].last_error.as_deref(), Some("bad gateway"));
    // The same event for another subscriber is another entry.
    assert_eq!(
        store
            .store_pending("other", vec![again])
            .await
            .expect("store"),
        1
    );
}

pub async fn only_the_head_of_each_key_is_due_and_only_when_its_time_has_come(
    backend: &dyn Backend,
) {
    let store = backend.open().await;
    let a1 = event(1, "public.t", "a");
    let b1 = event(2, "public.t", "b");
    let a2 = event(3, "public.t", "a");
    let c1 = event(4, "public.t", "c");
    let b2 = event(5, "public.t", "b");
    hold(
        &*store,
        "s",
        &[a1.clone(), b1.clone(), a2.clone(), c1.clone(), b2.clone()],
        0,
    )
    .await;
    // a1 failed and waits until 1000.
    let retry = Retry {
        failure: failure(&a1.id, 1, 10),
        next_attempt_at: UnixMillis(1_000),
    };
    assert_eq!(
        store
            .reschedule("s", vec![retry])
            .await
            .expect("reschedule"),
        1
    );

    // a2 is behind a1; b2 behind b1.
    assert_eq!(due_ids(&*store, "s", 999).await, id_list(&[&b1, &c1]));
    // Most overdue first: b1 and c1 have been due since 0, a1 since 1000.
    assert_eq!(
        due_ids(&*store, "s", 1_000).await,
        id_list(&[&b1, &c1, &a1])
    );
    assert_eq!(
        store
            .due("s", UnixMillis(1_000), 2)
            .await
            .expect("due")
            .len(),
        2
    );
    assert_eq!(
        store.next_due_at("s").await.expect("next"),
        Some(UnixMillis(0))
    );

    // Delivering a head makes the next event of its key the head, due at once.
    assert_eq!(
        store
            .remove_pending("s", vec![b1.id.clone(), c1.id.clone()])
            .await
            .expect("remove"),
        2
    );
    assert_eq!(due_ids(&*store, "s", 999).await, id_list(&[&b2]));
    store
        .remove_pending("s", vec![b2.id.clone()])
        .await
        .expect("remove");
    assert!(due_ids(&*store, "s", 999).await.is_empty());
    assert_eq!(
        store.next_due_at("s").await.expect("next"),
        Some(UnixMillis(1_000))
    );
    store
        .remove_pending("s", vec![a1.id.clone()])
        .await
        .expect("remove");
    assert_eq!(due_ids(&*store, "s", 999).await, id_list(&[&a2]));
    store
        .remove_pending("s", vec![a2.id.clone()])
        .await
        .expect("remove");
    assert_eq!(store.next_due_at("s").await.expect("next"), None);
    assert!(due_ids(&*store, "s", i64::MAX).await.is_empty());
}

pub async fn removing_an_event_that_is_not_a_head_keeps_the_head(backend: &dyn Backend) {
    let store = backend.open().await;
    let events: Vec<_> = (1..=3).map(|n| event(n, "public.t", "k")).collect();
    hold(&*store, "s", &events, 0).await;
    store
        .remove_pending("s", vec![events[1].id.clone()])
        .await
        .expect("remove");
    assert_eq!(due_ids(&*store, "s", 0).await, id_list(&[&events[0]]));
    store
        .remove_pending("s", id_list(&[&events[0]]))
        .await
        .expect("remove");
    assert_eq!(due_ids(&*store, "s", 0).await, id_list(&[&events[2]]));
}

pub async fn removing_a_head_with_the_events_behind_it_makes_the_next_one_the_head(
    backend: &dyn Backend,
) {
    let store = backend.open().await;
    let a: Vec<_> = (1..=4).map(|n| event(n, "public.t", "a")).collect();
    let b = event(5, "public.t", "b");
    hold(&*store, "s", &a, 0).await;
    hold(&*store, "s", std::slice::from_ref(&b), 0).await;
    // The head of `a`, the event behind it, and the only event of `b`, in one call.
    let removed = store
        .remove_pending("s", vec![a[1].id.clone(), a[0].id.clone(), b.id.clone()])
        .await
        .expect("remove");
    assert_eq!(removed, 3);
    assert_eq!(due_ids(&*store, "s", 0).await, id_list(&[&a[2]]));
    // The same when they are given up on.
    let gone = |e: &Event| Failure {
        status: Some(400),
        ..failure(&e.id, 1, 10)
    };
    let moved = store
        .move_to_dead_letters("s", vec![gone(&a[3]), gone(&a[2])])
        .await
        .expect("move");
    assert_eq!(moved, 2);
    assert!(due_ids(&*store, "s", i64::MAX).await.is_empty());
    assert_eq!(store.next_due_at("s").await.expect("next"), None);
    hold(&*store, "s", std::slice::from_ref(&a[0]), 0).await;
    assert_eq!(due_ids(&*store, "s", 0).await, id_list(&[&a[0]]));
}

pub async fn order_per_key_survives_reopening(backend: &dyn Backend) {
    let events: Vec<_> = (1..=20)
        .map(|n| event(n, "public.t", &(n % 3).to_string()))
        .collect();
    {
        let store = backend.open().await;
        hold(&*store, "s", &events[..10], 0).await;
        hold(&*store, "s", &events[10..], 0).await;
    }
    let store = backend.open().await;
    let mut delivered = Vec::new();
    loop {
        let due = store.due("s", UnixMillis(0), 100).await.expect("due");
        if due.is_empty() {
            break;
        }
        store.remove_pending("s", ids(&due)).await.expect("remove");
        delivered.extend(due.into_iter().map(|p| p.event));
    }
    assert_eq!(delivered.len(), events.len());
    for key in ["0", "1", "2"] {
        let key = format!("public.t:{key}");
        let sent: Vec<_> = delivered.iter().filter(|e| e.key == key).collect();
        let stored: Vec<_> = events.iter().filter(|e| e.key == key).collect();
        assert_eq!(sent, stored, "order of {key}");
    }
}

pub async fn reschedule_records_the_attempt_and_keeps_the_first_failure(backend: &dyn Backend) {
    let store = backend.open().await;
    let e = event(1, "public.t", "k");
    hold(&*store, "s", std::slice::from_ref(&e), 0).await;
    let first = Retry {
        failure: failure(&e.id, 1, 100),
        next_attempt_at: UnixMillis(200),
    };
    let second = Retry {
        failure: Failure {
            status: None,
            error: Some("connection refused".to_string()),
            ..failure(&e.id, 2, 250)
        },
        next_attempt_at: UnixMillis(400),
    };
    store
        .reschedule("s", vec![first])
        .await
        .expect("reschedule");
    store
        .reschedule("s", vec![second])
        .await
        .expect("reschedule");
    let unknown = Retry {
        failure: failure("evt_unknown", 1, 1),
        next_attempt_at: UnixMillis(1),
    };
    assert_eq!(
        store
            .reschedule("s", vec![unknown])
            .await
            .expect("reschedule"),
        0
    );

    assert!(due_ids(&*store, "s", 399).await.is_empty());
    let due = store.due("s", UnixMillis(400), 10).await.expect("due");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].attempts, 2);
    assert_eq!(due[0].first_failure_at, Some(UnixMillis(100)));
    assert_eq!(due[0].next_attempt_at, UnixMillis(400));
    assert_eq!(due[0].last_status, None);
    assert_eq!(due[0].last_error.as_deref(), Some("connection refused"));
}

pub async fn a_truncate_waits_for_its_table_and_holds_back_what_follows(backend: &dyn Backend) {
    let store = backend.open().await;
    let before = event(1, "public.t", "a");
    let other_table = event(2, "public.u", "a");
    let cut = truncate(3, "public.t");
    let after = event(4, "public.t", "b");
    hold(
        &*store,
        "s",
        &[
            before.clone(),
            other_table.clone(),
            cut.clone(),
            after.clone(),
        ],
        0,
    )
    .await;

    assert_eq!(
        due_ids(&*store, "s", 0).await,
        id_list(&[&before, &other_table])
    );
    store
        .remove_pending("s", vec![before.id.clone()])
        .await
        .expect("remove");
    assert_eq!(
        due_ids(&*store, "s", 0).await,
        id_list(&[&other_table, &cut])
    );
    store
        .remove_pending("s", vec![cut.id.clone()])
        .await
        .expect("remove");
    assert_eq!(
        due_ids(&*store, "s", 0).await,
        id_list(&[&other_table, &after])
    );
}

pub async fn must_hold_says_when_a_live_event_goes_behind_held_ones(backend: &dyn Backend) {
    let store = backend.open().await;
    let held = event(1, "public.t", "a");
    hold(&*store, "s", std::slice::from_ref(&held), 0).await;

    assert!(store
        .must_hold("s", &event(2, "public.t", "a"))
        .await
        .expect("check"));
    assert!(!store
        .must_hold("s", &event(3, "public.t", "b"))
        .await
        .expect("check"));
    assert!(!store
        .must_hold("other", &event(2, "public.t", "a"))
        .await
        .expect("check"));
    // A truncate of a table with held events waits for them.
    assert!(store
        .must_hold("s", &truncate(4, "public.t"))
        .await
        .expect("check"));
    assert!(!store
        .must_hold("s", &truncate(5, "public.u"))
        .await
        .expect("check"));

    // Every later event of a table with a held truncate waits for it.
    hold(&*store, "s", &[truncate(6, "public.u")], 0).await;
    assert!(store
        .must_hold("s", &event(7, "public.u", "z"))
        .await
        .expect("check"));
}

pub async fn ten_thousand_events_are_stored_in_one_call(backend: &dyn Backend) {
    let store = backend.open().await;
    // One hot key holds half the events; every other event has a key of its own.
    let events: Vec<_> = (0..10_000u64)
        .map(|n| {
            let key = if n % 2 == 0 {
                "hot".to_string()
            } else {
                n.to_string()
            };
            event(n, "public.t", &key)
        })
        .collect();
    let started = Instant::now();
    assert_eq!(hold(&*store, "s", &events, 0).await, 10_000);
    let stored = started.elapsed();

    let started = Instant::now();
    let due = store.due("s", UnixMillis(0), 1_000).await.expect("due");
    let read = started.elapsed();
    println!("stored 10,000 events in {stored:?}; read 1,000 due in {read:?}");
    assert_eq!(due.len(), 1_000);
    assert_eq!(due[0].event.id, events[0].id);
    let hot = due.iter().filter(|p| p.event.key == "public.t:hot").count();
    assert_eq!(hot, 1, "only the hot key's head is due");
    assert_eq!(
        store.subscriber_status("s").await.expect("status").pending,
        10_000
    );
}

/// The rule of [`crate::model::Event::must_follow`], over random histories: whatever the
/// store returns as due has no held event before it that it must follow, and removing what
/// was due eventually returns every event.
pub async fn due_events_never_overtake_one_they_must_follow(backend: &dyn Backend) {
    let store = backend.open().await;
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below
    };
    for round in 0..20u64 {
        let subscriber = format!("s{round}");
        let events: Vec<Event> = (0..40u64)
            .map(|n| {
                let table = if next(2) == 0 { "public.t" } else { "public.u" };
                let key = next(4).to_string();
                let mut e = event(round * 100 + n, table, &key);
                // A barrier keyed by its row's new key (a key change) one time in six.
                e.is_truncate = next(6) == 0;
                e
            })
            .collect();
        // Stored in a few calls, as a worker would.
        let mut at = 0;
        while at < events.len() {
            let end = (at + 1 + next(10) as usize).min(events.len());
            hold(&*store, &subscriber, &events[at..end], 0).await;
            at = end;
        }
        let mut held: Vec<&Event> = events.iter().collect();
        while !held.is_empty() {
            let limit = 1 + next(8) as usize;
            let due = store
                .due(&subscriber, UnixMillis(0), limit)
                .await
                .expect("due");
            assert!(!due.is_empty(), "round {round}: events held, none due");
            for p in &due {
                let at = held.iter().position(|e| e.id == p.event.id).expect("held");
                for earlier in &held[..at] {
                    assert!(
                        !p.event.must_follow(earlier),
                        "round {round}: {} due while {} is held",
                        p.event.id,
                        earlier.id
                    );
                }
            }
            // Deliver some of them, in any order.
            let take = 1 + next(due.len() as u64) as usize;
            let delivered: Vec<String> =
                due.iter().take(take).map(|p| p.event.id.clone()).collect();
            store
                .remove_pending(&subscriber, delivered.clone())
                .await
                .expect("remove");
            held.retain(|e| !delivered.contains(&e.id));
        }
    }
}
