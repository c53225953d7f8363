//! `window`: aggregating every switch over 1m vs 1h, on the store `memory` filled (store only,
//! no HTTP).

use std::time::Instant;

use fabric_telemetry::server::store::Store;
use fabric_telemetry::shared::timestamp::MICROS_PER_SEC;

use crate::report::Report;
use crate::stats::median;

pub fn run(report: &mut Report, store: &Store, last_ts: i64) {
    let metrics = [
        store.metrics().id("latency"),
        store.metrics().id("bandwidth"),
        store.metrics().id("errors"),
    ];
    let time_window = |window_s: i64| {
        let runs: Vec<f64> = (0..15)
            .map(|_| {
                let started = Instant::now();
                let mut total = 0.0;
                for switch in 0..store.n_switches() {
                    let aggs =
                        store.window_aggs(switch, &metrics, last_ts - window_s * MICROS_PER_SEC);
                    total += aggs[2].map_or(0.0, |a| a.sum);
                }
                std::hint::black_box(total);
                started.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        median(runs)
    };
    let one_minute = time_window(60);
    let one_hour = time_window(3600);
    report
        .add(
            "window",
            "aggregate window=1m, 10k switches (median of 15)",
            one_minute,
            "ms",
        )
        .note("store only, no HTTP");
    report
        .add(
            "window",
            "aggregate window=1h, 10k switches (median of 15)",
            one_hour,
            "ms",
        )
        .baseline(one_minute)
        .note("ratio = cost of 1h over 1m; target ≤ 2");
}
