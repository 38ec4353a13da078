//! Two or more `walhook run` processes (the real binary) with one config and the state in
//! Postgres: one leads, the others stand by; SIGKILL the leader while a writer commits and a
//! subscriber is down (so events are held in the state), and a standby takes over within
//! the lease, and every committed change arrives with its original id, in order per row.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::e2e_more::{dead_letters, walhook_cli};
use crate::faults::harness::{
    check, deliveries, fresh_dir, items_with_oracle, source_section, wait_all, walhook_command,
    write_config, Oracle, Process, Rng,
};
use crate::support::receiver::{Receiver, Recorded, Reply};
use crate::support::TestDb;

/// The lease in these tests: a standby takes over about this long after the leader died.
pub(super) const LEASE: Duration = Duration::from_secs(2);
/// What a takeover may take at most: the lease, a standby's poll, and starting to stream.
pub(super) const TAKEOVER_BOUND: Duration = Duration::from_secs(7);

/// A test's database, receiver and config, and the walhooks running it.
pub(super) struct Cluster {
    pub db: TestDb,
    pub client: tokio_postgres::Client,
    pub oracle: Option<Oracle>,
    pub receiver: Receiver,
    /// Whether `/failing` answers 200 (else 503).
    pub failing_up: Arc<AtomicBool>,
    /// Whether `/refusing` answers 400 to row 1's events (dead letters), else 200.
    refusing: Arc<AtomicBool>,
    /// (path, webhook-id, attempt) of each request answered 200.
    accepted: Arc<Mutex<HashSet<(String, String, u32)>>>,
    pub config: PathBuf,
    /// Where the state is: the source database unless a test says otherwise.
    state_url: String,
    pub walhooks: Vec<Process>,
    /// Where each walhook serves `/ready` and `/metrics`, by the index of `walhooks`.
    pub listens: Vec<SocketAddr>,
}

/// The lease row: (epoch, pid of the holder, walsender pid, ran out).
pub(super) type LeaseRow = (i64, u32, Option<i32>, bool);

impl Cluster {
    /// Items, an oracle, a receiver with `/ok` (always 200), `/failing` (503 until
    /// `failing_up`) and `/refusing` (400 to row 1's events, until `finish`), and a config with
    /// the state in the source database.
    pub async fn new() -> Cluster {
        Cluster::with_lease(LEASE).await
    }

    pub async fn with_lease(lease: Duration) -> Cluster {
        Cluster::with_state(lease, None).await
    }

    /// With the state at `state_url` (default: the source database).
    pub async fn with_state(lease: Duration, state_url: Option<String>) -> Cluster {
        let db = TestDb::new().await;
        let client = db.client().await;
        let oracle = items_with_oracle(&client, db.name()).await;
        let failing_up = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(Mutex::new(HashSet::new()));
        let refusing = Arc::new(AtomicBool::new(true));
        let (up, refuse, record) = (failing_up.clone(), refusing.clone(), accepted.clone());
        let receiver = Receiver::with_policy(move |r, attempt| {
            if r.path == "/failing" && !up.load(Ordering::SeqCst) {
                return Reply::status(503);
            }
            if r.path == "/refusing"
                && refuse.load(Ordering::SeqCst)
                && r.json()["data"]["row"]["id"].as_i64() == Some(1)
            {
                return Reply::status(400);
            }
            let id = r.header("webhook-id").unwrap_or_default().to_string();
            record.lock().unwrap().insert((r.path.clone(), id, attempt));
            Reply::ok()
        })
        .await;
        let state_url = state_url.unwrap_or_else(|| db.url());
        let dir = fresh_dir(&format!("{}-leaders", db.name()));
        let config = write_config(
            &dir,
            &format!(
                r#"{source}
                [state]
                url = "{state}"
                schema = "walhook_state"
                lease = "{lease}ms"
                [api]
                listen = "${{WALHOOK_TEST_LISTEN:-127.0.0.1:9}}"
                [subscribers.ok]
                url = "{ok}"
                retry = {{ initial = "100ms", max = "500ms" }}
                [subscribers.failing]
                url = "{failing}"
                retry = {{ initial = "200ms", max = "1s" }}
                [subscribers.refusing]
                url = "{refusing}"
                [[events]]
                type = "item.changed"
                table = "public.items"
                subscribers = ["ok", "failing", "refusing"]
                "#,
                source = source_section(&db.url(), db.name()),
                state = state_url,
                lease = lease.as_millis(),
                ok = receiver.url("/ok"),
                failing = receiver.url("/failing"),
                refusing = receiver.url("/refusing"),
            ),
        );
        Cluster {
            db,
            client,
            oracle: Some(oracle),
            receiver,
            failing_up,
            refusing,
            accepted,
            config,
            state_url,
            walhooks: Vec::new(),
            listens: Vec::new(),
        }
    }

