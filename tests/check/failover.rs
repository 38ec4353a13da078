//! `source.failover = true`: on Postgres 17 and later the slot is created as a failover slot,
//! and `check` says what the DBA must still configure; before 17, `check` and `setup` refuse
//! with the reason. Which of the two this run sees depends on the server's major
//! (`WALHOOK_TEST_PG_VERSION=18` in `.ci/run` takes the first).

use super::{shop_config, tempdir, walhook};
use crate::support::TestDb;

#[tokio::test]
async fn a_failover_slot_where_postgres_has_them_and_a_clear_refusal_where_not() {
    // GIVEN the shop tables and a config asking for a failover slot
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE customers (id int PRIMARY KEY, name text);
             CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int, status text);",
        )
        .await
        .unwrap();
    let name = db.name();
    let dir = tempdir(&format!("{name}-failover"));
    let config = shop_config(&db, &dir);
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        &format!("publication = \"{name}\""),
        &format!("publication = \"{name}\"\n            failover = true"),
        1,
    );
    std::fs::write(&config, text).unwrap();
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .unwrap()
        .get(0);
    let slots = |failover: &'static str| {
        let client = &client;
        async move {
            client
                .query_opt(
                    &format!("SELECT {failover} FROM pg_replication_slots WHERE slot_name = $1"),
                    &[&name],
                )
                .await
                .unwrap()
                .map(|r| r.get::<_, bool>(0))
        }
    };

    if version < 170_000 {
        // WHEN checked and set up on a server without failover slots
        let (code, out, _) = walhook(&config, &["check"]);
        // THEN both refuse, saying why and what to do, and no slot is made
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains("✗ source.failover needs Postgres 17 or later, which has failover slots"),
            "{out}"
        );
        assert!(
            out.contains("    fix: remove source.failover, or upgrade Postgres to 17 or later"),
            "{out}"
        );
        let (code, out, err) = walhook(&config, &["setup", "--apply"]);
        assert_ne!(code, 0, "{out}");
        assert!(
            err.contains("source.failover needs Postgres 17 or later"),
            "{err}"
        );
        assert_eq!(slots("true").await, None);
        return;
    }
    // WHEN checked before setup THEN the slot is to be created as a failover slot, and the
    // primary's synchronized_standby_slots is named as missing, with the settings it takes
    let (code, out, _) = walhook(&config, &["check"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "✓ replication slot `{name}` will be created as a failover slot"
        )),
        "{out}"
    );
    assert!(
        out.contains("✗ synchronized_standby_slots is empty"),
        "{out}"
    );
    assert!(out.contains("sync_replication_slots = on"), "{out}");
    // WHEN set up
    let (code, out, _) = walhook(&config, &["setup"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "SELECT pg_create_logical_replication_slot('{name}', 'pgoutput', false, false, true);"
        )),
        "{out}"
    );
    let (code, out, err) = walhook(&config, &["setup", "--apply"]);
    assert_eq!(code, 0, "{out}{err}");
    // THEN the slot is a failover slot, and check says so
    assert_eq!(slots("failover").await, Some(true));
    let (_, out, _) = walhook(&config, &["check"]);
    assert!(
        out.contains(&format!("✓ replication slot `{name}` is a failover slot")),
        "{out}"
    );
    let (code, out, _) = walhook(&config, &["teardown"]);
    assert_eq!(code, 0, "{out}");
    let _ = std::fs::remove_dir_all(dir);
}
