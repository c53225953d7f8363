//! Prometheus text exposition (0.0.4) and OpenMetrics as a feed: what UFM Telemetry serves at
//! `/metrics` and what the InfiniBand exporters serve.
//!
//! - **Keys.** A sample's series key comes from its labels: the first of the source's
//!   `--key-labels` alternatives whose labels it has all of (default
//!   [`super::DEFAULT_KEY_LABELS`]); their values joined by `:`, GUID labels normalised and
//!   port labels without leading zeros, so `{node_guid="2c90300f172a0",port_num="2"}` and UFM
//!   CSV's row for that port are both `0x0002c90300f172a0:2`. A sample no alternative keys
//!   (an exporter's own `go_*` metrics) is counted in `FeedBatch::unkeyed`.
//! - **Names.** The metric is the sample's name as the source writes it. Samples of one key
//!   and name that differ in their other labels (a `vl`, a `lane`) stay distinct: each is
//!   named `name{label="value",...}`, its other labels sorted by name. A name with one
//!   sample per key stays bare, whatever other labels it carries.
//! - **Kinds.** `# TYPE ... counter` (the family or its `_total` sample), a `_total` name, a
//!   known InfiniBand counter name or `--counter-columns` make a counter; histogram and summary
//!   `_bucket`/`_count` samples are counters too; anything else is a gauge. A counter's value
//!   written as an integer is read exactly (`18446744073709551576`); one in float notation is
//!   the integer it names; a fractional one (`cpu_seconds_total 12.5`) stays a float.
//! - **Time.** A sample's timestamp is milliseconds (Prometheus text, UFM) or seconds
//!   (OpenMetrics); a sample without one was taken at the poll. Samples of one key at one time
//!   make one row.
//! - **Faults.** A line that is not a sample is rejected as `malformed`, a key that is not a
//!   valid key as `bad_switch_id`, a value that is not a number as `bad_number` (rejects count
//!   samples here, not rows); `NaN` and infinities are "no sample" (`not_available`), as is a
//!   counter's `N/A`/`-1`/sentinel. Whole answers are parsed before any row is delivered: a
//!   port's samples are spread over the whole answer, one family after another.

use std::collections::HashMap;
use std::io::BufRead;

use super::{
    key, logging, parse_counter, Cell, FeedBatch, FeedError, Freshness, RejectReason,
    SourceOptions, MAX_SWITCH_ID_LEN,
};
use crate::shared::metric::{MetricKind, Value};
use crate::shared::timestamp::Micros;

/// One sample line, split.
#[derive(Debug, PartialEq)]
struct Line<'a> {
    name: &'a str,
    labels: Vec<(&'a str, String)>,
    value: &'a str,
    timestamp: Option<&'a str>,
}

/// Splits a sample line; `None` when it is not one.
fn split_sample(line: &str) -> Option<Line<'_>> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=')?;
            let label = rest[..eq].trim();
            if label.is_empty()
                || !label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return None;
            }
            rest = rest[eq + 1..].trim_start().strip_prefix('"')?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.push((label, value));
            rest = rest[end + 1..].trim_start();
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else if !rest.starts_with('}') {
                return None;
            }
        }
    }
    // OpenMetrics exemplars follow ` # `; they are not part of the sample.
    let rest = rest.split(" # ").next().unwrap_or(rest);
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = fields.next()?;
    let timestamp = fields.next();
    if fields.next().is_some() {
        return None;
    }
    Some(Line {
        name,
        labels,
        value,
        timestamp,
    })
}

/// A sample's time: milliseconds (text 0.0.4) or seconds with a fraction (OpenMetrics).
fn parse_timestamp(text: &str, openmetrics: bool) -> Option<Micros> {
    if openmetrics {
        let seconds: f64 = text.parse().ok()?;
        let micros = (seconds * 1e6).round();
        (micros.is_finite() && micros.abs() < 9.2e18).then_some(micros as i64)
    } else {
        let millis: i64 = text.parse().ok()?;
        millis.checked_mul(1_000)
    }
}

/// The key a sample's labels make, if any alternative matches: `Some(Err(()))` when the
/// matching labels do not make a valid key.
fn key_of(
    labels: &[(&str, String)],
    alternatives: &[Vec<String>],
) -> Option<(Result<String, ()>, usize)> {
    let (index, alternative) = alternatives.iter().enumerate().find(|(_, alt)| {
        alt.iter()
            .all(|wanted| labels.iter().any(|(l, _)| *l == wanted.as_str()))
    })?;
    let mut parts = Vec::with_capacity(alternative.len());
    for wanted in alternative {
        let value = labels
            .iter()
            .find(|(l, _)| *l == wanted.as_str())
            .map(|(_, v)| v.as_str())
            .unwrap_or_default();
        let part = if key::is_guid_name(wanted) {
            key::normalize_guid(value)
        } else if wanted.to_ascii_lowercase().contains("port") {
            key::normalize_port(value).map(|p| p.to_string())
        } else {
            Some(value.to_string())
        };
        match part {
            Some(part) if !part.is_empty() => parts.push(part),
            _ => return Some((Err(()), index)),
        }
    }
    let key = parts.join(":");
    let valid = key.len() <= MAX_SWITCH_ID_LEN && !key.chars().any(char::is_control);
    Some((if valid { Ok(key) } else { Err(()) }, index))
}

