//! `walhook check`, `setup` and `teardown` against a real Postgres: each prerequisite made to
//! fail, reported with its fix, and the fix, run as given, makes it pass.

use std::process::Command;

use walhook::database::prerequisites::{check, Expectations, Finding, Verdict};
use walhook::model::TableName;

use crate::support::{connect, Cluster, TestDb};

mod failover;
mod others;

fn orders() -> TableName {
    TableName {
        schema: "public".into(),
        name: "orders".into(),
    }
}

async fn findings(
    client: &tokio_postgres::Client,
    name: &str,
    tables: &[&TableName],
) -> Vec<Finding> {
    check(
        client,
        &Expectations {
            slot: name,
            publication: name,
            tables,
            canary: None,
        },
    )
    .await
    .unwrap()
}

/// The one problem whose summary contains `needle`.
fn problem<'a>(findings: &'a [Finding], needle: &str) -> &'a Finding {
    let matching: Vec<&Finding> = findings
        .iter()
        .filter(|f| !f.is_ok() && f.summary.contains(needle))
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "no single problem `{needle}` in {findings:#?}"
    );
    matching[0]
}

/// Runs a fix the way psql would: each line its own statement.
async fn run_fix(client: &tokio_postgres::Client, fix: &str) {
    for line in fix.lines() {
        client
            .batch_execute(line)
            .await
            .unwrap_or_else(|e| panic!("{line}: {e}"));
    }
}

fn no_problem(findings: &[Finding], needle: &str) {
    assert!(
        !findings
            .iter()
            .any(|f| !f.is_ok() && f.summary.contains(needle)),
        "unexpected problem `{needle}` in {findings:#?}"
    );
}

/// A database with `orders`, its publication and slot in place: nothing to report.
async fn ready_db() -> (TestDb, tokio_postgres::Client) {
    let db = TestDb::new().await;
    let client = db.client().await;
    let name = db.name();
    client
        .batch_execute(&format!(
            "CREATE TABLE orders (id bigint PRIMARY KEY, status text);
             CREATE PUBLICATION {name} FOR TABLE orders;"
        ))
        .await
        .unwrap();
    run_fix(
        &client,
        &format!("SELECT pg_create_logical_replication_slot('{name}', 'pgoutput');"),
    )
    .await;
    (db, client)
}

#[tokio::test]
async fn a_ready_database_has_no_problems() {
    let (db, client) = ready_db().await;
    let found = findings(&client, db.name(), &[&orders()]).await;
    assert!(found.iter().all(|f| f.is_ok()), "{found:#?}");
    assert_eq!(found.len(), 6, "{found:#?}");
    // AND the server's version comes first, saying what it cannot do
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .unwrap()
        .get(0);
    assert!(found[0].summary.starts_with("Postgres 1"), "{found:#?}");
    assert_eq!(
        found[0]
            .summary
            .contains("backfills and initial_backfill are unavailable"),
        version < 140_000,
        "{found:#?}"
    );
}

#[tokio::test]
async fn wal_level_not_logical() {
    // GIVEN a cluster with wal_level = replica
    let cluster = Cluster::start("wal_level = replica");
    let client = connect(&cluster.superuser_url("postgres")).await;
    // WHEN checked
    let found = findings(&client, "walhook", &[]).await;
    // THEN wal_level is the problem, and its fix works after a restart
    let p = problem(&found, "wal_level is `replica`");
    assert_eq!(p.verdict, Verdict::Blocks);
    let fix = p.fix.clone().unwrap();
    assert_eq!(
        fix,
        "ALTER SYSTEM SET wal_level = logical;  -- then restart Postgres"
    );
    client.batch_execute(&fix).await.unwrap();
    drop(client);
    cluster.restart();
    let client = connect(&cluster.superuser_url("postgres")).await;
    no_problem(&findings(&client, "walhook", &[]).await, "wal_level");
}

