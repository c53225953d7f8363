//! The benchmark: `cargo bench --bench fabric [-- SECTION… ] [--quick] [--json PATH]`.
//!
//! Sections: `http` (wrk against the API vs a bare tiny_http server with the same body size
//! and worker count), `access` (/get with the rate limiter and bearer tokens on vs off, and
//! whether a 1000/s limit holds), `load` (wrk on /get at 100k switches: stale answers and on-time polls
//! under load), `ingest` (10k/100k/1M switches at 1 s: on-time polls, poll-to-queryable
//! latency, CPU per million rows, all switches fresh), `memory` (RSS growth per retained sample
//! after a simulated hour of 10k switches), `durability` (disk bytes per sample and restart
//! time after a simulated hour on disk, ingest rate with `--fsync every-batch` vs in memory,
//! kill -9 at 10k switches and what came back) and `window` (aggregate over 1m vs 1h); and, only
//! when named, `soak [--switches N] [--minutes M]` (1M switches for 7 minutes by default,
//! through block sealing and expiry), and `hostile` (idle connections, slow-loris, connection
//! churn: normal-client p99 and whether threads and descriptors come back down), and
//! `mixsoak [--minutes M]` (10k switches, a mixed read load at half its measured maximum for
//! 30 minutes: RSS, threads and descriptors after warm-up, every 5xx and stale answer).
//! Every throughput figure is paired with a baseline measured in the same run; the machine is
//! shared and noisy, so compare ratios, not absolute numbers. Needs `wrk` (Debian package).

#[path = "../../tests/util.rs"]
mod util;

mod report;
mod stats;
mod system;
mod wrk;

mod access;
mod durability;
mod hostile;
mod http;
mod ingest;
mod load;
mod memory;
mod mixsoak;
mod soak;
mod window;

use report::Report;

struct Options {
    sections: Vec<String>,
    quick: bool,
    json_path: String,
    /// For `soak`: fabric size and duration.
    soak_switches: usize,
    soak_minutes: u64,
    /// For `mixsoak`: duration.
    mixsoak_minutes: u64,
}

fn options() -> Options {
    let mut sections = Vec::new();
    let mut quick = false;
    let mut json_path = "target/bench-results.json".to_string();
    let (mut soak_switches, mut soak_minutes) = (1_000_000, 7);
    let mut mixsoak_minutes = 30;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--switches" => {
                soak_switches = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(soak_switches)
            }
            "--minutes" => {
                soak_minutes = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(soak_minutes);
                mixsoak_minutes = soak_minutes;
            }
            "--json" => json_path = args.next().unwrap_or(json_path),
            "--bench" => {}
            other if !other.starts_with('-') => sections.push(other.to_string()),
            _ => {}
        }
    }
    if sections.is_empty() {
        sections = [
            "http",
            "access",
            "load",
            "ingest",
            "durability",
            "memory",
            "window",
        ]
        .map(String::from)
        .to_vec();
    }
    Options {
        sections,
        quick,
        json_path,
        soak_switches,
        soak_minutes,
        mixsoak_minutes,
    }
}

fn main() {
    let options = options();
    let mut report = Report::default();
    println!(
        "fabric-telemetry benchmark: sections {:?}{}",
        options.sections,
        if options.quick { " (quick)" } else { "" }
    );
    let wants = |s: &str| options.sections.iter().any(|x| x == s);
    if wants("http") {
        http::run(&mut report, options.quick);
    }
    if wants("load") {
        load::run(&mut report, options.quick);
    }
    if wants("ingest") {
        ingest::run(&mut report, options.quick);
    }
    if wants("hostile") {
        hostile::run(&mut report);
    }
    if wants("mixsoak") {
        mixsoak::run(&mut report, options.mixsoak_minutes);
    }
    if wants("access") {
        access::run(&mut report, options.quick);
    }
    if wants("soak") {
        soak::run(&mut report, options.soak_switches, options.soak_minutes);
    }
    if wants("durability") {
        durability::run(&mut report, options.quick);
    }
    if wants("memory") || wants("window") {
        let (store, last_ts) = memory::run(&mut report, options.quick);
        if wants("window") {
            window::run(&mut report, &store, last_ts);
        }
    }
    report.print_table();
    let json = report.to_json();
    if let Some(dir) = std::path::Path::new(&options.json_path).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::write(
        &options.json_path,
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    ) {
        Ok(()) => println!("\nJSON: {}", options.json_path),
        Err(e) => eprintln!("cannot write {}: {e}", options.json_path),
    }
}
