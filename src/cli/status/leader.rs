//! Who leads, with the state in Postgres: the lease as the state holds it.

use std::fmt::{self, Write as _};

use serde::Serialize;

use crate::state::Lease;

/// The lease, for `status` (`state.leader` in `--json`).
#[derive(Debug, Serialize)]
pub(super) struct LeaderReport {
    /// Host and process id of the walhook that leads (or last led).
    pub holder: String,
    /// The leadership term; one more at each takeover.
    pub epoch: i64,
    /// When this term began, UTC.
    pub since: String,
    /// The lease ran out: no walhook leads now (a standby takes over at its next poll).
    pub expired: bool,
    pub renewed_ago_ms: u64,
    pub expires_in_ms: u64,
}

impl From<Lease> for LeaderReport {
    fn from(l: Lease) -> Self {
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        LeaderReport {
            holder: l.holder,
            epoch: l.epoch,
            since: l.acquired_at,
            expired: l.expired,
            renewed_ago_ms: ms(l.renewed_ago),
            expires_in_ms: ms(l.remaining),
        }
    }
}

pub(super) fn render(out: &mut String, leader: Option<&LeaderReport>) -> fmt::Result {
    match leader {
        None => writeln!(out, "  leader               none yet (no walhook has led)"),
        Some(l) if l.expired => writeln!(
            out,
            "  leader               none: the lease of {} (term {}, last renewed {:.1}s ago) ran out or was released; a standby takes over",
            l.holder,
            l.epoch,
            l.renewed_ago_ms as f64 / 1000.0
        ),
        Some(l) => writeln!(
            out,
            "  leader               {} (term {}, since {}, renewed {:.1}s ago)",
            l.holder,
            l.epoch,
            l.since,
            l.renewed_ago_ms as f64 / 1000.0
        ),
    }
}
