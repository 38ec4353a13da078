//! The ack tracker: which LSN walhook may confirm to Postgres. It is the highest commit end
//! LSN such that every event of every transaction up to it is settled (delivered, stored for
//! a later attempt, dead-lettered, or matched by no rule). Pure bookkeeping; the pipeline
//! feeds it in stream order and reports settlements in any order.

use std::collections::VecDeque;

use crate::model::{Lsn, TxnId};

#[derive(Debug)]
struct Entry {
    /// Known once the Commit arrives; until then the transaction cannot be confirmed.
    end: Option<Lsn>,
    outstanding: usize,
}

/// Follows transactions in stream order. The confirmed LSN never moves backward, but for
/// [`AckTracker::rewind`]: the stream is read again from a position that was never reported
/// to Postgres as flushed.
#[derive(Debug)]
pub struct AckTracker {
    entries: VecDeque<Entry>,
    /// The id of `entries[0]`.
    first: u64,
    confirmed: Lsn,
    unsettled: usize,
}

impl AckTracker {
    /// Starts from what the slot already confirmed.
    pub fn new(confirmed: Lsn) -> Self {
        Self {
            entries: VecDeque::new(),
            first: 0,
            confirmed,
            unsettled: 0,
        }
    }

    pub fn confirmed(&self) -> Lsn {
        self.confirmed
    }

    /// Events handed out and not yet settled.
    pub fn unsettled(&self) -> usize {
        self.unsettled
    }

    /// A transaction begins.
    pub fn begin(&mut self) -> TxnId {
        self.entries.push_back(Entry {
            end: None,
            outstanding: 0,
        });
        TxnId::new(self.first + self.entries.len() as u64 - 1)
    }

    /// `n` more deliveries of `txn` are under way.
    pub fn add(&mut self, txn: TxnId, n: usize) {
        if let Some(entry) = self.entry(txn) {
            entry.outstanding += n;
            self.unsettled += n;
        }
    }

    /// `txn` is complete: confirming `end` acknowledges it.
    pub fn commit(&mut self, txn: TxnId, end: Lsn) {
        if let Some(entry) = self.entry(txn) {
            entry.end = Some(end);
        }
    }

    /// The server has sent everything up to `wal_end` and nothing is open: that position may be
    /// confirmed once everything before it is settled.
    pub fn caught_up(&mut self, wal_end: Lsn) {
        self.entries.push_back(Entry {
            end: Some(wal_end),
            outstanding: 0,
        });
    }

    /// `n` deliveries of `txn` are settled.
    pub fn settle(&mut self, txn: TxnId, n: usize) {
        if let Some(entry) = self.entry(txn) {
            let n = n.min(entry.outstanding);
            entry.outstanding -= n;
            self.unsettled -= n;
        }
    }

    /// Whether every delivery added to `txn` so far is settled (a transaction already dropped
    /// from the settled prefix counts as settled).
    pub fn is_settled(&self, txn: TxnId) -> bool {
        self.outstanding(txn) == 0
    }

    /// Deliveries of `txn` not settled yet (none for a transaction dropped from the settled
    /// prefix).
    pub fn outstanding(&self, txn: TxnId) -> usize {
        let Some(index) = txn.position().checked_sub(self.first) else {
            return 0;
        };
        usize::try_from(index)
            .ok()
            .and_then(|i| self.entries.get(i))
            .map_or(0, |entry| entry.outstanding)
    }

    /// Drops the settled prefix; returns the new confirmed LSN if it moved forward.
    pub fn advance(&mut self) -> Option<Lsn> {
        let before = self.confirmed;
        while let Some(front) = self.entries.front() {
            match front.end {
                Some(end) if front.outstanding == 0 => {
                    self.confirmed = self.confirmed.max(end);
                    self.entries.pop_front();
                    self.first += 1;
                }
                _ => break,
            }
        }
        (self.confirmed > before).then_some(self.confirmed)
    }

    /// Everything after `to` will be read again (the walsender passed a canary without sending
    /// it, so what it sent after `to` may be incomplete): the confirmed LSN goes back to `to`
    /// if it was past it, and no transaction already tracked may carry it past `to` any more.
    /// Only for a position walhook never reported as flushed, so Postgres sees no step back.
    pub fn rewind(&mut self, to: Lsn) {
        self.confirmed = self.confirmed.min(to);
        for entry in &mut self.entries {
            if let Some(end) = &mut entry.end {
                *end = (*end).min(to);
            }
        }
    }

