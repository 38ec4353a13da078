//! A pause recorded in the store, as the worker follows it.

use super::*;

#[tokio::test]
async fn a_recorded_pause_holds_everything_from_the_start_until_it_is_lifted_in_the_store() {
    // GIVEN a pause recorded in the store before the worker starts (by an earlier run, or by
    // `walhook subscribers pause`)
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open_in_memory().expect("an in-memory store"));
    let pause = Pause {
        reason: Some("maintenance".to_string()),
        by: "test".to_string(),
        since: UnixMillis(1),
    };
    store.pause(SUBSCRIBER, pause).await.unwrap();
    let mut h = Harness::start_on(store, 1, Duration::from_millis(20), &[]).await;

    // WHEN events of two keys arrive
    let mut txns = vec![
        h.send("a1", "t:[1]").await,
        h.send("a2", "t:[1]").await,
        h.send("b1", "t:[2]").await,
    ];
    txns.sort();
    // THEN they are stored (settled), not sent
    assert_eq!(h.settled(3).await, txns);
    assert!(h.batches().is_empty());
    assert_eq!(
        h.store()
            .subscriber_status(SUBSCRIBER)
            .await
            .unwrap()
            .pending,
        3
    );

    // WHEN the pause is lifted in the store (as `walhook subscribers resume` does)
    assert!(h.store().resume(SUBSCRIBER).await.unwrap().is_some());
    // THEN within a second or two they go out, in order per key
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.batches().len() < 3 {
        assert!(Instant::now() < deadline, "sent: {:?}", h.batches());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent: Vec<String> = h.batches().concat();
    let at = |id: &str| sent.iter().position(|s| s == id).unwrap();
    assert!(at("a1") < at("a2"), "{sent:?}");
    assert_eq!(sent.len(), 3, "{sent:?}");
    // AND a live event after the resume goes out too
    h.send("c1", "t:[3]").await;
    h.stop().await;
    assert!(h.batches().concat().contains(&"c1".to_string()));
    assert_eq!(
        h.store()
            .subscriber_status(SUBSCRIBER)
            .await
            .unwrap()
            .pending,
        0
    );
}
