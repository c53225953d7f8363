//! The REST API: routing, handlers, and the one place an [`ApiError`] becomes a status and a
//! JSON body. Handlers read the store through its [`StoreHandle`], copy out what they need
//! under the read lock, and serialize after releasing it; they never touch a feed.
//!
//! Response shapes are the original's, byte for byte where clients could notice: key order,
//! integers for count metrics (`errors`, `total_errors`), and canonical timestamps. `/list`
//! and `/aggregate` answers are built once per store generation and shared (see [`cache`]).

mod body;
mod cache;
mod dashboard;
mod error;
pub mod exposition;
pub mod history;
pub mod rates;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::body::{
    bucket_json, json_reply, shared_reply, to_json, AggregateEntry, BySwitch, GetBody,
    HistoryPoint, ListEntry, Number, Timestamp,
};
use self::cache::{AnswerCache, Cached};
pub use self::error::ApiError;
use self::history::{Downsampler, MAX_POINTS};
use crate::server::access::{self, Auth, Client, RateLimiter};
use crate::server::names::{NameBook, Names};
use crate::server::query::Query;
use crate::server::stats::{self, ApiStats, Endpoint, IngestStats};
use crate::server::store::{MetricAgg, Sample, StoreHandle};
use crate::server::stream::{self, Filters, Hub, Refused};
use crate::shared::http::{self, Reply, ReplyBody, RequestHead};
use crate::shared::metric::MetricKind;
use crate::shared::timestamp::{self, Micros};
use crate::shared::watch::Watch;

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

