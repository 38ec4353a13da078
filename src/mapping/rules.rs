//! The compiled `[[events]]` rules: a change in, zero or more routed events out.

use std::sync::Arc;

use tracing::warn;

use crate::config::{Config, TableName};
use crate::source::{Change, Operation};

use super::body::{write_body, Projection};
use super::filter::{Filter, FilterError};
use super::{Event, Routed};

/// One rule, ready to apply.
#[derive(Debug)]
struct Rule {
    event_type: String,
    table: TableName,
    operations: Vec<Operation>,
    /// Indexes into the config's subscriber list.
    subscribers: Vec<usize>,
    filter: Option<Filter>,
    columns: Option<Vec<String>>,
    key: Option<Vec<String>>,
}

impl Rule {
    fn applies_to(&self, change: &Change) -> bool {
        self.operations.contains(&change.operation)
            && self.table.schema == change.table.schema
            && self.table.name == change.table.name
    }
}

/// All rules of a config, in config order.
#[derive(Debug)]
pub struct Mapper {
    rules: Vec<Rule>,
}

impl Mapper {
    /// Compiles the rules of a validated config.
    pub fn new(config: &Config) -> Result<Self, FilterError> {
        let rules = config
            .events
            .iter()
            .map(|rule| {
                Ok(Rule {
                    event_type: rule.event_type.clone(),
                    table: rule.table.clone(),
                    operations: rule.operations.clone(),
                    subscribers: rule
                        .subscribers
                        .iter()
                        .filter_map(|name| config.subscribers.iter().position(|s| &s.name == name))
                        .collect(),
                    filter: rule.when.as_deref().map(Filter::compile).transpose()?,
                    columns: rule.columns.clone(),
                    key: rule.key.clone(),
                })
            })
            .collect::<Result<_, FilterError>>()?;
        Ok(Self { rules })
    }

    /// The events `change` yields, appended to `out` in config order. Ids are
    /// `evt_<commit LSN>_<index>`, plus `_<n>` when several rules apply to the change's table
    /// and operation, `n` counting those rules from 0 in config order: a rule keeps its number
    /// whatever the filters decide, so ids never depend on row values.
    pub fn map(&self, change: &Change, out: &mut Vec<Routed>) {
        let applicable = self.rules.iter().filter(|r| r.applies_to(change)).count();
        let base = format!("evt_{}_{}", change.commit_lsn.to_hex16(), change.index);
        for (n, rule) in self
            .rules
            .iter()
            .filter(|r| r.applies_to(change))
            .enumerate()
        {
            if let Some(filter) = &rule.filter {
                match filter.matches(change) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        warn!(event_type = %rule.event_type, lsn = %change.commit_lsn, error = %e, "filter failed; event skipped");
                        continue;
                    }
                }
            }
            let id = if applicable > 1 {
                format!("{base}_{n}")
            } else {
                base.clone()
            };
            let projection = projection(change, rule.columns.as_deref());
            let mut body = String::with_capacity(256);
            write_body(&mut body, &id, &rule.event_type, change, &projection);
            out.push(Routed {
                event: Arc::new(Event {
                    id,
                    event_type: rule.event_type.clone(),
                    key: key(change, rule.key.as_deref()),
                    table: change.table.qualified_name(),
                    body,
                    commit_lsn: change.commit_lsn,
                    commit_time_micros: change.commit_time_micros,
                    is_truncate: change.operation == Operation::Truncate,
                }),
                subscribers: rule.subscribers.clone(),
            });
        }
    }
}

fn projection(change: &Change, columns: Option<&[String]>) -> Projection {
    columns.map(|names| {
        names
            .iter()
            .filter_map(|name| change.table.columns.iter().position(|c| &c.name == name))
            .collect()
    })
}

/// `schema.table:[<key values>]`: the rule's `key` columns, else the primary key, else the
/// replica identity columns. The new row's values, or the old row's for a delete.
fn key(change: &Change, key_columns: Option<&[String]>) -> String {
    let table = change.table.qualified_name();
    if change.operation == Operation::Truncate {
        return table;
    }
    let columns: Vec<usize> = match key_columns {
        Some(names) => names
            .iter()
            .filter_map(|name| change.table.columns.iter().position(|c| &c.name == name))
            .collect(),
        None if !change.table.primary_key.is_empty() => change.table.primary_key.clone(),
        None => (0..change.table.columns.len())
            .filter(|&i| change.table.columns[i].is_key)
            .collect(),
    };
    let image = match change.operation {
        Operation::Delete => change.old.as_ref(),
        _ => change.row.as_ref(),
    };
    let mut key = table;
    key.push_str(":[");
    for (n, &i) in columns.iter().enumerate() {
        if n > 0 {
            key.push(',');
        }
        let value = image
            .and_then(|image| image.get(i))
            .or_else(|| change.old.as_ref().and_then(|old| old.get(i)))
            .unwrap_or("null");
        key.push_str(value);
    }
    key.push(']');
    key
}
