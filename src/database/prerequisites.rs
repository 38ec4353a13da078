//! `walhook check`: everything the database must provide before walhook can stream, each
//! finding with the SQL that fixes it. `walhook run` runs the same checks at start and stops on
//! what it cannot fix itself ([`NotReady`]), before it changes anything.

use std::fmt;

use crate::model::TableName;

use super::sql;

pub mod failover;
mod publication;
mod slot;

/// What a finding means: for `walhook check` a ✓ or a ✗, for `walhook run` whether it may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// As walhook needs it.
    Ok,
    /// Missing or incomplete, and walhook's role may create or complete it: `walhook run` does
    /// so on start, as `walhook setup --apply` does (the publication, the slot, the canary
    /// table).
    RunFixes,
    /// Streaming works without it, with less (no old keys, no backfills): `walhook run` logs it
    /// as a warning and starts.
    Degraded,
    /// Streaming cannot work until someone fixes it: `walhook run` stops before it changes
    /// anything, with the summary and the fix.
    Blocks,
}

/// One thing `check` looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub verdict: Verdict,
    /// What was checked, and what was found.
    pub summary: String,
    /// The SQL (or step) that fixes a problem.
    pub fix: Option<String>,
}

impl Finding {
    fn ok(summary: impl Into<String>) -> Self {
        Self {
            verdict: Verdict::Ok,
            summary: summary.into(),
            fix: None,
        }
    }

    fn problem(verdict: Verdict, summary: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            verdict,
            summary: summary.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn is_ok(&self) -> bool {
        self.verdict == Verdict::Ok
    }
}

/// As `walhook check` prints it: `✓ summary`, or `✗ summary` and one `    fix: ` line per line
/// of the fix.
impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = if self.is_ok() { "✓" } else { "✗" };
        write!(f, "{mark} {}", self.summary)?;
        for line in self.fix.iter().flat_map(|fix| fix.lines()) {
            write!(f, "\n    fix: {line}")?;
        }
        Ok(())
    }
}

/// What keeps `walhook run` from starting: the findings that block it, as `walhook check`
/// prints them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the database is not ready for walhook, which changed nothing in it. Fix {} and start again \
     (`walhook check` shows every check):\n{}",
    these_problems(.0.len()),
    lines(.0)
)]
pub struct NotReady(pub Vec<Finding>);

fn these_problems(count: usize) -> String {
    match count {
        1 => "this problem".to_string(),
        n => format!("these {n} problems"),
    }
}

fn lines(findings: &[Finding]) -> String {
    let lines: Vec<String> = findings.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

/// `Ok` when nothing in `findings` blocks `walhook run`.
pub fn ready_to_run(findings: &[Finding]) -> Result<(), NotReady> {
    let blocking: Vec<Finding> = findings
        .iter()
        .filter(|f| f.verdict == Verdict::Blocks)
        .cloned()
        .collect();
    if blocking.is_empty() {
        Ok(())
    } else {
        Err(NotReady(blocking))
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

impl Expectations<'_> {
    /// The tables the publication must publish: the mapped ones and the canary.
    fn published(&self) -> impl Iterator<Item = &TableName> {
        self.tables.iter().copied().chain(self.canary)
    }
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
    publication::check(client, want, &role, &mut findings).await?;
    slot::check(client, want, &mut findings).await?;
    Ok(findings)
}

/// What this server's version allows: walhook supports Postgres 12 and later; before 14,
/// pgoutput sends no logical messages, which backfills need.
async fn check_version(client: &tokio_postgres::Client) -> Result<Finding, tokio_postgres::Error> {
    let (number, version) = super::server_version(client).await?;
    Ok(match number {
        n if n < 120_000 => Finding::problem(
            Verdict::Blocks,
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
            Verdict::Blocks,
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
            Verdict::Blocks,
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
    for table in want.published() {
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
                    Verdict::RunFixes,
                    format!("canary table {readable} does not exist"),
                    format!(
                        "run `walhook setup --apply` (or `walhook run`), which creates it, or: {}",
                        super::canary_table::create_statements(table).join(" ")
                    ),
                )
            } else {
                Finding::problem(
                    Verdict::Blocks,
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
                Verdict::Degraded,
                format!(
                    "table {readable} has no primary key and no REPLICA IDENTITY FULL: its updates and deletes would carry no old key (and fail once published)"
                ),
                format!("ALTER TABLE {} REPLICA IDENTITY FULL;  -- or add a primary key", sql::table(table)),
            )
        });
        if !can_select {
            findings.push(Finding::problem(
                Verdict::Degraded,
                format!("role `{role}` may not SELECT from {readable} (needed for backfills and type lookups)"),
                format!("GRANT SELECT ON {} TO {};", sql::table(table), sql::ident(role)),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_stops_on_what_blocks_it_and_says_it_as_check_does() {
        let findings = [
            Finding::ok("wal_level is logical"),
            Finding::problem(
                Verdict::Blocks,
                "role `w` has neither REPLICATION nor SUPERUSER, so it cannot stream changes",
                "ALTER ROLE \"w\" WITH REPLICATION;",
            ),
            Finding::problem(
                Verdict::Degraded,
                "role `w` may not SELECT from public.orders",
                "GRANT SELECT ON \"public\".\"orders\" TO \"w\";",
            ),
            Finding::problem(
                Verdict::RunFixes,
                "replication slot `s` does not exist",
                "SELECT pg_create_logical_replication_slot('s', 'pgoutput');",
            ),
            Finding::problem(
                Verdict::Blocks,
                "replication slot `s` belongs to database `shop`, not to `app`",
                "choose another source.slot\nor drop it: SELECT pg_drop_replication_slot('s');",
            ),
        ];
        let not_ready = ready_to_run(&findings).unwrap_err();
        assert_eq!(not_ready.0, [findings[1].clone(), findings[4].clone()]);
        assert_eq!(
            not_ready.to_string(),
            "the database is not ready for walhook, which changed nothing in it. Fix these 2 \
             problems and start again (`walhook check` shows every check):\n\
             ✗ role `w` has neither REPLICATION nor SUPERUSER, so it cannot stream changes\n    \
             fix: ALTER ROLE \"w\" WITH REPLICATION;\n\
             ✗ replication slot `s` belongs to database `shop`, not to `app`\n    \
             fix: choose another source.slot\n    \
             fix: or drop it: SELECT pg_drop_replication_slot('s');"
        );
        assert_eq!(findings[0].to_string(), "✓ wal_level is logical");
        assert_eq!(ready_to_run(&findings[2..4]), Ok(()));
    }
}
