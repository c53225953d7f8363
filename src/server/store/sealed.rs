//! The sealed blocks of every switch: records in chunks shared by all switches
//! ([`SealedTables`]), each switch holding a queue of its own ([`SealedBlocks`]), and the
//! table of the time streams they share, by id ([`TimeStreams`]).
//!
//! Why shared chunks: a million switches hold a few million sealed blocks. As allocations of
//! their own they cost a header beside each; as records in one byte vector per switch they
//! cost the room each vector keeps between a block expiring at its front and the next sealed
//! at its back (~240 bytes of a switch's ~2 KB at a million switches × 5 min), plus the holes
//! the allocator is left with when vectors of a thousand sizes grow and move (~160 bytes).
//! Here a block is a record appended to a chunk (up to 1 MiB, sized by what its bucket takes)
//! that holds only blocks ending in the same short span of time ([`bucket
//! width`](SealedTables::new)): they expire within that span of each other, so a chunk fills
//! once, front to back, and is given back whole (counted references: records live in it) soon
//! after its last block expires. Nothing moves, nothing is left in holes; a large chunk is a
//! mapping of its own (above the mmap threshold the server sets), whose untouched tail costs
//! no memory and which goes back to the kernel when freed. `million --quick` (200k switches ×
//! 5 min): 1.965 → 1.643 B per retained sample of RSS at the worst moment of the steady
//! state, a vector per switch → shared chunks.
//!
//! A switch's records are a linked queue: each starts with where the switch's next record is
//! (chunk and offset, 8 bytes, written when that one is pushed); the switch holds its oldest
//! record's place and the count. Blocks are only ever added at the back (sealed) and removed
//! at the front (expired); readers walk forward. The price: a switch's blocks are in different
//! chunks, so reading them all misses the cache once a block (whole-block aggregates over an
//! hour at 10k switches took ~1.3× as long as from one vector).
//!
//! Why ids for time streams: a record is bytes, so it cannot hold an `Arc`; it holds the id
//! of its stream in [`TimeStreams`], which counts the records referring to each stream. A
//! record takes a reference when it is pushed ([`SealedBlocks::push`]) and gives it back
//! when it is removed ([`SealedBlocks::pop_front`]), nowhere else, so a stream can never be
//! freed while a record still names it; a record dropped any other way (a whole series
//! dropped) would only keep its stream and its chunk alive, never corrupt another's.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::block::{Block, BlockView, SealedParts, TimeStream};
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
    fn len(&self) -> usize {
        self.by_content.len()
    }

    /// Heap bytes of the streams and the table.
    fn heap_bytes(&self) -> usize {
        self.by_content
            .keys()
            .map(|stream| stream.heap_bytes())
            .sum::<usize>()
            + self.slots.capacity() * std::mem::size_of::<Option<(Arc<TimeStream>, u32)>>()
            + self.free.capacity() * 4
            + self.by_content.capacity() * (std::mem::size_of::<(Arc<TimeStream>, u32)>() + 1)
    }
}

/// Where a record is: its chunk's id and its offset there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Place {
    chunk: u32,
    offset: u32,
}

impl Place {
    /// No record (the end of a switch's queue).
    const NONE: Place = Place {
        chunk: u32::MAX,
        offset: u32::MAX,
    };
    /// Bytes of a place at the start of a record.
    const BYTES: usize = 8;

    fn to_bytes(self) -> [u8; Place::BYTES] {
        let mut bytes = [0; Place::BYTES];
        bytes[..4].copy_from_slice(&self.chunk.to_le_bytes());
        bytes[4..].copy_from_slice(&self.offset.to_le_bytes());
        bytes
    }

    fn from_bytes(bytes: &[u8]) -> Option<Place> {
        let chunk = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?);
        let offset = u32::from_le_bytes(bytes.get(4..Place::BYTES)?.try_into().ok()?);
        Some(Place { chunk, offset })
    }
}

