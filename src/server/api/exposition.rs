//! `GET /metrics`: fresh telemetry and the server's own health in the Prometheus text
//! exposition format (0.0.4), or OpenMetrics 1.0 when the scraper's `Accept` asks for it.
//!
//! Telemetry: `fabric_switch_bandwidth_gbps` (as the API gives it), `fabric_switch_latency_seconds`
//! (the API's milliseconds / 1000: Prometheus wants base units), `fabric_switch_interval_errors`
//! (errors in the feed's last interval), and `fabric_switch_errors_total` (a counter: every
//! error stored since the server started, for `rate()`). Other feed columns become
//! `fabric_switch_<name>`. Stale series (newest sample older than `--max-age`) are left out.

use std::fmt::Write;

use crate::server::names::Names;
use crate::server::stats::{ApiStats, IngestStats, DURATION_BUCKETS_S};
use crate::server::store::Store;
use crate::shared::feed::RejectReason;
use crate::shared::http::HttpCounters;
use std::sync::Arc;

use crate::shared::metric::{self, Exposed, Value};
use crate::shared::timestamp::Micros;
use crate::shared::watch::ThreadReport;

pub const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether the scraper asked for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gauge,
    Counter,
    Histogram,
}

struct Exposition {
    out: String,
    openmetrics: bool,
    /// The family samples are written to (set by [`Exposition::begin`]).
    current: String,
}

/// HELP text, which may name a feed column (a quoted CSV header can hold a newline, which
/// would end the HELP line early). The text format (0.0.4) escapes only `\\` and `\n` in
/// HELP; OpenMetrics escapes `\"` as well.
fn escape_help(text: &str, openmetrics: bool, out: &mut String) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if openmetrics => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

fn number(value: f64, out: &mut String) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value == f64::INFINITY {
        out.push_str("+Inf");
    } else if value == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{value}");
    }
}

impl Exposition {
    /// Starts a family: HELP and TYPE; the samples that follow are its own.
    fn begin(&mut self, def: &FamilyDef<'_>) {
        self.current.clear();
        self.current.push_str(def.name);
        self.family(def.name, def.kind, def.help);
    }

    /// HELP and TYPE of a family. OpenMetrics names a counter family without `_total`.
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let family = match (kind, self.openmetrics) {
            (Kind::Counter, true) => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        let kind = match kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        };
        let _ = write!(self.out, "# HELP {family} ");
        escape_help(help, self.openmetrics, &mut self.out);
        self.out.push('\n');
        let _ = writeln!(self.out, "# TYPE {family} {kind}");
    }

    /// A family with one unlabelled sample.
    fn scalar(&mut self, def: &FamilyDef<'_>, value: f64) {
        self.begin(def);
        self.sample(&[], value);
    }

    /// A sample of the current family.
    fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        let name = std::mem::take(&mut self.current);
        self.named_sample(&name, labels, value);
        self.current = name;
    }

    fn named_sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.labelled(name, labels);
        number(value, &mut self.out);
        self.out.push('\n');
    }

    /// A sample of the current family with a stored value: a counter's `u64` is written as
    /// the integer it is (the text format allows any float literal; a scraper that parses
    /// into an `f64` rounds above 2^53, but the text is exact).
    fn value_sample(&mut self, labels: &[(&str, &str)], value: Value) {
        let name = std::mem::take(&mut self.current);
        self.labelled(&name, labels);
        match value {
            Value::Float(v) => number(v, &mut self.out),
            Value::Int(v) => {
                let _ = write!(self.out, "{v}");
            }
        }
        self.out.push('\n');
        self.current = name;
    }

    /// Name and labels of a sample, and the space before its value.
    fn labelled(&mut self, name: &str, labels: &[(&str, &str)]) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(key);
                self.out.push_str("=\"");
                metric::escape_label_value(val, &mut self.out);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
    }

    /// A histogram of the current family: buckets as (upper bound, cumulative count), the
    /// last bound infinite.
    fn histogram(&mut self, labels: &[(&str, &str)], buckets: &[(f64, u64)], sum: f64) {
        let name = self.current.clone();
        let bucket_name = format!("{name}_bucket");
        for &(le, count) in buckets {
            let bound = if le.is_infinite() {
                "+Inf".to_string()
            } else {
                format!("{le}")
            };
            let mut with_le: Vec<(&str, &str)> = labels.to_vec();
            with_le.push(("le", &bound));
            self.named_sample(&bucket_name, &with_le, count as f64);
        }
        self.named_sample(&format!("{name}_sum"), labels, sum);
        let count = buckets.last().map_or(0, |b| b.1);
        self.named_sample(&format!("{name}_count"), labels, count as f64);
    }
}

