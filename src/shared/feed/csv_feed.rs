//! CSV feeds: the classic format (`switch_id`, RFC 3339 `timestamp`) and UFM Telemetry's
//! (`node_guid` + `port_num` keys, epoch timestamps), told apart by their header.

use std::io::Read;

use super::{
    key, Cell, FeedBatch, FeedError, Format, Freshness, RejectReason, SourceOptions,
    MAX_SWITCH_ID_LEN, SWITCH_ID_COLUMN, TIMESTAMP_COLUMN,
};
use crate::shared::logging;
use crate::shared::metric::MetricKind;
use crate::shared::timestamp::{self, Micros};

/// The header the generator writes.
pub const HEADER: &str = "switch_id,bandwidth,latency,errors,timestamp";

/// UFM Telemetry columns that identify a row rather than measure anything (matched ignoring
/// case): never metrics, whatever their values look like.
const UFM_IDENTITY_COLUMNS: [&str; 10] = [
    "timestamp",
    "source_id",
    "tag",
    "node_guid",
    "port_guid",
    "port_num",
    "port_number",
    "node_description",
    "port_label",
    "device_id",
];

/// What makes a row's series key.
enum KeyColumns {
    /// The classic `switch_id`.
    Switch(usize),
    /// UFM's node GUID and port number.
    Port { guid: usize, port: usize },
}

/// Where a row's time comes from.
#[derive(Clone, Copy)]
enum TimeColumn {
    /// RFC 3339 text (classic).
    Rfc3339(usize),
    /// An integer count since the epoch; its unit by its magnitude (UFM: microseconds).
    Epoch(usize),
    /// None: the time of the poll.
    PollTime,
}

/// Where each column of the header goes.
struct Layout {
    key: KeyColumns,
    time: TimeColumn,
    /// (column index, kind), one per metric, in header order.
    metrics: Vec<(usize, MetricKind)>,
    n_columns: usize,
    /// UFM rows carry dozens of columns: a cell that is not a number is dropped and counted
    /// (`FeedBatch::bad_cells`) instead of rejecting the port's whole row.
    lenient: bool,
}

fn find(names: &[String], wanted: &[&str]) -> Option<usize> {
    names
        .iter()
        .position(|n| wanted.iter().any(|w| n.eq_ignore_ascii_case(w)))
}

fn layout_from_header(
    header: &csv::ByteRecord,
    options: &SourceOptions,
) -> Result<(Layout, Vec<String>), String> {
    let mut names: Vec<String> = Vec::with_capacity(header.len());
    for (idx, raw) in header.iter().enumerate() {
        let name = std::str::from_utf8(raw)
            .map_err(|_| format!("column {} is not UTF-8: {}", idx + 1, logging::quote(raw)))?
            .trim_start_matches('\u{feff}')
            .trim()
            .to_string();
        if name.is_empty() {
            return Err(format!("column {} has no name", idx + 1));
        }
        if names.contains(&name) {
            return Err(format!("column {} appears twice", logging::quote(&name)));
        }
        names.push(name);
    }
    let switch_id = names.iter().position(|n| n == SWITCH_ID_COLUMN);
    let ufm_key = find(&names, &["node_guid"]).zip(find(&names, &["port_num", "port_number"]));
    let ufm = match (options.format, switch_id, ufm_key) {
        (Format::UfmCsv, _, None) => {
            return Err("no node_guid and port_num columns (UFM Telemetry CSV)".to_string())
        }
        (Format::UfmCsv, _, Some(_)) | (Format::Auto, None, Some(_)) => true,
        (_, Some(_), _) => false,
        (_, None, _) => {
            return Err(
                "no switch_id column (nor node_guid and port_num of UFM Telemetry)".to_string(),
            )
        }
    };
    let mut metrics = Vec::new();
    let mut metric_names = Vec::new();
    let layout = if ufm {
        let Some((guid, port)) = ufm_key else {
            return Err("no node_guid and port_num columns".to_string());
        };
        for (idx, name) in names.iter().enumerate() {
            if !UFM_IDENTITY_COLUMNS
                .iter()
                .any(|id| name.eq_ignore_ascii_case(id))
            {
                metrics.push((idx, options.kind_of(name, true)));
                metric_names.push(name.clone());
            }
        }
        Layout {
            key: KeyColumns::Port { guid, port },
            time: find(&names, &["timestamp"]).map_or(TimeColumn::PollTime, TimeColumn::Epoch),
            metrics,
            n_columns: header.len(),
            lenient: true,
        }
    } else {
        let timestamp = names
            .iter()
            .position(|n| n == TIMESTAMP_COLUMN)
            .ok_or("no timestamp column")?;
        for (idx, name) in names.iter().enumerate() {
            if name != SWITCH_ID_COLUMN && name != TIMESTAMP_COLUMN {
                metrics.push((idx, options.kind_of(name, false)));
                metric_names.push(name.clone());
            }
        }
        Layout {
            key: KeyColumns::Switch(switch_id.unwrap_or_default()),
            time: TimeColumn::Rfc3339(timestamp),
            metrics,
            n_columns: header.len(),
            lenient: false,
        }
    };
    if layout.metrics.is_empty() {
        return Err("no metric columns".to_string());
    }
    Ok((layout, metric_names))
}

fn parse_switch_id(raw: &[u8]) -> Option<&str> {
    let id = std::str::from_utf8(raw).ok()?;
    let valid =
        !id.is_empty() && id.len() <= MAX_SWITCH_ID_LEN && !id.chars().any(char::is_control);
    valid.then_some(id)
}