/// Bytes a chunk is allocated with at most. Large enough to be its own mapping (whose
/// untouched tail is not resident) and to hold thousands of records.
const CHUNK_BYTES: usize = 1 << 20;
/// Bytes a chunk is allocated with at least. A bucket's first chunk is sized by what the
/// buckets open beside it took (a quarter more), its next ones by what it took so far, so a
/// store of a few switches (a bucket may hold one block: ten switches × 30 days) keeps small
/// chunks in the heap instead of a mapping of its own per block.
const MIN_CHUNK_BYTES: usize = 4096;
/// A record larger than this gets a chunk of its own, sized exactly (a switch with thousands
/// of metrics), instead of leaving much of a shared chunk unused.
const OWN_CHUNK_ABOVE: usize = CHUNK_BYTES / 8;
/// Buckets taking records at once, at most. Blocks seal in about time order, but their ends
/// spread over the retention (switches' clocks differ by up to `--max-age`, files are imported
/// switch by switch): every bucket with a retained block may take another, ~90 of them at
/// retention 5 min. A bucket stays open until its chunk is full or its last record expires;
/// beyond this many the oldest is closed (cut to size), so a stray timestamp costs a chunk of
/// its own, not a bucket kept forever.
const OPEN_BUCKETS: usize = 256;

/// A bucket taking records: its chunk taking them, and the bytes of all its records so far.
#[derive(Debug, Clone, Copy)]
struct OpenBucket {
    bucket: i64,
    chunk: u32,
    bytes: usize,
}

#[derive(Debug)]
struct Chunk {
    bytes: Vec<u8>,
    /// Records in it not yet removed; the chunk goes with the last.
    live: u32,
    /// Still taking records (its bucket's newest chunk).
    open: bool,
    /// The bucket it holds records of.
    bucket: i64,
}

/// Where every switch's sealed blocks are: the chunks holding their records, and their time
/// streams.
#[derive(Debug)]
pub(crate) struct SealedTables {
    streams: TimeStreams,
    /// By id; `None`: a free id.
    chunks: Vec<Option<Chunk>>,
    free: Vec<u32>,
    /// The buckets taking records, by bucket.
    open: Vec<OpenBucket>,
    /// Records whose last timestamps fall in the same span of this length share chunks.
    bucket_width: Micros,
    /// Bytes of the records not yet removed.
    live_bytes: usize,
}

impl SealedTables {
    /// Tables for blocks that expire about `block_span` after each other: records ending
    /// within an eighth of it share chunks, so a chunk outlives its first expired record by
    /// at most that (at retention 5 min: 4.7 s of ~7 min a block is held).
    pub fn new(block_span: Micros) -> SealedTables {
        SealedTables {
            streams: TimeStreams::default(),
            chunks: Vec::new(),
            free: Vec::new(),
            open: Vec::new(),
            bucket_width: (block_span / 8).max(1),
            live_bytes: 0,
        }
    }

    /// Time streams held.
    pub fn streams_held(&self) -> usize {
        self.streams.len()
    }

    /// Chunks held.
    pub fn chunks_held(&self) -> usize {
        self.chunks.len() - self.free.len()
    }

    /// Records not yet removed, counted chunk by chunk.
    #[cfg(test)]
    pub fn live_records(&self) -> usize {
        self.chunks.iter().flatten().map(|c| c.live as usize).sum()
    }

    /// Bytes held for records, resident or about to be: every chunk's bytes written, and
    /// the whole of those no longer taking records. (An open chunk's tail is mapped but
    /// untouched; it costs no memory until written.)
    fn chunk_bytes(&self) -> (usize, usize) {
        let (mut written, mut closed_tails) = (0, 0);
        for chunk in self.chunks.iter().flatten() {
            written += chunk.bytes.len();
            if !chunk.open {
                closed_tails += chunk.bytes.capacity() - chunk.bytes.len();
            }
        }
        (written, closed_tails)
    }

