//! Block files: sealed blocks of many switches in one immutable, checksummed file, in the
//! store's own compressed encoding (a block on disk is its value stream plus its header and
//! aggregates, byte for byte what it is in memory; its time stream is in the file's table, once
//! for every block that shares it, as in memory).
//!
//! Layout (little endian, varints are LEB128):
//! ```text
//! "FTBLK003"  u32 crc32(body)  u64 body length  body
//! body: metrics (count, then each: name as a length-prefixed string, kind byte)
//!       time streams (count, then each: length in bits, bytes): every distinct timestamp
//!       stream of the file's blocks, once (the switches of a source share them)
//!       switches (count, then each: id, position → metric index list, blocks (count,
//!       then each block as `BlockView::encode` writes it, naming its time stream))
//! ```
//! Older versions still load: `FTBLK002` has no time-stream table (each block's timestamps
//! are interleaved with its values); `FTBLK001` (before counters) also has no kind byte and no
//! counter aggregates, and kinds are decided by name.
//! The whole body is checksummed: a file either loads completely or not at all, so a damaged
//! file can never serve partly wrong data.

use std::collections::HashMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::block::{Block, BlockView, TimeStream, Times};
use crate::shared::metric::{self, MetricKind};
use crate::shared::timestamp::Micros;
use crate::shared::wire::{self, Reader};

const MAGIC: &[u8; 8] = b"FTBLK003";
const MAGIC_V2: &[u8; 8] = b"FTBLK002";
const MAGIC_V1: &[u8; 8] = b"FTBLK001";

const HEADER_BYTES: usize = 8 + 4 + 8;
/// Metrics per switch a file may declare (far above any real feed; bounds allocations).
const MAX_METRICS: usize = 4096;

/// Why a block file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockFileError {
    NotABlockFile,
    /// The file is shorter than its header says (a torn write).
    Truncated {
        expected: u64,
        found: u64,
    },
    Checksum,
    /// The checksum matched but the content is inconsistent (a writer bug).
    Malformed(&'static str),
}

impl std::fmt::Display for BlockFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlockFileError::NotABlockFile => f.write_str("not a block file (bad magic)"),
            BlockFileError::Truncated { expected, found } => {
                write!(f, "truncated: body of {expected} bytes, {found} present")
            }
            BlockFileError::Checksum => f.write_str("checksum mismatch"),
            BlockFileError::Malformed(what) => write!(f, "malformed: {what}"),
        }
    }
}

/// Collects sealed blocks, switch by switch, into one file image.
#[derive(Debug, Default)]
pub struct BlockFileWriter {
    metric_index: HashMap<String, u64>,
    metric_names: Vec<(String, MetricKind)>,
    /// Distinct time streams by content (length in bits, bytes) → their index in the file.
    time_index: FxHashMap<(u64, Vec<u8>), u64>,
    /// The time-stream table as it will be written.
    times: Vec<u8>,
    switches: Vec<u8>,
    n_switches: u64,
    n_blocks: u64,
    samples: u64,
    max_last_ts: Option<Micros>,
}

