//! Keeping the slot safe: the heartbeat that lets it advance on an idle database, and the
//! checks that stop walhook loudly when its slot was dropped, invalidated or taken, instead of
//! retrying forever or letting WAL pile up unnoticed.

use std::time::Duration;

use tracing::{debug, warn};

use crate::model::Lsn;

/// The prefix of walhook's heartbeat messages in the WAL.
pub const HEARTBEAT_PREFIX: &str = "walhook.heartbeat";

/// What is wrong with the slot; each message says what happened and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotProblem {
    #[error(
        "replication slot `{slot}` was invalidated (wal_status = lost): Postgres removed WAL it still \
         needed, so changes after its position cannot be recovered from this slot. Run `walhook \
         teardown`, then `walhook setup --apply`, and backfill the mapped tables"
    )]
    Lost { slot: String },
    #[error(
        "replication slot `{slot}` no longer exists (was it dropped?). Changes since walhook last \
         confirmed cannot be read from it: run `walhook setup --apply` to create a new slot, and \
         backfill the mapped tables"
    )]
    Missing { slot: String },
    #[error(
        "replication slot `{slot}` is in use by another process (PID {pid}): another walhook (or \
         another tool) streams from it. Stop that process, or give this walhook its own \
         source.slot"
    )]
    InUse { slot: String, pid: String },
}

/// The slot as the catalog shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotHealth {
    pub exists: bool,
    /// Its `confirmed_flush_lsn`: where the stream resumes (`None` when NULL or missing).
    pub confirmed: Option<Lsn>,
    /// `lost` once invalidated (Postgres 13+; `None` before).
    pub wal_status: Option<String>,
    /// WAL written since `confirmed_flush_lsn`: what walhook has yet to confirm.
    pub lag_bytes: Option<u64>,
    /// WAL Postgres keeps on disk for the slot (from `restart_lsn`): what `lag_warn` bounds.
    pub retained_bytes: Option<u64>,
}

/// Reads the slot's health (through [`super::slot_info::read`], which works on every
/// supported Postgres version).
pub async fn slot_health(
    client: &tokio_postgres::Client,
    slot: &str,
) -> Result<SlotHealth, tokio_postgres::Error> {
    let reading = super::slot_info::read(client, slot).await?;
    Ok(SlotHealth {
        exists: reading.slot.is_some(),
        confirmed: reading.slot.as_ref().and_then(|s| s.confirmed_flush_lsn),
        wal_status: reading.slot.as_ref().and_then(|s| s.wal_status.clone()),
        lag_bytes: reading.confirmed_lag_bytes(),
        retained_bytes: reading.retained_bytes(),
    })
}

impl SlotHealth {
    /// The problem this state means, if any.
    pub fn problem(&self, slot: &str) -> Option<SlotProblem> {
        if !self.exists {
            Some(SlotProblem::Missing {
                slot: slot.to_string(),
            })
        } else if self.wal_status.as_deref() == Some("lost") {
            Some(SlotProblem::Lost {
                slot: slot.to_string(),
            })
        } else {
            None
        }
    }
}

/// Writes one heartbeat: a non-transactional logical message, so an idle slot gets something
/// to confirm past.
pub async fn heartbeat(client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "SELECT pg_logical_emit_message(false, $1, now()::text)",
            &[&HEARTBEAT_PREFIX],
        )
        .await?;
    debug!("heartbeat written");
    Ok(())
}

/// Ends walsender `pid` if it serves `slot`: the walsender of a leader whose lease ran out
/// (see `app::leader`). The slot names it, so a pid that now serves something else is left
/// alone. Whether it ended one.
pub async fn end_walsender(
    client: &tokio_postgres::Client,
    slot: &str,
    pid: i32,
) -> Result<bool, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
              WHERE slot_name = $1 AND active_pid = $2",
            &[&slot, &pid],
        )
        .await?;
    Ok(row.is_some_and(|r| r.get::<_, Option<bool>>(0) == Some(true)))
}

/// The process that streams from `slot` now, if any.
pub async fn slot_user(
    client: &tokio_postgres::Client,
    slot: &str,
) -> Result<Option<i32>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    Ok(row.and_then(|r| r.get(0)))
}

/// Logs (at most once per `every`) while the slot retains more than `limit` bytes.
#[derive(Debug)]
pub struct LagWarning {
    limit: u64,
    every: Duration,
    last: Option<std::time::Instant>,
}

impl LagWarning {
    pub fn new(limit: u64, every: Duration) -> Self {
        Self {
            limit,
            every,
            last: None,
        }
    }

    /// Whether `lag` is over the limit (and logs, rate-limited).
    pub fn check(&mut self, slot: &str, lag: u64) -> bool {
        if lag <= self.limit {
            self.last = None;
            return false;
        }
        if self.last.is_none_or(|at| at.elapsed() >= self.every) {
            self.last = Some(std::time::Instant::now());
            warn!(slot, lag_bytes = lag, limit_bytes = self.limit, "the slot retains more WAL than source.lag_warn; is a subscriber down or walhook too slow?");
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_warning_fires_over_the_limit_only() {
        let mut warning = LagWarning::new(100, Duration::from_secs(60));
        assert!(!warning.check("s", 100));
        assert!(warning.check("s", 101));
        assert!(warning.check("s", 5000));
        assert!(!warning.check("s", 0));
    }
}
