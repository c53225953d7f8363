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

use rustc_hash::FxHashMap;

use super::{
    key, logging, parse_counter, Cell, FeedBatch, FeedError, Freshness, RejectReason,
    SourceOptions, MAX_SWITCH_ID_LEN,
};
use crate::shared::metric::{MetricKind, Value};
use crate::shared::timestamp::Micros;

/// One sample line, split: its name, its label block (`{...}` with the braces, or empty),
/// and what follows (value, timestamp, perhaps an exemplar).
fn split_line(line: &str) -> Option<(&str, &str, &str)> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let rest = &line[name_end..];
    if !rest.starts_with('{') {
        return Some((name, "", rest));
    }
    // The block ends at the first `}` outside a quoted value.
    let mut quoted = false;
    let mut escaped = false;
    for (i, b) in rest.bytes().enumerate() {
        match (quoted, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (_, false, b'"') => quoted = !quoted,
            (false, _, b'}') => return Some((name, &rest[..=i], &rest[i + 1..])),
            _ => {}
        }
    }
    None
}

/// The labels of a block `{a="1",b="x\"y"}`, values unescaped; `None` when malformed.
fn parse_labels(block: &str) -> Option<Vec<(&str, String)>> {
    let mut labels = Vec::new();
    let mut rest = block.strip_prefix('{')?;
    loop {
        rest = rest.trim_start();
        if rest == "}" {
            return Some(labels);
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
        } else if rest != "}" {
            return None;
        }
    }
}

/// The value and timestamp after a sample's labels.
fn value_and_timestamp(rest: &str) -> Option<(&str, Option<&str>)> {
    // OpenMetrics exemplars follow ` # `; they are not part of the sample.
    let rest = match rest.bytes().position(|b| b == b'#') {
        Some(at) if at > 0 && rest.as_bytes()[at - 1] == b' ' => &rest[..at - 1],
        _ => rest,
    };
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = fields.next()?;
    let timestamp = fields.next();
    if fields.next().is_some() {
        return None;
    }
    Some((value, timestamp))
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
        crate::shared::metric::escape_label_value(value, &mut out);
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
    /// Index into the (name, label suffix) table.
    column: u32,
    timestamp: Micros,
    value: Option<Value>,
}

/// What a label block says about a sample's series: its key and label suffix, or why none.
#[derive(Clone, Copy)]
enum Block {
    Keyed {
        key: u32,
        suffix: u32,
    },
    /// Keyed, but another shard keeps it.
    OtherShard,
    Unkeyed,
    BadKey,
    Malformed,
}

/// Interns strings to dense ids.
#[derive(Default)]
struct Interner {
    ids: FxHashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
}

impl Interner {
    fn id(&mut self, text: &str) -> u32 {
        if let Some(&id) = self.ids.get(text) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(text.into());
        self.ids.insert(text.into(), id);
        id
    }
}

/// Reads a whole answer into one batch (see the module docs).
///
/// Why the caches: an answer repeats each port's label block once per metric family (UFM:
/// 30 times), so a block is parsed, keyed and normalised once and looked up after that.
pub fn parse<R: BufRead>(
    mut reader: R,
    openmetrics: bool,
    freshness: Freshness,
    options: &SourceOptions,
) -> FeedBatch {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut keys = Interner::default();
    let mut suffixes = Interner::default();
    let mut names = Interner::default();
    let mut blocks: FxHashMap<Box<str>, Block> = FxHashMap::default();
    // (name id, suffix id) of each candidate column; per name id, its (suffix, column)s.
    let mut columns: Vec<(u32, u32)> = Vec::new();
    let mut columns_of_name: Vec<Vec<(u32, u32)>> = Vec::new();
    let mut kinds: Vec<MetricKind> = Vec::new();
    // Samples of a family come one after another: the last name's id saves a lookup.
    let mut last_name: (String, u32) = (String::new(), u32::MAX);
    let mut last_column: (u32, u32, u32) = (u32::MAX, u32::MAX, 0);
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
        let split = split_line(line).and_then(|(name, block, rest)| {
            value_and_timestamp(rest).map(|(value, ts)| (name, block, value, ts))
        });
        let Some((name, block, value, stamp)) = split else {
            batch.reject(RejectReason::Malformed, line_no, || {
                logging::quote(line).to_string()
            });
            continue;
        };
        if openmetrics && name.ends_with("_created") {
            continue;
        }
        let described = match blocks.get(block) {
            Some(&described) => described,
            None => {
                let described = describe_block(block, options, &mut keys, &mut suffixes);
                if blocks.len() < 4_000_000 {
                    blocks.insert(block.into(), described);
                }
                described
            }
        };
        let (key, suffix) = match described {
            Block::Keyed { key, suffix } => (key, suffix),
            Block::Unkeyed => {
                batch.unkeyed += 1;
                continue;
            }
            Block::OtherShard => {
                batch.other_shard += 1;
                continue;
            }
            Block::BadKey => {
                batch.reject(RejectReason::BadSwitchId, line_no, || {
                    logging::quote(block).to_string()
                });
                continue;
            }
            Block::Malformed => {
                batch.reject(RejectReason::Malformed, line_no, || {
                    logging::quote(line).to_string()
                });
                continue;
            }
        };
        let timestamp = match stamp {
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
        let name_id = if last_name.1 != u32::MAX && last_name.0 == name {
            last_name.1
        } else {
            let id = names.id(name);
            name.clone_into(&mut last_name.0);
            last_name.1 = id;
            id
        };
        if name_id as usize == kinds.len() {
            kinds.push(kind_for(name, &types, options));
            columns_of_name.push(Vec::new());
        }
        let value = match read_value(value, kinds[name_id as usize]) {
            Ok(value) => value,
            Err(reason) => {
                batch.reject(reason, line_no, || logging::quote(value).to_string());
                continue;
            }
        };
        if value.is_none() {
            batch.not_available += 1;
        }
        let column = match last_column {
            (name, s, column) if name == name_id && s == suffix => column,
            _ => {
                let variants = &mut columns_of_name[name_id as usize];
                let column = match variants.iter().find(|(s, _)| *s == suffix) {
                    Some(&(_, column)) => column,
                    None => {
                        let column = columns.len() as u32;
                        columns.push((name_id, suffix));
                        variants.push((suffix, column));
                        column
                    }
                };
                last_column = (name_id, suffix, column);
                column
            }
        };
        kept.push(Kept {
            key,
            column,
            timestamp,
            value,
        });
    }
    let tables = Tables {
        names: names.names,
        suffixes: suffixes.names,
        columns,
    };
    assemble(
        batch,
        &keys.names,
        &tables,
        kept,
        &types,
        freshness,
        options,
    )
}

