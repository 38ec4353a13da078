//! Creating and dropping what walhook needs in the database: the publication and the slot.
//! `walhook setup` prints or applies the plan, `walhook run` applies it on first start, and
//! `walhook teardown` undoes it so no slot is left behind to retain WAL.

use crate::model::TableName;

use super::sql;

/// The comment that marks a publication as walhook's own, so teardown may drop it.
pub const OWNED_COMMENT: &str = "walhook: created by walhook setup; walhook teardown drops it";

/// What walhook manages for one config.
pub struct Target<'a> {
    pub slot: &'a str,
    pub publication: &'a str,
    pub tables: &'a [&'a TableName],
    /// The canary table (`source.canary`): created if missing, and published.
    pub canary: Option<&'a TableName>,
    /// Create the slot as a failover slot (`source.failover`, Postgres 17+).
    pub failover: bool,
}

/// Why the plan could not be made or applied.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("mapped table(s) {} do not exist; create them or correct the config", .0.join(", "))]
    MissingTables(Vec<String>),
    #[error(
        "replication slot `{slot}` is in use by process {pid}; stop the walhook using it first"
    )]
    SlotActive { slot: String, pid: i32 },
    #[error(
        "source.failover needs Postgres 17 or later, which has failover slots; this is Postgres \
         {version}: remove source.failover, or upgrade Postgres"
    )]
    FailoverUnsupported { version: String },
    #[error("database query failed")]
    Sql(#[from] tokio_postgres::Error),
}

/// What the database lacks for a target, as SQL to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The statements, in the order [`apply`] must run them; empty when nothing is missing.
    pub statements: Vec<String>,
    /// One of them creates the slot: `walhook run` then records the initial backfills, since
    /// a new slot streams only what commits after it.
    pub creates_slot: bool,
}

/// The SQL statements that bring the database to what `target` needs, given what exists now.
pub async fn plan(
    client: &tokio_postgres::Client,
    target: &Target<'_>,
) -> Result<Plan, ProvisionError> {
    let mut missing_tables = Vec::new();
    for table in target.tables {
        if !table_exists(client, table).await? {
            missing_tables.push(sql::table_readable(table));
        }
    }
    if !missing_tables.is_empty() {
        return Err(ProvisionError::MissingTables(missing_tables));
    }

    let mut statements = Vec::new();
    if let Some(canary) = target.canary {
        if !table_exists(client, canary).await? {
            statements.extend(super::canary_table::create_statements(canary));
        }
    }
    let published: Vec<&TableName> = target.tables.iter().copied().chain(target.canary).collect();
    let publication = sql::ident(target.publication);
    let all_ops = "insert, update, delete, truncate";
    let existing = client
        .query_opt(
            "SELECT puballtables, pubinsert AND pubupdate AND pubdelete AND pubtruncate \
             FROM pg_publication WHERE pubname = $1",
            &[&target.publication],
        )
        .await?;
    match existing {
        None => {
            let tables: Vec<String> = published.iter().map(|t| sql::table(t)).collect();
            statements.push(format!(
                "CREATE PUBLICATION {publication} FOR TABLE {} WITH (publish = '{all_ops}');",
                tables.join(", ")
            ));
            statements.push(format!(
                "COMMENT ON PUBLICATION {publication} IS {};",
                sql::literal(OWNED_COMMENT)
            ));
        }
        Some(row) => {
            let (all_tables, every_op): (bool, bool) = (row.get(0), row.get(1));
            if !every_op {
                statements.push(format!(
                    "ALTER PUBLICATION {publication} SET (publish = '{all_ops}');"
                ));
            }
            if !all_tables {
                let in_publication: Vec<(String, String)> = client
                    .query(
                        "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1",
                        &[&target.publication],
                    )
                    .await?
                    .iter()
                    .map(|r| (r.get(0), r.get(1)))
                    .collect();
                let missing: Vec<String> = published
                    .iter()
                    .filter(|t| {
                        !in_publication
                            .iter()
                            .any(|(s, n)| *s == t.schema && *n == t.name)
                    })
                    .map(|t| sql::table(t))
                    .collect();
                if !missing.is_empty() {
                    statements.push(format!(
                        "ALTER PUBLICATION {publication} ADD TABLE {};",
                        missing.join(", ")
                    ));
                }
            }
        }
    }
    let slot_exists = client
        .query_opt(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
            &[&target.slot],
        )
        .await?
        .is_some();
    if !slot_exists && target.failover {
        let (number, version) = super::server_version(client).await?;
        if number < 170_000 {
            return Err(ProvisionError::FailoverUnsupported { version });
        }
    }
    if !slot_exists {
        // Arguments: temporary, two_phase, failover (the last came in Postgres 17).
        let failover = if target.failover {
            ", false, false, true"
        } else {
            ""
        };
        statements.push(format!(
            "SELECT pg_create_logical_replication_slot({}, 'pgoutput'{failover});",
            sql::literal(target.slot)
        ));
    }
    Ok(Plan {
        statements,
        creates_slot: !slot_exists,
    })
}

async fn table_exists(
    client: &tokio_postgres::Client,
    table: &TableName,
) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_opt(
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&table.schema, &table.name],
        )
        .await?
        .is_some())
}

/// Runs each statement on its own, in order (a slot cannot be created in a transaction that
/// has written).
pub async fn apply(
    client: &tokio_postgres::Client,
    statements: &[String],
) -> Result<(), ProvisionError> {
    for statement in statements {
        client.batch_execute(statement).await?;
    }
    Ok(())
}

/// What teardown did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Teardown {
    pub dropped_slot: bool,
    pub dropped_publication: bool,
    /// The publication exists but walhook did not create it, so it was left in place.
    pub kept_publication: bool,
}

/// Drops the slot, and the publication when walhook created it.
pub async fn teardown(
    client: &tokio_postgres::Client,
    target: &Target<'_>,
) -> Result<Teardown, ProvisionError> {
    let slot = client
        .query_opt(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
            &[&target.slot],
        )
        .await?;
    if let Some(Some(pid)) = slot.as_ref().map(|r| r.get::<_, Option<i32>>(0)) {
        return Err(ProvisionError::SlotActive {
            slot: target.slot.to_string(),
            pid,
        });
    }
    if slot.is_some() {
        client
            .execute("SELECT pg_drop_replication_slot($1)", &[&target.slot])
            .await?;
    }
    let comment: Option<Option<String>> = client
        .query_opt(
            "SELECT obj_description(oid, 'pg_publication') FROM pg_publication WHERE pubname = $1",
            &[&target.publication],
        )
        .await?
        .map(|r| r.get(0));
    let owned = comment
        .as_ref()
        .is_some_and(|c| c.as_deref().is_some_and(|c| c.starts_with("walhook:")));
    if owned {
        client
            .batch_execute(&format!(
                "DROP PUBLICATION {};",
                sql::ident(target.publication)
            ))
            .await?;
    }
    Ok(Teardown {
        dropped_slot: slot.is_some(),
        dropped_publication: owned,
        kept_publication: comment.is_some() && !owned,
    })
}
