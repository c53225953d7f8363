//! `memory`: RSS growth and history heap per retained sample after a simulated hour of 10k
//! switches pushed through a store in this process, and the single-thread ingest rate. The
//! store is kept for `window`.

use std::time::{Duration, Instant};

use fabric_telemetry::generator::Fabric;
use fabric_telemetry::server::store::{BlockLimits, Store};
use fabric_telemetry::shared::timestamp::{self, MICROS_PER_SEC};
use rand::SeedableRng;

use crate::report::Report;
use crate::system::rss_bytes;

/// A simulated hour of 10k switches pushed through a store at full speed; returns the store.
pub fn run(report: &mut Report, quick: bool) -> (Store, i64) {
    let n = 10_000;
    let ticks = if quick { 900 } else { 3600 };
    let mut fabric = Fabric::new(n, Some(1));
    let mut csv = Vec::new();
    let start = timestamp::now_micros() - ticks * MICROS_PER_SEC;
    let rss_before = rss_bytes("self");
    let mut store = Store::new(BlockLimits::for_retention(Duration::from_secs(3600)));
    let mut jitter = rand::rngs::StdRng::seed_from_u64(2);
    let started = Instant::now();
    let mut ts = start;
    for tick in 0..ticks {
        ts = start + tick * MICROS_PER_SEC + crate::system::wake_up_micros(&mut jitter);
        let batch = crate::system::simulated_poll(&mut fabric, ts, &mut csv);
        store.ingest(&batch);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rss_after = rss_bytes("self");
    let samples = store.retained_rows() * 3;
    let grown = rss_after.saturating_sub(rss_before) as f64;
    report
        .add(
            "memory",
            "bytes per retained sample (RSS growth)",
            grown / samples as f64,
            "B",
        )
        .baseline(16.0)
        .note(format!(
            "{} switches × {ticks} s × 3 metrics = {samples} samples; baseline = f64 + timestamp",
            n
        ));
    report
        .add(
            "memory",
            "bytes per retained sample (history heap)",
            store.history_bytes() as f64 / samples as f64,
            "B",
        )
        .baseline(16.0);
    report.add(
        "memory",
        "bytes per retained row (RSS growth)",
        grown / store.retained_rows() as f64,
        "B",
    );
    report
        .add(
            "memory",
            "ingest rate, parse + store, one thread",
            store.retained_rows() as f64 / elapsed / 1e6,
            "M rows/s",
        )
        .note("CSV rendered by the generator, parsed, stored");
    (store, ts)
}
