//! `/metrics` and `/health` listen on loopback unless told otherwise: `[api]` without `listen`
//! binds 127.0.0.1:9187, and nothing else.

use std::path::Path;
use std::time::Duration;

use crate::faults::harness::{fresh_dir, wait_streaming, write_config, Process, ITEMS};
use crate::support::TestDb;

const DEFAULT_PORT: u16 = 9187;

/// The local addresses (as /proc/net/tcp{,6} writes them) of sockets listening on `port`.
fn listening_on(port: u16) -> Vec<String> {
    let mut found = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state)) = (fields.get(1), fields.get(3)) else {
                continue;
            };
            let Some((addr, hex_port)) = local.rsplit_once(':') else {
                continue;
            };
            if *state == "0A" && u16::from_str_radix(hex_port, 16) == Ok(port) {
                found.push(addr.to_string());
            }
        }
    }
    found
}

#[test]
fn an_api_section_without_listen_means_loopback() {
    let config = walhook::config::parse(
        "[source]\nurl = \"postgres://u:p@db/app\"\n[api]\n\
         [subscribers.s]\nurl = \"http://x.internal/\"\n\
         [[events]]\ntype = \"t\"\ntable = \"public.t\"\nsubscribers = [\"s\"]\n",
        Path::new("/tmp"),
        &|_| None,
    )
    .unwrap();
    let listen = config.api.unwrap().listen;
    assert!(listen.ip().is_loopback(), "{listen}");
    assert_eq!(listen.port(), DEFAULT_PORT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_listen_on_loopback_only_by_default() {
    // GIVEN nothing listening on the default port
    assert!(
        listening_on(DEFAULT_PORT).is_empty(),
        "port {DEFAULT_PORT} is taken: {:?}",
        listening_on(DEFAULT_PORT)
    );
    // WHEN walhook runs with `[api]` and no `listen`
    let db = TestDb::new().await;
    let client = db.client().await;
    client.batch_execute(ITEMS).await.unwrap();
    let dir = fresh_dir(db.name());
    let config = write_config(
        &dir,
        &format!(
            "[source]\nurl = \"{}\"\nslot = \"{n}\"\npublication = \"{n}\"\n[api]\n\
             [subscribers.s]\nurl = \"http://127.0.0.1:9/\"\n\
             [[events]]\ntype = \"item.changed\"\ntable = \"public.items\"\nsubscribers = [\"s\"]\n",
            db.url(),
            n = db.name()
        ),
    );
    let mut walhook = Process::run(&config);
    wait_streaming(&client, db.name(), &mut walhook).await;
    // THEN /health and /metrics answer on 127.0.0.1
    let http = reqwest::Client::new();
    for path in ["/health", "/metrics"] {
        let response = http
            .get(format!("http://127.0.0.1:{DEFAULT_PORT}{path}"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    // AND the only socket listening on the port is bound to 127.0.0.1, not to every address
    assert_eq!(listening_on(DEFAULT_PORT), ["0100007F"]);
    walhook.stop().await;
}
