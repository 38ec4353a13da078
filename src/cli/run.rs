//! `walhook run`.

use std::process::ExitCode;

use crate::config::Config;

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
