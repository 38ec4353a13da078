//! The table a backfill reads: its columns and primary key from the catalog, and the one
//! query that reads a chunk (keyset pagination in primary key order, never OFFSET).

use std::sync::Arc;

use crate::model::{ReplicaIdentity, Table, TableColumn, TableName};

use super::BackfillError;

/// A table as a backfill needs it.
#[derive(Debug, Clone)]
pub struct TableShape {
    /// Columns in table order, primary key indexes in key order (what mapping needs).
    pub table: Arc<Table>,
    /// `format_type` of each primary key column, in key order, for casting the last key.
    pub key_types: Vec<String>,
    /// `pg_class.reltuples`; `None` before the table was first analyzed.
    pub estimate: Option<u64>,
}

/// Reads `name`'s columns and primary key. Fails with [`BackfillError::MissingTable`] or
/// [`BackfillError::NoPrimaryKey`].
pub async fn describe(
    client: &tokio_postgres::Client,
    name: &TableName,
) -> Result<TableShape, BackfillError> {
    let table = client
        .query_opt(
            "SELECT c.oid::int8, c.reltuples::float8 FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&name.schema, &name.name],
        )
        .await?
        .ok_or_else(|| BackfillError::MissingTable(name.to_string()))?;
    let oid: i64 = table.get(0);
    let reltuples: f64 = table.get(1);
    let rows = client
        .query(
            "SELECT a.attname::text, a.atttypid::int8, a.atttypmod, \
                    format_type(a.atttypid, a.atttypmod), \
                    array_position(i.indkey::int2[], a.attnum) \
             FROM pg_attribute a \
             LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary \
             WHERE a.attrelid = $1::int8::oid AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&oid],
        )
        .await?;
    let mut columns = Vec::new();
    let mut key: Vec<(i32, usize, String)> = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let position: Option<i32> = row.get(4);
        if let Some(position) = position {
            key.push((position, i, row.get(3)));
        }
        columns.push(TableColumn {
            name: row.get(0),
            type_oid: u32::try_from(row.get::<_, i64>(1)).unwrap_or(0),
            type_modifier: row.get(2),
            is_key: position.is_some(),
        });
    }
    if key.is_empty() {
        return Err(BackfillError::NoPrimaryKey {
            table: name.to_string(),
        });
    }
    key.sort();
    Ok(TableShape {
        table: Arc::new(Table {
            oid: u32::try_from(oid).unwrap_or(0),
            schema: name.schema.clone(),
            name: name.name.clone(),
            replica_identity: ReplicaIdentity::Default,
            primary_key: key.iter().map(|(_, i, _)| *i).collect(),
            columns,
        }),
        key_types: key.into_iter().map(|(_, _, t)| t).collect(),
        estimate: (reltuples >= 0.0).then_some(reltuples as u64),
    })
}

