//! `walhook dead-letters list|replay|discard`: the filter options, and the list as text or as
//! JSON Lines.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::value::RawValue;

use crate::config::{parse_duration, Config};
use crate::mapping::push_rfc3339_micros;
use crate::state::{DeadLetter, DeadLetterFilter as Filter, UnixMillis};

use super::{DeadLetterAction, DeadLetterFilter};

/// The most dead letters `list` shows.
const LIST_LIMIT: usize = 10_000;

pub async fn dead_letters(config: &Config, action: DeadLetterAction) -> anyhow::Result<ExitCode> {
    let store = crate::app::open_state(config).await?;
    let (args, which) = match &action {
        DeadLetterAction::List(args)
        | DeadLetterAction::Replay(args)
        | DeadLetterAction::Discard(args) => (args, &args.filter),
    };
    let json = args.json;
    if let Some(name) = &which.subscriber {
        if config.subscriber(name).is_none() {
            eprintln!("error: no subscriber named `{name}` in the config");
            return Ok(ExitCode::from(1));
        }
    }
    let filter = to_filter(which);
    match action {
        DeadLetterAction::List(_) => {
            let letters = store.list_dead_letters(filter, LIST_LIMIT).await?;
            for letter in &letters {
                if json {
                    println!("{}", json_line(letter)?);
                } else {
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
            }
            if !json {
                println!("{} dead letter(s)", letters.len());
            }
        }
        DeadLetterAction::Replay(_) => {
            let n = store.replay_dead_letters(filter, UnixMillis::now()).await?;
            if json {
                println!("{}", serde_json::json!({ "replayed": n }));
            } else {
                println!("{n} dead letter(s) put back for delivery (a running walhook sends them on its next retry round)");
            }
        }
        DeadLetterAction::Discard(_) => {
            let n = store.discard_dead_letters(filter).await?;
            if json {
                println!("{}", serde_json::json!({ "discarded": n }));
            } else {
                println!("{n} dead letter(s) discarded");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn to_filter(f: &DeadLetterFilter) -> Filter {
    Filter {
        subscriber: f.subscriber.clone(),
        id: f.id.clone(),
        event_type: f.event_type.clone(),
        table: f.table.clone(),
        since_micros: f.since,
        until_micros: f.until,
    }
}

/// One line of `list --json`.
#[derive(Serialize)]
struct JsonLetter<'a> {
    id: &'a str,
    subscriber: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    table: &'a str,
    commit_time: String,
    commit_lsn: String,
    attempts: u32,
    first_attempt_at: String,
    dead_at: String,
    last_status: Option<u16>,
    last_error: Option<&'a str>,
    /// The event's body, as it was (or would be) sent.
    event: Box<RawValue>,
}

fn json_line(letter: &DeadLetter) -> serde_json::Result<String> {
    let event = &letter.event;
    let body = match RawValue::from_string(event.body.clone()) {
        Ok(raw) => raw,
        // Never expected (walhook wrote the body): show it as a string rather than fail.
        Err(_) => serde_json::value::to_raw_value(&event.body)?,
    };
    serde_json::to_string(&JsonLetter {
        id: &event.id,
        subscriber: &letter.subscriber,
        event_type: &event.event_type,
        table: &event.table,
        commit_time: rfc3339(event.commit_time_micros),
        commit_lsn: event.commit_lsn.to_string(),
        attempts: letter.attempts,
        first_attempt_at: rfc3339(letter.first_attempt_at.0.saturating_mul(1_000)),
        dead_at: rfc3339(letter.dead_at.0.saturating_mul(1_000)),
        last_status: letter.last_status,
        last_error: letter.last_error.as_deref(),
        event: body,
    })
}

fn rfc3339(micros: i64) -> String {
    let mut out = String::new();
    push_rfc3339_micros(micros, &mut out);
    out
}

/// `--since`/`--until`: an RFC 3339 time, or a duration meaning that long ago; Unix
/// microseconds.
pub(super) fn parse_time(text: &str) -> Result<i64, String> {
    time_at(text, now_micros())
}

fn time_at(text: &str, now_micros: i64) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.timestamp_micros());
    }
    if let Some(ago) = parse_duration(text) {
        let ago = i64::try_from(ago.as_micros()).unwrap_or(i64::MAX);
        return Ok(now_micros.saturating_sub(ago));
    }
    Err(
        "give an RFC 3339 time, e.g. `2026-11-30T14:00:00Z`, or a duration ago, e.g. `2h` (units ms, s, m, h, d)"
            .to_string(),
    )
}

/// `--table`: `schema.table`, or a bare name in `public`.
pub(super) fn parse_table(text: &str) -> Result<String, String> {
    let text = text.trim();
    let ok = |part: &str| !part.is_empty() && !part.contains(char::is_whitespace);
    match text.split_once('.') {
        None if ok(text) => Ok(format!("public.{text}")),
        Some((schema, name)) if ok(schema) && ok(name) && !name.contains('.') => {
            Ok(text.to_string())
        }
        _ => Err("give a table as `schema.table`, e.g. `public.orders`, or a bare name for the public schema, e.g. `orders`".to_string()),
    }
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_500_000_000_000;

    #[test]
    fn times_are_rfc3339_or_a_duration_ago() {
        assert_eq!(
            time_at("2026-11-30T14:00:00Z", NOW),
            Ok(1_796_047_200_000_000)
        );
        assert_eq!(
            time_at("2026-11-30T15:00:00.5+01:00", NOW),
            Ok(1_796_047_200_500_000)
        );
        assert_eq!(time_at("2h", NOW), Ok(NOW - 7_200_000_000));
        assert_eq!(time_at("30m", NOW), Ok(NOW - 1_800_000_000));
        assert_eq!(time_at("3d", NOW), Ok(NOW - 3 * 86_400_000_000));
        for bad in [
            "",
            "yesterday",
            "2026-11-30",
            "2 hours",
            "-2h",
            "2026-11-30 14:00",
        ] {
            let err = time_at(bad, NOW).expect_err(bad);
            assert!(err.contains("RFC 3339") && err.contains("`2h`"), "{err}");
        }
    }

    #[test]
    fn a_bare_table_name_is_in_public() {
        assert_eq!(parse_table("orders").as_deref(), Ok("public.orders"));
        assert_eq!(parse_table("shop.orders").as_deref(), Ok("shop.orders"));
        for bad in ["", ".orders", "shop.", "a.b.c", "my table"] {
            assert!(parse_table(bad).is_err(), "{bad}");
        }
    }
}
