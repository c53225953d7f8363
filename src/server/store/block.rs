//! Blocks: a run of rows of one switch (a timestamp and one value per metric), compressed into
//! two bit streams, the timestamps and the values, with min/max/sum/count per metric kept
//! beside them so aggregates over whole blocks never decode them, and for counters what a rate
//! needs ([`CounterAgg`]). An [`OpenBlock`] takes appends; sealing it gives an immutable,
//! tightly sized [`Block`].
//!
//! Why timestamps apart: every row of one poll carries the same timestamp (the feed's tick, or
//! the poll time), so the switches of a source that seal together hold the same timestamps,
//! and the store keeps that stream once for all of them ([`TimeStream`], shared through an
//! `Arc`). Poll jitter makes a timestamp cost about 10 bits per row; shared, next to nothing.
//! Blocks from block files before version 3 keep their timestamps interleaved with the
//! values in one stream, and still decode.

use std::sync::Arc;

use super::codec::{self, BitReader, BitWriter, TimestampCodec, ValueCodec};
use crate::shared::metric::Value;
use crate::shared::timestamp::{self, Micros};
use crate::shared::wire::{self, Reader};

/// What a rate needs of one counter's samples in a run of rows: the first and last sample and
/// the increase between them, counting a decrease as a reset from zero (as Prometheus does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CounterAgg {
    /// (timestamp, value) of the first and last integer sample; `None` when there is none.
    pub first: Option<(Micros, u64)>,
    pub last: Option<(Micros, u64)>,
    /// Sum of the steps from `first` to `last` (saturating: a sum past 2^64 stays there).
    pub increase: u64,
    pub resets: u32,
}

impl CounterAgg {
    /// The increase from `prev` to `next`, and whether it was a reset.
    fn step(prev: u64, next: u64) -> (u64, bool) {
        if next >= prev {
            (next - prev, false)
        } else {
            (next, true)
        }
    }

    pub fn add(&mut self, ts: Micros, value: u64) {
        if let Some((_, prev)) = self.last {
            let (increase, reset) = CounterAgg::step(prev, value);
            self.increase = self.increase.saturating_add(increase);
            self.resets += u32::from(reset);
        } else {
            self.first = Some((ts, value));
        }
        self.last = Some((ts, value));
    }

    /// Appends the samples `later` summarises (all after this one's).
    pub fn merge(&mut self, later: &CounterAgg) {
        let (Some((_, prev)), Some((_, next))) = (self.last, later.first) else {
            if self.last.is_none() {
                *self = *later;
            }
            return;
        };
        let (increase, reset) = CounterAgg::step(prev, next);
        self.increase = self
            .increase
            .saturating_add(increase)
            .saturating_add(later.increase);
        self.resets += u32::from(reset) + later.resets;
        self.last = later.last;
    }
}

/// Min, max, sum and count of the present values of one metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricAgg {
    pub min: f64,
    pub max: f64,
    /// Exact for count metrics (integers, total below 2^53).
    pub sum: f64,
    pub count: u64,
}

impl MetricAgg {
    pub const EMPTY: MetricAgg = MetricAgg {
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
        sum: 0.0,
        count: 0,
    };

    pub fn add(&mut self, value: f64) {
        if value.is_nan() {
            return;
        }
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.sum += value;
        self.count += 1;
    }

    pub fn merge(&mut self, other: &MetricAgg) {
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
        self.count += other.count;
    }

    /// `None` when no value was added.
    pub fn nonempty(self) -> Option<MetricAgg> {
        (self.count > 0).then_some(self)
    }
}

/// The stream is corrupt or shorter than its header says (a bug, or damaged memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corrupt;

/// The timestamps of a block's rows after the first, as their own compressed stream; equal
/// streams are shared between blocks (the store interns them by content).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TimeStream {
    bit_len: u32,
    bits: Box<[u8]>,
}

impl TimeStream {
    pub fn heap_bytes(&self) -> usize {
        self.bits.len() + std::mem::size_of::<TimeStream>() + 16
    }

    /// Its bytes and its length in bits.
    pub fn bytes(&self) -> (&[u8], u64) {
        (&self.bits, u64::from(self.bit_len))
    }

    /// `None` when `bits` does not hold exactly `bit_len` bits.
    pub fn new(bits: Box<[u8]>, bit_len: u32) -> Option<TimeStream> {
        (bits.len() as u64 == u64::from(bit_len).div_ceil(8))
            .then_some(TimeStream { bit_len, bits })
    }
}

/// Where a block's timestamps are.
#[derive(Debug, Clone, Copy)]
pub enum Times<'a> {
    /// In their own stream: bytes and length in bits.
    Split(&'a [u8], u64),
    /// Interleaved with the values, row by row (blocks from files before version 3).
    Interleaved,
}

