//! A webhook receiver at the TCP level, for answers no well-behaved HTTP server gives: a reset
//! in the middle of the request body, a malformed status line, a response that never ends. One
//! request per connection; it reads the head, then does what the policy says.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::harness::{events_in, row_of, Delivery};

/// What the receiver does with one request, decided from its head.
#[derive(Debug, Clone)]
pub(crate) enum RawReply {
    /// `200 OK`, empty body.
    Ok,
    /// Read half of the body, then reset the connection (RST).
    ResetMidBody,
    /// These bytes as the whole answer, then close.
    Bytes(Vec<u8>),
    /// `head`, then `repeat` over and over for as long as the peer reads.
    Endless { head: Vec<u8>, repeat: Vec<u8> },
}

impl RawReply {
    /// Whether walhook sees this answer as a 2xx.
    fn accepted(&self) -> bool {
        match self {
            RawReply::Ok => true,
            // A well-formed 2xx status line and a complete head.
            RawReply::Bytes(bytes) | RawReply::Endless { head: bytes, .. } => {
                bytes.len() > 12
                    && bytes.starts_with(b"HTTP/1.1 2")
                    && bytes[10..12].iter().all(u8::is_ascii_digit)
                    && bytes[12] == b' '
                    && bytes.windows(4).any(|w| w == b"\r\n\r\n")
            }
            RawReply::ResetMidBody => false,
        }
    }
}

/// A request's head, as the policy sees it.
#[derive(Debug, Clone)]
pub(crate) struct RawHead {
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl RawHead {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub(crate) struct RawRequest {
    /// The whole body; `None` when the policy cut it.
    pub body: Option<Vec<u8>>,
    pub arrived: Instant,
    pub accepted: bool,
}

type Policy = dyn Fn(&RawHead, u32) -> RawReply + Send + Sync;

struct Shared {
    policy: Box<Policy>,
    attempts: Mutex<HashMap<String, u32>>,
    requests: Mutex<Vec<RawRequest>>,
    /// Keep only the events' ids and rows, not the bodies (for millions of events).
    lean: bool,
}

pub(crate) struct RawServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl RawServer {
    pub(crate) async fn start(
        policy: impl Fn(&RawHead, u32) -> RawReply + Send + Sync + 'static,
    ) -> RawServer {
        RawServer::with(policy, false).await
    }

    /// A server that keeps no bodies: [`RawServer::deliveries`] still works.
    pub(crate) async fn lean(
        policy: impl Fn(&RawHead, u32) -> RawReply + Send + Sync + 'static,
    ) -> RawServer {
        RawServer::with(policy, true).await
    }

    async fn with(
        policy: impl Fn(&RawHead, u32) -> RawReply + Send + Sync + 'static,
        lean: bool,
    ) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            policy: Box::new(policy),
            attempts: Mutex::new(HashMap::new()),
            requests: Mutex::new(Vec::new()),
            lean,
        });
        let task = tokio::spawn({
            let shared = shared.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(serve(stream, shared.clone()));
                }
            }
        });
        RawServer { addr, shared, task }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn requests(&self) -> Vec<RawRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub(crate) fn len(&self) -> usize {
        self.shared.requests.lock().unwrap().len()
    }

    /// The events in the requests whose body was read, in arrival order.
    pub(crate) fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries_after(0).0
    }

    /// The events in the requests after the first `skip`, and the number of requests now.
    pub(crate) fn deliveries_after(&self, skip: usize) -> (Vec<Delivery>, usize) {
        let requests = self.shared.requests.lock().unwrap().clone();
        let mut out = Vec::new();
        for r in requests.iter().skip(skip) {
            let Some(body) = &r.body else { continue };
            let body: serde_json::Value = serde_json::from_slice(body).unwrap();
            for event in events_in(&body) {
                out.push(Delivery {
                    id: event["id"].as_str().unwrap().to_string(),
                    row: row_of(event),
                    arrived: r.arrived,
                    accepted: r.accepted,
                });
            }
        }
        (out, requests.len())
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let Some((head, mut body, length)) = read_head(&mut stream).await else {
        return;
    };
    let attempt = {
        let id = head.header("webhook-id").unwrap_or(&head.path).to_string();
        let mut attempts = shared.attempts.lock().unwrap();
        let n = attempts.entry(id).or_insert(0);
        *n += 1;
        *n
    };
    let reply = (shared.policy)(&head, attempt);
    if let RawReply::ResetMidBody = reply {
        let half = length / 2;
        while body.len() < half {
            let mut buf = vec![0u8; half - body.len()];
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => body.extend_from_slice(&buf[..n]),
            }
        }
        record(&shared, None, false);
        let _ = stream.set_zero_linger();
        return;
    }
    while body.len() < length {
        let mut buf = vec![0u8; length - body.len()];
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&buf[..n]),
        }
    }
    let body = if shared.lean { lean(&body) } else { body };
    record(&shared, Some(body), reply.accepted());
    match reply {
        RawReply::Ok => {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        }
        RawReply::Bytes(bytes) => {
            let _ = stream.write_all(&bytes).await;
        }
        RawReply::Endless { head, repeat } => {
            if stream.write_all(&head).await.is_ok() {
                while stream.write_all(&repeat).await.is_ok() {}
            }
        }
        RawReply::ResetMidBody => unreachable!(),
    }
    let _ = stream.shutdown().await;
}

/// Reads up to the end of the head; returns it, the body bytes read with it, and the body's
/// length.
async fn read_head(stream: &mut TcpStream) -> Option<(RawHead, Vec<u8>, usize)> {
    let mut buf = Vec::new();
    let end = loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
    };
    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let head = RawHead { path, headers };
    let length = head
        .header("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    Some((head, buf[end + 4..].to_vec(), length))
}

/// A body reduced to what [`RawServer::deliveries`] reads: each event's id and row id.
fn lean(body: &[u8]) -> Vec<u8> {
    let body: serde_json::Value = serde_json::from_slice(body).unwrap();
    let events: Vec<serde_json::Value> = events_in(&body)
        .into_iter()
        .map(|e| serde_json::json!({"id": e["id"], "data": {"row": {"id": row_of(e)}}}))
        .collect();
    serde_json::to_vec(&serde_json::json!({ "events": events })).unwrap()
}

fn record(shared: &Shared, body: Option<Vec<u8>>, accepted: bool) {
    shared.requests.lock().unwrap().push(RawRequest {
        body,
        arrived: Instant::now(),
        accepted,
    });
}
