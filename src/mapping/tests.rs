use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::model::{Change, Datum, Lsn, Operation, ReplicaIdentity, RowImage, Table, TableColumn};

fn config(rules: &str) -> crate::config::Config {
    let text = format!(
        r#"
        source.url = "postgres://h/db"
        subscribers.billing.url = "http://127.0.0.1:9/b"
        subscribers.crm.url = "http://127.0.0.1:9/c"
        {rules}
        "#
    );
    crate::config::parse(&text, Path::new("."), &|_| None).unwrap()
}

fn orders() -> Arc<Table> {
    let column = |name: &str, is_key| TableColumn {
        name: name.into(),
        type_oid: 25,
        type_modifier: -1,
        is_key,
    };
    Arc::new(Table {
        oid: 1,
        schema: "public".into(),
        name: "orders".into(),
        replica_identity: ReplicaIdentity::Full,
        primary_key: vec![0],
        columns: vec![
            column("id", true),
            column("status", true),
            column("amount", true),
            column("note", true),
        ],
    })
}

/// A row image from JSON texts (`None` = absent).
fn image(values: &[Option<&str>]) -> RowImage {
    let mut row = RowImage::default();
    for value in values {
        row.datums.push(match value {
            None => Datum::Absent,
            Some("null") => Datum::Null,
            Some(json) => {
                let start = row.json.len() as u32;
                row.json.push_str(json);
                Datum::Value {
                    start,
                    end: row.json.len() as u32,
                }
            }
        });
    }
    row
}

fn update(old_status: &str, new_status: &str) -> Change {
    Change {
        table: orders(),
        operation: Operation::Update,
        row: Some(image(&[Some("42"), Some(new_status), Some("12.50"), None])),
        old: Some(image(&[
            Some("42"),
            Some(old_status),
            Some("12.50"),
            Some("\"x\""),
        ])),
        unchanged_toast: vec![3],
        commit_lsn: Lsn(0x16B3748),
        xid: 745,
        commit_time_micros: 1_795_715_470_574_330,
        index: 3,
    }
}

#[test]
fn body_is_the_compact_json_of_the_design() {
    let mapper = Mapper::new(&config(
        r#"
        [[events]]
        type = "order.paid"
        table = "public.orders"
        operations = ["update"]
        subscribers = ["billing"]
        "#,
    ))
    .unwrap();
    let mut out = Vec::new();
    mapper.map(&update("\"new\"", "\"paid\""), &mut out);
    assert_eq!(out.len(), 1);
    let event = &out[0].event;
    assert_eq!(event.id, "evt_00000000016B3748_3");
    assert_eq!(
        event.body,
        concat!(
            r#"{"id":"evt_00000000016B3748_3","type":"order.paid","timestamp":"2026-11-26T17:51:10.574330Z","#,
            r#""data":{"table":"public.orders","operation":"update","row":{"id":42,"status":"paid","amount":12.50},"#,
            r#""old":{"id":42,"status":"new","amount":12.50,"note":"x"},"changed":["status"],"unchanged_toast":["note"],"#,
            r#""commit_lsn":"0/16B3748","xid":745}}"#
        )
    );
    assert_eq!(event.key, "public.orders:[42]");
    assert_eq!(out[0].subscribers, vec![0]);
    serde_json::from_str::<serde_json::Value>(&event.body).unwrap();
}

