//! `walhook run` against a database it cannot use: unreachable, a wrong password, a role
//! without the replication privilege, a publication without the mapped table. Each exits 1
//! with a message naming the cause and the fix, and without a panic.

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
    // THEN walhook run stops at creating the slot, with Postgres's reason and where to look
    let run = run_with(&url, db.name()).await;
    fails_saying(
        &run,
        &["cannot create the publication or slot; run `walhook check` to see what is missing"],
    );
    // (Postgres 16 reworded the reason.)
    assert!(
        run.1
            .contains("must be superuser or replication role to use replication slots")
            || run
                .1
                .contains("Only roles with the REPLICATION attribute may use replication slots"),
        "Postgres's reason is missing:\n{}",
        run.1
    );
    // AND `walhook check` gives the SQL that fixes it
    fails_saying(
        &walhook("check", &url, db.name()).await,
        &[&format!("ALTER ROLE \"{role_name}\" WITH REPLICATION;")],
    );
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
    // THEN walhook run stops at adding the table, with Postgres's reason and where to look
    fails_saying(
        &run_with(&url, db.name()).await,
        &[
            "cannot create the publication or slot; run `walhook check` to see what is missing",
            &format!("must be owner of publication {}", db.name()),
        ],
    );
    // AND `walhook check` names the missing table and gives the SQL that adds it
    fails_saying(
        &walhook("check", &url, db.name()).await,
        &[&format!(
            "ALTER PUBLICATION \"{}\" ADD TABLE \"public\".\"items\";",
            db.name()
        )],
    );
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
