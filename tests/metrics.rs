//! The `[api]` endpoints of a running walhook: `/health`, `/ready`, and `/metrics` as
//! Prometheus text whose counters match what was delivered.
//!
//! The metrics recorder is process-wide and other tests run walhooks in this process at the
//! same time, so the assertions read only this test's subscriber (named after its database).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use crate::e2e::{shop, state_dir, wait_streaming, Walhook};
use crate::support::receiver::{Receiver, Reply};
use crate::support::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_report_readiness_and_count_every_delivered_event() {
    // GIVEN an open transaction with a write, which makes creating the slot wait for it
    let db = TestDb::new().await;
    let client = shop(&db).await;
    let blocker = db.client().await;
    blocker
        .batch_execute("BEGIN; INSERT INTO customers VALUES (999, 'held', 'held', 'held')")
        .await
        .unwrap();
    let receiver = Receiver::start().await;
    let subscriber = db.name();
    let listen = free_local_addr();
    let config = config(&db, listen, &receiver, "");
    let http = reqwest::Client::new();
    let base = format!("http://{listen}");

    // WHEN walhook starts while the slot cannot be created yet
    let walhook = Walhook::start(&config, &state_dir(&db));
    // THEN it is alive but not ready
    let health = wait_for_answer(&http, &format!("{base}/health")).await;
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok");
    let (status, reason) = get(&http, &format!("{base}/ready")).await;
    assert_eq!(status, 503, "{reason}");
    assert!(reason.starts_with("not streaming"), "{reason}");
    // (While it is being created the slot is active too, held by the creating backend: only a
    // walsender holding it means streaming.)
    let walsender = client
        .query_opt(
            "SELECT 1 FROM pg_replication_slots s JOIN pg_stat_activity a ON a.pid = s.active_pid
             WHERE s.slot_name = $1 AND a.backend_type = 'walsender'",
            &[&subscriber],
        )
        .await
        .unwrap();
    assert!(
        walsender.is_none(),
        "walhook streams although its slot cannot be created yet"
    );

    // WHEN the transaction ends THEN walhook streams and is ready
    blocker.batch_execute("COMMIT").await.unwrap();
    wait_streaming(&client, subscriber).await;
    wait_until_ready(&http, &format!("{base}/ready")).await;

    // WHEN five orders are committed, one transaction each, and delivered
    const N: f64 = 5.0;
    for id in 1..=5i64 {
        client
            .execute("INSERT INTO orders VALUES ($1, 1, 'new', 1)", &[&id])
            .await
            .unwrap();
    }
    receiver
        .wait_for(|r| r.len() == 5, Duration::from_secs(30))
        .await;
    // THEN /metrics counts each of them once, for this subscriber and event type
    let sub = [("subscriber", subscriber)];
    let delivered = [("subscriber", subscriber), ("event_type", "order.created")];
    let exposition = scrape_until(&http, &base, |e| {
        e.value("walhook_events_delivered_total", &delivered) == Some(N)
    })
    .await;
    let response = http.get(format!("{base}/metrics")).send().await.unwrap();
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    for (family, kind) in [
        ("walhook_changes_decoded_total", "counter"),
        ("walhook_events_delivered_total", "counter"),
        ("walhook_delivery_latency_seconds", "histogram"),
        ("walhook_request_duration_seconds", "histogram"),
        ("walhook_retry_backlog", "gauge"),
        ("walhook_confirmed_lsn", "gauge"),
        ("walhook_replication_connected", "gauge"),
        ("walhook_status_update_age_seconds", "gauge"),
    ] {
        assert_eq!(
            exposition.types.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }
    let latency = "walhook_delivery_latency_seconds";
    assert_eq!(exposition.value(&format!("{latency}_count"), &sub), Some(N));
    let sum = exposition.value(&format!("{latency}_sum"), &sub).unwrap();
    assert!(sum > 0.0 && sum < 30.0 * N, "latency sum {sum}");
    assert_eq!(exposition.buckets(latency, &sub).last(), Some(&N));
    let requests = "walhook_request_duration_seconds";
    assert_eq!(
        exposition.value(&format!("{requests}_count"), &sub),
        Some(N)
    );
    for counter in [
        "walhook_events_failed_total",
        "walhook_events_dead_lettered_total",
    ] {
        assert_eq!(
            exposition.value(counter, &delivered),
            Some(0.0),
            "{counter}"
        );
    }
    assert_eq!(exposition.value("walhook_retry_backlog", &sub), Some(0.0));
    assert!(
        exposition
            .value("walhook_changes_decoded_total", &[])
            .unwrap()
            >= N
    );
    assert!(exposition.value("walhook_confirmed_lsn", &[]).unwrap() > 0.0);
    let age = exposition
        .value("walhook_status_update_age_seconds", &[])
        .unwrap();
    assert!((0.0..60.0).contains(&age), "status age {age}");

    // WHEN walhook stops THEN the endpoints are gone with it
    walhook.stop().await;
    assert!(http.get(format!("{base}/health")).send().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_dead_letters_and_the_retry_backlog_are_counted() {
    // GIVEN a receiver that is down, and answers 400 to order 1 once it is back
    let db = TestDb::new().await;
    let client = shop(&db).await;
    let receiver = Receiver::with_policy(|r, _| match r.json()["data"]["row"]["id"].as_i64() {
        Some(1) => Reply::status(400),
        _ => Reply::ok(),
    })
    .await;
    receiver.stop().await;
    let subscriber = db.name();
    let listen = free_local_addr();
    let config = config(
        &db,
        listen,
        &receiver,
        r#"retry = { initial = "200ms", max = "1s" }"#,
    );
    let http = reqwest::Client::new();
    let base = format!("http://{listen}");
    let walhook = Walhook::start(&config, &state_dir(&db));
    wait_streaming(&client, subscriber).await;
    // WHEN four orders are committed while it is down
    for id in 1..=4i64 {
        client
            .execute("INSERT INTO orders VALUES ($1, 1, 'new', 1)", &[&id])
            .await
            .unwrap();
    }
    // THEN all four are held for a later attempt, after at least one failed attempt
    let sub = [("subscriber", subscriber)];
    let typed = [("subscriber", subscriber), ("event_type", "order.created")];
    let held = scrape_until(&http, &base, |e| {
        e.value("walhook_retry_backlog", &sub) == Some(4.0)
    })
    .await;
    assert!(held.value("walhook_events_failed_total", &typed).unwrap() >= 1.0);
    assert_eq!(
        held.value("walhook_events_delivered_total", &typed),
        Some(0.0)
    );
    // WHEN the receiver is back THEN three are delivered, one dead-lettered, none held
    receiver.restart().await;
    let done = scrape_until(&http, &base, |e| {
        e.value("walhook_retry_backlog", &sub) == Some(0.0)
            && e.value("walhook_events_dead_lettered_total", &typed) == Some(1.0)
    })
    .await;
    assert_eq!(
        done.value("walhook_events_delivered_total", &typed),
        Some(3.0)
    );
    let latency_count = done.value("walhook_delivery_latency_seconds_count", &sub);
    assert_eq!(latency_count, Some(3.0));
    let failed = done.value("walhook_events_failed_total", &typed).unwrap();
    assert!(failed >= 2.0, "the refused connect and the 400: {failed}");
    walhook.stop().await;
}

/// One `order.created` subscriber named after the test's database, with the api on `listen`
/// and `extra` lines in the subscriber's section.
fn config(db: &TestDb, listen: SocketAddr, receiver: &Receiver, extra: &str) -> String {
    format!(
        r#"[source]
        url = "{url}"
        slot = "{name}"
        publication = "{name}"
        status_interval = "1s"
        [api]
        listen = "{listen}"
        [subscribers.{name}]
        url = "{receiver}"
        {extra}
        [[events]]
        type = "order.created"
        table = "public.orders"
        operations = ["insert"]
        subscribers = ["{name}"]
        "#,
        url = db.url(),
        name = db.name(),
        receiver = receiver.url("/"),
    )
}

/// Scrapes `/metrics`, parsing every answer strictly, until `condition` holds.
async fn scrape_until(
    http: &reqwest::Client,
    base: &str,
    condition: impl Fn(&Exposition) -> bool,
) -> Exposition {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, text) = get(http, &format!("{base}/metrics")).await;
        assert_eq!(status, 200);
        let exposition = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        if condition(&exposition) {
            return exposition;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the metrics never got there:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An address on loopback that was free a moment ago.
fn free_local_addr() -> SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap()
}

async fn get(http: &reqwest::Client, url: &str) -> (u16, String) {
    let response = http
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The first answer from `url`, once the server listens.
async fn wait_for_answer(http: &reqwest::Client, url: &str) -> reqwest::Response {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match http.get(url).send().await {
            Ok(response) => return response,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "{url} never answered: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_until_ready(http: &reqwest::Client, url: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, reason) = get(http, url).await;
        if status == 200 {
            assert_eq!(reason, "ready\n");
            return;
        }
        assert_eq!(status, 503, "{reason}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "never ready: {reason}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Prometheus text exposition, as far as these tests read it.
#[derive(Debug, Default)]
struct Exposition {
    /// Metric family to its `# TYPE`.
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

impl Exposition {
    /// The value of the one sample named `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = self.matching(name, labels);
        let sample = found.next()?;
        assert!(found.next().is_none(), "{name} {labels:?} is ambiguous");
        Some(sample.value)
    }

    /// A histogram's cumulative bucket counts, by ascending `le`; checks they never decrease
    /// and that the last is `+Inf`.
    fn buckets(&self, family: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        let mut buckets: Vec<(f64, f64)> = self
            .matching(&format!("{family}_bucket"), labels)
            .map(|s| (s.labels["le"].parse::<f64>().unwrap(), s.value))
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert_eq!(buckets.last().map(|b| b.0), Some(f64::INFINITY));
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
        buckets.into_iter().map(|(_, count)| count).collect()
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }
}

/// Parses the text format strictly: every line is blank, a `# HELP`/`# TYPE` line, a comment,
/// or a well-formed sample of a family whose type was declared before it.
fn parse(text: &str) -> Result<Exposition, String> {
    let mut exposition = Exposition::default();
    for (n, line) in text.lines().enumerate() {
        let fail = |what: &str| format!("line {}: {what}: `{line}`", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _) = rest.split_once(' ').unwrap_or((rest, ""));
            if !is_metric_name(name) {
                return Err(fail("bad metric name in HELP"));
            }
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| fail("TYPE without a type"))?;
            if !is_metric_name(name) {
                return Err(fail("bad metric name in TYPE"));
            }
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(fail("unknown type"));
            }
            if exposition.types.insert(name.into(), kind.into()).is_some() {
                return Err(fail("a second TYPE for the same family"));
            }
        } else if line.starts_with('#') {
            continue;
        } else {
            let sample = parse_sample(line).map_err(|e| fail(&e))?;
            let family = family_of(&sample.name, &exposition.types)
                .ok_or_else(|| fail("a sample of an undeclared family"))?;
            if exposition.types[family] == "histogram"
                && sample.name.ends_with("_bucket")
                && !sample.labels.contains_key("le")
            {
                return Err(fail("a histogram bucket without `le`"));
            }
            exposition.samples.push(sample);
        }
    }
    Ok(exposition)
}

/// `name{label="value",...} value [timestamp]`
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err("bad metric name".into());
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let close = loop {
            match chars.peek() {
                Some(&(i, '}')) => break i,
                Some(_) => {}
                None => return Err("unclosed `{`".into()),
            }
            let start = chars.peek().map(|&(i, _)| i).unwrap_or(0);
            let mut label = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                label.push(c);
            }
            if !is_label_name(&label) {
                return Err(format!("bad label name at {start}"));
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label `{label}` has no quoted value"));
            }
            let mut value = String::new();
            loop {
                match chars.next().map(|(_, c)| c) {
                    Some('"') => break,
                    Some('\\') => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        _ => return Err(format!("bad escape in label `{label}`")),
                    },
                    Some(c) => value.push(c),
                    None => return Err(format!("unterminated value of label `{label}`")),
                }
            }
            if labels.insert(label.clone(), value).is_some() {
                return Err(format!("label `{label}` twice"));
            }
            match chars.peek() {
                Some((_, ',')) => {
                    chars.next();
                }
                Some((_, '}')) => {}
                _ => return Err("labels must be separated by `,`".into()),
            }
        };
        rest = &inner[close + 1..];
    }
    let mut fields = rest
        .strip_prefix(' ')
        .ok_or("no space before the value")?
        .split(' ');
    let value = fields.next().ok_or("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v if v.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.') => {
            v.parse().map_err(|_| format!("bad value `{v}`"))?
        }
        v => return Err(format!("bad value `{v}`")),
    };
    if let Some(timestamp) = fields.next() {
        timestamp
            .parse::<i64>()
            .map_err(|_| format!("bad timestamp `{timestamp}`"))?;
    }
    if fields.next().is_some() {
        return Err("text after the timestamp".into());
    }
    Ok(Sample {
        name: name.into(),
        labels,
        value,
    })
}

