//! The data directory: what makes history survive restarts, crashes and power loss.
//!
//! ```text
//! DATA_DIR/LOCK                  flock'ed by the running server (holds its pid)
//! DATA_DIR/wal/<seq>.wal         write-ahead log segments: every accepted row, per poll chunk
//! DATA_DIR/blocks/<seq>.blk      immutable block files: sealed blocks, compressed
//! DATA_DIR/blocks/<seq>.blk.corrupt   a block file that failed its checksum, set aside
//! ```
//! The store thread hands accepted rows to the `persist` thread, which appends them to the
//! WAL and fsyncs per [`FsyncPolicy`]. Every `--compaction-interval` the store exports the
//! blocks sealed since the last export; the persist thread writes them to a temp file,
//! fsyncs it, renames it into place, fsyncs the directory, and only then deletes WAL
//! segments whose rows are all in block files. Retention deletes whole block files.
//!
//! On start, [`DataDir::recover`] loads block files (a damaged one is renamed aside and the
//! rest served), then replays the WAL through ordinary ingest, where the store's dedupe drops
//! rows that are already in blocks. A torn or corrupt tail is cut off with a warning.
//!
//! Disk trouble never stops ingest: a failed write is logged and counted, rows go on into
//! memory, and writing resumes (in a new segment) once the disk takes writes again. Block
//! files that cannot be written wait in memory, in order, and are never dropped; past
//! [`MAX_PENDING_BLOCK_BYTES`] the store stops exporting instead. The WAL is never trimmed past
//! a row that is not in a durable block file (see `DiskWriter::truncate_wal`).

mod counters;
mod dir;
pub mod wal;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::server::store::Store;
use crate::shared::timestamp::Micros;
use crate::shared::watch::Watch;

pub use counters::{StorageCounters, StorageReport, StorageStats};
pub use dir::{DataDir, DataDirError, RecoveryReport};
pub use writer::{spawn, Disk, MAX_PENDING_BLOCK_BYTES};

/// When the WAL is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every poll's rows: a power loss costs at most the poll in flight.
    EveryBatch,
    /// At most this long after a write: a power loss costs up to this much.
    Interval(Duration),
    /// Left to the kernel (usually within 30 s): a power loss can cost that much; a crash
    /// of the process alone loses nothing written.
    Never,
}

impl FsyncPolicy {
    pub fn name(&self) -> &'static str {
        match self {
            FsyncPolicy::EveryBatch => "every-batch",
            FsyncPolicy::Interval(_) => "interval",
            FsyncPolicy::Never => "never",
        }
    }
}

/// Durability settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistConfig {
    pub data_dir: PathBuf,
    pub fsync: FsyncPolicy,
    /// How often sealed blocks are written to a block file (and the WAL truncated).
    pub compaction_interval: Duration,
    pub retention: Duration,
}

/// Durable history, opened: the data directory locked, what it held loaded into the store,
/// and the persist thread running.
pub struct Opened {
    /// The store thread's end of the persist thread.
    pub disk: Disk,
    /// Ends, after a final fsync, once every [`Disk`] is dropped.
    pub thread: JoinHandle<()>,
    pub stats: Arc<StorageStats>,
    pub recovery: RecoveryReport,
}

/// Opens `config.data_dir` (creating its layout, taking its lock), loads its block files and
/// replays its WAL into `store` (rows older than `cutoff` are left out), and starts the
/// persist thread under `watch`. What the server and the benchmark both use.
pub fn open(
    config: &PersistConfig,
    store: &mut Store,
    cutoff: Micros,
    watch: &Arc<Watch>,
) -> Result<Opened, DataDirError> {
    let mut dir = DataDir::open(&config.data_dir)?;
    let recovery = dir.recover(store, cutoff)?;
    let stats = Arc::new(StorageStats::new(config));
    stats.set_recovery(recovery.clone());
    let root = dir.root().to_path_buf();
    let (disk, thread) = spawn(dir, config, Arc::clone(&stats), watch)
        .map_err(|error| DataDirError::Io { path: root, error })?;
    Ok(Opened {
        disk,
        thread,
        stats,
        recovery,
    })
}

/// Test-only knobs: in debug builds `FABRIC_TEST_BLOCK_CAP=<bytes>` lowers the cap on block
/// files waiting for the disk and `FABRIC_TEST_WAL_SEGMENT=<bytes>` the WAL segment size, so
/// an integration test can pass the cap and see segments trimmed without writing hundreds of
/// MiB; `FABRIC_TEST_WAL_APPEND_MS=<ms>` makes every WAL append that much slower, a disk
/// slower than ingest (tests/durability.rs). Release builds ignore them.
fn test_knob(name: &str) -> Option<u64> {
    if cfg!(debug_assertions) {
        std::env::var(name).ok()?.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
