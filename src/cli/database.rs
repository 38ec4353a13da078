//! `check`, `setup` and `teardown`: the commands a DBA runs against the database.

use std::process::ExitCode;

use anyhow::Context as _;

use crate::config::Config;
use crate::database::prerequisites::{self, Expectations};
use crate::database::provision::{self, Target};
use crate::source::{connect_sql, ConnectSpec};

pub async fn check(config: &Config) -> anyhow::Result<ExitCode> {
    println!(
        "config: ok ({} subscriber(s), {} event rule(s))",
        config.subscribers.len(),
        config.events.len()
    );
    let client = match connect(config).await {
        Ok(client) => client,
        Err(e) => {
            println!("✗ cannot connect to the database: {e:#}");
            println!("\n1 problem found");
            return Ok(ExitCode::from(1));
        }
    };
    let tables = config.tables();
    let findings = prerequisites::check(
        &client,
        &Expectations {
            slot: &config.source.slot,
            publication: &config.source.publication,
            tables: &tables,
            canary: config.source.canary.as_ref(),
        },
    )
    .await
    .context("checking the database")?;
    let problems = findings.iter().filter(|f| !f.is_ok()).count();
    for finding in &findings {
        println!("{finding}");
    }
    if problems == 0 {
        println!("\nready: walhook can stream from this database");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("\n{problems} problem(s) found");
        Ok(ExitCode::from(1))
    }
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
    }
}

/// An SQL connection as `source.url` describes it (TLS per its `sslmode`).
async fn connect(config: &Config) -> anyhow::Result<tokio_postgres::Client> {
    let spec: ConnectSpec = config.source.url.expose().parse().context("source.url")?;
    Ok(connect_sql(&spec).await?)
}
