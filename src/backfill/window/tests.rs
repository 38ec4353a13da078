//! The watermark windows, one rule at a time: which rows survive a chunk, which keys a change
//! touches, and what the runner learns between chunks.

use super::*;
use crate::backfill::reread::Touch;
use crate::model::{Datum, Lsn, ReplicaIdentity, TableColumn};

fn table() -> Arc<Table> {
    let column = |name: &str| TableColumn {
        name: name.into(),
        type_oid: 23,
        type_modifier: -1,
        is_key: false,
    };
    Arc::new(Table {
        oid: 1,
        schema: "public".into(),
        name: "orders".into(),
        replica_identity: ReplicaIdentity::Default,
        primary_key: vec![0],
        columns: vec![column("id"), column("v")],
    })
}

fn image(values: &[&str]) -> RowImage {
    let mut row = RowImage::default();
    for v in values {
        let start = row.json.len() as u32;
        row.json.push_str(v);
        row.datums.push(Datum::Value {
            start,
            end: row.json.len() as u32,
        });
    }
    row
}

fn change(operation: Operation, row: Option<&[&str]>, old: Option<&[&str]>) -> Change {
    Change {
        table: table(),
        operation,
        row: row.map(image),
        old: old.map(image),
        unchanged_toast: Vec::new(),
        commit_lsn: Lsn(1),
        xid: 1,
        commit_time_micros: 0,
        index: 0,
    }
}

fn open(
    windows: &mut Windows,
    chunk: u64,
) -> (oneshot::Sender<ChunkRows>, oneshot::Receiver<ChunkReport>) {
    let (rows_tx, rows) = oneshot::channel();
    let (settled, settled_rx) = oneshot::channel();
    windows.register(ChunkOpen {
        backfill: 7,
        chunk,
        table: table(),
        subscribers: vec![0],
        rows,
        dispatched: oneshot::channel().0,
        settled,
    });
    (rows_tx, settled_rx)
}

fn rows(keys: &[i64]) -> ChunkRows {
    ChunkRows {
        rows: keys
            .iter()
            .map(|k| ChunkRow {
                key: normalize(&format!("[ {k} ]")),
                row: image(&[&k.to_string(), "0"]),
            })
            .collect(),
        read_at_micros: 5,
        snapshot: None,
    }
}

#[test]
fn watermarks_parse() {
    assert_eq!(
        parse_watermark(WATERMARK_PREFIX, b"low:3:17"),
        Some((Watermark::Low, 3, 17))
    );
    assert_eq!(
        parse_watermark(WATERMARK_PREFIX, b"high:3:17"),
        Some((Watermark::High, 3, 17))
    );
    assert_eq!(parse_watermark("walhook.heartbeat", b"low:3:17"), None);
    assert_eq!(parse_watermark(WATERMARK_PREFIX, b"low:3"), None);
    assert_eq!(parse_watermark(WATERMARK_PREFIX, b"low:3:1:2"), None);
}

#[test]
fn rows_changed_between_the_watermarks_are_dropped() {
    // GIVEN chunk 1 registered; a change before its low watermark, then three in the window
    let mut windows = Windows::default();
    let (rows_tx, _settled) = open(&mut windows, 1);
    windows.observe(&change(Operation::Update, Some(&["1", "9"]), None));
    assert!(windows.watermark(Watermark::Low, 7, 1).is_none());
    windows.observe(&change(Operation::Update, Some(&["2", "9"]), None));
    windows.observe(&change(Operation::Delete, None, Some(&["3"])));
    // a key update: both the old and the new key are stale in the chunk
    windows.observe(&change(
        Operation::Update,
        Some(&["40", "0"]),
        Some(&["4", "0"]),
    ));
    rows_tx.send(rows(&[1, 2, 3, 4, 5])).unwrap();
    // WHEN the high watermark arrives
    let closed = windows.watermark(Watermark::High, 7, 1).unwrap();
    // THEN rows 1 and 5 survive
    let keys: Vec<&str> = closed.rows.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["[1]", "[5]"]);
    assert_eq!(closed.report.dropped, ["[2]", "[3]", "[4]"]);
    assert_eq!(closed.read_at_micros, 5);
    // AND the report tells the runner what the stream sent of them: every image whole
    let touch = |key: &str| closed.report.touches.get(key).cloned();
    assert_eq!(touch("[2]"), Some(Touch::Complete));
    assert_eq!(touch("[3]"), Some(Touch::Gone));
    assert_eq!(touch("[4]"), Some(Touch::Gone));
    assert_eq!(touch("[40]"), Some(Touch::Complete));
    // AND the chunk is gone: a repeated high watermark is ignored
    assert!(windows.watermark(Watermark::High, 7, 1).is_none());
}

