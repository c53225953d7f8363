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

#[path = "../tests/util.rs"]
mod util;

use std::io::Cursor;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fabric_telemetry::feed::{self, Freshness};
use fabric_telemetry::generator::Fabric;
use fabric_telemetry::ingest::{self, IngestBatch, Outlets, Persistence};
use fabric_telemetry::persist::{self, FsyncPolicy, PersistConfig, StorageStats};
use fabric_telemetry::stats::IngestStats;
use fabric_telemetry::store::file::BlockFileWriter;
use fabric_telemetry::store::{BlockLimits, Store, StoreHandle};
use fabric_telemetry::timestamp::{self, MICROS_PER_SEC};
use fabric_telemetry::watch::Watch;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

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

/// One line of the report.
struct Figure {
    section: &'static str,
    name: String,
    value: f64,
    unit: &'static str,
    baseline: Option<f64>,
    note: String,
}

#[derive(Default)]
struct Report(Vec<Figure>);

impl Report {
    fn add(
        &mut self,
        section: &'static str,
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
    ) -> &mut Figure {
        let figure = Figure {
            section,
            name: name.into(),
            value,
            unit,
            baseline: None,
            note: String::new(),
        };
        println!(
            "  {:<8} {:<52} {:>14.3} {}",
            figure.section, figure.name, figure.value, figure.unit
        );
        self.0.push(figure);
        self.0.last_mut().expect("just pushed")
    }

    fn to_json(&self) -> Value {
        Value::Array(
            self.0
                .iter()
                .map(|f| {
                    json!({
                        "section": f.section, "name": f.name, "value": f.value, "unit": f.unit,
                        "baseline": f.baseline, "ratio": f.baseline.map(|b| f.value / b), "note": f.note,
                    })
                })
                .collect(),
        )
    }

    fn print_table(&self) {
        println!(
            "\n{:<8} {:<52} {:>14} {:<8} {:>14} {:>7}  note",
            "section", "figure", "value", "unit", "baseline", "ratio"
        );
        for f in &self.0 {
            let (baseline, ratio) = match f.baseline {
                Some(b) => (format!("{b:.3}"), format!("{:.3}", f.value / b)),
                None => (String::new(), String::new()),
            };
            println!(
                "{:<8} {:<52} {:>14.3} {:<8} {:>14} {:>7}  {}",
                f.section, f.name, f.value, f.unit, baseline, ratio, f.note
            );
        }
    }
}

impl Figure {
    fn baseline(&mut self, baseline: f64) -> &mut Figure {
        self.baseline = Some(baseline);
        self
    }

    fn note(&mut self, note: impl Into<String>) -> &mut Figure {
        self.note = note.into();
        self
    }
}

// ---------------------------------------------------------------------------------------
// wrk and the baseline server

#[derive(Debug, Clone, Copy, Default)]
struct WrkResult {
    requests_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    non_2xx: u64,
    requests: u64,
}

fn parse_ms(text: &str) -> f64 {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (text, 1.0)
    };
    number.parse::<f64>().unwrap_or(f64::NAN) * factor
}

fn wrk(url: &str, script: Option<&str>, seconds: u64) -> WrkResult {
    wrk_with(url, script, seconds, &[])
}

/// `wrk` with extra request headers (`"Name: value"`).
fn wrk_with(url: &str, script: Option<&str>, seconds: u64, headers: &[&str]) -> WrkResult {
    let mut command = Command::new("wrk");
    for header in headers {
        command.args(["-H", header]);
    }
    command.args([
        "-t2",
        "-c64",
        &format!("-d{seconds}s"),
        "--latency",
        "--timeout",
        "5s",
    ]);
    if let Some(script) = script {
        command.args(["-s", script]);
    }
    let output = command
        .arg(url)
        .output()
        .expect("wrk is installed (apt-get install wrk)");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut result = WrkResult::default();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => result.p50_ms = parse_ms(v),
            ["99%", v] => result.p99_ms = parse_ms(v),
            ["Requests/sec:", v] => result.requests_per_sec = v.parse().unwrap_or(0.0),
            ["Non-2xx", "or", "3xx", "responses:", v] => result.non_2xx = v.parse().unwrap_or(0),
            [n, "requests", "in", ..] => result.requests = n.parse().unwrap_or(0),
            _ => {}
        }
    }
    result
}

