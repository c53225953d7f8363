//! `soak` (only when named): ingest for minutes through block sealing and expiry, 1M switches
//! for 7 minutes by default: polls on time, poll-to-queryable p99, peak RSS, all switches
//! fresh at the end.

use std::time::{Duration, Instant};

use crate::report::Report;
use crate::stats::{histogram_quantile, on_time};
use crate::system::{list_fresh, rss_bytes, source_stats, system, wait_for_rows};

/// Ingest for minutes, through block sealing and expiry: `soak [--switches N] [--minutes M]`
/// (default 1M switches, 7 minutes, `--retention 5m`). Prints a line every 30 s.
pub fn run(report: &mut Report, n: usize, minutes: u64) {
    let (_generator, server) = system(n, &["--retention", "5m"]);
    wait_for_rows(&server, n as u64);
    let first = source_stats(&server);
    let started = Instant::now();
    let mut rss_max = 0u64;
    while started.elapsed() < Duration::from_secs(minutes * 60) {
        std::thread::sleep(Duration::from_secs(30));
        let s = source_stats(&server);
        let rss = rss_bytes(&server.pid().to_string());
        rss_max = rss_max.max(rss);
        println!(
            "  soak     t={:>4}s on_time={} late={} p99={} ms rss={} MB",
            started.elapsed().as_secs(),
            s["polls_on_time"],
            s["polls_late"],
            s["poll_to_queryable_ms"]["p99"],
            rss / 1_000_000
        );
    }
    let last = source_stats(&server);
    let (on_time, late, fraction) = on_time(&first, &last);
    let label = format!("{}k switches, {minutes} min, retention 5m", n / 1000);
    report
        .add(
            "soak",
            format!("{label}: polls on time"),
            fraction,
            "fraction",
        )
        .note(format!(
            "{on_time} on time, {late} late, after the first poll"
        ));
    report.add(
        "soak",
        format!("{label}: poll-to-queryable p99 (≤)"),
        histogram_quantile(&first, &last, 0.99),
        "ms",
    );
    report.add(
        "soak",
        format!("{label}: peak server RSS"),
        rss_max as f64 / 1e6,
        "MB",
    );
    let (status, fresh) = list_fresh(&server);
    report
        .add(
            "soak",
            format!("{label}: switches fresh in /list at the end"),
            fresh as f64,
            "switches",
        )
        .baseline(n as f64)
        .note(format!("status {status}"));
}
