//! The one wiring place: builds the source, mapping, subscriber workers, state and ack
//! tracker from a validated config, owns the channels between them, and runs until shutdown.
//!
//! ```text
//! source task ──SourceEvent──▶ pipeline (mapping, ack tracker) ──Job──▶ worker per subscriber
//!      ▲                            ▲                                        │
//!      └──── confirmed LSN (watch) ─┴──────────── settled (TxnIds) ◀─────────┘
//! ```

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::api::{self, ApiError};
use crate::backfill::{self, ChunkOpen, Closed, Windows};
use crate::config::Config;
use crate::delivery::{self, build_client, Job, Worker, WorkerContext, WorkerError};
use crate::mapping::{FilterError, Mapper, ReadRow, Routed};
use crate::source::provision::{self, ProvisionError, Target};
use crate::source::slot_guard::{self, LagWarning, SlotProblem};
use crate::source::{
    connect_sql, stream, ConnectError, ConnectSpec, Lsn, SourceError, SourceEvent, SourceSettings,
    SpecError,
};
use crate::state::{AckTracker, StateError, Store, TxnId, UnixMillis};
use crate::telemetry::{Health, CONFIRMED_LSN};

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
    #[error("{0}")]
    Slot(#[from] SlotProblem),
    #[error("cannot read the slot's position")]
    Sql(#[from] tokio_postgres::Error),
}

/// Streams and delivers until `shutdown` resolves, then drains: requests in flight finish,
/// queued events are stored, the final confirmed LSN is sent, and the stream ends cleanly.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), AppError> {
    let spec: ConnectSpec = config.source.url.expose().parse()?;
    let health = Arc::new(Health::default());
    // Up first, so `/health` answers and `/ready` says why not while the database is prepared.
    // Dropped on an early return, which stops it as well.
    let api = match &config.api {
        Some(api) => Some(api::start(api, health.clone(), config.source.status_interval).await?),
        None => None,
    };
    let store = Arc::new(Mutex::new(Store::open(&config.state.path)?));
    let slot_confirmed = prepare_database(&config, &spec, &store).await?;
    let mapper = Mapper::new(&config)?;

    let (settled_tx, settled_rx) = mpsc::unbounded_channel();
    let client = build_client();
    let mut workers = JoinSet::new();
    let mut queues = Vec::new();
    for subscriber in &config.subscribers {
        delivery::announce(subscriber);
        let (tx, rx) = mpsc::channel(WORKER_QUEUE);
        let worker = Worker::new(
            subscriber.clone(),
            WorkerContext {
                client: client.clone(),
                store: store.clone(),
                settled: settled_tx.clone(),
            },
        )?;
        workers.spawn(worker.run(rx));
        queues.push(tx);
    }
    drop(settled_tx);

    let (confirmed_tx, confirmed_rx) = watch::channel(slot_confirmed);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (events_tx, events_rx) = mpsc::channel(SOURCE_QUEUE);
    let spec_for_guard = spec.clone();
    let spec_for_backfill = spec.clone();
    let settings = SourceSettings {
        spec,
        slot: config.source.slot.clone(),
        publication: config.source.publication.clone(),
        status_interval: config.source.status_interval,
        health,
    };
    let source = tokio::spawn(run_source(settings, events_tx, confirmed_rx, stop_rx));
    let (problem_tx, problems) = mpsc::channel(1);
    let guard = tokio::spawn(guard_slot(
        spec_for_guard,
        config.source.slot.clone(),
        config.source.heartbeat_interval,
        config.source.lag_warn_bytes,
        problem_tx,
    ));
    let (chunks_tx, chunks) = mpsc::channel(CHUNK_QUEUE);
    let backfills = tokio::spawn(backfill::run_backfills(backfill::RunnerContext {
        spec: spec_for_backfill,
        config: config.clone(),
        store: store.clone(),
        chunks: chunks_tx,
    }));
    info!(slot = %config.source.slot, confirmed = %slot_confirmed, subscribers = config.subscribers.len(), "walhook running");

    let mut pipeline = Pipeline {
        mapper,
        acks: AckTracker::new(slot_confirmed),
        queues,
        open: None,
        skipping: false,
        last_commit: Lsn(0),
        routed: Vec::new(),
        max_unsettled: config.source.max_unsettled,
        store,
        confirmed_tx,
        checkpointed: Instant::now(),
        slot: config.source.slot.clone(),
        windows: Windows::default(),
        reads: Vec::new(),
    };
    let outcome = pipeline
        .run(
            Inputs {
                events: events_rx,
                settled: settled_rx,
                source,
                problems,
                chunks,
                stop_source: stop_tx,
            },
            &mut workers,
            shutdown,
        )
        .await;
    guard.abort();
    backfills.abort();
    if let Err(e) = &outcome {
        error!(error = %crate::error_chain(e), "walhook stopped");
    }
    if let Some(api) = api {
        api.stop().await;
    }
    outcome
}

