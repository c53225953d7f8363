//! Prometheus remote write 1.0: every accepted sample is pushed to a receiver (Prometheus with
//! `--web.enable-remote-write-receiver`, Thanos, Mimir, VictoriaMetrics, …) as a snappy-
//! compressed protobuf `WriteRequest`, in batches, with retries and exponential backoff.
//!
//! The store thread hands over each applied batch (shared, not copied) through a bounded
//! channel and never waits: when the queue is full the batch is dropped and counted. A down
//! receiver therefore costs memory up to the queue bound and nothing else; ingest and queries
//! go on. Series names and units are those of `/metrics` (latency in seconds).
//!
//! The protobuf is written by hand: the schema is five small messages, and code generation
//! would need `protoc` at build time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use serde::Serialize;

use crate::shared::feed::FeedBatch;
use crate::shared::metric::{Exposed, Value};
use crate::shared::wire::put_varint;

/// Samples per request (Prometheus's own default for `max_samples_per_send`).
pub const MAX_SAMPLES_PER_SEND: usize = 2_000;
/// Batches (one poll chunk each, up to 64k rows) the queue holds before dropping.
pub const QUEUE_BATCHES: usize = 64;
/// A partial send waits at most this long for more samples.
const FLUSH_AFTER: Duration = Duration::from_millis(200);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Rows of one applied batch that the store accepted.
pub struct Accepted {
    pub feed: Arc<FeedBatch>,
    pub rows: Vec<u32>,
    /// How each column of `feed` appears in Prometheus.
    pub exposed: Arc<[Arc<Exposed>]>,
}

