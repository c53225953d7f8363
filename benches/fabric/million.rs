//! `million` (only when named): memory at fleet scale. A million switches polled every
//! second under `--retention 5m`, simulated in this process at full speed through block
//! sealing and expiry (6 simulated minutes): RSS growth and history heap per retained sample,
//! and per sample of the configured retention (what an operator sizes a host by).

use std::time::{Duration, Instant};

use fabric_telemetry::generator::Fabric;
use fabric_telemetry::server::store::{BlockLimits, Store};
use fabric_telemetry::shared::feed::{self, Freshness};
use fabric_telemetry::shared::timestamp::{self, MICROS_PER_SEC};
use rand::SeedableRng;

use crate::report::Report;
use crate::system::{rss_bytes, wake_up_micros};

pub fn run(report: &mut Report, quick: bool) {
    let n = if quick { 200_000 } else { 1_000_000 };
    let retention = Duration::from_secs(300);
    let retention_micros = timestamp::duration_micros(retention);
    let ticks = 360;
    let mut fabric = Fabric::new(n, Some(11));
    let mut csv = Vec::new();
    let mut jitter = rand::rngs::StdRng::seed_from_u64(12);
    let start = timestamp::now_micros() - ticks * MICROS_PER_SEC;
    let rss_before = rss_bytes("self");
    let mut store = Store::new(BlockLimits::for_retention(retention));
    let started = Instant::now();
    let mut rss_peak = 0u64;
    for tick in 0..ticks {
        fabric.tick();
        let ts = start + tick * MICROS_PER_SEC + wake_up_micros(&mut jitter);
        fabric.render_csv(ts, &mut csv);
        let batch = feed::parse_feed(
            csv.as_slice(),
            Freshness {
                now: ts,
                max_age: 3 * MICROS_PER_SEC,
            },
        );
        store.ingest(&batch);
        drop(batch);
        // The store thread expires every poll once a block can have expired.
        if store.may_expire(ts - retention_micros) {
            store.evict_before(ts - retention_micros);
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
    let configured = n as f64 * retention.as_secs_f64() * 3.0;
    let label = format!("{}k switches x 5 min", n / 1000);
    report
        .add(
            "million",
            format!("{label}: bytes per retained sample (RSS growth)"),
            grown / samples as f64,
            "B",
        )
        .baseline(1.5)
        .note(format!(
            "{samples} samples retained (retention 5 min + up to one block span); baseline = target; RSS grew {} MB, peak {} MB",
            grown as u64 / 1_000_000,
            rss_peak / 1_000_000
        ));
    report.add(
        "million",
        format!("{label}: bytes per retained sample (history heap)"),
        store.history_bytes() as f64 / samples as f64,
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