/// One metric family of telemetry: a value per switch.
struct Family {
    name: String,
    help: String,
    kind: Kind,
    samples: Vec<Sample>,
}

/// One series' value in a telemetry family.
struct Sample {
    switch: Arc<str>,
    /// Its name from `--names`, if any.
    name: Option<String>,
    /// Its metric's exposition (the labels its name carries).
    exposed: Arc<Exposed>,
    value: Value,
}

/// Telemetry series, copied out under the store's read lock.
pub struct Telemetry {
    families: Vec<Family>,
    switches: usize,
    retained_rows: u64,
    newest: Option<Micros>,
}

fn help_for(name: &str) -> String {
    match name {
        "bandwidth" => "Bandwidth of the switch in Gb/s (newest fresh sample)".to_string(),
        "latency" => "Latency of the switch in seconds (newest fresh sample)".to_string(),
        "errors" => "Errors the switch reported for the feed's last interval (newest fresh sample)"
            .to_string(),
        other => format!("Feed column {other} (newest fresh sample)"),
    }
}

/// Copies the fresh newest samples (and count totals) out of the store, grouped by family
/// (metrics whose names carry labels share one).
pub fn collect(store: &Store, names: &Names, now: Micros, max_age: Micros) -> Telemetry {
    let mut families: Vec<Family> = Vec::new();
    let mut family_index: std::collections::HashMap<String, usize> =
        std::collections::HashMap::new();
    let mut family_of = |families: &mut Vec<Family>, name: &str, help: String, kind: Kind| {
        *family_index.entry(name.to_string()).or_insert_with(|| {
            families.push(Family {
                name: name.to_string(),
                help,
                kind,
                samples: Vec::new(),
            });
            families.len() - 1
        })
    };
    for metric_id in 0..store.metrics().len() {
        let name = store.metrics().name(metric_id);
        let kind = store.metrics().kind(metric_id);
        let exposed = Arc::clone(store.metrics().exposed(metric_id));
        let base = metric::split_labels(name).0;
        let totals = exposed.total.as_ref().map(|total| {
            let help = format!("Sum of {base} over every sample stored since the server started");
            family_of(&mut families, total, help, Kind::Counter)
        });
        let type_of = if kind.is_counter() {
            Kind::Counter
        } else {
            Kind::Gauge
        };
        let fresh = family_of(&mut families, &exposed.family, help_for(base), type_of);
        for (switch, id) in store.switch_ids().iter().enumerate() {
            let Some(sample) = store.latest(switch, metric_id) else {
                continue;
            };
            if now - sample.timestamp > max_age {
                continue;
            }
            let value = match sample.value {
                Value::Float(v) => Value::Float(v * exposed.scale),
                exact => exact,
            };
            let name = names.name_of(id);
            let id: Arc<str> = Arc::from(id);
            if let Some(totals) = totals {
                let total = store.count_total(switch, metric_id).unwrap_or(0.0);
                families[totals].samples.push(Sample {
                    switch: Arc::clone(&id),
                    name: name.clone(),
                    exposed: Arc::clone(&exposed),
                    value: Value::Float(total),
                });
            }
            families[fresh].samples.push(Sample {
                switch: id,
                name,
                exposed: Arc::clone(&exposed),
                value,
            });
        }
    }
    Telemetry {
        families,
        switches: store.n_switches(),
        retained_rows: store.retained_rows(),
        newest: store.newest_timestamp(),
    }
}

