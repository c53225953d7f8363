use super::*;
use crate::store::{BlockLimits, StoreHandle};

const S: i64 = crate::timestamp::MICROS_PER_SEC;

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
    let mut store = Store::new(BlockLimits {
        max_rows: 4096,
        span: 10 * S,
    });
    data_dir.recover(&mut store, i64::MIN).expect("recover");
    let handle = StoreHandle::new(store);
    let stats = Arc::new(StorageStats::new(&config));
    let (disk, thread) = spawn(
        data_dir,
        &config,
        Arc::clone(&stats),
        &crate::watch::Watch::new(|| {}),
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
            let mut writer = BlockFileWriter::default();
            let keep = handle.export_sealed(batch.timestamp(0), &mut writer);
            disk.write_blocks(writer, keep);
        }
    }
    drop(disk);
    thread.join().expect("persist thread");
    (handle, stats)
}

#[test]
fn the_wal_is_trimmed_only_behind_durable_block_files() {
    let dir = Scratch::new("trim");
    let (_, stats) = run(&dir.0, Duration::from_secs(3600), &polls(100, 0), 20);
    let report = stats.report();
    assert_eq!(report.rows_not_logged, 0);
    assert_eq!(report.wal_fsyncs, 100, "every-batch: one fsync per poll");
    assert!(report.block_files_written >= 4, "{report:?}");
    // Compaction cut a segment every 20 polls; the ones wholly behind the open blocks went.
    assert!(report.wal_segments_deleted >= 3, "{report:?}");
    assert_eq!(
        dir.count("wal", "wal") as u64,
        5 - report.wal_segments_deleted
    );
    // And what is left restores everything.
    let mut restored = Store::new(BlockLimits {
        max_rows: 4096,
        span: 10 * S,
    });
    let mut data_dir = DataDir::open(&dir.0).expect("reopen");
    let recovery = data_dir.recover(&mut restored, i64::MIN).expect("recover");
    assert_eq!(restored.retained_rows(), 200, "{recovery:?}");
    assert_eq!(recovery.block_files_quarantined + recovery.wal_tails_cut, 0);
}

#[test]
fn retention_deletes_whole_block_files() {
    let dir = Scratch::new("retention");
    // 60 s of polls ending 2 minutes ago, under a 90 s retention: the first files hold only
    // expired rows, the last ones rows younger than 90 s.
    let old = polls(60, 60 * S);
    let (_, stats) = run(&dir.0, Duration::from_secs(90), &old, 10);
    let report = stats.report();
    assert!(report.block_files_written >= 5, "{report:?}");
    assert!(report.block_files_deleted >= 2, "{report:?}");
    assert!(
        report.block_files_deleted < report.block_files_written,
        "{report:?}"
    );
    assert_eq!(
        dir.count("blocks", "blk") as u64,
        report.block_files_written - report.block_files_deleted
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