#[test]
fn several_rules_number_their_events_and_filters_and_projections_apply() {
    let mapper = Mapper::new(&config(
        r#"
        [[events]]
        type = "order.changed"
        table = "public.orders"
        subscribers = ["crm", "billing"]
        columns = ["id", "status"]
        [[events]]
        type = "order.paid"
        table = "public.orders"
        operations = ["update"]
        when = "row.status == 'paid' && old.status != 'paid'"
        subscribers = ["billing"]
        key = ["status"]
        [[events]]
        type = "customer.changed"
        table = "public.customers"
        subscribers = ["crm"]
        "#,
    ))
    .unwrap();
    // GIVEN an update to paid: both order rules yield, numbered in config order
    let mut out = Vec::new();
    mapper.map(&update("\"new\"", "\"paid\""), &mut out);
    let ids: Vec<&str> = out.iter().map(|r| r.event.id.as_str()).collect();
    assert_eq!(
        ids,
        ["evt_00000000016B3748_3_0", "evt_00000000016B3748_3_1"]
    );
    assert_eq!(out[0].subscribers, vec![1, 0]);
    let body: serde_json::Value = serde_json::from_str(&out[0].event.body).unwrap();
    assert_eq!(
        body["data"]["row"],
        serde_json::json!({"id": 42, "status": "paid"})
    );
    assert_eq!(
        body["data"]["old"],
        serde_json::json!({"id": 42, "status": "new"})
    );
    assert_eq!(body["data"]["unchanged_toast"], serde_json::json!([]));
    assert_eq!(out[1].event.key, "public.orders:[\"paid\"]");
    // GIVEN an update that stays paid: the filter drops the second, the first keeps its number
    out.clear();
    mapper.map(&update("\"paid\"", "\"paid\""), &mut out);
    let ids: Vec<&str> = out.iter().map(|r| r.event.id.as_str()).collect();
    assert_eq!(ids, ["evt_00000000016B3748_3_0"]);
    // GIVEN an insert: the filter's `old` is null, only the first rule applies (no suffix)
    let mut insert = update("\"new\"", "\"paid\"");
    insert.operation = Operation::Insert;
    insert.old = None;
    out.clear();
    mapper.map(&insert, &mut out);
    let ids: Vec<&str> = out.iter().map(|r| r.event.id.as_str()).collect();
    assert_eq!(ids, ["evt_00000000016B3748_3"]);
    let body: serde_json::Value = serde_json::from_str(&out[0].event.body).unwrap();
    assert_eq!(body["data"]["old"], serde_json::Value::Null);
    assert_eq!(body["data"]["changed"], serde_json::Value::Null);
}

#[test]
fn deletes_key_on_the_old_row_and_truncates_on_the_table() {
    let mapper = Mapper::new(&config(
        r#"
        [[events]]
        type = "order.gone"
        table = "public.orders"
        operations = ["delete", "truncate"]
        subscribers = ["billing"]
        "#,
    ))
    .unwrap();
    let mut delete = update("\"new\"", "\"paid\"");
    delete.operation = Operation::Delete;
    delete.row = None;
    delete.old = Some(image(&[Some("7"), None, None, None]));
    delete.unchanged_toast.clear();
    let mut out = Vec::new();
    mapper.map(&delete, &mut out);
    assert_eq!(out[0].event.key, "public.orders:[7]");
    let body: serde_json::Value = serde_json::from_str(&out[0].event.body).unwrap();
    assert_eq!(body["data"]["row"], serde_json::Value::Null);
    assert_eq!(body["data"]["old"], serde_json::json!({"id": 7}));
    assert_eq!(body["data"]["changed"], serde_json::Value::Null);
    let mut truncate = delete.clone();
    truncate.operation = Operation::Truncate;
    truncate.old = None;
    out.clear();
    mapper.map(&truncate, &mut out);
    assert!(out[0].event.is_truncate);
    assert_eq!(out[0].event.key, "public.orders");
}

