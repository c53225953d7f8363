//! `load`: wrk on `/get` at full speed with 100k switches: req/s, stale (503) answers, and
//! whether the polls stay on time under the load.

use crate::report::Report;
use crate::stats::on_time;
use crate::system::{source_stats, system, wait_for_rows};
use crate::wrk::{random_get_script, wrk};

pub fn run(report: &mut Report, quick: bool) {
    let n = 100_000;
    let seconds = if quick { 5 } else { 15 };
    let (_generator, server) = system(n, &["--workers", "4"]);
    wait_for_rows(&server, n as u64 * 2);
    let before = source_stats(&server);
    let ours = wrk(&server.url("/"), Some(&random_get_script(n)), seconds);
    let after = source_stats(&server);
    report.add(
        "load",
        "/get at full speed, 100k switches: req/s",
        ours.requests_per_sec,
        "req/s",
    );
    report
        .add(
            "load",
            "/get at full speed, 100k switches: stale (503) answers",
            ours.non_2xx as f64,
            "count",
        )
        .note(format!("of {} requests", ours.requests));
    let (on_time, late, fraction) = on_time(&before, &after);
    report
        .add(
            "load",
            "polls on time during the load",
            fraction,
            "fraction",
        )
        .note(format!("{on_time} on time, {late} late"));
}
