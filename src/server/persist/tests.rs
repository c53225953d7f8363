use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::dir::list_numbered;
use super::writer::{spawn_with_cap, DiskJob};
use super::*;
use crate::server::store::{BlockLimits, StoreHandle};
use crate::shared::feed::FeedBatch;
use crate::shared::timestamp::{self, Micros};

const S: i64 = crate::shared::timestamp::MICROS_PER_SEC;

/// A scratch data directory, removed afterwards.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let path =
            std::env::temp_dir().join(format!("fabric-persist-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        Scratch(path)
    }

    fn count(&self, sub: &str, ext: &str) -> usize {
        list_numbered(&self.0.join(sub), ext).map_or(0, |files| files.len())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn config(dir: &Path, retention: Duration) -> PersistConfig {
    PersistConfig {
        data_dir: dir.to_path_buf(),
        fsync: FsyncPolicy::EveryBatch,
        compaction_interval: Duration::from_secs(60),
        retention,
    }
}

/// `seconds` rows of two switches ending `ends_ago` before now, one poll (batch) per second.
fn polls(seconds: i64, ends_ago: i64) -> Vec<FeedBatch> {
    let start = timestamp::now_micros() - ends_ago - seconds * S;
    (0..seconds)
        .map(|t| {
            let mut b = FeedBatch::with_metrics(&["bandwidth", "latency", "errors"]);
            for s in 0..2 {
                b.push_row(&format!("sw{s}"), start + t * S, &[t as f64, 0.5, 1.0]);
            }
            b
        })
        .collect()
}

/// Runs `batches` through a store and the persist thread as the store thread would,
/// compacting after every `compact_every` polls; returns the store and the storage stats.
fn run(
    dir: &Path,
    retention: Duration,
    batches: &[FeedBatch],
    compact_every: usize,
) -> (StoreHandle, Arc<StorageStats>) {
    let config = config(dir, retention);
    let mut data_dir = DataDir::open(dir).expect("open");
    let mut store = Store::new(BlockLimits::fixed(4096, 10 * S));
    data_dir.recover(&mut store, i64::MIN).expect("recover");
    let handle = StoreHandle::new(store);
    let stats = Arc::new(StorageStats::new(&config));
    let (disk, thread) = spawn(
        data_dir,
        &config,
        Arc::clone(&stats),
        &crate::shared::watch::Watch::new(|| {}),
    )
    .expect("spawn");
    let wait_for_room = || {
        while !disk.has_room() {
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    for (i, batch) in batches.iter().enumerate() {
        let outcome = handle.apply(batch);
        wait_for_room();
        disk.log_rows(Arc::new(batch.clone()), outcome.accepted_rows);
        wait_for_room();
        disk.poll_done();
        if i % compact_every == compact_every - 1 {
            wait_for_room();
            assert!(disk.compact(&handle, batch.timestamp(0)), "queued");
            // Done before the next poll, so what each export holds does not depend on how
            // fast the persist thread is (`compactions_beside_ingest_lose_no_row` races them).
            let (done, handled) = crossbeam_channel::bounded(1);
            wait_for_room();
            disk.jobs
                .send(DiskJob::Barrier(done))
                .expect("persist thread");
            handled.recv().expect("barrier");
        }
    }
    drop(disk);
    thread.join().expect("persist thread");
    (handle, stats)
}

#[test]
fn the_wal_is_trimmed_behind_durable_block_files_and_checkpoints() {
    let dir = Scratch::new("trim");
    let batches = polls(100, 0);
    let (_, stats) = run(&dir.0, Duration::from_secs(3600), &batches, 20);
    let report = stats.report();
    assert_eq!(report.counters.rows_not_logged, 0);
    assert_eq!(report.counters.wal_rows, 200, "two switches, 100 polls");
    assert_eq!(
        report.counters.wal_fsyncs, 100,
        "every-batch: one fsync per poll"
    );
    assert!(report.counters.block_files_written >= 4, "{report:?}");
    // Compaction cut a segment every 20 polls; each went once the block file and the
    // checkpoint of the export after it were durable, open blocks or not.
    assert_eq!(report.counters.wal_segments_deleted, 5, "{report:?}");
    assert_eq!(dir.count("wal", "wal"), 0);
    assert_eq!(report.counters.checkpoints_written, 5, "{report:?}");
    assert_eq!(
        dir.count("blocks", "ckpt"),
        1,
        "older checkpoints are deleted"
    );
    // And what is left restores everything.
    let mut restored = Store::new(BlockLimits::fixed(4096, 10 * S));
    let mut data_dir = DataDir::open(&dir.0).expect("reopen");
    let recovery = data_dir.recover(&mut restored, i64::MIN).expect("recover");
    assert_eq!(restored.retained_rows(), 200, "{recovery:?}");
    assert_holds_every_row(&restored, &batches);
    assert_eq!(recovery.block_files_quarantined + recovery.wal_tails_cut, 0);
    assert_eq!(recovery.checkpoints_loaded, 1);
    assert!(recovery.checkpoint_rows_replayed > 0, "{recovery:?}");
}

#[test]
fn retention_deletes_whole_block_files() {
    let dir = Scratch::new("retention");
    // 60 s of polls ending 2 minutes ago, under a 90 s retention: the first files hold only
    // expired rows, the last ones rows younger than 90 s.
    let old = polls(60, 60 * S);
    let (_, stats) = run(&dir.0, Duration::from_secs(90), &old, 10);
    let report = stats.report();
    assert!(report.counters.block_files_written >= 5, "{report:?}");
    assert!(report.counters.block_files_deleted >= 2, "{report:?}");
    assert!(
        report.counters.block_files_deleted < report.counters.block_files_written,
        "{report:?}"
    );
    assert_eq!(
        dir.count("blocks", "blk") as u64,
        report.counters.block_files_written - report.counters.block_files_deleted
    );
}

#[test]
fn leftover_temp_files_are_removed_and_the_lock_is_exclusive() {
    let dir = Scratch::new("lock");
    let first = DataDir::open(&dir.0).expect("open");
    fs::write(
        dir.0.join("blocks/0000000000000009.blk.tmp"),
        b"half written",
    )
    .expect("tmp");
    match DataDir::open(&dir.0) {
        Err(DataDirError::Locked { holder, .. }) => {
            assert_eq!(holder, format!("pid {}", std::process::id()))
        }
        other => panic!("second open: {other:?}"),
    }
    drop(first);
    let _again = DataDir::open(&dir.0).expect("the lock goes with the holder");
    assert!(!dir.0.join("blocks/0000000000000009.blk.tmp").exists());
}

/// A store and a persist thread driven as the store thread drives them, step by step.
struct Rig {
    handle: StoreHandle,
    disk: Disk,
    thread: JoinHandle<()>,
    stats: Arc<StorageStats>,
}

/// Blocks of at most 4 rows: every compaction has sealed blocks to export.
const SMALL_BLOCKS: BlockLimits = BlockLimits::fixed(4, 10 * S);

impl Rig {
    /// Recovers `dir` into a new store, as a starting server does, and starts a persist
    /// thread whose block images may hold `cap` bytes while they wait for the disk.
    fn start(dir: &Path, cap: u64) -> Rig {
        let config = PersistConfig {
            fsync: FsyncPolicy::Never,
            ..config(dir, Duration::from_secs(3600))
        };
        let mut data_dir = DataDir::open(dir).expect("open");
        let mut store = Store::new(SMALL_BLOCKS);
        data_dir.recover(&mut store, i64::MIN).expect("recover");
        let stats = Arc::new(StorageStats::new(&config));
        let (disk, thread) = spawn_with_cap(
            data_dir,
            &config,
            Arc::clone(&stats),
            cap,
            &crate::shared::watch::Watch::new(|| {}),
        )
        .expect("spawn");
        Rig {
            handle: StoreHandle::new(store),
            disk,
            thread,
            stats,
        }
    }

    fn wait_for_room(&self) {
        while !self.disk.has_room() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn poll(&self, batch: &FeedBatch) {
        let outcome = self.handle.apply(batch);
        self.wait_for_room();
        self.disk
            .log_rows(Arc::new(batch.clone()), outcome.accepted_rows);
        self.wait_for_room();
        self.disk.poll_done();
    }

    /// The store thread's compaction at `now`; whether it exported.
    fn compact(&self, now: Micros) -> bool {
        self.wait_for_room();
        crate::server::ingest::compact(&self.handle, &self.disk, now)
    }

    /// Returns once the persist thread has handled every job sent so far.
    fn barrier(&self) {
        let (done, handled) = crossbeam_channel::bounded(1);
        self.wait_for_room();
        self.disk
            .jobs
            .send(DiskJob::Barrier(done))
            .expect("persist thread");
        handled.recv().expect("barrier");
    }

    fn finish(self) -> StorageReport {
        drop(self.disk);
        self.thread.join().expect("persist thread");
        self.stats.report()
    }
}

/// Makes `blocks/` unwritable (a file in its place: every block-file write fails with
/// ENOTDIR, even for root) while the WAL goes on; `restore` puts it back.
struct BrokenBlocks(PathBuf);

impl BrokenBlocks {
    fn new(dir: &Path) -> BrokenBlocks {
        let blocks = dir.join("blocks");
        fs::rename(&blocks, dir.join("blocks.down")).expect("move blocks/ away");
        fs::write(&blocks, b"not a directory").expect("file in its place");
        BrokenBlocks(dir.to_path_buf())
    }

    fn restore(self) {
        fs::remove_file(self.0.join("blocks")).expect("remove the file");
        fs::rename(self.0.join("blocks.down"), self.0.join("blocks")).expect("move back");
    }
}

/// `seconds` polls of `switches` switches (ids `{prefix}{s}`), one a second from `start`,
/// with values that differ per switch and row.
fn fleet(prefix: &str, switches: usize, start: Micros, seconds: i64) -> Vec<FeedBatch> {
    (0..seconds)
        .map(|t| {
            let mut b = FeedBatch::with_metrics(&["bandwidth", "latency", "errors"]);
            for s in 0..switches {
                let k = t as usize * 7 + s * 13;
                b.push_row(
                    &format!("{prefix}{s}"),
                    start + t * S,
                    &[
                        (k % 101) as f64 + 0.25,
                        (k % 17) as f64 / 8.0,
                        (k % 3) as f64,
                    ],
                );
            }
            b
        })
        .collect()
}

/// A restart on `dir` (as a server's) holds every row of `batches`.
fn restart_holds_every_row(dir: &Path, batches: &[FeedBatch]) {
    let again = Rig::start(dir, MAX_PENDING_BLOCK_BYTES);
    assert_holds_every_row(&again.handle.read(), batches);
    again.finish();
}

/// Every row of `batches`, per switch and metric, as `store` must hold them.
fn assert_holds_every_row(store: &Store, batches: &[FeedBatch]) {
    type Bits = (bool, u64);
    let mut expected: std::collections::BTreeMap<(String, String), Vec<(Micros, Bits)>> =
        std::collections::BTreeMap::new();
    for b in batches {
        for row in 0..b.len() {
            for (metric, value) in b.metrics.iter().zip(b.row_values(row)) {
                let Some(value) = value else { continue };
                expected
                    .entry((b.switch_id(row).to_string(), metric.clone()))
                    .or_default()
                    .push((b.timestamp(row), value.bits()));
            }
        }
    }
    for ((switch, metric), rows) in &expected {
        let mut found = Vec::new();
        if let (Some(s), Some(m)) = (store.switch(switch), store.metrics().id(metric)) {
            store.history(s, m, i64::MIN, i64::MAX, &mut |sample| {
                found.push((sample.timestamp, sample.value.bits()));
                true
            });
        }
        assert_eq!(
            found.len(),
            rows.len(),
            "{switch} {metric}: {} of {} rows restored",
            found.len(),
            rows.len()
        );
        assert_eq!(&found, rows, "{switch} {metric}: history differs");
    }
}

#[test]
fn a_block_file_outage_past_the_cap_loses_no_history_across_a_restart() {
    let dir = Scratch::new("outage");
    // A cap of about three compactions' block files (~2.5 KiB each): the outage passes it.
    let cap = 8 << 10;
    let batches = fleet("sw", 8, timestamp::now_micros() - 200 * S, 150);
    let rig = Rig::start(&dir.0, cap);
    let mut broken = None;
    let mut deferred = 0;
    let mut deleted_during_outage = 0;
    for (i, batch) in batches.iter().enumerate() {
        if i == 40 {
            rig.barrier();
            broken = Some(BrokenBlocks::new(&dir.0));
        }
        if i == 110 {
            // Every export of the outage has been tried (and failed) before the disk heals.
            rig.barrier();
            let failing = rig.stats.report();
            assert!(failing.counters.write_errors > 0, "{failing:?}");
            assert!(failing.counters.block_files_pending > 0, "{failing:?}");
            deleted_during_outage = failing.counters.wal_segments_deleted;
            broken.take().expect("broken").restore();
        }
        rig.poll(batch);
        // A compaction every 5 s. The barrier stands for the minute between two real ones,
        // in which the persist thread catches up.
        if i % 5 == 4 {
            rig.barrier();
            if !rig.compact(batch.timestamp(0)) {
                deferred += 1;
            }
        }
    }
    rig.barrier();
    let held = rig.stats.counters();
    let report = rig.finish();

    // The restart serves every row ever ingested (all are within retention).
    let again = Rig::start(&dir.0, cap);
    assert_eq!(again.handle.read().retained_rows(), 150 * 8);
    assert_holds_every_row(&again.handle.read(), &batches);
    again.finish();

    // The cap was reached (compactions were put off), the backlog then reached the disk, and
    // the WAL was trimmed again: it does not keep growing once the disk is healthy.
    assert!(deferred > 0, "the outage never reached the cap: {report:?}");
    assert_eq!(report.counters.block_files_pending, 0, "{report:?}");
    assert_eq!(
        held.block_bytes_pending, 0,
        "block bytes still counted as waiting"
    );
    assert_eq!(
        held.checkpoint_bytes_pending, 0,
        "checkpoint still counted as waiting"
    );
    assert!(
        report.counters.wal_segments_deleted > deleted_during_outage,
        "{report:?}"
    );
    assert!(
        dir.count("wal", "wal") <= 4,
        "{} segments",
        dir.count("wal", "wal")
    );
}

/// A checkpoint that cannot be written waits (the next export's replaces it) without
/// counting against the cap on waiting block files: alone it may be near the cap (~270 MB at a
/// million switches), and compaction must go on exporting sealed blocks behind it.
#[test]
fn a_waiting_checkpoint_does_not_put_compaction_off() {
    let dir = Scratch::new("checkpoint-cap");
    let batches = fleet("sw", 8, timestamp::now_micros() - 100 * S, 8);
    let cap = 256;
    let rig = Rig::start(&dir.0, cap);
    let broken = BrokenBlocks::new(&dir.0);
    // Three rows per switch: every block is open, so the export is a checkpoint alone.
    for batch in &batches[..3] {
        rig.poll(batch);
    }
    assert!(rig.compact(batches[2].timestamp(0)));
    rig.barrier();
    let waiting = rig.stats.report();
    assert_eq!(waiting.status, "failing", "{waiting:?}");
    assert_eq!(waiting.counters.block_files_pending, 0, "{waiting:?}");
    assert_eq!(waiting.counters.block_bytes_pending, 0, "{waiting:?}");
    assert!(
        waiting.counters.checkpoint_bytes_pending > cap,
        "a checkpoint larger than the cap waits: {waiting:?}"
    );

    // The next rows seal every block: they are exported although the checkpoint waits.
    for batch in &batches[3..] {
        rig.poll(batch);
    }
    assert!(
        rig.compact(batches[7].timestamp(0)),
        "compaction put off by a waiting checkpoint"
    );
    rig.barrier();
    let waiting = rig.stats.counters();
    assert_eq!(waiting.block_files_pending, 1, "{waiting:?}");
    assert!(waiting.block_bytes_pending >= cap, "{waiting:?}");
    assert!(waiting.checkpoint_bytes_pending > 0, "{waiting:?}");
    // Now the block file waiting is past the cap: compaction waits for the disk.
    assert!(!rig.compact(batches[7].timestamp(0)));

    broken.restore();
    rig.barrier();
    let report = rig.finish();
    assert_eq!(report.status, "ok", "{report:?}");
    assert_eq!(report.counters.block_files_written, 1, "{report:?}");
    assert_eq!(report.counters.block_bytes_pending, 0, "{report:?}");
    assert_eq!(report.counters.checkpoint_bytes_pending, 0, "{report:?}");
    restart_holds_every_row(&dir.0, &batches);
}

#[test]
fn rows_logged_after_a_waiting_export_are_not_trimmed_with_it() {
    let dir = Scratch::new("latecomer");
    let base = timestamp::now_micros() - 300 * S;
    let early = fleet("a", 1, base + 100 * S, 30);
    let rig = Rig::start(&dir.0, MAX_PENDING_BLOCK_BYTES);
    for batch in &early {
        rig.poll(batch);
    }
    let broken = BrokenBlocks::new(&dir.0);
    // Exports a's sealed blocks; the WAL must keep rows from a's open block on. The file
    // cannot be written yet.
    assert!(rig.compact(base + 129 * S));
    // One compaction at a time: the next is taken once this one's export is done.
    rig.barrier();
    // A switch that starts late, with rows older than that horizon, logged after the cut.
    let late = fleet("c", 1, base, 3);
    for batch in &late {
        rig.poll(batch);
    }
    assert!(rig.compact(base + 2 * S));
    rig.barrier();
    assert_eq!(rig.stats.report().counters.block_files_pending, 1);
    broken.restore();
    // The waiting file lands now (and the WAL is trimmed behind it).
    rig.barrier();
    let report = rig.finish();
    assert_eq!(report.counters.block_files_pending, 0, "{report:?}");

    restart_holds_every_row(&dir.0, &[early, late].concat());
}

#[test]
fn rows_stored_during_an_export_stay_in_the_wal_or_the_checkpoint() {
    // An export of 36 chunks (256 switches each); after its first chunk, a poll of every
    // switch is stored and logged (as the store thread would, not waiting for the
    // compaction). The rows of the switches already exported are in no checkpoint: the WAL
    // must keep them. Then, over the next chunks, 120 more small polls: more than the
    // persist thread's queue holds, with a job of another kind (a barrier) queued in front
    // of them, so they must be written between chunks or be dropped from the WAL.
    let dir = Scratch::new("beside");
    let base = timestamp::now_micros() - 300 * S;
    let batches = fleet("s", 9_000, base, 6);
    let (before, during) = batches.split_at(5);
    let trickle = fleet("t", 1, base + 10 * S, 120);
    let rig = Rig::start(&dir.0, MAX_PENDING_BLOCK_BYTES);
    for batch in before {
        rig.poll(batch);
    }
    let (handle, disk) = (rig.handle.clone(), rig.disk.clone());
    let mut late: Vec<FeedBatch> = during.to_vec();
    late.extend(trickle.iter().cloned());
    let mut late = late.into_iter();
    let mut calls = 0;
    rig.wait_for_room();
    rig.disk
        .jobs
        .send(DiskJob::CompactWith {
            store: rig.handle.clone(),
            now: before[4].timestamp(0),
            between: Box::new(move || {
                calls += 1;
                // The whole poll after the first chunk, then 40 small ones per chunk.
                let n = if calls == 1 { 1 } else { 40 };
                for batch in late.by_ref().take(n) {
                    let outcome = handle.apply(&batch);
                    disk.log_rows(Arc::new(batch), outcome.accepted_rows);
                }
            }),
        })
        .expect("persist thread");
    rig.barrier();
    let report = rig.finish();
    assert_eq!(report.counters.rows_not_logged, 0, "{report:?}");
    assert_eq!(report.counters.exports, 1, "{report:?}");
    assert!(report.counters.wal_segments_deleted >= 1, "{report:?}");
    restart_holds_every_row(&dir.0, &[batches, trickle].concat());
}

#[test]
fn compactions_beside_ingest_lose_no_row() {
    // Enough switches for an export of several chunks, polled while the persist thread
    // exports (the store thread never waits for a compaction): rows stored between two
    // chunks are in the WAL after the cut, or in the checkpoint, or both.
    let dir = Scratch::new("beside-race");
    let base = timestamp::now_micros() - 100 * S;
    let batches = fleet("s", 9_000, base, 24);
    let rig = Rig::start(&dir.0, MAX_PENDING_BLOCK_BYTES);
    let mut due = false;
    for (i, batch) in batches.iter().enumerate() {
        rig.poll(batch);
        // As the store thread: due every 4 polls, asked until one is taken (one at a time).
        due |= i % 4 == 3;
        if due && rig.compact(batch.timestamp(0)) {
            due = false;
        }
    }
    let report = rig.finish();
    assert_eq!(report.counters.rows_not_logged, 0, "{report:?}");
    // How many exports fit depends on the machine (one at a time; a debug build exports
    // 9k switches in ~0.4 s): what matters is that they ran beside the polls and lost nothing.
    assert!(report.counters.exports >= 1, "{report:?}");
    assert!(report.counters.wal_segments_deleted >= 1, "{report:?}");
    restart_holds_every_row(&dir.0, &batches);
}

#[test]
fn one_compaction_at_a_time() {
    let dir = Scratch::new("one-at-a-time");
    let base = timestamp::now_micros() - 100 * S;
    let rig = Rig::start(&dir.0, MAX_PENDING_BLOCK_BYTES);
    for batch in &fleet("s", 3, base, 5) {
        rig.poll(batch);
    }
    // Readers hold the store meanwhile, so the export cannot start (and end) in between.
    let reading = rig.handle.read();
    assert!(rig.compact(base + 5 * S));
    // Queued or running: a second is refused (the store thread asks again later).
    assert!(!rig.compact(base + 5 * S));
    drop(reading);
    rig.barrier();
    assert!(rig.compact(base + 6 * S), "taken once the first is done");
    rig.barrier();
    assert_eq!(rig.finish().counters.exports, 2);
}
