//! The write-ahead log: every accepted row, appended per poll chunk, in segment files.
//!
//! A segment is `FTWAL001` followed by records `u32 length, u32 crc32(payload), payload`
//! (little endian). A payload is one chunk of accepted rows:
//! `kind (3), metrics (name, kind byte), row count, rows: switch id (bytes shared with the
//! previous row's id, then the rest), timestamp (zigzag delta from the previous row), one
//! value per metric (see `put_value`)`. Feeds list switches in a stable order with common
//! prefixes (`switch1234`, `0x0002c90300a1b2c3:17`), so an id costs two or three bytes, and
//! every record still decodes on its own (a skipped record loses nothing else). Records of
//! kind 2 spell ids out whole; kind 1 (before counters) also has no kind bytes, and replays
//! with kinds decided by name. Reading stops at a torn record (the write a crash
//! interrupted) and skips a corrupt one only when the record after it checks out; anything
//! else from the damage on is cut off. Segments are read record by record
//! ([`SegmentReader`]): replay holds one record at a time, however large the segment.

use crate::shared::feed::FeedBatch;
use crate::shared::metric::{self, MetricKind, Value};
use crate::shared::wire::{self, Reader};

pub const MAGIC: &[u8; 8] = b"FTWAL001";
const RECORD_HEADER: usize = 8;
const KIND_ROWS_V1: u8 = 1;
const KIND_ROWS_V2: u8 = 2;
const KIND_ROWS: u8 = 3;

/// No record is larger (a 64k-row chunk with a few dozen metrics is far below).
pub const MAX_RECORD_BYTES: usize = 256 << 20;