/// A metric family: name, type and help, written once. The server's own families are the
/// constants below, listed in [`OWN_FAMILIES`]; telemetry families are built per metric.
pub struct FamilyDef<'a> {
    pub name: &'a str,
    kind: Kind,
    pub help: &'a str,
}

const FABRIC_STORAGE_WRITE_ERRORS_TOTAL: FamilyDef<'static> = FamilyDef {
    name: "fabric_storage_write_errors_total",
    kind: Kind::Counter,
    help: "Failed writes or fsyncs to the data directory",
};

const FABRIC_STORAGE_WAL_BYTES_TOTAL: FamilyDef<'static> = FamilyDef {
    name: "fabric_storage_wal_bytes_total",
    kind: Kind::Counter,
    help: "Bytes appended to the write-ahead log",
};

const FABRIC_STORAGE_WAL_ROWS_TOTAL: FamilyDef<'static> = FamilyDef {
    name: "fabric_storage_wal_rows_total",
    kind: Kind::Counter,
    help: "Rows appended to the write-ahead log (fabric_rows_accepted_total minus this and the rows not logged: rows a crash would lose now)",
};

const FABRIC_STORAGE_WAL_FSYNCS_TOTAL: FamilyDef<'static> = FamilyDef {
    name: "fabric_storage_wal_fsyncs_total",
    kind: Kind::Counter,
    help: "fsyncs of the write-ahead log",
};

const FABRIC_STORAGE_ROWS_NOT_LOGGED_TOTAL: FamilyDef<'static> = FamilyDef {
    name: "fabric_storage_rows_not_logged_total",
    kind: Kind::Counter,
    help: "Accepted rows that never reached the write-ahead log (disk errors or a stalled disk)",
};

const FABRIC_STORAGE_BLOCK_FILES_WRITTEN_TOTAL: FamilyDef<'static> = FamilyDef {
    name: "fabric_storage_block_files_written_total",
    kind: Kind::Counter,
    help: "Block files written by compaction",
};

const FABRIC_NEWEST_SAMPLE_AGE_SECONDS: FamilyDef<'static> = FamilyDef {
    name: "fabric_newest_sample_age_seconds",
    kind: Kind::Gauge,
    help: "Age of the newest stored sample",
};

const FABRIC_ROWS_REJECTED_TOTAL: FamilyDef<'static> = FamilyDef {
    name: "fabric_rows_rejected_total",
    kind: Kind::Counter,
    help: "Feed rows rejected, by reason",
};

const FABRIC_POLLS_TOTAL: FamilyDef<'static> = FamilyDef {
    name: "fabric_polls_total",
    kind: Kind::Counter,
    help: "Polls of each feed source, by outcome",
};

const FABRIC_POLLS_LATE_TOTAL: FamilyDef<'static> = FamilyDef {
    name: "fabric_polls_late_total",
    kind: Kind::Counter,
    help: "Polls whose rows were not queryable before the next poll was due",
};

const FABRIC_POLL_TO_QUERYABLE_SECONDS: FamilyDef<'static> = FamilyDef {
    name: "fabric_poll_to_queryable_seconds",
    kind: Kind::Histogram,
    help: "Time from a poll being due to its rows being queryable",
};

const FABRIC_HTTP_REQUESTS_TOTAL: FamilyDef<'static> = FamilyDef {
    name: "fabric_http_requests_total",
    kind: Kind::Counter,
    help: "HTTP requests answered, by route and status code",
};

const FABRIC_HTTP_REQUEST_DURATION_SECONDS: FamilyDef<'static> = FamilyDef {
    name: "fabric_http_request_duration_seconds",
    kind: Kind::Histogram,
    help: "Time to build an answer, by route",
};

