//! `ufm`: a UFM Telemetry-sized fabric, 20,000 ports × 30 counters polled every second
//! (600k samples a poll), from the generator's `--format ufm`:
//!
//! - in this process: bytes per retained counter sample after a simulated half hour of 2,000
//!   ports through a store (the codec's size on realistic counters), against the 8 B of a raw
//!   `u64`;
//! - live, CSV (`/csv/metrics`): polls on time, poll-to-queryable, server CPU per million
//!   samples, every port fresh in `/list`, RSS;
//! - `/telemetry/top` at that size with wrk: the same question every time (answered from the
//!   per-poll cache) and a different `k` every time (every answer built anew), against `/get`
//!   in the same run;
//! - live, Prometheus text (`/metrics`, 600k sample lines a poll): polls on time and CPU per
//!   million samples.

use std::time::{Duration, Instant};

use fabric_telemetry::generator::ufm::{UfmFabric, COUNTERS};
use fabric_telemetry::server::store::{BlockLimits, Store};
use fabric_telemetry::shared::feed::{self, Freshness, SourceOptions};
use fabric_telemetry::shared::timestamp::{self, MICROS_PER_SEC};

use crate::report::Report;
use crate::stats::on_time;
use crate::system::{rss_bytes, server_polling, wait_for_rows, watch_polls};
use crate::util;
use crate::wrk::wrk;

const SWITCHES: usize = 625;
const PORTS: usize = 32;

pub fn run(report: &mut Report, quick: bool) {
    codec_size(report, quick);
    live(report, quick);
}

/// Bytes per retained counter sample, in this process.
fn codec_size(report: &mut Report, quick: bool) {
    let ticks = if quick { 600 } else { 1800 };
    let mut fabric = UfmFabric::new(250, 8, 1.0, Some(7));
    let mut store = Store::new(BlockLimits::for_retention(Duration::from_secs(3600)));
    let start = timestamp::now_micros() - ticks * MICROS_PER_SEC;
    let options = SourceOptions::default();
    let mut csv = Vec::new();
    let started = Instant::now();
    for tick in 0..ticks {
        fabric.tick();
        // A poll lands a wake-up latency after its grid point (see the memory section).
        let ts = start + tick * MICROS_PER_SEC + 50 + (tick * 7919 % 250);
        fabric.frame().render_csv(ts, &mut csv);
        let batch = feed::parse_answer(
            &csv,
            Some("text/csv"),
            Freshness {
                now: ts,
                max_age: 3 * MICROS_PER_SEC,
            },
            &options,
        );
        store.ingest(&batch);
    }
    let samples = store.retained_rows() * COUNTERS.len() as u64;
    let bytes = store.history_bytes() as f64;
    report
        .add(
            "ufm",
            "bytes per retained counter sample (history heap)",
            bytes / samples as f64,
            "B",
        )
        .baseline(8.0)
        .note(format!(
            "2,000 ports x 30 counters, {ticks} simulated 1 s polls, {samples} samples; \
             baseline: a raw u64; target <= 2 B"
        ));
    let elapsed = started.elapsed().as_secs_f64();
    report
        .add(
            "ufm",
            "in-process parse + ingest rate",
            samples as f64 / elapsed / 1e6,
            "M samples/s",
        )
        .note("one thread: render CSV, parse, store");
}

fn live(report: &mut Report, quick: bool) {
    let seconds = if quick { 10 } else { 20 };
    let ports = SWITCHES * PORTS;
    let samples_per_poll = (ports * COUNTERS.len()) as f64;
    let generator = util::Proc::start(
        util::generator_bin(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--format",
            "ufm",
            "--switches",
            &SWITCHES.to_string(),
            "--ports",
            &PORTS.to_string(),
            "--seed",
            "7",
        ],
    );
    for (path, label) in [("/csv/metrics", "CSV"), ("/metrics", "Prometheus text")] {
        let server = server_polling(&generator.url(path), &["--retention", "5m"]);
        wait_for_rows(&server, ports as u64 * 2);
        let watched = watch_polls(&server, seconds);
        let (rows, cpu) = (watched.rows, watched.cpu_seconds);
        let (on, late, fraction) = on_time(&watched.before, &watched.after);
        report
            .add(
                "ufm",
                format!("{label}: polls on time"),
                fraction,
                "fraction",
            )
            .note(format!(
                "{ports} ports x 30 counters at 1 s: {on} on time, {late} late over {seconds} s"
            ));
        let millions = rows as f64 * COUNTERS.len() as f64 / 1e6;
        report
            .add(
                "ufm",
                format!("{label}: server CPU per million samples"),
                cpu / millions,
                "cpu-s",
            )
            .note(format!(
                "{rows} rows ({:.1} polls of {samples_per_poll} samples) in {seconds} s",
                rows as f64 / ports as f64
            ));
        if path == "/csv/metrics" {
            let list = util::get(&server.url("/telemetry/list?metric=PortXmitDataExtended"));
            report
                .add(
                    "ufm",
                    "ports fresh in /list",
                    list.body.matches("\"timestamp\"").count() as f64,
                    "ports",
                )
                .baseline(ports as f64)
                .note(format!("status {}", list.status));
            report.add(
                "ufm",
                "server RSS (5 min retention)",
                rss_bytes(&server.pid().to_string()) as f64 / 1e6,
                "MB",
            );
            top_throughput(report, &server, quick);
        }
    }
}

/// wrk on `/telemetry/top`, cached and uncached, against `/get` in the same run.
fn top_throughput(report: &mut Report, server: &util::Proc, quick: bool) {
    let seconds = if quick { 5 } else { 10 };
    let top = server.url("/telemetry/top?metric=PortXmitDataExtended&k=10&window=5m");
    let get =
        server.url("/telemetry/get?switch_id=0x0002c903000000a0:1&metric=PortXmitDataExtended");
    let baseline = wrk(&get, None, seconds);
    let cached = wrk(&top, None, seconds);
    report
        .add(
            "ufm",
            "/telemetry/top k=10 (cached per poll): requests/s",
            cached.requests_per_sec,
            "req/s",
        )
        .baseline(baseline.requests_per_sec)
        .note(format!(
            "baseline: /get in the same run; p99 {:.1} ms; {} non-2xx; target >= 100",
            cached.p99_ms, cached.non_2xx
        ));
    for (what, query, note) in [
        (
            "random k (one ranking per poll and window)",
            "\"/telemetry/top?metric=PortXmitDataExtended&window=5m&k=\" .. math.random(1, 1000)",
            "any k is a slice of the poll's ranking",
        ),
        (
            "random window (ranked every time)",
            "\"/telemetry/top?metric=PortXmitDataExtended&k=10&window=\" .. math.random(60, 300) .. \"s\"",
            "20,000 ports ranked from block aggregates per answer",
        ),
    ] {
        let script = std::env::temp_dir().join("fabric-bench-top.lua");
        std::fs::write(
            &script,
            format!(
                "math.randomseed(7)\nrequest = function()\n  return wrk.format(\"GET\", {query})\nend\n"
            ),
        )
        .expect("write wrk script");
        let result = wrk(&top, script.to_str(), seconds);
        report
            .add(
                "ufm",
                format!("/telemetry/top {what}: requests/s"),
                result.requests_per_sec,
                "req/s",
            )
            .baseline(baseline.requests_per_sec)
            .note(format!(
                "{note}; p50 {:.1} ms, p99 {:.1} ms; {} non-2xx; target >= 100",
                result.p50_ms, result.p99_ms, result.non_2xx
            ));
    }
}
