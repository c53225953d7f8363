//! One poller thread per feed source: fetch the CSV (ureq, with timeouts and a body cap),
//! parse it as it streams in, and send the batch to the store thread.
//!
//! A source that is down, answers an error, hangs or sends garbage costs at most one timeout
//! per poll, is logged (rate-limited) and counted, and is picked up again on the next poll
//! that works. The poller waits on its stop channel, never in `sleep`, so shutdown is prompt.

use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, RecvTimeoutError, Sender};

use crate::server::cardinality::{Cardinality, Limits};
use crate::server::ingest::IngestBatch;
use crate::server::stats::{CellCounts, IngestStats};
use crate::shared::feed::{
    FeedBatch, FeedError, FeedReader, Freshness, RejectCounts, RejectExample, SourceOptions,
};
use crate::shared::logging::{self, LogThrottle};
use crate::shared::timestamp;
use crate::shared::watch::Watch;

/// How one source is polled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollerConfig {
    pub url: String,
    pub interval: Duration,
    /// Whole-request budget: connect, headers and body.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Larger bodies are cut at this size (complete rows before the cut are kept).
    pub max_body_bytes: u64,
    pub max_age: Duration,
    /// How its answers are read (format, key labels, counter columns).
    pub options: SourceOptions,
    /// How many series and metrics it may make the server hold.
    pub limits: Limits,
    /// Keys unseen this long stop counting against `limits`.
    pub retention: Duration,
}

/// A poll that produced no rows. Its `Display` says, in an operator's words, what went wrong
/// and which flag or setting bears on it; it is safe to log (see [`logging::escape`]).
#[derive(Debug)]
pub enum PollError {
    /// No connection within `--connect-timeout` (name resolution included).
    ConnectTimeout(Duration),
    /// The answer did not arrive whole within `--poll-timeout`.
    PollTimeout(Duration),
    /// The source answered with a non-2xx status.
    Status(u16),
    /// Connection refused, host not found, TLS, protocol, … (ureq's own words).
    Request(ureq::Error),
    /// The body arrived but its header is unusable.
    Feed(FeedError),
}

impl PollError {
    fn from_request(error: ureq::Error, config: &PollerConfig) -> PollError {
        use ureq::Timeout;
        match error {
            ureq::Error::Timeout(Timeout::Connect | Timeout::Resolve) => {
                PollError::ConnectTimeout(config.connect_timeout)
            }
            ureq::Error::Timeout(_) => PollError::PollTimeout(config.timeout),
            ureq::Error::StatusCode(code) => PollError::Status(code),
            other => PollError::Request(other),
        }
    }
}

