//! The runner inside `walhook run`: takes up recorded backfills (polling the state file), reads
//! each chunk between its watermarks, hands the rows to the pipeline, and saves progress once
//! the pipeline reports every event of the chunk settled, saying meanwhile what it waits for.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::model::{Datum, Lsn, RowImage};
use crate::source::{connect_sql, ConnectSpec};
use crate::state::{Backfill, BackfillProgress, BackfillStatus, Store, UnixMillis};

use super::reread::{ChunkReport, Positions, Rereads};
use super::table::{describe, TableShape};
use super::waiting::{LoadProbe, Notes, Wait, Written};
use super::window::{
    normalize, ChunkOpen, ChunkRow, ChunkRows, Signal, Snapshot, WATERMARK_PREFIX,
};
use super::{parse_table, BackfillError};

/// How often the state file is read for new requests.
const POLL: Duration = Duration::from_secs(1);
/// A chunk whose watermarks did not arrive in order is read again at most this often.
const CHUNK_ATTEMPTS: u32 = 3;
/// Before a backfill's first chunk in a run (a new one or a resumed one), the pipeline watches
/// the table this long, so it knows the keys of transactions that committed just before the
/// first read but were not visible to it yet.
const WARM_UP: Duration = Duration::from_millis(500);

/// What the runner needs from `walhook run`.
pub struct RunnerContext {
    pub spec: ConnectSpec,
    pub config: Config,
    pub store: Arc<dyn Store>,
    /// To the pipeline, which takes these ahead of stream events.
    pub chunks: mpsc::Sender<Signal>,
    /// Questions to the pipeline about its load and position, asked while a chunk waits.
    pub loads: mpsc::Sender<LoadProbe>,
}

/// Runs recorded backfills one at a time, oldest first (a `running` one, left by a stopped or
/// crashed walhook, before any `pending` one), until the pipeline stops. Meant to be dropped
/// wherever it waits at shutdown: progress is saved only for settled chunks, so stopping
/// anywhere is safe.
pub async fn run(ctx: RunnerContext) {
    // Chunk numbers start from the clock, so they differ from any earlier run's.
    let mut next_chunk = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let active = ctx.store.active_backfills().await;
        let backfill = match active {
            Ok(active) => match active.into_iter().next() {
                Some(backfill) => backfill,
                None => continue,
            },
            Err(e) => {
                warn!(error = %crate::error_chain(&e), "cannot read the backfill requests");
                continue;
            }
        };
        let id = backfill.id;
        let outcome = run_one(&ctx, &backfill, &mut next_chunk).await;
        let error = match outcome {
            Ok(rows) => {
                info!(backfill = id, table = %backfill.table, rows, "backfill done");
                None
            }
            Err(BackfillError::PipelineClosed) => return,
            Err(e) if transient(&e) => {
                warn!(backfill = id, error = %crate::error_chain(&e), "backfill interrupted; resuming from its last settled chunk");
                continue;
            }
            Err(e) => {
                let text = crate::error_chain(&e);
                error!(backfill = id, table = %backfill.table, error = %text, "backfill failed");
                Some(text)
            }
        };
        let finished = ctx
            .store
            .finish_backfill(id, error, UnixMillis::now())
            .await;
        if let Err(e) = finished {
            warn!(backfill = id, error = %crate::error_chain(&e), "cannot record the backfill's end");
        }
        if ctx.chunks.send(Signal::Ended(id)).await.is_err() {
            return;
        }
    }
}

/// Connection trouble passes: the backfill is tried again from its saved progress.
fn transient(e: &BackfillError) -> bool {
    match e {
        BackfillError::Connect(_) | BackfillError::State(_) => true,
        BackfillError::Sql(e) => {
            e.is_closed()
                || e.as_db_error().is_some_and(|db| {
                    let code = db.code().code();
                    code.starts_with("08") || code.starts_with("57P")
                })
        }
        _ => false,
    }
}

