//! The store's side of durability: exporting newly sealed blocks for a block file, and
//! rebuilding series from block files at start. The data directory itself (WAL, files, lock,
//! the disk thread) is `crate::server::persist`; this module only touches the in-memory structures.

use super::block::BlockView;
use super::file::{BlockFile, BlockFileWriter};
use super::sealed::SealedTables;
use super::{Store, StoreHandle, SwitchSeries};
use crate::shared::feed::FeedBatch;
use crate::shared::metric::MetricKind;
use crate::shared::timestamp::Micros;

/// What loading block files did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportOutcome {
    pub blocks: u64,
    pub rows: u64,
    /// Entirely older than retention: not loaded.
    pub expired_blocks: u64,
    /// Overlapping what was already loaded, or whose metrics contradict it: not loaded.
    pub conflicting_blocks: u64,
}

impl SwitchSeries {
    /// Seals the open block if the next row would seal it anyway (its time has passed: the
    /// switch stopped reporting), so checkpoints do not have to carry it forever; whether it
    /// did.
    fn seal_if_overdue(
        &mut self,
        now: Micros,
        limits: super::BlockLimits,
        times: &mut super::TimeTables,
    ) -> bool {
        let stagger = self.first_block_stagger;
        self.open
            .as_ref()
            .is_some_and(|open| limits.full(open.first_ts, open.rows, now, stagger))
            && self.seal_open(times)
    }
}

/// What replaying a checkpoint did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckpointOutcome {
    pub rows_replayed: u64,
    pub rows_already_stored: u64,
    /// Blocks whose stream would not decode to the end (their rows up to the damage were
    /// replayed). The file's checksum held, so this is a writer bug, not disk damage.
    pub corrupt_blocks: u64,
}

/// What one compaction hands to the data directory. Once both files are durable, they and
/// the block files before them hold every row stored before the export.
#[derive(Debug, Default)]
pub struct Export {
    /// Every block sealed since the last export (up to the size limit): the next block file.
    pub sealed: BlockFileWriter,
    /// Every block not in a block file: sealed ones the size limit left for a later export,
    /// and the open ones as they are now (their rows so far, as short blocks). With it, the
    /// WAL need only hold rows stored after the export.
    pub checkpoint: BlockFileWriter,
}

impl Export {
    /// An export with room for `sealed` and `checkpoint` bytes of blocks (the last export's
    /// sizes), so its images are not reallocated while the store's lock is held: at a
    /// million switches, doubling a 300 MB image held the lock for 10 ms.
    pub fn with_room(sealed: usize, checkpoint: usize) -> Export {
        let mut export = Export::default();
        export.sealed.reserve(sealed);
        export.checkpoint.reserve(checkpoint);
        export
    }
}

impl Store {
    /// For switches `range`: seals overdue open blocks, adds every block sealed since the last
    /// export to `out.sealed` (switch by switch, until it holds `max_bytes`), and every block
    /// still not exported, open or sealed, to `out.checkpoint`.
    ///
    /// A switch's unexported blocks are always its newest, so exports (and the block files
    /// made of them, written in order) hold each switch's history in order, without gaps,
    /// and a checkpoint continues it.
    pub(super) fn export_range(
        &mut self,
        now: Micros,
        range: std::ops::Range<usize>,
        out: &mut Export,
        max_bytes: usize,
    ) {
        let limits = self.limits;
        let end = range.end.min(self.switches.len());
        let start = range.start.min(end);
        for idx in start..end {
            let series = &mut self.switches[idx];
            series.seal_if_overdue(now, limits, &mut self.times);
            let names: Vec<(&str, MetricKind)> = series
                .positions
                .iter()
                .map(|p| {
                    (
                        self.metrics.name(p.metric_id()),
                        self.metrics.kind(p.metric_id()),
                    )
                })
                .collect();
            let unpersisted = (series.unpersisted as usize).min(series.sealed.len());
            // At least one switch per export, so a backlog always moves.
            let sealed = &mut out.sealed;
            if unpersisted > 0 && (sealed.is_empty() || sealed.max_image_bytes() < max_bytes) {
                let first = series.sealed.len() - unpersisted;
                let views: Vec<BlockView> =
                    series.sealed.iter(&self.times.sealed).skip(first).collect();
                sealed.add_switch(&self.ids[idx], &names, &views);
                series.unpersisted = 0;
            }
            let left = (series.unpersisted as usize).min(series.sealed.len());
            let views: Vec<BlockView> = series
                .sealed
                .iter(&self.times.sealed)
                .skip(series.sealed.len() - left)
                .chain(series.open.as_ref().map(|open| open.view(&self.times.open)))
                .collect();
            out.checkpoint.add_switch(&self.ids[idx], &names, &views);
        }
    }

