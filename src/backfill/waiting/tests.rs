//! What a backfill says it waits for, and when it writes it.

use super::*;

const FULL: Option<Load> = Some(Load {
    unsettled: 19_500,
    limit: 20_000,
    read: Lsn(0),
    chunk_unsettled: 0,
});

#[test]
fn a_chunk_behind_a_backlog_says_how_far_and_why() {
    assert_eq!(
        describe(
            None,
            Some(&Wait::Stream {
                behind: Some(43_200_000),
                load: FULL,
                eta: Some(Duration::from_secs(130)),
            })
        )
        .unwrap(),
        "waiting for the stream to reach the chunk (walhook is 41.2 MB behind it: \
         subscribers take events slower than the table was written; about 2m 10s at the \
         current pace)"
    );
    // A pipeline too busy to answer is handing events to a full subscriber queue.
    assert_eq!(
        describe(
            None,
            Some(&Wait::Stream {
                behind: Some(2048),
                load: None,
                eta: None,
            })
        )
        .unwrap(),
        "waiting for the stream to reach the chunk (walhook is 2.0 kB behind it: \
         subscribers take events slower than the table was written)"
    );
    assert_eq!(
        describe(
            None,
            Some(&Wait::Stream {
                behind: None,
                load: None,
                eta: None,
            })
        )
        .unwrap(),
        "waiting for the stream to reach the chunk (subscribers take events slower than \
         the table was written)"
    );
    // Subscribers keep up: the stream itself is still being read.
    assert_eq!(
        describe(
            None,
            Some(&Wait::Stream {
                behind: Some(500),
                load: Some(Load {
                    unsettled: 12,
                    limit: 20_000,
                    read: Lsn(0),
                    chunk_unsettled: 0,
                }),
                eta: Some(Duration::from_millis(3_200)),
            })
        )
        .unwrap(),
        "waiting for the stream to reach the chunk (walhook is 500 bytes behind it: still \
         reading the changes written before it; about 4s at the current pace)"
    );
}

#[test]
fn a_dispatched_chunk_names_its_subscribers_and_rows() {
    let one = ["app".to_string()];
    assert_eq!(
        describe(
            None,
            Some(&Wait::Subscribers {
                names: &one,
                rows: 973,
                load: Some(Load {
                    unsettled: 20_000,
                    limit: 20_000,
                    read: Lsn(0),
                    chunk_unsettled: 612,
                }),
            })
        )
        .unwrap(),
        "waiting for subscriber app to accept the chunk's 973 rows (612 events to go, among \
         20000 walhook holds for subscribers)"
    );
    let two = ["billing".to_string(), "crm".to_string()];
    assert_eq!(
        describe(
            None,
            Some(&Wait::Subscribers {
                names: &two,
                rows: 1,
                load: None,
            })
        )
        .unwrap(),
        "waiting for subscribers billing, crm to accept the chunk's 1 row"
    );
}

#[test]
fn between_chunks_it_says_why_it_pauses_and_what_it_reads_again() {
    assert_eq!(describe(None, None), None);
    assert_eq!(
        describe(None, Some(&Wait::Rate { rate: 50 })).unwrap(),
        "pausing to keep to --rate 50 rows/s"
    );
    assert_eq!(
        describe(Some(253), None).unwrap(),
        "reading again 253 rows the stream changed without their TOASTed columns"
    );
    assert_eq!(
        describe(Some(1), Some(&Wait::Overtaken)).unwrap(),
        "reading again 1 row the stream changed without their TOASTed columns; pausing: \
         the stream changed them again while they were read"
    );
    let one = ["app".to_string()];
    assert_eq!(
        describe(
            Some(3),
            Some(&Wait::Subscribers {
                names: &one,
                rows: 3,
                load: None
            })
        )
        .unwrap(),
        "reading again 3 rows the stream changed without their TOASTed columns; waiting for \
         subscriber app to accept the chunk's 3 rows"
    );
}

#[test]
fn the_eta_is_the_rest_at_the_pace_read_since_the_wait_began() {
    let ten_seconds_ago = Instant::now() - Duration::from_secs(10);
    let eta = eta(
        Some((ten_seconds_ago, Lsn(1000))),
        Some(Lsn(3000)),
        Some(500),
    )
    .unwrap();
    assert!(eta.abs_diff(Duration::from_millis(2500)) < Duration::from_millis(100));
    // Not moved, or nothing heard: no guess.
    assert_eq!(eta_none(Some(Lsn(1000))), None);
    assert_eq!(eta_none(None), None);
}

fn eta_none(last: Option<Lsn>) -> Option<Duration> {
    eta(Some((Instant::now(), Lsn(1000))), last, Some(500))
}

#[tokio::test]
async fn a_wait_is_recorded_after_two_seconds_at_most_once_a_second() {
    let store: Arc<dyn Store> = Arc::new(crate::state::SqliteStore::open_in_memory().unwrap());
    let id = store
        .request_backfill(
            crate::state::NewBackfill {
                table: "public.orders".into(),
                subscribers: vec!["app".into()],
                where_sql: None,
                batch_rows: 10,
                rate: None,
                total_estimate: None,
            },
            crate::state::UnixMillis(1),
        )
        .await
        .unwrap();
    let recorded = || async { store.backfill(id).await.unwrap().unwrap().waiting };
    let mut notes = Notes::new(id, store.clone());
    let wait = Wait::Rate { rate: 5 };
    // A short wait says nothing.
    notes.offer(Some(&wait), Duration::from_secs(1)).await;
    assert_eq!(recorded().await, None);
    // A long one is recorded...
    notes.offer(Some(&wait), Duration::from_secs(2)).await;
    assert_eq!(
        recorded().await.as_deref(),
        Some("pausing to keep to --rate 5 rows/s")
    );
    // ...and changes no sooner than a second later.
    let other = Wait::Rate { rate: 6 };
    notes.offer(Some(&other), Duration::from_secs(3)).await;
    assert_eq!(
        recorded().await.as_deref(),
        Some("pausing to keep to --rate 5 rows/s")
    );
    let a_second_ago = || Some(Instant::now() - WRITE_EVERY);
    notes.written_at = a_second_ago();
    notes.offer(Some(&other), Duration::from_secs(3)).await;
    assert_eq!(
        recorded().await.as_deref(),
        Some("pausing to keep to --rate 6 rows/s")
    );
    // A pause that ends clears it.
    notes.written_at = a_second_ago();
    notes.pause(Duration::from_millis(100), wait).await;
    assert_eq!(recorded().await, None);
}