#[tokio::test]
async fn role_without_replication() {
    // GIVEN a role that may log in and read the table but not replicate
    let (db, admin) = ready_db().await;
    let role = format!("r_{}", db.name());
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'pw'; GRANT SELECT ON orders TO {role};"
        ))
        .await
        .unwrap();
    let server = crate::support::Server::get();
    let as_role = connect(&server.url_for(&role, "pw", db.name())).await;
    // WHEN checked as that role
    let found = findings(&as_role, db.name(), &[&orders()]).await;
    // THEN the missing privilege is named with the GRANT that fixes it
    let p = problem(&found, "has neither REPLICATION nor SUPERUSER");
    assert_eq!(p.verdict, Verdict::Blocks);
    assert_eq!(
        p.fix.as_deref(),
        Some(format!("ALTER ROLE \"{role}\" WITH REPLICATION;").as_str())
    );
    run_fix(&admin, p.fix.as_deref().unwrap()).await;
    let found = findings(&as_role, db.name(), &[&orders()]).await;
    assert!(found.iter().all(|f| f.is_ok()), "{found:#?}");
}

#[tokio::test]
async fn role_without_select_on_a_table() {
    let (db, admin) = ready_db().await;
    let role = format!("s_{}", db.name());
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN REPLICATION PASSWORD 'pw';"
        ))
        .await
        .unwrap();
    let server = crate::support::Server::get();
    let as_role = connect(&server.url_for(&role, "pw", db.name())).await;
    let found = findings(&as_role, db.name(), &[&orders()]).await;
    let p = problem(&found, "may not SELECT from public.orders");
    assert_eq!(p.verdict, Verdict::Degraded);
    assert_eq!(
        p.fix.as_deref(),
        Some(format!("GRANT SELECT ON \"public\".\"orders\" TO \"{role}\";").as_str())
    );
    run_fix(&admin, p.fix.as_deref().unwrap()).await;
    no_problem(&findings(&as_role, db.name(), &[&orders()]).await, "SELECT");
}

#[tokio::test]
async fn mapped_table_missing() {
    let (db, client) = ready_db().await;
    let refunds = TableName {
        schema: "public".into(),
        name: "refunds".into(),
    };
    let found = findings(&client, db.name(), &[&orders(), &refunds]).await;
    let p = problem(&found, "table public.refunds does not exist");
    assert_eq!(p.verdict, Verdict::Blocks);
    assert_eq!(
        p.fix.as_deref(),
        Some("create the table, or correct `table = \"public.refunds\"` in the config")
    );
    client
        .batch_execute(&format!(
            "CREATE TABLE refunds (id int PRIMARY KEY); ALTER PUBLICATION {} ADD TABLE refunds;",
            db.name()
        ))
        .await
        .unwrap();
    let found = findings(&client, db.name(), &[&orders(), &refunds]).await;
    assert!(found.iter().all(|f| f.is_ok()), "{found:#?}");
}

#[tokio::test]
async fn table_without_primary_key_or_full_identity() {
    let (db, client) = ready_db().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE events_log (at timestamptz, what text); ALTER PUBLICATION {} ADD TABLE events_log;",
            db.name()
        ))
        .await
        .unwrap();
    let log = TableName {
        schema: "public".into(),
        name: "events_log".into(),
    };
    let found = findings(&client, db.name(), &[&log]).await;
    let p = problem(
        &found,
        "table public.events_log has no primary key and no REPLICA IDENTITY FULL",
    );
    assert_eq!(p.verdict, Verdict::Degraded);
    assert_eq!(
        p.fix.as_deref(),
        Some(
            "ALTER TABLE \"public\".\"events_log\" REPLICA IDENTITY FULL;  -- or add a primary key"
        )
    );
    run_fix(&client, p.fix.as_deref().unwrap()).await;
    let found = findings(&client, db.name(), &[&log]).await;
    assert!(found.iter().all(|f| f.is_ok()), "{found:#?}");
}