    /// Adds the blocks of a block file (files must come oldest first); blocks entirely older
    /// than `cutoff` are skipped.
    pub fn import(&mut self, file: BlockFile, cutoff: Micros) -> ImportOutcome {
        let mut outcome = ImportOutcome::default();
        for switch in file.switches {
            let metric_ids: Vec<usize> = switch
                .metrics
                .iter()
                .zip(&switch.kinds)
                .map(|(name, &kind)| self.metrics.intern(name, kind))
                .collect();
            let Some(idx) = self.switch_or_insert(&switch.switch_id) else {
                // More ids than the table addresses: no room for this switch's history.
                outcome.conflicting_blocks += switch.blocks.len() as u64;
                continue;
            };
            let series = &mut self.switches[idx];
            let held = series.positions.iter().map(super::Position::metric_id);
            if !held.zip(&metric_ids).all(|(held, &id)| held == id) {
                outcome.conflicting_blocks += switch.blocks.len() as u64;
                continue;
            }
            if metric_ids.len() > series.positions.len() {
                let new = &metric_ids[series.positions.len()..];
                series.add_positions(new);
            }
            for block in switch.blocks {
                if block.last_ts < cutoff {
                    outcome.expired_blocks += 1;
                    continue;
                }
                if series
                    .newest()
                    .is_some_and(|newest| block.first_ts <= newest)
                {
                    outcome.conflicting_blocks += 1;
                    continue;
                }
                // Its blocks were staggered when it first appeared; the next one is whole.
                series.first_block_stagger = 0;
                series.newest = block.last_ts;
                self.newest = Some(self.newest.map_or(block.last_ts, |n| n.max(block.last_ts)));
                self.next_expiry = self.next_expiry.min(block.last_ts);
                self.retained_rows += u64::from(block.rows);
                outcome.rows += u64::from(block.rows);
                outcome.blocks += 1;
                series.sealed.push(&block, &mut self.times.sealed);
            }
        }
        outcome
    }

    /// Replays a checkpoint (open blocks as they were when it was written) row by row
    /// through ordinary ingest, after the block files: rows already stored (a later block
    /// file sealed them, or an earlier checkpoint held them) are turned away as duplicates,
    /// the rest rebuild each open block exactly as it was.
    pub fn replay_checkpoint(&mut self, file: BlockFile) -> CheckpointOutcome {
        let mut outcome = CheckpointOutcome::default();
        let mut batch = FeedBatch::default();
        let mut flush = |store: &mut Store, batch: &mut FeedBatch| {
            if batch.is_empty() {
                return;
            }
            let replayed = store.ingest(batch);
            outcome.rows_replayed += replayed.accepted;
            outcome.rows_already_stored += batch.len() as u64 - replayed.accepted;
            let columns = (
                std::mem::take(&mut batch.metrics),
                std::mem::take(&mut batch.kinds),
            );
            *batch = FeedBatch::with_columns(columns.0, columns.1);
        };
        for switch in file.switches {
            // Switches listing the same metrics (usually all of a source's) share a batch.
            if batch.metrics != switch.metrics
                || batch.kinds != switch.kinds
                || batch.len() >= 1 << 16
            {
                flush(self, &mut batch);
                batch = FeedBatch::with_columns(switch.metrics, switch.kinds);
            }
            // A block holds a prefix of the switch's metrics (those it had when it began).
            let mut cells = vec![None; batch.metrics.len()];
            for block in &switch.blocks {
                let decoded = block.view().for_each_row(|ts, values| {
                    cells[..values.len()].copy_from_slice(values);
                    cells[values.len()..].fill(None);
                    batch.push_cells(&switch.switch_id, ts, &cells);
                    true
                });
                if decoded.is_err() {
                    outcome.corrupt_blocks += 1;
                }
            }
        }
        flush(self, &mut batch);
        outcome
    }

    /// After importing: the newest value of every series and count totals, from the blocks
    /// (the WAL replay that follows goes through ordinary ingest and updates both).
    pub fn finish_import(&mut self) {
        for series in &mut self.switches {
            for pos in 0..series.positions.len() {
                let total = match self.metrics.kind(series.positions[pos].metric_id()) {
                    MetricKind::Count => series.sealed_agg(pos, &self.times.sealed).sum,
                    _ => 0.0,
                };
                let position = &mut series.positions[pos];
                position.set_latest(None);
                position.total = total;
            }
            fill_latest_from_blocks(series, &self.times.sealed);
        }
    }
}

