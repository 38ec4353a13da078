//! Every message kind and tuple variant, decoded from bytes built field by field.

use super::*;

#[test]
fn decodes_begin_from_literal_bytes() {
    let buf = [
        b'B', //
        0x00, 0x00, 0x00, 0x16, 0xB3, 0x74, 0xD8, 0x48, // final LSN 16/B374D848
        0x00, 0x02, 0xE7, 0x0B, 0xF5, 0x1F, 0x68, 0x40, // commit time
        0x00, 0x00, 0x02, 0xE9, // xid 745
    ];
    assert_eq!(
        decode(&buf).unwrap(),
        LogicalMessage::Begin(Begin {
            final_lsn: Lsn(0x16_B374_D848),
            commit_time: PgTimestamp(0x0002_E70B_F51F_6840),
            xid: 745,
        })
    );
    assert_eq!(decode(&begin_msg()).unwrap(), {
        LogicalMessage::Begin(Begin {
            final_lsn: Lsn(0x16_B374_D848),
            commit_time: PgTimestamp(817_000_000_123_456),
            xid: 745,
        })
    });
}

#[test]
fn decodes_commit() {
    assert_eq!(
        decode(&commit_msg()).unwrap(),
        LogicalMessage::Commit(Commit {
            flags: 0,
            commit_lsn: Lsn(0x16_B374_D848),
            end_lsn: Lsn(0x16_B374_D878),
            commit_time: PgTimestamp(817_000_000_123_456),
        })
    );
}

#[test]
fn decodes_origin() {
    assert_eq!(
        decode(&origin_msg()).unwrap(),
        LogicalMessage::Origin {
            lsn: Lsn(0x10),
            name: "node_a"
        }
    );
}

#[test]
fn decodes_relation_with_a_key_column() {
    let buf = relation_msg();
    let LogicalMessage::Relation(rel) = decode(&buf).unwrap() else {
        panic!("not a Relation");
    };
    assert_eq!(
        rel,
        RelationMessage {
            oid: 16_385,
            namespace: "public",
            name: "orders",
            replica_identity: ReplicaIdentity::Default,
            columns: vec![
                RelationColumn {
                    is_key: true,
                    name: "id",
                    type_oid: 23,
                    type_modifier: -1
                },
                RelationColumn {
                    is_key: false,
                    name: "note",
                    type_oid: 1043,
                    type_modifier: 24
                },
                RelationColumn {
                    is_key: false,
                    name: "data",
                    type_oid: 17,
                    type_modifier: -1
                },
            ],
        }
    );
    let table = rel.to_table();
    assert_eq!(table.qualified_name(), "public.orders");
    assert_eq!(table.oid, 16_385);
    assert_eq!(
        table.columns.iter().map(|c| c.is_key).collect::<Vec<_>>(),
        [true, false, false]
    );
    assert_eq!(table.columns[1].name, "note");
    assert_eq!(table.columns[1].type_modifier, 24);
}

#[test]
fn relation_in_pg_catalog_has_empty_namespace() {
    let buf = Msg::new(b'R')
        .u32(1259)
        .cstr("")
        .cstr("pg_class")
        .u8(b'f')
        .i16(0)
        .build();
    let LogicalMessage::Relation(rel) = decode(&buf).unwrap() else {
        panic!("not a Relation");
    };
    assert_eq!(rel.namespace, "");
    assert_eq!(rel.schema(), "pg_catalog");
    assert_eq!(rel.replica_identity, ReplicaIdentity::Full);
    assert!(rel.columns.is_empty());
    assert_eq!(rel.to_table().qualified_name(), "pg_catalog.pg_class");
}

#[test]
fn decodes_type() {
    assert_eq!(
        decode(&type_msg()).unwrap(),
        LogicalMessage::Type {
            oid: 16_400,
            namespace: "public",
            name: "mood"
        }
    );
}

#[test]
fn decodes_insert_with_every_tuple_value_kind() {
    assert_eq!(
        decode(&insert_msg()).unwrap(),
        LogicalMessage::Insert {
            relation: 16_385,
            new: vec![
                TupleValue::Text(b"42"),
                TupleValue::Null,
                TupleValue::UnchangedToast,
                TupleValue::Binary(&[0, 0, 0, 42]),
                TupleValue::Text(b""),
            ],
        }
    );
}

#[test]
fn decodes_update_without_old_tuple() {
    assert_eq!(
        decode(&update_msg(None)).unwrap(),
        LogicalMessage::Update {
            relation: 16_385,
            old: None,
            new: vec![TupleValue::Text(b"42"), TupleValue::UnchangedToast],
        }
    );
}

#[test]
fn decodes_update_with_key_and_with_full_old_tuple() {
    let old = vec![TupleValue::Text(b"41"), TupleValue::Null];
    for (kind, expected_old) in [
        (b'K', OldTuple::Key(old.clone())),
        (b'O', OldTuple::Full(old.clone())),
    ] {
        let buf = update_msg(Some(kind));
        let msg = decode(&buf).unwrap();
        assert_eq!(
            msg,
            LogicalMessage::Update {
                relation: 16_385,
                old: Some(expected_old),
                new: vec![TupleValue::Text(b"42"), TupleValue::UnchangedToast],
            }
        );
        let LogicalMessage::Update { old: Some(o), .. } = msg else {
            unreachable!()
        };
        assert_eq!(o.values(), old.as_slice());
    }
}

#[test]
fn decodes_delete_with_key_and_with_full_old_tuple() {
    let old = vec![TupleValue::Text(b"42"), TupleValue::Null];
    assert_eq!(
        decode(&delete_msg(b'K')).unwrap(),
        LogicalMessage::Delete {
            relation: 16_385,
            old: OldTuple::Key(old.clone())
        }
    );
    assert_eq!(
        decode(&delete_msg(b'O')).unwrap(),
        LogicalMessage::Delete {
            relation: 16_385,
            old: OldTuple::Full(old)
        }
    );
}

#[test]
fn decodes_truncate_with_several_relations_and_each_option() {
    let relations = [16_385, 16_390, 16_401];
    for (bits, cascade, restart_identity) in [
        (0, false, false),
        (1, true, false),
        (2, false, true),
        (3, true, true),
    ] {
        assert_eq!(
            decode(&truncate_msg(bits, &relations)).unwrap(),
            LogicalMessage::Truncate {
                options: TruncateOptions {
                    cascade,
                    restart_identity
                },
                relations: relations.to_vec(),
            }
        );
    }
}

#[test]
fn decodes_transactional_and_non_transactional_messages() {
    assert_eq!(
        decode(&message_msg(1, b"{\"beat\":1}")).unwrap(),
        LogicalMessage::Message {
            transactional: true,
            lsn: Lsn(0x16_B374_D848),
            prefix: "walhook",
            content: b"{\"beat\":1}",
        }
    );
    // Content is bytes, not text: NUL and invalid UTF-8 are fine.
    assert_eq!(
        decode(&message_msg(0, &[0xFF, 0x00])).unwrap(),
        LogicalMessage::Message {
            transactional: false,
            lsn: Lsn(0x16_B374_D848),
            prefix: "walhook",
            content: &[0xFF, 0x00],
        }
    );
}
