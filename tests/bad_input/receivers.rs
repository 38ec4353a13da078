//! Receivers that misbehave cannot affect walhook beyond their own subscriber: a redirect, a
//! malformed status line, an error with a 1 GiB body, a response whose head never ends, and a
//! 2xx whose body never ends, all at once, next to a subscriber whose receiver is fine.

use std::collections::HashSet;
use std::time::Duration;

use crate::faults::harness::{
    check, current_lsn, db_with_items, deliveries, fresh_dir, only_redeliveries, source_section,
    wait_all, wait_confirmed, wait_streaming, walhook_command, write_config, Process,
};
use crate::faults::raw_http::{RawReply, RawServer};
use crate::support::receiver::{Receiver, Recorded, Reply};
use crate::support::TestDb;

/// DESIGN.md's memory target, which a receiver's answers must not push walhook past.
const PEAK_RSS_LIMIT_KIB: u64 = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_receivers_affect_only_their_own_subscribers() {
    // GIVEN a receiver that is fine, and five that misbehave
    let db = TestDb::new().await;
    let (client, oracle) = db_with_items(&db).await;
    let fine = Receiver::start().await;
    let redirect_to = fine.url("/redirected");
    let redirect =
        Receiver::with_policy(move |_, _| Reply::status(302).header("location", &redirect_to))
            .await;
    let malformed = RawServer::start(|_, _| {
        RawReply::Bytes(b"HTTP/1.1 2OO OK\r\ncontent-length: 0\r\n\r\n".to_vec())
    })
    .await;
    let huge_error = RawServer::start(|_, _| RawReply::Endless {
        head: b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 1073741824\r\n\r\n".to_vec(),
        repeat: vec![b'x'; 64 * 1024],
    })
    .await;
    let endless_head = RawServer::start(|_, _| RawReply::Endless {
        head: b"HTTP/1.1 200 OK\r\n".to_vec(),
        repeat: format!("x-padding: {}\r\n", "a".repeat(1000)).into_bytes(),
    })
    .await;
    let endless_body = RawServer::start(|_, _| RawReply::Endless {
        head: b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec(),
        repeat: format!("4000\r\n{}\r\n", "y".repeat(0x4000)).into_bytes(),
    })
    .await;
    let dir = fresh_dir(db.name());
    let bad = |name: &str, url: String| {
        format!(
            "[subscribers.{name}]\nurl = \"{url}\"\ntimeout = \"2s\"\n\
             retry = {{ initial = \"200ms\", max = \"1s\" }}\n"
        )
    };
    let config = write_config(
        &dir,
        &format!(
            "{source}[subscribers.fine]\nurl = \"{fine}\"\n{}{}{}{}{}\
             [[events]]\ntype = \"item.changed\"\ntable = \"public.items\"\n\
             subscribers = [\"fine\", \"redirect\", \"malformed\", \"huge_error\", \"endless_head\", \"endless_body\"]\n",
            bad("redirect", redirect.url("/")),
            bad("malformed", malformed.url("/")),
            bad("huge_error", huge_error.url("/")),
            bad("endless_head", endless_head.url("/")),
            bad("endless_body", endless_body.url("/")),
            source = source_section(&db.url(), db.name()),
            fine = fine.url("/fine"),
        ),
    );
    let mut walhook = Process::run(&config);
    wait_streaming(&client, db.name(), &mut walhook).await;

    // WHEN 50 rows are inserted, 10 per transaction, and 20 of them updated
    for t in 0..5i64 {
        client
            .execute(
                "INSERT INTO items SELECT g, 0, 'new' FROM generate_series($1::bigint, $1::bigint + 9) g",
                &[&(t * 10 + 1)],
            )
            .await
            .unwrap();
    }
    for id in 1..=20i64 {
        client
            .execute("UPDATE items SET n = 1 WHERE id = $1", &[&id])
            .await
            .unwrap();
    }
    let written = current_lsn(&client).await;
    let expected = oracle.expected(&client).await;
    assert_eq!(expected.len(), 70);

    // THEN the fine subscriber gets every event, once, in order per row
    let all = |_: &Recorded| true;
    wait_all(
        || fine.requests(),
        &["/fine"],
        all,
        &expected,
        Duration::from_secs(60),
    )
    .await;
    // AND the slot confirms everything: each misbehaving subscriber's events are delivered,
    // stored for a retry or dead-lettered
    wait_confirmed(&client, db.name(), written, Duration::from_secs(60)).await;
    // AND the endless 2xx body counts as delivered: every event, once
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while endless_body.deliveries().len() < expected.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "endless_body fell behind"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // AND the others keep being tried (not the redirect: it is dead-lettered at once)
    tokio::time::sleep(Duration::from_secs(3)).await;
    walhook.assert_running("the receivers misbehaved for a while");
    let peak = walhook.peak_rss_kib().unwrap();
    assert!(
        peak <= PEAK_RSS_LIMIT_KIB,
        "walhook's peak RSS reached {peak} KiB"
    );
    let output = walhook.stop().await;
    oracle.drop(&client).await;

    let got = deliveries(&fine.requests(), "/fine", all);
    let found = check("fine", &expected, &got);
    only_redeliveries("fine", &found, &output);
    assert!(
        fine.requests().iter().all(|r| r.path == "/fine"),
        "a redirect was followed"
    );
    let endless = endless_body.deliveries();
    let found = check("endless_body", &expected, &endless);
    only_redeliveries("endless_body", &found, &output);
    for (name, server) in [
        ("malformed", &malformed),
        ("huge_error", &huge_error),
        ("endless_head", &endless_head),
    ] {
        let tried = server.deliveries();
        assert!(!tried.is_empty(), "{name} was never tried");
        assert!(tried.iter().all(|d| !d.accepted));
        // Retried: some event went more than once.
        let distinct: HashSet<&str> = tried.iter().map(|d| d.id.as_str()).collect();
        assert!(distinct.len() < tried.len(), "{name} was not retried");
    }
    // AND the redirect's events are dead letters, with status 302, each tried once
    let (code, list) = Process::spawn(walhook_command(&config, &["dead-letters", "list"]))
        .exit(Duration::from_secs(30))
        .await;
    assert_eq!(code, Some(0), "{list}");
    let letters: Vec<&str> = list.lines().filter(|l| l.contains("\tattempts=")).collect();
    assert_eq!(redirect.requests().len(), expected.len());
    assert_eq!(letters.len(), expected.len(), "{list}");
    assert!(
        letters
            .iter()
            .all(|l| l.starts_with("redirect\t") && l.contains("\tattempts=1\tstatus=302\t")),
        "{list}"
    );
    println!(
        "misbehaving receivers: walhook's peak RSS {peak} KiB; {} events checked on `fine`",
        expected.len()
    );
}
