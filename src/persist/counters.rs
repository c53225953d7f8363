//! The storage counters: what the data directory and the persist thread did, shown in
//! `/telemetry/stats` (`storage`), `/metrics` and the health checks.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use super::{PersistConfig, RecoveryReport};

/// Storage counters, shown in `/telemetry/stats`, `/metrics` and the health checks.
#[derive(Debug)]
pub struct StorageStats {
    pub(super) data_dir: String,
    pub(super) fsync: &'static str,
    pub wal_records: AtomicU64,
    pub wal_bytes: AtomicU64,
    pub wal_fsyncs: AtomicU64,
    pub wal_segments_deleted: AtomicU64,
    /// Accepted rows that never reached the WAL (disk errors, or a queue full of them).
    pub rows_not_logged: AtomicU64,
    pub block_files_written: AtomicU64,
    pub block_files_deleted: AtomicU64,
    pub blocks_written: AtomicU64,
    pub samples_compacted: AtomicU64,
    pub block_bytes_written: AtomicU64,
    pub write_errors: AtomicU64,
    pub disk_bytes: AtomicU64,
    /// Block images waiting to be retried after a failed write.
    pub block_files_pending: AtomicU64,
    /// Bytes of block images handed to the persist thread and not yet durable (an upper
    /// bound: counted from [`BlockFileWriter::max_image_bytes`]).
    pub block_bytes_pending: AtomicU64,
    /// Whether compaction is being put off because `block_bytes_pending` reached the cap
    /// (logged once per episode).
    pub(super) compaction_held: AtomicBool,
    pub(super) healthy: AtomicBool,
    pub(super) last_error: Mutex<Option<String>>,
    pub(super) recovery: Mutex<RecoveryReport>,
}

/// The `storage` object of `/telemetry/stats`.
#[derive(Debug, Serialize)]
pub struct StorageReport {
    pub data_dir: String,
    pub fsync: &'static str,
    /// "ok", or "failing" while writes to the data directory fail (ingest goes on in memory).
    pub status: &'static str,
    pub last_error: Option<String>,
    pub write_errors: u64,
    pub disk_bytes: u64,
    pub wal_records: u64,
    pub wal_bytes: u64,
    pub wal_fsyncs: u64,
    pub wal_segments_deleted: u64,
    pub rows_not_logged: u64,
    pub block_files_written: u64,
    pub block_files_deleted: u64,
    pub block_files_pending: u64,
    pub block_bytes_pending: u64,
    pub blocks_written: u64,
    pub samples_compacted: u64,
    pub block_bytes_written: u64,
    pub recovery: RecoveryReport,
}

impl StorageStats {
    pub fn new(config: &PersistConfig) -> StorageStats {
        StorageStats {
            data_dir: config.data_dir.display().to_string(),
            fsync: config.fsync.name(),
            wal_records: AtomicU64::new(0),
            wal_bytes: AtomicU64::new(0),
            wal_fsyncs: AtomicU64::new(0),
            wal_segments_deleted: AtomicU64::new(0),
            rows_not_logged: AtomicU64::new(0),
            block_files_written: AtomicU64::new(0),
            block_files_deleted: AtomicU64::new(0),
            blocks_written: AtomicU64::new(0),
            samples_compacted: AtomicU64::new(0),
            block_bytes_written: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            disk_bytes: AtomicU64::new(0),
            block_files_pending: AtomicU64::new(0),
            block_bytes_pending: AtomicU64::new(0),
            compaction_held: AtomicBool::new(false),
            healthy: AtomicBool::new(true),
            last_error: Mutex::new(None),
            recovery: Mutex::new(RecoveryReport::default()),
        }
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn set_recovery(&self, report: RecoveryReport) {
        *self.recovery.lock().unwrap_or_else(|p| p.into_inner()) = report;
    }

    pub(super) fn failed(&self, error: String) {
        self.write_errors.fetch_add(1, Ordering::Relaxed);
        self.healthy.store(false, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
    }

    pub fn report(&self) -> StorageReport {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StorageReport {
            data_dir: self.data_dir.clone(),
            fsync: self.fsync,
            status: if self.healthy() { "ok" } else { "failing" },
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            write_errors: load(&self.write_errors),
            disk_bytes: load(&self.disk_bytes),
            wal_records: load(&self.wal_records),
            wal_bytes: load(&self.wal_bytes),
            wal_fsyncs: load(&self.wal_fsyncs),
            wal_segments_deleted: load(&self.wal_segments_deleted),
            rows_not_logged: load(&self.rows_not_logged),
            block_files_written: load(&self.block_files_written),
            block_files_deleted: load(&self.block_files_deleted),
            block_files_pending: load(&self.block_files_pending),
            block_bytes_pending: load(&self.block_bytes_pending),
            blocks_written: load(&self.blocks_written),
            samples_compacted: load(&self.samples_compacted),
            block_bytes_written: load(&self.block_bytes_written),
            recovery: self
                .recovery
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}
