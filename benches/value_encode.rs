//! The value encoder, `encode_text`: Postgres's text output of a column value in, the JSON
//! `to_jsonb()` gives for it out, appended to a reused buffer as the assembler does.
//!
//! One benchmark per column type (values per second on one core), and one for a row of all of
//! them (rows per second). Types come from `TypeRegistry::builtin()` by OID, as the assembler
//! looks them up. Each value is encoded once before timing and compared with the JSON
//! expected, so the benchmarks time successful encodings only.
//!
//! `cargo bench --bench value_encode` (add `-- --quick` for a short run).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use walhook::source::{encode_text, PgType, TypeRegistry};

/// A typical row: name, type OID, text output (`TimeZone=UTC`, `DateStyle=ISO`), and the JSON
/// `to_jsonb()` gives for it.
const ROW: [(&str, u32, &str, &str); 9] = [
    ("int8", 20, "200057", "200057"),
    ("int4", 23, "57", "57"),
    (
        "text",
        25,
        "72b32a1f754ba1c09b3695e0cb6cde7f",
        r#""72b32a1f754ba1c09b3695e0cb6cde7f""#,
    ),
    ("numeric", 1700, "71.25", "71.25"),
    (
        "timestamptz",
        1184,
        "2026-11-26 21:09:14.57433+00",
        r#""2026-11-26T21:09:14.57433+00:00""#,
    ),
    ("bool", 16, "t", "true"),
    (
        "jsonb",
        3802,
        r#"{"sku": "A-1042", "qty": 3, "tags": ["gift", "express"], "price": 19.99}"#,
        r#"{"sku": "A-1042", "qty": 3, "tags": ["gift", "express"], "price": 19.99}"#,
    ),
    (
        "uuid",
        2950,
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        r#""a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11""#,
    ),
    (
        "text_array",
        1009,
        r#"{red,"light blue",green}"#,
        r#"["red","light blue","green"]"#,
    ),
];

/// The row's types, resolved once, and its values as the decoder hands them over (bytes).
fn row_types() -> Vec<(&'static str, Arc<PgType>, &'static [u8])> {
    let registry = TypeRegistry::builtin();
    ROW.iter()
        .map(|(name, oid, text, want)| {
            let ty = registry.get(*oid).expect("a built-in type").clone();
            let mut out = String::new();
            encode_text(&ty, text.as_bytes(), &mut out).expect("the bench value encodes");
            assert_eq!(out, *want, "{name}");
            (*name, ty, text.as_bytes())
        })
        .collect()
}

fn encode_each_type(c: &mut Criterion) {
    let mut group = c.benchmark_group("value_encode");
    group.throughput(Throughput::Elements(1));
    let mut out = String::with_capacity(256);
    for (name, ty, text) in row_types() {
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                encode_text(&ty, black_box(text), &mut out)
            })
        });
    }
    group.finish();
}

fn encode_row(c: &mut Criterion) {
    let row = row_types();
    let mut group = c.benchmark_group("value_encode");
    group.throughput(Throughput::Elements(1));
    let mut out = String::with_capacity(256);
    group.bench_function("row_9_columns", |b| {
        b.iter(|| {
            out.clear();
            for (_, ty, text) in &row {
                // Cannot fail: every value was checked by row_types().
                let _ = encode_text(ty, black_box(text), &mut out);
            }
            black_box(out.len())
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
    targets = encode_each_type, encode_row
}
criterion_main!(benches);
