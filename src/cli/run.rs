//! `walhook run` and `walhook dead-letters`.

use std::process::ExitCode;

use crate::config::Config;
use crate::state::{DeadLetterFilter as Filter, UnixMillis};

use super::{DeadLetterAction, DeadLetterFilter};

pub async fn run(config: Config) -> anyhow::Result<ExitCode> {
    match crate::app::run(config, shutdown_signal()?).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("error: {}", crate::error_chain(&e));
            Ok(ExitCode::from(1))
        }
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed now, not when the future is first
/// polled (once start-up is done): a signal during start-up must not kill walhook on the spot
/// but stop it as soon as it runs.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

pub async fn dead_letters(config: &Config, action: DeadLetterAction) -> anyhow::Result<ExitCode> {
    let store = crate::app::open_state(config).await?;
    let (filter, which) = match &action {
        DeadLetterAction::List(f) | DeadLetterAction::Replay(f) | DeadLetterAction::Discard(f) => {
            (to_filter(f), f)
        }
    };
    if let Some(name) = &which.subscriber {
        if config.subscriber(name).is_none() {
            eprintln!("error: no subscriber named `{name}` in the config");
            return Ok(ExitCode::from(1));
        }
    }
    match action {
        DeadLetterAction::List(_) => {
            let letters = store.list_dead_letters(filter, 10_000).await?;
            for letter in &letters {
                println!(
                    "{}\t{}\t{}\tattempts={}\tstatus={}\t{}",
                    letter.subscriber,
                    letter.event.id,
                    letter.event.event_type,
                    letter.attempts,
                    letter
                        .last_status
                        .map_or("-".to_string(), |s| s.to_string()),
                    letter.last_error.as_deref().unwrap_or("")
                );
            }
            println!("{} dead letter(s)", letters.len());
        }
        DeadLetterAction::Replay(_) => {
            let n = store.replay_dead_letters(filter, UnixMillis::now()).await?;
            println!("{n} dead letter(s) put back for delivery (a running walhook sends them on its next retry round)");
        }
        DeadLetterAction::Discard(_) => {
            let n = store.discard_dead_letters(filter).await?;
            println!("{n} dead letter(s) discarded");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn to_filter(f: &DeadLetterFilter) -> Filter {
    Filter {
        subscriber: f.subscriber.clone(),
        id: f.id.clone(),
    }
}
