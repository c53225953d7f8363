//! The counter feed's CSV format, both ways: the generator writes it, the poller reads it.
//!
//! Writing: `switch_id,bandwidth,latency,errors,timestamp`, one row per switch.
//! Reading: columns are found by header name in any order; every column other than `switch_id`
//! and `timestamp` is a metric (see [`crate::shared::metric`]). Each row is validated on its own; a bad
//! row is rejected with a [`RejectReason`] and counted, and the rest of the feed is kept. A
//! transport error part-way through keeps the complete rows read before it.

use std::fmt;
use std::io::Read;

use crate::shared::logging;
use crate::shared::metric::{self, MetricKind, Value};
use crate::shared::timestamp::{self, Micros};

/// The header the generator writes.
pub const HEADER: &str = "switch_id,bandwidth,latency,errors,timestamp";
pub const SWITCH_ID_COLUMN: &str = "switch_id";
pub const TIMESTAMP_COLUMN: &str = "timestamp";

/// Longest accepted switch id, in bytes.
pub const MAX_SWITCH_ID_LEN: usize = 256;

/// Why a row was not stored. The store adds the last two; the parser finds the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The row has fewer or more fields than the header.
    FieldCount,
    /// Empty, over-long, non-UTF-8 or control characters in `switch_id`.
    BadSwitchId,
    /// A metric value that is not a number.
    BadNumber,
    /// NaN or infinity.
    NotFinite,
    /// A count metric (errors) that is negative or not an integer, or a counter that is not
    /// an unsigned 64-bit integer (decimal or `0x` hex).
    BadCount,
    /// The row carries no metric value at all.
    NoValues,
    /// A timestamp that is not RFC 3339 with an offset.
    BadTimestamp,
    /// Older than `--max-age` when it arrived.
    Stale,
    /// More than `--max-age` ahead of this host's clock.
    Future,
    /// A sample for this (switch, timestamp) is already stored.
    Duplicate,
    /// Older than the newest sample already stored for the switch.
    OutOfOrder,
}

impl RejectReason {
    pub const ALL: [RejectReason; 11] = [
        RejectReason::FieldCount,
        RejectReason::BadSwitchId,
        RejectReason::BadNumber,
        RejectReason::NotFinite,
        RejectReason::BadCount,
        RejectReason::NoValues,
        RejectReason::BadTimestamp,
        RejectReason::Stale,
        RejectReason::Future,
        RejectReason::Duplicate,
        RejectReason::OutOfOrder,
    ];

    /// Stable snake_case name, used in `/telemetry/stats` and logs.
    pub fn name(self) -> &'static str {
        match self {
            RejectReason::FieldCount => "field_count",
            RejectReason::BadSwitchId => "bad_switch_id",
            RejectReason::BadNumber => "bad_number",
            RejectReason::NotFinite => "not_finite",
            RejectReason::BadCount => "bad_count",
            RejectReason::NoValues => "no_values",
            RejectReason::BadTimestamp => "bad_timestamp",
            RejectReason::Stale => "stale",
            RejectReason::Future => "future",
            RejectReason::Duplicate => "duplicate",
            RejectReason::OutOfOrder => "out_of_order",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Rejected rows by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RejectCounts([u64; RejectReason::ALL.len()]);

impl RejectCounts {
    pub fn add(&mut self, reason: RejectReason, n: u64) {
        self.0[reason.index()] += n;
    }

    pub fn merge(&mut self, other: &RejectCounts) {
        for (mine, theirs) in self.0.iter_mut().zip(&other.0) {
            *mine += theirs;
        }
    }

    pub fn get(&self, reason: RejectReason) -> u64 {
        self.0[reason.index()]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Non-zero counts, for logging.
    pub fn nonzero(&self) -> impl Iterator<Item = (RejectReason, u64)> + '_ {
        RejectReason::ALL
            .iter()
            .map(|&r| (r, self.get(r)))
            .filter(|&(_, n)| n > 0)
    }
}

/// A feed that could not be read as a whole, or stopped part-way. The text is safe to log:
/// feed text in it went through [`logging::quote`], other errors through [`logging::escape`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedError {
    /// No header, or one without `switch_id`/`timestamp`, or a repeated column.
    BadHeader(String),
    /// The body stopped early (connection dropped, timeout, size cap).
    Read(String),
}

impl fmt::Display for FeedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeedError::BadHeader(why) => write!(f, "bad feed header: {why}"),
            FeedError::Read(why) => write!(f, "feed body cut short: {why}"),
        }
    }
}

