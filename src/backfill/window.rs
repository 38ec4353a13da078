//! The pipeline's side of a backfill: the chunks between their low and high watermarks, the
//! keys the stream changed meanwhile, and the rows that survive at the high watermark. Pure
//! bookkeeping; the pipeline feeds it in stream order.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::model::{Change, Operation, RowImage, Table};

use super::reread::{ChunkReport, Fold};

/// The prefix of the watermark messages (`pg_logical_emit_message`), whose content is
/// `low:<backfill id>:<chunk>` or `high:<backfill id>:<chunk>`.
pub const WATERMARK_PREFIX: &str = "walhook.backfill";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watermark {
    Low,
    High,
}

/// Reads a watermark message; `None` for any other message.
pub fn parse_watermark(prefix: &str, content: &[u8]) -> Option<(Watermark, i64, u64)> {
    if prefix != WATERMARK_PREFIX {
        return None;
    }
    let text = std::str::from_utf8(content).ok()?;
    let mut parts = text.split(':');
    let kind = match parts.next()? {
        "low" => Watermark::Low,
        "high" => Watermark::High,
        _ => return None,
    };
    let id = parts.next()?.parse().ok()?;
    let chunk = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((kind, id, chunk))
}

/// What the runner tells the pipeline, in order.
#[derive(Debug)]
pub enum Signal {
    /// A chunk is about to be read.
    Open(ChunkOpen),
    /// The progress up to a chunk was saved, with what its report said: the stream before the
    /// chunk's high watermark need not be read again after a crash (`ChunkReport::release`).
    Saved(crate::model::TxnId),
    /// The backfill is done or failed.
    Ended(i64),
}

/// A chunk the runner is about to read, registered before its low watermark is written (so
/// the pipeline, which takes these before stream events, knows it when the watermark arrives).
#[derive(Debug)]
pub struct ChunkOpen {
    pub backfill: i64,
    /// Unique per run, so watermarks a crashed run left in the WAL never match.
    pub chunk: u64,
    pub table: Arc<Table>,
    /// Config indexes of the subscribers the backfill is for.
    pub subscribers: Vec<usize>,
    /// The rows, sent before the high watermark is written.
    pub rows: oneshot::Receiver<ChunkRows>,
    /// Answered with the number of rows sent when the pipeline reaches the high watermark, so
    /// the runner can tell a wait for the stream from a wait for subscribers.
    pub dispatched: oneshot::Sender<usize>,
    /// Answered once every event of the chunk settled, with what the runner needs to know
    /// about rows to read again; dropped if the chunk was abandoned.
    pub settled: oneshot::Sender<ChunkReport>,
}

#[derive(Debug, Default)]
pub struct ChunkRows {
    pub rows: Vec<ChunkRow>,
    pub read_at_micros: i64,
    /// The snapshot the rows were read in; `None` drops nothing beyond the window.
    pub snapshot: Option<Snapshot>,
}

/// A Postgres snapshot (`pg_current_snapshot()`): which transactions a read saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub xmin: u64,
    pub xmax: u64,
    pub xip: Vec<u64>,
}

impl Snapshot {
    /// Parses `xmin:xmax:xip,xip,...`.
    pub fn parse(text: &str) -> Option<Snapshot> {
        let mut parts = text.split(':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let xip = match parts.next()? {
            "" => Vec::new(),
            list => list
                .split(',')
                .map(|x| x.parse().ok())
                .collect::<Option<Vec<u64>>>()?,
        };
        parts
            .next()
            .is_none()
            .then_some(Snapshot { xmin, xmax, xip })
    }

    /// Whether the changes of committed transaction `xid` (32 bits, as the stream gives it)
    /// were visible to the read.
    pub fn sees(&self, xid: u32) -> bool {
        // Place the 32-bit xid in the epoch of xmax, or the one before.
        let mut full = (self.xmax & !0xFFFF_FFFF) | u64::from(xid);
        if full > self.xmax && full >= 1 << 32 {
            full -= 1 << 32;
        }
        full < self.xmin || (full < self.xmax && !self.xip.contains(&full))
    }
}

#[derive(Debug)]
pub struct ChunkRow {
    /// The primary key as compact JSON array text (`normalize`d).
    pub key: String,
    /// Every column in table order, as `to_jsonb` gives it.
    pub row: RowImage,
}

