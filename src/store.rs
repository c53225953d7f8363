//! The telemetry store: every retained sample per switch and metric, the newest sample of each
//! series, and aggregates over the retained window, kept exact as samples arrive and expire.
//!
//! One thread owns the [`Store`] and is the only writer. After each change it publishes an
//! immutable [`View`] through a [`SharedView`]; API workers read views and never touch the
//! store, so a slow query cannot delay ingest and ingest never holds a lock readers wait on
//! (the lock guards one `Arc` swap).
//!
//! Per switch, samples are strictly increasing in time, as Prometheus's TSDB demands by
//! default: a sample at a timestamp already stored is a duplicate, an older one is out of
//! order; both are rejected and counted. That is what keeps a poll that sees the same tick
//! twice from counting its errors twice.
//!
//! Window min/max use monotonic deques (amortised O(1) per sample, exact under expiry);
//! totals of count metrics are integer sums, so expiry subtracts exactly.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{select, Receiver};

use crate::feed::{FeedBatch, RejectCounts, RejectReason};
use crate::metric::{self, MetricKind};
use crate::stats::IngestStats;
use crate::timestamp::{self, Micros};

/// One value at one time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub timestamp: Micros,
    pub value: f64,
}

/// Aggregates of one series over the retained window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowStats {
    pub min: f64,
    pub max: f64,
    /// Sum of values; exact for count metrics (integers below 2^53).
    pub total: u64,
    /// Samples in the window.
    pub count: u64,
}

#[derive(Debug, Default)]
struct MetricSeries {
    /// Aligned with the switch's timestamps; NaN where the row lacked this metric.
    values: VecDeque<f64>,
    latest: Option<Sample>,
    max_window: VecDeque<Sample>,
    min_window: VecDeque<Sample>,
    total: u64,
    count: u64,
}

impl MetricSeries {
    fn with_gap(len: usize) -> MetricSeries {
        MetricSeries {
            values: std::iter::repeat_n(f64::NAN, len).collect(),
            ..MetricSeries::default()
        }
    }

    fn push(&mut self, timestamp: Micros, value: f64, kind: MetricKind) {
        self.values.push_back(value);
        if value.is_nan() {
            return;
        }
        let sample = Sample { timestamp, value };
        self.latest = Some(sample);
        while self.max_window.back().is_some_and(|s| s.value <= value) {
            self.max_window.pop_back();
        }
        self.max_window.push_back(sample);
        while self.min_window.back().is_some_and(|s| s.value >= value) {
            self.min_window.pop_back();
        }
        self.min_window.push_back(sample);
        if kind == MetricKind::Count {
            self.total += value as u64;
        }
        self.count += 1;
    }

    /// Drops the oldest value, which was recorded at `timestamp`.
    fn pop_oldest(&mut self, timestamp: Micros, kind: MetricKind) {
        let Some(value) = self.values.pop_front() else {
            return;
        };
        if value.is_nan() {
            return;
        }
        if self
            .max_window
            .front()
            .is_some_and(|s| s.timestamp == timestamp)
        {
            self.max_window.pop_front();
        }
        if self
            .min_window
            .front()
            .is_some_and(|s| s.timestamp == timestamp)
        {
            self.min_window.pop_front();
        }
        if kind == MetricKind::Count {
            self.total -= value as u64;
        }
        self.count -= 1;
    }

    fn window(&self) -> Option<WindowStats> {
        Some(WindowStats {
            min: self.min_window.front()?.value,
            max: self.max_window.front()?.value,
            total: self.total,
            count: self.count,
        })
    }
}

#[derive(Debug)]
struct SwitchSeries {
    timestamps: VecDeque<Micros>,
    /// Indexed by metric id; shorter than the metric table until this switch sees a metric.
    metrics: Vec<MetricSeries>,
}

/// Names and kinds of the metrics seen so far, shared with views.
#[derive(Debug, Clone, Default)]
pub struct MetricTable {
    names: Vec<Arc<str>>,
    kinds: Vec<MetricKind>,
    index: HashMap<Arc<str>, usize>,
}