/// A block's aggregates, one per position: as an open block holds them, or packed into a
/// sealed block's single allocation (see [`pack_aggs`]), which saves a million switches an
/// allocation per block and most of the 32 bytes a [`MetricAgg`] takes.
#[derive(Debug, Clone, Copy)]
pub enum Aggs<'a> {
    Held(&'a [MetricAgg]),
    Open(&'a [OpenMetric]),
    /// `len` entries as [`pack_aggs`] writes them (after the count).
    Packed {
        len: usize,
        entries: &'a [u8],
    },
}

impl<'a> Aggs<'a> {
    /// Reads what [`pack_aggs`] wrote (`None`: not that; a bug).
    fn packed(bytes: &'a [u8]) -> Option<Aggs<'a>> {
        let mut input = Reader::new(bytes);
        let len = usize::try_from(input.varint().ok()?).ok()?;
        Some(Aggs::Packed {
            len,
            entries: &bytes[bytes.len() - input.remaining()..],
        })
    }

    pub fn len(&self) -> usize {
        match self {
            Aggs::Held(aggs) => aggs.len(),
            Aggs::Open(metrics) => metrics.len(),
            Aggs::Packed { len, .. } => *len,
        }
    }

    pub fn get(&self, position: usize) -> Option<MetricAgg> {
        match self {
            Aggs::Held(aggs) => aggs.get(position).copied(),
            Aggs::Open(metrics) => metrics.get(position).map(OpenMetric::agg),
            Aggs::Packed { len, entries } => {
                if position >= *len {
                    return None;
                }
                let mut input = Reader::new(entries);
                for _ in 0..position {
                    skip_agg(&mut input)?;
                }
                unpack_agg(&mut input)
            }
        }
    }

    pub fn iter(self) -> impl Iterator<Item = MetricAgg> + 'a {
        let mut packed = match self {
            Aggs::Packed { entries, .. } => Some(Reader::new(entries)),
            _ => None,
        };
        (0..self.len()).filter_map(move |position| match packed.as_mut() {
            Some(input) => unpack_agg(input),
            None => self.get(position),
        })
    }
}

/// Appends `aggs` packed: their number, then per position the count, and unless it is 0
/// min, max and sum each as [`put_compact_f64`]. Telemetry values are mostly short decimals
/// and integers, so a typical aggregate takes 10–16 bytes instead of 32 (a million switches
/// × 3 metrics × ~2.5 blocks each: ~0.2 GB).
fn pack_aggs(aggs: Aggs<'_>, out: &mut Vec<u8>) {
    wire::put_varint(out, aggs.len() as u64);
    for agg in aggs.iter() {
        wire::put_varint(out, agg.count);
        if agg.count > 0 {
            for v in [agg.min, agg.max, agg.sum] {
                put_compact_f64(out, v);
            }
        }
    }
}

fn unpack_agg(input: &mut Reader<'_>) -> Option<MetricAgg> {
    let count = input.varint().ok()?;
    if count == 0 {
        return Some(MetricAgg::EMPTY);
    }
    Some(MetricAgg {
        min: compact_f64(input)?,
        max: compact_f64(input)?,
        sum: compact_f64(input)?,
        count,
    })
}

/// A block's counter aggregates, one per position (none when the block holds no counter
/// sample): as an open block or a file holds them, or packed into a sealed block's single
/// allocation after its aggregates ([`pack_counters`]).
#[derive(Debug, Clone, Copy)]
pub enum Counters<'a> {
    Held(&'a [CounterAgg]),
    /// The packed aggregates, then the packed counters.
    Packed(&'a [u8]),
}

impl<'a> Counters<'a> {
    /// The packed counters, past the aggregates before them; `None` only on a bug.
    fn packed_section(bytes: &'a [u8]) -> Option<(usize, Reader<'a>)> {
        let mut input = Reader::new(bytes);
        let aggs = input.varint().ok()?;
        for _ in 0..aggs {
            skip_agg(&mut input)?;
        }
        let len = usize::try_from(input.varint().ok()?).ok()?;
        Some((len, input))
    }

    pub fn len(&self) -> usize {
        match self {
            Counters::Held(counters) => counters.len(),
            Counters::Packed(bytes) => Counters::packed_section(bytes).map_or(0, |(len, _)| len),
        }
    }

    pub fn get(&self, position: usize) -> Option<CounterAgg> {
        self.iter().nth(position)
    }

    pub fn iter(self) -> impl Iterator<Item = CounterAgg> + 'a {
        let (held, packed) = match self {
            Counters::Held(counters) => (counters, None),
            Counters::Packed(bytes) => (&[][..], Counters::packed_section(bytes)),
        };
        let (len, mut input) = packed.unwrap_or((0, Reader::new(&[])));
        held.iter()
            .copied()
            .chain((0..len).map_while(move |_| decode_counter(&mut input).ok()))
    }
}

/// Appends `counters` (none, or one per position) as a block file holds them.
fn pack_counters(counters: Counters<'_>, out: &mut Vec<u8>) {
    wire::put_varint(out, counters.len() as u64);
    for counter in counters.iter() {
        put_counter(out, &counter);
    }
}

/// One counter aggregate: a presence byte, then first and last as timestamp + value, the
/// increase and the resets.
fn put_counter(out: &mut Vec<u8>, counter: &CounterAgg) {
    match (counter.first, counter.last) {
        (Some((first_ts, first)), Some((last_ts, last))) => {
            out.push(1);
            wire::put_i64(out, first_ts);
            wire::put_varint(out, first);
            wire::put_i64(out, last_ts);
            wire::put_varint(out, last);
            wire::put_varint(out, counter.increase);
            wire::put_varint(out, u64::from(counter.resets));
        }
        _ => out.push(0),
    }
}

/// Passes over one packed aggregate without reading its numbers (an aggregate query wants
/// one position of each block: decoding the ones before it made whole-block aggregates ~1.8×
/// slower than reading fixed-size ones).
fn skip_agg(input: &mut Reader<'_>) -> Option<()> {
    if input.varint().ok()? == 0 {
        return Some(());
    }
    for _ in 0..3 {
        match input.take(1).ok()?[0] {
            RAW_F64 => {
                input.take(8).ok()?;
            }
            _ => {
                input.varint().ok()?;
            }
        }
    }
    Some(())
}

/// Marks an `f64` stored as its 8 bytes.
const RAW_F64: u8 = 0xFF;

/// `v` as a byte holding the fewest decimals at which it is an exact scaled integer
/// ([`codec::scaled`], as the value streams store it) and that integer as a zigzag varint,
/// or as [`RAW_F64`] and its 8 bytes when there is none (a sum of decimals, usually): either
/// way it reads back bit for bit.
fn put_compact_f64(out: &mut Vec<u8>, v: f64) {
    match (0..=codec::MAX_SCALE).find_map(|d| codec::scaled(v, d).map(|s| (d, s))) {
        Some((scale, s)) => {
            out.push(scale as u8);
            wire::put_zigzag(out, s);
        }
        None => {
            out.push(RAW_F64);
            wire::put_f64(out, v);
        }
    }
}

fn compact_f64(input: &mut Reader<'_>) -> Option<f64> {
    match input.take(1).ok()?[0] {
        RAW_F64 => input.f64().ok(),
        scale if u32::from(scale) <= codec::MAX_SCALE => {
            Some(codec::unscaled(input.zigzag().ok()?, u32::from(scale)))
        }
        _ => None,
    }
}

/// What readers need of a block, open or sealed.
#[derive(Debug, Clone, Copy)]
pub struct BlockView<'a> {
    pub first_ts: Micros,
    pub last_ts: Micros,
    pub rows: u32,
    pub n_metrics: usize,
    pub aggs: Aggs<'a>,
    /// Per position, for blocks holding any counter sample; empty otherwise.
    pub counters: Counters<'a>,
    pub times: Times<'a>,
    bits: &'a [u8],
    bit_len: u64,
}

