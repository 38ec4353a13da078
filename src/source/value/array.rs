//! Arrays, parsed from `array_out`'s text: `{1,2}`, `{{1,NULL},{3,4}}`, `[0:1]={1,2}`,
//! `{"a \"q\"","b\\c"}`, `{}`. Every dimension becomes a nested JSON array and the bounds are
//! dropped, as `to_jsonb()` does.

use super::{encode, PgType, ValueError};

/// Postgres's `MAXDIM`.
const MAX_DIMS: usize = 6;

pub(super) fn encode_array(
    element: &PgType,
    delimiter: u8,
    text: &[u8],
    out: &mut String,
) -> Result<(), ValueError> {
    let mut p = Cursor { text, pos: 0 };
    p.skip_ws();
    if p.peek() == Some(b'[') {
        p.skip_bounds()?;
        p.skip_ws();
    }
    if p.next() != Some(b'{') {
        return Err(p.error("expected `{`"));
    }
    out.push('[');
    let mut depth = 1;
    let mut just_opened = true;
    // Reused for every element that needs unescaping; most never do.
    let mut scratch = Vec::new();
    loop {
        // An element, a sub-array, or (right after `{`) the end of an empty one.
        p.skip_ws();
        match p.peek() {
            Some(b'}') if just_opened => {}
            Some(b'{') => {
                depth += 1;
                if depth > MAX_DIMS {
                    return Err(p.error("more than 6 dimensions"));
                }
                p.pos += 1;
                out.push('[');
                just_opened = true;
                continue;
            }
            Some(_) => {
                let item = if p.peek() == Some(b'"') {
                    p.quoted(&mut scratch)?
                } else {
                    p.unquoted(delimiter, &mut scratch)?
                };
                match item {
                    Item::Null => out.push_str("null"),
                    Item::Raw(range) => encode(element, &text[range], out)?,
                    Item::Unescaped => encode(element, &scratch, out)?,
                }
            }
            None => return Err(p.error("unterminated array")),
        }
        // After an element: a delimiter, or `}` closing one or more levels.
        loop {
            p.skip_ws();
            match p.next() {
                Some(c) if c == delimiter => {
                    out.push(',');
                    just_opened = false;
                    break;
                }
                Some(b'}') => {
                    out.push(']');
                    depth -= 1;
                    if depth == 0 {
                        p.skip_ws();
                        return match p.peek() {
                            None => Ok(()),
                            Some(_) => Err(p.error("bytes after the array")),
                        };
                    }
                }
                _ => return Err(p.error("expected a delimiter or `}`")),
            }
        }
    }
}

/// `int2vector` and `oidvector`: `1 2 3`, elements separated by single spaces.
pub(super) fn encode_vector(
    element: &PgType,
    text: &[u8],
    out: &mut String,
) -> Result<(), ValueError> {
    out.push('[');
    for (i, item) in text
        .split(|&b| b == b' ')
        .filter(|s| !s.is_empty())
        .enumerate()
    {
        if i > 0 {
            out.push(',');
        }
        encode(element, item, out)?;
    }
    out.push(']');
    Ok(())
}

/// One parsed element.
enum Item {
    Null,
    /// The element is `text[range]` as is.
    Raw(std::ops::Range<usize>),
    /// The element is in the scratch buffer.
    Unescaped,
}

struct Cursor<'a> {
    text: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn error(&self, reason: &'static str) -> ValueError {
        ValueError::malformed("array", self.pos, reason)
    }

    /// `array_in`'s whitespace.
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) = self.peek() {
            self.pos += 1;
        }
    }

    /// `[lower:upper]` for each dimension, then `=`; the bounds carry nothing JSON keeps.
    fn skip_bounds(&mut self) -> Result<(), ValueError> {
        let mut dims = 0;
        while self.peek() == Some(b'[') {
            dims += 1;
            if dims > MAX_DIMS {
                return Err(self.error("more than 6 dimensions"));
            }
            self.pos += 1;
            while let Some(b'0'..=b'9' | b'-' | b'+' | b':') = self.peek() {
                self.pos += 1;
            }
            if self.next() != Some(b']') {
                return Err(self.error("expected `]` in the dimensions"));
            }
        }
        if self.next() != Some(b'=') {
            return Err(self.error("expected `=` after the dimensions"));
        }
        Ok(())
    }

    /// A `"..."` element; backslash escapes the next byte.
    fn quoted(&mut self, scratch: &mut Vec<u8>) -> Result<Item, ValueError> {
        self.pos += 1;
        let start = self.pos;
        let mut escaped = false;
        loop {
            match self.next() {
                None => return Err(self.error("unterminated quoted element")),
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    if self.next().is_none() {
                        return Err(self.error("backslash at the end"));
                    }
                }
                Some(_) => {}
            }
        }
        let raw = start..self.pos - 1;
        if !escaped {
            return Ok(Item::Raw(raw));
        }
        unescape(&self.text[raw], scratch);
        Ok(Item::Unescaped)
    }

    /// An element without quotes: up to the delimiter or `}`, trailing whitespace dropped,
    /// `NULL` (any case, unescaped) meaning SQL NULL.
    fn unquoted(&mut self, delimiter: u8, scratch: &mut Vec<u8>) -> Result<Item, ValueError> {
        let start = self.pos;
        let mut end = start;
        let mut escaped = false;
        while let Some(b) = self.peek() {
            if b == delimiter || b == b'}' {
                break;
            }
            self.pos += 1;
            match b {
                b'{' | b'"' => return Err(self.error("unexpected `{` or `\"` in an element")),
                b'\\' => {
                    escaped = true;
                    if self.next().is_none() {
                        return Err(self.error("backslash at the end"));
                    }
                    end = self.pos;
                }
                b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => {}
                _ => end = self.pos,
            }
        }
        let raw = start..end;
        if raw.is_empty() {
            return Err(self.error("empty element"));
        }
        if escaped {
            unescape(&self.text[raw], scratch);
            return Ok(Item::Unescaped);
        }
        if self.text[raw.clone()].eq_ignore_ascii_case(b"NULL") {
            return Ok(Item::Null);
        }
        Ok(Item::Raw(raw))
    }
}

/// Copies `raw` into `scratch` with each backslash dropped and the byte after it kept.
fn unescape(raw: &[u8], scratch: &mut Vec<u8>) {
    scratch.clear();
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'\\' => scratch.extend(bytes.next()),
            _ => scratch.push(b),
        }
    }
}
