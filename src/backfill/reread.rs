//! Rows a backfill must read again so that every row reaches the subscriber complete.
//!
//! Under the default replica identity, an update that leaves a TOASTed column alone carries it
//! only as "unchanged TOAST": a receiver fills it from its own copy of the row. Its copy is
//! complete when it got the row whole at some point (a read, an insert, an update that sent
//! every column). A backfill drops a chunk row whose key the stream changed between the
//! watermarks (the stream's event is newer), so when that event lacks a column, the receiver
//! may never see the column's value: such keys are read again in a later chunk. The same holds
//! for a primary-key change (the row moves, keeping its unchanged TOAST values) from a row the
//! receiver does not hold complete into a key the backfill already passed.
//!
//! The pipeline folds the stream's changes of the table since the backfill's last closed chunk
//! into a [`Fold`]; the runner, which knows the backfill's position, turns it into the keys
//! still to read with [`Rereads::after_chunk`].

use std::collections::{BTreeSet, HashMap, HashSet};

/// What the stream told a receiver about a key since the last closed chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touch {
    /// A complete image of the row was sent (an insert, an update that sent every column, or a
    /// move of a row already complete): the receiver's copy is complete from then on.
    Complete,
    /// The row was deleted (or moved to another key): nothing to read.
    Gone,
    /// The row moved here from `from` without its unchanged TOASTed values: the receiver's
    /// copy is complete only if its copy of `from` was.
    MovedFrom(String),
}

/// The changes of a table since a backfill's last closed chunk, per key. Keys updated without
/// some TOASTed column and never complete since are simply absent: for the rows of the chunk,
/// absent means "may be incomplete".
#[derive(Debug, Default)]
pub struct Fold {
    touches: HashMap<String, Touch>,
    /// The table was truncated: every row before is gone.
    truncated: bool,
    /// Folded from what the slot sent again after a restart: it may hold changes from before
    /// the last saved report, so a move's origin behind the position may not have been read
    /// when it moved.
    replayed: bool,
}

/// Keys remembered as complete or gone at most; a key beyond that is treated as unknown
/// (read again if it matters), so the limit costs reads, never completeness. Moves are always
/// kept: they are rare, and needed.
const FOLD_LIMIT: usize = 50_000;

impl Fold {
    fn note(&mut self, key: String, touch: Touch) {
        if self.touches.len() >= FOLD_LIMIT
            && !matches!(touch, Touch::MovedFrom(_))
            && !self.touches.contains_key(&key)
        {
            return;
        }
        self.touches.insert(key, touch);
    }

    /// An insert, or an update without a key change: `complete` when every column was sent.
    pub fn written(&mut self, key: String, complete: bool) {
        if complete {
            self.note(key, Touch::Complete);
        }
        // Incomplete: the receiver merges into its copy, which stays what it was.
    }

    pub fn deleted(&mut self, key: String) {
        self.note(key, Touch::Gone);
    }

    /// An update that changed the primary key from `from` to `to`.
    pub fn moved(&mut self, from: String, to: String, complete: bool) {
        let touch = if complete {
            Touch::Complete
        } else {
            match self.touches.get(&from) {
                Some(Touch::Complete) => Touch::Complete,
                Some(Touch::MovedFrom(origin)) => Touch::MovedFrom(origin.clone()),
                Some(Touch::Gone) | None => Touch::MovedFrom(from.clone()),
            }
        };
        self.note(from, Touch::Gone);
        self.note(to, touch);
    }

    /// A fold of the changes the slot sends again after a restart (see `replayed`).
    pub fn replayed() -> Fold {
        Fold {
            replayed: true,
            ..Fold::default()
        }
    }

    pub fn truncated(&mut self) {
        self.touches.clear();
        self.truncated = true;
    }

    /// The fold as the chunk's report carries it.
    pub fn into_report(self, dropped: Vec<String>) -> ChunkReport {
        ChunkReport {
            dropped,
            touches: self.touches,
            truncated: self.truncated,
            replayed: self.replayed,
            release: None,
        }
    }
}

/// What the pipeline tells the runner once a chunk's events settled.
#[derive(Debug, Default)]
pub struct ChunkReport {
    /// Keys of rows read in the chunk that were not sent (the stream changed them).
    pub dropped: Vec<String>,
    /// The stream's changes of the table since the previous chunk closed.
    pub touches: HashMap<String, Touch>,
    pub truncated: bool,
    /// Folded from changes sent again after a restart: moves in it may predate the last saved
    /// report, so their origins are not taken as read complete.
    pub replayed: bool,
    /// Set by the pipeline: what holds the slot's confirmed position at the start of the
    /// changes this report folds, until the runner saved what it learned from them (so after
    /// a crash the stream is read again from there, and the next run folds them again).
    pub release: Option<crate::model::TxnId>,
}