impl<'a> BlockView<'a> {
    /// A sealed block's view: `body` holds its packed aggregates, packed counters, then
    /// `bit_len` bits of values ([`Block::assemble`] wrote it); `times`: its own time stream,
    /// or `None` for timestamps interleaved with the values.
    pub fn sealed(
        (first_ts, last_ts, rows): (Micros, Micros, u32),
        bit_len: u32,
        body: &'a [u8],
        times: Option<&'a TimeStream>,
    ) -> BlockView<'a> {
        let values_at = body
            .len()
            .saturating_sub(u64::from(bit_len).div_ceil(8) as usize);
        let (aggs_and_counters, bits) = body.split_at(values_at);
        // `assemble` wrote them; only a bug can make them unreadable.
        let aggs = Aggs::packed(aggs_and_counters);
        debug_assert!(aggs.is_some(), "a sealed block's aggregates are unreadable");
        let aggs = aggs.unwrap_or(Aggs::Held(&[]));
        BlockView {
            first_ts,
            last_ts,
            rows,
            n_metrics: aggs.len(),
            aggs,
            counters: Counters::Packed(aggs_and_counters),
            times: match times {
                Some(t) => Times::Split(&t.bits, u64::from(t.bit_len)),
                None => Times::Interleaved,
            },
            bits,
            bit_len: u64::from(bit_len),
        }
    }
}

impl BlockView<'_> {
    /// Values present (rows × metrics, absent cells excluded).
    pub fn samples(&self) -> u64 {
        self.aggs.iter().map(|a| a.count).sum()
    }

    /// Appends the block-file encoding of this block: bounds, row and metric counts, the
    /// value stream's length in bits, where its timestamps are (`time_ref`: 0 interleaved,
    /// else 1 + an index into the file's table of time streams), the aggregates (so loading
    /// never decodes), the counter aggregates (a count, then per position: presence byte,
    /// first and last as timestamp + value, increase, resets), then the value stream as it is
    /// in memory. An open block's view encodes as the sealed block it would become now (a
    /// checkpoint holds open blocks this way).
    pub fn encode(&self, out: &mut Vec<u8>, time_ref: u64) {
        wire::put_i64(out, self.first_ts);
        wire::put_i64(out, self.last_ts);
        wire::put_varint(out, u64::from(self.rows));
        wire::put_varint(out, self.n_metrics as u64);
        wire::put_varint(out, self.bit_len);
        wire::put_varint(out, time_ref);
        for agg in self.aggs.iter() {
            wire::put_f64(out, agg.min);
            wire::put_f64(out, agg.max);
            wire::put_f64(out, agg.sum);
            wire::put_varint(out, agg.count);
        }
        pack_counters(self.counters, out);
        wire::put_bytes(out, self.bits);
    }

    /// Calls `visit(timestamp, values)` for each row in time order until it returns false.
    pub fn for_each_row(
        &self,
        mut visit: impl FnMut(Micros, &[Option<Value>]) -> bool,
    ) -> Result<(), Corrupt> {
        let mut reader = BitReader::new(self.bits, self.bit_len);
        let mut times = match self.times {
            Times::Split(bits, bit_len) => Some(BitReader::new(bits, bit_len)),
            Times::Interleaved => None,
        };
        let mut ts_codec = TimestampCodec::starting_at(self.first_ts);
        let mut codecs = vec![ValueCodec::default(); self.n_metrics];
        let mut row = vec![None; self.n_metrics];
        for row_idx in 0..self.rows {
            let ts = if row_idx == 0 {
                self.first_ts
            } else {
                ts_codec
                    .decode(times.as_mut().unwrap_or(&mut reader))
                    .ok_or(Corrupt)?
            };
            for (slot, codec) in row.iter_mut().zip(&mut codecs) {
                *slot = codec.decode(&mut reader).ok_or(Corrupt)?;
            }
            if !visit(ts, &row) {
                break;
            }
        }
        Ok(())
    }
}

/// An immutable compressed block.
#[derive(Debug)]
pub struct Block {
    pub first_ts: Micros,
    pub last_ts: Micros,
    pub rows: u32,
    bit_len: u32,
    /// The packed aggregates, the packed counter aggregates, then the value stream: one
    /// allocation per block (a million switches hold a few million blocks), and 48 bytes
    /// beside it.
    body: Box<[u8]>,
    /// `None`: interleaved in the value stream (a block from a file before version 3).
    times: Option<Arc<TimeStream>>,
}

/// A sealed block as parts: its bounds (first and last timestamp, rows), its value stream's
/// length in bits, its time stream (`None`: interleaved with the values), and its body (packed
/// aggregates, packed counters, value stream) as the concatenation of two pieces.
#[derive(Debug, Clone, Copy)]
pub struct SealedParts<'a> {
    pub bounds: (Micros, Micros, u32),
    pub bit_len: u32,
    pub times: Option<&'a Arc<TimeStream>>,
    pub body: [&'a [u8]; 2],
}

impl Block {
    /// The block as [`SealedParts`].
    pub fn parts(&self) -> SealedParts<'_> {
        SealedParts {
            bounds: (self.first_ts, self.last_ts, self.rows),
            bit_len: self.bit_len,
            times: self.times.as_ref(),
            body: [&self.body, &[]],
        }
    }

    /// A block of `rows` rows from its parts (`bits` holds `bit_len` bits).
    fn assemble(
        (first_ts, last_ts, rows): (Micros, Micros, u32),
        bits: &[u8],
        bit_len: u32,
        times: Option<Arc<TimeStream>>,
        aggs: Aggs<'_>,
        counters: Counters<'_>,
    ) -> Block {
        let mut body = Vec::with_capacity(2 + aggs.len() * 10 + bits.len());
        pack_aggs(aggs, &mut body);
        pack_counters(counters, &mut body);
        body.extend_from_slice(bits);
        Block {
            first_ts,
            last_ts,
            rows,
            bit_len,
            body: body.into_boxed_slice(),
            times,
        }
    }

    pub fn view(&self) -> BlockView<'_> {
        BlockView::sealed(
            (self.first_ts, self.last_ts, self.rows),
            self.bit_len,
            &self.body,
            self.times.as_deref(),
        )
    }

    /// Reads what [`BlockView::encode`] wrote, checking that the header is consistent with
    /// itself (a checksum guards the bytes; this guards against a writer bug or a forged
    /// file). `version`: the file format's (1: no counter aggregates, as before counters
    /// existed, and no counter samples either; 2: counters; 3: timestamps in a stream of their
    /// own, from `time_table`).
    pub fn decode(
        input: &mut Reader<'_>,
        max_metrics: usize,
        version: u8,
        time_table: &[Arc<TimeStream>],
    ) -> Result<Block, Corrupt> {
        let with_counters = version >= 2;
        let first_ts = input.i64().map_err(|_| Corrupt)?;
        let last_ts = input.i64().map_err(|_| Corrupt)?;
        let rows = u32::try_from(input.varint().map_err(|_| Corrupt)?).map_err(|_| Corrupt)?;
        let n_metrics = input.count(max_metrics).map_err(|_| Corrupt)?;
        let bit_len = u32::try_from(input.varint().map_err(|_| Corrupt)?).map_err(|_| Corrupt)?;
        let times = match version {
            3.. => match input.count(time_table.len()).map_err(|_| Corrupt)? {
                0 => None,
                k => Some(Arc::clone(time_table.get(k - 1).ok_or(Corrupt)?)),
            },
            _ => None,
        };
        let mut aggs = Vec::with_capacity(n_metrics);
        for _ in 0..n_metrics {
            let agg = MetricAgg {
                min: input.f64().map_err(|_| Corrupt)?,
                max: input.f64().map_err(|_| Corrupt)?,
                sum: input.f64().map_err(|_| Corrupt)?,
                count: input.varint().map_err(|_| Corrupt)?,
            };
            if agg.count > u64::from(rows) {
                return Err(Corrupt);
            }
            aggs.push(agg);
        }
        let mut counters = Vec::new();
        if with_counters {
            let n_counters = input.count(n_metrics).map_err(|_| Corrupt)?;
            if n_counters != 0 && n_counters != n_metrics {
                return Err(Corrupt);
            }
            for _ in 0..n_counters {
                counters.push(decode_counter(input).map_err(|_| Corrupt)?);
            }
        }
        let bits = input.bytes().map_err(|_| Corrupt)?;
        // Within the times a feed can carry (so no block holds `NEVER_STORED`'s value).
        let consistent = rows >= 1
            && timestamp::CANONICAL_MIN <= first_ts
            && last_ts <= timestamp::CANONICAL_MAX
            && first_ts <= last_ts
            && (rows > 1 || first_ts == last_ts)
            && bits.len() as u64 == u64::from(bit_len).div_ceil(8);
        if !consistent {
            return Err(Corrupt);
        }
        Ok(Block::assemble(
            (first_ts, last_ts, rows),
            bits,
            bit_len,
            times,
            Aggs::Held(&aggs),
            Counters::Held(&counters),
        ))
    }
}

