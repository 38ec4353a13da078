//! One webhook request against a real HTTP receiver: the Standard Webhooks headers, a signature
//! an independent verifier accepts, and the verdict for each kind of answer (or no answer).

use std::time::{Duration, SystemTime};

use axum::http::HeaderMap;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use walhook::config::{RetryConfig, Secret, SubscriberConfig};
use walhook::delivery::{batch_body, batch_id, build_client, post, Attempt, Signer, Verdict};
use walhook::model::{Event, Lsn};

use crate::support::receiver::{verify, verify_at, Receiver, Reply, TIMESTAMP_TOLERANCE_SECS};

/// The secret of the Standard Webhooks reference libraries' test vector.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const EVENT_ID: &str = "evt_00000000016B3748_3";
const BODY: &str =
    r#"{"id":"evt_00000000016B3748_3","type":"order.created","data":{"row":{"id":42}}}"#;
const WAIT: Duration = Duration::from_secs(10);

fn subscriber(url: String, timeout: Duration) -> SubscriberConfig {
    SubscriberConfig {
        name: "billing".to_string(),
        url: url.parse().expect("a valid test URL"),
        signing_key: None,
        headers: vec![(
            "Authorization".to_string(),
            Secret::new("Bearer t0ken".to_string()),
        )],
        timeout,
        concurrency: 1,
        batch_size: 1,
        batch_wait: Duration::from_millis(20),
        retry: RetryConfig {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(600),
            give_up_after: Duration::from_secs(3 * 86_400),
        },
        initial_backfill: false,
        h2c: false,
        rate_limit: None,
    }
}

fn signer() -> Signer {
    let key = STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .expect("the test secret is base64");
    Signer::new(&key)
}

fn unix_now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    i64::try_from(secs).unwrap()
}

/// Posts `BODY` as `EVENT_ID`, signed, to `/hooks` on the receiver.
async fn post_one(receiver: &Receiver, timeout: Duration) -> Attempt {
    let subscriber = subscriber(receiver.url("/hooks"), timeout);
    post(
        &build_client(),
        &subscriber,
        Some(&signer()),
        EVENT_ID,
        Bytes::from_static(BODY.as_bytes()),
    )
    .await
}

#[tokio::test]
async fn a_signed_post_carries_the_standard_webhooks_headers_exactly() {
    // GIVEN a receiver that answers 204
    let receiver = Receiver::with_policy(|_, _| Reply::status(204)).await;

    // WHEN one event is posted, signed
    let before = unix_now();
    let attempt = post_one(&receiver, WAIT).await;
    let after = unix_now();

    // THEN it is delivered, and exactly one request arrived with the exact headers and body
    assert_eq!(attempt.verdict, Verdict::Delivered, "{attempt:?}");
    assert_eq!(attempt.status, Some(204));
    assert_eq!(attempt.error, None);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/hooks");
    assert_eq!(request.body_text(), BODY);
    assert_eq!(request.header_all("webhook-id"), [EVENT_ID]);
    assert_eq!(request.header_all("content-type"), ["application/json"]);
    assert_eq!(
        request.header_all("user-agent"),
        [format!("walhook/{}", env!("CARGO_PKG_VERSION"))]
    );
    assert_eq!(request.header_all("authorization"), ["Bearer t0ken"]);
    let timestamp: i64 = request
        .header("webhook-timestamp")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (before..=after).contains(&timestamp),
        "{timestamp} not in {before}..={after}"
    );
    // AND the signature is exactly the one for this id, timestamp and body
    let signature = request.header("webhook-signature").unwrap();
    assert_eq!(
        signature,
        signer().sign(EVENT_ID, timestamp, BODY.as_bytes())
    );
    // AND a verifier written from the spec, not walhook's signer, accepts it
    verify(SECRET, &request.headers, &request.body).unwrap();
}

#[tokio::test]
async fn the_independent_verifier_rejects_what_it_should() {
    // GIVEN a request walhook signed
    let receiver = Receiver::start().await;
    post_one(&receiver, WAIT).await;
    let request = receiver.requests().remove(0);
    let timestamp: i64 = request
        .header("webhook-timestamp")
        .unwrap()
        .parse()
        .unwrap();

    // THEN it verifies, and any change to it does not
    verify(SECRET, &request.headers, &request.body).unwrap();
    let tampered = BODY.replace("42", "43");
    assert!(verify(SECRET, &request.headers, tampered.as_bytes()).is_err());
    let other_secret = format!("whsec_{}", STANDARD.encode(b"some other key of 24 bytes"));
    assert!(verify(&other_secret, &request.headers, &request.body).is_err());
    let mut other_id = request.headers.clone();
    other_id.insert("webhook-id", "evt_00000000016B3748_4".parse().unwrap());
    assert!(verify(SECRET, &other_id, &request.body).is_err());
    // AND the timestamp must be within 5 minutes either way
    assert_eq!(TIMESTAMP_TOLERANCE_SECS, 300);
    let at = |now| verify_at(SECRET, &request.headers, &request.body, now);
    assert!(at(timestamp + 300).is_ok());
    assert!(at(timestamp - 300).is_ok());
    assert!(at(timestamp + 301).is_err());
    assert!(at(timestamp - 301).is_err());
    // AND every header is required
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let mut missing = request.headers.clone();
        missing.remove(name);
        let error = verify(SECRET, &missing, &request.body).unwrap_err();
        assert!(error.contains(name), "{error}");
    }
}

