//! The REST API: routing, handlers, and the one place an [`ApiError`] becomes a status and a
//! JSON body. Handlers read the store through its [`StoreHandle`], copy out what they need
//! under the read lock, and serialize after releasing it; they never touch a feed.
//!
//! Response shapes are the original's, byte for byte where clients could notice: key order,
//! integers for count metrics (`errors`, `total_errors`), and canonical timestamps. `/list`
//! and `/aggregate` answers are built once per store generation and shared (see [`cache`]).

mod cache;
pub mod exposition;
pub mod history;

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use self::cache::{AnswerCache, Cached};
use self::history::{Bucket, Downsampler, MAX_POINTS};
use crate::server::access::{self, Auth, Client, RateLimiter};
use crate::server::query::{Query, QueryError};
use crate::server::stats::{self, ApiStats, Endpoint, IngestStats};
use crate::server::store::{MetricAgg, Sample, StoreHandle};
use crate::shared::http::{self, Reply, ReplyBody, RequestHead};
use crate::shared::metric::MetricKind;
use crate::shared::timestamp::{self, Micros};
use crate::shared::watch::Watch;

/// Why a request could not be answered with data.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// Malformed query or missing parameter (400).
    BadRequest(String),
    /// Unknown path, switch or metric (404).
    NotFound(String),
    /// Not GET/HEAD (405).
    MethodNotAllowed,
    /// Data exists but is older than `--max-age` (503).
    Stale { message: String, age_seconds: f64 },
    /// Nothing fresh to answer from and no age to report (503).
    NoData(String),
    /// No or wrong bearer token (401).
    Unauthorized(String),
    /// The client's rate limit is spent (429).
    TooManyRequests { retry_after: Duration },
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> ApiError {
        ApiError::BadRequest(e.to_string())
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::BadRequest(m)
            | ApiError::NotFound(m)
            | ApiError::NoData(m)
            | ApiError::Unauthorized(m) => f.write_str(m),
            ApiError::TooManyRequests { retry_after } => {
                write!(
                    f,
                    "rate limit exceeded: retry in {:.3} s",
                    retry_after.as_secs_f64()
                )
            }
            ApiError::MethodNotAllowed => {
                f.write_str("method not allowed: this API only answers GET and HEAD")
            }
            ApiError::Stale { message, .. } => f.write_str(message),
        }
    }
}

impl ApiError {
    fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::NotFound(_) => 404,
            ApiError::MethodNotAllowed => 405,
            ApiError::Unauthorized(_) => 401,
            ApiError::TooManyRequests { .. } => 429,
            ApiError::Stale { .. } | ApiError::NoData(_) => 503,
        }
    }

    /// The only place errors turn into HTTP.
    pub fn into_reply(self) -> Reply {
        let status = self.status();
        match &self {
            ApiError::MethodNotAllowed => Reply::error(status, &self.to_string())
                .with_header("Allow", "GET, HEAD".to_string()),
            ApiError::Unauthorized(_) => Reply::error(status, &self.to_string()).with_header(
                "WWW-Authenticate",
                "Bearer realm=\"fabric-telemetry\"".to_string(),
            ),
            ApiError::TooManyRequests { retry_after } => {
                let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                Reply::error(status, &self.to_string())
                    .with_header("Retry-After", seconds.to_string())
            }
            ApiError::Stale {
                message,
                age_seconds,
            } => {
                let body = serde_json::json!({ "error": message, "age_seconds": age_seconds });
                Reply::json(status, body.to_string().into_bytes())
            }
            _ => Reply::error(status, &self.to_string()),
        }
    }
}

/// A JSON number written the way its metric kind demands.
#[derive(Debug, Clone, Copy)]
struct Number {
    value: f64,
    kind: MetricKind,
}

impl Serialize for Number {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.kind {
            MetricKind::Count => s.serialize_u64(self.value as u64),
            MetricKind::Gauge => s.serialize_f64(self.value),
        }
    }
}

/// A canonical timestamp, serialized without an intermediate `String`.
struct Timestamp(Micros);

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; timestamp::CANONICAL_LEN];
        timestamp::encode(self.0, &mut buf);
        s.serialize_str(std::str::from_utf8(&buf).unwrap_or_default())
    }
}

/// A JSON object keyed by switch id, in the store's (first-seen) order.
struct BySwitch<T>(Vec<(Arc<str>, T)>);