fn decode_counter(input: &mut Reader<'_>) -> Result<CounterAgg, wire::Truncated> {
    if input.take(1)? == [0] {
        return Ok(CounterAgg::default());
    }
    let first = (input.i64()?, input.varint()?);
    let last = (input.i64()?, input.varint()?);
    let increase = input.varint()?;
    let resets = u32::try_from(input.varint()?).map_err(|_| wire::Truncated)?;
    Ok(CounterAgg {
        first: Some(first),
        last: Some(last),
        increase,
        resets,
    })
}

/// Heap bytes of a block's counter aggregates behind their thin pointer.
fn counter_heap_bytes(counters: &Option<Box<Box<[CounterAgg]>>>) -> usize {
    counters.as_ref().map_or(0, |c| {
        std::mem::size_of::<Box<[CounterAgg]>>() + c.len() * std::mem::size_of::<CounterAgg>()
    })
}

/// The block rows are appended to. Its timestamps are in a log of [`OpenTimes`], shared with
/// the other open blocks that received the same ones.
#[derive(Debug)]
pub struct OpenBlock {
    pub first_ts: Micros,
    pub last_ts: Micros,
    pub rows: u32,
    /// The values, row by row.
    bits: BitWriter,
    /// The [`OpenTimes`] log holding this block's timestamps (its first `rows`).
    times: u32,
    /// Per position: one allocation for the encoders and the aggregates.
    metrics: Box<[OpenMetric]>,
    /// `None` until the first counter sample, then one per position (a thin pointer: every
    /// open block holds one, few hold counters).
    counters: Option<Box<Box<[CounterAgg]>>>,
}

/// What an open block keeps per position: its encoder's state and its aggregate, field by
/// field (56 bytes; a `ValueCodec` beside a `MetricAgg` took 64, padding included, for every
/// metric of a million switches).
#[derive(Debug, Clone, Copy)]
pub struct OpenMetric {
    /// `ValueCodec::to_parts`.
    mode: u8,
    prev: i64,
    prev_delta: i64,
    rice: u64,
    min: f64,
    max: f64,
    sum: f64,
    /// At most a block's rows.
    count: u32,
}

impl OpenMetric {
    fn new() -> OpenMetric {
        let mut metric = OpenMetric {
            mode: 0,
            prev: 0,
            prev_delta: 0,
            rice: 0,
            min: 0.0,
            max: 0.0,
            sum: 0.0,
            count: 0,
        };
        metric.set_codec(ValueCodec::default());
        metric.set_agg(MetricAgg::EMPTY);
        metric
    }

    fn codec(&self) -> ValueCodec {
        ValueCodec::from_parts((self.mode, self.prev, self.prev_delta, self.rice))
    }

    fn set_codec(&mut self, codec: ValueCodec) {
        (self.mode, self.prev, self.prev_delta, self.rice) = codec.to_parts();
    }

    pub fn agg(&self) -> MetricAgg {
        MetricAgg {
            min: self.min,
            max: self.max,
            sum: self.sum,
            count: u64::from(self.count),
        }
    }

    fn set_agg(&mut self, agg: MetricAgg) {
        (self.min, self.max, self.sum) = (agg.min, agg.max, agg.sum);
        self.count = u32::try_from(agg.count).unwrap_or(u32::MAX);
    }

    fn encode(&mut self, bits: &mut BitWriter, value: Option<Value>) {
        let mut codec = self.codec();
        codec.encode(bits, value);
        self.set_codec(codec);
        if let Some(value) = value {
            let mut agg = self.agg();
            agg.add(value.as_f64());
            self.set_agg(agg);
        }
    }
}

impl OpenBlock {
    /// A block whose first row is (`ts`, `values`); `values.len()` fixes its metric count.
    /// `expected_bytes` (the previous block's stream sizes, values and times) sizes the
    /// streams once, so they do not grow by doubling and leave freed buffers behind in the
    /// allocator.
    pub fn start(
        ts: Micros,
        values: &[Option<Value>],
        expected_bytes: (usize, usize),
        times: &mut OpenTimes,
    ) -> OpenBlock {
        let (values_bytes, times_bytes) = expected_bytes;
        let mut block = OpenBlock {
            first_ts: ts,
            last_ts: ts,
            rows: 0,
            bits: BitWriter::with_expected_size(values_bytes + values_bytes / 8),
            times: times.start(ts, times_bytes + times_bytes / 8),
            metrics: vec![OpenMetric::new(); values.len()].into_boxed_slice(),
            counters: None,
        };
        block.write_values(ts, values);
        block.rows = 1;
        block
    }

    pub fn n_metrics(&self) -> usize {
        self.metrics.len()
    }

