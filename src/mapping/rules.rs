//! The compiled `[[events]]` rules: a change in, zero or more routed events out.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};

use tracing::warn;

use crate::config::Config;
use crate::model::{push_json_string, Change, Event, Lsn, Operation, RowImage, Table, TableName};

use super::body::{body, Projection};
use super::filter::{Filter, FilterError};
use super::id::IdBase;
use super::names::NameCache;
use super::Routed;

/// One rule, ready to apply.
#[derive(Debug)]
struct Rule {
    event_type: String,
    /// `event_type` as a JSON string, as every body of the rule shows it.
    event_type_json: String,
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
    /// The escaped names of the tables seen so far. Behind a lock only so that mapping takes
    /// `&self`; one task maps, so it is never contended.
    names: Mutex<NameCache>,
}

impl Mapper {
    /// Compiles the rules of a validated config.
    pub fn new(config: &Config) -> Result<Self, FilterError> {
        let rules = config
            .events
            .iter()
            .map(|rule| {
                let mut event_type_json = String::new();
                push_json_string(&rule.event_type, &mut event_type_json);
                Ok(Rule {
                    event_type: rule.event_type.clone(),
                    event_type_json,
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
        Ok(Self {
            rules,
            names: Mutex::default(),
        })
    }

    /// The events `change` yields, appended to `out` in config order. Ids are
    /// `evt_<commit LSN>_<index>`, plus `_<n>` when several rules apply to the change's table
    /// and operation, `n` counting those rules from 0 in config order: a rule keeps its number
    /// whatever the filters decide, so ids never depend on row values.
    pub fn map(&self, change: &Change, out: &mut Vec<Routed>) {
        let base = IdBase::Change {
            commit_lsn: change.commit_lsn,
            index: change.index,
        };
        self.map_as(change, base, change.operation.as_str(), out);
    }

    /// The events a row read by backfill `read.backfill` yields: `operation` is `read`, and the
    /// rules that apply are those of the row's table whose operations include insert (the
    /// receiver learns of a row it did not have), with their `when` filter (`old` null) and
    /// `columns` projection. Ids are `bf_<backfill id>_<16 hex FNV-1a of the key text>`, plus
    /// `_<n>` as for [`Mapper::map`]: a resumed or repeated chunk gives the same ids.
    pub fn map_read(&self, read: &ReadRow<'_>, out: &mut Vec<Routed>) {
        let change = Change {
            table: read.table.clone(),
            operation: Operation::Insert,
            row: Some(read.row.clone()),
            old: None,
            unchanged_toast: Vec::new(),
            commit_lsn: read.lsn,
            xid: 0,
            commit_time_micros: read.read_at_micros,
            index: 0,
        };
        let base = IdBase::Read {
            backfill: read.backfill,
            key_hash: fnv1a(read.key.as_bytes()),
        };
        self.map_as(&change, base, "read", out);
    }

    /// Whether some rule maps inserts of `table` to one of `subscribers` (config indexes).
    pub fn maps_inserts(&self, table: &TableName, subscribers: &[usize]) -> bool {
        self.rules.iter().any(|r| {
            r.table == *table
                && r.operations.contains(&Operation::Insert)
                && r.subscribers.iter().any(|s| subscribers.contains(s))
        })
    }

    fn map_as(&self, change: &Change, base: IdBase, operation: &str, out: &mut Vec<Routed>) {
        let applicable = self.rules.iter().filter(|r| r.applies_to(change)).count();
        if applicable == 0 {
            return;
        }
        // The cache stays whole whatever panicked while it was held: entries go in complete.
        let mut cache = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        let names = cache.get(&change.table);
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
            let id = base.id((applicable > 1).then_some(n));
            let projection = projection(change, rule.columns.as_deref());
            let body = body(
                &id,
                &rule.event_type_json,
                names,
                change,
                operation,
                &projection,
            );
            out.push(Routed {
                event: Arc::new(Event {
                    id,
                    event_type: rule.event_type.clone(),
                    key: key(change, &names.qualified, rule.key.as_deref()),
                    table: names.qualified.clone(),
                    body,
                    commit_lsn: change.commit_lsn,
                    commit_time_micros: change.commit_time_micros,
                    is_truncate: change.operation == Operation::Truncate
                        || moves_key(change, rule.key.as_deref()),
                }),
                subscribers: rule.subscribers.clone(),
            });
        }
    }
}

/// A row a backfill read, to map as a `read` event.
#[derive(Debug)]
pub struct ReadRow<'a> {
    pub backfill: i64,
    /// The table as the backfill read it (columns in table order, primary key).
    pub table: &'a Arc<Table>,
    /// The row's primary key as compact JSON array text.
    pub key: &'a str,
    /// Every column, as `to_jsonb` gives it.
    pub row: &'a RowImage,
    /// Where the events stand in the stream: the chunk's high watermark.
    pub lsn: Lsn,
    pub read_at_micros: i64,
}

/// 64-bit FNV-1a: stable across builds and platforms, unlike the std hasher.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

fn projection(change: &Change, columns: Option<&[String]>) -> Projection {
    columns.map(|names| {
        names
            .iter()
            .filter_map(|name| change.table.columns.iter().position(|c| &c.name == name))
            .collect()
    })
}

/// The ordering key's columns: the rule's `key` columns, else the primary key, else the
/// replica identity columns.
fn key_columns<'a>(change: &'a Change, key_columns: Option<&[String]>) -> Cow<'a, [usize]> {
    match key_columns {
        Some(names) => names
            .iter()
            .filter_map(|name| change.table.columns.iter().position(|c| &c.name == name))
            .collect(),
        None if !change.table.primary_key.is_empty() => Cow::Borrowed(&change.table.primary_key),
        None => (0..change.table.columns.len())
            .filter(|&i| change.table.columns[i].is_key)
            .collect(),
    }
}

/// Whether an update moves the row to another ordering key (its old image shows other values
/// in the key columns). Such an event belongs to two keys: the old key's earlier events must
/// reach the subscriber before it (a receiver moves the row it holds, with its unchanged TOAST
/// values), and the new key's later events after it. So it is a barrier for its table, like a
/// truncate.
fn moves_key(change: &Change, rule_key: Option<&[String]>) -> bool {
    let (Operation::Update, Some(old), Some(row)) =
        (change.operation, change.old.as_ref(), change.row.as_ref())
    else {
        return false;
    };
    key_columns(change, rule_key).iter().any(
        |&i| matches!((old.get(i), row.get(i)), (Some(before), Some(after)) if before != after),
    )
}

/// `schema.table:[<key values>]`: the values of the [`key_columns`]. The new row's values, or
/// the old row's for a delete.
fn key(change: &Change, table: &str, key_columns_of_rule: Option<&[String]>) -> String {
    if change.operation == Operation::Truncate {
        return table.to_string();
    }
    let columns = key_columns(change, key_columns_of_rule);
    let image = match change.operation {
        Operation::Delete => change.old.as_ref(),
        _ => change.row.as_ref(),
    };
    let value = |i: usize| {
        image
            .and_then(|image| image.get(i))
            .or_else(|| change.old.as_ref().and_then(|old| old.get(i)))
            .unwrap_or("null")
    };
    let values_len: usize = columns.iter().map(|&i| value(i).len() + 1).sum();
    let mut key = String::with_capacity(table.len() + 2 + values_len);
    key.push_str(table);
    key.push_str(":[");
    for (n, &i) in columns.iter().enumerate() {
        if n > 0 {
            key.push(',');
        }
        key.push_str(value(i));
    }
    key.push(']');
    key
}
