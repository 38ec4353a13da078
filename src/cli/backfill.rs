//! `walhook backfill`: checks and records a backfill request in the state file, then follows
//! it until the running `walhook run` has sent every row (a progress line on a terminal, plain
//! lines otherwise). Interrupting the command leaves the request recorded.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::backfill::{self, Request};
use crate::config::Config;
use crate::database::slot_info;
use crate::source::{connect_sql, ConnectSpec};
use crate::state::{Backfill, BackfillStatus, Store};
use crate::text::duration;

/// How often the state file is read for progress.
const POLL: Duration = Duration::from_millis(500);
/// Plain progress lines (not a terminal) are written this often.
const LOG_EVERY: Duration = Duration::from_secs(2);
/// A request still pending after this long prompts a look for a running walhook.
const START_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, clap::Args)]
pub struct BackfillArgs {
    /// The table to backfill: `schema.table` (a bare name means `public`).
    #[arg(long)]
    pub table: String,
    /// Only for this subscriber (repeat for several); default: every subscriber a rule sends
    /// the table's inserts to.
    #[arg(long = "subscriber")]
    pub subscribers: Vec<String>,
    /// Only rows matching this SQL condition, e.g. "created_at > now() - interval '30 days'".
    #[arg(long = "where")]
    pub where_sql: Option<String>,
    /// Rows read per chunk (one short query each).
    #[arg(long, default_value_t = backfill::DEFAULT_BATCH_ROWS, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_rows: u32,
    /// At most this many rows per second.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate: Option<u32>,
    /// Record the request and exit; `walhook status` shows its progress.
    #[arg(long)]
    pub detach: bool,
}

pub async fn backfill(config: &Config, args: BackfillArgs) -> anyhow::Result<ExitCode> {
    let spec: ConnectSpec = config.source.url.expose().parse().context("source.url")?;
    let client = connect_sql(&spec).await?;
    let store = crate::app::open_state(config).await?;
    let request = Request {
        table: args.table,
        subscribers: args.subscribers,
        where_sql: args.where_sql,
        batch_rows: args.batch_rows,
        rate: args.rate,
    };
    let (id, new) = match backfill::record(config, &client, &*store, &request).await {
        Ok(recorded) => recorded,
        Err(e) => {
            eprintln!("error: {}", crate::error_chain(&e));
            return Ok(ExitCode::from(1));
        }
    };
    let estimate = new
        .total_estimate
        .map_or("size unknown".to_string(), |n| format!("about {n} rows"));
    println!(
        "backfill {id} recorded: {} for {} ({estimate})",
        new.table,
        new.subscribers.join(", ")
    );
    if args.detach {
        println!("the running `walhook run` sends the rows; `walhook status` shows the progress");
        return Ok(ExitCode::SUCCESS);
    }
    follow(config, &client, &*store, id).await
}

