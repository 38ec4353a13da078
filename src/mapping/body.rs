//! The event body of DESIGN.md "The webhook request", written straight into one string: the
//! values are already JSON and the names were escaped once per table ([`TableNames`]), so
//! nothing is parsed, re-serialized or escaped again, and the numbers (commit time, LSN, xid)
//! are written digit by digit, without `format!` or temporary strings: this runs once per
//! event.

use crate::model::{Change, Lsn, RowImage};

use super::names::TableNames;

/// Which columns of the table the body shows (a rule's `columns` projection), as indexes.
pub type Projection = Option<Vec<usize>>;

/// Room for everything of a body but the id, type, table, row images and lists of names: the
/// field names, timestamp, operation, LSN, xid, `null`s and `[]`s take at most about 220 bytes.
const FIXED_LEN: usize = 256;

/// The body of event `id` for `change`, whose table's names are `names`; `event_type_json`
/// is the event type as a JSON string (a rule's, escaped once); `operation` is the change's
/// own, or `read` for a row a backfill sent. `id` is walhook's own (ASCII letters, digits and
/// `_`), so it needs no escaping.
pub fn body(
    id: &str,
    event_type_json: &str,
    names: &TableNames,
    change: &Change,
    operation: &str,
    projection: &Projection,
) -> String {
    let shown = |i: &usize| projection.as_ref().is_none_or(|p| p.contains(i));
    let mut out = String::with_capacity(body_len_hint(id, event_type_json, names, change));
    out.push_str("{\"id\":\"");
    out.push_str(id);
    out.push_str("\",\"type\":");
    out.push_str(event_type_json);
    out.push_str(",\"timestamp\":\"");
    push_rfc3339_micros(change.commit_time_micros, &mut out);
    out.push_str("\",\"data\":{\"table\":");
    out.push_str(&names.qualified_json);
    out.push_str(",\"operation\":\"");
    out.push_str(operation);
    out.push_str("\",\"row\":");
    write_image(&mut out, names, change.row.as_ref(), projection);
    out.push_str(",\"old\":");
    write_image(&mut out, names, change.old.as_ref(), projection);
    out.push_str(",\"changed\":");
    match change.changed() {
        Some(changed) => write_names(&mut out, names, changed.filter(shown)),
        None => out.push_str("null"),
    }
    out.push_str(",\"unchanged_toast\":");
    let toast = change.unchanged_toast.iter().copied().filter(shown);
    write_names(&mut out, names, toast);
    out.push_str(",\"commit_lsn\":\"");
    push_lsn(change.commit_lsn, &mut out);
    out.push_str("\",\"xid\":");
    push_decimal(u64::from(change.xid), &mut out);
    out.push_str("}}");
    out
}

/// A length the body of `change` does not exceed, so that its string is allocated once: each
/// image's values and every column name with its punctuation; the names of `changed` once
/// more; an unchanged TOAST column's name in the room its absent value left in `row`.
pub(super) fn body_len_hint(
    id: &str,
    event_type: &str,
    names: &TableNames,
    change: &Change,
) -> usize {
    let columns: usize = names.columns_json.iter().map(|name| name.len() + 2).sum();
    let image = |image: Option<&RowImage>| {
        image.map_or(0, |image| {
            image.json.len() + 5 * image.datums.len() + columns
        })
    };
    FIXED_LEN
        + id.len()
        + event_type.len()
        + names.qualified_json.len()
        + image(change.row.as_ref())
        + image(change.old.as_ref())
        + if change.old.is_some() { columns } else { 0 }
        + 4 * change.unchanged_toast.len()
}

fn write_image(
    out: &mut String,
    names: &TableNames,
    image: Option<&RowImage>,
    projection: &Projection,
) {
    let Some(image) = image else {
        out.push_str("null");
        return;
    };
    out.push('{');
    let mut first = true;
    for (i, name) in names.columns_json.iter().enumerate() {
        if projection.as_ref().is_some_and(|p| !p.contains(&i)) {
            continue;
        }
        let Some(value) = image.get(i) else { continue };
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(name);
        out.push(':');
        out.push_str(value);
    }
    out.push('}');
}

fn write_names(out: &mut String, names: &TableNames, columns: impl Iterator<Item = usize>) {
    out.push('[');
    for (n, i) in columns.enumerate() {
        if n > 0 {
            out.push(',');
        }
        if let Some(name) = names.columns_json.get(i) {
            out.push_str(name);
        }
    }
    out.push(']');
}

/// `2026-11-26T17:51:10.574330Z` for microseconds since the Unix epoch. A year outside
/// 0000–9999 (a BC date, or the extremes infinity saturates to) is printed with its sign and
/// all its digits, as `format!("{year:04}")` prints it.
pub fn push_rfc3339_micros(micros: i64, out: &mut String) {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000).unsigned_abs();
    let (days, day_secs) = (
        secs.div_euclid(86_400),
        secs.rem_euclid(86_400).unsigned_abs(),
    );
    let (year, month, day) = civil_from_days(days);
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    put_digits(&mut text[5..7], u64::from(month));
    put_digits(&mut text[8..10], u64::from(day));
    put_digits(&mut text[11..13], day_secs / 3600);
    put_digits(&mut text[14..16], day_secs / 60 % 60);
    put_digits(&mut text[17..19], day_secs % 60);
    put_digits(&mut text[20..26], frac);
    let text = match u64::try_from(year) {
        Ok(year) if year <= 9999 => {
            put_digits(&mut text[0..4], year);
            &text[..]
        }
        _ => {
            out.push_str(&format!("{year:04}"));
            &text[4..]
        }
    };
    push_ascii(text, out);
}

