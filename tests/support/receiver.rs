//! A webhook receiver for the integration tests: a real HTTP server on 127.0.0.1:0, in process
//! (axum), that records every request in arrival order and answers as the test's policy says:
//! a status with headers and body, after a delay, an endless body, or a dropped connection. It
//! can be stopped and restarted on the same port to play a subscriber that is down, then back.
//!
//! Dropped connections and `stop` work through `receiver/connection.rs`. Also an independent
//! Standard Webhooks verifier ([`verify`], in `receiver/verify.rs`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

mod connection;
mod verify;

use connection::{Connection, Connections, TrackingListener};

pub use verify::{verify, verify_at, TIMESTAMP_TOLERANCE_SECS};

/// Request bodies above this are cut (walhook's are far smaller).
const BODY_LIMIT: usize = 64 << 20;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query, e.g. `/hooks?x=1`.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When the handler saw the request (head and body read).
    pub arrived: Instant,
    /// 1 for the first request with this `webhook-id` (or, without one, this path), 2 for the
    /// next, and so on: the retry count a sender's policy usually wants.
    pub attempt: u32,
}

impl Recorded {
    /// A header's value as text; `None` if absent or not visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("request body is not JSON ({e}): {}", self.body_text()))
    }
}

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Wait, then answer; a `stop` cuts the wait short and drops the connection.
    Delayed(Duration, Box<Reply>),
    /// Close the connection without answering.
    DropConnection,
    /// Answer `status` with a chunked body that never ends.
    EndlessBody { status: u16 },
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::status(200)
    }

    pub fn status(status: u16) -> Reply {
        Reply::Answer {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header to an [`Reply::Answer`] (also through delays).
    pub fn header(self, name: &str, value: &str) -> Reply {
        match self {
            Reply::Answer {
                status,
                mut headers,
                body,
            } => {
                headers.push((name.to_string(), value.to_string()));
                Reply::Answer {
                    status,
                    headers,
                    body,
                }
            }
            Reply::Delayed(delay, then) => {
                Reply::Delayed(delay, Box::new(then.header(name, value)))
            }
            other => panic!("a header only fits an answer, not {other:?}"),
        }
    }

    /// Sets the body of an [`Reply::Answer`] (also through delays).
    pub fn body(self, body: impl Into<Vec<u8>>) -> Reply {
        match self {
            Reply::Answer {
                status, headers, ..
            } => Reply::Answer {
                status,
                headers,
                body: body.into(),
            },
            Reply::Delayed(delay, then) => Reply::Delayed(delay, Box::new(then.body(body))),
            other => panic!("a body only fits an answer, not {other:?}"),
        }
    }

    /// This reply, `delay` later.
    pub fn after(self, delay: Duration) -> Reply {
        Reply::Delayed(delay, Box::new(self))
    }

    pub fn drop_connection() -> Reply {
        Reply::DropConnection
    }

    pub fn endless_body(status: u16) -> Reply {
        Reply::EndlessBody { status }
    }
}

type Policy = Arc<dyn Fn(&Recorded, u32) -> Reply + Send + Sync>;

/// The in-process receiver. Dropping it shuts it down.
pub struct Receiver {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    requests: Mutex<Vec<Recorded>>,
    /// Attempts per `webhook-id` (or path).
    attempts: Mutex<HashMap<String, u32>>,
    /// The number of recorded requests; `wait_for` waits on its changes.
    count: watch::Sender<usize>,
    policy: Mutex<Policy>,
    /// Every connection accepted and maybe still open, to cut them all on `stop`.
    connections: Arc<Connections>,
    /// Bumped by `stop`, so delayed replies end at once.
    stops: watch::Sender<u64>,
}

impl Receiver {
    /// A receiver that answers 200 to everything.
    pub async fn start() -> Receiver {
        Receiver::with_policy(|_, _| Reply::ok()).await
    }

    /// A receiver that answers each request with `policy(request, attempt)`.
    pub async fn with_policy(
        policy: impl Fn(&Recorded, u32) -> Reply + Send + Sync + 'static,
    ) -> Receiver {
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            attempts: Mutex::new(HashMap::new()),
            count: watch::Sender::new(0),
            policy: Mutex::new(Arc::new(policy)),
            connections: Arc::default(),
            stops: watch::Sender::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the test receiver");
        let addr = listener.local_addr().expect("the receiver's address");
        let server = serve(listener, shared.clone());
        Receiver {
            shared,
            addr,
            server: Mutex::new(Some(server)),
        }
    }

    /// Replaces the policy for requests from now on.
    pub fn set_policy(&self, policy: impl Fn(&Recorded, u32) -> Reply + Send + Sync + 'static) {
        *self.shared.policy.lock().unwrap() = Arc::new(policy);
    }

    /// `http://127.0.0.1:<port><path>`; `path` starts with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Waits until `condition` holds for the requests so far, re-checking on each new request,
    /// and returns them. Panics after `timeout` with a summary of what did arrive.
    pub async fn wait_for(
        &self,
        condition: impl Fn(&[Recorded]) -> bool,
        timeout: Duration,
    ) -> Vec<Recorded> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut count = self.shared.count.subscribe();
        loop {
            // Mark the count seen before checking, so a request arriving in between still
            // wakes the wait below.
            count.borrow_and_update();
            let requests = self.requests();
            if condition(&requests) {
                return requests;
            }
            if tokio::time::timeout_at(deadline, count.changed())
                .await
                .is_err()
            {
                panic!(
                    "the receiver's condition did not hold within {timeout:?}; requests so far:\n{}",
                    summary(&requests)
                );
            }
        }
    }

    /// Stops listening (connections are refused) and cuts every open connection, answering
    /// nothing more, as a receiver that went down. Recorded requests are kept.
    pub async fn stop(&self) {
        let server = self.server.lock().unwrap().take();
        if let Some(server) = server {
            server.abort();
            // Once the task is gone, so is the listening socket.
            let _ = server.await;
        }
        self.shared.stops.send_modify(|n| *n += 1);
        self.shared.connections.cut_all();
    }

    /// Listens again on the same port after [`Receiver::stop`].
    pub async fn restart(&self) {
        self.stop().await;
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                // The old socket may take a moment to be released.
                Err(e) if tries < 100 && e.kind() == io::ErrorKind::AddrInUse => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("rebind the test receiver on {}: {e}", self.addr),
            }
        };
        let server = serve(listener, self.shared.clone());
        *self.server.lock().unwrap() = Some(server);
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(server) = self.server.get_mut().ok().and_then(Option::take) {
            server.abort();
        }
        self.shared.stops.send_modify(|n| *n += 1);
        self.shared.connections.cut_all();
    }
}