const FABRIC_HTTP_CONNECTIONS_TOTAL: FamilyDef<'static> = FamilyDef {
    name: "fabric_http_connections_total",
    kind: Kind::Counter,
    help: "HTTP connections by how they ended early: refused at --max-connections, head not in \
         time (408), idle past --idle-timeout, answer not taken in time",
};

const FABRIC_THREAD_UP: FamilyDef<'static> = FamilyDef {
    name: "fabric_thread_up",
    kind: Kind::Gauge,
    help: "Whether a long-lived thread is running (0 between a panic and its restart)",
};

const FABRIC_THREAD_PANICS_TOTAL: FamilyDef<'static> = FamilyDef {
    name: "fabric_thread_panics_total",
    kind: Kind::Counter,
    help: "Panics of long-lived threads (pollers and remote write restart; store, persist exit)",
};

const FABRIC_REMOTE_WRITE_SAMPLES_TOTAL: FamilyDef<'static> = FamilyDef {
    name: "fabric_remote_write_samples_total",
    kind: Kind::Counter,
    help: "Samples for the remote-write receiver, by outcome",
};

const FABRIC_REMOTE_WRITE_RETRIES_TOTAL: FamilyDef<'static> = FamilyDef {
    name: "fabric_remote_write_retries_total",
    kind: Kind::Counter,
    help: "Remote-write requests retried after a failure",
};

const FABRIC_REMOTE_WRITE_STALE_MARKERS_TOTAL: FamilyDef<'static> = FamilyDef {
    name: "fabric_remote_write_stale_markers_total",
    kind: Kind::Counter,
    help: "Staleness markers sent for series not seen for --max-age",
};

const FABRIC_STORAGE_HEALTHY: FamilyDef<'static> = FamilyDef {
    name: "fabric_storage_healthy",
    kind: Kind::Gauge,
    help: "1 while writes to the data directory work, 0 while they fail (ingest goes on in memory)",
};

const FABRIC_STORAGE_DISK_BYTES: FamilyDef<'static> = FamilyDef {
    name: "fabric_storage_disk_bytes",
    kind: Kind::Gauge,
    help: "Bytes of WAL segments and block files in the data directory",
};

const FABRIC_SWITCHES: FamilyDef<'static> = FamilyDef {
    name: "fabric_switches",
    kind: Kind::Gauge,
    help: "Switches seen since the server started",
};

const FABRIC_RETAINED_ROWS: FamilyDef<'static> = FamilyDef {
    name: "fabric_retained_rows",
    kind: Kind::Gauge,
    help: "Rows (one timestamp per switch, all its metrics) in retained history",
};

const FABRIC_ROWS_ACCEPTED_TOTAL: FamilyDef<'static> = FamilyDef {
    name: "fabric_rows_accepted_total",
    kind: Kind::Counter,
    help: "Feed rows stored",
};

const FABRIC_HTTP_RATE_LIMITED_TOTAL: FamilyDef<'static> = FamilyDef {
    name: "fabric_http_rate_limited_total",
    kind: Kind::Counter,
    help: "Requests refused with 429 by the per-client rate limit",
};

const FABRIC_HTTP_CONNECTIONS_OPEN: FamilyDef<'static> = FamilyDef {
    name: "fabric_http_connections_open",
    kind: Kind::Gauge,
    help: "HTTP connections open now (bounded by --max-connections)",
};

const FABRIC_HTTP_SHED_TOTAL: FamilyDef<'static> = FamilyDef {
    name: "fabric_http_shed_total",
    kind: Kind::Counter,
    help: "Requests answered 503 because they waited --request-timeout for a worker",
};

const FABRIC_HTTP_PANICS_TOTAL: FamilyDef<'static> = FamilyDef {
    name: "fabric_http_panics_total",
    kind: Kind::Counter,
    help: "Panics caught while answering HTTP requests (each answered 500 when possible)",
};

