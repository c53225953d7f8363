//! Bit-level codes for compressed series: a bit stream, an adaptive Rice code, and the value
//! and timestamp encoders built on it.
//!
//! Why this shape: telemetry values carry few decimals and move in small steps, so a value is
//! stored as an exact scaled integer (`55.67` → `5567` at scale 2) and encoded as the zigzag of
//! its difference from the previous one; timestamps as the delta of their delta. Both streams
//! of small integers go through a Rice code whose parameter follows a running mean of recent
//! magnitudes (as LOCO-I/FLAC do), so a quiet series costs a bit or two per sample and a burst
//! costs little more than its own size. Anything the fast path cannot hold exactly — a missing
//! value, a value needing more decimals, a value no decimal scale represents, a huge jump — goes
//! through an escape, so every `f64` round-trips bit for bit. Counters are exact `u64`s: the
//! stream switches to them with an escape and then codes the change of their delta.

use crate::shared::metric::Value;

/// Unary run that announces an escape instead of a quotient.
const ESCAPE_RUN: u32 = 20;
const ESC_LARGE: u64 = 0;
const ESC_ABSENT: u64 = 1;
const ESC_ABSOLUTE: u64 = 2;
const ESC_RAW: u64 = 3;

/// Most decimals a scaled value may use (10^12 × |v| must stay below 2^53).
pub(super) const MAX_SCALE: u32 = 12;
const POW10: [f64; 13] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12,
];
const EXACT_LIMIT: f64 = 9_007_199_254_740_992.0; // 2^53

/// Appends bits, most significant first. The last byte holds any partial bits, so a reader
/// can decode an open stream at any moment.
#[derive(Debug, Default, Clone)]
pub struct BitWriter {
    bytes: Vec<u8>,
    /// Bits used in the last byte (0: it is full): the length in bits without a `u64`, as
    /// every open block holds a writer.
    tail_bits: u8,
    /// Bytes to add when full (0: let `Vec` double). Growing by a fraction of the expected
    /// size bounds both the unused tail and the number of reallocations. (A `u32`: every
    /// open block holds a writer.)
    growth_step: u32,
}

/// A stream expected to take `expected_bytes` grows by a sixteenth of that at a time. Why so
/// small: at a million switches each open block's buffer is reallocated as it fills, and the
/// smaller steps left fewer and smaller holes in the allocator as well as less unused tail
/// (`million --quick`, 200k switches after 10 simulated minutes: 1.850 B per sample of RSS
/// with quarters, 1.803 with eighths, 1.790 with sixteenths; allocating it whole at once:
/// 2.066).
fn growth_step(expected_bytes: usize) -> u32 {
    u32::try_from(expected_bytes / 16).unwrap_or(u32::MAX)
}

impl BitWriter {
    /// A writer expecting about `expected_bytes`, allocated [`growth_step`] at a time.
    pub fn with_expected_size(expected_bytes: usize) -> BitWriter {
        let step = growth_step(expected_bytes);
        BitWriter {
            bytes: Vec::with_capacity(step as usize),
            tail_bits: 0,
            growth_step: step,
        }
    }

    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// Writes the low `n` bits of `value` (`n` ≤ 64).
    #[inline]
    pub fn write(&mut self, value: u64, n: u32) {
        if n == 0 {
            return;
        }
        if n > 56 {
            self.write(value >> 32, n - 32);
            self.write(value & 0xffff_ffff, 32);
            return;
        }
        let used = u32::from(self.tail_bits);
        let value = value & ((1u64 << n) - 1);
        // The partial last byte's bits, then the new ones, left-aligned in one register.
        let mut register = value << (64 - used - n);
        if used > 0 {
            if let Some(last) = self.bytes.pop() {
                register |= u64::from(last) << 56;
            }
        }
        let n_bytes = (used + n).div_ceil(8) as usize;
        if self.growth_step > 0 && self.bytes.len() + n_bytes > self.bytes.capacity() {
            self.bytes
                .reserve_exact((self.growth_step as usize).max(n_bytes));
        }
        self.bytes
            .extend_from_slice(&register.to_be_bytes()[..n_bytes]);
        self.tail_bits = ((used + n) % 8) as u8;
    }