/// Appends the framed record for rows `rows` of `batch` to `out`.
pub fn encode_rows(batch: &FeedBatch, rows: &[u32], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_HEADER]);
    out.push(KIND_ROWS);
    wire::put_varint(out, batch.metrics.len() as u64);
    for (name, &kind) in batch.metrics.iter().zip(&batch.kinds) {
        wire::put_bytes(out, name.as_bytes());
        out.push(kind.to_byte());
    }
    wire::put_varint(out, rows.len() as u64);
    let mut previous_ts = 0i64;
    let mut previous_id: &[u8] = &[];
    for &row in rows {
        let row = row as usize;
        let ts = batch.timestamp(row);
        let id = batch.switch_id(row).as_bytes();
        let shared = id
            .iter()
            .zip(previous_id)
            .take_while(|(a, b)| a == b)
            .count();
        wire::put_varint(out, shared as u64);
        wire::put_bytes(out, &id[shared..]);
        previous_id = id;
        wire::put_zigzag(out, ts.wrapping_sub(previous_ts));
        previous_ts = ts;
        for &value in batch.row_values(row) {
            put_value(out, value);
        }
    }
    let payload_len = (out.len() - start - RECORD_HEADER) as u32;
    let crc = crc32fast::hash(&out[start + RECORD_HEADER..]);
    out[start..start + 4].copy_from_slice(&payload_len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

// A value is a varint whose low two bits say what it is: 0 absent, 1 an integer,
// 2 hundredths (both zigzag in the high bits), 3 the f64's bits follow; `COUNTER` (4) is
// followed by a counter's exact u64 as a varint. Feeds carry short decimals; this halves the
// WAL against raw f64s, and every value still round-trips bit for bit (a value is only scaled
// when scaling back gives the same bits).
const ABSENT: u64 = 0;
const COUNTER: u64 = 4;
const INTEGER: u64 = 1;
const HUNDREDTHS: u64 = 2;
const RAW: u64 = 3;
/// Integers up to 2^53 are exact in an f64.
const EXACT: f64 = 9_007_199_254_740_992.0;

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_value(out: &mut Vec<u8>, value: Option<Value>) {
    let value = match value {
        None => return wire::put_varint(out, ABSENT),
        Some(Value::Int(v)) => {
            wire::put_varint(out, COUNTER);
            return wire::put_varint(out, v);
        }
        Some(Value::Float(v)) => v,
    };
    let exact_int = |x: f64| x.fract() == 0.0 && x.abs() < EXACT / 4.0;
    if exact_int(value) && (value as i64 as f64).to_bits() == value.to_bits() {
        return wire::put_varint(out, zigzag(value as i64) << 2 | INTEGER);
    }
    let scaled = (value * 100.0).round();
    if exact_int(scaled) && (scaled as i64 as f64 / 100.0).to_bits() == value.to_bits() {
        return wire::put_varint(out, zigzag(scaled as i64) << 2 | HUNDREDTHS);
    }
    wire::put_varint(out, RAW);
    wire::put_f64(out, value);
}

fn get_value(r: &mut Reader<'_>) -> Result<Option<Value>, wire::Truncated> {
    let v = r.varint()?;
    let float = match v & 3 {
        ABSENT if v == ABSENT => return Ok(None),
        _ if v == COUNTER => return Ok(Some(Value::Int(r.varint()?))),
        INTEGER => unzigzag(v >> 2) as f64,
        HUNDREDTHS => unzigzag(v >> 2) as f64 / 100.0,
        RAW if v == RAW => r.f64()?,
        _ => return Err(wire::Truncated),
    };
    Ok(Some(Value::Float(float)))
}

fn decode_rows(payload: &[u8]) -> Result<FeedBatch, wire::Truncated> {
    let mut r = Reader::new(payload);
    let (with_kinds, front_coded) = match r.take(1)? {
        [KIND_ROWS] => (true, true),
        [KIND_ROWS_V2] => (true, false),
        [KIND_ROWS_V1] => (false, false),
        _ => return Err(wire::Truncated),
    };
    let n_metrics = r.count(payload.len())?;
    let mut names = Vec::with_capacity(n_metrics);
    let mut kinds = Vec::with_capacity(n_metrics);
    for _ in 0..n_metrics {
        let name = r.str()?;
        let kind = if with_kinds {
            MetricKind::from_byte(r.take(1)?[0]).ok_or(wire::Truncated)?
        } else {
            metric::kind_of(name)
        };
        names.push(name.to_string());
        kinds.push(kind);
    }
    let mut batch = FeedBatch::with_columns(names, kinds);
    let n_rows = r.count(payload.len())?;
    let mut values = vec![None; n_metrics];
    let mut ts = 0i64;
    let mut id: Vec<u8> = Vec::new();
    for _ in 0..n_rows {
        if front_coded {
            let shared = r.count(id.len())?;
            id.truncate(shared);
        } else {
            id.clear();
        }
        id.extend_from_slice(r.bytes()?);
        let switch_id = std::str::from_utf8(&id).map_err(|_| wire::Truncated)?;
        ts = ts.wrapping_add(r.zigzag()?);
        for slot in values.iter_mut() {
            *slot = get_value(&mut r)?;
        }
        batch.push_cells(switch_id, ts, &values);
    }
    if !r.is_empty() {
        return Err(wire::Truncated);
    }
    Ok(batch)
}

/// Damage found while reading a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// The segment does not start with the WAL magic.
    BadMagic,
    /// A record runs past the end of the file (a write cut short).
    Torn { offset: usize },
    /// A record's checksum or content is wrong and nothing valid follows it.
    Corrupt { offset: usize },
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::BadMagic => f.write_str("not a WAL segment (bad magic)"),
            Damage::Torn { offset } => write!(f, "torn record at byte {offset}"),
            Damage::Corrupt { offset } => write!(f, "corrupt record at byte {offset}"),
        }
    }
}

/// What a segment holds.
#[derive(Debug, Default)]
pub struct SegmentContents {
    pub batches: Vec<FeedBatch>,
    /// Bytes up to the end of the last record kept: the segment is cut here.
    pub good_len: usize,
    /// Corrupt records skipped because the record after them checked out.
    pub skipped_records: u64,
    pub damage: Option<Damage>,
}

enum Frame {
    /// A record whose checksum holds; its payload is in the reader's buffer.
    Record,
    /// The file ends inside the record (or exactly at its start: `End`).
    Torn,
    End,
    /// Checksum wrong, or a length beyond any record; the claimed length, if it fits in
    /// the file.
    Bad(Option<usize>),
}

