//! Hand-built messages: the builder and one valid message of every kind, shared by the
//! well-formed, malformed and fuzz tests.

mod fuzz;
mod malformed;
mod well_formed;

use super::*;

/// Builds a message field by field, big-endian, as the walsender writes it.
struct Msg(Vec<u8>);

impl Msg {
    fn new(tag: u8) -> Self {
        Self(vec![tag])
    }
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn i16(mut self, v: i16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i32(mut self, v: i32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i64(mut self, v: i64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
    fn cstr(self, s: &str) -> Self {
        self.raw(s.as_bytes()).u8(0)
    }
    fn text(self, kind: u8, v: &[u8]) -> Self {
        let len = i32::try_from(v.len()).unwrap();
        self.u8(kind).i32(len).raw(v)
    }
    fn build(self) -> Vec<u8> {
        self.0
    }
}

fn begin_msg() -> Vec<u8> {
    Msg::new(b'B')
        .u64(0x16_B374_D848)
        .i64(817_000_000_123_456)
        .u32(745)
        .build()
}

fn commit_msg() -> Vec<u8> {
    Msg::new(b'C')
        .u8(0)
        .u64(0x16_B374_D848)
        .u64(0x16_B374_D878)
        .i64(817_000_000_123_456)
        .build()
}

fn origin_msg() -> Vec<u8> {
    Msg::new(b'O').u64(0x10).cstr("node_a").build()
}

/// `public.orders (id int4 key, note varchar(20), data bytea)`, replica identity default.
fn relation_msg() -> Vec<u8> {
    Msg::new(b'R')
        .u32(16_385)
        .cstr("public")
        .cstr("orders")
        .u8(b'd')
        .i16(3)
        .u8(1)
        .cstr("id")
        .u32(23)
        .i32(-1)
        .u8(0)
        .cstr("note")
        .u32(1043)
        .i32(24)
        .u8(0)
        .cstr("data")
        .u32(17)
        .i32(-1)
        .build()
}

fn type_msg() -> Vec<u8> {
    Msg::new(b'Y')
        .u32(16_400)
        .cstr("public")
        .cstr("mood")
        .build()
}

/// One column of each tuple value kind.
fn insert_msg() -> Vec<u8> {
    Msg::new(b'I')
        .u32(16_385)
        .u8(b'N')
        .i16(5)
        .text(b't', b"42")
        .u8(b'n')
        .u8(b'u')
        .text(b'b', &[0, 0, 0, 42])
        .text(b't', b"")
        .build()
}

fn update_msg(old: Option<u8>) -> Vec<u8> {
    let mut m = Msg::new(b'U').u32(16_385);
    if let Some(kind) = old {
        m = m.u8(kind).i16(2).text(b't', b"41").u8(b'n');
    }
    m.u8(b'N').i16(2).text(b't', b"42").u8(b'u').build()
}

fn delete_msg(kind: u8) -> Vec<u8> {
    Msg::new(b'D')
        .u32(16_385)
        .u8(kind)
        .i16(2)
        .text(b't', b"42")
        .u8(b'n')
        .build()
}

fn truncate_msg(options: u8, relations: &[u32]) -> Vec<u8> {
    let n = i32::try_from(relations.len()).unwrap();
    relations
        .iter()
        .fold(Msg::new(b'T').i32(n).u8(options), |m, &oid| m.u32(oid))
        .build()
}

fn message_msg(flags: u8, content: &[u8]) -> Vec<u8> {
    let len = i32::try_from(content.len()).unwrap();
    Msg::new(b'M')
        .u8(flags)
        .u64(0x16_B374_D848)
        .cstr("walhook")
        .i32(len)
        .raw(content)
        .build()
}

/// One valid message of every kind and variant.
fn valid_messages() -> Vec<Vec<u8>> {
    vec![
        begin_msg(),
        commit_msg(),
        origin_msg(),
        relation_msg(),
        type_msg(),
        insert_msg(),
        update_msg(None),
        update_msg(Some(b'K')),
        update_msg(Some(b'O')),
        delete_msg(b'K'),
        delete_msg(b'O'),
        truncate_msg(3, &[16_385, 16_390, 16_401]),
        truncate_msg(0, &[]),
        message_msg(1, b"{\"beat\":1}"),
        message_msg(0, &[0xFF, 0x00]),
    ]
}

fn decode(buf: &[u8]) -> Result<LogicalMessage<'_>, DecodeError> {
    LogicalMessage::decode(buf)
}
