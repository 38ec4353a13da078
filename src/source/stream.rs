//! One replication session, from connect to CopyDone. It decodes the stream into
//! [`SourceEvent`]s for the pipeline (through the task's [`ReplayFilter`]) and reports
//! progress to Postgres with standby status updates carrying the LSN the ack tracker confirmed.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, trace};

use super::assembler::{AssembleError, Assembler};
use super::canary::{Canary, Gap};
use super::catalog::{resolve_type, CatalogError};
use super::connect::{connect_sql, ConnectError, ConnectSpec};
use super::event::SourceEvent;
use super::pgoutput::{DecodeError, LogicalMessage, PgTimestamp};
use super::replay::ReplayFilter;
use super::replication::{ReplicationClient, ReplicationError, ReplicationStream};
use super::value::TypeRegistry;
use super::wire::{ReplicationMessage, StandbyStatusUpdate};
use crate::model::{Lsn, TableName};
use crate::telemetry::{Health, CANARY_GAPS, CONFIRMED_LSN, EVENTS_DECODED};

/// Where and what to stream.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    pub spec: ConnectSpec,
    pub slot: String,
    pub publication: String,
    /// Standby status updates go out at least this often.
    pub status_interval: Duration,
    /// Where the session reports that it streams and sends status updates (for `/ready`).
    pub health: Arc<Health>,
    /// The canary table and how often a canary is written (`source.canary`,
    /// `source.heartbeat_interval`).
    pub canary: Option<(TableName, Duration)>,
}

/// Why the session ended early. [`SourceError::is_transient`] tells a reconnect from a stop.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot open the SQL connection for catalog lookups")]
    Connect(#[from] ConnectError),
    #[error("replication connection failed")]
    Replication(#[from] ReplicationError),
    #[error("malformed replication message at {lsn}")]
    Decode {
        lsn: Lsn,
        #[source]
        source: DecodeError,
    },
    #[error("cannot make sense of the change at {lsn}")]
    Assemble {
        lsn: Lsn,
        #[source]
        source: AssembleError,
    },
    #[error("cannot resolve a column type")]
    Catalog(#[from] CatalogError),
    #[error("the pipeline stopped taking events")]
    PipelineClosed,
    #[error("Postgres ended the replication stream (restarting or shutting down?)")]
    ServerEnded,
    #[error("{gap}: the stream may lack changes; reconnecting to read it again from {}", gap.before)]
    CanaryGap { gap: Gap },
}

impl SourceError {
    /// Whether reconnecting may help: connection trouble may pass, a stream walhook cannot
    /// decode will not.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect(_) | Self::Catalog(_) | Self::ServerEnded | Self::CanaryGap { .. } => {
                true
            }
            // Connection loss and server restarts pass; bad credentials, a missing slot or one
            // in use by another process (SQLSTATE 55006) need the operator.
            Self::Replication(e) => match e {
                ReplicationError::Open(_) | ReplicationError::Io { .. } => true,
                ReplicationError::Server { code, .. } => {
                    code.starts_with("08") || code.starts_with("57P") || code == "53300"
                }
                ReplicationError::Auth { .. } | ReplicationError::Protocol { .. } => false,
            },
            Self::Decode { .. } | Self::Assemble { .. } | Self::PipelineClosed => false,
        }
    }
}

/// Streams until `stop` is cancelled (then sends a final status update and CopyDone and
/// returns `Ok`), or until an error. `confirmed` carries the LSN the ack tracker confirmed; it
/// never moves backward. What the session decodes goes to `events` through `replay`, which the
/// task keeps across its sessions.
///
/// [`super::run`] runs one session after another; a test may run one alone.
///
/// With a `canary`, the session writes canaries and checks that the stream carries them (see
/// [`super::canary`]): it reports nothing as flushed from an owed canary on, and ends with
/// [`SourceError::CanaryGap`] (after asking the pipeline to [`SourceEvent::Replay`]) when the
/// walsender passes one without sending it.
pub async fn stream(
    settings: &SourceSettings,
    events: &mpsc::Sender<SourceEvent>,
    replay: &mut ReplayFilter,
    confirmed: &mut watch::Receiver<Lsn>,
    stop: &CancellationToken,
    mut canary: Option<&mut Canary>,
) -> Result<(), SourceError> {
    let sql = connect_sql(&settings.spec).await?;
    let client = ReplicationClient::connect(&settings.spec).await?;
    settings.health.set_walsender_pid(client.backend_pid());
    let stream = client
        .start_replication(&settings.slot, &settings.publication, Lsn(0))
        .await?;
    let _streaming = Streaming::start(&settings.health);
    if let Some(canary) = canary.as_deref_mut() {
        canary.session_started();
    }
    let mut session = Session {
        canary,
        stream,
        sql,
        events,
        replay,
        types: TypeRegistry::builtin(),
        assembler: Assembler::new(),
        in_transaction: false,
        received: Lsn(0),
        sent: None,
        last_status: Instant::now(),
        status_interval: settings.status_interval,
        health: &settings.health,
        decoded: metrics::counter!(EVENTS_DECODED),
    };
    let result = session.run(confirmed, stop).await;
    let confirmed_now = *confirmed.borrow();
    match result {
        Ok(()) => {
            // Stop cleanly: the last word to Postgres is what walhook has settled.
            session.send_status(confirmed_now, false).await?;
            session.stream.finish().await?;
            info!(confirmed = %confirmed_now, "replication stopped");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

struct Session<'a> {
    canary: Option<&'a mut Canary>,
    stream: ReplicationStream,
    sql: tokio_postgres::Client,
    events: &'a mpsc::Sender<SourceEvent>,
    replay: &'a mut ReplayFilter,
    types: TypeRegistry,
    assembler: Assembler,
    in_transaction: bool,
    /// The end of the WAL received so far (reported as the write position).
    received: Lsn,
    /// The flush position last reported.
    sent: Option<Lsn>,
    last_status: Instant,
    status_interval: Duration,
    health: &'a Health,
    decoded: metrics::Counter,
}

/// Marks the session as streaming from START_REPLICATION until it ends, however it ends.
struct Streaming<'a>(&'a Health);

impl<'a> Streaming<'a> {
    fn start(health: &'a Health) -> Self {
        health.set_streaming(true);
        Self(health)
    }
}

impl Drop for Streaming<'_> {
    fn drop(&mut self) {
        self.0.set_streaming(false);
    }
}