/// Resolves a switch (by key, or by a name from `--names`) and a metric of a request, or says
/// which is unknown.
fn series_of(
    store: &crate::server::store::Store,
    names: &Names,
    switch_id: &str,
    metric: &str,
) -> Result<(usize, usize), ApiError> {
    let metric_id = store
        .metrics()
        .id(metric)
        .ok_or_else(|| ApiError::NotFound(format!("unknown metric {metric:?}")))?;
    let switch = store
        .switch(switch_id)
        .or_else(|| names.key_of(switch_id).and_then(|key| store.switch(&key)))
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
    /// `/telemetry/top` rankings by (metric, window), for every `k`.
    rankings: rates::RankingCache,
    names: Arc<NameBook>,
    /// Live subscribers of `/telemetry/stream`.
    hub: Option<Arc<Hub>>,
    /// How long a stream's client may take to accept each event.
    stream_write_timeout: Duration,
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
            rankings: rates::RankingCache::default(),
            names: Arc::new(NameBook::empty()),
            hub: None,
            stream_write_timeout: Duration::from_secs(10),
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

    /// Serves `/telemetry/stream` from `hub`.
    pub fn with_stream(mut self, hub: Arc<Hub>) -> Api {
        self.hub = Some(hub);
        self
    }

    /// Shows and resolves readable names of series (`--names`).
    pub fn with_names(mut self, names: Arc<NameBook>) -> Api {
        self.names = names;
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
        // The dashboard page is static (no data): the browser must load it before it can
        // send a token, so it is open like `/healthz`; every call it makes needs the token.
        if matches!(head.path_and_query().0, "/healthz" | "/") {
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
            Route::Stream => return (None, self.stream(raw_query.unwrap_or(""))),
            Route::Dashboard => return (None, Ok(dashboard::page())),
            Route::Catalog => return (None, self.catalog()),
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
                self.hub.as_ref().map(|hub| hub.report()),
            )),
            Endpoint::History => self.history(&query),
            Endpoint::Rate => self.rate(&query),
            Endpoint::Top => self.top(&query),
        };
        (Some(endpoint), result)
    }

    /// The Prometheus exposition; copied out under the read lock, rendered after.
    fn prometheus(&self, accept: Option<&str>) -> Reply {
        let now = timestamp::now_micros();
        let names = self.names.get();
        let telemetry = exposition::collect(&self.store.read(), &names, now, self.max_age);
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
        // Every configured source must have answered once: a source that never has is a
        // misconfiguration (a wrong URL, a token, a firewall) that a rollout should stop on,
        // while one that answered and fails now is an outage, which freshness reports.
        let never: Vec<String> = sources
            .iter()
            .filter(|s| s.last_success.is_none())
            .map(|s| match &s.last_error {
                Some(error) => format!("{} ({error})", s.url),
                None => format!("{} (not polled yet)", s.url),
            })
            .collect();
        if !never.is_empty() {
            return Err(ApiError::NoData(format!(
                "not ready: {} of {} sources never polled successfully: {}",
                never.len(),
                sources.len(),
                never.join("; ")
            )));
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

    /// `GET /telemetry/stream`: Server-Sent Events of the samples of every applied poll that
    /// match the `metric` and `switch_id` globs (each repeatable); see [`crate::server::stream`].
    fn stream(&self, raw_query: &str) -> Result<Reply, ApiError> {
        let hub = self
            .hub
            .as_ref()
            .ok_or_else(|| ApiError::NotFound("no stream here".to_string()))?;
        let query = Query::parse_repeatable(raw_query, &["metric", "switch_id"])?;
        let list = |name: &str| -> Result<Vec<String>, ApiError> {
            let values: Vec<String> = query.get_all(name).map(str::to_string).collect();
            if values.len() > stream::MAX_FILTERS {
                return Err(ApiError::BadRequest(format!(
                    "at most {} {name} filters",
                    stream::MAX_FILTERS
                )));
            }
            if values.iter().any(String::is_empty) {
                return Err(ApiError::BadRequest(format!("parameter {name:?} is empty")));
            }
            Ok(values)
        };
        let filters = Filters {
            metrics: list("metric")?,
            switches: list("switch_id")?,
        };
        let mut subscription = match hub.subscribe(filters) {
            Ok(subscription) => subscription,
            Err(Refused::Full) => {
                return Err(ApiError::Busy(
                    "too many stream subscribers (--max-subscribers); retry shortly".to_string(),
                ))
            }
            Err(Refused::Closed) => {
                return Err(ApiError::Busy("the server is stopping".to_string()))
            }
        };
        Ok(Reply {
            status: 200,
            content_type: "text/event-stream",
            // nginx (and proxies that honour it) must pass events through at once.
            headers: vec![("X-Accel-Buffering", "no".to_string())],
            body: ReplyBody::Stream {
                next: Box::new(move || subscription.next_piece()),
                write_timeout: self.stream_write_timeout,
            },
        })
    }

    /// `GET /telemetry/metrics`: the metrics known, with their kinds, and the freshness
    /// limit (what the dashboard needs to offer metrics and mark stale series).
    fn catalog(&self) -> Result<Reply, ApiError> {
        let (metrics, switches) = {
            let store = self.store.read();
            let table = store.metrics();
            let metrics = (0..table.len())
                .map(|id| {
                    let kind = match table.kind(id) {
                        MetricKind::Gauge => "gauge",
                        MetricKind::Count => "count",
                        MetricKind::Counter { .. } => "counter",
                    };
                    serde_json::json!({ "metric": table.name(id), "kind": kind })
                })
                .collect::<Vec<_>>();
            (metrics, store.n_switches())
        };
        json_reply(&serde_json::json!({
            "max_age_seconds": seconds(self.max_age),
            "switches": switches,
            "metrics": metrics,
        }))
    }

    /// The store's id of a metric, or 404.
    fn metric_id(&self, metric: &str) -> Result<usize, ApiError> {
        self.store
            .read()
            .metrics()
            .id(metric)
            .ok_or_else(|| ApiError::NotFound(format!("unknown metric {metric:?}")))
    }

    fn get_metric(&self, query: &Query) -> Result<Reply, ApiError> {
        let switch_id = required(query, "switch_id")?;
        let metric = required(query, "metric")?;
        let names = self.names.get();
        let (sample, kind) = {
            let store = self.store.read();
            let (switch, metric_id) = series_of(&store, &names, switch_id, metric)?;
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
        let metric_id = self.metric_id(metric)?;
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
                    entries.push((Arc::from(switch_id), sample));
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
            let names = self.names.get();
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
                            name: names.name_of(&id),
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
                    entries.push((Arc::from(switch_id), entry));
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
        let as_rate = match optional(query, "rate")? {
            None | Some("0") | Some("false") => false,
            Some("1") | Some("true") => true,
            Some(other) => return Err(bad(format!("parameter \"rate\": {other:?} is not 1 or 0"))),
        };
        let names = self.names.get();
        let (kind, raw, buckets, truncated) = {
            let store = self.store.read();
            let (switch, metric_id) = series_of(&store, &names, switch_id, metric)?;
            let mut kind = store.metrics().kind(metric_id);
            if as_rate && !kind.is_counter() {
                return Err(bad(format!(
                    "{metric:?} is a gauge, not a counter: rate=1 needs a counter"
                )));
            }
            let mut raw: Vec<Sample> = Vec::new();
            let mut downsampler = step.map(Downsampler::new);
            let mut truncated = false;
            // rate=1: each point is the rate since the sample before it (see `rates`).
            let mut rates = as_rate.then(|| history::RatePoints::new(kind));
            if as_rate {
                kind = MetricKind::Gauge;
            }
            store.history(switch, metric_id, from, to, &mut |sample| {
                let sample = match &mut rates {
                    Some(rates) => match rates.next(sample) {
                        Some(point) => point,
                        None => return true,
                    },
                    None => sample,
                };
                match &mut downsampler {
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
                }
            });
            let buckets = downsampler.map(Downsampler::finish);
            (kind, raw, buckets, truncated)
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
    Stream,
    Dashboard,
    Catalog,
}

/// Every path the API answers, written once: routing, the `route` label of `/metrics` and
/// the latency entries of `/telemetry/stats` all come from it.
const ROUTES: [(&str, Route); 13] = [
    ("/telemetry/get", Route::Telemetry(Endpoint::GetMetric)),
    ("/telemetry/list", Route::Telemetry(Endpoint::ListMetrics)),
    (
        "/telemetry/aggregate",
        Route::Telemetry(Endpoint::AggregateMetrics),
    ),
    ("/telemetry/stats", Route::Telemetry(Endpoint::Stats)),
    ("/telemetry/history", Route::Telemetry(Endpoint::History)),
    ("/telemetry/rate", Route::Telemetry(Endpoint::Rate)),
    ("/telemetry/top", Route::Telemetry(Endpoint::Top)),
    ("/healthz", Route::Healthz),
    ("/readyz", Route::Readyz),
    ("/metrics", Route::Metrics),
    ("/telemetry/stream", Route::Stream),
    ("/", Route::Dashboard),
    ("/telemetry/metrics", Route::Catalog),
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
            Some(Route::Stream) => "stream",
            Some(Route::Dashboard) => "dashboard",
            Some(Route::Catalog) => "metrics_catalog",
            None => "other",
        }
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
mod tests;