impl<T: Serialize> Serialize for BySwitch<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (switch_id, entry) in &self.0 {
            map.serialize_entry(&**switch_id, entry)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct GetBody<'a> {
    switch_id: &'a str,
    metric: &'a str,
    value: Number,
    timestamp: Timestamp,
}

#[derive(Serialize)]
struct ListEntry {
    value: Number,
    timestamp: Timestamp,
}

#[derive(Serialize)]
struct AggregateEntry {
    max_latency: Option<f64>,
    min_bandwidth: Option<f64>,
    total_errors: Option<u64>,
}

#[derive(Serialize)]
struct HistoryPoint {
    timestamp: Timestamp,
    value: Number,
}

#[derive(Serialize)]
struct HistoryBucket {
    timestamp: Timestamp,
    min: Number,
    avg: f64,
    max: Number,
    count: u64,
}

fn to_json<T: Serialize>(body: &T) -> Vec<u8> {
    // Serializing plain structs of numbers and strings into memory cannot fail.
    serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec())
}

fn json_reply<T: Serialize>(body: &T) -> Result<Reply, ApiError> {
    Ok(Reply::json(200, to_json(body)))
}

fn shared_reply(cached: &Cached) -> Result<Reply, ApiError> {
    match &cached.answer {
        Ok(body) => Ok(Reply {
            status: 200,
            content_type: http::JSON,
            headers: Vec::new(),
            body: ReplyBody::Shared {
                data: Arc::clone(body) as Arc<dyn AsRef<[u8]> + Send + Sync>,
                len: body.len(),
            },
        }),
        Err(e) => Err(e.clone()),
    }
}

fn required<'q>(query: &'q Query, name: &str) -> Result<&'q str, ApiError> {
    match query.get(name) {
        Some(value) if !value.is_empty() => Ok(value),
        Some(_) => Err(ApiError::BadRequest(format!("parameter {name:?} is empty"))),
        None => Err(ApiError::BadRequest(format!("missing parameter {name:?}"))),
    }
}

fn optional<'q>(query: &'q Query, name: &str) -> Result<Option<&'q str>, ApiError> {
    match query.get(name) {
        Some("") => Err(ApiError::BadRequest(format!("parameter {name:?} is empty"))),
        other => Ok(other),
    }
}

fn seconds(micros: Micros) -> f64 {
    micros as f64 / 1e6
}

fn stale(message: String, age: Micros) -> ApiError {
    ApiError::Stale {
        message,
        age_seconds: seconds(age),
    }
}

/// Resolves a switch and a metric of a request, or says which is unknown.
fn series_of(
    store: &crate::server::store::Store,
    switch_id: &str,
    metric: &str,
) -> Result<(usize, usize), ApiError> {
    let metric_id = store
        .metrics()
        .id(metric)
        .ok_or_else(|| ApiError::NotFound(format!("unknown metric {metric:?}")))?;
    let switch = store
        .switch(switch_id)
        .ok_or_else(|| ApiError::NotFound(format!("unknown switch_id {switch_id:?}")))?;
    if !store.has_metric(switch, metric_id) {
        return Err(ApiError::NotFound(format!(
            "switch {switch_id:?} has no {metric:?} samples"
        )));
    }
    Ok((switch, metric_id))
}

/// The metrics server's request handler.
pub struct Api {
    store: StoreHandle,
    stats: Arc<ApiStats>,
    ingest: Arc<IngestStats>,
    max_age: Micros,
    lists: AnswerCache<usize>,
    aggregates: AnswerCache<Option<Micros>>,
    auth: Option<Arc<Auth>>,
    limiter: Option<RateLimiter>,
    http: Arc<http::HttpMonitor>,
    watch: Option<Arc<Watch>>,
}

impl Api {
    pub fn new(
        store: StoreHandle,
        stats: Arc<ApiStats>,
        ingest: Arc<IngestStats>,
        max_age: Duration,
    ) -> Api {
        Api {
            store,
            stats,
            ingest,
            max_age: timestamp::duration_micros(max_age),
            lists: AnswerCache::default(),
            aggregates: AnswerCache::default(),
            auth: None,
            limiter: None,
            http: http::HttpMonitor::new(),
            watch: None,
        }
    }

    /// Reports the server's watched threads (`/healthz`, `/readyz`, `/metrics`, stats).
    pub fn with_watch(mut self, watch: Arc<Watch>) -> Api {
        self.watch = Some(watch);
        self
    }

