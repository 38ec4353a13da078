//! `walhook run` against a database it cannot use: unreachable, a wrong password, a role
//! without the replication privilege, a publication without the mapped table that walhook may
//! not add, a slot of its name in another database, a slot another walhook streams from. Each
//! exits 1 with a message naming the cause and the fix, and without a panic; what `walhook
//! check` finds, `run` finds before it changes anything, and says it the same way.

use std::time::Duration;

use crate::faults::harness::{
    fresh_dir, wait_streaming, walhook_command, write_config, Process, ITEMS,
};
use crate::support::receiver::Receiver;
use crate::support::{Server, TestDb};

/// Runs `walhook <command>` with `url`, slot and publication `name`, mapping `public.items`;
/// returns its exit code and output.
async fn walhook(command: &str, url: &str, name: &str) -> (Option<i32>, String) {
    let dir = fresh_dir(&format!("run-{name}"));
    let config = write_config(&dir, &config_text(url, name, "http://127.0.0.1:9/"));
    Process::spawn(walhook_command(&config, &[command]))
        .exit(Duration::from_secs(60))
        .await
}

async fn run_with(url: &str, name: &str) -> (Option<i32>, String) {
    walhook("run", url, name).await
}

fn config_text(url: &str, name: &str, receiver: &str) -> String {
    format!(
        "[source]\nurl = \"{url}\"\nslot = \"{name}\"\npublication = \"{name}\"\n\
         [subscribers.s]\nurl = \"{receiver}\"\n\
         [[events]]\ntype = \"item.changed\"\ntable = \"public.items\"\nsubscribers = [\"s\"]\n"
    )
}

/// Exit 1, each of `says` in the output, no panic.
fn fails_saying(result: &(Option<i32>, String), says: &[&str]) {
    let (code, output) = result;
    assert_eq!(*code, Some(1), "{output}");
    for s in says {
        assert!(output.contains(s), "`{s}` not in:\n{output}");
    }
    assert!(!output.contains("panicked"), "{output}");
}

/// The problem `needle` as `walhook check` prints it in `output`: its `✗` line and its `fix:`
/// lines.
fn problem_block(output: &str, needle: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with("✗ ") && l.contains(needle))
        .unwrap_or_else(|| panic!("no problem `{needle}` in:\n{output}"));
    let fixes = lines[start + 1..]
        .iter()
        .take_while(|l| l.starts_with("    fix: "))
        .count();
    lines[start..=start + fixes].join("\n")
}

/// `walhook run` stopped at start on what `walhook check` reports: exit 1, the problem and its
/// fix exactly as check prints them, and before streaming.
async fn run_stops_as_check_says(url: &str, name: &str, needle: &str) -> String {
    let (code, checked) = walhook("check", url, name).await;
    assert_eq!(code, Some(1), "{checked}");
    let block = problem_block(&checked, needle);
    assert!(block.contains("\n    fix: "), "no fix in:\n{checked}");
    let run = run_with(url, name).await;
    fails_saying(
        &run,
        &[
            "error: the database is not ready for walhook, which changed nothing in it.",
            &block,
        ],
    );
    assert!(!run.1.contains("walhook running"), "{}", run.1);
    run.1
}

