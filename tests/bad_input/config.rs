//! Every invalid shape of the config file gets a clear error: the key, what is wrong, and (where
//! a value is wrong) an example of a good one; all problems at once, from the library and from
//! the binary alike.

use std::path::Path;
use std::time::Duration;

use walhook::config::{parse, ParseError};

use crate::faults::harness::{fresh_dir, walhook_command, write_config, Process};

/// A valid config; each case below changes one thing in it.
const GOOD: &str = r#"
[source]
url = "postgres://walhook:pw@db.internal:5432/app"
slot = "walhook"
publication = "walhook"
status_interval = "10s"
heartbeat_interval = "1m"
lag_warn = "1GB"
max_unsettled = 20000

[state]
path = "walhook-state.db"

[api]
listen = "127.0.0.1:9187"

[subscribers.billing]
url = "https://billing.internal/hooks"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
headers = { "Authorization" = "Bearer abc" }
timeout = "10s"
concurrency = 16
batch_size = 1
batch_wait = "20ms"
retry = { initial = "1s", max = "10m", give_up_after = "3d" }

[[events]]
type = "order.created"
table = "public.orders"
operations = ["insert"]
subscribers = ["billing"]
"#;

/// One invalid shape: `from` replaced by `to` in [`GOOD`] (or `to` appended when `from` is
/// empty) must give an error at `key` whose message contains `says`.
struct Case {
    from: &'static str,
    to: &'static str,
    key: &'static str,
    says: &'static str,
}

const fn case(from: &'static str, to: &'static str, key: &'static str, says: &'static str) -> Case {
    Case {
        from,
        to,
        key,
        says,
    }
}

