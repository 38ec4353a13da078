//! From a pgoutput message to a webhook event body, in rows per second on one core: the
//! source's half (decode, then `Assembler::apply`, which encodes every value into a `Change`)
//! and the mapping's half (`Mapper::map`, which writes the event body), apart and together.
//!
//! The rules are `bench/run.sh`'s (inserts of `public.bench` to one subscriber) plus one for
//! updates. Every path is run once before timing and its result checked.
//!
//! `cargo bench --bench change_to_event` (add `-- --quick` for a short run).

mod bench_table;

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use walhook::mapping::{Mapper, Routed};
use walhook::model::Change;
use walhook::source::{Assembler, LogicalMessage, SourceEvent, TypeRegistry};

const CONFIG: &str = r#"
source.url = "postgres://bench@127.0.0.1/bench"
subscribers.bench.url = "http://127.0.0.1:9/hook"

[[events]]
type = "bench.inserted"
table = "public.bench"
operations = ["insert"]
subscribers = ["bench"]

[[events]]
type = "bench.rekeyed"
table = "public.bench"
operations = ["update"]
subscribers = ["bench"]
"#;

/// Rows in the transaction benchmark, as in `pgoutput_decode`.
const TRANSACTION_ROWS: u32 = 100;

/// The source's state once it has seen `public.bench`'s Relation and a Begin, as
/// `source::stream` keeps it.
struct Source {
    assembler: Assembler,
    types: TypeRegistry,
    out: Vec<SourceEvent>,
}

impl Source {
    fn new() -> Self {
        let mut source = Self {
            assembler: Assembler::new(),
            types: TypeRegistry::builtin(),
            out: Vec::new(),
        };
        let relation = bench_table::relation();
        let LogicalMessage::Relation(relation) =
            LogicalMessage::decode(&relation).expect("the bench relation decodes")
        else {
            panic!("the bench relation is not a Relation message");
        };
        source
            .assembler
            .relation(&relation, &bench_table::primary_key(), &source.types)
            .expect("the bench relation assembles");
        source.apply(&bench_table::begin());
        source.out.clear();
        source
    }

    /// Decodes and applies one message, appending what it amounts to to `self.out`.
    fn apply(&mut self, bytes: &[u8]) {
        let message = LogicalMessage::decode(bytes).expect("the bench message decodes");
        self.assembler
            .apply(message, &self.types, &mut self.out)
            .expect("the bench message assembles");
    }

    /// The change one row message amounts to.
    fn change(&mut self, bytes: &[u8]) -> Change {
        self.apply(bytes);
        match self.out.pop() {
            Some(SourceEvent::Change(change)) => change,
            other => panic!("a row message assembled to {other:?}"),
        }
    }
}

fn mapper() -> Mapper {
    let config = walhook::config::parse(CONFIG, Path::new("."), &|_| None)
        .expect("the bench config is valid");
    Mapper::new(&config).expect("the bench rules compile")
}

/// Maps `change` once and checks that it makes one event of `event_type` with the row's id.
fn check_event(mapper: &Mapper, change: &Change, event_type: &str, id: &str) {
    let mut routed = Vec::new();
    mapper.map(change, &mut routed);
    assert_eq!(routed.len(), 1, "{event_type}: one rule applies");
    let event = &routed[0].event;
    assert_eq!(event.event_type, event_type);
    let body: serde_json::Value = serde_json::from_str(&event.body).expect("the body is JSON");
    assert_eq!(body["data"]["row"]["id"].to_string(), id, "{}", event.body);
}

fn change_to_event(c: &mut Criterion) {
    let mapper = mapper();
    let mut source = Source::new();
    let rows = [
        (
            "insert",
            bench_table::insert(57),
            "bench.inserted",
            "200057",
        ),
        (
            "update_old_key",
            bench_table::update_key(57),
            "bench.rekeyed",
            "1200057",
        ),
    ];
    let mut group = c.benchmark_group("change_to_event");
    group.throughput(Throughput::Elements(1));
    for (name, bytes, event_type, id) in &rows {
        let change = source.change(bytes);
        check_event(&mapper, &change, event_type, id);

        group.bench_function(format!("assemble_{name}"), |b| {
            b.iter(|| {
                source.apply(black_box(bytes));
                source.out.clear();
            })
        });
        let mut routed: Vec<Routed> = Vec::new();
        group.bench_function(format!("map_{name}"), |b| {
            b.iter(|| {
                mapper.map(black_box(&change), &mut routed);
                routed.clear();
            })
        });
    }
    group.finish();
}

/// A whole transaction of `fill()`, message by message, as the source and the pipeline see it.
fn transaction(c: &mut Criterion) {
    let mapper = mapper();
    let mut source = Source::new();
    let messages = bench_table::transaction(TRANSACTION_ROWS);
    let mut routed: Vec<Routed> = Vec::new();
    let run = |source: &mut Source, routed: &mut Vec<Routed>| {
        for bytes in &messages {
            source.apply(black_box(bytes));
            for assembled in source.out.drain(..) {
                if let SourceEvent::Change(change) = assembled {
                    mapper.map(&change, routed);
                }
            }
        }
    };
    run(&mut source, &mut routed);
    assert_eq!(routed.len(), TRANSACTION_ROWS as usize, "one event per row");
    routed.clear();

    let mut group = c.benchmark_group("change_to_event");
    group.throughput(Throughput::Elements(u64::from(TRANSACTION_ROWS)));
    group.bench_function("transaction_100_inserts", |b| {
        b.iter(|| {
            run(&mut source, &mut routed);
            routed.clear();
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Shorter than Criterion's 3 s + 5 s, so that the whole file runs in about half a minute.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = change_to_event, transaction
}
criterion_main!(benches);
