//! `walhook status`: the slot's lag, the state file's checkpoint and each subscriber's backlog,
//! as one screen for a person or as JSON (`--json`) for scripts.
//!
//! The database and the state file are read independently: either may fail without hiding
//! what the other says. Exit 1 if either could not be read, else 0 (a lag warning is shown,
//! not an exit code: status reports, `check` judges).

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::config::{Config, StateConfig};
use crate::database::slot_info::{self, SlotReading};
use crate::model::Lsn;
use crate::source::{connect_sql, ConnectSpec};
use crate::state::{StateError, SubscriberStatus, UnixMillis};
use crate::text::size;

/// Status must answer even when the host drops packets and the URL sets no `connect_timeout`.
const DATABASE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn status(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let now = UnixMillis::now();
    let (database, slot) = read_database(config).await;
    let (state, stored) = read_state(config).await;
    let report = Report {
        generated_at: now,
        database,
        slot,
        subscribers: subscribers(config, &state, stored, now),
        backfills: backfills::read(config).await,
        state,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    let failed = report.database.error.is_some() || report.state.error.is_some();
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Everything `status` shows; its JSON form is the `--json` output.
#[derive(Debug, Serialize)]
struct Report {
    #[serde(serialize_with = "time")]
    generated_at: UnixMillis,
    database: Database,
    /// `None` when the database could not be read.
    slot: Option<Slot>,
    state: State,
    subscribers: Vec<Subscriber>,
    /// Backfills pending or running.
    backfills: Vec<backfills::BackfillReport>,
}

#[derive(Debug, Serialize)]
struct Database {
    reachable: bool,
    /// Why the database could not be reached or read.
    error: Option<String>,
    #[serde(serialize_with = "opt_lsn")]
    current_lsn: Option<Lsn>,
}

#[derive(Debug, Serialize)]
struct Slot {
    name: String,
    exists: bool,
    active: bool,
    active_pid: Option<i32>,
    #[serde(serialize_with = "opt_lsn")]
    confirmed_flush_lsn: Option<Lsn>,
    #[serde(serialize_with = "opt_lsn")]
    restart_lsn: Option<Lsn>,
    /// WAL written since `confirmed_flush_lsn`.
    lag_bytes: Option<u64>,
    /// WAL kept on disk for the slot, from `restart_lsn`.
    retained_bytes: Option<u64>,
    wal_status: Option<String>,
    safe_wal_size: Option<i64>,
    lag_warn_bytes: u64,
    /// The lag or the retained WAL exceeds `source.lag_warn`.
    lag_warning: bool,
}

#[derive(Debug, Serialize)]
struct State {
    /// The SQLite file; absent with the state in Postgres.
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    /// With the state in Postgres: its URL without the password, and its schema.
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    schema: Option<String>,
    exists: bool,
    /// Why the state could not be read.
    error: Option<String>,
    #[serde(serialize_with = "opt_lsn")]
    confirmed_lsn: Option<Lsn>,
    /// With the state in Postgres: who leads (`None` also before any walhook led).
    #[serde(skip_serializing_if = "Option::is_none")]
    leader: Option<leader::LeaderReport>,
}

#[derive(Debug, Serialize)]
struct Subscriber {
    name: String,
    /// `false` for a subscriber removed from the config that still has stored events.
    in_config: bool,
    pending: u64,
    #[serde(serialize_with = "opt_time")]
    oldest_pending_commit_at: Option<UnixMillis>,
    oldest_pending_age_ms: Option<u64>,
    dead_letters: u64,
    paused: bool,
    paused_reason: Option<String>,
    #[serde(serialize_with = "opt_time")]
    last_success_at: Option<UnixMillis>,
    last_error: Option<LastError>,
}

#[derive(Debug, Serialize)]
struct LastError {
    #[serde(serialize_with = "time")]
    at: UnixMillis,
    text: String,
}

async fn read_database(config: &Config) -> (Database, Option<Slot>) {
    let failed = |reachable: bool, error: String| {
        let database = Database {
            reachable,
            error: Some(error),
            current_lsn: None,
        };
        (database, None)
    };
    let within = format!("within {}s", DATABASE_TIMEOUT.as_secs());
    let connect = async {
        let spec: ConnectSpec = config.source.url.expose().parse()?;
        anyhow::Ok(connect_sql(&spec).await?)
    };
    let client = match tokio::time::timeout(DATABASE_TIMEOUT, connect).await {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => return failed(false, format!("{e:#}")),
        Err(_) => return failed(false, format!("no connection {within}")),
    };
    let read = slot_info::read(&client, &config.source.slot);
    let reading = match tokio::time::timeout(DATABASE_TIMEOUT, read).await {
        Ok(Ok(reading)) => reading,
        Ok(Err(e)) => {
            let error = crate::error_chain(&e);
            return failed(
                true,
                format!("reading pg_replication_slots failed: {error}"),
            );
        }
        Err(_) => return failed(true, format!("no answer {within}")),
    };
    let database = Database {
        reachable: true,
        error: None,
        current_lsn: Some(reading.current_lsn),
    };
    (database, Some(slot(config, &reading)))
}

fn slot(config: &Config, reading: &SlotReading) -> Slot {
    let lag_bytes = reading.confirmed_lag_bytes();
    let retained_bytes = reading.retained_bytes();
    let warn = config.source.lag_warn_bytes;
    let info = reading.slot.as_ref();
    Slot {
        name: config.source.slot.clone(),
        exists: info.is_some(),
        active: info.is_some_and(|s| s.active),
        active_pid: info.and_then(|s| s.active_pid),
        confirmed_flush_lsn: info.and_then(|s| s.confirmed_flush_lsn),
        restart_lsn: info.and_then(|s| s.restart_lsn),
        lag_bytes,
        retained_bytes,
        wal_status: info.and_then(|s| s.wal_status.clone()),
        safe_wal_size: info.and_then(|s| s.safe_wal_size),
        lag_warn_bytes: warn,
        lag_warning: lag_bytes.max(retained_bytes).is_some_and(|b| b > warn),
    }
}

/// The state's checkpoint and subscribers. A missing state file is reported, not created:
/// opening the store would create it. A Postgres schema is opened as `walhook run` opens it,
/// created if missing.
async fn read_state(config: &Config) -> (State, Vec<SubscriberStatus>) {
    let mut state = State {
        path: None,
        url: None,
        schema: None,
        exists: false,
        error: None,
        confirmed_lsn: None,
        leader: None,
    };
    match &config.state {
        StateConfig::File { path } => {
            state.path = Some(path.display().to_string());
            match path.try_exists() {
                Ok(false) => return (state, Vec::new()),
                Ok(true) => state.exists = true,
                Err(e) => {
                    state.error = Some(format!("cannot look for the state file: {e}"));
                    return (state, Vec::new());
                }
            }
        }
        StateConfig::Postgres { url, schema, .. } => {
            state.url = Some(without_password(url.expose()));
            state.schema = Some(schema.clone());
            state.exists = true;
        }
    }
    let read = async {
        let (store, lease): (std::sync::Arc<dyn crate::state::Store>, _) = match &config.state {
            StateConfig::Postgres { url, schema, .. } => {
                let store = crate::app::open_postgres_state(url, schema).await?;
                let lease = store.lease().await?;
                (std::sync::Arc::new(store), lease)
            }
            StateConfig::File { .. } => (crate::app::open_state(config).await?, None),
        };
        Ok::<_, StateError>((store.confirmed().await?, store.status().await?, lease))
    };
    match read.await {
        Ok((confirmed, stored, lease)) => {
            state.confirmed_lsn = confirmed;
            state.leader = lease.map(Into::into);
            (state, stored)
        }
        Err(e) => {
            state.error = Some(crate::error_chain(&e));
            (state, Vec::new())
        }
    }
}

/// Every subscriber of the config (all zeros if the store knows nothing of it), and every
/// subscriber the store still holds something for; sorted by name. None if the state file
/// exists but could not be read: zeros would then be a lie.
fn subscribers(
    config: &Config,
    state: &State,
    stored: Vec<SubscriberStatus>,
    now: UnixMillis,
) -> Vec<Subscriber> {
    if state.error.is_some() {
        return Vec::new();
    }
    let mut by_name: BTreeMap<String, Option<SubscriberStatus>> = config
        .subscribers
        .iter()
        .map(|s| (s.name.clone(), None))
        .collect();
    for status in stored {
        by_name.insert(status.name.clone(), Some(status));
    }
    by_name
        .into_iter()
        .map(|(name, status)| {
            let in_config = config.subscriber(&name).is_some();
            let s = status.unwrap_or_else(|| SubscriberStatus {
                name: name.clone(),
                pending: 0,
                oldest_pending_commit_at: None,
                dead_letters: 0,
                paused: None,
                last_success_at: None,
                last_error: None,
            });
            Subscriber {
                name,
                in_config,
                pending: s.pending,
                oldest_pending_commit_at: s.oldest_pending_commit_at,
                oldest_pending_age_ms: s
                    .oldest_pending_commit_at
                    .map(|at| millis(now.saturating_duration_since(at))),
                dead_letters: s.dead_letters,
                paused: s.paused.is_some(),
                paused_reason: s.paused.map(|p| p.describe()),
                last_success_at: s.last_success_at,
                last_error: s.last_error.map(|e| LastError {
                    at: e.at,
                    text: e.text,
                }),
            }
        })
        .collect()
}

/// `url` as the operator wrote it, minus the password.
fn without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        Err(_) => "(not a URL)".to_string(),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The report as a person reads it.
fn render(r: &Report) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_report(&mut out, r);
    out
}

fn write_report(out: &mut String, r: &Report) -> fmt::Result {
    if let Some(error) = &r.database.error {
        let verb = if r.database.reachable {
            "read"
        } else {
            "reached"
        };
        writeln!(out, "database: could not be {verb}: {error}")?;
    } else if let Some(slot) = &r.slot {
        render_slot(out, slot, r.database.current_lsn)?;
    }
    match (&r.state.path, &r.state.url, &r.state.schema) {
        (Some(path), _, _) => writeln!(out, "state file {path}")?,
        (None, Some(url), Some(schema)) => {
            writeln!(out, "state in Postgres {url}, schema {schema}")?
        }
        _ => writeln!(out, "state")?,
    }
    match (&r.state.error, r.state.exists, r.state.confirmed_lsn) {
        (Some(error), _, _) => writeln!(out, "  could not be read: {error}")?,
        (None, false, _) => writeln!(out, "  no state yet (walhook has not run)")?,
        (None, true, Some(lsn)) => writeln!(out, "  confirmed LSN        {lsn}")?,
        (None, true, None) => writeln!(out, "  confirmed LSN        none recorded yet")?,
    }
    if r.state.url.is_some() && r.state.error.is_none() {
        leader::render(out, r.state.leader.as_ref())?;
    }
    if !r.subscribers.is_empty() {
        writeln!(out, "subscribers")?;
    }
    for s in &r.subscribers {
        render_subscriber(out, s, r.generated_at)?;
    }
    backfills::render(out, &r.backfills, r.generated_at)
}

fn render_subscriber(out: &mut String, s: &Subscriber, now: UnixMillis) -> fmt::Result {
    write!(out, "  {}", s.name)?;
    if !s.in_config {
        write!(out, " (not in the config)")?;
    }
    if let Some(reason) = &s.paused_reason {
        write!(out, "  PAUSED: {reason}")?;
    }
    write!(out, "\n    pending {}", s.pending)?;
    if let Some(age) = s.oldest_pending_age_ms {
        let age = ago(Duration::from_millis(age));
        write!(out, ", oldest committed {age} ago")?;
    }
    writeln!(out, "; dead letters {}", s.dead_letters)?;
    match s.last_success_at {
        Some(at) => writeln!(out, "    last success  {}", when(at, now)),
        None => writeln!(out, "    last success  never"),
    }?;
    match &s.last_error {
        Some(e) => writeln!(out, "    last error    {}: {}", when(e.at, now), e.text),
        None => writeln!(out, "    last error    none"),
    }
}

fn render_slot(out: &mut String, slot: &Slot, current: Option<Lsn>) -> fmt::Result {
    if !slot.exists {
        return writeln!(
            out,
            "slot {}: does not exist (`walhook setup --apply` or `walhook run` creates it)",
            slot.name
        );
    }
    match slot.active_pid {
        Some(pid) if slot.active => writeln!(out, "slot {}: active (pid {pid})", slot.name)?,
        _ if slot.active => writeln!(out, "slot {}: active", slot.name)?,
        _ => writeln!(
            out,
            "slot {}: inactive (nothing streams from it)",
            slot.name
        )?,
    }
    let lsn = |l: Option<Lsn>| l.map_or("-".to_string(), |l| l.to_string());
    let over = |bytes: Option<u64>| {
        if bytes.is_some_and(|b| b > slot.lag_warn_bytes) {
            format!("  ⚠ over source.lag_warn ({})", size(slot.lag_warn_bytes))
        } else {
            String::new()
        }
    };
    let amount = |bytes: Option<u64>| bytes.map_or("unknown".to_string(), exact_size);
    writeln!(
        out,
        "  confirmed_flush_lsn  {:<12} lag {} behind {}{}",
        lsn(slot.confirmed_flush_lsn),
        amount(slot.lag_bytes),
        lsn(current),
        over(slot.lag_bytes)
    )?;
    writeln!(
        out,
        "  restart_lsn          {:<12} retains {} of WAL{}",
        lsn(slot.restart_lsn),
        amount(slot.retained_bytes),
        over(slot.retained_bytes)
    )?;
    let safe = match (slot.safe_wal_size, slot.wal_status.as_deref()) {
        (Some(bytes), _) => size(u64::try_from(bytes).unwrap_or(0)),
        (None, None) => "unknown (Postgres before 13)".to_string(),
        (None, Some("lost")) => "none (the slot was invalidated)".to_string(),
        (None, Some(_)) => "no limit (max_slot_wal_keep_size = -1)".to_string(),
    };
    writeln!(
        out,
        "  wal_status           {:<12} safe_wal_size {safe}",
        slot.wal_status.as_deref().unwrap_or("-")
    )
}

/// `1.5 MB (1572864 bytes)`, or `512 bytes`; units are powers of 1024, named as in the config.
fn exact_size(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{bytes} bytes")
    } else {
        format!("{} ({bytes} bytes)", size(bytes))
    }
}

