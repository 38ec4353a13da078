//! The canary: proof that the replication stream carries what the publication publishes.
//!
//! With `[source] canary = "schema.table"`, walhook writes one row of its own to that table (in
//! the publication) in a transaction of its own: when a replication session starts and then every
//! `heartbeat_interval`. Before that transaction commits, the session learns the WAL position the
//! canary's commit cannot precede (`before`); after, a position its commit cannot follow
//! (`after`). Until the canary's change arrives in the stream:
//!
//! - walhook reports nothing at or past `before` as flushed to Postgres, so the slot keeps every
//!   transaction from the canary on;
//! - a keepalive saying the walsender decoded past `after`, or a transaction committed after
//!   `after`, means the walsender passed the canary without sending it: a gap. The session
//!   reports it (error log, [`crate::telemetry::CANARY_GAPS`]), has the pipeline read everything
//!   after `before` again, and reconnects. The canary stays owed: the next walsender decodes from
//!   the slot's position (before the canary) and must send it.
//!
//! One canary is owed at a time: no new one is written until the last arrived. The table keeps
//! each slot's last canary (`before_lsn` included), so a walhook that restarts while one is owed
//! expects it again.

use std::fmt;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::connect::{connect_sql, ConnectError, ConnectSpec};
use crate::database::sql;
use crate::model::{push_json_string, Change, Lsn, TableName};

/// What the writer tells the session about one canary, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// The canary's transaction is open: its commit lies at or after `before`.
    Pending { seq: i64, before: Lsn },
    /// It committed at or before `after`.
    Committed { seq: i64, after: Lsn },
    /// It did not commit (or it is not known whether it did): nothing is owed.
    Failed { seq: i64 },
}

/// The canary the stream still owes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owed {
    seq: i64,
    before: Lsn,
    /// Known once the canary committed; until then no gap can be told.
    after: Option<Lsn>,
}

/// The walsender decoded past a canary it did not send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub seq: i64,
    /// The canary's commit is at or after this; nothing from here on was confirmed.
    pub before: Lsn,
    /// ... and at or before this.
    pub after: Lsn,
    /// Where the walsender said it had decoded to.
    pub decoded_to: Lsn,
}

impl fmt::Display for Gap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "canary {} (committed between {} and {}) never arrived, but the walsender decoded up to {}",
            self.seq, self.before, self.after, self.decoded_to
        )
    }
}

/// The session's side of the canary: what is owed, and whether the stream has passed it. Pure
/// bookkeeping, fed in stream order.
#[derive(Debug, Clone)]
pub struct Watch {
    table: TableName,
    /// The slot as the canary row's JSON holds it (`"walhook"`), to tell this walhook's canary
    /// from another's in the same table.
    slot_json: String,
    owed: Option<Owed>,
    next_seq: i64,
}

impl Watch {
    pub fn new(table: TableName, slot: &str) -> Self {
        let mut slot_json = String::with_capacity(slot.len() + 2);
        push_json_string(slot, &mut slot_json);
        Self {
            table,
            slot_json,
            owed: None,
            next_seq: 1,
        }
    }

    pub fn table(&self) -> &TableName {
        &self.table
    }

    /// A canary written before this process started and not yet confirmed: still owed.
    pub fn resume(&mut self, seq: i64, before: Lsn, after: Lsn) {
        self.owed = Some(Owed {
            seq,
            before,
            after: Some(after),
        });
        self.next_seq = self.next_seq.max(seq + 1);
    }

