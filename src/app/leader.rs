//! Leadership, with the state in Postgres: any number of `walhook run` processes share one
//! config; one leads (streams, delivers, writes state), the others stand by.
//!
//! The protocol (README, "Running two or more"):
//! 1. A standby polls every `lease / 10` (at most 1 s) on a connection of its own: it tries
//!    the leadership lock (a session advisory lock) and reads the lease row.
//! 2. While the lease has not run out (the state server's clock decides), it waits. Once it
//!    has, the old leader is paused, cut off or dead, and may still hold its sessions: the
//!    standby ends the recorded lock session (`pg_terminate_backend`, only if that backend
//!    holds the lock), takes the lock, and takes the lease with the next term (`epoch`), under
//!    the schema's write lock. Then it ends the old leader's recorded walsender (only if that
//!    process serves the slot), waits for the slot to be free, and streams.
//! 3. The leader renews the lease every `lease / 4` on its own connection, recording its
//!    walsender. Each renewal licenses delivery for `3/4 lease` from when it was sent, by the
//!    leader's own clock; every request checks the licence first. A leader that cannot renew
//!    in time stops delivering at once and steps down: its pipeline is dropped (requests in
//!    flight cancelled, nothing drained) before the lease runs out on the server, so before
//!    any standby may start.
//! 4. Fencing, second line: the store's writes check, in their one round trip, that the term
//!    still leads and its lease has not run out (see [`PostgresStore::fence_writes`]). A
//!    leader resumed after a takeover can no longer write, whatever it still does.
//! 5. A leader that stops (SIGTERM) drains, then releases the lease: a standby takes over at
//!    its next poll instead of waiting for the lease to run out.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::{sleep, sleep_until, timeout_at};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{lead, AppError, Licence};
use crate::config::Config;
use crate::database::slot_guard::{end_walsender, slot_user};
use crate::source::{connect_sql, ConnectSpec};
use crate::state::{Lease, LeaseSession, PostgresStore, StateError};
use crate::telemetry::{Health, Role};

/// A standby polls at most this often and at least this seldom.
const POLL_MIN: Duration = Duration::from_millis(100);
const POLL_MAX: Duration = Duration::from_secs(1);
/// How often a leader looks whether the source opened a new walsender, to record it.
const WALSENDER_LOOK: Duration = Duration::from_millis(100);

/// Streams and delivers whenever this walhook leads, stands by otherwise, until `signal`
/// resolves: then a leader drains and releases its lease, and a standby just ends.
pub(super) async fn run(
    config: &Config,
    store: Arc<PostgresStore>,
    lease: Duration,
    health: &Arc<Health>,
    signal: impl Future<Output = ()>,
) -> Result<(), AppError> {
    let stop = CancellationToken::new();
    let watch = async {
        signal.await;
        stop.cancel();
        std::future::pending::<Result<(), AppError>>().await
    };
    tokio::select! {
        outcome = terms(config, &store, lease, health, &stop) => outcome,
        never = watch => never,
    }
}

/// One leadership term as it began.
struct Term {
    session: LeaseSession,
    epoch: i64,
    /// The lease before this term (`None`: no walhook led with this schema before).
    former: Option<Lease>,
    /// When the statement that took the lease was sent, by this walhook's clock.
    taken: Instant,
}

/// Why a leader stopped leading.
#[derive(Debug)]
enum Lost {
    NotRenewed,
    Ended,
    Refused,
    StateGone,
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Lost::NotRenewed => "lease not renewed in time (the state database did not answer, or this walhook was paused)",
            Lost::Ended => "lease ran out or another walhook took over",
            Lost::Refused => "the state refused a write: another walhook took over",
            Lost::StateGone => "the state database was lost; standing by until it answers, then taking over again once the lease ran out",
        })
    }
}

async fn terms(
    config: &Config,
    store: &Arc<PostgresStore>,
    lease: Duration,
    health: &Arc<Health>,
    stop: &CancellationToken,
) -> Result<(), AppError> {
    let holder = holder_name();
    let spec: ConnectSpec = config.source.url.expose().parse()?;
    loop {
        health.set_role(Role::Standby);
        let Some(mut term) = stand_by(store, lease, &holder, health, stop).await else {
            return Ok(());
        };
        let epoch = term.epoch;
        store.fence_writes(epoch);
        health.set_walsender_pid(0);
        let why = match &term.former {
            None => "no walhook led before".to_string(),
            Some(l) => format!(
                "the lease of {} (term {}) ran out or was released",
                l.holder, l.epoch
            ),
        };
        info!(epoch, reason = %why, "leadership acquired: this walhook leads");
        let licence = Licence::until(term.taken + lease * 3 / 4);
        if let Err(busy) =
            free_the_slot(&spec, &config.source.slot, term.former.as_ref(), lease).await
        {
            warn!(epoch, error = %busy, "stepping down: the slot did not become free");
            release(&mut term).await;
            tokio::select! {
                () = sleep(lease) => continue,
                () = stop.cancelled() => return Ok(()),
            }
        }
        health.set_role(Role::Leader);
        let ended = tokio::select! {
            outcome = lead(config, store.clone(), health, licence.clone(), stop.cancelled()) => Err(outcome),
            lost = keep_lease(&mut term, store, lease, &licence, health) => Ok(lost),
        };
        let lost = match ended {
            Ok(lost) => lost,
            // Stopping: whatever the drain met, this walhook ends with it.
            Err(outcome) if stop.is_cancelled() => {
                release(&mut term).await;
                info!(epoch, "stepping down: leadership released");
                return outcome;
            }
            Err(outcome) => match still_leads(&mut term, outcome).await {
                Ok(result) => {
                    release(&mut term).await;
                    info!(epoch, "stepping down: leadership released");
                    return result;
                }
                Err(lost) => lost,
            },
        };
        health.set_role(Role::Standby);
        warn!(epoch, reason = %lost, "leadership lost: stopped delivering and writing state; standing by");
    }
}

