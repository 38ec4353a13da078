//! What the committed changes must give, and the checks of what receivers got against it.
//!
//! The oracle reads the same changes walhook reads, through a second pgoutput slot over SQL
//! (`pg_logical_slot_peek_binary_changes`), and decodes the few bytes it needs itself: each
//! transaction's commit LSN (from Begin) and the first column (the row id) of each change. So
//! the expected ids `evt_<commit LSN>_<index>` come from Postgres, not from walhook's code.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use walhook::model::Lsn;

use crate::support::receiver::Recorded;

/// One event the committed changes must give.
#[derive(Debug, Clone)]
pub(crate) struct Expected {
    pub id: String,
    pub row: i64,
    pub commit_lsn: Lsn,
    pub index: u32,
}

/// A second slot on walhook's publication, read over SQL without consuming it.
pub(crate) struct Oracle {
    slot: String,
    publication: String,
}

impl Oracle {
    pub(crate) async fn create(client: &tokio_postgres::Client, publication: &str) -> Oracle {
        let slot = format!("{publication}_oracle");
        client
            .execute(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                &[&slot],
            )
            .await
            .unwrap();
        Oracle {
            slot,
            publication: publication.to_string(),
        }
    }

    /// Every change committed since the oracle was created, as the events walhook must send
    /// for a table with one rule: in commit order, then change order.
    pub(crate) async fn expected(&self, client: &tokio_postgres::Client) -> Vec<Expected> {
        let rows = client
            .query(
                "SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, \
                 'proto_version', '1', 'publication_names', $2)",
                &[&self.slot, &self.publication],
            )
            .await
            .unwrap();
        let messages: Vec<Vec<u8>> = rows.iter().map(|r| r.get(0)).collect();
        expected_from_pgoutput(&messages)
    }

    /// Drops the oracle's slot, so it holds no WAL after the test.
    pub(crate) async fn drop(self, client: &tokio_postgres::Client) {
        client
            .execute("SELECT pg_drop_replication_slot($1)", &[&self.slot])
            .await
            .unwrap();
    }
}

/// Reads pgoutput v1 as far as the expected ids need: Begin's commit LSN, and for each
/// Insert, Update and Delete its index in the transaction and its first column (the row id).
fn expected_from_pgoutput(messages: &[Vec<u8>]) -> Vec<Expected> {
    let mut expected = Vec::new();
    let mut commit_lsn = None;
    let mut index = 0u32;
    for m in messages {
        let change_row = match m[0] {
            b'B' => {
                commit_lsn = Some(Lsn(u64::from_be_bytes(m[1..9].try_into().unwrap())));
                index = 0;
                None
            }
            b'C' => {
                commit_lsn = None;
                None
            }
            b'I' => {
                assert_eq!(m[5], b'N', "insert without a new tuple");
                Some(first_column(&m[6..]))
            }
            b'U' => {
                let mut at = 5;
                if matches!(m[at], b'K' | b'O') {
                    at = 1 + at + tuple_len(&m[at + 1..]);
                }
                assert_eq!(m[at], b'N', "update without a new tuple");
                Some(first_column(&m[at + 1..]))
            }
            b'D' => Some(first_column(&m[6..])),
            b'T' => panic!("the fault tests' oracle does not expect a truncate"),
            _ => None,
        };
        if let Some(row) = change_row {
            let lsn = commit_lsn.expect("a change outside a transaction");
            expected.push(Expected {
                id: format!("evt_{}_{index}", lsn.to_hex16()),
                row,
                commit_lsn: lsn,
                index,
            });
            index += 1;
        }
    }
    expected
}

/// The byte length of a TupleData (column count, then each column).
fn tuple_len(buf: &[u8]) -> usize {
    let columns = u16::from_be_bytes([buf[0], buf[1]]);
    let mut at = 2;
    for _ in 0..columns {
        let kind = buf[at];
        at += 1;
        if matches!(kind, b't' | b'b') {
            let len = u32::from_be_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
            at += 4 + len;
        }
    }
    at
}

/// The first column of a TupleData, as text, parsed as the row id.
fn first_column(buf: &[u8]) -> i64 {
    assert_eq!(buf[2], b't', "the id column was not sent as text");
    let len = u32::from_be_bytes(buf[3..7].try_into().unwrap()) as usize;
    std::str::from_utf8(&buf[7..7 + len])
        .unwrap()
        .parse()
        .unwrap()
}

