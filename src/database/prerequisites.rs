//! `walhook check`: everything the database must provide before walhook can stream, each
//! finding with the SQL that fixes it.

use crate::model::TableName;

use super::sql;

/// One thing `check` looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub ok: bool,
    /// What was checked, and what was found.
    pub summary: String,
    /// The SQL (or step) that fixes a problem.
    pub fix: Option<String>,
}

impl Finding {
    fn ok(summary: impl Into<String>) -> Self {
        Self {
            ok: true,
            summary: summary.into(),
            fix: None,
        }
    }

    fn problem(summary: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            ok: false,
            summary: summary.into(),
            fix: Some(fix.into()),
        }
    }
}

/// What the checks need to know from the config.
pub struct Expectations<'a> {
    pub slot: &'a str,
    pub publication: &'a str,
    pub tables: &'a [&'a TableName],
    /// The canary table (`source.canary`), which must exist and be published too.
    pub canary: Option<&'a TableName>,
}

/// Runs every check; a failing query is itself a finding, so one problem never hides others.
pub async fn check(
    client: &tokio_postgres::Client,
    want: &Expectations<'_>,
) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let mut findings = Vec::new();
    findings.push(check_version(client).await?);
    findings.push(check_wal_level(client).await?);
    let role = check_role(client, &mut findings).await?;
    check_tables(client, want, &role, &mut findings).await?;
    check_publication(client, want, &mut findings).await?;
    check_slot(client, want, &mut findings).await?;
    Ok(findings)
}

/// What this server's version allows: walhook supports Postgres 12 and later; before 14,
/// pgoutput sends no logical messages, which backfills need.
async fn check_version(client: &tokio_postgres::Client) -> Result<Finding, tokio_postgres::Error> {
    let (number, version) = super::server_version(client).await?;
    Ok(match number {
        n if n < 120_000 => Finding::problem(
            format!("Postgres {version}: walhook needs Postgres 12 or later"),
            "upgrade Postgres to 12 or later (14 or later for backfills)",
        ),
        n if n < 140_000 => Finding::ok(format!(
            "Postgres {version}: streams; but pgoutput sends no logical messages before 14, so \
             backfills and initial_backfill are unavailable (the heartbeat still advances the slot)"
        )),
        _ => Finding::ok(format!("Postgres {version}")),
    })
}

async fn check_wal_level(
    client: &tokio_postgres::Client,
) -> Result<Finding, tokio_postgres::Error> {
    let level: String = client.query_one("SHOW wal_level", &[]).await?.get(0);
    Ok(if level == "logical" {
        Finding::ok("wal_level is logical")
    } else {
        Finding::problem(
            format!("wal_level is `{level}`; logical decoding needs `logical`"),
            "ALTER SYSTEM SET wal_level = logical;  -- then restart Postgres",
        )
    })
}

async fn check_role(
    client: &tokio_postgres::Client,
    findings: &mut Vec<Finding>,
) -> Result<String, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT current_user::text, rolsuper, rolreplication FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await?;
    let (role, superuser, replication): (String, bool, bool) = (row.get(0), row.get(1), row.get(2));
    findings.push(if superuser || replication {
        Finding::ok(format!("role `{role}` may use replication"))
    } else {
        Finding::problem(
            format!(
                "role `{role}` has neither REPLICATION nor SUPERUSER, so it cannot stream changes"
            ),
            format!("ALTER ROLE {} WITH REPLICATION;", sql::ident(&role)),
        )
    });
    Ok(role)
}

async fn check_tables(
    client: &tokio_postgres::Client,
    want: &Expectations<'_>,
    role: &str,
    findings: &mut Vec<Finding>,
) -> Result<(), tokio_postgres::Error> {
    for table in want.tables.iter().copied().chain(want.canary) {
        let readable = sql::table_readable(table);
        let row = client
            .query_opt(
                "SELECT c.relreplident::text, \
                        EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary), \
                        has_table_privilege(c.oid, 'SELECT') \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
                &[&table.schema, &table.name],
            )
            .await?;
        let Some(row) = row else {
            findings.push(if want.canary == Some(table) {
                Finding::problem(
                    format!("canary table {readable} does not exist"),
                    format!(
                        "run `walhook setup --apply` (or `walhook run`), which creates it, or: {}",
                        super::canary_table::create_statements(table).join(" ")
                    ),
                )
            } else {
                Finding::problem(
                    format!("table {readable} does not exist"),
                    format!("create the table, or correct `table = \"{table}\"` in the config"),
                )
            });
            continue;
        };
        let (identity, has_pk, can_select): (String, bool, bool) =
            (row.get(0), row.get(1), row.get(2));
        let identified = match identity.as_str() {
            "f" | "i" => true,
            "d" => has_pk,
            _ => false,
        };
        findings.push(if identified {
            Finding::ok(format!("table {readable} identifies its rows (replica identity `{identity}`)"))
        } else {
            Finding::problem(
                format!(
                    "table {readable} has no primary key and no REPLICA IDENTITY FULL: its updates and deletes would carry no old key (and fail once published)"
                ),
                format!("ALTER TABLE {} REPLICA IDENTITY FULL;  -- or add a primary key", sql::table(table)),
            )
        });
        if !can_select {
            findings.push(Finding::problem(
                format!("role `{role}` may not SELECT from {readable} (needed for backfills and type lookups)"),
                format!("GRANT SELECT ON {} TO {};", sql::table(table), sql::ident(role)),
            ));
        }
    }
    Ok(())
}

