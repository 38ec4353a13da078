//! The slot as `walhook status` shows it: its row in `pg_replication_slots`, and how far it is
//! behind the server's WAL, read in one query so the numbers belong together.

use crate::model::Lsn;

/// The server's WAL position and the slot's row, read at the same moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotReading {
    /// `pg_current_wal_lsn()`; on a standby, the last WAL replayed.
    pub current_lsn: Lsn,
    /// `None` if no slot of that name exists.
    pub slot: Option<SlotInfo>,
}

/// One row of `pg_replication_slots`. Every LSN may be NULL there: a physical slot has no
/// `confirmed_flush_lsn`, an invalidated one may have lost its `restart_lsn`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    pub name: String,
    /// A connection streams from the slot right now.
    pub active: bool,
    pub active_pid: Option<i32>,
    /// Postgres may forget WAL up to here as far as this slot's consumer is concerned.
    pub confirmed_flush_lsn: Option<Lsn>,
    /// The oldest WAL the slot still needs; Postgres keeps everything from here on.
    pub restart_lsn: Option<Lsn>,
    /// `reserved`, `extended`, `unreserved` or `lost` (Postgres 13+; `None` before).
    pub wal_status: Option<String>,
    /// Bytes of WAL that may still be written before the slot is in danger of being lost;
    /// `None` when `max_slot_wal_keep_size` is -1 (no limit), for a lost slot, and before
    /// Postgres 13.
    pub safe_wal_size: Option<i64>,
}

impl SlotReading {
    /// Bytes of WAL written since the slot's confirmed position: what walhook has yet to
    /// confirm.
    pub fn confirmed_lag_bytes(&self) -> Option<u64> {
        let confirmed = self.slot.as_ref()?.confirmed_flush_lsn?;
        Some(self.current_lsn.0.saturating_sub(confirmed.0))
    }

    /// Bytes of WAL Postgres keeps on disk for the slot (from its `restart_lsn`).
    pub fn retained_bytes(&self) -> Option<u64> {
        let restart = self.slot.as_ref()?.restart_lsn?;
        Some(self.current_lsn.0.saturating_sub(restart.0))
    }
}

/// Reads the slot named `slot` and the server's WAL position.
///
/// `wal_status` and `safe_wal_size` are read through `to_jsonb` of the row, so the query also
/// runs on servers older than 13, which lack those columns (they read as NULL there).
pub async fn read(
    client: &tokio_postgres::Client,
    slot: &str,
) -> Result<SlotReading, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                         ELSE pg_current_wal_lsn() END::text,
                    s.slot_name IS NOT NULL,
                    s.active,
                    s.active_pid,
                    s.confirmed_flush_lsn::text,
                    s.restart_lsn::text,
                    to_jsonb(s) ->> 'wal_status',
                    (to_jsonb(s) ->> 'safe_wal_size')::int8
             FROM (SELECT 1) AS one
             LEFT JOIN pg_replication_slots s ON s.slot_name = $1",
            &[&slot],
        )
        .await?;
    let current: Option<String> = row.get(0);
    let exists: bool = row.get(1);
    let slot = exists.then(|| SlotInfo {
        name: slot.to_string(),
        active: row.get::<_, Option<bool>>(2).unwrap_or(false),
        active_pid: row.get(3),
        confirmed_flush_lsn: lsn(row.get(4)),
        restart_lsn: lsn(row.get(5)),
        wal_status: row.get(6),
        safe_wal_size: row.get(7),
    });
    Ok(SlotReading {
        current_lsn: lsn(current).unwrap_or_default(),
        slot,
    })
}

/// Postgres prints `pg_lsn` in the form [`Lsn`] parses; anything else reads as unknown.
fn lsn(text: Option<String>) -> Option<Lsn> {
    text?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(confirmed: Option<u64>, restart: Option<u64>) -> SlotReading {
        SlotReading {
            current_lsn: Lsn(0x1_0000_1000),
            slot: Some(SlotInfo {
                name: "walhook".to_string(),
                active: false,
                active_pid: None,
                confirmed_flush_lsn: confirmed.map(Lsn),
                restart_lsn: restart.map(Lsn),
                wal_status: Some("reserved".to_string()),
                safe_wal_size: None,
            }),
        }
    }

    #[test]
    fn lag_is_measured_from_the_current_position() {
        let r = reading(Some(0x1_0000_0800), Some(0x0_FFFF_F000));
        assert_eq!(r.confirmed_lag_bytes(), Some(0x800));
        assert_eq!(r.retained_bytes(), Some(0x2000));
    }

    #[test]
    fn unknown_positions_give_no_lag_and_a_slot_ahead_gives_zero() {
        assert_eq!(reading(None, None).confirmed_lag_bytes(), None);
        assert_eq!(reading(None, None).retained_bytes(), None);
        let ahead = reading(Some(0x2_0000_0000), Some(0x2_0000_0000));
        assert_eq!(ahead.confirmed_lag_bytes(), Some(0));
        assert_eq!(ahead.retained_bytes(), Some(0));
        let missing = SlotReading {
            current_lsn: Lsn(5),
            slot: None,
        };
        assert_eq!(missing.confirmed_lag_bytes(), None);
    }
}
