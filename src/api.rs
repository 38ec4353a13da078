//! The `[api] listen` endpoints: `/metrics` (Prometheus text), `/health` (the process is alive)
//! and `/ready` (the replication connection streams and reports progress to Postgres); with
//! `[api] token` also the control routes (see `controls`: pause, resume and list subscribers).
//!
//! The metrics recorder is process-wide: the first server installs it, later ones (several
//! walhooks in one test process) share it, so their counters add up.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{info, warn};

use crate::config::{ApiConfig, Config};
use crate::state::Store;

mod controls;
use crate::telemetry::{
    self, Health, Role, DELIVERY_LATENCY, RATE_LIMIT_WAIT, REQUEST_DURATION, STATUS_UPDATE_AGE,
};
use controls::Controls;

/// Commit to 2xx spans milliseconds (live) to days (retried until `give_up_after`).
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 3600.0, 21600.0, 86400.0,
];
/// One request is bounded by the subscriber's `timeout` (10 s by default); a wait for a rate
/// limit is mostly below one second.
const REQUEST_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Histogram samples are folded into their buckets at least this often, even when nobody
/// scrapes, so they cannot pile up in memory.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);
/// How long a stop waits for open connections to finish.
const STOP_GRACE: Duration = Duration::from_secs(5);
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Why the endpoints could not start. Each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot listen on api.listen `{addr}`; give a free port on an address of this host, e.g. `127.0.0.1:9188`")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot install the Prometheus metrics recorder")]
    Recorder(#[source] BuildError),
}

/// The running endpoints. Dropping it stops them too (without waiting).
pub struct ApiServer {
    /// Cancels the server's token when dropped.
    stop: DropGuard,
    task: JoinHandle<()>,
    /// The control routes' state, when `[api] token` is set.
    controls: Option<Arc<Controls>>,
}

impl ApiServer {
    /// The control routes act on `store` from now on (until then they answer 503: walhook is
    /// starting). Without `[api] token` there are none, and this does nothing.
    pub fn attach_state(&self, config: Arc<Config>, store: Arc<dyn Store>) {
        if let Some(controls) = &self.controls {
            controls.attach(config, store);
        }
    }

    /// Stops accepting, lets open requests finish (a few seconds at most), and returns once the
    /// port is free.
    pub async fn stop(self) {
        let Self { stop, task, .. } = self;
        stop.disarm().cancel();
        let _ = task.await;
    }
}

struct ApiState {
    metrics: PrometheusHandle,
    health: Arc<Health>,
    /// `/ready` fails when the last standby status update is older than this.
    status_limit: Duration,
}

/// Binds `config.listen` and serves until stopped. `status_interval` is the source's: a
/// status update older than twice that means the session is stuck.
pub async fn start(
    config: &ApiConfig,
    health: Arc<Health>,
    status_interval: Duration,
) -> Result<ApiServer, ApiError> {
    let metrics = recorder()?;
    let listen = |source| ApiError::Listen {
        addr: config.listen,
        source,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(listen)?;
    let addr = listener.local_addr().map_err(listen)?;
    let state = Arc::new(ApiState {
        metrics: metrics.clone(),
        health,
        status_limit: status_interval * 2,
    });
    let mut router = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .with_state(state);
    let controls = config.token.as_ref().map(|t| Arc::new(Controls::new(t)));
    if let Some(controls) = &controls {
        router = router.merge(controls::routes(controls.clone()));
    }
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    let stop = CancellationToken::new();
    let stopping = stop.clone();
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, service)
            .with_graceful_shutdown(stopping.clone().cancelled_owned())
            .into_future();
        // Open requests get this long to finish once the server stops accepting.
        let grace = async {
            stopping.cancelled().await;
            tokio::time::sleep(STOP_GRACE).await;
        };
        let upkeep = async {
            let mut tick = tokio::time::interval(UPKEEP_EVERY);
            loop {
                tick.tick().await;
                metrics.run_upkeep();
            }
        };
        tokio::select! {
            served = serve => if let Err(e) = served {
                warn!(error = %e, "the api server stopped");
            },
            () = upkeep => {}
            () = grace => {}
        }
    });
    if controls.is_some() {
        info!(listen = %addr, "serving /metrics, /health, /ready and, with the token, /subscribers");
    } else {
        info!(listen = %addr, "serving /metrics, /health and /ready");
    }
    Ok(ApiServer {
        stop: stop.drop_guard(),
        task,
        controls,
    })
}