/// How many slots and publications named `name` the server has.
async fn slots_and_publications(sql: &tokio_postgres::Client, name: &str) -> (i64, i64) {
    let row = sql
        .query_one(
            "SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1), \
                    (SELECT count(*) FROM pg_publication WHERE pubname = $1)",
            &[&name],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// The confirmed position of slot `name`, as Postgres prints it.
async fn slot_confirmed(sql: &tokio_postgres::Client, name: &str) -> Option<String> {
    sql.query_one(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
        &[&name],
    )
    .await
    .unwrap()
    .get(0)
}

/// A login role with `password` and `extra` privileges (e.g. `REPLICATION`), may read items.
async fn role(db: &TestDb, sql: &tokio_postgres::Client, extra: &str) -> String {
    let name = format!("r_{}", db.name());
    sql.batch_execute(&format!(
        "CREATE ROLE {name} LOGIN {extra} PASSWORD 'pw-{name}'; GRANT SELECT ON items TO {name};"
    ))
    .await
    .unwrap();
    Server::get().url_for(&name, &format!("pw-{name}"), db.name())
}

#[tokio::test]
async fn an_unreachable_database() {
    // GIVEN a port nothing listens on
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://walhook:pw@127.0.0.1:{port}/app?sslmode=disable");
    // THEN walhook run names the address, the cause and what to check
    fails_saying(
        &run_with(&url, &format!("unreachable_{port}")).await,
        &[
            &format!("127.0.0.1:{port}"),
            "Connection refused",
            "is Postgres running",
        ],
    );
}

#[tokio::test]
async fn a_wrong_password() {
    let db = TestDb::new().await;
    db.client().await.batch_execute(ITEMS).await.unwrap();
    let url = Server::get().url_for("postgres", "not-the-password", db.name());
    fails_saying(
        &run_with(&url, db.name()).await,
        &[
            "did not let user `postgres` in",
            "check the user and password in source.url",
            "password authentication failed",
        ],
    );
}

#[tokio::test]
async fn a_role_without_the_replication_privilege() {
    // GIVEN a role that may read the table, with the publication in place, but without
    // REPLICATION
    let db = TestDb::new().await;
    let sql = db.client().await;
    sql.batch_execute(&format!(
        "{ITEMS}; CREATE PUBLICATION {} FOR TABLE items;",
        db.name()
    ))
    .await
    .unwrap();
    let url = role(&db, &sql, "").await;
    let role_name = format!("r_{}", db.name());
    // THEN walhook run stops before creating the slot, with the SQL that fixes it, as `walhook
    // check` gives it
    let output = run_stops_as_check_says(&url, db.name(), "has neither REPLICATION").await;
    assert!(
        output.contains(&format!(
            "✗ role `{role_name}` has neither REPLICATION nor SUPERUSER, so it cannot stream changes\n    \
             fix: ALTER ROLE \"{role_name}\" WITH REPLICATION;"
        )),
        "{output}"
    );
    assert_eq!(slots_and_publications(&sql, db.name()).await, (0, 1));
}

#[tokio::test]
async fn a_publication_without_the_table_that_walhook_may_not_change() {
    // GIVEN a publication (owned by another role) that does not publish the mapped table, and
    // a walhook role with REPLICATION that does not own it
    let db = TestDb::new().await;
    let sql = db.client().await;
    sql.batch_execute(&format!(
        "{ITEMS}; CREATE TABLE other (id int PRIMARY KEY); CREATE PUBLICATION {} FOR TABLE other;",
        db.name()
    ))
    .await
    .unwrap();
    let url = role(&db, &sql, "REPLICATION").await;
    // THEN walhook run stops before changing anything, naming the missing table, who owns the
    // publication, and the SQL that adds it, as `walhook check` gives them
    let name = db.name();
    let output = run_stops_as_check_says(&url, name, "lacks 1 mapped table(s)").await;
    let owner: String = sql
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    for says in [
        format!("its owner is `{owner}`, not role `r_{name}`"),
        format!(
            "    fix: ALTER PUBLICATION \"{name}\" ADD TABLE \"public\".\"items\";  -- as a \
             superuser, or a role that owns the publication and these tables"
        ),
    ] {
        assert!(output.contains(&says), "`{says}` not in:\n{output}");
    }
    assert_eq!(slots_and_publications(&sql, name).await, (0, 1));
    let published: i64 = sql
        .query_one(
            "SELECT count(*) FROM pg_publication_tables WHERE pubname = $1 AND tablename = 'items'",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(published, 0);
}

#[tokio::test]
async fn a_slot_of_its_name_in_another_database() {
    // GIVEN the mapped table, and a slot of the configured name in another database of the
    // server (slot names are one namespace for the whole server)
    let db = TestDb::new().await;
    let sql = db.client().await;
    sql.batch_execute(ITEMS).await.unwrap();
    let other = TestDb::new().await;
    let other_sql = other.client().await;
    let name = db.name();
    other_sql
        .batch_execute(&format!(
            "SELECT pg_create_logical_replication_slot('{name}', 'pgoutput')"
        ))
        .await
        .unwrap();
    let before = slot_confirmed(&other_sql, name).await;
    // WHEN walhook runs against this database
    let output = run_stops_as_check_says(&db.url(), name, "belongs to database").await;
    // THEN it stops before streaming, naming the database that owns the slot and the fix
    for says in [
        format!(
            "✗ replication slot `{name}` belongs to database `{}`, not to `{name}`",
            other.name()
        ),
        format!(
            "    fix: choose another source.slot (or point source.url at database `{}`)",
            other.name()
        ),
        format!(
            "    fix: or, if nothing uses the slot any more, drop it: SELECT pg_drop_replication_slot('{name}');"
        ),
    ] {
        assert!(output.contains(&says), "`{says}` not in:\n{output}");
    }
    assert!(!output.contains("wal_level"), "{output}");
    // AND nothing changed: no publication here, the other slot where it was
    assert_eq!(slots_and_publications(&sql, name).await, (1, 0));
    assert_eq!(slot_confirmed(&other_sql, name).await, before);
    other_sql
        .batch_execute(&format!("SELECT pg_drop_replication_slot('{name}')"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_slot_another_walhook_streams_from() {
    // GIVEN a walhook streaming from the slot
    let db = TestDb::new().await;
    let sql = db.client().await;
    sql.batch_execute(ITEMS).await.unwrap();
    let name = db.name();
    let first_dir = fresh_dir(&format!("{name}-first"));
    let config = config_text(&db.url(), name, "http://127.0.0.1:9/");
    let mut first = Process::run(&write_config(&first_dir, &config));
    wait_streaming(&sql, name, &mut first).await;
    let pid: i32 = sql
        .query_one(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    // WHEN a second walhook with the same slot (and a state file of its own) starts
    let second_dir = fresh_dir(&format!("{name}-second"));
    let (code, output) = Process::run(&write_config(&second_dir, &config))
        .exit(Duration::from_secs(60))
        .await;
    // THEN it exits 1 saying so, once, with the fix
    assert_eq!(code, Some(1), "{output}");
    let said = format!(
        "replication slot `{name}` is in use by another process (PID {pid}): another walhook (or \
         another tool) streams from it. Stop that process, or give this walhook its own \
         source.slot"
    );
    assert!(
        output.lines().any(|l| l == format!("error: {said}")),
        "{output}"
    );
    for line in output.lines() {
        assert!(line.matches(&said).count() <= 1, "said twice: {line}");
    }
    // AND the first streams on
    first.assert_running("the second walhook stopped");
    first.stop().await;
}

#[tokio::test]
async fn a_publication_without_the_table_is_completed_when_walhook_may() {
    // GIVEN a publication of another table, and walhook running as its owner
    let db = TestDb::new().await;
    let sql = db.client().await;
    sql.batch_execute(&format!(
        "{ITEMS}; CREATE TABLE other (id int PRIMARY KEY); CREATE PUBLICATION {} FOR TABLE other;",
        db.name()
    ))
    .await
    .unwrap();
    let receiver = Receiver::start().await;
    let dir = fresh_dir(db.name());
    let config = write_config(&dir, &config_text(&db.url(), db.name(), &receiver.url("/")));
    let mut walhook = Process::run(&config);
    wait_streaming(&sql, db.name(), &mut walhook).await;
    // WHEN a row is inserted THEN its event arrives: walhook added the table, and said so
    sql.batch_execute("INSERT INTO items VALUES (1, 0, 'x')")
        .await
        .unwrap();
    receiver
        .wait_for(|r| r.len() == 1, Duration::from_secs(30))
        .await;
    let output = walhook.stop().await;
    assert!(
        output.contains(&format!(
            "ALTER PUBLICATION \"{}\" ADD TABLE \"public\".\"items\";",
            db.name()
        )),
        "{output}"
    );
}

#[tokio::test]
async fn a_second_walhook_on_the_same_state_file() {
    // GIVEN a walhook streaming with an SQLite state file, and an event held in it for a
    // receiver that is down
    let db = TestDb::new().await;
    let sql = db.client().await;
    sql.batch_execute(ITEMS).await.unwrap();
    let name = db.name();
    let dir = fresh_dir(&format!("{name}-same-file"));
    let receiver = Receiver::with_policy(|_, _| crate::support::receiver::Reply::status(503)).await;
    let config = write_config(&dir, &config_text(&db.url(), name, &receiver.url("/")));
    let mut first = Process::run(&config);
    wait_streaming(&sql, name, &mut first).await;
    sql.batch_execute("INSERT INTO items VALUES (1, 0, 'x')")
        .await
        .unwrap();
    receiver
        .wait_for(|r| !r.is_empty(), Duration::from_secs(30))
        .await;
    // WHEN a second walhook starts with the same config, so the same state file
    let before = receiver.requests().len();
    let (code, output) = Process::run(&config).exit(Duration::from_secs(60)).await;
    // THEN it exits 1 saying why and what to do, before it sent anything
    let said = format!(
        "error: the state file {} is in use by another `walhook run`: with an SQLite state \
         only one walhook runs at a time. Stop the other one, or put the state in Postgres \
         ([state] url) to run standbys beside a leader",
        dir.join("walhook-state.db").display()
    );
    assert_eq!(code, Some(1), "{output}");
    assert!(output.lines().any(|l| l == said), "{output}");
    assert!(!output.contains("subscriber ready"), "{output}");
    // AND the first walhook goes on retrying alone
    receiver
        .wait_for(|r| r.len() > before + 1, Duration::from_secs(30))
        .await;
    first.assert_running("the second walhook stopped");
    first.stop().await;
}
