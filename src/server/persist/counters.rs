//! The storage counters: what the data directory and the persist thread did, shown in
//! `/telemetry/stats` (`storage`), `/metrics` and the health checks. One plain struct of
//! numbers behind one lock: a change that moves several counters (a block file written: its
//! count, blocks, samples, bytes, disk usage, what was pending) is seen whole or not at all.

use std::sync::{Mutex, MutexGuard};

use serde::Serialize;

use super::{PersistConfig, RecoveryReport};

/// The counters, as numbers (the `storage` object of `/telemetry/stats` shows them in this
/// order after `data_dir`, `fsync`, `status` and `last_error`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StorageCounters {
    /// Failed writes and fsyncs.
    pub write_errors: u64,
    /// WAL segments and block files on disk.
    pub disk_bytes: u64,
    pub wal_records: u64,
    /// Rows appended to the WAL (handed to the kernel: a crash of the process keeps them).
    /// `ingest.rows_accepted` minus this and `rows_not_logged` are the rows still queued
    /// for the persist thread: what a crash of the process would lose now.
    pub wal_rows: u64,
    pub wal_bytes: u64,
    pub wal_fsyncs: u64,
    pub wal_segments_deleted: u64,
    /// Accepted rows that never reached the WAL (disk errors, or a queue full of them).
    pub rows_not_logged: u64,
    pub block_files_written: u64,
    pub block_files_deleted: u64,
    /// Block images waiting to be retried after a failed write.
    pub block_files_pending: u64,
    /// Bytes of block files handed to the persist thread and not yet durable (an upper
    /// bound: counted from `BlockFileWriter::max_image_bytes`). What the cap on waiting
    /// block files counts.
    pub block_bytes_pending: u64,
    pub blocks_written: u64,
    pub samples_compacted: u64,
    pub block_bytes_written: u64,
    /// Checkpoints (every block not yet in a block file, so the WAL can be trimmed) written.
    pub checkpoints_written: u64,
    pub checkpoint_bytes_written: u64,
    /// Bytes of the checkpoint handed to the persist thread and not yet durable (at most one:
    /// a newer one replaces it). Not counted against the cap: it cannot pile up.
    pub checkpoint_bytes_pending: u64,
    /// Compactions that exported from the store (in the persist thread), how long the last
    /// one took, and the longest it held the store's lock at a time (ingest and queries wait
    /// that long at most).
    pub exports: u64,
    pub last_export_ms: u64,
    pub last_export_longest_hold_ms: u64,
}

#[derive(Debug, Default)]
struct State {
    counters: StorageCounters,
    /// Whether writes fail now, and the last failure.
    failing: bool,
    last_error: Option<String>,
    /// Whether compaction is being put off because `block_bytes_pending` reached the cap
    /// (logged once per episode).
    compaction_held: bool,
    recovery: RecoveryReport,
}

/// Storage counters and health, shared by the persist thread (writer), the store thread (what
/// it hands over) and the API (readers).
#[derive(Debug)]
pub struct StorageStats {
    data_dir: String,
    fsync: &'static str,
    state: Mutex<State>,
}

/// The `storage` object of `/telemetry/stats`.
#[derive(Debug, Serialize)]
pub struct StorageReport {
    pub data_dir: String,
    pub fsync: &'static str,
    /// "ok", or "failing" while writes to the data directory fail (ingest goes on in memory).
    pub status: &'static str,
    pub last_error: Option<String>,
    #[serde(flatten)]
    pub counters: StorageCounters,
    pub recovery: RecoveryReport,
}

impl StorageStats {
    pub fn new(config: &PersistConfig) -> StorageStats {
        StorageStats {
            data_dir: config.data_dir.display().to_string(),
            fsync: config.fsync.name(),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes counters together; returns what `change` returns.
    pub fn update<T>(&self, change: impl FnOnce(&mut StorageCounters) -> T) -> T {
        change(&mut self.state().counters)
    }

    /// A copy of the counters.
    pub fn counters(&self) -> StorageCounters {
        self.state().counters.clone()
    }

    pub fn healthy(&self) -> bool {
        !self.state().failing
    }

    pub fn set_recovery(&self, report: RecoveryReport) {
        self.state().recovery = report;
    }

    /// A write or fsync failed.
    pub(super) fn failed(&self, error: String) {
        let mut state = self.state();
        state.counters.write_errors += 1;
        state.failing = true;
        state.last_error = Some(error);
    }

    /// Marks writes as working again; whether they had been failing.
    pub(super) fn writes_work(&self) -> bool {
        std::mem::replace(&mut self.state().failing, false)
    }

    /// Sets whether compaction is put off at the cap; the previous setting.
    pub(super) fn hold_compaction(&self, held: bool) -> bool {
        std::mem::replace(&mut self.state().compaction_held, held)
    }

    pub fn report(&self) -> StorageReport {
        let state = self.state();
        StorageReport {
            data_dir: self.data_dir.clone(),
            fsync: self.fsync,
            status: if state.failing { "failing" } else { "ok" },
            last_error: state.last_error.clone(),
            counters: state.counters.clone(),
            recovery: state.recovery.clone(),
        }
    }
}
