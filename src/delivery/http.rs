//! One webhook request: the shared HTTP client, the Standard Webhooks headers of DESIGN.md "The
//! webhook request", and what the answer means. Batching decides nothing here; it only shapes
//! the body and id.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::redirect;

use super::retry::{classify, classify_failure, TransportFailure, Verdict};
use super::signing::Signer;
use super::sink::{Outcome, Report, Sink};
use crate::config::SubscriberConfig;
use crate::model::Event;

const USER_AGENT: &str = concat!("walhook/", env!("CARGO_PKG_VERSION"));

/// How much of an answer's body is read: enough to quote a receiver's error message, and small
/// enough that a receiver streaming an endless body costs nothing. A body that ends within it
/// lets the connection go back to the pool; a longer one closes the connection.
const BODY_READ_LIMIT: usize = 1024;
/// How many characters of that body an error message quotes.
const BODY_QUOTE_CHARS: usize = 200;

/// The outcome of one POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub verdict: Verdict,
    /// The answer's status, if one came.
    pub status: Option<u16>,
    /// Why it was not delivered, short enough for a log line or a dead letter. Never holds a
    /// header value or the subscriber's URL (either may carry a token).
    pub error: Option<String>,
    /// From just before sending to the end of reading the answer.
    pub duration: Duration,
}

/// The one HTTP client all subscribers share (it pools connections per host). It speaks
/// HTTP/1.1, and HTTP/2 to an `https://` receiver that offers it (TLS ALPN): then the requests
/// in flight share one connection.
///
/// Redirects are not followed (Standard Webhooks: a 3xx is a failure; the subscriber's URL
/// should be fixed instead). Connecting may take 5 s; a request's whole budget is its
/// subscriber's `timeout`, set per request by [`post`]. Many small POSTs to few hosts want warm
/// connections: idle ones are kept up to 64 per host for 30 s, shorter than most servers'
/// keep-alive (nginx 75 s), so walhook rarely reuses one the server is just closing.
pub fn build_client() -> reqwest::Client {
    client_builder()
        .build()
        // Only a TLS backend that fails to initialise makes this fail, and walhook compiles in
        // rustls with its own root store, which reads nothing from the system.
        .expect("the HTTP client builds with rustls and webpki roots")
}

/// A client for one subscriber with `h2c = true`: cleartext HTTP/2 with prior knowledge, every
/// request in flight on one connection. Otherwise as [`build_client`].
pub fn build_h2c_client() -> reqwest::Client {
    client_builder()
        .http2_prior_knowledge()
        .build()
        .expect("the HTTP client builds with rustls and webpki roots")
}

fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .redirect(redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .tcp_keepalive(Duration::from_secs(60))
}

/// POSTs `body` to the subscriber with the Standard Webhooks headers (`webhook-id`,
/// `webhook-timestamp` = now, `webhook-signature` if `signer` is given), `content-type:
/// application/json` and the configured headers, and classifies the answer.
///
/// Everything, from connecting to reading at most 1 KiB of the answer's body, fits in the
/// subscriber's `timeout`. walhook's own headers replace configured ones of the same
/// name, so a configured header can never break a signature. Never panics and never returns an
/// error: every failure is an [`Attempt`] with a verdict.
pub async fn post(
    client: &reqwest::Client,
    subscriber: &SubscriberConfig,
    signer: Option<&Signer>,
    webhook_id: &str,
    body: Bytes,
) -> Attempt {
    let started = Instant::now();
    let headers = match request_headers(subscriber, signer, webhook_id, unix_now(), &body) {
        Ok(headers) => headers,
        Err(error) => {
            return Attempt {
                verdict: Verdict::DeadLetter,
                status: None,
                error: Some(error),
                duration: started.elapsed(),
            }
        }
    };
    let sent = client
        .post(subscriber.url.clone())
        .headers(headers)
        .timeout(subscriber.timeout)
        .body(body)
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(error) => {
            return Attempt {
                verdict: classify_failure(transport_failure(&error)),
                status: None,
                error: Some(describe_error(error, subscriber.timeout)),
                duration: started.elapsed(),
            }
        }
    };

    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let verdict = classify(status, retry_after.as_deref());
    // Read even after a 2xx: a short body read to its end returns the connection to the pool.
    let quoted = read_prefix(response, BODY_READ_LIMIT).await;
    let error = match verdict {
        Verdict::Delivered => None,
        _ => Some(describe_status(status, &quoted)),
    };
    Attempt {
        verdict,
        status: Some(status),
        error,
        duration: started.elapsed(),
    }
}

/// Webhook POSTs to one subscriber: the [`Sink`] of DESIGN.md "The webhook request". One event
/// goes as its own body under its own id; several go as [`batch_body`] under [`batch_id`].
pub struct HttpSink {
    client: reqwest::Client,
    subscriber: Arc<SubscriberConfig>,
    signer: Option<Signer>,
}

impl HttpSink {
    /// A sink for `subscriber` on the shared `client` (see [`build_client`]), or on a client of
    /// its own for cleartext HTTP/2 (`h2c`).
    pub fn new(client: reqwest::Client, subscriber: &SubscriberConfig) -> Self {
        let client = if subscriber.h2c {
            build_h2c_client()
        } else {
            client
        };
        let signer = subscriber
            .signing_key
            .as_ref()
            .map(|key| Signer::new(key.expose()));
        Self {
            client,
            subscriber: Arc::new(subscriber.clone()),
            signer,
        }
    }

