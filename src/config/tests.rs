use std::path::Path;
use std::time::Duration;

use super::*;

fn env(name: &str) -> Option<String> {
    match name {
        "PGPASSWORD" => Some("pw".into()),
        "BILLING_WEBHOOK_SECRET" => Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
        "BILLING_TOKEN" => Some("tok".into()),
        _ => None,
    }
}

/// DESIGN.md's example, filter and all.
const DESIGN_EXAMPLE: &str = r#"
[source]
url = "postgres://walhook:${PGPASSWORD}@db.internal:5432/app?sslmode=require"
slot = "walhook"
publication = "walhook"
status_interval = "10s"
heartbeat_interval = "1m"
lag_warn = "1GB"

[state]
path = "walhook-state.db"

[api]
listen = "127.0.0.1:9187"

[subscribers.billing]
url = "https://billing.internal/hooks/walhook"
secret = "${BILLING_WEBHOOK_SECRET}"
headers = { "Authorization" = "Bearer ${BILLING_TOKEN}" }
timeout = "10s"
concurrency = 16
batch_size = 1
batch_wait = "20ms"
retry = { initial = "1s", max = "10m", give_up_after = "3d" }
rate_limit = "3000/m"

[[events]]
type = "order.created"
table = "public.orders"
operations = ["insert"]
subscribers = ["billing"]
when = "row.status == 'paid' && old.status != 'paid'"
columns = ["id", "status", "amount"]
key = ["customer_id"]
"#;

fn errors_of(text: &str) -> Vec<String> {
    match parse(text, Path::new("/etc/walhook"), &env) {
        Err(ParseError::Invalid(errors)) => errors.iter().map(ToString::to_string).collect(),
        other => panic!("expected validation errors, got {other:?}"),
    }
}

#[test]
fn design_example_parses_with_every_value() {
    let config = parse(DESIGN_EXAMPLE, Path::new("/etc/walhook"), &env).unwrap();
    assert_eq!(
        config.source.url.expose(),
        "postgres://walhook:pw@db.internal:5432/app?sslmode=require"
    );
    assert_eq!(config.source.slot, "walhook");
    assert_eq!(config.source.status_interval, Duration::from_secs(10));
    assert_eq!(config.source.heartbeat_interval, Duration::from_secs(60));
    assert_eq!(config.source.lag_warn_bytes, 1 << 30);
    assert!(
        matches!(&config.state, StateConfig::File { path } if path == Path::new("/etc/walhook/walhook-state.db")),
        "{:?}",
        config.state
    );
    assert_eq!(
        config.api.as_ref().unwrap().listen.to_string(),
        "127.0.0.1:9187"
    );
    let billing = config.subscriber("billing").unwrap();
    assert_eq!(
        billing.url.as_str(),
        "https://billing.internal/hooks/walhook"
    );
    assert_eq!(billing.headers[0].0, "Authorization");
    assert_eq!(billing.headers[0].1.expose(), "Bearer tok");
    assert_eq!(billing.concurrency, 16);
    assert_eq!(billing.batch_wait, Duration::from_millis(20));
    let rate = billing.rate_limit.expect("rate_limit");
    assert_eq!((rate.requests, rate.per), (3000, Duration::from_secs(60)));
    assert_eq!(
        billing.retry,
        RetryConfig {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(600),
            give_up_after: Duration::from_secs(3 * 86_400),
        }
    );
    assert_eq!(billing.signing_key.as_ref().unwrap().expose().len(), 24);
    let rule = &config.events[0];
    assert_eq!(rule.event_type, "order.created");
    assert_eq!(rule.table.to_string(), "public.orders");
    assert_eq!(rule.operations, vec![Operation::Insert]);
    assert_eq!(rule.key.as_deref(), Some(&["customer_id".to_string()][..]));
}

