//! The event: what mapping makes of a change for the subscribers of one rule.

use super::Lsn;

/// One event, ready to send: its body is the compact JSON of DESIGN.md "The webhook request".
/// Shared (`Arc`) between the subscribers of its rule; never changed after mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `evt_<16 hex commit LSN>_<index>[_<n>]`: the same after any restart.
    pub id: String,
    pub event_type: String,
    /// The ordering key: table and key column values. Events of one key reach a subscriber
    /// in commit order.
    pub key: String,
    /// The table the change came from (`schema.name`); a truncate orders by table.
    pub table: String,
    /// The body of a single-event request; batches concatenate these.
    pub body: String,
    pub commit_lsn: Lsn,
    /// Commit time in microseconds since the Unix epoch (for latency metrics).
    pub commit_time_micros: i64,
    /// A barrier for its table's keys: a truncate, or an update that moved its row to another
    /// ordering key (it goes after every earlier event of the table, before any later one).
    pub is_truncate: bool,
}
