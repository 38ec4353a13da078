//! `[[events]]`: which changes of which table become which events, for whom.

use super::errors::{table_name, Errors};
use crate::config::raw::RawEvent;
use crate::config::EventRule;
use crate::model::Operation;

pub(super) fn validate_event(
    i: usize,
    raw: RawEvent,
    subscribers: &[&str],
    errors: &mut Errors,
) -> EventRule {
    let at = format!("events[{i}]");
    errors.unknown(
        &at,
        &raw.unknown,
        &[
            "type",
            "table",
            "operations",
            "subscribers",
            "when",
            "columns",
            "key",
        ],
    );
    let event_type = raw.event_type.unwrap_or_default();
    let type_ok = !event_type.is_empty()
        && event_type.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
    if !type_ok {
        errors.add(
            format!("{at}.type"),
            format!("must be a dot-separated name of letters, digits, `_` and `-`, e.g. `order.created`; got `{event_type}`"),
        );
    }
    let table = table_name(
        &format!("{at}.table"),
        raw.table.unwrap_or_default(),
        "public.orders",
        errors,
    );
    let operations = match raw.operations {
        None => Operation::ALL.to_vec(),
        Some(names) => {
            if names.is_empty() {
                errors.add(
                    format!("{at}.operations"),
                    "must name at least one of insert, update, delete, truncate, e.g. `[\"insert\"]`",
                );
            }
            let mut ops = Vec::new();
            for (j, name) in names.iter().enumerate() {
                match Operation::parse(name) {
                    Some(op) if !ops.contains(&op) => ops.push(op),
                    Some(_) => {}
                    None => errors.add(
                        format!("{at}.operations[{j}]"),
                        format!("must be one of insert, update, delete, truncate, e.g. `insert`; got `{name}`"),
                    ),
                }
            }
            ops
        }
    };
    let names = raw.subscribers.unwrap_or_default();
    if names.is_empty() {
        errors.add(
            format!("{at}.subscribers"),
            format!(
                "must name at least one subscriber, e.g. `[\"{}\"]`",
                subscribers.first().copied().unwrap_or("billing")
            ),
        );
    }
    for (j, name) in names.iter().enumerate() {
        if !subscribers.contains(&name.as_str()) {
            let declared = if subscribers.is_empty() {
                "none is declared; add a [subscribers.<name>] section".to_string()
            } else {
                format!("declared: {}", subscribers.join(", "))
            };
            errors.add(
                format!("{at}.subscribers[{j}]"),
                format!("no subscriber named `{name}`; {declared}"),
            );
        }
    }
    if let Some(expr) = &raw.when {
        if let Err(e) = cel::Program::compile(expr) {
            errors.add(
                format!("{at}.when"),
                format!("is not a valid CEL expression ({e}), e.g. `row.status == 'paid' && old.status != 'paid'`"),
            );
        }
    }
    let columns = column_list(&format!("{at}.columns"), raw.columns, errors);
    let key = column_list(&format!("{at}.key"), raw.key, errors);
    EventRule {
        event_type,
        table,
        operations,
        subscribers: names,
        when: raw.when,
        columns,
        key,
    }
}

fn column_list(key: &str, raw: Option<Vec<String>>, errors: &mut Errors) -> Option<Vec<String>> {
    let columns = raw?;
    if columns.is_empty() || columns.iter().any(String::is_empty) {
        errors.add(
            key,
            "must list one or more column names, e.g. `[\"id\", \"status\"]`",
        );
    }
    for (j, c) in columns.iter().enumerate() {
        if columns[..j].contains(c) {
            errors.add(key, format!("names column `{c}` twice"));
        }
    }
    Some(columns)
}
