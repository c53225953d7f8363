//! Blocks: a run of rows of one switch (a timestamp and one value per metric), compressed into
//! one bit stream, with min/max/sum/count per metric kept beside it so aggregates over whole
//! blocks never decode them. An [`OpenBlock`] takes appends; sealing it gives an immutable,
//! tightly sized [`Block`].

use super::codec::{BitReader, BitWriter, TimestampCodec, ValueCodec};
use crate::shared::timestamp::Micros;
use crate::shared::wire::{self, Reader};

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

/// What readers need of a block, open or sealed.
#[derive(Debug, Clone, Copy)]
pub struct BlockView<'a> {
    pub first_ts: Micros,
    pub last_ts: Micros,
    pub rows: u32,
    pub n_metrics: usize,
    pub aggs: &'a [MetricAgg],
    bits: &'a [u8],
    bit_len: u64,
}

impl BlockView<'_> {
    /// Calls `visit(timestamp, values)` for each row in time order until it returns false.
    pub fn for_each_row(
        &self,
        mut visit: impl FnMut(Micros, &[f64]) -> bool,
    ) -> Result<(), Corrupt> {
        let mut reader = BitReader::new(self.bits, self.bit_len);
        let mut ts_codec = TimestampCodec::starting_at(self.first_ts);
        let mut codecs = vec![ValueCodec::default(); self.n_metrics];
        let mut row = vec![0.0; self.n_metrics];
        for row_idx in 0..self.rows {
            let ts = if row_idx == 0 {
                self.first_ts
            } else {
                ts_codec.decode(&mut reader).ok_or(Corrupt)?
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
    bits: Box<[u8]>,
    aggs: Box<[MetricAgg]>,
}

impl Block {
    pub fn view(&self) -> BlockView<'_> {
        BlockView {
            first_ts: self.first_ts,
            last_ts: self.last_ts,
            rows: self.rows,
            n_metrics: self.aggs.len(),
            aggs: &self.aggs,
            bits: &self.bits,
            bit_len: u64::from(self.bit_len),
        }
    }

    /// Values present (rows × metrics, absent cells excluded).
    pub fn samples(&self) -> u64 {
        self.aggs.iter().map(|a| a.count).sum()
    }

    /// Heap bytes this block holds.
    pub fn heap_bytes(&self) -> usize {
        self.bits.len() + self.aggs.len() * std::mem::size_of::<MetricAgg>()
    }

    /// Size of the compressed stream.
    pub fn stream_bytes(&self) -> usize {
        self.bits.len()
    }

    /// Appends the block-file encoding of this block: bounds, row and metric counts, the
    /// aggregates (so loading never decodes), then the stream as it is in memory.
    pub fn encode(&self, out: &mut Vec<u8>) {
        wire::put_i64(out, self.first_ts);
        wire::put_i64(out, self.last_ts);
        wire::put_varint(out, u64::from(self.rows));
        wire::put_varint(out, self.aggs.len() as u64);
        wire::put_varint(out, u64::from(self.bit_len));
        for agg in self.aggs.iter() {
            wire::put_f64(out, agg.min);
            wire::put_f64(out, agg.max);
            wire::put_f64(out, agg.sum);
            wire::put_varint(out, agg.count);
        }
        wire::put_bytes(out, &self.bits);
    }

    /// Reads what [`Block::encode`] wrote, checking that the header is consistent with itself
    /// (a checksum guards the bytes; this guards against a writer bug or a forged file).
    pub fn decode(input: &mut Reader<'_>, max_metrics: usize) -> Result<Block, Corrupt> {
        let first_ts = input.i64().map_err(|_| Corrupt)?;
        let last_ts = input.i64().map_err(|_| Corrupt)?;
        let rows = u32::try_from(input.varint().map_err(|_| Corrupt)?).map_err(|_| Corrupt)?;
        let n_metrics = input.count(max_metrics).map_err(|_| Corrupt)?;
        let bit_len = u32::try_from(input.varint().map_err(|_| Corrupt)?).map_err(|_| Corrupt)?;
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
        let bits = input.bytes().map_err(|_| Corrupt)?;
        let consistent = rows >= 1
            && first_ts <= last_ts
            && (rows > 1 || first_ts == last_ts)
            && bits.len() as u64 == u64::from(bit_len).div_ceil(8);
        if !consistent {
            return Err(Corrupt);
        }
        Ok(Block {
            first_ts,
            last_ts,
            rows,
            bit_len,
            bits: bits.into(),
            aggs: aggs.into_boxed_slice(),
        })
    }
}

/// The block rows are appended to.
#[derive(Debug)]
pub struct OpenBlock {
    pub first_ts: Micros,
    pub last_ts: Micros,
    pub rows: u32,
    bits: BitWriter,
    ts_codec: TimestampCodec,
    codecs: Vec<ValueCodec>,
    aggs: Vec<MetricAgg>,
}

impl OpenBlock {
    /// A block whose first row is (`ts`, `values`); `values.len()` fixes its metric count.
    /// `expected_bytes` (the previous block's size) sizes the stream once, so it does not grow
    /// by doubling and leave freed buffers behind in the allocator.
    pub fn start(ts: Micros, values: &[f64], expected_bytes: usize) -> OpenBlock {
        let mut block = OpenBlock {
            first_ts: ts,
            last_ts: ts,
            rows: 0,
            bits: BitWriter::with_expected_size(expected_bytes + expected_bytes / 8),
            ts_codec: TimestampCodec::starting_at(ts),
            codecs: vec![ValueCodec::default(); values.len()],
            aggs: vec![MetricAgg::EMPTY; values.len()],
        };
        block.write_values(values);
        block.rows = 1;
        block
    }

    pub fn n_metrics(&self) -> usize {
        self.codecs.len()
    }

    /// Appends a row; `ts` must be after the last row's and `values.len() == n_metrics()`.
    pub fn push(&mut self, ts: Micros, values: &[f64]) {
        debug_assert!(ts > self.last_ts && values.len() == self.codecs.len());
        self.ts_codec.encode(&mut self.bits, ts);
        self.write_values(values);
        self.last_ts = ts;
        self.rows += 1;
    }

    fn write_values(&mut self, values: &[f64]) {
        for ((codec, agg), &v) in self.codecs.iter_mut().zip(&mut self.aggs).zip(values) {
            codec.encode(&mut self.bits, v);
            agg.add(v);
        }
    }

    pub fn view(&self) -> BlockView<'_> {
        BlockView {
            first_ts: self.first_ts,
            last_ts: self.last_ts,
            rows: self.rows,
            n_metrics: self.codecs.len(),
            aggs: &self.aggs,
            bits: self.bits.bytes(),
            bit_len: self.bits.bit_len(),
        }
    }

    /// Heap bytes this block holds (capacity, as the allocator sees it).
    pub fn heap_bytes(&self) -> usize {
        self.bits.capacity()
            + self.codecs.len() * std::mem::size_of::<ValueCodec>()
            + self.aggs.len() * std::mem::size_of::<MetricAgg>()
    }

    pub fn seal(self) -> Block {
        Block {
            first_ts: self.first_ts,
            last_ts: self.last_ts,
            rows: self.rows,
            bit_len: u32::try_from(self.bits.bit_len()).unwrap_or(u32::MAX),
            bits: self.bits.into_bytes(),
            aggs: self.aggs.into_boxed_slice(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut open = OpenBlock::start(rows[0].0, &rows[0].1, 0);
        for (ts, values) in &rows[1..] {
            open.push(*ts, values);
        }
        let check = |view: BlockView<'_>| {
            let mut seen = Vec::new();
            view.for_each_row(|ts, values| {
                seen.push((ts, [values[0], values[1], values[2]]));
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
                    agg.add(*v);
                }
            }
            assert_eq!(view.aggs, brute);
        };
        check(open.view());
        let sealed = open.seal();
        check(sealed.view());
        assert_eq!(
            (sealed.first_ts, sealed.last_ts, sealed.rows),
            (0, 499_000_001, 500)
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(crate::proptest_cases()))]

        /// Decoding arbitrary bytes as a block never panics: it yields rows or `Corrupt`.
        #[test]
        fn arbitrary_streams_never_panic_the_decoder(
            bits in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            rows in 0u32..200,
            n_metrics in 0usize..6,
            first_ts in proptest::prelude::any::<i64>(),
        ) {
            let aggs = vec![MetricAgg::EMPTY; n_metrics];
            let view = BlockView {
                first_ts,
                last_ts: first_ts,
                rows,
                n_metrics,
                aggs: &aggs,
                bits: &bits,
                bit_len: bits.len() as u64 * 8,
            };
            let _ = view.for_each_row(|_, _| true);
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
            let stamped: Vec<(Micros, Vec<f64>)> = rows
                .into_iter()
                .map(|(gap, values)| {
                    ts += gap;
                    (ts, values)
                })
                .collect();
            let mut open = OpenBlock::start(stamped[0].0, &stamped[0].1, 0);
            for (t, values) in &stamped[1..] {
                open.push(*t, values);
            }
            let sealed = open.seal();
            let mut i = 0;
            let mut mismatch = None;
            sealed
                .view()
                .for_each_row(|t, values| {
                    let (want_t, want) = &stamped[i];
                    let same = t == *want_t
                        && values.iter().zip(want).all(|(g, w)| g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()));
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