/// A pipeline that ended on its own: its outcome, or why it ended if the cause is that this
/// walhook no longer leads (then it stands by instead of exiting).
async fn still_leads(
    term: &mut Term,
    outcome: Result<(), AppError>,
) -> Result<Result<(), AppError>, Lost> {
    let Err(error) = &outcome else {
        return Ok(outcome);
    };
    if caused_by(error, |e| matches!(e, StateError::PostgresNotLeader { .. })) {
        return Err(Lost::Refused);
    }
    // Nothing was settled that the state does not hold: stand by (and take over again once
    // it answers and the lease ran out) instead of exiting.
    let gone = |e: &StateError| {
        matches!(
            e,
            StateError::PostgresLost { .. } | StateError::PostgresUnreachable { .. }
        )
    };
    if caused_by(error, gone) {
        return Err(Lost::StateGone);
    }
    match term.session.lease().await {
        Ok(Some(l)) if l.epoch != term.epoch || l.expired => Err(Lost::Ended),
        _ => Ok(outcome),
    }
}

/// Whether a [`StateError`] for which `kind` holds is in `error`'s chain.
fn caused_by(error: &AppError, kind: impl Fn(&StateError) -> bool) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        // A worker's error holds its cause boxed.
        let state = (e.downcast_ref::<StateError>())
            .or_else(|| e.downcast_ref::<Box<StateError>>().map(|b| &**b));
        if state.is_some_and(&kind) {
            return true;
        }
        cause = e.source();
    }
    false
}

/// Waits until this walhook takes the lease; `None` if `stop` came first.
async fn stand_by(
    store: &PostgresStore,
    lease: Duration,
    holder: &str,
    health: &Health,
    stop: &CancellationToken,
) -> Option<Term> {
    let poll = (lease / 10).clamp(POLL_MIN, POLL_MAX);
    let mut session: Option<LeaseSession> = None;
    let mut seen: Option<i64> = None;
    let mut unreachable = false;
    loop {
        if stop.is_cancelled() {
            return None;
        }
        match try_take(&mut session, store, lease, holder).await {
            Ok(Attempt::Taken(term)) => return Some(*term),
            Ok(Attempt::Waiting(current)) => {
                health.set_role(Role::Standby);
                unreachable = false;
                if let Some(l) = current.filter(|l| !l.expired && seen != Some(l.epoch)) {
                    seen = Some(l.epoch);
                    info!(leader = %l.holder, epoch = l.epoch, "standing by: another walhook leads");
                }
            }
            Err(e) => {
                health.set_role(Role::StandbyUnreachable);
                if !unreachable {
                    warn!(error = %crate::error_chain(&e), "standing by, but the state database does not answer; this walhook cannot take over until it does");
                }
                unreachable = true;
            }
        }
        tokio::select! {
            () = sleep(poll) => {}
            () = stop.cancelled() => return None,
        }
    }
}

enum Attempt {
    Taken(Box<Term>),
    /// Another leads, or may still: the lease as read.
    Waiting(Option<Lease>),
}

/// One poll of a standby (step 2 of the protocol).
async fn try_take(
    session: &mut Option<LeaseSession>,
    store: &PostgresStore,
    lease: Duration,
    holder: &str,
) -> Result<Attempt, StateError> {
    let mut s = match session.take() {
        Some(s) if !s.is_closed() => s,
        _ => store.lease_session().await?,
    };
    let result = take_with(&mut s, lease, holder).await;
    match result {
        Ok(Some((epoch, former, taken))) => Ok(Attempt::Taken(Box::new(Term {
            session: s,
            epoch,
            former,
            taken,
        }))),
        Ok(None) => {
            let current = s.lease().await?;
            *session = Some(s);
            Ok(Attempt::Waiting(current))
        }
        Err(e) => {
            *session = Some(s);
            Err(e)
        }
    }
}

