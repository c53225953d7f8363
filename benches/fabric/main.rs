//! The benchmark: `cargo bench --bench fabric [-- SECTION… ] [--quick] [--json PATH]`;
//! `cargo bench --bench fabric -- --help` lists the sections and options. Unknown options,
//! bad values and unknown section names are errors (usage on stderr, exit status 2).
//!
//! Sections, one module each: `http` (wrk against the API vs a bare tiny_http server with the
//! same body size and worker count), `access` (/get with the rate limiter and bearer tokens on
//! vs off, and whether a 1000/s limit holds), `load` (wrk on /get at 100k switches: stale
//! answers and on-time polls under load), `ingest` (10k/100k/1M switches at 1 s: on-time polls,
//! poll-to-queryable latency, CPU per million rows, all switches fresh), `memory` (RSS growth
//! per retained sample after a simulated hour of 10k switches), `durability` (disk bytes per
//! sample and restart time after a simulated hour on disk, ingest rate with `--fsync
//! every-batch` vs in memory, kill -9 at 10k switches and what came back) and `window`
//! (aggregate over 1m vs 1h), `ufm` (20k ports x 30 counters of UFM Telemetry: bytes per
//! counter sample, CPU per million samples from CSV and Prometheus text, `/telemetry/top`
//! throughput), `stream` (200 SSE subscribers: losses, arrival latency, `/get` alongside),
//! `openloop` (`/get` p50/p99/p99.9 on a fixed schedule at 25/50/75% of the maximum); and,
//! only when named, `vm` (beside a real VictoriaMetrics on the same data), `million` (memory
//! per sample at 1M switches x 5 min, simulated in-process), `soak [--switches N]
//! [--minutes M]` (1M switches for 7 minutes by default, through block sealing and expiry),
//! `hostile` (idle
//! connections, slow-loris, connection churn: normal-client p99 and whether threads and
//! descriptors come back down), and `mixsoak [--minutes M]` (10k switches, a mixed read load
//! at half its measured maximum for 30 minutes: RSS, threads and descriptors after warm-up,
//! every 5xx and stale answer). Shared code: `report` (the rows, the table, the JSON), `wrk`
//! (driving wrk, the baseline server), `system` (the processes under test and /proc probes),
//! `stats` (medians, on-time polls, histogram quantiles).
//!
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
mod million;
mod mixsoak;
mod openloop;
mod soak;
mod stream;
mod ufm;
mod vm;
mod window;

use report::Report;

/// Every section: name, whether it runs by default, what it measures (for `--help`), in
/// the order `--help` lists them (they run in the order of `main`).
const SECTIONS: [(&str, bool, &str); 15] = [
    (
        "http",
        true,
        "wrk on /get, /list, /aggregate at 10k switches vs a bare tiny_http server",
    ),
    (
        "access",
        true,
        "/get with the rate limiter and bearer tokens on vs off; a 1000/s limit",
    ),
    (
        "load",
        true,
        "/get at full speed at 100k switches: stale answers, polls on time",
    ),
    (
        "ingest",
        true,
        "10k/100k/1M switches at 1 s: polls on time, poll-to-queryable, CPU",
    ),
    (
        "durability",
        true,
        "disk bytes per sample, restart time, --fsync every-batch, kill -9",
    ),
    (
        "memory",
        true,
        "bytes per retained sample after a simulated hour of 10k switches",
    ),
    (
        "window",
        true,
        "aggregate over 1m vs 1h (runs memory first, for its store)",
    ),
    (
        "ufm",
        true,
        "20k ports x 30 counters of UFM Telemetry at 1 s: bytes/sample, CPU, top",
    ),
    (
        "stream",
        true,
        "200 /telemetry/stream subscribers at 1,000 switches: losses, latency, /get alongside",
    ),
    (
        "openloop",
        true,
        "/get latency on a fixed schedule at 25/50/75% of the maximum (no coordinated omission)",
    ),
    (
        "vm",
        false,
        "our server and VictoriaMetrics side by side on the same data: CPU, memory, disk, counts",
    ),
    (
        "soak",
        false,
        "1M switches for 7 min through block sealing and expiry",
    ),
    (
        "million",
        false,
        "1M switches x 5 min retention simulated in-process: memory per sample",
    ),
    (
        "hostile",
        false,
        "idle connections, slow-loris, slowhttptest, connection churn",
    ),
    (
        "mixsoak",
        false,
        "10k switches, mixed reads at half the maximum for 30 min",
    ),
];

const DEFAULT_JSON: &str = "target/bench-results.json";