/// Creates the publication and slot if missing; returns the slot's confirmed position. When it
/// creates the slot, it records the initial backfills (`initial_backfill = true`).
async fn prepare_database(
    config: &Config,
    spec: &ConnectSpec,
    store: &Mutex<Store>,
) -> Result<Lsn, AppError> {
    let client = connect_sql(spec).await?;
    let tables = config.tables();
    let target = Target {
        slot: &config.source.slot,
        publication: &config.source.publication,
        tables: &tables,
    };
    let statements = provision::plan(&client, &target).await?;
    for statement in &statements {
        info!(sql = %statement, "setting up");
    }
    provision::apply(&client, &statements).await?;
    if statements
        .iter()
        .any(|s| s.contains("pg_create_logical_replication_slot"))
    {
        record_initial_backfills(config, &client, store).await;
    }
    if let Some(problem) = slot_guard::slot_health(&client, &config.source.slot)
        .await?
        .problem(&config.source.slot)
    {
        return Err(problem.into());
    }
    let row = client
        .query_one(
            "SELECT COALESCE(confirmed_flush_lsn, '0/0')::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&config.source.slot],
        )
        .await?;
    let text: String = row.get(0);
    Ok(text.parse().unwrap_or_default())
}

/// Records a backfill of every table mapped (with inserts) to each subscriber that asks for
/// an initial backfill. A table that cannot be backfilled (no primary key) is logged and
/// skipped: the stream itself is unaffected.
async fn record_initial_backfills(
    config: &Config,
    client: &tokio_postgres::Client,
    store: &Mutex<Store>,
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
                Ok(new) => {
                    let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
                    store
                        .request_backfill(&new, UnixMillis::now())
                        .map_err(backfill::BackfillError::from)
                }
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

/// Streams, reconnecting with backoff after transient failures, until stopped.
async fn run_source(
    settings: SourceSettings,
    events: mpsc::Sender<SourceEvent>,
    mut confirmed: watch::Receiver<Lsn>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), SourceError> {
    let mut backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build();
    loop {
        let started = Instant::now();
        match stream(&settings, &events, &mut confirmed, &mut stop).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() && !*stop.borrow() => {
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = ExponentialBuilder::default()
                        .with_min_delay(Duration::from_millis(500))
                        .with_max_delay(Duration::from_secs(30))
                        .with_jitter()
                        .without_max_times()
                        .build();
                }
                let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                warn!(error = %crate::error_chain(&e), retry_in = ?delay, "replication connection lost; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// How often the slot's health and lag are read.
const SLOT_CHECK_EVERY: Duration = Duration::from_secs(5);

/// Writes heartbeats every `heartbeat` and watches the slot: lag (metric and warning), and
/// problems that must stop walhook (sent on `problems`). Query failures are logged and retried:
/// the replication connection's own errors decide about reconnecting.
async fn guard_slot(
    spec: ConnectSpec,
    slot: String,
    heartbeat: Duration,
    lag_warn: u64,
    problems: mpsc::Sender<SlotProblem>,
) {
    let mut lag_warning = LagWarning::new(lag_warn, Duration::from_secs(60));
    let mut client: Option<tokio_postgres::Client> = None;
    let mut last_heartbeat = Instant::now();
    let mut tick = tokio::time::interval(SLOT_CHECK_EVERY.min(heartbeat));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            client = connect_sql(&spec).await.ok();
        }
        let Some(sql) = &client else { continue };
        if last_heartbeat.elapsed() >= heartbeat {
            last_heartbeat = Instant::now();
            if let Err(e) = slot_guard::heartbeat(sql).await {
                warn!(error = %crate::error_chain(&e), "cannot write the heartbeat");
            }
        }
        match slot_guard::slot_health(sql, &slot).await {
            Ok(health) => {
                if let Some(problem) = health.problem(&slot) {
                    let _ = problems.send(problem).await;
                    return;
                }
                if let Some(lag) = health.lag_bytes {
                    let lag = lag.max(0) as u64;
                    metrics::gauge!(crate::telemetry::SLOT_LAG_BYTES).set(lag as f64);
                    lag_warning.check(&slot, lag);
                }
            }
            Err(e) => warn!(error = %crate::error_chain(&e), "cannot read the slot's health"),
        }
    }
}

/// The transaction being read: its id in the tracker and how many changes were handed out
/// (a reconnect re-sends the transaction from its Begin; those are skipped).
struct Open {
    commit_lsn: Lsn,
    txn: TxnId,
    seen: u32,
    next_index: u32,
}

struct Pipeline {
    mapper: Mapper,
    acks: AckTracker,
    queues: Vec<mpsc::Sender<Job>>,
    open: Option<Open>,
    /// Reading a transaction re-sent after a reconnect that was handed out whole before.
    skipping: bool,
    /// The last transaction fully read: a reconnect re-reads from the slot's confirmed
    /// position, and what came before this must not be handed out twice.
    last_commit: Lsn,
    routed: Vec<Routed>,
    max_unsettled: usize,
    store: Arc<Mutex<Store>>,
    confirmed_tx: watch::Sender<Lsn>,
    checkpointed: Instant,
    slot: String,
    /// Backfill chunks between their watermarks.
    windows: Windows,
    /// Backfill chunks dispatched: the runner hears once their events settled.
    reads: Vec<(TxnId, oneshot::Sender<()>)>,
}

/// What the pipeline listens to, besides the workers.
struct Inputs {
    events: mpsc::Receiver<SourceEvent>,
    settled: mpsc::UnboundedReceiver<Vec<TxnId>>,
    source: tokio::task::JoinHandle<Result<(), SourceError>>,
    problems: mpsc::Receiver<SlotProblem>,
    /// Backfill chunks, announced before their low watermark is written.
    chunks: mpsc::Receiver<ChunkOpen>,
    stop_source: watch::Sender<bool>,
}

impl Pipeline {
    async fn run(
        &mut self,
        inputs: Inputs,
        workers: &mut JoinSet<Result<(), WorkerError>>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), AppError> {
        let Inputs {
            mut events,
            mut settled,
            mut source,
            mut problems,
            mut chunks,
            stop_source,
        } = inputs;
        tokio::pin!(shutdown);
        let failure: Option<AppError> = loop {
            let room = self.acks.unsettled() < self.max_unsettled;
            tokio::select! {
                biased;
                // 1. Shutdown: stop reading and drain.
                _ = &mut shutdown => {
                    info!("shutting down: finishing requests in flight, storing the rest");
                    break None;
                }
                // 2. Fatal errors from the source or a worker.
                done = &mut source => break Some(self.source_ended(done)),
                Some(problem) = problems.recv() => break Some(problem.into()),
                Some(done) = workers.join_next() => {
                    break Some(match done {
                        Ok(Err(e)) => e.into(),
                        _ => SourceError::PipelineClosed.into(),
                    });
                }
                // 3. Settlements move the confirmed position.
                Some(txns) = settled.recv() => self.settle(&txns),
                // 4. Backfill chunks, ahead of the stream events: a chunk is sent before its
                //    low watermark is written, so it is known when the watermark arrives.
                Some(open) = chunks.recv() => self.windows.register(open),
                // 5. New input, while the unsettled budget allows.
                event = events.recv(), if room => match event {
                    Some(event) => self.handle(event).await,
                    // The source task is ending: its result says why.
                    None => break Some(self.source_ended((&mut source).await)),
                },
            }
        };
        // Drain: close the workers' queues; they finish or store what they hold and report it.
        self.queues.clear();
        let mut worker_error = None;
        loop {
            tokio::select! {
                Some(txns) = settled.recv() => self.settle(&txns),
                done = workers.join_next() => match done {
                    Some(Ok(Err(e))) => worker_error = Some(e),
                    Some(_) => {}
                    None => break,
                },
            }
        }
        while let Ok(txns) = settled.try_recv() {
            self.settle(&txns);
        }
        self.checkpoint(true);
        let _ = stop_source.send(true);
        let source_result = if source.is_finished() && failure.is_some() {
            Ok(())
        } else {
            // Keep taking what the source still hands over until it has sent its final status
            // and stopped, so it never meets a closed pipeline. Those events are dropped: they
            // are not confirmed, so the next start reads them again.
            loop {
                tokio::select! {
                    done = &mut source => break done.unwrap_or(Ok(())),
                    Some(_) = events.recv() => {}
                }
            }
        };
        info!(confirmed = %self.acks.confirmed(), "stopped");
        match (failure, worker_error) {
            (Some(e), _) => Err(e),
            (None, Some(e)) => Err(e.into()),
            (None, None) => source_result.map_err(AppError::from),
        }
    }

    /// Why the source task ended early, in the operator's terms.
    fn source_ended(
        &self,
        done: Result<Result<(), SourceError>, tokio::task::JoinError>,
    ) -> AppError {
        match done {
            Ok(Ok(())) => SourceError::PipelineClosed.into(),
            Ok(Err(e)) => match slot_guard::explain(&self.slot, &e) {
                Some(problem) => problem.into(),
                None => e.into(),
            },
            Err(e) => SourceError::Replication(crate::source::ReplicationError::Protocol {
                addr: String::new(),
                what: format!("a crashed source task ({e})"),
                source: None,
            })
            .into(),
        }
    }

    async fn handle(&mut self, event: SourceEvent) {
        match event {
            SourceEvent::Begin { commit_lsn, .. } => {
                self.skipping = false;
                if let Some(open) = &mut self.open {
                    if open.commit_lsn == commit_lsn {
                        // Re-sent after a reconnect: skip what was already handed out.
                        open.next_index = 0;
                        return;
                    }
                }
                if commit_lsn <= self.last_commit {
                    // Re-sent after a reconnect and handed out whole before: skipped. A
                    // transaction the lost connection left open stays open: it comes again
                    // after this one, and only its changes not yet handed out go on.
                    self.skipping = true;
                    return;
                }
                self.open = Some(Open {
                    commit_lsn,
                    txn: self.acks.begin(),
                    seen: 0,
                    next_index: 0,
                });
            }
            SourceEvent::Change(change) => {
                self.windows.observe(&change);
                if self.skipping {
                    return;
                }
                let Some(open) = &mut self.open else { return };
                open.next_index += 1;
                if open.next_index <= open.seen {
                    return;
                }
                open.seen = open.next_index;
                let txn = open.txn;
                self.routed.clear();
                self.mapper.map(&change, &mut self.routed);
                for routed in std::mem::take(&mut self.routed) {
                    for &subscriber in &routed.subscribers {
                        self.acks.add(txn, 1);
                        let job = Job {
                            event: routed.event.clone(),
                            txn,
                        };
                        if let Some(queue) = self.queues.get(subscriber) {
                            if queue.send(job).await.is_err() {
                                self.acks.settle(txn, 1);
                            }
                        }
                    }
                }
            }
            SourceEvent::Commit {
                commit_lsn,
                end_lsn,
            } => {
                if std::mem::take(&mut self.skipping) {
                    return;
                }
                if let Some(open) = self.open.take() {
                    self.acks.commit(open.txn, end_lsn);
                    self.last_commit = commit_lsn;
                    self.advance();
                }
            }
            SourceEvent::Message {
                lsn,
                prefix,
                content,
            } => {
                if let Some((kind, id, chunk)) = backfill::parse_watermark(&prefix, &content) {
                    if let Some(closed) = self.windows.watermark(kind, id, chunk) {
                        self.dispatch_reads(closed, lsn).await;
                    }
                }
                // A heartbeat (or any message outside a transaction): everything before it has
                // been handed over.
                if self.open.is_none() {
                    self.acks.caught_up(lsn);
                    self.advance();
                }
            }
            SourceEvent::CaughtUp { wal_end } => {
                if self.open.is_none() {
                    self.acks.caught_up(wal_end);
                    self.advance();
                }
            }
        }
    }

    fn settle(&mut self, txns: &[TxnId]) {
        for txn in txns {
            self.acks.settle(*txn, 1);
        }
        self.settle_reads();
        self.advance();
    }

    /// Dispatches a backfill chunk's surviving rows as `read` events at its high watermark
    /// (`lsn`): after every earlier stream event of their keys, before every later one. They
    /// are tracked as one transaction ending at `lsn`.
    async fn dispatch_reads(&mut self, closed: Closed, lsn: Lsn) {
        let txn = self.acks.begin();
        let mut routed = Vec::new();
        for row in &closed.rows {
            routed.clear();
            self.mapper.map_read(
                &ReadRow {
                    backfill: closed.backfill,
                    table: &closed.table,
                    key: &row.key,
                    row: &row.row,
                    lsn,
                    read_at_micros: closed.read_at_micros,
                },
                &mut routed,
            );
            for routed in &routed {
                for &subscriber in &routed.subscribers {
                    if !closed.subscribers.contains(&subscriber) {
                        continue;
                    }
                    self.acks.add(txn, 1);
                    let job = Job {
                        event: routed.event.clone(),
                        txn,
                    };
                    if let Some(queue) = self.queues.get(subscriber) {
                        if queue.send(job).await.is_err() {
                            self.acks.settle(txn, 1);
                        }
                    }
                }
            }
        }
        self.acks.commit(txn, lsn);
        tracing::debug!(backfill = closed.backfill, rows = closed.rows.len(), dropped = closed.dropped, %lsn, "backfill chunk dispatched");
        self.reads.push((txn, closed.settled));
        self.settle_reads();
        self.advance();
    }

    /// Tells the runner about backfill chunks whose events all settled.
    fn settle_reads(&mut self) {
        if self.reads.is_empty() {
            return;
        }
        let acks = &self.acks;
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads)
            .into_iter()
            .partition(|(txn, _)| acks.is_settled(*txn));
        self.reads = waiting;
        for (_, settled) in done {
            let _ = settled.send(());
        }
    }

    fn advance(&mut self) {
        if let Some(lsn) = self.acks.advance() {
            metrics::gauge!(CONFIRMED_LSN).set(lsn.0 as f64);
            self.confirmed_tx.send_replace(lsn);
            self.checkpoint(false);
        }
    }

    /// Records the confirmed LSN in the state file (for `walhook status`), at most once a
    /// second unless `now`.
    fn checkpoint(&mut self, now: bool) {
        if !now && self.checkpointed.elapsed() < CHECKPOINT_EVERY {
            return;
        }
        self.checkpointed = Instant::now();
        let lsn = self.acks.confirmed();
        let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = store.save_confirmed(lsn) {
            warn!(error = %crate::error_chain(&e), "cannot record the checkpoint in the state file");
        }
    }
}
