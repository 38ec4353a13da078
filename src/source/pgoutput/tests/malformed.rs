//! Malformed input gives the typed error naming the field, never a panic.

use super::*;

#[test]
fn rejects_streaming_and_other_unknown_message_tags() {
    for tag in [
        b'S', b'E', b'c', b'A', b'b', b'P', b'K', b'r', b'p', 0, 0xFF,
    ] {
        assert_eq!(
            decode(&[tag, 0, 0, 0, 0]),
            Err(DecodeError::UnknownTag {
                what: "pgoutput message",
                tag
            })
        );
    }
}

#[test]
fn rejects_unknown_markers_inside_messages() {
    let cases = [
        (
            Msg::new(b'I').u32(1).u8(b'K').i16(0).build(),
            "Insert new tuple marker",
            b'K',
        ),
        (
            Msg::new(b'U').u32(1).u8(b'X').i16(0).build(),
            "Update tuple marker",
            b'X',
        ),
        (
            Msg::new(b'U')
                .u32(1)
                .u8(b'K')
                .i16(0)
                .u8(b'O')
                .i16(0)
                .build(),
            "Update new tuple marker",
            b'O',
        ),
        (
            Msg::new(b'D').u32(1).u8(b'N').i16(0).build(),
            "Delete old tuple marker",
            b'N',
        ),
        (
            Msg::new(b'I').u32(1).u8(b'N').i16(1).u8(b'x').build(),
            "tuple column kind",
            b'x',
        ),
        (
            Msg::new(b'R')
                .u32(1)
                .cstr("s")
                .cstr("t")
                .u8(b'z')
                .i16(0)
                .build(),
            "Relation replica identity",
            b'z',
        ),
    ];
    for (buf, what, tag) in cases {
        assert_eq!(decode(&buf), Err(DecodeError::UnknownTag { what, tag }));
    }
}

#[test]
fn rejects_names_that_are_not_utf8() {
    let bad_table = Msg::new(b'R')
        .u32(1)
        .cstr("public")
        .raw(&[b'o', 0xC3, 0x28, 0])
        .u8(b'd')
        .i16(0)
        .build();
    let bad_column = Msg::new(b'R')
        .u32(1)
        .cstr("public")
        .cstr("t")
        .u8(b'd')
        .i16(1)
        .u8(0)
        .raw(&[0xFF, 0])
        .u32(23)
        .i32(-1)
        .build();
    let bad_prefix = Msg::new(b'M').u8(0).u64(1).raw(&[0x80, 0]).i32(0).build();
    let bad_origin = Msg::new(b'O').u64(1).raw(&[0xFE, 0]).build();
    for (buf, expected) in [
        (bad_table, "Relation name"),
        (bad_column, "Relation column name"),
        (bad_prefix, "Message prefix"),
        (bad_origin, "Origin name"),
    ] {
        match decode(&buf) {
            Err(DecodeError::InvalidUtf8 { what, .. }) => assert_eq!(what, expected),
            other => panic!("{expected}: got {other:?}"),
        }
    }
}

#[test]
fn rejects_negative_counts_and_lengths() {
    let cases = [
        (
            Msg::new(b'R')
                .u32(1)
                .cstr("s")
                .cstr("t")
                .u8(b'd')
                .i16(-1)
                .build(),
            "Relation column count",
            -1,
        ),
        (
            Msg::new(b'I').u32(1).u8(b'N').i16(-3).build(),
            "tuple column count",
            -3,
        ),
        (
            Msg::new(b'I')
                .u32(1)
                .u8(b'N')
                .i16(1)
                .u8(b't')
                .i32(-1)
                .build(),
            "tuple text value",
            -1,
        ),
        (
            Msg::new(b'I')
                .u32(1)
                .u8(b'N')
                .i16(1)
                .u8(b'b')
                .i32(i32::MIN)
                .build(),
            "tuple binary value",
            i32::MIN,
        ),
        (
            Msg::new(b'T').i32(-2).u8(0).build(),
            "Truncate relation count",
            -2,
        ),
        (
            Msg::new(b'M').u8(0).u64(1).cstr("p").i32(-5).build(),
            "Message content",
            -5,
        ),
    ];
    for (buf, what, count) in cases {
        assert_eq!(
            decode(&buf),
            Err(DecodeError::NegativeCount { what, count })
        );
    }
}

#[test]
fn huge_counts_without_data_are_truncated_not_allocated() {
    let tuple = Msg::new(b'I').u32(1).u8(b'N').i16(i16::MAX).build();
    assert_eq!(
        decode(&tuple),
        Err(DecodeError::Truncated {
            what: "tuple column kind",
            needed: 1,
            remaining: 0
        })
    );
    let truncate = Msg::new(b'T').i32(i32::MAX).u8(0).u32(7).build();
    assert_eq!(
        decode(&truncate),
        Err(DecodeError::Truncated {
            what: "Truncate relation oid",
            needed: 4,
            remaining: 0
        })
    );
    let text = Msg::new(b'I')
        .u32(1)
        .u8(b'N')
        .i16(1)
        .u8(b't')
        .i32(i32::MAX)
        .raw(b"abc")
        .build();
    assert_eq!(
        decode(&text),
        Err(DecodeError::Truncated {
            what: "tuple text value",
            needed: i32::MAX as usize,
            remaining: 3
        })
    );
}

#[test]
fn rejects_every_truncation_of_every_valid_message() {
    for msg in valid_messages() {
        assert!(decode(&msg).is_ok(), "valid message rejected: {msg:?}");
        for len in 0..msg.len() {
            match decode(&msg[..len]) {
                Err(DecodeError::Truncated { .. } | DecodeError::UnterminatedString { .. }) => {}
                other => panic!("{len}-byte prefix of {msg:?} gave {other:?}"),
            }
        }
    }
    assert_eq!(
        decode(&[]),
        Err(DecodeError::Truncated {
            what: "message tag",
            needed: 1,
            remaining: 0
        })
    );
    assert_eq!(
        decode(&origin_msg()[..12]),
        Err(DecodeError::UnterminatedString {
            what: "Origin name"
        })
    );
}

#[test]
fn rejects_trailing_bytes_after_every_valid_message() {
    for mut msg in valid_messages() {
        let what = match decode(&msg).unwrap() {
            LogicalMessage::Begin(_) => "Begin",
            LogicalMessage::Commit(_) => "Commit",
            LogicalMessage::Origin { .. } => "Origin",
            LogicalMessage::Relation(_) => "Relation",
            LogicalMessage::Type { .. } => "Type",
            LogicalMessage::Insert { .. } => "Insert",
            LogicalMessage::Update { .. } => "Update",
            LogicalMessage::Delete { .. } => "Delete",
            LogicalMessage::Truncate { .. } => "Truncate",
            LogicalMessage::Message { .. } => "Message",
        };
        msg.extend_from_slice(&[0, 0]);
        assert_eq!(
            decode(&msg),
            Err(DecodeError::TrailingBytes { what, count: 2 })
        );
    }
}

#[test]
fn errors_name_the_field() {
    let err = decode(&begin_msg()[..5]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "message truncated while reading Begin final LSN: needed 8 bytes, 4 left"
    );
    let err = decode(b"S").unwrap_err();
    assert_eq!(err.to_string(), "unknown pgoutput message tag S (0x53)");
    let err = decode(&[0x01]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown pgoutput message tag \\u{1} (0x01)"
    );
}
