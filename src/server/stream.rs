//! Live samples for `GET /telemetry/stream` (Server-Sent Events).
//!
//! The store thread offers every applied chunk of rows, and a marker when a poll is complete,
//! to the `stream` thread without waiting (a full channel drops the offer and counts it). Once
//! a poll is complete, that thread builds one event per distinct filter set — the samples of
//! the poll that match it, as JSON — and queues it for every subscriber with that filter set.
//! Each subscriber's queue is bounded (events and bytes): one that falls behind is cut off,
//! gets a last `event: dropped` once it has read what was queued, and is closed; nobody else
//! waits for it.
//!
//! Who writes: our HTTP server already gives every connection its own thread, which does all
//! of that connection's I/O under deadlines (see `vendor/tiny_http/PATCHED.md`). A stream's
//! connection thread takes its events from its queue and writes each one, flushed, within
//! `--request-timeout`; the API worker that accepted the subscription is free at once. A
//! subscriber costs one connection (bounded by `--max-connections`) and one queue (bounded by
//! `--max-subscribers`).
//!
//! Every complete poll has an id, the same for every subscriber, and every subscriber gets an
//! event for it (its `samples` may be empty), so a gap in the `id:`s is a lost event. A
//! comment line every 15 s of silence keeps proxies and clients from timing out.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use serde::Serialize;

use crate::server::names::NameBook;
use crate::shared::feed::FeedBatch;
use crate::shared::metric::{MetricKind, Value};
use crate::shared::timestamp;
use crate::shared::watch::Watch;

/// Events a subscriber may have waiting.
const QUEUE_EVENTS: usize = 32;
/// Bytes of events a subscriber may have waiting.
const QUEUE_BYTES: usize = 64 << 20;
/// Silence after which a comment line is sent.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Filters one subscription may give, of each kind.
pub const MAX_FILTERS: usize = 64;

/// Applied rows of a poll: the chunk they came in and which of its rows were accepted.
type Piece = (Arc<FeedBatch>, Vec<u32>);

/// What the store thread offers the `stream` thread.
pub enum Offer {
    /// Rows `rows` of `feed`, applied, from `source`.
    Rows {
        source: usize,
        feed: Arc<FeedBatch>,
        rows: Vec<u32>,
    },
    /// Every row of `source`'s current poll has been offered.
    PollDone { source: usize },
}

/// A subscription's filters: `metric` and `switch_id` globs (`*` matches any run of
/// characters); an empty list matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Filters {
    pub metrics: Vec<String>,
    pub switches: Vec<String>,
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters.
pub fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

impl Filters {
    fn metric(&self, metric: &str) -> bool {
        self.metrics.is_empty() || self.metrics.iter().any(|p| glob(p, metric))
    }

    fn switch(&self, switch_id: &str, name: Option<&str>) -> bool {
        self.switches.is_empty()
            || self
                .switches
                .iter()
                .any(|p| glob(p, switch_id) || name.is_some_and(|name| glob(p, name)))
    }
}

struct Subscriber {
    id: u64,
    filters: Filters,
    queue: Mutex<Option<Sender<Arc<Vec<u8>>>>>,
    queued_bytes: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
}

/// Counters of the stream, for `/telemetry/stats` and `/metrics`.
#[derive(Debug, Default, Serialize, Clone, PartialEq, Eq)]
pub struct StreamReport {
    pub subscribers: usize,
    /// Events queued for subscribers since start.
    pub events: u64,
    /// Subscribers cut off for falling behind.
    pub dropped: u64,
    /// Subscriptions refused at `--max-subscribers`.
    pub refused: u64,
    /// Offers from the store thread the stream thread was too busy to take (its subscribers
    /// see a gap in the ids).
    pub offers_missed: u64,
}

/// The subscribers, shared by the API (which adds them) and the `stream` thread.
pub struct Hub {
    subscribers: Mutex<Vec<Arc<Subscriber>>>,
    max_subscribers: usize,
    next_subscriber: AtomicU64,
    next_event: AtomicU64,
    closed: AtomicBool,
    events: AtomicU64,
    dropped: AtomicU64,
    refused: AtomicU64,
    offers_missed: AtomicU64,
    names: Arc<NameBook>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `--max-subscribers` are connected.
    Full,
    /// The server is stopping.
    Closed,
}

