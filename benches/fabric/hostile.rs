//! `hostile` (only when named): idle connections, slow-loris, oversized input, slowhttptest
//! and connection churn: a normal client's p99 during each, and whether threads, descriptors
//! and RSS come back down when the attackers leave.

use std::time::{Duration, Instant};

use crate::report::Report;
use crate::system::{rss_bytes, system, threads_and_fds, wait_for_rows};
use crate::util;

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
pub fn run(report: &mut Report) {
    use std::io::Write;
    let _ = fabric_telemetry::shared::http::raise_fd_limit();
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
