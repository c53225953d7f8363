//! `mixsoak` (only when named): 10k switches under a mixed read load at half its measured
//! maximum for 30 minutes by default: RSS, threads and descriptors after warm-up, every 5xx
//! and stale answer, latency percentiles.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::report::Report;
use crate::stats::median;
use crate::system::{rss_bytes, system, threads_and_fds, wait_for_rows};
use crate::util;

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
pub fn run(report: &mut Report, minutes: u64) {
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