    /// Heap bytes: chunks as [`chunk_bytes`](Self::chunk_bytes) counts them, the time
    /// streams and the tables.
    pub fn heap_bytes(&self) -> usize {
        let (written, closed_tails) = self.chunk_bytes();
        written
            + closed_tails
            + self.streams.heap_bytes()
            + self.chunks.capacity() * std::mem::size_of::<Option<Chunk>>()
            + self.free.capacity() * 4
            + self.open.capacity() * std::mem::size_of::<OpenBucket>()
    }

    /// For accounts of memory: (bytes of records expired whose chunk is not yet free,
    /// unused tails of chunks no longer taking records, heap of the time streams, chunks).
    pub fn memory_parts(&self) -> (usize, usize, usize, usize) {
        let (written, closed_tails) = self.chunk_bytes();
        (
            written.saturating_sub(self.live_bytes),
            closed_tails,
            self.streams.heap_bytes(),
            self.chunks_held(),
        )
    }

    /// Appends a record of `len` bytes (written by `write`) to a chunk of the bucket of
    /// `last_ts`; where it is.
    fn append(&mut self, last_ts: Micros, len: usize, write: impl FnOnce(&mut Vec<u8>)) -> Place {
        let bucket = last_ts.div_euclid(self.bucket_width);
        let chunk = if len > OWN_CHUNK_ABOVE {
            self.new_chunk(len, bucket, false)
        } else {
            match self.open.binary_search_by_key(&bucket, |o| o.bucket) {
                Ok(i) => {
                    let OpenBucket { chunk, bytes, .. } = self.open[i];
                    let fits = self
                        .chunk(chunk)
                        .is_some_and(|c| c.bytes.capacity() - c.bytes.len() >= len);
                    self.open[i].bytes += len;
                    if fits {
                        chunk
                    } else {
                        // Full: its tail is shorter than a record, nothing worth cutting.
                        self.close(chunk, false);
                        // As much again as the bucket took so far: a few chunks per bucket.
                        let capacity = bytes.clamp(MIN_CHUNK_BYTES, CHUNK_BYTES).max(len);
                        let id = self.new_chunk(capacity, bucket, true);
                        self.open[i].chunk = id;
                        id
                    }
                }
                Err(mut at) => {
                    if self.open.len() >= OPEN_BUCKETS {
                        let oldest = self.open.remove(0);
                        self.close(oldest.chunk, true);
                        at -= 1.min(at);
                    }
                    let typical = self.open.iter().map(|o| o.bytes).max().unwrap_or(0);
                    let capacity = (typical + typical / 4)
                        .clamp(MIN_CHUNK_BYTES, CHUNK_BYTES)
                        .max(len);
                    let chunk = self.new_chunk(capacity, bucket, true);
                    let open = OpenBucket {
                        bucket,
                        chunk,
                        bytes: len,
                    };
                    self.open.insert(at, open);
                    chunk
                }
            }
        };
        let Some(Some(target)) = self.chunks.get_mut(chunk as usize) else {
            return Place::NONE; // unreachable: the chunk was just found or made
        };
        let offset = target.bytes.len();
        write(&mut target.bytes);
        target.live += 1;
        self.live_bytes += len;
        // Offsets fit: a shared chunk is 1 MiB, an own chunk holds one record at 0.
        Place {
            chunk,
            offset: u32::try_from(offset).unwrap_or(u32::MAX),
        }
    }

    fn new_chunk(&mut self, capacity: usize, bucket: i64, open: bool) -> u32 {
        let chunk = Some(Chunk {
            bytes: Vec::with_capacity(capacity),
            live: 0,
            open,
            bucket,
        });
        match self.free.pop() {
            Some(id) => {
                self.chunks[id as usize] = chunk;
                id
            }
            None => {
                self.chunks.push(chunk);
                u32::try_from(self.chunks.len() - 1).unwrap_or(u32::MAX)
            }
        }
    }

