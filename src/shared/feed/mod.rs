//! Feeds: what a source answers, read into batches of rows (a series key, a timestamp, one
//! value per metric). Three formats, told apart per answer (see [`detect`]) unless the source
//! names its format (see [`Format`]):
//!
//! - **classic CSV**, the generator's own: `switch_id,bandwidth,latency,errors,timestamp`
//!   (RFC 3339 timestamps), written here too ([`write_header`], [`write_row`]);
//! - **UFM Telemetry CSV** (`/csv/metrics`, `/csv/xcset/<name>`): `node_guid`/`Node_GUID` and
//!   `port_num`/`Port_Number` make the key `0x<guid>:<port>` (see [`key`]), timestamps are
//!   integers since the epoch; identity columns (`source_id`, `tag`, `port_guid`, …) are not
//!   metrics;
//! - **Prometheus text** 0.0.4 and **OpenMetrics** (see [`prometheus`]).
//!
//! In CSV, columns are found by header name (trimmed) in any order; every other column is a
//! metric (see [`crate::shared::metric`]). Each row is validated on its own; a bad row is
//! rejected with a [`RejectReason`] and counted, and the rest of the feed is kept. A transport
//! error part-way through keeps the complete rows read before it.

mod csv_feed;
pub mod key;
pub mod prometheus;

pub use csv_feed::{parse_feed, write_header, write_row, write_uint, FeedParser, HEADER};

use std::fmt;

use crate::shared::logging;
use crate::shared::metric::{self, MetricKind, Value};
use crate::shared::timestamp::Micros;

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
    /// A Prometheus text line that is not a sample, comment or blank.
    Malformed,
    /// A new series key beyond the source's `--max-series`.
    TooManySeries,
}

impl RejectReason {
    pub const ALL: [RejectReason; 13] = [
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
        RejectReason::Malformed,
        RejectReason::TooManySeries,
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
            RejectReason::Malformed => "malformed",
            RejectReason::TooManySeries => "too_many_series",
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
    /// Cells of a UFM row that were not numbers: dropped, the row kept.
    pub bad_cells: u64,
    /// Prometheus samples whose labels make no series key (see `--key-labels`): an
    /// exporter's own metrics, typically. Not rows of the fabric; counted, not rejected.
    pub unkeyed: u64,
    /// Rows (Prometheus: samples) of series another shard keeps (`--shard`).
    pub other_shard: u64,
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

    pub(crate) fn push_id(&mut self, switch_id: &str, timestamp: Micros) {
        self.ids.push_str(switch_id);
        self.id_ends.push(self.ids.len());
        self.timestamps.push(timestamp);
    }

    /// Keeps only the rows `keep` says yes to (in order).
    pub fn retain_rows(&mut self, mut keep: impl FnMut(&str) -> bool) {
        let kept: Vec<bool> = (0..self.len())
            .map(|row| keep(self.switch_id(row)))
            .collect();
        // Every poll passes through here (the source's bounds): keeping every row, the usual
        // case, copies nothing.
        if kept.iter().all(|&k| k) {
            return;
        }
        let width = self.metrics.len();
        let mut out = FeedBatch::with_columns(
            std::mem::take(&mut self.metrics),
            std::mem::take(&mut self.kinds),
        );
        for (row, _) in kept.iter().enumerate().filter(|(_, &k)| k) {
            out.push_id(self.switch_id(row), self.timestamps[row]);
            out.values
                .extend_from_slice(&self.values[row * width..(row + 1) * width]);
        }
        self.ids = out.ids;
        self.id_ends = out.id_ends;
        self.timestamps = out.timestamps;
        self.values = out.values;
        self.metrics = out.metrics;
        self.kinds = out.kinds;
    }

    /// Drops the metric columns whose `keep` entry is false (`keep.len() == metrics.len()`);
    /// rows left with no value are dropped too.
    pub fn retain_columns(&mut self, keep: &[bool]) {
        let width = self.metrics.len();
        if keep.len() != width || keep.iter().all(|&k| k) {
            return;
        }
        let mut values = Vec::with_capacity(self.values.len());
        for row in self.values.chunks(width.max(1)) {
            values.extend(row.iter().zip(keep).filter(|(_, &k)| k).map(|(v, _)| *v));
        }
        let mut kept = keep.iter();
        self.metrics.retain(|_| kept.next() == Some(&true));
        let mut kept = keep.iter();
        self.kinds.retain(|_| kept.next() == Some(&true));
        self.values = values;
        let new_width = self.metrics.len();
        if new_width == 0 {
            *self = FeedBatch {
                rejected: std::mem::take(&mut self.rejected),
                examples: std::mem::take(&mut self.examples),
                error: self.error.take(),
                not_available: self.not_available,
                bad_cells: self.bad_cells,
                unkeyed: self.unkeyed,
                ..FeedBatch::default()
            };
            return;
        }
        let has_values: Vec<bool> = self
            .values
            .chunks(new_width)
            .map(|row| row.iter().any(Option::is_some))
            .collect();
        if has_values.iter().all(|&v| v) {
            return;
        }
        let mut rows = has_values.into_iter();
        self.retain_rows(|_| rows.next().unwrap_or(false));
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

    /// Counts `n` rows rejected for `reason` at once, with one example.
    pub fn reject_many(&mut self, reason: RejectReason, n: u64, detail: String) {
        if n == 0 {
            return;
        }
        if self.rejected.get(reason) == 0 {
            self.examples.push(RejectExample {
                reason,
                line: 0,
                detail,
            });
        }
        self.rejected.add(reason, n);
    }

    pub(crate) fn reject(
        &mut self,
        reason: RejectReason,
        line: u64,
        detail: impl FnOnce() -> String,
    ) {
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

/// The format a source's answers are read in. `Auto` (the default) tells them apart per
/// answer (see [`detect`]); a source can name its format with a URL fragment, which is never
/// sent: `http://ufm:9001/metrics#format=prometheus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Auto,
    /// `switch_id,...,timestamp` CSV.
    Classic,
    /// UFM Telemetry CSV.
    UfmCsv,
    /// Prometheus text exposition 0.0.4 (timestamps in milliseconds).
    Prometheus,
    /// OpenMetrics text (timestamps in seconds).
    OpenMetrics,
}

impl Format {
    pub const NAMES: [(&'static str, Format); 5] = [
        ("auto", Format::Auto),
        ("classic", Format::Classic),
        ("ufm-csv", Format::UfmCsv),
        ("prometheus", Format::Prometheus),
        ("openmetrics", Format::OpenMetrics),
    ];

    pub fn name(self) -> &'static str {
        Format::NAMES
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("auto", |(n, _)| n)
    }

    /// Splits a `--source` into the URL to fetch and the format its fragment names.
    pub fn split_source(source: &str) -> Result<(&str, Format), String> {
        let Some((url, fragment)) = source.split_once('#') else {
            return Ok((source, Format::Auto));
        };
        let name = fragment.strip_prefix("format=").ok_or_else(|| {
            format!("{source:?}: the only fragment a source takes is #format=NAME")
        })?;
        let format = Format::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, f)| f)
            .ok_or_else(|| {
                let names: Vec<&str> = Format::NAMES.iter().map(|(n, _)| *n).collect();
                format!(
                    "{source:?}: format {name:?} is not one of {}",
                    names.join(", ")
                )
            })?;
        Ok((url, format))
    }
}

/// Which reader an answer goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    /// Either CSV format (the header tells which).
    Csv,
    Prometheus,
    OpenMetrics,
}

