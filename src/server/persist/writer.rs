//! The persist thread and its handle: WAL appends and fsyncs, block files and checkpoints
//! written whole or not at all (and retried in order while the disk fails), WAL trimming
//! behind them, retention of block files. [`Disk`] is the store thread's end: it never blocks.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::dir::{numbered, sync_dir, DataDir, TrackedFile, CHECKPOINT_EXT};
use super::{test_knob, wal, FsyncPolicy, PersistConfig, StorageCounters, StorageStats};
use crate::server::store::{Export, StoreHandle};
use crate::shared::feed::FeedBatch;
use crate::shared::logging::LogThrottle;
use crate::shared::timestamp::{self, Micros};

pub(super) enum DiskJob {
    Rows {
        feed: Arc<FeedBatch>,
        rows: Vec<u32>,
    },
    /// A poll's rows have all been sent.
    PollDone,
    /// A compaction: export from the store here, off the store thread, then write.
    Compact { store: StoreHandle, now: Micros },
    /// Tests: a compaction that runs `between` after each chunk of the export, before the
    /// WAL rows that arrived meanwhile are written.
    #[cfg(test)]
    CompactWith {
        store: StoreHandle,
        now: Micros,
        between: Box<dyn FnMut() + Send>,
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
    pub(super) jobs: Sender<DiskJob>,
    /// A compaction is queued or running.
    compacting: Arc<AtomicBool>,
    pub stats: Arc<StorageStats>,
    /// [`MAX_PENDING_BLOCK_BYTES`] but in tests.
    pub(super) max_pending_block_bytes: u64,
}

impl Disk {
    /// Logs accepted rows; a full queue (a stalled disk) drops and counts them.
    pub fn log_rows(&self, feed: Arc<FeedBatch>, rows: Vec<u32>) {
        if rows.is_empty() {
            return;
        }
        let n = rows.len() as u64;
        if self.jobs.try_send(DiskJob::Rows { feed, rows }).is_err() {
            self.stats.update(|c| c.rows_not_logged += n);
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
    /// Past the cap on block files waiting for the disk, the answer is no: the blocks stay
    /// unexported in the store (which holds them anyway) and go out with a later compaction,
    /// once the backlog has reached the disk. Dropping a waiting image instead would leave a
    /// hole in the block files that nothing could fill: later files hold newer blocks of the
    /// same switches, so the WAL replay at the next start would reject the missing rows as
    /// out of order, even if the WAL still held them.
    ///
    /// A waiting checkpoint does not count: the next export's replaces it, so it cannot pile
    /// up, and alone it may be near the cap (~270 MB at a million switches). Counted, one
    /// checkpoint that failed would put compaction off with no block file waiting.
    pub fn can_take_blocks(&self) -> bool {
        if !self.has_room() {
            return false;
        }
        let pending = self.stats.update(|c| c.block_bytes_pending);
        let below_cap = pending < self.max_pending_block_bytes;
        let was_held = self.stats.hold_compaction(!below_cap);
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

    /// Queues a compaction: the persist thread cuts the WAL, exports from `store` (sealed
    /// blocks for a block file, the rest for a checkpoint) a chunk of switches per lock
    /// hold, and writes both; once they are durable, the WAL before the cut goes. Whether it
    /// was queued. The store thread only asks: the export's seconds at a million switches are
    /// the persist thread's.
    ///
    /// No second compaction is queued while one runs (it would be asked for twice, and its
    /// budget would not count the running one's images): the store thread asks again later.
    pub fn compact(&self, store: &StoreHandle, now: Micros) -> bool {
        if self.compacting.swap(true, Ordering::AcqRel) {
            return false;
        }
        let job = DiskJob::Compact {
            store: store.clone(),
            now,
        };
        let queued = self.jobs.try_send(job).is_ok();
        if !queued {
            self.compacting.store(false, Ordering::Release);
        }
        queued
    }
}

/// Starts the persist thread; it ends, after a final fsync, when every [`Disk`] is dropped.
pub fn spawn(
    dir: DataDir,
    config: &PersistConfig,
    stats: Arc<StorageStats>,
    watch: &Arc<crate::shared::watch::Watch>,
) -> io::Result<(Disk, JoinHandle<()>)> {
    let cap = test_knob("FABRIC_TEST_BLOCK_CAP").unwrap_or(MAX_PENDING_BLOCK_BYTES);
    spawn_with_cap(dir, config, stats, cap, watch)
}

/// [`spawn`] with another cap on block images waiting for the disk (tests: a small one).
pub(super) fn spawn_with_cap(
    dir: DataDir,
    config: &PersistConfig,
    stats: Arc<StorageStats>,
    max_pending_block_bytes: u64,
    watch: &Arc<crate::shared::watch::Watch>,
) -> io::Result<(Disk, JoinHandle<()>)> {
    let (jobs, rx) = crossbeam_channel::bounded(QUEUE);
    let compacting = Arc::new(AtomicBool::new(false));
    let on_disk = dir.disk_bytes();
    stats.update(|c| c.disk_bytes = on_disk);
    let writer = DiskWriter {
        deferred: VecDeque::new(),
        compacting: Arc::clone(&compacting),
        max_pending_block_bytes,
        last_export_bytes: (0, 0),
        dir,
        fsync: config.fsync,
        retention: crate::shared::timestamp::duration_micros(config.retention),
        stats: Arc::clone(&stats),
        segment: None,
        last_sync: Instant::now(),
        pending: VecDeque::new(),
        checkpoint: None,
        buf: Vec::new(),
        error_log: LogThrottle::new(Duration::from_secs(10)),
        segment_bytes: test_knob("FABRIC_TEST_WAL_SEGMENT").unwrap_or(SEGMENT_BYTES),
        append_delay: Duration::from_millis(test_knob("FABRIC_TEST_WAL_APPEND_MS").unwrap_or(0)),
    };
    // Vital: exported blocks in its queue would vanish with it; a panic stops the process
    // (what was not written is still in the WAL, or in memory and replayed from the WAL).
    let handle = watch.spawn_vital("persist", move || writer.run(rx))?;
    Ok((
        Disk {
            jobs,
            compacting,
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
    /// Its share of `block_bytes_pending`.
    counted: u64,
}

/// The newest export's checkpoint, written once every block file before it is durable.
struct PendingCheckpoint {
    /// `None`: no block was left outside block files, so no file is needed (older
    /// checkpoints are deleted all the same).
    image: Option<Vec<u8>>,
    /// Sequence number of the first WAL segment opened after the export: the segments
    /// before it hold only rows that are in block files or in this checkpoint.
    wal_cut: u64,
    /// Its share of `block_bytes_pending`.
    counted: u64,
}

struct DiskWriter {
    /// Jobs taken from the queue while an export let WAL rows in, handled once it is done.
    /// (Only rows must keep their order; no other job that can arrive meanwhile cares.)
    deferred: VecDeque<DiskJob>,
    /// Set by [`Disk::compact`], cleared once the export is taken: one compaction at a time.
    compacting: Arc<AtomicBool>,
    max_pending_block_bytes: u64,
    /// Image sizes of the last export (the room the next one starts with).
    last_export_bytes: (usize, usize),
    dir: DataDir,
    fsync: FsyncPolicy,
    retention: Micros,
    stats: Arc<StorageStats>,
    segment: Option<OpenSegment>,
    last_sync: Instant,
    pending: VecDeque<PendingFile>,
    /// Replaced by a newer export's while it waits: only the newest is ever needed.
    checkpoint: Option<PendingCheckpoint>,
    buf: Vec<u8>,
    error_log: LogThrottle,
    /// A segment this large is closed and the next record starts a new one.
    segment_bytes: u64,
    /// Added to every WAL append: a disk slower than ingest, for tests (`test_knob`).
    append_delay: Duration,
}

impl DiskWriter {
    fn run(mut self, jobs: Receiver<DiskJob>) {
        let tick = match self.fsync {
            FsyncPolicy::Interval(every) => every.min(Duration::from_secs(1)),
            _ => Duration::from_secs(1),
        };
        loop {
            crate::shared::watch::injected_panic_point();
            let job = match self.deferred.pop_front() {
                Some(job) => Ok(job),
                None => jobs.recv_timeout(tick),
            };
            match job {
                Ok(DiskJob::Rows { feed, rows }) => self.append(&feed, &rows),
                Ok(DiskJob::PollDone) => {
                    if self.fsync == FsyncPolicy::EveryBatch {
                        self.sync_segment();
                    }
                }
                Ok(DiskJob::Compact { store, now }) => self.compact(&store, now, &jobs, &mut || {}),
                #[cfg(test)]
                Ok(DiskJob::CompactWith {
                    store,
                    now,
                    mut between,
                }) => self.compact(&store, now, &jobs, &mut *between),
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
        if !self.pending.is_empty() || self.checkpoint.is_some() {
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

    /// A write succeeded: storage is healthy again once nothing waits for the disk.
    fn writes_work_again(&mut self) {
        if self.pending.is_empty() && self.checkpoint.is_none() && self.stats.writes_work() {
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
        if !self.append_delay.is_zero() {
            std::thread::sleep(self.append_delay);
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        wal::encode_rows(feed, rows, &mut buf);
        let written = self.open_segment().and_then(|segment| {
            segment.file.write_all(&buf)?;
            segment.tracked.bytes += buf.len() as u64;
            segment.dirty = true;
            Ok(segment.tracked.bytes)
        });
        self.buf = buf;
        match written {
            Ok(size) => {
                let bytes = self.buf.len() as u64;
                let logged = rows.len() as u64;
                self.stats.update(|c| {
                    c.wal_records += 1;
                    c.wal_rows += logged;
                    c.wal_bytes += bytes;
                    c.disk_bytes += bytes;
                });
                self.writes_work_again();
                if size >= self.segment_bytes {
                    self.close_segment();
                }
            }
            Err(e) => {
                let lost = rows.len() as u64;
                self.stats.update(|c| c.rows_not_logged += lost);
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
                self.stats.update(|c| c.wal_fsyncs += 1);
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

    /// The cut: rows logged from now on go to a new segment; the sequence number the
    /// segments before the cut are below. Jobs arrive in the order the store thread sent
    /// them, and it logs rows after storing them, so every row in those segments is in the
    /// store before an export that starts after the cut.
    fn cut(&mut self) -> u64 {
        self.close_segment();
        self.dir.next_seq
    }

    /// Cuts the WAL, exports from `store` (writing the WAL rows that arrive between chunks:
    /// they follow the cut), and takes the export.
    fn compact(
        &mut self,
        store: &StoreHandle,
        now: Micros,
        jobs: &Receiver<DiskJob>,
        between: &mut dyn FnMut(),
    ) {
        let wal_cut = self.cut();
        let pending = self.stats.update(|c| c.block_bytes_pending);
        let budget = usize::try_from(self.max_pending_block_bytes.saturating_sub(pending))
            .unwrap_or(usize::MAX);
        let (sealed_room, checkpoint_room) = self.last_export_bytes;
        // Generous: an image this large is mapped on its own, and pages of it never written
        // are never touched, so the spare room costs address space, not memory.
        let room = Export::with_room(sealed_room * 3 / 2, checkpoint_room * 5 / 4);
        let (export, timing) = store.export_within(now, budget, room, &mut || {
            between();
            self.take_rows(jobs);
        });
        self.last_export_bytes = (
            export.sealed.max_image_bytes(),
            export.checkpoint.max_image_bytes(),
        );
        let size = |w: &crate::server::store::file::BlockFileWriter| {
            if w.is_empty() {
                0
            } else {
                w.max_image_bytes() as u64
            }
        };
        let counted = (size(&export.sealed), size(&export.checkpoint));
        self.stats.update(|c| {
            c.block_bytes_pending += counted.0;
            c.checkpoint_bytes_pending += counted.1;
            c.exports += 1;
            c.last_export_ms = timing.total.as_millis() as u64;
            c.last_export_longest_hold_ms = timing.longest_hold.as_millis() as u64;
        });
        // Counted in `block_bytes_pending` now: the store thread may ask for the next one.
        self.compacting.store(false, Ordering::Release);
        self.take_export(export, counted, wal_cut);
    }

    /// Writes the WAL rows waiting in the queue (they follow the cut); other jobs wait in
    /// `deferred` for the export to end. Never stops at one: rows arriving during a long
    /// export must not fill the queue (the store thread would drop them from the WAL). But
    /// only the jobs queued when called: on a disk slower than ingest the queue is never
    /// empty, and an export that waited for it to be would never end (no block file, the
    /// WAL never trimmed, the disk filling).
    fn take_rows(&mut self, jobs: &Receiver<DiskJob>) {
        for _ in 0..jobs.len() {
            let Ok(job) = jobs.try_recv() else { break };
            match job {
                DiskJob::Rows { feed, rows } => self.append(&feed, &rows),
                DiskJob::PollDone => {
                    if self.fsync == FsyncPolicy::EveryBatch {
                        self.sync_segment();
                    }
                }
                // `Disk::compact` sends none while one runs; one sent anyway asks for what
                // this export is doing, and the next interval's gets the rest.
                DiskJob::Compact { .. } => {}
                #[cfg(test)]
                DiskJob::CompactWith { .. } => {}
                #[cfg(test)]
                job @ DiskJob::Barrier(_) => self.deferred.push_back(job),
            }
        }
        if let FsyncPolicy::Interval(every) = self.fsync {
            if self.last_sync.elapsed() >= every {
                self.sync_segment();
            }
        }
    }

    fn take_export(&mut self, export: Export, counted: (u64, u64), wal_cut: u64) {
        let Export { sealed, checkpoint } = export;
        if !sealed.is_empty() {
            // Never dropped, however long the disk fails: the store stops exporting at the
            // cap instead (`Disk::can_take_blocks`), so block files stay a gapless prefix of
            // every switch's history and the checkpoint (or the WAL) its continuation.
            self.pending.push_back(PendingFile {
                max_ts: sealed.max_last_ts(),
                blocks: sealed.blocks(),
                samples: sealed.samples(),
                image: sealed.finish(),
                counted: counted.0,
            });
        }
        let image = (!checkpoint.is_empty()).then(|| checkpoint.finish());
        let superseded = self.checkpoint.replace(PendingCheckpoint {
            image,
            wal_cut,
            counted: counted.1,
        });
        if let Some(old) = superseded {
            self.stats.update(|c| {
                c.checkpoint_bytes_pending = c.checkpoint_bytes_pending.saturating_sub(old.counted)
            });
        }
        self.write_pending();
    }

    /// Writes queued block files in order, then the checkpoint; once that is durable, the
    /// WAL before its cut and every older checkpoint go.
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
                    self.stats.update(|c| {
                        c.block_bytes_pending = c.block_bytes_pending.saturating_sub(done.counted);
                        c.block_files_written += 1;
                        c.blocks_written += done.blocks;
                        c.samples_compacted += done.samples;
                        c.block_bytes_written += bytes;
                        c.disk_bytes += bytes;
                    });
                    self.dir.block_files.push(TrackedFile {
                        seq,
                        path,
                        bytes,
                        max_ts: done.max_ts,
                    });
                    self.writes_work_again();
                }
                Err(e) => {
                    self.fail(format!("cannot write block file {}: {e}", path.display()));
                    break;
                }
            }
        }
        // Only once every exported block is durable: the checkpoint continues the block
        // files, it does not replace them.
        if self.pending.is_empty() {
            self.write_checkpoint();
        }
        let waiting = self.pending.len() as u64;
        self.stats.update(|c| c.block_files_pending = waiting);
    }

    fn write_checkpoint(&mut self) {
        let Some(next) = self.checkpoint.as_ref() else {
            return;
        };
        let mut written = None;
        if let Some(image) = &next.image {
            let seq = self.dir.next_seq;
            let path = numbered(&self.dir.blocks_dir, seq, CHECKPOINT_EXT);
            if let Err(e) = write_atomically(&self.dir.blocks_dir, &path, image) {
                self.fail(format!("cannot write checkpoint {}: {e}", path.display()));
                return;
            }
            self.dir.next_seq += 1;
            written = Some(TrackedFile {
                seq,
                path,
                bytes: image.len() as u64,
                max_ts: None,
            });
        }
        let Some(done) = self.checkpoint.take() else {
            return;
        };
        let bytes = written.as_ref().map_or(0, |f| f.bytes);
        self.stats.update(|c| {
            c.checkpoint_bytes_pending = c.checkpoint_bytes_pending.saturating_sub(done.counted);
            c.checkpoints_written += u64::from(written.is_some());
            c.checkpoint_bytes_written += bytes;
            c.disk_bytes += bytes;
        });
        let stats = Arc::clone(&self.stats);
        self.dir
            .checkpoints
            .retain(|old| !delete_tracked(old, &stats, |_| {}));
        self.dir.checkpoints.extend(written);
        self.truncate_wal(done.wal_cut);
        self.writes_work_again();
    }

    /// Deletes the closed segments before `wal_cut`, once the block files and the checkpoint
    /// of the export that made the cut are durable.
    ///
    /// The rule: the WAL is never trimmed past a row that is not in a durable block file or
    /// checkpoint. Every row stored before an export is, once its files are durable, in a
    /// block file (sealed and exported, now or before) or in its checkpoint (every other
    /// block); rows stored after it are in segments from the cut on.
    fn truncate_wal(&mut self, wal_cut: u64) {
        let stats = Arc::clone(&self.stats);
        self.dir.segments.retain(|segment| {
            let covered = segment.seq < wal_cut;
            !(covered && delete_tracked(segment, &stats, |c| c.wal_segments_deleted += 1))
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
            !delete_tracked(file, &stats, |c| c.block_files_deleted += 1)
        });
    }
}

/// Deletes a file the persist thread tracks; on success counts it with `count` and takes its
/// bytes off the disk usage. Whether it is gone.
fn delete_tracked(
    file: &TrackedFile,
    stats: &StorageStats,
    count: impl FnOnce(&mut StorageCounters),
) -> bool {
    if !remove(&file.path) {
        return false;
    }
    stats.update(|c| {
        count(c);
        c.disk_bytes = c.disk_bytes.saturating_sub(file.bytes);
    });
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
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
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
