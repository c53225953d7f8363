//! `stream`: 200 `/telemetry/stream` subscribers on a 1,000-switch fabric polled every second.
//! Whether every subscriber gets every event (gaps in the ids), how long after its samples
//! were taken an event arrives, how far apart the subscribers get the same event, the
//! server's CPU per event delivered, and `/telemetry/get` throughput with the subscribers
//! against without them in the same run.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fabric_telemetry::shared::timestamp;

use crate::report::Report;
use crate::stats::median;
use crate::system::{cpu_seconds, system, wait_for_rows};
use crate::util;
use crate::wrk::wrk;

const SUBSCRIBERS: usize = 200;
const SWITCHES: usize = 1_000;

/// What one subscriber saw: (event id, when it arrived, the newest sample time in it).
type Seen = Vec<(u64, Instant, i64)>;

fn subscribe(addr: &str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Seen> {
    let addr = addr.to_string();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let Ok(mut socket) = TcpStream::connect(&addr) else {
            return seen;
        };
        let _ = socket.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = write!(
            socket,
            "GET /telemetry/stream?metric=bandwidth HTTP/1.1\r\nHost: bench\r\n\r\n"
        );
        let mut reader = BufReader::new(socket);
        let mut id = None;
        let mut line = String::new();
        while !stop.load(Ordering::Relaxed) {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) => break,
                Ok(_) => {}
                Err(_) => continue,
            }
            if let Some(n) = line.strip_prefix("id: ") {
                id = n.trim().parse::<u64>().ok();
            } else if let Some(data) = line.strip_prefix("data: ") {
                let newest = data
                    .rmatch_indices("\"timestamp\":\"")
                    .next()
                    .and_then(|(at, m)| data.get(at + m.len()..at + m.len() + 32))
                    .and_then(|t| timestamp::parse_rfc3339(t).ok())
                    .unwrap_or(0);
                if let Some(id) = id.take() {
                    seen.push((id, Instant::now(), newest));
                }
            }
        }
        seen
    })
}

pub fn run(report: &mut Report, quick: bool) {
    let seconds: u64 = if quick { 10 } else { 20 };
    let (_generator, server) = system(SWITCHES, &["--max-subscribers", "256", "--workers", "4"]);
    wait_for_rows(&server, SWITCHES as u64 * 2);
    let get = server.url("/telemetry/get?switch_id=switch7&metric=bandwidth");
    let alone = wrk(&get, None, 5);

    let addr = server.url("").trim_start_matches("http://").to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..SUBSCRIBERS)
        .map(|_| subscribe(&addr, Arc::clone(&stop)))
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let cpu_before = cpu_seconds(server.pid());
    let measured_from = Instant::now();
    let with = wrk(&get, None, 5);
    std::thread::sleep(Duration::from_secs(seconds.saturating_sub(5)));
    let cpu = cpu_seconds(server.pid()) - cpu_before;
    let measured_to = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<Seen> = readers
        .into_iter()
        .map(|r| r.join().unwrap_or_default())
        .collect();
    let stats = util::stats(&server)["stream"].clone();

    // Per event id: when each subscriber got it.
    let mut arrivals: std::collections::BTreeMap<u64, Vec<Instant>> = Default::default();
    let mut gaps = 0u64;
    let mut end_to_end_ms = Vec::new();
    let offset = {
        // Instant → wall clock, to compare arrivals with sample timestamps.
        let (now_i, now_us) = (Instant::now(), timestamp::now_micros());
        move |at: Instant| now_us - now_i.duration_since(at).as_micros() as i64
    };
    for events in &seen {
        for pair in events.windows(2) {
            gaps += pair[1].0.saturating_sub(pair[0].0 + 1);
        }
        for &(id, at, newest) in events {
            if at < measured_from || at > measured_to {
                continue;
            }
            arrivals.entry(id).or_default().push(at);
            if newest > 0 {
                end_to_end_ms.push((offset(at) - newest) as f64 / 1000.0);
            }
        }
    }
    let mut spread_ms: Vec<f64> = arrivals
        .values()
        .map(|ats| {
            let first = ats.iter().min().copied();
            let last = ats.iter().max().copied();
            match (first, last) {
                (Some(f), Some(l)) => l.duration_since(f).as_secs_f64() * 1e3,
                _ => 0.0,
            }
        })
        .collect();
    spread_ms.sort_by(f64::total_cmp);
    end_to_end_ms.sort_by(f64::total_cmp);
    let quantile = |xs: &[f64], q: f64| {
        xs.get(((xs.len().max(1) - 1) as f64 * q) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let delivered: usize = arrivals.values().map(Vec::len).sum();
    let complete = arrivals
        .values()
        .filter(|ats| ats.len() == SUBSCRIBERS)
        .count();
    report
        .add(
            "stream",
            "subscribers connected",
            seen.iter().filter(|s| !s.is_empty()).count() as f64,
            "subscribers",
        )
        .baseline(SUBSCRIBERS as f64)
        .note(format!("server says {stats}"));
    report
        .add(
            "stream",
            "events lost (gaps in ids, all subscribers)",
            gaps as f64,
            "events",
        )
        .note(format!(
            "{complete} of {} polls reached every subscriber in the window",
            arrivals.len()
        ));
    report
        .add("stream", "event arrival after its samples were taken, p99", quantile(&end_to_end_ms, 0.99), "ms")
        .note(format!(
            "median {:.0} ms; includes the wait for the next poll (1 s interval) and the poll itself",
            median(end_to_end_ms.clone())
        ));
    report
        .add(
            "stream",
            "same event, first to last subscriber, p99",
            quantile(&spread_ms, 0.99),
            "ms",
        )
        .note(format!(
            "{} events x {SUBSCRIBERS} subscribers, 1,000 samples each",
            arrivals.len()
        ));
    report
        .add(
            "stream",
            "server CPU per event delivered",
            cpu / delivered.max(1) as f64 * 1e6,
            "cpu-us",
        )
        .note(format!(
            "{delivered} events delivered in {:.0} s",
            (measured_to - measured_from).as_secs_f64()
        ));
    report
        .add("stream", "/telemetry/get with 200 subscribers: requests/s", with.requests_per_sec, "req/s")
        .baseline(alone.requests_per_sec)
        .note(format!("baseline: the same without subscribers, same run; target ratio >= 0.8; p99 {:.2} ms vs {:.2} ms", with.p99_ms, alone.p99_ms));
}
