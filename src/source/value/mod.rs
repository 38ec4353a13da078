//! Column values: Postgres's text output, as pgoutput sends it, turned into the JSON that
//! `to_jsonb()` gives for the same value (with `TimeZone=UTC`, `DateStyle=ISO`,
//! `IntervalStyle=postgres`, `extra_float_digits=1`, `bytea_output=hex`).
//!
//! Pure and on the hot path: values are appended to a caller's reused `String`; scalars never
//! allocate, arrays and composites only when an element needs unescaping. Malformed text gives
//! a [`ValueError`], never a panic and never invalid JSON.

mod array;
mod composite;
mod datetime;
mod json;
mod scalar;
mod types;

pub use types::{PgType, TypeRegistry};

/// Why a value's text could not be encoded. Positions are byte offsets into the text being
/// parsed (for an element of an array or composite, into that element's text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("value text is not valid UTF-8")]
    InvalidUtf8,
    #[error("malformed {kind} text at byte {at}: {reason}")]
    Malformed {
        kind: &'static str,
        at: usize,
        reason: &'static str,
    },
    #[error("composite value's field count differs from its type's {expected} fields")]
    FieldCount { expected: usize },
}

impl ValueError {
    fn malformed(kind: &'static str, at: usize, reason: &'static str) -> Self {
        Self::Malformed { kind, at, reason }
    }
}

/// Appends the JSON for one non-NULL value of type `ty`, given its text output, to `out`.
///
/// On error `out` is left as it was, so the caller can report the column and go on.
pub fn encode_text(ty: &PgType, text: &[u8], out: &mut String) -> Result<(), ValueError> {
    let start = out.len();
    let result = encode(ty, text, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// [`encode_text`] without the rollback, for the nested parsers (the outermost call rolls back).
fn encode(ty: &PgType, text: &[u8], out: &mut String) -> Result<(), ValueError> {
    match ty {
        PgType::Bool => scalar::encode_bool(text, out),
        PgType::Int => scalar::encode_int(text, out),
        PgType::Float | PgType::Numeric => scalar::encode_number(text, out),
        PgType::Json => json::embed(text, out),
        PgType::Text | PgType::Bytea | PgType::Other => scalar::encode_string(text, out),
        PgType::Date => datetime::encode_date(text, out),
        PgType::Time => datetime::encode_time(text, false, out),
        PgType::TimeTz => datetime::encode_time(text, true, out),
        PgType::Timestamp => datetime::encode_timestamp(text, false, out),
        PgType::Timestamptz => datetime::encode_timestamp(text, true, out),
        PgType::Array { element, delimiter } => array::encode_array(element, *delimiter, text, out),
        PgType::Vector { element } => array::encode_vector(element, text, out),
        PgType::Composite { fields } => composite::encode_composite(fields, text, out),
    }
}

#[cfg(test)]
mod tests;