/// The names, label suffixes and candidate columns an answer used.
struct Tables {
    names: Vec<Box<str>>,
    suffixes: Vec<Box<str>>,
    /// (name id, suffix id) per candidate column.
    columns: Vec<(u32, u32)>,
}

/// Parses a label block once: the series key it makes and the labels beyond the key.
fn describe_block(
    block: &str,
    options: &SourceOptions,
    keys: &mut Interner,
    suffixes: &mut Interner,
) -> Block {
    let labels = if block.is_empty() {
        Vec::new()
    } else {
        match parse_labels(block) {
            Some(labels) => labels,
            None => return Block::Malformed,
        }
    };
    match key_of(&labels, &options.key_labels) {
        None => Block::Unkeyed,
        Some((Err(()), _)) => Block::BadKey,
        Some((Ok(key), _)) if options.shard.is_some_and(|shard| !shard.owns(&key)) => {
            Block::OtherShard
        }
        Some((Ok(key), alternative)) => Block::Keyed {
            key: keys.id(&key),
            suffix: suffixes.id(&label_suffix(&labels, &options.key_labels[alternative])),
        },
    }
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
    keys: &[Box<str>],
    tables: &Tables,
    mut kept: Vec<Kept>,
    types: &HashMap<String, String>,
    freshness: Freshness,
    options: &SourceOptions,
) -> FeedBatch {
    // Key by key (in order of first appearance), oldest first, columns in answer order.
    kept.sort_unstable_by_key(|s| (s.key, s.timestamp, s.column));
    let columns = &tables.columns;
    // The batch column of each candidate column, bare or with its label suffix, made on
    // first use: a name keeps its suffix only where one key has it under several label sets.
    let mut bare: Vec<Option<u32>> = vec![None; columns.len()];
    let mut labelled: Vec<Option<u32>> = vec![None; columns.len()];
    let mut names: Vec<String> = Vec::new();
    let mut name_index: FxHashMap<String, u32> = FxHashMap::default();
    let mut finals: Vec<u32> = vec![0; kept.len()];
    let mut group: Vec<(u32, u32)> = Vec::new();
    let mut decided: Vec<(u32, u32)> = Vec::new();
    let mut start = 0;
    while start < kept.len() {
        let key = kept[start].key;
        let end = start + kept[start..].iter().take_while(|s| s.key == key).count();
        // (name id, candidate column) of the key's distinct columns.
        group.clear();
        group.extend(
            kept[start..end]
                .iter()
                .map(|s| (columns[s.column as usize].0, s.column)),
        );
        group.sort_unstable();
        group.dedup();
        decided.clear();
        for (i, &(name, column)) in group.iter().enumerate() {
            let split = (i > 0 && group[i - 1].0 == name)
                || group.get(i + 1).is_some_and(|next| next.0 == name);
            let slot = if split {
                &mut labelled[column as usize]
            } else {
                &mut bare[column as usize]
            };
            let final_column = *slot.get_or_insert_with(|| {
                let base = &tables.names[name as usize];
                let full = if split {
                    format!(
                        "{base}{}",
                        tables.suffixes[columns[column as usize].1 as usize]
                    )
                } else {
                    base.to_string()
                };
                let next = names.len() as u32;
                *name_index.entry(full).or_insert_with_key(|full| {
                    names.push(full.clone());
                    next
                })
            });
            decided.push((column, final_column));
        }
        decided.sort_unstable();
        for (sample, slot) in kept[start..end].iter().zip(&mut finals[start..end]) {
            if let Ok(at) = decided.binary_search_by_key(&sample.column, |d| d.0) {
                *slot = decided[at].1;
            }
        }
        start = end;
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
    out.other_shard = batch.other_shard;
    let mut row: Vec<Option<Value>> = vec![None; width];
    let mut i = 0;
    while i < kept.len() {
        let (key, timestamp) = (kept[i].key, kept[i].timestamp);
        row.iter_mut().for_each(|cell| *cell = None);
        let mut present = false;
        while i < kept.len() && kept[i].key == key && kept[i].timestamp == timestamp {
            if let Some(value) = kept[i].value {
                row[finals[i] as usize] = Some(value);
                present = true;
            }
            i += 1;
        }
        if !present {
            continue;
        }
        let id = &keys[key as usize];
        if let Err(reason) = freshness.check(timestamp) {
            let age = (freshness.now - timestamp) as f64 / 1e6;
            out.reject(reason, 0, || {
                format!("{} ({age:.3} s old)", logging::quote(id.as_bytes()))
            });
            continue;
        }
        out.push_cells(id, timestamp, &row);
    }
    out
}

#[cfg(test)]
mod tests;
