//! Comparing JSON as values: numbers by their decimal value (serde_json here keeps numbers as
//! text, so `1e+100` and `1000...0` would otherwise differ).

use serde_json::Value;

/// Whether `a` and `b` are the same JSON value, numbers compared exactly by value.
pub fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => decimal(&x.to_string()) == decimal(&y.to_string()),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Every key where `a` and `b` differ, for assertion messages.
pub fn differences(a: &Value, b: &Value) -> Vec<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter()
                .filter(|k| match (x.get(*k), y.get(*k)) {
                    (Some(v), Some(w)) => !same(v, w),
                    _ => true,
                })
                .map(|k| format!("{k}: {:?} vs {:?}", x.get(k), y.get(k)))
                .collect()
        }
        _ if same(a, b) => vec![],
        _ => vec![format!("{a} vs {b}")],
    }
}

/// A number's value as (negative, significant digits, exponent of the last digit).
fn decimal(text: &str) -> (bool, String, i64) {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], unsigned[at + 1..].parse::<i64>().unwrap()),
        None => (unsigned, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int}{frac}");
    let mut exponent = exponent - frac.len() as i64;
    let trimmed = digits.trim_start_matches('0');
    let mut significant = trimmed.to_string();
    while significant.ends_with('0') {
        significant.pop();
        exponent += 1;
    }
    if significant.is_empty() {
        return (false, String::new(), 0);
    }
    (negative, significant, exponent)
}

#[test]
fn numbers_compare_by_value() {
    let v = |s: &str| serde_json::from_str::<Value>(s).unwrap();
    assert!(same(&v("1e+2"), &v("100")));
    assert!(same(&v("1.50"), &v("1.5")));
    assert!(same(&v("-0"), &v("0")));
    assert!(same(&v("[1.0, {\"a\": 2e0}]"), &v("[1, {\"a\": 2}]")));
    assert!(!same(&v("1.5"), &v("15")));
    assert!(!same(&v("0.1"), &v("0.10000000000000001")));
}
