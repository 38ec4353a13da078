use super::{event, hold, Backend};
use crate::model::Lsn;
use crate::state::{Failure, LastError, Pause, SubscriberStatus, UnixMillis};

pub async fn the_checkpoint_never_moves_backward_and_survives_reopening(backend: &dyn Backend) {
    {
        let store = backend.open().await;
        assert_eq!(store.confirmed().await.expect("read"), None);
        assert_eq!(
            store
                .save_confirmed(Lsn(0x16_B374_D848))
                .await
                .expect("save"),
            Lsn(0x16_B374_D848)
        );
        assert_eq!(
            store.save_confirmed(Lsn(0x10)).await.expect("save"),
            Lsn(0x16_B374_D848)
        );
        assert_eq!(
            store.confirmed().await.expect("read"),
            Some(Lsn(0x16_B374_D848))
        );
    }
    let store = backend.open().await;
    assert_eq!(
        store.confirmed().await.expect("read"),
        Some(Lsn(0x16_B374_D848))
    );
    // The whole u64 range round-trips, and compares as unsigned.
    assert_eq!(
        store.save_confirmed(Lsn(u64::MAX)).await.expect("save"),
        Lsn(u64::MAX)
    );
    assert_eq!(
        store.save_confirmed(Lsn(1)).await.expect("save"),
        Lsn(u64::MAX)
    );
    assert_eq!(store.confirmed().await.expect("read"), Some(Lsn(u64::MAX)));
}

pub async fn an_unknown_subscriber_has_an_empty_status(backend: &dyn Backend) {
    let store = backend.open().await;
    assert_eq!(
        store.subscriber_status("nobody").await.expect("status"),
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
    assert!(store.status().await.expect("status").is_empty());
}

pub async fn status_counts_per_subscriber(backend: &dyn Backend) {
    let store = backend.open().await;
    let events: Vec<_> = (1..=4)
        .map(|n| event(n, "public.t", &n.to_string()))
        .collect();
    hold(&*store, "billing", &events[1..], 0).await;
    hold(&*store, "billing", &events[..1], 0).await;
    let failure = Failure {
        id: events[3].id.clone(),
        attempts: 1,
        at: UnixMillis(9),
        status: Some(404),
        error: None,
    };
    store
        .move_to_dead_letters("billing", vec![failure])
        .await
        .expect("move");
    let gone = pause(
        Some("410 Gone from https://billing.internal/hooks"),
        "receiver",
        40,
    );
    store.pause("billing", gone.clone()).await.expect("pause");
    store
        .record_success("billing", UnixMillis(50))
        .await
        .expect("success");
    store
        .record_error("billing", UnixMillis(60), "connection refused".to_string())
        .await
        .expect("error");
    store
        .record_error("billing", UnixMillis(70), "timed out after 10s".to_string())
        .await
        .expect("error");
    store
        .record_success("search", UnixMillis(80))
        .await
        .expect("success");

    let status = store.status().await.expect("status");
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
                paused: Some(gone),
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

    store.resume("billing").await.expect("resume");
    assert_eq!(
        store
            .subscriber_status("billing")
            .await
            .expect("read")
            .paused,
        None
    );
    assert_eq!(
        store
            .subscriber_status("billing")
            .await
            .expect("status")
            .last_success_at,
        Some(UnixMillis(50))
    );
}

pub async fn a_pause_survives_reopening(backend: &dyn Backend) {
    let gone = pause(Some("410 Gone"), "receiver", 1_700_000_000_123);
    backend
        .open()
        .await
        .pause("billing", gone.clone())
        .await
        .expect("pause");
    let store = backend.open().await;
    assert_eq!(store.paused("billing").await.expect("read"), Some(gone));
    assert_eq!(store.paused("search").await.expect("read"), None);
}

pub async fn a_pause_holds_until_resumed_and_a_second_pause_keeps_the_first(backend: &dyn Backend) {
    let store = backend.open().await;
    // A subscriber the store never heard of is not paused, and resuming it lifts nothing.
    assert_eq!(store.paused("billing").await.expect("read"), None);
    assert_eq!(store.resume("billing").await.expect("resume"), None);

    // Pausing records why, by whom and since when.
    let maintenance = pause(Some("receiver maintenance"), "command line (user ops)", 100);
    assert_eq!(
        store
            .pause("billing", maintenance.clone())
            .await
            .expect("pause"),
        maintenance
    );
    // A second pause changes nothing: the first stays in force and is returned.
    let gone = pause(Some("410 Gone from billing.internal"), "receiver", 200);
    assert_eq!(
        store.pause("billing", gone).await.expect("pause"),
        maintenance
    );
    assert_eq!(
        store.paused("billing").await.expect("read"),
        Some(maintenance.clone())
    );
    // Other subscribers are not affected; a pause needs no reason.
    let quiet = pause(None, "api", 300);
    assert_eq!(
        store.pause("search", quiet.clone()).await.expect("pause"),
        quiet
    );
    assert_eq!(
        store
            .subscriber_status("search")
            .await
            .expect("status")
            .paused,
        Some(quiet.clone())
    );

    // Resuming returns the pause lifted, once.
    assert_eq!(
        store.resume("billing").await.expect("resume"),
        Some(maintenance)
    );
    assert_eq!(store.resume("billing").await.expect("resume"), None);
    assert_eq!(store.paused("billing").await.expect("read"), None);
    assert_eq!(
        store
            .subscriber_status("billing")
            .await
            .expect("status")
            .paused,
        None
    );
    assert_eq!(store.paused("search").await.expect("read"), Some(quiet));

    // After a resume, a new pause takes effect with its own reason and time.
    let later = pause(Some("again"), "api", 400);
    assert_eq!(
        store.pause("billing", later.clone()).await.expect("pause"),
        later
    );
    assert_eq!(store.paused("billing").await.expect("read"), Some(later));
}

fn pause(reason: Option<&str>, by: &str, since: i64) -> Pause {
    Pause {
        reason: reason.map(str::to_string),
        by: by.to_string(),
        since: UnixMillis(since),
    }
}