/// `{a="1",b="x\"y"}` for the labels not in the key, sorted by name; empty when none.
fn label_suffix(labels: &[(&str, String)], key_labels: &[String]) -> String {
    let mut rest: Vec<&(&str, String)> = labels
        .iter()
        .filter(|(l, _)| !key_labels.iter().any(|k| k == l))
        .collect();
    if rest.is_empty() {
        return String::new();
    }
    rest.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = String::from("{");
    for (i, (label, value)) in rest.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(label);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// The kind of a sample by its family's `# TYPE`, else by name and the source's options.
fn kind_for(name: &str, types: &HashMap<String, String>, options: &SourceOptions) -> MetricKind {
    let counter = MetricKind::Counter {
        words: crate::shared::metric::counts_data_words(name, false),
    };
    let family_type = |family: &str| types.get(family).map(String::as_str);
    if family_type(name) == Some("counter")
        || name
            .strip_suffix("_total")
            .is_some_and(|f| family_type(f) == Some("counter"))
    {
        return counter;
    }
    for suffix in ["_bucket", "_count"] {
        if let Some(family) = name.strip_suffix(suffix) {
            if matches!(
                family_type(family),
                Some("histogram" | "summary" | "gaugehistogram")
            ) {
                return counter;
            }
        }
    }
    options.kind_of(name, false)
}

/// A sample kept for assembly.
struct Kept {
    key: u32,
    /// Index into the (base name, label suffix) table.
    column: u32,
    timestamp: Micros,
    value: Option<Value>,
}

/// Reads a whole answer into one batch (see the module docs).
pub fn parse<R: BufRead>(
    mut reader: R,
    openmetrics: bool,
    freshness: Freshness,
    options: &SourceOptions,
) -> FeedBatch {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut keys: Vec<String> = Vec::new();
    let mut key_index: HashMap<String, u32> = HashMap::new();
    // (name, label suffix) → column candidate; the suffix is dropped later when a name has
    // one sample per key.
    let mut columns: Vec<(String, String)> = Vec::new();
    let mut column_index: HashMap<(String, String), u32> = HashMap::new();
    let mut kept: Vec<Kept> = Vec::new();
    let mut batch = FeedBatch::default();
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                batch.error = Some(FeedError::Read(logging::escape(&e.to_string()).to_string()));
                break;
            }
        }
        line_no += 1;
        let Ok(text) = std::str::from_utf8(&buf) else {
            let raw = buf.clone();
            batch.reject(RejectReason::Malformed, line_no, || {
                logging::quote(&raw).to_string()
            });
            continue;
        };
        let line = text.trim_end_matches(['\n', '\r']).trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_ascii_whitespace();
            if let (Some("TYPE"), Some(family), Some(kind)) =
                (words.next(), words.next(), words.next())
            {
                if types.len() < 100_000 {
                    types.insert(family.to_string(), kind.to_ascii_lowercase());
                }
            }
            continue;
        }
        let Some(sample) = split_sample(line) else {
            batch.reject(RejectReason::Malformed, line_no, || {
                logging::quote(line).to_string()
            });
            continue;
        };
        if openmetrics && sample.name.ends_with("_created") {
            continue;
        }
        let Some((key, alternative)) = key_of(&sample.labels, &options.key_labels) else {
            batch.unkeyed += 1;
            continue;
        };
        let Ok(key) = key else {
            let labels = format!("{:?}", sample.labels);
            batch.reject(RejectReason::BadSwitchId, line_no, || {
                logging::quote(&labels).to_string()
            });
            continue;
        };
        let timestamp = match sample.timestamp {
            None => freshness.now,
            Some(text) => match parse_timestamp(text, openmetrics) {
                Some(ts) => ts,
                None => {
                    batch.reject(RejectReason::BadTimestamp, line_no, || {
                        logging::quote(text).to_string()
                    });
                    continue;
                }
            },
        };
        let kind = kind_for(sample.name, &types, options);
        let value = match read_value(sample.value, kind) {
            Ok(value) => value,
            Err(reason) => {
                let raw = sample.value;
                batch.reject(reason, line_no, || logging::quote(raw).to_string());
                continue;
            }
        };
        if value.is_none() {
            batch.not_available += 1;
        }
        let next = keys.len() as u32;
        let key = *key_index.entry(key).or_insert_with_key(|k| {
            keys.push(k.clone());
            next
        });
        let suffix = label_suffix(&sample.labels, &options.key_labels[alternative]);
        let next = columns.len() as u32;
        let column = *column_index
            .entry((sample.name.to_string(), suffix))
            .or_insert_with_key(|k| {
                columns.push(k.clone());
                next
            });
        kept.push(Kept {
            key,
            column,
            timestamp,
            value,
        });
    }
    assemble(batch, keys, columns, kept, &types, freshness, options)
}