#[test]
fn defaults_fill_what_is_left_out() {
    let config = parse(
        r#"
        source.url = "postgres://localhost/app"
        subscribers.a.url = "http://127.0.0.1:9000/"
        [[events]]
        type = "t"
        table = "public.t"
        subscribers = ["a"]
        "#,
        Path::new("dir"),
        &env,
    )
    .unwrap();
    assert_eq!(config.source.slot, "walhook");
    assert_eq!(config.source.publication, "walhook");
    assert_eq!(config.source.status_interval, Duration::from_secs(10));
    assert_eq!(config.source.max_unsettled, 20_000);
    assert!(
        matches!(&config.state, StateConfig::File { path } if path == Path::new("dir/walhook-state.db")),
        "{:?}",
        config.state
    );
    assert!(config.api.is_none());
    let a = &config.subscribers[0];
    assert!(a.signing_key.is_none());
    assert_eq!((a.concurrency, a.batch_size), (16, 1));
    assert_eq!(
        a.batch_wait,
        Duration::ZERO,
        "a partial batch goes as soon as a slot is free"
    );
    assert_eq!(a.timeout, Duration::from_secs(10));
    assert_eq!(a.rate_limit, None);
    assert_eq!(config.events[0].operations, Operation::ALL.to_vec());
}

#[test]
fn a_failover_slot_is_asked_for_in_source_and_off_by_default() {
    let config = parse(&with_state(""), Path::new("dir"), &env).unwrap();
    assert!(!config.source.failover);
    let text = with_state("").replace(
        "source.url = \"postgres://localhost/app\"",
        "source.url = \"postgres://localhost/app\"\n        source.failover = true",
    );
    let config = parse(&text, Path::new("dir"), &env).unwrap();
    assert!(config.source.failover);
}

/// A config with `state` as its `[state]` section.
fn with_state(state: &str) -> String {
    format!(
        r#"
        source.url = "postgres://localhost/app"
        subscribers.a.url = "http://127.0.0.1:9000/"
        [state]
        {state}
        [[events]]
        type = "t"
        table = "public.t"
        subscribers = ["a"]
        "#
    )
}