    /// Appends a row; `ts` must be after the last row's and `values.len() == n_metrics()`.
    pub fn push(&mut self, ts: Micros, values: &[Option<Value>], times: &mut OpenTimes) {
        debug_assert!(ts > self.last_ts && values.len() == self.metrics.len());
        self.times = times.append(self.times, self.rows, ts);
        self.write_values(ts, values);
        self.last_ts = ts;
        self.rows += 1;
    }

    fn write_values(&mut self, ts: Micros, values: &[Option<Value>]) {
        for (pos, (metric, &v)) in self.metrics.iter_mut().zip(values).enumerate() {
            metric.encode(&mut self.bits, v);
            if let Some(Value::Int(v)) = v {
                let counters = self.counters.get_or_insert_with(|| {
                    Box::new(vec![CounterAgg::default(); values.len()].into_boxed_slice())
                });
                if let Some(counter) = counters.get_mut(pos) {
                    counter.add(ts, v);
                }
            }
        }
    }

    /// Aggregates per position so far.
    pub fn aggs(&self) -> Aggs<'_> {
        Aggs::Open(&self.metrics)
    }

    pub fn view<'a>(&'a self, times: &'a OpenTimes) -> BlockView<'a> {
        let (time_bits, time_bit_len) = times.stream(self.times);
        BlockView {
            first_ts: self.first_ts,
            last_ts: self.last_ts,
            rows: self.rows,
            n_metrics: self.metrics.len(),
            aggs: Aggs::Open(&self.metrics),
            counters: Counters::Held(self.counters.as_deref().map_or(&[], |c| &c[..])),
            times: Times::Split(time_bits, time_bit_len),
            bits: self.bits.bytes(),
            bit_len: self.bits.bit_len(),
        }
    }

    /// Heap bytes this block holds (capacity, as the allocator sees it); its timestamps are
    /// counted with [`OpenTimes`].
    pub fn heap_bytes(&self) -> usize {
        let (buffer, (state, _)) = self.heap_parts();
        buffer + state
    }

    /// Bytes of the value buffer in use (the rest of its capacity is room to grow).
    pub fn value_bytes(&self) -> usize {
        self.bits.bytes().len()
    }

    /// Value buffer bytes, and (bytes, allocations) of the rest.
    pub fn heap_parts(&self) -> (usize, (usize, usize)) {
        (
            self.bits.capacity(),
            (
                self.metrics.len() * std::mem::size_of::<OpenMetric>()
                    + counter_heap_bytes(&self.counters),
                1 + 2 * usize::from(self.counters.is_some()),
            ),
        )
    }

    /// Seals the block into a [`Block`] of its own (tests; the store seals with
    /// [`seal_with`](Self::seal_with)).
    #[cfg(test)]
    pub fn seal(self, times: &mut OpenTimes) -> Block {
        Block::assemble(
            (self.first_ts, self.last_ts, self.rows),
            self.bits.bytes(),
            u32::try_from(self.bits.bit_len()).unwrap_or(u32::MAX),
            Some(times.seal(self.times, self.rows)),
            Aggs::Open(&self.metrics),
            Counters::Held(self.counters.as_deref().map_or(&[], |c| &c[..])),
        )
    }

    /// Seals the block and hands `keep` its parts, the body in two pieces (packed aggregates
    /// and counters, written into `scratch`; then the value stream), for writing where it
    /// will be kept without assembling a [`Block`] first: at a million switches every seal
    /// allocated and freed a block's body only to copy it.
    pub fn seal_with<R>(
        self,
        times: &mut OpenTimes,
        scratch: &mut Vec<u8>,
        keep: impl FnOnce(SealedParts<'_>) -> R,
    ) -> R {
        scratch.clear();
        pack_aggs(Aggs::Open(&self.metrics), scratch);
        pack_counters(
            Counters::Held(self.counters.as_deref().map_or(&[], |c| &c[..])),
            scratch,
        );
        let stream = times.seal(self.times, self.rows);
        keep(SealedParts {
            bounds: (self.first_ts, self.last_ts, self.rows),
            bit_len: u32::try_from(self.bits.bit_len()).unwrap_or(u32::MAX),
            times: Some(&stream),
            body: [scratch, self.bits.bytes()],
        })
    }

    /// Drops the block (its rows expired), letting go of its timestamps.
    pub fn discard(self, times: &mut OpenTimes) {
        times.release(self.times);
    }
}

/// The timestamps of open blocks, in logs that blocks share. Every switch of a source polled
/// together receives the same timestamps, so the open blocks that began at the same time
/// (a stagger group of a source) hold one log between them instead of one stream each: at a
/// million switches that is the difference between ~100 bytes per switch and nothing.
///
/// A block holds a prefix of its log (its first `rows` timestamps). Appending the log's next
/// timestamp, already appended by another holder, costs nothing; a block whose timestamps
/// part from the log's (it missed a poll, or its rows carry their own times) gets a log of
/// its own, a copy of its prefix. The store thread is the only writer (readers see the logs
/// under the store's lock), so no log needs a lock of its own.
#[derive(Debug, Default)]
pub struct OpenTimes {
    logs: Vec<TimeLog>,
    /// Logs no block holds, for reuse (with their buffers, up to [`SPARE_BUFFERS`]).
    free: Vec<u32>,
    /// The log a block beginning at this time joins.
    by_first: rustc_hash::FxHashMap<Micros, u32>,
}

/// Freed logs that keep their buffer for the next block, which then allocates nothing.
const SPARE_BUFFERS: usize = 256;

#[derive(Debug, Default)]
struct TimeLog {
    /// The timestamps after the first.
    bits: BitWriter,
    codec: TimestampCodec,
    first_ts: Micros,
    last_ts: Micros,
    rows: u32,
    /// Open blocks holding (a prefix of) this log; 0: free.
    holders: u32,
    /// The stream of the last prefix sealed, so the other holders sealing at the same
    /// length share it without copying it again.
    sealed: Option<(u32, Arc<TimeStream>)>,
}

impl TimeLog {
    fn push(&mut self, ts: Micros) {
        self.codec.encode(&mut self.bits, ts);
        self.last_ts = ts;
        self.rows += 1;
    }
}

impl OpenTimes {
    /// A log for a block beginning at `ts`: the one other blocks beginning then hold, or a
    /// new one sized for `expected_bytes`.
    pub fn start(&mut self, ts: Micros, expected_bytes: usize) -> u32 {
        if let Some(&i) = self.by_first.get(&ts) {
            let log = &mut self.logs[i as usize];
            if log.holders > 0 && log.first_ts == ts {
                log.holders += 1;
                return i;
            }
        }
        let i = self.fresh(ts, expected_bytes);
        self.by_first.insert(ts, i);
        i
    }