/// An integer time since the epoch, in seconds, milliseconds, microseconds or nanoseconds by
/// its magnitude (any of them for a date between 1973 and 5138): UFM writes microseconds,
/// other tools their own unit.
pub(super) fn parse_epoch(text: &str) -> Option<Micros> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = text.parse().ok()?;
    Some(match n {
        n if n >= 100_000_000_000_000_000 => n / 1_000,
        n if n >= 100_000_000_000_000 => n,
        n if n >= 100_000_000_000 => n.checked_mul(1_000)?,
        n => n.checked_mul(1_000_000)?,
    })
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
    shard: Option<key::Shard>,
    record: csv::ByteRecord,
    line: u64,
    /// One timestamp string per tick is the common case: parse each distinct one once.
    last_ts: Option<(Vec<u8>, Result<Micros, ()>)>,
    done: bool,
}

impl<R: Read> FeedParser<R> {
    /// Reads the header of a feed in any CSV format; an unusable one is an error for the
    /// whole feed.
    pub fn new(reader: R, freshness: Freshness) -> Result<FeedParser<R>, FeedError> {
        FeedParser::with_options(reader, freshness, &SourceOptions::default())
    }

    /// [`FeedParser::new`] for a source with its own options.
    pub fn with_options(
        reader: R,
        freshness: Freshness,
        options: &SourceOptions,
    ) -> Result<FeedParser<R>, FeedError> {
        let mut csv = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(reader);
        let (layout, metrics) = match csv.byte_headers() {
            Ok(header) if header.is_empty() => {
                return Err(FeedError::BadHeader("empty feed".to_string()))
            }
            Ok(header) => layout_from_header(header, options).map_err(FeedError::BadHeader)?,
            Err(e) => return Err(FeedError::Read(logging::escape(&e.to_string()).to_string())),
        };
        Ok(FeedParser {
            csv,
            layout,
            metrics,
            freshness,
            shard: options.shard,
            record: csv::ByteRecord::new(),
            line: 1,
            last_ts: None,
            done: false,
        })
    }

    /// `classic` or `ufm-csv`, by the header.
    pub fn format_name(&self) -> &'static str {
        match self.layout.key {
            KeyColumns::Switch(_) => Format::Classic.name(),
            KeyColumns::Port { .. } => Format::UfmCsv.name(),
        }
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
        let port_key;
        let switch_id = match layout.key {
            KeyColumns::Switch(column) => parse_switch_id(&record[column]),
            KeyColumns::Port { guid, port } => {
                port_key = std::str::from_utf8(&record[guid])
                    .ok()
                    .zip(std::str::from_utf8(&record[port]).ok())
                    .and_then(|(guid, port)| key::port_key(guid, port));
                port_key.as_deref()
            }
        };
        if let (Some(shard), Some(id)) = (self.shard, switch_id) {
            if !shard.owns(id) {
                batch.other_shard += 1;
                return;
            }
        }
        let Some(switch_id) = switch_id else {
            let shown = match layout.key {
                KeyColumns::Switch(column) => show(&record[column]),
                KeyColumns::Port { guid, port } => {
                    format!("{}:{}", show(&record[guid]), show(&record[port]))
                }
            };
            batch.reject(RejectReason::BadSwitchId, line, || shown);
            return;
        };
        type ParseTime = fn(&str) -> Option<Micros>;
        let (raw_ts, parse): (&[u8], ParseTime) = match layout.time {
            TimeColumn::Rfc3339(column) => (&record[column], |t| timestamp::parse_rfc3339(t).ok()),
            TimeColumn::Epoch(column) => (&record[column], parse_epoch),
            TimeColumn::PollTime => (b"", |_| None),
        };
        let parsed_ts = match (&self.last_ts, layout.time) {
            (_, TimeColumn::PollTime) => Ok(freshness.now),
            (Some((text, parsed)), _) if text.as_slice() == raw_ts => *parsed,
            _ => {
                let parsed = std::str::from_utf8(raw_ts).ok().and_then(parse).ok_or(());
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
        let (mut not_available, mut bad_cells) = (0, 0);
        for (metric_idx, &(column, kind)) in layout.metrics.iter().enumerate() {
            match super::parse_value(&record[column], kind) {
                Ok(Cell::Value(v)) => batch.values.push(Some(v)),
                // An empty counter cell is a port without that sample: counted as one.
                Ok(Cell::Empty) if kind.is_counter() => {
                    not_available += 1;
                    batch.values.push(None);
                }
                Ok(Cell::Empty) => batch.values.push(None),
                Ok(Cell::NotAvailable) => {
                    not_available += 1;
                    batch.values.push(None);
                }
                Err(_) if layout.lenient => {
                    bad_cells += 1;
                    batch.values.push(None);
                }
                Err(reason) => {
                    failure = Some((reason, metric_idx, column));
                    break;
                }
            }
        }
        if failure.is_none() && batch.values[start..].iter().all(Option::is_none) {
            let time_column = match layout.time {
                TimeColumn::Rfc3339(column) | TimeColumn::Epoch(column) => column,
                TimeColumn::PollTime => 0,
            };
            failure = Some((RejectReason::NoValues, 0, time_column));
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
        batch.bad_cells += bad_cells;
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

/// Appends `value` in decimal.
pub fn write_uint(out: &mut Vec<u8>, mut value: u64) {
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
