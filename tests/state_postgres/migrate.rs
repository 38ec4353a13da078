//! A schema an earlier walhook wrote, brought up to date by this one.

use walhook::state::{Pause, Store};

use super::Schema;

#[tokio::test]
async fn a_version_1_schema_keeps_a_recorded_pause_as_the_receivers() {
    // GIVEN a schema as walhook wrote it at version 1 (no pause columns, no lease): `billing`
    // paused by a 410 (a reason and nothing else), `search` not paused
    let schema = Schema::new().await;
    drop(schema.open().await);
    let client = schema.db.client().await;
    client
        .batch_execute(
            "ALTER TABLE walhook_state.subscribers DROP COLUMN paused_at, DROP COLUMN paused_by;
             DROP TABLE walhook_state.leader;
             DROP FUNCTION walhook_state.fence(bigint);
             UPDATE walhook_state.schema_version SET version = 1;
             INSERT INTO walhook_state.subscribers (name, paused_reason)
             VALUES ('billing', '410 Gone from billing.internal');
             INSERT INTO walhook_state.subscribers (name, last_success_at) VALUES ('search', 5);",
        )
        .await
        .unwrap();
    // WHEN this walhook opens it
    let before = walhook::state::UnixMillis::now();
    let store = schema.open().await;
    // THEN `billing` is still paused, by the receiver, since the upgrade; `search` is not
    let pause = store
        .paused("billing")
        .await
        .unwrap()
        .expect("still paused");
    assert_eq!(
        (pause.reason.as_deref(), pause.by.as_str()),
        (Some("410 Gone from billing.internal"), "receiver")
    );
    let now = walhook::state::UnixMillis::now();
    assert!(
        pause.since.0 >= before.0 - 1_000 && pause.since.0 <= now.0 + 1_000,
        "{pause:?}"
    );
    assert_eq!(store.paused("search").await.unwrap(), None);
    let version: i32 = client
        .query_one("SELECT version FROM walhook_state.schema_version", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 3);
    // AND it resumes as any pause does
    let lifted: Option<Pause> = store.resume("billing").await.unwrap();
    assert_eq!(lifted, Some(pause));
    assert_eq!(store.paused("billing").await.unwrap(), None);
}
