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

impl Event {
    /// Whether this event must reach a subscriber after `earlier` (an event before it in
    /// commit order): the order per key and the barriers of DESIGN.md "Delivery semantics".
    /// Events of one key go in order; a barrier goes after every earlier event of its table
    /// and before every later one.
    pub fn must_follow(&self, earlier: &Event) -> bool {
        self.key == earlier.key
            || (self.table == earlier.table && (self.is_truncate || earlier.is_truncate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: &str, table: &str, barrier: bool) -> Event {
        Event {
            id: String::new(),
            event_type: String::new(),
            key: key.to_string(),
            table: table.to_string(),
            body: String::new(),
            commit_lsn: Lsn(0),
            commit_time_micros: 0,
            is_truncate: barrier,
        }
    }

    #[test]
    fn an_event_follows_its_keys_events_and_its_tables_barriers() {
        let row = event("t:[1]", "t", false);
        assert!(event("t:[1]", "t", false).must_follow(&row));
        assert!(!event("t:[2]", "t", false).must_follow(&row));
        // A barrier follows every earlier event of its table, and precedes every later one.
        let barrier = event("t:[3]", "t", true);
        assert!(barrier.must_follow(&row));
        assert!(event("t:[2]", "t", false).must_follow(&barrier));
        assert!(!event("u:[2]", "u", false).must_follow(&barrier));
        assert!(!event("u:[1]", "u", true).must_follow(&row));
    }
}
