//! Pausing, resuming and listing subscribers at run time: what `walhook subscribers` and the
//! api's control routes share, so both say the same and check the same.
//!
//! A pause is only recorded in the state store; each worker of a running walhook reads it
//! once a second (see `delivery::worker`), so these calls work from any process that reaches
//! the store, with or without a walhook running.

use serde::{Serialize, Serializer};

use crate::config::Config;
use crate::state::{Pause, StateError, Store, UnixMillis};

/// Why a control call failed. Each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no subscriber named `{name}` in the config; the configured subscribers are: {}", names(.configured))]
    Unknown {
        name: String,
        configured: Vec<String>,
    },
    #[error("cannot read or write the subscriber's state")]
    State(#[from] StateError),
}

fn names(names: &[String]) -> String {
    if names.is_empty() {
        "(none)".to_string()
    } else {
        names.join(", ")
    }
}

/// One configured subscriber as `walhook subscribers list` shows it; its JSON form is the
/// `--json` output and the api's `GET /subscribers`.
#[derive(Debug, Clone, Serialize)]
pub struct SubscriberView {
    pub name: String,
    /// `active` or `paused`.
    pub state: &'static str,
    /// Why it is paused; `null` when active, or paused without a reason.
    pub paused_reason: Option<String>,
    /// Who paused it: `receiver` (a 410 Gone), `command line (user ...)`, `api (...)`.
    pub paused_by: Option<String>,
    #[serde(serialize_with = "opt_time")]
    pub paused_since: Option<UnixMillis>,
    /// Events held in the state store (for a retry, or while paused).
    pub held: u64,
    pub dead_letters: u64,
    #[serde(serialize_with = "opt_time")]
    pub last_success_at: Option<UnixMillis>,
    #[serde(serialize_with = "opt_time")]
    pub last_error_at: Option<UnixMillis>,
    pub last_error: Option<String>,
}

/// Every subscriber of the config, by name, with what the store holds for it.
pub async fn list(config: &Config, store: &dyn Store) -> Result<Vec<SubscriberView>, StateError> {
    let mut views = Vec::with_capacity(config.subscribers.len());
    for subscriber in &config.subscribers {
        let status = store.subscriber_status(&subscriber.name).await?;
        let pause = status.paused;
        views.push(SubscriberView {
            name: subscriber.name.clone(),
            state: if pause.is_some() { "paused" } else { "active" },
            paused_reason: pause.as_ref().and_then(|p| p.reason.clone()),
            paused_by: pause.as_ref().map(|p| p.by.clone()),
            paused_since: pause.as_ref().map(|p| p.since),
            held: status.pending,
            dead_letters: status.dead_letters,
            last_success_at: status.last_success_at,
            last_error_at: status.last_error.as_ref().map(|e| e.at),
            last_error: status.last_error.map(|e| e.text),
        });
    }
    Ok(views)
}

/// What a pause call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paused {
    /// The pause in force: this call's, or an earlier one.
    pub pause: Pause,
    /// The subscriber was paused already; the earlier pause stays in force.
    pub already: bool,
}

/// Pauses `name` (a configured subscriber) with `reason`, recorded as done `by` someone.
pub async fn pause(
    config: &Config,
    store: &dyn Store,
    name: &str,
    reason: Option<String>,
    by: String,
) -> Result<Paused, ControlError> {
    configured(config, name)?;
    let reason = reason.filter(|r| !r.trim().is_empty());
    let asked = Pause {
        reason,
        by,
        since: UnixMillis::now(),
    };
    let pause = store.pause(name, asked.clone()).await?;
    Ok(Paused {
        already: pause != asked,
        pause,
    })
}

/// Resumes `name` (a configured subscriber); returns the pause lifted, `None` if it was not
/// paused.
pub async fn resume(
    config: &Config,
    store: &dyn Store,
    name: &str,
) -> Result<Option<Pause>, ControlError> {
    configured(config, name)?;
    Ok(store.resume(name).await?)
}

fn configured(config: &Config, name: &str) -> Result<(), ControlError> {
    if config.subscriber(name).is_some() {
        return Ok(());
    }
    Err(ControlError::Unknown {
        name: name.to_string(),
        configured: config.subscribers.iter().map(|s| s.name.clone()).collect(),
    })
}

/// `2026-11-26T17:51:10.574Z`: RFC 3339 in UTC, as `walhook status --json` gives times.
pub fn rfc3339(at: UnixMillis) -> String {
    let mut text = String::new();
    crate::mapping::push_rfc3339_micros(at.0.saturating_mul(1000), &mut text);
    text
}

fn opt_time<S: Serializer>(at: &Option<UnixMillis>, s: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => s.serialize_str(&rfc3339(*at)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::state::SqliteStore;

    fn config() -> Config {
        crate::config::parse(
            r#"
            source.url = "postgres://localhost/app"
            subscribers.billing.url = "http://127.0.0.1:9000/"
            subscribers.search.url = "http://127.0.0.1:9001/"
            [[events]]
            type = "t"
            table = "public.t"
            subscribers = ["billing", "search"]
            "#,
            Path::new("dir"),
            &|_| None,
        )
        .expect("a valid config")
    }

    #[tokio::test]
    async fn an_unknown_subscriber_is_refused_naming_the_configured_ones() {
        let config = config();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().expect("a store"));
        let e = pause(&config, &*store, "biling", None, "test".into())
            .await
            .expect_err("unknown");
        assert_eq!(
            e.to_string(),
            "no subscriber named `biling` in the config; the configured subscribers are: billing, search"
        );
        assert!(resume(&config, &*store, "biling").await.is_err());
        assert_eq!(store.paused("biling").await.expect("read"), None);
    }

    #[tokio::test]
    async fn pause_list_and_resume_say_what_the_store_holds() {
        let config = config();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().expect("a store"));
        let first = pause(
            &config,
            &*store,
            "billing",
            Some("maintenance".into()),
            "ops".into(),
        )
        .await
        .expect("pause");
        assert!(!first.already);
        assert_eq!(first.pause.reason.as_deref(), Some("maintenance"));
        // A second pause keeps the first; an empty reason counts as none.
        let second = pause(&config, &*store, "billing", Some(" ".into()), "api".into())
            .await
            .expect("pause");
        assert!(second.already);
        assert_eq!(second.pause, first.pause);

        let views = list(&config, &*store).await.expect("list");
        let states: Vec<_> = views
            .iter()
            .map(|v| (v.name.as_str(), v.state, v.paused_reason.as_deref()))
            .collect();
        assert_eq!(
            states,
            [
                ("billing", "paused", Some("maintenance")),
                ("search", "active", None)
            ]
        );
        let json = serde_json::to_value(&views[0]).expect("json");
        assert_eq!(json["paused_by"], "ops");
        assert_eq!(json["paused_since"], rfc3339(first.pause.since));
        assert_eq!(json["held"], 0);

        let lifted = resume(&config, &*store, "billing").await.expect("resume");
        assert_eq!(lifted, Some(first.pause));
        assert_eq!(
            resume(&config, &*store, "billing").await.expect("resume"),
            None
        );
        let views = list(&config, &*store).await.expect("list");
        assert_eq!(views[0].state, "active");
        assert_eq!(views[0].paused_since, None);
    }
}