const FABRIC_HTTP_REQUESTS_READ_BY_WORKERS_TOTAL: FamilyDef<'static> = FamilyDef {
    name: "fabric_http_requests_read_by_workers_total",
    kind: Kind::Counter,
    help: "Requests on kept-alive connections that a worker read itself, without waking the \
         connection's thread",
};

const FABRIC_HTTP_ACCEPT_ERRORS_TOTAL: FamilyDef<'static> = FamilyDef {
    name: "fabric_http_accept_errors_total",
    kind: Kind::Counter,
    help: "Failed accept() calls (e.g. out of file descriptors), retried after a pause",
};

const FABRIC_START_TIME_SECONDS: FamilyDef<'static> = FamilyDef {
    name: "fabric_start_time_seconds",
    kind: Kind::Gauge,
    help: "When the server started, seconds since the Unix epoch",
};

/// Every family of the server's own health, in the order `/metrics` gives them (those of
/// remote write and storage only when configured). docs/API.md names each (tested).
pub const OWN_FAMILIES: [&FamilyDef<'static>; 31] = [
    &FABRIC_STORAGE_WRITE_ERRORS_TOTAL,
    &FABRIC_STORAGE_WAL_BYTES_TOTAL,
    &FABRIC_STORAGE_WAL_ROWS_TOTAL,
    &FABRIC_STORAGE_WAL_FSYNCS_TOTAL,
    &FABRIC_STORAGE_ROWS_NOT_LOGGED_TOTAL,
    &FABRIC_STORAGE_BLOCK_FILES_WRITTEN_TOTAL,
    &FABRIC_NEWEST_SAMPLE_AGE_SECONDS,
    &FABRIC_ROWS_REJECTED_TOTAL,
    &FABRIC_POLLS_TOTAL,
    &FABRIC_POLLS_LATE_TOTAL,
    &FABRIC_POLL_TO_QUERYABLE_SECONDS,
    &FABRIC_HTTP_REQUESTS_TOTAL,
    &FABRIC_HTTP_REQUEST_DURATION_SECONDS,
    &FABRIC_HTTP_CONNECTIONS_TOTAL,
    &FABRIC_THREAD_UP,
    &FABRIC_THREAD_PANICS_TOTAL,
    &FABRIC_REMOTE_WRITE_SAMPLES_TOTAL,
    &FABRIC_REMOTE_WRITE_RETRIES_TOTAL,
    &FABRIC_REMOTE_WRITE_STALE_MARKERS_TOTAL,
    &FABRIC_STORAGE_HEALTHY,
    &FABRIC_STORAGE_DISK_BYTES,
    &FABRIC_SWITCHES,
    &FABRIC_RETAINED_ROWS,
    &FABRIC_ROWS_ACCEPTED_TOTAL,
    &FABRIC_HTTP_RATE_LIMITED_TOTAL,
    &FABRIC_HTTP_CONNECTIONS_OPEN,
    &FABRIC_HTTP_SHED_TOTAL,
    &FABRIC_HTTP_PANICS_TOTAL,
    &FABRIC_HTTP_ACCEPT_ERRORS_TOTAL,
    &FABRIC_HTTP_REQUESTS_READ_BY_WORKERS_TOTAL,
    &FABRIC_START_TIME_SECONDS,
];

