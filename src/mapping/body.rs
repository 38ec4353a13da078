//! The event body of DESIGN.md "The webhook request", written straight into one string: the
//! values are already JSON, so nothing is parsed or re-serialized.

use crate::source::{push_json_string, Change, RowImage};

/// Which columns of the table the body shows (a rule's `columns` projection), as indexes.
pub type Projection = Option<Vec<usize>>;

/// Writes the body of event `id` of type `event_type` for `change`; `operation` is the
/// change's own, or `read` for a row a backfill sent.
pub fn write_body(
    out: &mut String,
    id: &str,
    event_type: &str,
    change: &Change,
    operation: &str,
    projection: &Projection,
) {
    let shown = |i: &usize| projection.as_ref().is_none_or(|p| p.contains(i));
    out.push_str("{\"id\":");
    push_json_string(id, out);
    out.push_str(",\"type\":");
    push_json_string(event_type, out);
    out.push_str(",\"timestamp\":\"");
    push_rfc3339_micros(change.commit_time_micros, out);
    out.push_str("\",\"data\":{\"table\":");
    push_json_string(&change.table.qualified_name(), out);
    out.push_str(",\"operation\":\"");
    out.push_str(operation);
    out.push_str("\",\"row\":");
    write_image(out, change, change.row.as_ref(), projection);
    out.push_str(",\"old\":");
    write_image(out, change, change.old.as_ref(), projection);
    out.push_str(",\"changed\":");
    match change.changed_columns() {
        Some(changed) => {
            let names: Vec<usize> = changed.into_iter().filter(|i| shown(i)).collect();
            write_names(out, change, &names);
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"unchanged_toast\":");
    let toast: Vec<usize> = change
        .unchanged_toast
        .iter()
        .copied()
        .filter(|i| shown(i))
        .collect();
    write_names(out, change, &toast);
    out.push_str(",\"commit_lsn\":\"");
    out.push_str(&change.commit_lsn.to_string());
    out.push_str("\",\"xid\":");
    out.push_str(&change.xid.to_string());
    out.push_str("}}");
}

fn write_image(
    out: &mut String,
    change: &Change,
    image: Option<&RowImage>,
    projection: &Projection,
) {
    let Some(image) = image else {
        out.push_str("null");
        return;
    };
    out.push('{');
    let mut first = true;
    for (i, column) in change.table.columns.iter().enumerate() {
        if projection.as_ref().is_some_and(|p| !p.contains(&i)) {
            continue;
        }
        let Some(value) = image.get(i) else { continue };
        if !first {
            out.push(',');
        }
        first = false;
        push_json_string(&column.name, out);
        out.push(':');
        out.push_str(value);
    }
    out.push('}');
}

fn write_names(out: &mut String, change: &Change, columns: &[usize]) {
    out.push('[');
    for (n, &i) in columns.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        if let Some(column) = change.table.columns.get(i) {
            push_json_string(&column.name, out);
        }
    }
    out.push(']');
}

/// `2026-11-26T17:51:10.574330Z` for microseconds since the Unix epoch.
pub fn push_rfc3339_micros(micros: i64, out: &mut String) {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let (days, day_secs) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    out.push_str(&format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        day_secs / 3600,
        day_secs / 60 % 60,
        day_secs % 60
    ));
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
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_with_microseconds() {
        let cases = [
            (0, "1970-01-01T00:00:00.000000Z"),
            (1_795_715_470_574_330, "2026-11-26T17:51:10.574330Z"),
            (951_782_400_000_001, "2000-02-29T00:00:00.000001Z"),
            (-1, "1969-12-31T23:59:59.999999Z"),
        ];
        for (micros, want) in cases {
            let mut out = String::new();
            push_rfc3339_micros(micros, &mut out);
            assert_eq!(out, want);
        }
    }
}
