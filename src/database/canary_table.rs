//! The canary table (`source.canary`): what `walhook setup` creates for the source's canary to
//! write to (see `source::canary`).

use super::sql;
use crate::model::TableName;

/// The comment that marks a canary table as walhook's own.
pub const OWNED_COMMENT: &str = "walhook: canary rows written by walhook run (source.canary)";

/// The statements that create the canary table.
pub fn create_statements(table: &TableName) -> [String; 2] {
    let name = sql::table(table);
    [
        format!(
            "CREATE TABLE IF NOT EXISTS {name} (slot text PRIMARY KEY, seq bigint NOT NULL, \
             before_lsn pg_lsn NOT NULL, written_at timestamptz NOT NULL);"
        ),
        format!(
            "COMMENT ON TABLE {name} IS {};",
            sql::literal(OWNED_COMMENT)
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_created_with_its_owner_comment() {
        let [create, comment] = create_statements(&TableName {
            schema: "public".into(),
            name: "walhook_canary".into(),
        });
        assert!(create.starts_with(
            "CREATE TABLE IF NOT EXISTS \"public\".\"walhook_canary\" (slot text PRIMARY KEY"
        ));
        assert!(comment.contains(OWNED_COMMENT));
    }
}
