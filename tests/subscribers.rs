//! Subscribers paused and resumed at run time, by the real binary against a real Postgres and
//! a real receiver: from the command line (across a restart of walhook) and through the api
//! with its token. A 410's pause, resumed without a restart, is in `faults/receivers.rs`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use walhook::model::Lsn;

use crate::faults::harness::{
    check, current_lsn, db_with_items, deliveries, fresh_dir, only_redeliveries, source_section,
    wait_all, wait_confirmed, wait_streaming, walhook_command, write_config, Oracle, Process,
};
use crate::support::receiver::{Receiver, Recorded};
use crate::support::{connect, TestDb};

/// How long a running walhook may take to follow a pause another process recorded: the
/// contract says within a second or two (each worker reads its pause once a second); more
/// under the load of a whole test run.
const PAUSE_REACHES_RUN: Duration = Duration::from_secs(10);
/// Requests in flight when the pause was taken up finish; a receiver that answers at once
/// has them all within this.
const IN_FLIGHT_GRACE: Duration = Duration::from_secs(1);
/// The api token, in the environment of every walhook a test starts as `${API_TOKEN_VAR}`.
const API_TOKEN: &str = "test-token-8f2a61c0d9";
const API_TOKEN_VAR: &str = "WALHOOK_TEST_API_TOKEN";

/// A database with `items` and its oracle, a receiver, and the config of one subscriber `s`
/// that gets every change of items (`extra` is appended to the config).
struct Setup {
    db: TestDb,
    client: tokio_postgres::Client,
    oracle: Oracle,
    receiver: Receiver,
    config: PathBuf,
}