/// A chunk at its high watermark: the rows to dispatch there.
#[derive(Debug)]
pub struct Closed {
    pub backfill: i64,
    pub table: Arc<Table>,
    pub subscribers: Vec<usize>,
    pub rows: Vec<ChunkRow>,
    /// For the runner once the rows settled: among them the keys of the rows dropped because
    /// the stream changed them in the window.
    pub report: ChunkReport,
    pub read_at_micros: i64,
    pub dispatched: oneshot::Sender<usize>,
    pub settled: oneshot::Sender<ChunkReport>,
}

#[derive(Debug)]
struct Window {
    open: ChunkOpen,
    low_seen: bool,
    /// Keys the stream changed between the watermarks.
    changed: HashSet<String>,
    /// Every change of the table since the chunk was registered: (xid, key).
    /// At most [`HISTORY_LIMIT`], the latest kept.
    seen: History,
    /// A truncate of the table in the window: every row read is stale.
    truncated: bool,
}

/// The registered chunks.
#[derive(Debug, Default)]
pub struct Windows {
    chunks: HashMap<(i64, u64), Window>,
    /// Per backfill, its table and the changes of it since its last closed chunk was
    /// registered: a transaction that committed before a chunk's low watermark may still have
    /// been invisible to its read (commit record written, commit not yet visible, e.g. while
    /// it waits for a synchronous standby), so its keys must be known. At most
    /// [`HISTORY_LIMIT`] entries each; a finished backfill's stays at that.
    previous: HashMap<i64, (Arc<Table>, History)>,
    /// Per backfill, the table's changes since its last closed chunk, for the rows to read
    /// again.
    folds: HashMap<i64, ((String, String), Fold)>,
}

/// Changes remembered per backfill between its chunks.
const HISTORY_LIMIT: usize = 20_000;

/// Changes of a table, oldest first: (xid, primary key).
type History = VecDeque<(u32, String)>;

impl Windows {
    pub fn register(&mut self, open: ChunkOpen) {
        let (backfill, chunk) = (open.backfill, open.chunk);
        self.chunks.insert(
            (open.backfill, open.chunk),
            Window {
                open,
                low_seen: false,
                changed: HashSet::new(),
                seen: History::new(),
                truncated: false,
            },
        );
        // Backfills run one at a time: another's history is of no more use.
        self.previous.retain(|&b, _| b == backfill);
        self.folds.retain(|&b, _| b == backfill);
        let table = &self.chunks[&(backfill, chunk)].open.table;
        let name = (table.schema.clone(), table.name.clone());
        self.folds
            .entry(backfill)
            .or_insert_with(|| (name, Fold::default()));
    }

    /// Folds the changes of `schema.name` for backfill `backfill` from now on, before its
    /// runner registers a chunk: at start, for a backfill a stopped walhook left running, so
    /// the changes read again from the slot reach its next chunk's report.
    pub fn watch(&mut self, backfill: i64, schema: &str, name: &str) {
        self.folds
            .entry(backfill)
            .or_insert_with(|| ((schema.to_string(), name.to_string()), Fold::replayed()));
    }

    /// Backfill `backfill` ended: nothing more to fold for it.
    pub fn end(&mut self, backfill: i64) {
        self.folds.remove(&backfill);
        self.previous.remove(&backfill);
    }

    /// A change of the stream: its keys are noted in every open window on its table.
    pub fn observe(&mut self, change: &Change) {
        if self.chunks.is_empty() && self.previous.is_empty() && self.folds.is_empty() {
            return;
        }
        // A chunk the runner gave up (its read failed) never gets its high watermark.
        self.chunks.retain(|_, w| !w.open.settled.is_closed());
        let on =
            |table: &Table| table.schema == change.table.schema && table.name == change.table.name;
        let named = |(schema, name): &(String, String)| {
            *schema == change.table.schema && *name == change.table.name
        };
        for (_, fold) in self.folds.values_mut().filter(|(t, _)| named(t)) {
            fold_change(fold, change);
        }
        for (table, history) in self.previous.values_mut() {
            if !on(table) || change.operation == Operation::Truncate {
                continue;
            }
            for image in [change.row.as_ref(), change.old.as_ref()]
                .into_iter()
                .flatten()
            {
                if let Some(key) = change_key(change, image) {
                    if history.len() >= HISTORY_LIMIT {
                        history.pop_front();
                    }
                    history.push_back((change.xid, key));
                }
            }
        }
        for window in self.chunks.values_mut() {
            let table = &window.open.table;
            if table.schema != change.table.schema || table.name != change.table.name {
                continue;
            }
            if change.operation == Operation::Truncate {
                window.truncated |= window.low_seen;
                continue;
            }
            for image in [change.row.as_ref(), change.old.as_ref()]
                .into_iter()
                .flatten()
            {
                if let Some(key) = change_key(change, image) {
                    if window.low_seen {
                        window.changed.insert(key.clone());
                    }
                    if window.seen.len() >= HISTORY_LIMIT {
                        window.seen.pop_front();
                    }
                    window.seen.push_back((change.xid, key));
                }
            }
        }
    }

