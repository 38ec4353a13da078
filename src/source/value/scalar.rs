//! Scalars: booleans, numbers and strings.

use super::ValueError;
use crate::model::push_json_string;

/// Exponents beyond this are not something float or numeric output ever prints; refusing them
/// bounds the size of an expanded number.
const MAX_EXPONENT: i64 = 1000;

pub(super) fn encode_bool(text: &[u8], out: &mut String) -> Result<(), ValueError> {
    match text {
        b"t" => out.push_str("true"),
        b"f" => out.push_str("false"),
        _ => return Err(ValueError::malformed("bool", 0, "expected `t` or `f`")),
    }
    Ok(())
}

/// int2, int4, int8: the digits as they are.
pub(super) fn encode_int(text: &[u8], out: &mut String) -> Result<(), ValueError> {
    match scan_number(text, 0) {
        Some((end, shape)) if end == text.len() && !shape.fraction && !shape.exponent => {
            // ASCII digits and '-' only, checked by scan_number.
            out.push_str(std::str::from_utf8(text).map_err(|_| ValueError::InvalidUtf8)?);
            Ok(())
        }
        _ => Err(ValueError::malformed("integer", 0, "expected digits")),
    }
}

/// float4, float8 and numeric, as `to_jsonb()` prints them: it reads the text with
/// `numeric_in`, so an exponent is expanded into plain digits and a negative zero loses its
/// sign; the non-finite values become strings.
pub(super) fn encode_number(text: &[u8], out: &mut String) -> Result<(), ValueError> {
    if let b"NaN" | b"Infinity" | b"-Infinity" = text {
        out.push('"');
        out.push_str(ascii(text));
        out.push('"');
        return Ok(());
    }
    let shape = match scan_number(text, 0) {
        Some((end, shape)) if end == text.len() => shape,
        Some((end, _)) => return Err(ValueError::malformed("number", end, "trailing bytes")),
        None => return Err(ValueError::malformed("number", 0, "not a number")),
    };
    let negative = text.first() == Some(&b'-');
    let body = &text[usize::from(negative)..];
    let (mantissa, exponent) = match body.iter().position(|&b| b == b'e' || b == b'E') {
        Some(e) => (&body[..e], parse_exponent(&body[e + 1..])?),
        None => (body, 0),
    };
    let is_zero = mantissa.iter().all(|&b| b == b'0' || b == b'.');
    // Only an exponent or a signed zero reads differently as numeric; most numbers are copied.
    let needs_rewrite = shape.exponent || (negative && is_zero);
    if !needs_rewrite {
        out.push_str(ascii(text));
        return Ok(());
    }
    let (int_digits, frac_digits) = match mantissa.iter().position(|&b| b == b'.') {
        Some(dot) => (&mantissa[..dot], &mantissa[dot + 1..]),
        None => (mantissa, &mantissa[mantissa.len()..]),
    };
    if negative && !is_zero {
        out.push('-');
    }
    write_scaled(int_digits, frac_digits, exponent, out);
    Ok(())
}

/// Writes `int.frac × 10^exponent` in plain notation with `numeric_in`'s scale:
/// `max(0, frac.len() - exponent)` digits after the point.
fn write_scaled(int_digits: &[u8], frac_digits: &[u8], exponent: i64, out: &mut String) {
    let digit = |i: i64| -> char {
        let (n_int, n_frac) = (int_digits.len() as i64, frac_digits.len() as i64);
        let b = if (0..n_int).contains(&i) {
            int_digits[i as usize]
        } else if (n_int..n_int + n_frac).contains(&i) {
            frac_digits[(i - n_int) as usize]
        } else {
            b'0'
        };
        char::from(b)
    };
    // Digit i of int ++ frac sits before the point when i < point.
    let point = int_digits.len() as i64 + exponent;
    let scale = (frac_digits.len() as i64 - exponent).max(0);
    let first_nonzero = (0..point).find(|&i| digit(i) != '0');
    match first_nonzero {
        Some(first) => (first..point).for_each(|i| out.push(digit(i))),
        None => out.push('0'),
    }
    if scale > 0 {
        out.push('.');
        (point..point + scale).for_each(|i| out.push(digit(i)));
    }
}

