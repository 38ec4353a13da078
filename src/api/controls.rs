//! The control routes, served only when `[api] token` is set: `POST /subscribers/{name}/pause`
//! (optional JSON body `{"reason": "..."}`), `POST /subscribers/{name}/resume` and
//! `GET /subscribers`, each behind `Authorization: Bearer <token>`.
//!
//! The token is compared in constant time: both sides are hashed with SHA-256 first, so
//! neither the content nor the length of the configured token leaks through timing. The routes
//! do what `walhook subscribers` does (`app::subscribers`), so both say the same.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use crate::app::subscribers::{self as controls, rfc3339, ControlError};
use crate::config::{Config, Secret};
use crate::state::{Pause, Store};

/// What the control routes need: the token, and, once `walhook run` has opened it, the store
/// with the config it checks names against.
pub(super) struct Controls {
    token_digest: [u8; 32],
    ready: OnceLock<(Arc<Config>, Arc<dyn Store>)>,
}

impl Controls {
    pub fn new(token: &Secret) -> Self {
        Self {
            token_digest: Sha256::digest(token.expose().as_bytes()).into(),
            ready: OnceLock::new(),
        }
    }

    /// From now on the routes act on `store`.
    pub fn attach(&self, config: Arc<Config>, store: Arc<dyn Store>) {
        let _ = self.ready.set((config, store));
    }

    /// Whether `headers` carry `Authorization: Bearer <the token>`.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
        else {
            return false;
        };
        let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        given.ct_eq(&self.token_digest).into()
    }
}

/// The token of an `Authorization: Bearer <token>` value (the scheme in any case).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

pub(super) fn routes(controls: Arc<Controls>) -> Router {
    Router::new()
        .route("/subscribers", get(list))
        .route("/subscribers/{name}/pause", post(pause))
        .route("/subscribers/{name}/resume", post(resume))
        .with_state(controls)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PauseBody {
    reason: Option<String>,
}

async fn list(State(c): State<Arc<Controls>>, headers: HeaderMap) -> Response {
    let (config, store) = match admitted(&c, &headers) {
        Ok(ready) => ready,
        Err(refusal) => return refusal.response(),
    };
    match controls::list(config, &**store).await {
        Ok(views) => answer(StatusCode::OK, json!(views)),
        Err(e) => failed(&ControlError::State(e)),
    }
}

async fn pause(
    State(c): State<Arc<Controls>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (config, store) = match admitted(&c, &headers) {
        Ok(ready) => ready,
        Err(refusal) => return refusal.response(),
    };
    let body: PauseBody = if body.iter().all(u8::is_ascii_whitespace) {
        PauseBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(body) => body,
            Err(e) => {
                let error = format!(
                    "the body must be empty or JSON like {{\"reason\": \"receiver maintenance\"}}: {e}"
                );
                return answer(StatusCode::BAD_REQUEST, json!({ "error": error }));
            }
        }
    };
    let by = format!("api ({})", peer.ip());
    match controls::pause(config, &**store, &name, body.reason, by).await {
        Ok(paused) => {
            if !paused.already {
                info!(subscriber = %name, %peer, "subscriber paused through the api");
            }
            let mut value = pause_json(&name, &paused.pause);
            value["already_paused"] = json!(paused.already);
            answer(StatusCode::OK, value)
        }
        Err(e) => failed(&e),
    }
}

async fn resume(
    State(c): State<Arc<Controls>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (config, store) = match admitted(&c, &headers) {
        Ok(ready) => ready,
        Err(refusal) => return refusal.response(),
    };
    match controls::resume(config, &**store, &name).await {
        Ok(Some(pause)) => {
            info!(subscriber = %name, %peer, "subscriber resumed through the api");
            let mut value = pause_json(&name, &pause);
            value["state"] = json!("active");
            value["was_paused"] = json!(true);
            answer(StatusCode::OK, value)
        }
        Ok(None) => answer(
            StatusCode::OK,
            json!({ "subscriber": name, "state": "active", "was_paused": false }),
        ),
        Err(e) => failed(&e),
    }
}

/// Why a control request is not acted on.
enum Refusal {
    /// No token, or a wrong one.
    Token,
    /// The store is not open yet.
    Starting,
}

impl Refusal {
    fn response(self) -> Response {
        match self {
            Refusal::Token => {
                let error =
                    "missing or wrong bearer token: send `Authorization: Bearer <[api] token>`";
                let mut refusal = answer(StatusCode::UNAUTHORIZED, json!({ "error": error }));
                refusal.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
                refusal
            }
            Refusal::Starting => answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": "walhook is starting and has not opened its state store yet; try again in a moment" }),
            ),
        }
    }
}

/// The store and config if the request carries the token and the store is open.
fn admitted<'a>(
    c: &'a Controls,
    headers: &HeaderMap,
) -> Result<(&'a Config, &'a Arc<dyn Store>), Refusal> {
    if !c.authorized(headers) {
        return Err(Refusal::Token);
    }
    match c.ready.get() {
        Some((config, store)) => Ok((config, store)),
        None => Err(Refusal::Starting),
    }
}

fn pause_json(name: &str, pause: &Pause) -> serde_json::Value {
    json!({
        "subscriber": name,
        "state": "paused",
        "paused_reason": pause.reason,
        "paused_by": pause.by,
        "paused_since": rfc3339(pause.since),
    })
}

fn failed(e: &ControlError) -> Response {
    let status = match e {
        ControlError::Unknown { .. } => StatusCode::NOT_FOUND,
        ControlError::State(_) => {
            warn!(error = %crate::error_chain(e), "an api control request failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    answer(status, json!({ "error": crate::error_chain(e) }))
}

fn answer(status: StatusCode, value: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{value}\n"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            value.parse().expect("a header value"),
        );
        headers
    }

    #[test]
    fn only_the_exact_token_as_a_bearer_is_admitted() {
        let c = Controls::new(&Secret::new("s3cret-token".to_string()));
        assert!(c.authorized(&headers("Bearer s3cret-token")));
        assert!(c.authorized(&headers("bearer s3cret-token")));
        assert!(!c.authorized(&HeaderMap::new()));
        assert!(!c.authorized(&headers("Bearer s3cret-toke")));
        assert!(!c.authorized(&headers("Bearer s3cret-token2")));
        assert!(!c.authorized(&headers("Basic s3cret-token")));
        assert!(!c.authorized(&headers("s3cret-token")));
        assert!(!c.authorized(&headers("Bearer ")));
    }
}