#[test]
fn the_independent_verifier_accepts_the_reference_test_vector() {
    // The vector of the Standard Webhooks reference libraries (standard-webhooks/standard-webhooks,
    // libraries/javascript/src/webhook.test.ts, "sign function works"), among other signatures
    // as in a key rotation.
    let mut headers = HeaderMap::new();
    headers.insert(
        "webhook-id",
        "msg_p5jXN8AQM9LWM0D4loKWxJek".parse().unwrap(),
    );
    headers.insert("webhook-timestamp", "1614265330".parse().unwrap());
    headers.insert(
        "webhook-signature",
        "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
            .parse()
            .unwrap(),
    );
    let body = br#"{"test": 2432232314}"#;
    verify_at(SECRET, &headers, body, 1_614_265_330).unwrap();
    assert!(verify_at(SECRET, &headers, br#"{"test": 2432232315}"#, 1_614_265_330).is_err());
}

#[tokio::test]
async fn an_unsigned_post_has_no_signature_header() {
    // GIVEN a subscriber without a secret
    let receiver = Receiver::start().await;
    let subscriber = subscriber(receiver.url("/hooks"), WAIT);

    // WHEN an event is posted without a signer
    let attempt = post(
        &build_client(),
        &subscriber,
        None,
        EVENT_ID,
        Bytes::from_static(BODY.as_bytes()),
    )
    .await;

    // THEN it carries the id and timestamp but no signature
    assert_eq!(attempt.verdict, Verdict::Delivered, "{attempt:?}");
    let request = receiver.requests().remove(0);
    assert_eq!(request.header("webhook-id"), Some(EVENT_ID));
    assert!(request.header("webhook-timestamp").is_some());
    assert_eq!(request.header("webhook-signature"), None);
}

#[tokio::test]
async fn a_batch_is_one_signed_request_with_the_batch_id() {
    // GIVEN two events of one batch
    let receiver = Receiver::start().await;
    let events: Vec<Event> = (0..2)
        .map(|i| Event {
            id: format!("evt_00000000016B3748_{i}"),
            event_type: "order.created".to_string(),
            key: format!("public.orders/{i}"),
            table: "public.orders".to_string(),
            body: format!(r#"{{"id":"evt_00000000016B3748_{i}"}}"#),
            commit_lsn: Lsn(0x16B_3748),
            commit_time_micros: 0,
            is_truncate: false,
        })
        .collect();
    let batch: Vec<&Event> = events.iter().collect();

    // WHEN they are posted as one batch
    let attempt = post(
        &build_client(),
        &subscriber(receiver.url("/hooks"), WAIT),
        Some(&signer()),
        &batch_id(&batch),
        Bytes::from(batch_body(&batch)),
    )
    .await;

    // THEN one request carries both, under the batch id, verifiably signed
    assert_eq!(attempt.verdict, Verdict::Delivered, "{attempt:?}");
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].header("webhook-id"),
        Some("batch_evt_00000000016B3748_0_2")
    );
    assert_eq!(
        requests[0].body_text(),
        r#"{"events":[{"id":"evt_00000000016B3748_0"},{"id":"evt_00000000016B3748_1"}]}"#
    );
    verify(SECRET, &requests[0].headers, &requests[0].body).unwrap();
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_dead_letters() {
    // GIVEN a receiver that redirects /hooks elsewhere on itself
    let receiver = Receiver::start().await;
    let elsewhere = receiver.url("/elsewhere");
    receiver.set_policy(move |request, _| {
        if request.path == "/hooks" {
            Reply::status(302).header("location", &elsewhere)
        } else {
            Reply::ok()
        }
    });

    // WHEN an event is posted
    let attempt = post_one(&receiver, WAIT).await;

    // THEN it is dead-lettered on the 302, and the redirect target saw nothing
    assert_eq!(attempt.verdict, Verdict::DeadLetter, "{attempt:?}");
    assert_eq!(attempt.status, Some(302));
    assert_eq!(attempt.error.as_deref(), Some("HTTP 302 Found"));
    let paths: Vec<String> = receiver.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/hooks"]);
}

#[tokio::test]
async fn a_503_retries_and_quotes_the_body() {
    // GIVEN a receiver that answers 503 with a message
    let receiver =
        Receiver::with_policy(|_, _| Reply::status(503).body("down for maintenance\n")).await;

    // WHEN an event is posted
    let attempt = post_one(&receiver, WAIT).await;

    // THEN it is to be retried, with the status and message in the error
    assert_eq!(attempt.verdict, Verdict::Retry { retry_after: None });
    assert_eq!(attempt.status, Some(503));
    assert_eq!(
        attempt.error.as_deref(),
        Some("HTTP 503 Service Unavailable: down for maintenance")
    );
}

#[tokio::test]
async fn a_429_with_retry_after_7_asks_for_7_seconds() {
    // GIVEN a rate-limiting receiver
    let receiver =
        Receiver::with_policy(|_, _| Reply::status(429).header("retry-after", "7")).await;

    // WHEN an event is posted
    let attempt = post_one(&receiver, WAIT).await;

    // THEN it is to be retried no sooner than 7 s
    assert_eq!(
        attempt.verdict,
        Verdict::Retry {
            retry_after: Some(Duration::from_secs(7))
        }
    );
    assert_eq!(attempt.status, Some(429));
    assert_eq!(attempt.error.as_deref(), Some("HTTP 429 Too Many Requests"));
}

#[tokio::test]
async fn a_410_is_gone() {
    // GIVEN a receiver that wants no more webhooks
    let receiver = Receiver::with_policy(|_, _| Reply::status(410)).await;

    // WHEN an event is posted
    let attempt = post_one(&receiver, WAIT).await;

    // THEN the verdict is Gone
    assert_eq!(attempt.verdict, Verdict::Gone);
    assert_eq!(attempt.status, Some(410));
    assert_eq!(attempt.error.as_deref(), Some("HTTP 410 Gone"));
}

#[tokio::test]
async fn a_receiver_slower_than_the_timeout_is_retried() {
    // GIVEN a receiver that takes 30 s to answer, and a 300 ms timeout
    let receiver = Receiver::with_policy(|_, _| Reply::ok().after(Duration::from_secs(30))).await;

    // WHEN an event is posted
    let attempt = post_one(&receiver, Duration::from_millis(300)).await;

    // THEN it gives up at the timeout and is to be retried, saying why
    assert_eq!(attempt.verdict, Verdict::Retry { retry_after: None });
    assert_eq!(attempt.status, None);
    let error = attempt.error.unwrap();
    assert!(error.starts_with("timed out"), "{error}");
    assert!(error.contains("300ms"), "{error}");
    assert!(!error.contains("127.0.0.1"), "no URL in errors: {error}");
    assert!(
        attempt.duration >= Duration::from_millis(300),
        "{:?}",
        attempt.duration
    );
    assert!(
        attempt.duration < Duration::from_secs(5),
        "{:?}",
        attempt.duration
    );
}

#[tokio::test]
async fn an_endless_error_body_is_read_only_in_part() {
    // GIVEN a receiver that answers 500 with a body that never ends
    let receiver = Receiver::with_policy(|_, _| Reply::endless_body(500)).await;

    // WHEN an event is posted with a generous timeout
    let attempt = post_one(&receiver, Duration::from_secs(30)).await;

    // THEN the answer is classified from the first bytes, long before the timeout
    assert_eq!(attempt.verdict, Verdict::Retry { retry_after: None });
    assert_eq!(attempt.status, Some(500));
    let expected = format!("HTTP 500 Internal Server Error: {}…", "x".repeat(200));
    assert_eq!(attempt.error.as_deref(), Some(expected.as_str()));
    assert!(
        attempt.duration < Duration::from_secs(5),
        "{:?}",
        attempt.duration
    );
}

#[tokio::test]
async fn an_endless_success_body_does_not_hold_up_delivery() {
    // GIVEN a receiver that answers 200 with a body that never ends
    let receiver = Receiver::with_policy(|_, _| Reply::endless_body(200)).await;

    // WHEN an event is posted with a generous timeout
    let attempt = post_one(&receiver, Duration::from_secs(30)).await;

    // THEN it is delivered at once
    assert_eq!(attempt.verdict, Verdict::Delivered);
    assert_eq!(attempt.error, None);
    assert!(
        attempt.duration < Duration::from_secs(5),
        "{:?}",
        attempt.duration
    );
}

#[tokio::test]
async fn a_huge_error_body_is_read_only_in_part() {
    // GIVEN a receiver that answers 502 with a 32 MiB body
    let receiver =
        Receiver::with_policy(|_, _| Reply::status(502).body(vec![b'y'; 32 << 20])).await;

    // WHEN an event is posted
    let attempt = post_one(&receiver, Duration::from_secs(30)).await;

    // THEN the error quotes its start only
    assert_eq!(attempt.verdict, Verdict::Retry { retry_after: None });
    let expected = format!("HTTP 502 Bad Gateway: {}…", "y".repeat(200));
    assert_eq!(attempt.error.as_deref(), Some(expected.as_str()));
    assert!(
        attempt.duration < Duration::from_secs(5),
        "{:?}",
        attempt.duration
    );
}

#[tokio::test]
async fn a_dropped_connection_is_retried() {
    // GIVEN a receiver that closes the connection instead of answering
    let receiver = Receiver::with_policy(|_, _| Reply::drop_connection()).await;

    // WHEN an event is posted
    let attempt = post_one(&receiver, WAIT).await;

    // THEN there was no answer, and it is to be retried
    assert_eq!(
        attempt.verdict,
        Verdict::Retry { retry_after: None },
        "{attempt:?}"
    );
    assert_eq!(attempt.status, None);
    let error = attempt.error.unwrap();
    assert!(error.starts_with("request failed"), "{error}");
    assert_eq!(receiver.requests().len(), 1);
}

#[tokio::test]
async fn a_receiver_that_is_down_is_retried_until_it_is_back() {
    // GIVEN a receiver that fails the first attempt of each id, then goes down
    let receiver = Receiver::with_policy(|_, attempt| {
        if attempt == 1 {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    })
    .await;
    // (A client each time: this test is about the receiver, not about pooled connections.)
    let send = || post_one(&receiver, WAIT);
    let first = send().await;
    assert_eq!(first.verdict, Verdict::Retry { retry_after: None });
    receiver.stop().await;

    // WHEN the event is posted while it is down
    let while_down = send().await;

    // THEN the connection fails and it is to be retried
    assert_eq!(while_down.verdict, Verdict::Retry { retry_after: None });
    assert_eq!(while_down.status, None);
    let error = while_down.error.unwrap();
    assert!(error.starts_with("could not connect"), "{error}");

    // WHEN it is back on the same port and the event is posted again
    receiver.restart().await;
    let after = send().await;

    // THEN it is delivered, as the second attempt of that id
    assert_eq!(after.verdict, Verdict::Delivered, "{after:?}");
    let requests = receiver
        .wait_for(|requests| requests.len() == 2, WAIT)
        .await;
    let attempts: Vec<u32> = requests.iter().map(|r| r.attempt).collect();
    assert_eq!(attempts, [1, 2]);
    assert!(requests[1].arrived > requests[0].arrived);
}

#[tokio::test]
async fn stopping_cuts_a_request_in_flight() {
    // GIVEN a receiver that is slow to answer
    let receiver = Receiver::with_policy(|_, _| Reply::ok().after(Duration::from_secs(30))).await;
    let subscriber = subscriber(receiver.url("/hooks"), Duration::from_secs(30));
    let in_flight = tokio::spawn(async move {
        let body = Bytes::from_static(BODY.as_bytes());
        post(
            &build_client(),
            &subscriber,
            Some(&signer()),
            EVENT_ID,
            body,
        )
        .await
    });

    // WHEN it goes down while the request waits
    receiver
        .wait_for(|requests| requests.len() == 1, WAIT)
        .await;
    receiver.stop().await;

    // THEN the request fails at once, to be retried
    let attempt = in_flight.await.unwrap();
    assert_eq!(
        attempt.verdict,
        Verdict::Retry { retry_after: None },
        "{attempt:?}"
    );
    assert_eq!(attempt.status, None);
    assert!(
        attempt.duration < Duration::from_secs(10),
        "{:?}",
        attempt.duration
    );
}

#[tokio::test]
async fn an_invalid_configured_header_dead_letters_without_showing_its_value() {
    // GIVEN a subscriber whose configured header value cannot be sent
    let receiver = Receiver::start().await;
    let mut subscriber = subscriber(receiver.url("/hooks"), WAIT);
    subscriber.headers = vec![(
        "Authorization".to_string(),
        Secret::new("Bearer s3cret\nnewline".to_string()),
    )];

    // WHEN an event is posted
    let attempt = post(
        &build_client(),
        &subscriber,
        Some(&signer()),
        EVENT_ID,
        Bytes::from_static(BODY.as_bytes()),
    )
    .await;

    // THEN nothing is sent, it is dead-lettered, and the error names the header, not its value
    assert_eq!(attempt.verdict, Verdict::DeadLetter);
    let error = attempt.error.unwrap();
    assert!(error.contains("Authorization"), "{error}");
    assert!(!error.contains("s3cret"), "{error}");
    assert!(receiver.requests().is_empty());
}