impl Hub {
    pub fn new(max_subscribers: usize, names: Arc<NameBook>) -> Arc<Hub> {
        Arc::new(Hub {
            subscribers: Mutex::new(Vec::new()),
            max_subscribers,
            next_subscriber: AtomicU64::new(0),
            next_event: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            events: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            offers_missed: AtomicU64::new(0),
            names,
        })
    }

    pub fn report(&self) -> StreamReport {
        StreamReport {
            subscribers: lock(&self.subscribers).len(),
            events: self.events.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            offers_missed: self.offers_missed.load(Ordering::Relaxed),
        }
    }

    /// A new subscriber with `filters`, unless `--max-subscribers` are connected.
    pub fn subscribe(self: &Arc<Hub>, filters: Filters) -> Result<Subscription, Refused> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Refused::Closed);
        }
        let mut subscribers = lock(&self.subscribers);
        if subscribers.len() >= self.max_subscribers {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::Full);
        }
        let (sender, receiver) = crossbeam_channel::bounded(QUEUE_EVENTS);
        let subscriber = Arc::new(Subscriber {
            id: self.next_subscriber.fetch_add(1, Ordering::Relaxed),
            filters,
            queue: Mutex::new(Some(sender)),
            queued_bytes: Arc::new(AtomicUsize::new(0)),
            dropped: Arc::new(AtomicBool::new(false)),
        });
        subscribers.push(Arc::clone(&subscriber));
        Ok(Subscription {
            hub: Arc::clone(self),
            id: subscriber.id,
            events: receiver,
            queued_bytes: Arc::clone(&subscriber.queued_bytes),
            dropped: Arc::clone(&subscriber.dropped),
            greeted: false,
            finished: false,
        })
    }

    fn unsubscribe(&self, id: u64) {
        lock(&self.subscribers).retain(|s| s.id != id);
    }

    /// Ends every stream (each after the events it has queued) and refuses new ones.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for subscriber in lock(&self.subscribers).drain(..) {
            lock(&subscriber.queue).take();
        }
    }

    /// Queues one event per subscriber for a complete poll's samples.
    fn publish(&self, source: usize, pieces: &[Piece]) {
        let id = self.next_event.fetch_add(1, Ordering::Relaxed);
        let subscribers: Vec<Arc<Subscriber>> = lock(&self.subscribers).clone();
        if subscribers.is_empty() {
            return;
        }
        let names = self.names.get();
        let name_of = |switch: &str| names.name_of(switch);
        // One body per distinct filter set, shared by its subscribers.
        let mut bodies: HashMap<&Filters, Arc<Vec<u8>>> = HashMap::new();
        let mut cut_off = Vec::new();
        for subscriber in &subscribers {
            let body = bodies.entry(&subscriber.filters).or_insert_with(|| {
                Arc::new(event(id, source, pieces, &subscriber.filters, &name_of))
            });
            let queue = lock(&subscriber.queue);
            let Some(sender) = queue.as_ref() else {
                continue;
            };
            let bytes = subscriber.queued_bytes.load(Ordering::Acquire);
            let fits = bytes + body.len() <= QUEUE_BYTES || bytes == 0;
            let sent = fits
                && match sender.try_send(Arc::clone(body)) {
                    Ok(()) => true,
                    Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
                };
            if sent {
                subscriber
                    .queued_bytes
                    .fetch_add(body.len(), Ordering::AcqRel);
                self.events.fetch_add(1, Ordering::Relaxed);
            } else {
                cut_off.push(subscriber.id);
            }
        }
        for id in cut_off {
            let mut subscribers = lock(&self.subscribers);
            if let Some(at) = subscribers.iter().position(|s| s.id == id) {
                let subscriber = subscribers.remove(at);
                subscriber.dropped.store(true, Ordering::Release);
                lock(&subscriber.queue).take();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[derive(Serialize)]
struct StreamSample<'a> {
    switch_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    metric: &'a str,
    value: Json,
    timestamp: String,
}

/// A value as JSON: counters and counts as integers, gauges as numbers.
struct Json(Value, MetricKind);

impl Serialize for Json {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match (self.0, self.1) {
            (Value::Int(v), _) => s.serialize_u64(v),
            (Value::Float(v), MetricKind::Count) => s.serialize_u64(v as u64),
            (Value::Float(v), _) => s.serialize_f64(v),
        }
    }
}

/// One SSE event: `id`, `event: samples`, and the matching samples as one JSON line.
fn event(
    id: u64,
    source: usize,
    pieces: &[Piece],
    filters: &Filters,
    name_of: &dyn Fn(&str) -> Option<String>,
) -> Vec<u8> {
    let mut samples = Vec::new();
    for (feed, rows) in pieces {
        let columns: Vec<(usize, &str, MetricKind)> = feed
            .metrics
            .iter()
            .zip(&feed.kinds)
            .enumerate()
            .filter(|(_, (metric, _))| filters.metric(metric))
            .map(|(i, (metric, &kind))| (i, metric.as_str(), kind))
            .collect();
        if columns.is_empty() {
            continue;
        }
        for &row in rows {
            let row = row as usize;
            let switch_id = feed.switch_id(row);
            let name = name_of(switch_id);
            if !filters.switch(switch_id, name.as_deref()) {
                continue;
            }
            let values = feed.row_values(row);
            let timestamp = timestamp::to_rfc3339(feed.timestamp(row));
            for &(column, metric, kind) in &columns {
                if let Some(value) = values[column] {
                    samples.push(StreamSample {
                        switch_id,
                        name: name.clone(),
                        metric,
                        value: Json(value, kind),
                        timestamp: timestamp.clone(),
                    });
                }
            }
        }
    }
    #[derive(Serialize)]
    struct Data<'a> {
        source: usize,
        samples: Vec<StreamSample<'a>>,
    }
    let mut out = String::with_capacity(64 + samples.len() * 96);
    let _ = write!(out, "id: {id}\nevent: samples\ndata: ");
    let data = serde_json::to_string(&Data { source, samples }).unwrap_or_default();
    out.push_str(&data);
    out.push_str("\n\n");
    out.into_bytes()
}