impl fmt::Display for PollError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = |d: &Duration| humantime::format_duration(*d).to_string();
        match self {
            PollError::ConnectTimeout(limit) => write!(
                f,
                "no connection within --connect-timeout ({}): the host is down, unreachable or filtered",
                secs(limit)
            ),
            PollError::PollTimeout(limit) => write!(
                f,
                "the answer did not arrive whole within --poll-timeout ({}): the source is slow \
                 or its feed too large for that; raise --poll-timeout or poll less often",
                secs(limit)
            ),
            PollError::Status(code) => {
                let hint = match code {
                    401 | 403 => ": the source wants credentials",
                    404 => ": check the path in --source",
                    429 | 503 => ": the source is overloaded or rate-limiting",
                    _ => "",
                };
                write!(f, "the source answered HTTP {code}{hint}")
            }
            PollError::Request(ureq::Error::HostNotFound) => {
                f.write_str("host not found (DNS): check the host in --source")
            }
            PollError::Request(ureq::Error::ConnectionFailed) => {
                f.write_str("connection refused: nothing listens at that address and port")
            }
            PollError::Request(ureq::Error::Io(e))
                if e.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                f.write_str("connection refused: nothing listens at that address and port")
            }
            // ureq's messages can carry the source's own text (a Location header, a charset).
            PollError::Request(e) => write!(f, "{}", logging::escape(&e.to_string())),
            PollError::Feed(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for PollError {}

/// How often the same source may log the same kind of trouble.
const LOG_EVERY: Duration = Duration::from_secs(30);

fn agent_for(config: &PollerConfig) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(config.timeout))
        .timeout_connect(Some(config.connect_timeout))
        .http_status_as_error(true)
        .user_agent(concat!("fabric-telemetry/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// Rows per batch handed to the store while the rest of a feed is still being read, so
/// parsing and storing a large feed overlap.
pub const CHUNK_ROWS: usize = 65_536;

/// What one poll amounted to.
#[derive(Debug, Default)]
pub struct PollSummary {
    /// Rows accepted by the parser (the store may still reject duplicates).
    pub rows: u64,
    pub rejected: RejectCounts,
    /// The first rejected row, for the log.
    pub example: Option<RejectExample>,
    /// The body stopped early; the complete rows before the cut were delivered.
    pub cut_short: Option<FeedError>,
    /// The format the answer was read in.
    pub format: &'static str,
    pub cells: CellCounts,
    /// The first metric dropped for `--max-metrics`, for the log.
    pub first_dropped_metric: Option<String>,
}

/// Fetches one poll of the feed, handing its rows to `deliver` in chunks as they are
/// parsed. `deliver` returns false to abandon the poll (shutdown).
pub fn poll_once(
    agent: &ureq::Agent,
    config: &PollerConfig,
    bounds: &mut Cardinality,
    deliver: &mut dyn FnMut(FeedBatch) -> bool,
) -> Result<PollSummary, PollError> {
    let response = agent
        .get(&config.url)
        .call()
        .map_err(|e| PollError::from_request(e, config))?;
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let freshness = Freshness {
        now: timestamp::now_micros(),
        max_age: crate::shared::timestamp::duration_micros(config.max_age),
    };
    let reader = response
        .into_body()
        .into_with_config()
        .limit(config.max_body_bytes)
        .reader();
    let reader = std::io::BufReader::with_capacity(64 * 1024, reader);
    let mut parser = FeedReader::new(reader, content_type.as_deref(), freshness, &config.options)
        .map_err(PollError::Feed)?;
    let mut summary = PollSummary {
        format: parser.format_name(),
        ..PollSummary::default()
    };
    let retention = timestamp::duration_micros(config.retention);
    while let Some(mut batch) = parser.next_batch(CHUNK_ROWS) {
        let refused = bounds.admit(&mut batch, freshness.now, retention);
        summary.cells.metrics_dropped += refused.metrics;
        if summary.first_dropped_metric.is_none() {
            summary.first_dropped_metric = refused.first_metric;
        }
        summary.rows += batch.len() as u64;
        summary.cells.not_available += batch.not_available;
        summary.cells.bad_cells += batch.bad_cells;
        summary.cells.unkeyed += batch.unkeyed;
        summary.cells.other_shard += batch.other_shard;
        summary.rejected.merge(&batch.rejected);
        if summary.example.is_none() {
            summary.example = batch.examples.first().cloned();
        }
        if let Some(error) = batch.error.take() {
            summary.cut_short = Some(error);
        }
        if !deliver(batch) {
            break;
        }
    }
    Ok(summary)
}

/// Per-source logging state: failures and rejected rows, each rate-limited.
struct SourceLog {
    url: String,
    failures: LogThrottle,
    rejects: LogThrottle,
    dropped_metrics: LogThrottle,
    /// Failed polls in a row.
    failed_polls: u64,
    /// When the last successful poll ended (or the poller started): an outage is the time
    /// from there, not from the first failure's report, which comes a timeout later.
    last_ok: Instant,
}

impl SourceLog {
    /// `error` is a `PollError` or `FeedError` as text: already escaped where it embeds the
    /// source's text, so it goes into the log as it is.
    fn failed(&mut self, error: &str) {
        let now = Instant::now();
        self.failed_polls += 1;
        if let Some(held_back) = self.failures.allow(now) {
            let more = if held_back > 0 {
                format!(" ({held_back} more failures since the last report)")
            } else {
                String::new()
            };
            log::warn!(source = self.url.as_str(); "poll of {} failed: {error}{more}", self.url);
        }
    }

    fn succeeded(&mut self) {
        let count = std::mem::take(&mut self.failed_polls);
        if count > 0 {
            log::info!(
                source = self.url.as_str(), failed_polls = count;
                "source {} recovered: {count} failed poll{} in a row, no data from it for {:.1} s",
                self.url,
                if count == 1 { "" } else { "s" },
                self.last_ok.elapsed().as_secs_f64()
            );
            self.failures.reset();
        }
        self.last_ok = Instant::now();
    }

    fn rejected(&mut self, summary: &PollSummary) {
        if summary.cells.metrics_dropped > 0 {
            if let Some(held_back) = self.dropped_metrics.allow(Instant::now()) {
                log::warn!(
                    source = self.url.as_str(), metrics_dropped = summary.cells.metrics_dropped;
                    "{}: {} columns beyond --max-metrics dropped (first: {}){}",
                    self.url,
                    summary.cells.metrics_dropped,
                    logging::quote(summary.first_dropped_metric.as_deref().unwrap_or("")),
                    if held_back > 0 {
                        format!(" ({held_back} more polls with dropped columns since)")
                    } else {
                        String::new()
                    }
                );
            }
        }
        if summary.rejected.total() == 0 {
            return;
        }
        let Some(held_back) = self.rejects.allow(Instant::now()) else {
            return;
        };
        let counts: Vec<String> = summary
            .rejected
            .nonzero()
            .map(|(reason, n)| format!("{reason}: {n}"))
            .collect();
        // The example's detail quotes the feed's text (`logging::quote`) when it is made.
        let example = summary
            .example
            .as_ref()
            .map(|e| format!("; e.g. line {}: {} {}", e.line, e.reason, e.detail))
            .unwrap_or_default();
        let more = if held_back > 0 {
            format!(" ({held_back} more polls with rejected rows since the last report)")
        } else {
            String::new()
        };
        log::warn!(
            source = self.url.as_str(), rejected = summary.rejected.total();
            "{}: rejected {} of {} rows ({}){example}{more}",
            self.url,
            summary.rejected.total(),
            summary.rejected.total() + summary.rows,
            counts.join(", ")
        );
    }
}

/// Starts polling source number `source` every `config.interval` until `stop` fires.
pub fn spawn(
    source: usize,
    config: PollerConfig,
    batches: Sender<IngestBatch>,
    stats: Arc<IngestStats>,
    stop: Receiver<()>,
    watch: &Arc<Watch>,
) -> std::io::Result<JoinHandle<()>> {
    // Restarted after a panic: it holds nothing a fresh start loses (the next poll is due).
    watch.spawn_restarting(&format!("poller-{source}"), stop.clone(), move || {
        run(source, &config, &batches, &stats, &stop)
    })
}

fn run(
    source: usize,
    config: &PollerConfig,
    batches: &Sender<IngestBatch>,
    stats: &IngestStats,
    stop: &Receiver<()>,
) {
    let agent = agent_for(config);
    let mut log = SourceLog {
        url: config.url.clone(),
        failures: LogThrottle::new(LOG_EVERY),
        rejects: LogThrottle::new(LOG_EVERY),
        dropped_metrics: LogThrottle::new(LOG_EVERY),
        failed_polls: 0,
        last_ok: Instant::now(),
    };
    let mut bounds = Cardinality::new(config.limits);
    let mut next_poll = Instant::now();
    loop {
        match stop.recv_timeout(next_poll.saturating_duration_since(Instant::now())) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        crate::shared::watch::injected_panic_point();
        let due = next_poll;
        next_poll += config.interval;
        let message = |feed: FeedBatch, last: bool| IngestBatch {
            source,
            feed,
            due,
            interval: config.interval,
            last,
        };
        let mut stopping = false;
        let mut deliver = |feed: FeedBatch| {
            select! {
                send(batches, message(feed, false)) -> sent => sent.is_ok(),
                recv(stop) -> _ => { stopping = true; false },
            }
        };
        let outcome = poll_once(&agent, config, &mut bounds, &mut deliver);
        if stopping {
            return;
        }
        match outcome {
            Ok(summary) => {
                let cut_short = summary.cut_short.as_ref().map(ToString::to_string);
                match &cut_short {
                    Some(why) => log.failed(why),
                    None => log.succeeded(),
                }
                log.rejected(&summary);
                stats.add_rejected(&summary.rejected);
                stats.record_answer(source, summary.format, &summary.cells, bounds.series());
                stats.poll_succeeded(source, summary.rows, timestamp::now_micros(), cut_short);
                // Marks the poll complete: the store times it once every chunk is queryable.
                select! {
                    send(batches, message(FeedBatch::default(), true)) -> sent => if sent.is_err() { return },
                    recv(stop) -> _ => return,
                }
            }
            Err(e) => {
                let why = e.to_string();
                log.failed(&why);
                stats.poll_failed(source, why);
            }
        }
        let now = Instant::now();
        if next_poll < now {
            // A slow poll (timeout, huge feed): poll again now rather than in a burst; the
            // slots that passed meanwhile are polls that did not happen on time.
            let behind =
                now.duration_since(next_poll).as_secs_f64() / config.interval.as_secs_f64();
            stats.polls_missed(source, behind.floor() as u64);
            next_poll = now;
        }
    }
}
