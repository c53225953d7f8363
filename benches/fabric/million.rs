//! `million` (only when named): memory at fleet scale. A million switches polled every
//! second under `--retention 5m`, simulated in this process at full speed through block
//! sealing and expiry (10 simulated minutes): RSS growth and history heap per retained sample,
//! and per sample of the configured retention (what an operator sizes a host by). Then the
//! same again into a data directory, and a real `metrics-server` restarted on it: its peak
//! RSS during recovery against its RSS once recovered. It prints where the memory goes, part
//! by part (`Store::memory_parts`); `FABRIC_BENCH_SKIP_RESTART=1` stops after the in-memory
//! part (a minute at `--quick`), for trying a change to the store's layout.

use std::time::{Duration, Instant};

use fabric_telemetry::generator::Fabric;
use fabric_telemetry::server::store::{BlockLimits, Store};
use fabric_telemetry::shared::timestamp::{self, MICROS_PER_SEC};
use rand::SeedableRng;

use crate::report::Report;
use crate::stats::median;
use crate::system::{rss_bytes, scratch_dir, wake_up_micros};
use crate::util;

pub fn run(report: &mut Report, quick: bool) {
    let n = if quick { 200_000 } else { 1_000_000 };
    in_memory(report, n);
    if std::env::var_os("FABRIC_BENCH_SKIP_RESTART").is_none() {
        restart(report, n);
    }
}

fn in_memory(report: &mut Report, n: usize) {
    let retention = Duration::from_secs(300);
    let retention_micros = timestamp::duration_micros(retention);
    // Ten simulated minutes: blocks seal after ~128 s and expire ~300 s after they end, so
    // by the end every switch has expired blocks and the allocator has reused what they
    // held, as in a server that has run for a while. (At six minutes no block had expired
    // yet, which read 0.12 B per sample lower than this steady state.)
    let ticks = 600;
    let mut fabric = Fabric::new(n, Some(11));
    let mut csv = Vec::new();
    let mut jitter = rand::rngs::StdRng::seed_from_u64(12);
    let start = timestamp::now_micros() - ticks * MICROS_PER_SEC;
    let rss_before = rss_bytes("self");
    let mut store = Store::new(BlockLimits::for_retention(retention));
    let started = Instant::now();
    let mut rss_peak = 0u64;
    // RSS growth per retained sample at every 10th poll of the last 150 s: blocks seal and
    // expire in waves (and chunks are freed a few seconds after their last block), so the
    // figure depends on the moment; the worst one is what a host must have.
    let mut steady = Vec::new();
    for tick in 0..ticks {
        let ts = start + tick * MICROS_PER_SEC + wake_up_micros(&mut jitter);
        let batch = crate::system::simulated_poll(&mut fabric, ts, &mut csv);
        store.ingest(&batch);
        drop(batch);
        // The store thread expires every poll once a block can have expired.
        if store.may_expire(ts - retention_micros) {
            store.evict_before(ts - retention_micros);
        }
        if tick >= ticks - 150 && tick % 10 == 9 {
            // The poll's CSV buffer is the bench's, not the store's.
            let rss = rss_bytes("self").saturating_sub(csv.capacity() as u64);
            let grown = rss.saturating_sub(rss_before) as f64;
            steady.push(grown / (store.retained_rows() * 3).max(1) as f64);
        }
        if tick % 30 == 29 {
            let rss = rss_bytes("self");
            rss_peak = rss_peak.max(rss);
            println!(
                "  million  t={tick:>3}s retained={} rss={} MB ({:.0} s)",
                store.retained_rows(),
                rss / 1_000_000,
                started.elapsed().as_secs_f64()
            );
        }
    }
    csv = Vec::new();
    drop(csv);
    let rss_after = rss_bytes("self");
    let grown = rss_after.saturating_sub(rss_before) as f64;
    let samples = store.retained_rows() * 3;
    let at_end = grown / samples as f64;
    steady.push(at_end);
    let worst = steady.iter().copied().fold(0.0, f64::max);
    let typical = median(steady.clone());
    let configured = n as f64 * retention.as_secs_f64() * 3.0;
    let label = format!("{}k switches x 5 min", n / 1000);
    let history_bytes = store.history_bytes();
    let parts = store.memory_parts();
    // Indented parts detail the one above them.
    let (bytes, allocs) = parts
        .iter()
        .filter(|p| !p.0.starts_with(' '))
        .fold((0, 0), |(b, a), p| (b + p.1, a + p.2));
    println!(
        "  million  where the memory goes, per switch ({:.0} retained samples each):",
        samples_per_switch(&store, n)
    );
    for (what, b, a) in &parts {
        println!(
            "  million    {what:<40} {:>7.1} B in {:>5.2} allocations",
            *b as f64 / n as f64,
            *a as f64 / n as f64
        );
    }
    println!(
        "  million    {:<40} {:>7.1} B in {:>5.2} allocations (RSS growth: {:.1} B)",
        "total",
        bytes as f64 / n as f64,
        allocs as f64 / n as f64,
        grown / n as f64
    );
    // What RSS counts beyond what the store asks for: allocation headers and rounding, and
    // the holes freed memory leaves (the part the structures' own sizes do not show).
    if let Some((in_use, free)) = crate::system::allocator_heap() {
        println!(
            "  million    allocator: in use {:.1} B, free inside the heap {:.1} B (per switch, whole process)",
            in_use as f64 / n as f64,
            free as f64 / n as f64
        );
    }
    report
        .add(
            "million",
            format!("{label}: bytes per retained sample (RSS growth)"),
            worst,
            "B",
        )
        .baseline(1.5)
        .note(format!(
            "the most of {} moments in the last 150 s (median {typical:.3}, at the end {at_end:.3}); {samples} samples retained at the end (retention 5 min + up to one block span); baseline = target; RSS grew {} MB, peak {} MB",
            steady.len(),
            grown as u64 / 1_000_000,
            rss_peak / 1_000_000
        ));
    report.add(
        "million",
        format!("{label}: bytes per retained sample (history heap)"),
        history_bytes as f64 / samples as f64,
        "B",
    );
    report
        .add(
            "million",
            format!("{label}: RSS growth per sample of the configured retention"),
            grown / configured,
            "B",
        )
        .note(format!(
            "{configured} samples in 5 min of {n} switches x 3 metrics"
        ));
}

