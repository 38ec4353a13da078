//! Fuzzing the pgoutput decoder with real messages: a stream of every kind of change is
//! captured from a real Postgres, then many thousands of mutations of those messages are fed to
//! `LogicalMessage::decode`, to the assembler behind it (which encodes every value), and, in
//! their CopyData frames, to `ReplicationMessage::decode`. None may panic.
//!
//! `WALHOOK_FUZZ_ITERATIONS=<n>` runs longer (default 200,000); `WALHOOK_FUZZ_SEED=<n>` replays
//! a run.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use walhook::model::Lsn;
use walhook::source::{
    resolve_type, Assembler, LogicalMessage, ReplicationClient, ReplicationMessage, SourceEvent,
    TypeRegistry,
};

use crate::faults::harness::Rng;
use crate::support::TestDb;

/// What the captured stream contains: every message kind pgoutput v1 sends, values of many
/// types (NULLs, unchanged TOAST, arrays, json, an enum and a composite), both replica
/// identities, a key change, a truncate of two tables, and logical messages.
const WORKLOAD: &str = "
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE pair AS (a int, b text);
CREATE TABLE kinds (
    id bigint PRIMARY KEY, i2 smallint, i4 int, f4 real, f8 float8, n numeric, b bool,
    t text, vc varchar(20), c char(3), by bytea, j json, jb jsonb, u uuid, d date,
    tm time, ts timestamp, tz timestamptz, iv interval, ia int[], ta text[], m mood, p pair,
    big text
);
CREATE TABLE plain (id int PRIMARY KEY, note text);
ALTER TABLE kinds REPLICA IDENTITY FULL;
";

const CHANGES: &[&str] = &[
    "INSERT INTO kinds VALUES (1, 2, 3, 1.5, 2.25, 12345.6789, true, 'tëxt \"q\"', 'vc', 'abc', \
     '\\x00ff', '{\"a\": [1, 2]}', '{\"b\": null}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', \
     '2024-02-29', '12:34:56.789', '2024-01-01 00:00:00', '2024-01-01 00:00:00+02', \
     '1 year 2 mons 3 days 04:05:06', '{1,NULL,3}', '{\"a\",\"b c\"}', 'happy', '(1,x)', \
     repeat('toast me ', 5000))",
    "INSERT INTO kinds (id) VALUES (2)",
    "INSERT INTO kinds VALUES (3, -32768, -2147483648, 'NaN', '-Infinity', 'NaN', false, '', '', \
     '', '\\x', 'null', '[]', '00000000-0000-0000-0000-000000000000', 'infinity', '00:00', \
     '-infinity', 'infinity', '-1 days', '{}', '{}', 'sad', '(,)', NULL)",
    "UPDATE kinds SET i4 = 4 WHERE id = 1",
    "UPDATE kinds SET id = 10 WHERE id = 2",
    "DELETE FROM kinds WHERE id = 3",
    "INSERT INTO plain VALUES (1, 'one'), (2, NULL)",
    "UPDATE plain SET note = 'uno' WHERE id = 1",
    "UPDATE plain SET id = 3 WHERE id = 2",
    "DELETE FROM plain WHERE id = 1",
    "BEGIN; INSERT INTO plain VALUES (7, 'seven'); SELECT pg_logical_emit_message(true, 'fuzz', 'in a transaction'); COMMIT",
    "SELECT pg_logical_emit_message(false, 'fuzz', '\\x00ff'::bytea)",
    "ALTER TABLE plain ADD COLUMN extra numeric(10, 2)",
    "INSERT INTO plain VALUES (8, 'eight', 8.5)",
    "TRUNCATE plain, kinds RESTART IDENTITY CASCADE",
    "SELECT pg_logical_emit_message(false, 'fuzz', 'done')",
];

/// The captured stream: each XLogData's pgoutput message, and every CopyData payload as it
/// came (XLogData frames and keepalives).
struct Captured {
    messages: Vec<Vec<u8>>,
    frames: Vec<Vec<u8>>,
    types: TypeRegistry,
}

