//! Quoting for the SQL walhook writes itself (identifiers and literals never come from row data,
//! but table and slot names come from the config file, so they are quoted, never pasted).

use crate::model::TableName;

/// `"name"`, with embedded quotes doubled.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'`, with embedded quotes doubled.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `"schema"."table"`.
pub fn table(name: &TableName) -> String {
    format!("{}.{}", ident(&name.schema), ident(&name.name))
}

/// The table the way a DBA would type it: bare when that means the same thing.
pub fn table_readable(name: &TableName) -> String {
    let bare = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
    };
    let part = |s: &str| if bare(s) { s.to_string() } else { ident(s) };
    format!("{}.{}", part(&name.schema), part(&name.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_what_needs_quoting() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
        let t = TableName {
            schema: "public".into(),
            name: "Orders".into(),
        };
        assert_eq!(table(&t), "\"public\".\"Orders\"");
        assert_eq!(table_readable(&t), "public.\"Orders\"");
    }
}