    /// `count` one-bits then a zero.
    fn write_unary(&mut self, count: u32) {
        let mut left = count;
        while left >= 32 {
            self.write(u64::from(u32::MAX), 32);
            left -= 32;
        }
        self.write(((1u64 << left) - 1) << 1, left + 1);
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn bit_len(&self) -> u64 {
        let unused = if self.tail_bits == 0 {
            0
        } else {
            8 - u64::from(self.tail_bits)
        };
        self.bytes.len() as u64 * 8 - unused
    }

    /// Empties the stream, keeping its buffer; `expected_bytes` as in
    /// [`with_expected_size`](Self::with_expected_size).
    pub fn reset(&mut self, expected_bytes: usize) {
        self.bytes.clear();
        self.tail_bits = 0;
        self.growth_step = growth_step(expected_bytes);
    }
}

/// Reads what a [`BitWriter`] wrote. Reading past the end yields `None`.
#[derive(Debug, Clone)]
pub struct BitReader<'a> {
    bytes: &'a [u8],
    pos: u64,
    end: u64,
}

impl<'a> BitReader<'a> {
    pub fn new(bytes: &'a [u8], bit_len: u64) -> BitReader<'a> {
        BitReader {
            bytes,
            pos: 0,
            end: bit_len.min(bytes.len() as u64 * 8),
        }
    }

    /// The 64 bits from the current position, zero past the end of the bytes; at least 57
    /// of them are real when the position is inside the stream.
    #[inline]
    fn peek64(&self) -> u64 {
        let byte = (self.pos / 8) as usize;
        let word = match self.bytes.get(byte..byte + 8) {
            Some(eight) => u64::from_be_bytes(eight.try_into().unwrap_or([0; 8])),
            None => {
                let mut buf = [0u8; 8];
                let tail = self.bytes.get(byte..).unwrap_or(&[]);
                buf[..tail.len()].copy_from_slice(tail);
                u64::from_be_bytes(buf)
            }
        };
        word << (self.pos % 8)
    }

    #[inline]
    pub fn read(&mut self, n: u32) -> Option<u64> {
        if self.pos + u64::from(n) > self.end {
            return None;
        }
        if n == 0 {
            return Some(0);
        }
        if n > 56 {
            let high = self.read(n - 32)?;
            let low = self.read(32)?;
            return Some((high << 32) | low);
        }
        let value = self.peek64() >> (64 - n);
        self.pos += u64::from(n);
        Some(value)
    }

    /// Counts one-bits up to `limit` (< 57), consuming the terminating zero when there is one.
    #[inline]
    fn read_unary(&mut self, limit: u32) -> Option<u32> {
        let ones = (!self.peek64()).leading_zeros().min(limit);
        let consumed = u64::from(ones) + u64::from(ones < limit);
        if self.pos + consumed > self.end {
            return None;
        }
        self.pos += consumed;
        Some(ones)
    }
}

/// Rice parameter that follows the running mean of recent magnitudes.
#[derive(Debug, Clone, Copy, Default)]
struct Adaptive {
    /// About 16 × the mean of recent values.
    acc: u64,
}

impl Adaptive {
    fn k(self) -> u32 {
        let mean = self.acc >> 4;
        if mean <= 1 {
            0
        } else {
            63 - mean.leading_zeros()
        }
    }

