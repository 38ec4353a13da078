//! Parsing of each message kind. Field names in `what` strings follow the Postgres
//! documentation ("Logical Replication Message Formats"), so an error points at the spec.

use super::{
    Begin, Commit, Cursor, DecodeError, LogicalMessage, OldTuple, PgTimestamp, RelationColumn,
    RelationMessage, TruncateOptions, TupleData, TupleValue,
};
use crate::model::ReplicaIdentity;

impl<'a> LogicalMessage<'a> {
    /// Decodes one pgoutput message: the payload of one XLogData.
    ///
    /// Never panics. Errors if the message is incomplete, has bytes left over, uses a tag that
    /// protocol version 1 does not define (streaming and two-phase messages included), or has a
    /// name that is not UTF-8. The result borrows from `buf`.
    pub fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let mut c = Cursor::new(buf);
        let tag = c.u8("message tag")?;
        let (message, what) = match tag {
            b'B' => (begin(&mut c)?, "Begin"),
            b'C' => (commit(&mut c)?, "Commit"),
            b'O' => (origin(&mut c)?, "Origin"),
            b'R' => (relation(&mut c)?, "Relation"),
            b'Y' => (type_message(&mut c)?, "Type"),
            b'I' => (insert(&mut c)?, "Insert"),
            b'U' => (update(&mut c)?, "Update"),
            b'D' => (delete(&mut c)?, "Delete"),
            b'T' => (truncate(&mut c)?, "Truncate"),
            b'M' => (message(&mut c)?, "Message"),
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "pgoutput message",
                    tag,
                })
            }
        };
        c.finish(what)?;
        Ok(message)
    }
}

fn begin<'a>(c: &mut Cursor<'a>) -> Result<LogicalMessage<'a>, DecodeError> {
    Ok(LogicalMessage::Begin(Begin {
        final_lsn: c.lsn("Begin final LSN")?,
        commit_time: PgTimestamp(c.i64("Begin commit timestamp")?),
        xid: c.u32("Begin xid")?,
    }))
}

fn commit<'a>(c: &mut Cursor<'a>) -> Result<LogicalMessage<'a>, DecodeError> {
    Ok(LogicalMessage::Commit(Commit {
        flags: c.u8("Commit flags")?,
        commit_lsn: c.lsn("Commit LSN")?,
        end_lsn: c.lsn("Commit end LSN")?,
        commit_time: PgTimestamp(c.i64("Commit timestamp")?),
    }))
}

fn origin<'a>(c: &mut Cursor<'a>) -> Result<LogicalMessage<'a>, DecodeError> {
    Ok(LogicalMessage::Origin {
        lsn: c.lsn("Origin commit LSN")?,
        name: c.cstr("Origin name")?,
    })
}

fn relation<'a>(c: &mut Cursor<'a>) -> Result<LogicalMessage<'a>, DecodeError> {
    let oid = c.u32("Relation oid")?;
    let namespace = c.cstr("Relation namespace")?;
    let name = c.cstr("Relation name")?;
    let code = c.u8("Relation replica identity")?;
    let replica_identity = ReplicaIdentity::from_code(code).ok_or(DecodeError::UnknownTag {
        what: "Relation replica identity",
        tag: code,
    })?;
    let ncols = c.count_i16("Relation column count")?;
    // Each column takes at least 10 bytes, so a lying count cannot make us over-allocate.
    let mut columns = Vec::with_capacity(ncols.min(c.remaining() / 10));
    for _ in 0..ncols {
        columns.push(RelationColumn {
            is_key: c.u8("Relation column flags")? & 1 != 0,
            name: c.cstr("Relation column name")?,
            type_oid: c.u32("Relation column type oid")?,
            type_modifier: c.i32("Relation column type modifier")?,
        });
    }
    Ok(LogicalMessage::Relation(RelationMessage {
        oid,
        namespace,
        name,
        replica_identity,
        columns,
    }))
}

