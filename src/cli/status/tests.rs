//! `walhook status` rendering, from fixed input.

use super::*;

/// 2026-11-26T17:51:10Z.
const NOW: UnixMillis = UnixMillis(1_795_715_470_000);

fn subscriber(name: &str) -> Subscriber {
    Subscriber {
        name: name.to_string(),
        in_config: true,
        pending: 0,
        oldest_pending_commit_at: None,
        oldest_pending_age_ms: None,
        dead_letters: 0,
        paused: false,
        paused_reason: None,
        last_success_at: None,
        last_error: None,
    }
}

fn report() -> Report {
    Report {
        generated_at: NOW,
        database: Database {
            reachable: true,
            error: None,
            current_lsn: Some(Lsn(0x1_4000_2000)),
        },
        slot: Some(Slot {
            name: "walhook".to_string(),
            exists: true,
            active: false,
            active_pid: None,
            // A long transaction holds restart_lsn far back.
            confirmed_flush_lsn: Some(Lsn(0x1_4000_1000)),
            restart_lsn: Some(Lsn(0x1_0000_1000)),
            lag_bytes: Some(0x1000),
            retained_bytes: Some(0x4000_1000),
            wal_status: Some("extended".to_string()),
            safe_wal_size: None,
            lag_warn_bytes: 1 << 30,
            lag_warning: true,
        }),
        state: State {
            path: Some("/var/lib/walhook/state.db".to_string()),
            url: None,
            schema: None,
            exists: true,
            error: None,
            confirmed_lsn: Some(Lsn(0x1_4000_1000)),
            leader: None,
        },
        subscribers: vec![
            Subscriber {
                pending: 3,
                oldest_pending_commit_at: Some(UnixMillis(NOW.0 - 125_000)),
                oldest_pending_age_ms: Some(125_000),
                dead_letters: 1,
                paused: true,
                paused_reason: Some("410 Gone from billing.internal".to_string()),
                last_success_at: Some(UnixMillis(NOW.0 - 7_200_000)),
                last_error: Some(LastError {
                    at: UnixMillis(NOW.0 - 400),
                    text: "HTTP 410 Gone".to_string(),
                }),
                ..subscriber("billing")
            },
            subscriber("crm"),
            Subscriber {
                in_config: false,
                dead_letters: 2,
                last_success_at: Some(UnixMillis(NOW.0 - 3 * 86_400_000 - 3_600_000)),
                ..subscriber("old")
            },
        ],
        backfills: Vec::new(),
    }
}

#[test]
fn renders_the_slot_state_and_every_subscriber() {
    assert_eq!(
            render(&report()),
            "\
slot walhook: inactive (nothing streams from it)
  confirmed_flush_lsn  1/40001000   lag 4.0 kB (4096 bytes) behind 1/40002000
  restart_lsn          1/1000       retains 1.0 GB (1073745920 bytes) of WAL  ⚠ over source.lag_warn (1.0 GB)
  wal_status           extended     safe_wal_size no limit (max_slot_wal_keep_size = -1)
state file /var/lib/walhook/state.db
  confirmed LSN        1/40001000
subscribers
  billing  PAUSED: 410 Gone from billing.internal
    pending 3, oldest committed 2m 5s ago; dead letters 1
    last success  2026-11-26T15:51:10Z (2h 0m ago)
    last error    2026-11-26T17:51:09Z (400ms ago): HTTP 410 Gone
  crm
    pending 0; dead letters 0
    last success  never
    last error    none
  old (not in the config)
    pending 0; dead letters 2
    last success  2026-11-23T16:51:10Z (3d 1h ago)
    last error    none
"
        );
}

#[test]
fn renders_an_unreachable_database_a_missing_slot_and_no_state() {
    let mut r = report();
    r.database = Database {
            reachable: false,
            error: Some("could not reach Postgres at 127.0.0.1:1; is Postgres running at 127.0.0.1:1?: Connection refused (os error 111)".to_string()),
            current_lsn: None,
        };
    r.slot = None;
    r.state = State {
        path: Some("walhook-state.db".to_string()),
        url: None,
        schema: None,
        exists: false,
        error: None,
        confirmed_lsn: None,
        leader: None,
    };
    r.subscribers = vec![subscriber("crm")];
    assert_eq!(
            render(&r),
            "\
database: could not be reached: could not reach Postgres at 127.0.0.1:1; is Postgres running at 127.0.0.1:1?: Connection refused (os error 111)
state file walhook-state.db
  no state yet (walhook has not run)
subscribers
  crm
    pending 0; dead letters 0
    last success  never
    last error    none
"
        );
    let mut r = report();
    r.slot.as_mut().unwrap().exists = false;
    assert!(render(&r).starts_with(
            "slot walhook: does not exist (`walhook setup --apply` or `walhook run` creates it)\nstate file"
        ));
}

