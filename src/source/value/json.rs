//! `json` and `jsonb`: embedded as they are, once checked to be exactly one JSON value, so a
//! stray byte can never corrupt the body around it.

use super::scalar::scan_number;
use super::ValueError;

pub(super) fn embed(text: &[u8], out: &mut String) -> Result<(), ValueError> {
    let text = std::str::from_utf8(text).map_err(|_| ValueError::InvalidUtf8)?;
    let trimmed = text.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'));
    validate(trimmed.as_bytes())
        .map_err(|at| ValueError::malformed("json", at, "not a single JSON value"))?;
    out.push_str(trimmed);
    Ok(())
}

/// Checks `b` against JSON's grammar (RFC 8259) without recursion, so nesting depth is not
/// bounded by the stack. On failure gives the offset of the offending byte.
fn validate(b: &[u8]) -> Result<(), usize> {
    let mut i = 0;
    let mut nesting = Nesting::default();
    'value: loop {
        i = skip_ws(b, i);
        // The end of a finished value, or None when a container was opened.
        let complete = match b.get(i) {
            Some(b'{') => {
                i = skip_ws(b, i + 1);
                if b.get(i) == Some(&b'}') {
                    Some(i + 1)
                } else {
                    nesting.push(true);
                    i = key(b, i)?;
                    None
                }
            }
            Some(b'[') => {
                i = skip_ws(b, i + 1);
                if b.get(i) == Some(&b']') {
                    Some(i + 1)
                } else {
                    nesting.push(false);
                    None
                }
            }
            Some(b'"') => Some(string(b, i)?),
            Some(b't') => Some(literal(b, i, b"true")?),
            Some(b'f') => Some(literal(b, i, b"false")?),
            Some(b'n') => Some(literal(b, i, b"null")?),
            Some(_) => Some(scan_number(b, i).ok_or(i)?.0),
            None => return Err(i),
        };
        let Some(end) = complete else {
            continue 'value;
        };
        i = end;
        loop {
            i = skip_ws(b, i);
            match (nesting.top(), b.get(i)) {
                (None, None) => return Ok(()),
                (None, Some(_)) => return Err(i),
                (Some(in_object), Some(b',')) => {
                    i += 1;
                    if in_object {
                        i = key(b, skip_ws(b, i))?;
                    }
                    continue 'value;
                }
                (Some(false), Some(b']')) | (Some(true), Some(b'}')) => {
                    nesting.pop();
                    i += 1;
                }
                _ => return Err(i),
            }
        }
    }
}

/// An object key and its colon; gives the offset after the colon.
fn key(b: &[u8], i: usize) -> Result<usize, usize> {
    if b.get(i) != Some(&b'"') {
        return Err(i);
    }
    let i = skip_ws(b, string(b, i)?);
    if b.get(i) != Some(&b':') {
        return Err(i);
    }
    Ok(i + 1)
}

/// A string starting at the quote at `i`; gives the offset after the closing quote. The text is
/// already known to be UTF-8, so only escapes and control characters need checking.
fn string(b: &[u8], mut i: usize) -> Result<usize, usize> {
    i += 1;
    loop {
        match b.get(i) {
            None => return Err(i),
            Some(b'"') => return Ok(i + 1),
            Some(b'\\') => match b.get(i + 1) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                Some(b'u') => {
                    let hex = b.get(i + 2..i + 6).ok_or(i)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return Err(i);
                    }
                    i += 6;
                }
                _ => return Err(i),
            },
            Some(0..=0x1f) => return Err(i),
            Some(_) => i += 1,
        }
    }
}

/// The fixed word `word` at `i`; gives the offset after it.
fn literal(b: &[u8], i: usize, word: &[u8]) -> Result<usize, usize> {
    if b.get(i..i + word.len()) == Some(word) {
        Ok(i + word.len())
    } else {
        Err(i)
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// Which containers are open, innermost last: `true` for an object. The first 256 levels live
/// in a bitmap so ordinary documents never allocate.
#[derive(Default)]
struct Nesting {
    depth: usize,
    bits: [u64; 4],
    deeper: Vec<bool>,
}

impl Nesting {
    fn push(&mut self, object: bool) {
        if self.depth < 256 {
            let (word, bit) = (self.depth / 64, self.depth % 64);
            self.bits[word] = (self.bits[word] & !(1 << bit)) | (u64::from(object) << bit);
        } else {
            self.deeper.push(object);
        }
        self.depth += 1;
    }

    fn pop(&mut self) {
        if self.depth > 256 {
            self.deeper.pop();
        }
        self.depth = self.depth.saturating_sub(1);
    }

    fn top(&self) -> Option<bool> {
        let d = self.depth.checked_sub(1)?;
        if d < 256 {
            Some(self.bits[d / 64] >> (d % 64) & 1 == 1)
        } else {
            self.deeper.last().copied()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> bool {
        validate(s.as_bytes()).is_ok()
    }

    #[test]
    fn accepts_json() {
        for s in [
            "1",
            "-0.5e+3",
            "\"a\\u00e9\\n\"",
            "true",
            "null",
            "[]",
            "{}",
            "[1, [2, {\"a\": [null, false]}], \"x\"]",
            "{\"a\" : 1 , \"b\":{\"c\":[]}}",
        ] {
            assert!(ok(s), "{s}");
        }
        let deep = "[".repeat(5000) + &"]".repeat(5000);
        assert!(ok(&deep));
        let deep_objects = "{\"a\":".repeat(300) + "1" + &"}".repeat(300);
        assert!(ok(&deep_objects));
    }

    #[test]
    fn rejects_everything_else() {
        for s in [
            "",
            "1 2",
            "[1,]",
            "[1",
            "{\"a\"}",
            "{\"a\":1,}",
            "{1:2}",
            "tru",
            "nul",
            "\"a",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\t\"",
            "01",
            "[}",
            "{]",
            "]",
            "[1]]",
            "{\"a\":1}}",
        ] {
            assert!(!ok(s), "{s:?}");
        }
        let unbalanced = "[".repeat(300) + &"]".repeat(299);
        assert!(!ok(&unbalanced));
    }

    #[test]
    fn embed_trims_whitespace_and_rolls_nothing_in_on_error() {
        let mut out = String::new();
        embed(b"  {\"a\": [1, 2]}\n", &mut out).unwrap();
        assert_eq!(out, "{\"a\": [1, 2]}");
        assert!(embed(b"{\"a\": 1} x", &mut out).is_err());
        assert!(embed(b"\xff", &mut out).is_err());
    }
}