async fn capture() -> Captured {
    let db = TestDb::new().await;
    let sql = db.client().await;
    sql.batch_execute(WORKLOAD).await.unwrap();
    let publication = format!("{}_pub", db.name());
    sql.batch_execute(&format!(
        "CREATE PUBLICATION {publication} FOR TABLE kinds, plain"
    ))
    .await
    .unwrap();
    let spec = db.url().parse().unwrap();
    let mut repl = ReplicationClient::connect(&spec).await.unwrap();
    repl.create_slot(db.name()).await.unwrap();
    for change in CHANGES {
        sql.batch_execute(change).await.unwrap();
    }
    let mut stream = repl
        .start_replication(db.name(), &publication, Lsn(0))
        .await
        .unwrap();
    let mut captured = Captured {
        messages: Vec::new(),
        frames: Vec::new(),
        types: TypeRegistry::builtin(),
    };
    loop {
        let payload = tokio::time::timeout(Duration::from_secs(30), stream.recv())
            .await
            .expect("the stream went quiet before the last message")
            .unwrap()
            .expect("the server ended the stream");
        captured.frames.push(payload.to_vec());
        let ReplicationMessage::XLogData(x) = ReplicationMessage::decode(&payload).unwrap() else {
            continue;
        };
        captured.messages.push(x.data.to_vec());
        if let Ok(LogicalMessage::Relation(relation)) = LogicalMessage::decode(x.data) {
            for oid in Assembler::missing_types(&relation, &captured.types) {
                resolve_type(&sql, oid, &mut captured.types).await.unwrap();
            }
        }
        if x.data.ends_with(b"done") {
            break;
        }
    }
    stream.finish().await.unwrap();
    crate::faults::harness::wait_inactive(&sql, db.name()).await;
    sql.execute("SELECT pg_drop_replication_slot($1)", &[&db.name()])
        .await
        .unwrap();
    captured
}

/// A mutation of `seed`, 1 to 8 edits: bytes set, flipped, inserted, removed, the tail cut,
/// a 2- or 4-byte field overwritten with an edge value, or a piece of `other` spliced in.
fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    const EDGES: [u32; 9] = [
        0,
        1,
        0x7F,
        0x80,
        0xFF,
        0x7FFF,
        0xFFFF,
        0x7FFF_FFFF,
        0xFFFF_FFFF,
    ];
    const BYTES: &[u8] = b"\x00\x01\x7f\x80\xffBCORYIUDTMKNOntub";
    let mut buf = seed.to_vec();
    for _ in 0..rng.range(1, 9) {
        let len = buf.len() as u64;
        let at = rng.range(0, len.max(1)) as usize;
        match rng.range(0, 8) {
            0 if !buf.is_empty() => buf[at] = BYTES[rng.range(0, BYTES.len() as u64) as usize],
            1 if !buf.is_empty() => buf[at] ^= 1 << rng.range(0, 8),
            2 => buf.insert(at.min(buf.len()), rng.next() as u8),
            3 if !buf.is_empty() => {
                buf.remove(at);
            }
            4 => buf.truncate(at),
            5 if buf.len() >= at + 2 => {
                let v = EDGES[rng.range(0, 9) as usize] as u16;
                buf[at..at + 2].copy_from_slice(&v.to_be_bytes());
            }
            6 if buf.len() >= at + 4 => {
                let v = EDGES[rng.range(0, 9) as usize];
                buf[at..at + 4].copy_from_slice(&v.to_be_bytes());
            }
            7 if !other.is_empty() => {
                let from = rng.range(0, other.len() as u64) as usize;
                let to = rng.range(from as u64, other.len() as u64 + 1) as usize;
                let at = at.min(buf.len());
                buf.splice(at..at, other[from..to].iter().copied());
            }
            _ => buf.push(rng.next() as u8),
        }
    }
    buf
}

