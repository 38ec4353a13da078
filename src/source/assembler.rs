//! Turns decoded pgoutput messages into [`SourceEvent`]s: keeps the relation cache, numbers the
//! changes of each transaction, and encodes every value. Pure: what pgoutput does not send
//! (types the built-ins do not know, the primary key) the caller looks up in the catalog before
//! it hands over a Relation message ([`Assembler::relation`]).

use std::collections::HashMap;
use std::sync::Arc;

use super::event::SourceEvent;
use super::pgoutput::{Begin, LogicalMessage, OldTuple, RelationMessage, TupleValue};
use super::value::{encode_text, PgType, TypeRegistry, ValueError};
use crate::model::{Change, Datum, Lsn, Operation, RowImage, Table};

/// Why a message could not be turned into changes. Each names what is wrong with the stream.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error("change for relation {0} arrived before its Relation message")]
    UnknownRelation(u32),
    #[error("column `{column}` of {table} has type OID {oid}, which was not resolved")]
    UnresolvedType {
        table: String,
        column: String,
        oid: u32,
    },
    #[error("{what} arrived outside a transaction")]
    OutsideTransaction { what: &'static str },
    #[error("{table} sent {got} values for {expected} columns")]
    ColumnCount {
        table: String,
        expected: usize,
        got: usize,
    },
    #[error("column `{column}` of {table} was sent in binary; walhook asks for text")]
    BinaryValue { table: String, column: String },
    #[error("column `{column}` of {table} has a value walhook cannot encode")]
    Value {
        table: String,
        column: String,
        #[source]
        source: ValueError,
    },
}

struct Relation {
    table: Arc<Table>,
    types: Vec<Arc<PgType>>,
}

struct Transaction {
    commit_lsn: Lsn,
    xid: u32,
    commit_time_micros: i64,
    next_index: u32,
}

/// The relation cache and the transaction being read.
#[derive(Default)]
pub struct Assembler {
    relations: HashMap<u32, Relation>,
    txn: Option<Transaction>,
}