    /// Reports the counters of the HTTP server that runs this API (`/metrics`, stats).
    pub fn with_http_monitor(mut self, monitor: Arc<http::HttpMonitor>) -> Api {
        self.http = monitor;
        self
    }

    /// Requires a bearer token from `auth` and/or limits each client's request rate.
    pub fn with_access(mut self, auth: Option<Arc<Auth>>, limiter: Option<RateLimiter>) -> Api {
        self.auth = auth;
        self.limiter = limiter;
        self
    }

    /// The client's rate limit, then authentication. `/healthz` is always open.
    ///
    /// The limit comes first so that a flood without a valid token is refused with 429 (by
    /// address) instead of costing a token check and a 401 each, forever.
    fn admit(&self, head: &RequestHead) -> Result<(), ApiError> {
        if head.path_and_query().0 == "/healthz" {
            return Ok(());
        }
        let by_address = head.remote_ip.map_or(Client::Unknown, Client::Address);
        let verified =
            self.auth
                .as_ref()
                .map(|auth| match access::bearer(head.authorization.as_deref()) {
                    None => Err(ApiError::Unauthorized(
                        "missing bearer token (Authorization: Bearer <token>)".to_string(),
                    )),
                    Some(token) => auth
                        .verify(token)
                        .ok_or_else(|| ApiError::Unauthorized("invalid bearer token".to_string())),
                });
        let client = match &verified {
            Some(Ok(token)) => Client::Token(*token),
            _ => by_address,
        };
        if let Some(limiter) = &self.limiter {
            if let Err(retry_after) = limiter.check(client, Instant::now()) {
                self.stats.rate_limited();
                return Err(ApiError::TooManyRequests { retry_after });
            }
        }
        match verified {
            Some(Err(refused)) => Err(refused),
            _ => Ok(()),
        }
    }

    fn route(&self, head: &RequestHead) -> (Option<Endpoint>, Result<Reply, ApiError>) {
        let (path, raw_query) = head.path_and_query();
        let Some(route) = Route::of(path) else {
            return (
                None,
                Err(ApiError::NotFound(format!("no such endpoint: {path}"))),
            );
        };
        let endpoint = route.endpoint();
        if !head.is_read() {
            return (endpoint, Err(ApiError::MethodNotAllowed));
        }
        let endpoint = match route {
            Route::Healthz => return (None, self.liveness()),
            Route::Readyz => return (None, self.readiness()),
            Route::Metrics => return (None, Ok(self.prometheus(head.accept.as_deref()))),
            Route::Telemetry(endpoint) => endpoint,
        };
        let query = match Query::parse(raw_query.unwrap_or("")) {
            Ok(query) => query,
            Err(e) => return (Some(endpoint), Err(e.into())),
        };
        let result = match endpoint {
            Endpoint::GetMetric => self.get_metric(&query),
            Endpoint::ListMetrics => self.list_metrics(&query),
            Endpoint::AggregateMetrics => self.aggregate_metrics(&query),
            Endpoint::Stats => json_reply(&stats::report(
                &self.stats,
                &self.ingest,
                self.http.counters(),
                self.threads(),
            )),
            Endpoint::History => self.history(&query),
        };
        (Some(endpoint), result)
    }

    /// The Prometheus exposition; copied out under the read lock, rendered after.
    fn prometheus(&self, accept: Option<&str>) -> Reply {
        let now = timestamp::now_micros();
        let telemetry = exposition::collect(&self.store.read(), now, self.max_age);
        let openmetrics = exposition::wants_openmetrics(accept);
        let body = exposition::render(
            &telemetry,
            &self.stats,
            &self.ingest,
            &self.http.counters(),
            &self.threads(),
            now,
            openmetrics,
        );
        Reply {
            status: 200,
            content_type: if openmetrics {
                exposition::OPENMETRICS
            } else {
                exposition::TEXT
            },
            // The format follows `Accept`: a cache must not serve one scraper the other's.
            headers: vec![("Vary", "Accept".to_string())],
            body: ReplyBody::Owned(body.into_bytes()),
        }
    }

