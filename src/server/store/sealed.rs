//! The sealed blocks of one switch, oldest first, in one allocation ([`SealedBlocks`]), and
//! the store's table of the time streams they share, by id ([`TimeStreams`]).
//!
//! Why one allocation: a million switches hold a few million sealed blocks. Each as its own
//! allocation with a 48-byte header beside it (in a deque slot) cost ~150 bytes of headers
//! and deque room per switch, and an allocation per block. Here a block is a record in the
//! switch's byte vector: a header of ~17 bytes (varints) before the body the block had
//! (packed aggregates, packed counters, values): ~44 bytes of headers per switch, one
//! allocation (RSS at 200k switches × 5 min after 10 simulated minutes: 1.904 → 1.850 B per
//! sample). Blocks are only ever added at the back (sealed) and removed at the front
//! (expired), so the vector is a queue of records; readers walk it forward, parsing each
//! header.
//!
//! Why ids for time streams: a record is bytes, so it cannot hold an `Arc`; it holds the id
//! of its stream in [`TimeStreams`], which counts the records referring to each stream. A
//! record takes a reference when it is pushed ([`SealedBlocks::push`]) and gives it back
//! when it is removed ([`SealedBlocks::pop_front`]), nowhere else, so a stream can never be
//! freed while a record still names it; a record dropped any other way (a whole series
//! dropped) would only keep its stream alive, never corrupt another's.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::block::{Block, BlockView, TimeStream};
use crate::shared::timestamp::Micros;
use crate::shared::wire::{self, Reader};

/// Time streams of sealed blocks by id (from 1; 0 is "no stream of its own": a block from a
/// file before version 3), interned by content: the switches of a source polled together
/// seal blocks with the same timestamps, held once for all of them.
#[derive(Debug, Default)]
pub(crate) struct TimeStreams {
    /// By id − 1: the stream and how many records refer to it; `None`: a free id.
    slots: Vec<Option<(Arc<TimeStream>, u32)>>,
    free: Vec<u32>,
    by_content: FxHashMap<Arc<TimeStream>, u32>,
}

impl TimeStreams {
    /// The id of a stream equal to `stream`, with one more reference to it; 0 for none.
    fn acquire(&mut self, stream: Option<&Arc<TimeStream>>) -> u32 {
        let Some(stream) = stream else {
            return 0;
        };
        if let Some(&id) = self.by_content.get(&**stream) {
            if let Some(Some((_, refs))) = self.slots.get_mut(id as usize - 1) {
                *refs += 1;
                return id;
            }
        }
        let held = Some((Arc::clone(stream), 1));
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize - 1] = held;
                id
            }
            None => {
                self.slots.push(held);
                u32::try_from(self.slots.len()).unwrap_or(u32::MAX)
            }
        };
        self.by_content.insert(Arc::clone(stream), id);
        id
    }

    /// Gives back one reference to `id`, freeing the stream with its last.
    fn release(&mut self, id: u32) {
        let Some(slot) = id
            .checked_sub(1)
            .and_then(|i| self.slots.get_mut(i as usize))
        else {
            return;
        };
        if let Some((stream, refs)) = slot {
            *refs -= 1;
            if *refs == 0 {
                self.by_content.remove(&**stream);
                *slot = None;
                self.free.push(id);
            }
        }
    }

    fn get(&self, id: u32) -> Option<&TimeStream> {
        let (stream, _) = self.slots.get(id.checked_sub(1)? as usize)?.as_ref()?;
        Some(stream)
    }

    /// Streams held.
    pub fn len(&self) -> usize {
        self.by_content.len()
    }

    /// Heap bytes of the streams and the table.
    pub fn heap_bytes(&self) -> usize {
        self.by_content
            .keys()
            .map(|stream| stream.heap_bytes())
            .sum::<usize>()
            + self.slots.capacity() * std::mem::size_of::<Option<(Arc<TimeStream>, u32)>>()
            + self.free.capacity() * 4
            + self.by_content.capacity() * (std::mem::size_of::<(Arc<TimeStream>, u32)>() + 1)
    }
}

