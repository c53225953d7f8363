//! Durable history (`--data-dir`): kill -9 and restart, damaged files set aside, disk errors
//! survived, one server per data directory, a clean shutdown that loses nothing.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fabric_telemetry::shared::timestamp;

use crate::util::{self, FakeFeed, FeedReply, Proc, HEADER};

/// A data directory, removed when the test ends.
struct DataDir(PathBuf);

impl DataDir {
    fn new(name: &str) -> DataDir {
        let path = std::env::temp_dir().join(format!("fabric-data-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        DataDir(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }

    /// Files of `sub` ending in `suffix`, by name (= sequence number).
    fn files(&self, sub: &str, suffix: &str) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(self.0.join(sub))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.to_string_lossy().ends_with(suffix))
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const SWITCHES: usize = 20;
/// Rows per switch in the first answer: 38 s of history, 100 ms apart.
const START_ROWS: usize = 380;

/// A feed holding the whole history of `SWITCHES` switches: rows 100 ms apart from 40 s
/// before it started, `START_ROWS` of them plus one more per request (so time keeps pace with
/// 100 ms polls). Answers 503 while the flag is set.
fn history_feed() -> (FakeFeed, Arc<AtomicBool>) {
    let feed = FakeFeed::start();
    let paused = Arc::new(AtomicBool::new(false));
    let base = timestamp::now_micros() - 40_000_000;
    let flag = Arc::clone(&paused);
    feed.set(move |n| {
        if flag.load(Ordering::SeqCst) {
            return FeedReply::Status(503);
        }
        let mut body = format!("{HEADER}\n");
        for k in 0..START_ROWS + n as usize {
            let ts = timestamp::to_rfc3339(base + k as i64 * 100_000);
            for s in 0..SWITCHES {
                let bandwidth = 50.0 + ((k * 7 + s) % 100) as f64 / 4.0;
                let latency = ((k * 3 + s) % 50) as f64 / 100.0;
                body.push_str(&format!(
                    "sw{s},{bandwidth},{latency},{},{ts}\n",
                    (k + s) % 3
                ));
            }
        }
        FeedReply::Csv(body)
    });
    (feed, paused)
}

/// Retention 80 s (blocks of 10 s), compaction every 200 ms, old rows accepted.
fn durable_server(feed: &str, dir: &DataDir, extra: &[&str]) -> Proc {
    durable_server_with_env(feed, dir, extra, &[])
}

fn durable_server_with_env(
    feed: &str,
    dir: &DataDir,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Proc {
    let mut args = vec![
        "--data-dir",
        dir.path(),
        "--retention",
        "80s",
        "--max-age",
        "10m",
        "--compaction-interval",
        "200ms",
    ];
    args.extend_from_slice(extra);
    util::server_with_env(&[feed], &args, env)
}

fn storage(server: &Proc) -> serde_json::Value {
    util::stats(server)["storage"].clone()
}

fn counter(value: &serde_json::Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("not a counter: {value}"))
}

/// Pauses `feed` (its flag `paused`) and waits until `server` has stored and logged
/// everything it fetched. First the feed must be asked again after the pause: the poller is
/// sequential, so by then every earlier poll has handed all its rows to the store thread.
/// Then the store thread must have applied every poll the poller finished, and the persist
/// thread logged every row accepted. No wait here is a guess of how long threads take: on a
/// loaded machine a poll, the store thread or the persist thread lagged past the 300 ms
/// this once waited for quiet, and a restart served more, or less, than "before".
fn pause(feed: &FakeFeed, paused: &AtomicBool, server: &Proc) {
    paused.store(true, Ordering::SeqCst);
    // Requests counted from here on began after the flag was set.
    let asked = feed.requests();
    util::wait_for("a poll after the pause", Duration::from_secs(10), || {
        (feed.requests() > asked).then_some(())
    });
    util::wait_for(
        "every poll stored and every row logged",
        Duration::from_secs(10),
        || {
            let stats = util::stats(server);
            let source = &stats["ingest"]["sources"][0];
            let finished = counter(&source["polls_ok"]);
            let stored = source["poll_to_queryable_histogram"]
                .as_array()
                .and_then(|buckets| buckets.last())
                .map_or(0, |total| counter(&total[1]));
            let accepted = counter(&stats["ingest"]["rows_accepted"]);
            (stored >= finished && logged(&stats["storage"]) == accepted).then_some(())
        },
    );
}

/// Rows the persist thread is done with: appended to the WAL, or dropped and counted.
fn logged(storage: &serde_json::Value) -> u64 {
    counter(&storage["wal_rows"]) + counter(&storage["rows_not_logged"])
}

/// What a client sees: `/aggregate`, and the full history of every metric of some switches.
fn snapshot(server: &Proc) -> (String, Vec<Vec<serde_json::Value>>) {
    let aggregate = util::get(&server.url("/telemetry/aggregate"));
    assert_eq!(aggregate.status, 200, "{}", aggregate.body);
    let mut histories = Vec::new();
    for s in [0, 7, SWITCHES - 1] {
        for metric in ["bandwidth", "latency", "errors"] {
            let answer = util::get(&server.url(&format!(
                "/telemetry/history?switch_id=sw{s}&metric={metric}"
            )));
            assert_eq!(answer.status, 200, "{}", answer.body);
            let samples = answer.json().as_array().expect("array").clone();
            histories.push(samples);
        }
    }
    (aggregate.body, histories)
}

fn wait_for_block_files(server: &Proc, at_least: u64) {
    util::wait_for("block files", Duration::from_secs(20), || {
        (counter(&storage(server)["block_files_written"]) >= at_least).then_some(())
    });
}

#[test]
fn kill_9_then_restart_serves_everything_that_was_logged() {
    let dir = DataDir::new("kill9");
    let (feed, paused) = history_feed();
    let server = durable_server(&feed.url, &dir, &["--fsync", "every-batch"]);
    wait_for_block_files(&server, 1);

    // Quiet: the state before the kill must come back exactly, from block files and the
    // checkpoint (compactions every 200 ms trimmed the WAL behind them).
    pause(&feed, &paused, &server);
    // Quiet, so /metrics says the same as /stats: every accepted row is in the WAL.
    let logged_rows = counter(&storage(&server)["wal_rows"]);
    let metrics = util::get(&server.url("/metrics")).body;
    for line in [
        format!("fabric_storage_wal_rows_total {logged_rows}"),
        format!("fabric_rows_accepted_total {logged_rows}"),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in {metrics}"
        );
    }
    let before = snapshot(&server);
    drop(server); // SIGKILL
                  // No compaction from here on: what the next polls add is only in the WAL.
    let no_compaction = ["--compaction-interval", "1h"];
    let server = durable_server(&feed.url, &dir, &no_compaction);
    let recovery = storage(&server)["recovery"].clone();
    assert!(counter(&recovery["blocks_loaded"]) > 0, "{recovery}");
    assert!(
        counter(&recovery["checkpoint_rows_replayed"]) > 0,
        "{recovery}"
    );
    let after = snapshot(&server);
    assert_eq!(after.0, before.0, "/aggregate changed across kill -9");
    assert_eq!(after.1, before.1, "/history changed across kill -9");

    // Rows only in the WAL come back too.
    paused.store(false, Ordering::SeqCst);
    let polls = feed.requests();
    util::wait_for("more polls", Duration::from_secs(10), || {
        (feed.requests() >= polls + 10).then_some(())
    });
    pause(&feed, &paused, &server);
    let before = snapshot(&server);
    drop(server);
    let server = durable_server(&feed.url, &dir, &no_compaction);
    let recovery = storage(&server)["recovery"].clone();
    assert!(counter(&recovery["wal_rows_replayed"]) > 0, "{recovery}");
    assert_eq!(snapshot(&server), before, "WAL rows lost across kill -9");
    drop(server);
    let server = durable_server(&feed.url, &dir, &[]);

    // Mid-ingest: killed while polls land; the feed stops at the kill, so whatever the
    // restarted server has came from its data directory. Every row the snapshot saw was
    // logged before the kill (polls went on landing meanwhile): all of them come back.
    paused.store(false, Ordering::SeqCst);
    let polls = feed.requests();
    util::wait_for("more polls", Duration::from_secs(10), || {
        (feed.requests() >= polls + 20).then_some(())
    });
    let before = snapshot(&server);
    let seen = counter(&util::stats(&server)["ingest"]["rows_accepted"]);
    let storage = util::wait_for(
        "the snapshot's rows logged",
        Duration::from_secs(10),
        || {
            let storage = storage(&server);
            (logged(&storage) >= seen).then_some(storage)
        },
    );
    assert_eq!(counter(&storage["rows_not_logged"]), 0, "{storage}");
    paused.store(true, Ordering::SeqCst);
    drop(server);
    let server = durable_server(&feed.url, &dir, &[]);
    let after = snapshot(&server);
    for (old, new) in before.1.iter().zip(&after.1) {
        assert!(
            new.len() >= old.len(),
            "logged rows lost across kill -9: {} -> {}",
            old.len(),
            new.len()
        );
        assert_eq!(
            new[..old.len()],
            old[..],
            "history differs after kill -9 mid-ingest"
        );
    }
}

#[test]
fn a_torn_wal_tail_is_cut_and_a_corrupt_block_file_set_aside() {
    let dir = DataDir::new("damage");
    let (feed, paused) = history_feed();
    let server = durable_server(&feed.url, &dir, &[]);
    wait_for_block_files(&server, 1);
    // Wait until a WAL segment is gone: from then on the rows of the first block file exist
    // nowhere else.
    util::wait_for("WAL truncation", Duration::from_secs(30), || {
        (counter(&storage(&server)["wal_segments_deleted"]) > 0).then_some(())
    });
    drop(server);
    // Some polls with no compaction, so the newest segment holds rows when the server dies.
    let no_compaction = ["--compaction-interval", "1h"];
    let server = durable_server(&feed.url, &dir, &no_compaction);
    let polls = feed.requests();
    util::wait_for("more polls", Duration::from_secs(10), || {
        (feed.requests() >= polls + 5).then_some(())
    });
    pause(&feed, &paused, &server);
    let before = snapshot(&server);
    drop(server);

    // A record cut short by the crash: a header promising more than is there.
    let newest = dir.files("wal", ".wal").pop().expect("a WAL segment");
    let mut torn = std::fs::read(&newest).expect("read segment");
    let good_len = torn.len();
    torn.extend_from_slice(&1000u32.to_le_bytes());
    torn.extend_from_slice(&[7; 14]);
    std::fs::write(&newest, &torn).expect("tear the tail");
    let server = durable_server(&feed.url, &dir, &no_compaction);
    assert_eq!(counter(&storage(&server)["recovery"]["wal_tails_cut"]), 1);
    assert!(
        server.logs().iter().any(|l| l.contains("torn record")),
        "{:?}",
        server.logs()
    );
    assert_eq!(
        std::fs::metadata(&newest).expect("segment").len() as usize,
        good_len
    );
    assert_eq!(
        snapshot(&server),
        before,
        "a torn tail changed what is served"
    );
    drop(server);

    // One flipped byte in the oldest block file: set aside, the rest served, nothing wrong.
    let oldest = dir.files("blocks", ".blk")[0].clone();
    let mut bytes = std::fs::read(&oldest).expect("read block file");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&oldest, &bytes).expect("corrupt block file");
    let server = durable_server(&feed.url, &dir, &[]);
    let recovery = storage(&server)["recovery"].clone();
    assert_eq!(
        counter(&recovery["block_files_quarantined"]),
        1,
        "{recovery}"
    );
    assert!(
        server.logs().iter().any(|l| l.contains("is damaged")),
        "{:?}",
        server.logs()
    );
    assert!(!oldest.exists());
    assert!(PathBuf::from(format!("{}.corrupt", oldest.display())).exists());
    let after = snapshot(&server);
    let mut lost = 0;
    for (old, new) in before.1.iter().zip(&after.1) {
        assert!(
            !new.is_empty(),
            "the rest of the history must still be served"
        );
        for sample in new {
            assert!(
                old.contains(sample),
                "served a sample that was never stored: {sample}"
            );
        }
        lost += old.len() - new.len();
    }
    assert!(lost > 0, "the damaged file's rows cannot have come back");
}

#[test]
fn a_second_server_on_the_same_data_dir_refuses_to_start() {
    let dir = DataDir::new("lock");
    let (feed, _paused) = history_feed();
    let first = durable_server(&feed.url, &dir, &[]);
    util::wait_for_status(&first.url("/telemetry/list?metric=latency"), 200);
    let mut second = Command::new(util::server_bin())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--source",
            &feed.url,
            "--data-dir",
            dir.path(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the second server");
    let status = util::wait_for("the second server to exit", Duration::from_secs(10), || {
        second.try_wait().ok().flatten()
    });
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("in use by another metrics-server"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("pid {}", first.pid())), "{stderr}");
    // The first one is unharmed: still serving, still writing.
    assert_eq!(
        util::get(&first.url("/telemetry/list?metric=latency")).status,
        200
    );
    assert_eq!(storage(&first)["status"], "ok");
}

#[test]
fn sigterm_flushes_and_a_restart_serves_the_same() {
    let dir = DataDir::new("sigterm");
    let (feed, paused) = history_feed();
    let mut server = durable_server(&feed.url, &dir, &["--fsync", "never"]);
    wait_for_block_files(&server, 1);
    pause(&feed, &paused, &server);
    let before = snapshot(&server);
    util::signal(&server, libc::SIGTERM);
    assert_eq!(util::wait_exit(&mut server).code(), Some(0));
    let server = durable_server(&feed.url, &dir, &[]);
    assert_eq!(snapshot(&server), before);
}

/// Sets the file-size limit of a running process (`None`: unlimited).
fn set_file_size_limit(pid: u32, bytes: Option<u64>) {
    let limit = libc::rlimit {
        rlim_cur: bytes.unwrap_or(libc::RLIM_INFINITY),
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: prlimit on a child this test owns, with a valid struct and no old-value pointer.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_FSIZE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

#[test]
fn write_errors_keep_ingest_going_and_writes_resume() {
    let dir = DataDir::new("diskerr");
    let (feed, _paused) = history_feed();
    let server = durable_server(&feed.url, &dir, &[]);
    // Every file the server writes may now hold 4 KiB: WAL appends and block files fail
    // with EFBIG, as they would on a full disk.
    set_file_size_limit(server.pid(), Some(4096));
    let failing = util::wait_for("storage to fail", Duration::from_secs(20), || {
        let storage = storage(&server);
        (storage["status"] == "failing" && counter(&storage["block_files_pending"]) > 0)
            .then_some(storage)
    });
    assert!(counter(&failing["write_errors"]) > 0);
    assert!(
        failing["last_error"]
            .as_str()
            .expect("error")
            .contains("File too large"),
        "{failing}"
    );
    // /healthz names the failing part and nothing more (it is open without a token).
    let health = util::get(&server.url("/healthz"));
    assert_eq!(health.status, 200);
    assert_eq!(
        health.json(),
        serde_json::json!({"status": "failing", "failing": ["storage"]})
    );
    assert!(util::get(&server.url("/metrics"))
        .body
        .contains("fabric_storage_healthy 0"));
    // Ingest and queries go on.
    let accepted = counter(&util::stats(&server)["ingest"]["rows_accepted"]);
    util::wait_for("ingest to go on", Duration::from_secs(10), || {
        (counter(&util::stats(&server)["ingest"]["rows_accepted"]) > accepted).then_some(())
    });
    assert_eq!(util::get(&server.url("/telemetry/aggregate")).status, 200);

    set_file_size_limit(server.pid(), None);
    let written = counter(&failing["block_files_written"]);
    let healthy = util::wait_for("storage to recover", Duration::from_secs(20), || {
        let storage = storage(&server);
        (storage["status"] == "ok" && counter(&storage["block_files_written"]) > written)
            .then_some(storage)
    });
    assert_eq!(counter(&healthy["block_files_pending"]), 0, "{healthy}");
    assert!(util::get(&server.url("/metrics"))
        .body
        .contains("fabric_storage_healthy 1"));
}

/// A real full disk: a 32 KiB tmpfs, grown once the server has noticed. Needs the right to
/// mount (root with CAP_SYS_ADMIN, as in CI): skipped with a note otherwise, a failure under
/// FABRIC_REQUIRE_TOOLS.
#[test]
fn a_full_file_system_is_survived_and_writes_resume_when_it_grows() {
    let dir = DataDir::new("tmpfs");
    std::fs::create_dir_all(&dir.0).expect("mount point");
    let mount = |options: &str| -> Result<(), String> {
        match Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs", dir.path()])
            .output()
        {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
            Err(e) => Err(format!("cannot run mount: {e}")),
        }
    };
    if let Err(why) = mount("size=32k") {
        util::skip_unless_required(&format!(
            "cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {why}; the RLIMIT_FSIZE test covers write errors"
        ));
        return;
    }
    struct Unmount(String);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(dir.path().to_string());
    let (feed, _paused) = history_feed();
    let server = durable_server(&feed.url, &dir, &[]);
    let failing = util::wait_for("the disk to fill", Duration::from_secs(30), || {
        let storage = storage(&server);
        (storage["status"] == "failing").then_some(storage)
    });
    assert!(
        failing["last_error"]
            .as_str()
            .expect("error")
            .contains("No space left"),
        "{failing}"
    );
    assert_eq!(util::get(&server.url("/telemetry/aggregate")).status, 200);
    eprintln!("tmpfs full: {}", failing["last_error"]);
    if let Err(why) = mount("remount,size=64m") {
        panic!("cannot grow the tmpfs: {why}");
    }
    util::wait_for("storage to recover", Duration::from_secs(20), || {
        let storage = storage(&server);
        (storage["status"] == "ok" && counter(&storage["block_files_written"]) > 0).then_some(())
    });
    drop(server);
}

/// A disk slower than ingest (every WAL append takes 150 ms; a poll, one append of new
/// rows, comes every 100 ms): the WAL falls behind, yet compactions go on ending and block
/// files are written. An export once waited between its chunks for the queue of WAL rows
/// to empty, which it never did: no block file, the WAL never trimmed.
#[test]
fn a_disk_slower_than_ingest_still_gets_block_files() {
    let dir = DataDir::new("slow-disk");
    let (feed, _paused) = history_feed();
    let slow_disk = [("FABRIC_TEST_WAL_APPEND_MS", "150")];
    let server = durable_server_with_env(&feed.url, &dir, &[], &slow_disk);
    let started = std::time::Instant::now();
    let (behind, storage) = util::wait_for("block files", Duration::from_secs(30), || {
        let stats = util::stats(&server);
        let storage = stats["storage"].clone();
        let behind = counter(&stats["ingest"]["rows_accepted"]) - logged(&storage);
        (counter(&storage["block_files_written"]) >= 2).then_some((behind, storage))
    });
    eprintln!(
        "after {:?}: {behind} rows waiting for the WAL, {storage}",
        started.elapsed()
    );
    assert!(behind > 0, "the WAL kept up: no slow disk");
    assert!(counter(&storage["exports"]) >= 2, "{storage}");
    assert_eq!(storage["status"], "ok", "{storage}");
}

/// Issue 10: a block-file outage longer than the cap on waiting block files (lowered to 4 KiB
/// here) loses no history: nothing waiting is dropped, the WAL is not trimmed past rows
/// no block file holds, and after the disk comes back and a kill -9, every row is served.
#[test]
fn a_block_file_outage_past_the_cap_loses_no_history() {
    let dir = DataDir::new("outage");
    let (feed, paused) = history_feed();
    // A 4 KiB cap (a block file here is ~4-8 KiB): the first block file that cannot be
    // written makes compaction wait. The checkpoint (~32 KiB) waits too but does not count
    // against the cap, so compaction goes on until a block file waits. 4 KiB WAL segments:
    // many are closed during the test, so trimming is exercised.
    let server = durable_server_with_env(
        &feed.url,
        &dir,
        &[],
        &[
            ("FABRIC_TEST_BLOCK_CAP", "4096"),
            ("FABRIC_TEST_WAL_SEGMENT", "4096"),
        ],
    );
    wait_for_block_files(&server, 1);

    // The outage: block files cannot be created (a file where the directory was); the WAL
    // still works.
    let blocks = dir.0.join("blocks");
    let away = dir.0.join("blocks.away");
    std::fs::rename(&blocks, &away).expect("move blocks/ away");
    std::fs::write(&blocks, b"not a directory").expect("block the path");
    let written = counter(&storage(&server)["block_files_written"]);
    util::wait_for(
        "an export to wait for the disk",
        Duration::from_secs(20),
        || {
            let s = storage(&server);
            (counter(&s["block_files_pending"]) >= 1 && s["status"] == "failing").then_some(())
        },
    );
    // Long enough for more blocks to seal (10 s spans) while exports wait at the cap.
    std::thread::sleep(Duration::from_secs(12));
    let during = storage(&server);
    assert_eq!(counter(&during["block_files_written"]), written, "{during}");
    let trimmed_during = counter(&during["wal_segments_deleted"]);
    assert!(
        counter(&during["block_bytes_pending"]) >= 1,
        "the waiting export is kept: {during}"
    );

    // The disk comes back: the waiting file lands, exports resume, the WAL is trimmed again.
    std::fs::remove_file(&blocks).expect("unblock");
    std::fs::rename(&away, &blocks).expect("blocks/ back");
    util::wait_for("the backlog to land", Duration::from_secs(30), || {
        let s = storage(&server);
        (s["status"] == "ok"
            && counter(&s["block_files_pending"]) == 0
            && counter(&s["block_files_written"]) >= written + 2)
            .then_some(())
    });
    // Trimming resumes behind the landed files: the restart below then needs them.
    let trimmed = util::wait_for("the WAL to be trimmed", Duration::from_secs(30), || {
        let deleted = counter(&storage(&server)["wal_segments_deleted"]);
        (deleted > trimmed_during).then_some(deleted)
    });
    eprintln!("WAL segments deleted: {trimmed_during} by the end of the outage, {trimmed} after");
    pause(&feed, &paused, &server);
    let before = snapshot(&server);
    drop(server); // kill -9

    let restarted = durable_server(&feed.url, &dir, &[]);
    let after = snapshot(&restarted);
    assert_eq!(before.0, after.0, "/aggregate differs after the restart");
    for (i, (b, a)) in before.1.iter().zip(&after.1).enumerate() {
        assert_eq!(
            b.len(),
            a.len(),
            "history {i}: {} rows before, {} after",
            b.len(),
            a.len()
        );
        assert_eq!(b, a, "history {i} differs");
    }
}

/// Exact 64-bit counters and their kinds come back from the WAL and the block files as they
/// went in: the same history bytes, the same rate, across kill -9.
#[test]
fn counters_come_back_exact_with_their_kinds_after_kill_9() {
    let dir = DataDir::new("counters");
    let feed = FakeFeed::start();
    let paused = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&paused);
    let base = timestamp::now_micros() - 40_000_000;
    feed.set(move |n| {
        if flag.load(Ordering::SeqCst) {
            return FeedReply::Status(503);
        }
        let mut body =
            String::from("timestamp,node_guid,port_num,PortXmitDataExtended,Temperature\n");
        for k in 0..START_ROWS as u64 + n {
            let us = base + k as i64 * 100_000;
            // Above 2^53 and growing by odd steps (an f64 would round them); a reset at 200.
            let data = if k < 200 {
                (1u64 << 60) + k * 1_000_003
            } else {
                (k - 200) * 7
            };
            // Eight ports: their blocks seal at staggered times, so some rows are in the WAL
            // only when the server dies.
            for port in 1..=8u64 {
                body.push_str(&format!(
                    "{us},0x7cfe9003009ce5b0,{port},{},{}\n",
                    data + port,
                    40 + k % 5
                ));
            }
        }
        FeedReply::Body("text/csv", body)
    });
    let server = durable_server(&feed.url, &dir, &[]);
    wait_for_block_files(&server, 1);
    pause(&feed, &paused, &server);
    let look = |server: &Proc| {
        let mut histories = String::new();
        let mut rates = String::new();
        for port in 1..=8 {
            let history = util::get(&server.url(&format!(
                "/telemetry/history?switch_id=0x7cfe9003009ce5b0:{port}&metric=PortXmitDataExtended"
            )));
            let rate = util::get(&server.url(&format!(
                "/telemetry/rate?switch_id=0x7cfe9003009ce5b0:{port}&metric=PortXmitDataExtended&window=10m"
            )));
            assert_eq!((history.status, rate.status), (200, 200), "{}", rate.body);
            histories.push_str(&history.body);
            rates.push_str(&rate.body);
        }
        (histories, rates)
    };
    let before = look(&server);
    assert!(
        before
            .0
            .contains(&format!("\"value\":{}", (1u64 << 60) + 3 * 1_000_003 + 1)),
        "exact before: {}",
        &before.0[..200.min(before.0.len())]
    );
    assert!(before.1.contains("\"resets\":1"), "{}", before.1);
    drop(server); // SIGKILL
    let server = durable_server(&feed.url, &dir, &[]);
    let recovery = storage(&server)["recovery"].clone();
    assert!(counter(&recovery["blocks_loaded"]) > 0, "{recovery}");
    let replayed =
        counter(&recovery["wal_rows_replayed"]) + counter(&recovery["checkpoint_rows_replayed"]);
    assert!(replayed > 0, "{recovery}");
    let after = look(&server);
    assert_eq!(after.0, before.0, "history changed across kill -9");
    assert_eq!(after.1, before.1, "rate changed across kill -9");
}