#[test]
fn json_names_every_field() {
    let value = serde_json::to_value(report()).unwrap();
    assert_eq!(value["generated_at"], "2026-11-26T17:51:10.000000Z");
    assert_eq!(value["database"]["current_lsn"], "1/40002000");
    assert_eq!(value["slot"]["lag_bytes"], 4096);
    assert_eq!(value["slot"]["retained_bytes"], 0x4000_1000u64);
    assert_eq!(value["slot"]["lag_warning"], true);
    assert_eq!(value["slot"]["safe_wal_size"], serde_json::Value::Null);
    assert_eq!(value["state"]["confirmed_lsn"], "1/40001000");
    assert_eq!(
        value["subscribers"][0],
        serde_json::json!({
            "name": "billing",
            "in_config": true,
            "pending": 3,
            "oldest_pending_commit_at": "2026-11-26T17:49:05.000000Z",
            "oldest_pending_age_ms": 125000,
            "dead_letters": 1,
            "paused": true,
            "paused_reason": "410 Gone from billing.internal",
            "last_success_at": "2026-11-26T15:51:10.000000Z",
            "last_error": {"at": "2026-11-26T17:51:09.600000Z", "text": "HTTP 410 Gone"},
        })
    );
}

#[test]
fn sizes_and_ages_read_at_a_glance() {
    assert_eq!(exact_size(1023), "1023 bytes");
    assert_eq!(exact_size(1536), "1.5 kB (1536 bytes)");
    assert_eq!(size(5 << 40), "5.0 TB");
    assert_eq!(ago(Duration::from_millis(999)), "999ms");
    assert_eq!(ago(Duration::from_secs(59)), "59s");
    assert_eq!(ago(Duration::from_secs(3600)), "1h 0m");
}

#[test]
fn state_in_postgres_is_named_by_its_url_and_schema() {
    let mut r = report();
    r.state = State {
        path: None,
        url: Some("postgres://walhook@state.internal:5432/app".to_string()),
        schema: Some("walhook".to_string()),
        exists: true,
        error: None,
        confirmed_lsn: Some(Lsn(0x1_4000_1000)),
        leader: None,
    };
    let text = render(&r);
    assert!(
        text.contains(
            "state in Postgres postgres://walhook@state.internal:5432/app, schema walhook\n  confirmed LSN        1/40001000\n  leader               none yet (no walhook has led)\n"
        ),
        "{text}"
    );
    let value = serde_json::to_value(&r).unwrap();
    assert_eq!(
        value["state"],
        serde_json::json!({
            "url": "postgres://walhook@state.internal:5432/app",
            "schema": "walhook",
            "exists": true,
            "error": null,
            "confirmed_lsn": "1/40001000",
        })
    );
}

#[test]
fn the_leader_is_shown_with_its_term_and_lease() {
    let mut r = report();
    let leader = |expired| super::leader::LeaderReport {
        holder: "node-a pid 42".to_string(),
        epoch: 7,
        since: "2026-11-30T16:00:00Z".to_string(),
        expired,
        renewed_ago_ms: 1200,
        expires_in_ms: if expired { 0 } else { 8800 },
    };
    r.state = State {
        path: None,
        url: Some("postgres://walhook@state.internal:5432/app".to_string()),
        schema: Some("walhook".to_string()),
        exists: true,
        error: None,
        confirmed_lsn: None,
        leader: Some(leader(false)),
    };
    let text = render(&r);
    assert!(
        text.contains("  leader               node-a pid 42 (term 7, since 2026-11-30T16:00:00Z, renewed 1.2s ago)\n"),
        "{text}"
    );
    let value = serde_json::to_value(&r).unwrap();
    assert_eq!(
        value["state"]["leader"],
        serde_json::json!({
            "holder": "node-a pid 42",
            "epoch": 7,
            "since": "2026-11-30T16:00:00Z",
            "expired": false,
            "renewed_ago_ms": 1200,
            "expires_in_ms": 8800,
        })
    );
    r.state.leader = Some(leader(true));
    let text = render(&r);
    assert!(
        text.contains("  leader               none: the lease of node-a pid 42 (term 7, last renewed 1.2s ago) ran out or was released; a standby takes over\n"),
        "{text}"
    );
}

#[test]
fn a_url_is_shown_without_its_password() {
    assert_eq!(
        without_password("postgres://walhook:s3cret@state.internal:5432/app?sslmode=require"),
        "postgres://walhook@state.internal:5432/app?sslmode=require"
    );
}
