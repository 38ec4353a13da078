//! `walhook check` with `[state] url`: the state database reachable, the user allowed to
//! create the state schema (with the GRANT that fixes it, run as given), and who leads;
//! changing nothing.

use crate::faults::harness::{fresh_dir, walhook_command, write_config};
use crate::support::Server;

use super::Schema;

fn check(config: &std::path::Path) -> (Option<i32>, String) {
    let out = walhook_command(config, &["check"]).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn check_says_whether_the_state_user_may_create_its_schema_and_who_leads() {
    // GIVEN a state user without CREATE on its database
    let schema = Schema::new().await;
    let db = schema.db.name().to_string();
    let client = schema.db.client().await;
    let user = format!("{db}_checker");
    client
        .batch_execute(&format!("CREATE ROLE {user} LOGIN PASSWORD 'pw'"))
        .await
        .unwrap();
    let state_url = Server::get().url_for(&user, "pw", &db);
    let dir = fresh_dir(&format!("{db}-check-state"));
    let config = write_config(
        &dir,
        &format!(
            r#"[source]
            url = "{source}"
            [state]
            url = "{state_url}"
            schema = "walhook_state"
            [subscribers.s]
            url = "http://127.0.0.1:9/"
            [[events]]
            type = "t"
            table = "public.t"
            subscribers = ["s"]
            "#,
            source = schema.url(),
        ),
    );
    // WHEN checked
    let (code, out) = check(&config);
    // THEN the state is a problem with the GRANT that fixes it
    assert_eq!(code, Some(1), "{out}");
    let said = format!(
        "✗ state: user `{user}` may not create the state schema `walhook_state` or its tables\n    fix: GRANT CREATE ON DATABASE \"{db}\" TO \"{user}\";"
    );
    assert!(out.contains(&said), "{out}");
    // WHEN the fix runs as given
    let fix = said.rsplit("fix: ").next().unwrap();
    client.batch_execute(fix).await.unwrap();
    let (_, out) = check(&config);
    // THEN the state passes, nothing was created, and no walhook has led yet
    assert!(
        out.contains(
            "✓ state database reachable; schema `walhook_state` will be created by `walhook run`"
        ),
        "{out}"
    );
    assert!(
        out.contains("✓ leadership: no walhook has led yet"),
        "{out}"
    );
    assert!(!out.contains("✗ state"), "{out}");
    let made: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'walhook_state')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!made, "check created the schema");
    client
        .batch_execute(&format!(
            "REVOKE CREATE ON DATABASE \"{db}\" FROM {user}; DROP ROLE {user}"
        ))
        .await
        .unwrap();
}
