//! Bodies, ids, descriptions of answers, and what an HTTP answer means to the worker.

use super::*;
use crate::model::Lsn;

fn event(id: &str, body: &str) -> Event {
    Event {
        id: id.to_string(),
        event_type: "order.created".to_string(),
        key: "public.orders/1".to_string(),
        table: "public.orders".to_string(),
        body: body.to_string(),
        commit_lsn: Lsn(0x16B_3748),
        commit_time_micros: 0,
        is_truncate: false,
    }
}

#[test]
fn a_batch_body_wraps_the_event_bodies_in_order() {
    let a = event(
        "evt_00000000016B3748_0",
        r#"{"id":"evt_00000000016B3748_0"}"#,
    );
    let b = event(
        "evt_00000000016B3748_1",
        r#"{"id":"evt_00000000016B3748_1"}"#,
    );
    let body = batch_body(&[&a, &b]);
    assert_eq!(
        body,
        r#"{"events":[{"id":"evt_00000000016B3748_0"},{"id":"evt_00000000016B3748_1"}]}"#
    );
    let parsed: serde_json::Value = serde_json::from_str(&body).expect("valid JSON");
    assert_eq!(parsed["events"][1]["id"], "evt_00000000016B3748_1");
}

#[test]
fn a_batch_of_one_and_of_none() {
    let a = event("evt_1", r#"{"n":1}"#);
    assert_eq!(batch_body(&[&a]), r#"{"events":[{"n":1}]}"#);
    assert_eq!(batch_body(&[]), r#"{"events":[]}"#);
}

#[test]
fn a_batch_id_names_the_first_event_and_the_count() {
    let a = event("evt_00000000016B3748_0", "{}");
    let b = event("evt_00000000016B3748_1", "{}");
    let c = event("evt_00000000016B3790_0", "{}");
    assert_eq!(batch_id(&[&a, &b, &c]), "batch_evt_00000000016B3748_0_3");
    assert_eq!(batch_id(&[&b]), "batch_evt_00000000016B3748_1_1");
    assert_eq!(batch_id(&[]), "batch__0");
    assert!(
        !batch_id(&[&a, &b]).contains('.'),
        "ids are signed; no dots"
    );
}

#[test]
fn a_status_is_described_with_its_reason_and_the_start_of_the_body() {
    assert_eq!(
        describe_status(503, b"down for\nmaintenance\r\n"),
        "HTTP 503 Service Unavailable: down for maintenance"
    );
    assert_eq!(describe_status(404, b""), "HTTP 404 Not Found");
    assert_eq!(describe_status(599, b"x"), "HTTP 599: x");
    let long = describe_status(500, "é".repeat(1000).as_bytes());
    assert_eq!(
        long.chars().count(),
        "HTTP 500 Internal Server Error: ".len() + 201
    );
    assert!(long.ends_with("é…"));
}

#[test]
fn invalid_utf8_in_a_body_is_replaced_not_fatal() {
    assert_eq!(
        describe_status(400, b"bad \xff"),
        "HTTP 400 Bad Request: bad \u{fffd}"
    );
}

#[test]
fn one_line_cuts_on_characters() {
    assert_eq!(one_line("  a\tb\nc  ", 10), "a b c");
    assert_eq!(one_line("abcdef", 3), "abc…");
    assert_eq!(one_line("ééé", 3), "ééé");
}

fn sink() -> HttpSink {
    HttpSink::new(build_client(), &sink_config())
}

fn sink_config() -> SubscriberConfig {
    SubscriberConfig {
        name: "billing".to_string(),
        url: "https://billing.internal:8443/hooks?token=secret"
            .parse()
            .expect("a valid URL"),
        signing_key: None,
        headers: Vec::new(),
        timeout: Duration::from_secs(10),
        concurrency: 1,
        batch_size: 1,
        batch_wait: Duration::from_millis(20),
        retry: crate::config::RetryConfig {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(600),
            give_up_after: Duration::from_secs(3600),
        },
        initial_backfill: false,
        h2c: false,
        rate_limit: None,
    }
}

fn attempt(verdict: Verdict, status: Option<u16>, error: Option<&str>) -> Attempt {
    Attempt {
        verdict,
        status,
        error: error.map(str::to_string),
        duration: Duration::from_millis(7),
    }
}

#[test]
fn an_http_answer_becomes_an_outcome_with_the_status_as_a_detail() {
    let sink = sink();
    let seven = Some(Duration::from_secs(7));
    let cases = [
        (
            attempt(Verdict::Delivered, Some(204), None),
            Outcome::Delivered,
        ),
        (
            attempt(
                Verdict::Retry { retry_after: seven },
                Some(503),
                Some("HTTP 503"),
            ),
            Outcome::Retry { after: seven },
        ),
        (
            attempt(
                Verdict::Retry { retry_after: None },
                None,
                Some("could not connect"),
            ),
            Outcome::Unreachable,
        ),
        (
            attempt(Verdict::DeadLetter, Some(400), Some("HTTP 400 Bad Request")),
            Outcome::Reject,
        ),
        (
            attempt(
                Verdict::DeadLetter,
                None,
                Some("could not build the request"),
            ),
            Outcome::Reject,
        ),
        (
            attempt(Verdict::Gone, Some(410), Some("HTTP 410 Gone")),
            Outcome::Gone {
                reason: "410 Gone from billing.internal".to_string(),
            },
        ),
    ];
    for (attempt, outcome) in cases {
        let report = sink.report(attempt.clone());
        assert_eq!(report.outcome, outcome, "{attempt:?}");
        assert_eq!(report.code, attempt.status);
        assert_eq!(report.detail, attempt.error);
        assert_eq!(report.took, attempt.duration);
    }
}

#[test]
fn the_user_agent_names_walhook_and_its_version() {
    assert_eq!(USER_AGENT, format!("walhook/{}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn a_request_reqwest_cannot_build_is_unbuildable() {
    let error = build_client()
        .post("no scheme, no host")
        .build()
        .expect_err("reqwest rejects a URL without a scheme");
    assert!(error.is_builder(), "{error:?}");
    assert_eq!(transport_failure(&error), TransportFailure::Unbuildable);
}

#[tokio::test]
async fn a_request_nobody_answers_is_interrupted() {
    // A port that was just free: connecting to it is refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    drop(listener);
    let error = build_client()
        .post(format!("http://{addr}/"))
        .send()
        .await
        .expect_err("nothing listens there");
    assert!(error.is_connect(), "{error:?}");
    assert_eq!(transport_failure(&error), TransportFailure::Interrupted);
}

/// A receiver on a free local port that answers 204 and records the HTTP version of each
/// request; speaks HTTP/1.1 and cleartext HTTP/2 (prior knowledge).
async fn version_receiver() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<reqwest::Version>>>,
) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |request: axum::extract::Request| {
            let record = record.clone();
            async move {
                record.lock().expect("not poisoned").push(request.version());
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let url = format!("http://{}/hook", listener.local_addr().expect("bound"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

fn subscriber_at(url: &str, h2c: bool) -> SubscriberConfig {
    SubscriberConfig {
        url: url.parse().expect("a valid URL"),
        h2c,
        ..sink_config()
    }
}

#[tokio::test]
async fn h2c_speaks_cleartext_http2_and_the_default_speaks_http1() {
    // GIVEN a receiver that speaks both
    let (url, seen) = version_receiver().await;
    let event = event(
        "evt_00000000016B3748_0",
        r#"{"id":"evt_00000000016B3748_0"}"#,
    );

    // WHEN one event goes with h2c and one without
    for h2c in [true, false] {
        let sink = HttpSink::new(build_client(), &subscriber_at(&url, h2c));
        let report = sink.send(&[&event]).await;
        assert_eq!(report.outcome, Outcome::Delivered, "{report:?}");
    }

    // THEN the first came over HTTP/2, the second over HTTP/1.1
    let seen = seen.lock().expect("not poisoned").clone();
    assert_eq!(seen, [reqwest::Version::HTTP_2, reqwest::Version::HTTP_11]);
}