/// One subscriber's end: what its connection thread writes, piece by piece.
pub struct Subscription {
    hub: Arc<Hub>,
    id: u64,
    events: Receiver<Arc<Vec<u8>>>,
    queued_bytes: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
    greeted: bool,
    finished: bool,
}

impl Subscription {
    /// The next piece of the stream: a greeting first, then events as they come, a comment
    /// after `HEARTBEAT` of silence, `event: dropped` once after being cut off; `None` at
    /// the end.
    pub fn next_piece(&mut self) -> Option<Vec<u8>> {
        if !self.greeted {
            self.greeted = true;
            return Some(b"retry: 2000\n: connected\n\n".to_vec());
        }
        if self.finished {
            return None;
        }
        match self.events.recv_timeout(HEARTBEAT) {
            Ok(event) => {
                self.queued_bytes.fetch_sub(event.len(), Ordering::AcqRel);
                Some(event.to_vec())
            }
            Err(RecvTimeoutError::Timeout) => Some(b": heartbeat\n\n".to_vec()),
            Err(RecvTimeoutError::Disconnected) => {
                self.finished = true;
                self.dropped.load(Ordering::Acquire).then(|| {
                    b"event: dropped\ndata: {\"reason\":\"the client fell behind; reconnect\"}\n\n"
                        .to_vec()
                })
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(self.id);
    }
}

/// The store thread's end: offers never wait.
#[derive(Clone)]
pub struct StreamOutlet {
    offers: Sender<Offer>,
    hub: Arc<Hub>,
}

impl StreamOutlet {
    pub fn offer(&self, offer: Offer) {
        if let Err(TrySendError::Full(_)) = self.offers.try_send(offer) {
            self.hub.offers_missed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether anyone listens (the store thread skips the offers otherwise).
    pub fn has_subscribers(&self) -> bool {
        !lock(&self.hub.subscribers).is_empty()
    }
}

/// Starts the `stream` thread; it ends when `stop` fires or every outlet is gone.
pub fn spawn(
    hub: Arc<Hub>,
    stop: Receiver<()>,
    watch: &Arc<Watch>,
) -> std::io::Result<(StreamOutlet, JoinHandle<()>)> {
    let (offers, offered) = crossbeam_channel::bounded::<Offer>(256);
    let outlet = StreamOutlet {
        offers,
        hub: Arc::clone(&hub),
    };
    let thread_hub = Arc::clone(&hub);
    let handle = watch.spawn_restarting("stream", stop.clone(), move || {
        run(&thread_hub, &offered, &stop)
    })?;
    Ok((outlet, handle))
}

fn run(hub: &Hub, offered: &Receiver<Offer>, stop: &Receiver<()>) {
    let mut pending: HashMap<usize, Vec<Piece>> = HashMap::new();
    loop {
        crossbeam_channel::select! {
            recv(offered) -> offer => match offer {
                Ok(Offer::Rows { source, feed, rows }) => {
                    pending.entry(source).or_default().push((feed, rows));
                }
                Ok(Offer::PollDone { source }) => {
                    let pieces = pending.remove(&source).unwrap_or_default();
                    hub.publish(source, &pieces);
                }
                Err(_) => return,
            },
            recv(stop) -> _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("*", ""));
        assert!(glob("*", "anything"));
        assert!(glob("sw*", "sw12"));
        assert!(!glob("sw*", "leaf1"));
        assert!(glob("*:1", "0x0002c90300f172a0:1"));
        assert!(!glob("*:1", "0x0002c90300f172a0:11"));
        assert!(glob("Port*Data*", "PortXmitDataExtended"));
        assert!(glob("a*b*c", "abc"));
        assert!(!glob("a*b*c", "acb"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
        assert!(!glob("ab*ab", "ab"));
    }

    fn feed() -> Arc<FeedBatch> {
        let mut feed = FeedBatch::with_metrics(&["bandwidth", "errors"]);
        feed.push_row("sw1", 1_700_000_000_000_000, &[72.5, 3.0]);
        feed.push_row("sw2", 1_700_000_000_000_000, &[10.0, f64::NAN]);
        Arc::new(feed)
    }

    #[test]
    fn events_carry_the_matching_samples_and_slow_subscribers_are_cut_off() {
        let hub = Hub::new(4, Arc::new(NameBook::empty()));
        let mut all = hub.subscribe(Filters::default()).expect("room");
        let mut some = hub
            .subscribe(Filters {
                metrics: vec!["err*".to_string()],
                switches: vec!["sw1".to_string()],
            })
            .expect("room");
        assert_eq!(
            all.next_piece().as_deref(),
            Some(&b"retry: 2000\n: connected\n\n"[..])
        );
        some.next_piece();
        hub.publish(0, &[(feed(), vec![0, 1])]);
        let text = String::from_utf8(all.next_piece().expect("event")).expect("utf-8");
        assert!(text.starts_with("id: 1\nevent: samples\ndata: {"), "{text}");
        assert_eq!(text.matches("\"switch_id\"").count(), 3, "{text}");
        let text = String::from_utf8(some.next_piece().expect("event")).expect("utf-8");
        assert!(
            text.contains("\"metric\":\"errors\",\"value\":3,"),
            "{text}"
        );
        assert_eq!(text.matches("\"switch_id\"").count(), 1, "{text}");
        // `all` stops reading: once its queue is full it is cut off; `some` keeps getting
        // every event.
        for _ in 0..QUEUE_EVENTS + 1 {
            hub.publish(0, &[(feed(), vec![0])]);
            some.next_piece().expect("event");
        }
        assert_eq!(hub.report().dropped, 1);
        let mut last = None;
        while let Some(piece) = all.next_piece() {
            last = Some(piece);
        }
        let last = String::from_utf8(last.expect("a last piece")).expect("utf-8");
        assert!(last.starts_with("event: dropped\n"), "{last}");
        assert_eq!(hub.report().subscribers, 1);
    }

    #[test]
    fn the_cap_refuses_and_closing_ends_every_stream() {
        let hub = Hub::new(1, Arc::new(NameBook::empty()));
        let mut first = hub.subscribe(Filters::default()).expect("room");
        assert!(matches!(
            hub.subscribe(Filters::default()),
            Err(Refused::Full)
        ));
        first.next_piece();
        hub.close();
        assert_eq!(first.next_piece(), None);
        assert!(matches!(
            hub.subscribe(Filters::default()),
            Err(Refused::Closed)
        ));
        drop(first);
        assert_eq!(hub.report().subscribers, 0);
    }
}
