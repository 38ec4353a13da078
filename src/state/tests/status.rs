use super::{event, hold, memory, TempDir};
use crate::model::Lsn;
use crate::state::{Failure, LastError, Store, SubscriberStatus, UnixMillis};

#[test]
fn the_checkpoint_never_moves_backward_and_survives_reopening() {
    let dir = TempDir::new();
    let path = dir.path().join("state.db");
    {
        let mut store = Store::open(&path).expect("open");
        assert_eq!(store.confirmed().expect("read"), None);
        assert_eq!(
            store.save_confirmed(Lsn(0x16_B374_D848)).expect("save"),
            Lsn(0x16_B374_D848)
        );
        assert_eq!(
            store.save_confirmed(Lsn(0x10)).expect("save"),
            Lsn(0x16_B374_D848)
        );
        assert_eq!(store.confirmed().expect("read"), Some(Lsn(0x16_B374_D848)));
    }
    let mut store = Store::open(&path).expect("reopen");
    assert_eq!(store.confirmed().expect("read"), Some(Lsn(0x16_B374_D848)));
    // The whole u64 range round-trips, and compares as unsigned.
    assert_eq!(
        store.save_confirmed(Lsn(u64::MAX)).expect("save"),
        Lsn(u64::MAX)
    );
    assert_eq!(store.save_confirmed(Lsn(1)).expect("save"), Lsn(u64::MAX));
    assert_eq!(store.confirmed().expect("read"), Some(Lsn(u64::MAX)));
}

#[test]
fn an_unknown_subscriber_has_an_empty_status() {
    let store = memory();
    assert_eq!(
        store.subscriber_status("nobody").expect("status"),
        SubscriberStatus {
            name: "nobody".to_string(),
            pending: 0,
            oldest_pending_commit_at: None,
            dead_letters: 0,
            paused: None,
            last_success_at: None,
            last_error: None,
        }
    );
    assert!(store.status().expect("status").is_empty());
}

#[test]
fn status_counts_per_subscriber() {
    let mut store = memory();
    let events: Vec<_> = (1..=4)
        .map(|n| event(n, "public.t", &n.to_string()))
        .collect();
    hold(&mut store, "billing", &events[1..], 0);
    hold(&mut store, "billing", &events[..1], 0);
    let failure = Failure {
        id: &events[3].id,
        attempts: 1,
        at: UnixMillis(9),
        status: Some(404),
        error: None,
    };
    store
        .move_to_dead_letters("billing", &[failure])
        .expect("move");
    store
        .set_paused(
            "billing",
            Some("410 Gone from https://billing.internal/hooks"),
        )
        .expect("pause");
    store
        .record_success("billing", UnixMillis(50))
        .expect("success");
    store
        .record_error("billing", UnixMillis(60), "connection refused")
        .expect("error");
    store
        .record_error("billing", UnixMillis(70), "timed out after 10s")
        .expect("error");
    store
        .record_success("search", UnixMillis(80))
        .expect("success");

    let status = store.status().expect("status");
    assert_eq!(
        status,
        [
            SubscriberStatus {
                name: "billing".to_string(),
                pending: 3,
                // events[0] was stored last but committed first.
                oldest_pending_commit_at: Some(UnixMillis::from_micros(
                    events[0].commit_time_micros
                )),
                dead_letters: 1,
                paused: Some("410 Gone from https://billing.internal/hooks".to_string()),
                last_success_at: Some(UnixMillis(50)),
                last_error: Some(LastError {
                    at: UnixMillis(70),
                    text: "timed out after 10s".to_string(),
                }),
            },
            SubscriberStatus {
                name: "search".to_string(),
                pending: 0,
                oldest_pending_commit_at: None,
                dead_letters: 0,
                paused: None,
                last_success_at: Some(UnixMillis(80)),
                last_error: None,
            },
        ]
    );

    store.set_paused("billing", None).expect("resume");
    assert_eq!(store.paused_reason("billing").expect("read"), None);
    assert_eq!(
        store
            .subscriber_status("billing")
            .expect("status")
            .last_success_at,
        Some(UnixMillis(50))
    );
}

#[test]
fn a_pause_survives_reopening() {
    let dir = TempDir::new();
    let path = dir.path().join("state.db");
    Store::open(&path)
        .expect("open")
        .set_paused("billing", Some("410 Gone"))
        .expect("pause");
    let store = Store::open(&path).expect("reopen");
    assert_eq!(
        store.paused_reason("billing").expect("read").as_deref(),
        Some("410 Gone")
    );
    assert_eq!(store.paused_reason("search").expect("read"), None);
}