async fn setup(extra: &str) -> Setup {
    let db = TestDb::new().await;
    let (client, oracle) = db_with_items(&db).await;
    let receiver = Receiver::start().await;
    let dir = fresh_dir(db.name());
    let config = format!(
        "{}[subscribers.s]\nurl = \"{}\"\n[[events]]\ntype = \"item.changed\"\ntable = \"public.items\"\nsubscribers = [\"s\"]\n{extra}",
        source_section(&db.url(), db.name()),
        receiver.url("/s"),
    );
    let config = write_config(&dir, &config);
    Setup {
        db,
        client,
        oracle,
        receiver,
        config,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_holds_events_across_a_restart_and_resume_sends_them_in_order() {
    // GIVEN walhook streaming items to `s`, with an api but no token
    let listen = free_local_addr();
    let Setup {
        db,
        client,
        oracle,
        receiver,
        config,
    } = setup(&format!("[api]\nlisten = \"{listen}\"\n")).await;
    let mut walhook = Process::run(&config);
    wait_streaming(&client, db.name(), &mut walhook).await;
    // (Without `[api] token` there are no control routes.)
    let api = Api {
        http: reqwest::Client::new(),
        base: format!("http://{listen}"),
    };
    for (method, path) in [
        ("POST", "/subscribers/s/pause"),
        ("POST", "/subscribers/s/resume"),
        ("GET", "/subscribers"),
    ] {
        let (status, _) = api.call_text(method, path, Some("Bearer x"), "").await;
        assert_eq!(status, 404, "{method} {path}");
    }

    // WHEN a writer commits 300 transactions (rows 1..=100 inserted, then each updated twice)
    let writer = tokio::spawn(write(db.url()));
    // AND `s` is paused while it writes
    receiver
        .wait_for(|r| r.len() >= 20, Duration::from_secs(30))
        .await;
    let (code, out, err) =
        subscribers(&config, &["pause", "s", "--reason", "receiver maintenance"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("s paused since "), "{out}");
    api.wait_paused_gauge("1").await;
    tokio::time::sleep(IN_FLIGHT_GRACE).await;
    let paused_at = Instant::now();
    // AND walhook is restarted while paused, the writer still writing
    let mut output = walhook.stop().await;
    let mut walhook = Process::run(&config);
    wait_streaming(&client, db.name(), &mut walhook).await;
    let written = writer.await.unwrap();

    // THEN the slot confirms every write while paused
    wait_confirmed(&client, db.name(), written, Duration::from_secs(60)).await;
    // AND nothing arrived while paused
    let before = receiver.requests();
    assert!(
        before.iter().all(|r| r.arrived < paused_at),
        "{} requests arrived while paused",
        before.iter().filter(|r| r.arrived >= paused_at).count()
    );
    // AND `subscribers list` shows the pause, with its reason, and every undelivered event held
    let expected = oracle.expected(&client).await;
    assert_eq!(expected.len(), 300);
    let delivered: std::collections::HashSet<String> = deliveries(&before, "/s", |_| true)
        .into_iter()
        .map(|d| d.id)
        .collect();
    let list = list_json(&config).await;
    let s = &list[0];
    assert_eq!(
        (&s["name"], &s["state"], &s["paused_reason"]),
        (
            &json!("s"),
            &json!("paused"),
            &json!("receiver maintenance")
        ),
        "{list}"
    );
    assert!(
        s["paused_by"].as_str().unwrap().starts_with("command line"),
        "{list}"
    );
    assert_eq!(s["held"], expected.len() - delivered.len(), "{list}");
    assert!(delivered.len() < 300, "everything arrived before the pause");
    let (code, text, err) = subscribers(&config, &["list"]).await;
    assert_eq!(code, 0, "{err}");
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("s  PAUSED since ") && first.ends_with(": receiver maintenance"),
        "{text}"
    );
    // AND an unknown name is refused, naming the configured subscribers
    let (code, _, err) = subscribers(&config, &["pause", "nobody"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "no subscriber named `nobody` in the config; the configured subscribers are: s"
        ),
        "{err}"
    );

    // WHEN `s` is resumed, walhook running
    let resumed_at = Instant::now();
    let (code, out, err) = subscribers(&config, &["resume", "s"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("s resumed (it was paused since "), "{out}");
    // THEN every event arrives, with the id its change gives, in commit order per row
    wait_all(
        || receiver.requests(),
        &["/s"],
        |_| true,
        &expected,
        Duration::from_secs(60),
    )
    .await;
    output += &walhook.stop().await;
    let requests = receiver.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.arrived < paused_at || r.arrived >= resumed_at),
        "a request arrived while paused"
    );
    let found = check("s", &expected, &deliveries(&requests, "/s", |_| true));
    only_redeliveries("s", &found, &output);
    // AND the list says it is active, with nothing held
    let list = list_json(&config).await;
    assert_eq!(
        (&list[0]["state"], &list[0]["held"]),
        (&json!("active"), &json!(0))
    );
    oracle.drop(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_pauses_and_resumes_only_with_its_token() {
    // GIVEN walhook with `[api] token` from the environment
    let listen = free_local_addr();
    let token = API_TOKEN;
    let Setup {
        db,
        client,
        oracle,
        receiver,
        config,
    } = setup(&format!(
        "[api]\nlisten = \"{listen}\"\ntoken = \"${{{API_TOKEN_VAR}}}\"\n"
    ))
    .await;
    let mut command = walhook_command(&config, &["run"]);
    command.env(API_TOKEN_VAR, token);
    let mut walhook = Process::spawn(command);
    wait_streaming(&client, db.name(), &mut walhook).await;
    let api = Api {
        http: reqwest::Client::new(),
        base: format!("http://{listen}"),
    };

    // WHEN pause, resume and list are asked without the token, or with a wrong one
    let wrong = [
        None,
        Some("Bearer wrong".to_string()),
        Some(format!("Bearer {token}x")),
        Some(format!("Bearer {}", &token[..token.len() - 1])),
        Some(token.to_string()),
        Some(format!("Basic {token}")),
    ];
    for auth in &wrong {
        for (method, path) in [
            ("POST", "/subscribers/s/pause"),
            ("POST", "/subscribers/s/resume"),
            ("GET", "/subscribers"),
        ] {
            // THEN each is refused with 401
            let (status, body) = api.call(method, path, auth.as_deref(), "").await;
            assert_eq!(status, 401, "{method} {path} with {auth:?}: {body}");
        }
    }
    // AND nothing was paused
    assert_eq!(list_json(&config).await[0]["state"], "active");

    // WHEN `s` is paused with the token
    let bearer = format!("Bearer {token}");
    let (status, body) = api
        .call(
            "POST",
            "/subscribers/s/pause",
            Some(&bearer),
            r#"{"reason": "api maintenance"}"#,
        )
        .await;
    // THEN it is paused, as the api and the command line both say
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            &body["state"],
            &body["paused_reason"],
            &body["paused_by"],
            &body["already_paused"]
        ),
        (
            &json!("paused"),
            &json!("api maintenance"),
            &json!("api (127.0.0.1)"),
            &json!(false)
        ),
        "{body}"
    );
    let listed = list_json(&config).await;
    assert_eq!(listed[0]["paused_reason"], "api maintenance");
    // AND an unknown subscriber is a 404 naming the configured ones
    let (status, body) = api
        .call("POST", "/subscribers/nobody/pause", Some(&bearer), "")
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .ends_with("the configured subscribers are: s"),
        "{body}"
    );

    // WHEN a row is committed once the pause reached walhook (its gauge says so)
    api.wait_paused_gauge("1").await;
    client
        .execute("INSERT INTO items VALUES (1, 0, 'paused')", &[])
        .await
        .unwrap();
    let written = current_lsn(&client).await;
    // THEN it is held, not sent, and the slot confirms it; the gauge says paused
    wait_confirmed(&client, db.name(), written, Duration::from_secs(30)).await;
    let (status, body) = api.call("GET", "/subscribers", Some(&bearer), "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body[0]["state"], &body[0]["held"]),
        (&json!("paused"), &json!(1)),
        "{body}"
    );
    // AND a resume without the token changes nothing
    let (status, _) = api.call("POST", "/subscribers/s/resume", None, "").await;
    assert_eq!(status, 401);
    assert_eq!(list_json(&config).await[0]["state"], "paused");
    assert!(receiver.requests().is_empty());

    // WHEN resumed with the token
    let (status, body) = api
        .call("POST", "/subscribers/s/resume", Some(&bearer), "")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["state"], &body["was_paused"]),
        (&json!("active"), &json!(true))
    );
    // THEN the held row arrives with its id
    let expected = oracle.expected(&client).await;
    let got = receiver
        .wait_for(|r| !r.is_empty(), Duration::from_secs(30))
        .await;
    assert_eq!(api.paused_gauge().await, "0");
    let output = walhook.stop().await;
    let found = check("s", &expected, &deliveries(&got, "/s", |_: &Recorded| true));
    only_redeliveries("s", &found, &output);
    assert_eq!(found.events, 1);
    oracle.drop(&client).await;
}