const CASES: &[Case] = &[
    // Unknown keys, at every level.
    case("", "[sources]\nurl = \"x\"\n", "sources", "unknown key; the keys here are source, state, api, subscribers, events"),
    case("slot = \"walhook\"", "sloot = \"walhook\"", "source.sloot", "unknown key; the keys here are url, slot"),
    case("path = \"walhook-state.db\"", "file = \"x.db\"", "state.file", "unknown key; the keys here are path, url, schema"),
    case("listen = \"127.0.0.1:9187\"", "bind = \"127.0.0.1:9187\"", "api.bind", "unknown key; the keys here are listen"),
    case("timeout = \"10s\"", "timeout_ms = 10", "subscribers.billing.timeout_ms", "unknown key; the keys here are url, secret"),
    case("give_up_after = \"3d\"", "give_up = \"3d\"", "subscribers.billing.retry.give_up", "unknown key; the keys here are initial, max, give_up_after"),
    case("operations = [\"insert\"]", "operations = [\"insert\"]\nfilter = \"x\"", "events[0].filter", "unknown key; the keys here are type, table"),
    // [source]
    case("url = \"postgres://walhook:pw@db.internal:5432/app\"", "", "source.url", "is required: the database to stream from, e.g. `postgres://"),
    case("postgres://walhook:pw@db.internal:5432/app", "mysql://db.internal/app", "source.url", "must be a postgres:// URL with a host, e.g. `postgres://"),
    case("slot = \"walhook\"", "slot = \"Walhook-1\"", "source.slot", "must be 1 to 63 lower-case letters, digits or `_`, e.g. `walhook`; got `Walhook-1`"),
    case("publication = \"walhook\"", "publication = \"\"", "source.publication", "must be 1 to 63 lower-case letters"),
    case("status_interval = \"10s\"", "status_interval = \"10\"", "source.status_interval", "must be a duration: a whole number with unit ms, s, m, h or d, e.g. `10s`; got `10`"),
    case("heartbeat_interval = \"1m\"", "heartbeat_interval = \"1 minute\"", "source.heartbeat_interval", "must be a duration"),
    case("lag_warn = \"1GB\"", "lag_warn = \"lots\"", "source.lag_warn", "must be a size: a whole number with unit B, kB, MB, GB or TB, e.g. `1GB`; got `lots`"),
    case("max_unsettled = 20000", "max_unsettled = 0", "source.max_unsettled", "must be a whole number from 1 to 1000000, e.g. `20000`; got `0`"),
    // [state] and [api]
    case("path = \"walhook-state.db\"", "path = \"\"", "state.path", "must be a file path, e.g. `walhook-state.db`"),
    case("listen = \"127.0.0.1:9187\"", "listen = \"localhost\"", "api.listen", "must be an IP address and port, e.g. `127.0.0.1:9187`; got `localhost`"),
    // [subscribers.*]
    case("", "[subscribers.\"bill ing\"]\nurl = \"https://x.internal/\"\n", "subscribers.bill ing", "a subscriber name may hold letters, digits, `_` and `-`, e.g. `[subscribers.billing]`"),
    case("url = \"https://billing.internal/hooks\"", "", "subscribers.billing.url", "must be an http or https URL with a host, e.g. `https://billing.internal/hooks/walhook`; it is missing"),
    case("https://billing.internal/hooks", "ftp://billing.internal/hooks", "subscribers.billing.url", "must be an http or https URL with a host, e.g. `https://billing.internal/hooks/walhook`; got `ftp://billing.internal/hooks`"),
    case("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "subscribers.billing.secret", "must be a Standard Webhooks secret: `whsec_` then base64, e.g. `whsec_"),
    case("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!", "subscribers.billing.secret", "must be a Standard Webhooks secret"),
    case("\"Authorization\" = \"Bearer abc\"", "\"webhook-id\" = \"mine\"", "subscribers.billing.headers.webhook-id", "walhook sets `webhook-id` itself; choose another header, e.g. `X-Source`"),
    case("\"Authorization\" = \"Bearer abc\"", "\"Bad Header\" = \"x\"", "subscribers.billing.headers.Bad Header", "must be an HTTP header name (letters, digits, `-`), e.g. `Authorization`"),
    case("\"Authorization\" = \"Bearer abc\"", "\"Authorization\" = \"Bearer abc\\r\\nX-Evil: 1\"", "subscribers.billing.headers.Authorization", "must not contain control characters or newlines, e.g. `Bearer abc123`"),
    case("timeout = \"10s\"", "timeout = \"fast\"", "subscribers.billing.timeout", "must be a duration"),
    case("concurrency = 16", "concurrency = 0", "subscribers.billing.concurrency", "must be a whole number from 1 to 1000000, e.g. `16`; got `0`"),
    case("batch_size = 1", "batch_size = 2000000", "subscribers.billing.batch_size", "must be a whole number from 1 to 1000000, e.g. `100`; got `2000000`"),
    case("batch_wait = \"20ms\"", "batch_wait = \"-1s\"", "subscribers.billing.batch_wait", "must be a duration"),
    case("initial = \"1s\"", "initial = \"0s\"", "subscribers.billing.retry.initial", "must be more than 0, e.g. `1s`"),
    case("max = \"10m\"", "max = \"500ms\"", "subscribers.billing.retry.max", "must be at least retry.initial, e.g. `initial = \"1s\", max = \"10m\"`"),
    case("give_up_after = \"3d\"", "give_up_after = \"forever\"", "subscribers.billing.retry.give_up_after", "must be a duration"),
    // [[events]]
    case("type = \"order.created\"", "type = \"Order Created\"", "events[0].type", "must be a dot-separated name of letters, digits, `_` and `-`, e.g. `order.created`; got `Order Created`"),
    case("type = \"order.created\"", "type = \"order..created\"", "events[0].type", "must be a dot-separated name"),
    case("table = \"public.orders\"", "table = \"orders\"", "events[0].table", "must be written `schema.table`, e.g. `public.orders`; got `orders`"),
    case("operations = [\"insert\"]", "operations = []", "events[0].operations", "must name at least one of insert, update, delete, truncate, e.g. `[\"insert\"]`"),
    case("operations = [\"insert\"]", "operations = [\"upsert\"]", "events[0].operations[0]", "must be one of insert, update, delete, truncate, e.g. `insert`; got `upsert`"),
    case("subscribers = [\"billing\"]", "subscribers = []", "events[0].subscribers", "must name at least one subscriber, e.g. `[\"billing\"]`"),
    case("subscribers = [\"billing\"]", "subscribers = [\"biling\"]", "events[0].subscribers[0]", "no subscriber named `biling`; declared: billing"),
    case("operations = [\"insert\"]", "operations = [\"insert\"]\nwhen = \"row.status ==\"", "events[0].when", "is not a valid CEL expression"),
    case("operations = [\"insert\"]", "operations = [\"insert\"]\ncolumns = []", "events[0].columns", "must list one or more column names, e.g. `[\"id\", \"status\"]`"),
    case("operations = [\"insert\"]", "operations = [\"insert\"]\nkey = [\"id\", \"id\"]", "events[0].key", "names column `id` twice"),
    case("[[events]]\ntype = \"order.created\"\ntable = \"public.orders\"\noperations = [\"insert\"]\nsubscribers = [\"billing\"]\n", "", "events", "at least one [[events]] rule is needed, e.g. `[[events]]"),
    // ${VAR} expansion
    case("walhook:pw@", "walhook:${WALHOOK_TEST_UNSET_VAR}@", "source.url", "environment variable `WALHOOK_TEST_UNSET_VAR` is not set; set it, or give a default like `${WALHOOK_TEST_UNSET_VAR:-value}`"),
    case("walhook:pw@", "walhook:${PGPASSWORD@", "source.url", "`${` is not closed; write variables like `${PGPASSWORD}`"),
    case("walhook:pw@", "walhook:${PG-PASS}@", "source.url", "`PG-PASS` is not a variable name; use letters, digits and `_`, e.g. `${PGPASSWORD}`"),
    // [state] in Postgres (last: a test below picks cases by index)
    case("path = \"walhook-state.db\"", "path = \"walhook-state.db\"\nurl = \"postgres://walhook:pw@db.internal:5432/app\"", "state.url", "cannot be set together with state.path: the state is either an SQLite file (`path`) or a schema in Postgres (`url`); remove one, e.g. keep `url = \"postgres://"),
    case("path = \"walhook-state.db\"", "path = \"walhook-state.db\"\nschema = \"walhook\"", "state.schema", "applies only to state in Postgres: set state.url too, e.g. `url = \"postgres://"),
    case("path = \"walhook-state.db\"", "url = \"mysql://db.internal/app\"", "state.url", "must be a postgres:// URL with a host, e.g. `postgres://walhook:${PGPASSWORD}@db.internal:5432/app`"),
    case("path = \"walhook-state.db\"", "url = \"postgres://db.internal/app\"\nschema = \"Walhook State\"", "state.schema", "must be 1 to 63 lower-case letters, digits or `_`, e.g. `walhook`; got `Walhook State`"),
    case("path = \"walhook-state.db\"", "url = \"postgres://db.internal/app\"\nschema = \"pg_walhook\"", "state.schema", "must not start with `pg_` (Postgres reserves those names), e.g. `walhook`; got `pg_walhook`"),
];

