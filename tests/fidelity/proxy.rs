//! A subscriber that fails now and then: an HTTP proxy in front of the sync receiver that, by
//! a seeded choice, answers 503 without passing the request on, or passes it on and answers
//! 500 anyway (the receiver applied it; walhook sends it again), or passes the answer through.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Router;

use crate::faults::harness::Rng;

struct Proxy {
    target: String,
    client: reqwest::Client,
    rng: Mutex<Rng>,
    /// Percent of requests that fail (half before, half after the receiver saw them).
    fail: u64,
}

/// Starts the proxy to `target` on a free port; gives its address.
pub(crate) async fn start(target: String, seed: u64, fail: u64) -> SocketAddr {
    let proxy = Arc::new(Proxy {
        target,
        client: reqwest::Client::new(),
        rng: Mutex::new(Rng::new(seed ^ 0x5eed)),
        fail,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().fallback(handle).with_state(proxy);
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn handle(
    State(proxy): State<Arc<Proxy>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let roll = proxy.rng.lock().unwrap().range(0, 100);
    if roll < proxy.fail / 2 {
        return (StatusCode::SERVICE_UNAVAILABLE, "injected failure".into());
    }
    let mut request = proxy.client.post(&proxy.target).body(body);
    for name in [
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "content-type",
    ] {
        if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
            request = request.header(name, value);
        }
    }
    let answer = match request.send().await {
        Ok(response) => {
            let status =
                StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            (status, response.text().await.unwrap_or_default())
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()),
    };
    if roll < proxy.fail && answer.0.is_success() {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "injected failure after the receiver applied it".into(),
        );
    }
    answer
}