    fn fresh(&mut self, ts: Micros, expected_bytes: usize) -> u32 {
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.logs.push(TimeLog::default());
                u32::try_from(self.logs.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let log = &mut self.logs[i as usize];
        log.bits.reset(expected_bytes);
        log.codec = TimestampCodec::starting_at(ts);
        log.first_ts = ts;
        log.last_ts = ts;
        log.rows = 1;
        log.holders = 1;
        log.sealed = None;
        i
    }

    /// Appends `ts` for a block holding the first `held` timestamps of log `i`; the log that
    /// block holds from now on.
    pub fn append(&mut self, i: u32, held: u32, ts: Micros) -> u32 {
        let log = &mut self.logs[i as usize];
        if held == log.rows {
            log.push(ts);
            return i;
        }
        if held + 1 == log.rows && log.last_ts == ts {
            return i;
        }
        // Parted: a log of its own, with the block's prefix.
        let own = self.copy_prefix(i, held);
        self.release(i);
        self.logs[own as usize].push(ts);
        own
    }

    /// A new log holding the first `rows` timestamps of log `i` (re-encoded: the same bits).
    fn copy_prefix(&mut self, i: u32, rows: u32) -> u32 {
        let (first_ts, bytes) = {
            let log = &self.logs[i as usize];
            (log.first_ts, log.bits.bit_len().div_ceil(8) as usize)
        };
        let own = self.fresh(first_ts, bytes);
        let (src, dst) = if (i as usize) < own as usize {
            let (a, b) = self.logs.split_at_mut(own as usize);
            (&a[i as usize], &mut b[0])
        } else {
            let (a, b) = self.logs.split_at_mut(i as usize);
            (&b[0], &mut a[own as usize])
        };
        let mut reader = BitReader::new(src.bits.bytes(), src.bits.bit_len());
        let mut decoder = TimestampCodec::starting_at(first_ts);
        for _ in 1..rows {
            // The log was written by this codec: it decodes (a failure would end the copy
            // early, and the block's later rows would then be refused as corrupt on read).
            let Some(ts) = decoder.decode(&mut reader) else {
                break;
            };
            dst.push(ts);
        }
        own
    }

    /// The stream of log `i`: its bytes and length in bits (a block reads its prefix).
    pub fn stream(&self, i: u32) -> (&[u8], u64) {
        self.logs
            .get(i as usize)
            .map_or((&[][..], 0), |log| (log.bits.bytes(), log.bits.bit_len()))
    }

    /// The first `rows` timestamps of log `i` as a sealed block's stream, and lets go of it.
    pub fn seal(&mut self, i: u32, rows: u32) -> Arc<TimeStream> {
        let log = &self.logs[i as usize];
        let cached = match &log.sealed {
            Some((sealed_rows, stream)) if *sealed_rows == rows => Some(Arc::clone(stream)),
            _ => None,
        };
        let whole = rows == log.rows;
        let stream = match cached {
            Some(stream) => stream,
            None => {
                let source = if whole { i } else { self.copy_prefix(i, rows) };
                let log = &self.logs[source as usize];
                let stream = Arc::new(TimeStream {
                    bit_len: u32::try_from(log.bits.bit_len()).unwrap_or(u32::MAX),
                    bits: log.bits.bytes().into(),
                });
                if !whole {
                    self.release(source);
                }
                self.logs[i as usize].sealed = Some((rows, Arc::clone(&stream)));
                stream
            }
        };
        self.release(i);
        stream
    }

    /// A block lets go of log `i`.
    pub fn release(&mut self, i: u32) {
        let Some(log) = self.logs.get_mut(i as usize) else {
            return;
        };
        log.holders = log.holders.saturating_sub(1);
        if log.holders > 0 {
            return;
        }
        log.sealed = None;
        if self.free.len() >= SPARE_BUFFERS {
            log.bits = BitWriter::default();
        }
        if self.by_first.get(&log.first_ts) == Some(&i) {
            self.by_first.remove(&log.first_ts);
        }
        self.free.push(i);
    }

    /// Logs held by at least one block.
    pub fn live(&self) -> usize {
        self.logs.len() - self.free.len()
    }

    /// Heap bytes of the logs, their buffers and the index.
    pub fn heap_bytes(&self) -> usize {
        self.logs.capacity() * std::mem::size_of::<TimeLog>()
            + self.logs.iter().map(|l| l.bits.capacity()).sum::<usize>()
            + self.free.capacity() * 4
            + self.by_first.capacity() * (std::mem::size_of::<(Micros, u32)>() + 1)
    }

    /// Allocations: the vectors, the index, and each log's buffer.
    pub fn allocations(&self) -> usize {
        3 + self.logs.iter().filter(|l| l.bits.capacity() > 0).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What every metric of a million switches' open blocks holds: a byte more here is three
    /// megabytes there.
    #[test]
    fn an_open_metric_is_56_bytes() {
        assert_eq!(std::mem::size_of::<OpenMetric>(), 56);
    }

    /// The encoder's state survives being kept in parts: a steady counter and a two-decimal
    /// gauge stay in their delta modes (a few bits a row), not one escape per row (~80 bits).
    #[test]
    fn open_metrics_keep_their_encoder_state() {
        let mut times = OpenTimes::default();
        let row = |i: u64| {
            [
                Some(Value::Int(1_000_000 + 977 * i)),
                Some(Value::Float(i as f64 * 0.25 + 40.5)),
            ]
        };
        let mut open = OpenBlock::start(0, &row(0), (0, 0), &mut times);
        for i in 1..1000u64 {
            open.push(i as i64 * 1_000_000, &row(i), &mut times);
        }
        let bits = open.bits.bit_len();
        assert!(bits < 1000 * 16, "{bits} bits for 1000 rows of two metrics");
        let mut decoded = Vec::new();
        open.view(&times)
            .for_each_row(|_, values| {
                decoded.push(values.to_vec());
                true
            })
            .expect("decodes");
        assert_eq!(decoded.len(), 1000);
        assert_eq!(decoded[999], row(999).to_vec());
    }

    #[test]
    fn rows_and_aggregates_round_trip() {
        let rows: Vec<(Micros, [f64; 3])> = (0..500)
            .map(|i| {
                let bw = if i % 17 == 0 {
                    f64::NAN
                } else {
                    50.0 + f64::from(i % 13) * 0.25
                };
                (
                    1_000_000 * i64::from(i) + i64::from(i % 3),
                    [bw, 0.01 * f64::from(i % 90), f64::from(i % 4)],
                )
            })
            .collect();
        let cells = |values: &[f64; 3]| values.map(Value::cell);
        let mut times = OpenTimes::default();
        let mut open = OpenBlock::start(rows[0].0, &cells(&rows[0].1), (0, 0), &mut times);
        for (ts, values) in &rows[1..] {
            open.push(*ts, &cells(values), &mut times);
        }
        let as_f64 = |v: Option<Value>| v.map_or(f64::NAN, Value::as_f64);
        let check = |view: BlockView<'_>| {
            let mut seen = Vec::new();
            view.for_each_row(|ts, values| {
                seen.push((
                    ts,
                    [as_f64(values[0]), as_f64(values[1]), as_f64(values[2])],
                ));
                true
            })
            .expect("decodes");
            assert_eq!(seen.len(), rows.len());
            for ((ts, got), (want_ts, want)) in seen.iter().zip(&rows) {
                assert_eq!(ts, want_ts);
                for (g, w) in got.iter().zip(want) {
                    assert!(g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()));
                }
            }
            let mut brute = [MetricAgg::EMPTY; 3];
            for (_, values) in &rows {
                for (agg, v) in brute.iter_mut().zip(values) {
                    if !v.is_nan() {
                        agg.add(*v);
                    }
                }
            }
            assert_eq!(view.aggs.iter().collect::<Vec<_>>(), brute);
        };
        check(open.view(&times));
        let sealed = open.seal(&mut times);
        check(sealed.view());
        assert_eq!(
            (sealed.first_ts, sealed.last_ts, sealed.rows),
            (0, 499_000_001, 500)
        );
    }

