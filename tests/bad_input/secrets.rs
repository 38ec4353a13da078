//! Secrets never reach walhook's output: the database password, the signing secret and a
//! bearer token are looked for in everything walhook prints, at `RUST_LOG=trace`, through
//! deliveries, retries, dead letters, a lost replication connection, every command, and
//! failures to connect.

use std::path::Path;
use std::time::Duration;

use crate::faults::harness::{
    fresh_dir, wait_streaming, walhook_command, write_config, Process, ITEMS,
};
use crate::support::receiver::{Receiver, Reply};
use crate::support::{Server, TestDb};

/// `walhook <args>` at `RUST_LOG=trace`; its exit code and output.
async fn traced(config: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut command = walhook_command(config, args);
    command.env("RUST_LOG", "trace");
    Process::spawn(command).exit(Duration::from_secs(60)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_never_logged() {
    // GIVEN a role with a password, a signing secret and a bearer token, all in the config
    let db = TestDb::new().await;
    let admin = db.client().await;
    admin.batch_execute(ITEMS).await.unwrap();
    let role = format!("s_{}", db.name());
    let password = format!("Pw-{}-q7Zr", db.name());
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{password}'"
        ))
        .await
        .unwrap();
    let key_b64 = "c2VjcmV0LWtleS1mb3ItdGhlLXRlc3Qtb25seS0xMjM=";
    let secret = format!("whsec_{key_b64}");
    let token = format!("tok-{}-8Hx", db.name());
    // A receiver that fails row 1's first attempt (500), rejects row 2 (401), accepts the rest
    let receiver =
        Receiver::with_policy(|r, attempt| match r.json()["data"]["row"]["id"].as_i64() {
            Some(1) if attempt == 1 => Reply::status(500).body("try again"),
            Some(2) => Reply::status(401).body("who are you"),
            _ => Reply::ok(),
        })
        .await;
    let server = Server::get();
    let url = server.url_for(&role, &password, db.name());
    let dir = fresh_dir(db.name());
    let config_for = |url: &str| {
        format!(
            "[source]\nurl = \"{url}\"\nslot = \"{n}\"\npublication = \"{n}\"\nstatus_interval = \"200ms\"\n\
             [subscribers.s]\nurl = \"{}\"\nsecret = \"{secret}\"\n\
             headers = {{ \"Authorization\" = \"Bearer {token}\" }}\n\
             retry = {{ initial = \"100ms\", max = \"200ms\" }}\n\
             [[events]]\ntype = \"item.changed\"\ntable = \"public.items\"\nsubscribers = [\"s\"]\n",
            receiver.url("/"),
            n = db.name(),
        )
    };
    let config = write_config(&dir, &config_for(&url));
    let mut output = String::new();

    // WHEN walhook runs at trace level: delivers, retries, dead-letters, loses its replication
    // connection and reconnects, and stops
    let mut command = walhook_command(&config, &["run"]);
    command.env("RUST_LOG", "trace");
    let mut walhook = Process::spawn(command);
    wait_streaming(&admin, db.name(), &mut walhook).await;
    for id in 1..=5i64 {
        admin
            .execute("INSERT INTO items VALUES ($1, 0, 'x')", &[&id])
            .await
            .unwrap();
    }
    receiver
        .wait_for(|r| r.len() >= 6, Duration::from_secs(30))
        .await;
    admin
        .execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1",
            &[&db.name()],
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_streaming(&admin, db.name(), &mut walhook).await;
    admin
        .execute("INSERT INTO items VALUES (6, 0, 'x')", &[])
        .await
        .unwrap();
    receiver
        .wait_for(|r| r.len() >= 7, Duration::from_secs(30))
        .await;
    output.push_str(&walhook.stop().await);
    // ... and every other command runs on the same config
    for args in [
        &["check"][..],
        &["setup"],
        &["status"],
        &["status", "--json"],
        &["dead-letters", "list"],
        &["--log-format", "json", "dead-letters", "list"],
        &["teardown"],
    ] {
        output.push_str(&traced(&config, args).await.1);
    }
    // ... and runs that cannot connect: a wrong password, and an unreachable port
    let wrong = format!("Wrong-{password}");
    let bad_password = write_config(
        &fresh_dir(&format!("{}-wrong", db.name())),
        &config_for(&server.url_for(&role, &wrong, db.name())),
    );
    let (code, out) = traced(&bad_password, &["run"]).await;
    assert_eq!(code, Some(1), "{out}");
    output.push_str(&out);
    let unreachable = write_config(
        &fresh_dir(&format!("{}-unreachable", db.name())),
        &config_for(&format!(
            "postgres://{role}:{password}@127.0.0.1:9/{}?sslmode=disable",
            db.name()
        )),
    );
    let (code, out) = traced(&unreachable, &["run"]).await;
    assert_eq!(code, Some(1), "{out}");
    output.push_str(&out);

    // THEN the requests carried the token, and walhook did the work it was asked
    let requests = receiver.requests();
    assert!(requests
        .iter()
        .all(|r| r.header("authorization") == Some(&format!("Bearer {token}"))));
    assert!(output.contains("delivery failed"), "no failure was logged");
    assert!(
        output.contains("replication connection lost"),
        "no reconnect was logged"
    );
    assert!(
        output.contains(" TRACE "),
        "no trace-level lines:\n{output}"
    );
    // AND no secret appears anywhere in what walhook printed
    for (what, secret) in [
        ("the database password", password.as_str()),
        ("a wrong database password", wrong.as_str()),
        ("the signing secret", secret.as_str()),
        ("the signing key (base64)", key_b64),
        ("the bearer token", token.as_str()),
    ] {
        if let Some(at) = output.find(secret) {
            let from = output[..at].rfind('\n').map_or(0, |n| n + 1);
            let to = output[at..].find('\n').map_or(output.len(), |n| at + n);
            panic!("{what} was printed: {}", &output[from..to]);
        }
    }
    println!(
        "secrets: {} bytes of walhook output at trace level scanned for 5 secrets",
        output.len()
    );
}
