//! The canary (`source.canary`): a walsender that decodes past walhook's canary without
//! sending it is caught, nothing from the canary on is confirmed until it arrives, the stream
//! is read again from there, and nothing is lost. The walsender that skips is played by the
//! test hook `WALHOOK_TEST_SKIP_CANARIES` (walhook treats that many arriving canaries as not
//! sent), so the gaps come exactly when the test wants them; `WALHOOK_TEST_CANARY_REPORT_DELAY_MS`
//! holds back the writer's report of where the canary committed, the window in which only the
//! cap on confirmations protects the slot.

use std::time::Duration;

use super::harness::{
    check, current_lsn, fresh_dir, wait_all, wait_confirmed, wait_streaming, walhook_command,
    write_config, Process, ITEMS,
};
use super::oracle::Oracle;
use crate::support::receiver::{Receiver, Recorded};
use crate::support::{connect, TestDb};

/// The log line of a gap.
const GAP: &str = "the walsender passed walhook's canary without sending it";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_the_walsender_skips_holds_the_slot_and_the_stream_is_read_again() {
    // GIVEN items published, an oracle on a publication of items alone (walhook adds its
    // canary table to its own), and walhook (the binary) with a canary every second, whose
    // stream passes its first canary twice without it (two sessions in a row)
    let db = TestDb::new().await;
    let client = db.client().await;
    let name = db.name();
    client
        .batch_execute(&format!(
            "{ITEMS}; CREATE PUBLICATION {name} FOR TABLE items; \
             CREATE PUBLICATION {name}_items FOR TABLE items;"
        ))
        .await
        .unwrap();
    let oracle = Oracle::create(&client, &format!("{name}_items")).await;
    let receiver = Receiver::start().await;
    let dir = fresh_dir(name);
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = write_config(
        &dir,
        &format!(
            r#"[source]
            url = "{url}"
            slot = "{name}"
            publication = "{name}"
            status_interval = "200ms"
            heartbeat_interval = "1s"
            canary = "public.walhook_canary"
            [api]
            listen = "{listen}"
            [subscribers.s]
            url = "{receiver}"
            [[events]]
            type = "item.changed"
            table = "public.items"
            subscribers = ["s"]
            "#,
            url = db.url(),
            receiver = receiver.url("/s"),
        ),
    );
    let mut command = walhook_command(&config, &["run"]);
    command.env("WALHOOK_TEST_SKIP_CANARIES", "2");
    // The writer learns where each canary committed 1.5 s late: meanwhile the walsender has
    // decoded past the skipped canary, and only the cap keeps the slot from following it.
    command.env("WALHOOK_TEST_CANARY_REPORT_DELAY_MS", "1500");
    let mut walhook = Process::spawn(command);
    wait_streaming(&client, name, &mut walhook).await;

    // WHEN rows are committed, one per transaction, while the stream passes the canary
    // twice, and the slot and the canary row are watched all along
    let writer = tokio::spawn({
        let url = db.url();
        async move {
            let client = connect(&url).await;
            for id in 1..=60i64 {
                client
                    .execute("INSERT INTO items VALUES ($1, 0, 'new')", &[&id])
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    // THEN the slot does not pass the first canary before it can have arrived: the hook lets it
    // arrive only after the second gap
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut samples = 0;
    loop {
        let row = client
            .query_opt(
                "SELECT c.seq, c.before_lsn::text, s.confirmed_flush_lsn::text \
                 FROM walhook_canary c, pg_replication_slots s \
                 WHERE c.slot = $1 AND s.slot_name = $1",
                &[&name],
            )
            .await
            .unwrap();
        if let Some(row) = row {
            let (seq, before, confirmed): (i64, String, String) =
                (row.get(0), row.get(1), row.get(2));
            let before: walhook::model::Lsn = before.parse().unwrap();
            let confirmed: walhook::model::Lsn = confirmed.parse().unwrap();
            samples += 1;
            if seq >= 2 || confirmed > before {
                // (walhook's output reaches the test through pipes: allow it a moment. The
                // second gap comes seconds after the first, so a slot that passed the canary
                // early is still caught.)
                let grace = tokio::time::Instant::now() + Duration::from_millis(300);
                while walhook.output().matches(GAP).count() < 2
                    && tokio::time::Instant::now() < grace
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let output = walhook.output();
                assert_eq!(
                    output.matches(GAP).count(),
                    2,
                    "the slot confirmed {confirmed}, past the canary at {before}, before it could arrive:\n{output}"
                );
                break;
            }
        }
        walhook.assert_running("the canary arrived");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot never moved past the first canary within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(samples > 1, "the slot was watched {samples} time(s)");
    writer.await.unwrap();
    // AND every row arrives, in order per row
    let expected = oracle.expected(&client).await;
    assert_eq!(expected.len(), 60);
    let all = |_: &Recorded| true;
    wait_all(
        || receiver.requests(),
        &["/s"],
        all,
        &expected,
        Duration::from_secs(60),
    )
    .await;
    check(
        "s",
        &expected,
        &super::harness::deliveries(&receiver.requests(), "/s", all),
    );
    // AND once the canary arrived, everything is confirmed
    let end = current_lsn(&client).await;
    wait_confirmed(&client, name, end, Duration::from_secs(30)).await;
    // AND each gap was reported: logged as an error, counted in /metrics, and followed by a
    // reconnect (the reconnected walsender was no better once)
    let metrics = reqwest::get(format!("http://{listen}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("walhook_canary_gaps_total 2"), "{metrics}");
    let output = walhook.stop().await;
    assert_eq!(output.matches(GAP).count(), 2, "{output}");
    assert!(
        output.contains("reading the stream again from the canary's position"),
        "{output}"
    );
    assert!(
        output.contains("replication connection lost; reconnecting"),
        "{output}"
    );
    oracle.drop(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_setup_know_the_canary_table() {
    // GIVEN a config with a canary table that does not exist yet
    let db = TestDb::new().await;
    let client = db.client().await;
    client.batch_execute(ITEMS).await.unwrap();
    let dir = fresh_dir(&format!("{}-check", db.name()));
    let config = write_config(
        &dir,
        &format!(
            r#"[source]
            url = "{url}"
            slot = "{name}"
            publication = "{name}"
            canary = "public.walhook_canary"
            [subscribers.s]
            url = "http://127.0.0.1:9/s"
            [[events]]
            type = "item.changed"
            table = "public.items"
            subscribers = ["s"]
            "#,
            url = db.url(),
            name = db.name(),
        ),
    );
    // WHEN walhook check runs THEN it names the missing canary table and how to create it
    let (code, output) = Process::spawn(walhook_command(&config, &["check"]))
        .exit(Duration::from_secs(30))
        .await;
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains("✗ canary table public.walhook_canary does not exist"),
        "{output}"
    );
    assert!(output.contains("walhook setup --apply"), "{output}");
    // WHEN setup --apply runs THEN the table exists and is published with the mapped table,
    // and check is satisfied
    let (code, output) = Process::spawn(walhook_command(&config, &["setup", "--apply"]))
        .exit(Duration::from_secs(30))
        .await;
    assert_eq!(code, Some(0), "{output}");
    let published: Vec<String> = client
        .query(
            "SELECT tablename::text FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1",
            &[&db.name()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(published, ["items", "walhook_canary"]);
    let (code, output) = Process::spawn(walhook_command(&config, &["check"]))
        .exit(Duration::from_secs(30))
        .await;
    assert_eq!(code, Some(0), "{output}");
    client
        .execute("SELECT pg_drop_replication_slot($1)", &[&db.name()])
        .await
        .unwrap();
}