/// Rows 1..=100 inserted, then each updated twice, one transaction each, a few milliseconds
/// apart; returns the WAL position after the last.
async fn write(url: String) -> Lsn {
    let client = connect(&url).await;
    let pace = Duration::from_millis(8);
    for id in 1..=100i64 {
        client
            .execute("INSERT INTO items VALUES ($1, 0, 'new')", &[&id])
            .await
            .unwrap();
        tokio::time::sleep(pace).await;
    }
    for round in 1..=2 {
        for id in 1..=100i64 {
            client
                .execute("UPDATE items SET n = $1 WHERE id = $2", &[&round, &id])
                .await
                .unwrap();
            tokio::time::sleep(pace).await;
        }
    }
    current_lsn(&client).await
}

/// `walhook subscribers <args>`: exit code, stdout and stderr.
async fn subscribers(config: &Path, args: &[&str]) -> (i32, String, String) {
    let mut command = walhook_command(config, &["subscribers"]);
    command.args(args).env(API_TOKEN_VAR, API_TOKEN);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `walhook subscribers list --json`, parsed.
async fn list_json(config: &Path) -> Value {
    let (code, out, err) = subscribers(config, &["list", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    /// Waits until the paused gauge of `s` reads `value`.
    async fn wait_paused_gauge(&self, value: &str) {
        let deadline = Instant::now() + PAUSE_REACHES_RUN;
        loop {
            let now = self.paused_gauge().await;
            if now == value {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "walhook_subscriber_paused stayed {now} for {PAUSE_REACHES_RUN:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The value of `walhook_subscriber_paused{subscriber="s"}` in `/metrics`.
    async fn paused_gauge(&self) -> String {
        let url = format!("{}/metrics", self.base);
        let text = self
            .http
            .get(&url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("walhook_subscriber_paused{subscriber=\"s\"} "))
            .unwrap_or_else(|| panic!("no paused gauge for s in:\n{text}"));
        line.rsplit(' ').next().unwrap().to_string()
    }

    /// The status and JSON body of `method path`, with `authorization` if given.
    async fn call(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        body: &str,
    ) -> (u16, Value) {
        let (status, text) = self.call_text(method, path, authorization, body).await;
        let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        (status, value)
    }

    async fn call_text(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        body: &str,
    ) -> (u16, String) {
        let url = format!("{}{path}", self.base);
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .http
            .request(method, &url)
            .timeout(Duration::from_secs(10))
            .body(body.to_string());
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }
}

/// An address on loopback that was free a moment ago.
fn free_local_addr() -> std::net::SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap()
}