    /// The sequence number of the next canary, when none is owed.
    pub fn next_canary(&mut self) -> Option<i64> {
        if self.owed.is_some() {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        Some(seq)
    }

    pub fn apply(&mut self, report: Report) {
        match report {
            Report::Pending { seq, before } => {
                self.owed = Some(Owed {
                    seq,
                    before,
                    after: None,
                });
            }
            Report::Committed { seq, after } => {
                if let Some(owed) = self.owed.as_mut().filter(|o| o.seq == seq) {
                    owed.after = Some(after);
                }
            }
            Report::Failed { seq } => {
                if self.owed.is_some_and(|o| o.seq == seq) {
                    self.owed = None;
                }
            }
        }
    }

    /// The position walhook may not confirm while a canary is owed.
    pub fn cap(&self) -> Option<Lsn> {
        self.owed.map(|o| o.before)
    }

    /// Whether `change` is this walhook's canary (it settles what is owed when it is).
    pub fn observe(&mut self, change: &Change) -> bool {
        let ours = self.is_ours(change);
        if ours && self.settles(change) {
            debug!(seq = self.owed.map(|o| o.seq), commit_lsn = %change.commit_lsn, "canary arrived");
            self.owed = None;
        }
        ours
    }

    /// Whether `change` is this walhook's canary row.
    fn is_ours(&self, change: &Change) -> bool {
        change.table.schema == self.table.schema
            && change.table.name == self.table.name
            && change
                .table
                .columns
                .iter()
                .position(|c| c.name == "slot")
                .and_then(|i| change.row.as_ref()?.get(i))
                .is_some_and(|slot| slot == self.slot_json)
    }

    /// Whether `change`, a canary row of ours, is the owed canary (or a later one).
    fn settles(&self, change: &Change) -> bool {
        self.owed.is_some_and(|o| change.commit_lsn >= o.before)
    }

    /// Whether the walsender, having decoded up to `decoded_to` (a keepalive's end of WAL, or a
    /// transaction's commit), has passed the owed canary.
    pub fn check(&self, decoded_to: Lsn) -> Option<Gap> {
        let owed = self.owed?;
        let after = owed.after?;
        (decoded_to >= after).then_some(Gap {
            seq: owed.seq,
            before: owed.before,
            after,
            decoded_to,
        })
    }
}

/// Writes canaries on a connection of its own, one at a time, as the session asks.
pub struct Writer {
    spec: ConnectSpec,
    upsert: String,
    slot: String,
    table: TableName,
    publication: String,
    client: Option<tokio_postgres::Client>,
    /// Test hook (`WALHOOK_TEST_CANARY_REPORT_DELAY_MS`): wait this long after the commit
    /// before learning its upper bound, the window in which only the cap keeps the slot
    /// from passing a canary the stream skipped.
    report_delay: Option<Duration>,
}

impl Writer {
    pub fn new(spec: ConnectSpec, table: &TableName, slot: &str, publication: &str) -> Self {
        let upsert = format!(
            "INSERT INTO {} (slot, seq, before_lsn, written_at) \
             VALUES ($1, $2, pg_current_wal_insert_lsn(), now()) \
             ON CONFLICT (slot) DO UPDATE SET seq = EXCLUDED.seq, \
             before_lsn = EXCLUDED.before_lsn, written_at = EXCLUDED.written_at \
             RETURNING before_lsn::text",
            sql::table(table)
        );
        Self {
            spec,
            upsert,
            slot: slot.to_string(),
            table: table.clone(),
            publication: publication.to_string(),
            client: None,
            report_delay: std::env::var("WALHOOK_TEST_CANARY_REPORT_DELAY_MS")
                .ok()
                .and_then(|ms| ms.parse().ok())
                .map(Duration::from_millis),
        }
    }

    /// Reads this slot's last canary and, if the slot has not confirmed past it, returns it as
    /// owed: `(seq, before, after)`, `after` being the end of WAL now (it committed earlier).
    pub async fn owed_at_start(
        &mut self,
        table: &TableName,
        confirmed: Lsn,
    ) -> Result<Option<(i64, Lsn, Lsn)>, WriteError> {
        let slot = self.slot.clone();
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT seq, before_lsn::text, pg_current_wal_insert_lsn()::text FROM {} WHERE slot = $1",
                    sql::table(table)
                ),
                &[&slot],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let seq: i64 = row.get(0);
        let before: Lsn = parse_lsn(row.get(1))?;
        let now: Lsn = parse_lsn(row.get(2))?;
        Ok((before >= confirmed).then_some((seq, before, now)))
    }

    /// Writes canary `seq`, reporting its progress on `reports` (Pending before the commit is
    /// sent, so the session caps what it confirms before the canary can be decoded).
    pub async fn write(
        &mut self,
        seq: i64,
        reports: &mpsc::UnboundedSender<Report>,
    ) -> Result<(), WriteError> {
        let result = self.try_write(seq, reports).await;
        if result.is_err() {
            // Its transaction may be open or its connection gone: start afresh next time.
            self.client = None;
            let _ = reports.send(Report::Failed { seq });
        }
        result
    }

    async fn try_write(
        &mut self,
        seq: i64,
        reports: &mpsc::UnboundedSender<Report>,
    ) -> Result<(), WriteError> {
        let slot = self.slot.clone();
        let upsert = self.upsert.clone();
        let (table, publication) = (self.table.clone(), self.publication.clone());
        let report_delay = self.report_delay;
        let client = self.client().await?;
        client.batch_execute("BEGIN").await?;
        // A canary its table is not published for would never arrive, and rightly so: write
        // none, and say what to fix.
        let published: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_publication_tables \
                 WHERE pubname = $1 AND schemaname = $2 AND tablename = $3)",
                &[&publication, &table.schema, &table.name],
            )
            .await?
            .get(0);
        if !published {
            client.batch_execute("ROLLBACK").await?;
            return Err(WriteError::NotPublished { table, publication });
        }
        let row = client.query_one(&upsert, &[&slot, &seq]).await?;
        let before = parse_lsn(row.get(0))?;
        let _ = reports.send(Report::Pending { seq, before });
        client.batch_execute("COMMIT").await?;
        if let Some(delay) = report_delay {
            // Test hook: a writer slow to learn where its canary committed.
            tokio::time::sleep(delay).await;
        }
        let after: String = client
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .await?
            .get(0);
        let _ = reports.send(Report::Committed {
            seq,
            after: parse_lsn(after)?,
        });
        Ok(())
    }

    async fn client(&mut self) -> Result<&tokio_postgres::Client, WriteError> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = Some(connect_sql(&self.spec).await?);
        }
        self.client.as_ref().ok_or(WriteError::NotConnected)
    }
}