/// One record's header, as [`SealedBlocks::push`] writes it after the record's length.
#[derive(Debug, Clone, Copy)]
struct Header {
    first_ts: Micros,
    last_ts: Micros,
    rows: u32,
    time_id: u32,
    bit_len: u32,
}

/// A record as found in the vector: its header, its body, and where the next one starts.
#[derive(Debug, Clone, Copy)]
struct Record<'a> {
    header: Header,
    body: &'a [u8],
    /// Bytes of the whole record (length prefix included).
    len: usize,
}

/// The sealed blocks of one switch, oldest first. Each is a record: its length as a varint,
/// then the first timestamp (8 bytes), then as varints the span to the last timestamp, the
/// rows, the time stream's id and the value stream's length in bits, then the block's body.
#[derive(Debug, Default)]
pub struct SealedBlocks {
    bytes: Vec<u8>,
    count: u32,
}

impl SealedBlocks {
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Adds `block` after the others, referring to (or adding) its time stream in `streams`.
    pub fn push(&mut self, block: &Block, streams: &mut TimeStreams) {
        let header = Header {
            first_ts: block.first_ts,
            last_ts: block.last_ts,
            rows: block.rows,
            time_id: streams.acquire(block.time_stream()),
            bit_len: block.bit_len(),
        };
        let mut head = Vec::with_capacity(40);
        wire::put_i64(&mut head, header.first_ts);
        // Cannot overflow: first ≤ last, both within the times a feed can carry (block files
        // are checked for it on reading).
        wire::put_varint(&mut head, (header.last_ts - header.first_ts) as u64);
        wire::put_varint(&mut head, u64::from(header.rows));
        wire::put_varint(&mut head, u64::from(header.time_id));
        wire::put_varint(&mut head, u64::from(header.bit_len));
        let body = block.body();
        let len = (head.len() + body.len()) as u64;
        let mut prefix = Vec::with_capacity(10);
        wire::put_varint(&mut prefix, len);
        // Exactly the record's size: a switch holds a few blocks, and doubling would leave
        // up to half of them as room.
        self.bytes
            .reserve_exact(prefix.len() + head.len() + body.len());
        self.bytes.extend_from_slice(&prefix);
        self.bytes.extend_from_slice(&head);
        self.bytes.extend_from_slice(body);
        self.count += 1;
    }

    /// Removes the oldest block, giving back its time stream; its rows.
    pub fn pop_front(&mut self, streams: &mut TimeStreams) -> Option<u32> {
        let record = self.records().next()?;
        streams.release(record.header.time_id);
        let rows = record.header.rows;
        let len = record.len;
        self.bytes.drain(..len);
        self.count -= 1;
        // The room is kept for the next block sealed (about as large). Giving it back
        // (shrinking, then growing the vector again at the next seal) moved the vectors
        // around in the allocator and left holes: at 200k switches × 5 min, after 10
        // simulated minutes, 0.095 B per sample more resident than keeping the room, which
        // costs ~240 bytes of a switch's ~2.1 KB.
        Some(rows)
    }

    /// When the oldest block ends.
    pub fn front_last_ts(&self) -> Option<Micros> {
        self.records().next().map(|r| r.header.last_ts)
    }

    /// The blocks, oldest first.
    pub fn iter<'a>(&'a self, streams: &'a TimeStreams) -> impl Iterator<Item = BlockView<'a>> {
        self.records().map(move |record| view(record, streams))
    }

    /// The newest block's value and time stream sizes (what the next block will likely
    /// need).
    pub fn newest_stream_bytes(&self, streams: &TimeStreams) -> Option<(usize, usize)> {
        let newest = self.records().last()?;
        let values = (newest.header.bit_len as usize).div_ceil(8);
        let times = streams
            .get(newest.header.time_id)
            .map_or(0, |t| t.bytes().0.len());
        Some((values, times))
    }

