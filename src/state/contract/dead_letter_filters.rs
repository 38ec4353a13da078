//! Dead letters chosen by type, table and commit time (with subscriber and id, AND), and
//! replays of many keys at once.

use std::sync::Arc;

use super::{due_ids, event, id_list, Backend};
use crate::model::Event;
use crate::state::{DeadLetterFilter, DeadLetterInsert, Store, UnixMillis};

fn typed(n: u64, table: &str, key: &str, event_type: &str) -> Event {
    Event {
        event_type: event_type.to_string(),
        ..event(n, table, key)
    }
}

/// Dead-letters `events` for `subscriber` directly, in the order given.
async fn dead_letter(store: &dyn Store, subscriber: &str, events: &[&Event]) {
    let items: Vec<_> = events
        .iter()
        .map(|e| DeadLetterInsert {
            event: Arc::new((*e).clone()),
            attempts: 1,
            first_attempt_at: UnixMillis(0),
            dead_at: UnixMillis(0),
            last_status: Some(400),
            last_error: Some("400 Bad Request".to_string()),
        })
        .collect();
    store
        .store_dead_letters(subscriber, items)
        .await
        .expect("store");
}

/// (subscriber, id) of the matching dead letters, in list order; checks that the count agrees.
async fn matching(store: &dyn Store, filter: DeadLetterFilter) -> Vec<(String, String)> {
    let count = store
        .count_dead_letters(filter.clone())
        .await
        .expect("count");
    let dead = store.list_dead_letters(filter, 100).await.expect("list");
    assert_eq!(count, dead.len() as u64, "count and list agree");
    dead.into_iter()
        .map(|d| (d.subscriber, d.event.id))
        .collect()
}

fn pairs(subscriber: &str, events: &[&Event]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| (subscriber.to_string(), e.id.clone()))
        .collect()
}

pub async fn filters_select_by_type_table_and_commit_time(backend: &dyn Backend) {
    let store = backend.open().await;
    // Commit times follow the numbers (see `event`).
    let e1 = typed(1, "public.orders", "1", "order.created");
    let e2 = typed(2, "public.orders", "1", "order.paid");
    let e3 = typed(3, "public.customers", "7", "customer.created");
    let e4 = typed(4, "shop.orders", "1", "order.created");
    let e5 = typed(5, "public.orders", "2", "order.created");
    dead_letter(&*store, "billing", &[&e1, &e2, &e3, &e4, &e5]).await;
    dead_letter(&*store, "search", &[&e1]).await;
    let filter = |f: fn(&mut DeadLetterFilter)| {
        let mut filter = DeadLetterFilter::default();
        f(&mut filter);
        filter
    };
    let billing = |events: &[&Event]| pairs("billing", events);

    let by_type = filter(|f| f.event_type = Some("order.created".into()));
    let mut want = billing(&[&e1, &e4, &e5]);
    want.extend(pairs("search", &[&e1]));
    assert_eq!(matching(&*store, by_type).await, want);

    let by_table = filter(|f| f.table = Some("public.orders".into()));
    let mut want = billing(&[&e1, &e2, &e5]);
    want.extend(pairs("search", &[&e1]));
    assert_eq!(matching(&*store, by_table).await, want);

    // `since` is inclusive, `until` exclusive.
    let (t2, t5) = (e2.commit_time_micros, e5.commit_time_micros);
    let window = DeadLetterFilter {
        since_micros: Some(t2),
        until_micros: Some(t5),
        ..Default::default()
    };
    assert_eq!(matching(&*store, window).await, billing(&[&e2, &e3, &e4]));

    // Every condition at once.
    let narrow = DeadLetterFilter {
        subscriber: Some("billing".into()),
        event_type: Some("order.created".into()),
        table: Some("public.orders".into()),
        since_micros: Some(t2),
        ..Default::default()
    };
    assert_eq!(matching(&*store, narrow).await, billing(&[&e5]));
    let none = DeadLetterFilter {
        id: Some(e3.id.clone()),
        event_type: Some("order.created".into()),
        ..Default::default()
    };
    assert_eq!(matching(&*store, none).await, []);

    // Replay and discard apply the same filter.
    let replay = DeadLetterFilter {
        subscriber: Some("billing".into()),
        event_type: Some("order.created".into()),
        until_micros: Some(t5),
        ..Default::default()
    };
    assert_eq!(
        store
            .replay_dead_letters(replay, UnixMillis(10))
            .await
            .expect("replay"),
        2
    );
    let mut due = due_ids(&*store, "billing", 10).await;
    due.sort();
    assert_eq!(due, id_list(&[&e1, &e4]));
    assert_eq!(due_ids(&*store, "search", 10).await, Vec::<String>::new());
    let customers = filter(|f| f.table = Some("public.customers".into()));
    assert_eq!(
        store
            .discard_dead_letters(customers)
            .await
            .expect("discard"),
        1
    );
    let mut want = billing(&[&e2, &e5]);
    want.extend(pairs("search", &[&e1]));
    assert_eq!(matching(&*store, DeadLetterFilter::default()).await, want);
}

pub async fn replaying_many_keys_keeps_commit_order_per_key(backend: &dyn Backend) {
    let store = backend.open().await;
    // Three keys, four events each, interleaved in commit order...
    let keys = ["a", "b", "c"];
    let events: Vec<Event> = (1..=12u64)
        .map(|n| event(n, "public.t", keys[(n % 3) as usize]))
        .collect();
    // ...dead-lettered in another order: newest first, a key at a time.
    let mut scrambled: Vec<&Event> = events.iter().collect();
    scrambled.sort_by_key(|e| (e.key.clone(), std::cmp::Reverse(e.commit_lsn)));
    for e in scrambled {
        dead_letter(&*store, "s", &[e]).await;
    }
    let replayed = store
        .replay_dead_letters(DeadLetterFilter::default(), UnixMillis(0))
        .await
        .expect("replay");
    assert_eq!(replayed, 12);

    // Delivering heads until none is left gives every key's events in commit order.
    let mut delivered: Vec<String> = Vec::new();
    for _ in 0..12 {
        let due = due_ids(&*store, "s", 0).await;
        if due.is_empty() {
            break;
        }
        assert!(due.len() <= keys.len(), "one head per key: {due:?}");
        store
            .remove_pending("s", due.clone())
            .await
            .expect("remove");
        delivered.extend(due);
    }
    assert_eq!(delivered.len(), 12, "{delivered:?}");
    for key in keys {
        let of_key: Vec<&String> = delivered
            .iter()
            .filter(|id| events.iter().any(|e| &e.id == *id && e.key.ends_with(key)))
            .collect();
        let want: Vec<&String> = events
            .iter()
            .filter(|e| e.key.ends_with(key))
            .map(|e| &e.id)
            .collect();
        assert_eq!(of_key, want, "key {key}");
    }
}