/// One event as a receiver got it.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub id: String,
    pub row: i64,
    pub arrived: Instant,
    /// Whether this request was answered with a 2xx (as walhook saw it).
    pub accepted: bool,
}

/// The events a webhook body carries: one, or a batch's `events`.
pub(crate) fn events_in(body: &Value) -> Vec<&Value> {
    match body.get("events").and_then(Value::as_array) {
        Some(events) => events.iter().collect(),
        None => vec![body],
    }
}

/// The row id of an event: its new row's, or for a delete its old row's.
pub(crate) fn row_of(event: &Value) -> i64 {
    let data = &event["data"];
    let row = if data["row"].is_null() {
        &data["old"]
    } else {
        &data["row"]
    };
    row["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("an event without a row id: {event}"))
}

/// The deliveries in the requests to `path`, in arrival order; `accepted` says which requests
/// walhook saw answered with a 2xx.
pub(crate) fn deliveries(
    requests: &[Recorded],
    path: &str,
    accepted: impl Fn(&Recorded) -> bool,
) -> Vec<Delivery> {
    let mut out = Vec::new();
    for request in requests.iter().filter(|r| r.path == path) {
        let body = request.json();
        let ok = accepted(request);
        for event in events_in(&body) {
            out.push(Delivery {
                id: event["id"].as_str().expect("an event id").to_string(),
                row: row_of(event),
                arrived: request.arrived,
                accepted: ok,
            });
        }
    }
    out
}

/// What [`check`] found, for the test's own judgement of duplicates and for the report.
#[derive(Debug, Default)]
pub(crate) struct Checked {
    /// Distinct events checked.
    pub events: usize,
    /// Accepted deliveries in all.
    pub deliveries: usize,
    /// Events accepted more than once, with the arrival of each acceptance.
    pub duplicates: BTreeMap<String, Vec<Instant>>,
}

/// Checks `deliveries` (in arrival order) against `expected`: the set of ids accepted equals
/// the set expected (nothing lost, nothing invented), each carries its own row, and for each
/// row the first acceptances of its events come in commit order.
pub(crate) fn check(subscriber: &str, expected: &[Expected], deliveries: &[Delivery]) -> Checked {
    let by_id: HashMap<&str, &Expected> = expected.iter().map(|e| (e.id.as_str(), e)).collect();
    assert_eq!(
        by_id.len(),
        expected.len(),
        "the oracle produced an id twice"
    );
    let mut first: HashMap<&str, Instant> = HashMap::new();
    let mut order: HashMap<i64, Vec<&Expected>> = HashMap::new();
    let mut checked = Checked::default();
    for d in deliveries.iter().filter(|d| d.accepted) {
        checked.deliveries += 1;
        let Some(e) = by_id.get(d.id.as_str()) else {
            panic!(
                "{subscriber}: got event {} that no committed change gives",
                d.id
            );
        };
        assert_eq!(
            d.row, e.row,
            "{subscriber}: event {} carries row {}, the change was to row {}",
            d.id, d.row, e.row
        );
        if let Some(at) = first.get(d.id.as_str()) {
            checked
                .duplicates
                .entry(d.id.clone())
                .or_insert_with(|| vec![*at])
                .push(d.arrived);
        } else {
            first.insert(&d.id, d.arrived);
            order.entry(d.row).or_default().push(e);
        }
    }
    let missing: Vec<&Expected> = expected
        .iter()
        .filter(|e| !first.contains_key(e.id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{subscriber}: {} of {} events never arrived, e.g. {:?}",
        missing.len(),
        expected.len(),
        &missing[..missing.len().min(5)]
    );
    for (row, events) in &order {
        for pair in events.windows(2) {
            assert!(
                (pair[0].commit_lsn, pair[0].index) < (pair[1].commit_lsn, pair[1].index),
                "{subscriber}: row {row}'s events were first delivered out of commit order: {} before {}",
                pair[0].id,
                pair[1].id
            );
        }
    }
    checked.events = first.len();
    checked
}

/// Polls `requests` until the accepted ids on every path in `paths` cover `expected`; panics
/// with what is missing after `within`.
pub(crate) async fn wait_all(
    requests: impl Fn() -> Vec<Recorded>,
    paths: &[&str],
    accepted: impl Fn(&Recorded) -> bool + Copy,
    expected: &[Expected],
    within: Duration,
) {
    let deadline = Instant::now() + within;
    let mut seen: Vec<HashSet<String>> = vec![HashSet::new(); paths.len()];
    let mut read = 0;
    loop {
        let got = requests();
        for (path, ids) in paths.iter().zip(&mut seen) {
            for d in deliveries(&got[read..], path, accepted) {
                if d.accepted {
                    ids.insert(d.id);
                }
            }
        }
        read = got.len();
        let short: Vec<String> = paths
            .iter()
            .zip(&seen)
            .filter_map(|(path, ids)| {
                let missing = expected.iter().filter(|e| !ids.contains(&e.id)).count();
                (missing > 0).then(|| format!("{path}: {missing} of {} missing", expected.len()))
            })
            .collect();
        if short.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not every event arrived within {within:?}: {}",
            short.join("; ")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The event ids walhook logged a failed delivery attempt for (`delivery failed ...
/// event_id="..."` in its output): the events it may legitimately have sent again.
pub(crate) fn failed_ids(output: &str) -> HashSet<String> {
    output
        .lines()
        .filter(|l| l.contains("delivery failed"))
        .filter_map(|l| {
            let rest = &l[l.find("event_id=")? + "event_id=".len()..];
            let rest = rest.trim_start_matches('"');
            let end = rest.find(['"', ' ']).unwrap_or(rest.len());
            Some(rest[..end].to_string())
        })
        .collect()
}

/// Panics if an event was accepted more than once without walhook having logged a failed
/// attempt for it first (say, a timeout while the receiver was slow to answer 200): every
/// duplicate must be a re-delivery.
pub(crate) fn only_redeliveries(what: &str, checked: &Checked, output: &str) {
    let failed = failed_ids(output);
    let unexplained: Vec<&String> = checked
        .duplicates
        .keys()
        .filter(|id| !failed.contains(*id))
        .collect();
    assert!(
        unexplained.is_empty(),
        "{what}: accepted more than once with no failed attempt logged: {unexplained:?}"
    );
}

/// An oracle slot kept beside a test's walhook, so that a test which finds events missing
/// shows whether Postgres decoded them for another slot: when the test fails (panics), the
/// witness prints every change the oracle decoded since it was created, with its commit LSN,
/// before the slot is dropped. A change the oracle lists but the receiver never got was
/// decoded by Postgres and lost on walhook's side of the slot; a change missing from both was
/// never decoded for the publication at all.
pub(crate) struct Witness {
    oracle: Option<Oracle>,
    url: String,
}

impl Witness {
    /// Creates the oracle slot on `publication` (walhook's, once walhook has created it).
    pub(crate) async fn create(
        client: &tokio_postgres::Client,
        url: &str,
        publication: &str,
    ) -> Witness {
        Witness {
            oracle: Some(Oracle::create(client, publication).await),
            url: url.to_string(),
        }
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        let Some(oracle) = self.oracle.take() else {
            return;
        };
        let report = std::thread::panicking();
        let url = self.url.clone();
        // Drop cannot await: a thread of its own runs the queries on a runtime of its own.
        let done = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let client = crate::support::connect(&url).await;
                if report {
                    // What each slot's decoder handed its output plugin (Postgres 14+): a
                    // transaction of the test's database that reached pgoutput is counted
                    // here whether or not pgoutput then sent anything.
                    if let Ok(rows) = client
                        .query(
                            "SELECT slot_name::text, total_txns, total_bytes FROM pg_stat_replication_slots \
                             WHERE slot_name IN ($1, $2)",
                            &[&oracle.publication, &oracle.slot],
                        )
                        .await
                    {
                        for row in rows {
                            let (slot, txns, bytes): (String, i64, i64) = (row.get(0), row.get(1), row.get(2));
                            eprintln!("slot {slot}: {txns} transaction(s), {bytes} bytes of changes decoded for the output plugin");
                        }
                    }
                    let decoded = oracle.expected(&client).await;
                    eprintln!(
                        "witness slot {}: Postgres decoded {} change(s) for the publication since it was created:",
                        oracle.slot,
                        decoded.len()
                    );
                    for change in &decoded {
                        eprintln!("  {} row {} (commit {})", change.id, change.row, change.commit_lsn);
                    }
                }
                oracle.drop(&client).await;
            })
        });
        let _ = done.join();
    }
}
