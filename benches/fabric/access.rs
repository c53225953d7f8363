//! `access`: `/get` throughput with the rate limiter and bearer tokens on vs the same server
//! without them, and whether a real 1000/s limit holds.

use std::time::Duration;

use crate::report::Report;
use crate::system::{scratch_dir, server_polling, system, wait_for_rows};
use crate::util;
use crate::wrk::{median_result, random_get_script, wrk, wrk_with};

/// `/get` throughput with the rate limiter (and bearer tokens) on, against the same server
/// without them, and whether a real limit holds.
pub fn run(report: &mut Report, quick: bool) {
    let n = 10_000;
    let seconds = if quick { 2 } else { 4 };
    let dir = scratch_dir("access");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "bench-token-0123456789\n").expect("token file");
    let tokens = tokens.to_str().expect("utf-8").to_string();
    let (generator, open) = system(n, &[]);
    let source = generator.url("/counters");
    let start = |extra: &[&str]| server_polling(&source, extra);
    // A limit no client reaches: every request pays for the check, none is refused.
    let limited = start(&["--rate-limit", "10000000/s"]);
    let authed = start(&["--rate-limit", "10000000/s", "--auth-token-file", &tokens]);
    for server in [&open, &limited] {
        wait_for_rows(server, 2 * n as u64);
    }
    let bearer = "Authorization: Bearer bench-token-0123456789";
    util::wait_for(
        "the authenticated server's rows",
        Duration::from_secs(60),
        || {
            let stats = util::request(
                &util::client(),
                "GET",
                &authed.url("/telemetry/stats"),
                &[("Authorization", "Bearer bench-token-0123456789")],
            );
            (stats.json()["ingest"]["rows_accepted"].as_u64()? >= 2 * n as u64).then_some(())
        },
    );
    let script = random_get_script(n);
    let (mut plain, mut with_limit, mut with_both) = (Vec::new(), Vec::new(), Vec::new());
    // Control: the same header sent to a server that ignores it (tiny_http parses it anyway).
    let mut header_only = Vec::new();
    for _ in 0..3 {
        plain.push(wrk(&open.url("/"), Some(&script), seconds));
        with_limit.push(wrk(&limited.url("/"), Some(&script), seconds));
        header_only.push(wrk_with(
            &limited.url("/"),
            Some(&script),
            seconds,
            &[bearer],
        ));
        with_both.push(wrk_with(
            &authed.url("/"),
            Some(&script),
            seconds,
            &[bearer],
        ));
    }
    let base = median_result(&plain);
    for (name, runs) in [
        ("rate limiter on", &with_limit),
        (
            "rate limiter on, Authorization header ignored",
            &header_only,
        ),
        ("rate limiter + bearer token", &with_both),
    ] {
        let ours = median_result(runs);
        let refused: u64 = runs.iter().map(|r| r.non_2xx).sum();
        report
            .add("access", format!("/get req/s, {name}"), ours.requests_per_sec, "req/s")
            .baseline(base.requests_per_sec)
            .note(format!(
                "median of 3 alternating runs, one client address (one bucket: the worst case); baseline = same server without; {refused} non-2xx"
            ));
    }
    drop((limited, authed));
    // A real limit: 1000/s with a burst of 1000, pushed by wrk for the whole run.
    let strict = start(&["--rate-limit", "1000/s", "--burst", "1000"]);
    wait_for_rows(&strict, n as u64);
    let run = wrk(&strict.url("/"), Some(&script), seconds);
    let allowed = (run.requests - run.non_2xx) as f64 / seconds as f64;
    report
        .add(
            "access",
            "allowed req/s under --rate-limit 1000/s --burst 1000",
            allowed,
            "req/s",
        )
        .baseline(1000.0 + 1000.0 / seconds as f64)
        .note(format!(
            "{} of {} requests answered 429 in {seconds} s; baseline = rate + burst / duration",
            run.non_2xx, run.requests
        ));
}