impl Session<'_> {
    async fn run(
        &mut self,
        confirmed: &mut watch::Receiver<Lsn>,
        stop: &CancellationToken,
    ) -> Result<(), SourceError> {
        // Half the interval: checked once per tick, an update goes out at most half an interval
        // late, well within the 2 × status_interval that `/ready` allows.
        let period =
            (self.status_interval / 2).clamp(Duration::from_millis(1), Duration::from_secs(1));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut assembled = Vec::new();
        loop {
            tokio::select! {
                biased;
                // 1. Shutdown: stop reading; the caller sends the final status.
                () = stop.cancelled() => return Ok(()),
                // 2. Progress: report newly confirmed positions (at most once per tick).
                _ = tick.tick() => {
                    if let Some(canary) = self.canary.as_deref_mut() {
                        canary.tick();
                    }
                    let lsn = *confirmed.borrow();
                    let due = self.last_status.elapsed() >= self.status_interval;
                    let flush = self.flushable(lsn);
                    if due || self.sent != Some(flush) {
                        self.send_status(lsn, false).await?;
                    }
                }
                // 3. New input from the server.
                payload = self.stream.recv() => {
                    let Some(payload) = payload? else {
                        return Err(SourceError::ServerEnded);
                    };
                    self.handle(&payload, confirmed, &mut assembled).await?;
                }
            }
        }
    }

    async fn handle(
        &mut self,
        payload: &[u8],
        confirmed: &watch::Receiver<Lsn>,
        assembled: &mut Vec<SourceEvent>,
    ) -> Result<(), SourceError> {
        let message =
            ReplicationMessage::decode(payload).map_err(|source| SourceError::Decode {
                lsn: self.received,
                source,
            })?;
        match message {
            ReplicationMessage::PrimaryKeepalive(keepalive) => {
                self.received = self.received.max(keepalive.wal_end);
                trace!(wal_end = %keepalive.wal_end, in_transaction = self.in_transaction, "keepalive");
                self.check_canary(keepalive.wal_end, confirmed).await?;
                if keepalive.reply_requested {
                    let lsn = *confirmed.borrow();
                    self.send_status(lsn, false).await?;
                }
                if !self.in_transaction {
                    self.hand_over(
                        SourceEvent::CaughtUp {
                            wal_end: keepalive.wal_end,
                        },
                        confirmed,
                    )
                    .await?;
                }
            }
            ReplicationMessage::XLogData(data) => {
                self.received = self.received.max(data.wal_end);
                trace!(wal_start = %data.wal_start, kind = %data.data.first().map_or('?', |b| char::from(*b)), "xlogdata");
                let lsn = data.wal_start;
                let message = LogicalMessage::decode(data.data)
                    .map_err(|source| SourceError::Decode { lsn, source })?;
                if let LogicalMessage::Relation(relation) = &message {
                    for oid in Assembler::missing_types(relation, &self.types) {
                        resolve_type(&self.sql, oid, &mut self.types).await?;
                    }
                    let key = self.primary_key(relation.oid).await?;
                    self.assembler
                        .relation(relation, &key, &self.types)
                        .map_err(|source| SourceError::Assemble { lsn, source })?;
                    return Ok(());
                }
                self.assembler
                    .apply(message, &self.types, assembled)
                    .map_err(|source| SourceError::Assemble { lsn, source })?;
                for event in assembled.drain(..) {
                    match &event {
                        SourceEvent::Begin { commit_lsn, .. } => {
                            self.check_canary(*commit_lsn, confirmed).await?;
                            self.in_transaction = true;
                        }
                        SourceEvent::Change(change) => {
                            if let Some(canary) = self.canary.as_deref_mut() {
                                canary.arrived(change);
                            }
                            self.decoded.increment(1);
                        }
                        SourceEvent::Commit { .. } => self.in_transaction = false,
                        _ => {}
                    }
                    self.hand_over(event, confirmed).await?;
                }
            }
        }
        Ok(())
    }

    /// Passes one event on through the replay filter, waiting while the pipeline is full
    /// (backpressure), but still sending status updates meanwhile so Postgres does not time the
    /// connection out. The filter decides once there is room, so what it lets through is what
    /// the pipeline got, even if the wait ends the session.
    async fn hand_over(
        &mut self,
        event: SourceEvent,
        confirmed: &watch::Receiver<Lsn>,
    ) -> Result<(), SourceError> {
        // Usually there is room: take it without arming a timer, which would cost more than
        // the rest of the hand-over. The timed wait below is for a full pipeline. Spending
        // the task's budget first yields to the runtime as often as `reserve()` would.
        tokio::task::coop::consume_budget().await;
        let events = self.events;
        let permit = match events.try_reserve() {
            Ok(permit) => permit,
            Err(mpsc::error::TrySendError::Closed(())) => return Err(SourceError::PipelineClosed),
            Err(mpsc::error::TrySendError::Full(())) => loop {
                let wait = self.status_interval.min(Duration::from_secs(1));
                match tokio::time::timeout(wait, events.reserve()).await {
                    Ok(Ok(permit)) => break permit,
                    Ok(Err(_)) => return Err(SourceError::PipelineClosed),
                    Err(_) => {
                        debug!("pipeline full; reading paused");
                        let lsn = *confirmed.borrow();
                        self.send_status(lsn, false).await?;
                    }
                }
            },
        };
        if self.replay.pass(&event) {
            permit.send(event);
        }
        Ok(())
    }

    /// The primary key's column names, in key order (empty when there is none).
    async fn primary_key(&self, relation: u32) -> Result<Vec<String>, SourceError> {
        let rows = self
            .sql
            .query(
                "SELECT a.attname::text FROM pg_index i \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
                 WHERE i.indrelid = $1 AND i.indisprimary \
                 ORDER BY array_position(i.indkey::int2[], a.attnum)",
                &[&relation],
            )
            .await
            .map_err(|source| {
                SourceError::Catalog(CatalogError::Query {
                    oid: relation,
                    source,
                })
            })?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// What may be reported as flushed: `confirmed`, but never an owed canary's position or
    /// past it, so the slot keeps every transaction from the canary on until it arrives.
    fn flushable(&mut self, confirmed: Lsn) -> Lsn {
        match self.canary.as_deref_mut() {
            Some(canary) => {
                canary.drain();
                canary
                    .watch
                    .cap()
                    .map_or(confirmed, |cap| confirmed.min(cap))
            }
            None => confirmed,
        }
    }

    /// Ends the session if the walsender, having decoded up to `decoded_to`, passed an owed
    /// canary: the gap is logged and counted, the pipeline is told to read everything from the
    /// canary's position again, and the caller reconnects.
    async fn check_canary(
        &mut self,
        decoded_to: Lsn,
        confirmed: &watch::Receiver<Lsn>,
    ) -> Result<(), SourceError> {
        let Some(canary) = self.canary.as_deref_mut() else {
            return Ok(());
        };
        canary.drain();
        let Some(gap) = canary.watch.check(decoded_to) else {
            return Ok(());
        };
        error!(
            canary_table = %canary.watch.table(),
            seq = gap.seq,
            before = %gap.before,
            after = %gap.after,
            decoded_to = %gap.decoded_to,
            "the walsender passed walhook's canary without sending it: changes committed after {} may be missing from this session; walhook confirms nothing from there on, reads the stream again from there, and reconnects (is the canary table still in the publication?)",
            gap.before
        );
        metrics::counter!(CANARY_GAPS).increment(1);
        self.hand_over(SourceEvent::Replay { from: gap.before }, confirmed)
            .await?;
        Err(SourceError::CanaryGap { gap })
    }

    async fn send_status(&mut self, confirmed: Lsn, reply: bool) -> Result<(), SourceError> {
        let confirmed = self.flushable(confirmed);
        let update = StandbyStatusUpdate {
            write: self.received.max(confirmed),
            flush: confirmed,
            apply: confirmed,
            client_time: PgTimestamp::from_system_time(SystemTime::now()),
            reply_requested: reply,
        };
        self.stream.send_status(&update).await?;
        self.health.status_sent();
        // What Postgres was told, the canary's cap applied: the metric's meaning.
        metrics::gauge!(CONFIRMED_LSN).set(confirmed.0 as f64);
        self.sent = Some(confirmed);
        self.last_status = Instant::now();
        Ok(())
    }
}
