//! The telemetry store: compressed history per switch, the newest sample of every series, and
//! aggregates that never rescan history.
//!
//! Per switch, rows (one timestamp, one value per metric the switch reports) are appended to an
//! open block, streaming-compressed (see [`codec`]); a block seals when it reaches
//! [`BlockLimits`] and becomes immutable. Each block keeps min/max/sum/count per metric, so an
//! aggregate over many blocks merges a few numbers per block and decodes at most the one block
//! its window starts in. Retention drops whole blocks (as Prometheus's TSDB does): a sample
//! lives between `--retention` and `--retention` + one block span (see [`BlockLimits`]).
//!
//! Per switch, timestamps strictly increase, as Prometheus demands by default: a sample at a
//! timestamp already stored is a duplicate, an older one out of order; both are rejected and
//! counted, which is what keeps a poll that sees the same tick twice from counting twice.
//!
//! Concurrency: one writer (the store thread, `crate::server::ingest`). Readers share the [`Store`]
//! through a [`StoreHandle`] (an `RwLock`); the writer applies a batch in chunks of at most
//! [`WRITE_CHUNK_ROWS`] rows and about [`WRITE_HOLD`], so a reader never waits for more than
//! one chunk, and bumps the handle's generation after each change so readers can cache
//! answers per generation.
//!
//! Layering: this module is the in-memory engine only. It knows nothing of disks, threads,
//! channels, statistics or HTTP (`tests::the_store_imports_nothing_above_it` checks); block
//! files are bytes here ([`file`]), written and read by `crate::server::persist`.

mod block;
mod codec;
mod export;
pub mod file;
mod ids;
mod sealed;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use block::{BlockView, OpenBlock, OpenTimes};
pub use block::{CounterAgg, MetricAgg};
pub use export::{CheckpointOutcome, Export, ExportTiming, ImportOutcome};
pub use ids::SwitchIds;
use sealed::{SealedBlocks, SealedTables};

use crate::shared::feed::{FeedBatch, RejectCounts, RejectReason};
use crate::shared::metric::{self, Exposed, ExposedNames, MetricKind, Value};
use crate::shared::timestamp::{Micros, MICROS_PER_SEC};

/// One value at one time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub timestamp: Micros,
    pub value: Value,
}

/// When an open block is sealed: at `max_rows`, at `max_span`, or once it spans `span` and
/// holds `min_rows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockLimits {
    pub max_rows: u32,
    /// Time between a block's first and last row after which it seals, once it holds
    /// `min_rows`.
    pub span: Micros,
    pub min_rows: u32,
    /// Time after which it seals however few rows it holds.
    pub max_span: Micros,
}

impl BlockLimits {
    /// Blocks of retention / 8 (between 10 s and 15 min), so expiry is fine-grained enough,
    /// made longer (up to retention / 2) until they hold 128 rows: a block's fixed cost
    /// (~200 bytes: its header, aggregates, allocations) is then at most ~1.6 bytes a row.
    /// At short retentions and fast polls (a million switches × 5 minutes at 1 s) that
    /// halves memory; the price is that a sample may live up to retention / 2 past
    /// `--retention` instead of retention / 8.
    pub fn for_retention(retention: Duration) -> BlockLimits {
        let retention = crate::shared::timestamp::duration_micros(retention);
        let span = (retention / 8).clamp(10 * MICROS_PER_SEC, 900 * MICROS_PER_SEC);
        BlockLimits {
            max_rows: 4096,
            span,
            min_rows: 128,
            max_span: (retention / 2).clamp(span, 900 * MICROS_PER_SEC).max(span),
        }
    }

    /// Blocks that seal at exactly `span` (or `max_rows`): tests.
    pub const fn fixed(max_rows: u32, span: Micros) -> BlockLimits {
        BlockLimits {
            max_rows,
            span,
            min_rows: 0,
            max_span: span,
        }
    }

    /// Whether a block that began at `first_ts` with `rows` rows is done at `now`, for a
    /// switch whose first block is shortened by `stagger` / 32 (0..32).
    fn full(&self, first_ts: Micros, rows: u32, now: Micros, stagger: u8) -> bool {
        let shorten = |x: i64| x - x * i64::from(stagger) / 32;
        let elapsed = now - first_ts;
        let min_rows = self.min_rows - self.min_rows * u32::from(stagger) / 32;
        rows >= self.max_rows
            || elapsed > shorten(self.max_span)
            || (elapsed > shorten(self.span) && rows >= min_rows)
    }
}

/// Names and kinds of the metrics seen so far.
#[derive(Debug, Clone, Default)]
pub struct MetricTable {
    names: Vec<Arc<str>>,
    kinds: Vec<MetricKind>,
    index: HashMap<Arc<str>, usize>,
    /// How each metric appears in Prometheus: unique families, fixed at first sight.
    exposed: Vec<Arc<Exposed>>,
    exposed_names: ExposedNames,
}