    fn entry(&mut self, txn: TxnId) -> Option<&mut Entry> {
        let index = txn.position().checked_sub(self.first)?;
        self.entries.get_mut(usize::try_from(index).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirms_the_settled_prefix_only() {
        let mut acks = AckTracker::new(Lsn(10));
        let a = acks.begin();
        acks.add(a, 2);
        acks.commit(a, Lsn(100));
        let b = acks.begin();
        acks.add(b, 1);
        acks.commit(b, Lsn(200));
        // b settles first: nothing moves, a is still out
        acks.settle(b, 1);
        assert_eq!(acks.advance(), None);
        assert_eq!(acks.unsettled(), 2);
        acks.settle(a, 1);
        assert_eq!(acks.advance(), None);
        acks.settle(a, 1);
        assert_eq!(acks.advance(), Some(Lsn(200)));
        assert_eq!(acks.unsettled(), 0);
    }

    #[test]
    fn transactions_without_events_and_caught_up_markers_confirm_at_once() {
        let mut acks = AckTracker::new(Lsn(0));
        let a = acks.begin();
        assert_eq!(acks.advance(), None, "not committed yet");
        acks.commit(a, Lsn(50));
        assert_eq!(acks.advance(), Some(Lsn(50)));
        acks.caught_up(Lsn(70));
        assert_eq!(acks.advance(), Some(Lsn(70)));
    }

    #[test]
    fn a_transaction_is_settled_once_its_deliveries_are() {
        let mut acks = AckTracker::new(Lsn(0));
        let a = acks.begin();
        acks.add(a, 2);
        acks.commit(a, Lsn(10));
        acks.settle(a, 1);
        assert!(!acks.is_settled(a));
        assert_eq!(acks.outstanding(a), 1);
        acks.settle(a, 1);
        assert!(acks.is_settled(a));
        assert_eq!(acks.outstanding(a), 0);
        acks.advance();
        assert!(acks.is_settled(a), "dropped from the prefix");
    }

    #[test]
    fn never_moves_backward() {
        let mut acks = AckTracker::new(Lsn(500));
        let a = acks.begin();
        acks.commit(a, Lsn(100));
        assert_eq!(acks.advance(), None);
        assert_eq!(acks.confirmed(), Lsn(500));
        acks.caught_up(Lsn(400));
        assert_eq!(acks.advance(), None);
        assert_eq!(acks.confirmed(), Lsn(500));
    }

    #[test]
    fn a_rewind_keeps_what_was_tracked_from_confirming_past_it() {
        let mut acks = AckTracker::new(Lsn(0));
        let a = acks.begin();
        acks.commit(a, Lsn(300));
        let b = acks.begin();
        acks.add(b, 1);
        acks.commit(b, Lsn(500));
        acks.caught_up(Lsn(600));
        assert_eq!(acks.advance(), Some(Lsn(300)));
        // WHEN the stream is read again from 200
        acks.rewind(Lsn(200));
        assert_eq!(acks.confirmed(), Lsn(200));
        // THEN b and the marker after it confirm no further than 200
        acks.settle(b, 1);
        assert_eq!(acks.advance(), None);
        assert_eq!(acks.confirmed(), Lsn(200));
        // AND what is read again confirms as it settles
        let again = acks.begin();
        acks.add(again, 1);
        acks.commit(again, Lsn(300));
        assert_eq!(acks.advance(), None);
        acks.settle(again, 1);
        assert_eq!(acks.advance(), Some(Lsn(300)));
    }

    #[test]
    fn an_open_transaction_holds_later_caught_up_markers() {
        let mut acks = AckTracker::new(Lsn(0));
        let a = acks.begin();
        acks.add(a, 1);
        acks.commit(a, Lsn(100));
        acks.caught_up(Lsn(300));
        assert_eq!(acks.advance(), None);
        acks.settle(a, 1);
        assert_eq!(acks.advance(), Some(Lsn(300)));
    }
}