    /// Alive: always 200 while the process answers; the body says `ok`, or `failing` and
    /// which parts, and nothing more (it is open without a token: details such as error
    /// messages and paths stay in `/telemetry/stats`, behind auth when auth is on).
    fn liveness(&self) -> Result<Reply, ApiError> {
        let failing = self.failing_parts();
        let body = if failing.is_empty() {
            serde_json::json!({ "status": "ok" })
        } else {
            serde_json::json!({ "status": "failing", "failing": failing })
        };
        json_reply(&body)
    }

    /// The parts of the server that are failing now: `storage` (writes to the data directory
    /// fail; history goes on in memory), and threads that are down or panicked within the
    /// last minute (by name: `poller-0`, `store`, ...).
    fn failing_parts(&self) -> Vec<String> {
        let mut failing = Vec::new();
        if self
            .ingest
            .storage()
            .is_some_and(|storage| storage.report().status != "ok")
        {
            failing.push("storage".to_string());
        }
        if let Some(watch) = &self.watch {
            failing.extend(watch.failing());
        }
        failing
    }

    /// Storage health for `/readyz`, which is behind auth when auth is on.
    fn storage_health(&self) -> Option<serde_json::Value> {
        let storage = self.ingest.storage()?.report();
        Some(serde_json::json!({
            "status": storage.status,
            "last_error": storage.last_error,
            "write_errors": storage.counters.write_errors,
        }))
    }

    fn threads(&self) -> Vec<crate::shared::watch::ThreadReport> {
        self.watch.as_ref().map(|w| w.report()).unwrap_or_default()
    }

    fn readiness(&self) -> Result<Reply, ApiError> {
        if let Some(thread) = self.watch.as_ref().and_then(|w| w.fatal()) {
            return Err(ApiError::NoData(format!(
                "not ready: the {thread} thread panicked; the process is stopping"
            )));
        }
        let sources = self.ingest.sources();
        let polled = sources.iter().filter(|s| s.last_success.is_some()).count();
        if polled == 0 {
            return Err(ApiError::NoData(
                "not ready: no source has been polled successfully yet".to_string(),
            ));
        }
        let now = timestamp::now_micros();
        match self.store.read().newest_timestamp() {
            None => Err(ApiError::NoData(
                "not ready: polls succeeded but no sample was accepted yet".to_string(),
            )),
            Some(newest) if now - newest > self.max_age => Err(stale(
                format!(
                    "not ready: the newest sample is {:.3} s old (max age {} s)",
                    seconds(now - newest),
                    seconds(self.max_age)
                ),
                now - newest,
            )),
            Some(newest) => {
                let mut body = serde_json::json!({
                    "status": "ready",
                    "newest_sample_age_seconds": seconds(now - newest),
                    "sources_polled": polled,
                    "sources": sources.len(),
                });
                if let Some(storage) = self.storage_health() {
                    body["storage"] = storage;
                }
                let failing = self.failing_parts();
                if !failing.is_empty() {
                    body["failing"] = failing.into();
                }
                json_reply(&body)
            }
        }
    }

    fn get_metric(&self, query: &Query) -> Result<Reply, ApiError> {
        let switch_id = required(query, "switch_id")?;
        let metric = required(query, "metric")?;
        let (sample, kind) = {
            let store = self.store.read();
            let (switch, metric_id) = series_of(&store, switch_id, metric)?;
            let sample = store.latest(switch, metric_id);
            (sample, store.metrics().kind(metric_id))
        };
        let sample = sample.ok_or_else(|| {
            ApiError::NotFound(format!("switch {switch_id:?} has no {metric:?} samples"))
        })?;
        let age = timestamp::now_micros() - sample.timestamp;
        if age > self.max_age {
            return Err(stale(
                format!(
                    "stale data: the newest {metric} sample of {switch_id} is {:.3} s old (max age {} s)",
                    seconds(age),
                    seconds(self.max_age)
                ),
                age,
            ));
        }
        json_reply(&GetBody {
            switch_id,
            metric,
            value: Number {
                value: sample.value,
                kind,
            },
            timestamp: Timestamp(sample.timestamp),
        })
    }

    fn list_metrics(&self, query: &Query) -> Result<Reply, ApiError> {
        let metric = required(query, "metric")?;
        let metric_id = self
            .store
            .read()
            .metrics()
            .id(metric)
            .ok_or_else(|| ApiError::NotFound(format!("unknown metric {metric:?}")))?;
        let now = timestamp::now_micros();
        let generation = self.store.generation();
        let cached = self.lists.get_or_build(metric_id, generation, now, || {
            self.build_list(metric, metric_id, generation, now)
        });
        shared_reply(&cached)
    }