/// An assembler that has seen every Relation of the capture and is inside a transaction, so a
/// mutated change reaches the value encoders.
fn primed(captured: &Captured) -> Assembler {
    let mut assembler = Assembler::new();
    let mut out = Vec::new();
    for m in &captured.messages {
        if matches!(m[0], b'R' | b'Y' | b'B') {
            let message = LogicalMessage::decode(m).unwrap();
            let _ = assembler.apply(message, &captured.types, &mut out);
        }
    }
    assembler
}

fn hex(buf: &[u8]) -> String {
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn mutated_real_pgoutput_messages_never_panic() {
    // GIVEN a real pgoutput stream of every kind of message
    let captured = capture().await;
    let tags: std::collections::BTreeSet<char> =
        captured.messages.iter().map(|m| m[0] as char).collect();
    assert_eq!(
        tags.into_iter().collect::<String>(),
        "BCDIMRTUY",
        "the capture lacks a message kind"
    );
    // ... which decodes and assembles without an error as it is
    let mut assembler = Assembler::new();
    let mut out = Vec::new();
    for m in &captured.messages {
        let message = LogicalMessage::decode(m).unwrap_or_else(|e| panic!("{e}: {}", hex(m)));
        assembler
            .apply(message, &captured.types, &mut out)
            .unwrap_or_else(|e| panic!("{e}: {}", hex(m)));
    }
    assert!(out.iter().any(|a| matches!(a, SourceEvent::Change(_))));

    // WHEN many thousands of mutations of its messages are decoded and assembled, and their
    // CopyData frames decoded
    let iterations: u64 = std::env::var("WALHOOK_FUZZ_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    let mut rng = Rng::from_env("fuzz_decoder", "WALHOOK_FUZZ_SEED");
    let mut decoded_ok = 0u64;
    let mut assembled = 0u64;
    for i in 0..iterations {
        let pick = |rng: &mut Rng, from: &[Vec<u8>]| {
            from[rng.range(0, from.len() as u64) as usize].clone()
        };
        let seed = pick(&mut rng, &captured.messages);
        let other = pick(&mut rng, &captured.messages);
        let input = mutate(&mut rng, &seed, &other);
        // THEN nothing panics: decoding returns Ok or an error that displays
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let mut changes = 0;
            match LogicalMessage::decode(&input) {
                Ok(message) => {
                    let mut assembler = primed(&captured);
                    let mut out = Vec::new();
                    if let Err(e) = assembler.apply(message, &captured.types, &mut out) {
                        assert!(!e.to_string().is_empty());
                    }
                    changes = out.len();
                    (true, changes)
                }
                Err(e) => {
                    assert!(!e.to_string().is_empty());
                    (false, changes)
                }
            }
        }));
        match outcome {
            Ok((ok, changes)) => {
                decoded_ok += u64::from(ok);
                assembled += u64::from(changes > 0);
            }
            Err(_) => panic!(
                "iteration {i}: decoding or assembling panicked on {} (mutated from {})",
                hex(&input),
                hex(&seed)
            ),
        }
        let frame = pick(&mut rng, &captured.frames);
        let frame = mutate(&mut rng, &frame, &seed);
        if catch_unwind(|| {
            if let Err(e) = ReplicationMessage::decode(&frame) {
                assert!(!e.to_string().is_empty());
            }
        })
        .is_err()
        {
            panic!(
                "iteration {i}: ReplicationMessage::decode panicked on {}",
                hex(&frame)
            );
        }
    }
    // AND the mutations reached past the first check: some still decoded, and some of those
    // were turned into changes
    assert!(decoded_ok > iterations / 100, "only {decoded_ok} decoded");
    assert!(assembled > iterations / 1000, "only {assembled} assembled");
    println!(
        "fuzz_decoder: {iterations} mutated messages and {iterations} mutated frames from {} \
         captured messages; {decoded_ok} still decoded, {assembled} assembled into events",
        captured.messages.len()
    );
}