fn type_message<'a>(c: &mut Cursor<'a>) -> Result<LogicalMessage<'a>, DecodeError> {
    Ok(LogicalMessage::Type {
        oid: c.u32("Type oid")?,
        namespace: c.cstr("Type namespace")?,
        name: c.cstr("Type name")?,
    })
}

fn insert<'a>(c: &mut Cursor<'a>) -> Result<LogicalMessage<'a>, DecodeError> {
    let relation = c.u32("Insert relation oid")?;
    expect_tag(c, b'N', "Insert new tuple marker")?;
    let new = tuple(c)?;
    Ok(LogicalMessage::Insert { relation, new })
}

fn update<'a>(c: &mut Cursor<'a>) -> Result<LogicalMessage<'a>, DecodeError> {
    let relation = c.u32("Update relation oid")?;
    let old = match c.u8("Update tuple marker")? {
        b'N' => None,
        b'K' => Some(old_key(c)?),
        b'O' => Some(old_full(c)?),
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "Update tuple marker",
                tag,
            })
        }
    };
    if old.is_some() {
        expect_tag(c, b'N', "Update new tuple marker")?;
    }
    let new = tuple(c)?;
    Ok(LogicalMessage::Update { relation, old, new })
}

fn delete<'a>(c: &mut Cursor<'a>) -> Result<LogicalMessage<'a>, DecodeError> {
    let relation = c.u32("Delete relation oid")?;
    let old = match c.u8("Delete old tuple marker")? {
        b'K' => old_key(c)?,
        b'O' => old_full(c)?,
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "Delete old tuple marker",
                tag,
            })
        }
    };
    Ok(LogicalMessage::Delete { relation, old })
}

fn truncate<'a>(c: &mut Cursor<'a>) -> Result<LogicalMessage<'a>, DecodeError> {
    let nrels = c.count_i32("Truncate relation count")?;
    let options = TruncateOptions::from_bits(c.u8("Truncate options")?);
    let mut relations = Vec::with_capacity(nrels.min(c.remaining() / 4));
    for _ in 0..nrels {
        relations.push(c.u32("Truncate relation oid")?);
    }
    Ok(LogicalMessage::Truncate { options, relations })
}

fn message<'a>(c: &mut Cursor<'a>) -> Result<LogicalMessage<'a>, DecodeError> {
    Ok(LogicalMessage::Message {
        transactional: c.u8("Message flags")? & 1 != 0,
        lsn: c.lsn("Message LSN")?,
        prefix: c.cstr("Message prefix")?,
        content: c.len_prefixed("Message content")?,
    })
}

fn old_key<'a>(c: &mut Cursor<'a>) -> Result<OldTuple<'a>, DecodeError> {
    tuple(c).map(OldTuple::Key)
}

fn old_full<'a>(c: &mut Cursor<'a>) -> Result<OldTuple<'a>, DecodeError> {
    tuple(c).map(OldTuple::Full)
}

fn expect_tag(c: &mut Cursor<'_>, expected: u8, what: &'static str) -> Result<(), DecodeError> {
    match c.u8(what)? {
        tag if tag == expected => Ok(()),
        tag => Err(DecodeError::UnknownTag { what, tag }),
    }
}

/// TupleData: an Int16 column count, then each column as a kind byte and, for text and binary
/// values, an Int32 length and the bytes.
fn tuple<'a>(c: &mut Cursor<'a>) -> Result<TupleData<'a>, DecodeError> {
    let ncols = c.count_i16("tuple column count")?;
    // Each column takes at least its kind byte.
    let mut values = Vec::with_capacity(ncols.min(c.remaining()));
    for _ in 0..ncols {
        values.push(match c.u8("tuple column kind")? {
            b'n' => TupleValue::Null,
            b'u' => TupleValue::UnchangedToast,
            b't' => TupleValue::Text(c.len_prefixed("tuple text value")?),
            b'b' => TupleValue::Binary(c.len_prefixed("tuple binary value")?),
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "tuple column kind",
                    tag,
                })
            }
        });
    }
    Ok(values)
}