fn apply(case: &Case) -> String {
    if case.from.is_empty() {
        return format!("{GOOD}{}", case.to);
    }
    assert!(
        GOOD.contains(case.from),
        "case edits `{}`, not in GOOD",
        case.from
    );
    GOOD.replacen(case.from, case.to, 1)
}

fn errors(text: &str) -> Vec<walhook::config::ConfigError> {
    match parse(text, Path::new("/tmp"), &|_| None) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(ParseError::Invalid(errors)) => errors,
        Err(ParseError::Syntax(message)) => panic!("a syntax error ({message}) for:\n{text}"),
    }
}

#[test]
fn the_good_config_is_good() {
    parse(GOOD, Path::new("/tmp"), &|_| None).unwrap();
}

#[test]
fn each_invalid_shape_names_its_key_what_is_wrong_and_a_good_example() {
    for case in CASES {
        let text = apply(case);
        let found = errors(&text);
        assert_eq!(
            found.len(),
            1,
            "`{}` -> `{}` gave {} errors: {found:#?}",
            case.from,
            case.to,
            found.len()
        );
        assert_eq!(found[0].key, case.key, "{found:#?}");
        assert!(
            found[0].message.contains(case.says),
            "`{}` -> `{}`: the message for {} is\n  {}\nand does not say\n  {}",
            case.from,
            case.to,
            case.key,
            found[0].message,
            case.says
        );
    }
    println!(
        "config: {} invalid shapes, each named with its key",
        CASES.len()
    );
}

/// Config text that must be refused as a syntax error whose message contains `says`.
fn syntax_error(from: &str, to: &str, says: &str) {
    let text = GOOD.replacen(from, to, 1);
    match parse(&text, Path::new("/tmp"), &|_| None) {
        Err(ParseError::Syntax(message)) => {
            assert!(message.contains(says), "`{to}`: {message}")
        }
        other => panic!("`{to}`: {other:?}"),
    }
}

#[test]
fn broken_toml_is_a_syntax_error_that_points_at_the_line() {
    syntax_error("[source]", "[source", "line 2");
    syntax_error("slot = \"walhook\"", "slot = walhook", "line 4");
    syntax_error(
        "slot = \"walhook\"",
        "slot = \"walhook\"\nslot = \"again\"",
        "duplicate key",
    );
}

#[test]
fn a_value_of_the_wrong_type_names_its_key() {
    syntax_error("concurrency = 16", "concurrency = \"16\"", "concurrency");
    syntax_error(
        "max_unsettled = 20000",
        "max_unsettled = \"many\"",
        "max_unsettled",
    );
    syntax_error(
        "operations = [\"insert\"]",
        "operations = \"insert\"",
        "operations",
    );
}

#[tokio::test]
async fn the_binary_reports_every_problem_at_once_and_exits_1() {
    // GIVEN a config with six problems in different sections
    let mut text = GOOD.to_string();
    let six = [
        &CASES[2], &CASES[9], &CASES[16], &CASES[26], &CASES[36], &CASES[38],
    ];
    for case in six {
        assert!(text.contains(case.from), "{}", case.from);
        text = text.replacen(case.from, case.to, 1);
    }
    let dir = fresh_dir(&format!("config-{}", std::process::id()));
    let path = write_config(&dir, &text);
    // WHEN `walhook check` and `walhook run` load it
    for command in ["check", "run"] {
        let (code, output) = Process::spawn(walhook_command(&path, &[command]))
            .exit(Duration::from_secs(30))
            .await;
        // THEN each exits 1 listing all six, each with its key
        assert_eq!(code, Some(1), "{output}");
        assert!(
            output.contains(&format!(
                "error: config file {} has 6 problem(s):",
                path.display()
            )),
            "{output}"
        );
        for case in six {
            assert!(
                output.contains(&format!("  - {}: {}", case.key, case.says)),
                "{}: {output}",
                case.key
            );
        }
    }
    // AND a missing config file names the path and the way to give another
    let (code, output) = Process::spawn(walhook_command(&dir.join("nope.toml"), &["run"]))
        .exit(Duration::from_secs(30))
        .await;
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("nope.toml"), "{output}");
    assert!(
        output.contains("pass --config or set WALHOOK_CONFIG"),
        "{output}"
    );
}
