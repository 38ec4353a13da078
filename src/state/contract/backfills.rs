use super::Backend;
use crate::state::{BackfillProgress, BackfillStatus, NewBackfill, UnixMillis};

pub async fn a_backfill_goes_from_pending_through_progress_to_done(backend: &dyn Backend) {
    let store = backend.open().await;
    let new = NewBackfill {
        table: "public.orders".into(),
        subscribers: vec!["billing".into()],
        where_sql: Some("id > 5".into()),
        batch_rows: 1000,
        rate: None,
        total_estimate: Some(42),
    };
    let a = store
        .request_backfill(new.clone(), UnixMillis(10))
        .await
        .unwrap();
    let b = store
        .request_backfill(new.clone(), UnixMillis(11))
        .await
        .unwrap();
    store.start_backfill(b, UnixMillis(12)).await.unwrap();
    let active = store.active_backfills().await.unwrap();
    assert_eq!(
        active.iter().map(|f| (f.id, f.status)).collect::<Vec<_>>(),
        [(b, BackfillStatus::Running), (a, BackfillStatus::Pending)]
    );
    store
        .set_backfill_waiting(
            b,
            Some("waiting for the stream to reach the chunk".to_string()),
        )
        .await
        .unwrap();
    let waiting = store.backfill(b).await.unwrap().unwrap();
    assert_eq!(
        waiting.waiting.as_deref(),
        Some("waiting for the stream to reach the chunk")
    );
    assert_eq!(waiting.updated_at, UnixMillis(12));
    store
        .save_backfill_progress(
            b,
            BackfillProgress {
                last_key: Some("[7]".to_string()),
                reread: vec!["[2]".to_string()],
                rows_done: 3,
                waiting: None,
            },
            UnixMillis(13),
        )
        .await
        .unwrap();
    let got = store.backfill(b).await.unwrap().unwrap();
    assert_eq!(got.waiting, None);
    assert_eq!(got.last_key.as_deref(), Some("[7]"));
    assert_eq!(got.reread, ["[2]"]);
    assert!(store.backfill(a).await.unwrap().unwrap().reread.is_empty());
    assert_eq!(got.rows_done, 3);
    assert_eq!(got.subscribers, ["billing"]);
    assert_eq!(got.started_at, Some(UnixMillis(12)));
    store
        .set_backfill_waiting(b, Some("pausing".to_string()))
        .await
        .unwrap();
    store.clear_backfill_waits().await.unwrap();
    assert_eq!(store.backfill(b).await.unwrap().unwrap().waiting, None);
    store
        .set_backfill_waiting(b, Some("pausing".to_string()))
        .await
        .unwrap();
    store
        .finish_backfill(b, None, UnixMillis(14))
        .await
        .unwrap();
    store
        .finish_backfill(a, Some("no primary key".to_string()), UnixMillis(15))
        .await
        .unwrap();
    assert!(store.active_backfills().await.unwrap().is_empty());
    let failed = store.backfill(a).await.unwrap().unwrap();
    assert_eq!(failed.status, BackfillStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("no primary key"));
    let done = store.backfill(b).await.unwrap().unwrap();
    assert_eq!((done.status, done.waiting), (BackfillStatus::Done, None));
}
