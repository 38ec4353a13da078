//! The replay filter: each change reaches the pipeline once, whatever reconnects happened.
//!
//! A new replication session streams from the slot's confirmed position, which lags what the
//! pipeline received: transactions it already has come again, whole, from their Begin. One
//! handed over whole is dropped; one the lost session left half read goes on from its first
//! change not yet handed over (changes are numbered from 0 within their transaction, the same
//! on every reading). A [`SourceEvent::Replay`] is the exception: the pipeline asks for
//! everything after its position again, so from there nothing counts as handed over.
//!
//! Messages and CaughtUp always go on: the pipeline takes them as they come.

use super::event::SourceEvent;
use crate::model::Lsn;

/// What one source task has handed the pipeline so far, kept across its sessions. Pure
/// bookkeeping, fed in stream order.
#[derive(Debug, Default)]
pub struct ReplayFilter {
    /// The transaction whose Begin went on and whose Commit has not.
    open: Option<Open>,
    /// Reading a transaction re-sent after a reconnect that went on whole before.
    skipping: bool,
    /// The commit LSN of the last transaction that went on whole: what a new session sends up
    /// to here went on before.
    last_commit: Lsn,
}

#[derive(Debug, Clone, Copy)]
struct Open {
    commit_lsn: Lsn,
    /// How many of its changes went on.
    handed: u32,
}

