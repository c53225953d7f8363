//! The store's side of durability: exporting newly sealed blocks for a block file, and
//! rebuilding series from block files at start. The data directory itself (WAL, files, lock,
//! the disk thread) is `crate::server::persist`; this module only touches the in-memory structures.

use super::file::{BlockFile, BlockFileWriter};
use super::{Store, StoreHandle, SwitchSeries, EVICT_CHUNK_SWITCHES};
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
    /// Seals the open block if no future row could extend it (its span has passed: the switch
    /// stopped reporting), so the WAL does not have to keep its rows forever.
    fn seal_if_overdue(&mut self, now: Micros, span: Micros) {
        if self
            .open
            .as_ref()
            .is_some_and(|open| now - open.first_ts > span)
        {
            self.seal_open();
        }
    }
}

impl Store {
    /// For switches `range`: seals overdue open blocks, adds every block sealed since the last
    /// export to `out` (switch by switch, until `out` holds `max_bytes`), and returns the
    /// oldest first timestamp of a block not exported: left open, or sealed and left for a
    /// later export by the size limit. Every older row of these switches is in an exported
    /// block (or expired).
    ///
    /// A switch's unexported blocks are always its newest, so exports (and the block files
    /// made of them, written in order) hold each switch's history in order, without gaps.
    pub(super) fn export_range(
        &mut self,
        now: Micros,
        range: std::ops::Range<usize>,
        out: &mut BlockFileWriter,
        max_bytes: usize,
    ) -> Option<Micros> {
        let span = self.limits.span;
        let end = range.end.min(self.switches.len());
        let start = range.start.min(end);
        let mut keep_from: Option<Micros> = None;
        for idx in start..end {
            let series = &mut self.switches[idx];
            series.seal_if_overdue(now, span);
            let unpersisted = (series.unpersisted as usize).min(series.sealed.len());
            // At least one switch per export, so a backlog always moves.
            if unpersisted > 0 && (out.is_empty() || out.max_image_bytes() < max_bytes) {
                let names: Vec<(&str, MetricKind)> = series
                    .metric_ids
                    .iter()
                    .map(|&m| (self.metrics.name(m), self.metrics.kind(m)))
                    .collect();
                let first = series.sealed.len() - unpersisted;
                out.add_switch(&self.ids[idx], &names, series.sealed.range(first..));
                series.unpersisted = 0;
            }
            let left = (series.unpersisted as usize).min(series.sealed.len());
            let oldest_unexported = match left {
                0 => series.open.as_ref().map(|open| open.first_ts),
                _ => series
                    .sealed
                    .get(series.sealed.len() - left)
                    .map(|b| b.first_ts),
            };
            if let Some(t) = oldest_unexported {
                keep_from = Some(keep_from.map_or(t, |k| k.min(t)));
            }
        }
        keep_from
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
            let idx = self.switch_or_insert(&switch.switch_id);
            let series = &mut self.switches[idx];
            let shared = series.metric_ids.len().min(metric_ids.len());
            if series.metric_ids[..shared] != metric_ids[..shared] {
                outcome.conflicting_blocks += switch.blocks.len() as u64;
                continue;
            }
            if metric_ids.len() > series.metric_ids.len() {
                series.metric_ids = metric_ids;
            }
            for block in switch.blocks {
                if block.last_ts < cutoff {
                    outcome.expired_blocks += 1;
                    continue;
                }
                if series.newest.is_some_and(|newest| block.first_ts <= newest) {
                    outcome.conflicting_blocks += 1;
                    continue;
                }
                super::merge_into(&mut series.sealed_agg, block.view().aggs);
                series.newest = Some(block.last_ts);
                self.newest = Some(self.newest.map_or(block.last_ts, |n| n.max(block.last_ts)));
                self.next_expiry = self.next_expiry.min(block.last_ts);
                self.retained_rows += u64::from(block.rows);
                outcome.rows += u64::from(block.rows);
                outcome.blocks += 1;
                series.sealed.push_back(block);
            }
        }
        outcome
    }

    /// After importing: the newest value of every series and count totals, from the blocks
    /// (the WAL replay that follows goes through ordinary ingest and updates both).
    pub fn finish_import(&mut self) {
        for series in &mut self.switches {
            let n = series.metric_ids.len();
            series.latest = vec![None; n];
            series.totals = vec![0.0; n];
            for (pos, &metric_id) in series.metric_ids.iter().enumerate() {
                if self.metrics.kind(metric_id) == MetricKind::Count {
                    series.totals[pos] = series.sealed_agg.get(pos).map_or(0.0, |a| a.sum);
                }
            }
            fill_latest_from_blocks(series);
        }
    }
}

/// Decodes blocks newest first until every position has its newest present value.
fn fill_latest_from_blocks(series: &mut SwitchSeries) {
    let mut missing = series.latest.iter().filter(|l| l.is_none()).count();
    for block in series.sealed.iter().rev() {
        if missing == 0 {
            break;
        }
        let view = block.view();
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
                block.first_ts,
                block.last_ts
            );
            continue;
        }
        for (latest, found) in series.latest.iter_mut().zip(newest_in_block) {
            if latest.is_none() && found.is_some() {
                *latest = found;
                missing -= 1;
            }
        }
    }
}

impl StoreHandle {
    /// Exports every block sealed since the last call (sealing open blocks whose span has
    /// passed), a chunk of switches per write-lock hold. Returns the oldest first timestamp
    /// of a block still open: the WAL must keep every row from then on.
    pub fn export_sealed(&self, now: Micros, out: &mut BlockFileWriter) -> Option<Micros> {
        self.export_sealed_within(now, out, usize::MAX)
    }

    /// [`export_sealed`](Self::export_sealed), but stops adding switches once `out` holds
    /// `max_bytes` (the blocks of the others wait for the next export). Returns the oldest
    /// first timestamp of a block not exported, open or sealed: the WAL must keep every row
    /// from then on.
    pub fn export_sealed_within(
        &self,
        now: Micros,
        out: &mut BlockFileWriter,
        max_bytes: usize,
    ) -> Option<Micros> {
        let n = self.read().n_switches();
        let mut keep_from: Option<Micros> = None;
        let mut start = 0;
        while start < n {
            let end = (start + EVICT_CHUNK_SWITCHES).min(n);
            if let Some(t) = self.write().export_range(now, start..end, out, max_bytes) {
                keep_from = Some(keep_from.map_or(t, |k| k.min(t)));
            }
            start = end;
        }
        keep_from
    }
}