    fn update(&mut self, value: u64) {
        self.acc = self.acc - (self.acc >> 4) + value.min(1 << 40);
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

/// One code word: a Rice-coded integer, or an escape of some type.
enum Word {
    Int(u64),
    Escape(u64),
}

fn write_int(w: &mut BitWriter, state: &mut Adaptive, value: u64) {
    let k = state.k();
    let quotient = value >> k;
    if quotient < u64::from(ESCAPE_RUN) {
        w.write_unary(quotient as u32);
        w.write(value, k);
    } else {
        write_escape(w, ESC_LARGE);
        w.write(value, 64);
    }
    state.update(value);
}

fn write_escape(w: &mut BitWriter, kind: u64) {
    w.write(u64::from(u32::MAX), ESCAPE_RUN);
    w.write(kind, 2);
}

fn read_word(r: &mut BitReader<'_>, state: &mut Adaptive) -> Option<Word> {
    let k = state.k();
    // Fast path: quotient, terminator and remainder all inside one 57-bit peek.
    let word = r.peek64();
    let ones = (!word).leading_zeros();
    if ones < ESCAPE_RUN && ones + 1 + k <= 57 {
        let used = u64::from(ones + 1 + k);
        if r.pos + used > r.end {
            return None;
        }
        let remainder = if k == 0 {
            0
        } else {
            (word << (ones + 1)) >> (64 - k)
        };
        r.pos += used;
        let value = (u64::from(ones) << k) | remainder;
        state.update(value);
        return Some(Word::Int(value));
    }
    let quotient = r.read_unary(ESCAPE_RUN)?;
    if quotient < ESCAPE_RUN {
        let value = (u64::from(quotient) << k) | r.read(k)?;
        state.update(value);
        return Some(Word::Int(value));
    }
    match r.read(2)? {
        ESC_LARGE => {
            let value = r.read(64)?;
            state.update(value);
            Some(Word::Int(value))
        }
        kind => Some(Word::Escape(kind)),
    }
}

/// Encoder/decoder state of one timestamp stream (microseconds).
///
/// Each delta is coded against the stream's nominal interval rather than the previous delta:
/// ticks are a fixed grid plus independent jitter, so `delta - nominal` has a third of the
/// variance of a delta of deltas (2σ² against 6σ², about 0.8 bit less per row). A residual
/// larger than half the nominal (a gap, a new poll interval) re-anchors the nominal to that
/// delta, which costs what a delta of deltas would.
#[derive(Debug, Clone, Copy, Default)]
pub struct TimestampCodec {
    prev: i64,
    nominal: i64,
    rice: Adaptive,
}

impl TimestampCodec {
    pub fn starting_at(first: i64) -> TimestampCodec {
        TimestampCodec {
            prev: first,
            ..TimestampCodec::default()
        }
    }

    fn advance(&mut self, delta: i64) {
        let residual = delta.wrapping_sub(self.nominal);
        if residual.unsigned_abs() > self.nominal.unsigned_abs() / 2 {
            self.nominal = delta;
        }
        self.prev = self.prev.wrapping_add(delta);
    }

    pub fn encode(&mut self, w: &mut BitWriter, ts: i64) {
        let delta = ts.wrapping_sub(self.prev);
        write_int(w, &mut self.rice, zigzag(delta.wrapping_sub(self.nominal)));
        self.advance(delta);
    }

    pub fn decode(&mut self, r: &mut BitReader<'_>) -> Option<i64> {
        let Word::Int(z) = read_word(r, &mut self.rice)? else {
            return None;
        };
        let delta = self.nominal.wrapping_add(unzigzag(z));
        self.advance(delta);
        Some(self.prev)
    }
}

/// `v` as an integer at `scale` decimals, if that round-trips exactly.
pub(super) fn scaled(v: f64, scale: u32) -> Option<i64> {
    let p = POW10[scale as usize];
    let s = (v * p).round();
    if s.abs() >= EXACT_LIMIT {
        return None;
    }
    // Compare through the integer, as the decoder will see it (so -0.0 is not "0").
    let s = s as i64;
    (unscaled(s, scale).to_bits() == v.to_bits()).then_some(s)
}

pub(super) fn unscaled(s: i64, scale: u32) -> f64 {
    s as f64 / POW10[scale as usize]
}

/// The `ESC_ABSOLUTE` scale field that announces an exact 64-bit integer (a counter) instead
/// of a scaled decimal; scales stop at [`MAX_SCALE`], so no older stream holds it.
const COUNTER_MARK: u64 = 15;

/// How the stream's current value is held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Mode {
    /// Nothing but absent or raw values yet.
    #[default]
    Unset,
    /// A decimal at this many digits, as an exact scaled integer in `prev`.
    Scaled(u32),
    /// An exact `u64` counter in `prev` (as bits); the Rice code carries the change of the
    /// delta, since a counter's delta (its rate) is what stays nearly constant.
    Counter,
}

/// Encoder/decoder state of one value stream (`None` is an absent value).
#[derive(Debug, Clone, Copy, Default)]
pub struct ValueCodec {
    mode: Mode,
    prev: i64,
    /// Counter mode: the previous delta.
    prev_delta: i64,
    rice: Adaptive,
}

impl ValueCodec {
    /// The state as parts (the mode as a byte, the previous value, the previous delta, the Rice
    /// accumulator), for an owner that keeps them beside fields of its own without the
    /// padding a nested struct costs (an open block per metric, a million switches over).
    pub fn to_parts(self) -> (u8, i64, i64, u64) {
        let mode = match self.mode {
            Mode::Unset => 0,
            Mode::Counter => 1,
            // Scales stop at MAX_SCALE: a byte holds any.
            Mode::Scaled(scale) => 2 + scale as u8,
        };
        (mode, self.prev, self.prev_delta, self.rice.acc)
    }

