//! Dates and times. `to_jsonb()` prints date, timestamp and timestamptz in XSD form (a `T`
//! between date and time, offsets as `+HH:MM`), and time and timetz as their plain text. With
//! `DateStyle=ISO` the text differs from the XSD form only in that separator and the offset,
//! so each value is checked for the ISO shape and rewritten in place, never reparsed.

use super::ValueError;

const BC: &[u8] = b" BC";

/// `2026-11-26`, `0044-03-15 BC`, `infinity`: the same text, as a string.
pub(super) fn encode_date(text: &[u8], out: &mut String) -> Result<(), ValueError> {
    if !is_infinity(text) {
        let (date, _) = split_bc(text);
        if date_len(date) != Some(date.len()) {
            return Err(ValueError::malformed("date", 0, "expected YYYY-MM-DD"));
        }
    }
    push_quoted(&[text], out);
    Ok(())
}

/// `17:51:10.57433`, `17:51:10+02`: the same text, as a string.
pub(super) fn encode_time(
    text: &[u8],
    with_zone: bool,
    out: &mut String,
) -> Result<(), ValueError> {
    let kind = if with_zone { "timetz" } else { "time" };
    let end = time_len(text).ok_or(ValueError::malformed(kind, 0, "expected HH:MM:SS"))?;
    let valid = if with_zone {
        is_offset(&text[end..])
    } else {
        end == text.len()
    };
    if !valid {
        return Err(ValueError::malformed(
            kind,
            end,
            "unexpected bytes after the time",
        ));
    }
    push_quoted(&[text], out);
    Ok(())
}

/// `2026-11-26 17:51:10.57433+00` becomes `2026-11-26T17:51:10.57433+00:00`; a ` BC` suffix
/// and `infinity` / `-infinity` stay as they are.
pub(super) fn encode_timestamp(
    text: &[u8],
    with_zone: bool,
    out: &mut String,
) -> Result<(), ValueError> {
    let kind = if with_zone {
        "timestamptz"
    } else {
        "timestamp"
    };
    if is_infinity(text) {
        push_quoted(&[text], out);
        return Ok(());
    }
    let (body, bc) = split_bc(text);
    let date_end = date_len(body).ok_or(ValueError::malformed(kind, 0, "expected a date"))?;
    if body.get(date_end) != Some(&b' ') {
        return Err(ValueError::malformed(kind, date_end, "expected a space"));
    }
    let time_start = date_end + 1;
    let time_end = time_start
        + time_len(&body[time_start..]).ok_or(ValueError::malformed(
            kind,
            time_start,
            "expected a time",
        ))?;
    let offset = &body[time_end..];
    let valid = if with_zone {
        is_offset(offset)
    } else {
        offset.is_empty()
    };
    if !valid {
        return Err(ValueError::malformed(
            kind,
            time_end,
            "unexpected bytes after the time",
        ));
    }
    // XSD always writes the offset's minutes: `+00` becomes `+00:00`.
    let minutes: &[u8] = if with_zone && offset.len() == 3 {
        b":00"
    } else {
        b""
    };
    push_quoted(
        &[&body[..date_end], b"T", &body[time_start..], minutes, bc],
        out,
    );
    Ok(())
}

fn is_infinity(text: &[u8]) -> bool {
    text == b"infinity" || text == b"-infinity"
}

fn split_bc(text: &[u8]) -> (&[u8], &'static [u8]) {
    match text.strip_suffix(BC) {
        Some(body) => (body, BC),
        None => (text, b""),
    }
}

/// Length of a leading `YYYY-MM-DD` (four or more year digits).
fn date_len(b: &[u8]) -> Option<usize> {
    let year = digits(b, 0);
    (year >= 4
        && b.get(year) == Some(&b'-')
        && digits(b, year + 1) == 2
        && b.get(year + 3) == Some(&b'-')
        && digits(b, year + 4) == 2)
        .then_some(year + 6)
}

/// Length of a leading `HH:MM:SS[.ffffff]`.
fn time_len(b: &[u8]) -> Option<usize> {
    let hms = digits(b, 0) == 2
        && b.get(2) == Some(&b':')
        && digits(b, 3) == 2
        && b.get(5) == Some(&b':')
        && digits(b, 6) == 2;
    if !hms {
        return None;
    }
    if b.get(8) == Some(&b'.') {
        let fraction = digits(b, 9);
        return (fraction > 0).then_some(9 + fraction);
    }
    Some(8)
}