#[test]
fn a_backfilled_row_is_a_read_event_through_the_insert_rules() {
    let mapper = Mapper::new(&config(
        r#"
        [[events]]
        type = "order.synced"
        table = "public.orders"
        operations = ["insert", "update"]
        columns = ["id", "status"]
        subscribers = ["crm"]
        [[events]]
        type = "order.paid"
        table = "public.orders"
        operations = ["update"]
        subscribers = ["billing"]
        [[events]]
        type = "order.big"
        table = "public.orders"
        operations = ["insert"]
        when = "row.amount > 100.0 && old == null"
        subscribers = ["billing"]
        "#,
    ))
    .unwrap();
    let table = orders();
    let row = image(&[Some("42"), Some("\"paid\""), Some("12.50"), Some("null")]);
    let mut out = Vec::new();
    mapper.map_read(
        &ReadRow {
            backfill: 7,
            table: &table,
            key: "[42]",
            row: &row,
            lsn: Lsn(0x16B3748),
            read_at_micros: 1_795_715_470_574_330,
        },
        &mut out,
    );
    // Two rules take inserts: both numbered, the filter drops the second (amount 12.50)
    let hash = format!("{:016x}", fnv1a(b"[42]"));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].event.id, format!("bf_7_{hash}_0"));
    assert_eq!(out[0].event.key, "public.orders:[42]");
    assert_eq!(
        out[0].event.body,
        format!(
            concat!(
                r#"{{"id":"bf_7_{}_0","type":"order.synced","timestamp":"2026-11-26T17:51:10.574330Z","#,
                r#""data":{{"table":"public.orders","operation":"read","row":{{"id":42,"status":"paid"}},"#,
                r#""old":null,"changed":null,"unchanged_toast":[],"commit_lsn":"0/16B3748","xid":0}}}}"#
            ),
            hash
        )
    );
    assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
}

#[test]
fn odd_table_and_column_names_are_escaped_in_bodies_and_keys() {
    let mapper = Mapper::new(&config(
        r#"
        [[events]]
        type = "odd.one"
        table = "we\"ird.naïve\\t"
        operations = ["update"]
        subscribers = ["billing"]
        "#,
    ))
    .unwrap();
    let column = |name: &str| TableColumn {
        name: name.into(),
        type_oid: 25,
        type_modifier: -1,
        is_key: true,
    };
    let mut change = update("\"new\"", "\"paid\"");
    change.table = Arc::new(Table {
        oid: 9,
        schema: "we\"ird".into(),
        name: "naïve\\t".into(),
        replica_identity: ReplicaIdentity::Full,
        primary_key: vec![0],
        columns: vec![
            column("i\"d"),
            column("sta\ttus"),
            column("émoji 🦀"),
            column("\u{1}"),
        ],
    });
    let mut out = Vec::new();
    mapper.map(&change, &mut out);
    let event = &out[0].event;
    assert_eq!(
        event.body,
        concat!(
            r#"{"id":"evt_00000000016B3748_3","type":"odd.one","timestamp":"2026-11-26T17:51:10.574330Z","#,
            r#""data":{"table":"we\"ird.naïve\\t","operation":"update","#,
            r#""row":{"i\"d":42,"sta\ttus":"paid","émoji 🦀":12.50},"#,
            r#""old":{"i\"d":42,"sta\ttus":"new","émoji 🦀":12.50,"\u0001":"x"},"#,
            r#""changed":["sta\ttus"],"unchanged_toast":["\u0001"],"commit_lsn":"0/16B3748","xid":745}}"#
        )
    );
    assert_eq!(event.table, "we\"ird.naïve\\t");
    assert_eq!(event.key, "we\"ird.naïve\\t:[42]");
    let body: serde_json::Value = serde_json::from_str(&event.body).unwrap();
    assert_eq!(body["data"]["row"]["sta\ttus"], "paid");
}