async fn take_with(
    s: &mut LeaseSession,
    lease: Duration,
    holder: &str,
) -> Result<Option<(i64, Option<Lease>, Instant)>, StateError> {
    let mut locked = s.try_lock().await?;
    let current = s.lease().await?;
    if let Some(l) = &current {
        if !l.expired {
            return Ok(None);
        }
        if !locked && l.lock_pid != s.backend_pid() && s.end_lock_holder(l.lock_pid).await? {
            info!(leader = %l.holder, epoch = l.epoch, pid = l.lock_pid, "the lease ran out with the leader's session still open (paused or cut off): ended that session");
            locked = s.try_lock().await?;
        }
    }
    if !locked {
        return Ok(None);
    }
    let taken = Instant::now();
    let seen = current.as_ref().map(|l| l.epoch);
    Ok(s.take_over(seen, holder, lease)
        .await?
        .map(|epoch| (epoch, current, taken)))
}

/// Ends the former leader's recorded walsender and waits (up to `bound`) until no process
/// streams from the slot.
async fn free_the_slot(
    spec: &ConnectSpec,
    slot: &str,
    former: Option<&Lease>,
    bound: Duration,
) -> Result<(), String> {
    let client = connect_sql(spec)
        .await
        .map_err(|e| format!("cannot connect to the source: {}", crate::error_chain(&e)))?;
    let failed = |e: tokio_postgres::Error| format!("cannot read the slot: {e}");
    if let Some((l, pid)) = former.and_then(|l| l.walsender_pid.map(|pid| (l, pid))) {
        if end_walsender(&client, slot, pid).await.map_err(failed)? {
            info!(leader = %l.holder, epoch = l.epoch, pid, slot, "ended the former leader's walsender");
        }
    }
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        let Some(pid) = slot_user(&client, slot).await.map_err(failed)? else {
            return Ok(());
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "replication slot `{slot}` is in use by PID {pid}, which the former leader did not record, so walhook does not end it (it may be another tool)"
            ));
        }
        sleep(POLL_MIN).await;
    }
}

/// Renews the lease every `lease / 4` while this walhook leads (step 3), and at once when the
/// source opened a new walsender, so the lease names it before a standby may need it; returns
/// when it can no longer.
async fn keep_lease(
    term: &mut Term,
    store: &PostgresStore,
    lease: Duration,
    licence: &Licence,
    health: &Health,
) -> Lost {
    let every = lease / 4;
    let look = every.min(WALSENDER_LOOK);
    let mut next = tokio::time::Instant::now() + every;
    let mut recorded = None;
    loop {
        let Some(end) = licence.ends_at().map(tokio::time::Instant::from_std) else {
            return Lost::NotRenewed;
        };
        tokio::select! {
            biased;
            () = sleep_until(end) => return Lost::NotRenewed,
            () = sleep_until(next.min(tokio::time::Instant::now() + look)) => {}
        }
        let walsender = health.walsender_pid();
        if tokio::time::Instant::now() < next && walsender == recorded {
            continue;
        }
        next = tokio::time::Instant::now() + every;
        let sent = Instant::now();
        if term.session.is_closed() {
            match timeout_at(end, store.lease_session()).await {
                Ok(Ok(mut session)) => {
                    // The lock went with the old session; a standby may have it now, which
                    // is fine: it waits for the lease, which this walhook keeps renewing.
                    let _ = session.try_lock().await;
                    term.session = session;
                }
                Ok(Err(e)) => {
                    warn!(error = %crate::error_chain(&e), "cannot reach the state database to renew the leadership lease");
                    continue;
                }
                Err(_) => return Lost::NotRenewed,
            }
        }
        let renewal = term.session.renew(term.epoch, lease, walsender);
        match timeout_at(end, renewal).await {
            Ok(Ok(true)) => {
                licence.extend_to(sent + lease * 3 / 4);
                recorded = walsender;
            }
            Ok(Ok(false)) => return Lost::Ended,
            Ok(Err(e)) => {
                warn!(error = %crate::error_chain(&e), "cannot renew the leadership lease; trying again")
            }
            Err(_) => return Lost::NotRenewed,
        }
        if !licence.valid() {
            return Lost::NotRenewed;
        }
    }
}

/// Ends this term's lease at once (step 5).
async fn release(term: &mut Term) {
    if let Err(e) = term.session.release(term.epoch).await {
        warn!(error = %crate::error_chain(&e), "cannot release the leadership lease; a standby takes over once it runs out");
    }
}

/// `host pid N`, for the lease and the logs.
fn holder_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into());
    format!("{host} pid {}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::WorkerError;

    #[test]
    fn a_state_error_is_found_in_a_workers_error_chain() {
        let lost = || StateError::PostgresUnreachable {
            place: "db".into(),
            source: "refused".into(),
        };
        let worker = AppError::Worker(WorkerError {
            subscriber: "s".into(),
            source: Box::new(lost()),
        });
        let unreachable = |e: &StateError| matches!(e, StateError::PostgresUnreachable { .. });
        assert!(caused_by(&worker, unreachable));
        assert!(caused_by(&AppError::State(lost()), unreachable));
        assert!(!caused_by(&worker, |e| matches!(
            e,
            StateError::PostgresNotLeader { .. }
        )));
    }
}