impl Assembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// The column type OIDs of `relation` that `types` does not know yet.
    pub fn missing_types(relation: &RelationMessage<'_>, types: &TypeRegistry) -> Vec<u32> {
        let mut missing: Vec<u32> = relation
            .columns
            .iter()
            .map(|c| c.type_oid)
            .filter(|oid| types.get(*oid).is_none())
            .collect();
        missing.dedup();
        missing
    }

    /// Applies one message, appending what it amounts to (nothing for Relation, Type and
    /// Origin; one change per table for a Truncate) to `out`. A Relation message applied here
    /// gets no primary key (its changes are keyed by the replica identity); the source gives
    /// relations to [`Self::relation`] with the key from the catalog.
    pub fn apply(
        &mut self,
        message: LogicalMessage<'_>,
        types: &TypeRegistry,
        out: &mut Vec<SourceEvent>,
    ) -> Result<(), AssembleError> {
        match message {
            LogicalMessage::Begin(Begin {
                final_lsn,
                commit_time,
                xid,
            }) => {
                self.txn = Some(Transaction {
                    commit_lsn: final_lsn,
                    xid,
                    commit_time_micros: commit_time.unix_micros(),
                    next_index: 0,
                });
                out.push(SourceEvent::Begin {
                    commit_lsn: final_lsn,
                    xid,
                });
            }
            LogicalMessage::Commit(commit) => {
                self.txn = None;
                out.push(SourceEvent::Commit {
                    commit_lsn: commit.commit_lsn,
                    end_lsn: commit.end_lsn,
                });
            }
            LogicalMessage::Relation(relation) => self.relation(&relation, &[], types)?,
            LogicalMessage::Origin { .. } | LogicalMessage::Type { .. } => {}
            LogicalMessage::Insert { relation, new } => {
                let rel = self.relation_of(relation)?;
                let (row, unchanged_toast) = image(rel, &new, false)?;
                let change = self.change(
                    rel.table.clone(),
                    Operation::Insert,
                    Some(row),
                    None,
                    unchanged_toast,
                )?;
                out.push(SourceEvent::Change(change));
            }
            LogicalMessage::Update { relation, old, new } => {
                let rel = self.relation_of(relation)?;
                let (mut row, mut unchanged_toast) = image(rel, &new, false)?;
                let old = old.map(|old| old_image(rel, &old)).transpose()?;
                if let Some(old) = &old {
                    complete_from_old(&mut row, &mut unchanged_toast, old);
                }
                let change = self.change(
                    rel.table.clone(),
                    Operation::Update,
                    Some(row),
                    old,
                    unchanged_toast,
                )?;
                out.push(SourceEvent::Change(change));
            }
            LogicalMessage::Delete { relation, old } => {
                let rel = self.relation_of(relation)?;
                let old = old_image(rel, &old)?;
                let change = self.change(
                    rel.table.clone(),
                    Operation::Delete,
                    None,
                    Some(old),
                    Vec::new(),
                )?;
                out.push(SourceEvent::Change(change));
            }
            LogicalMessage::Truncate { relations, .. } => {
                for oid in relations {
                    let table = self.relation_of(oid)?.table.clone();
                    let change = self.change(table, Operation::Truncate, None, None, Vec::new())?;
                    out.push(SourceEvent::Change(change));
                }
            }
            LogicalMessage::Message {
                lsn,
                prefix,
                content,
                ..
            } => out.push(SourceEvent::Message {
                lsn,
                prefix: prefix.to_string(),
                content: content.to_vec(),
            }),
        }
        Ok(())
    }

    /// Records a relation: its Relation message, and its primary key (column names in key
    /// order, from the catalog; empty when it has none). Every column type must be in `types`
    /// (see [`Self::missing_types`]).
    pub fn relation(
        &mut self,
        message: &RelationMessage<'_>,
        primary_key: &[String],
        types: &TypeRegistry,
    ) -> Result<(), AssembleError> {
        let mut table = message.to_table();
        table.primary_key = primary_key
            .iter()
            .filter_map(|name| table.columns.iter().position(|c| &c.name == name))
            .collect();
        let mut column_types = Vec::with_capacity(table.columns.len());
        for column in &table.columns {
            let ty = types
                .get(column.type_oid)
                .ok_or_else(|| AssembleError::UnresolvedType {
                    table: table.qualified_name(),
                    column: column.name.clone(),
                    oid: column.type_oid,
                })?;
            column_types.push(ty.clone());
        }
        self.relations.insert(
            message.oid,
            Relation {
                table: Arc::new(table),
                types: column_types,
            },
        );
        Ok(())
    }

    fn relation_of(&self, oid: u32) -> Result<&Relation, AssembleError> {
        self.relations
            .get(&oid)
            .ok_or(AssembleError::UnknownRelation(oid))
    }

    fn change(
        &mut self,
        table: Arc<Table>,
        operation: Operation,
        row: Option<RowImage>,
        old: Option<RowImage>,
        unchanged_toast: Vec<usize>,
    ) -> Result<Change, AssembleError> {
        let txn = self.txn.as_mut().ok_or(AssembleError::OutsideTransaction {
            what: operation.as_str(),
        })?;
        let index = txn.next_index;
        txn.next_index += 1;
        Ok(Change {
            table,
            operation,
            row,
            old,
            unchanged_toast,
            commit_lsn: txn.commit_lsn,
            xid: txn.xid,
            commit_time_micros: txn.commit_time_micros,
            index,
        })
    }
}

/// A key-only old tuple sends NULL for every non-key column: those are absent, not NULL.
fn old_image(rel: &Relation, old: &OldTuple<'_>) -> Result<RowImage, AssembleError> {
    let key_only = matches!(old, OldTuple::Key(_));
    image(rel, old.values(), key_only).map(|(row, _)| row)
}

