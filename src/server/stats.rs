//! Counters the server keeps about itself: API requests, errors and latency per endpoint
//! (written by API workers), and ingest health per source (written by pollers and the store).
//! Critical sections are a handful of arithmetic operations; nothing here does I/O.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::server::persist::{StorageReport, StorageStats};
use crate::server::remote_write::{RemoteWriteReport, RemoteWriteStats};
use crate::server::store::IngestOutcome;
use crate::shared::feed::{RejectCounts, RejectReason};
use crate::shared::timestamp::{self, Micros};

/// The endpoints whose latency is tracked, under the original's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    GetMetric,
    ListMetrics,
    AggregateMetrics,
    Stats,
    History,
    Rate,
    Top,
}

impl Endpoint {
    pub const ALL: [Endpoint; 7] = [
        Endpoint::GetMetric,
        Endpoint::ListMetrics,
        Endpoint::AggregateMetrics,
        Endpoint::Stats,
        Endpoint::History,
        Endpoint::Rate,
        Endpoint::Top,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Endpoint::GetMetric => "get_metric",
            Endpoint::ListMetrics => "list_metrics",
            Endpoint::AggregateMetrics => "aggregate_metrics",
            Endpoint::Stats => "stats",
            Endpoint::History => "history",
            Endpoint::Rate => "rate",
            Endpoint::Top => "top",
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Latency {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Latency {
    fn record(&mut self, seconds: f64) {
        if self.count == 0 {
            self.min = seconds;
            self.max = seconds;
        } else {
            self.min = self.min.min(seconds);
            self.max = self.max.max(seconds);
        }
        self.count += 1;
        self.sum += seconds;
    }
}

/// Upper bounds of the request duration histogram, in seconds.
pub const DURATION_BUCKETS_S: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Answers of one route: counts by status and a duration histogram.
#[derive(Debug, Clone, Default)]
pub struct RouteStats {
    pub by_status: std::collections::BTreeMap<u16, u64>,
    /// Per bucket of [`DURATION_BUCKETS_S`] plus +Inf, not cumulative.
    pub duration_buckets: [u64; DURATION_BUCKETS_S.len() + 1],
    pub duration_sum: f64,
    pub count: u64,
}

/// API request counters. `requests` counts a request when it arrives (so a stats answer
/// includes itself); `errors` and latency are recorded when the answer is ready.
pub struct ApiStats {
    started: Instant,
    started_at: Micros,
    requests: AtomicU64,
    errors: AtomicU64,
    latency: [Mutex<Latency>; Endpoint::ALL.len()],
    routes: Mutex<std::collections::BTreeMap<&'static str, RouteStats>>,
    rate_limited: AtomicU64,
}

impl Default for ApiStats {
    fn default() -> ApiStats {
        ApiStats::new()
    }
}

impl ApiStats {
    pub fn new() -> ApiStats {
        ApiStats {
            started: Instant::now(),
            started_at: timestamp::now_micros(),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: Default::default(),
            routes: Mutex::default(),
            rate_limited: AtomicU64::new(0),
        }
    }

    pub fn request_arrived(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a finished request: `route` names it for `/metrics`; `endpoint` is the
    /// original's latency entry, `None` for paths that have none.
    pub fn request_finished(
        &self,
        route: &'static str,
        endpoint: Option<Endpoint>,
        status: u16,
        elapsed: Duration,
    ) {
        if status >= 400 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        {
            let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
            let stats = routes.entry(route).or_default();
            *stats.by_status.entry(status).or_default() += 1;
            let seconds = elapsed.as_secs_f64();
            let bucket = DURATION_BUCKETS_S
                .iter()
                .position(|&le| seconds <= le)
                .unwrap_or(DURATION_BUCKETS_S.len());
            stats.duration_buckets[bucket] += 1;
            stats.duration_sum += seconds;
            stats.count += 1;
        }
        if let Some(endpoint) = endpoint {
            let mut latency = match self.latency[endpoint as usize].lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            latency.record(elapsed.as_secs_f64());
        }
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// When the server started (wall clock).
    pub fn started_at(&self) -> Micros {
        self.started_at
    }

    /// A copy of the per-route counters.
    pub fn routes(&self) -> Vec<(&'static str, RouteStats)> {
        let routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes.iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    /// A request refused by its client's rate limit.
    pub fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    pub fn rate_limited_count(&self) -> u64 {
        self.rate_limited.load(Ordering::Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn latency_of(&self, endpoint: Endpoint) -> Latency {
        match self.latency[endpoint as usize].lock() {
            Ok(guard) => *guard,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }
}

/// Health of one feed source.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceStats {
    pub url: String,
    pub polls_ok: u64,
    pub polls_failed: u64,
    /// Failures since the last successful poll.
    pub consecutive_failures: u64,
    #[serde(serialize_with = "optional_timestamp")]
    pub last_success: Option<Micros>,
    pub last_error: Option<String>,
    /// Rows the last successful poll delivered to the store (before dedupe).
    pub last_rows: u64,
    pub rows_accepted: u64,
    /// Polls whose rows were queryable before the next poll was due.
    pub polls_on_time: u64,
    /// Polls queryable only after the next was due, and poll slots skipped while behind.
    pub polls_late: u64,
    /// From a poll's due time to its rows being queryable, over the last polls.
    pub poll_to_queryable_ms: PollLatency,
    /// The same latency since start, as cumulative counts per upper bound (a Prometheus
    /// histogram): `[[le_ms, count], …]`, the last bound infinite (`null`).
    pub poll_to_queryable_histogram: LatencyHistogram,
    /// The format the last answer was read in: `classic`, `ufm-csv`, `prometheus`,
    /// `openmetrics` (`null` before the first answer).
    pub format: Option<&'static str>,
    /// Cells that said "no sample" (`N/A`, `-1`, a sentinel, `NaN`): kept rows lack them.
    pub values_not_available: u64,
    /// UFM cells that were not numbers: dropped, their rows kept.
    pub values_unparsable: u64,
    /// Prometheus samples no `--key-labels` alternative keys (an exporter's own metrics).
    pub samples_unkeyed: u64,
    /// Series keys counted against `--max-series` (seen within a retention).
    pub series: u64,
    /// New columns dropped for `--max-metrics` (rows for `--max-series` are in `rejected`).
    pub metrics_dropped: u64,
    /// Rows (Prometheus: samples) of series another shard keeps (`--shard`): skipped.
    pub rows_other_shard: u64,
}

/// Upper bounds of the poll latency histogram, in milliseconds.
pub const LATENCY_BUCKETS_MS: [f64; 17] = [
    5.0, 10.0, 25.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 700.0, 800.0, 900.0, 1000.0,
    1500.0, 2000.0, 5000.0,
];

/// Cumulative counts per bucket of [`LATENCY_BUCKETS_MS`] plus +Inf.
#[derive(Debug, Clone, Default)]
pub struct LatencyHistogram {
    counts: [u64; LATENCY_BUCKETS_MS.len() + 1],
    sum_ms: f64,
}

impl LatencyHistogram {
    /// (upper bound in ms, cumulative count) per bucket; the last bound is infinite.
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        self.counts.iter().enumerate().map(|(i, &c)| {
            (
                LATENCY_BUCKETS_MS.get(i).copied().unwrap_or(f64::INFINITY),
                c,
            )
        })
    }

    /// Sum is not tracked; the count is the +Inf bucket.
    pub fn count(&self) -> u64 {
        self.counts[LATENCY_BUCKETS_MS.len()]
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_ms / 1000.0
    }

    fn record(&mut self, latency: Duration) {
        let ms = latency.as_secs_f64() * 1000.0;
        self.sum_ms += ms;
        let first = LATENCY_BUCKETS_MS
            .iter()
            .position(|&le| ms <= le)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        for count in &mut self.counts[first..] {
            *count += 1;
        }
    }
}

impl Serialize for LatencyHistogram {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.counts.len()))?;
        for (i, count) in self.counts.iter().enumerate() {
            seq.serialize_element(&(LATENCY_BUCKETS_MS.get(i), count))?;
        }
        seq.end()
    }
}

/// Percentiles of the last [`LATENCY_WINDOW`] poll-to-queryable latencies, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PollLatency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    #[serde(skip)]
    recent_us: std::collections::VecDeque<u64>,
}

/// How many recent polls the latency percentiles cover.
pub const LATENCY_WINDOW: usize = 1024;

impl PollLatency {
    fn record(&mut self, latency: Duration) {
        if self.recent_us.len() == LATENCY_WINDOW {
            self.recent_us.pop_front();
        }
        self.recent_us
            .push_back(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
        let mut sorted: Vec<u64> = self.recent_us.iter().copied().collect();
        sorted.sort_unstable();
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
        self.p50 = at(0.5);
        self.p99 = at(0.99);
        self.max = at(1.0);
    }
}

fn optional_timestamp<S: serde::Serializer>(ts: &Option<Micros>, s: S) -> Result<S::Ok, S::Error> {
    match ts {
        Some(ts) => s.serialize_str(&timestamp::to_rfc3339(*ts)),
        None => s.serialize_none(),
    }
}

/// Cells and samples of an answer that carried no usable value or key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CellCounts {
    pub not_available: u64,
    pub bad_cells: u64,
    pub unkeyed: u64,
    /// New columns beyond `--max-metrics`.
    pub metrics_dropped: u64,
    /// Rows of series another shard keeps (`--shard`).
    pub other_shard: u64,
}

/// Ingest counters: rows accepted, rows rejected by reason, and per-source poll health.
pub struct IngestStats {
    /// The remote-write receiver and its counters, when `--remote-write` is set.
    remote_write: Option<(String, std::sync::Arc<RemoteWriteStats>)>,
    rows_accepted: AtomicU64,
    rejected: [AtomicU64; RejectReason::ALL.len()],
    retained_rows: AtomicU64,
    sources: Vec<Mutex<SourceStats>>,
    /// The data directory's counters, when history persists.
    storage: Option<std::sync::Arc<StorageStats>>,
}

impl IngestStats {
    pub fn new(source_urls: &[String]) -> IngestStats {
        IngestStats::with_remote_write(source_urls, None)
    }

    pub fn with_remote_write(
        source_urls: &[String],
        remote_write: Option<(String, std::sync::Arc<RemoteWriteStats>)>,
    ) -> IngestStats {
        IngestStats {
            remote_write,
            rows_accepted: AtomicU64::new(0),
            rejected: Default::default(),
            retained_rows: AtomicU64::new(0),
            sources: source_urls
                .iter()
                .map(|url| {
                    Mutex::new(SourceStats {
                        url: url.clone(),
                        ..SourceStats::default()
                    })
                })
                .collect(),
            storage: None,
        }
    }

    /// The same, reporting the data directory's counters too.
    pub fn with_storage(mut self, storage: std::sync::Arc<StorageStats>) -> IngestStats {
        self.storage = Some(storage);
        self
    }

    pub fn storage(&self) -> Option<&StorageStats> {
        self.storage.as_deref()
    }

    fn with_source(&self, source: usize, f: impl FnOnce(&mut SourceStats)) {
        if let Some(slot) = self.sources.get(source) {
            match slot.lock() {
                Ok(mut guard) => f(&mut guard),
                Err(poisoned) => f(&mut poisoned.into_inner()),
            }
        }
    }

    pub fn add_rejected(&self, counts: &RejectCounts) {
        for (reason, n) in counts.nonzero() {
            self.rejected[reason.index()].fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Remote-write counters, if remote write is on.
    pub fn remote_write(&self) -> Option<RemoteWriteReport> {
        self.remote_write
            .as_ref()
            .map(|(url, stats)| stats.report(url))
    }

    pub fn rows_accepted(&self) -> u64 {
        self.rows_accepted.load(Ordering::Relaxed)
    }

    pub fn retained_rows(&self) -> u64 {
        self.retained_rows.load(Ordering::Relaxed)
    }

    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected[reason.index()].load(Ordering::Relaxed)
    }

    /// A poll that got a body (possibly cut short: `error`), which delivered `rows` rows.
    pub fn poll_succeeded(&self, source: usize, rows: u64, at: Micros, error: Option<String>) {
        self.with_source(source, |s| {
            match error {
                None => {
                    s.polls_ok += 1;
                    s.consecutive_failures = 0;
                    s.last_success = Some(at);
                }
                Some(why) => {
                    s.polls_failed += 1;
                    s.consecutive_failures += 1;
                    s.last_error = Some(why);
                }
            }
            s.last_rows = rows;
        });
    }

    /// What an answer said beyond its rows: its format and the cells and samples it had
    /// without a value or key.
    pub fn record_answer(
        &self,
        source: usize,
        format: &'static str,
        cells: &CellCounts,
        series: usize,
    ) {
        self.with_source(source, |s| {
            s.format = Some(format);
            s.series = series as u64;
            s.metrics_dropped += cells.metrics_dropped;
            s.values_not_available += cells.not_available;
            s.rows_other_shard += cells.other_shard;
            s.values_unparsable += cells.bad_cells;
            s.samples_unkeyed += cells.unkeyed;
        });
    }

    pub fn poll_failed(&self, source: usize, error: String) {
        self.with_source(source, |s| {
            s.polls_failed += 1;
            s.consecutive_failures += 1;
            s.last_error = Some(error);
        });
    }

    /// A poll's rows became queryable `since_due` after the poll was due.
    pub fn record_poll_timing(&self, source: usize, since_due: Duration, interval: Duration) {
        self.with_source(source, |s| {
            if since_due <= interval {
                s.polls_on_time += 1;
            } else {
                s.polls_late += 1;
            }
            s.poll_to_queryable_ms.record(since_due);
            s.poll_to_queryable_histogram.record(since_due);
        });
    }

    pub fn polls_missed(&self, source: usize, slots: u64) {
        self.with_source(source, |s| s.polls_late += slots);
    }

    pub fn record_ingest(&self, source: usize, outcome: &IngestOutcome) {
        self.rows_accepted
            .fetch_add(outcome.accepted, Ordering::Relaxed);
        self.add_rejected(&outcome.rejected);
        self.with_source(source, |s| s.rows_accepted += outcome.accepted);
    }

    pub fn set_retained_rows(&self, rows: u64) {
        self.retained_rows.store(rows, Ordering::Relaxed);
    }

    pub fn sources(&self) -> Vec<SourceStats> {
        (0..self.sources.len())
            .map(|i| {
                let mut copy = SourceStats::default();
                self.with_source(i, |s| copy = s.clone());
                copy
            })
            .collect()
    }
}

/// Latency figures of one endpoint, in seconds, as the original printed them.
#[derive(Debug, Serialize)]
pub struct LatencyReport {
    pub avg_latency: f64,
    pub min_latency: f64,
    pub max_latency: f64,
}

/// The `latency` object: one entry per [`Endpoint`] in [`Endpoint::ALL`] order (the original
/// four, then endpoints added since), then (the original's quirk) `uptime_seconds`.
#[derive(Debug)]
pub struct LatencyReports {
    pub by_endpoint: Vec<(Endpoint, LatencyReport)>,
    pub uptime_seconds: f64,
}

impl Serialize for LatencyReports {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.by_endpoint.len() + 1))?;
        for (endpoint, report) in &self.by_endpoint {
            map.serialize_entry(endpoint.name(), report)?;
        }
        map.serialize_entry("uptime_seconds", &self.uptime_seconds)?;
        map.end()
    }
}

/// Ingest health, added after the original fields.
#[derive(Debug, Serialize)]
pub struct IngestReport {
    pub rows_accepted: u64,
    pub rows_rejected: serde_json::Map<String, serde_json::Value>,
    pub retained_rows: u64,
    pub sources: Vec<SourceStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_write: Option<RemoteWriteReport>,
}

/// The `/telemetry/stats` body: the original's shape first, extras after.
#[derive(Debug, Serialize)]
pub struct StatsReport {
    pub requests: u64,
    pub errors: u64,
    pub latency: LatencyReports,
    pub uptime_seconds: f64,
    /// Requests refused with 429 by the per-client rate limit.
    pub rate_limited: u64,
    pub ingest: IngestReport,
    /// Present when history persists (`--data-dir`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageReport>,
    /// What the HTTP side saw of connections (timeouts, refusals, panics).
    pub http: crate::shared::http::HttpCounters,
    /// Every watched long-lived thread: up, panics, seconds since the last panic.
    pub threads: Vec<crate::shared::watch::ThreadReport>,
    /// Live `/telemetry/stream` subscribers and their events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<crate::server::stream::StreamReport>,
}

fn latency_report(latency: Latency) -> LatencyReport {
    let avg = if latency.count == 0 {
        0.0
    } else {
        latency.sum / latency.count as f64
    };
    LatencyReport {
        avg_latency: avg,
        min_latency: latency.min,
        max_latency: latency.max,
    }
}

pub fn report(
    api: &ApiStats,
    ingest: &IngestStats,
    http: crate::shared::http::HttpCounters,
    threads: Vec<crate::shared::watch::ThreadReport>,
    stream: Option<crate::server::stream::StreamReport>,
) -> StatsReport {
    let uptime = api.uptime().as_secs_f64();
    let mut rows_rejected = serde_json::Map::new();
    for reason in RejectReason::ALL {
        rows_rejected.insert(reason.name().to_string(), ingest.rejected(reason).into());
    }
    StatsReport {
        requests: api.requests.load(Ordering::Relaxed),
        errors: api.errors.load(Ordering::Relaxed),
        latency: LatencyReports {
            by_endpoint: Endpoint::ALL
                .iter()
                .map(|&e| (e, latency_report(api.latency_of(e))))
                .collect(),
            uptime_seconds: uptime,
        },
        uptime_seconds: uptime,
        rate_limited: api.rate_limited_count(),
        ingest: IngestReport {
            rows_accepted: ingest.rows_accepted.load(Ordering::Relaxed),
            rows_rejected,
            retained_rows: ingest.retained_rows.load(Ordering::Relaxed),
            sources: ingest.sources(),
            remote_write: ingest.remote_write(),
        },
        storage: ingest.storage().map(StorageStats::report),
        http,
        threads,
        stream,
    }
}
