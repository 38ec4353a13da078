//! `check`, `setup` and `teardown`: the commands a DBA runs against the database.

use std::process::ExitCode;

use anyhow::Context as _;

use crate::config::{Config, StateConfig};
use crate::database::prerequisites::{self, Expectations};
use crate::database::provision::{self, Target};
use crate::source::{connect_sql, ConnectSpec};
use crate::state::inspect;

pub async fn check(config: &Config) -> anyhow::Result<ExitCode> {
    println!(
        "config: ok ({} subscriber(s), {} event rule(s))",
        config.subscribers.len(),
        config.events.len()
    );
    let mut problems = match connect(config).await {
        Ok(client) => check_source(config, &client).await?,
        Err(e) => {
            println!("✗ cannot connect to the database: {e:#}");
            1
        }
    };
    problems += check_state(config).await;
    if problems == 0 {
        println!("\nready: walhook can stream from this database");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("\n{problems} problem(s) found");
        Ok(ExitCode::from(1))
    }
}

/// Prints each finding about the source database; returns how many are problems.
async fn check_source(config: &Config, client: &tokio_postgres::Client) -> anyhow::Result<usize> {
    let tables = config.tables();
    let findings = prerequisites::check(
        client,
        &Expectations {
            slot: &config.source.slot,
            publication: &config.source.publication,
            tables: &tables,
            canary: config.source.canary.as_ref(),
        },
    )
    .await
    .context("checking the database")?;
    let mut findings = findings;
    if config.source.failover {
        let failover = prerequisites::failover::check(client, &config.source.slot).await;
        findings.extend(failover.context("checking the failover slot")?);
    }
    for finding in &findings {
        println!("{finding}");
    }
    Ok(findings.iter().filter(|f| !f.is_ok()).count())
}

/// With the state in Postgres: that walhook reaches it and may create its schema, and who
/// leads. Changes nothing. Prints each finding; returns how many are problems.
async fn check_state(config: &Config) -> usize {
    let StateConfig::Postgres { url, schema, .. } = &config.state else {
        return 0;
    };
    let spec: ConnectSpec = match url.expose().parse() {
        Ok(spec) => spec,
        Err(e) => {
            println!("✗ [state] url is not a usable connection string: {e}");
            return 1;
        }
    };
    let client = match connect_sql(&spec).await {
        Ok(client) => client,
        Err(e) => {
            println!(
                "✗ cannot connect to the state database ([state] url): {}",
                crate::error_chain(&e)
            );
            return 1;
        }
    };
    let found = match inspect(&client, schema).await {
        Ok(found) => found,
        Err(e) => {
            println!(
                "✗ cannot read the state database: {}",
                crate::error_chain(&e)
            );
            return 1;
        }
    };
    let db = &spec.dbname;
    if !found.may_create {
        let grant = if found.schema_exists {
            format!(
                "GRANT USAGE, CREATE ON SCHEMA \"{schema}\" TO \"{}\";",
                spec.user
            )
        } else {
            format!("GRANT CREATE ON DATABASE \"{db}\" TO \"{}\";", spec.user)
        };
        println!(
            "✗ state: user `{}` may not create the state schema `{schema}` or its tables\n    fix: {grant}",
            spec.user
        );
        return 1;
    }
    let how = if found.schema_exists {
        "is there"
    } else {
        "will be created by `walhook run`"
    };
    println!("✓ state database reachable; schema `{schema}` {how}");
    match found.lease {
        None => println!("✓ leadership: no walhook has led yet"),
        Some(l) if l.expired => println!(
            "✓ leadership: no walhook leads now (the lease of {}, term {}, ran out or was released); a standby takes over at once",
            l.holder, l.epoch
        ),
        Some(l) => println!(
            "✓ leadership: {} leads (term {}, since {}, lease renewed {:.1}s ago)",
            l.holder,
            l.epoch,
            l.acquired_at,
            l.renewed_ago.as_secs_f64()
        ),
    }
    0
}

pub async fn setup(config: &Config, apply: bool) -> anyhow::Result<ExitCode> {
    let client = connect(config).await?;
    let tables = config.tables();
    let target = target(config, &tables);
    let statements = provision::plan(&client, &target).await?.statements;
    if statements.is_empty() {
        println!(
            "-- nothing to do: publication `{}` and slot `{}` are in place",
            target.publication, target.slot
        );
        return Ok(ExitCode::SUCCESS);
    }
    if !apply {
        println!("-- walhook setup: run this SQL (or `walhook setup --apply`)");
        for statement in &statements {
            println!("{statement}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    for statement in &statements {
        provision::apply(&client, std::slice::from_ref(statement))
            .await
            .with_context(|| format!("running `{statement}`"))?;
        println!("{statement}");
    }
    println!("-- done");
    Ok(ExitCode::SUCCESS)
}

pub async fn teardown(config: &Config) -> anyhow::Result<ExitCode> {
    let client = connect(config).await?;
    let tables = config.tables();
    let done = provision::teardown(&client, &target(config, &tables)).await?;
    let slot = &config.source.slot;
    let publication = &config.source.publication;
    println!(
        "{}",
        if done.dropped_slot {
            format!("dropped replication slot `{slot}`: Postgres no longer retains WAL for walhook")
        } else {
            format!("replication slot `{slot}` did not exist")
        }
    );
    if done.dropped_publication {
        println!("dropped publication `{publication}`");
    } else if done.kept_publication {
        println!("kept publication `{publication}`: walhook did not create it (drop it by hand if unused)");
    }
    Ok(ExitCode::SUCCESS)
}

fn target<'a>(config: &'a Config, tables: &'a [&'a crate::model::TableName]) -> Target<'a> {
    Target {
        slot: &config.source.slot,
        publication: &config.source.publication,
        tables,
        canary: config.source.canary.as_ref(),
        failover: config.source.failover,
    }
}

/// An SQL connection as `source.url` describes it (TLS per its `sslmode`).
async fn connect(config: &Config) -> anyhow::Result<tokio_postgres::Client> {
    let spec: ConnectSpec = config.source.url.expose().parse().context("source.url")?;
    Ok(connect_sql(&spec).await?)
}