    /// Starts one more walhook with the config, serving its api on a port of its own.
    pub fn start(&mut self) {
        let listen = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap();
        let mut command = walhook_command(&self.config, &["run"]);
        command.env("WALHOOK_TEST_LISTEN", listen.to_string());
        self.walhooks.push(Process::spawn(command));
        self.listens.push(listen);
    }

    /// Forgets walhook `index` (killed).
    pub fn remove(&mut self, index: usize) {
        self.walhooks.remove(index);
        self.listens.remove(index);
    }

    /// GET `path` of walhook `index`'s api: status and body.
    pub async fn get(&self, index: usize, path: &str) -> (u16, String) {
        let url = format!("http://{}{path}", self.listens[index]);
        let response = reqwest::Client::new()
            .get(&url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// Waits until `/ready` of walhook `index` answers `status` with `body`.
    pub async fn wait_ready(&self, index: usize, status: u16, body: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let url = format!("http://{}/ready", self.listens[index]);
            let got = reqwest::Client::new()
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            let answer = match got {
                Ok(r) => Some((r.status().as_u16(), r.text().await.unwrap_or_default())),
                Err(_) => None,
            };
            if answer
                .as_ref()
                .is_some_and(|(s, b)| *s == status && b == body)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/ready of walhook {index} never answered {status} {body:?}; last: {answer:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The lease as the state holds it; `None` before any walhook led.
    pub async fn lease(&self) -> Option<LeaseRow> {
        let state = crate::support::connect(&self.state_url).await;
        let made: bool = state
            .query_one(
                "SELECT to_regclass('walhook_state.leader') IS NOT NULL",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if !made {
            return None;
        }
        let row = state
            .query_opt(
                "SELECT epoch, holder, walsender_pid, expires_at <= clock_timestamp()
                   FROM walhook_state.leader",
                &[],
            )
            .await
            .unwrap()?;
        let holder: String = row.get(1);
        let pid = holder
            .rsplit(' ')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("a holder without a pid: {holder}"));
        Some((row.get(0), pid, row.get(2), row.get(3)))
    }

    /// Waits until a walhook other than `not` leads in a term after `after` and streams from
    /// the slot with the walsender it recorded; returns its index and the term.
    pub async fn wait_leader(
        &mut self,
        after: i64,
        not: Option<u32>,
        within: Duration,
    ) -> (usize, i64) {
        let deadline = Instant::now() + within;
        loop {
            if let Some((epoch, pid, Some(walsender), false)) = self.lease().await {
                let streaming: Option<i32> = self
                    .client
                    .query_one(
                        "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
                        &[&self.db.name()],
                    )
                    .await
                    .unwrap()
                    .get(0);
                let index = self.walhooks.iter().position(|w| w.pid() == pid);
                if let Some(index) = index
                    .filter(|_| epoch > after && Some(pid) != not && streaming == Some(walsender))
                {
                    return (index, epoch);
                }
            }
            for w in &mut self.walhooks {
                w.assert_running("a walhook led");
            }
            assert!(
                Instant::now() < deadline,
                "no walhook took over within {within:?}; lease: {:?}",
                self.lease().await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Events of `subscriber` held in the state.
    pub async fn held(&self, subscriber: &str) -> i64 {
        crate::support::connect(&self.state_url)
            .await
            .query_one(
                "SELECT count(*) FROM walhook_state.pending WHERE subscriber = $1",
                &[&subscriber],
            )
            .await
            .unwrap()
            .get(0)
    }

    pub fn was_accepted(&self, r: &Recorded) -> bool {
        let id = r.header("webhook-id").unwrap_or_default().to_string();
        self.accepted
            .lock()
            .unwrap()
            .contains(&(r.path.clone(), id, r.attempt))
    }

    /// Brings `/failing` up, waits until it and `/ok` got every committed change; then lets
    /// `/refusing` take row 1, replays its dead letters with `walhook dead-letters replay`,
    /// and waits until it got everything too; checks ids and per-row order on all three, and
    /// stops every walhook cleanly.
    pub async fn finish(mut self, writer: Writer) {
        let commits = writer.stop().await;
        self.failing_up.store(true, Ordering::SeqCst);
        let oracle = self.oracle.take().unwrap();
        let expected = oracle.expected(&self.client).await;
        assert!(!expected.is_empty());
        let this = &self;
        let within = Duration::from_secs(90);
        wait_all(
            || this.receiver.requests(),
            &["/ok", "/failing"],
            |r| this.was_accepted(r),
            &expected,
            within,
        )
        .await;
        // Row 1's events for `refusing` are dead letters, listed from the Postgres state,
        // once every event is settled; replayed, they arrive in order.
        let row_1 = expected.iter().filter(|e| e.row == 1).count();
        assert!(row_1 > 0, "the writer never wrote row 1");
        let deadline = Instant::now() + within;
        loop {
            let letters = dead_letters(&self.config).await;
            let refusing = letters.iter().filter(|l| l[0] == "refusing").count();
            if refusing == row_1 && self.held("refusing").await == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{refusing} of {row_1} dead letters"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.refusing.store(false, Ordering::SeqCst);
        let replayed = walhook_cli(&self.config, &["dead-letters", "replay"]).await;
        assert!(
            replayed.starts_with(&format!("{row_1} dead letter(s) put back")),
            "{replayed}"
        );
        wait_all(
            || this.receiver.requests(),
            &["/refusing"],
            |r| this.was_accepted(r),
            &expected,
            within,
        )
        .await;
        let requests = self.receiver.requests();
        for path in ["/ok", "/failing", "/refusing"] {
            let got = deliveries(&requests, path, |r| self.was_accepted(r));
            let found = check(path, &expected, &got);
            assert_eq!(found.events, expected.len());
        }
        println!(
            "{commits} transactions; {} events checked by id on each of 3 subscribers; {row_1} dead letters replayed",
            expected.len()
        );
        for walhook in self.walhooks.drain(..) {
            walhook.stop().await;
        }
        oracle.drop(&self.client).await;
    }
}

/// A task committing upserts of 20 rows, one row per transaction, until stopped.
pub(super) struct Writer {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<u64>,
}

impl Writer {
    pub fn start(db: &TestDb, seed: u64) -> Writer {
        let (stop, stopped) = watch::channel(false);
        let url = db.url();
        let task = tokio::spawn(async move {
            let client = crate::support::connect(&url).await;
            let mut rng = Rng::new(seed);
            let mut commits = 0;
            while !*stopped.borrow() {
                let id = rng.range(1, 21) as i64;
                client
                    .execute(
                        "INSERT INTO items VALUES ($1, 0, 'x')
                         ON CONFLICT (id) DO UPDATE SET n = items.n + 1",
                        &[&id],
                    )
                    .await
                    .unwrap();
                commits += 1;
                tokio::time::sleep(Duration::from_millis(rng.range(5, 20))).await;
            }
            commits
        });
        Writer { stop, task }
    }

    pub async fn stop(self) -> u64 {
        self.stop.send_replace(true);
        self.task.await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_within_the_lease_and_nothing_is_lost() {
    leader_kills(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_leader_kills_lose_nothing() {
    leader_kills(10).await;
}

async fn leader_kills(kills: usize) {
    // GIVEN two walhooks with one config, the state in Postgres, a writer committing, and the
    // subscriber `failing` down, so its events are held in the state
    let mut cluster = Cluster::new().await;
    cluster.start();
    cluster.start();
    let (mut leader, mut epoch) = cluster.wait_leader(0, None, Duration::from_secs(60)).await;
    let writer = Writer::start(&cluster.db, 7);
    let mut takeovers = Vec::new();
    for kill in 0..kills {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        if kill == 0 {
            assert!(
                cluster.held("failing").await > 0,
                "nothing was held for `failing`"
            );
        }
        // WHEN the leader is SIGKILLed (and a new standby started, as an orchestrator would)
        let killed = cluster.walhooks[leader].pid();
        cluster.walhooks[leader].kill();
        let at = Instant::now();
        cluster.remove(leader);
        cluster.start();
        // THEN the other walhook leads and streams within the bound
        let (next, next_epoch) = cluster
            .wait_leader(epoch, Some(killed), TAKEOVER_BOUND)
            .await;
        takeovers.push(at.elapsed());
        (leader, epoch) = (next, next_epoch);
    }
    println!("takeovers after a SIGKILL with a {LEASE:?} lease: {takeovers:?}");
    // AND once `failing` is back, both subscribers got every committed change, with the ids
    // the changes give, each row's changes first delivered in commit order
    cluster.finish(writer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_stops_hands_over_at_once() {
    // GIVEN two walhooks with a long lease, one leading
    let lease = Duration::from_secs(20);
    let mut cluster = Cluster::with_lease(lease).await;
    cluster.start();
    cluster.start();
    let (leader, epoch) = cluster.wait_leader(0, None, Duration::from_secs(60)).await;
    let writer = Writer::start(&cluster.db, 3);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // WHEN the leader is stopped (SIGTERM): it drains and exits 0
    let stopped = cluster.walhooks.remove(leader);
    cluster.listens.remove(leader);
    let pid = stopped.pid();
    let at = Instant::now();
    let output = stopped.stop().await;
    assert!(
        output.contains("stepping down: leadership released"),
        "{output}"
    );
    // THEN the standby leads long before the lease could have run out: it was released
    cluster.wait_leader(epoch, Some(pid), lease / 4).await;
    println!("takeover after a graceful stop: {:?}", at.elapsed());
    cluster.finish(writer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_database_down_for_longer_than_the_lease_loses_nothing() {
    // GIVEN one walhook leading, its state in a cluster of its own, a writer committing
    let state = crate::support::Cluster::start("");
    let mut cluster = Cluster::with_state(LEASE, Some(state.superuser_url("postgres"))).await;
    cluster.start();
    let (_, epoch) = cluster.wait_leader(0, None, Duration::from_secs(60)).await;
    let writer = Writer::start(&cluster.db, 5);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // WHEN the state database stops for longer than the lease, and starts again
    tokio::task::block_in_place(|| state.stop());
    tokio::time::sleep(LEASE * 2).await;
    tokio::task::block_in_place(|| state.start_again());
    // THEN walhook, which stopped leading meanwhile, leads again in a new term, still the
    // same process, and loses nothing
    let (_, again) = cluster
        .wait_leader(epoch, None, Duration::from_secs(30))
        .await;
    assert!(again > epoch);
    let output = cluster.walhooks[0].output();
    assert!(output.contains("leadership lost"), "{output}");
    cluster.finish(writer).await;
}