fn parse_exponent(text: &[u8]) -> Result<i64, ValueError> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    let mut value: i64 = 0;
    for &d in digits {
        value = value * 10 + i64::from(d - b'0');
        if value > MAX_EXPONENT {
            return Err(ValueError::malformed("number", 0, "exponent out of range"));
        }
    }
    Ok(if negative { -value } else { value })
}

/// What a scanned JSON number contains.
#[derive(Debug, Clone, Copy)]
pub(super) struct NumberShape {
    pub fraction: bool,
    pub exponent: bool,
}

/// Scans one number in JSON's grammar starting at `start`; returns where it ends.
pub(super) fn scan_number(b: &[u8], start: usize) -> Option<(usize, NumberShape)> {
    let digits = |mut i: usize| {
        let from = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (i > from).then_some(i)
    };
    let mut i = start;
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    i = match b.get(i) {
        Some(b'0') => i + 1,
        Some(b'1'..=b'9') => digits(i)?,
        _ => return None,
    };
    let mut shape = NumberShape {
        fraction: false,
        exponent: false,
    };
    if b.get(i) == Some(&b'.') {
        i = digits(i + 1)?;
        shape.fraction = true;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        i = digits(i)?;
        shape.exponent = true;
    }
    Some((i, shape))
}

/// A JSON string of the text.
pub(super) fn encode_string(text: &[u8], out: &mut String) -> Result<(), ValueError> {
    let text = std::str::from_utf8(text).map_err(|_| ValueError::InvalidUtf8)?;
    push_json_string(text, out);
    Ok(())
}

/// Text the caller has checked to be ASCII.
fn ascii(text: &[u8]) -> &str {
    std::str::from_utf8(text).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(text: &str) -> Result<String, ValueError> {
        let mut out = String::new();
        encode_number(text.as_bytes(), &mut out).map(|()| out)
    }

    #[test]
    fn numbers_print_as_numeric_in_reads_them() {
        for (text, json) in [
            ("0", "0"),
            ("-0", "0"),
            ("-0.00", "0.00"),
            ("12.50", "12.50"),
            ("-9223372036854775808", "-9223372036854775808"),
            ("1e+38", "100000000000000000000000000000000000000"),
            ("1.5e-07", "0.00000015"),
            ("1.2345678901234568e+17", "123456789012345680"),
            ("-1.25e+1", "-12.5"),
            ("1.25e1", "12.5"),
            ("1e-45", "0.000000000000000000000000000000000000000000001"),
            ("0.5e1", "5"),
            ("-0e5", "0"),
            ("NaN", "\"NaN\""),
            ("Infinity", "\"Infinity\""),
            ("-Infinity", "\"-Infinity\""),
        ] {
            assert_eq!(number(text).as_deref(), Ok(json), "{text}");
        }
        assert_eq!(number("1e+308").map(|s| s.len()), Ok(309));
        assert_eq!(number("5e-324").map(|s| s.len()), Ok(326));
    }

    #[test]
    fn malformed_numbers_are_errors() {
        for text in [
            "", "-", "01", "1.", ".5", "1e", "1e+", "+1", "nan", "1 ", "0x10", "1e9999",
        ] {
            assert!(number(text).is_err(), "{text:?}");
        }
        let mut out = String::new();
        assert!(encode_int(b"1.5", &mut out).is_err());
        assert!(encode_int(b"NaN", &mut out).is_err());
        assert!(encode_int(b"-12", &mut out).is_ok());
        assert_eq!(out, "-12");
    }

    #[test]
    fn bools() {
        let mut out = String::new();
        encode_bool(b"t", &mut out).unwrap();
        encode_bool(b"f", &mut out).unwrap();
        assert_eq!(out, "truefalse");
        assert!(encode_bool(b"true", &mut out).is_err());
    }

    #[test]
    fn strings_escape_quotes_backslashes_and_controls() {
        let mut out = String::new();
        encode_string("a\"b\\c\n\t\u{1}\u{1f}\u{7f}é☃".as_bytes(), &mut out).unwrap();
        assert_eq!(out, "\"a\\\"b\\\\c\\n\\t\\u0001\\u001f\u{7f}é☃\"");
        assert!(encode_string(b"\xff", &mut out).is_err());
    }
}