    #[test]
    fn packed_aggregates_read_back_bit_for_bit_and_short_decimals_are_small() {
        let edge = [
            0.0,
            -0.0,
            1.0,
            -1.5,
            0.1 + 0.2,
            1e300,
            -1e-300,
            f64::MIN_POSITIVE / 4.0,
            2f64.powi(53),
            2f64.powi(64),
            f64::INFINITY,
            f64::NEG_INFINITY,
            123.456_789_012,
            -12.34,
        ];
        let aggs: Vec<MetricAgg> = (0..edge.len())
            .map(|i| MetricAgg {
                min: edge[i],
                max: edge[(i + 1) % edge.len()],
                sum: edge[(i + 2) % edge.len()],
                count: 1 << (3 * i),
            })
            .chain([MetricAgg::EMPTY])
            .collect();
        let bits = |a: MetricAgg| (a.min.to_bits(), a.max.to_bits(), a.sum.to_bits(), a.count);
        let mut bytes = Vec::new();
        pack_aggs(Aggs::Held(&aggs), &mut bytes);
        let packed = Aggs::packed(&bytes).expect("reads back");
        let want: Vec<_> = aggs.iter().copied().map(bits).collect();
        assert_eq!(packed.iter().map(bits).collect::<Vec<_>>(), want);
        for (position, agg) in want.iter().enumerate() {
            assert_eq!(packed.get(position).map(bits), Some(*agg));
        }
        assert_eq!(packed.get(aggs.len()), None);

        // Entries 1 byte, count 2, min 1 + 2 (zigzag 2,468), max 1 + 3 (19,752), and a sum
        // that is no short decimal 1 + 8: 19 bytes instead of 32.
        let typical = MetricAgg {
            min: 12.34,
            max: 98.76,
            sum: 7_000.123_000_000_01,
            count: 128,
        };
        let mut small = Vec::new();
        pack_aggs(Aggs::Held(&[typical]), &mut small);
        assert_eq!(small.len(), 1 + 2 + 3 + 4 + 9);
    }

    #[test]
    fn counter_aggregates_count_resets_and_merge_across_blocks() {
        let samples = [(1, 100u64), (2, 150), (3, 20), (4, 50), (5, 50), (6, 10)];
        let mut whole = CounterAgg::default();
        for &(ts, v) in &samples {
            whole.add(ts, v);
        }
        // 100→150 (+50), reset to 20 (+20), →50 (+30), →50, reset to 10 (+10).
        assert_eq!((whole.increase, whole.resets), (110, 2));
        assert_eq!((whole.first, whole.last), (Some((1, 100)), Some((6, 10))));
        for split in 0..=samples.len() {
            let (mut a, mut b) = (CounterAgg::default(), CounterAgg::default());
            samples[..split].iter().for_each(|&(t, v)| a.add(t, v));
            samples[split..].iter().for_each(|&(t, v)| b.add(t, v));
            a.merge(&b);
            assert_eq!(a, whole, "split at {split}");
        }
    }

    #[test]
    fn counter_aggregates_round_trip_through_the_block_file_encoding() {
        let mut times = OpenTimes::default();
        let mut open = OpenBlock::start(
            10,
            &[Some(Value::Int(u64::MAX - 40)), None],
            (0, 0),
            &mut times,
        );
        open.push(
            20,
            &[Some(Value::Int(5)), Some(Value::Float(1.5))],
            &mut times,
        );
        open.push(30, &[Some(Value::Int(9)), None], &mut times);
        let counters = |view: BlockView<'_>| view.counters.iter().collect::<Vec<_>>();
        let held = counters(open.view(&times));
        let sealed = open.seal(&mut times);
        let mut bytes = Vec::new();
        sealed.view().encode(&mut bytes, 1);
        let table = [Arc::clone(sealed.times.as_ref().expect("split"))];
        let back = Block::decode(&mut Reader::new(&bytes), 8, 3, &table).expect("decodes");
        let rows = |b: &Block| {
            let mut all = Vec::new();
            b.view()
                .for_each_row(|t, v| {
                    all.push((t, v.to_vec()));
                    true
                })
                .expect("decodes");
            all
        };
        assert_eq!(rows(&back), rows(&sealed));
        assert_eq!(rows(&back)[2].0, 30);
        // Packed into the sealed block, and through a block file, the counters stay whole.
        assert_eq!(counters(sealed.view()), held);
        assert_eq!(counters(back.view()), held);
        assert_eq!(held.len(), 2);
        assert_eq!(sealed.view().counters.get(0).map(|c| c.increase), Some(9));
        assert_eq!(sealed.view().counters.get(1), Some(CounterAgg::default()));
        assert_eq!(sealed.view().counters.get(2), None);
    }

    /// The timestamps a view decodes.
    fn timestamps(view: BlockView<'_>) -> Vec<Micros> {
        let mut out = Vec::new();
        view.for_each_row(|ts, _| {
            out.push(ts);
            true
        })
        .expect("decodes");
        out
    }

