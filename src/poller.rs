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

use crate::feed::{self, FeedBatch, FeedError, Freshness};
use crate::logging::RateLimiter;
use crate::stats::IngestStats;
use crate::store::IngestBatch;
use crate::timestamp;

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
}

/// A poll that produced no rows.
#[derive(Debug)]
pub enum PollError {
    /// Connection refused, timeout, non-2xx status, …
    Request(ureq::Error),
    /// The body arrived but its header is unusable.
    Feed(FeedError),
}

impl fmt::Display for PollError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PollError::Request(e) => write!(f, "{e}"),
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

/// Fetches and parses one poll of the feed.
pub fn poll_once(agent: &ureq::Agent, config: &PollerConfig) -> Result<FeedBatch, PollError> {
    let response = agent.get(&config.url).call().map_err(PollError::Request)?;
    let freshness = Freshness {
        now: timestamp::now_micros(),
        max_age: i64::try_from(config.max_age.as_micros()).unwrap_or(i64::MAX),
    };
    let reader = response
        .into_body()
        .into_with_config()
        .limit(config.max_body_bytes)
        .reader();
    let mut batch = feed::parse_feed(reader, freshness);
    if let Some(FeedError::BadHeader(_)) = &batch.error {
        return Err(PollError::Feed(
            batch
                .error
                .take()
                .unwrap_or(FeedError::BadHeader(String::new())),
        ));
    }
    Ok(batch)
}

/// Per-source logging state: failures and rejected rows, each rate-limited.
struct SourceLog {
    url: String,
    failures: RateLimiter,
    rejects: RateLimiter,
    failing_since: Option<(Instant, u64)>,
}

impl SourceLog {
    fn failed(&mut self, error: &str) {
        let now = Instant::now();
        let (_, count) = self.failing_since.get_or_insert((now, 0));
        *count += 1;
        if let Some(held_back) = self.failures.allow(now) {
            let more = if held_back > 0 {
                format!(" ({held_back} more failures since the last report)")
            } else {
                String::new()
            };
            log::warn!("poll of {} failed: {error}{more}", self.url);
        }
    }

    fn succeeded(&mut self) {
        if let Some((since, count)) = self.failing_since.take() {
            log::info!(
                "source {} recovered after {count} failed polls over {:.1} s",
                self.url,
                since.elapsed().as_secs_f64()
            );
            self.failures.reset();
        }
    }

    fn rejected(&mut self, batch: &FeedBatch) {
        if batch.rejected.total() == 0 {
            return;
        }
        let Some(held_back) = self.rejects.allow(Instant::now()) else {
            return;
        };
        let counts: Vec<String> = batch
            .rejected
            .nonzero()
            .map(|(reason, n)| format!("{reason}: {n}"))
            .collect();
        let example = batch
            .examples
            .first()
            .map(|e| format!("; e.g. line {}: {} {}", e.line, e.reason, e.detail))
            .unwrap_or_default();
        let more = if held_back > 0 {
            format!(" ({held_back} more polls with rejected rows since the last report)")
        } else {
            String::new()
        };
        log::warn!(
            "{}: rejected {} of {} rows ({}){example}{more}",
            self.url,
            batch.rejected.total(),
            batch.rejected.total() + batch.len() as u64,
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
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("poller-{source}"))
        .spawn(move || run(source, &config, &batches, &stats, &stop))
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
        failures: RateLimiter::new(LOG_EVERY),
        rejects: RateLimiter::new(LOG_EVERY),
        failing_since: None,
    };
    let mut next_poll = Instant::now();
    loop {
        match stop.recv_timeout(next_poll.saturating_duration_since(Instant::now())) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let due = next_poll;
        next_poll += config.interval;
        match poll_once(&agent, config) {
            Ok(batch) => {
                let cut_short = batch.error.as_ref().map(ToString::to_string);
                match &cut_short {
                    Some(why) => log.failed(why),
                    None => log.succeeded(),
                }
                log.rejected(&batch);
                stats.add_rejected(&batch.rejected);
                stats.poll_succeeded(
                    source,
                    batch.len() as u64,
                    timestamp::now_micros(),
                    cut_short,
                );
                let message = IngestBatch {
                    source,
                    feed: batch,
                    due,
                    interval: config.interval,
                };
                select! {
                    send(batches, message) -> sent => if sent.is_err() { return },
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
