//! The REST API: routing, handlers, and the one place an [`ApiError`] becomes a status and a
//! JSON body. Handlers read the newest published store [`View`] and never touch the store
//! thread, the feed, or a lock held by anyone doing I/O.
//!
//! Response shapes are the original's, byte for byte where clients could notice: key order,
//! integers for count metrics (`errors`, `total_errors`), and canonical timestamps.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use crate::http::{self, Reply, RequestHead};
use crate::metric::MetricKind;
use crate::query::{Query, QueryError};
use crate::stats::{self, ApiStats, Endpoint, IngestStats};
use crate::store::{Sample, SharedView, View};
use crate::timestamp::{self, Micros};

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
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> ApiError {
        ApiError::BadRequest(e.to_string())
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::BadRequest(m) | ApiError::NotFound(m) | ApiError::NoData(m) => f.write_str(m),
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
            ApiError::Stale { .. } | ApiError::NoData(_) => 503,
        }
    }

    /// The only place errors turn into HTTP.
    pub fn into_reply(self) -> Reply {
        let status = self.status();
        match &self {
            ApiError::MethodNotAllowed => Reply::error(status, &self.to_string())
                .with_header("Allow", "GET, HEAD".to_string()),
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

/// A canonical timestamp, serialized as a string without an intermediate `String`.
struct Timestamp(Micros);

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; timestamp::CANONICAL_LEN];
        timestamp::encode(self.0, &mut buf);
        s.serialize_str(std::str::from_utf8(&buf).unwrap_or_default())
    }
}

/// A JSON object keyed by switch id, in the store's (first-seen) order.
struct BySwitch<'a, T>(Vec<(&'a str, T)>);

impl<T: Serialize> Serialize for BySwitch<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (switch_id, entry) in &self.0 {
            map.serialize_entry(switch_id, entry)?;
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

fn json_reply<T: Serialize>(body: &T) -> Result<Reply, ApiError> {
    // Serializing plain structs of numbers and strings into memory cannot fail.
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    Ok(Reply::json(200, bytes))
}

fn required<'q>(query: &'q Query, name: &str) -> Result<&'q str, ApiError> {
    match query.get(name) {
        Some(value) if !value.is_empty() => Ok(value),
        Some(_) => Err(ApiError::BadRequest(format!("parameter {name:?} is empty"))),
        None => Err(ApiError::BadRequest(format!("missing parameter {name:?}"))),
    }
}

fn seconds(micros: Micros) -> f64 {
    micros as f64 / 1e6
}

/// The metrics server's request handler.
pub struct Api {
    view: SharedView,
    stats: Arc<ApiStats>,
    ingest: Arc<IngestStats>,
    max_age: Micros,
}

impl Api {
    pub fn new(
        view: SharedView,
        stats: Arc<ApiStats>,
        ingest: Arc<IngestStats>,
        max_age: Duration,
    ) -> Api {
        Api {
            view,
            stats,
            ingest,
            max_age: i64::try_from(max_age.as_micros()).unwrap_or(i64::MAX),
        }
    }

    fn route(&self, head: &RequestHead) -> (Option<Endpoint>, Result<Reply, ApiError>) {
        let (path, raw_query) = head.path_and_query();
        let endpoint = match path {
            "/telemetry/get" => Endpoint::GetMetric,
            "/telemetry/list" => Endpoint::ListMetrics,
            "/telemetry/aggregate" => Endpoint::AggregateMetrics,
            "/telemetry/stats" => Endpoint::Stats,
            _ => {
                return (
                    None,
                    Err(ApiError::NotFound(format!("no such endpoint: {path}"))),
                )
            }
        };
        if !head.is_read() {
            return (Some(endpoint), Err(ApiError::MethodNotAllowed));
        }
        let query = match Query::parse(raw_query.unwrap_or("")) {
            Ok(query) => query,
            Err(e) => return (Some(endpoint), Err(e.into())),
        };
        let result = match endpoint {
            Endpoint::GetMetric => self.get_metric(&query),
            Endpoint::ListMetrics => self.list_metrics(&query),
            Endpoint::AggregateMetrics => self.aggregate_metrics(),
            Endpoint::Stats => json_reply(&stats::report(&self.stats, &self.ingest)),
        };
        (Some(endpoint), result)
    }

    fn metric_id(view: &View, name: &str) -> Result<usize, ApiError> {
        view.metrics
            .id(name)
            .ok_or_else(|| ApiError::NotFound(format!("unknown metric {name:?}")))
    }