/// Decodes blocks newest first until every position has its newest present value.
fn fill_latest_from_blocks(series: &mut SwitchSeries, streams: &SealedTables) {
    let mut missing = series
        .positions
        .iter()
        .filter(|p| p.latest().is_none())
        .count();
    // Newest first needs the records' starts; a switch holds a handful of blocks.
    let blocks: Vec<BlockView> = series.sealed.iter(streams).collect();
    for view in blocks.into_iter().rev() {
        if missing == 0 {
            break;
        }
        let mut newest_in_block = vec![None; view.n_metrics];
        let decoded = view.for_each_row(|ts, row| {
            for (slot, &value) in newest_in_block.iter_mut().zip(row) {
                if let Some(value) = value {
                    *slot = Some(super::Sample {
                        timestamp: ts,
                        value,
                    });
                }
            }
            true
        });
        if decoded.is_err() {
            log::error!(
                "corrupt block [{}, {}] while finding the newest values",
                view.first_ts,
                view.last_ts
            );
            continue;
        }
        for (position, found) in series.positions.iter_mut().zip(newest_in_block) {
            if position.latest().is_none() && found.is_some() {
                position.set_latest(found);
                missing -= 1;
            }
        }
    }
}

/// Most switches exported per write-lock hold: few, because every query waits for each hold
/// (and at 4,096 switches per hold, a poll stored during an export waited for nearly all of
/// it). A hold also ends after the step that passes [`super::WRITE_HOLD`]: at 1M switches
/// 256 of them took up to 9–11 ms.
pub(super) const EXPORT_CHUNK_SWITCHES: usize = 256;
/// Room each export image keeps before a hold: more than one hold's switches add.
const EXPORT_SPARE_BYTES: usize = 8 << 20;
/// Switches exported between looks at the clock during a hold.
pub(super) const EXPORT_STEP_SWITCHES: usize = 32;
/// The longest an export waits, before each chunk, for a batch being stored to finish: it
/// gives way to polls (whose freshness operators see) but is not starved by a store thread
/// that never rests.
const GIVE_WAY_MAX: std::time::Duration = std::time::Duration::from_millis(100);

/// How an export went, besides what it exported.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExportTiming {
    pub total: std::time::Duration,
    /// The longest single hold of the store's write lock.
    pub longest_hold: std::time::Duration,
    /// How many times the lock was taken for switches' blocks.
    pub holds: u64,
}

impl StoreHandle {
    /// Exports every block sealed since the last call (sealing open blocks whose span has
    /// passed) and checkpoints the open ones, a chunk of switches per write-lock hold.
    pub fn export(&self, now: Micros) -> Export {
        self.export_within(now, usize::MAX, Export::default(), &mut || {})
            .0
    }

    /// [`export`](Self::export), but stops adding sealed blocks once the block file holds
    /// `max_bytes` (the blocks of the others wait for the next export, in the checkpoint),
    /// and calls `between` after each chunk of switches, with the lock released (the persist
    /// thread writes the WAL rows that arrived meanwhile). The export goes into `out`, which
    /// may have room already ([`Export::with_room`]).
    ///
    /// Meant to run beside the store thread: switches that appear meanwhile are not
    /// exported (every row of theirs came after the export began), and series are not
    /// forgotten (which would renumber them under the export) until it ends.
    pub fn export_within(
        &self,
        now: Micros,
        max_bytes: usize,
        out: Export,
        between: &mut dyn FnMut(),
    ) -> (Export, ExportTiming) {
        self.export_holding(now, max_bytes, out, between, super::WRITE_HOLD)
    }

    /// [`export_within`](Self::export_within), each hold ending after the step of switches
    /// that passes `hold`.
    pub(super) fn export_holding(
        &self,
        now: Micros,
        max_bytes: usize,
        mut out: Export,
        between: &mut dyn FnMut(),
        hold: std::time::Duration,
    ) -> (Export, ExportTiming) {
        let started = std::time::Instant::now();
        let n = {
            let mut store = self.write();
            store.exporting = true;
            store.n_switches()
        };
        let mut longest_hold = std::time::Duration::ZERO;
        let mut holds = 0;
        let mut start = 0;
        while start < n {
            let chunk_end = (start + EXPORT_CHUNK_SWITCHES).min(n);
            // Grown here, not under the lock: a doubling copies the whole image (at 200k
            // switches a 54 MB checkpoint outgrowing its room held the lock 4 ms).
            out.sealed.keep_spare(EXPORT_SPARE_BYTES);
            out.checkpoint.keep_spare(EXPORT_SPARE_BYTES);
            self.storing.wait(GIVE_WAY_MAX);
            {
                let mut store = self.write();
                holds += 1;
                let held = std::time::Instant::now();
                start =
                    super::within_hold(start..chunk_end, EXPORT_STEP_SWITCHES, hold, |switches| {
                        store.export_range(now, switches, &mut out, max_bytes);
                    });
                longest_hold = longest_hold.max(held.elapsed());
            }
            between();
        }
        self.write().exporting = false;
        let timing = ExportTiming {
            total: started.elapsed(),
            longest_hold,
            holds,
        };
        (out, timing)
    }
}