fn usage() -> String {
    let mut text = String::from(
        "fabric-telemetry benchmark\n\n\
         usage: cargo bench --bench fabric [-- [SECTION...] [OPTIONS]]\n",
    );
    for (heading, default) in [
        ("sections run by default", true),
        ("only when named", false),
    ] {
        text.push_str(&format!("\n{heading}:\n"));
        for (name, _, what) in SECTIONS.iter().filter(|s| s.1 == default) {
            text.push_str(&format!("  {name:<12}{what}\n"));
        }
    }
    text.push_str(&format!(
        "\noptions:\n  \
         --quick         shorter runs of the default sections\n  \
         --switches N    soak: fabric size (default 1000000)\n  \
         --minutes M     soak and mixsoak: duration (default 7 and 30)\n  \
         --json PATH     where the JSON results go (default {DEFAULT_JSON})\n  \
         -h, --help      this text\n\n\
         Needs wrk (and slowhttptest for hostile). Compare ratios to the baselines, not\n\
         absolute numbers: the machine is usually shared.\n"
    ));
    text
}

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

/// The value of `flag`: the next argument, unless it is another option (`cargo bench` appends
/// `--bench`, which must not become a value).
fn value(parser: &mut lexopt::Parser, flag: &str) -> Result<std::ffi::OsString, String> {
    let value = parser.value().map_err(|e| e.to_string())?;
    if value.to_string_lossy().starts_with("--") {
        return Err(format!("missing value for option '{flag}'"));
    }
    Ok(value)
}

/// The value of `flag`, a whole number ≥ 1.
fn positive<T: std::str::FromStr + PartialOrd + From<u8>>(
    parser: &mut lexopt::Parser,
    flag: &str,
) -> Result<T, String> {
    let value = value(parser, flag)?;
    let text = value.to_string_lossy();
    text.parse::<T>()
        .ok()
        .filter(|n| *n >= T::from(1))
        .ok_or_else(|| format!("{flag}: expected a whole number >= 1, got '{text}'"))
}

/// The options, or `None` for `--help`.
fn parse(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Option<Options>, String> {
    use lexopt::Arg::{Long, Short, Value};
    let mut sections = Vec::new();
    let mut quick = false;
    let mut json_path = DEFAULT_JSON.to_string();
    let (mut switches, mut minutes) = (None, None);
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(None),
            Long("quick") => quick = true,
            Long("switches") => switches = Some(positive(&mut parser, "--switches")?),
            Long("minutes") => minutes = Some(positive(&mut parser, "--minutes")?),
            Long("json") => {
                let value = value(&mut parser, "--json")?;
                json_path = value
                    .into_string()
                    .map_err(|v| format!("--json: not UTF-8: {v:?}"))?;
            }
            // `cargo bench` passes `--bench` to every benchmark binary.
            Long("bench") => {}
            Value(name) => {
                let name = name.to_string_lossy().into_owned();
                if !SECTIONS.iter().any(|s| s.0 == name) {
                    let known: Vec<&str> = SECTIONS.iter().map(|s| s.0).collect();
                    return Err(format!(
                        "unknown section '{name}'; known sections: {}",
                        known.join(", ")
                    ));
                }
                sections.push(name);
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    if sections.is_empty() {
        sections = SECTIONS
            .iter()
            .filter(|s| s.1)
            .map(|s| s.0.to_string())
            .collect();
    }
    let named = |s: &str| sections.iter().any(|x| x == s);
    if switches.is_some() && !named("soak") {
        return Err("--switches applies only to the soak section; name it".to_string());
    }
    if minutes.is_some() && !named("soak") && !named("mixsoak") {
        return Err(
            "--minutes applies only to the soak and mixsoak sections; name one".to_string(),
        );
    }
    Ok(Some(Options {
        sections,
        quick,
        json_path,
        soak_switches: switches.unwrap_or(1_000_000),
        soak_minutes: minutes.unwrap_or(7),
        mixsoak_minutes: minutes.unwrap_or(30),
    }))
}

/// The options from the command line; `--help` prints the usage and exits 0, a mistake prints
/// it to stderr and exits 2.
fn options() -> Options {
    match parse(std::env::args_os().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{}", usage());
            std::process::exit(0);
        }
        Err(error) => {
            eprintln!("fabric benchmark: {error}\n\n{}", usage());
            std::process::exit(2);
        }
    }
}

fn main() {
    let options = options();
    // The in-process memory figures (`memory`, `million`) are for the allocator as the
    // server sets it up.
    fabric_telemetry::shared::process::limit_allocator_retention();
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
    if wants("ufm") {
        ufm::run(&mut report, options.quick);
    }
    if wants("stream") {
        stream::run(&mut report, options.quick);
    }
    if wants("openloop") {
        openloop::run(&mut report, options.quick);
    }
    if wants("vm") {
        vm::run(&mut report, options.quick);
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
    if wants("million") {
        million::run(&mut report, options.quick);
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