/// Reads a segment record by record from `input` (`len` bytes), holding one record's
/// payload at a time. Nothing a damaged header claims is allocated beyond what the file
/// holds.
pub struct SegmentReader<R> {
    input: R,
    /// Bytes of the segment not read yet.
    left: u64,
    /// Offset of the next record.
    offset: usize,
    payload: Vec<u8>,
    /// A record read while checking whether a damaged one can be skipped: yielded next.
    lookahead: bool,
    /// Bytes up to the end of the last record kept: the segment is cut here.
    pub good_len: usize,
    /// Corrupt records skipped because the record after them checked out.
    pub skipped_records: u64,
    pub damage: Option<Damage>,
    done: bool,
}

impl<R: std::io::Read> SegmentReader<R> {
    /// Checks the magic; a segment without it yields nothing and reports `BadMagic`.
    pub fn new(mut input: R, len: u64) -> SegmentReader<R> {
        let mut magic = [0u8; 8];
        let good =
            len >= MAGIC.len() as u64 && input.read_exact(&mut magic).is_ok() && &magic == MAGIC;
        SegmentReader {
            input,
            left: len.saturating_sub(MAGIC.len() as u64),
            offset: MAGIC.len(),
            payload: Vec::new(),
            lookahead: false,
            good_len: if good { MAGIC.len() } else { 0 },
            skipped_records: 0,
            damage: (!good).then_some(Damage::BadMagic),
            done: !good,
        }
    }

    fn read_frame(&mut self) -> Frame {
        if self.left == 0 {
            return Frame::End;
        }
        let mut header = [0u8; RECORD_HEADER];
        if self.left < RECORD_HEADER as u64 || self.input.read_exact(&mut header).is_err() {
            return Frame::Torn;
        }
        self.left -= RECORD_HEADER as u64;
        let mut r = Reader::new(&header);
        let (Ok(len), Ok(crc)) = (r.u32(), r.u32()) else {
            return Frame::Torn;
        };
        let len = len as usize;
        if len > MAX_RECORD_BYTES {
            return Frame::Bad(None);
        }
        if len as u64 > self.left {
            return Frame::Torn;
        }
        self.payload.resize(len, 0);
        if self.input.read_exact(&mut self.payload).is_err() {
            return Frame::Torn;
        }
        self.left -= len as u64;
        if crc32fast::hash(&self.payload) != crc {
            return Frame::Bad(Some(len));
        }
        Frame::Record
    }

    /// The next intact record's rows, or `None` at the end or at damage (then `damage`
    /// says what and `good_len` where to cut).
    pub fn next_batch(&mut self) -> Option<FeedBatch> {
        while !self.done {
            let frame = if std::mem::take(&mut self.lookahead) {
                Frame::Record
            } else {
                self.read_frame()
            };
            match frame {
                Frame::Record => match decode_rows(&self.payload) {
                    Ok(batch) => {
                        self.offset += RECORD_HEADER + self.payload.len();
                        self.good_len = self.offset;
                        return Some(batch);
                    }
                    Err(_) => self.stop(Damage::Corrupt {
                        offset: self.offset,
                    }),
                },
                Frame::End => self.done = true,
                Frame::Torn => self.stop(Damage::Torn {
                    offset: self.offset,
                }),
                Frame::Bad(len) => {
                    // Skip one damaged record only if a valid record follows it: then the
                    // length was right and only the payload was hit.
                    let damaged_at = self.offset;
                    match len {
                        Some(len) if matches!(self.read_frame(), Frame::Record) => {
                            self.skipped_records += 1;
                            self.offset += RECORD_HEADER + len;
                            self.lookahead = true;
                        }
                        _ => self.stop(Damage::Corrupt { offset: damaged_at }),
                    }
                }
            }
        }
        None
    }

    fn stop(&mut self, damage: Damage) {
        self.damage = Some(damage);
        self.done = true;
    }
}