impl BlockFileWriter {
    /// Adds one switch's blocks; `metrics` names the switch's positions (a block uses a
    /// prefix of them).
    pub(super) fn add_switch(
        &mut self,
        switch_id: &str,
        metrics: &[(&str, MetricKind)],
        blocks: &[BlockView<'_>],
    ) {
        if blocks.is_empty() {
            return;
        }
        wire::put_bytes(&mut self.switches, switch_id.as_bytes());
        wire::put_varint(&mut self.switches, metrics.len() as u64);
        for &(name, kind) in metrics {
            // Looked up by `&str` first: a million switches name the same few metrics.
            let index = match self.metric_index.get(name) {
                Some(&index) => index,
                None => {
                    let index = self.metric_names.len() as u64;
                    self.metric_index.insert(name.to_string(), index);
                    self.metric_names.push((name.to_string(), kind));
                    index
                }
            };
            wire::put_varint(&mut self.switches, index);
        }
        wire::put_varint(&mut self.switches, blocks.len() as u64);
        for block in blocks {
            let time_ref = match block.times {
                Times::Split(bits, bit_len) => {
                    let next = self.time_index.len() as u64;
                    let index = *self
                        .time_index
                        .entry((bit_len, bits.to_vec()))
                        .or_insert(next);
                    if index == next {
                        wire::put_varint(&mut self.times, bit_len);
                        wire::put_bytes(&mut self.times, bits);
                    }
                    index + 1
                }
                Times::Interleaved => 0,
            };
            block.encode(&mut self.switches, time_ref);
            self.n_blocks += 1;
            self.samples += block.samples();
            self.max_last_ts = Some(
                self.max_last_ts
                    .map_or(block.last_ts, |t| t.max(block.last_ts)),
            );
        }
        self.n_switches += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.n_blocks == 0
    }

    pub fn blocks(&self) -> u64 {
        self.n_blocks
    }

    /// Values (rows × metrics present) in the blocks added so far.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// At least the size of the image [`finish`](Self::finish) will return (every varint
    /// counted at its longest).
    pub fn max_image_bytes(&self) -> usize {
        const VARINT: usize = 10;
        let names: usize = self
            .metric_names
            .iter()
            .map(|n| n.0.len() + 1 + VARINT)
            .sum();
        HEADER_BYTES + VARINT + names + VARINT + self.times.len() + VARINT + self.switches.len()
    }

    /// The newest timestamp in the file: once retention passes it, the file can go.
    pub fn max_last_ts(&self) -> Option<Micros> {
        self.max_last_ts
    }

    /// The complete file image.
    pub fn finish(self) -> Vec<u8> {
        // Everything before the switches is small; the switches are the image (hundreds of
        // MB at a million switches), so they are not copied into a second buffer: the rest
        // goes in front of them, in place.
        let mut body_head =
            Vec::with_capacity(64 * self.metric_names.len() + self.times.len() + 32);
        wire::put_varint(&mut body_head, self.metric_names.len() as u64);
        for (name, kind) in &self.metric_names {
            wire::put_bytes(&mut body_head, name.as_bytes());
            body_head.push(kind.to_byte());
        }
        wire::put_varint(&mut body_head, self.time_index.len() as u64);
        body_head.extend_from_slice(&self.times);
        wire::put_varint(&mut body_head, self.n_switches);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&body_head);
        crc.update(&self.switches);
        let body_len = body_head.len() + self.switches.len();
        let mut front = Vec::with_capacity(HEADER_BYTES + body_head.len());
        front.extend_from_slice(MAGIC);
        front.extend_from_slice(&crc.finalize().to_le_bytes());
        front.extend_from_slice(&(body_len as u64).to_le_bytes());
        front.extend_from_slice(&body_head);
        let mut file = self.switches;
        file.reserve_exact(front.len());
        file.splice(0..0, front);
        file
    }

    /// Room for about `bytes` of switches, so adding them does not reallocate (and copy)
    /// the image while the store's lock is held.
    pub fn reserve(&mut self, bytes: usize) {
        self.switches.reserve_exact(bytes);
    }

    /// At least `bytes` of room left, doubling the image when short (call it without the
    /// store's lock held: the doubling copies the image).
    pub fn keep_spare(&mut self, bytes: usize) {
        if self.switches.capacity() - self.switches.len() < bytes {
            self.switches.reserve(bytes.max(self.switches.len()));
        }
    }
}

/// One switch's blocks from a file, oldest first.
#[derive(Debug)]
pub struct SwitchBlocks {
    pub switch_id: String,
    /// Metric names of the switch's positions, and their kinds.
    pub metrics: Vec<String>,
    pub kinds: Vec<MetricKind>,
    pub(super) blocks: Vec<Block>,
}

/// A loaded block file.
#[derive(Debug)]
pub struct BlockFile {
    pub switches: Vec<SwitchBlocks>,
}

impl BlockFile {
    pub fn blocks(&self) -> usize {
        self.switches.iter().map(|s| s.blocks.len()).sum()
    }

    pub fn max_last_ts(&self) -> Option<Micros> {
        self.switches
            .iter()
            .flat_map(|s| s.blocks.iter().map(|b| b.last_ts))
            .max()
    }
}