impl MetricTable {
    /// The id of a metric, registering it with `kind` when new (the first source to name a
    /// metric decides its kind).
    fn intern(&mut self, name: &str, kind: MetricKind) -> usize {
        if let Some(&id) = self.index.get(name) {
            return id;
        }
        let name: Arc<str> = Arc::from(name);
        let id = self.names.len();
        self.names.push(Arc::clone(&name));
        self.kinds.push(kind);
        self.exposed
            .push(Arc::new(self.exposed_names.assign(&name, kind)));
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

    /// How the metric appears in Prometheus.
    pub fn exposed(&self, id: usize) -> &Arc<Exposed> {
        &self.exposed[id]
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// What a switch holds per metric it reports (a "position": its place in the switch's rows).
/// The newest sample is held in its parts, not as an `Option<Sample>` (24 bytes with its
/// tags): 32 bytes a position instead of 40, for every metric of a million switches.
#[derive(Debug, Clone, Copy)]
struct Position {
    /// Store metric id.
    metric_id: u32,
    /// What `latest_value` holds: [`LATEST_NONE`], [`LATEST_FLOAT`] or [`LATEST_INT`].
    latest_kind: u8,
    /// The sum of every value ever stored, for count metrics (a Prometheus counter: never
    /// decreases, unaffected by expiry).
    total: f64,
    /// Newest sample (survives expiry): its time, and its value's bits.
    latest_ts: Micros,
    latest_value: u64,
}

const LATEST_NONE: u8 = 0;
const LATEST_FLOAT: u8 = 1;
const LATEST_INT: u8 = 2;

impl Position {
    fn new(metric_id: usize) -> Position {
        Position {
            metric_id: u32::try_from(metric_id).unwrap_or(u32::MAX),
            latest_kind: LATEST_NONE,
            total: 0.0,
            latest_ts: 0,
            latest_value: 0,
        }
    }

    fn metric_id(&self) -> usize {
        self.metric_id as usize
    }

    fn latest(&self) -> Option<Sample> {
        let value = match self.latest_kind {
            LATEST_FLOAT => Value::Float(f64::from_bits(self.latest_value)),
            LATEST_INT => Value::Int(self.latest_value),
            _ => return None,
        };
        Some(Sample {
            timestamp: self.latest_ts,
            value,
        })
    }

    fn set_latest(&mut self, sample: Option<Sample>) {
        (self.latest_kind, self.latest_ts, self.latest_value) = match sample {
            None => (LATEST_NONE, 0, 0),
            Some(Sample {
                timestamp,
                value: Value::Float(v),
            }) => (LATEST_FLOAT, timestamp, v.to_bits()),
            Some(Sample {
                timestamp,
                value: Value::Int(v),
            }) => (LATEST_INT, timestamp, v),
        };
    }
}

/// History of one switch.
#[derive(Debug)]
struct SwitchSeries {
    /// Per metric, in first-seen order (the order of the values in this switch's rows). One
    /// allocation, sized exactly (not a `Vec`: 8 bytes of capacity a million switches would
    /// not use); metrics are added rarely, by [`add_positions`](Self::add_positions).
    positions: Box<[Position]>,
    sealed: SealedBlocks,
    open: Option<OpenBlock>,
    /// Newest timestamp ever stored (dedupe survives expiry too); [`NEVER_STORED`] before the
    /// first (an `Option` would take 16 bytes, every switch).
    newest: Micros,
    /// How much shorter (in 32nds) than the limits this switch's first block is. Switches
    /// that start together would otherwise seal (and later expire) their blocks on the same
    /// poll, a million at once; staggering the first block spreads every later boundary too.
    /// Over the whole block span (0 to 31 32nds), so that as many blocks seal and expire at
    /// every moment: spread over half of it, the rows retained rose and fell by ±6% with
    /// each block span, and memory with them (`million --quick`, RSS per retained sample at
    /// the median and the worst moment: 1.575 and 1.643 over half the span, 1.522 and 1.555
    /// over all of it).
    first_block_stagger: u8,
    /// Sealed blocks at the back of `sealed` not yet exported to a block file.
    unpersisted: u32,
}

/// [`SwitchSeries::newest`] of a switch that stored nothing yet: below every timestamp a feed
/// can carry (`timestamp::CANONICAL_MIN`).
const NEVER_STORED: Micros = Micros::MIN;

impl Default for SwitchSeries {
    fn default() -> SwitchSeries {
        SwitchSeries {
            positions: Box::default(),
            sealed: SealedBlocks::default(),
            open: None,
            newest: NEVER_STORED,
            first_block_stagger: 0,
            unpersisted: 0,
        }
    }
}

impl SwitchSeries {
    /// Newest timestamp ever stored.
    fn newest(&self) -> Option<Micros> {
        (self.newest != NEVER_STORED).then_some(self.newest)
    }

    /// Adds positions for `metric_ids` after the others.
    fn add_positions(&mut self, metric_ids: &[usize]) {
        let mut positions = Vec::with_capacity(self.positions.len() + metric_ids.len());
        positions.extend_from_slice(&self.positions);
        positions.extend(metric_ids.iter().map(|&id| Position::new(id)));
        self.positions = positions.into_boxed_slice();
    }

    fn position(&self, metric_id: usize) -> Option<usize> {
        self.positions
            .iter()
            .position(|p| p.metric_id() == metric_id)
    }

    fn blocks<'a>(&'a self, times: &'a TimeTables) -> impl Iterator<Item = BlockView<'a>> {
        self.sealed
            .iter(&times.sealed)
            .chain(self.open.as_ref().map(|open| open.view(&times.open)))
    }

    /// Seals the open block, if any; whether it did.
    fn seal_open(&mut self, times: &mut TimeTables) -> bool {
        self.first_block_stagger = 0;
        let Some(open) = self.open.take() else {
            return false;
        };
        let sealed = &mut self.sealed;
        open.seal_with(&mut times.open, &mut times.scratch, |parts| {
            sealed.push_parts(parts, &mut times.sealed);
        });
        self.unpersisted = self.unpersisted.saturating_add(1);
        true
    }

    /// Appends a row whose values are given per position (`row.len() == positions.len()`);
    /// whether a block was sealed to make room.
    fn append(
        &mut self,
        ts: Micros,
        row: &[Option<Value>],
        limits: BlockLimits,
        times: &mut TimeTables,
    ) -> bool {
        let stagger = self.first_block_stagger;
        let full = self.open.as_ref().is_some_and(|open| {
            open.n_metrics() != row.len() || limits.full(open.first_ts, open.rows, ts, stagger)
        });
        let sealed = full && self.seal_open(times);
        match &mut self.open {
            Some(open) => open.push(ts, row, &mut times.open),
            None => {
                let expected = self
                    .sealed
                    .newest_stream_bytes(&times.sealed)
                    .unwrap_or((0, 0));
                self.open = Some(OpenBlock::start(ts, row, expected, &mut times.open));
            }
        }
        for (position, &value) in self.positions.iter_mut().zip(row) {
            if let Some(value) = value {
                position.set_latest(Some(Sample {
                    timestamp: ts,
                    value,
                }));
            }
        }
        self.newest = ts;
        sealed
    }

    /// Drops blocks whose last row is older than `cutoff`; returns the rows dropped.
    fn evict_before(&mut self, cutoff: Micros, times: &mut TimeTables) -> u64 {
        let mut dropped = 0;
        while self
            .sealed
            .front_last_ts(&times.sealed)
            .is_some_and(|last| last < cutoff)
        {
            dropped += self
                .sealed
                .pop_front(&mut times.sealed)
                .map_or(0, u64::from);
        }
        if self.open.as_ref().is_some_and(|open| open.last_ts < cutoff) {
            if let Some(open) = self.open.take() {
                dropped += u64::from(open.rows);
                open.discard(&mut times.open);
            }
        }
        dropped
    }

    /// When this switch's oldest block ends (the first moment it can expire).
    fn oldest_block_end(&self, times: &TimeTables) -> Option<Micros> {
        self.sealed
            .front_last_ts(&times.sealed)
            .or_else(|| self.open.as_ref().map(|o| o.last_ts))
    }

    /// The aggregate of every retained sample at `position`: merged from the blocks' own
    /// (a few numbers per block; not kept merged, which would cost a million switches 32
    /// bytes per metric).
    fn retained_agg(&self, position: usize, streams: &SealedTables) -> Option<MetricAgg> {
        let mut agg = self.sealed_agg(position, streams);
        if let Some(open_agg) = self.open.as_ref().and_then(|o| o.aggs().get(position)) {
            agg.merge(&open_agg);
        }
        agg.nonempty()
    }

    /// The aggregate of the sealed blocks at `position`.
    fn sealed_agg(&self, position: usize, streams: &SealedTables) -> MetricAgg {
        let mut agg = MetricAgg::EMPTY;
        for block in self.sealed.iter(streams) {
            if let Some(block_agg) = block.aggs.get(position) {
                agg.merge(&block_agg);
            }
        }
        agg
    }

    /// Aggregates of the rows at or after `cutoff`, for each of `positions`.
    fn window_aggs(
        &self,
        cutoff: Micros,
        positions: &[Option<usize>],
        times: &TimeTables,
    ) -> Vec<MetricAgg> {
        let mut out = vec![MetricAgg::EMPTY; positions.len()];
        for block in self.blocks(times) {
            if block.last_ts < cutoff {
                continue;
            }
            if block.first_ts >= cutoff {
                for (agg, pos) in out.iter_mut().zip(positions) {
                    if let Some(block_agg) = pos.and_then(|p| block.aggs.get(p)) {
                        agg.merge(&block_agg);
                    }
                }
                continue;
            }
            // The window starts inside this block: the one block ever decoded.
            let decoded = block.for_each_row(|ts, row| {
                if ts >= cutoff {
                    for (agg, pos) in out.iter_mut().zip(positions) {
                        if let Some(&Some(v)) = pos.and_then(|p| row.get(p)) {
                            agg.add(v.as_f64());
                        }
                    }
                }
                true
            });
            if decoded.is_err() {
                log::error!(
                    "corrupt block [{}, {}] skipped in an aggregate",
                    block.first_ts,
                    block.last_ts
                );
            }
        }
        out
    }

    /// What a rate needs of the counter at `position` from `cutoff` on. `exact`: the block the
    /// window starts in is decoded; otherwise whole blocks are taken, so the window may start
    /// up to one block span before `cutoff` (what `/telemetry/top` accepts to never decode).
    fn counter_window(
        &self,
        position: usize,
        cutoff: Micros,
        exact: bool,
        times: &TimeTables,
    ) -> CounterAgg {
        let mut agg = CounterAgg::default();
        for block in self.blocks(times) {
            if block.last_ts < cutoff {
                continue;
            }
            if block.first_ts >= cutoff || !exact {
                if let Some(counter) = block.counters.get(position) {
                    agg.merge(&counter);
                }
                continue;
            }
            let mut part = CounterAgg::default();
            let decoded = block.for_each_row(|ts, row| {
                if let (true, Some(Some(Value::Int(v)))) = (ts >= cutoff, row.get(position)) {
                    part.add(ts, *v);
                }
                true
            });
            if decoded.is_err() {
                log::error!(
                    "corrupt block [{}, {}] skipped in a rate",
                    block.first_ts,
                    block.last_ts
                );
                continue;
            }
            agg.merge(&part);
        }
        agg
    }

    /// Visits the samples of `position` in `[from, to]`, oldest first, until `visit` says stop.
    fn history(
        &self,
        position: usize,
        from: Micros,
        to: Micros,
        visit: &mut dyn FnMut(Sample) -> bool,
        times: &TimeTables,
    ) {
        for block in self.blocks(times) {
            if block.last_ts < from || position >= block.n_metrics {
                continue;
            }
            if block.first_ts > to {
                break;
            }
            let mut keep_going = true;
            let decoded = block.for_each_row(|ts, row| {
                if ts > to {
                    return false;
                }
                if let (true, Some(value)) = (ts >= from, row[position]) {
                    keep_going = visit(Sample {
                        timestamp: ts,
                        value,
                    });
                }
                keep_going
            });
            if decoded.is_err() {
                log::error!(
                    "corrupt block [{}, {}] skipped in a history query",
                    block.first_ts,
                    block.last_ts
                );
            }
            if !keep_going {
                break;
            }
        }
    }

    /// Heap bytes of its open block (sealed blocks and shared timestamps are the store's).
    fn heap_bytes(&self) -> usize {
        self.open.as_ref().map_or(0, OpenBlock::heap_bytes)
    }
}

/// What one batch did to the store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IngestOutcome {
    pub accepted: u64,
    pub rejected: RejectCounts,
    /// Indices of the accepted rows in the batch (for remote write).
    pub accepted_rows: Vec<u32>,
    /// The store metric of each column of the batch.
    pub columns: Vec<usize>,
    /// Times the write lock was taken to store the rows.
    pub write_holds: u64,
}

/// All retained telemetry.
#[derive(Debug)]
pub struct Store {
    metrics: MetricTable,
    ids: SwitchIds,
    switches: Vec<SwitchSeries>,
    limits: BlockLimits,
    retained_rows: u64,
    /// Reused row buffer (values per position).
    row: Vec<Option<Value>>,
    /// The switch of the previous row: feeds list switches in the same order every poll, so
    /// the next row is most likely the next switch (checked before hashing).
    cursor: usize,
    /// No block can expire before this time: the smallest last timestamp of any switch's
    /// oldest block, as of the last expiry scan. New blocks end later, so it stays a bound.
    next_expiry: Micros,
    /// Newest sample timestamp of any switch.
    newest: Option<Micros>,
    /// Series emptied by expiry (no sample for a whole retention), awaiting `forget_dead`.
    dead: usize,
    /// Timestamps of open and sealed blocks, each kept once.
    times: TimeTables,
    /// An export is going through the switches chunk by chunk: they must keep their numbers
    /// (series are not forgotten meanwhile).
    exporting: bool,
}

/// Where blocks' timestamps are held, shared between switches polled together: the logs of
/// open blocks, and the streams of sealed ones.
#[derive(Debug)]
struct TimeTables {
    open: OpenTimes,
    sealed: SealedTables,
    /// Where a block being sealed has its aggregates packed (kept: a seal allocates nothing).
    scratch: Vec<u8>,
}

impl Store {
    /// An empty store that knows the built-in metrics.
    pub fn new(limits: BlockLimits) -> Store {
        let mut metrics = MetricTable::default();
        for name in metric::BUILTIN_METRICS {
            metrics.intern(name, metric::kind_of(name));
        }
        Store {
            metrics,
            ids: SwitchIds::default(),
            switches: Vec::new(),
            limits,
            retained_rows: 0,
            row: Vec::new(),
            cursor: usize::MAX,
            next_expiry: i64::MIN,
            newest: None,
            dead: 0,
            times: TimeTables {
                open: OpenTimes::default(),
                sealed: SealedTables::new(limits.span),
                scratch: Vec::new(),
            },
            exporting: false,
        }
    }

    /// Store metric ids for a batch's metric columns (registering new metrics).
    pub fn register_metrics(&mut self, batch: &FeedBatch) -> Vec<usize> {
        batch
            .metrics
            .iter()
            .zip(&batch.kinds)
            .map(|(name, &kind)| self.metrics.intern(name, kind))
            .collect()
    }

    /// The series number of `switch_id`, added if new; `None` when the ids fill what the
    /// table can address (4 GiB of ids).
    fn switch_or_insert(&mut self, switch_id: &str) -> Option<usize> {
        let next = self.cursor.wrapping_add(1);
        if self.ids.get(next) == Some(switch_id) {
            self.cursor = next;
            return Some(next);
        }
        if let Some(idx) = self.ids.find(switch_id) {
            self.cursor = idx;
            return Some(idx);
        }
        let idx = self.ids.push(switch_id)?;
        self.switches.push(SwitchSeries {
            first_block_stagger: (idx % 32) as u8,
            ..SwitchSeries::default()
        });
        self.cursor = idx;
        Some(idx)
    }

    /// Stores rows `range` of `batch`, whose columns are the store metrics `column_metric`.
    pub fn ingest_rows(
        &mut self,
        batch: &FeedBatch,
        range: std::ops::Range<usize>,
        column_metric: &[usize],
        outcome: &mut IngestOutcome,
    ) {
        let limits = self.limits;
        let accepted_before = outcome.accepted;
        let mut row = std::mem::take(&mut self.row);
        for row_idx in range {
            let ts = batch.timestamp(row_idx);
            let Some(idx) = self.switch_or_insert(batch.switch_id(row_idx)) else {
                outcome.rejected.add(RejectReason::TooManySeries, 1);
                continue;
            };
            let switch = &mut self.switches[idx];
            match switch.newest() {
                Some(newest) if ts == newest => {
                    outcome.rejected.add(RejectReason::Duplicate, 1);
                    continue;
                }
                Some(newest) if ts < newest => {
                    outcome.rejected.add(RejectReason::OutOfOrder, 1);
                    continue;
                }
                _ => {}
            }
            let values = batch.row_values(row_idx);
            let is_new = |(&metric_id, value): (&usize, &Option<Value>)| {
                value.is_some() && switch.position(metric_id).is_none()
            };
            if column_metric.iter().zip(values).any(is_new) {
                let mut new: Vec<usize> = Vec::new();
                for pair in column_metric.iter().zip(values) {
                    // A metric named by two columns gets one position.
                    if is_new(pair) && !new.contains(pair.0) {
                        new.push(*pair.0);
                    }
                }
                switch.add_positions(&new);
            }
            row.clear();
            row.resize(switch.positions.len(), None);
            for (&metric_id, &value) in column_metric.iter().zip(values) {
                if let Some(pos) = switch.position(metric_id) {
                    row[pos] = value;
                }
            }
            switch.append(ts, &row, limits, &mut self.times);
            for (position, &value) in switch.positions.iter_mut().zip(row.iter()) {
                if let (Some(value), MetricKind::Count) =
                    (value, self.metrics.kind(position.metric_id()))
                {
                    position.total += value.as_f64();
                }
            }
            // Every block ends at or after its rows: keeps `next_expiry` a lower bound even
            // for switches that appear after a scan of an empty store.
            self.next_expiry = self.next_expiry.min(ts);
            self.newest = Some(self.newest.map_or(ts, |n| n.max(ts)));
            outcome.accepted += 1;
            outcome.accepted_rows.push(row_idx as u32);
        }
        self.row = row;
        self.retained_rows += outcome.accepted - accepted_before;
    }

    /// Stores a whole batch (tests and tools; the store thread goes chunk by chunk).
    pub fn ingest(&mut self, batch: &FeedBatch) -> IngestOutcome {
        let mut outcome = IngestOutcome::default();
        let columns = self.register_metrics(batch);
        self.ingest_rows(batch, 0..batch.len(), &columns, &mut outcome);
        outcome
    }

    /// Whether any block could be entirely older than `cutoff`.
    pub fn may_expire(&self, cutoff: Micros) -> bool {
        cutoff > self.next_expiry
    }

    /// Drops blocks of switches `range` entirely older than `cutoff`; returns rows dropped and
    /// the earliest time a block left in the range can expire. A series left without any
    /// block had no sample for a whole retention: it is emptied, to be forgotten.
    fn evict_range(&mut self, cutoff: Micros, range: std::ops::Range<usize>) -> (u64, Micros) {
        let end = range.end.min(self.switches.len());
        let start = range.start.min(end);
        let mut dropped = 0;
        let mut next_expiry = i64::MAX;
        for series in &mut self.switches[start..end] {
            let rows = series.evict_before(cutoff, &mut self.times);
            dropped += rows;
            match series.oldest_block_end(&self.times) {
                Some(oldest_end) => next_expiry = next_expiry.min(oldest_end),
                None if rows > 0 => {
                    *series = SwitchSeries::default();
                    self.dead += 1;
                }
                None => {}
            }
        }
        self.retained_rows -= dropped;
        (dropped, next_expiry)
    }

    /// Drops every block entirely older than `cutoff` and forgets the series left without
    /// one; returns the rows dropped.
    pub fn evict_before(&mut self, cutoff: Micros) -> u64 {
        let (dropped, next_expiry) = self.evict_range(cutoff, 0..self.switches.len());
        self.next_expiry = next_expiry;
        self.forget_dead();
        dropped
    }

    /// Series emptied by expiry, not yet forgotten.
    pub fn dead_series(&self) -> usize {
        self.dead
    }

    /// Forgets the series expiry emptied: their ids and slots go, the others keep their
    /// first-seen order. One pass over every series, so callers batch it.
    pub fn forget_dead(&mut self) -> usize {
        if self.dead == 0 {
            return 0;
        }
        let before = self.switches.len();
        let switches = &self.switches;
        self.ids.retain(|n| switches[n].newest().is_some());
        self.switches.retain(|series| series.newest().is_some());
        self.switches.shrink_to_fit();
        self.cursor = usize::MAX;
        self.dead = 0;
        before - self.switches.len()
    }

    pub fn metrics(&self) -> &MetricTable {
        &self.metrics
    }

    pub fn n_switches(&self) -> usize {
        self.ids.len()
    }

    pub fn switch(&self, switch_id: &str) -> Option<usize> {
        self.ids.find(switch_id)
    }

    /// Switch ids in first-seen order; the index is the switch number readers pass back.
    pub fn switch_ids(&self) -> &SwitchIds {
        &self.ids
    }

    /// Whether the switch ever reported this metric.
    pub fn has_metric(&self, switch: usize, metric_id: usize) -> bool {
        self.switches
            .get(switch)
            .is_some_and(|s| s.position(metric_id).is_some())
    }

    pub fn latest(&self, switch: usize, metric_id: usize) -> Option<Sample> {
        let series = self.switches.get(switch)?;
        series.positions.get(series.position(metric_id)?)?.latest()
    }

    /// Sum of every value a count metric ever stored for a switch (since start).
    pub fn count_total(&self, switch: usize, metric_id: usize) -> Option<f64> {
        let series = self.switches.get(switch)?;
        series
            .positions
            .get(series.position(metric_id)?)
            .map(|p| p.total)
    }

    /// Aggregate of every retained sample of a series.
    pub fn retained_agg(&self, switch: usize, metric_id: usize) -> Option<MetricAgg> {
        let series = self.switches.get(switch)?;
        series.retained_agg(series.position(metric_id)?, &self.times.sealed)
    }

    /// Aggregates of the samples at or after `cutoff`, one per metric in `metric_ids`.
    pub fn window_aggs(
        &self,
        switch: usize,
        metric_ids: &[Option<usize>],
        cutoff: Micros,
    ) -> Vec<Option<MetricAgg>> {
        let Some(series) = self.switches.get(switch) else {
            return vec![None; metric_ids.len()];
        };
        let positions: Vec<Option<usize>> = metric_ids
            .iter()
            .map(|m| m.and_then(|m| series.position(m)))
            .collect();
        series
            .window_aggs(cutoff, &positions, &self.times)
            .into_iter()
            .map(MetricAgg::nonempty)
            .collect()
    }

    /// What a rate of a counter series needs from `cutoff` on (see `SwitchSeries::counter_window`);
    /// `None` when the series has no counter sample there.
    pub fn counter_window(
        &self,
        switch: usize,
        metric_id: usize,
        cutoff: Micros,
        exact: bool,
    ) -> Option<CounterAgg> {
        let series = self.switches.get(switch)?;
        let agg = series.counter_window(series.position(metric_id)?, cutoff, exact, &self.times);
        agg.last.is_some().then_some(agg)
    }

    /// Visits the retained samples of a series in `[from, to]`, oldest first, until `visit`
    /// returns false.
    pub fn history(
        &self,
        switch: usize,
        metric_id: usize,
        from: Micros,
        to: Micros,
        visit: &mut dyn FnMut(Sample) -> bool,
    ) {
        if let Some(series) = self.switches.get(switch) {
            if let Some(position) = series.position(metric_id) {
                series.history(position, from, to, visit, &self.times);
            }
        }
    }

    /// The newest sample timestamp of any switch, if any was ever stored.
    pub fn newest_timestamp(&self) -> Option<Micros> {
        self.newest
    }

    /// Rows (one timestamp per switch, all its metrics) currently retained.
    pub fn retained_rows(&self) -> u64 {
        self.retained_rows
    }

    /// Heap bytes held by compressed history (blocks and open blocks).
    pub fn history_bytes(&self) -> usize {
        self.switches
            .iter()
            .map(SwitchSeries::heap_bytes)
            .sum::<usize>()
            + self.times.open.heap_bytes()
            + self.times.sealed.heap_bytes()
    }

    /// Where the store's memory goes, part by part: (what, bytes, allocations). Bytes are
    /// what the structures ask the allocator for (capacities); each allocation costs the
    /// allocator a further 8–16 bytes. For the benches' accounts of memory at scale.
    pub fn memory_parts(&self) -> Vec<(&'static str, usize, usize)> {
        use std::mem::size_of;
        let mut parts = Vec::new();
        let mut add = |what, bytes, allocs| parts.push((what, bytes, allocs));
        let (mut values, mut aggs, mut headers) = (0, 0, 0);
        let (mut open_bufs, mut open_state, mut positions) = ((0, 0), (0, 0), (0, 0));
        let mut open_used = 0;
        for s in &self.switches {
            let (h, a, v) = s.sealed.memory_parts(&self.times.sealed);
            (headers, aggs, values) = (headers + h, aggs + a, values + v);
            if let Some(open) = &s.open {
                let (bufs, state) = open.heap_parts();
                open_bufs.0 += bufs;
                open_bufs.1 += 1;
                open_used += open.value_bytes();
                open_state.0 += state.0;
                open_state.1 += state.1;
            }
            positions.0 += s.positions.len() * size_of::<Position>();
            positions.1 += usize::from(!s.positions.is_empty());
        }
        let (expired, tails, streams, chunks) = self.times.sealed.memory_parts();
        add("sealed blocks: value streams", values, chunks);
        add("sealed blocks: aggregates", aggs, 0);
        add("sealed blocks: headers", headers, 0);
        add("sealed blocks: expired, chunk not yet free", expired, 0);
        add("sealed blocks: unused tails of full chunks", tails, 0);
        add(
            "sealed blocks: shared time streams",
            streams,
            2 * self.times.sealed.streams_held(),
        );
        add("open blocks: value buffers", open_bufs.0, open_bufs.1);
        add("  of which in use", open_used, 0);
        add(
            "open blocks: shared timestamp logs",
            self.times.open.heap_bytes(),
            self.times.open.allocations(),
        );
        add(
            "  logs held (a count, not bytes)",
            self.times.open.live(),
            0,
        );
        add(
            "open blocks: codecs and aggregates",
            open_state.0,
            open_state.1,
        );
        add(
            "series: inline",
            self.switches.capacity() * size_of::<SwitchSeries>(),
            1,
        );
        add("series: per-metric state", positions.0, positions.1);
        add("switch ids and index", self.ids.heap_bytes(), 3);
        parts
    }
}

/// Most rows applied per write-lock hold.
pub const WRITE_CHUNK_ROWS: usize = 4096;
/// A write-lock hold for ingest ends after the step of rows that passes this. Why: 4,096
/// rows took 0.5–1 ms (10k switches × 3 metrics, release build), and every `/get` that came
/// meanwhile queued behind it, then behind each other for the workers: at 20k req/s the
/// holds of one poll a second were most of the open-loop p99's gap to a paused feed
/// (`cargo bench --bench fabric -- openloop`). Releasing costs a lock round trip per
/// ~1,000 rows.
pub const WRITE_HOLD: Duration = Duration::from_micros(200);
/// Rows applied between looks at the clock during a hold.
const WRITE_STEP_ROWS: usize = 128;
/// Most switches expired per write-lock hold (a hold also ends after [`WRITE_HOLD`]).
const EVICT_CHUNK_SWITCHES: usize = 65_536;
/// Switches expired between looks at the clock during a hold.
const EVICT_STEP_SWITCHES: usize = 1024;

/// Runs `step` over `range` in steps of `step_len` (rows or switches) during one hold of the
/// write lock, which ends after the step that passes `hold`; returns where it stopped.
fn within_hold(
    range: std::ops::Range<usize>,
    step_len: usize,
    hold: Duration,
    mut step: impl FnMut(std::ops::Range<usize>),
) -> usize {
    let held = Instant::now();
    let mut start = range.start;
    while start < range.end {
        let end = (start + step_len).min(range.end);
        step(start..end);
        start = end;
        if held.elapsed() >= hold {
            break;
        }
    }
    start
}

/// The store shared between its writer thread and readers, plus a generation counter that
/// changes after every change readers could see.
#[derive(Clone)]
pub struct StoreHandle {
    store: Arc<RwLock<Store>>,
    generation: Arc<AtomicU64>,
    storing: Arc<Storing>,
}

/// Whether a batch is being stored, for an export to give way to it (`export_within` waits
/// before each chunk).
/// Why: both take the write lock in short holds, and the lock alternates between waiting
/// writers, so a batch stored during an export waited for one export chunk per hold of its
/// own: with ~200 µs holds, a poll of 200k switches took 2.9× its time during an export.
#[derive(Default)]
struct Storing {
    busy: Mutex<bool>,
    done: Condvar,
}

impl Storing {
    fn set(&self, busy: bool) {
        *self.busy.lock().unwrap_or_else(|e| e.into_inner()) = busy;
        if !busy {
            self.done.notify_all();
        }
    }

    /// Waits until no batch is being stored, at most `limit`.
    fn wait(&self, limit: Duration) {
        let busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self.done.wait_timeout_while(busy, limit, |busy| *busy);
    }
}

impl StoreHandle {
    pub fn new(store: Store) -> StoreHandle {
        StoreHandle {
            store: Arc::new(RwLock::new(store)),
            generation: Arc::new(AtomicU64::new(0)),
            storing: Arc::default(),
        }
    }

    /// Read access. Hold it only to copy out what an answer needs, never while serializing
    /// or writing a socket.
    pub fn read(&self) -> RwLockReadGuard<'_, Store> {
        self.store
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Store> {
        self.store
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Applies a batch chunk by chunk, releasing the lock between chunks: see [`WRITE_HOLD`].
    pub fn apply(&self, batch: &FeedBatch) -> IngestOutcome {
        self.apply_holding(batch, WRITE_HOLD)
    }

    /// [`StoreHandle::apply`], each hold ending after the step of rows that passes `hold`.
    fn apply_holding(&self, batch: &FeedBatch, hold: Duration) -> IngestOutcome {
        /// Says the batch is done however storing it ends (a panic included).
        struct Done<'a>(&'a Storing);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.set(false);
            }
        }
        self.storing.set(true);
        let _done = Done(&self.storing);
        self.store_batch(batch, hold)
    }