    /// The state [`to_parts`](Self::to_parts) gave.
    pub fn from_parts((mode, prev, prev_delta, acc): (u8, i64, i64, u64)) -> ValueCodec {
        let mode = match mode {
            1 => Mode::Counter,
            m @ 2.. => Mode::Scaled(u32::from(m - 2)),
            0 => Mode::Unset,
        };
        ValueCodec {
            mode,
            prev,
            prev_delta,
            rice: Adaptive { acc },
        }
    }

    pub fn encode(&mut self, w: &mut BitWriter, v: Option<Value>) {
        match v {
            None => write_escape(w, ESC_ABSENT),
            Some(Value::Float(v)) => self.encode_float(w, v),
            Some(Value::Int(v)) => self.encode_counter(w, v),
        }
    }

    fn encode_counter(&mut self, w: &mut BitWriter, v: u64) {
        let bits = v as i64;
        if self.mode == Mode::Counter {
            let delta = bits.wrapping_sub(self.prev);
            write_int(
                w,
                &mut self.rice,
                zigzag(delta.wrapping_sub(self.prev_delta)),
            );
            self.prev = bits;
            self.prev_delta = delta;
            return;
        }
        write_escape(w, ESC_ABSOLUTE);
        w.write(COUNTER_MARK, 4);
        w.write(v, 64);
        self.mode = Mode::Counter;
        self.prev = bits;
        self.prev_delta = 0;
    }

    fn encode_float(&mut self, w: &mut BitWriter, v: f64) {
        if v.is_nan() {
            // Absent and NaN are different things; a NaN keeps its bits.
            write_escape(w, ESC_RAW);
            w.write(v.to_bits(), 64);
            return;
        }
        if let Mode::Scaled(scale) = self.mode {
            if let Some(s) = scaled(v, scale) {
                if let Some(delta) = s.checked_sub(self.prev) {
                    write_int(w, &mut self.rice, zigzag(delta));
                    self.prev = s;
                    return;
                }
            }
        }
        let from = match self.mode {
            Mode::Scaled(scale) => scale,
            _ => 0,
        };
        match (from..=MAX_SCALE).find_map(|d| scaled(v, d).map(|s| (d, s))) {
            Some((scale, s)) => {
                write_escape(w, ESC_ABSOLUTE);
                w.write(u64::from(scale), 4);
                w.write(zigzag(s), 64);
                self.mode = Mode::Scaled(scale);
                self.prev = s;
            }
            None => {
                write_escape(w, ESC_RAW);
                w.write(v.to_bits(), 64);
            }
        }
    }