    /// Every fresh sample of `metric_id`; valid until its oldest entry turns stale.
    fn build_list(&self, metric: &str, metric_id: usize, generation: u64, now: Micros) -> Cached {
        let oldest_allowed = now - self.max_age;
        let (entries, kind, newest) = {
            let store = self.store.read();
            let mut entries = Vec::new();
            let mut newest: Option<Micros> = None;
            for (switch, switch_id) in store.switch_ids().iter().enumerate() {
                let Some(sample) = store.latest(switch, metric_id) else {
                    continue;
                };
                newest = Some(newest.map_or(sample.timestamp, |n| n.max(sample.timestamp)));
                if sample.timestamp >= oldest_allowed {
                    entries.push((Arc::clone(switch_id), sample));
                }
            }
            (entries, store.metrics().kind(metric_id), newest)
        };
        let oldest_included = entries.iter().map(|(_, s)| s.timestamp).min();
        let answer = if entries.is_empty() {
            Err(match newest {
                Some(newest) => stale(
                    format!(
                        "stale data: no switch has a fresh {metric} sample; the newest is {:.3} s old (max age {} s)",
                        seconds(now - newest),
                        seconds(self.max_age)
                    ),
                    now - newest,
                ),
                None => ApiError::NoData(format!("no {metric} samples received yet")),
            })
        } else {
            let body = BySwitch(
                entries
                    .into_iter()
                    .map(|(id, s)| {
                        let entry = ListEntry {
                            value: Number {
                                value: s.value,
                                kind,
                            },
                            timestamp: Timestamp(s.timestamp),
                        };
                        (id, entry)
                    })
                    .collect(),
            );
            Ok(Arc::new(to_json(&body)))
        };
        Cached {
            generation,
            // A stale answer holds until new data comes (a new generation).
            valid_until: oldest_included.map_or(i64::MAX, |t| t + self.max_age),
            answer,
        }
    }

    fn aggregate_metrics(&self, query: &Query) -> Result<Reply, ApiError> {
        let window = optional(query, "window")?
            .map(|w| history::parse_span("window", w))
            .transpose()
            .map_err(ApiError::BadRequest)?;
        let now = timestamp::now_micros();
        let generation = self.store.generation();
        let cached = self.aggregates.get_or_build(window, generation, now, || {
            let body = self.build_aggregate(window.map(|w| now.saturating_sub(w)));
            Cached {
                generation,
                // A window slides with time: rebuild at least once a second even without
                // new data. Retained history only changes with the generation.
                valid_until: if window.is_some() {
                    now + 1_000_000
                } else {
                    i64::MAX
                },
                answer: Ok(Arc::new(body)),
            }
        });
        shared_reply(&cached)
    }

    /// Max latency, min bandwidth, total errors per switch: over the samples at or after
    /// `cutoff`, or over everything retained.
    fn build_aggregate(&self, cutoff: Option<Micros>) -> Vec<u8> {
        let entries = {
            let store = self.store.read();
            let metrics = [
                store.metrics().id("latency"),
                store.metrics().id("bandwidth"),
                store.metrics().id("errors"),
            ];
            let mut entries = Vec::new();
            for (switch, switch_id) in store.switch_ids().iter().enumerate() {
                let aggs: Vec<Option<MetricAgg>> = match cutoff {
                    Some(cutoff) => store.window_aggs(switch, &metrics, cutoff),
                    None => metrics
                        .iter()
                        .map(|m| m.and_then(|m| store.retained_agg(switch, m)))
                        .collect(),
                };
                let entry = AggregateEntry {
                    max_latency: aggs[0].map(|a| a.max),
                    min_bandwidth: aggs[1].map(|a| a.min),
                    total_errors: aggs[2].map(|a| a.sum as u64),
                };
                if aggs.iter().any(Option::is_some) {
                    entries.push((Arc::clone(switch_id), entry));
                }
            }
            entries
        };
        to_json(&BySwitch(entries))
    }