/// The reader for an answer: the source's own format if it names one; else OpenMetrics or
/// Prometheus text by `Content-Type` (`application/openmetrics-text`, `text/plain;
/// version=0.0.4`), else by its first line: a `#` comment or a `name{` / `name value` sample
/// is Prometheus text, anything else CSV.
pub fn detect(format: Format, content_type: Option<&str>, head: &[u8]) -> Detected {
    match format {
        Format::Classic | Format::UfmCsv => return Detected::Csv,
        Format::Prometheus => return Detected::Prometheus,
        Format::OpenMetrics => return Detected::OpenMetrics,
        Format::Auto => {}
    }
    let content_type = content_type.unwrap_or("").to_ascii_lowercase();
    if content_type.starts_with("application/openmetrics-text") {
        return Detected::OpenMetrics;
    }
    if content_type.contains("version=0.0.4") {
        return Detected::Prometheus;
    }
    let first = head
        .split(|&b| b == b'\n')
        .map(|line| line.trim_ascii())
        .find(|line| !line.is_empty())
        .unwrap_or(b"");
    let name_end = first
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b':'))
        .unwrap_or(first.len());
    let sample_like = name_end > 0
        && !first[0].is_ascii_digit()
        && matches!(first.get(name_end), Some(b'{') | Some(b' ') | Some(b'\t'));
    if first.starts_with(b"#") || sample_like {
        Detected::Prometheus
    } else {
        Detected::Csv
    }
}

/// How a source's answers are read, beyond their format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceOptions {
    pub format: Format,
    /// Prometheus sources: the label sets that key a series, tried in order; the first whose
    /// labels a sample has all of makes its key (see [`prometheus`]).
    pub key_labels: Vec<Vec<String>>,
    /// Columns or metric names that are counters whatever their names say.
    pub counter_columns: Vec<String>,
    /// Keep only this shard's series (`--shard I/N`); rows of others are skipped before their
    /// values are read, and counted.
    pub shard: Option<key::Shard>,
}