/// `"name"`, with embedded quotes doubled.
pub(super) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"schema"."table"`.
pub(super) fn qualified(table: &Table) -> String {
    format!("{}.{}", ident(&table.schema), ident(&table.name))
}

impl TableShape {
    /// The primary key columns of `t`, comma separated, in key order.
    fn key_columns(&self) -> String {
        let table = &self.table;
        let key: Vec<String> = table
            .primary_key
            .iter()
            .map(|&i| format!("t.{}", ident(&table.columns[i].name)))
            .collect();
        key.join(", ")
    }

    /// The key values held in `json` (an SQL expression giving a key as JSON array text), cast
    /// to the key columns' types, comma separated: comparable with [`Self::key_columns`].
    fn typed_key(&self, json: &str) -> String {
        let values: Vec<String> = self
            .key_types
            .iter()
            .enumerate()
            .map(|(n, ty)| format!("(({json}::jsonb) ->> {n})::{ty}"))
            .collect();
        values.join(", ")
    }

    /// The chunk query: the primary key as a JSON array and the row as `to_jsonb` gives it, in
    /// key order, after the last key read (`$1`, a JSON array as text) when `after_key`.
    pub fn chunk_sql(&self, after_key: bool, where_sql: Option<&str>, limit: u32) -> String {
        let key = self.key_columns();
        let mut conditions = Vec::new();
        if after_key {
            conditions.push(format!("({key}) > ({})", self.typed_key("$1::text")));
        }
        self.select(
            conditions,
            where_sql,
            &format!(" ORDER BY {key} LIMIT {limit}"),
        )
    }

    /// The query that reads rows again by key: `$1` is a `text[]` of keys (JSON array texts).
    pub fn keys_sql(&self, where_sql: Option<&str>) -> String {
        let condition = format!(
            "({}) IN (SELECT {} FROM unnest($1::text[]) AS r(k))",
            self.key_columns(),
            self.typed_key("r.k")
        );
        self.select(vec![condition], where_sql, "")
    }

    /// Which of the keys `$1` (a `text[]` of JSON array texts) are at or before key `$2`, in
    /// the order the chunk query reads them.
    pub fn behind_sql(&self) -> String {
        format!(
            "SELECT r.k FROM unnest($1::text[]) AS r(k) WHERE ({}) <= ({})",
            self.typed_key("r.k"),
            self.typed_key("$2::text")
        )
    }

    fn select(&self, mut conditions: Vec<String>, where_sql: Option<&str>, tail: &str) -> String {
        if let Some(condition) = where_sql {
            conditions.push(format!("({condition})"));
        }
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conditions.join(" AND "))
        };
        format!(
            "SELECT jsonb_build_array({})::text, to_jsonb(t)::text FROM {} t{filter}{tail}",
            self.key_columns(),
            qualified(&self.table)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> TableShape {
        let column = |name: &str, is_key| TableColumn {
            name: name.into(),
            type_oid: 23,
            type_modifier: -1,
            is_key,
        };
        TableShape {
            table: Arc::new(Table {
                oid: 1,
                schema: "public".into(),
                name: "Line \"items\"".into(),
                replica_identity: ReplicaIdentity::Default,
                primary_key: vec![2, 0],
                columns: vec![
                    column("order_id", true),
                    column("note", false),
                    column("n", true),
                ],
            }),
            key_types: vec!["integer".into(), "bigint".into()],
            estimate: None,
        }
    }

    #[test]
    fn chunks_are_read_after_the_last_key_in_key_order() {
        assert_eq!(
            shape().chunk_sql(true, Some("note <> 'x'"), 500),
            "SELECT jsonb_build_array(t.\"n\", t.\"order_id\")::text, to_jsonb(t)::text \
             FROM \"public\".\"Line \"\"items\"\"\" t \
             WHERE (t.\"n\", t.\"order_id\") > ((($1::text::jsonb) ->> 0)::integer, \
             (($1::text::jsonb) ->> 1)::bigint) AND (note <> 'x') \
             ORDER BY t.\"n\", t.\"order_id\" LIMIT 500"
        );
        assert_eq!(
            shape().chunk_sql(false, None, 2),
            "SELECT jsonb_build_array(t.\"n\", t.\"order_id\")::text, to_jsonb(t)::text \
             FROM \"public\".\"Line \"\"items\"\"\" t ORDER BY t.\"n\", t.\"order_id\" LIMIT 2"
        );
    }

    #[test]
    fn rows_are_read_again_by_key_and_keys_compare_in_key_order() {
        assert_eq!(
            shape().keys_sql(Some("note <> 'x'")),
            "SELECT jsonb_build_array(t.\"n\", t.\"order_id\")::text, to_jsonb(t)::text \
             FROM \"public\".\"Line \"\"items\"\"\" t \
             WHERE (t.\"n\", t.\"order_id\") IN (SELECT ((r.k::jsonb) ->> 0)::integer, \
             ((r.k::jsonb) ->> 1)::bigint FROM unnest($1::text[]) AS r(k)) AND (note <> 'x')"
        );
        assert_eq!(
            shape().behind_sql(),
            "SELECT r.k FROM unnest($1::text[]) AS r(k) \
             WHERE (((r.k::jsonb) ->> 0)::integer, ((r.k::jsonb) ->> 1)::bigint) \
             <= ((($2::text::jsonb) ->> 0)::integer, (($2::text::jsonb) ->> 1)::bigint)"
        );
    }
}