fn parse_lsn(text: String) -> Result<Lsn, WriteError> {
    text.parse().map_err(|_| WriteError::BadLsn(text))
}

/// Why a canary could not be written (the next one is tried at the next interval).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot connect to write the canary")]
    Connect(#[from] ConnectError),
    #[error("writing the canary failed; does the canary table exist (`walhook setup --apply` creates it)?")]
    Sql(#[from] tokio_postgres::Error),
    #[error("the canary table {table} is not in publication `{publication}`, so no canary is written; add it: ALTER PUBLICATION \"{publication}\" ADD TABLE {table};")]
    NotPublished {
        table: TableName,
        publication: String,
    },
    #[error("Postgres returned `{0}` where a WAL position was expected")]
    BadLsn(String),
    #[error("no connection")]
    NotConnected,
}

/// Runs `writer` for one source task: writes canary `seq` each time one arrives on `requests`.
pub async fn run_writer(
    mut writer: Writer,
    mut requests: mpsc::Receiver<i64>,
    reports: mpsc::UnboundedSender<Report>,
) {
    while let Some(seq) = requests.recv().await {
        if let Err(e) = writer.write(seq, &reports).await {
            warn!(seq, error = %crate::error_chain(&e), "cannot write the canary; the next one is tried at the next interval");
        }
    }
}

/// The canary of one source task: kept across reconnects, so a canary owed stays owed.
pub struct Canary {
    pub watch: Watch,
    /// Test hook (`WALHOOK_TEST_SKIP_CANARIES`): canaries still to be treated as not sent, to
    /// play a walsender that passes them.
    skip: u32,
    requests: mpsc::Sender<i64>,
    reports: mpsc::UnboundedReceiver<Report>,
    every: Duration,
    /// The canary asked of the writer and not yet committed or failed.
    writing: Option<i64>,
    due: tokio::time::Instant,
}

impl Canary {
    /// Starts the writer on a connection of its own. A canary of this slot that the slot has
    /// not confirmed past (`confirmed`) is still owed.
    pub async fn start(
        spec: ConnectSpec,
        table: TableName,
        (slot, publication): (&str, &str),
        every: Duration,
        confirmed: Lsn,
    ) -> Canary {
        let mut watch = Watch::new(table.clone(), slot);
        let mut writer = Writer::new(spec, &table, slot, publication);
        match writer.owed_at_start(&table, confirmed).await {
            Ok(Some((seq, before, after))) => {
                warn!(seq, %before, %confirmed, "the slot has not confirmed past the last canary: it must arrive before walhook confirms anything from there on");
                watch.resume(seq, before, after);
            }
            Ok(None) => {}
            Err(e) => {
                warn!(error = %crate::error_chain(&e), "cannot read the last canary; canaries written from now on are checked")
            }
        }
        let (requests, requests_rx) = mpsc::channel(1);
        let (reports_tx, reports) = mpsc::unbounded_channel();
        tokio::spawn(run_writer(writer, requests_rx, reports_tx));
        let skip = std::env::var("WALHOOK_TEST_SKIP_CANARIES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        Canary {
            watch,
            skip,
            requests,
            reports,
            every,
            writing: None,
            due: tokio::time::Instant::now(),
        }
    }

    /// A change from the stream: settles the owed canary when it is that canary.
    pub fn arrived(&mut self, change: &Change) {
        if self.skip > 0 && self.watch.is_ours(change) && self.watch.settles(change) {
            self.skip -= 1;
            warn!(commit_lsn = %change.commit_lsn, "test hook WALHOOK_TEST_SKIP_CANARIES: the canary is treated as not sent");
            return;
        }
        self.watch.observe(change);
    }

    /// A new replication session: its first canary goes out at once.
    pub fn session_started(&mut self) {
        self.due = tokio::time::Instant::now();
    }

    /// Takes in what the writer reported so far.
    pub fn drain(&mut self) {
        while let Ok(report) = self.reports.try_recv() {
            if let Report::Committed { seq, .. } | Report::Failed { seq } = report {
                if self.writing == Some(seq) {
                    self.writing = None;
                }
            }
            self.watch.apply(report);
        }
    }

    /// Asks the writer for the next canary when one is due, none is owed and none is being
    /// written.
    pub fn tick(&mut self) {
        self.drain();
        let now = tokio::time::Instant::now();
        if self.writing.is_some() || now < self.due {
            return;
        }
        if let Some(seq) = self.watch.next_canary() {
            if self.requests.try_send(seq).is_ok() {
                self.writing = Some(seq);
            }
            self.due = now + self.every;
        }
    }
}

#[cfg(test)]
mod tests;