fn summary(requests: &[Recorded]) -> String {
    let lines: Vec<String> = requests
        .iter()
        .map(|r| {
            format!(
                "  {} {} webhook-id={:?} attempt={} body={} bytes",
                r.method,
                r.path,
                r.header("webhook-id"),
                r.attempt,
                r.body.len()
            )
        })
        .collect();
    if lines.is_empty() {
        "  (none)".to_string()
    } else {
        lines.join("\n")
    }
}

impl Shared {
    fn record(&self, method: String, path: String, headers: HeaderMap, body: Bytes) -> Recorded {
        let arrived = Instant::now();
        let key = headers
            .get("webhook-id")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_else(|| path.clone());
        let attempt = {
            let mut attempts = self.attempts.lock().unwrap();
            let n = attempts.entry(key).or_insert(0);
            *n += 1;
            *n
        };
        let recorded = Recorded {
            method,
            path,
            headers,
            body,
            arrived,
            attempt,
        };
        let count = {
            let mut requests = self.requests.lock().unwrap();
            requests.push(recorded.clone());
            requests.len()
        };
        self.count.send_replace(count);
        recorded
    }
}

fn serve(listener: TcpListener, shared: Arc<Shared>) -> JoinHandle<()> {
    let app = Router::new()
        .fallback(handle)
        .with_state(shared.clone())
        .into_make_service_with_connect_info::<Connection>();
    let listener = TrackingListener::new(listener, shared.connections.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(connection): ConnectInfo<Connection>,
    request: Request,
) -> Response {
    let mut stops = shared.stops.subscribe();
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, BODY_LIMIT).await else {
        // The sender went away mid-body, or sent more than any webhook should.
        connection.kill();
        return Response::new(Body::empty());
    };
    let path = parts.uri.path_and_query().map_or_else(
        || parts.uri.path().to_string(),
        |pq| pq.as_str().to_string(),
    );
    let recorded = shared.record(parts.method.to_string(), path, parts.headers, body);
    let policy = shared.policy.lock().unwrap().clone();
    let mut reply = policy(&recorded, recorded.attempt);
    loop {
        match reply {
            Reply::Delayed(delay, then) => {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => reply = *then,
                    _ = stops.changed() => reply = Reply::DropConnection,
                }
            }
            Reply::DropConnection => {
                // hyper's attempt to write this response fails, so it closes the connection
                // with nothing sent.
                connection.kill();
                return Response::new(Body::empty());
            }
            Reply::Answer {
                status,
                headers,
                body,
            } => return response(status, &headers, Body::from(body)),
            Reply::EndlessBody { status } => return response(status, &[], Body::new(Endless)),
        }
    }
}

fn response(status: u16, headers: &[(String, String)], body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(status).expect("a valid status in the policy");
    for (name, value) in headers {
        response.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).expect("a valid header name in the policy"),
            HeaderValue::from_str(value).expect("a valid header value in the policy"),
        );
    }
    response
}

/// A response body that never ends, as fast as the peer reads it.
struct Endless;

static FILLER: [u8; 16 * 1024] = [b'x'; 16 * 1024];

impl HttpBody for Endless {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(
            &FILLER,
        )))))
    }
}