    fn records(&self) -> impl Iterator<Item = Record<'_>> {
        let mut rest = &self.bytes[..];
        std::iter::from_fn(move || {
            let record = parse(rest)?;
            rest = &rest[record.len..];
            Some(record)
        })
    }

    /// Heap bytes: the vector's capacity (the time streams are the store's).
    pub fn heap_bytes(&self) -> usize {
        self.bytes.capacity()
    }

    /// Bytes of (record headers, aggregates with counters, value streams, unused room).
    pub fn memory_parts(&self) -> (usize, usize, usize, usize) {
        let (mut headers, mut aggs, mut values) = (0, 0, 0);
        for record in self.records() {
            let value_bytes = (record.header.bit_len as usize).div_ceil(8);
            headers += record.len - record.body.len();
            aggs += record.body.len() - value_bytes;
            values += value_bytes;
        }
        (
            headers,
            aggs,
            values,
            self.bytes.capacity() - self.bytes.len(),
        )
    }

    /// Allocations held (0 or 1).
    pub fn allocations(&self) -> usize {
        usize::from(self.bytes.capacity() > 0)
    }
}

/// The record at the start of `bytes` (`None` at the end, or on a bug: records are only
/// written by [`SealedBlocks::push`]).
fn parse(bytes: &[u8]) -> Option<Record<'_>> {
    let mut input = Reader::new(bytes);
    let len = usize::try_from(input.varint().ok()?).ok()?;
    let prefix = bytes.len() - input.remaining();
    let record = bytes.get(prefix..prefix.checked_add(len)?)?;
    let mut input = Reader::new(record);
    let first_ts = input.i64().ok()?;
    let span = i64::try_from(input.varint().ok()?).ok()?;
    let mut small = || u32::try_from(input.varint().ok()?).ok();
    let (rows, time_id, bit_len) = (small()?, small()?, small()?);
    let body = &record[record.len() - input.remaining()..];
    Some(Record {
        header: Header {
            first_ts,
            last_ts: first_ts.checked_add(span)?,
            rows,
            time_id,
            bit_len,
        },
        body,
        len: prefix + len,
    })
}

