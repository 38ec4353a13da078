use std::sync::Arc;

use super::*;
use crate::model::{Datum, Operation, ReplicaIdentity, RowImage, Table, TableColumn};

fn canary_table() -> TableName {
    TableName {
        schema: "public".into(),
        name: "walhook_canary".into(),
    }
}

/// A canary row for `slot` in a transaction committed at `commit`.
fn canary_change(table: &str, slot: &str, commit: u64) -> Change {
    let column = |name: &str| TableColumn {
        name: name.into(),
        type_oid: 25,
        type_modifier: -1,
        is_key: name == "slot",
    };
    let json = format!("\"{slot}\"");
    let end = json.len() as u32;
    Change {
        table: Arc::new(Table {
            oid: 7,
            schema: "public".into(),
            name: table.into(),
            replica_identity: ReplicaIdentity::Default,
            primary_key: vec![0],
            columns: vec![column("slot"), column("seq")],
        }),
        operation: Operation::Update,
        row: Some(RowImage {
            json,
            datums: vec![Datum::Value { start: 0, end }, Datum::Absent],
        }),
        old: None,
        unchanged_toast: Vec::new(),
        commit_lsn: Lsn(commit),
        xid: 1,
        commit_time_micros: 0,
        index: 0,
    }
}

#[test]
fn a_canary_is_owed_from_before_its_commit_until_it_arrives() {
    let mut watch = Watch::new(canary_table(), "walhook");
    assert_eq!(watch.cap(), None);
    let seq = watch.next_canary().unwrap();
    // Nothing new is written while one is owed.
    watch.apply(Report::Pending {
        seq,
        before: Lsn(100),
    });
    assert_eq!(watch.next_canary(), None);
    assert_eq!(watch.cap(), Some(Lsn(100)));
    // Before the commit is known, no position tells a gap.
    assert_eq!(watch.check(Lsn(10_000)), None);
    watch.apply(Report::Committed {
        seq,
        after: Lsn(200),
    });
    assert_eq!(watch.check(Lsn(199)), None);
    // Its arrival settles it.
    assert!(watch.observe(&canary_change("walhook_canary", "walhook", 150)));
    assert_eq!(watch.cap(), None);
    assert_eq!(watch.check(Lsn(10_000)), None);
    assert_eq!(watch.next_canary(), Some(seq + 1));
}

#[test]
fn decoding_past_an_owed_canary_is_a_gap() {
    let mut watch = Watch::new(canary_table(), "walhook");
    let seq = watch.next_canary().unwrap();
    watch.apply(Report::Pending {
        seq,
        before: Lsn(100),
    });
    watch.apply(Report::Committed {
        seq,
        after: Lsn(200),
    });
    assert_eq!(
        watch.check(Lsn(200)),
        Some(Gap {
            seq,
            before: Lsn(100),
            after: Lsn(200),
            decoded_to: Lsn(200)
        })
    );
    // A gap leaves it owed: the next walsender must send it.
    assert_eq!(watch.cap(), Some(Lsn(100)));
    assert!(watch
        .check(Lsn(5000))
        .unwrap()
        .to_string()
        .contains("never arrived"));
}

#[test]
fn only_this_slots_canary_from_this_write_settles_it() {
    let mut watch = Watch::new(canary_table(), "walhook");
    let seq = watch.next_canary().unwrap();
    watch.apply(Report::Pending {
        seq,
        before: Lsn(100),
    });
    watch.apply(Report::Committed {
        seq,
        after: Lsn(200),
    });
    // Another walhook's canary in the same table: recognised as a canary row, settles nothing.
    watch.observe(&canary_change("walhook_canary", "other", 150));
    assert_eq!(watch.cap(), Some(Lsn(100)));
    // An earlier canary of ours, read again after a reconnect: settles nothing.
    assert!(watch.observe(&canary_change("walhook_canary", "walhook", 50)));
    assert_eq!(watch.cap(), Some(Lsn(100)));
    // A row of another table: not a canary.
    assert!(!watch.observe(&canary_change("orders", "walhook", 150)));
    assert_eq!(watch.cap(), Some(Lsn(100)));
}

#[test]
fn a_failed_write_owes_nothing_and_a_resumed_one_is_owed() {
    let mut watch = Watch::new(canary_table(), "walhook");
    let seq = watch.next_canary().unwrap();
    watch.apply(Report::Pending {
        seq,
        before: Lsn(100),
    });
    watch.apply(Report::Failed { seq });
    assert_eq!(watch.cap(), None);
    assert_eq!(watch.check(Lsn(10_000)), None);

    let mut restarted = Watch::new(canary_table(), "walhook");
    restarted.resume(41, Lsn(300), Lsn(400));
    assert_eq!(restarted.cap(), Some(Lsn(300)));
    assert!(restarted.check(Lsn(400)).is_some());
    assert!(restarted.observe(&canary_change("walhook_canary", "walhook", 350)));
    assert_eq!(restarted.next_canary(), Some(42));
}