    /// A watermark of the stream. At a high watermark the chunk is done here: the rows that
    /// survive are returned, or `None` if the chunk is unknown (a watermark of an earlier run)
    /// or its low watermark or rows never came (the runner then sees `settled` dropped and
    /// reads the chunk again).
    pub fn watermark(&mut self, kind: Watermark, backfill: i64, chunk: u64) -> Option<Closed> {
        match kind {
            Watermark::Low => {
                if let Some(window) = self.chunks.get_mut(&(backfill, chunk)) {
                    window.low_seen = true;
                }
                None
            }
            Watermark::High => {
                let mut window = self.chunks.remove(&(backfill, chunk))?;
                let seen = std::mem::take(&mut window.seen);
                let earlier = self
                    .previous
                    .insert(backfill, (window.open.table.clone(), seen))
                    .map(|(_, history)| history)
                    .unwrap_or_default();
                if !window.low_seen {
                    return None;
                }
                let read = window.open.rows.try_recv().ok()?;
                if let Some(snapshot) = &read.snapshot {
                    let seen = self
                        .previous
                        .get(&backfill)
                        .into_iter()
                        .flat_map(|(_, history)| history);
                    for (xid, key) in earlier.iter().chain(seen) {
                        if !snapshot.sees(*xid) {
                            window.changed.insert(key.clone());
                        }
                    }
                }
                let (rows, dropped): (Vec<ChunkRow>, Vec<ChunkRow>) = read
                    .rows
                    .into_iter()
                    .partition(|r| !window.truncated && !window.changed.contains(&r.key));
                let dropped = dropped.into_iter().map(|r| r.key).collect();
                let fold = self
                    .folds
                    .get_mut(&backfill)
                    .map(|(_, fold)| std::mem::take(fold))
                    .unwrap_or_default();
                Some(Closed {
                    backfill,
                    table: window.open.table,
                    subscribers: window.open.subscribers,
                    report: fold.into_report(dropped),
                    rows,
                    read_at_micros: read.read_at_micros,
                    dispatched: window.open.dispatched,
                    settled: window.open.settled,
                })
            }
        }
    }
}

/// Folds a change of a backfill's table into what the runner learns at the next chunk.
fn fold_change(fold: &mut Fold, change: &Change) {
    let key = |image: Option<&RowImage>| image.and_then(|i| change_key(change, i));
    match change.operation {
        Operation::Truncate => fold.truncated(),
        Operation::Insert => {
            if let Some(key) = key(change.row.as_ref()) {
                fold.written(key, true);
            }
        }
        Operation::Delete => {
            if let Some(key) = key(change.old.as_ref()) {
                fold.deleted(key);
            }
        }
        Operation::Update => {
            let complete = change.unchanged_toast.is_empty();
            match (key(change.old.as_ref()), key(change.row.as_ref())) {
                (Some(from), Some(to)) if from != to => fold.moved(from, to, complete),
                (_, Some(key)) => fold.written(key, complete),
                _ => {}
            }
        }
    }
}

/// The primary key of `image` as compact JSON array text, if the image holds every key column.
fn change_key(change: &Change, image: &RowImage) -> Option<String> {
    let table = &change.table;
    let columns: Vec<usize> = if table.primary_key.is_empty() {
        (0..table.columns.len())
            .filter(|&i| table.columns[i].is_key)
            .collect()
    } else {
        table.primary_key.clone()
    };
    let mut text = String::from("[");
    for (n, &i) in columns.iter().enumerate() {
        if n > 0 {
            text.push(',');
        }
        text.push_str(image.get(i)?);
    }
    text.push(']');
    Some(normalize(&text))
}

/// One text per JSON value, whoever wrote it (Postgres's `jsonb` text has spaces, walhook's
/// encoding has none): parsed and written back compactly. Numbers keep their digits.
pub fn normalize(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| json.to_string())
}

#[cfg(test)]
mod tests;