    /// What an HTTP attempt means to the worker. The status stays a detail (`code`); a 410
    /// pauses the subscriber with a reason naming the host (never the whole URL, which may
    /// hold a token).
    fn report(&self, attempt: Attempt) -> Report {
        let outcome = match attempt.verdict {
            Verdict::Delivered => Outcome::Delivered,
            Verdict::Retry { retry_after } if attempt.status.is_some() => {
                Outcome::Retry { after: retry_after }
            }
            Verdict::Retry { .. } => Outcome::Unreachable,
            Verdict::DeadLetter => Outcome::Reject,
            Verdict::Gone => Outcome::Gone {
                reason: format!(
                    "410 Gone from {}",
                    self.subscriber.url.host_str().unwrap_or("?")
                ),
            },
        };
        Report {
            outcome,
            code: attempt.status,
            detail: attempt.error,
            took: attempt.duration,
        }
    }
}

impl Sink for HttpSink {
    async fn send(&self, events: &[&Event]) -> Report {
        let (id, body) = match events {
            [only] => (only.id.clone(), only.body.clone()),
            _ => (batch_id(events), batch_body(events)),
        };
        let attempt = post(
            &self.client,
            &self.subscriber,
            self.signer.as_ref(),
            &id,
            Bytes::from(body),
        )
        .await;
        self.report(attempt)
    }
}

/// The body of one request carrying several events: `{"events":[<body>,<body>,...]}`, each body
/// exactly as a single-event request would carry it.
pub fn batch_body(events: &[&Event]) -> String {
    let bodies: usize = events.iter().map(|e| e.body.len() + 1).sum();
    let mut out = String::with_capacity(bodies + r#"{"events":[]}"#.len());
    out.push_str(r#"{"events":["#);
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&event.body);
    }
    out.push_str("]}");
    out
}

/// The `webhook-id` of a batch: `batch_<first event id>_<count>`. Deterministic, so a retried
/// batch of the same events keeps its id. `events` is never empty in practice; an empty slice
/// gives `batch__0`.
pub fn batch_id(events: &[&Event]) -> String {
    let first = events.first().map_or("", |e| e.id.as_str());
    format!("batch_{first}_{}", events.len())
}

fn request_headers(
    subscriber: &SubscriberConfig,
    signer: Option<&Signer>,
    webhook_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::with_capacity(subscriber.headers.len() + 4);
    for (configured, value) in &subscriber.headers {
        let name = HeaderName::from_bytes(configured.as_bytes()).map_err(|_| {
            format!("configured header name `{configured}` is not a valid HTTP name")
        })?;
        let mut value = HeaderValue::from_str(value.expose()).map_err(|_| {
            format!("configured header `{configured}` has a value HTTP does not allow (not shown)")
        })?;
        value.set_sensitive(true);
        headers.append(name, value);
    }
    let id = HeaderValue::from_str(webhook_id)
        .map_err(|_| format!("webhook id `{webhook_id}` is not a valid header value"))?;
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("webhook-id", id);
    headers.insert("webhook-timestamp", HeaderValue::from(timestamp));
    match signer {
        Some(signer) => {
            let signature = signer.sign(webhook_id, timestamp, body);
            // base64 and "v1," are always valid header characters.
            if let Ok(signature) = HeaderValue::from_str(&signature) {
                headers.insert("webhook-signature", signature);
            }
        }
        // Unsigned: a configured header must not pose as a signature.
        None => {
            headers.remove("webhook-signature");
        }
    }
    Ok(headers)
}

fn unix_now() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX)
}

/// Reads the answer's body until it ends, `limit` bytes have come, or it fails (the request's
/// timeout covers this read too). What came before a failure is kept.
async fn read_prefix(mut response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut prefix = Vec::new();
    while prefix.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = limit - prefix.len();
                prefix.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    prefix
}

/// `HTTP 503 Service Unavailable: <start of the body>`, on one line.
fn describe_status(status: u16, body: &[u8]) -> String {
    let mut message = format!("HTTP {status}");
    if let Some(reason) = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
    {
        let _ = write!(message, " {reason}");
    }
    let quoted = one_line(&String::from_utf8_lossy(body), BODY_QUOTE_CHARS);
    if !quoted.is_empty() {
        let _ = write!(message, ": {quoted}");
    }
    message
}

/// What kind of failure a request that got no answer met: reqwest rejects a URL or header it
/// cannot send while building the request (`is_builder`); everything else happened on the way.
fn transport_failure(error: &reqwest::Error) -> TransportFailure {
    if error.is_builder() {
        TransportFailure::Unbuildable
    } else {
        TransportFailure::Interrupted
    }
}

/// Why a request got no answer: a short label, then reqwest's chain of causes. The URL is
/// stripped (it may hold a token); no cause in the chain quotes a header value.
fn describe_error(error: reqwest::Error, timeout: Duration) -> String {
    let error = error.without_url();
    if error.is_timeout() && !error.is_connect() {
        // The causes only repeat it ("operation timed out").
        return format!(
            "timed out: no complete answer within the subscriber's timeout of {timeout:?}"
        );
    }
    let mut message = if error.is_timeout() {
        "timed out while connecting".to_string()
    } else if error.is_connect() {
        "could not connect".to_string()
    } else if error.is_builder() {
        "could not build the request".to_string()
    } else {
        "request failed".to_string()
    };
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(&error);
    while let Some(current) = cause {
        let _ = write!(message, ": {current}");
        cause = current.source();
    }
    one_line(&message, 400)
}

/// `text` with control characters (newlines included) made spaces, trimmed, and cut to
/// `max_chars` with an ellipsis.
fn one_line(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    for (i, c) in text.trim().chars().enumerate() {
        if i == max_chars {
            out.push('…');
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

#[cfg(test)]
mod tests;
