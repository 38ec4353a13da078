//! The webhook receiver of the benchmark (`bench/run.sh`), and a load generator that shows its
//! ceiling.
//!
//! ```text
//! bench_receiver serve [--listen 127.0.0.1:0] [--port-file F]
//!     POST <any path>  answers 200 at once; counts the events in the body (single or batch)
//!                      and, for each, receipt time minus its `timestamp` (commit time)
//!     GET  /stats      one line of `key=value`: requests, events, first/last receipt (Unix ns),
//!                      latency p50/p99/max in microseconds, and how late a thread sleeping
//!                      1 ms at a time woke up (p99/max): the machine's own scheduling noise
//!     GET  /latencies  every event since the reset: receipt time (Unix ns), latency (us)
//!     POST /reset      forgets everything counted so far
//! bench_receiver load --url URL [--batch N] [--concurrency C] [--seconds S]
//!     POSTs bodies of N events shaped like walhook's from C connections for S seconds;
//!     prints requests/s and events/s
//! ```
//!
//! The body is not parsed as JSON: an event is an occurrence of `"id":"evt_`, and its commit
//! time the `"timestamp":"...Z"` that follows it. That is exact for walhook's compact bodies,
//! whose field order is fixed, and cheap enough that the receiver is never the bottleneck.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use clap::{Parser, Subcommand};

const EVENT_MARK: &str = "\"id\":\"evt_";
const TIMESTAMP_MARK: &str = "\"timestamp\":\"";

#[derive(Parser)]
#[command(about = "walhook benchmark receiver and load generator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Receive webhooks and count them.
    Serve {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Written with the bound port once the receiver accepts connections.
        #[arg(long)]
        port_file: Option<std::path::PathBuf>,
    },
    /// Measure a receiver's ceiling.
    Load {
        #[arg(long)]
        url: String,
        /// Events per request body (1: a single event body, more: `{"events":[...]}`).
        #[arg(long, default_value_t = 1)]
        batch: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve { listen, port_file } => runtime.block_on(serve(listen, port_file)),
        Command::Load {
            url,
            batch,
            concurrency,
            seconds,
        } => runtime.block_on(load(url, batch, concurrency, seconds)),
    }
}

/// What the receiver has seen since start or the last reset.
#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    events: AtomicU64,
    /// Request body bytes received.
    bytes: AtomicU64,
    /// Unix nanoseconds of the first and the last request that carried an event.
    first_ns: AtomicU64,
    last_ns: AtomicU64,
    /// Per event: receipt time (Unix ns) and receipt minus commit time in microseconds
    /// (clamped at 0).
    latencies: Mutex<Vec<(u64, u32)>>,
    /// How late a thread that sleeps 1 ms at a time wakes up, in microseconds: the machine's
    /// own scheduling noise, to read the latency tail against.
    oversleep_us: Mutex<Vec<u32>>,
}

async fn serve(
    listen: SocketAddr,
    port_file: Option<std::path::PathBuf>,
) -> Result<(), Box<dyn std::error::Error>> {
    let counts = Arc::new(Counts::default());
    let probe = counts.clone();
    std::thread::spawn(move || oversleep_probe(&probe));
    let app = Router::new()
        .route("/stats", get(stats))
        .route("/latencies", get(latencies))
        .route("/reset", post(reset))
        .fallback(receive)
        .layer(DefaultBodyLimit::disable())
        .with_state(counts);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let port = listener.local_addr()?.port();
    if let Some(path) = port_file {
        // Written whole then renamed, so a reader never sees a partial port.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{port}\n"))?;
        std::fs::rename(&tmp, &path)?;
    }
    eprintln!("bench_receiver: listening on 127.0.0.1:{port}");
    axum::serve(listener, app).await?;
    Ok(())
}