#[test]
fn state_in_postgres_takes_its_url_with_variables_and_a_schema() {
    let text = with_state(r#"url = "postgres://walhook:${PGPASSWORD}@state.internal:5432/app""#);
    let config = parse(&text, Path::new("dir"), &env).unwrap();
    let StateConfig::Postgres { url, schema, lease } = &config.state else {
        panic!("{:?}", config.state);
    };
    assert_eq!(
        url.expose(),
        "postgres://walhook:pw@state.internal:5432/app"
    );
    assert_eq!(schema, "walhook");
    assert_eq!(*lease, std::time::Duration::from_secs(10));
    // The password never shows.
    assert!(!format!("{config:?}").contains("pw@"));

    let text = with_state(
        r#"url = "postgresql://walhook@state.internal/app"
        schema = "walhook_prod"
        lease = "3s""#,
    );
    let config = parse(&text, Path::new("dir"), &env).unwrap();
    assert!(
        matches!(&config.state, StateConfig::Postgres { schema, lease, .. }
            if schema == "walhook_prod" && *lease == std::time::Duration::from_secs(3)),
        "{:?}",
        config.state
    );
}

#[test]
fn state_is_a_file_or_postgres_never_both() {
    let errors = errors_of(&with_state(
        r#"path = "state.db"
        url = "postgres://walhook@state.internal/app"
        schema = "pg_x""#,
    ));
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(errors[0].starts_with("state.url: cannot be set together with state.path"));
    assert!(errors[1].starts_with("state.schema: must not start with `pg_`"));
    let errors = errors_of(&with_state(r#"schema = "walhook""#));
    assert_eq!(
        errors,
        ["state.schema: applies only to state in Postgres: set state.url too, e.g. `url = \"postgres://walhook:${PGPASSWORD}@db.internal:5432/app\"`, or remove it"]
    );
    // A lease is for standbys, which only a state in Postgres allows; and it has a floor.
    let errors = errors_of(&with_state(r#"lease = "10s""#));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].starts_with("state.lease: applies only to state in Postgres"));
    let errors = errors_of(&with_state(
        r#"url = "postgres://walhook@state.internal/app"
        lease = "500ms""#,
    ));
    assert_eq!(
        errors,
        ["state.lease: must be at least 1s (the leader renews it every quarter of it), e.g. `10s`; got `500ms`"]
    );
}

#[test]
fn secrets_never_show_in_debug_output() {
    let config = parse(DESIGN_EXAMPLE, Path::new("."), &env).unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains("pw@"), "{debug}");
    assert!(!debug.contains("Bearer tok"), "{debug}");
    assert!(!debug.contains("MfKQ9r8G"), "{debug}");
    assert!(debug.contains("[redacted]"));
}

#[test]
fn every_mistake_is_reported_at_once_with_its_key() {
    let errors = errors_of(
        r#"
        colour = "blue"
        [source]
        url = "mysql://db/app"
        slot = "Walhook-Slot"
        status_interval = "ten seconds"
        lag_warn = "lots"
        [subscribers.billing]
        url = "ftp://billing"
        secret = "not-a-secret"
        concurrency = 0
        rate_limit = "50 per second"
        retries = 3
        headers = { "webhook-id" = "x", "Bad Header" = "y" }
        [[events]]
        type = "order..created"
        table = "orders"
        operations = ["insert", "upsert"]
        subscribers = ["biling"]
        when = "row.status =="
        [[events]]
        type = "x"
        table = "public.x"
        subscribers = []
        columns = []
        "#,
    );
    let want = [
        "colour: unknown key; the keys here are source, state, api, subscribers, events",
        "source.url: must be a postgres:// URL with a host, e.g. `postgres://walhook:${PGPASSWORD}@db.internal:5432/app`",
        "source.lag_warn: must be a size: a whole number with unit B, kB, MB, GB or TB, e.g. `1GB`; got `lots`",
        "source.slot: must be 1 to 63 lower-case letters, digits or `_`, e.g. `walhook`; got `Walhook-Slot`",
        "source.status_interval: must be a duration: a whole number with unit ms, s, m, h or d, e.g. `10s`; got `ten seconds`",
        "subscribers.billing.retries: unknown key; the keys here are url, secret, headers, timeout, concurrency, batch_size, batch_wait, retry, initial_backfill, h2c, rate_limit",
        "subscribers.billing.rate_limit: must be a number of requests per second, minute or hour (a whole number above 0, then /s, /m or /h), e.g. `50/s` or `3000/m`; got `50 per second`",
        "subscribers.billing.url: must be an http or https URL with a host, e.g. `https://billing.internal/hooks/walhook`; got `ftp://billing`",
        "subscribers.billing.secret: must be a Standard Webhooks secret: `whsec_` then base64, e.g. `whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw`",
        "subscribers.billing.headers.Bad Header: must be an HTTP header name (letters, digits, `-`), e.g. `Authorization`",
        "subscribers.billing.headers.webhook-id: walhook sets `webhook-id` itself; choose another header, e.g. `X-Source`",
        "subscribers.billing.concurrency: must be a whole number from 1 to 1000000, e.g. `16`; got `0`",
        "events[0].type: must be a dot-separated name of letters, digits, `_` and `-`, e.g. `order.created`; got `order..created`",
        "events[0].table: must be written `schema.table`, e.g. `public.orders`; got `orders`",
        "events[0].operations[1]: must be one of insert, update, delete, truncate, e.g. `insert`; got `upsert`",
        "events[0].subscribers[0]: no subscriber named `biling`; declared: billing",
        "events[1].subscribers: must name at least one subscriber, e.g. `[\"billing\"]`",
        "events[1].columns: must list one or more column names, e.g. `[\"id\", \"status\"]`",
    ];
    for line in want {
        assert!(
            errors.iter().any(|e| e == line),
            "missing `{line}` in {errors:#?}"
        );
    }
    let when = errors
        .iter()
        .find(|e| e.starts_with("events[0].when: is not a valid CEL expression"));
    assert!(when.is_some(), "{errors:#?}");
    assert_eq!(errors.len(), want.len() + 1, "{errors:#?}");
}

#[test]
fn missing_essentials_are_named() {
    let errors = errors_of("");
    assert_eq!(
        errors,
        [
            "source.url: is required: the database to stream from, e.g. `postgres://walhook:${PGPASSWORD}@db.internal:5432/app`",
            "events: at least one [[events]] rule is needed, e.g. `[[events]] type = \"order.created\" table = \"public.orders\" operations = [\"insert\"] subscribers = [\"billing\"]`",
        ]
    );
}

#[test]
fn unset_variables_are_errors_with_their_key() {
    let errors = errors_of(
        r#"
        source.url = "postgres://u:${NOT_SET}@h/db"
        subscribers.a = { url = "http://x/", headers = { "X-Token" = "${ALSO_NOT_SET}" } }
        "#,
    );
    assert_eq!(
        errors,
        [
            "source.url: environment variable `NOT_SET` is not set; set it, or give a default like `${NOT_SET:-value}`",
            "subscribers.a.headers.X-Token: environment variable `ALSO_NOT_SET` is not set; set it, or give a default like `${ALSO_NOT_SET:-value}`",
        ]
    );
}

#[test]
fn retry_bounds_must_make_sense() {
    let errors = errors_of(
        r#"
        source.url = "postgres://h/db"
        subscribers.a = { url = "http://x/", retry = { initial = "0s", max = "10m", jitter = true } }
        [[events]]
        type = "t"
        table = "public.t"
        subscribers = ["a"]
        "#,
    );
    assert_eq!(
        errors,
        [
            "subscribers.a.retry.jitter: unknown key; the keys here are initial, max, give_up_after",
            "subscribers.a.retry.initial: must be more than 0, e.g. `1s`",
        ]
    );
}

#[test]
fn an_initial_backfill_needs_a_rule_that_sends_inserts() {
    let rules = r#"
        source.url = "postgres://h/db"
        subscribers.a = { url = "http://x/", initial_backfill = true }
        subscribers.b = { url = "http://x/", initial_backfill = true }
        [[events]]
        type = "t.changed"
        table = "public.t"
        operations = ["insert", "update"]
        subscribers = ["a"]
        [[events]]
        type = "t.gone"
        table = "public.t"
        operations = ["delete"]
        subscribers = ["b"]
        "#;
    assert_eq!(
        errors_of(rules),
        [
            "subscribers.b.initial_backfill: needs an [[events]] rule with operations including \"insert\" for `b`: a backfill sends rows through those rules, e.g. `operations = [\"insert\", \"update\", \"delete\"]`",
        ]
    );
    let config = parse(
        &rules.replace("[\"delete\"]", "[\"insert\"]"),
        Path::new("."),
        &env,
    )
    .unwrap();
    assert!(config.subscribers.iter().all(|s| s.initial_backfill));
}

#[test]
fn toml_syntax_errors_say_where() {
    match parse("[source\nurl = 1", Path::new("."), &env) {
        Err(ParseError::Syntax(message)) => assert!(message.contains("line 1"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn example_config_in_the_repository_is_valid() {
    let text = include_str!("../../config.example.toml");
    let config = parse(text, Path::new("."), &|_| None).unwrap();
    assert_eq!(config.events.len(), 3);
    assert_eq!(config.subscribers.len(), 2);
}

#[test]
fn the_canary_is_a_table_of_walhooks_own() {
    let config = parse(
        r#"
        source.url = "postgres://h/db"
        source.canary = "ops.walhook_canary"
        subscribers.s.url = "http://127.0.0.1:9/s"
        [[events]]
        type = "order.created"
        table = "public.orders"
        subscribers = ["s"]
        "#,
        Path::new("."),
        &|_| None,
    )
    .unwrap();
    let canary = config.source.canary.unwrap();
    assert_eq!(
        (canary.schema.as_str(), canary.name.as_str()),
        ("ops", "walhook_canary")
    );

    let errors = errors_of(
        r#"
        source.url = "postgres://h/db"
        source.canary = "walhook_canary"
        subscribers.s.url = "http://127.0.0.1:9/s"
        [[events]]
        type = "order.created"
        table = "public.orders"
        subscribers = ["s"]
        "#,
    );
    assert_eq!(
        errors,
        ["source.canary: must be written `schema.table`, e.g. `public.walhook_canary`; got `walhook_canary`"]
    );
    let errors = errors_of(
        r#"
        source.url = "postgres://h/db"
        source.canary = "public.orders"
        subscribers.s.url = "http://127.0.0.1:9/s"
        [[events]]
        type = "order.created"
        table = "public.orders"
        subscribers = ["s"]
        "#,
    );
    assert_eq!(
        errors,
        ["source.canary: must be a table of walhook's own, not one that [[events]] rules map, e.g. `public.walhook_canary`; got `public.orders`"]
    );
}

#[test]
fn h2c_is_for_http_urls_only() {
    let with = |url: &str| {
        format!(
            r#"
            source.url = "postgres://localhost/app"
            subscribers.a.url = "{url}"
            subscribers.a.h2c = true
            [[events]]
            type = "t"
            table = "public.t"
            subscribers = ["a"]
            "#
        )
    };
    let config = parse(&with("http://127.0.0.1:9000/"), Path::new("."), &env).unwrap();
    assert!(config.subscribers[0].h2c);
    assert_eq!(
        errors_of(&with("https://billing.internal/hooks")),
        ["subscribers.a.h2c: cleartext HTTP/2 applies to `http://` URLs; an `https://` receiver that offers HTTP/2 gets it without this key (TLS negotiates it), so remove `h2c`"]
    );
}

#[test]
fn the_api_token_is_a_secret_from_the_environment_and_must_not_be_blank() {
    let with_api = |api: &str| {
        format!(
            "source.url = \"postgres://localhost/app\"\nsubscribers.a.url = \"http://127.0.0.1:9000/\"\n\
             [[events]]\ntype = \"t\"\ntable = \"public.t\"\nsubscribers = [\"a\"]\n[api]\n{api}\n"
        )
    };
    let lookup = |name: &str| (name == "WALHOOK_API_TOKEN").then(|| "t0ken-from-env".to_string());
    let config = parse(
        &with_api("token = \"${WALHOOK_API_TOKEN}\""),
        Path::new("dir"),
        &lookup,
    )
    .unwrap();
    let api = config.api.unwrap();
    assert_eq!(
        api.token.as_ref().map(Secret::expose),
        Some("t0ken-from-env")
    );
    assert_eq!(format!("{api:?}").matches("t0ken").count(), 0, "{api:?}");
    // Without a token there is none (and no control route).
    assert!(parse(&with_api(""), Path::new("dir"), &lookup)
        .unwrap()
        .api
        .unwrap()
        .token
        .is_none());
    for blank in ["token = \"\"", "token = \"a b\"", "token = \"${EMPTY:-}\""] {
        let errors = match parse(&with_api(blank), Path::new("dir"), &lookup) {
            Err(ParseError::Invalid(errors)) => errors,
            other => panic!("{blank}: expected an error, got {other:?}"),
        };
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].key, "api.token");
        assert!(
            errors[0]
                .message
                .starts_with("must be a non-empty bearer token"),
            "{}",
            errors[0].message
        );
    }
}
