//! The replication slot: a logical slot using pgoutput, of this database, not invalidated; or,
//! when it is missing, room under `max_replication_slots` to create it.

use super::{sql, Expectations, Finding, Verdict};

pub(super) async fn check(
    client: &tokio_postgres::Client,
    want: &Expectations<'_>,
    findings: &mut Vec<Finding>,
) -> Result<(), tokio_postgres::Error> {
    let slot = client
        .query_opt(
            // wal_status came in Postgres 13: read through to_jsonb, it is NULL before.
            "SELECT slot_type::text, plugin::text, database::text, to_jsonb(s) ->> 'wal_status', \
                    current_database()::text \
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
            Verdict::RunFixes,
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
                Verdict::Blocks,
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
    let this_database: String = row.get(4);
    findings.push(
        if kind.as_deref() != Some("logical") || plugin.as_deref() != Some("pgoutput") {
            Finding::problem(
                Verdict::Blocks,
                format!(
                    "replication slot `{}` is a {} slot using plugin `{}`, not a logical slot using pgoutput",
                    want.slot,
                    kind.as_deref().unwrap_or("?"),
                    plugin.as_deref().unwrap_or("none")
                ),
                format!("{drop}\n{create}  -- or set another source.slot"),
            )
        } else if database.as_deref() != Some(this_database.as_str()) {
            // Slot names are one namespace for the whole server, but a logical slot streams
            // only the database it was created in.
            let owner = database.as_deref().unwrap_or("?");
            Finding::problem(
                Verdict::Blocks,
                format!(
                    "replication slot `{}` belongs to database `{owner}`, not to `{this_database}`: \
                     a logical slot streams only its own database, and slot names are shared by \
                     every database of the server",
                    want.slot
                ),
                format!(
                    "choose another source.slot (or point source.url at database `{owner}`)\n\
                     or, if nothing uses the slot any more, drop it: {drop}"
                ),
            )
        } else if wal_status.as_deref() == Some("lost") {
            Finding::problem(
                Verdict::Blocks,
                format!(
                    "replication slot `{}` was invalidated (wal_status = lost): changes after its position are gone",
                    want.slot
                ),
                "run `walhook teardown`, then `walhook setup --apply`, and backfill the mapped tables",
            )
        } else {
            Finding::ok(format!("replication slot `{}` uses pgoutput", want.slot))
        },
    );
    Ok(())
}
