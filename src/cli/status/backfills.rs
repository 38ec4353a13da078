//! The backfills section of `walhook status`: requests still pending or running, with their
//! progress, as the state file records it.

use std::fmt::{self, Write as _};

use serde::Serialize;

use crate::config::{Config, StateConfig};
use crate::state::{Backfill, UnixMillis};

use super::{ago, opt_time};

/// One backfill not yet done or failed.
#[derive(Debug, Serialize)]
pub(super) struct BackfillReport {
    pub id: i64,
    pub table: String,
    pub subscribers: Vec<String>,
    /// `pending` (no `walhook run` took it up yet) or `running`.
    pub status: String,
    #[serde(rename = "where")]
    pub where_sql: Option<String>,
    pub rows_done: u64,
    /// `pg_class.reltuples` when requested.
    pub total_estimate: Option<u64>,
    #[serde(serialize_with = "opt_time")]
    pub started_at: Option<UnixMillis>,
    /// When progress was last saved.
    #[serde(serialize_with = "opt_time")]
    pub updated_at: Option<UnixMillis>,
    /// What a running backfill waits for, while a wait lasts (as `walhook backfill` shows it).
    pub waiting: Option<String>,
}

impl From<Backfill> for BackfillReport {
    fn from(b: Backfill) -> Self {
        Self {
            id: b.id,
            table: b.table,
            subscribers: b.subscribers,
            status: b.status.as_str().to_string(),
            where_sql: b.where_sql,
            rows_done: b.rows_done,
            total_estimate: b.total_estimate,
            started_at: b.started_at,
            updated_at: Some(b.updated_at),
            waiting: b.waiting,
        }
    }
}

/// The active backfills; none if the state file is missing or the state unreadable (the state
/// section says why).
pub(super) async fn read(config: &Config) -> Vec<BackfillReport> {
    if let StateConfig::File { path } = &config.state {
        if !path.try_exists().unwrap_or(false) {
            return Vec::new();
        }
    }
    let Ok(store) = crate::app::open_state(config).await else {
        return Vec::new();
    };
    store
        .active_backfills()
        .await
        .map(|active| active.into_iter().map(BackfillReport::from).collect())
        .unwrap_or_default()
}

pub(super) fn render(
    out: &mut String,
    backfills: &[BackfillReport],
    now: UnixMillis,
) -> fmt::Result {
    if backfills.is_empty() {
        return Ok(());
    }
    writeln!(out, "backfills")?;
    for b in backfills {
        write!(
            out,
            "  {} {} ({}): {}",
            b.id,
            b.table,
            b.subscribers.join(", "),
            b.status
        )?;
        if b.status == "pending" {
            writeln!(out, ", waiting for `walhook run`")?;
            continue;
        }
        match b.total_estimate {
            Some(total) if total > 0 => {
                let percent = (b.rows_done as f64 * 100.0 / total as f64).min(100.0);
                write!(out, ", {} / ~{total} rows ({percent:.0}%)", b.rows_done)?;
            }
            _ => write!(out, ", {} rows", b.rows_done)?,
        }
        if let Some(at) = b.updated_at {
            write!(
                out,
                ", last progress {} ago",
                ago(now.saturating_duration_since(at))
            )?;
        }
        writeln!(out)?;
        if let Some(waiting) = &b.waiting {
            writeln!(out, "    {waiting}")?;
        }
        if let Some(condition) = &b.where_sql {
            writeln!(out, "    where {condition}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_running_and_pending_backfills() {
        let now = UnixMillis(1_795_715_470_000);
        let running = BackfillReport {
            id: 1,
            table: "public.orders".into(),
            subscribers: vec!["billing".into(), "crm".into()],
            status: "running".into(),
            where_sql: Some("created_at > now() - interval '30 days'".into()),
            rows_done: 42_000,
            total_estimate: Some(100_000),
            started_at: Some(UnixMillis(now.0 - 10_000)),
            updated_at: Some(UnixMillis(now.0 - 2_000)),
            waiting: Some(
                "waiting for subscribers billing, crm to accept the chunk's 1000 rows".into(),
            ),
        };
        let pending = BackfillReport {
            id: 2,
            table: "public.customers".into(),
            subscribers: vec!["crm".into()],
            status: "pending".into(),
            where_sql: None,
            rows_done: 0,
            total_estimate: None,
            started_at: None,
            updated_at: Some(now),
            waiting: None,
        };
        let mut out = String::new();
        render(&mut out, &[running, pending], now).unwrap();
        assert_eq!(
            out,
            "backfills
  1 public.orders (billing, crm): running, 42000 / ~100000 rows (42%), last progress 2s ago
    waiting for subscribers billing, crm to accept the chunk's 1000 rows
    where created_at > now() - interval '30 days'
  2 public.customers (crm): pending, waiting for `walhook run`
"
        );
    }
}