/// `2026-11-26T17:51:10Z (2m 5s ago)`.
pub(super) fn when(at: UnixMillis, now: UnixMillis) -> String {
    format!(
        "{} ({} ago)",
        rfc3339_seconds(at),
        ago(now.saturating_duration_since(at))
    )
}

fn ago(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, s / 60 % 60),
        _ => format!("{}d {}h", s / 86_400, s / 3600 % 24),
    }
}

fn rfc3339(at: UnixMillis) -> String {
    let mut text = String::new();
    crate::mapping::push_rfc3339_micros(at.0.saturating_mul(1000), &mut text);
    text
}

/// [`rfc3339`] without the fraction, for people.
fn rfc3339_seconds(at: UnixMillis) -> String {
    let full = rfc3339(at);
    match full.split_once('.') {
        Some((seconds, _)) => format!("{seconds}Z"),
        None => full,
    }
}

fn time<S: Serializer>(at: &UnixMillis, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*at))
}

fn opt_time<S: Serializer>(at: &Option<UnixMillis>, s: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => time(at, s),
        None => s.serialize_none(),
    }
}

fn opt_lsn<S: Serializer>(lsn: &Option<Lsn>, s: S) -> Result<S::Ok, S::Error> {
    match lsn {
        Some(lsn) => s.collect_str(lsn),
        None => s.serialize_none(),
    }
}

mod backfills;
mod leader;
#[cfg(test)]
mod tests;
