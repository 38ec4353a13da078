//! `when` filters: CEL expressions over `row` and `old`, compiled once at start-up.

use std::collections::HashMap;
use std::sync::Arc;

use cel::objects::{Key, Map};
use cel::{Context, Program, Value};

use crate::model::{Change, RowImage};

/// A compiled `when` expression.
pub struct Filter {
    program: Program,
    source: String,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Filter").field(&self.source).finish()
    }
}

/// Why a filter did not give true or false for a change.
#[derive(Debug, thiserror::Error)]
#[error("`when` filter `{expression}` failed: {reason}")]
pub struct FilterError {
    pub expression: String,
    pub reason: String,
}

impl Filter {
    /// Compiles `source`; validation already proved it compiles, so an error here is a bug.
    pub fn compile(source: &str) -> Result<Self, FilterError> {
        Program::compile(source)
            .map(|program| Self {
                program,
                source: source.to_string(),
            })
            .map_err(|e| FilterError {
                expression: source.to_string(),
                reason: e.to_string(),
            })
    }

    /// Evaluates the filter for `change`. `row` and `old` are maps of column to value, or null
    /// when the change has no such image. Anything but `true` does not match.
    pub fn matches(&self, change: &Change) -> Result<bool, FilterError> {
        let mut context = Context::default();
        context.add_variable_from_value("row", image_value(change, change.row.as_ref()));
        context.add_variable_from_value("old", image_value(change, change.old.as_ref()));
        match self.program.execute(&context) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(self.error(format!("gave {other:?}, not true or false"))),
            Err(e) => Err(self.error(e.to_string())),
        }
    }

    fn error(&self, reason: String) -> FilterError {
        FilterError {
            expression: self.source.clone(),
            reason,
        }
    }
}

fn image_value(change: &Change, image: Option<&RowImage>) -> Value {
    let Some(image) = image else {
        return Value::Null;
    };
    let mut map = HashMap::new();
    for (i, column) in change.table.columns.iter().enumerate() {
        if let Some(json) = image.get(i) {
            let value = serde_json::from_str::<serde_json::Value>(json)
                .map(|v| to_cel(&v))
                .unwrap_or(Value::Null);
            map.insert(Key::String(Arc::new(column.name.clone())), value);
        }
    }
    Value::Map(Map { map: Arc::new(map) })
}

/// JSON to CEL: integers that fit stay integers, other numbers become doubles.
fn to_cel(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                Value::UInt(u)
            } else {
                Value::Float(n.to_string().parse().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::String(Arc::new(s.clone())),
        serde_json::Value::Array(items) => {
            Value::List(Arc::new(items.iter().map(to_cel).collect()))
        }
        serde_json::Value::Object(fields) => {
            let map: HashMap<Key, Value> = fields
                .iter()
                .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
                .collect();
            Value::Map(Map { map: Arc::new(map) })
        }
    }
}