    fn history(&self, query: &Query) -> Result<Reply, ApiError> {
        let switch_id = required(query, "switch_id")?;
        let metric = required(query, "metric")?;
        let now = timestamp::now_micros();
        let bad = ApiError::BadRequest;
        let from = match optional(query, "from")? {
            Some(text) => history::parse_instant(text, now)
                .map_err(|e| bad(format!("parameter \"from\": {e}")))?,
            None => i64::MIN,
        };
        let to = match optional(query, "to")? {
            Some(text) => history::parse_instant(text, now)
                .map_err(|e| bad(format!("parameter \"to\": {e}")))?,
            None => now,
        };
        if from > to {
            return Err(bad(format!(
                "empty range: from ({}) is after to ({})",
                timestamp::to_rfc3339(from),
                timestamp::to_rfc3339(to)
            )));
        }
        let step = optional(query, "step")?
            .map(|s| history::parse_span("step", s))
            .transpose()
            .map_err(bad)?;
        if let Some(step) = step {
            if from == i64::MIN {
                return Err(bad("parameter \"step\" needs \"from\"".to_string()));
            }
            let buckets = history::bucket_count(from, to, step);
            if buckets > MAX_POINTS as u64 {
                return Err(bad(format!(
                    "{buckets} steps of {} between from and to; the limit is {MAX_POINTS}: use a larger step",
                    humantime::format_duration(Duration::from_micros(step as u64))
                )));
            }
        }
        let (kind, raw, buckets, truncated) = {
            let store = self.store.read();
            let (switch, metric_id) = series_of(&store, switch_id, metric)?;
            let mut raw: Vec<Sample> = Vec::new();
            let mut downsampler = step.map(|step| Downsampler::new(from, step));
            let mut truncated = false;
            store.history(
                switch,
                metric_id,
                from,
                to,
                &mut |sample| match &mut downsampler {
                    Some(down) => {
                        down.add(sample);
                        true
                    }
                    None if raw.len() < MAX_POINTS => {
                        raw.push(sample);
                        true
                    }
                    None => {
                        truncated = true;
                        false
                    }
                },
            );
            let buckets = downsampler.map(Downsampler::finish);
            (store.metrics().kind(metric_id), raw, buckets, truncated)
        };
        if truncated {
            let span =
                seconds(to.saturating_sub(from.max(raw.first().map_or(from, |s| s.timestamp))));
            let suggested = (span / MAX_POINTS as f64).ceil().max(1.0);
            return Err(bad(format!(
                "more than {MAX_POINTS} samples in range; narrow from/to or downsample with step (e.g. step={suggested}s)"
            )));
        }
        match buckets {
            Some(buckets) => json_reply(
                &buckets
                    .iter()
                    .map(|b| bucket_json(b, kind))
                    .collect::<Vec<_>>(),
            ),
            None => json_reply(
                &raw.iter()
                    .map(|s| HistoryPoint {
                        timestamp: Timestamp(s.timestamp),
                        value: Number {
                            value: s.value,
                            kind,
                        },
                    })
                    .collect::<Vec<_>>(),
            ),
        }
    }
}

/// What a path is: a telemetry endpoint (with its latency entry in `/telemetry/stats`) or one
/// of the operational paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Telemetry(Endpoint),
    Healthz,
    Readyz,
    Metrics,
}

/// Every path the API answers, written once: routing, the `route` label of `/metrics` and
/// the latency entries of `/telemetry/stats` all come from it.
const ROUTES: [(&str, Route); 8] = [
    ("/telemetry/get", Route::Telemetry(Endpoint::GetMetric)),
    ("/telemetry/list", Route::Telemetry(Endpoint::ListMetrics)),
    (
        "/telemetry/aggregate",
        Route::Telemetry(Endpoint::AggregateMetrics),
    ),
    ("/telemetry/stats", Route::Telemetry(Endpoint::Stats)),
    ("/telemetry/history", Route::Telemetry(Endpoint::History)),
    ("/healthz", Route::Healthz),
    ("/readyz", Route::Readyz),
    ("/metrics", Route::Metrics),
];

impl Route {
    fn of(path: &str) -> Option<Route> {
        ROUTES.iter().find(|(p, _)| *p == path).map(|&(_, r)| r)
    }

    fn endpoint(self) -> Option<Endpoint> {
        match self {
            Route::Telemetry(endpoint) => Some(endpoint),
            _ => None,
        }
    }

    /// The `route` label of a path in `/metrics`: a fixed set (`other` for every unknown
    /// path), so clients cannot mint series.
    fn label(route: Option<Route>) -> &'static str {
        match route {
            Some(Route::Telemetry(endpoint)) => endpoint.name(),
            Some(Route::Healthz) => "healthz",
            Some(Route::Readyz) => "readyz",
            Some(Route::Metrics) => "metrics",
            None => "other",
        }
    }
}

