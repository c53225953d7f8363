//! `durability` (rows named `durable`): disk bytes per sample and restart time after a
//! simulated hour on disk, ingest rate through the store thread with `--fsync every-batch` vs
//! in memory, and kill -9 at 10k switches and what came back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fabric_telemetry::generator::Fabric;
use fabric_telemetry::server::ingest::{self, IngestBatch, Outlets, Persistence};
use fabric_telemetry::server::persist::{self, FsyncPolicy, PersistConfig, StorageStats};
use fabric_telemetry::server::stats::IngestStats;
use fabric_telemetry::server::store::{BlockLimits, Store, StoreHandle};
use fabric_telemetry::shared::feed;
use fabric_telemetry::shared::timestamp::{self, MICROS_PER_SEC};
use fabric_telemetry::shared::watch::Watch;
use serde_json::Value;

use crate::report::Report;
use crate::stats::median;
use crate::system::{scratch_dir, simulated_poll, system, wait_for_rows, wake_up_micros};
use crate::util;

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// What writing a simulated fabric into a data directory did.
pub struct OnDisk {
    pub retained_rows: u64,
    pub stats: Arc<StorageStats>,
    /// Per compaction: seconds the persist thread spent exporting, and the longest it held
    /// the store's lock at a time.
    pub exports: Vec<(f64, f64)>,
    /// Seconds of the store thread's work per poll (store the rows, expire), while an export
    /// ran and otherwise.
    pub poll_seconds_during_export: Vec<f64>,
    pub poll_seconds_otherwise: Vec<f64>,
}