    /// The chunk `id` takes no more records: cut to size if asked, freed if empty.
    fn close(&mut self, id: u32, cut: bool) {
        let Some(Some(chunk)) = self.chunks.get_mut(id as usize) else {
            return;
        };
        chunk.open = false;
        if chunk.live == 0 {
            self.chunks[id as usize] = None;
            self.free.push(id);
        } else if cut {
            chunk.bytes.shrink_to_fit();
        }
    }

    /// A record of `len` bytes at `place` is removed: its chunk goes with its last record,
    /// open or not (a bucket whose blocks all expired takes no more).
    fn release(&mut self, place: Place, len: usize) {
        let Some(Some(chunk)) = self.chunks.get_mut(place.chunk as usize) else {
            return;
        };
        chunk.live -= 1;
        self.live_bytes -= len;
        if chunk.live == 0 {
            if chunk.open {
                let bucket = chunk.bucket;
                if let Ok(i) = self.open.binary_search_by_key(&bucket, |o| o.bucket) {
                    self.open.remove(i);
                }
            }
            self.chunks[place.chunk as usize] = None;
            self.free.push(place.chunk);
        }
    }

    fn chunk(&self, id: u32) -> Option<&Chunk> {
        self.chunks.get(id as usize)?.as_ref()
    }

    /// The record at `place` (`None` only on a bug: places are only made by `append`).
    fn record(&self, place: Place) -> Option<Record<'_>> {
        let bytes = self
            .chunk(place.chunk)?
            .bytes
            .get(place.offset as usize..)?;
        parse(bytes)
    }

    /// Makes the record at `place` name `next` as its switch's next.
    fn link(&mut self, place: Place, next: Place) {
        if let Some(Some(chunk)) = self.chunks.get_mut(place.chunk as usize) {
            let at = place.offset as usize;
            if let Some(bytes) = chunk.bytes.get_mut(at..at + Place::BYTES) {
                bytes.copy_from_slice(&next.to_bytes());
            }
        }
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

/// A record as found in a chunk: its header, its body, where the switch's next record is,
/// and its size.
#[derive(Debug, Clone, Copy)]
struct Record<'a> {
    next: Place,
    header: Header,
    body: &'a [u8],
    /// Bytes of the whole record.
    len: usize,
}

/// The sealed blocks of one switch, oldest first, as records in [`SealedTables`]' chunks.
/// Each is: the place of the switch's next record (8 bytes), its length from there on as a
/// varint, the first timestamp (8 bytes), then as varints the span to the last timestamp,
/// the rows, the time stream's id and the value stream's length in bits, then the block's
/// body.
///
/// A switch holds only where its oldest record is and how many it has (12 bytes, for a
/// million switches): appending walks to the newest, a few records once per block.
#[derive(Debug)]
pub struct SealedBlocks {
    oldest: Place,
    count: u32,
}

impl Default for SealedBlocks {
    fn default() -> SealedBlocks {
        SealedBlocks {
            oldest: Place::NONE,
            count: 0,
        }
    }
}

impl SealedBlocks {
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Adds `block` after the others, referring to (or adding) its time stream.
    pub fn push(&mut self, block: &Block, tables: &mut SealedTables) {
        self.push_parts(block.parts(), tables);
    }