fn samples_per_switch(store: &Store, n: usize) -> f64 {
    store.retained_rows() as f64 * 3.0 / n as f64
}

/// `VmHWM` (peak) and `VmRSS` of a process, in bytes.
fn peak_and_resident(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// The same fabric written the way the server writes it (WAL every poll, a compaction every
/// minute, the last one 30 s before the end), then a real server restarted on the directory:
/// peak RSS while it recovers against RSS once it serves.
fn restart(report: &mut Report, n: usize) {
    let dir = scratch_dir("million-restart");
    let ticks = 360;
    // Starting now: simulating a million switches runs at about real time here, and the
    // persist thread expires block files by the wall clock, so the directory at the end holds
    // what a live server's would (starting in the past, it would expire all of them).
    let started = Instant::now();
    let on_disk = crate::durability::simulate_on_disk(
        &dir,
        n,
        Duration::from_secs(300),
        timestamp::now_micros(),
        ticks,
        30,
        13,
    );
    let retained = on_disk.retained_rows;
    let counters = on_disk.stats.counters();
    // The first exports come before any block has sealed; the last ones are the steady state.
    if let Some(&(seconds, longest_hold)) = on_disk.exports.last() {
        report
            .add(
                "million",
                format!("{}k switches x 5 min: one compaction's export (persist thread)", n / 1000),
                seconds,
                "s",
            )
            .note(format!(
                "the last of {}; longest hold of the store lock {:.0} ms; checkpoints {} MB each on average",
                on_disk.exports.len(),
                longest_hold * 1e3,
                counters.checkpoint_bytes_written / counters.checkpoints_written.max(1) / 1_000_000
            ));
    }
    let med = |v: &Vec<f64>| {
        if v.is_empty() {
            f64::NAN
        } else {
            median(v.clone())
        }
    };
    let (during, otherwise) = (
        med(&on_disk.poll_seconds_during_export),
        med(&on_disk.poll_seconds_otherwise),
    );
    let slowest = on_disk
        .poll_seconds_during_export
        .iter()
        .copied()
        .fold(0.0, f64::max);
    report
        .add(
            "million",
            format!("{}k switches x 5 min: store thread per poll while an export runs", n / 1000),
            during,
            "s",
        )
        .baseline(otherwise)
        .note(format!(
            "median of {} polls (slowest {slowest:.2} s); baseline = median of the {} other polls (store the rows + expire)",
            on_disk.poll_seconds_during_export.len(),
            on_disk.poll_seconds_otherwise.len()
        ));
    println!(
        "  million  wrote {ticks} s of {n} switches into {} in {:.0} s",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    // A long retention at restart, so the minutes this took expire nothing.
    let server =
        crate::durability::server_on(&dir, &["--retention", "1h"], Duration::from_secs(600));
    let recovered = util::wait_for("the restarted server", Duration::from_secs(600), || {
        let stats = util::stats(&server);
        let rows = stats["ingest"]["retained_rows"].as_u64()?;
        (rows >= retained * 9 / 10).then_some(stats["storage"]["recovery"].clone())
    });
    std::thread::sleep(Duration::from_secs(2));
    let (peak, resident) = peak_and_resident(server.pid());
    report
        .add(
            "million",
            format!("{}k switches x 5 min: restart peak RSS / RSS once recovered", n / 1000),
            peak as f64 / resident as f64,
            "ratio",
        )
        .baseline(1.2)
        .note(format!(
            "peak {} MB, recovered {} MB; recovery {:.1} s ({} block rows, {} checkpoint rows, {} WAL rows); baseline = target",
            peak / 1_000_000,
            resident / 1_000_000,
            recovered["seconds"].as_f64().unwrap_or(f64::NAN),
            recovered["block_rows_loaded"],
            recovered["checkpoint_rows_replayed"],
            recovered["wal_rows_replayed"]
        ));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
