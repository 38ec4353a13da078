//! The publication: it exists, publishes every operation and covers every mapped table (and the
//! canary). Whether walhook's role may create or complete it decides what `walhook run` does
//! about a gap: fix it itself, or stop with the SQL for a role that may.

use super::{sql, Expectations, Finding, Verdict};
use crate::model::TableName;

/// The comment on a fix that walhook's role may not run.
const NOT_WALHOOKS_ROLE: &str =
    "-- as a superuser, or a role that owns the publication and these tables";

pub(super) async fn check(
    client: &tokio_postgres::Client,
    want: &Expectations<'_>,
    role: &str,
    findings: &mut Vec<Finding>,
) -> Result<(), tokio_postgres::Error> {
    let name = sql::ident(want.publication);
    let publication = client
        .query_opt(
            "SELECT puballtables, pubinsert AND pubupdate AND pubdelete AND pubtruncate, \
                    pg_get_userbyid(pubowner)::text, pg_has_role(pubowner, 'USAGE') \
             FROM pg_publication WHERE pubname = $1",
            &[&want.publication],
        )
        .await?;
    let Some(row) = publication else {
        findings.push(missing(client, want, role).await?);
        return Ok(());
    };
    let (all_tables, every_op, owner, owns): (bool, bool, String, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let not_the_owner = format!("its owner is `{owner}`, not role `{role}`");
    if !every_op {
        let summary = format!(
            "publication `{}` does not publish every operation",
            want.publication
        );
        let fix =
            format!("ALTER PUBLICATION {name} SET (publish = 'insert, update, delete, truncate');");
        findings.push(if owns {
            Finding::problem(Verdict::RunFixes, summary, fix)
        } else {
            Finding::problem(
                Verdict::Blocks,
                format!("{summary}, and walhook may not change it: {not_the_owner}"),
                format!("{fix}  -- as `{owner}` or a superuser"),
            )
        });
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
    let missing: Vec<&TableName> = want
        .published()
        .filter(|table| {
            !all_tables
                && !published
                    .iter()
                    .any(|(s, t)| *s == table.schema && *t == table.name)
        })
        .collect();
    if missing.is_empty() {
        findings.push(Finding::ok(format!(
            "publication `{}` covers every mapped table",
            want.publication
        )));
        return Ok(());
    }
    let listed: Vec<String> = missing.iter().copied().map(sql::table).collect();
    let summary = format!(
        "publication `{}` lacks {} mapped table(s): {}",
        want.publication,
        missing.len(),
        listed.join(", ")
    );
    let fix = format!("ALTER PUBLICATION {name} ADD TABLE {};", listed.join(", "));
    let mut hindrances = Vec::new();
    if !owns {
        hindrances.push(not_the_owner);
    }
    hindrances.extend(not_owned(client, role, &missing).await?);
    findings.push(if hindrances.is_empty() {
        Finding::problem(Verdict::RunFixes, summary, fix)
    } else {
        Finding::problem(
            Verdict::Blocks,
            format!(
                "{summary}, and walhook may not add them: {}",
                hindrances.join("; ")
            ),
            format!("{fix}  {NOT_WALHOOKS_ROLE}"),
        )
    });
    Ok(())
}

/// The finding for a publication that does not exist: `walhook run` creates it if its role may
/// (CREATE on the database, and owning every table it publishes).
async fn missing(
    client: &tokio_postgres::Client,
    want: &Expectations<'_>,
    role: &str,
) -> Result<Finding, tokio_postgres::Error> {
    let tables: Vec<&TableName> = want.published().collect();
    let listed: Vec<String> = tables.iter().copied().map(sql::table).collect();
    let summary = format!("publication `{}` does not exist", want.publication);
    let create = format!(
        "CREATE PUBLICATION {} FOR TABLE {};",
        sql::ident(want.publication),
        listed.join(", ")
    );
    let (may_create, database): (bool, String) = {
        let row = client
            .query_one(
                "SELECT has_database_privilege(current_database(), 'CREATE'), current_database()::text",
                &[],
            )
            .await?;
        (row.get(0), row.get(1))
    };
    let mut hindrances = Vec::new();
    if !may_create {
        hindrances.push(format!(
            "role `{role}` lacks the CREATE privilege on database `{database}`"
        ));
    }
    hindrances.extend(not_owned(client, role, &tables).await?);
    Ok(if hindrances.is_empty() {
        Finding::problem(
            Verdict::RunFixes,
            summary,
            format!("{create}  -- or run `walhook setup --apply`"),
        )
    } else {
        Finding::problem(
            Verdict::Blocks,
            format!(
                "{summary}, and walhook may not create it: {}",
                hindrances.join("; ")
            ),
            format!(
                "{create}  -- as a superuser, or the tables' owner with CREATE on the database"
            ),
        )
    })
}

/// Why walhook's role may not publish `tables`: Postgres adds a table to a publication only
/// for its owner (or a superuser). Tables that do not exist are left out: a missing mapped
/// table is a finding of its own, and walhook creates the canary table itself.
async fn not_owned(
    client: &tokio_postgres::Client,
    role: &str,
    tables: &[&TableName],
) -> Result<Option<String>, tokio_postgres::Error> {
    let mut foreign = Vec::new();
    for table in tables {
        let row = client
            .query_opt(
                "SELECT pg_has_role(c.relowner, 'USAGE'), pg_get_userbyid(c.relowner)::text \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
                &[&table.schema, &table.name],
            )
            .await?;
        if let Some(row) = row {
            let (owns, owner): (bool, String) = (row.get(0), row.get(1));
            if !owns {
                foreign.push(format!(
                    "{} (owned by `{owner}`)",
                    sql::table_readable(table)
                ));
            }
        }
    }
    Ok((!foreign.is_empty()).then(|| {
        format!(
            "role `{role}` does not own {}, and only a table's owner may publish it",
            foreign.join(", ")
        )
    }))
}