/// Writes the last `digits.len()` decimal digits of `n` into `digits`, zero-padded.
fn put_digits(digits: &mut [u8], mut n: u64) {
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Postgres's notation, as `Lsn`'s `Display` prints it: `16/B374D848`.
fn push_lsn(lsn: Lsn, out: &mut String) {
    push_hex(lsn.0 >> 32, 1, UPPER_HEX, out);
    out.push('/');
    push_hex(lsn.0 & 0xFFFF_FFFF, 1, UPPER_HEX, out);
}

pub(super) const UPPER_HEX: &[u8; 16] = b"0123456789ABCDEF";
pub(super) const LOWER_HEX: &[u8; 16] = b"0123456789abcdef";

/// `n` in hex with at least `width` digits (zero-padded), as `{:0width$X}` or `{:0width$x}`
/// print it, depending on `alphabet`.
pub(super) fn push_hex(n: u64, width: usize, alphabet: &[u8; 16], out: &mut String) {
    let mut digits = [b'0'; 16];
    let mut start = digits.len();
    let mut rest = n;
    while rest > 0 {
        start -= 1;
        digits[start] = alphabet[(rest & 0xf) as usize];
        rest >>= 4;
    }
    push_ascii(&digits[start.min(digits.len() - width.min(16))..], out);
}

/// `n` in decimal, as `{}` prints it.
pub(super) fn push_decimal(n: u64, out: &mut String) {
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    let mut rest = n;
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    push_ascii(&digits[start..], out);
}

/// Appends text the caller built from ASCII digits and punctuation (so it is UTF-8, and the
/// empty fallback is never taken).
fn push_ascii(bytes: &[u8], out: &mut String) {
    out.push_str(std::str::from_utf8(bytes).unwrap_or_default());
}

/// The proleptic Gregorian date of a day count from 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The formatting this module replaced, kept as the reference the digit writers must match.
    fn rfc3339_by_format(micros: i64) -> String {
        let secs = micros.div_euclid(1_000_000);
        let frac = micros.rem_euclid(1_000_000);
        let (days, day_secs) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (year, month, day) = civil_from_days(days);
        format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{frac:06}Z",
            day_secs / 3600,
            day_secs / 60 % 60,
            day_secs % 60
        )
    }

    fn rfc3339(micros: i64) -> String {
        let mut out = String::new();
        push_rfc3339_micros(micros, &mut out);
        out
    }

    #[test]
    fn timestamps_are_rfc3339_with_microseconds() {
        let cases = [
            (0, "1970-01-01T00:00:00.000000Z"),
            (1_795_715_470_574_330, "2026-11-26T17:51:10.574330Z"),
            (951_782_400_000_001, "2000-02-29T00:00:00.000001Z"),
            (-1, "1969-12-31T23:59:59.999999Z"),
            // The first and last instants of four-digit years.
            (-62_167_219_200_000_000, "0000-01-01T00:00:00.000000Z"),
            (253_402_300_799_999_999, "9999-12-31T23:59:59.999999Z"),
            // Beyond them: BC years and the infinity sentinels, which saturate.
            (-62_167_219_200_000_001, "-001-12-31T23:59:59.999999Z"),
            (253_402_300_800_000_000, "10000-01-01T00:00:00.000000Z"),
            (i64::MAX, "294247-01-10T04:00:54.775807Z"),
            (i64::MIN, "-290308-12-21T19:59:05.224192Z"),
        ];
        for (micros, want) in cases {
            assert_eq!(rfc3339(micros), want, "{micros}");
            assert_eq!(rfc3339_by_format(micros), want, "{micros}");
        }
    }

    #[test]
    fn numbers_are_written_as_format_writes_them() {
        for n in [
            0,
            1,
            9,
            10,
            0xF,
            0x10,
            745,
            0x16B_3748,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = String::new();
            push_decimal(n, &mut out);
            assert_eq!(out, n.to_string());
            out.clear();
            push_hex(n, 1, UPPER_HEX, &mut out);
            assert_eq!(out, format!("{n:X}"));
            out.clear();
            push_hex(n, 16, UPPER_HEX, &mut out);
            assert_eq!(out, format!("{n:016X}"));
            out.clear();
            push_hex(n, 16, LOWER_HEX, &mut out);
            assert_eq!(out, format!("{n:016x}"));
        }
    }

    proptest! {
        #[test]
        fn any_instant_is_written_as_format_writes_it(micros in any::<i64>()) {
            prop_assert_eq!(rfc3339(micros), rfc3339_by_format(micros));
        }

        #[test]
        fn any_lsn_is_written_as_display_writes_it(lsn in any::<u64>()) {
            let mut out = String::new();
            push_lsn(Lsn(lsn), &mut out);
            prop_assert_eq!(out, Lsn(lsn).to_string());
        }
    }
}
