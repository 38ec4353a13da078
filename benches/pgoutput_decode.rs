//! The pgoutput decoder, `LogicalMessage::decode`, in messages per second on one core.
//!
//! One benchmark per message kind the throughput benchmark's stream consists of, and one
//! transaction of 100 inserts as `bench/run.sh`'s large transaction sends it. Each message is
//! decoded once before timing and must decode to its kind, so an error path is never what
//! gets measured.
//!
//! `cargo bench --bench pgoutput_decode` (add `-- --quick` for a short run).

mod bench_table;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use walhook::source::{LogicalMessage, OldTuple};

/// Rows in the transaction benchmark: enough that Begin and Commit weigh little.
const TRANSACTION_ROWS: u32 = 100;

/// Whether a message decoded to what the benchmark built.
type Check = fn(&LogicalMessage<'_>) -> bool;

fn decode_each_kind(c: &mut Criterion) {
    let mut group = c.benchmark_group("pgoutput_decode");
    group.throughput(Throughput::Elements(1));
    let kinds: [(&str, Vec<u8>, Check); 5] = [
        ("begin", bench_table::begin(), |m| {
            matches!(m, LogicalMessage::Begin(_))
        }),
        ("relation", bench_table::relation(), |m| match m {
            LogicalMessage::Relation(r) => r
                .columns
                .iter()
                .filter(|c| c.is_key)
                .map(|c| c.name)
                .eq(bench_table::primary_key()),
            _ => false,
        }),
        (
            "insert",
            bench_table::insert(57),
            |m| matches!(m, LogicalMessage::Insert { new, .. } if new.len() == 5),
        ),
        ("update_old_key", bench_table::update_key(57), |m| {
            matches!(
                m,
                LogicalMessage::Update {
                    old: Some(OldTuple::Key(_)),
                    ..
                }
            )
        }),
        ("commit", bench_table::commit(), |m| {
            matches!(m, LogicalMessage::Commit(_))
        }),
    ];
    for (name, bytes, is_expected) in kinds {
        let decoded = LogicalMessage::decode(&bytes).expect("the bench message decodes");
        assert!(is_expected(&decoded), "{name} decoded as {decoded:?}");
        group.bench_function(name, |b| {
            b.iter(|| LogicalMessage::decode(black_box(&bytes)))
        });
    }
    group.finish();
}

fn decode_transaction(c: &mut Criterion) {
    let messages = bench_table::transaction(TRANSACTION_ROWS);
    for bytes in &messages {
        LogicalMessage::decode(bytes).expect("the bench message decodes");
    }
    let mut group = c.benchmark_group("pgoutput_decode");
    group.throughput(Throughput::Elements(messages.len() as u64));
    group.bench_function("transaction_100_inserts", |b| {
        b.iter(|| {
            for bytes in &messages {
                // Dropped here, as the source drops each message once assembled.
                let _ = black_box(LogicalMessage::decode(black_box(bytes)));
            }
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Shorter than Criterion's 3 s + 5 s: each benchmark here takes well under a microsecond.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = decode_each_kind, decode_transaction
}
criterion_main!(benches);