/// `+HH`, `-HH:MM` or `+HH:MM:SS`, and nothing else.
fn is_offset(b: &[u8]) -> bool {
    let group = |i: usize| digits(b, i) == 2;
    matches!(b.first(), Some(b'+' | b'-'))
        && group(1)
        && match b.len() {
            3 => true,
            6 => b[3] == b':' && group(4),
            9 => b[3] == b':' && group(4) && b[6] == b':' && group(7),
            _ => false,
        }
}

fn digits(b: &[u8], from: usize) -> usize {
    b.get(from..).map_or(0, |rest| {
        rest.iter().take_while(|c| c.is_ascii_digit()).count()
    })
}

/// Appends the parts, already checked to be ASCII digits, signs, `:`, `.`, `T`, ` BC` and
/// letters of `infinity`, as one JSON string; none of them needs escaping.
fn push_quoted(parts: &[&[u8]], out: &mut String) {
    out.push('"');
    for part in parts {
        out.extend(part.iter().map(|&b| char::from(b)));
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str, with_zone: bool) -> Result<String, ValueError> {
        let mut out = String::new();
        encode_timestamp(text.as_bytes(), with_zone, &mut out).map(|()| out)
    }

    #[test]
    fn timestamps_take_the_xsd_form() {
        let cases = [
            (
                "2026-11-26 17:51:10.57433",
                false,
                "2026-11-26T17:51:10.57433",
            ),
            ("2026-11-26 17:51:10", false, "2026-11-26T17:51:10"),
            (
                "0044-03-15 12:00:01.5 BC",
                false,
                "0044-03-15T12:00:01.5 BC",
            ),
            ("10000-01-01 00:00:00", false, "10000-01-01T00:00:00"),
            ("infinity", false, "infinity"),
            (
                "2026-11-26 17:51:10.57433+00",
                true,
                "2026-11-26T17:51:10.57433+00:00",
            ),
            (
                "2020-01-01 00:00:00+05:30",
                true,
                "2020-01-01T00:00:00+05:30",
            ),
            (
                "1800-01-01 05:53:28+05:53:28",
                true,
                "1800-01-01T05:53:28+05:53:28",
            ),
            (
                "0044-03-15 12:00:01.5-03 BC",
                true,
                "0044-03-15T12:00:01.5-03:00 BC",
            ),
            ("-infinity", true, "-infinity"),
        ];
        for (text, tz, want) in cases {
            assert_eq!(ts(text, tz), Ok(format!("\"{want}\"")), "{text}");
        }
    }

    #[test]
    fn malformed_timestamps_are_errors() {
        for (text, tz) in [
            ("", false),
            ("2026-11-26", false),
            ("2026-11-26T17:51:10", false),
            ("2026-11-26 17:51:10+00", false),
            ("2026-11-26 17:51:10", true),
            ("2026-11-26 17:51:10+0", true),
            ("2026-11-26 17:51:10.+00", true),
            ("26-11-26 17:51:10+00", true),
            ("2026-11-26 17:51:10+00 AD", true),
            ("Infinity", true),
            ("2026-11-26 17:51:10\"", false),
        ] {
            assert!(ts(text, tz).is_err(), "{text:?}");
        }
    }

    #[test]
    fn dates_and_times_keep_their_text() {
        let mut out = String::new();
        encode_date(b"2026-11-26", &mut out).unwrap();
        encode_date(b"0044-03-15 BC", &mut out).unwrap();
        encode_date(b"-infinity", &mut out).unwrap();
        encode_time(b"17:51:10.57433", false, &mut out).unwrap();
        encode_time(b"24:00:00", false, &mut out).unwrap();
        encode_time(b"17:51:10+02", true, &mut out).unwrap();
        encode_time(b"17:51:10.5-05:30", true, &mut out).unwrap();
        assert_eq!(
            out,
            "\"2026-11-26\"\"0044-03-15 BC\"\"-infinity\"\"17:51:10.57433\"\"24:00:00\"\
             \"17:51:10+02\"\"17:51:10.5-05:30\""
        );
        for bad in [&b"2026-1-26"[..], b"2026-11-26 AD", b"x"] {
            assert!(encode_date(bad, &mut out).is_err());
        }
        assert!(encode_time(b"17:51:10+02", false, &mut out).is_err());
        assert!(encode_time(b"17:51:10", true, &mut out).is_err());
        assert!(encode_time(b"17:51", false, &mut out).is_err());
    }
}
