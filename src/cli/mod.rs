//! The command line (DESIGN.md "Command line"). Each command loads the validated config and
//! calls into the library; exit codes: 0 ok, 1 a problem the user must fix, 2 usage error.

mod backfill;
mod database;
mod dead_letters;
mod run;
mod status;
mod subscribers;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config;

#[derive(Debug, Parser)]
#[command(
    name = "walhook",
    version,
    about = "Postgres changes to signed webhooks"
)]
pub struct Cli {
    /// The config file.
    #[arg(
        long,
        global = true,
        env = "WALHOOK_CONFIG",
        default_value = "walhook.toml"
    )]
    pub config: PathBuf,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream and deliver until SIGINT/SIGTERM, then drain and exit.
    Run,
    /// Validate the config and check the database; list every problem with its fix.
    Check,
    /// Print (or with --apply run) the SQL that creates the publication and slot.
    Setup {
        /// Run the SQL instead of printing it.
        #[arg(long)]
        apply: bool,
    },
    /// Drop the slot (and the publication if walhook created it).
    Teardown,
    /// Slot lag, confirmed LSN, retry backlog and dead letters per subscriber.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Send the rows a table already has, as `read` events, merged safely with the live stream
    /// (the running `walhook run` does the work).
    Backfill(backfill::BackfillArgs),
    /// Pause, resume or list subscribers; a running walhook follows within a second or two.
    Subscribers {
        #[command(subcommand)]
        action: SubscriberAction,
    },
    /// Inspect, replay or discard events that could not be delivered.
    DeadLetters {
        #[command(subcommand)]
        action: DeadLetterAction,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum SubscriberAction {
    /// Each configured subscriber: active or paused (why, by whom, since when), events held,
    /// dead letters, last success and last error.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Stop sending to a subscriber: its events are held in the state store (the slot still
    /// advances) until it is resumed, across restarts too.
    Pause {
        /// The subscriber, as named in the config.
        name: String,
        /// Why, shown by `subscribers list` and `status`.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Send to a paused subscriber again: its held events go out in order per key, with
    /// their original ids.
    Resume {
        /// The subscriber, as named in the config.
        name: String,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum DeadLetterAction {
    /// List dead letters, oldest first.
    List(DeadLetterArgs),
    /// Put dead letters back into their subscriber's retry queue (in commit order per key).
    Replay(DeadLetterArgs),
    /// Delete dead letters.
    Discard(DeadLetterArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct DeadLetterArgs {
    #[command(flatten)]
    pub filter: DeadLetterFilter,
    /// JSON output: for list, one object per dead letter and line (JSON Lines); for replay
    /// and discard, `{"replayed": N}` or `{"discarded": N}`.
    #[arg(long)]
    pub json: bool,
}

/// Which dead letters: those matching every option given (none: all of them).
#[derive(Debug, Clone, clap::Args)]
pub struct DeadLetterFilter {
    /// Only this subscriber's dead letters.
    #[arg(long)]
    pub subscriber: Option<String>,
    /// Only the dead letter with this event id.
    #[arg(long)]
    pub id: Option<String>,
    /// Only events of this type, e.g. `order.created`.
    #[arg(long = "type", value_name = "TYPE")]
    pub event_type: Option<String>,
    /// Only events of this table, `schema.table`; a bare name means `public.<name>`.
    #[arg(long, value_parser = dead_letters::parse_table)]
    pub table: Option<String>,
    /// Only events committed at or after TIME: an RFC 3339 time (`2026-11-30T14:00:00Z`) or a
    /// duration ago (`2h`, `30m`, `3d`).
    #[arg(long, value_name = "TIME", value_parser = dead_letters::parse_time)]
    pub since: Option<i64>,
    /// Only events committed before TIME (same forms as --since).
    #[arg(long, value_name = "TIME", value_parser = dead_letters::parse_time)]
    pub until: Option<i64>,
}

/// A failure already explained to the user on stderr; exit 1.
#[derive(Debug)]
pub struct Reported;

/// Parses the command line, runs the command, and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = match config::load(&cli.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    match cli.command {
        Command::Check => database::check(&config).await,
        Command::Setup { apply } => database::setup(&config, apply).await,
        Command::Teardown => database::teardown(&config).await,
        Command::Run => run::run(config).await,
        Command::DeadLetters { action } => dead_letters::dead_letters(&config, action).await,
        Command::Subscribers { action } => subscribers::subscribers(&config, action).await,
        Command::Status { json } => status::status(&config, json).await,
        Command::Backfill(args) => backfill::backfill(&config, args).await,
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colour = colour_logs(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Whether text logs get ANSI colours: only for a person at a terminal, and not when they
/// asked for none (`NO_COLOR` set to anything but the empty string, https://no-color.org).
/// A file, a pipe or a log collector gets plain text.
fn colour_logs(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|value| value.is_empty())
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::colour_logs;

    #[test]
    fn colour_only_on_a_terminal_and_never_with_no_color() {
        assert!(colour_logs(true, None));
        assert!(colour_logs(true, Some(OsStr::new(""))));
        assert!(!colour_logs(true, Some(OsStr::new("1"))));
        assert!(!colour_logs(true, Some(OsStr::new("false"))));
        assert!(!colour_logs(false, None));
        assert!(!colour_logs(false, Some(OsStr::new(""))));
    }
}