impl ChunkReport {
    /// The keys a move came from, and moved to, whose place relative to the backfill's
    /// position decides whether they must be read again.
    pub fn moves(&self) -> impl Iterator<Item = (&str, &str)> {
        self.touches.iter().filter_map(|(to, touch)| match touch {
            Touch::MovedFrom(from) => Some((from.as_str(), to.as_str())),
            _ => None,
        })
    }
}

/// The keys a backfill still has to read again, saved with its progress.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rereads {
    keys: BTreeSet<String>,
}

/// Where keys of a chunk's moves stand relative to the backfill's position, as Postgres
/// orders them (the runner asks it).
#[derive(Debug, Default)]
pub struct Positions {
    /// Move origins at or before the position the chunk started from: read before, so the
    /// receiver holds them complete unless they were waiting to be read again.
    pub origins_behind: HashSet<String>,
    /// Move targets at or before the position after the chunk: no later chunk reads them.
    pub targets_behind: HashSet<String>,
}

impl Rereads {
    pub fn new(keys: impl IntoIterator<Item = String>) -> Rereads {
        Rereads {
            keys: keys.into_iter().collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// At most `limit` keys to read with the next chunk.
    pub fn next(&self, limit: usize) -> Vec<String> {
        self.keys.iter().take(limit).cloned().collect()
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.keys.iter()
    }

    /// After a chunk settled: `asked` were the keys to read again that the chunk read (each
    /// now read, sent or dropped, or gone), `read` every key the chunk's query returned.
    pub fn after_chunk(
        &mut self,
        asked: &[String],
        read: &HashSet<String>,
        report: &ChunkReport,
        positions: &Positions,
    ) {
        let before = std::mem::take(&mut self.keys);
        let mut keys = before.clone();
        if report.truncated {
            keys.clear();
        }
        for key in asked {
            keys.remove(key);
        }
        let dropped: HashSet<&String> = report.dropped.iter().collect();
        for key in read.iter().filter(|k| !dropped.contains(k)) {
            // Sent whole at the high watermark, after every change of it so far.
            keys.remove(key);
        }
        for (key, touch) in &report.touches {
            match touch {
                Touch::Complete | Touch::Gone => {
                    keys.remove(key);
                }
                Touch::MovedFrom(from) => {
                    let sent = read.contains(key) && !dropped.contains(key);
                    let from_complete = !report.replayed
                        && positions.origins_behind.contains(from)
                        && !before.contains(from);
                    if !sent && !from_complete && positions.targets_behind.contains(key) {
                        keys.insert(key.clone());
                    }
                }
            }
        }
        for key in &report.dropped {
            if !report.touches.contains_key(key) {
                keys.insert(key.clone());
            }
        }
        self.keys = keys;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(n: u32) -> String {
        format!("[{n}]")
    }

    fn set(keys: &[u32]) -> HashSet<String> {
        keys.iter().map(|&n| k(n)).collect()
    }

    fn keys(r: &Rereads) -> Vec<String> {
        r.keys().cloned().collect()
    }

    #[test]
    fn a_dropped_row_whose_stream_image_lacked_a_column_is_read_again() {
        // GIVEN a chunk that read rows 1..=4; the stream updated 2 leaving a TOASTed column
        // alone, 3 with every column, and deleted 4, all between the watermarks
        let mut fold = Fold::default();
        fold.written(k(2), false);
        fold.written(k(3), true);
        fold.deleted(k(4));
        let report = fold.into_report(vec![k(2), k(3), k(4)]);
        // WHEN the chunk settles
        let mut rereads = Rereads::default();
        rereads.after_chunk(&[], &set(&[1, 2, 3, 4]), &report, &Positions::default());
        // THEN only row 2 is read again: 3 was sent whole by the stream, 4 is gone
        assert_eq!(keys(&rereads), [k(2)]);
    }

    #[test]
    fn a_complete_image_after_an_incomplete_one_leaves_nothing_to_read() {
        let mut fold = Fold::default();
        fold.written(k(2), false);
        fold.written(k(2), true);
        fold.written(k(2), false);
        let report = fold.into_report(vec![k(2)]);
        let mut rereads = Rereads::default();
        rereads.after_chunk(&[], &set(&[2]), &report, &Positions::default());
        assert!(rereads.is_empty());
    }

    #[test]
    fn a_key_read_again_leaves_the_set_once_sent_or_gone_and_stays_while_dropped() {
        // GIVEN keys 2, 5 and 7 to read again; the chunk asks for all three: 2 comes back
        // unchanged, 5 is updated again without its TOASTed column, 7 no longer exists
        let mut rereads = Rereads::new([k(2), k(5), k(7)]);
        let mut fold = Fold::default();
        fold.written(k(5), false);
        let report = fold.into_report(vec![k(5)]);
        rereads.after_chunk(
            &[k(2), k(5), k(7)],
            &set(&[2, 5, 10, 11]),
            &report,
            &Positions::default(),
        );
        assert_eq!(keys(&rereads), [k(5)]);
        // AND a key not asked for this time stays until a complete image comes
        let mut rereads = Rereads::new([k(3), k(4)]);
        let mut fold = Fold::default();
        fold.written(k(4), true);
        rereads.after_chunk(
            &[],
            &set(&[10]),
            &fold.into_report(vec![]),
            &Positions::default(),
        );
        assert_eq!(keys(&rereads), [k(3)]);
    }

    #[test]
    fn a_move_into_a_passed_key_from_an_incomplete_row_is_read_again() {
        // GIVEN the backfill passed key 5; rows 90 (not read yet) and 3 (read, complete)
        // move to keys 5 and 6 without their TOASTed column, and 91 moves to 95 (ahead)
        let mut fold = Fold::default();
        fold.moved(k(90), k(5), false);
        fold.moved(k(3), k(6), false);
        fold.moved(k(91), k(95), false);
        let report = fold.into_report(vec![]);
        let positions = Positions {
            origins_behind: set(&[3]),
            targets_behind: set(&[5, 6]),
        };
        let mut rereads = Rereads::default();
        rereads.after_chunk(&[], &set(&[20, 21]), &report, &positions);
        // THEN only 5 is read again: 6 inherits 3's complete copy, 95 is read when reached
        assert_eq!(keys(&rereads), [k(5)]);
        // AND a move from a key still waiting to be read again is not complete either
        let mut fold = Fold::default();
        fold.moved(k(3), k(6), false);
        let mut rereads = Rereads::new([k(3)]);
        rereads.after_chunk(&[], &set(&[]), &fold.into_report(vec![]), &positions);
        assert_eq!(keys(&rereads), [k(6)]);
    }

    #[test]
    fn after_a_restart_a_move_from_a_key_behind_is_not_taken_as_complete() {
        // GIVEN a walhook that restarted: the slot sends again a move from 3 (behind the
        // position now, but perhaps not read when it moved, its read dropped) to 6, and the
        // chunk read 6 and dropped it (the stream changed it between the watermarks)
        let mut fold = Fold::replayed();
        fold.moved(k(3), k(6), false);
        let positions = Positions {
            origins_behind: set(&[3]),
            targets_behind: set(&[6]),
        };
        let mut rereads = Rereads::default();
        rereads.after_chunk(&[], &set(&[6]), &fold.into_report(vec![k(6)]), &positions);
        // THEN 6 is read again: its receiver may hold it without the TOASTed column
        assert_eq!(keys(&rereads), [k(6)]);
    }

    #[test]
    fn moves_chain_and_complete_rows_stay_complete() {
        let mut fold = Fold::default();
        fold.written(k(1), true);
        fold.moved(k(1), k(2), false);
        fold.moved(k(8), k(9), false);
        fold.moved(k(9), k(10), false);
        assert_eq!(fold.touches[&k(1)], Touch::Gone);
        assert_eq!(fold.touches[&k(2)], Touch::Complete);
        assert_eq!(fold.touches[&k(9)], Touch::Gone);
        assert_eq!(fold.touches[&k(10)], Touch::MovedFrom(k(8)));
    }

    #[test]
    fn a_truncate_forgets_earlier_keys_and_unknown_drops_are_read_again() {
        let mut rereads = Rereads::new([k(1), k(2)]);
        let mut fold = Fold::default();
        fold.written(k(3), true);
        fold.truncated();
        let report = fold.into_report(vec![k(4)]);
        rereads.after_chunk(&[], &set(&[4]), &report, &Positions::default());
        assert_eq!(keys(&rereads), [k(4)]);
    }

    #[test]
    fn the_fold_keeps_moves_beyond_its_limit() {
        let mut fold = Fold::default();
        for n in 0..FOLD_LIMIT as u32 {
            fold.written(k(n), true);
        }
        fold.written(k(FOLD_LIMIT as u32 + 1), true);
        fold.moved(k(FOLD_LIMIT as u32 + 2), k(FOLD_LIMIT as u32 + 3), false);
        assert!(!fold.touches.contains_key(&k(FOLD_LIMIT as u32 + 1)));
        assert!(fold.touches.contains_key(&k(FOLD_LIMIT as u32 + 3)));
    }
}