struct Shared(Arc<Vec<u8>>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A bare tiny_http server answering `body_len` bytes of JSON to everything, with `workers`
/// threads: the floor our server's overhead is measured against.
struct Baseline {
    server: Arc<tiny_http::Server>,
    workers: Vec<JoinHandle<()>>,
    addr: SocketAddr,
}

impl Baseline {
    fn start(body_len: usize, workers: usize) -> Baseline {
        // The same listener set-up as our servers (TCP_NODELAY), so the ratio is our overhead.
        let listener = fabric_telemetry::http::bind("127.0.0.1:0").expect("baseline binds");
        let server = Arc::new(
            tiny_http::Server::from_listener(listener, Default::default())
                .expect("baseline serves"),
        );
        let addr = server.server_addr().to_ip().expect("ip listener");
        let mut body = vec![b' '; body_len.max(2)];
        body[0] = b'{';
        body[body_len.max(2) - 1] = b'}';
        let body = Arc::new(body);
        let workers = (0..workers)
            .map(|_| {
                let server = Arc::clone(&server);
                let body = Arc::clone(&body);
                std::thread::spawn(move || {
                    let header = tiny_http::Header::from_bytes(
                        &b"Content-Type"[..],
                        &b"application/json"[..],
                    )
                    .expect("header");
                    while let Ok(request) = server.recv() {
                        let len = body.len();
                        let reader = Cursor::new(Shared(Arc::clone(&body)));
                        let response = tiny_http::Response::new(
                            200.into(),
                            vec![header.clone()],
                            reader,
                            Some(len),
                            None,
                        );
                        let _ = request.respond(response);
                    }
                })
            })
            .collect();
        Baseline {
            server,
            workers,
            addr,
        }
    }

    fn stop(self) {
        for _ in &self.workers {
            self.server.unblock();
        }
        for worker in self.workers {
            let _ = worker.join();
        }
    }
}

/// Field-wise medians of several wrk runs.
fn median_result(runs: &[WrkResult]) -> WrkResult {
    let pick = |f: fn(&WrkResult) -> f64| median(runs.iter().map(f).collect());
    WrkResult {
        requests_per_sec: pick(|r| r.requests_per_sec),
        p50_ms: pick(|r| r.p50_ms),
        p99_ms: pick(|r| r.p99_ms),
        non_2xx: 0,
        requests: 0,
    }
}

fn random_get_script(n_switches: usize) -> String {
    let path = std::env::temp_dir().join(format!("fabric-bench-get-{n_switches}.lua"));
    let script = format!(
        "math.randomseed(42)\nrequest = function()\n  return wrk.format(\"GET\", \"/telemetry/get?switch_id=switch\" .. math.random(1, {n_switches}) .. \"&metric=bandwidth\")\nend\n"
    );
    std::fs::write(&path, script).expect("write wrk script");
    path.to_string_lossy().into_owned()
}

// ---------------------------------------------------------------------------------------
// processes

fn cpu_seconds(pid: u32) -> f64 {
    // Fields 14 and 15 of /proc/PID/stat are utime and stime in USER_HZ (100 on Linux).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_bytes(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn system(n_switches: usize, extra_server_args: &[&str]) -> (util::Proc, util::Proc) {
    let generator = util::Proc::start(
        util::generator_bin(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--switches",
            &n_switches.to_string(),
            "--log-level",
            "info",
        ],
    );
    let server = server_polling(&generator.url("/counters"), extra_server_args);
    (generator, server)
}

/// A metrics server on a free port polling `source`, plus `extra` flags.
fn server_polling(source: &str, extra: &[&str]) -> util::Proc {
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--source",
        source,
        "--log-level",
        "info",
    ];
    args.extend_from_slice(extra);
    util::Proc::start(util::server_bin(), &args)
}

fn source_stats(server: &util::Proc) -> Value {
    util::stats(server)["ingest"]["sources"][0].clone()
}

fn wait_for_rows(server: &util::Proc, rows: u64) {
    util::wait_for("the first polls to land", Duration::from_secs(120), || {
        (util::stats(server)["ingest"]["rows_accepted"].as_u64()? >= rows).then_some(())
    });
}

/// (status, entries) of /list: entries counted without parsing a huge body into a tree.
fn list_fresh(server: &util::Proc) -> (u16, usize) {
    let answer = util::get(&server.url("/telemetry/list?metric=bandwidth"));
    (answer.status, answer.body.matches("\"timestamp\"").count())
}

// ---------------------------------------------------------------------------------------
// sections

