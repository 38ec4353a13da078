//! The table `bench/run.sh` writes, `public.bench (id bigint, a int, b text, c numeric,
//! d timestamptz)`, as pgoutput (protocol version 1) streams it: the bytes of each message,
//! written field by field after the "Logical Replication Message Formats" chapter of the
//! Postgres documentation. Shared by the decoder and the change-to-event benchmarks.
//!
//! Values are Postgres's text output (`TimeZone=UTC`, `DateStyle=ISO`), as walhook asks for
//! them, and vary by row so that no benchmark reads the same bytes over and over.

/// `public.bench`'s OID; any OID works, as long as changes name the Relation's.
pub const RELATION_OID: u32 = 16_385;

/// `Begin`'s final LSN, `Commit`'s commit LSN and its end LSN (just past the commit record).
const COMMIT_LSN: u64 = 0x0000_0001_6B37_4D48;
const END_LSN: u64 = COMMIT_LSN + 0x30;
/// 2026-11-26 21:09:14.574330 UTC in microseconds since 2000-01-01, Postgres's epoch.
const COMMIT_TIME: i64 = 849_042_554_574_330;
const XID: u32 = 745;

/// The columns: name, type OID (`pg_type.dat`), and whether it is the replica identity (the
/// primary key under `REPLICA IDENTITY DEFAULT`).
const COLUMNS: [(&str, u32, bool); 5] = [
    ("id", 20, true),   // bigint (bigserial)
    ("a", 23, false),   // int
    ("b", 25, false),   // text: md5(g::text)
    ("c", 1700, false), // numeric: g * 1.25
    ("d", 1184, false), // timestamptz: clock_timestamp()
];

/// One message, big-endian, as the walsender writes it.
struct Message(Vec<u8>);

impl Message {
    fn new(tag: u8) -> Self {
        Self(vec![tag])
    }

    fn byte(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }

    fn int16(mut self, v: i16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    fn int32(mut self, v: i32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    fn uint32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    fn int64(mut self, v: i64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    fn lsn(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A NUL-terminated string.
    fn string(mut self, s: &str) -> Self {
        self.0.extend_from_slice(s.as_bytes());
        self.byte(0)
    }

    /// TupleData: Int16 column count, then per column `n` (null) or `t`, Int32 length, text.
    fn tuple(mut self, values: &[Option<&str>]) -> Self {
        let count = i16::try_from(values.len()).expect("a tuple has at most 1,664 columns");
        self = self.int16(count);
        for value in values {
            self = match value {
                None => self.byte(b'n'),
                Some(text) => {
                    let len = i32::try_from(text.len()).expect("a value is under 1 GB");
                    let mut m = self.byte(b't').int32(len);
                    m.0.extend_from_slice(text.as_bytes());
                    m
                }
            };
        }
        self
    }
}

/// `Begin`: final LSN, commit timestamp, xid.
pub fn begin() -> Vec<u8> {
    Message::new(b'B')
        .lsn(COMMIT_LSN)
        .int64(COMMIT_TIME)
        .uint32(XID)
        .0
}

/// `Commit`: flags (none), commit LSN, end LSN, commit timestamp.
pub fn commit() -> Vec<u8> {
    Message::new(b'C')
        .byte(0)
        .lsn(COMMIT_LSN)
        .lsn(END_LSN)
        .int64(COMMIT_TIME)
        .0
}

/// `Relation`: OID, namespace, name, replica identity (`d`efault), then per column its flags
/// (1 = part of the key), name, type OID and type modifier (-1: none).
pub fn relation() -> Vec<u8> {
    let mut m = Message::new(b'R')
        .uint32(RELATION_OID)
        .string("public")
        .string("bench")
        .byte(b'd')
        .int16(COLUMNS.len() as i16);
    for (name, type_oid, is_key) in COLUMNS {
        m = m
            .byte(u8::from(is_key))
            .string(name)
            .uint32(type_oid)
            .int32(-1);
    }
    m.0
}

/// The names of the primary key's columns, as the catalog lookup after a Relation gives them.
pub fn primary_key() -> Vec<String> {
    COLUMNS
        .iter()
        .filter(|(_, _, is_key)| *is_key)
        .map(|(name, _, _)| name.to_string())
        .collect()
}

/// `Insert` of row `g` of `fill()`'s `INSERT ... SELECT g, md5(g::text), g * 1.25,
/// clock_timestamp()` in the large transaction.
pub fn insert(g: u32) -> Vec<u8> {
    let row = Row::new(g);
    Message::new(b'I')
        .uint32(RELATION_OID)
        .byte(b'N')
        .tuple(&row.values())
        .0
}

/// `Update` that changed the key (`UPDATE bench SET id = id + 1_000_000`): under the default
/// replica identity the old tuple is sent as `K`, with the key columns only (the others null).
pub fn update_key(g: u32) -> Vec<u8> {
    let old = Row::new(g);
    let new = Row {
        id: (Row::id_of(g) + 1_000_000).to_string(),
        ..Row::new(g)
    };
    let mut old_key = old.values();
    for (value, (_, _, is_key)) in old_key.iter_mut().zip(COLUMNS) {
        if !is_key {
            *value = None;
        }
    }
    Message::new(b'U')
        .uint32(RELATION_OID)
        .byte(b'K')
        .tuple(&old_key)
        .byte(b'N')
        .tuple(&new.values())
        .0
}

/// One transaction of `fill()`: Begin, `rows` Inserts, Commit.
pub fn transaction(rows: u32) -> Vec<Vec<u8>> {
    let mut messages = vec![begin()];
    messages.extend((1..=rows).map(insert));
    messages.push(commit());
    messages
}

/// Row `g`'s text values.
struct Row {
    id: String,
    a: String,
    b: String,
    c: String,
    d: String,
}

impl Row {
    fn new(g: u32) -> Self {
        let g64 = u64::from(g);
        // 32 lowercase hex digits, as md5() gives (a multiplicative hash stands in for md5).
        let md5 = u128::from(g).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
        let cents = g64 * 125;
        let micros = (g64 * 7_919) % 1_000_000;
        Self {
            id: Self::id_of(g).to_string(),
            a: g.to_string(),
            b: format!("{md5:032x}"),
            // numeric keeps the scale of 1.25: `1.25`, `2.50`.
            c: format!("{}.{:02}", cents / 100, cents % 100),
            d: format!(
                "2026-11-26 21:{:02}:{:02}{}+00",
                (g64 / 60) % 60,
                g64 % 60,
                fraction(micros)
            ),
        }
    }

    /// The bigserial id: the 200,000 single-row transactions of `bench/run.sh` come first.
    fn id_of(g: u32) -> u64 {
        200_000 + u64::from(g)
    }

    fn values(&self) -> [Option<&str>; 5] {
        [
            Some(&self.id),
            Some(&self.a),
            Some(&self.b),
            Some(&self.c),
            Some(&self.d),
        ]
    }
}

/// Postgres prints fractional seconds without trailing zeros, and none at all when zero.
fn fraction(micros: u64) -> String {
    if micros == 0 {
        return String::new();
    }
    let digits = format!(".{micros:06}");
    digits.trim_end_matches('0').to_string()
}