fn bucket_json(bucket: &Bucket, kind: MetricKind) -> HistoryBucket {
    HistoryBucket {
        timestamp: Timestamp(bucket.start),
        min: Number {
            value: bucket.min,
            kind,
        },
        avg: bucket.avg(),
        max: Number {
            value: bucket.max,
            kind,
        },
        count: bucket.count,
    }
}

impl http::Handler for Api {
    fn handle(&self, head: &RequestHead) -> Reply {
        let started = Instant::now();
        self.stats.request_arrived();
        let (endpoint, reply) = match http::check_limits(head) {
            Some(reply) => (None, reply),
            // Caught here as well as in the worker so a panic is counted as an error.
            None => match catch_unwind(AssertUnwindSafe(|| {
                crate::shared::watch::injected_panic_point();
                match self.admit(head) {
                    Ok(()) => self.route(head),
                    Err(refused) => (None, Err(refused)),
                }
            })) {
                Ok((endpoint, result)) => (endpoint, result.unwrap_or_else(ApiError::into_reply)),
                Err(_) => {
                    self.http.record_panic();
                    http::log_handler_panic(head);
                    (None, Reply::error(500, "internal error"))
                }
            },
        };
        let route = Route::label(Route::of(head.path_and_query().0));
        self.stats
            .request_finished(route, endpoint, reply.status, started.elapsed());
        reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::store::{BlockLimits, Store};
    use crate::shared::feed::FeedBatch;
    use crate::shared::http::Handler;
    use crate::shared::metric::BUILTIN_METRICS;

    const S: i64 = timestamp::MICROS_PER_SEC;

    /// An API over a store holding `rows` one-second rows of `switch1` ending now.
    fn api_with_history(rows: i64) -> (Api, Micros) {
        let now = timestamp::now_micros();
        let mut batch = FeedBatch::with_metrics(&BUILTIN_METRICS);
        let first = now - (rows - 1) * S;
        for i in 0..rows {
            batch.push_row(
                "switch1",
                first + i * S,
                &[(i % 100) as f64, 0.5, (i % 3) as f64],
            );
        }
        let store = StoreHandle::new(Store::new(BlockLimits::for_retention(Duration::from_secs(
            7200,
        ))));
        store.apply(&batch);
        let api = Api::new(
            store,
            Arc::new(ApiStats::new()),
            Arc::new(IngestStats::new(&[])),
            Duration::from_secs(3),
        );
        (api, first)
    }

    fn call(api: &Api, url: &str) -> (u16, serde_json::Value) {
        let reply = api.handle(&RequestHead::get(url));
        let body = serde_json::from_slice(reply.body_bytes()).expect("JSON body");
        (reply.status, body)
    }

    #[test]
    fn history_caps_points_and_suggests_a_step() {
        let (api, first) = api_with_history(11_500);
        let (status, body) = call(
            &api,
            "/telemetry/history?switch_id=switch1&metric=bandwidth",
        );
        assert_eq!(status, 400);
        let message = body["error"].as_str().expect("error");
        assert!(
            message.contains("more than 11000") && message.contains("step="),
            "{message}"
        );
        let (status, body) = call(
            &api,
            "/telemetry/history?switch_id=switch1&metric=bandwidth&from=4h&step=1m",
        );
        assert_eq!(status, 200);
        let buckets = body.as_array().expect("array");
        let total: u64 = buckets
            .iter()
            .map(|b| b["count"].as_u64().expect("count"))
            .sum();
        assert_eq!(total, 11_500);
        let from = timestamp::to_rfc3339(first);
        let (status, body) = call(
            &api,
            &format!(
                "/telemetry/history?switch_id=switch1&metric=errors&from={from}&to={}",
                timestamp::to_rfc3339(first + 4 * S)
            ),
        );
        assert_eq!(status, 200);
        assert_eq!(
            body,
            serde_json::json!([
                {"timestamp": from, "value": 0},
                {"timestamp": timestamp::to_rfc3339(first + S), "value": 1},
                {"timestamp": timestamp::to_rfc3339(first + 2 * S), "value": 2},
                {"timestamp": timestamp::to_rfc3339(first + 3 * S), "value": 0},
                {"timestamp": timestamp::to_rfc3339(first + 4 * S), "value": 1},
            ])
        );
    }

    #[test]
    fn history_rejects_bad_ranges() {
        let (api, _) = api_with_history(10);
        for (query, fragment) in [
            ("from=5m&to=10m", "empty range"),
            ("from=yesterday", "\"from\""),
            ("to=later", "\"to\""),
            ("from=1h&step=0s", "greater than zero"),
            ("from=1h&step=fast", "duration"),
            ("step=1m", "needs \"from\""),
            ("from=100d&step=1s", "larger step"),
            ("from=", "empty"),
        ] {
            let (status, body) = call(
                &api,
                &format!("/telemetry/history?switch_id=switch1&metric=latency&{query}"),
            );
            assert_eq!(status, 400, "{query}: {body}");
            assert!(
                body["error"].as_str().expect("error").contains(fragment),
                "{query}: {body}"
            );
        }
        assert_eq!(
            call(&api, "/telemetry/history?switch_id=ghost&metric=latency").0,
            404
        );
        assert_eq!(
            call(&api, "/telemetry/history?switch_id=switch1&metric=nope").0,
            404
        );
    }

    /// Every byte but ASCII letters and digits as `%XX`.
    fn percent_encode(text: &str) -> String {
        text.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => char::from(b).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(crate::proptest_cases()))]