/// Counters, shown in `/telemetry/stats` and `/metrics`.
#[derive(Debug, Default)]
pub struct RemoteWriteStats {
    pub samples_sent: AtomicU64,
    /// Dropped because the queue was full (receiver down or slow for long).
    pub samples_dropped: AtomicU64,
    /// Refused by the receiver for good (4xx other than 429).
    pub samples_rejected: AtomicU64,
    pub requests_failed: AtomicU64,
    pub retries: AtomicU64,
    /// Staleness markers sent for series that stopped.
    pub stale_markers: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

/// A copy of the counters for JSON.
#[derive(Debug, Serialize)]
pub struct RemoteWriteReport {
    pub url: String,
    pub samples_sent: u64,
    pub samples_dropped: u64,
    pub samples_rejected: u64,
    pub requests_failed: u64,
    pub retries: u64,
    pub stale_markers: u64,
    pub last_error: Option<String>,
}

impl RemoteWriteStats {
    pub fn report(&self, url: &str) -> RemoteWriteReport {
        RemoteWriteReport {
            url: url.to_string(),
            samples_sent: self.samples_sent.load(Ordering::Relaxed),
            samples_dropped: self.samples_dropped.load(Ordering::Relaxed),
            samples_rejected: self.samples_rejected.load(Ordering::Relaxed),
            requests_failed: self.requests_failed.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            stale_markers: self.stale_markers.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

/// The store thread's end: hands batches over without ever blocking.
#[derive(Clone)]
pub struct RemoteWriteQueue {
    sender: Sender<Accepted>,
    stats: Arc<RemoteWriteStats>,
}

/// Samples in the accepted rows of a batch.
fn sample_count(accepted: &Accepted) -> u64 {
    accepted
        .rows
        .iter()
        .map(|&r| {
            accepted
                .feed
                .row_values(r as usize)
                .iter()
                .filter(|v| v.is_some())
                .count() as u64
        })
        .sum()
}

impl RemoteWriteQueue {
    pub fn offer(&self, accepted: Accepted) {
        if accepted.rows.is_empty() {
            return;
        }
        match self.sender.try_send(accepted) {
            Ok(()) => {}
            Err(TrySendError::Full(dropped) | TrySendError::Disconnected(dropped)) => {
                self.stats
                    .samples_dropped
                    .fetch_add(sample_count(&dropped), Ordering::Relaxed);
            }
        }
    }
}

// ---- protobuf (prometheus/prompb: WriteRequest, TimeSeries, Label, Sample) ----

fn put_len_field(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, (field << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// One `TimeSeries` with a single sample; labels must come sorted by name.
/// The label fields of a `TimeSeries`: what identifies a series, byte for byte.
fn encode_labels(labels: &[(&str, &str)], out: &mut Vec<u8>) {
    out.clear();
    let mut label = Vec::new();
    for (name, val) in labels {
        label.clear();
        put_len_field(&mut label, 1, name.as_bytes());
        put_len_field(&mut label, 2, val.as_bytes());
        put_len_field(out, 1, &label);
    }
}

/// A `TimeSeries` of one sample, its labels already encoded.
fn put_encoded_series(
    out: &mut Vec<u8>,
    labels: &[u8],
    value: f64,
    timestamp_ms: i64,
    scratch: &mut Vec<u8>,
) {
    scratch.clear();
    scratch.extend_from_slice(labels);
    let mut sample = Vec::with_capacity(20);
    put_varint(&mut sample, (1 << 3) | 1);
    sample.extend_from_slice(&value.to_le_bytes());
    put_varint(&mut sample, 2 << 3);
    put_varint(&mut sample, timestamp_ms as u64);
    put_len_field(scratch, 2, &sample);
    put_len_field(out, 1, scratch);
}

/// A `WriteRequest` body (before compression) for some accepted rows; returns it and the
/// number of samples in it.
/// Prometheus' staleness marker: a NaN with these bits, which receivers read as "the series
/// ended here" (a plain NaN is a value).
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// The series sent lately, so that one that stops gets a staleness marker: the remote-write
/// spec asks a sender to mark a series that disappears, or receivers go on serving its last
/// value (Prometheus for 5 minutes). A series not sent for `--max-age` (gone from its feed,
/// or the feed is down) is marked once and forgotten.
#[derive(Default)]
pub struct Staleness {
    /// A series' encoded labels → timestamp of its newest sample sent, in ms.
    sent: HashMap<Vec<u8>, i64>,
}

impl Staleness {
    fn saw(&mut self, labels: &[u8], timestamp_ms: i64) {
        match self.sent.get_mut(labels) {
            Some(newest) => *newest = (*newest).max(timestamp_ms),
            None => {
                self.sent.insert(labels.to_vec(), timestamp_ms);
            }
        }
    }

    /// Markers, stamped `now_ms`, for the series not sent since `now_ms - max_age_ms`; those
    /// are forgotten. Returns the request body and how many markers it holds.
    pub fn expire(&mut self, now_ms: i64, max_age_ms: i64) -> (Vec<u8>, usize) {
        let mut out = Vec::new();
        let mut scratch = Vec::new();
        let mut marked = 0;
        self.sent.retain(|labels, newest| {
            if *newest >= now_ms - max_age_ms {
                return true;
            }
            let at = now_ms.max(*newest + 1);
            put_encoded_series(
                &mut out,
                labels,
                f64::from_bits(STALE_NAN),
                at,
                &mut scratch,
            );
            marked += 1;
            false
        });
        (out, marked)
    }

    /// Series being followed.
    pub fn len(&self) -> usize {
        self.sent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }
}

/// `exposed` says how each column of `feed` appears in Prometheus (the families `/metrics`
/// uses); every series encoded is noted in `staleness`.
pub fn encode_rows(
    feed: &FeedBatch,
    rows: &[u32],
    exposed: &[Arc<Exposed>],
    staleness: &mut Staleness,
) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(rows.len() * exposed.len() * 64);
    let mut scratch = Vec::new();
    let mut labels: Vec<(&str, &str)> = Vec::new();
    let mut encoded = Vec::new();
    let mut samples = 0;
    for &row in rows {
        let row = row as usize;
        let switch = feed.switch_id(row);
        let timestamp_ms = feed.timestamp(row).div_euclid(1000);
        for (column, &value) in exposed.iter().zip(feed.row_values(row)) {
            // Remote write 1.0 carries only doubles: a counter above 2^53 arrives rounded to
            // the nearest one (the API and `/metrics` keep it exact).
            let value = match value {
                None => continue,
                Some(Value::Float(v)) => v * column.scale,
                Some(Value::Int(v)) => v as f64,
            };
            labels.clear();
            labels.push(("__name__", &column.family));
            labels.push(("switch", switch));
            labels.extend(column.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            // The protocol wants labels sorted by name.
            labels.sort_unstable_by(|a, b| a.0.cmp(b.0));
            encode_labels(&labels, &mut encoded);
            put_encoded_series(&mut out, &encoded, value, timestamp_ms, &mut scratch);
            staleness.saw(&encoded, timestamp_ms);
            samples += 1;
        }
    }
    (out, samples)
}

/// How a send ended.
enum Sent {
    Ok,
    /// Worth retrying: network error, 5xx, 429.
    Retry(String),
    /// The receiver refuses this data for good.
    Rejected(String),
}

fn send(agent: &ureq::Agent, url: &str, body: &[u8]) -> Sent {
    let compressed = match snap::raw::Encoder::new().compress_vec(body) {
        Ok(c) => c,
        Err(e) => return Sent::Rejected(format!("snappy: {e}")),
    };
    let result = agent
        .post(url)
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .send(&compressed[..]);
    match result {
        Ok(response) if response.status().is_success() => Sent::Ok,
        Ok(response) => {
            let status = response.status().as_u16();
            if status == 429 || status >= 500 {
                Sent::Retry(format!("receiver answered {status}"))
            } else {
                Sent::Rejected(format!("receiver answered {status}"))
            }
        }
        Err(e) => Sent::Retry(e.to_string()),
    }
}

/// The running remote writer.
pub struct RemoteWriter {
    pub queue: RemoteWriteQueue,
    pub stats: Arc<RemoteWriteStats>,
    pub url: String,
    thread: JoinHandle<()>,
}

impl RemoteWriter {
    /// Starts the sender thread for `url`; it ends when `stop` fires or the queue is dropped.
    /// A series not sent for `max_age` gets a staleness marker.
    pub fn start(
        url: &str,
        max_age: Duration,
        stop: Receiver<()>,
        watch: &Arc<crate::shared::watch::Watch>,
    ) -> std::io::Result<RemoteWriter> {
        let (sender, receiver) = crossbeam_channel::bounded(QUEUE_BATCHES);
        let stats = Arc::new(RemoteWriteStats::default());
        let queue = RemoteWriteQueue {
            sender,
            stats: Arc::clone(&stats),
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .timeout_connect(Some(Duration::from_secs(2)))
            .http_status_as_error(false)
            .build()
            .into();
        let thread_stats = Arc::clone(&stats);
        let thread_url = url.to_string();
        // Restarted after a panic: the batch it held is lost (counted as dropped would need
        // it; it is not), the queue and its statistics carry on.
        let thread = watch.spawn_restarting("remote-write", stop.clone(), move || {
            run(
                &agent,
                &thread_url,
                &receiver,
                &stop,
                &thread_stats,
                max_age,
            )
        })?;
        Ok(RemoteWriter {
            queue,
            stats,
            url: url.to_string(),
            thread,
        })
    }

    pub fn join(self) {
        drop(self.queue);
        let _ = self.thread.join();
    }
}

/// Sends `body` until it is delivered or refused, backing off between tries; gives up early
/// only when `stop` fires. Returns false when stopping.
fn deliver(
    agent: &ureq::Agent,
    url: &str,
    body: &[u8],
    samples: usize,
    stop: &Receiver<()>,
    stats: &RemoteWriteStats,
) -> bool {
    let mut backoff = BACKOFF_MIN;
    let mut logged = false;
    loop {
        match send(agent, url, body) {
            Sent::Ok => {
                stats
                    .samples_sent
                    .fetch_add(samples as u64, Ordering::Relaxed);
                if logged {
                    log::info!(receiver = url; "remote write to {url} recovered");
                }
                return true;
            }
            Sent::Rejected(why) => {
                stats
                    .samples_rejected
                    .fetch_add(samples as u64, Ordering::Relaxed);
                stats.requests_failed.fetch_add(1, Ordering::Relaxed);
                log::warn!(receiver = url; "remote write to {url} refused {samples} samples: {why}");
                *stats.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                return true;
            }
            Sent::Retry(why) => {
                stats.requests_failed.fetch_add(1, Ordering::Relaxed);
                stats.retries.fetch_add(1, Ordering::Relaxed);
                if !logged {
                    log::warn!(receiver = url; "remote write to {url} failed, retrying with backoff: {why}");
                    logged = true;
                }
                *stats.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                match stop.recv_timeout(backoff) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return false,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

fn run(
    agent: &ureq::Agent,
    url: &str,
    queue: &Receiver<Accepted>,
    stop: &Receiver<()>,
    stats: &RemoteWriteStats,
    max_age: Duration,
) {
    let mut pending: Vec<Accepted> = Vec::new();
    let mut staleness = Staleness::default();
    let max_age_ms = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
    let mut last_sweep = Instant::now();
    let mut pending_rows = 0usize;
    let mut oldest: Option<Instant> = None;
    loop {
        crate::shared::watch::injected_panic_point();
        let wait = oldest.map_or(Duration::from_secs(1), |t| {
            FLUSH_AFTER.saturating_sub(t.elapsed())
        });
        crossbeam_channel::select! {
            recv(queue) -> msg => match msg {
                Ok(accepted) => {
                    pending_rows += accepted.rows.len();
                    pending.push(accepted);
                    oldest.get_or_insert_with(Instant::now);
                }
                Err(_) => return,
            },
            recv(stop) -> _ => return,
            default(wait) => {}
        }
        if last_sweep.elapsed() >= Duration::from_secs(1) {
            last_sweep = Instant::now();
            let now_ms = crate::shared::timestamp::now_micros() / 1000;
            let (body, markers) = staleness.expire(now_ms, max_age_ms);
            // Markers are not samples: `samples_sent` counts what was accepted from feeds.
            if markers > 0 {
                if !deliver(agent, url, &body, 0, stop, stats) {
                    return;
                }
                stats
                    .stale_markers
                    .fetch_add(markers as u64, Ordering::Relaxed);
            }
        }
        let due = oldest.is_some_and(|t| t.elapsed() >= FLUSH_AFTER);
        if pending.is_empty() || (pending_rows * 3 < MAX_SAMPLES_PER_SEND && !due) {
            continue;
        }
        for Accepted {
            feed,
            rows,
            exposed,
        } in pending.drain(..)
        {
            let per_row = feed.metrics.len().max(1);
            for chunk in rows.chunks((MAX_SAMPLES_PER_SEND / per_row).max(1)) {
                let (body, samples) = encode_rows(&feed, chunk, &exposed, &mut staleness);
                if samples > 0 && !deliver(agent, url, &body, samples, stop, stats) {
                    return;
                }
            }
        }
        pending_rows = 0;
        oldest = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_not_sent_for_max_age_is_marked_once_then_forgotten() {
        let mut staleness = Staleness::default();
        let mut labels = Vec::new();
        encode_labels(&[("__name__", "x"), ("switch", "sw1")], &mut labels);
        staleness.saw(&labels, 1_000);
        staleness.saw(&labels, 2_000);
        assert_eq!(staleness.expire(3_000, 1_000).1, 0, "seen within max age");
        let (body, marked) = staleness.expire(3_001, 1_000);
        assert_eq!(marked, 1);
        assert!(body.windows(8).any(|w| w == STALE_NAN.to_le_bytes()));
        assert!(body.windows(labels.len()).any(|w| w == labels.as_slice()));
        assert!(staleness.is_empty());
        assert_eq!(staleness.expire(10_000, 1_000).1, 0, "marked once");
    }

    #[test]
    fn varints_and_fields() {
        let mut out = Vec::new();
        put_varint(&mut out, 300);
        assert_eq!(out, [0xAC, 0x02]);
        out.clear();
        put_len_field(&mut out, 1, b"ab");
        assert_eq!(out, [0x0A, 2, b'a', b'b']);
    }

    #[test]
    fn a_row_becomes_one_series_per_present_value() {
        let mut feed = FeedBatch::with_metrics(&["bandwidth", "latency", "errors"]);
        feed.push_row("switch1", 1_700_000_000_123_456, &[72.34, f64::NAN, 3.0]);
        let mut names = crate::shared::metric::ExposedNames::default();
        let exposed: Vec<Arc<Exposed>> = feed
            .metrics
            .iter()
            .zip(&feed.kinds)
            .map(|(m, &kind)| Arc::new(names.assign(m, kind)))
            .collect();
        let (body, samples) = encode_rows(&feed, &[0], &exposed, &mut Staleness::default());
        assert_eq!(samples, 2);
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.contains("fabric_switch_bandwidth_gbps")
                && text.contains("fabric_switch_interval_errors")
        );
        assert!(!text.contains("latency"));
        assert!(body.windows(8).any(|w| w == 72.34f64.to_le_bytes()));
    }
}
