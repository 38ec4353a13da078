//! Composite (row) values, parsed from `record_out`'s text: `(1,"a b",)`. An empty unquoted
//! field is NULL, `""` is the empty string; inside quotes `""` is one quote; a backslash
//! escapes the next byte anywhere. Each field becomes a key of a JSON object, as `to_jsonb()`
//! gives.

use std::sync::Arc;

use super::{encode, PgType, ValueError};
use crate::model::push_json_string;

pub(super) fn encode_composite(
    fields: &[(String, Arc<PgType>)],
    text: &[u8],
    out: &mut String,
) -> Result<(), ValueError> {
    let error = |at: usize, reason| ValueError::malformed("composite", at, reason);
    let mut pos = skip_ws(text, 0);
    if text.get(pos) != Some(&b'(') {
        return Err(error(pos, "expected `(`"));
    }
    pos += 1;
    out.push('{');
    // Reused for every field that needs unescaping; most never do.
    let mut scratch = Vec::new();
    for (i, (name, ty)) in fields.iter().enumerate() {
        if i > 0 {
            match text.get(pos) {
                Some(b',') => pos += 1,
                Some(b')') => {
                    return Err(ValueError::FieldCount {
                        expected: fields.len(),
                    })
                }
                _ => return Err(error(pos, "expected `,`")),
            }
            out.push(',');
        }
        push_json_string(name, out);
        out.push(':');
        let start = pos;
        let mut in_quotes = false;
        let mut plain = true;
        loop {
            match text.get(pos) {
                None => return Err(error(pos, "unterminated composite")),
                Some(b',' | b')') if !in_quotes => break,
                Some(b'\\') => {
                    plain = false;
                    pos += 2;
                }
                Some(b'"') if in_quotes && text.get(pos + 1) == Some(&b'"') => {
                    plain = false;
                    pos += 2;
                }
                Some(b'"') => {
                    in_quotes = !in_quotes;
                    pos += 1;
                }
                Some(_) => pos += 1,
            }
        }
        let raw = &text[start..pos];
        if raw.is_empty() {
            out.push_str("null");
            continue;
        }
        let quotes = raw.iter().filter(|&&b| b == b'"').count();
        let value = match raw {
            _ if plain && quotes == 0 => raw,
            [b'"', inner @ .., b'"'] if plain && quotes == 2 => inner,
            _ => {
                unescape(raw, &mut scratch);
                &scratch[..]
            }
        };
        encode(ty, value, out)?;
    }
    match text.get(pos) {
        Some(b')') => pos += 1,
        Some(b',') => {
            return Err(ValueError::FieldCount {
                expected: fields.len(),
            })
        }
        _ => return Err(error(pos, "expected `)`")),
    }
    if skip_ws(text, pos) != text.len() {
        return Err(error(pos, "bytes after the composite"));
    }
    out.push('}');
    Ok(())
}

/// Copies a field's text into `scratch` as `record_in` reads it: quotes removed, `""` inside
/// quotes kept as one quote, backslash keeping the byte after it.
fn unescape(raw: &[u8], scratch: &mut Vec<u8>) {
    scratch.clear();
    let mut in_quotes = false;
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match b {
            b'\\' => {
                scratch.extend(raw.get(i + 1));
                i += 2;
            }
            b'"' if in_quotes && raw.get(i + 1) == Some(&b'"') => {
                scratch.push(b'"');
                i += 2;
            }
            b'"' => {
                in_quotes = !in_quotes;
                i += 1;
            }
            _ => {
                scratch.push(b);
                i += 1;
            }
        }
    }
}

fn skip_ws(text: &[u8], mut pos: usize) -> usize {
    while text.get(pos).is_some_and(u8::is_ascii_whitespace) {
        pos += 1;
    }
    pos
}