impl std::error::Error for FeedError {}

/// The freshness window a row must fall in when it arrives.
#[derive(Debug, Clone, Copy)]
pub struct Freshness {
    pub now: Micros,
    pub max_age: Micros,
}

impl Freshness {
    fn check(&self, ts: Micros) -> Result<(), RejectReason> {
        if ts < self.now.saturating_sub(self.max_age) {
            Err(RejectReason::Stale)
        } else if ts > self.now.saturating_add(self.max_age) {
            Err(RejectReason::Future)
        } else {
            Ok(())
        }
    }
}

/// The first rejected row of each reason, for the log.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectExample {
    pub reason: RejectReason,
    /// 1-based record number in the feed, header included.
    pub line: u64,
    /// What was wrong, safe to log: feed text in it went through [`logging::quote`].
    pub detail: String,
}

/// What one read of the feed produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeedBatch {
    /// Metric columns, in header order.
    pub metrics: Vec<String>,
    /// The kind of each metric column, as the source declared or its name implies.
    pub kinds: Vec<MetricKind>,
    /// Switch ids of the accepted rows, back to back (no allocation per row); row `i` is
    /// `ids[id_ends[i-1]..id_ends[i]]`.
    ids: String,
    id_ends: Vec<usize>,
    timestamps: Vec<Micros>,
    /// Row-major, `metrics.len()` per row; `None` is an empty cell (a metric the row lacks).
    pub values: Vec<Option<Value>>,
    pub rejected: RejectCounts,
    /// Cells that said "no sample" (`N/A`, `-1` or a sentinel in a counter column): the
    /// metric is absent from that row, the row is kept.
    pub not_available: u64,
    pub examples: Vec<RejectExample>,
    /// Set when the header was unusable (no rows) or the body stopped early (rows kept).
    pub error: Option<FeedError>,
}

impl FeedBatch {
    /// A batch with these metric columns and no rows (tests and tools build on it).
    pub fn with_metrics(metrics: &[&str]) -> FeedBatch {
        FeedBatch {
            metrics: metrics.iter().map(|m| m.to_string()).collect(),
            kinds: metrics.iter().map(|m| metric::kind_of(m)).collect(),
            ..FeedBatch::default()
        }
    }

    /// A batch with these metric columns of these kinds and no rows.
    pub fn with_columns(metrics: Vec<String>, kinds: Vec<MetricKind>) -> FeedBatch {
        debug_assert_eq!(metrics.len(), kinds.len());
        FeedBatch {
            metrics,
            kinds,
            ..FeedBatch::default()
        }
    }

    /// Appends an accepted row of gauge values, NaN meaning absent (tests and tools).
    pub fn push_row(&mut self, switch_id: &str, timestamp: Micros, values: &[f64]) {
        debug_assert_eq!(values.len(), self.metrics.len());
        self.push_id(switch_id, timestamp);
        self.values.extend(values.iter().map(|&v| Value::cell(v)));
    }

    /// Appends an accepted row (`values.len() == metrics.len()`).
    pub fn push_cells(&mut self, switch_id: &str, timestamp: Micros, values: &[Option<Value>]) {
        debug_assert_eq!(values.len(), self.metrics.len());
        self.push_id(switch_id, timestamp);
        self.values.extend_from_slice(values);
    }

    fn push_id(&mut self, switch_id: &str, timestamp: Micros) {
        self.ids.push_str(switch_id);
        self.id_ends.push(self.ids.len());
        self.timestamps.push(timestamp);
    }

    /// Accepted rows.
    pub fn len(&self) -> usize {
        self.timestamps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.timestamps.is_empty()
    }

    pub fn switch_id(&self, row_idx: usize) -> &str {
        let start = if row_idx == 0 {
            0
        } else {
            self.id_ends[row_idx - 1]
        };
        &self.ids[start..self.id_ends[row_idx]]
    }