/// Encodes a tuple; returns the image and the columns sent as unchanged TOAST.
fn image(
    rel: &Relation,
    values: &[TupleValue<'_>],
    key_only: bool,
) -> Result<(RowImage, Vec<usize>), AssembleError> {
    let columns = &rel.table.columns;
    if values.len() != columns.len() {
        return Err(AssembleError::ColumnCount {
            table: rel.table.qualified_name(),
            expected: columns.len(),
            got: values.len(),
        });
    }
    let mut row = RowImage {
        json: String::with_capacity(json_len_hint(values)),
        datums: Vec::with_capacity(values.len()),
    };
    let mut unchanged_toast = Vec::new();
    for (i, ((value, column), ty)) in values.iter().zip(columns).zip(&rel.types).enumerate() {
        if key_only && !column.is_key {
            row.datums.push(Datum::Absent);
            continue;
        }
        let datum = match value {
            TupleValue::Null => Datum::Null,
            TupleValue::UnchangedToast => {
                unchanged_toast.push(i);
                Datum::Absent
            }
            TupleValue::Text(text) => {
                let start = row.json.len() as u32;
                encode_text(ty, text, &mut row.json).map_err(|source| AssembleError::Value {
                    table: rel.table.qualified_name(),
                    column: column.name.clone(),
                    source,
                })?;
                Datum::Value {
                    start,
                    end: row.json.len() as u32,
                }
            }
            TupleValue::Binary(_) => {
                return Err(AssembleError::BinaryValue {
                    table: rel.table.qualified_name(),
                    column: column.name.clone(),
                })
            }
        };
        row.datums.push(datum);
    }
    Ok((row, unchanged_toast))
}

/// Fills the new row's unchanged TOASTed columns from the old row where it has them (with
/// REPLICA IDENTITY FULL, Postgres sends the old row's large values in full): the column did
/// not change, so its old value is its new one, and the row reaches subscribers complete.
fn complete_from_old(row: &mut RowImage, unchanged_toast: &mut Vec<usize>, old: &RowImage) {
    unchanged_toast.retain(|&i| {
        let Some(value) = old.get(i) else {
            return true;
        };
        let start = row.json.len() as u32;
        row.json.push_str(value);
        if let Some(datum) = row.datums.get_mut(i) {
            *datum = Datum::Value {
                start,
                end: row.json.len() as u32,
            };
        }
        false
    });
}

/// What the JSON of `values` usually takes: the text plus room for quotes and a few bytes more
/// (a timestamptz's `:00`, `true` for `t`). Allocating that at once spares the chain of
/// reallocations a row image would grow through from empty; a row that needs more (many
/// escapes, arrays of strings) grows from there.
fn json_len_hint(values: &[TupleValue<'_>]) -> usize {
    const PER_VALUE: usize = 8;
    values
        .iter()
        .map(|value| match value {
            TupleValue::Text(text) => text.len() + PER_VALUE,
            TupleValue::Null | TupleValue::UnchangedToast | TupleValue::Binary(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ReplicaIdentity;
    use crate::source::pgoutput::RelationColumn;
    use crate::source::PgTimestamp;

    #[test]
    fn a_row_image_of_common_values_is_allocated_once() {
        let types = TypeRegistry::builtin();
        let columns: &[(&str, u32, &[u8])] = &[
            ("id", 20, b"9223372036854775807"),
            ("amount", 1700, b"-12.50"),
            ("flag", 16, b"t"),
            ("note", 25, b"plain text of some length"),
            ("at", 1184, b"2026-11-26 17:51:10.57433+00"),
            ("day", 1082, b"2026-11-26"),
            ("data", 17, b"\\x00ff"),
            ("ids", 1016, b"{1,2,3}"),
            ("doc", 3802, br#"{"a": [1, 2]}"#),
            ("id2", 2950, b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        ];
        let relation = RelationMessage {
            oid: 1,
            namespace: "public",
            name: "t",
            replica_identity: ReplicaIdentity::Default,
            columns: columns
                .iter()
                .map(|&(name, type_oid, _)| RelationColumn {
                    is_key: false,
                    name,
                    type_oid,
                    type_modifier: -1,
                })
                .collect(),
        };
        let values: Vec<TupleValue<'_>> = columns
            .iter()
            .map(|&(_, _, text)| TupleValue::Text(text))
            .collect();
        let mut assembler = Assembler::new();
        let mut out = Vec::new();
        let begin = Begin {
            final_lsn: Lsn(1),
            commit_time: PgTimestamp(0),
            xid: 1,
        };
        let insert = LogicalMessage::Insert {
            relation: 1,
            new: values.clone(),
        };
        for message in [
            LogicalMessage::Relation(relation),
            LogicalMessage::Begin(begin),
            insert,
        ] {
            assembler.apply(message, &types, &mut out).unwrap();
        }
        let Some(SourceEvent::Change(change)) = out.pop() else {
            panic!("no change");
        };
        let json = &change.row.unwrap().json;
        assert!(json.len() <= json_len_hint(&values), "{json}");
    }
}