#[tokio::test]
async fn publication_missing_or_lacking_a_table() {
    let (db, client) = ready_db().await;
    let name = db.name();
    client
        .batch_execute(&format!(
            "CREATE TABLE customers (id int PRIMARY KEY); DROP PUBLICATION {name};"
        ))
        .await
        .unwrap();
    let customers = TableName {
        schema: "public".into(),
        name: "customers".into(),
    };
    let tables = [&orders(), &customers];
    // GIVEN no publication: its CREATE is the fix
    let found = findings(&client, name, &tables).await;
    let p = problem(&found, &format!("publication `{name}` does not exist"));
    assert_eq!(p.verdict, Verdict::RunFixes);
    assert_eq!(
        p.fix.as_deref(),
        Some(format!("CREATE PUBLICATION \"{name}\" FOR TABLE \"public\".\"orders\", \"public\".\"customers\";  -- or run `walhook setup --apply`").as_str())
    );
    // GIVEN a publication with only orders: ADD TABLE customers is the fix
    client
        .batch_execute(&format!("CREATE PUBLICATION {name} FOR TABLE orders"))
        .await
        .unwrap();
    let found = findings(&client, name, &tables).await;
    let p = problem(
        &found,
        &format!("publication `{name}` lacks 1 mapped table(s)"),
    );
    assert_eq!(p.verdict, Verdict::RunFixes);
    assert_eq!(
        p.fix.as_deref(),
        Some(format!("ALTER PUBLICATION \"{name}\" ADD TABLE \"public\".\"customers\";").as_str())
    );
    run_fix(&client, p.fix.as_deref().unwrap()).await;
    let found = findings(&client, name, &tables).await;
    assert!(found.iter().all(|f| f.is_ok()), "{found:#?}");
}

#[tokio::test]
async fn slot_missing_or_using_another_plugin() {
    let (db, client) = ready_db().await;
    let name = db.name();
    // GIVEN a slot of the right name using test_decoding
    run_fix(
        &client,
        &format!(
            "SELECT pg_drop_replication_slot('{name}');\nSELECT pg_create_logical_replication_slot('{name}', 'test_decoding');"
        ),
    )
    .await;
    let found = findings(&client, name, &[&orders()]).await;
    let p = problem(
        &found,
        "using plugin `test_decoding`, not a logical slot using pgoutput",
    );
    assert_eq!(p.verdict, Verdict::Blocks);
    // WHEN the fix (drop, create) is run
    run_fix(&client, p.fix.as_deref().unwrap()).await;
    // THEN all is well
    let found = findings(&client, name, &[&orders()]).await;
    assert!(found.iter().all(|f| f.is_ok()), "{found:#?}");
    // GIVEN no slot at all
    client
        .batch_execute(&format!("SELECT pg_drop_replication_slot('{name}')"))
        .await
        .unwrap();
    let found = findings(&client, name, &[&orders()]).await;
    let p = problem(&found, &format!("replication slot `{name}` does not exist"));
    assert_eq!(p.verdict, Verdict::RunFixes);
    run_fix(&client, p.fix.as_deref().unwrap()).await;
    let found = findings(&client, name, &[&orders()]).await;
    assert!(found.iter().all(|f| f.is_ok()), "{found:#?}");
}

#[tokio::test]
async fn replication_slots_exhausted() {
    // GIVEN a cluster with one slot allowed, taken by someone else
    let cluster = Cluster::start("max_replication_slots = 1");
    let client = connect(&cluster.superuser_url("postgres")).await;
    client
        .batch_execute("SELECT pg_create_logical_replication_slot('other', 'pgoutput')")
        .await
        .unwrap();
    // WHEN checked
    let found = findings(&client, "walhook", &[]).await;
    // THEN both the missing slot and the exhausted limit are reported
    let missing = problem(&found, "replication slot `walhook` does not exist");
    assert_eq!(missing.verdict, Verdict::RunFixes);
    let p = problem(
        &found,
        "all 1 replication slots (max_replication_slots) are in use",
    );
    assert_eq!(p.verdict, Verdict::Blocks);
    run_fix(&client, p.fix.as_deref().unwrap()).await;
    drop(client);
    cluster.restart();
    let client = connect(&cluster.superuser_url("postgres")).await;
    no_problem(
        &findings(&client, "walhook", &[]).await,
        "max_replication_slots",
    );
}