    pub fn timestamp(&self, row_idx: usize) -> Micros {
        self.timestamps[row_idx]
    }

    /// The values of row `row_idx`, one per metric.
    pub fn row_values(&self, row_idx: usize) -> &[Option<Value>] {
        let width = self.metrics.len();
        &self.values[row_idx * width..(row_idx + 1) * width]
    }

    fn reject(&mut self, reason: RejectReason, line: u64, detail: impl FnOnce() -> String) {
        if self.rejected.get(reason) == 0 {
            self.examples.push(RejectExample {
                reason,
                line,
                detail: detail(),
            });
        }
        self.rejected.add(reason, 1);
    }
}

/// Where each column of the header goes.
struct Layout {
    switch_id: usize,
    timestamp: usize,
    /// (column index, kind), one per metric, in header order.
    metrics: Vec<(usize, MetricKind)>,
    n_columns: usize,
}

fn layout_from_header(header: &csv::ByteRecord) -> Result<(Layout, Vec<String>), String> {
    let mut switch_id = None;
    let mut timestamp = None;
    let mut metrics = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for (idx, raw) in header.iter().enumerate() {
        let name = std::str::from_utf8(raw)
            .map_err(|_| format!("column {} is not UTF-8: {}", idx + 1, logging::quote(raw)))?
            .trim_start_matches('\u{feff}')
            .to_string();
        if name.is_empty() {
            return Err(format!("column {} has no name", idx + 1));
        }
        let seen = names.contains(&name)
            || (name == SWITCH_ID_COLUMN && switch_id.is_some())
            || (name == TIMESTAMP_COLUMN && timestamp.is_some());
        if seen {
            return Err(format!("column {} appears twice", logging::quote(&name)));
        }
        match name.as_str() {
            SWITCH_ID_COLUMN => switch_id = Some(idx),
            TIMESTAMP_COLUMN => timestamp = Some(idx),
            _ => {
                metrics.push((idx, metric::kind_of(&name)));
                names.push(name);
            }
        }
    }
    let switch_id = switch_id.ok_or("no switch_id column")?;
    let timestamp = timestamp.ok_or("no timestamp column")?;
    if metrics.is_empty() {
        return Err("no metric columns".to_string());
    }
    let layout = Layout {
        switch_id,
        timestamp,
        metrics,
        n_columns: header.len(),
    };
    Ok((layout, names))
}

fn parse_switch_id(raw: &[u8]) -> Option<&str> {
    let id = std::str::from_utf8(raw).ok()?;
    let valid =
        !id.is_empty() && id.len() <= MAX_SWITCH_ID_LEN && !id.chars().any(char::is_control);
    valid.then_some(id)
}

/// What one metric cell holds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Cell {
    Value(Value),
    /// Empty: the row does not report this metric.
    Empty,
    /// `N/A`, `-1` or a sentinel in a counter column: the source has no sample for it.
    NotAvailable,
}

/// Parses one metric cell of a metric of `kind`.
fn parse_value(raw: &[u8], kind: MetricKind) -> Result<Cell, RejectReason> {
    if raw.is_empty() {
        return Ok(Cell::Empty);
    }
    let text = std::str::from_utf8(raw).map_err(|_| RejectReason::BadNumber)?;
    if kind.is_counter() {
        return parse_counter(text);
    }
    let value: f64 = text.parse().map_err(|_| RejectReason::BadNumber)?;
    if !value.is_finite() {
        return Err(RejectReason::NotFinite);
    }
    match kind {
        MetricKind::Count => {
            let whole = value >= 0.0 && value.fract() == 0.0 && value <= metric::MAX_COUNT;
            // `-0` parses as 0.0; a count written with a sign is still not a count.
            if whole && !text.starts_with('-') {
                Ok(Cell::Value(Value::Float(value)))
            } else {
                Err(RejectReason::BadCount)
            }
        }
        _ => Ok(Cell::Value(Value::Float(value))),
    }
}