#[test]
fn a_table_altered_under_the_same_oid_shows_its_new_columns() {
    let mapper = Mapper::new(&config(
        r#"
        [[events]]
        type = "order.changed"
        table = "public.orders"
        subscribers = ["billing"]
        "#,
    ))
    .unwrap();
    // GIVEN a change, and one after ALTER TABLE orders RENAME status TO state (a new `Table`
    // under the same OID)
    let before = update("\"new\"", "\"paid\"");
    let mut altered = (*before.table).clone();
    altered.columns[1].name = "state".into();
    let mut after = before.clone();
    after.table = Arc::new(altered);
    // WHEN they are mapped, and then one of the old shape (a backfill read before the ALTER)
    let mut out = Vec::new();
    for change in [&before, &after, &before] {
        mapper.map(change, &mut out);
    }
    // THEN each body names the columns of its own change's table
    let rows: Vec<&str> = out
        .iter()
        .map(|r| {
            let body = &r.event.body;
            let start = body.find(r#""row":"#).unwrap() + r#""row":"#.len();
            &body[start..start + body[start..].find('}').unwrap() + 1]
        })
        .collect();
    assert_eq!(
        rows,
        [
            r#"{"id":42,"status":"paid","amount":12.50}"#,
            r#"{"id":42,"state":"paid","amount":12.50}"#,
            r#"{"id":42,"status":"paid","amount":12.50}"#,
        ]
    );
    assert_eq!(out[0].event.body, out[2].event.body);
}

#[test]
fn a_body_fits_the_length_it_is_allocated_with() {
    let mut cache = names::NameCache::default();
    let mut extreme = update("\"new\"", "\"paid\"");
    extreme.commit_lsn = Lsn(u64::MAX);
    extreme.xid = u32::MAX;
    extreme.commit_time_micros = i64::MIN;
    let mut delete = extreme.clone();
    delete.operation = Operation::Delete;
    delete.row = None;
    delete.old = Some(image(&[Some("7"), None, None, None]));
    delete.unchanged_toast.clear();
    let mut truncate = delete.clone();
    truncate.operation = Operation::Truncate;
    truncate.old = None;
    truncate.table = Arc::new(Table {
        columns: Vec::new(),
        ..(*truncate.table).clone()
    });
    let nulls = Change {
        row: Some(image(&[Some("null"); 4])),
        old: Some(image(&[Some("null"); 4])),
        ..extreme.clone()
    };
    let id = "evt_FFFFFFFFFFFFFFFF_4294967295_12";
    for change in [extreme, delete, truncate, nulls] {
        let names = cache.get(&change.table);
        for projection in [None, Some(vec![1, 3])] {
            let body = body::body(id, "\"t\"", names, &change, "truncate", &projection);
            let hint = body::body_len_hint(id, "\"t\"", names, &change);
            assert!(body.len() <= hint, "{} > {hint}: {body}", body.len());
        }
    }
}

#[test]
fn an_update_that_moves_its_row_to_another_key_is_a_barrier_for_its_table() {
    let mapper = Mapper::new(&config(
        r#"
        [[events]]
        type = "order.changed"
        table = "public.orders"
        subscribers = ["billing"]
        [[events]]
        type = "order.by_status"
        table = "public.orders"
        key = ["status"]
        subscribers = ["crm"]
        "#,
    ))
    .unwrap();
    let mut out = Vec::new();
    // GIVEN an update of the status only: the primary key stays, the `status` key moves
    mapper.map(&update("\"new\"", "\"paid\""), &mut out);
    assert!(!out[0].event.is_truncate, "same primary key");
    assert!(out[1].event.is_truncate, "another status");
    // AND an update of the primary key: a barrier for both rules, keyed on the new row
    let mut moved = update("\"new\"", "\"new\"");
    moved.old = Some(image(&[Some("41"), Some("\"new\""), None, None]));
    out.clear();
    mapper.map(&moved, &mut out);
    assert!(out[0].event.is_truncate);
    assert_eq!(out[0].event.key, "public.orders:[42]");
    assert!(!out[1].event.is_truncate, "the status key did not move");
    // AND an update whose old image lacks the key columns (default replica identity, key
    // unchanged) is no barrier
    let mut plain = update("\"new\"", "\"paid\"");
    plain.old = None;
    out.clear();
    mapper.map(&plain, &mut out);
    assert!(!out[0].event.is_truncate && !out[1].event.is_truncate);
}