fn http_section(report: &mut Report, quick: bool) {
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

/// `/get` throughput with the rate limiter (and bearer tokens) on, against the same server
/// without them, and whether a real limit holds.
fn access_section(report: &mut Report, quick: bool) {
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

fn load_section(report: &mut Report, quick: bool) {
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

fn ingest_section(report: &mut Report, quick: bool) {
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
        let before = source_stats(&server);
        let rows_before = util::stats(&server)["ingest"]["rows_accepted"]
            .as_u64()
            .unwrap_or(0);
        let (server_cpu, generator_cpu) = (cpu_seconds(server.pid()), cpu_seconds(generator.pid()));
        std::thread::sleep(Duration::from_secs(seconds));
        let after = source_stats(&server);
        let rows = util::stats(&server)["ingest"]["rows_accepted"]
            .as_u64()
            .unwrap_or(0)
            - rows_before;
        let server_cpu = cpu_seconds(server.pid()) - server_cpu;
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

/// A simulated hour of 10k switches pushed through a store at full speed; returns the store.
fn memory_section(report: &mut Report, quick: bool) -> (Store, i64) {
    let n = 10_000;
    let ticks = if quick { 900 } else { 3600 };
    let mut fabric = Fabric::new(n, Some(1));
    let mut csv = Vec::new();
    let start = timestamp::now_micros() - ticks * MICROS_PER_SEC;
    let rss_before = rss_bytes("self");
    let mut store = Store::new(BlockLimits::for_retention(Duration::from_secs(3600)));
    let mut jitter = rand::rngs::StdRng::seed_from_u64(2);
    let started = Instant::now();
    let mut ts = start;
    for tick in 0..ticks {
        fabric.tick();
        // Real ticks land a wake-up latency after their grid point: measured on this
        // machine, 50–300 µs independently per tick, with rare spikes to ~1.5 ms.
        let wake_up = if jitter.random_bool(0.01) {
            jitter.random_range(300..1_500)
        } else {
            jitter.random_range(50..300)
        };
        ts = start + tick * MICROS_PER_SEC + wake_up;
        fabric.render_csv(ts, &mut csv);
        let batch = feed::parse_feed(
            csv.as_slice(),
            Freshness {
                now: ts,
                max_age: 3 * MICROS_PER_SEC,
            },
        );
        store.ingest(&batch);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rss_after = rss_bytes("self");
    let samples = store.retained_rows() * 3;
    let grown = rss_after.saturating_sub(rss_before) as f64;
    report
        .add(
            "memory",
            "bytes per retained sample (RSS growth)",
            grown / samples as f64,
            "B",
        )
        .baseline(16.0)
        .note(format!(
            "{} switches × {ticks} s × 3 metrics = {samples} samples; baseline = f64 + timestamp",
            n
        ));
    report
        .add(
            "memory",
            "bytes per retained sample (history heap)",
            store.history_bytes() as f64 / samples as f64,
            "B",
        )
        .baseline(16.0);
    report.add(
        "memory",
        "bytes per retained row (RSS growth)",
        grown / store.retained_rows() as f64,
        "B",
    );
    report
        .add(
            "memory",
            "ingest rate, parse + store, one thread",
            store.retained_rows() as f64 / elapsed / 1e6,
            "M rows/s",
        )
        .note("CSV rendered by the generator, parsed, stored");
    (store, ts)
}

/// The upper bound of the bucket holding quantile `q` of the polls between two readings of
/// a source's cumulative latency histogram (infinite past the last bound).
fn histogram_quantile(before: &Value, after: &Value, q: f64) -> f64 {
    let buckets = |v: &Value| -> Vec<(f64, u64)> {
        v["poll_to_queryable_histogram"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|b| {
                        (
                            b[0].as_f64().unwrap_or(f64::INFINITY),
                            b[1].as_u64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let (b0, b1) = (buckets(before), buckets(after));
    let deltas: Vec<(f64, u64)> = b1
        .iter()
        .zip(&b0)
        .map(|((le, c1), (_, c0))| (*le, c1 - c0))
        .collect();
    let total = deltas.last().map_or(0, |d| d.1);
    if total == 0 {
        return f64::NAN;
    }
    let rank = (q * total as f64).ceil() as u64;
    deltas
        .iter()
        .find(|(_, c)| *c >= rank)
        .map_or(f64::INFINITY, |(le, _)| *le)
}

/// Polls on time and late between two readings of a source's stats, and the on-time fraction.
fn on_time(before: &Value, after: &Value) -> (u64, u64, f64) {
    let delta = |key: &str| after[key].as_u64().unwrap_or(0) - before[key].as_u64().unwrap_or(0);
    let (on_time, late) = (delta("polls_on_time"), delta("polls_late"));
    (
        on_time,
        late,
        on_time as f64 / (on_time + late).max(1) as f64,
    )
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn window_section(report: &mut Report, store: &Store, last_ts: i64) {
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

/// Ingest for minutes, through block sealing and expiry: `soak [--switches N] [--minutes M]`
/// (default 1M switches, 7 minutes, `--retention 5m`). Prints a line every 30 s.
fn soak_section(report: &mut Report, n: usize, minutes: u64) {
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

/// What one client thread of the mixed soak saw.
#[derive(Default)]
struct MixTally {
    requests: u64,
    by_class: [u64; 5], // 2xx, 3xx, 4xx, 503, other 5xx
    transport_errors: u64,
    latencies_us: Vec<u32>,
}

/// The mixed load: mostly `/get`, some of every other read an operator or scraper makes.
fn mixed_request(rng: &mut rand::rngs::StdRng, n: usize) -> String {
    let switch = rng.random_range(1..=n);
    match rng.random_range(0..100) {
        0..=84 => format!("/telemetry/get?switch_id=switch{switch}&metric=latency"),
        85..=88 => "/telemetry/list?metric=bandwidth".to_string(),
        89..=92 => "/telemetry/aggregate".to_string(),
        93..=96 => format!("/telemetry/history?switch_id=switch{switch}&metric=bandwidth&from=5m"),
        97..=98 => "/telemetry/stats".to_string(),
        _ => "/metrics".to_string(),
    }
}

/// Runs `threads` keep-alive clients for `duration`, each sending `per_thread_rate` requests
/// per second on a fixed schedule (open loop: a slow answer does not slow the schedule), or
/// as fast as it can when the rate is `None`.
fn mixed_load(
    base: &str,
    n: usize,
    threads: usize,
    per_thread_rate: Option<f64>,
    duration: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<JoinHandle<MixTally>> {
    (0..threads)
        .map(|t| {
            let base = base.to_string();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let agent = util::client();
                let mut rng = rand::rngs::StdRng::seed_from_u64(100 + t as u64);
                let mut tally = MixTally::default();
                let started = Instant::now();
                let mut due = started;
                while started.elapsed() < duration
                    && !stop.load(std::sync::atomic::Ordering::Relaxed)
                {
                    if let Some(rate) = per_thread_rate {
                        due += Duration::from_secs_f64(1.0 / rate);
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                    }
                    let url = format!("{base}{}", mixed_request(&mut rng, n));
                    let sent = Instant::now();
                    let answer = agent.get(&url).call();
                    let status = match answer {
                        Ok(mut response) => {
                            let _ = response.body_mut().read_to_vec();
                            response.status().as_u16()
                        }
                        Err(_) => 0,
                    };
                    tally
                        .latencies_us
                        .push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    tally.requests += 1;
                    match status {
                        0 => tally.transport_errors += 1,
                        200..=299 => tally.by_class[0] += 1,
                        300..=399 => tally.by_class[1] += 1,
                        400..=499 => tally.by_class[2] += 1,
                        503 => tally.by_class[3] += 1,
                        _ => tally.by_class[4] += 1,
                    }
                }
                tally
            })
        })
        .collect()
}

fn merge_tallies(handles: Vec<JoinHandle<MixTally>>) -> MixTally {
    let mut all = MixTally::default();
    for handle in handles {
        if let Ok(t) = handle.join() {
            all.requests += t.requests;
            all.transport_errors += t.transport_errors;
            for (a, b) in all.by_class.iter_mut().zip(t.by_class) {
                *a += b;
            }
            all.latencies_us.extend(t.latencies_us);
        }
    }
    all.latencies_us.sort_unstable();
    all
}

fn percentile_ms(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted_us.len() as f64 * q) as usize).min(sorted_us.len() - 1);
    f64::from(sorted_us[idx]) / 1000.0
}

/// (seconds since start, RSS bytes, threads, open descriptors) of the server.
type ProcSample = (f64, u64, u64, u64);

/// Issue 6's soak: a mixed read load at half the measured maximum against 10k switches, for
/// `minutes`; RSS, threads and descriptors sampled every 30 s; every status counted.
fn mixed_soak_section(report: &mut Report, minutes: u64) {
    let n = 10_000;
    let clients = 8;
    // Retention 5 m, so history reaches its steady size (retention + one block span) within
    // the warm-up; at the default hour it would rightly grow for the first hour.
    let (_generator, server) = system(n, &["--retention", "5m"]);
    wait_for_rows(&server, 3 * n as u64);
    let base = format!("http://{}", server.addr);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe_seconds = 20;
    let max = merge_tallies(mixed_load(
        &base,
        n,
        clients,
        None,
        Duration::from_secs(probe_seconds),
        Arc::clone(&stop),
    ));
    let max_rate = max.requests as f64 / probe_seconds as f64;
    report
        .add(
            "mixsoak",
            "mixed load, maximum (8 closed-loop clients, 20 s)",
            max_rate,
            "req/s",
        )
        .note(format!("{} non-2xx", max.requests - max.by_class[0]));
    let rate = max_rate / 2.0;
    let pid = server.pid();
    let load = mixed_load(
        &base,
        n,
        clients,
        Some(rate / clients as f64),
        Duration::from_secs(minutes * 60),
        Arc::clone(&stop),
    );
    let started = Instant::now();
    let warm_up = Duration::from_secs((minutes * 60 / 3).max(7 * 60).min(minutes * 60 / 2));
    let mut samples: Vec<ProcSample> = Vec::new();
    while started.elapsed() < Duration::from_secs(minutes * 60) {
        std::thread::sleep(Duration::from_secs(30));
        let rss = rss_bytes(&pid.to_string());
        let (threads, fds) = threads_and_fds(pid);
        let t = started.elapsed().as_secs_f64();
        if t >= (minutes * 60) as f64 {
            break; // the clients have stopped: their connections are gone
        }
        println!(
            "  mixsoak  t={t:>5.0}s rss={:.1} MB threads={threads} fds={fds}",
            rss as f64 / 1e6
        );
        samples.push((t, rss, threads, fds));
    }
    let tally = merge_tallies(load);
    let after: Vec<_> = samples
        .iter()
        .filter(|s| s.0 >= warm_up.as_secs_f64())
        .collect();
    let spread = |f: &dyn Fn(&ProcSample) -> u64| {
        let values: Vec<u64> = after.iter().map(|s| f(s)).collect();
        let (lo, hi) = (
            values.iter().copied().min().unwrap_or(0),
            values.iter().copied().max().unwrap_or(0),
        );
        (
            lo,
            hi,
            if lo == 0 {
                f64::NAN
            } else {
                (hi - lo) as f64 / lo as f64 * 100.0
            },
        )
    };
    let label = format!("{minutes} min at 50% ({rate:.0} req/s)");
    report
        .add(
            "mixsoak",
            format!("{label}: achieved rate"),
            tally.requests as f64 / (minutes * 60) as f64,
            "req/s",
        )
        .baseline(rate);
    let (lo, hi, pct) = spread(&|s| s.1);
    report
        .add(
            "mixsoak",
            format!("{label}: RSS spread after warm-up"),
            pct,
            "%",
        )
        .note(format!(
            "{:.1}–{:.1} MB over {} samples after {} s; target within 5%",
            lo as f64 / 1e6,
            hi as f64 / 1e6,
            after.len(),
            warm_up.as_secs()
        ));
    // Drift: the median RSS of the last third of the samples after warm-up against the first.
    let third = (after.len() / 3).max(1);
    if after.len() >= 3 {
        let median_rss = |xs: &[&ProcSample]| median(xs.iter().map(|s| s.1 as f64).collect());
        let early = median_rss(&after[..third]);
        let late = median_rss(&after[after.len() - third..]);
        report
            .add(
                "mixsoak",
                format!("{label}: RSS drift, last third vs first third after warm-up"),
                (late / early - 1.0) * 100.0,
                "%",
            )
            .note(format!("medians {:.1} → {:.1} MB", early / 1e6, late / 1e6));
    }
    let (lo, hi, pct) = spread(&|s| s.2);
    report
        .add(
            "mixsoak",
            format!("{label}: threads spread after warm-up"),
            pct,
            "%",
        )
        .note(format!("{lo}–{hi}"));
    let (lo, hi, pct) = spread(&|s| s.3);
    report
        .add(
            "mixsoak",
            format!("{label}: fds spread after warm-up"),
            pct,
            "%",
        )
        .note(format!("{lo}–{hi}"));
    report
        .add(
            "mixsoak",
            format!("{label}: 5xx answers"),
            (tally.by_class[3] + tally.by_class[4]) as f64,
            "count",
        )
        .note(format!(
            "of {} requests; 503 (stale) {}, other 5xx {}, 4xx {}, transport errors {}",
            tally.requests,
            tally.by_class[3],
            tally.by_class[4],
            tally.by_class[2],
            tally.transport_errors
        ));
    report.add(
        "mixsoak",
        format!("{label}: p50"),
        percentile_ms(&tally.latencies_us, 0.50),
        "ms",
    );
    report.add(
        "mixsoak",
        format!("{label}: p99"),
        percentile_ms(&tally.latencies_us, 0.99),
        "ms",
    );
}

/// Threads and open descriptors of a process.
fn threads_and_fds(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    (threads, fds)
}

/// p99 (ms) of `n` sequential keep-alive GETs by one well-behaved client, and how many failed.
fn normal_client_p99(url: &str, n: usize) -> (f64, usize) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut times = Vec::with_capacity(n);
    let mut failed = 0;
    for _ in 0..n {
        let started = Instant::now();
        match agent.get(url).call() {
            Ok(r) if r.status().as_u16() == 200 => {
                times.push(started.elapsed().as_secs_f64() * 1e3)
            }
            _ => failed += 1,
        }
    }
    times.sort_by(f64::total_cmp);
    let p99 = times
        .get(((times.len().max(1) - 1) as f64 * 0.99) as usize)
        .copied()
        .unwrap_or(f64::NAN);
    (p99, failed)
}

/// A third-party attacker: Debian's slowhttptest in its four modes (500 connections, ~12 s
/// each) while a normal client measures p99 latency; target p99 < 100 ms, 0 failures.
fn slowhttptest_attacks(report: &mut Report, server: &util::Proc, url: &str) {
    if std::process::Command::new("slowhttptest")
        .arg("-h")
        .output()
        .is_err()
    {
        eprintln!("slowhttptest not installed (apt-get install slowhttptest): skipped");
        return;
    }
    let target = server.url("/telemetry/list?metric=bandwidth");
    let common = [
        "-c", "500", "-r", "200", "-l", "12", "-p", "3", "-u", &target,
    ];
    let modes: [(&str, &[&str]); 4] = [
        ("slow headers (-H)", &["-H", "-i", "2", "-x", "24"]),
        (
            "slow body (-B)",
            &["-B", "-i", "2", "-x", "24", "-s", "8192"],
        ),
        (
            "slow read (-X)",
            &[
                "-X", "-k", "4", "-n", "2", "-w", "8", "-y", "32", "-z", "16",
            ],
        ),
        ("range (-R)", &["-R", "-a", "10", "-b", "3000"]),
    ];
    for (mode, args) in modes {
        let Ok(mut attacker) = std::process::Command::new("slowhttptest")
            .args(args)
            .args(common)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
        else {
            continue;
        };
        std::thread::sleep(Duration::from_secs(3));
        let (p99, failed) = normal_client_p99(url, 300);
        let during = threads_and_fds(server.pid());
        let started = Instant::now();
        while attacker.try_wait().ok().flatten().is_none() {
            if started.elapsed() > Duration::from_secs(30) {
                let _ = attacker.kill();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let stats: serde_json::Value = ureq::get(&server.url("/telemetry/stats"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .and_then(|body| serde_json::from_str(&body).ok())
            .unwrap_or_default();
        report
            .add(
                "hostile",
                format!("normal client p99 during slowhttptest {mode}, 500 connections"),
                p99,
                "ms",
            )
            .note(format!(
                "{failed} of 300 failed (target p99 < 100 ms, 0 failed); threads {} fds {} during; http counters after: {}",
                during.0, during.1, stats["http"]
            ));
    }
}

/// Idle connections, slow-loris, connect/close churn: normal clients keep being answered, and
/// threads and descriptors come back down when the attackers leave.
fn hostile_section(report: &mut Report) {
    use std::io::Write;
    let _ = fabric_telemetry::http::raise_fd_limit();
    let (_generator, server) = system(10_000, &[]);
    wait_for_rows(&server, 20_000);
    let url = server.url("/telemetry/get?switch_id=switch1&metric=bandwidth");
    let pid = server.pid();
    let settle = || std::thread::sleep(Duration::from_secs(8));
    let baseline = threads_and_fds(pid);
    let (p99, _) = normal_client_p99(&url, 200);
    report.add("hostile", "normal client p99, no attack", p99, "ms");

    // Below the default --max-connections (1024): beyond it connections are refused with 503
    // until idle ones hit --request-timeout (measured separately below).
    let idle: Vec<std::net::TcpStream> = (0..900)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&server.addr, Duration::from_millis(500)).ok()
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let (p99, failed) = normal_client_p99(&url, 200);
    let during = threads_and_fds(pid);
    report
        .add(
            "hostile",
            format!("normal client p99 with {} idle connections", idle.len()),
            p99,
            "ms",
        )
        .note(format!(
            "{failed} of 200 failed; server threads {} fds {} (baseline {} / {})",
            during.0, during.1, baseline.0, baseline.1
        ));
    drop(idle);

    let mut loris: Vec<std::net::TcpStream> = (0..500)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&server.addr, Duration::from_millis(500)).ok()
        })
        .collect();
    let header = b"GET /telemetry/stats HTTP/1.1\r\nX-Slow: ";
    let trickle = std::thread::spawn(move || {
        for second in 0..15 {
            for stream in &mut loris {
                let _ = stream.write_all(&[header[second % header.len()]]);
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        loris.len()
    });
    std::thread::sleep(Duration::from_secs(3));
    let (p99, failed) = normal_client_p99(&url, 200);
    let during = threads_and_fds(pid);
    let n_loris = trickle.join().unwrap_or(0);
    report
        .add(
            "hostile",
            format!("normal client p99 during a {n_loris}-connection slow-loris"),
            p99,
            "ms",
        )
        .note(format!(
            "{failed} of 200 failed; server threads {} fds {}",
            during.0, during.1
        ));
    settle();
    let after = threads_and_fds(pid);
    report
        .add(
            "hostile",
            "server threads after the attackers left",
            after.0 as f64,
            "threads",
        )
        .baseline(baseline.0 as f64);
    report
        .add(
            "hostile",
            "server fds after the attackers left",
            after.1 as f64,
            "fds",
        )
        .baseline(baseline.1 as f64);

    // Oversized input: a 1 MB request line without a newline, then 100 MB of header bytes.
    for (what, total, prefix) in [
        (
            "1 MB request line without newline",
            1usize << 20,
            &b"GET /"[..],
        ),
        (
            "100 MB stream of header bytes",
            100 << 20,
            &b"GET / HTTP/1.1\r\nX-Flood: "[..],
        ),
    ] {
        let rss_before = rss_bytes(&pid.to_string());
        let mut peak = rss_before;
        let outcome = match std::net::TcpStream::connect(server.addr) {
            Ok(mut stream) => {
                let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
                let chunk = vec![b'a'; 64 << 10];
                let mut sent = 0usize;
                let mut result = "all bytes accepted".to_string();
                if stream.write_all(prefix).is_err() {
                    result = "closed at once".to_string();
                }
                while sent < total {
                    if let Err(e) = stream.write_all(&chunk) {
                        result = format!("closed by the server after {} KB ({e})", sent >> 10);
                        break;
                    }
                    sent += chunk.len();
                    if sent % (8 << 20) == 0 {
                        peak = peak.max(rss_bytes(&pid.to_string()));
                    }
                }
                peak = peak.max(rss_bytes(&pid.to_string()));
                result
            }
            Err(e) => format!("cannot connect: {e}"),
        };
        std::thread::sleep(Duration::from_secs(1));
        report
            .add(
                "hostile",
                format!("RSS growth during a {what}"),
                peak.saturating_sub(rss_before) as f64 / 1e6,
                "MB",
            )
            .note(format!(
                "{outcome}; RSS {} MB after",
                rss_bytes(&pid.to_string()) / 1_000_000
            ));
    }
    let (p99, failed) = normal_client_p99(&url, 50);
    report
        .add(
            "hostile",
            "normal client p99 after the oversized input",
            p99,
            "ms",
        )
        .note(format!("{failed} of 50 failed"));

    slowhttptest_attacks(report, &server, &url);

    let rss_before = rss_bytes(&pid.to_string());
    for _ in 0..10_000 {
        drop(std::net::TcpStream::connect(server.addr));
    }
    let close_agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut failed = 0;
    for _ in 0..10_000 {
        let ok = close_agent
            .get(&url)
            .header("Connection", "close")
            .call()
            .is_ok_and(|r| r.status().as_u16() == 200);
        failed += usize::from(!ok);
    }
    settle();
    let churned = threads_and_fds(pid);
    report
        .add(
            "hostile",
            "threads after 10k connect/close + 10k Connection: close",
            churned.0 as f64,
            "threads",
        )
        .baseline(baseline.0 as f64)
        .note(format!("{failed} of 10000 requests failed"));
    report
        .add("hostile", "fds after the churn", churned.1 as f64, "fds")
        .baseline(baseline.1 as f64);
    report
        .add(
            "hostile",
            "RSS after the churn",
            rss_bytes(&pid.to_string()) as f64 / 1e6,
            "MB",
        )
        .baseline(rss_before as f64 / 1e6);
}

// ---------------------------------------------------------------------------------------
// durability

fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(format!("target/bench-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// One poll of every switch of `fabric` at `ts`, parsed as the poller would.
fn fabric_batch(fabric: &mut Fabric, ts: i64, csv: &mut Vec<u8>) -> feed::FeedBatch {
    fabric.tick();
    fabric.render_csv(ts, csv);
    feed::parse_feed(
        csv.as_slice(),
        Freshness {
            now: ts,
            max_age: 3 * MICROS_PER_SEC,
        },
    )
}

/// Writes a simulated hour of `n` switches (1 s polls, ending now) into `dir` the way the
/// server does: every poll to the WAL, a compaction every simulated minute.
fn simulate_durable_hour(dir: &std::path::Path, n: usize, ticks: i64) -> (u64, Arc<StorageStats>) {
    let retention = Duration::from_secs(3600);
    let config = PersistConfig {
        data_dir: dir.to_path_buf(),
        fsync: FsyncPolicy::Never,
        compaction_interval: Duration::from_secs(60),
        retention,
    };
    let mut store = Store::new(BlockLimits::for_retention(retention));
    let persist::Opened {
        disk,
        thread,
        stats,
        ..
    } = persist::open(&config, &mut store, i64::MIN, &Watch::new(|| {})).expect("empty dir");
    let handle = StoreHandle::new(store);
    let mut fabric = Fabric::new(n, Some(3));
    let mut csv = Vec::new();
    // A minute of slack so the oldest rows are not expired by the time the server restarts.
    let start = timestamp::now_micros() - (ticks - 60) * MICROS_PER_SEC;
    for tick in 0..ticks {
        let ts = start + tick * MICROS_PER_SEC + 137;
        let batch = fabric_batch(&mut fabric, ts, &mut csv);
        let outcome = handle.apply(&batch);
        while !disk.has_room() {
            std::thread::sleep(Duration::from_millis(1));
        }
        disk.log_rows(Arc::new(batch), outcome.accepted_rows);
        disk.poll_done();
        if tick % 60 == 59 {
            while !disk.has_room() {
                std::thread::sleep(Duration::from_millis(1));
            }
            let mut writer = BlockFileWriter::default();
            let keep = handle.export_sealed(ts, &mut writer);
            disk.write_blocks(writer, keep);
        }
    }
    let retained = handle.read().retained_rows();
    drop(disk);
    let _ = thread.join();
    (retained, stats)
}

/// Time from starting `metrics-server` on `dir` until `/telemetry/aggregate` answers 200
/// with `n` switches; the server (polling a dead feed) is returned for more questions.
fn restart_on(dir: &std::path::Path, n: usize, extra: &[&str]) -> (f64, util::Proc) {
    let started = Instant::now();
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--source",
        "http://127.0.0.1:9/dead",
        "--data-dir",
        dir.to_str().expect("utf-8"),
        "--log-level",
        "info",
    ];
    args.extend_from_slice(extra);
    let server = util::Proc::start(util::server_bin(), &args);
    let agent = util::client();
    util::wait_for(
        "the restarted server to serve",
        Duration::from_secs(120),
        || {
            let answer = util::get_with(&agent, &server.url("/telemetry/aggregate"));
            (answer.status == 200 && answer.body.matches("max_latency").count() == n).then_some(())
        },
    );
    (started.elapsed().as_secs_f64(), server)
}

/// Rows/s through the real store thread for `batches`, all applied (and, with a data
/// directory, all logged and fsynced per poll).
fn store_throughput(batches: &[feed::FeedBatch], dir: Option<&std::path::Path>) -> f64 {
    let retention = Duration::from_secs(3600);
    let mut store = Store::new(BlockLimits::for_retention(retention));
    let stats = Arc::new(IngestStats::new(&["bench".to_string()]));
    let mut outlets = Outlets::default();
    let mut persist_thread = None;
    let mut storage = None;
    if let Some(dir) = dir {
        let config = PersistConfig {
            data_dir: dir.to_path_buf(),
            fsync: FsyncPolicy::EveryBatch,
            compaction_interval: Duration::from_secs(60),
            retention,
        };
        let opened =
            persist::open(&config, &mut store, i64::MIN, &Watch::new(|| {})).expect("recover");
        outlets.persistence = Some(Persistence {
            disk: opened.disk,
            compaction_interval: config.compaction_interval,
        });
        persist_thread = Some(opened.thread);
        storage = Some(opened.stats);
    }
    let handle = StoreHandle::new(store);
    let (tx, rx) = crossbeam_channel::bounded(2);
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let thread = ingest::spawn(
        handle,
        retention,
        rx,
        stop_rx,
        Arc::clone(&stats),
        outlets,
        &Watch::new(|| {}),
    )
    .expect("store thread");
    let total: u64 = batches.iter().map(|b| b.len() as u64).sum();
    let started = Instant::now();
    for batch in batches {
        let sent = tx.send(IngestBatch {
            source: 0,
            feed: batch.clone(),
            due: Instant::now(),
            interval: Duration::from_secs(1),
            last: true,
        });
        if sent.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = thread.join();
    if let Some(thread) = persist_thread {
        let _ = thread.join();
    }
    let elapsed = started.elapsed().as_secs_f64();
    drop(stop_tx);
    assert_eq!(stats.rows_accepted(), total, "every row applied");
    if let Some(storage) = storage {
        let report = storage.report();
        assert_eq!(report.rows_not_logged, 0, "every row logged");
        assert_eq!(
            report.wal_fsyncs as usize,
            batches.len(),
            "one fsync per poll"
        );
    }
    total as f64 / elapsed
}

fn durability_section(report: &mut Report, quick: bool) {
    let n = 10_000;
    // 1. A simulated hour on disk; bytes per sample; restart time.
    let ticks = if quick { 600 } else { 3600 };
    let dir = scratch_dir("durable-hour");
    let started = Instant::now();
    let (retained, stats) = simulate_durable_hour(&dir, n, ticks);
    let written = stats.report();
    println!(
        "  (simulated {ticks} s of {n} switches into {} in {:.1} s)",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    report
        .add(
            "durable",
            "disk bytes per compacted sample (block files)",
            written.block_bytes_written as f64 / written.samples_compacted.max(1) as f64,
            "B",
        )
        .baseline(2.0)
        .note(format!(
            "{} samples in {} block files; target <= 2 B",
            written.samples_compacted, written.block_files_written
        ));
    report
        .add(
            "durable",
            "disk bytes per retained sample (all files)",
            dir_bytes(&dir) as f64 / (retained * 3) as f64,
            "B",
        )
        .note("block files + the WAL still needed for open blocks");
    let (seconds, server) = restart_on(&dir, n, &[]);
    let recovery = util::stats(&server)["storage"]["recovery"].clone();
    report
        .add(
            "durable",
            format!("restart with {ticks} s of {n} switches: serving after"),
            seconds,
            "s",
        )
        .baseline(5.0)
        .note(format!(
            "target <= 5 s; recovery itself {:.2} s ({} blocks, {} WAL rows)",
            recovery["seconds"].as_f64().unwrap_or(f64::NAN),
            recovery["blocks_loaded"],
            recovery["wal_rows_replayed"]
        ));
    drop(server);

    // 2. Ingest rate through the store thread, in memory vs --fsync every-batch.
    let polls = if quick { 10 } else { 30 };
    let big = 100_000;
    let mut fabric = Fabric::new(big, Some(5));
    let mut csv = Vec::new();
    let start = timestamp::now_micros() - polls * MICROS_PER_SEC;
    let batches: Vec<feed::FeedBatch> = (0..polls)
        .map(|i| fabric_batch(&mut fabric, start + i * MICROS_PER_SEC, &mut csv))
        .collect();
    let (mut memory, mut durable) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        memory.push(store_throughput(&batches, None));
        let dir = scratch_dir("durable-rate");
        durable.push(store_throughput(&batches, Some(&dir)));
    }
    let (memory, durable) = (median(memory), median(durable));
    report
        .add("durable", "ingest rate, --fsync every-batch", durable / 1e6, "M rows/s")
        .baseline(memory / 1e6)
        .note(format!(
            "median of 3 alternating runs, {polls} polls of {big} rows through the store thread; baseline = in memory; target ratio >= 0.8"
        ));

    // 3. kill -9 during ingest at 10k switches, restart, compare.
    let dir = scratch_dir("durable-kill");
    let dir_arg = dir.to_str().expect("utf-8").to_string();
    let (generator, server) = system(
        n,
        &[
            "--data-dir",
            &dir_arg,
            "--fsync",
            "every-batch",
            "--max-age",
            "1h",
            "--compaction-interval",
            "5s",
        ],
    );
    wait_for_rows(&server, 15 * n as u64);
    let probes = ["switch1", "switch5000", "switch10000"];
    let history = |server: &util::Proc, id: &str| -> Vec<Value> {
        util::get(&server.url(&format!("/telemetry/history?switch_id={id}&metric=latency")))
            .json()
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let aggregate_before = util::get(&server.url("/telemetry/aggregate")).json();
    let histories_before: Vec<Vec<Value>> = probes.iter().map(|id| history(&server, id)).collect();
    let retained_before = util::stats(&server)["ingest"]["retained_rows"]
        .as_u64()
        .unwrap_or(0);
    drop(server); // SIGKILL, mid-ingest: the generator keeps ticking
    drop(generator);
    let (seconds, server) = restart_on(&dir, n, &["--max-age", "1h"]);
    let aggregate_after = util::get(&server.url("/telemetry/aggregate")).json();
    let retained_after = util::stats(&server)["ingest"]["retained_rows"]
        .as_u64()
        .unwrap_or(0);
    let same_switches = aggregate_before
        .as_object()
        .map(|before| {
            before
                .iter()
                .filter(|(id, v)| aggregate_after.get(id.as_str()) == Some(v))
                .count()
        })
        .unwrap_or(0);
    let mut polls_lost = 0usize;
    for (id, before) in probes.iter().zip(&histories_before) {
        let after = history(&server, id);
        let common = after.len().min(before.len());
        assert_eq!(
            after[..common],
            before[..common],
            "{id}: history changed across kill -9"
        );
        polls_lost = polls_lost.max(before.len() - common);
    }
    report
        .add("durable", "kill -9 at 10k switches: rows lost", retained_before as f64 - retained_after as f64, "rows")
        .note(format!(
            "retained {retained_before} before the kill, {retained_after} after; probe histories equal, {polls_lost} poll(s) short at most; target: at most one poll ({n} rows)"
        ));
    report
        .add(
            "durable",
            "kill -9 at 10k switches: /aggregate entries identical",
            same_switches as f64,
            "switches",
        )
        .baseline(n as f64)
        .note(format!("restart to serving {seconds:.2} s"));
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
        http_section(&mut report, options.quick);
    }
    if wants("load") {
        load_section(&mut report, options.quick);
    }
    if wants("ingest") {
        ingest_section(&mut report, options.quick);
    }
    if wants("hostile") {
        hostile_section(&mut report);
    }
    if wants("mixsoak") {
        mixed_soak_section(&mut report, options.mixsoak_minutes);
    }
    if wants("access") {
        access_section(&mut report, options.quick);
    }
    if wants("soak") {
        soak_section(&mut report, options.soak_switches, options.soak_minutes);
    }
    if wants("durability") {
        durability_section(&mut report, options.quick);
    }
    if wants("memory") || wants("window") {
        let (store, last_ts) = memory_section(&mut report, options.quick);
        if wants("window") {
            window_section(&mut report, &store, last_ts);
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