/// A counter cell: an unsigned 64-bit integer in decimal or `0x` hex, exactly; a whole,
/// non-negative number in float notation (`1.8527668e+07`, as node_exporter prints counters)
/// as the integer it names. `N/A`, `-1` and [`metric::NOT_AVAILABLE_SENTINEL`] say "no sample".
fn parse_counter(text: &str) -> Result<Cell, RejectReason> {
    if text.eq_ignore_ascii_case("n/a") || text == "-1" {
        return Ok(Cell::NotAvailable);
    }
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).map_err(|_| RejectReason::BadCount)?,
        None if text.bytes().all(|b| b.is_ascii_digit()) => {
            text.parse::<u64>().map_err(|_| RejectReason::BadCount)?
        }
        None => {
            let value: f64 = text.parse().map_err(|_| RejectReason::BadNumber)?;
            // 2^64 itself is the first f64 that does not fit.
            let whole =
                value >= 0.0 && value.fract() == 0.0 && value < 18_446_744_073_709_551_616.0;
            if !whole || text.starts_with('-') {
                return Err(RejectReason::BadCount);
            }
            value as u64
        }
    };
    if parsed == metric::NOT_AVAILABLE_SENTINEL {
        return Ok(Cell::NotAvailable);
    }
    Ok(Cell::Value(Value::Int(parsed)))
}

/// A raw field for a reject example: quoted, escaped and cut (see [`logging::quote`]).
fn show(raw: &[u8]) -> String {
    logging::quote(raw).to_string()
}

/// Reads a feed as it streams in: the header first, then accepted rows in batches, so a
/// large feed can be stored while the rest of it is still arriving and being parsed.
pub struct FeedParser<R: Read> {
    csv: csv::Reader<R>,
    layout: Layout,
    metrics: Vec<String>,
    freshness: Freshness,
    record: csv::ByteRecord,
    line: u64,
    /// One timestamp string per tick is the common case: parse each distinct one once.
    last_ts: Option<(Vec<u8>, Result<Micros, ()>)>,
    done: bool,
}

impl<R: Read> FeedParser<R> {
    /// Reads the header; an unusable one is an error for the whole feed.
    pub fn new(reader: R, freshness: Freshness) -> Result<FeedParser<R>, FeedError> {
        let mut csv = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(reader);
        let (layout, metrics) = match csv.byte_headers() {
            Ok(header) if header.is_empty() => {
                return Err(FeedError::BadHeader("empty feed".to_string()))
            }
            Ok(header) => layout_from_header(header).map_err(FeedError::BadHeader)?,
            Err(e) => return Err(FeedError::Read(logging::escape(&e.to_string()).to_string())),
        };
        Ok(FeedParser {
            csv,
            layout,
            metrics,
            freshness,
            record: csv::ByteRecord::new(),
            line: 1,
            last_ts: None,
            done: false,
        })
    }

    /// The next up to `max_rows` accepted rows (with the rows rejected on the way), or
    /// `None` once the feed is exhausted. A read error ends the feed and is set on the batch.
    pub fn next_batch(&mut self, max_rows: usize) -> Option<FeedBatch> {
        if self.done {
            return None;
        }
        let mut batch = FeedBatch::with_columns(
            self.metrics.clone(),
            self.layout.metrics.iter().map(|&(_, kind)| kind).collect(),
        );
        while batch.len() < max_rows {
            match self.csv.read_byte_record(&mut self.record) {
                Ok(true) => self.accept_or_reject(&mut batch),
                Ok(false) => {
                    self.done = true;
                    break;
                }
                Err(e) => {
                    batch.error =
                        Some(FeedError::Read(logging::escape(&e.to_string()).to_string()));
                    self.done = true;
                    break;
                }
            }
        }
        let said_something =
            !batch.is_empty() || batch.rejected.total() > 0 || batch.error.is_some();
        said_something.then_some(batch)
    }

