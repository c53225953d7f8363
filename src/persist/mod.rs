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

pub mod wal;

use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::Serialize;

use crate::feed::FeedBatch;
use crate::logging::RateLimiter;
use crate::store::file::{read_block_file, BlockFileWriter};
use crate::store::Store;
use crate::timestamp::{self, Micros};

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

/// Why the data directory cannot be used.
#[derive(Debug)]
pub enum DataDirError {
    Io {
        path: PathBuf,
        error: io::Error,
    },
    /// Another process holds the lock.
    Locked {
        path: PathBuf,
        holder: String,
    },
}

impl fmt::Display for DataDirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataDirError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            DataDirError::Locked { path, holder } => write!(
                f,
                "data directory {} is in use by another metrics-server ({holder}); \
                 two servers must not share one data directory",
                path.display()
            ),
        }
    }
}

impl std::error::Error for DataDirError {}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> DataDirError + '_ {
    move |error| DataDirError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// A file of the data directory the persist thread keeps track of.
#[derive(Debug, Clone)]
struct TrackedFile {
    /// Its sequence number: segments opened after a compaction's cut have larger ones.
    seq: u64,
    path: PathBuf,
    bytes: u64,
    /// Newest timestamp in it (`None`: no rows).
    max_ts: Option<Micros>,
}

/// An opened, locked data directory.
#[derive(Debug)]
pub struct DataDir {
    root: PathBuf,
    _lock: File,
    wal_dir: PathBuf,
    blocks_dir: PathBuf,
    segments: Vec<TrackedFile>,
    block_files: Vec<TrackedFile>,
    next_seq: u64,
}

/// What recovery found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RecoveryReport {
    pub block_files_loaded: u64,
    pub blocks_loaded: u64,
    pub block_rows_loaded: u64,
    pub block_files_quarantined: u64,
    pub blocks_expired: u64,
    pub blocks_conflicting: u64,
    pub wal_segments_read: u64,
    pub wal_records_replayed: u64,
    pub wal_rows_replayed: u64,
    /// Replayed rows already in blocks (expected after a compaction) or out of order.
    pub wal_rows_already_stored: u64,
    pub wal_records_skipped: u64,
    pub wal_tails_cut: u64,
    pub seconds: f64,
}

/// Takes the lock or says who holds it.
fn lock(path: &Path) -> Result<File, DataDirError> {
    use std::os::fd::AsRawFd;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_error(path))?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let error = io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(DataDirError::Locked {
                path: path.parent().unwrap_or(path).to_path_buf(),
                holder: format!("pid {}", holder.trim()),
            });
        }
        return Err(io_error(path)(error));
    }
    file.set_len(0).map_err(io_error(path))?;
    writeln!(file, "{}", std::process::id()).map_err(io_error(path))?;
    Ok(file)
}