/// Sleeps 1 ms at a time and records by how much each wake-up came late, in batches of a
/// hundred so the lock is rare.
fn oversleep_probe(counts: &Counts) {
    let tick = Duration::from_millis(1);
    let mut batch = Vec::with_capacity(100);
    loop {
        let before = Instant::now();
        std::thread::sleep(tick);
        let late = before.elapsed().saturating_sub(tick).as_micros();
        batch.push(u32::try_from(late).unwrap_or(u32::MAX));
        if batch.len() == 100 {
            lock(&counts.oversleep_us).append(&mut batch);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

async fn receive(State(counts): State<Arc<Counts>>, body: Bytes) -> StatusCode {
    let now_ns = unix_nanos();
    counts.requests.fetch_add(1, Ordering::Relaxed);
    counts.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    let Ok(text) = std::str::from_utf8(&body) else {
        return StatusCode::OK;
    };
    let now_us = (now_ns / 1_000) as i64;
    let mut latencies = Vec::new();
    for (at, _) in text.match_indices(EVENT_MARK) {
        let rest = &text[at..];
        let committed = rest
            .find(TIMESTAMP_MARK)
            .and_then(|t| parse_rfc3339_micros(&rest[t + TIMESTAMP_MARK.len()..]));
        if let Some(committed) = committed {
            let micros = (now_us - committed).clamp(0, i64::from(u32::MAX));
            latencies.push((now_ns, micros as u32));
        }
    }
    if latencies.is_empty() {
        return StatusCode::OK;
    }
    let n = latencies.len() as u64;
    lock(&counts.latencies).extend_from_slice(&latencies);
    let _ = counts
        .first_ns
        .compare_exchange(0, now_ns, Ordering::Relaxed, Ordering::Relaxed);
    counts.last_ns.fetch_max(now_ns, Ordering::Relaxed);
    // Counted last: once `events` shows a target count, `last_ns` already covers it.
    counts.events.fetch_add(n, Ordering::Release);
    StatusCode::OK
}

/// The value at quantile `q` of sorted `values` (nearest rank); 0 when empty.
fn quantile(values: &[u32], q: f64) -> u32 {
    if values.is_empty() {
        return 0;
    }
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

async fn stats(State(counts): State<Arc<Counts>>) -> String {
    let events = counts.events.load(Ordering::Acquire);
    let mut latencies: Vec<u32> = lock(&counts.latencies).iter().map(|l| l.1).collect();
    latencies.sort_unstable();
    let mut oversleep = lock(&counts.oversleep_us).clone();
    oversleep.sort_unstable();
    format!(
        "requests={} events={} bytes={} first_ns={} last_ns={} p50_us={} p99_us={} max_us={} \
         oversleep_p99_us={} oversleep_max_us={}\n",
        counts.requests.load(Ordering::Relaxed),
        events,
        counts.bytes.load(Ordering::Relaxed),
        counts.first_ns.load(Ordering::Relaxed),
        counts.last_ns.load(Ordering::Relaxed),
        quantile(&latencies, 0.50),
        quantile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0),
        quantile(&oversleep, 0.99),
        oversleep.last().copied().unwrap_or(0),
    )
}

/// Every event since the last reset, one line each: receipt time (Unix ns) and latency (us).
async fn latencies(State(counts): State<Arc<Counts>>) -> String {
    let latencies = lock(&counts.latencies).clone();
    let mut out = String::with_capacity(latencies.len() * 28);
    for (at, micros) in latencies {
        out.push_str(&format!("{at} {micros}\n"));
    }
    out
}

async fn reset(State(counts): State<Arc<Counts>>) -> StatusCode {
    let mut latencies = lock(&counts.latencies);
    latencies.clear();
    lock(&counts.oversleep_us).clear();
    counts.requests.store(0, Ordering::Relaxed);
    counts.events.store(0, Ordering::Relaxed);
    counts.bytes.store(0, Ordering::Relaxed);
    counts.first_ns.store(0, Ordering::Relaxed);
    counts.last_ns.store(0, Ordering::Relaxed);
    StatusCode::OK
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Microseconds since the Unix epoch of `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` at the start of `s`.
fn parse_rfc3339_micros(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        digits.iter().try_fold(0i64, |acc, d| {
            d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0'))
        })
    };
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    let mut micros = 0;
    if b.get(19) == Some(&b'.') {
        let mut scale = 100_000;
        for d in b.get(20..)?.iter().take_while(|d| d.is_ascii_digit()) {
            micros += i64::from(d - b'0') * scale;
            scale /= 10;
        }
    }
    let days = days_from_civil(year, month, day);
    Some(((days * 86_400 + hour * 3_600 + minute * 60 + second) * 1_000_000) + micros)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// POSTs walhook-shaped bodies from `concurrency` tasks for `seconds`; prints the rates.
async fn load(
    url: String,
    batch: usize,
    concurrency: usize,
    seconds: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let body = Bytes::from(sample_body(batch.max(1)));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        tasks.spawn(async move {
            let (mut ok, mut failed) = (0u64, 0u64);
            while Instant::now() < deadline {
                let sent = client.post(&url).body(body.clone()).send().await;
                match sent {
                    Ok(response) if response.status().is_success() => {
                        let _ = response.bytes().await;
                        ok += 1;
                    }
                    _ => failed += 1,
                }
            }
            (ok, failed)
        });
    }
    let (mut ok, mut failed) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        let (o, f) = done?;
        ok += o;
        failed += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let requests = ok as f64 / elapsed;
    println!(
        "requests_per_s={:.0} events_per_s={:.0} failed={failed} batch={batch} concurrency={concurrency} seconds={elapsed:.2}",
        requests,
        requests * batch as f64,
    );
    Ok(())
}

/// `batch` event bodies as walhook writes them (a batch wrapped in `{"events":[...]}`).
fn sample_body(batch: usize) -> String {
    let now = unix_nanos() / 1_000;
    let (secs, frac) = ((now / 1_000_000) as i64, now % 1_000_000);
    let days = secs.div_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let t = secs.rem_euclid(86_400);
    let timestamp = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        t / 3600,
        t / 60 % 60,
        t % 60
    );
    let event = |i: usize| {
        format!(
            concat!(
                r#"{{"id":"evt_0000000001A2B3C4_{i}","type":"bench.inserted","timestamp":"{ts}","#,
                r#""data":{{"table":"public.bench","operation":"insert","row":{{"id":{i},"a":{i},"#,
                r#""b":"c4ca4238a0b923820dcc509a6f75849b","c":{i}.5,"#,
                r#""d":"2026-11-26T17:51:10.57433+00:00"}},"old":null,"changed":null,"#,
                r#""unchanged_toast":[],"commit_lsn":"0/1A2B3C4","xid":745}}}}"#
            ),
            i = i,
            ts = timestamp
        )
    };
    if batch == 1 {
        return event(0);
    }
    let events: Vec<String> = (0..batch).map(event).collect();
    format!(r#"{{"events":[{}]}}"#, events.join(","))
}

/// The date of a day count from 1970-01-01 (inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_to_unix_micros() {
        let cases = [
            ("1970-01-01T00:00:00.000000Z", 0),
            ("2026-11-26T17:51:10.574330Z\"", 1_795_715_470_574_330),
            ("2000-02-29T00:00:00.000001Z", 951_782_400_000_001),
            ("2000-02-29T00:00:00Z", 951_782_400_000_000),
        ];
        for (text, want) in cases {
            assert_eq!(parse_rfc3339_micros(text), Some(want), "{text}");
        }
        assert_eq!(parse_rfc3339_micros("2000-02-2"), None);
    }

    #[test]
    fn the_sample_body_counts_as_its_events() {
        for batch in [1, 3] {
            let body = sample_body(batch);
            assert_eq!(body.matches(EVENT_MARK).count(), batch);
        }
    }

    #[test]
    fn day_counts_round_trip() {
        for days in [-1, 0, 11_016, 20_418, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
    }
}