    fn accept_or_reject(&mut self, batch: &mut FeedBatch) {
        self.line += 1;
        let line = self.line;
        let layout = &self.layout;
        let freshness = self.freshness;
        let record = &self.record;
        if record.len() != layout.n_columns {
            let n = record.len();
            batch.reject(RejectReason::FieldCount, line, || {
                format!("{n} fields, header has {}", layout.n_columns)
            });
            return;
        }
        let Some(switch_id) = parse_switch_id(&record[layout.switch_id]) else {
            let raw = &record[layout.switch_id];
            batch.reject(RejectReason::BadSwitchId, line, || show(raw));
            return;
        };
        let raw_ts = &record[layout.timestamp];
        let parsed_ts = match &self.last_ts {
            Some((text, parsed)) if text.as_slice() == raw_ts => *parsed,
            _ => {
                let parsed = std::str::from_utf8(raw_ts)
                    .map_err(|_| ())
                    .and_then(|t| timestamp::parse_rfc3339(t).map_err(|_| ()));
                self.last_ts = Some((raw_ts.to_vec(), parsed));
                parsed
            }
        };
        let Ok(ts) = parsed_ts else {
            batch.reject(RejectReason::BadTimestamp, line, || show(raw_ts));
            return;
        };
        if let Err(reason) = freshness.check(ts) {
            let age_s = (freshness.now - ts) as f64 / 1e6;
            batch.reject(reason, line, || {
                format!("{} ({age_s:.3} s old)", show(raw_ts))
            });
            return;
        }
        let start = batch.values.len();
        let mut failure = None;
        let mut not_available = 0;
        for (metric_idx, &(column, kind)) in layout.metrics.iter().enumerate() {
            match parse_value(&record[column], kind) {
                Ok(Cell::Value(v)) => batch.values.push(Some(v)),
                Ok(Cell::Empty) => batch.values.push(None),
                Ok(Cell::NotAvailable) => {
                    not_available += 1;
                    batch.values.push(None);
                }
                Err(reason) => {
                    failure = Some((reason, metric_idx, column));
                    break;
                }
            }
        }
        if failure.is_none() && batch.values[start..].iter().all(Option::is_none) {
            failure = Some((RejectReason::NoValues, 0, layout.timestamp));
        }
        if let Some((reason, metric_idx, column)) = failure {
            batch.values.truncate(start);
            // The parser's own copy of the names: the detail is built only for the first
            // reject of a reason, without copying the field or name for every other one.
            let name = self.metrics.get(metric_idx).map_or("", String::as_str);
            let raw = &record[column];
            batch.reject(reason, line, || {
                format!("{}={}", logging::quote(name), show(raw))
            });
            return;
        }
        batch.not_available += not_available;
        batch.push_id(switch_id, ts);
    }
}

/// Reads a whole feed from `reader` into one batch, validating every row against `freshness`.
pub fn parse_feed<R: Read>(reader: R, freshness: Freshness) -> FeedBatch {
    match FeedParser::new(reader, freshness) {
        Err(e) => FeedBatch {
            error: Some(e),
            ..FeedBatch::default()
        },
        Ok(mut parser) => {
            let metrics = parser.metrics.clone();
            let kinds = parser
                .layout
                .metrics
                .iter()
                .map(|&(_, kind)| kind)
                .collect();
            parser
                .next_batch(usize::MAX)
                .unwrap_or_else(|| FeedBatch::with_columns(metrics, kinds))
        }
    }
}

/// Appends the header line.
pub fn write_header(out: &mut Vec<u8>) {
    out.extend_from_slice(HEADER.as_bytes());
    out.push(b'\n');
}

/// Appends one row in the generator's format. Bandwidth and latency are given in hundredths
/// (the generator's fixed-point state), written with one or two decimals.
pub fn write_row(
    out: &mut Vec<u8>,
    switch_id: &str,
    bandwidth_centi: u32,
    latency_centi: u32,
    errors: u64,
    timestamp: &[u8; timestamp::CANONICAL_LEN],
) {
    out.extend_from_slice(switch_id.as_bytes());
    out.push(b',');
    write_centi(out, bandwidth_centi);
    out.push(b',');
    write_centi(out, latency_centi);
    out.push(b',');
    write_uint(out, errors);
    out.push(b',');
    out.extend_from_slice(timestamp);
    out.push(b'\n');
}

/// `5560` → `55.6`, `5507` → `55.07`, `5500` → `55.0`.
fn write_centi(out: &mut Vec<u8>, centi: u32) {
    write_uint(out, u64::from(centi / 100));
    out.push(b'.');
    let cents = centi % 100;
    out.push(b'0' + (cents / 10) as u8);
    if cents % 10 != 0 {
        out.push(b'0' + (cents % 10) as u8);
    }
}

fn write_uint(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests;