/// Shows the progress of backfill `id` until it is done (exit 0) or failed (exit 1).
async fn follow(
    config: &Config,
    client: &tokio_postgres::Client,
    store: &dyn Store,
    id: i64,
) -> anyhow::Result<ExitCode> {
    let terminal = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut first: Option<(Instant, u64)> = None;
    let mut last_line: Option<Instant> = None;
    let mut warned = false;
    loop {
        let backfill = store
            .backfill(id)
            .await?
            .with_context(|| format!("backfill {id} vanished from the state file"))?;
        let now = Instant::now();
        match backfill.status {
            BackfillStatus::Done => {
                if terminal {
                    eprintln!();
                }
                println!(
                    "backfill {id} done: {} rows of {} sent in {:.1}s",
                    backfill.rows_done,
                    backfill.table,
                    started.elapsed().as_secs_f64()
                );
                return Ok(ExitCode::SUCCESS);
            }
            BackfillStatus::Failed => {
                if terminal {
                    eprintln!();
                }
                eprintln!(
                    "error: backfill {id} failed after {} rows: {}",
                    backfill.rows_done,
                    backfill.error.as_deref().unwrap_or("no reason recorded")
                );
                return Ok(ExitCode::from(1));
            }
            BackfillStatus::Pending => {
                if !warned && started.elapsed() >= START_WAIT {
                    warned = true;
                    if !slot_active(client, &config.source.slot).await {
                        eprintln!(
                            "note: no `walhook run` streams from slot `{}`: the backfill starts \
                             when one runs (interrupting this command keeps the request)",
                            config.source.slot
                        );
                    }
                }
            }
            BackfillStatus::Running => {
                if first.is_none() {
                    first = Some((now, backfill.rows_done));
                }
            }
        }
        let rate = first.and_then(|(at, rows)| {
            let secs = now.duration_since(at).as_secs_f64();
            (secs >= 1.0).then(|| backfill.rows_done.saturating_sub(rows) as f64 / secs)
        });
        let line = progress_line(&backfill, rate);
        if terminal {
            // Auto-wrap off while the line is written (DECAWM), so a line wider than the
            // terminal is cut at its edge instead of wrapping where `\r` cannot reach.
            eprint!("\r\x1b[2K\x1b[?7l{line}\x1b[?7h");
            let _ = std::io::stderr().flush();
        } else if last_line.is_none_or(|at| now.duration_since(at) >= LOG_EVERY) {
            last_line = Some(now);
            eprintln!("{line}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Whether a connection streams from the slot now; `false` when that cannot be read.
async fn slot_active(client: &tokio_postgres::Client, slot: &str) -> bool {
    slot_info::read(client, slot)
        .await
        .ok()
        .and_then(|reading| reading.slot)
        .is_some_and(|slot| slot.active)
}

/// `backfill 3 public.orders: 42000 / ~100000 rows (42%), 8400 rows/s, ETA 7s`, and what the
/// backfill waits for while a wait lasts: `..., waiting for subscriber app to accept the
/// chunk's 1000 rows`.
pub(super) fn progress_line(backfill: &Backfill, rate: Option<f64>) -> String {
    let head = format!("backfill {} {}", backfill.id, backfill.table);
    if backfill.status == BackfillStatus::Pending {
        return format!("{head}: waiting for `walhook run` to take it up");
    }
    let done = backfill.rows_done;
    let mut line = match backfill.total_estimate {
        Some(total) if total > 0 => {
            let percent = (done as f64 * 100.0 / total as f64).min(100.0);
            format!("{head}: {done} / ~{total} rows ({percent:.0}%)")
        }
        _ => format!("{head}: {done} rows"),
    };
    if let Some(rate) = rate {
        line.push_str(&format!(", {rate:.0} rows/s"));
        if let Some(total) = backfill.total_estimate.filter(|_| rate >= 1.0) {
            let left = total.saturating_sub(done) as f64 / rate;
            line.push_str(&format!(
                ", ETA {}",
                duration(Duration::from_secs_f64(left))
            ));
        }
    }
    if let Some(waiting) = &backfill.waiting {
        line.push_str(", ");
        line.push_str(waiting);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::UnixMillis;

    fn backfill(status: BackfillStatus, rows_done: u64, total: Option<u64>) -> Backfill {
        Backfill {
            id: 3,
            table: "public.orders".into(),
            subscribers: vec!["billing".into()],
            where_sql: None,
            batch_rows: 1000,
            rate: None,
            status,
            last_key: None,
            reread: Vec::new(),
            rows_done,
            total_estimate: total,
            created_at: UnixMillis(0),
            started_at: None,
            updated_at: UnixMillis(0),
            finished_at: None,
            error: None,
            waiting: None,
        }
    }

    #[test]
    fn the_progress_line_shows_rows_estimate_rate_and_eta() {
        assert_eq!(
            progress_line(
                &backfill(BackfillStatus::Running, 42_000, Some(100_000)),
                Some(8_400.0)
            ),
            "backfill 3 public.orders: 42000 / ~100000 rows (42%), 8400 rows/s, ETA 6s"
        );
        assert_eq!(
            progress_line(&backfill(BackfillStatus::Running, 500, None), None),
            "backfill 3 public.orders: 500 rows"
        );
        assert_eq!(
            progress_line(
                &backfill(BackfillStatus::Running, 10, Some(1_000_000)),
                Some(100.0)
            ),
            "backfill 3 public.orders: 10 / ~1000000 rows (0%), 100 rows/s, ETA 2h 46m"
        );
        assert_eq!(
            progress_line(&backfill(BackfillStatus::Pending, 0, Some(5)), None),
            "backfill 3 public.orders: waiting for `walhook run` to take it up"
        );
    }

    #[test]
    fn the_progress_line_ends_with_what_the_backfill_waits_for() {
        let mut waiting = backfill(BackfillStatus::Running, 1000, Some(10_000));
        waiting.waiting = Some(
            "waiting for the stream to reach the chunk (walhook is 41.2 MB behind it: \
             subscribers take events slower than the table was written)"
                .into(),
        );
        assert_eq!(
            progress_line(&waiting, Some(0.0)),
            "backfill 3 public.orders: 1000 / ~10000 rows (10%), 0 rows/s, waiting for the \
             stream to reach the chunk (walhook is 41.2 MB behind it: subscribers take events \
             slower than the table was written)"
        );
        waiting.waiting =
            Some("waiting for subscriber billing to accept the chunk's 1000 rows".into());
        assert_eq!(
            progress_line(&waiting, None),
            "backfill 3 public.orders: 1000 / ~10000 rows (10%), waiting for subscriber billing \
             to accept the chunk's 1000 rows"
        );
        let mut rereading = backfill(BackfillStatus::Running, 10_000, Some(10_000));
        rereading.waiting =
            Some("reading again 253 rows the stream changed without their TOASTed columns".into());
        assert_eq!(
            progress_line(&rereading, Some(2500.0)),
            "backfill 3 public.orders: 10000 / ~10000 rows (100%), 2500 rows/s, ETA 0s, reading \
             again 253 rows the stream changed without their TOASTed columns"
        );
    }
}