    fn get_metric(&self, query: &Query) -> Result<Reply, ApiError> {
        let switch_id = required(query, "switch_id")?;
        let metric = required(query, "metric")?;
        let view = self.view.latest();
        let metric_id = Self::metric_id(&view, metric)?;
        let switch_idx = view
            .switches
            .id(switch_id)
            .ok_or_else(|| ApiError::NotFound(format!("unknown switch_id {switch_id:?}")))?;
        let sample = view.latest(switch_idx, metric_id).ok_or_else(|| {
            ApiError::NotFound(format!("switch {switch_id:?} has no {metric:?} samples"))
        })?;
        let age = timestamp::now_micros() - sample.timestamp;
        if age > self.max_age {
            return Err(ApiError::Stale {
                message: format!(
                    "stale data: the newest {metric} sample of {switch_id} is {:.3} s old (max age {} s)",
                    seconds(age),
                    seconds(self.max_age)
                ),
                age_seconds: seconds(age),
            });
        }
        json_reply(&GetBody {
            switch_id,
            metric,
            value: Number {
                value: sample.value,
                kind: view.metrics.kind(metric_id),
            },
            timestamp: Timestamp(sample.timestamp),
        })
    }

    fn list_metrics(&self, query: &Query) -> Result<Reply, ApiError> {
        let metric = required(query, "metric")?;
        let view = self.view.latest();
        let metric_id = Self::metric_id(&view, metric)?;
        let kind = view.metrics.kind(metric_id);
        let oldest_allowed = timestamp::now_micros() - self.max_age;
        let mut entries = Vec::new();
        let mut newest: Option<Sample> = None;
        for (switch_idx, switch_id) in view.switches.iter() {
            let Some(sample) = view.latest(switch_idx, metric_id) else {
                continue;
            };
            if newest.is_none_or(|n| sample.timestamp > n.timestamp) {
                newest = Some(sample);
            }
            if sample.timestamp >= oldest_allowed {
                entries.push((
                    switch_id,
                    ListEntry {
                        value: Number {
                            value: sample.value,
                            kind,
                        },
                        timestamp: Timestamp(sample.timestamp),
                    },
                ));
            }
        }
        if entries.is_empty() {
            return Err(match newest {
                Some(sample) => {
                    let age = oldest_allowed + self.max_age - sample.timestamp;
                    ApiError::Stale {
                        message: format!(
                            "stale data: no switch has a fresh {metric} sample; the newest is {:.3} s old (max age {} s)",
                            seconds(age),
                            seconds(self.max_age)
                        ),
                        age_seconds: seconds(age),
                    }
                }
                None => ApiError::NoData(format!("no {metric} samples received yet")),
            });
        }
        json_reply(&BySwitch(entries))
    }

    fn aggregate_metrics(&self) -> Result<Reply, ApiError> {
        let view = self.view.latest();
        let latency = view.metrics.id("latency");
        let bandwidth = view.metrics.id("bandwidth");
        let errors = view.metrics.id("errors");
        let window =
            |switch_idx, metric: Option<usize>| metric.and_then(|m| view.window(switch_idx, m));
        let mut entries = Vec::new();
        for (switch_idx, switch_id) in view.switches.iter() {
            let entry = AggregateEntry {
                max_latency: window(switch_idx, latency).map(|w| w.max),
                min_bandwidth: window(switch_idx, bandwidth).map(|w| w.min),
                total_errors: window(switch_idx, errors).map(|w| w.total),
            };
            let retained = entry.max_latency.is_some()
                || entry.min_bandwidth.is_some()
                || entry.total_errors.is_some();
            if retained {
                entries.push((switch_id, entry));
            }
        }
        json_reply(&BySwitch(entries))
    }
}

impl http::Handler for Api {
    fn handle(&self, head: &RequestHead) -> Reply {
        let started = Instant::now();
        self.stats.request_arrived();
        let (endpoint, reply) = match http::check_limits(head) {
            Some(reply) => (None, reply),
            // Caught here as well as in the worker so a panic is counted as an error.
            None => match catch_unwind(AssertUnwindSafe(|| self.route(head))) {
                Ok((endpoint, result)) => (endpoint, result.unwrap_or_else(ApiError::into_reply)),
                Err(_) => {
                    log::error!("handler panicked on {} {}", head.method, head.url);
                    (None, Reply::error(500, "internal error"))
                }
            },
        };
        self.stats
            .request_finished(endpoint, reply.status, started.elapsed());
        reply
    }
}