/// The default `--key-labels`: UFM's, treydock's and guilbaults' exporters, node_exporter's.
pub const DEFAULT_KEY_LABELS: &str =
    "node_guid+port_num,guid+port,local_guid+local_port,device+port";

/// Parses `--key-labels`: alternatives separated by `,`, the labels of one by `+`.
pub fn parse_key_labels(text: &str) -> Result<Vec<Vec<String>>, String> {
    text.split(',')
        .map(|alternative| {
            let labels: Vec<String> = alternative
                .split('+')
                .map(|l| l.trim().to_string())
                .collect();
            let valid = labels.iter().all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            });
            if valid {
                Ok(labels)
            } else {
                Err(format!(
                    "{alternative:?} is not a label set like node_guid+port_num"
                ))
            }
        })
        .collect()
}

impl Default for SourceOptions {
    fn default() -> SourceOptions {
        SourceOptions {
            format: Format::Auto,
            key_labels: parse_key_labels(DEFAULT_KEY_LABELS).unwrap_or_default(),
            counter_columns: Vec::new(),
            shard: None,
        }
    }
}

impl SourceOptions {
    /// The kind of a metric of this source. `converted_data`: the source gives data counters
    /// in bytes even under their PMA names (UFM Telemetry).
    pub fn kind_of(&self, name: &str, converted_data: bool) -> MetricKind {
        let kind = if self.counter_columns.iter().any(|c| c == name) {
            MetricKind::Counter { words: false }
        } else {
            metric::kind_of(name)
        };
        match kind {
            MetricKind::Counter { .. } => MetricKind::Counter {
                words: metric::counts_data_words(name, converted_data),
            },
            other => other,
        }
    }
}

/// What one metric cell holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Cell {
    Value(Value),
    /// Empty: the row does not report this metric.
    Empty,
    /// `N/A`, `-1` or a sentinel in a counter column: the source has no sample for it.
    NotAvailable,
}

/// Parses one metric cell of a metric of `kind`.
pub(crate) fn parse_value(raw: &[u8], kind: MetricKind) -> Result<Cell, RejectReason> {
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

/// An answer being read, in whichever format it came: CSV streams in batches as it arrives;
/// Prometheus text is read whole (a port's samples are spread over all of it).
pub enum FeedReader<R: std::io::BufRead> {
    Csv(FeedParser<R>),
    Whole(Option<FeedBatch>, &'static str),
}

impl<R: std::io::BufRead> FeedReader<R> {
    /// Starts reading an answer: detects its format (see [`detect`]) from the source's
    /// options, the answer's `Content-Type` and its first bytes.
    pub fn new(
        mut reader: R,
        content_type: Option<&str>,
        freshness: Freshness,
        options: &SourceOptions,
    ) -> Result<FeedReader<R>, FeedError> {
        let head = reader
            .fill_buf()
            .map_err(|e| FeedError::Read(logging::escape(&e.to_string()).to_string()))?;
        match detect(options.format, content_type, head) {
            Detected::Csv => {
                FeedParser::with_options(reader, freshness, options).map(FeedReader::Csv)
            }
            Detected::Prometheus => Ok(FeedReader::Whole(
                Some(prometheus::parse(reader, false, freshness, options)),
                Format::Prometheus.name(),
            )),
            Detected::OpenMetrics => Ok(FeedReader::Whole(
                Some(prometheus::parse(reader, true, freshness, options)),
                Format::OpenMetrics.name(),
            )),
        }
    }

    /// The format the answer is read in: `classic`, `ufm-csv`, `prometheus`, `openmetrics`.
    pub fn format_name(&self) -> &'static str {
        match self {
            FeedReader::Csv(parser) => parser.format_name(),
            FeedReader::Whole(_, format) => format,
        }
    }

    /// The next batch of up to about `max_rows` rows, `None` at the end.
    pub fn next_batch(&mut self, max_rows: usize) -> Option<FeedBatch> {
        match self {
            FeedReader::Csv(parser) => parser.next_batch(max_rows),
            FeedReader::Whole(batch, _) => batch.take(),
        }
    }
}

/// Reads a whole answer in any format into one batch (tests and tools).
pub fn parse_answer(
    text: &[u8],
    content_type: Option<&str>,
    freshness: Freshness,
    options: &SourceOptions,
) -> FeedBatch {
    match FeedReader::new(text, content_type, freshness, options) {
        Err(e) => FeedBatch {
            error: Some(e),
            ..FeedBatch::default()
        },
        Ok(mut reader) => {
            let mut all = reader.next_batch(usize::MAX).unwrap_or_default();
            while let Some(more) = reader.next_batch(usize::MAX) {
                all.rejected.merge(&more.rejected);
            }
            all
        }
    }
}

#[cfg(test)]
mod tests;