/// Parses and verifies a whole file image.
pub fn read_block_file(bytes: &[u8]) -> Result<BlockFile, BlockFileError> {
    let version = match bytes.get(..8) {
        Some(m) if m == MAGIC => 3,
        Some(m) if m == MAGIC_V2 => 2,
        Some(m) if m == MAGIC_V1 => 1,
        _ => return Err(BlockFileError::NotABlockFile),
    };
    if bytes.len() < HEADER_BYTES {
        return Err(BlockFileError::NotABlockFile);
    }
    let mut header = Reader::new(&bytes[8..HEADER_BYTES]);
    let crc = header.u32().map_err(|_| BlockFileError::NotABlockFile)?;
    let body_len = header.i64().map_err(|_| BlockFileError::NotABlockFile)? as u64;
    let body = &bytes[HEADER_BYTES..];
    if body.len() as u64 != body_len {
        return Err(BlockFileError::Truncated {
            expected: body_len,
            found: body.len() as u64,
        });
    }
    if crc32fast::hash(body) != crc {
        return Err(BlockFileError::Checksum);
    }
    let malformed = |what| move |_| BlockFileError::Malformed(what);
    let mut r = Reader::new(body);
    let n_names = r.count(body.len()).map_err(malformed("metric count"))?;
    let mut names = Vec::with_capacity(n_names);
    for _ in 0..n_names {
        let name = r.str().map_err(malformed("metric name"))?.to_string();
        let kind = if version >= 2 {
            let byte = r.take(1).map_err(malformed("metric kind"))?[0];
            MetricKind::from_byte(byte).ok_or(BlockFileError::Malformed("metric kind"))?
        } else {
            metric::kind_of(&name)
        };
        names.push((name, kind));
    }
    let mut time_table: Vec<Arc<TimeStream>> = Vec::new();
    if version >= 3 {
        let n_times = r
            .count(body.len())
            .map_err(malformed("time stream count"))?;
        for _ in 0..n_times {
            let bit_len = u32::try_from(r.varint().map_err(malformed("time stream"))?)
                .map_err(|_| BlockFileError::Malformed("time stream"))?;
            let bits = r.bytes().map_err(malformed("time stream"))?;
            let stream = TimeStream::new(bits.into(), bit_len)
                .ok_or(BlockFileError::Malformed("time stream length"))?;
            time_table.push(Arc::new(stream));
        }
    }
    let n_switches = r.count(body.len()).map_err(malformed("switch count"))?;
    let mut switches = Vec::with_capacity(n_switches);
    for _ in 0..n_switches {
        let switch_id = r.str().map_err(malformed("switch id"))?.to_string();
        let n_metrics = r.count(MAX_METRICS).map_err(malformed("position count"))?;
        let mut metrics = Vec::with_capacity(n_metrics);
        let mut kinds = Vec::with_capacity(n_metrics);
        for _ in 0..n_metrics {
            let index = r
                .count(n_names.saturating_sub(1))
                .map_err(malformed("metric index"))?;
            let (name, kind) = names
                .get(index)
                .ok_or(BlockFileError::Malformed("metric index"))?;
            metrics.push(name.clone());
            kinds.push(*kind);
        }
        let n_blocks = r.count(r.remaining()).map_err(malformed("block count"))?;
        let mut blocks: Vec<Block> = Vec::with_capacity(n_blocks);
        for _ in 0..n_blocks {
            let block = Block::decode(&mut r, n_metrics, version, &time_table)
                .map_err(|_| BlockFileError::Malformed("block"))?;
            if blocks
                .last()
                .is_some_and(|prev| prev.last_ts >= block.first_ts)
            {
                return Err(BlockFileError::Malformed("blocks out of order"));
            }
            blocks.push(block);
        }
        switches.push(SwitchBlocks {
            switch_id,
            metrics,
            kinds,
            blocks,
        });
    }
    if !r.is_empty() {
        return Err(BlockFileError::Malformed("trailing bytes"));
    }
    Ok(BlockFile { switches })
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(crate::proptest_cases()))]

        /// Arbitrary bytes, and arbitrary damage to a valid file, never panic the reader and
        /// never load a damaged file.
        #[test]
        fn arbitrary_block_files_never_panic_or_load_damaged(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            flip in proptest::prelude::any::<usize>(),
            bit in 0u8..8,
        ) {
            let _ = read_block_file(&bytes);
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend_from_slice(&bytes);
            let _ = read_block_file(&with_magic);

            let mut store = crate::server::store::Store::new(crate::server::store::BlockLimits::fixed(8, 1_000_000_000));
            let mut batch = crate::shared::feed::FeedBatch::with_metrics(&["bandwidth", "latency"]);
            for (i, b) in bytes.iter().take(40).enumerate() {
                batch.push_row(&format!("s{}", b % 3), i as i64 * 1000, &[f64::from(*b), 0.5]);
            }
            store.ingest(&batch);
            let mut out = crate::server::store::Export::default();
            store.export_range(i64::MAX, 0..usize::MAX, &mut out, usize::MAX);
            let mut image = out.sealed.finish();
            proptest::prop_assert!(read_block_file(&image).is_ok());
            let at = flip % image.len();
            image[at] ^= 1 << bit;
            proptest::prop_assert!(read_block_file(&image).is_err(), "a flipped bit at {} loaded", at);
        }
    }
}
