//! Checking a backfill request against the config and the database before it is recorded, so
//! a mistake is reported to whoever asked, not found later by `walhook run`.

use crate::config::Config;
use crate::model::{Operation, TableName};
use crate::state::{NewBackfill, Store, UnixMillis};

use super::table::{describe, qualified};
use super::BackfillError;

/// What `walhook backfill` asks for.
#[derive(Debug, Clone)]
pub struct Request {
    /// `schema.table`, or a bare name in `public`.
    pub table: String,
    /// Empty: every subscriber a rule sends the table's inserts to.
    pub subscribers: Vec<String>,
    pub where_sql: Option<String>,
    pub batch_rows: u32,
    pub rate: Option<u32>,
}

/// `schema.table`; a bare name means `public.name`.
pub fn parse_table(text: &str) -> Result<TableName, BackfillError> {
    let (schema, name) = text.split_once('.').unwrap_or(("public", text));
    if schema.is_empty() || name.is_empty() || name.contains('.') {
        return Err(BackfillError::TableName(text.to_string()));
    }
    Ok(TableName {
        schema: schema.to_string(),
        name: name.to_string(),
    })
}

/// The subscribers some rule sends inserts of `table` to, in config order.
fn insert_subscribers(config: &Config, table: &TableName) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for rule in config
        .events
        .iter()
        .filter(|r| r.table == *table && r.operations.contains(&Operation::Insert))
    {
        for name in &rule.subscribers {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    names
}

/// Checks `request`: the table is mapped (inserts, to the chosen subscribers), exists and has
/// a primary key, and the `where` condition runs on it. Gives the backfill to record.
pub async fn plan(
    config: &Config,
    client: &tokio_postgres::Client,
    request: &Request,
) -> Result<NewBackfill, BackfillError> {
    let table = parse_table(&request.table)?;
    let (version_num, version) = crate::database::server_version(client).await?;
    if version_num < 140_000 {
        return Err(BackfillError::ServerTooOld { version });
    }
    let mapped = insert_subscribers(config, &table);
    let subscribers = if request.subscribers.is_empty() {
        if mapped.is_empty() {
            return Err(BackfillError::NotMapped {
                table: table.to_string(),
                who: "any subscriber".into(),
            });
        }
        mapped
    } else {
        for name in &request.subscribers {
            if config.subscriber(name).is_none() {
                return Err(BackfillError::UnknownSubscriber(name.clone()));
            }
            if !mapped.contains(name) {
                return Err(BackfillError::NotMapped {
                    table: table.to_string(),
                    who: format!("subscriber `{name}`"),
                });
            }
        }
        request.subscribers.clone()
    };
    let shape = describe(client, &table).await?;
    if let Some(condition) = &request.where_sql {
        let sql = format!(
            "EXPLAIN SELECT 1 FROM {} t WHERE ({condition})",
            qualified(&shape.table)
        );
        if let Err(source) = client.batch_execute(&sql).await {
            return Err(BackfillError::BadWhere {
                table: table.to_string(),
                condition: condition.clone(),
                source,
            });
        }
    }
    Ok(NewBackfill {
        table: table.to_string(),
        subscribers,
        where_sql: request.where_sql.clone(),
        batch_rows: request.batch_rows.max(1),
        rate: request.rate.filter(|r| *r > 0),
        total_estimate: shape.estimate,
    })
}

/// Checks and records `request`; gives the backfill's id.
pub async fn record(
    config: &Config,
    client: &tokio_postgres::Client,
    store: &dyn Store,
    request: &Request,
) -> Result<(i64, NewBackfill), BackfillError> {
    let new = plan(config, client, request).await?;
    let id = store
        .request_backfill(new.clone(), UnixMillis::now())
        .await?;
    Ok((id, new))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_default_to_public() {
        assert_eq!(parse_table("orders").unwrap().to_string(), "public.orders");
        assert_eq!(parse_table("app.orders").unwrap().to_string(), "app.orders");
        assert!(parse_table("a.b.c").is_err());
        assert!(parse_table(".orders").is_err());
    }
}