#[test]
fn the_report_leaves_out_keys_whose_image_lacked_a_toasted_column() {
    // GIVEN a chunk; in its window row 2 is updated without its TOASTed column, and row 7
    // moves to key 3 the same way
    let mut windows = Windows::default();
    let (rows_tx, _settled) = open(&mut windows, 8);
    windows.watermark(Watermark::Low, 7, 8);
    let mut update = change(Operation::Update, Some(&["2", "9"]), None);
    update.row.as_mut().unwrap().datums[1] = Datum::Absent;
    update.unchanged_toast = vec![1];
    windows.observe(&update);
    let mut moved = update.clone();
    moved.row = Some(image(&["3", "0"]));
    moved.old = Some(image(&["7"]));
    windows.observe(&moved);
    rows_tx.send(rows(&[1, 2, 3])).unwrap();
    let closed = windows.watermark(Watermark::High, 7, 8).unwrap();
    // THEN both are dropped; 2 is unknown to the report, 3 came from 7
    assert_eq!(closed.report.dropped, ["[2]", "[3]"]);
    assert_eq!(closed.report.touches.get("[2]"), None);
    assert_eq!(
        closed.report.touches.get("[3]"),
        Some(&Touch::MovedFrom("[7]".into()))
    );
    // AND the next chunk's report starts afresh
    let (rows_tx, _settled) = open(&mut windows, 9);
    windows.watermark(Watermark::Low, 7, 9);
    rows_tx.send(rows(&[4])).unwrap();
    let closed = windows.watermark(Watermark::High, 7, 9).unwrap();
    assert!(closed.report.touches.is_empty());
}

#[test]
fn a_truncate_in_the_window_drops_every_row_and_unknown_chunks_are_ignored() {
    let mut windows = Windows::default();
    let (rows_tx, _settled) = open(&mut windows, 2);
    windows.watermark(Watermark::Low, 7, 2);
    windows.observe(&change(Operation::Truncate, None, None));
    rows_tx.send(rows(&[1, 2])).unwrap();
    assert!(
        windows.watermark(Watermark::High, 7, 1).is_none(),
        "another chunk"
    );
    let closed = windows.watermark(Watermark::High, 7, 2).unwrap();
    assert!(closed.rows.is_empty());
    assert_eq!(closed.report.dropped.len(), 2);
}

#[test]
fn snapshots_parse_and_tell_visible_transactions() {
    let s = Snapshot::parse("100:105:100,103").unwrap();
    assert_eq!(s.xip, [100, 103]);
    assert!(s.sees(99));
    assert!(!s.sees(100));
    assert!(s.sees(101));
    assert!(!s.sees(103));
    assert!(!s.sees(105));
    assert_eq!(Snapshot::parse("7:7:").unwrap().xip, Vec::<u64>::new());
    assert_eq!(Snapshot::parse("7:x:"), None);
    // epochs: xmax in epoch 1, a 32-bit xid just below the wrap is from epoch 0
    let s = Snapshot::parse("4294967290:4294967300:").unwrap();
    assert!(s.sees(4_294_967_295));
    assert!(s.sees(2), "epoch 1, below xmax");
    assert!(!s.sees(4), "epoch 1, at xmax");
}

#[test]
fn a_change_before_the_low_watermark_the_read_did_not_see_drops_its_row() {
    // GIVEN a chunk registered; xid 50 commits before the low watermark, but the chunk's
    // read snapshot does not see it yet (its commit became visible late)
    let mut windows = Windows::default();
    let (rows_tx, _settled) = open(&mut windows, 4);
    let mut late = change(Operation::Update, Some(&["2", "9"]), None);
    late.xid = 50;
    windows.observe(&late);
    let mut seen = change(Operation::Update, Some(&["3", "9"]), None);
    seen.xid = 40;
    windows.observe(&seen);
    windows.watermark(Watermark::Low, 7, 4);
    let mut read = rows(&[1, 2, 3]);
    read.snapshot = Snapshot::parse("45:51:50");
    rows_tx.send(read).unwrap();
    // WHEN the high watermark arrives
    let closed = windows.watermark(Watermark::High, 7, 4).unwrap();
    // THEN row 2 is dropped (the stream's event is newer); row 3's change was seen
    let keys: Vec<&str> = closed.rows.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["[1]", "[3]"]);
    // AND the next chunk still knows xid 50's key, and xid 60's, which committed between
    // the chunks: both may be read before they are visible
    let mut between = change(Operation::Delete, None, Some(&["6"]));
    between.xid = 60;
    windows.observe(&between);
    let (rows_tx, _settled) = open(&mut windows, 5);
    windows.watermark(Watermark::Low, 7, 5);
    let mut read = rows(&[2, 4, 6]);
    read.snapshot = Snapshot::parse("45:61:50,60");
    rows_tx.send(read).unwrap();
    let closed = windows.watermark(Watermark::High, 7, 5).unwrap();
    let keys: Vec<&str> = closed.rows.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["[4]"]);
}

#[test]
fn a_chunk_the_runner_gave_up_is_forgotten() {
    let mut windows = Windows::default();
    let (rows_tx, settled) = open(&mut windows, 6);
    windows.watermark(Watermark::Low, 7, 6);
    drop((rows_tx, settled));
    windows.observe(&change(Operation::Update, Some(&["1", "9"]), None));
    assert!(windows.chunks.is_empty());
}

#[test]
fn a_high_watermark_without_its_low_abandons_the_chunk() {
    let mut windows = Windows::default();
    let (rows_tx, mut settled) = open(&mut windows, 3);
    rows_tx.send(rows(&[1])).unwrap();
    assert!(windows.watermark(Watermark::High, 7, 3).is_none());
    assert!(matches!(
        settled.try_recv(),
        Err(oneshot::error::TryRecvError::Closed)
    ));
}