impl ReplayFilter {
    /// Whether `event` goes on to the pipeline. Call it once the pipeline has room for the
    /// event: what it lets through counts as handed over.
    pub fn pass(&mut self, event: &SourceEvent) -> bool {
        match event {
            SourceEvent::Begin { commit_lsn, .. } => {
                self.skipping = false;
                if self.open.is_some_and(|open| open.commit_lsn == *commit_lsn) {
                    // Re-sent after a reconnect: the pipeline has its Begin and its first
                    // changes.
                    return false;
                }
                if *commit_lsn <= self.last_commit {
                    // Re-sent after a reconnect and handed over whole before. A transaction
                    // the lost session left open stays open: it comes again after this one.
                    self.skipping = true;
                    return false;
                }
                self.open = Some(Open {
                    commit_lsn: *commit_lsn,
                    handed: 0,
                });
                true
            }
            SourceEvent::Change(change) => {
                if self.skipping {
                    return false;
                }
                let Some(open) = &mut self.open else {
                    return false;
                };
                if change.index < open.handed {
                    return false;
                }
                open.handed = change.index + 1;
                true
            }
            SourceEvent::Commit { commit_lsn, .. } => {
                if std::mem::take(&mut self.skipping) {
                    return false;
                }
                if self.open.take().is_none() {
                    return false;
                }
                self.last_commit = *commit_lsn;
                true
            }
            SourceEvent::Replay { from } => {
                // The pipeline closes the transaction it was reading; it comes again whole.
                self.open = None;
                self.skipping = false;
                self.last_commit = self.last_commit.min(*from);
                true
            }
            SourceEvent::Message { .. } | SourceEvent::CaughtUp { .. } => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::{Change, Operation, ReplicaIdentity, Table};

    fn begin(at: u64) -> SourceEvent {
        SourceEvent::Begin {
            commit_lsn: Lsn(at),
            xid: 7,
        }
    }

    fn change(at: u64, index: u32) -> SourceEvent {
        SourceEvent::Change(Change {
            table: Arc::new(Table {
                oid: 1,
                schema: "public".into(),
                name: "items".into(),
                replica_identity: ReplicaIdentity::Default,
                primary_key: Vec::new(),
                columns: Vec::new(),
            }),
            operation: Operation::Truncate,
            row: None,
            old: None,
            unchanged_toast: Vec::new(),
            commit_lsn: Lsn(at),
            xid: 7,
            commit_time_micros: 0,
            index,
        })
    }

    fn commit(at: u64) -> SourceEvent {
        SourceEvent::Commit {
            commit_lsn: Lsn(at),
            end_lsn: Lsn(at + 0x30),
        }
    }

    /// A transaction at `commit` with `changes` changes, as a session sends it.
    fn transaction(at: u64, changes: u32) -> Vec<SourceEvent> {
        let mut events = vec![begin(at)];
        events.extend((0..changes).map(|i| change(at, i)));
        events.push(commit(at));
        events
    }

    /// What of `events` goes on.
    fn passed(filter: &mut ReplayFilter, events: Vec<SourceEvent>) -> Vec<SourceEvent> {
        events.into_iter().filter(|e| filter.pass(e)).collect()
    }

    #[test]
    fn one_session_passes_everything() {
        // GIVEN a filter that has seen nothing
        let mut filter = ReplayFilter::default();
        // WHEN two transactions, a message and a keepalive's CaughtUp arrive
        let mut events = transaction(0x200, 2);
        events.push(SourceEvent::Message {
            lsn: Lsn(0x260),
            prefix: "p".into(),
            content: Vec::new(),
        });
        events.extend(transaction(0x300, 1));
        events.push(SourceEvent::CaughtUp {
            wal_end: Lsn(0x400),
        });
        // THEN all of them go on, in order
        assert_eq!(passed(&mut filter, events.clone()), events);
    }

    #[test]
    fn a_transaction_handed_over_whole_is_not_handed_over_again() {
        // GIVEN transactions at 0x200 and 0x300 handed over whole
        let mut filter = ReplayFilter::default();
        passed(&mut filter, transaction(0x200, 1));
        passed(&mut filter, transaction(0x300, 2));
        // WHEN a new session sends them again (with a message inside the second), then one
        // more
        let mut again = transaction(0x200, 1);
        let message = SourceEvent::Message {
            lsn: Lsn(0x2f0),
            prefix: "p".into(),
            content: Vec::new(),
        };
        again.extend(transaction(0x300, 2));
        again.insert(again.len() - 1, message.clone());
        again.extend(transaction(0x400, 1));
        // THEN only the message and the new transaction go on
        let mut expected = vec![message];
        expected.extend(transaction(0x400, 1));
        assert_eq!(passed(&mut filter, again), expected);
    }

    #[test]
    fn a_transaction_left_half_read_goes_on_from_its_first_change_not_handed_over() {
        // GIVEN a transaction at 0x200 handed over whole, and the Begin and first two changes
        // of one at 0x300 when the session was lost
        let mut filter = ReplayFilter::default();
        passed(&mut filter, transaction(0x200, 1));
        let half: Vec<_> = transaction(0x300, 4).into_iter().take(3).collect();
        assert_eq!(passed(&mut filter, half.clone()), half);
        // WHEN the new session sends both again
        let mut again = transaction(0x200, 1);
        again.extend(transaction(0x300, 4));
        // THEN only the last two changes of 0x300 and its Commit go on
        assert_eq!(
            passed(&mut filter, again),
            vec![change(0x300, 2), change(0x300, 3), commit(0x300)]
        );
        // AND a later transaction goes on whole
        assert_eq!(
            passed(&mut filter, transaction(0x400, 1)),
            transaction(0x400, 1)
        );
    }

    #[test]
    fn after_a_replay_everything_after_its_position_goes_on_again() {
        // GIVEN transactions at 0x200 and 0x300 handed over whole, and 0x400 half read
        let mut filter = ReplayFilter::default();
        passed(&mut filter, transaction(0x200, 1));
        passed(&mut filter, transaction(0x300, 1));
        passed(&mut filter, vec![begin(0x400), change(0x400, 0)]);
        // WHEN the session asks the pipeline to read everything after 0x250 again
        let replay = SourceEvent::Replay { from: Lsn(0x250) };
        assert!(filter.pass(&replay));
        // THEN what the next session sends from 0x200 on goes on from 0x300, the half-read
        // transaction whole
        let mut again = transaction(0x200, 1);
        again.extend(transaction(0x300, 1));
        again.extend(transaction(0x400, 2));
        let mut expected = transaction(0x300, 1);
        expected.extend(transaction(0x400, 2));
        assert_eq!(passed(&mut filter, again), expected);
    }
}