/// The declared family a sample belongs to: its own name, or a histogram's or summary's
/// `_bucket`/`_sum`/`_count` series.
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let family = name.strip_suffix(suffix)?;
        match types.get(family).map(String::as_str) {
            Some("histogram") => Some(family),
            Some("summary") if *suffix != "_bucket" => Some(family),
            _ => None,
        }
    })
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[test]
fn the_parser_rejects_malformed_exposition() {
    let good = "# HELP a_total Things.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\"} 3\n\
                # TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.5\nh_count 2 1700000000000\n";
    let parsed = parse(good).unwrap();
    assert_eq!(parsed.value("a_total", &[("y", "q\"")]), Some(3.0));
    assert_eq!(parsed.value("h_count", &[]), Some(2.0));
    assert_eq!(parsed.buckets("h", &[]), [2.0]);
    for bad in [
        "# TYPE a counter\na{x=\"1\" 3",
        "# TYPE a counter\na{x=1} 3",
        "# TYPE a counter\na{x=\"1\"}3",
        "# TYPE a counter\na three",
        "# TYPE a counter\na 1 2 3",
        "# TYPE a counter\na{x=\"1\"x=\"2\"} 1",
        "# TYPE a counter\n2a 1",
        "b 1",
        "# TYPE a counter\na_count 1",
        "# TYPE h histogram\nh_bucket 1",
        "# TYPE a counter\n# TYPE a gauge\n",
        "# TYPE a kind\n",
    ] {
        assert!(parse(bad).is_err(), "accepted: {bad:?}");
    }
}