/// Writes a config for `db` with the shop tables mapped; returns its path.
fn shop_config(db: &TestDb, dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("walhook.toml");
    std::fs::write(
        &path,
        format!(
            r#"
            [source]
            url = "{url}"
            slot = "{name}"
            publication = "{name}"
            [subscribers.billing]
            url = "http://127.0.0.1:9/hooks"
            [[events]]
            type = "order.created"
            table = "public.orders"
            operations = ["insert"]
            subscribers = ["billing"]
            [[events]]
            type = "customer.changed"
            table = "public.customers"
            subscribers = ["billing"]
            "#,
            url = db.url(),
            name = db.name()
        ),
    )
    .unwrap();
    path
}

fn walhook(config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_walhook"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn check_setup_apply_check_teardown_with_the_binary() {
    // GIVEN the shop tables and nothing of walhook's
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE customers (id int PRIMARY KEY, name text);
             CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int, status text);",
        )
        .await
        .unwrap();
    let dir = tempdir(db.name());
    let config = shop_config(&db, &dir);
    let name = db.name();

    // WHEN checked THEN the publication and slot are missing, each with its fix; exit 1
    let (code, out, _) = walhook(&config, &["check"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("✗ publication `{name}` does not exist")),
        "{out}"
    );
    assert!(
        out.contains(&format!("✗ replication slot `{name}` does not exist")),
        "{out}"
    );
    assert!(out.contains("    fix: CREATE PUBLICATION"), "{out}");
    assert!(out.contains("2 problem(s) found"), "{out}");

    // WHEN setup prints its plan THEN nothing changes yet
    let (code, out, _) = walhook(&config, &["setup"]);
    assert_eq!(code, 0);
    assert!(out.contains(&format!(
        "CREATE PUBLICATION \"{name}\" FOR TABLE \"public\".\"orders\", \"public\".\"customers\" WITH (publish = 'insert, update, delete, truncate');"
    )), "{out}");
    assert!(
        out.contains(&format!(
            "SELECT pg_create_logical_replication_slot('{name}', 'pgoutput');"
        )),
        "{out}"
    );
    assert_eq!(walhook(&config, &["check"]).0, 1);

    // WHEN setup --apply runs THEN check passes
    let (code, out, err) = walhook(&config, &["setup", "--apply"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = walhook(&config, &["check"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ready: walhook can stream from this database"),
        "{out}"
    );
    let (_, out, _) = walhook(&config, &["setup"]);
    assert!(out.contains("nothing to do"), "{out}");

    // WHEN torn down THEN the slot and walhook's publication are gone
    let (code, out, _) = walhook(&config, &["teardown"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("dropped replication slot `{name}`")),
        "{out}"
    );
    let left: i64 = client
        .query_one(
            "SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1) + (SELECT count(*) FROM pg_publication WHERE pubname = $1)",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn check_reports_an_unreachable_database_and_a_bad_config() {
    let dir = tempdir("unreachable");
    let path = dir.join("walhook.toml");
    std::fs::write(
        &path,
        r#"
        source.url = "postgres://walhook:pw@127.0.0.1:1/app?sslmode=disable"
        subscribers.a.url = "http://127.0.0.1:9/"
        [[events]]
        type = "t"
        table = "public.t"
        subscribers = ["a"]
        "#,
    )
    .unwrap();
    let (code, out, _) = walhook(&path, &["check"]);
    assert_eq!(code, 1);
    assert!(out.contains("✗ cannot connect to the database"), "{out}");
    assert!(out.contains("127.0.0.1:1"), "{out}");

    std::fs::write(&path, "source.url = 3\n[[events]]\ntable = \"t\"\n").unwrap();
    let (code, _, err) = walhook(&path, &["check"]);
    assert_eq!(code, 1);
    assert!(err.contains("error: config file"), "{err}");
    let (code, _, err) = walhook(&path, &["frobnicate"]);
    assert_eq!(code, 2, "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("walhook-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