    /// The next cell: `Some(None)` is an absent value, `None` a corrupt or ended stream.
    pub fn decode(&mut self, r: &mut BitReader<'_>) -> Option<Option<Value>> {
        match read_word(r, &mut self.rice)? {
            Word::Int(z) => match self.mode {
                Mode::Scaled(scale) => {
                    self.prev = self.prev.wrapping_add(unzigzag(z));
                    Some(Some(Value::Float(unscaled(self.prev, scale))))
                }
                Mode::Counter => {
                    self.prev_delta = self.prev_delta.wrapping_add(unzigzag(z));
                    self.prev = self.prev.wrapping_add(self.prev_delta);
                    Some(Some(Value::Int(self.prev as u64)))
                }
                Mode::Unset => None,
            },
            Word::Escape(ESC_ABSENT) => Some(None),
            Word::Escape(ESC_ABSOLUTE) => {
                let scale = r.read(4)?;
                let raw = r.read(64)?;
                if scale == COUNTER_MARK {
                    self.mode = Mode::Counter;
                    self.prev = raw as i64;
                    self.prev_delta = 0;
                    return Some(Some(Value::Int(raw)));
                }
                let scale = u32::try_from(scale).ok().filter(|&s| s <= MAX_SCALE)?;
                self.prev = unzigzag(raw);
                self.mode = Mode::Scaled(scale);
                Some(Some(Value::Float(unscaled(self.prev, scale))))
            }
            Word::Escape(_) => Some(Some(Value::Float(f64::from_bits(r.read(64)?)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn codec_parts_round_trip_in_every_mode() {
        let modes = [
            Mode::Unset,
            Mode::Counter,
            Mode::Scaled(0),
            Mode::Scaled(MAX_SCALE),
        ];
        for mode in modes {
            let codec = ValueCodec {
                mode,
                prev: -7,
                prev_delta: i64::MAX,
                rice: Adaptive { acc: u64::MAX - 1 },
            };
            let back = ValueCodec::from_parts(codec.to_parts());
            assert_eq!(
                (back.mode, back.prev, back.prev_delta, back.rice.acc),
                (mode, -7, i64::MAX, u64::MAX - 1)
            );
        }
    }

    fn round_trip_values(values: &[f64]) -> u64 {
        let cells: Vec<Option<Value>> = values.iter().map(|&v| Value::cell(v)).collect();
        round_trip_cells(&cells)
    }

    fn same(a: Option<Value>, b: Option<Value>) -> bool {
        match (a, b) {
            (Some(Value::Float(a)), Some(Value::Float(b))) => a.to_bits() == b.to_bits(),
            (a, b) => a == b,
        }
    }

    fn round_trip_cells(cells: &[Option<Value>]) -> u64 {
        let mut w = BitWriter::default();
        let mut enc = ValueCodec::default();
        for &v in cells {
            enc.encode(&mut w, v);
        }
        let mut r = BitReader::new(w.bytes(), w.bit_len());
        let mut dec = ValueCodec::default();
        for &v in cells {
            let got = dec.decode(&mut r).expect("decodes");
            assert!(same(got, v), "{v:?} came back as {got:?}");
        }
        assert!(dec.decode(&mut r).is_none(), "nothing after the end");
        w.bit_len()
    }

    #[test]
    fn counters_round_trip_exactly_at_any_width() {
        let cells: Vec<Option<Value>> = [
            0u64,
            1,
            18_446_744_073_709_551_576,
            u64::MAX,
            0,
            (1 << 53) + 1,
            (1 << 53) + 3,
            4_294_967_295,
            4_294_967_295,
            65_535,
        ]
        .iter()
        .map(|&v| Some(Value::Int(v)))
        .chain([None, Some(Value::Float(2.5)), Some(Value::Int(7)), None])
        .collect();
        round_trip_cells(&cells);
    }

    #[test]
    fn a_counter_at_a_steady_rate_is_small() {
        // A data counter at about 40% of a 200 Gb/s port, in bytes, polled every second:
        // jitter of ±1% in the rate, an occasional reset to zero.
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut value = 36_298_026_860_928u64;
        let cells: Vec<Option<Value>> = (0..3_600)
            .map(|i| {
                value = if i % 1_000 == 999 {
                    0
                } else {
                    value + 10_000_000_000 + rng.random_range(0..100_000_000)
                };
                Some(Value::Int(value))
            })
            .collect();
        let bits = round_trip_cells(&cells);
        let per_sample = bits as f64 / cells.len() as f64;
        assert!(per_sample < 32.0, "{per_sample} bits per sample");
        let idle: Vec<Option<Value>> = (0..3_600).map(|_| Some(Value::Int(42))).collect();
        let idle_bits = round_trip_cells(&idle) as f64 / idle.len() as f64;
        assert!(idle_bits < 1.2, "{idle_bits} bits per idle sample");
    }

    #[test]
    fn bits_round_trip() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let items: Vec<(u64, u32)> = (0..10_000)
            .map(|_| {
                let n = rng.random_range(0..=64u32);
                let v: u64 = rng.random();
                (if n == 64 { v } else { v & ((1u64 << n) - 1) }, n)
            })
            .collect();
        let mut w = BitWriter::default();
        for &(v, n) in &items {
            w.write(v, n);
        }
        let mut r = BitReader::new(w.bytes(), w.bit_len());
        for &(v, n) in &items {
            assert_eq!(r.read(n), Some(v));
        }
        assert_eq!(r.read(1), None);
    }

    #[test]
    fn edge_values_round_trip_exactly() {
        round_trip_values(&[
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.1 + 0.2,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::MIN,
            1e300,
            -1e-300,
            5e-324,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            123456789.123,
            0.000001,
            9_007_199_254_740_993.0,
            55.67,
            55.6,
            55.675,
            f64::NAN,
            42.0,
        ]);
    }

    #[test]
    fn random_series_round_trip_exactly() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        for _ in 0..200 {
            let len = rng.random_range(1..400);
            let decimals = rng.random_range(0..8);
            let mut level = rng.random_range(-1e6..1e6f64);
            let values: Vec<f64> = (0..len)
                .map(|_| {
                    level += rng.random_range(-100.0..100.0);
                    match rng.random_range(0..20) {
                        0 => f64::NAN,
                        1 => rng.random::<f64>() * 1e12,
                        2 => 0.0, // counter reset
                        _ => (level * POW10[decimals]).round() / POW10[decimals],
                    }
                })
                .collect();
            round_trip_values(&values);
        }
    }

    #[test]
    fn timestamps_round_trip_with_irregular_intervals_and_gaps() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut ts = 1_757_853_005_123_456i64;
        let mut stamps = vec![ts];
        for _ in 0..5_000 {
            ts += match rng.random_range(0..50) {
                0 => rng.random_range(1..3_600_000_000), // a gap of up to an hour
                1 => 1,
                _ => 1_000_000 + rng.random_range(-2_000..2_000),
            };
            stamps.push(ts);
        }
        let mut w = BitWriter::default();
        let mut enc = TimestampCodec::starting_at(stamps[0]);
        for &t in &stamps[1..] {
            enc.encode(&mut w, t);
        }
        let mut r = BitReader::new(w.bytes(), w.bit_len());
        let mut dec = TimestampCodec::starting_at(stamps[0]);
        for &t in &stamps[1..] {
            assert_eq!(dec.decode(&mut r), Some(t));
        }
    }

    #[test]
    fn telemetry_like_series_are_small() {
        // Bandwidth as the generator walks it: two decimals, steps of up to ±1.5.
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let mut centi = 5_000i64;
        let values: Vec<f64> = (0..3_600)
            .map(|_| {
                centi = (centi + rng.random_range(-150..=150)).clamp(0, 10_000);
                centi as f64 / 100.0
            })
            .collect();
        let bits = round_trip_values(&values);
        let per_sample = bits as f64 / values.len() as f64;
        assert!(per_sample < 10.0, "{per_sample} bits per sample");
    }
}
