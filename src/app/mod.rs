//! The one wiring place: builds the source, mapping, subscriber workers, state and ack
//! tracker from a validated config, owns the channels between them, and runs until shutdown.
//!
//! ```text
//! source task ──SourceEvent──▶ pipeline (mapping, ack tracker) ──Job──▶ worker per subscriber
//!      ▲                            ▲                                        │
//!      └──── confirmed LSN (watch) ─┴──────────── settled (TxnIds) ◀─────────┘
//! ```
//!
//! # How walhook stops
//!
//! One mechanism: a [`CancellationToken`] tells a task to stop, and closing a channel tells
//! its reader to drain. `run` turns the signal it is given (SIGTERM or ctrl-c, a test's stop)
//! into the pipeline's `shutdown` token; then, in this order:
//!
//! 1. The pipeline stops taking source events, backfill chunks and slot problems. The source
//!    keeps its session alive meanwhile; what it still hands over is dropped unconfirmed, so
//!    the next start reads it again.
//! 2. The pipeline closes the workers' queues: each worker finishes its requests in flight,
//!    stores what it holds for a later attempt, and ends; the pipeline takes every settlement.
//! 3. The pipeline saves the checkpoint (the final confirmed position) in the state file.
//! 4. It cancels the source's token: the session reports that position to Postgres in a last
//!    standby status update, and ends the stream with CopyDone.
//! 5. `run` cancels the `background` token: the slot guard and the backfill runner stop
//!    wherever they wait (a backfill saves progress only for settled chunks), and what
//!    backfills wait for is cleared in the state file.
//! 6. The api stops last, so `/health` and `/metrics` answer throughout.
//!
//! When the source, a worker or the slot fails instead, the same steps run from step 2.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::api::{self, ApiError};
use crate::backfill::{self, Windows};
use crate::config::Config;
use crate::config::{Secret, StateConfig};
use crate::database::prerequisites::{self, Expectations, NotReady, Verdict};
use crate::database::provision::{self, ProvisionError, Target};
use crate::database::slot_guard::{self, SlotProblem};
use crate::delivery::{self, build_client, HttpSink, Worker, WorkerContext, WorkerError};
use crate::mapping::{FilterError, Mapper};
use crate::model::Lsn;
use crate::source::{
    self, connect_sql, ConnectError, ConnectSpec, SourceError, SourceSettings, SpecError,
};
use crate::state::{
    AckTracker, PeriodicWrite, PostgresStore, SqliteStore, StateError, Store, UnixMillis,
};
use crate::telemetry::{Health, Role};

#[cfg(test)]
mod error_tests;
mod guard;
mod leader;
mod licence;
mod pipeline;
mod single;
pub mod subscribers;
#[cfg(test)]
mod tests;

use guard::guard_slot;
use licence::{Licence, Licensed};
use pipeline::{Inputs, Pipeline};