fn view<'a>(record: Record<'a>, streams: &'a TimeStreams) -> BlockView<'a> {
    let Header {
        first_ts,
        last_ts,
        rows,
        time_id,
        bit_len,
    } = record.header;
    BlockView::sealed(
        (first_ts, last_ts, rows),
        bit_len,
        record.body,
        streams.get(time_id),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::store::block::{OpenBlock, OpenTimes};
    use crate::shared::metric::Value;

    /// A block of `rows` rows from `first`, 1 s + `first` / 10⁵ apart (so blocks starting at
    /// different times have different time streams), values from `seed`.
    fn block(first: Micros, rows: i64, seed: f64, times: &mut OpenTimes) -> Block {
        let row = |i: i64| {
            [
                Some(Value::Float(seed + i as f64)),
                Some(Value::Int(i as u64)),
            ]
        };
        let mut open = OpenBlock::start(first, &row(0), (0, 0), times);
        for i in 1..rows {
            open.push(first + i * (1_000_000 + first / 100_000), &row(i), times);
        }
        open.seal(times)
    }

    fn rows_of(view: BlockView<'_>) -> Vec<(Micros, Vec<Option<Value>>)> {
        let mut rows = Vec::new();
        view.for_each_row(|ts, values| {
            rows.push((ts, values.to_vec()));
            true
        })
        .expect("decodes");
        rows
    }

    #[test]
    fn records_read_back_as_the_blocks_were_and_streams_go_with_their_last_record() {
        let mut open_times = OpenTimes::default();
        let mut streams = TimeStreams::default();
        let (mut a, mut b) = (SealedBlocks::default(), SealedBlocks::default());
        // Two switches polled together: equal timestamps, one stream between them.
        let blocks_a: Vec<Block> = (0..3)
            .map(|k| block(k * 100_000_000, 100, 1.5, &mut open_times))
            .collect();
        let blocks_b: Vec<Block> = (0..3)
            .map(|k| block(k * 100_000_000, 100, 7.25, &mut open_times))
            .collect();
        for (x, y) in blocks_a.iter().zip(&blocks_b) {
            a.push(x, &mut streams);
            b.push(y, &mut streams);
        }
        assert_eq!((a.len(), b.len(), streams.len()), (3, 3, 3));
        for (view, block) in a.iter(&streams).zip(&blocks_a) {
            let want = block.view();
            assert_eq!(
                (view.first_ts, view.last_ts, view.rows),
                (want.first_ts, want.last_ts, want.rows)
            );
            assert_eq!(rows_of(view), rows_of(want));
            assert_eq!(
                view.aggs.iter().collect::<Vec<_>>(),
                want.aggs.iter().collect::<Vec<_>>()
            );
            assert_eq!(
                view.counters.iter().collect::<Vec<_>>(),
                want.counters.iter().collect::<Vec<_>>()
            );
        }
        assert_eq!(a.front_last_ts(), Some(blocks_a[0].last_ts));

        // The oldest stream is held by both switches' oldest blocks: it goes with the second.
        assert_eq!(a.pop_front(&mut streams), Some(100));
        assert_eq!(streams.len(), 3);
        assert_eq!(b.pop_front(&mut streams), Some(100));
        assert_eq!(streams.len(), 2);
        assert_eq!(a.front_last_ts(), Some(blocks_a[1].last_ts));
        // What is left still reads back, and a freed id is taken again.
        assert_eq!(
            rows_of(a.iter(&streams).next().expect("one")),
            rows_of(blocks_a[1].view())
        );
        let later = block(300_000_000, 50, 3.0, &mut open_times);
        a.push(&later, &mut streams);
        assert_eq!((streams.len(), streams.slots.len()), (3, 3));
        assert_eq!(
            rows_of(a.iter(&streams).nth(2).expect("three")),
            rows_of(later.view())
        );
        while a.pop_front(&mut streams).is_some() {}
        while b.pop_front(&mut streams).is_some() {}
        assert_eq!((a.len(), streams.len()), (0, 0));
        assert_eq!(a.front_last_ts(), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(crate::proptest_cases()))]

        /// Any sequence of blocks sealed (of any length, any values, some switches sharing
        /// timestamps) and expired reads back as a queue of those blocks would, and leaves no
        /// time stream behind.
        #[test]
        fn arbitrary_pushes_and_pops_read_back_as_a_queue(
            ops in proptest::collection::vec(
                (0usize..3, 0u8..4, 1i64..40, proptest::prelude::any::<f64>()),
                1..80,
            ),
        ) {
            let mut open_times = OpenTimes::default();
            let mut streams = TimeStreams::default();
            let mut sealed: Vec<SealedBlocks> = (0..3).map(|_| SealedBlocks::default()).collect();
            let mut model: Vec<std::collections::VecDeque<Block>> =
                (0..3).map(|_| std::collections::VecDeque::new()).collect();
            let mut next_first = [0i64; 3];
            for (switch, op, rows, seed) in ops {
                if op == 0 {
                    let popped = sealed[switch].pop_front(&mut streams);
                    let want = model[switch].pop_front().map(|b| b.rows);
                    proptest::prop_assert_eq!(popped, want);
                } else {
                    // Switches 0 and 1 seal on the same polls often (shared streams).
                    let first = next_first[switch].max(next_first[0]) + 1_000_000;
                    let block = block(first, rows, seed, &mut open_times);
                    next_first[switch] = block.last_ts;
                    sealed[switch].push(&block, &mut streams);
                    model[switch].push_back(block);
                }
                for (blocks, want) in sealed.iter().zip(&model) {
                    proptest::prop_assert_eq!(blocks.len(), want.len());
                    proptest::prop_assert_eq!(
                        blocks.front_last_ts(),
                        want.front().map(|b| b.last_ts)
                    );
                    for (view, block) in blocks.iter(&streams).zip(want) {
                        proptest::prop_assert_eq!(
                            (view.first_ts, view.last_ts, view.rows),
                            (block.first_ts, block.last_ts, block.rows)
                        );
                        let same = format!("{:?}", rows_of(view)) == format!("{:?}", rows_of(block.view()));
                        proptest::prop_assert!(same);
                    }
                }
            }
            for (blocks, want) in sealed.iter_mut().zip(&mut model) {
                while blocks.pop_front(&mut streams).is_some() {
                    want.pop_front();
                }
                proptest::prop_assert!(want.is_empty());
            }
            proptest::prop_assert_eq!(streams.len(), 0);
        }
    }
}
