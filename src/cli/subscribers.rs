//! `walhook subscribers list|pause|resume`: prints what `app::subscribers` did.

use std::fmt::{self, Write as _};
use std::process::ExitCode;

use crate::app::subscribers::{self as controls, ControlError, SubscriberView};
use crate::config::Config;
use crate::state::{Pause, UnixMillis};

use super::status::when;
use super::SubscriberAction;

pub async fn subscribers(config: &Config, action: SubscriberAction) -> anyhow::Result<ExitCode> {
    let store = crate::app::open_state(config).await?;
    let now = UnixMillis::now();
    let done = match action {
        SubscriberAction::List { json } => {
            let views = controls::list(config, &*store).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&views)?);
            } else {
                print!("{}", render(&views, now));
            }
            return Ok(ExitCode::SUCCESS);
        }
        SubscriberAction::Pause { name, reason } => {
            let by = match std::env::var("USER") {
                Ok(user) if !user.is_empty() => format!("command line (user {user})"),
                _ => "command line".to_string(),
            };
            controls::pause(config, &*store, &name, reason, by)
                .await
                .map(|paused| {
                    let pause = describe(&paused.pause, now);
                    if paused.already {
                        format!("{name} was already paused {pause}; nothing changed")
                    } else {
                        format!("{name} paused {pause}; a running walhook holds its events in the state store within a second or two (`walhook subscribers resume {name}` sends them)")
                    }
                })
        }
        SubscriberAction::Resume { name } => {
            controls::resume(config, &*store, &name)
                .await
                .map(|lifted| match lifted {
                    Some(pause) => format!(
                        "{name} resumed (it was paused {}); a running walhook sends its held events in order within a second or two",
                        describe(&pause, now)
                    ),
                    None => format!("{name} was not paused; nothing changed"),
                })
        }
    };
    match done {
        Ok(text) => {
            println!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ ControlError::Unknown { .. }) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}

/// `since 2026-11-30T17:02:03Z (5s ago) by receiver: 410 Gone from billing.internal`.
fn describe(pause: &Pause, now: UnixMillis) -> String {
    let mut text = format!("since {} by {}", when(pause.since, now), pause.by);
    if let Some(reason) = &pause.reason {
        text.push_str(": ");
        text.push_str(reason);
    }
    text
}

fn render(views: &[SubscriberView], now: UnixMillis) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_views(&mut out, views, now);
    out
}

fn write_views(out: &mut String, views: &[SubscriberView], now: UnixMillis) -> fmt::Result {
    for v in views {
        write!(out, "{}  {}", v.name, v.state.to_uppercase())?;
        if let Some(since) = v.paused_since {
            write!(
                out,
                " since {} by {}",
                when(since, now),
                v.paused_by.as_deref().unwrap_or("?")
            )?;
            if let Some(reason) = &v.paused_reason {
                write!(out, ": {reason}")?;
            }
        }
        writeln!(out)?;
        writeln!(out, "  held {}; dead letters {}", v.held, v.dead_letters)?;
        match v.last_success_at {
            Some(at) => writeln!(out, "  last success  {}", when(at, now)),
            None => writeln!(out, "  last success  never"),
        }?;
        match (&v.last_error_at, &v.last_error) {
            (Some(at), Some(text)) => writeln!(out, "  last error    {}: {text}", when(*at, now)),
            _ => writeln!(out, "  last error    none"),
        }?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_shows_state_reason_and_counts() {
        let now = UnixMillis(1_764_522_183_000);
        let views = [
            SubscriberView {
                name: "billing".into(),
                state: "paused",
                paused_reason: Some("receiver maintenance".into()),
                paused_by: Some("command line (user ops)".into()),
                paused_since: Some(UnixMillis(now.0 - 65_000)),
                held: 120,
                dead_letters: 2,
                last_success_at: Some(UnixMillis(now.0 - 70_000)),
                last_error_at: None,
                last_error: None,
            },
            SubscriberView {
                name: "search".into(),
                state: "active",
                paused_reason: None,
                paused_by: None,
                paused_since: None,
                held: 0,
                dead_letters: 0,
                last_success_at: None,
                last_error_at: Some(UnixMillis(now.0 - 5_000)),
                last_error: Some("connection refused".into()),
            },
        ];
        assert_eq!(
            render(&views, now),
            "billing  PAUSED since 2025-11-30T17:01:58Z (1m 5s ago) by command line (user ops): receiver maintenance
  held 120; dead letters 2
  last success  2025-11-30T17:01:53Z (1m 10s ago)
  last error    none
search  ACTIVE
  held 0; dead letters 0
  last success  never
  last error    2025-11-30T17:02:58Z (5s ago): connection refused
"
        );
    }
}