/// The process-wide recorder, installed on first use.
fn recorder() -> Result<PrometheusHandle, ApiError> {
    static INSTALLED: Mutex<Option<PrometheusHandle>> = Mutex::new(None);
    let mut installed = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(handle) = installed.as_ref() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(DELIVERY_LATENCY.into()), LATENCY_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), REQUEST_BUCKETS)
        })
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(RATE_LIMIT_WAIT.into()), REQUEST_BUCKETS)
        })
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(ApiError::Recorder)?;
    telemetry::describe();
    *installed = Some(handle.clone());
    Ok(handle)
}

async fn render_metrics(State(state): State<Arc<ApiState>>) -> impl IntoResponse {
    if let Some(age) = state.health.status_age_secs() {
        metrics::gauge!(STATUS_UPDATE_AGE).set(age);
    }
    (
        [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
        state.metrics.render(),
    )
}

async fn ready(State(state): State<Arc<ApiState>>) -> (StatusCode, String) {
    let health = &state.health;
    // A standby is ready for what it does, standing by, while it can take over; it answers
    // 200 so that rolling updates and readiness alerts treat it as up (README, "Running two or
    // more"), and says which it is. `walhook_leader` tells them apart in metrics.
    match health.role() {
        Role::Standby => return (StatusCode::OK, "standby\n".to_string()),
        Role::StandbyUnreachable => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "standby, but the state database is unreachable: it could not take over\n"
                    .to_string(),
            )
        }
        Role::Single | Role::Leader => {}
    }
    let leads = if health.role() == Role::Leader {
        "leader, "
    } else {
        ""
    };
    match readiness(
        health.is_streaming(),
        health.status_age_secs(),
        state.status_limit,
    ) {
        Ok(()) => (StatusCode::OK, format!("{leads}ready\n")),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{leads}{reason}\n"),
        ),
    }
}

/// Ready means streaming, with a standby status update sent within `limit`: otherwise the
/// slot may not be advancing, and Postgres may be about to drop the connection.
fn readiness(streaming: bool, status_age: Option<f64>, limit: Duration) -> Result<(), String> {
    if !streaming {
        return Err("not streaming: the replication connection is not up".into());
    }
    match status_age {
        None => Err("streaming, but no standby status update was sent yet".into()),
        Some(age) if age > limit.as_secs_f64() => Err(format!(
            "the last standby status update was {age:.1}s ago (limit {:.1}s)",
            limit.as_secs_f64()
        )),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const LIMIT: Duration = Duration::from_secs(20);

    #[test]
    fn ready_only_while_streaming_with_a_recent_status_update() {
        let not_up = readiness(false, Some(1.0), LIMIT).unwrap_err();
        assert!(not_up.starts_with("not streaming"), "{not_up}");
        let silent = readiness(true, None, LIMIT).unwrap_err();
        assert!(silent.contains("no standby status update"), "{silent}");
        let stale = readiness(true, Some(20.5), LIMIT).unwrap_err();
        assert_eq!(
            stale,
            "the last standby status update was 20.5s ago (limit 20.0s)"
        );
        assert_eq!(readiness(true, Some(0.0), LIMIT), Ok(()));
        assert_eq!(readiness(true, Some(20.0), LIMIT), Ok(()));
    }

    #[test]
    fn readiness_follows_the_health_the_source_writes() {
        let health = Health::default();
        assert!(readiness(health.is_streaming(), health.status_age_secs(), LIMIT).is_err());
        health.set_streaming(true);
        assert!(readiness(health.is_streaming(), health.status_age_secs(), LIMIT).is_err());
        health.status_sent();
        assert_eq!(
            readiness(health.is_streaming(), health.status_age_secs(), LIMIT),
            Ok(())
        );
        health.set_streaming(false);
        assert!(readiness(health.is_streaming(), health.status_age_secs(), LIMIT).is_err());
    }

    #[test]
    fn the_default_listen_address_is_loopback() {
        let config = crate::config::parse(
            r#"
            source.url = "postgres://localhost/app"
            subscribers.a.url = "http://127.0.0.1:9000/"
            [api]
            [[events]]
            type = "t"
            table = "public.t"
            subscribers = ["a"]
            "#,
            Path::new("dir"),
            &|_| None,
        )
        .unwrap();
        let listen = config.api.unwrap().listen;
        assert!(listen.ip().is_loopback(), "{listen}");
        assert_eq!(listen, SocketAddr::from(([127, 0, 0, 1], 9187)));
    }
}
