//! The names every event of a table repeats (its qualified name, and each column's name as a
//! JSON key), escaped once per table instead of once per event.

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::{push_json_string, Table};

/// The names of one table shape, ready to copy into event bodies.
#[derive(Debug)]
pub struct TableNames {
    /// The table they were last asked for: the next change of it finds them by pointer.
    table: Arc<Table>,
    /// `schema.name`: the event's `table`, and the start of its key.
    pub qualified: String,
    /// `qualified` as a JSON string.
    pub qualified_json: String,
    /// Each column's name as a JSON string, in column order.
    pub columns_json: Vec<String>,
}

impl TableNames {
    fn new(table: &Arc<Table>) -> Self {
        let qualified = table.qualified_name();
        let mut qualified_json = String::with_capacity(qualified.len() + 2);
        push_json_string(&qualified, &mut qualified_json);
        let columns_json = table
            .columns
            .iter()
            .map(|column| {
                let mut name = String::with_capacity(column.name.len() + 2);
                push_json_string(&column.name, &mut name);
                name
            })
            .collect();
        Self {
            table: table.clone(),
            qualified,
            qualified_json,
            columns_json,
        }
    }
}

/// Whether two tables have the same names: the same schema, name and column names in order.
fn same_names(a: &Table, b: &Table) -> bool {
    a.schema == b.schema
        && a.name == b.name
        && a.columns.len() == b.columns.len()
        && a.columns
            .iter()
            .zip(&b.columns)
            .all(|(x, y)| x.name == y.name)
}

/// [`TableNames`] by table OID: a Relation message that renames a column (`ALTER TABLE`)
/// replaces the entry at the next change of that table.
#[derive(Debug, Default)]
pub struct NameCache {
    tables: HashMap<u32, TableNames>,
}

impl NameCache {
    /// The names of `table`, made now if the cache holds none, or other ones, for its OID.
    pub fn get(&mut self, table: &Arc<Table>) -> &TableNames {
        let names = self
            .tables
            .entry(table.oid)
            .or_insert_with(|| TableNames::new(table));
        // The entry holds its `Arc`, so that allocation cannot be reused for another table:
        // the same pointer is the same table (tables are replaced, never changed, once shared).
        if !Arc::ptr_eq(&names.table, table) {
            if same_names(&names.table, table) {
                // Another `Table` with the same names (after a reconnect, or a backfill's own):
                // keep the names, and find this one by pointer from now on.
                names.table = table.clone();
            } else {
                *names = TableNames::new(table);
            }
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ReplicaIdentity, TableColumn};

    fn table(schema: &str, name: &str, columns: &[&str]) -> Arc<Table> {
        Arc::new(Table {
            oid: 7,
            schema: schema.into(),
            name: name.into(),
            replica_identity: ReplicaIdentity::Default,
            primary_key: vec![0],
            columns: columns
                .iter()
                .map(|name| TableColumn {
                    name: name.to_string(),
                    type_oid: 25,
                    type_modifier: -1,
                    is_key: false,
                })
                .collect(),
        })
    }

    #[test]
    fn names_are_escaped_as_json_strings() {
        let mut cache = NameCache::default();
        let odd = table(
            "my \"app\"",
            "naïve\\orders",
            &["id", "say \"hi\"", "tab\there", "\u{1}", "émoji 🦀", ""],
        );
        let names = cache.get(&odd);
        assert_eq!(names.qualified, "my \"app\".naïve\\orders");
        assert_eq!(names.qualified_json, r#""my \"app\".naïve\\orders""#);
        assert_eq!(
            names.columns_json,
            [
                r#""id""#,
                r#""say \"hi\"""#,
                r#""tab\there""#,
                r#""\u0001""#,
                "\"émoji 🦀\"",
                r#""""#,
            ]
        );
        for (json, column) in names.columns_json.iter().zip(&odd.columns) {
            assert_eq!(serde_json::from_str::<String>(json).unwrap(), column.name);
        }
    }

    #[test]
    fn a_new_shape_of_a_table_replaces_its_names() {
        let mut cache = NameCache::default();
        let before = table("public", "orders", &["id", "status"]);
        assert_eq!(cache.get(&before).columns_json, [r#""id""#, r#""status""#]);
        // The same names in another `Table` (a backfill's, say) keep the entry.
        let mut same = (*table("public", "orders", &["id", "status"])).clone();
        same.columns[1].type_oid = 23;
        let same = Arc::new(same);
        let names = cache.get(&same);
        assert!(Arc::ptr_eq(&names.table, &same));
        assert_eq!(names.columns_json, [r#""id""#, r#""status""#]);
        // ALTER TABLE: the next Relation message describes a new shape under the same OID.
        let after = table("public", "orders", &["id", "state", "note"]);
        assert_eq!(
            cache.get(&after).columns_json,
            [r#""id""#, r#""state""#, r#""note""#]
        );
        assert_eq!(cache.tables.len(), 1);
        assert_eq!(cache.get(&before).columns_json.len(), 2);
    }
}
