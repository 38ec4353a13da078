//! TLS to Postgres with `sslmode=verify-full`: against the CA that signed the server's
//! certificate walhook streams; against another CA it refuses to run, saying why.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::faults::harness::{fresh_dir, wait_streaming, write_config, Process, ITEMS};
use crate::support::receiver::Receiver;
use crate::support::{Server, TestDb, SUPERUSER_PASSWORD};

/// A `verify-full` URL for `db` trusting the CA in `ca`.
fn verify_full_url(db: &TestDb, ca: &Path) -> String {
    let server = Server::get();
    format!(
        "postgres://postgres:{SUPERUSER_PASSWORD}@{}:{}/{}?sslmode=verify-full&sslrootcert={}",
        server.host(),
        server.port(),
        db.name(),
        ca.display()
    )
}

fn config(db: &TestDb, dir: &Path, url: &str, receiver: &str) -> PathBuf {
    write_config(
        dir,
        &format!(
            "[source]\nurl = \"{url}\"\nslot = \"{n}\"\npublication = \"{n}\"\n\
             [subscribers.s]\nurl = \"{receiver}\"\n\
             [[events]]\ntype = \"item.changed\"\ntable = \"public.items\"\nsubscribers = [\"s\"]\n",
            n = db.name()
        ),
    )
}

/// The throwaway cluster's test CA; `None` (the test then says it is skipped) with an
/// external server or without openssl.
fn test_ca(test: &str) -> Option<PathBuf> {
    let ca = Server::get().ca_cert();
    if ca.is_none() {
        println!(
            "{test}: skipped, the test server has no test CA (external server, or no openssl)"
        );
    }
    ca
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_the_servers_ca_streams() {
    let Some(ca) = test_ca("verify_full_with_the_servers_ca_streams") else {
        return;
    };
    // GIVEN walhook connecting with sslmode=verify-full and the CA that signed the server
    let db = TestDb::new().await;
    let client = db.client().await;
    client.batch_execute(ITEMS).await.unwrap();
    let receiver = Receiver::start().await;
    let dir = fresh_dir(db.name());
    let config = config(&db, &dir, &verify_full_url(&db, &ca), &receiver.url("/"));
    let mut walhook = Process::run(&config);
    wait_streaming(&client, db.name(), &mut walhook).await;
    // WHEN a row is inserted THEN its event arrives
    client
        .batch_execute("INSERT INTO items VALUES (1, 0, 'x')")
        .await
        .unwrap();
    receiver
        .wait_for(|r| r.len() == 1, Duration::from_secs(30))
        .await;
    let output = walhook.stop().await;
    // AND the replication connection was TLS, as Postgres saw it too
    assert!(output.contains("tls=true"), "{output}");
}

#[tokio::test]
async fn verify_full_with_another_ca_refuses_to_run() {
    if test_ca("verify_full_with_another_ca_refuses_to_run").is_none() {
        return;
    }
    // GIVEN a CA that did not sign the server's certificate
    let db = TestDb::new().await;
    db.client().await.batch_execute(ITEMS).await.unwrap();
    let dir = fresh_dir(db.name());
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=some-other-ca", "-keyout"])
        .arg(dir.join("other.key"))
        .arg("-out")
        .arg(dir.join("other.crt"))
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let config = config(
        &db,
        &dir,
        &verify_full_url(&db, &dir.join("other.crt")),
        "http://127.0.0.1:9/",
    );
    // WHEN walhook runs THEN it exits 1, saying the server's certificate did not verify
    let (code, output) = Process::run(&config).exit(Duration::from_secs(60)).await;
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("certificate"), "{output}");
    assert!(output.contains("sslrootcert"), "{output}");
    assert!(!output.contains("panicked"), "{output}");
}
