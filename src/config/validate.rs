//! Raw config -> validated [`Config`], reporting every problem at once, each with its key, the
//! constraint, and an example of a good value.
//!
//! This file checks the whole file and what its sections say about each other; each section is
//! checked in its own file (`source`, `state`, `subscriber`, `event`), with the value checks
//! they share in `errors`.

mod errors;
mod event;
mod source;
mod state;
mod subscriber;

use std::path::Path;

use super::raw::RawConfig;
use super::{ApiConfig, Config, ConfigError, EventRule, Secret, SubscriberConfig};
use crate::model::Operation;
use errors::Errors;
use event::validate_event;
use source::validate_source;
use state::validate_state;
use subscriber::validate_subscriber;

pub fn validate(raw: RawConfig, base_dir: &Path) -> Result<Config, Vec<ConfigError>> {
    let mut errors = Errors(Vec::new());
    errors.unknown(
        "",
        &raw.unknown,
        &["source", "state", "api", "subscribers", "events"],
    );

    let source = validate_source(raw.source, &mut errors);
    let state = validate_state(raw.state, base_dir, &mut errors);
    let api = raw.api.map(|api| {
        errors.unknown("api", &api.unknown, &["listen", "token"]);
        let text = api.listen.unwrap_or_else(|| "127.0.0.1:9187".to_string());
        let listen = text.parse().unwrap_or_else(|_| {
            errors.add(
                "api.listen",
                format!("must be an IP address and port, e.g. `127.0.0.1:9187`; got `{text}`"),
            );
            std::net::SocketAddr::from(([127, 0, 0, 1], 9187))
        });
        let token = api.token.map(|token| {
            if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                errors.add(
                    "api.token",
                    "must be a non-empty bearer token without spaces, e.g. `token = \"${WALHOOK_API_TOKEN}\"` and a long random value such as `openssl rand -hex 32` prints; got a value that is empty or holds whitespace",
                );
            }
            Secret::new(token)
        });
        ApiConfig { listen, token }
    });

    let subscribers: Vec<SubscriberConfig> = raw
        .subscribers
        .into_iter()
        .map(|(name, sub)| validate_subscriber(name, sub, &mut errors))
        .collect();
    if raw.events.is_empty() {
        errors.add(
            "events",
            "at least one [[events]] rule is needed, e.g. `[[events]] type = \"order.created\" table = \"public.orders\" operations = [\"insert\"] subscribers = [\"billing\"]`",
        );
    }
    let names: Vec<&str> = subscribers.iter().map(|s| s.name.as_str()).collect();
    let events = raw
        .events
        .into_iter()
        .enumerate()
        .map(|(i, event)| validate_event(i, event, &names, &mut errors))
        .collect::<Vec<EventRule>>();
    for subscriber in subscribers.iter().filter(|s| s.initial_backfill) {
        let sends_inserts = events.iter().any(|rule| {
            rule.operations.contains(&Operation::Insert)
                && rule.subscribers.contains(&subscriber.name)
        });
        if !sends_inserts {
            errors.add(
                format!("subscribers.{}.initial_backfill", subscriber.name),
                format!(
                    "needs an [[events]] rule with operations including \"insert\" for `{}`: a backfill sends rows through those rules, e.g. `operations = [\"insert\", \"update\", \"delete\"]`",
                    subscriber.name
                ),
            );
        }
    }

    if let Some(canary) = &source.canary {
        if events.iter().any(|rule| &rule.table == canary) {
            errors.add(
                "source.canary",
                format!("must be a table of walhook's own, not one that [[events]] rules map, e.g. `public.walhook_canary`; got `{canary}`"),
            );
        }
    }

    if errors.0.is_empty() {
        Ok(Config {
            source,
            state,
            api,
            subscribers,
            events,
        })
    } else {
        Err(errors.0)
    }
}
