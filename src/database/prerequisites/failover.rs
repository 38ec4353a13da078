//! `source.failover`: the slot as a failover slot (Postgres 17+), which the primary
//! synchronizes to physical standbys that have `sync_replication_slots = on`, so walhook goes
//! on streaming from the promoted standby. Checked only when the config asks for it.

use super::{sql, Finding, Verdict};

/// The findings about a failover slot `slot`.
pub async fn check(
    client: &tokio_postgres::Client,
    slot: &str,
) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let (number, version) = crate::database::server_version(client).await?;
    if number < 170_000 {
        return Ok(vec![Finding::problem(
            Verdict::Blocks,
            format!("source.failover needs Postgres 17 or later, which has failover slots; this is Postgres {version}"),
            "remove source.failover, or upgrade Postgres to 17 or later",
        )]);
    }
    let mut findings = Vec::new();
    let failover: Option<Option<String>> = client
        .query_opt(
            "SELECT to_jsonb(s) ->> 'failover' FROM pg_replication_slots s WHERE slot_name = $1",
            &[&slot],
        )
        .await?
        .map(|row| row.get(0));
    findings.push(match failover {
        None => Finding::ok(format!(
            "replication slot `{slot}` will be created as a failover slot"
        )),
        Some(Some(on)) if on == "true" => {
            Finding::ok(format!("replication slot `{slot}` is a failover slot"))
        }
        Some(_) => Finding::problem(
            Verdict::Degraded,
            format!(
                "replication slot `{slot}` is not a failover slot: it does not survive a promotion of a physical standby"
            ),
            format!(
                "while no walhook streams from it, over a replication connection: psql \"dbname=<db> replication=database\" -c 'ALTER_REPLICATION_SLOT {} (FAILOVER true)'",
                sql::ident(slot)
            ),
        ),
    });
    let standbys: String = client
        .query_one("SELECT current_setting('synchronized_standby_slots')", &[])
        .await?
        .get(0);
    findings.push(if standbys.trim().is_empty() {
        Finding::problem(
            Verdict::Degraded,
            "synchronized_standby_slots is empty: walhook may receive changes a standby has not, which a promotion of that standby loses",
            "ALTER SYSTEM SET synchronized_standby_slots = '<each standby''s physical slot>'; SELECT pg_reload_conf();  -- and on each standby: sync_replication_slots = on, hot_standby_feedback = on, primary_slot_name set, dbname in primary_conninfo",
        )
    } else {
        Finding::ok(format!(
            "synchronized_standby_slots = '{standbys}': walhook receives only what those standbys have"
        ))
    });
    Ok(findings)
}
