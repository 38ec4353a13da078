//! A repeatable workload for the source → mapping path, to count instructions per event under
//! callgrind (wall-clock timings on a shared machine are too noisy to compare small changes).
//!
//! ```text
//! cargo build --release --example map_profile
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out target/release/examples/map_profile 20000 30000
//! callgrind_annotate --inclusive=yes /tmp/cg.out | grep -E 'Assembler::apply|Mapper::map'
//! ```
//!
//! The workload is `bench/run.sh`'s in miniature: `single` one-row transactions, then one
//! transaction of `bulk` rows, inserted into `public.bench (id bigserial primary key, a int,
//! b text, c numeric, d timestamptz)` and mapped by one insert rule. Each message, built as the
//! decoder would return it, goes through [`Assembler::apply`] and each change through
//! [`Mapper::map`], as in `walhook run`, without the network on either side. It prints the
//! number of events and an FNV-1a hash of every event's id, key, table and body, so a change
//! that must not alter the output can be checked by comparing that line before and after.

use std::path::Path;

use walhook::mapping::{fnv1a, Mapper};
use walhook::model::{Lsn, ReplicaIdentity};
use walhook::source::{
    Assembler, Begin, Commit, LogicalMessage, PgTimestamp, RelationColumn, RelationMessage,
    SourceEvent, TupleValue, TypeRegistry,
};

const CONFIG: &str = r#"
source.url = "postgres://walhook@127.0.0.1/bench"
subscribers.bench.url = "http://127.0.0.1:9/hook"
[[events]]
type = "bench.inserted"
table = "public.bench"
operations = ["insert"]
subscribers = ["bench"]
"#;

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u32>());
    let (Some(Ok(single)), Some(Ok(bulk)), None) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: map_profile <single-row transactions> <rows in the bulk transaction>");
        std::process::exit(2);
    };
    let config = walhook::config::parse(CONFIG, Path::new("."), &|_| None).expect("config");
    let mapper = Mapper::new(&config).expect("rules");
    let types = TypeRegistry::builtin();
    let mut assembler = Assembler::new();
    let mut assembled = Vec::new();
    let mut routed = Vec::new();
    let relation = RelationMessage {
        oid: 16_385,
        namespace: "public",
        name: "bench",
        replica_identity: ReplicaIdentity::Default,
        columns: [
            (true, "id", 20),
            (false, "a", 23),
            (false, "b", 25),
            (false, "c", 1700),
            (false, "d", 1184),
        ]
        .into_iter()
        .map(|(is_key, name, type_oid)| RelationColumn {
            is_key,
            name,
            type_oid,
            type_modifier: -1,
        })
        .collect(),
    };
    assembler
        .relation(&relation, &["id".to_string()], &types)
        .expect("relation");

    let (mut events, mut hash, mut id, mut xid) = (0u64, 0u64, 0u64, 745u32);
    let mut lsn = 0x16B_3748u64;
    let mut commit_time = PgTimestamp::from_unix_micros(1_795_715_470_574_330);
    let transactions = (0..single).map(|_| 1).chain((bulk > 0).then_some(bulk));
    for rows in transactions {
        let commit_lsn = Lsn(lsn + 200 * u64::from(rows));
        xid += 1;
        let mut messages = vec![LogicalMessage::Begin(Begin {
            final_lsn: commit_lsn,
            commit_time,
            xid,
        })];
        let mut texts = Vec::with_capacity(rows as usize);
        for _ in 0..rows {
            id += 1;
            texts.push([
                id.to_string(),
                (id % 1000).to_string(),
                format!("{:016x}{:016x}", fnv1a(&id.to_le_bytes()), id),
                format!("{}.25", id % 100_000),
                format!("2026-11-26 17:51:{:02}.{:06}+00", id % 60, id % 1_000_000),
            ]);
        }
        for text in &texts {
            messages.push(LogicalMessage::Insert {
                relation: 16_385,
                new: text
                    .iter()
                    .map(|t| TupleValue::Text(t.as_bytes()))
                    .collect(),
            });
        }
        messages.push(LogicalMessage::Commit(Commit {
            flags: 0,
            commit_lsn,
            end_lsn: Lsn(commit_lsn.0 + 48),
            commit_time,
        }));
        for message in messages {
            assembler
                .apply(message, &types, &mut assembled)
                .expect("apply");
            for item in assembled.drain(..) {
                let SourceEvent::Change(change) = item else {
                    continue;
                };
                routed.clear();
                mapper.map(&change, &mut routed);
                for r in &routed {
                    events += 1;
                    let e = &r.event;
                    for text in [&e.id, &e.key, &e.table, &e.body] {
                        hash = hash.rotate_left(5) ^ fnv1a(text.as_bytes());
                    }
                }
            }
        }
        lsn = commit_lsn.0 + 64;
        commit_time = PgTimestamp(commit_time.0 + 1_234);
    }
    println!("events={events} output_hash={hash:016x}");
}
