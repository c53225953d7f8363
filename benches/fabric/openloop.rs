//! `openloop`: `/telemetry/get` latency under a fixed request schedule at 25, 50 and 75% of
//! the throughput wrk measures, 10k switches polled every second.
//!
//! A closed-loop client (wrk) waits for each answer before sending the next request, so a
//! stall delays the requests that would have seen it and hides it from the percentiles
//! ("coordinated omission"). Here each of 16 keep-alive connections sends on a fixed schedule;
//! a request's latency is counted from when it was *due*, not from when it could be sent, so a
//! stall shows up in every request it delayed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::report::Report;
use crate::system::{system, wait_for_rows};
use crate::wrk::{random_get_script, wrk};

const CONNECTIONS: usize = 16;
const SWITCHES: usize = 10_000;

/// Sends `rate` requests per second in all for `seconds`, on `CONNECTIONS` connections;
/// returns every request's latency from its due time, in microseconds (sorted), and failures.
fn scheduled(addr: &str, rate: f64, seconds: u64) -> (Vec<u64>, u64) {
    let per_connection = rate / CONNECTIONS as f64;
    let interval = Duration::from_secs_f64(1.0 / per_connection);
    let start = Instant::now() + Duration::from_millis(200);
    let threads: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let addr = addr.to_string();
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                let mut failures = 0u64;
                let Ok(socket) = TcpStream::connect(&addr) else {
                    return (latencies, 1);
                };
                let _ = socket.set_nodelay(true);
                let _ = socket.set_read_timeout(Some(Duration::from_secs(5)));
                let mut writer = socket.try_clone().expect("clone socket");
                let mut reader = BufReader::new(socket);
                // Connections start staggered across one interval.
                let mut due = start + interval.mul_f64(c as f64 / CONNECTIONS as f64);
                let end = start + Duration::from_secs(seconds);
                let mut n = c;
                while due < end {
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    n = (n * 7919 + 13) % SWITCHES;
                    let request = format!(
                        "GET /telemetry/get?switch_id=switch{}&metric=bandwidth HTTP/1.1\r\nHost: bench\r\n\r\n",
                        n + 1
                    );
                    if writer.write_all(request.as_bytes()).is_err() || !read_answer(&mut reader) {
                        failures += 1;
                        break;
                    }
                    latencies.push(due.elapsed().as_micros() as u64);
                    due += interval;
                }
                (latencies, failures)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut failures = 0;
    for thread in threads {
        let (latencies, failed) = thread.join().unwrap_or_default();
        all.extend(latencies);
        failures += failed;
    }
    all.sort_unstable();
    (all, failures)
}

/// Reads one answer (head and `Content-Length` body); whether it was a 200.
fn read_answer(reader: &mut BufReader<TcpStream>) -> bool {
    let mut line = String::new();
    let mut length = 0usize;
    let mut ok = false;
    let mut first = true;
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return false;
        }
        if first {
            ok = line.split_whitespace().nth(1) == Some("200");
            first = false;
        }
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line
            .to_ascii_lowercase()
            .strip_prefix("content-length:")
            .map(|v| v.trim().to_string())
        {
            length = v.parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).is_ok() && ok
}

fn quantile(sorted: &[u64], q: f64) -> f64 {
    sorted
        .get(((sorted.len().max(1) - 1) as f64 * q).round() as usize)
        .map_or(f64::NAN, |&us| us as f64 / 1000.0)
}

pub fn run(report: &mut Report, quick: bool) {
    let seconds = if quick { 10 } else { 20 };
    // A long --max-age keeps /get answering 200 once the feed is stopped, for the last run.
    let (generator, server) = system(SWITCHES, &["--max-age", "1h"]);
    wait_for_rows(&server, SWITCHES as u64 * 2);
    let script = random_get_script(SWITCHES);
    let closed = wrk(&server.url("/"), Some(&script), 10);
    let maximum = closed.requests_per_sec;
    report
        .add(
            "openloop",
            "closed-loop maximum (wrk, 64 connections)",
            maximum,
            "req/s",
        )
        .note(format!(
            "p99 {:.2} ms at that load (closed loop)",
            closed.p99_ms
        ));
    let addr = server.url("").trim_start_matches("http://").to_string();
    for share in [0.25, 0.5, 0.75] {
        let rate = maximum * share;
        let (latencies, failures) = scheduled(&addr, rate, seconds);
        let label = format!("{:.0}% of the maximum", share * 100.0);
        report
            .add(
                "openloop",
                format!("{label}: /get p50 (open loop)"),
                quantile(&latencies, 0.5),
                "ms",
            )
            .note(format!(
                "{rate:.0} req/s on a fixed schedule, {CONNECTIONS} connections, {} requests, {failures} failures",
                latencies.len()
            ));
        report.add(
            "openloop",
            format!("{label}: /get p99 (open loop)"),
            quantile(&latencies, 0.99),
            "ms",
        );
        report
            .add(
                "openloop",
                format!("{label}: /get p99.9 (open loop)"),
                quantile(&latencies, 0.999),
                "ms",
            )
            .note(
                "latency from each request's due time: stalls count for every request they delay",
            );
    }
    // The same schedule at 50% with ingest stopped (the generator gone, the store as it was):
    // what is left of the tail is the server and the machine, not the polls.
    drop(generator);
    std::thread::sleep(Duration::from_secs(3));
    let rate = maximum * 0.5;
    let (latencies, failures) = scheduled(&addr, rate, seconds);
    report
        .add(
            "openloop",
            "50% of the maximum, ingest stopped: /get p99 (open loop)",
            quantile(&latencies, 0.99),
            "ms",
        )
        .note(format!(
            "p50 {:.2} ms, p99.9 {:.2} ms, {failures} failures; the feed stopped, nothing else changed",
            quantile(&latencies, 0.5),
            quantile(&latencies, 0.999)
        ));
}