/// A sample's value for a metric of `kind`; `Ok(None)` is "no sample".
fn read_value(text: &str, kind: MetricKind) -> Result<Option<Value>, RejectReason> {
    if kind.is_counter() {
        match parse_counter(text) {
            Ok(Cell::Value(v)) => return Ok(Some(v)),
            Ok(_) => return Ok(None),
            Err(_) => {}
        }
    }
    let value: f64 = match text {
        "NaN" | "+Inf" | "-Inf" | "Inf" => return Ok(None),
        _ => text.parse().map_err(|_| RejectReason::BadNumber)?,
    };
    Ok(value.is_finite().then_some(Value::Float(value)))
}

/// Turns the kept samples into rows: one per key and timestamp, a column per metric name.
fn assemble(
    mut batch: FeedBatch,
    keys: Vec<String>,
    columns: Vec<(String, String)>,
    mut kept: Vec<Kept>,
    types: &HashMap<String, String>,
    freshness: Freshness,
    options: &SourceOptions,
) -> FeedBatch {
    // A name keeps its label suffix only where one key has it under several label sets.
    let mut per_key_name: HashMap<(u32, &str), u32> = HashMap::new();
    let mut seen: std::collections::HashSet<(u32, u32)> = std::collections::HashSet::new();
    for sample in &kept {
        if seen.insert((sample.key, sample.column)) {
            *per_key_name
                .entry((sample.key, columns[sample.column as usize].0.as_str()))
                .or_default() += 1;
        }
    }
    // Each sample's final column, by (key, candidate column), in order of first appearance.
    let mut names: Vec<String> = Vec::new();
    let mut name_index: HashMap<String, usize> = HashMap::new();
    let mut column_of: HashMap<(u32, u32), usize> = HashMap::new();
    for sample in &kept {
        let (name, suffix) = &columns[sample.column as usize];
        let split = per_key_name
            .get(&(sample.key, name.as_str()))
            .is_some_and(|&n| n > 1);
        let full = if split {
            format!("{name}{suffix}")
        } else {
            name.clone()
        };
        let next = names.len();
        let index = *name_index.entry(full).or_insert_with_key(|full| {
            names.push(full.clone());
            next
        });
        column_of.insert((sample.key, sample.column), index);
    }
    let kinds: Vec<MetricKind> = names
        .iter()
        .map(|full| {
            let base = full.split('{').next().unwrap_or(full);
            kind_for(base, types, options)
        })
        .collect();
    let width = names.len();
    let mut out = FeedBatch::with_columns(names, kinds);
    out.rejected = std::mem::take(&mut batch.rejected);
    out.examples = std::mem::take(&mut batch.examples);
    out.error = batch.error.take();
    out.not_available = batch.not_available;
    out.unkeyed = batch.unkeyed;
    // Rows in key order of first appearance, oldest first within a key.
    kept.sort_by_key(|s| (s.key, s.timestamp));
    let mut row: Vec<Option<Value>> = vec![None; width];
    let mut i = 0;
    while i < kept.len() {
        let (key, timestamp) = (kept[i].key, kept[i].timestamp);
        row.iter_mut().for_each(|cell| *cell = None);
        let mut present = false;
        while i < kept.len() && kept[i].key == key && kept[i].timestamp == timestamp {
            let sample = &kept[i];
            if let Some(value) = sample.value {
                if let Some(&column) = column_of.get(&(sample.key, sample.column)) {
                    row[column] = Some(value);
                }
                present = true;
            }
            i += 1;
        }
        if !present {
            continue;
        }
        if let Err(reason) = freshness.check(timestamp) {
            let age = (freshness.now - timestamp) as f64 / 1e6;
            let id = keys[key as usize].clone();
            out.reject(reason, 0, || {
                format!("{} ({age:.3} s old)", logging::quote(&id))
            });
            continue;
        }
        out.push_cells(&keys[key as usize], timestamp, &row);
    }
    out
}

#[cfg(test)]
mod tests;