/// The whole exposition.
pub fn render(
    telemetry: &Telemetry,
    api: &ApiStats,
    ingest: &IngestStats,
    http: &HttpCounters,
    threads: &[ThreadReport],
    now: Micros,
    openmetrics: bool,
) -> String {
    let mut x = Exposition {
        out: String::with_capacity(
            4096 + telemetry
                .families
                .iter()
                .map(|f| f.samples.len() * 48)
                .sum::<usize>(),
        ),
        openmetrics,
        current: String::new(),
    };
    for family in &telemetry.families {
        x.begin(&FamilyDef {
            name: &family.name,
            kind: family.kind,
            help: &family.help,
        });
        for sample in &family.samples {
            let mut labels: Vec<(&str, &str)> = vec![("switch", &sample.switch)];
            if let Some(name) = &sample.name {
                labels.push(("name", name));
            }
            labels.extend(
                sample
                    .exposed
                    .labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            );
            x.value_sample(&labels, sample.value);
        }
    }

    x.scalar(&FABRIC_SWITCHES, telemetry.switches as f64);
    x.scalar(&FABRIC_RETAINED_ROWS, telemetry.retained_rows as f64);
    if let Some(newest) = telemetry.newest {
        x.begin(&FABRIC_NEWEST_SAMPLE_AGE_SECONDS);
        x.sample(&[], (now - newest) as f64 / 1e6);
    }
    x.scalar(&FABRIC_ROWS_ACCEPTED_TOTAL, ingest.rows_accepted() as f64);
    x.begin(&FABRIC_ROWS_REJECTED_TOTAL);
    for reason in RejectReason::ALL {
        x.sample(&[("reason", reason.name())], ingest.rejected(reason) as f64);
    }

    let sources = ingest.sources();
    x.begin(&FABRIC_POLLS_TOTAL);
    for s in &sources {
        x.sample(&[("source", &s.url), ("outcome", "ok")], s.polls_ok as f64);
        x.sample(
            &[("source", &s.url), ("outcome", "failed")],
            s.polls_failed as f64,
        );
    }
    x.begin(&FABRIC_POLLS_LATE_TOTAL);
    for s in &sources {
        x.sample(&[("source", &s.url)], s.polls_late as f64);
    }
    x.begin(&FABRIC_POLL_TO_QUERYABLE_SECONDS);
    for s in &sources {
        let h = &s.poll_to_queryable_histogram;
        let buckets: Vec<(f64, u64)> = h.cumulative().map(|(le, c)| (le / 1000.0, c)).collect();
        x.histogram(&[("source", &s.url)], &buckets, h.sum_seconds());
    }

    let routes = api.routes();
    x.begin(&FABRIC_HTTP_REQUESTS_TOTAL);
    for (route, stats) in &routes {
        for (status, count) in &stats.by_status {
            x.sample(
                &[("route", route), ("code", &status.to_string())],
                *count as f64,
            );
        }
    }
    x.begin(&FABRIC_HTTP_REQUEST_DURATION_SECONDS);
    for (route, stats) in &routes {
        let mut cumulative = 0;
        let buckets: Vec<(f64, u64)> = stats
            .duration_buckets
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                cumulative += c;
                (
                    DURATION_BUCKETS_S.get(i).copied().unwrap_or(f64::INFINITY),
                    cumulative,
                )
            })
            .collect();
        x.histogram(&[("route", route)], &buckets, stats.duration_sum);
    }
    x.scalar(
        &FABRIC_HTTP_RATE_LIMITED_TOTAL,
        api.rate_limited_count() as f64,
    );
    x.scalar(&FABRIC_HTTP_CONNECTIONS_OPEN, http.connections_open as f64);
    x.begin(&FABRIC_HTTP_CONNECTIONS_TOTAL);
    for (outcome, n) in [
        ("accepted", http.connections_accepted),
        ("refused", http.connections_refused),
        ("head_timeout", http.head_timeouts),
        ("idle_closed", http.idle_closed),
        ("write_timeout", http.write_timeouts),
    ] {
        x.sample(&[("outcome", outcome)], n as f64);
    }
    x.scalar(&FABRIC_HTTP_SHED_TOTAL, http.shed as f64);
    x.scalar(&FABRIC_HTTP_PANICS_TOTAL, http.panics as f64);
    x.begin(&FABRIC_THREAD_UP);
    for t in threads {
        x.sample(&[("thread", &t.name)], if t.up { 1.0 } else { 0.0 });
    }
    x.begin(&FABRIC_THREAD_PANICS_TOTAL);
    for t in threads {
        x.sample(&[("thread", &t.name)], t.panics as f64);
    }
    x.scalar(&FABRIC_HTTP_ACCEPT_ERRORS_TOTAL, http.accept_errors as f64);
    x.scalar(
        &FABRIC_HTTP_REQUESTS_READ_BY_WORKERS_TOTAL,
        http.requests_read_by_workers as f64,
    );
    if let Some(remote) = ingest.remote_write() {
        x.begin(&FABRIC_REMOTE_WRITE_SAMPLES_TOTAL);
        for (outcome, n) in [
            ("sent", remote.samples_sent),
            ("dropped", remote.samples_dropped),
            ("rejected", remote.samples_rejected),
        ] {
            x.sample(&[("receiver", &remote.url), ("outcome", outcome)], n as f64);
        }
        x.begin(&FABRIC_REMOTE_WRITE_RETRIES_TOTAL);
        x.sample(&[("receiver", &remote.url)], remote.retries as f64);
        x.begin(&FABRIC_REMOTE_WRITE_STALE_MARKERS_TOTAL);
        x.sample(&[("receiver", &remote.url)], remote.stale_markers as f64);
    }
    if let Some(storage) = ingest.storage() {
        let report = storage.report();
        x.begin(&FABRIC_STORAGE_HEALTHY);
        x.sample(&[], if storage.healthy() { 1.0 } else { 0.0 });
        x.begin(&FABRIC_STORAGE_DISK_BYTES);
        x.sample(&[], report.counters.disk_bytes as f64);
        for (def, value) in [
            (
                &FABRIC_STORAGE_WRITE_ERRORS_TOTAL,
                report.counters.write_errors,
            ),
            (&FABRIC_STORAGE_WAL_BYTES_TOTAL, report.counters.wal_bytes),
            (&FABRIC_STORAGE_WAL_ROWS_TOTAL, report.counters.wal_rows),
            (&FABRIC_STORAGE_WAL_FSYNCS_TOTAL, report.counters.wal_fsyncs),
            (
                &FABRIC_STORAGE_ROWS_NOT_LOGGED_TOTAL,
                report.counters.rows_not_logged,
            ),
            (
                &FABRIC_STORAGE_BLOCK_FILES_WRITTEN_TOTAL,
                report.counters.block_files_written,
            ),
        ] {
            x.scalar(def, value as f64);
        }
    }
    x.scalar(&FABRIC_START_TIME_SECONDS, api.started_at() as f64 / 1e6);
    if openmetrics {
        x.out.push_str("# EOF\n");
    }
    x.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        let mut out = String::new();
        metric::escape_label_value("a\"b\\c\nd", &mut out);
        assert_eq!(out, "a\\\"b\\\\c\\nd");
    }

    /// Each family of the server's own health is written once, in [`OWN_FAMILIES`], and
    /// the API reference names every one of them.
    #[test]
    fn every_family_is_unique_and_documented() {
        let api_md = include_str!("../../../docs/API.md");
        let mut names: Vec<&str> = OWN_FAMILIES.iter().map(|f| f.name).collect();
        for name in &names {
            assert!(
                api_md.contains(&format!("`{name}")),
                "docs/API.md does not name {name}"
            );
        }
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "a family is declared twice");
    }

    #[test]
    fn help_text_is_escaped_for_each_format() {
        let mut x = Exposition {
            out: String::new(),
            openmetrics: false,
            current: String::new(),
        };
        x.family("fabric_switch_a_b", Kind::Gauge, &help_for("a\nb\\\"c"));
        assert_eq!(
            x.out,
            "# HELP fabric_switch_a_b Feed column a\\nb\\\\\"c (newest fresh sample)\n# TYPE fabric_switch_a_b gauge\n"
        );
        x.out.clear();
        x.openmetrics = true;
        x.family("fabric_switch_a_b", Kind::Gauge, &help_for("a\nb\\\"c"));
        assert!(
            x.out
                .starts_with("# HELP fabric_switch_a_b Feed column a\\nb\\\\\\\"c (newest"),
            "{}",
            x.out
        );
    }
}