async fn check_publication(
    client: &tokio_postgres::Client,
    want: &Expectations<'_>,
    findings: &mut Vec<Finding>,
) -> Result<(), tokio_postgres::Error> {
    let publication = client
        .query_opt(
            "SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication WHERE pubname = $1",
            &[&want.publication],
        )
        .await?;
    let Some(row) = publication else {
        let tables: Vec<String> = want
            .tables
            .iter()
            .copied()
            .chain(want.canary)
            .map(sql::table)
            .collect();
        findings.push(Finding::problem(
            format!("publication `{}` does not exist", want.publication),
            format!(
                "CREATE PUBLICATION {} FOR TABLE {};  -- or run `walhook setup --apply`",
                sql::ident(want.publication),
                tables.join(", ")
            ),
        ));
        return Ok(());
    };
    let all_tables: bool = row.get(0);
    let publishes: [bool; 4] = [row.get(1), row.get(2), row.get(3), row.get(4)];
    if publishes.contains(&false) {
        findings.push(Finding::problem(
            format!(
                "publication `{}` does not publish every operation",
                want.publication
            ),
            format!(
                "ALTER PUBLICATION {} SET (publish = 'insert, update, delete, truncate');",
                sql::ident(want.publication)
            ),
        ));
    }
    let published: Vec<(String, String)> = client
        .query(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1",
            &[&want.publication],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut missing = Vec::new();
    for table in want.tables.iter().copied().chain(want.canary) {
        let present = all_tables
            || published
                .iter()
                .any(|(s, t)| *s == table.schema && *t == table.name);
        if !present {
            missing.push(sql::table(table));
        }
    }
    findings.push(if missing.is_empty() {
        Finding::ok(format!(
            "publication `{}` covers every mapped table",
            want.publication
        ))
    } else {
        Finding::problem(
            format!(
                "publication `{}` lacks {} mapped table(s): {}",
                want.publication,
                missing.len(),
                missing.join(", ")
            ),
            format!(
                "ALTER PUBLICATION {} ADD TABLE {};",
                sql::ident(want.publication),
                missing.join(", ")
            ),
        )
    });
    Ok(())
}

async fn check_slot(
    client: &tokio_postgres::Client,
    want: &Expectations<'_>,
    findings: &mut Vec<Finding>,
) -> Result<(), tokio_postgres::Error> {
    let slot = client
        .query_opt(
            // wal_status came in Postgres 13: read through to_jsonb, it is NULL before.
            "SELECT slot_type::text, plugin::text, database::text, to_jsonb(s) ->> 'wal_status', \
                    database = current_database() \
             FROM pg_replication_slots s WHERE slot_name = $1",
            &[&want.slot],
        )
        .await?;
    let create = format!(
        "SELECT pg_create_logical_replication_slot({}, 'pgoutput');  -- or run `walhook setup --apply`",
        sql::literal(want.slot)
    );
    let drop = format!(
        "SELECT pg_drop_replication_slot({});",
        sql::literal(want.slot)
    );
    let Some(row) = slot else {
        findings.push(Finding::problem(
            format!("replication slot `{}` does not exist", want.slot),
            create,
        ));
        let used: i64 = client
            .query_one("SELECT count(*) FROM pg_replication_slots", &[])
            .await?
            .get(0);
        let max: String = client
            .query_one("SHOW max_replication_slots", &[])
            .await?
            .get(0);
        if max.parse::<i64>().is_ok_and(|max| used >= max) {
            findings.push(Finding::problem(
                format!("all {max} replication slots (max_replication_slots) are in use, so walhook's slot cannot be created"),
                format!(
                    "ALTER SYSTEM SET max_replication_slots = {};  -- then restart Postgres; or drop an unused slot",
                    used + 1
                ),
            ));
        }
        return Ok(());
    };
    let kind: Option<String> = row.get(0);
    let plugin: Option<String> = row.get(1);
    let database: Option<String> = row.get(2);
    let wal_status: Option<String> = row.get(3);
    let same_db: Option<bool> = row.get(4);
    if kind.as_deref() != Some("logical") || plugin.as_deref() != Some("pgoutput") {
        findings.push(Finding::problem(
            format!(
                "replication slot `{}` is a {} slot using plugin `{}`, not a logical slot using pgoutput",
                want.slot,
                kind.as_deref().unwrap_or("?"),
                plugin.as_deref().unwrap_or("none")
            ),
            format!("{drop}\n{create}  -- or set another source.slot"),
        ));
    } else if same_db != Some(true) {
        findings.push(Finding::problem(
            format!(
                "replication slot `{}` belongs to database `{}`, not this one",
                want.slot,
                database.as_deref().unwrap_or("?")
            ),
            "set another source.slot, or point source.url at that database",
        ));
    } else if wal_status.as_deref() == Some("lost") {
        findings.push(Finding::problem(
            format!(
                "replication slot `{}` was invalidated (wal_status = lost): changes after its position are gone",
                want.slot
            ),
            "walhook teardown && walhook setup --apply, then backfill the tables",
        ));
    } else {
        findings.push(Finding::ok(format!(
            "replication slot `{}` uses pgoutput",
            want.slot
        )));
    }
    Ok(())
}