    fn store_batch(&self, batch: &FeedBatch, hold: Duration) -> IngestOutcome {
        let mut outcome = IngestOutcome::default();
        let columns = self.write().register_metrics(batch);
        outcome.columns.clone_from(&columns);
        let mut start = 0;
        while start < batch.len() {
            let mut store = self.write();
            outcome.write_holds += 1;
            let chunk = start..(start + WRITE_CHUNK_ROWS).min(batch.len());
            start = within_hold(chunk, WRITE_STEP_ROWS, hold, |rows| {
                store.ingest_rows(batch, rows, &columns, &mut outcome);
            });
        }
        if outcome.accepted > 0 {
            self.changed();
        }
        outcome
    }

    /// Expires blocks older than `cutoff`, a chunk of switches at a time; skips the scan
    /// when no block can have expired yet.
    pub fn expire(&self, cutoff: Micros) -> u64 {
        let n = {
            let store = self.read();
            if !store.may_expire(cutoff) {
                return 0;
            }
            store.n_switches()
        };
        let mut dropped = 0;
        let mut next_expiry = i64::MAX;
        let mut start = 0;
        while start < n {
            let mut store = self.write();
            let chunk = start..(start + EVICT_CHUNK_SWITCHES).min(n);
            start = within_hold(chunk, EVICT_STEP_SWITCHES, WRITE_HOLD, |switches| {
                let (step_dropped, step_next) = store.evict_range(cutoff, switches);
                dropped += step_dropped;
                next_expiry = next_expiry.min(step_next);
            });
        }
        // Switches added during the scan have only new blocks: the bound still holds.
        let mut store = self.write();
        store.next_expiry = next_expiry;
        // Forgetting rebuilds the index under the write lock: batched, once many series died
        // (their history is already freed; only ids and empty slots wait).
        let n = store.n_switches();
        let many_dead = store.dead >= 4096 || store.dead * 64 >= n;
        if store.dead > 0 && many_dead && !store.exporting {
            store.forget_dead();
            self.changed();
        }
        drop(store);
        if dropped > 0 {
            self.changed();
        }
        dropped
    }
}

#[cfg(test)]
mod tests;