    #[test]
    fn open_blocks_polled_together_share_one_log_and_part_when_their_times_do() {
        let mut times = OpenTimes::default();
        let row = [Some(Value::Float(1.5))];
        let t0 = 1_700_000_000_000_000;
        let mut blocks: Vec<OpenBlock> = (0..100)
            .map(|_| OpenBlock::start(t0, &row, (0, 0), &mut times))
            .collect();
        let mut want: Vec<Vec<Micros>> = vec![vec![t0]; 100];
        for poll in 1..40 {
            let ts = t0 + poll * 1_000_000 + (poll % 7) * 113;
            for (i, (block, want)) in blocks.iter_mut().zip(&mut want).enumerate() {
                // Block 7 misses poll 20; block 9's rows carry their own time from poll 30.
                if i == 7 && poll == 20 {
                    continue;
                }
                let ts = if i == 9 && poll >= 30 { ts + 5 } else { ts };
                block.push(ts, &row, &mut times);
                want.push(ts);
            }
            // Block 7 parts when it appends the poll after the one it missed.
            let expected_logs = 1 + usize::from(poll > 20) + usize::from(poll >= 30);
            assert_eq!(times.live(), expected_logs, "after poll {poll}");
        }
        for (block, want) in blocks.iter().zip(&want) {
            assert_eq!(&timestamps(block.view(&times)), want);
        }
        // Sealed at the same length, blocks share one stream; a shorter prefix decodes right.
        let sealed: Vec<Block> = blocks.into_iter().map(|b| b.seal(&mut times)).collect();
        assert_eq!(times.live(), 0);
        for (block, want) in sealed.iter().zip(&want) {
            assert_eq!(&timestamps(block.view()), want);
        }
        let stream = |b: &Block| Arc::clone(b.times.as_ref().expect("split"));
        assert!(Arc::ptr_eq(&stream(&sealed[0]), &stream(&sealed[99])));
        assert!(!Arc::ptr_eq(&stream(&sealed[7]), &stream(&sealed[0])));
        assert!(!Arc::ptr_eq(&stream(&sealed[9]), &stream(&sealed[0])));
        // A freed log is reused with its buffer.
        let again = OpenBlock::start(t0 + 999, &row, (0, 0), &mut times);
        assert_eq!(times.logs.len(), 3);
        again.discard(&mut times);
        assert_eq!(times.live(), 0);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(crate::proptest_cases()))]

        /// Decoding arbitrary bytes as a block never panics: it yields rows or `Corrupt`.
        #[test]
        fn arbitrary_streams_never_panic_the_decoder(
            bits in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            times in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
            rows in 0u32..200,
            n_metrics in 0usize..6,
            first_ts in proptest::prelude::any::<i64>(),
        ) {
            let aggs = vec![MetricAgg::EMPTY; n_metrics];
            for times in [Times::Interleaved, Times::Split(&times, times.len() as u64 * 8)] {
                let view = BlockView {
                    first_ts,
                    last_ts: first_ts,
                    rows,
                    n_metrics,
                    aggs: Aggs::Held(&aggs),
                    counters: Counters::Held(&[]),
                    times,
                    bits: &bits,
                    bit_len: bits.len() as u64 * 8,
                };
                let _ = view.for_each_row(|_, _| true);
            }
        }

        /// Blocks that receive the same, different, or no timestamps poll after poll, seal,
        /// expire and start again, always decode exactly their own timestamps, and free every
        /// log they held.
        #[test]
        fn shared_timestamp_logs_give_each_block_its_own_times(
            polls in proptest::collection::vec(
                proptest::collection::vec(0u8..6, 5),
                1..60,
            ),
        ) {
            let mut times = OpenTimes::default();
            let row = [Some(Value::Int(3))];
            let mut open: Vec<Option<(OpenBlock, Vec<Micros>)>> = (0..5).map(|_| None).collect();
            for (poll, choices) in polls.iter().enumerate() {
                let ts = 1_000_000 * (poll as i64 + 1);
                for (slot, &choice) in open.iter_mut().zip(choices) {
                    // 0-1: the poll's time; 2: its own time; 3: no row; 4: seal; 5: expire.
                    match (choice, slot.take()) {
                        (0..=2, Some((mut block, mut want))) => {
                            let t = if choice == 2 { ts + 17 } else { ts };
                            block.push(t, &row, &mut times);
                            want.push(t);
                            *slot = Some((block, want));
                        }
                        (0..=2, None) => {
                            let t = if choice == 2 { ts + 17 } else { ts };
                            *slot = Some((OpenBlock::start(t, &row, (0, 0), &mut times), vec![t]));
                        }
                        (4, Some((block, want))) => {
                            let sealed = block.seal(&mut times);
                            proptest::prop_assert_eq!(timestamps(sealed.view()), want);
                        }
                        (5, Some((block, _))) => block.discard(&mut times),
                        (_, kept) => *slot = kept,
                    }
                }
                for (block, want) in open.iter().flatten() {
                    proptest::prop_assert_eq!(&timestamps(block.view(&times)), want);
                }
            }
            for (block, _) in open.into_iter().flatten() {
                block.discard(&mut times);
            }
            proptest::prop_assert_eq!(times.live(), 0);
            proptest::prop_assert!(times.by_first.is_empty());
        }

        /// Any finite or infinite values (NaN means absent) round-trip bit for bit.
        #[test]
        fn arbitrary_rows_round_trip(
            rows in proptest::collection::vec(
                (1i64..10_000_000, proptest::collection::vec(proptest::prelude::any::<f64>(), 3)),
                1..100,
            ),
        ) {
            let mut ts = 1_700_000_000_000_000i64;
            let stamped: Vec<(Micros, Vec<Option<Value>>)> = rows
                .into_iter()
                .map(|(gap, values)| {
                    ts += gap;
                    (ts, values.into_iter().map(Value::cell).collect())
                })
                .collect();
            let mut times = OpenTimes::default();
            let mut open = OpenBlock::start(stamped[0].0, &stamped[0].1, (0, 0), &mut times);
            for (t, values) in &stamped[1..] {
                open.push(*t, values, &mut times);
            }
            let sealed = open.seal(&mut times);
            let mut i = 0;
            let mut mismatch = None;
            sealed
                .view()
                .for_each_row(|t, values| {
                    let (want_t, want) = &stamped[i];
                    let same = t == *want_t
                        && values.iter().zip(want).all(|(g, w)| match (g, w) {
                            (Some(Value::Float(g)), Some(Value::Float(w))) => g.to_bits() == w.to_bits(),
                            (g, w) => g == w,
                        });
                    if !same && mismatch.is_none() {
                        mismatch = Some(i);
                    }
                    i += 1;
                    true
                })
                .expect("decodes");
            proptest::prop_assert_eq!(i, stamped.len());
            proptest::prop_assert_eq!(mismatch, None);
        }
    }
}