        /// No from/to/step/window a client sends makes the handler panic (a 500): every
        /// overflow is checked, every bad value is a 400.
        #[test]
        fn arbitrary_time_parameters_never_panic(
            from in history::arbitrary_time_text(),
            to in history::arbitrary_time_text(),
            step in history::arbitrary_time_text(),
            window in history::arbitrary_time_text(),
        ) {
            static API: std::sync::OnceLock<Api> = std::sync::OnceLock::new();
            let api = API.get_or_init(|| api_with_history(10).0);
            let (from, to, step, window) =
                (percent_encode(&from), percent_encode(&to), percent_encode(&step), percent_encode(&window));
            for url in [
                format!("/telemetry/history?switch_id=switch1&metric=latency&from={from}&to={to}&step={step}"),
                format!("/telemetry/history?switch_id=switch1&metric=latency&from={from}&to={to}"),
                format!("/telemetry/aggregate?window={window}"),
            ] {
                let (status, body) = call(api, &url);
                proptest::prop_assert!(status == 200 || status == 400, "{url}: {status} {body}");
            }
        }
    }

    #[test]
    fn windowed_aggregates_cover_only_the_window() {
        let (api, _) = api_with_history(600);
        let (_, all) = call(&api, "/telemetry/aggregate");
        let (_, hour) = call(&api, "/telemetry/aggregate?window=1h");
        assert_eq!(all, hour);
        assert_eq!(all["switch1"]["total_errors"], 600); // (0 + 1 + 2) × 200
                                                         // Row i is (599 - i) s old: the last 9.5 s hold rows 590..=599.
        let (status, recent) = call(&api, "/telemetry/aggregate?window=9500ms");
        assert_eq!(status, 200);
        let errors: u64 = (590..600).map(|i| i % 3).sum();
        assert_eq!(recent["switch1"]["total_errors"], errors, "{recent}");
        assert_eq!(recent["switch1"]["min_bandwidth"], 90.0);
        assert_eq!(call(&api, "/telemetry/aggregate?window=soon").0, 400);
        assert_eq!(call(&api, "/telemetry/aggregate?window=").0, 400);
    }

    #[test]
    fn list_answers_are_shared_until_the_store_changes() {
        let (api, _) = api_with_history(5);
        let first = api.handle(&RequestHead::get("/telemetry/list?metric=bandwidth"));
        let second = api.handle(&RequestHead::get("/telemetry/list?metric=bandwidth"));
        let (ReplyBody::Shared { data: a, .. }, ReplyBody::Shared { data: b, .. }) =
            (&first.body, &second.body)
        else {
            panic!("list answers are shared bodies");
        };
        assert!(Arc::ptr_eq(a, b), "the second answer reuses the first");
        let mut batch = FeedBatch::with_metrics(&BUILTIN_METRICS);
        batch.push_row("switch2", timestamp::now_micros(), &[1.0, 1.0, 1.0]);
        api.store.apply(&batch);
        let third = api.handle(&RequestHead::get("/telemetry/list?metric=bandwidth"));
        assert!(String::from_utf8_lossy(third.body_bytes()).contains("switch2"));
    }
}