/// Writes `ticks` 1 s polls of `n` switches (from `start`, with real wake-up jitter) into
/// `dir` the way the server does: every poll to the WAL, expiry under `retention`, a
/// compaction every simulated minute at second `compact_at` of it.
pub fn simulate_on_disk(
    dir: &std::path::Path,
    n: usize,
    retention: Duration,
    start: i64,
    ticks: i64,
    compact_at: i64,
    seed: u64,
) -> OnDisk {
    let config = PersistConfig {
        data_dir: dir.to_path_buf(),
        fsync: FsyncPolicy::Never,
        compaction_interval: Duration::from_secs(60),
        retention,
    };
    let retention_micros = timestamp::duration_micros(retention);
    let mut store = Store::new(BlockLimits::for_retention(retention));
    let persist::Opened {
        disk,
        thread,
        stats,
        ..
    } = persist::open(&config, &mut store, i64::MIN, &Watch::new(|| {})).expect("empty dir");
    let handle = StoreHandle::new(store);
    let mut fabric = Fabric::new(n, Some(seed));
    let mut csv = Vec::new();
    let mut jitter = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed + 1);
    let wait_for_room = || {
        while !disk.has_room() {
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    let mut exports = Vec::new();
    let (mut during, mut otherwise) = (Vec::new(), Vec::new());
    let mut requested = 0;
    let mut due = false;
    for tick in 0..ticks {
        let ts = start + tick * MICROS_PER_SEC + wake_up_micros(&mut jitter);
        let batch = simulated_poll(&mut fabric, ts, &mut csv);
        let exporting = stats.counters().exports < requested;
        let storing = Instant::now();
        let outcome = handle.apply(&batch);
        handle.expire(ts - retention_micros);
        let took = storing.elapsed().as_secs_f64();
        let counters = stats.counters();
        if exporting || counters.exports < requested {
            during.push(took);
        } else {
            otherwise.push(took);
        }
        if counters.exports as usize > exports.len() {
            exports.push((
                counters.last_export_ms as f64 / 1e3,
                counters.last_export_longest_hold_ms as f64 / 1e3,
            ));
        }
        wait_for_room();
        disk.log_rows(Arc::new(batch), outcome.accepted_rows);
        disk.poll_done();
        // As the store thread does: it asks (until one is taken: one at a time), the
        // persist thread exports.
        due |= tick % 60 == compact_at;
        if due {
            wait_for_room();
            if disk.compact(&handle, ts) {
                requested += 1;
                due = false;
            }
        }
    }
    let retained_rows = handle.read().retained_rows();
    drop(disk);
    let _ = thread.join();
    let counters = stats.counters();
    if counters.exports as usize > exports.len() {
        exports.push((
            counters.last_export_ms as f64 / 1e3,
            counters.last_export_longest_hold_ms as f64 / 1e3,
        ));
    }
    OnDisk {
        retained_rows,
        stats,
        exports,
        poll_seconds_during_export: during,
        poll_seconds_otherwise: otherwise,
    }
}

/// A `metrics-server` on the data directory `dir`, polling a dead feed (so it holds only what
/// it recovered), with `extra` flags; `within`: how long it may take to start listening.
pub fn server_on(dir: &std::path::Path, extra: &[&str], within: Duration) -> util::Proc {
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--source",
        "http://127.0.0.1:9/dead",
        "--data-dir",
        dir.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    util::Proc::start_within(util::server_bin(), &args, within)
}

/// Time from starting `metrics-server` on `dir` until `/telemetry/aggregate` answers 200
/// with `n` switches; the server (polling a dead feed) is returned for more questions.
fn restart_on(dir: &std::path::Path, n: usize, extra: &[&str]) -> (f64, util::Proc) {
    let started = Instant::now();
    let mut args = vec!["--log-level", "info"];
    args.extend_from_slice(extra);
    let server = server_on(dir, &args, Duration::from_secs(120));
    let agent = util::client();
    util::wait_for(
        "the restarted server to serve",
        Duration::from_secs(120),
        || {
            let answer = util::get_with(&agent, &server.url("/telemetry/aggregate"));
            (answer.status == 200 && answer.body.matches("max_latency").count() == n).then_some(())
        },
    );
    (started.elapsed().as_secs_f64(), server)
}

/// Rows/s through the real store thread for `batches`, all applied (and, with a data
/// directory, all logged and fsynced per poll).
fn store_throughput(batches: &[feed::FeedBatch], dir: Option<&std::path::Path>) -> f64 {
    let retention = Duration::from_secs(3600);
    let mut store = Store::new(BlockLimits::for_retention(retention));
    let stats = Arc::new(IngestStats::new(&["bench".to_string()]));
    let mut outlets = Outlets::default();
    let mut persist_thread = None;
    let mut storage = None;
    if let Some(dir) = dir {
        let config = PersistConfig {
            data_dir: dir.to_path_buf(),
            fsync: FsyncPolicy::EveryBatch,
            compaction_interval: Duration::from_secs(60),
            retention,
        };
        let opened =
            persist::open(&config, &mut store, i64::MIN, &Watch::new(|| {})).expect("recover");
        outlets.persistence = Some(Persistence {
            disk: opened.disk,
            compaction_interval: config.compaction_interval,
        });
        persist_thread = Some(opened.thread);
        storage = Some(opened.stats);
    }
    let handle = StoreHandle::new(store);
    let (tx, rx) = crossbeam_channel::bounded(2);
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let thread = ingest::spawn(
        handle,
        retention,
        rx,
        stop_rx,
        Arc::clone(&stats),
        outlets,
        &Watch::new(|| {}),
    )
    .expect("store thread");
    let total: u64 = batches.iter().map(|b| b.len() as u64).sum();
    let started = Instant::now();
    for batch in batches {
        let sent = tx.send(IngestBatch {
            source: 0,
            feed: batch.clone(),
            due: Instant::now(),
            interval: Duration::from_secs(1),
            last: true,
        });
        if sent.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = thread.join();
    if let Some(thread) = persist_thread {
        let _ = thread.join();
    }
    let elapsed = started.elapsed().as_secs_f64();
    drop(stop_tx);
    assert_eq!(stats.rows_accepted(), total, "every row applied");
    if let Some(storage) = storage {
        let report = storage.report();
        assert_eq!(report.counters.rows_not_logged, 0, "every row logged");
        assert_eq!(
            report.counters.wal_fsyncs as usize,
            batches.len(),
            "one fsync per poll"
        );
    }
    total as f64 / elapsed
}

pub fn run(report: &mut Report, quick: bool) {
    let n = 10_000;
    // 1. A simulated hour on disk; bytes per sample; restart time.
    let ticks = if quick { 600 } else { 3600 };
    let dir = scratch_dir("durable-hour");
    let started = Instant::now();
    // The last compaction 59 polls before the end (the WAL at its largest); a minute of
    // slack so the oldest rows have not expired by the time the server restarts.
    let start = timestamp::now_micros() - (ticks - 60) * MICROS_PER_SEC;
    let OnDisk {
        retained_rows: retained,
        stats,
        ..
    } = simulate_on_disk(&dir, n, Duration::from_secs(3600), start, ticks, 0, 3);
    let written = stats.report();
    println!(
        "  (simulated {ticks} s of {n} switches into {} in {:.1} s)",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    report
        .add(
            "durable",
            "disk bytes per compacted sample (block files)",
            written.counters.block_bytes_written as f64
                / written.counters.samples_compacted.max(1) as f64,
            "B",
        )
        .baseline(0.75)
        .note(format!(
            "{} samples in {} block files, timestamps with real wake-up jitter; baseline = target (VictoriaMetrics merged: 0.76)",
            written.counters.samples_compacted, written.counters.block_files_written
        ));
    report
        .add(
            "durable",
            "disk bytes per retained sample (all files)",
            dir_bytes(&dir) as f64 / (retained * 3) as f64,
            "B",
        )
        .note("block files + checkpoint + WAL, 59 s after the last compaction (the WAL at its largest); target <= 1.2 B");
    let (seconds, server) = restart_on(&dir, n, &[]);
    let recovery = util::stats(&server)["storage"]["recovery"].clone();
    report
        .add(
            "durable",
            format!("restart with {ticks} s of {n} switches: serving after"),
            seconds,
            "s",
        )
        .baseline(5.0)
        .note(format!(
            "target <= 5 s; recovery itself {:.2} s ({} blocks, {} WAL rows)",
            recovery["seconds"].as_f64().unwrap_or(f64::NAN),
            recovery["blocks_loaded"],
            recovery["wal_rows_replayed"]
        ));
    drop(server);

    // 2. Ingest rate through the store thread, in memory vs --fsync every-batch.
    let polls = if quick { 10 } else { 30 };
    let big = 100_000;
    let mut fabric = Fabric::new(big, Some(5));
    let mut csv = Vec::new();
    let start = timestamp::now_micros() - polls * MICROS_PER_SEC;
    let batches: Vec<feed::FeedBatch> = (0..polls)
        .map(|i| simulated_poll(&mut fabric, start + i * MICROS_PER_SEC, &mut csv))
        .collect();
    let (mut memory, mut durable) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        memory.push(store_throughput(&batches, None));
        let dir = scratch_dir("durable-rate");
        durable.push(store_throughput(&batches, Some(&dir)));
    }
    let (memory, durable) = (median(memory), median(durable));
    report
        .add("durable", "ingest rate, --fsync every-batch", durable / 1e6, "M rows/s")
        .baseline(memory / 1e6)
        .note(format!(
            "median of 3 alternating runs, {polls} polls of {big} rows through the store thread; baseline = in memory; target ratio >= 0.8"
        ));

    // 3. kill -9 during ingest at 10k switches, restart, compare.
    let dir = scratch_dir("durable-kill");
    let dir_arg = dir.to_str().expect("utf-8").to_string();
    let (generator, server) = system(
        n,
        &[
            "--data-dir",
            &dir_arg,
            "--fsync",
            "every-batch",
            "--max-age",
            "1h",
            "--compaction-interval",
            "5s",
        ],
    );
    wait_for_rows(&server, 15 * n as u64);
    let probes = ["switch1", "switch5000", "switch10000"];
    let history = |server: &util::Proc, id: &str| -> Vec<Value> {
        util::get(&server.url(&format!("/telemetry/history?switch_id={id}&metric=latency")))
            .json()
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let aggregate_before = util::get(&server.url("/telemetry/aggregate")).json();
    let histories_before: Vec<Vec<Value>> = probes.iter().map(|id| history(&server, id)).collect();
    let retained_before = util::stats(&server)["ingest"]["retained_rows"]
        .as_u64()
        .unwrap_or(0);
    drop(server); // SIGKILL, mid-ingest: the generator keeps ticking
    drop(generator);
    let (seconds, server) = restart_on(&dir, n, &["--max-age", "1h"]);
    let aggregate_after = util::get(&server.url("/telemetry/aggregate")).json();
    let retained_after = util::stats(&server)["ingest"]["retained_rows"]
        .as_u64()
        .unwrap_or(0);
    let same_switches = aggregate_before
        .as_object()
        .map(|before| {
            before
                .iter()
                .filter(|(id, v)| aggregate_after.get(id.as_str()) == Some(v))
                .count()
        })
        .unwrap_or(0);
    let mut polls_lost = 0usize;
    for (id, before) in probes.iter().zip(&histories_before) {
        let after = history(&server, id);
        let common = after.len().min(before.len());
        assert_eq!(
            after[..common],
            before[..common],
            "{id}: history changed across kill -9"
        );
        polls_lost = polls_lost.max(before.len() - common);
    }
    report
        .add("durable", "kill -9 at 10k switches: rows lost", retained_before as f64 - retained_after as f64, "rows")
        .note(format!(
            "retained {retained_before} before the kill, {retained_after} after; probe histories equal, {polls_lost} poll(s) short at most; target: at most one poll ({n} rows)"
        ));
    report
        .add(
            "durable",
            "kill -9 at 10k switches: /aggregate entries identical",
            same_switches as f64,
            "switches",
        )
        .baseline(n as f64)
        .note(format!("restart to serving {seconds:.2} s"));
}