/// Reads every intact record of a segment image.
pub fn read_segment(bytes: &[u8]) -> SegmentContents {
    let mut reader = SegmentReader::new(bytes, bytes.len() as u64);
    let mut batches = Vec::new();
    while let Some(batch) = reader.next_batch() {
        batches.push(batch);
    }
    SegmentContents {
        batches,
        good_len: reader.good_len,
        skipped_records: reader.skipped_records,
        damage: reader.damage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(first_ts: i64, n: usize) -> FeedBatch {
        let mut batch = FeedBatch::with_metrics(&["bandwidth", "latency", "errors"]);
        for i in 0..n {
            let v = i as f64;
            let bw = if i % 5 == 0 { f64::NAN } else { 50.0 + v };
            batch.push_row(
                &format!("sw-{i}"),
                first_ts + i as i64 % 3,
                &[bw, 0.5 * v, v],
            );
        }
        batch
    }

    fn same(a: &FeedBatch, b: &FeedBatch) -> bool {
        a.metrics == b.metrics
            && a.len() == b.len()
            && (0..a.len()).all(|i| {
                a.switch_id(i) == b.switch_id(i)
                    && a.timestamp(i) == b.timestamp(i)
                    && a.row_values(i)
                        .iter()
                        .zip(b.row_values(i))
                        .all(|(&x, &y)| Value::identical(x, y))
            })
    }

    fn segment(batches: &[FeedBatch]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        for b in batches {
            let rows: Vec<u32> = (0..b.len() as u32).collect();
            encode_rows(b, &rows, &mut bytes);
        }
        bytes
    }

    #[test]
    fn records_round_trip_and_only_selected_rows_are_logged() {
        let b = batch(1_700_000_000_000_000, 50);
        let mut bytes = MAGIC.to_vec();
        encode_rows(&b, &[3, 7, 8], &mut bytes);
        let read = read_segment(&bytes);
        assert_eq!(read.damage, None);
        assert_eq!(read.good_len, bytes.len());
        let got = &read.batches[0];
        assert_eq!(got.len(), 3);
        assert_eq!(got.switch_id(1), "sw-7");
        assert_eq!(got.timestamp(2), b.timestamp(8));
        let full = segment(&[b]);
        let back = read_segment(&full);
        assert!(same(&back.batches[0], &batch(1_700_000_000_000_000, 50)));
    }

    #[test]
    fn switch_ids_cost_a_few_bytes_and_records_of_kind_2_still_replay() {
        let mut batch = FeedBatch::with_metrics(&["bandwidth"]);
        for i in 0..1000 {
            batch.push_row(&format!("switch{i}"), 1_700_000_000_000_000, &[3.0]);
        }
        let all: Vec<u32> = (0..1000).collect();
        let mut bytes = MAGIC.to_vec();
        encode_rows(&batch, &all, &mut bytes);
        // Per row: shared length, suffix length, a digit or so, the timestamp delta (0) and
        // the value (one byte each).
        let per_row = (bytes.len() - MAGIC.len()) as f64 / 1000.0;
        assert!(per_row < 6.0, "{per_row} bytes per row");
        let read = read_segment(&bytes);
        assert!(same(&read.batches[0], &batch));

        // Kind 2: ids spelled out whole.
        let mut payload = vec![KIND_ROWS_V2];
        wire::put_varint(&mut payload, 1);
        wire::put_bytes(&mut payload, b"bandwidth");
        payload.push(MetricKind::Gauge.to_byte());
        wire::put_varint(&mut payload, 2);
        for (id, ts) in [("sw-a", 10i64), ("sw-b", 0)] {
            wire::put_bytes(&mut payload, id.as_bytes());
            wire::put_zigzag(&mut payload, ts);
            put_value(&mut payload, Some(Value::Float(1.5)));
        }
        let mut old = MAGIC.to_vec();
        old.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        old.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        old.extend_from_slice(&payload);
        let read = read_segment(&old);
        assert_eq!(read.damage, None);
        let got = &read.batches[0];
        assert_eq!((got.switch_id(0), got.switch_id(1)), ("sw-a", "sw-b"));
        assert_eq!((got.timestamp(0), got.timestamp(1)), (10, 10));
    }

    #[test]
    fn a_torn_tail_is_cut_at_the_last_whole_record() {
        let bytes = segment(&[batch(1, 10), batch(2, 10)]);
        let first_end = segment(&[batch(1, 10)]).len();
        for cut in first_end + 1..bytes.len() {
            let read = read_segment(&bytes[..cut]);
            assert_eq!(read.batches.len(), 1, "cut at {cut}");
            assert_eq!(read.good_len, first_end);
            assert_eq!(read.damage, Some(Damage::Torn { offset: first_end }));
        }
    }

    #[test]
    fn a_corrupt_record_is_skipped_only_when_the_next_one_checks_out() {
        let bytes = segment(&[batch(1, 10), batch(2, 10), batch(3, 10)]);
        let first_end = segment(&[batch(1, 10)]).len();
        let mut hit = bytes.clone();
        hit[first_end + 20] ^= 0x40;
        let read = read_segment(&hit);
        assert_eq!((read.batches.len(), read.skipped_records), (2, 1));
        assert_eq!(read.damage, None);
        // The last record corrupt: nothing follows, so it is cut.
        let mut last = bytes.clone();
        let n = last.len();
        last[n - 3] ^= 1;
        let read = read_segment(&last);
        assert_eq!(read.batches.len(), 2);
        assert!(matches!(read.damage, Some(Damage::Corrupt { .. })));
        // A garbage length: cut there.
        let mut len = bytes.clone();
        len[first_end + 3] = 0xff;
        let read = read_segment(&len);
        assert_eq!(read.batches.len(), 1);
        assert_eq!(read.good_len, first_end);
        assert_eq!(read_segment(b"garbage!").damage, Some(Damage::BadMagic));
    }
}

#[cfg(test)]
mod values {
    use super::*;

    #[test]
    fn values_round_trip_bit_for_bit_in_few_bytes() {
        let cases = [
            0.0,
            -0.0,
            1.0,
            -7.0,
            55.6,
            0.32,
            0.1 + 0.2,
            1e300,
            -1e-300,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MAX,
            f64::MIN_POSITIVE,
            2f64.powi(60),
            123456.78,
            -0.05,
        ];
        let counters = [
            0,
            1,
            1 << 53,
            (1 << 53) + 1,
            18_446_744_073_709_551_576,
            u64::MAX,
        ];
        let cells = cases
            .iter()
            .map(|&v| Value::cell(v))
            .chain(counters.iter().map(|&v| Some(Value::Int(v))));
        for value in cells {
            let mut out = Vec::new();
            put_value(&mut out, value);
            let back = get_value(&mut Reader::new(&out)).expect("decodes");
            assert!(
                Value::identical(back, value),
                "{value:?} came back as {back:?}"
            );
        }
        let size = |v: f64| {
            let mut out = Vec::new();
            put_value(&mut out, Value::cell(v));
            out.len()
        };
        assert_eq!(
            (size(55.6), size(0.32), size(3.0), size(f64::NAN)),
            (3, 2, 1, 1)
        );
        assert_eq!(size(0.1 + 0.2), 9);
        assert!(get_value(&mut Reader::new(&[4])).is_err());
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(crate::proptest_cases()))]

        /// Arbitrary segment bytes never panic the reader; what it keeps is a prefix it can
        /// vouch for.
        #[test]
        fn arbitrary_wal_segments_never_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..800),
        ) {
            let mut segment = MAGIC.to_vec();
            segment.extend_from_slice(&bytes);
            let read = read_segment(&segment);
            proptest::prop_assert!(read.good_len <= segment.len());
            let _ = read_segment(&bytes);
        }

        /// Every f64 and u64 round-trips through the value encoding bit for bit (NaN
        /// means absent).
        #[test]
        fn arbitrary_values_round_trip(
            float in proptest::prelude::any::<f64>(),
            int in proptest::prelude::any::<u64>(),
        ) {
            for value in [Value::cell(float), Some(Value::Int(int))] {
                let mut out = Vec::new();
                put_value(&mut out, value);
                let back = get_value(&mut Reader::new(&out)).expect("decodes");
                proptest::prop_assert!(Value::identical(back, value));
            }
        }

        /// Any cut of a valid segment keeps exactly the whole records before the cut.
        #[test]
        fn arbitrary_cuts_keep_whole_records(cut in 0usize..4000, rows in 1usize..30) {
            let mut batch = FeedBatch::with_metrics(&["bandwidth"]);
            for i in 0..rows {
                batch.push_row(&format!("sw{i}"), i as i64, &[i as f64]);
            }
            let all: Vec<u32> = (0..rows as u32).collect();
            let mut segment = MAGIC.to_vec();
            let mut ends = Vec::new();
            for _ in 0..3 {
                encode_rows(&batch, &all, &mut segment);
                ends.push(segment.len());
            }
            let cut = cut.min(segment.len());
            let read = read_segment(&segment[..cut]);
            let whole = ends.iter().filter(|&&end| end <= cut).count();
            proptest::prop_assert_eq!(read.batches.len(), whole);
        }
    }
}