    /// Adds a block given as parts after the others, as [`push`](Self::push).
    pub fn push_parts(&mut self, block: SealedParts<'_>, tables: &mut SealedTables) {
        let (first_ts, last_ts, rows) = block.bounds;
        let time_id = tables.streams.acquire(block.times);
        // Cannot overflow: first ≤ last, both within the times a feed can carry (block files
        // are checked for it on reading).
        let varints = [
            (last_ts - first_ts) as u64,
            u64::from(rows),
            u64::from(time_id),
            u64::from(block.bit_len),
        ];
        let [front, back] = block.body;
        // Written straight into the chunk, so its length is counted first.
        let head = 8 + varints.iter().map(|&v| wire::varint_len(v)).sum::<usize>();
        let rest = (head + front.len() + back.len()) as u64;
        let len = Place::BYTES + wire::varint_len(rest) + rest as usize;
        let place = tables.append(last_ts, len, |out| {
            out.extend_from_slice(&Place::NONE.to_bytes());
            wire::put_varint(out, rest);
            wire::put_i64(out, first_ts);
            for v in varints {
                wire::put_varint(out, v);
            }
            out.extend_from_slice(front);
            out.extend_from_slice(back);
        });
        match self.newest_place(tables) {
            Some(newest) => tables.link(newest, place),
            None => self.oldest = place,
        }
        self.count += 1;
    }

    /// Removes the oldest block, giving back its time stream and its share of its chunk;
    /// its rows.
    pub fn pop_front(&mut self, tables: &mut SealedTables) -> Option<u32> {
        if self.count == 0 {
            return None;
        }
        let record = tables.record(self.oldest)?;
        let (next, rows, time_id, len) = (
            record.next,
            record.header.rows,
            record.header.time_id,
            record.len,
        );
        tables.streams.release(time_id);
        tables.release(self.oldest, len);
        self.count -= 1;
        if self.count == 0 {
            *self = SealedBlocks::default();
        } else {
            self.oldest = next;
        }
        Some(rows)
    }

    /// When the oldest block ends.
    pub fn front_last_ts(&self, tables: &SealedTables) -> Option<Micros> {
        self.records(tables).next().map(|r| r.header.last_ts)
    }

    /// The blocks, oldest first.
    pub fn iter<'a>(&'a self, tables: &'a SealedTables) -> impl Iterator<Item = BlockView<'a>> {
        self.records(tables)
            .map(move |record| view(record, &tables.streams))
    }

    /// The newest block's value and time stream sizes (what the next block will likely
    /// need).
    pub fn newest_stream_bytes(&self, tables: &SealedTables) -> Option<(usize, usize)> {
        let newest = self.records(tables).last()?;
        let values = (newest.header.bit_len as usize).div_ceil(8);
        let times = tables
            .streams
            .get(newest.header.time_id)
            .map_or(0, |t| t.bytes().0.len());
        Some((values, times))
    }

    /// Where the newest record is (`None`: no record).
    fn newest_place(&self, tables: &SealedTables) -> Option<Place> {
        let mut at = self.oldest;
        for _ in 1..self.count {
            at = tables.record(at)?.next;
        }
        (self.count > 0).then_some(at)
    }

    fn records<'a>(&self, tables: &'a SealedTables) -> impl Iterator<Item = Record<'a>> {
        let mut at = self.oldest;
        let mut left = self.count;
        std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            let record = tables.record(at)?;
            left -= 1;
            at = record.next;
            Some(record)
        })
    }

    /// Bytes of (record headers, aggregates with counters, value streams).
    pub fn memory_parts(&self, tables: &SealedTables) -> (usize, usize, usize) {
        let (mut headers, mut aggs, mut values) = (0, 0, 0);
        for record in self.records(tables) {
            let value_bytes = (record.header.bit_len as usize).div_ceil(8);
            headers += record.len - record.body.len();
            aggs += record.body.len() - value_bytes;
            values += value_bytes;
        }
        (headers, aggs, values)
    }
}