/// Runs `backfill` to its end; gives the rows read in all.
async fn run_one(
    ctx: &RunnerContext,
    backfill: &Backfill,
    next_chunk: &mut u64,
) -> Result<u64, BackfillError> {
    let id = backfill.id;
    let table = parse_table(&backfill.table)?;
    let client = connect_sql(&ctx.spec).await?;
    // The value format of DESIGN.md: what to_jsonb gives with these settings.
    client
        .batch_execute(
            "SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; SET IntervalStyle = 'postgres'; \
             SET extra_float_digits = 1",
        )
        .await?;
    let shape = describe(&client, &table).await?;
    let subscribers = backfill
        .subscribers
        .iter()
        .map(|name| {
            ctx.config
                .subscribers
                .iter()
                .position(|s| &s.name == name)
                .ok_or_else(|| BackfillError::UnknownSubscriber(name.clone()))
        })
        .collect::<Result<Vec<usize>, _>>()?;
    ctx.store.start_backfill(id, UnixMillis::now()).await?;
    if backfill.status == BackfillStatus::Pending {
        info!(backfill = id, table = %table, estimate = ?shape.estimate, "backfill started");
    } else {
        info!(backfill = id, table = %table, rows_done = backfill.rows_done, rereads = backfill.reread.len(), "backfill resumed after its last settled chunk");
    }
    let limit = match backfill.rate {
        Some(rate) => backfill.batch_rows.min(rate),
        None => backfill.batch_rows,
    }
    .max(1);
    let reader = Reader {
        first: shape.chunk_sql(false, backfill.where_sql.as_deref(), limit),
        after: shape.chunk_sql(true, backfill.where_sql.as_deref(), limit),
        by_key: shape.keys_sql(backfill.where_sql.as_deref()),
        shape: &shape,
        client: &client,
        subscribers: &subscribers,
        names: &backfill.subscribers,
        backfill: id,
    };
    let mut notes = Notes::new(id, ctx.store.clone());
    let mut position = match &backfill.last_key {
        Some(key) => Position::After(key.clone()),
        None => Position::Start,
    };
    let mut rereads = Rereads::new(backfill.reread.iter().cloned());
    let mut rows_done = backfill.rows_done;
    let started = Instant::now();
    let mut read_here = 0u64;
    let mut fruitless = 0u32;
    loop {
        if position == Position::End && rereads.is_empty() {
            return Ok(rows_done);
        }
        let asked = rereads.next(limit as usize);
        let mut attempts = 0;
        let read = loop {
            attempts += 1;
            let chunk = *next_chunk;
            *next_chunk += 1;
            match reader
                .read_chunk(ctx, chunk, &position, &asked, read_here == 0, &mut notes)
                .await?
            {
                Some(read) => break read,
                None if attempts < CHUNK_ATTEMPTS => {
                    warn!(
                        backfill = id,
                        chunk, "chunk abandoned by the pipeline; reading it again"
                    );
                }
                None => {
                    return Err(BackfillError::Watermarks {
                        backfill: id,
                        chunk,
                        attempts,
                    })
                }
            }
        };
        read_here += read.keys.len() as u64;
        let next = match (&position, read.last) {
            (Position::End, _) => Position::End,
            (_, Some(last)) if read.in_range >= limit as usize => Position::After(last),
            _ => Position::End,
        };
        let positions = reader.positions(&read.report, &position, &next).await?;
        let before = rereads.clone();
        rereads.after_chunk(&asked, &read.keys, &read.report, &positions);
        if !read.report.dropped.is_empty() || !asked.is_empty() {
            debug!(
                backfill = id,
                dropped = read.report.dropped.len(),
                read_again = asked.len(),
                to_read_again = rereads.len(),
                "chunk settled"
            );
        }
        if next == Position::End && position != Position::End && !rereads.is_empty() {
            info!(backfill = id, rows = rereads.len(), "every row read once; reading again the rows whose stream images lacked a TOASTed column");
        }
        rows_done += read.in_range as u64;
        position = next;
        let last_key = match &position {
            Position::After(key) => Some(key.clone()),
            _ => backfill.last_key.clone(),
        };
        notes.rereading = (position == Position::End && !rereads.is_empty()).then(|| rereads.len());
        let waiting = notes.at_rest();
        let progress = BackfillProgress {
            last_key,
            reread: rereads.keys().cloned().collect(),
            rows_done,
            waiting: waiting.clone(),
        };
        ctx.store
            .save_backfill_progress(id, progress, UnixMillis::now())
            .await?;
        notes.saved(waiting);
        if let Some(release) = read.report.release {
            ctx.chunks
                .send(Signal::Saved(release))
                .await
                .map_err(|_| BackfillError::PipelineClosed)?;
        }
        if position == Position::End && !rereads.is_empty() && rereads == before {
            // The stream keeps changing these rows inside every window: give it time.
            fruitless += 1;
            if fruitless % 10 == 0 {
                warn!(backfill = id, rows = rereads.len(), rounds = fruitless, "rows the stream keeps changing without their TOASTed columns are still to be read again");
            }
            let pause = Duration::from_secs(u64::from(fruitless.min(5)));
            notes.pause(pause, Wait::Overtaken).await;
        } else {
            fruitless = 0;
        }
        if let Some(rate) = backfill.rate {
            let due = Duration::from_secs_f64(read_here as f64 / f64::from(rate));
            if let Some(pause) = due.checked_sub(started.elapsed()) {
                notes.pause(pause, Wait::Rate { rate }).await;
            }
        }
    }
}

