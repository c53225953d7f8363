//! `http`: wrk against `/telemetry/get` (random switch of 10k), `/list` and `/aggregate`,
//! each against a bare tiny_http server with the same body size and worker count; req/s, p50,
//! p99 and non-2xx answers, medians of 3 alternating runs.

use crate::report::Report;
use crate::system::{system, wait_for_rows};
use crate::util;
use crate::wrk::{median_result, random_get_script, wrk, Baseline};

pub fn run(report: &mut Report, quick: bool) {
    let n = 10_000;
    let seconds = if quick { 2 } else { 4 };
    let workers = 4;
    let (_generator, server) = system(n, &["--workers", "4"]);
    wait_for_rows(&server, n as u64 * 2);
    let get_script = random_get_script(n);
    let cases: [(&str, String, Option<&str>); 3] = [
        (
            "/telemetry/get (random switch of 10k)",
            server.url("/"),
            Some(&get_script),
        ),
        (
            "/telemetry/list?metric=bandwidth (10k)",
            server.url("/telemetry/list?metric=bandwidth"),
            None,
        ),
        (
            "/telemetry/aggregate (10k)",
            server.url("/telemetry/aggregate"),
            None,
        ),
    ];
    for (name, url, script) in cases {
        let sample_url = if script.is_some() {
            server.url("/telemetry/get?switch_id=switch1&metric=bandwidth")
        } else {
            url.clone()
        };
        let body_len = util::get(&sample_url).body.len();
        // Alternate baseline and ours, three rounds each, and compare medians: the machine
        // is shared and noisy.
        let (mut bases, mut ourses) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            let baseline = Baseline::start(body_len, workers);
            bases.push(wrk(&format!("http://{}/", baseline.addr), script, seconds));
            baseline.stop();
            ourses.push(wrk(&url, script, seconds));
        }
        let base = median_result(&bases);
        let mut ours = median_result(&ourses);
        ours.non_2xx = ourses.iter().map(|r| r.non_2xx).sum();
        ours.requests = ourses.iter().map(|r| r.requests).sum();
        report
            .add(
                "http",
                format!("{name} req/s"),
                ours.requests_per_sec,
                "req/s",
            )
            .baseline(base.requests_per_sec)
            .note(format!(
                "median of 3 alternating runs; body {body_len} B; baseline = bare tiny_http, same body size, {workers} workers, same listener (TCP_NODELAY)"
            ));
        report
            .add("http", format!("{name} p50"), ours.p50_ms, "ms")
            .baseline(base.p50_ms);
        report
            .add("http", format!("{name} p99"), ours.p99_ms, "ms")
            .baseline(base.p99_ms);
        report
            .add(
                "http",
                format!("{name} non-2xx answers"),
                ours.non_2xx as f64,
                "count",
            )
            .note(format!("of {} requests", ours.requests));
    }
}