/// The record at the start of `bytes` (`None` on a bug: records are only written by
/// [`SealedBlocks::push`]).
fn parse(bytes: &[u8]) -> Option<Record<'_>> {
    let next = Place::from_bytes(bytes)?;
    let bytes = &bytes[Place::BYTES..];
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
        next,
        header: Header {
            first_ts,
            last_ts: first_ts.checked_add(span)?,
            rows,
            time_id,
            bit_len,
        },
        body,
        len: Place::BYTES + prefix + len,
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
        let mut streams = SealedTables::new(100_000_000);
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
        assert_eq!((a.len(), b.len(), streams.streams_held()), (3, 3, 3));
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
        assert_eq!(a.front_last_ts(&streams), Some(blocks_a[0].last_ts));

        // The oldest stream is held by both switches' oldest blocks: it goes with the second.
        assert_eq!(a.pop_front(&mut streams), Some(100));
        assert_eq!(streams.streams_held(), 3);
        assert_eq!(b.pop_front(&mut streams), Some(100));
        assert_eq!(streams.streams_held(), 2);
        assert_eq!(a.front_last_ts(&streams), Some(blocks_a[1].last_ts));
        // What is left still reads back, and a freed id is taken again.
        assert_eq!(
            rows_of(a.iter(&streams).next().expect("one")),
            rows_of(blocks_a[1].view())
        );
        let later = block(300_000_000, 50, 3.0, &mut open_times);
        a.push(&later, &mut streams);
        assert_eq!(
            (streams.streams_held(), streams.streams.slots.len()),
            (3, 3)
        );
        assert_eq!(
            rows_of(a.iter(&streams).nth(2).expect("three")),
            rows_of(later.view())
        );
        while a.pop_front(&mut streams).is_some() {}
        while b.pop_front(&mut streams).is_some() {}
        assert_eq!((a.len(), streams.streams_held()), (0, 0));
        assert_eq!(a.front_last_ts(&streams), None);
    }

    /// A block too large to share a chunk (a switch with thousands of metrics) gets one of
    /// its own, exactly its size, freed with it; small blocks keep sharing theirs.
    #[test]
    fn a_large_block_has_a_chunk_of_its_own() {
        let mut open_times = OpenTimes::default();
        let mut tables = SealedTables::new(100_000_000);
        let wide = |i: u64| -> Vec<Option<Value>> {
            (0..4000u64)
                .map(|m| Some(Value::Float((m * 7919 + i * 104_729) as f64 / 3.7)))
                .collect()
        };
        let mut open = OpenBlock::start(0, &wide(0), (0, 0), &mut open_times);
        for i in 1..40 {
            open.push(i as i64 * 1_000_000, &wide(i), &mut open_times);
        }
        let large = open.seal(&mut open_times);
        let small = block(0, 50, 2.0, &mut open_times);
        let (mut a, mut b) = (SealedBlocks::default(), SealedBlocks::default());
        a.push(&small, &mut tables);
        b.push(&small, &mut tables);
        assert_eq!(tables.chunks_held(), 1);
        a.push(&large, &mut tables);
        assert_eq!(tables.chunks_held(), 2);
        let record = a.records(&tables).nth(1).expect("two");
        assert!(record.len > OWN_CHUNK_ABOVE, "{} bytes", record.len);
        let newest = a.newest_place(&tables).expect("two");
        let own = tables.chunk(newest.chunk).expect("held");
        assert_eq!(
            (own.bytes.len(), own.live, own.open),
            (record.len, 1, false)
        );
        assert_eq!(
            rows_of(a.iter(&tables).nth(1).expect("two")),
            rows_of(large.view())
        );
        a.pop_front(&mut tables);
        a.pop_front(&mut tables);
        assert_eq!((a.len(), tables.chunks_held()), (0, 1));
        assert_eq!(
            rows_of(b.iter(&tables).next().expect("one")),
            rows_of(small.view())
        );
    }

    /// Blocks ending in more buckets than may be open at once (a stray clock, an import of
    /// the past): the oldest bucket is closed and cut to size, never more open than the
    /// limit, and every chunk goes with its record.
    #[test]
    fn buckets_beyond_the_limit_close_the_oldest() {
        let mut open_times = OpenTimes::default();
        // Buckets of 1 s; blocks of 2 rows, 3 s apart: each its own bucket.
        let mut tables = SealedTables::new(8_000_000);
        let mut blocks = SealedBlocks::default();
        let n = OPEN_BUCKETS as i64 + 40;
        for k in 0..n {
            let b = block(k * 3_000_000, 2, 1.0, &mut open_times);
            blocks.push(&b, &mut tables);
        }
        assert_eq!(tables.open.len(), OPEN_BUCKETS);
        assert_eq!(tables.chunks_held(), n as usize);
        let closed: Vec<&Chunk> = tables.chunks.iter().flatten().filter(|c| !c.open).collect();
        assert_eq!(closed.len(), 40);
        assert!(closed.iter().all(|c| c.bytes.capacity() == c.bytes.len()));
        // The open ones are the newest buckets.
        let newest_closed = closed.iter().map(|c| c.bucket).max();
        assert!(tables.open.iter().all(|o| Some(o.bucket) > newest_closed));
        // A block a bucket: chunks of the smallest size, not a mapping per block.
        assert!(tables
            .chunks
            .iter()
            .flatten()
            .all(|c| c.bytes.capacity() <= MIN_CHUNK_BYTES));
        assert_eq!(blocks.iter(&tables).count(), n as usize);
        while blocks.pop_front(&mut tables).is_some() {}
        assert_eq!((tables.chunks_held(), tables.open.len()), (0, 0));
    }

    /// A bucket's chunks grow with what it takes (a few chunks for thousands of records), and
    /// the next bucket starts at about the size of the last.
    #[test]
    fn chunks_are_sized_by_what_buckets_take() {
        let mut open_times = OpenTimes::default();
        let mut tables = SealedTables::new(80_000_000);
        let first = block(0, 20, 1.0, &mut open_times);
        let mut switches: Vec<SealedBlocks> = (0..3000).map(|_| SealedBlocks::default()).collect();
        for blocks in &mut switches {
            blocks.push(&first, &mut tables);
        }
        let taken = tables.live_bytes;
        assert!(taken > 8 * MIN_CHUNK_BYTES, "{taken} bytes");
        let held = tables.chunks_held();
        assert!((2..=10).contains(&held), "{held} chunks for {taken} bytes");
        // The next bucket's first chunk is sized for all of it at once.
        let next = block(30_000_000, 20, 1.0, &mut open_times);
        switches[0].push(&next, &mut tables);
        let newest = switches[0].newest_place(&tables).expect("two");
        let capacity = tables.chunk(newest.chunk).expect("held").bytes.capacity();
        assert!(
            capacity >= taken && capacity <= CHUNK_BYTES,
            "{capacity} for {taken}"
        );
        for blocks in &mut switches {
            while blocks.pop_front(&mut tables).is_some() {}
        }
        assert_eq!(tables.chunks_held(), 0);
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
            // Buckets of 1 s: blocks of 1 to 40 rows fill many, more than are open at once.
            let mut streams = SealedTables::new(8_000_000);
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
                let held: usize = sealed.iter().map(SealedBlocks::len).sum();
                proptest::prop_assert_eq!(streams.live_records(), held);
                let bytes: usize = sealed
                    .iter()
                    .flat_map(|blocks| blocks.records(&streams))
                    .map(|record| record.len)
                    .sum();
                proptest::prop_assert_eq!(streams.live_bytes, bytes);
                for (blocks, want) in sealed.iter().zip(&model) {
                    proptest::prop_assert_eq!(blocks.len(), want.len());
                    proptest::prop_assert_eq!(
                        blocks.front_last_ts(&streams),
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
            proptest::prop_assert_eq!(streams.streams_held(), 0);
            // Every chunk goes with its last record, open or not.
            proptest::prop_assert_eq!(streams.live_records(), 0);
            proptest::prop_assert_eq!((streams.chunks_held(), streams.open.len()), (0, 0));
        }
    }
}
