//! `ingest`: 10k/100k/1M switches polled every second: polls on time, poll-to-queryable
//! latency, server and generator CPU per million rows, all switches fresh in `/list`, RSS.

use crate::report::Report;
use crate::stats::{histogram_quantile, on_time};
use crate::system::{cpu_seconds, list_fresh, rss_bytes, system, wait_for_rows, watch_polls};

pub fn run(report: &mut Report, quick: bool) {
    let sizes: &[usize] = if quick {
        &[10_000, 100_000]
    } else {
        &[10_000, 100_000, 1_000_000]
    };
    for &n in sizes {
        let seconds = if quick {
            10
        } else if n >= 1_000_000 {
            30
        } else {
            20
        };
        let (generator, server) = system(n, &["--retention", "5m"]);
        wait_for_rows(&server, n as u64 * 2);
        let generator_cpu = cpu_seconds(generator.pid());
        let watched = watch_polls(&server, seconds);
        let (before, after, rows) = (watched.before, watched.after, watched.rows);
        let server_cpu = watched.cpu_seconds;
        let generator_cpu = cpu_seconds(generator.pid()) - generator_cpu;
        let (on_time, late, fraction) = on_time(&before, &after);
        let label = format!("{}k switches", n / 1000);
        report
            .add(
                "ingest",
                format!("{label}: polls on time"),
                fraction,
                "fraction",
            )
            .note(format!("{on_time} on time, {late} late, over {seconds} s"));
        let (p50, p99) = (
            histogram_quantile(&before, &after, 0.5),
            histogram_quantile(&before, &after, 0.99),
        );
        let bucket_note = "upper bound of the histogram bucket, polls in the measured window only";
        report
            .add(
                "ingest",
                format!("{label}: poll-to-queryable p50 (≤)"),
                p50,
                "ms",
            )
            .note(bucket_note);
        report
            .add(
                "ingest",
                format!("{label}: poll-to-queryable p99 (≤)"),
                p99,
                "ms",
            )
            .note(bucket_note);
        let millions = rows as f64 / 1e6;
        report
            .add(
                "ingest",
                format!("{label}: server CPU per million rows"),
                server_cpu / millions,
                "cpu-s",
            )
            .note(format!("{rows} rows in {seconds} s"));
        report.add(
            "ingest",
            format!("{label}: generator CPU per million rows"),
            generator_cpu / millions,
            "cpu-s",
        );
        let (status, fresh) = list_fresh(&server);
        report
            .add(
                "ingest",
                format!("{label}: switches fresh in /list"),
                fresh as f64,
                "switches",
            )
            .baseline(n as f64)
            .note(format!("status {status}"));
        report.add(
            "ingest",
            format!("{label}: server RSS"),
            rss_bytes(&server.pid().to_string()) as f64 / 1e6,
            "MB",
        );
    }
}