/// How far the backfill read the table in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Position {
    /// Nothing read yet.
    Start,
    /// Every row up to this key (JSON array text) read.
    After(String),
    /// The whole table read; only rows to read again are left.
    End,
}

/// What a settled chunk read.
struct ChunkRead {
    /// Rows read after the position (not counting those read again by key).
    in_range: usize,
    /// The last of them.
    last: Option<String>,
    /// Every key read, in range or again.
    keys: HashSet<String>,
    report: ChunkReport,
}

/// Reads chunks of one backfill.
struct Reader<'a> {
    first: String,
    after: String,
    by_key: String,
    shape: &'a TableShape,
    client: &'a tokio_postgres::Client,
    subscribers: &'a [usize],
    /// The same subscribers by name, for what the backfill says it waits for.
    names: &'a [String],
    backfill: i64,
}

impl Reader<'_> {
    /// Reads the chunk after `position` and the rows of `again` between its watermarks, and
    /// waits until its events settled, saying what it waits for meanwhile; `None` if the
    /// pipeline abandoned the chunk.
    async fn read_chunk(
        &self,
        ctx: &RunnerContext,
        chunk: u64,
        position: &Position,
        again: &[String],
        warm_up: bool,
        notes: &mut Notes,
    ) -> Result<Option<ChunkRead>, BackfillError> {
        let (rows_tx, rows) = oneshot::channel();
        let (dispatched, dispatched_rx) = oneshot::channel();
        let (settled, settled_rx) = oneshot::channel();
        ctx.chunks
            .send(Signal::Open(ChunkOpen {
                backfill: self.backfill,
                chunk,
                table: self.shape.table.clone(),
                subscribers: self.subscribers.to_vec(),
                rows,
                dispatched,
                settled,
            }))
            .await
            .map_err(|_| BackfillError::PipelineClosed)?;
        if warm_up {
            tokio::time::sleep(WARM_UP).await;
        }
        self.watermark("low", chunk).await?;
        // One short read-only transaction, for the snapshot the rows were read in: a change
        // this read did not see must not be overwritten by it, wherever the change committed.
        self.client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let snapshot: String = self
            .client
            .query_one("SELECT pg_current_snapshot()::text", &[])
            .await?
            .get(0);
        let in_range = match position {
            Position::Start => self.client.query(&self.first, &[]).await?,
            Position::After(key) => self.client.query(&self.after, &[key]).await?,
            Position::End => Vec::new(),
        };
        let by_key = if again.is_empty() {
            Vec::new()
        } else {
            self.client.query(&self.by_key, &[&again]).await?
        };
        self.client.batch_execute("COMMIT").await?;
        let read_at_micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        let mut rows = Vec::with_capacity(in_range.len() + by_key.len());
        let mut keys = HashSet::new();
        for row in in_range.iter().chain(&by_key) {
            let key = normalize(&row.get::<_, String>(0));
            if keys.insert(key.clone()) {
                let value: String = row.get(1);
                rows.push(ChunkRow {
                    key,
                    row: self.image(&value)?,
                });
            }
        }
        let last = in_range
            .last()
            .map(|row| normalize(&row.get::<_, String>(0)));
        let _ = rows_tx.send(ChunkRows {
            rows,
            read_at_micros,
            snapshot: Snapshot::parse(&snapshot),
        });
        let high = self.watermark("high", chunk).await?;
        let written = Written {
            high,
            dispatched: dispatched_rx,
            settled: settled_rx,
            subscribers: self.names,
        };
        match written.settled(&ctx.loads, notes).await {
            Some(report) => Ok(Some(ChunkRead {
                in_range: in_range.len(),
                last,
                keys,
                report,
            })),
            None if ctx.chunks.is_closed() => Err(BackfillError::PipelineClosed),
            None => Ok(None),
        }
    }

    /// Where the keys of the chunk's moves stand: origins against the position the chunk
    /// started from, targets against the one after it. Postgres compares them, in key order.
    async fn positions(
        &self,
        report: &ChunkReport,
        from: &Position,
        to: &Position,
    ) -> Result<Positions, BackfillError> {
        let (origins, targets): (Vec<String>, Vec<String>) = report
            .moves()
            .map(|(from, to)| (from.to_string(), to.to_string()))
            .unzip();
        if origins.is_empty() {
            return Ok(Positions::default());
        }
        Ok(Positions {
            origins_behind: self.behind(origins, from).await?,
            targets_behind: self.behind(targets, to).await?,
        })
    }

    /// Those of `keys` at or before `position`.
    async fn behind(
        &self,
        keys: Vec<String>,
        position: &Position,
    ) -> Result<HashSet<String>, BackfillError> {
        Ok(match position {
            Position::Start => HashSet::new(),
            Position::End => keys.into_iter().collect(),
            Position::After(last) => self
                .client
                .query(&self.shape.behind_sql(), &[&keys, last])
                .await?
                .iter()
                .map(|row| normalize(&row.get::<_, String>(0)))
                .collect(),
        })
    }

    /// Writes a watermark; gives where it is in the WAL.
    async fn watermark(&self, kind: &str, chunk: u64) -> Result<Lsn, BackfillError> {
        let content = format!("{kind}:{}:{chunk}", self.backfill);
        let lsn: String = self
            .client
            .query_one(
                "SELECT pg_logical_emit_message(false, $1::text, $2::text)::text",
                &[&WATERMARK_PREFIX, &content],
            )
            .await?
            .get(0);
        Ok(lsn.parse().unwrap_or_default())
    }

    /// The `to_jsonb` text of a row as a row image in table order, each value compact.
    fn image(&self, json: &str) -> Result<RowImage, BackfillError> {
        let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json)
            .map_err(|source| BackfillError::BadRow {
                table: self.shape.table.qualified_name(),
                source,
            })?;
        let mut image = RowImage::default();
        for column in &self.shape.table.columns {
            image.datums.push(match object.get(&column.name) {
                None => Datum::Absent,
                Some(serde_json::Value::Null) => Datum::Null,
                Some(value) => {
                    let start = image.json.len() as u32;
                    image.json.push_str(&value.to_string());
                    Datum::Value {
                        start,
                        end: image.json.len() as u32,
                    }
                }
            });
        }
        Ok(image)
    }
}