/// `<16 hex digits>.<ext>` files of `dir`, by sequence number.
fn list_numbered(dir: &Path, ext: &str) -> Result<Vec<(u64, PathBuf)>, DataDirError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(ext).and_then(|s| s.strip_suffix('.')) else {
            continue;
        };
        if let Ok(seq) = u64::from_str_radix(stem, 16) {
            found.push((seq, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

fn numbered(dir: &Path, seq: u64, ext: &str) -> PathBuf {
    dir.join(format!("{seq:016x}.{ext}"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl DataDir {
    /// Creates the layout if needed and takes the lock.
    pub fn open(root: &Path) -> Result<DataDir, DataDirError> {
        let wal_dir = root.join("wal");
        let blocks_dir = root.join("blocks");
        for dir in [root, &wal_dir, &blocks_dir] {
            fs::create_dir_all(dir).map_err(io_error(dir))?;
        }
        let lock = lock(&root.join("LOCK"))?;
        // A temp file is a block file whose write never finished: its rows are still in the WAL.
        for entry in fs::read_dir(&blocks_dir)
            .map_err(io_error(&blocks_dir))?
            .flatten()
        {
            if entry.file_name().to_string_lossy().ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(DataDir {
            root: root.to_path_buf(),
            _lock: lock,
            wal_dir,
            blocks_dir,
            segments: Vec::new(),
            block_files: Vec::new(),
            next_seq: 0,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Loads block files into `store`, then replays the WAL into it. Rows older than
    /// `cutoff` are not loaded. Damage is logged, set aside or cut, never fatal.
    pub fn recover(
        &mut self,
        store: &mut Store,
        cutoff: Micros,
    ) -> Result<RecoveryReport, DataDirError> {
        let started = Instant::now();
        let mut report = RecoveryReport::default();
        let block_files = list_numbered(&self.blocks_dir, "blk")?;
        let segments = list_numbered(&self.wal_dir, "wal")?;
        self.next_seq = block_files
            .iter()
            .chain(&segments)
            .map(|(seq, _)| seq + 1)
            .max()
            .unwrap_or(0);
        for (seq, path) in block_files {
            self.load_block_file(seq, path, store, cutoff, &mut report);
        }
        store.finish_import();
        for (seq, path) in segments {
            self.replay_segment(seq, path, store, &mut report);
        }
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    fn load_block_file(
        &mut self,
        seq: u64,
        path: PathBuf,
        store: &mut Store,
        cutoff: Micros,
        report: &mut RecoveryReport,
    ) {
        let loaded = fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                read_block_file(&bytes)
                    .map(|file| (file, bytes.len() as u64))
                    .map_err(|e| e.to_string())
            });
        match loaded {
            Ok((file, bytes)) => {
                let max_ts = file.max_last_ts();
                let outcome = store.import(file, cutoff);
                report.block_files_loaded += 1;
                report.blocks_loaded += outcome.blocks;
                report.block_rows_loaded += outcome.rows;
                report.blocks_expired += outcome.expired_blocks;
                report.blocks_conflicting += outcome.conflicting_blocks;
                if outcome.conflicting_blocks > 0 {
                    log::error!(
                        "block file {}: {} blocks overlap or contradict earlier files and were not loaded",
                        path.display(),
                        outcome.conflicting_blocks
                    );
                }
                self.block_files.push(TrackedFile {
                    seq,
                    path,
                    bytes,
                    max_ts,
                });
            }
            Err(why) => {
                let aside = path.with_extension("blk.corrupt");
                let moved = fs::rename(&path, &aside);
                report.block_files_quarantined += 1;
                log::warn!(
                    "block file {} is damaged ({why}); {} and serving the rest",
                    path.display(),
                    match moved {
                        Ok(()) => format!("moved aside to {}", aside.display()),
                        Err(e) => format!("could not move it aside ({e}), ignoring it"),
                    }
                );
            }
        }
    }

    fn replay_segment(
        &mut self,
        seq: u64,
        path: PathBuf,
        store: &mut Store,
        report: &mut RecoveryReport,
    ) {
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) => {
                log::warn!(
                    "cannot read WAL segment {}: {e}; skipping it",
                    path.display()
                );
                return;
            }
        };
        let contents = wal::read_segment(&bytes);
        report.wal_segments_read += 1;
        report.wal_records_skipped += contents.skipped_records;
        if contents.skipped_records > 0 {
            log::warn!(
                "WAL segment {}: {} corrupt records skipped (their rows are lost)",
                path.display(),
                contents.skipped_records
            );
        }
        let mut max_ts: Option<Micros> = None;
        for batch in &contents.batches {
            let outcome = store.ingest(batch);
            report.wal_records_replayed += 1;
            report.wal_rows_replayed += outcome.accepted;
            report.wal_rows_already_stored += batch.len() as u64 - outcome.accepted;
            for row in 0..batch.len() {
                let ts = batch.timestamp(row);
                max_ts = Some(max_ts.map_or(ts, |m| m.max(ts)));
            }
        }
        let mut kept = bytes.len() as u64;
        if let Some(damage) = &contents.damage {
            report.wal_tails_cut += 1;
            kept = contents.good_len as u64;
            let cut = OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(kept).and_then(|()| f.sync_all()));
            log::warn!(
                "WAL segment {}: {damage}; {} bytes after byte {} cut off{}",
                path.display(),
                bytes.len() - contents.good_len,
                contents.good_len,
                match cut {
                    Ok(()) => String::new(),
                    Err(e) => format!(" (in memory only: truncating failed: {e})"),
                }
            );
        }
        self.segments.push(TrackedFile {
            seq,
            path,
            bytes: kept,
            max_ts,
        });
    }

    fn disk_bytes(&self) -> u64 {
        self.segments
            .iter()
            .chain(&self.block_files)
            .map(|f| f.bytes)
            .sum()
    }
}

/// Storage counters, shown in `/telemetry/stats`, `/metrics` and the health checks.
#[derive(Debug)]
pub struct StorageStats {
    data_dir: String,
    fsync: &'static str,
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
    compaction_held: AtomicBool,
    healthy: AtomicBool,
    last_error: Mutex<Option<String>>,
    recovery: Mutex<RecoveryReport>,
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

    fn failed(&self, error: String) {
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

enum DiskJob {
    Rows {
        feed: Arc<FeedBatch>,
        rows: Vec<u32>,
    },
    /// A poll's rows have all been sent.
    PollDone,
    Blocks {
        writer: BlockFileWriter,
        /// Oldest row still only in the WAL (`None`: none is).
        keep_wal_from: Option<Micros>,
        /// What the writer added to `block_bytes_pending`.
        counted: u64,
    },
    /// Tests: answered once every job sent before it has been handled.
    #[cfg(test)]
    Barrier(Sender<()>),
}

/// Jobs queued for the persist thread at most (a few polls' chunks).
const QUEUE: usize = 64;
/// A WAL segment is closed at this size even between compactions.
const SEGMENT_BYTES: u64 = 128 << 20;
/// Block images that may wait for the disk (held in memory, retried) before compaction is
/// put off. Never exceeded by more than one switch's blocks.
pub const MAX_PENDING_BLOCK_BYTES: u64 = 512 << 20;

/// The store thread's end of the persist thread. Never blocks.
#[derive(Clone)]
pub struct Disk {
    jobs: Sender<DiskJob>,
    pub stats: Arc<StorageStats>,
    /// [`MAX_PENDING_BLOCK_BYTES`] but in tests.
    max_pending_block_bytes: u64,
}

impl Disk {
    /// Logs accepted rows; a full queue (a stalled disk) drops and counts them.
    pub fn log_rows(&self, feed: Arc<FeedBatch>, rows: Vec<u32>) {
        if rows.is_empty() {
            return;
        }
        let n = rows.len() as u64;
        if self.jobs.try_send(DiskJob::Rows { feed, rows }).is_err() {
            self.stats.rows_not_logged.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn poll_done(&self) {
        let _ = self.jobs.try_send(DiskJob::PollDone);
    }

    /// Whether the queue has room for a job now.
    pub fn has_room(&self) -> bool {
        self.jobs.len() < QUEUE
    }

    /// Whether sealed blocks may be exported now. Check before exporting: the store counts
    /// exported blocks as persisted and never exports them again.
    ///
    /// Past the cap on block images waiting for the disk, the answer is no: the blocks stay
    /// unexported in the store (which holds them anyway) and go out with a later compaction,
    /// once the backlog has reached the disk. Dropping a waiting image instead would leave a
    /// hole in the block files that nothing could fill: later files hold newer blocks of the
    /// same switches, so the WAL replay at the next start would reject the missing rows as
    /// out of order, even if the WAL still held them.
    pub fn can_take_blocks(&self) -> bool {
        if !self.has_room() {
            return false;
        }
        let pending = self.stats.block_bytes_pending.load(Ordering::Relaxed);
        let below_cap = pending < self.max_pending_block_bytes;
        let was_held = self
            .stats
            .compaction_held
            .swap(!below_cap, Ordering::Relaxed);
        match (was_held, below_cap) {
            (false, false) => log::error!(
                "{} MiB of block files are waiting for the disk: compaction is put off; \
                 sealed blocks stay in memory and the WAL keeps their rows",
                pending >> 20
            ),
            (true, true) => log::warn!("block files reach the disk again: compaction resumes"),
            _ => {}
        }
        below_cap
    }

    /// How many more bytes of block images may wait for the disk: the size to which a
    /// compaction limits its block file.
    pub fn block_budget(&self) -> usize {
        let pending = self.stats.block_bytes_pending.load(Ordering::Relaxed);
        usize::try_from(self.max_pending_block_bytes.saturating_sub(pending)).unwrap_or(usize::MAX)
    }

    /// Queues exported blocks for a block file; `keep_wal_from` is the oldest row not in
    /// them or in earlier exports (see [`crate::store::StoreHandle::export_sealed_within`]).
    pub fn write_blocks(&self, writer: BlockFileWriter, keep_wal_from: Option<Micros>) {
        let counted = if writer.is_empty() {
            0
        } else {
            writer.max_image_bytes() as u64
        };
        // Counted before sending: the persist thread may write the file and take the count
        // back off before `try_send` returns.
        let pending = &self.stats.block_bytes_pending;
        pending.fetch_add(counted, Ordering::Relaxed);
        let sent = self.jobs.try_send(DiskJob::Blocks {
            writer,
            keep_wal_from,
            counted,
        });
        if sent.is_err() {
            pending.fetch_sub(counted, Ordering::Relaxed);
        }
    }
}

/// Starts the persist thread; it ends, after a final fsync, when every [`Disk`] is dropped.
pub fn spawn(
    dir: DataDir,
    config: &PersistConfig,
    stats: Arc<StorageStats>,
    watch: &Arc<crate::watch::Watch>,
) -> io::Result<(Disk, JoinHandle<()>)> {
    let cap = test_knob("FABRIC_TEST_BLOCK_CAP").unwrap_or(MAX_PENDING_BLOCK_BYTES);
    spawn_with_cap(dir, config, stats, cap, watch)
}

/// Test-only sizes: in debug builds `FABRIC_TEST_BLOCK_CAP=<bytes>` lowers the cap on block
/// files waiting for the disk and `FABRIC_TEST_WAL_SEGMENT=<bytes>` the WAL segment size, so
/// an integration test can pass the cap and see segments trimmed without writing hundreds of
/// MiB (tests/durability.rs). Release builds ignore both.
fn test_knob(name: &str) -> Option<u64> {
    if cfg!(debug_assertions) {
        std::env::var(name).ok()?.parse().ok()
    } else {
        None
    }
}

/// [`spawn`] with another cap on block images waiting for the disk (tests: a small one).
fn spawn_with_cap(
    dir: DataDir,
    config: &PersistConfig,
    stats: Arc<StorageStats>,
    max_pending_block_bytes: u64,
    watch: &Arc<crate::watch::Watch>,
) -> io::Result<(Disk, JoinHandle<()>)> {
    let (jobs, rx) = crossbeam_channel::bounded(QUEUE);
    stats.disk_bytes.store(dir.disk_bytes(), Ordering::Relaxed);
    let writer = DiskWriter {
        dir,
        fsync: config.fsync,
        retention: crate::timestamp::duration_micros(config.retention),
        stats: Arc::clone(&stats),
        segment: None,
        last_sync: Instant::now(),
        pending: VecDeque::new(),
        buf: Vec::new(),
        error_log: RateLimiter::new(Duration::from_secs(10)),
        segment_bytes: test_knob("FABRIC_TEST_WAL_SEGMENT").unwrap_or(SEGMENT_BYTES),
    };
    // Vital: exported blocks in its queue would vanish with it; a panic stops the process
    // (what was not written is still in the WAL, or in memory and replayed from the WAL).
    let handle = watch.spawn_vital("persist", move || writer.run(rx))?;
    Ok((
        Disk {
            jobs,
            stats,
            max_pending_block_bytes,
        },
        handle,
    ))
}

struct OpenSegment {
    file: File,
    tracked: TrackedFile,
    /// Written since the last fsync.
    dirty: bool,
}

/// A block file that could not be written yet.
struct PendingFile {
    image: Vec<u8>,
    max_ts: Option<Micros>,
    blocks: u64,
    samples: u64,
    keep_wal_from: Option<Micros>,
    /// Sequence number of the first WAL segment opened after this export: only segments
    /// before it can hold rows of the exported blocks.
    wal_cut: u64,
    /// Its share of `block_bytes_pending`.
    counted: u64,
}

struct DiskWriter {
    dir: DataDir,
    fsync: FsyncPolicy,
    retention: Micros,
    stats: Arc<StorageStats>,
    segment: Option<OpenSegment>,
    last_sync: Instant,
    pending: VecDeque<PendingFile>,
    buf: Vec<u8>,
    error_log: RateLimiter,
    /// A segment this large is closed and the next record starts a new one.
    segment_bytes: u64,
}

impl DiskWriter {
    fn run(mut self, jobs: Receiver<DiskJob>) {
        let tick = match self.fsync {
            FsyncPolicy::Interval(every) => every.min(Duration::from_secs(1)),
            _ => Duration::from_secs(1),
        };
        loop {
            crate::watch::injected_panic_point();
            match jobs.recv_timeout(tick) {
                Ok(DiskJob::Rows { feed, rows }) => self.append(&feed, &rows),
                Ok(DiskJob::PollDone) => {
                    if self.fsync == FsyncPolicy::EveryBatch {
                        self.sync_segment();
                    }
                }
                Ok(DiskJob::Blocks {
                    writer,
                    keep_wal_from,
                    counted,
                }) => self.compact(writer, keep_wal_from, counted),
                #[cfg(test)]
                Ok(DiskJob::Barrier(done)) => {
                    let _ = done.send(());
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.housekeeping();
        }
        // Shutdown: what was written reaches the disk whatever the policy.
        self.sync_segment();
    }

    fn housekeeping(&mut self) {
        if let FsyncPolicy::Interval(every) = self.fsync {
            if self.last_sync.elapsed() >= every {
                self.sync_segment();
            }
        }
        if !self.pending.is_empty() {
            self.write_pending();
        }
        self.expire_block_files();
    }

    fn fail(&mut self, what: String) {
        if let Some(held_back) = self.error_log.allow(Instant::now()) {
            log::error!("{what}; ingest goes on in memory, retrying ({held_back} similar errors not logged)");
        }
        self.stats.failed(what);
    }

    fn recovered(&mut self) {
        if !self.stats.healthy() && self.pending.is_empty() {
            self.stats.healthy.store(true, Ordering::Relaxed);
            log::warn!("writes to {} work again", self.dir.root.display());
        }
    }

    fn open_segment(&mut self) -> io::Result<&mut OpenSegment> {
        if self.segment.is_none() {
            let seq = self.dir.next_seq;
            self.dir.next_seq += 1;
            let path = numbered(&self.dir.wal_dir, seq, "wal");
            let mut file = OpenOptions::new()
                .create_new(true)
                .write(true)
                .open(&path)?;
            let header = file
                .write_all(wal::MAGIC)
                .and_then(|()| sync_dir(&self.dir.wal_dir));
            if let Err(e) = header {
                drop(file);
                let _ = fs::remove_file(&path);
                return Err(e);
            }
            self.segment = Some(OpenSegment {
                file,
                tracked: TrackedFile {
                    seq,
                    path,
                    bytes: wal::MAGIC.len() as u64,
                    max_ts: None,
                },
                dirty: true,
            });
        }
        self.segment
            .as_mut()
            .ok_or_else(|| io::Error::other("no segment"))
    }

    fn append(&mut self, feed: &FeedBatch, rows: &[u32]) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        wal::encode_rows(feed, rows, &mut buf);
        let max_ts = rows.iter().map(|&r| feed.timestamp(r as usize)).max();
        let written = self.open_segment().and_then(|segment| {
            segment.file.write_all(&buf)?;
            segment.tracked.bytes += buf.len() as u64;
            segment.tracked.max_ts = segment.tracked.max_ts.max(max_ts);
            segment.dirty = true;
            Ok(segment.tracked.bytes)
        });
        self.buf = buf;
        match written {
            Ok(size) => {
                self.stats.wal_records.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .wal_bytes
                    .fetch_add(self.buf.len() as u64, Ordering::Relaxed);
                self.stats
                    .disk_bytes
                    .fetch_add(self.buf.len() as u64, Ordering::Relaxed);
                self.recovered();
                if size >= self.segment_bytes {
                    self.close_segment();
                }
            }
            Err(e) => {
                self.stats
                    .rows_not_logged
                    .fetch_add(rows.len() as u64, Ordering::Relaxed);
                self.abandon_segment();
                self.fail(format!(
                    "cannot append to the WAL in {}: {e}",
                    self.dir.wal_dir.display()
                ));
            }
        }
    }

    /// After a failed write the segment may end in a partial record: cut it back to its last
    /// whole record and continue in a new segment, so no torn record sits mid-WAL.
    fn abandon_segment(&mut self) {
        if let Some(segment) = self.segment.take() {
            let _ = segment.file.set_len(segment.tracked.bytes);
            let _ = segment.file.sync_all();
            self.dir.segments.push(segment.tracked);
        }
    }

    fn sync_segment(&mut self) {
        let Some(segment) = self.segment.as_mut() else {
            return;
        };
        if !segment.dirty {
            return;
        }
        match segment.file.sync_data() {
            Ok(()) => {
                segment.dirty = false;
                self.last_sync = Instant::now();
                self.stats.wal_fsyncs.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.abandon_segment();
                self.fail(format!(
                    "cannot fsync the WAL in {}: {e}",
                    self.dir.wal_dir.display()
                ));
            }
        }
    }

    fn close_segment(&mut self) {
        self.sync_segment();
        if let Some(segment) = self.segment.take() {
            self.dir.segments.push(segment.tracked);
        }
    }

    fn compact(&mut self, writer: BlockFileWriter, keep_wal_from: Option<Micros>, counted: u64) {
        // The cut: rows logged from now on go to a new segment. Jobs arrive in the order the
        // store thread sent them, so the segments before the cut hold exactly the rows
        // accepted before this export.
        self.close_segment();
        let wal_cut = self.dir.next_seq;
        if !writer.is_empty() {
            // Never dropped, however long the disk fails: the store stops exporting at the
            // cap instead (`Disk::can_take_blocks`), so block files stay a gapless prefix of
            // every switch's history and the WAL its continuation.
            let pending = PendingFile {
                max_ts: writer.max_last_ts(),
                blocks: writer.blocks(),
                samples: writer.samples(),
                image: writer.finish(),
                keep_wal_from,
                wal_cut,
                counted,
            };
            self.pending.push_back(pending);
            self.write_pending();
        } else if self.pending.is_empty() {
            self.truncate_wal(keep_wal_from, wal_cut);
        }
        self.stats
            .block_files_pending
            .store(self.pending.len() as u64, Ordering::Relaxed);
    }

    /// Writes queued block files in order; the WAL is truncated after each one that lands.
    fn write_pending(&mut self) {
        while let Some(next) = self.pending.front() {
            let seq = self.dir.next_seq;
            let path = numbered(&self.dir.blocks_dir, seq, "blk");
            match write_atomically(&self.dir.blocks_dir, &path, &next.image) {
                Ok(()) => {
                    self.dir.next_seq += 1;
                    let Some(done) = self.pending.pop_front() else {
                        break;
                    };
                    let bytes = done.image.len() as u64;
                    let held = self.stats.block_bytes_pending.load(Ordering::Relaxed);
                    self.stats
                        .block_bytes_pending
                        .fetch_sub(done.counted.min(held), Ordering::Relaxed);
                    self.stats
                        .block_files_written
                        .fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .blocks_written
                        .fetch_add(done.blocks, Ordering::Relaxed);
                    self.stats
                        .samples_compacted
                        .fetch_add(done.samples, Ordering::Relaxed);
                    self.stats
                        .block_bytes_written
                        .fetch_add(bytes, Ordering::Relaxed);
                    self.stats.disk_bytes.fetch_add(bytes, Ordering::Relaxed);
                    self.dir.block_files.push(TrackedFile {
                        seq,
                        path,
                        bytes,
                        max_ts: done.max_ts,
                    });
                    // Only once every exported block is durable: an earlier file's horizon
                    // would be too late while a file before it still waits.
                    if self.pending.is_empty() {
                        self.truncate_wal(done.keep_wal_from, done.wal_cut);
                    }
                    self.recovered();
                }
                Err(e) => {
                    self.fail(format!("cannot write block file {}: {e}", path.display()));
                    break;
                }
            }
        }
        self.stats
            .block_files_pending
            .store(self.pending.len() as u64, Ordering::Relaxed);
    }

    /// Deletes closed segments whose rows are all in durable block files, once every export
    /// up to the one with this `keep_from` and `wal_cut` is durable: segments before the cut
    /// whose rows are all older than `keep_from` (every one before the cut when nothing was
    /// left only in the WAL).
    ///
    /// The rule: the WAL is never trimmed past a row that is not in a durable block file.
    /// `keep_from` is the oldest row the store had not exported (open blocks, and sealed
    /// ones a size-limited export left for later); nothing exported is dropped before it is
    /// durable. The cut matters when files waited for the disk: segments closed after it
    /// hold rows accepted after this export, which can be older than `keep_from` (a switch
    /// that starts reporting late, with old timestamps) and are in no block file yet.
    fn truncate_wal(&mut self, keep_from: Option<Micros>, wal_cut: u64) {
        let stats = Arc::clone(&self.stats);
        self.dir.segments.retain(|segment| {
            let covered = segment.seq < wal_cut
                && match (segment.max_ts, keep_from) {
                    (None, _) | (_, None) => true,
                    (Some(max_ts), Some(keep)) => max_ts < keep,
                };
            !(covered && delete_tracked(segment, &stats, &stats.wal_segments_deleted))
        });
    }

    /// Retention: a block file whose newest row has expired goes as a whole.
    fn expire_block_files(&mut self) {
        let cutoff = timestamp::now_micros().saturating_sub(self.retention);
        let stats = Arc::clone(&self.stats);
        self.dir.block_files.retain(|file| {
            if file.max_ts.is_some_and(|t| t >= cutoff) {
                return true;
            }
            !delete_tracked(file, &stats, &stats.block_files_deleted)
        });
    }
}

/// Deletes a file the persist thread tracks; on success counts it in `deleted` and takes its
/// bytes off the disk usage. Whether it is gone.
fn delete_tracked(file: &TrackedFile, stats: &StorageStats, deleted: &AtomicU64) -> bool {
    if !remove(&file.path) {
        return false;
    }
    deleted.fetch_add(1, Ordering::Relaxed);
    let held = stats.disk_bytes.load(Ordering::Relaxed);
    stats
        .disk_bytes
        .fetch_sub(file.bytes.min(held), Ordering::Relaxed);
    true
}

fn remove(path: &Path) -> bool {
    match fs::remove_file(path) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(e) => {
            log::warn!("cannot delete {}: {e}", path.display());
            false
        }
    }
}

/// Temp file, fsync, rename, fsync the directory: after a crash the file is either complete
/// under its name or absent.
fn write_atomically(dir: &Path, path: &Path, image: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("blk.tmp");
    let written = (|| {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&tmp)?;
        file.write_all(image)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests;