impl MetricTable {
    fn intern(&mut self, name: &str) -> usize {
        if let Some(&id) = self.index.get(name) {
            return id;
        }
        let name: Arc<str> = Arc::from(name);
        let id = self.names.len();
        self.names.push(Arc::clone(&name));
        self.kinds.push(metric::kind_of(&name));
        self.index.insert(name, id);
        id
    }

    pub fn id(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub fn name(&self, id: usize) -> &str {
        &self.names[id]
    }

    pub fn kind(&self, id: usize) -> MetricKind {
        self.kinds[id]
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Switch ids in first-seen order, shared with views.
#[derive(Debug, Clone, Default)]
pub struct SwitchTable {
    ids: Vec<Arc<str>>,
    index: HashMap<Arc<str>, usize>,
}

impl SwitchTable {
    pub fn id(&self, switch_id: &str) -> Option<usize> {
        self.index.get(switch_id).copied()
    }

    pub fn name(&self, idx: usize) -> &str {
        &self.ids[idx]
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (usize, &str)> {
        self.ids.iter().enumerate().map(|(i, id)| (i, &**id))
    }
}

/// What one batch did to the store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IngestOutcome {
    pub accepted: u64,
    pub rejected: RejectCounts,
}

/// All retained telemetry. Owned by the store thread.
#[derive(Debug)]
pub struct Store {
    metrics: Arc<MetricTable>,
    switch_table: Arc<SwitchTable>,
    switches: Vec<SwitchSeries>,
    retained_rows: u64,
}

impl Default for Store {
    fn default() -> Store {
        Store::new()
    }
}

impl Store {
    /// An empty store that knows the built-in metrics.
    pub fn new() -> Store {
        let mut metrics = MetricTable::default();
        for name in metric::BUILTIN_METRICS {
            metrics.intern(name);
        }
        Store {
            metrics: Arc::new(metrics),
            switch_table: Arc::new(SwitchTable::default()),
            switches: Vec::new(),
            retained_rows: 0,
        }
    }

    fn switch_idx(&mut self, switch_id: &str) -> usize {
        if let Some(idx) = self.switch_table.id(switch_id) {
            return idx;
        }
        // Copies the table only while a published view still shares it (rare after warm-up).
        let table = Arc::make_mut(&mut self.switch_table);
        let id: Arc<str> = Arc::from(switch_id);
        let idx = table.ids.len();
        table.ids.push(Arc::clone(&id));
        table.index.insert(id, idx);
        self.switches.push(SwitchSeries {
            timestamps: VecDeque::new(),
            metrics: Vec::new(),
        });
        idx
    }

    /// Stores the rows of `batch`, rejecting duplicates and out-of-order samples.
    pub fn ingest(&mut self, batch: &FeedBatch) -> IngestOutcome {
        let mut outcome = IngestOutcome::default();
        if batch.rows.is_empty() {
            return outcome;
        }
        let column_metric: Vec<usize> = {
            let table = Arc::make_mut(&mut self.metrics);
            batch
                .metrics
                .iter()
                .map(|name| table.intern(name))
                .collect()
        };
        let n_metrics = self.metrics.len();
        let mut row_values = vec![f64::NAN; n_metrics];
        for (row_idx, row) in batch.rows.iter().enumerate() {
            let idx = self.switch_idx(&row.switch_id);
            let switch = &mut self.switches[idx];
            if let Some(&newest) = switch.timestamps.back() {
                if row.timestamp == newest {
                    outcome.rejected.add(RejectReason::Duplicate, 1);
                    continue;
                }
                if row.timestamp < newest {
                    outcome.rejected.add(RejectReason::OutOfOrder, 1);
                    continue;
                }
            }
            row_values.fill(f64::NAN);
            for (&metric_id, &value) in column_metric.iter().zip(batch.row_values(row_idx)) {
                row_values[metric_id] = value;
            }
            let retained = switch.timestamps.len();
            while switch.metrics.len() < n_metrics {
                switch.metrics.push(MetricSeries::with_gap(retained));
            }
            switch.timestamps.push_back(row.timestamp);
            for (metric_id, series) in switch.metrics.iter_mut().enumerate() {
                series.push(
                    row.timestamp,
                    row_values[metric_id],
                    self.metrics.kind(metric_id),
                );
            }
            outcome.accepted += 1;
        }
        self.retained_rows += outcome.accepted;
        outcome
    }

    /// Drops every sample older than `cutoff`; returns how many rows went.
    pub fn evict_before(&mut self, cutoff: Micros) -> u64 {
        let mut dropped = 0;
        for switch in &mut self.switches {
            while let Some(&oldest) = switch.timestamps.front() {
                if oldest >= cutoff {
                    break;
                }
                switch.timestamps.pop_front();
                for (metric_id, series) in switch.metrics.iter_mut().enumerate() {
                    series.pop_oldest(oldest, self.metrics.kind(metric_id));
                }
                dropped += 1;
            }
        }
        self.retained_rows -= dropped;
        dropped
    }

    /// Rows (one timestamp per switch, all its metrics) currently retained.
    pub fn retained_rows(&self) -> u64 {
        self.retained_rows
    }

    /// An immutable picture of the newest samples and window aggregates, for readers.
    pub fn view(&self, generation: u64) -> View {
        let n_metrics = self.metrics.len();
        let mut latest = Vec::with_capacity(self.switches.len() * n_metrics);
        let mut window = Vec::with_capacity(self.switches.len() * n_metrics);
        for switch in &self.switches {
            for metric_id in 0..n_metrics {
                let series = switch.metrics.get(metric_id);
                latest.push(series.and_then(|s| s.latest));
                window.push(series.and_then(MetricSeries::window));
            }
        }
        View {
            generation,
            metrics: Arc::clone(&self.metrics),
            switches: Arc::clone(&self.switch_table),
            latest,
            window,
            retained_rows: self.retained_rows,
        }
    }
}

/// What readers see: the store as of one ingest generation.
#[derive(Debug)]
pub struct View {
    /// Increases with every change published.
    pub generation: u64,
    pub metrics: Arc<MetricTable>,
    pub switches: Arc<SwitchTable>,
    /// Switch-major, `metrics.len()` per switch.
    latest: Vec<Option<Sample>>,
    window: Vec<Option<WindowStats>>,
    pub retained_rows: u64,
}

impl View {
    pub fn empty() -> View {
        Store::new().view(0)
    }

    fn slot(&self, switch_idx: usize, metric_id: usize) -> usize {
        switch_idx * self.metrics.len() + metric_id
    }

    /// The newest sample of a series, if it ever had one.
    pub fn latest(&self, switch_idx: usize, metric_id: usize) -> Option<Sample> {
        self.latest
            .get(self.slot(switch_idx, metric_id))
            .copied()
            .flatten()
    }

    /// Aggregates over the retained window, if the series has retained samples.
    pub fn window(&self, switch_idx: usize, metric_id: usize) -> Option<WindowStats> {
        self.window
            .get(self.slot(switch_idx, metric_id))
            .copied()
            .flatten()
    }
}

/// The newest published [`View`], shared by the store thread (writer) and API workers.
#[derive(Clone)]
pub struct SharedView(Arc<RwLock<Arc<View>>>);

impl Default for SharedView {
    fn default() -> SharedView {
        SharedView(Arc::new(RwLock::new(Arc::new(View::empty()))))
    }
}

impl SharedView {
    pub fn latest(&self) -> Arc<View> {
        match self.0.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn publish(&self, view: View) {
        let view = Arc::new(view);
        match self.0.write() {
            Ok(mut guard) => *guard = view,
            Err(poisoned) => *poisoned.into_inner() = view,
        }
    }
}

/// Rows from one poll of one source.
#[derive(Debug)]
pub struct IngestBatch {
    pub source: usize,
    pub feed: FeedBatch,
}

/// How often the store expires old samples when no batch arrives.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// Starts the store thread: it applies batches from `batches`, expires samples older than
/// `retention`, and publishes a view after every change. It ends when `stop` fires or every
/// sender of `batches` is gone.
pub fn spawn(
    mut store: Store,
    retention: Duration,
    batches: Receiver<IngestBatch>,
    stop: Receiver<()>,
    shared: SharedView,
    stats: Arc<IngestStats>,
) -> std::io::Result<JoinHandle<()>> {
    let retention = i64::try_from(retention.as_micros()).unwrap_or(i64::MAX);
    std::thread::Builder::new()
        .name("store".to_string())
        .spawn(move || {
            let mut generation = 0u64;
            loop {
                let mut changed = false;
                select! {
                    recv(batches) -> msg => match msg {
                        Ok(batch) => {
                            let outcome = store.ingest(&batch.feed);
                            stats.record_ingest(batch.source, &outcome);
                            changed = true;
                        }
                        Err(_) => return,
                    },
                    recv(stop) -> _ => return,
                    default(IDLE_TICK) => {}
                }
                let cutoff = timestamp::now_micros().saturating_sub(retention);
                changed |= store.evict_before(cutoff) > 0;
                if changed {
                    generation += 1;
                    shared.publish(store.view(generation));
                    stats.set_retained_rows(store.retained_rows());
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::{FeedRow, RejectReason};
    use rand::{Rng, SeedableRng};

    const S: i64 = timestamp::MICROS_PER_SEC;

    fn batch(rows: &[(&str, Micros, [f64; 3])]) -> FeedBatch {
        let mut b = FeedBatch {
            metrics: metric::BUILTIN_METRICS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ..FeedBatch::default()
        };
        for (id, ts, values) in rows {
            b.rows.push(FeedRow {
                switch_id: id.to_string(),
                timestamp: *ts,
            });
            b.values.extend_from_slice(values);
        }
        b
    }

    fn ids(store: &Store, switch: &str) -> (usize, usize, usize, usize) {
        let view = store.view(0);
        (
            view.switches.id(switch).expect("switch"),
            view.metrics.id("bandwidth").expect("bandwidth"),
            view.metrics.id("latency").expect("latency"),
            view.metrics.id("errors").expect("errors"),
        )
    }

    #[test]
    fn duplicates_and_out_of_order_samples_are_not_stored() {
        let mut store = Store::new();
        let first = store.ingest(&batch(&[
            ("s1", 10 * S, [50.0, 0.5, 3.0]),
            ("s1", 11 * S, [51.0, 0.4, 2.0]),
        ]));
        assert_eq!(first.accepted, 2);
        let again = store.ingest(&batch(&[
            ("s1", 11 * S, [51.0, 0.4, 2.0]),
            ("s1", 9 * S, [1.0, 1.0, 1.0]),
        ]));
        assert_eq!(again.accepted, 0);
        assert_eq!(again.rejected.get(RejectReason::Duplicate), 1);
        assert_eq!(again.rejected.get(RejectReason::OutOfOrder), 1);
        let (sw, _, _, errors) = ids(&store, "s1");
        let view = store.view(1);
        assert_eq!(view.window(sw, errors).map(|w| w.total), Some(5));
        assert_eq!(
            view.latest(sw, errors),
            Some(Sample {
                timestamp: 11 * S,
                value: 2.0
            })
        );
    }

    #[test]
    fn absent_values_do_not_count() {
        let mut store = Store::new();
        store.ingest(&batch(&[
            ("s1", S, [f64::NAN, 0.5, 1.0]),
            ("s1", 2 * S, [40.0, f64::NAN, 1.0]),
        ]));
        let (sw, bw, lat, _) = ids(&store, "s1");
        let view = store.view(1);
        assert_eq!(
            view.window(sw, bw).map(|w| (w.min, w.count)),
            Some((40.0, 1))
        );
        assert_eq!(
            view.latest(sw, lat),
            Some(Sample {
                timestamp: S,
                value: 0.5
            })
        );
    }

    #[test]
    fn new_metrics_appear_with_gaps_before_them() {
        let mut store = Store::new();
        store.ingest(&batch(&[("s1", S, [1.0, 0.1, 0.0])]));
        let extra = FeedBatch {
            metrics: vec!["temperature".to_string()],
            rows: vec![FeedRow {
                switch_id: "s1".to_string(),
                timestamp: 2 * S,
            }],
            values: vec![41.5],
            ..FeedBatch::default()
        };
        assert_eq!(store.ingest(&extra).accepted, 1);
        let view = store.view(1);
        let temp = view.metrics.id("temperature").expect("registered");
        let w = view.window(0, temp).expect("one sample");
        assert_eq!((w.min, w.max, w.count), (41.5, 41.5, 1));
        // Eviction of the row before the metric existed must keep the series aligned.
        store.evict_before(2 * S);
        let view = store.view(2);
        assert_eq!(view.window(0, temp).map(|w| w.count), Some(1));
        assert_eq!(
            view.window(0, view.metrics.id("bandwidth").expect("bw")),
            None
        );
    }

    /// Windowed aggregates equal a brute-force recomputation through random ingest and expiry.
    #[test]
    fn window_aggregates_match_brute_force() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut store = Store::new();
        let mut history: Vec<(Micros, [f64; 3])> = Vec::new();
        let mut ts = 0;
        for step in 0..3_000 {
            ts += rng.random_range(1..3) * S;
            let values = [
                if rng.random_bool(0.05) {
                    f64::NAN
                } else {
                    f64::from(rng.random_range(0..1000)) / 10.0
                },
                f64::from(rng.random_range(0..100)) / 100.0,
                f64::from(rng.random_range(0..5)),
            ];
            store.ingest(&batch(&[("s", ts, values)]));
            history.push((ts, values));
            if step % 7 == 0 {
                let cutoff = ts - rng.random_range(0..60) * S;
                store.evict_before(cutoff);
                history.retain(|(t, _)| *t >= cutoff);
            }
            let view = store.view(step);
            for metric_id in 0..3 {
                let present: Vec<f64> = history
                    .iter()
                    .map(|(_, v)| v[metric_id])
                    .filter(|v| !v.is_nan())
                    .collect();
                let got = view.window(0, metric_id);
                if present.is_empty() {
                    assert_eq!(got, None);
                    continue;
                }
                let got = got.expect("window");
                let max = present.iter().cloned().fold(f64::MIN, f64::max);
                let min = present.iter().cloned().fold(f64::MAX, f64::min);
                assert_eq!(
                    (got.min, got.max, got.count),
                    (min, max, present.len() as u64)
                );
                if metric_id == 2 {
                    assert_eq!(got.total, present.iter().sum::<f64>() as u64);
                }
            }
        }
    }

    #[test]
    fn eviction_drops_exactly_what_is_older() {
        let mut store = Store::new();
        let rows: Vec<_> = (1..=10)
            .map(|i| ("s1", i * S, [i as f64, 0.1, 1.0]))
            .collect();
        store.ingest(&batch(&rows));
        assert_eq!(store.evict_before(4 * S), 3);
        assert_eq!(store.retained_rows(), 7);
        let view = store.view(1);
        let w = view.window(0, 0).expect("window");
        assert_eq!((w.min, w.max, w.count), (4.0, 10.0, 7));
        assert_eq!(view.window(0, 2).map(|w| w.total), Some(7));
        store.evict_before(100 * S);
        let view = store.view(2);
        assert_eq!(view.window(0, 0), None);
        assert_eq!(
            view.latest(0, 0).map(|s| s.value),
            Some(10.0),
            "latest survives expiry"
        );
    }
}