/// Jobs a worker's queue holds before the pipeline waits for it.
const WORKER_QUEUE: usize = 1024;
/// Source events buffered between the replication connection and the pipeline.
const SOURCE_QUEUE: usize = 1024;
/// Backfill chunks registered ahead of their watermarks.
const CHUNK_QUEUE: usize = 4;
/// The checkpoint in the state file is written at most this often.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Why `walhook run` stopped with an error. Each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("source.url is not a usable connection string")]
    Url(#[from] SpecError),
    #[error("cannot connect to Postgres")]
    Connect(#[from] ConnectError),
    /// What blocks streaming, each with its fix, as `walhook check` says it.
    #[error(transparent)]
    NotReady(#[from] NotReady),
    #[error("cannot check the database's prerequisites")]
    Check(#[source] tokio_postgres::Error),
    #[error("cannot create the publication or slot; run `walhook check` to see what is missing")]
    Provision(#[from] ProvisionError),
    #[error("cannot open the state store")]
    State(#[from] StateError),
    #[error("a `when` filter does not compile")]
    Filter(#[from] FilterError),
    #[error("replication stopped")]
    Source(#[from] SourceError),
    #[error("delivery stopped")]
    Worker(#[from] WorkerError),
    #[error("cannot start the [api] endpoints")]
    Api(#[from] ApiError),
    /// Its text says what happened and what to do (and says it once in an error chain).
    #[error(transparent)]
    Slot(#[from] SlotProblem),
    #[error("cannot read the slot's position")]
    Sql(#[from] tokio_postgres::Error),
    /// Another `walhook run` uses the SQLite state file.
    #[error(transparent)]
    StateInUse(#[from] single::StateInUse),
}

/// Streams and delivers until `signal` resolves, then drains: requests in flight finish,
/// queued events are stored, the final confirmed LSN is sent, and the stream ends cleanly (see
/// the module's docs for the order). With the state in Postgres, it first waits to lead, and
/// stands by again whenever it loses leadership (see [`leader`]).
pub async fn run(config: Config, signal: impl Future<Output = ()>) -> Result<(), AppError> {
    let health = Arc::new(Health::default());
    // Up first, so `/health` answers and `/ready` says why not while the database is prepared.
    // Dropped on an early return, which stops it as well.
    let api = match &config.api {
        Some(api) => Some(api::start(api, health.clone(), config.source.status_interval).await?),
        None => None,
    };
    let outcome = match &config.state {
        StateConfig::File { path } => {
            health.set_role(Role::Single);
            let store = open_state(&config).await?;
            let _only_one = single::lock_state_file(path)?;
            if let Some(api) = &api {
                api.attach_state(Arc::new(config.clone()), store.clone());
            }
            lead(&config, store, &health, Licence::unlimited(), signal).await
        }
        StateConfig::Postgres { url, schema, lease } => {
            let store = Arc::new(open_postgres_state(url, schema).await?);
            if let Some(api) = &api {
                let shared: Arc<dyn Store> = store.clone();
                api.attach_state(Arc::new(config.clone()), shared);
            }
            leader::run(&config, store, *lease, &health, signal).await
        }
    };
    if let Some(api) = api {
        api.stop().await;
    }
    outcome
}

/// One term of streaming and delivering, with `store` and while `licence` is valid, until
/// `signal` resolves (then it drains) or something fails.
async fn lead(
    config: &Config,
    store: Arc<dyn Store>,
    health: &Arc<Health>,
    licence: Licence,
    signal: impl Future<Output = ()>,
) -> Result<(), AppError> {
    let config = config.clone();
    let spec: ConnectSpec = config.source.url.expose().parse()?;
    log_what_the_state_holds(&config, &*store).await;
    let slot_confirmed = prepare_database(&config, &spec, &*store).await?;
    let mapper = Mapper::new(&config)?;

    let (settled_tx, settled_rx) = mpsc::unbounded_channel();
    let client = build_client();
    let mut workers = JoinSet::new();
    let mut queues = Vec::new();
    // A rate-limited subscriber keeps at most half the unsettled budget, shared with the
    // others, in memory: the rest of the budget stays free for reading on.
    let queue_limit = config.source.max_unsettled / (2 * config.subscribers.len().max(1));
    for subscriber in &config.subscribers {
        delivery::announce(subscriber);
        let (tx, rx) = mpsc::channel(WORKER_QUEUE);
        let worker = Worker::new(
            subscriber.clone(),
            Licensed {
                sink: HttpSink::new(client.clone(), subscriber),
                licence: licence.clone(),
            },
            WorkerContext {
                store: store.clone(),
                settled: settled_tx.clone(),
            },
        )
        .await?
        .with_queue_limit(queue_limit);
        workers.spawn(worker.run(rx));
        queues.push(tx);
    }
    drop(settled_tx);

    let shutdown = CancellationToken::new();
    let stop_source = CancellationToken::new();
    let background = CancellationToken::new();
    // Should this future be dropped half way (a test's task aborted), its tasks stop all the
    // same instead of streaming on unseen.
    let _stop_source_on_drop = stop_source.clone().drop_guard();
    let _stop_background_on_drop = background.clone().drop_guard();
    let (confirmed_tx, confirmed_rx) = watch::channel(slot_confirmed);
    let (events_tx, events_rx) = mpsc::channel(SOURCE_QUEUE);
    let spec_for_guard = spec.clone();
    let spec_for_backfill = spec.clone();
    let settings = SourceSettings {
        spec,
        slot: config.source.slot.clone(),
        publication: config.source.publication.clone(),
        status_interval: config.source.status_interval,
        health: health.clone(),
        canary: config
            .source
            .canary
            .clone()
            .map(|table| (table, config.source.heartbeat_interval)),
    };
    let source = tokio::spawn(source::run(
        settings,
        events_tx,
        confirmed_rx,
        stop_source.clone(),
    ));
    let (problem_tx, problems) = mpsc::channel(1);
    let guard = tokio::spawn(background.clone().run_until_cancelled_owned(guard_slot(
        spec_for_guard,
        config.source.slot.clone(),
        config.source.heartbeat_interval,
        config.source.lag_warn_bytes,
        problem_tx,
    )));
    let (chunks_tx, chunks) = mpsc::channel(CHUNK_QUEUE);
    // One question at a time: a second finds the channel full while the pipeline is busy.
    let (loads_tx, loads) = mpsc::channel(1);
    let backfills = tokio::spawn(background.clone().run_until_cancelled_owned(
        backfill::run_backfills(backfill::RunnerContext {
            spec: spec_for_backfill,
            config: config.clone(),
            store: store.clone(),
            chunks: chunks_tx,
            loads: loads_tx,
        }),
    ));
    info!(slot = %config.source.slot, confirmed = %slot_confirmed, subscribers = config.subscribers.len(), "walhook running");

    let mut pipeline = Pipeline {
        mapper,
        acks: AckTracker::new(slot_confirmed),
        queues,
        open: None,
        last_commit: Lsn(0),
        routed: Vec::new(),
        max_unsettled: config.source.max_unsettled,
        store,
        confirmed_tx,
        checkpoint: PeriodicWrite::new(CHECKPOINT_EVERY),
        slot: config.source.slot.clone(),
        windows: Windows::default(),
        holds: VecDeque::new(),
        reads: Vec::new(),
    };
    resume_backfills(&mut pipeline).await;
    let inputs = Inputs {
        events: events_rx,
        settled: settled_rx,
        source,
        problems,
        chunks,
        loads,
        stop_source,
    };
    let outcome = cancel_on(
        signal,
        &shutdown,
        pipeline.run(inputs, &mut workers, shutdown.clone()),
    )
    .await;
    background.cancel();
    let _ = guard.await;
    // A running backfill waits for the next `walhook run` now, not for what it said it waited
    // for. The runner records its waits on its own thread, so once it has ended none can
    // land after this.
    let _ = backfills.await;
    if let Err(e) = pipeline.store.clear_backfill_waits().await {
        warn!(error = %crate::error_chain(&e), "cannot clear what backfills wait for in the state file");
    }
    if let Err(e) = &outcome {
        error!(error = %crate::error_chain(e), "walhook stopped");
    }
    outcome
}

/// Opens the state store the config names: what `run` and the other commands share. The
/// Postgres store connects through walhook's own connection code (sslmode, TLS, SCRAM) as the
/// source does, so `state` needs nothing of `source`; it creates its schema if missing.
pub async fn open_state(config: &Config) -> Result<Arc<dyn Store>, StateError> {
    match &config.state {
        StateConfig::File { path } => Ok(Arc::new(SqliteStore::open(path)?)),
        StateConfig::Postgres { url, schema, .. } => {
            Ok(Arc::new(open_postgres_state(url, schema).await?))
        }
    }
}

/// Opens the Postgres store of `[state] url` and `schema` (see [`open_state`]).
pub async fn open_postgres_state(url: &Secret, schema: &str) -> Result<PostgresStore, StateError> {
    use crate::source::Host;

    let spec: ConnectSpec =
        url.expose()
            .parse()
            .map_err(|e: SpecError| StateError::PostgresUrl {
                source: Box::new(e),
            })?;
    // `user@host:port/db`: where, as the operator wrote it, without the password.
    let hosts: Vec<String> = spec
        .hosts
        .iter()
        .map(|e| match &e.host {
            Host::Tcp(name) => format!("{name}:{}", e.port),
            Host::Unix(dir) => format!("{}:{}", dir.display(), e.port),
        })
        .collect();
    let place = format!("{}@{}/{}", spec.user, hosts.join(","), spec.dbname);
    PostgresStore::open(place, schema, move || {
        let spec = spec.clone();
        async move { connect_sql(&spec).await }
    })
    .await
}

/// Awaits `work`, cancelling `token` as soon as `signal` resolves.
async fn cancel_on<T>(
    signal: impl Future<Output = ()>,
    token: &CancellationToken,
    work: impl Future<Output = T>,
) -> T {
    tokio::pin!(work);
    tokio::select! {
        biased;
        () = signal => {
            token.cancel();
            work.await
        }
        done = &mut work => done,
    }
}

/// A backfill left running by a stopped walhook resumes: its next report must fold what the
/// slot sends again (see `Pipeline::hold`).
async fn resume_backfills(pipeline: &mut Pipeline) {
    let running = match pipeline.store.active_backfills().await {
        Ok(active) => active,
        Err(e) => {
            warn!(error = %crate::error_chain(&e), "cannot read the backfill requests");
            return;
        }
    };
    for backfill in running
        .iter()
        .filter(|b| b.status == crate::state::BackfillStatus::Running)
    {
        if let Ok(table) = backfill::parse_table(&backfill.table) {
            pipeline.resume_backfill(backfill.id, &table.schema, &table.name);
        }
    }
}

/// Checks what `walhook check` checks, then creates the publication and slot if missing;
/// returns the slot's confirmed position. When it creates the slot, it records the initial
/// backfills (`initial_backfill = true`).
async fn prepare_database(
    config: &Config,
    spec: &ConnectSpec,
    store: &dyn Store,
) -> Result<Lsn, AppError> {
    let client = connect_sql(spec).await?;
    let tables = config.tables();
    let target = Target {
        slot: &config.source.slot,
        publication: &config.source.publication,
        tables: &tables,
        canary: config.source.canary.as_ref(),
        failover: config.source.failover,
    };
    check_prerequisites(&client, &target).await?;
    let plan = provision::plan(&client, &target).await?;
    for statement in &plan.statements {
        info!(sql = %statement, "setting up");
    }
    provision::apply(&client, &plan.statements).await?;
    if plan.creates_slot {
        record_initial_backfills(config, &client, store).await;
    }
    let slot = slot_guard::slot_health(&client, &config.source.slot).await?;
    if let Some(problem) = slot.problem(&config.source.slot) {
        return Err(problem.into());
    }
    let confirmed = slot.confirmed.unwrap_or_default();
    if plan.creates_slot {
        // What a new slot streams starts at its consistent point; creating it waits for the
        // transactions running when it began, and rows committed meanwhile are before it.
        info!(slot = %config.source.slot, start = %confirmed, "replication slot created: it streams the changes committed after its start; rows committed before (even while it was being created) reach subscribers only through a backfill (initial_backfill)");
    }
    Ok(confirmed)
}

/// What `walhook check` checks, before anything is created: stops on what walhook cannot fix
/// itself (with the fix), and warns of what it can stream without.
async fn check_prerequisites(
    client: &tokio_postgres::Client,
    target: &Target<'_>,
) -> Result<(), AppError> {
    let mut findings = prerequisites::check(
        client,
        &Expectations {
            slot: target.slot,
            publication: target.publication,
            tables: target.tables,
            canary: target.canary,
        },
    )
    .await
    .map_err(AppError::Check)?;
    if target.failover {
        let failover = prerequisites::failover::check(client, target.slot).await;
        findings.extend(failover.map_err(AppError::Check)?);
    }
    prerequisites::ready_to_run(&findings)?;
    for finding in findings.iter().filter(|f| f.verdict == Verdict::Degraded) {
        warn!(problem = %finding.summary, fix = finding.fix.as_deref().unwrap_or(""), "the database lacks something walhook streams without");
    }
    Ok(())
}

/// Says at start what the state file holds for each subscriber, so a restart's redeliveries
/// and a backlog can be told apart from new traffic in the log.
async fn log_what_the_state_holds(config: &Config, store: &dyn Store) {
    for subscriber in &config.subscribers {
        match store.subscriber_status(&subscriber.name).await {
            Ok(status) => info!(
                subscriber = %subscriber.name,
                held = status.pending,
                dead_letters = status.dead_letters,
                paused = status.paused.is_some(),
                "state file at start"
            ),
            Err(e) => {
                warn!(subscriber = %subscriber.name, error = %crate::error_chain(&e), "cannot read the state file's contents")
            }
        }
    }
}

/// Records a backfill of every table mapped (with inserts) to each subscriber that asks for
/// an initial backfill. A table that cannot be backfilled (no primary key) is logged and
/// skipped: the stream itself is unaffected.
async fn record_initial_backfills(
    config: &Config,
    client: &tokio_postgres::Client,
    store: &dyn Store,
) {
    for subscriber in config.subscribers.iter().filter(|s| s.initial_backfill) {
        for table in config.tables() {
            let request = backfill::Request {
                table: table.to_string(),
                subscribers: vec![subscriber.name.clone()],
                where_sql: None,
                batch_rows: backfill::DEFAULT_BATCH_ROWS,
                rate: None,
            };
            let recorded = match backfill::plan(config, client, &request).await {
                Ok(new) => store
                    .request_backfill(new, UnixMillis::now())
                    .await
                    .map_err(backfill::BackfillError::from),
                Err(backfill::BackfillError::NotMapped { .. }) => continue,
                Err(e) => Err(e),
            };
            match recorded {
                Ok(id) => {
                    info!(backfill = id, subscriber = %subscriber.name, %table, "initial backfill recorded")
                }
                Err(e) => {
                    error!(subscriber = %subscriber.name, %table, error = %crate::error_chain(&e), "cannot record the initial backfill")
                }
            }
        }
    }
}
