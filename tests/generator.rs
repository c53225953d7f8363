//! `telemetry-generator`: the feed's format, routing, reproducibility, flags, fault injection.

use std::process::Command;
use std::time::{Duration, Instant};

use fabric_telemetry::shared::timestamp;

use crate::util::{self, HEADER};

fn counters(proc: &util::Proc) -> util::Answer {
    util::get(&proc.url("/counters"))
}

#[test]
fn serves_every_switch_in_the_documented_format() {
    let generator = util::generator(&["--switches", "25", "--interval", "200ms"]);
    let answer = counters(&generator);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.content_type, "text/csv");
    let mut lines = answer.body.lines();
    assert_eq!(lines.next(), Some(HEADER));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 25);
    let now = timestamp::now_micros();
    for (i, row) in rows.iter().enumerate() {
        let fields: Vec<&str> = row.split(',').collect();
        assert_eq!(fields.len(), 5, "{row}");
        assert_eq!(fields[0], format!("switch{}", i + 1));
        let bandwidth: f64 = fields[1].parse().expect("bandwidth");
        assert!((0.0..=100.0).contains(&bandwidth), "{row}");
        assert!(
            fields[1]
                .split('.')
                .nth(1)
                .is_some_and(|d| (1..=2).contains(&d.len())),
            "{row}"
        );
        let latency: f64 = fields[2].parse().expect("latency");
        assert!((0.1..=1.0).contains(&latency), "{row}");
        let _errors: u64 = fields[3].parse().expect("errors is a non-negative integer");
        assert_eq!(fields[4].len(), 32, "{row}");
        assert!(fields[4].ends_with("+00:00"), "{row}");
        let produced = timestamp::parse_rfc3339(fields[4]).expect("RFC 3339");
        assert!(
            (now - produced).abs() < 2_000_000,
            "timestamp {} is not current",
            fields[4]
        );
    }
}

#[test]
fn values_and_timestamps_move_every_interval() {
    let generator = util::generator(&["--switches", "50", "--interval", "100ms"]);
    let first = counters(&generator).body;
    std::thread::sleep(Duration::from_millis(350));
    let second = counters(&generator).body;
    let stamp = |body: &str| body.lines().nth(1).map(|l| l[l.len() - 32..].to_string());
    assert_ne!(stamp(&first), stamp(&second));
    let changed = first
        .lines()
        .zip(second.lines())
        .skip(1)
        .filter(|(a, b)| a[..a.len() - 32] != b[..b.len() - 32])
        .count();
    assert!(changed > 40, "only {changed} of 50 rows changed values");
}

#[test]
fn other_paths_and_methods_are_refused() {
    let generator = util::generator(&[]);
    let answer = util::get(&generator.url("/metrics"));
    assert_eq!(answer.status, 404);
    assert!(answer.json()["error"].as_str().is_some());
    let post = util::request(&util::client(), "POST", &generator.url("/counters"), &[]);
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
}

/// The generator's HTTP side shares the server's protections (worker pool, supervisor,
/// bounded request heads).
#[test]
fn endless_request_heads_are_cut_off_and_the_feed_keeps_serving() {
    let generator = util::generator(&["--switches", "3"]);
    let line = util::endless_head(&generator, b"GET /", 1 << 20);
    assert!(
        matches!(line, util::Cutoff::Status(414) | util::Cutoff::Closed),
        "{line:?}"
    );
    let header = util::endless_head(&generator, b"GET /counters HTTP/1.1\r\nX-Flood: ", 1 << 20);
    assert!(
        matches!(header, util::Cutoff::Status(431) | util::Cutoff::Closed),
        "{header:?}"
    );
    assert_eq!(counters(&generator).status, 200);
}

#[test]
fn the_same_seed_gives_the_same_values() {
    let values = |seed: &str| {
        let generator = util::generator(&["--seed", seed, "--interval", "1h", "--switches", "20"]);
        let body = counters(&generator).body;
        body.lines()
            .skip(1)
            .map(|l| l[..l.len() - 32].to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(values("7"), values("7"));
    assert_ne!(values("7"), values("8"));
}

#[test]
fn help_version_and_bad_flags() {
    let run = |args: &[&str]| {
        Command::new(util::generator_bin())
            .args(args)
            .output()
            .expect("run")
    };
    let help = run(&["--help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--switches N"));
    let version = run(&["--version"]);
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("telemetry-generator "));
    let bad = run(&["--switches", "lots"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--switches"));
    let unknown = run(&["--bogus"]);
    assert_eq!(unknown.status.code(), Some(2));
}

#[test]
fn fault_500() {
    let generator = util::generator(&["--fault-rate", "1", "--fault-modes", "500"]);
    assert_eq!(counters(&generator).status, 500);
}

#[test]
fn fault_truncate_cuts_inside_a_row() {
    let generator = util::generator(&[
        "--fault-rate",
        "1",
        "--fault-modes",
        "truncate",
        "--switches",
        "30",
    ]);
    for _ in 0..10 {
        let answer = counters(&generator);
        assert_eq!(answer.status, 200);
        assert!(answer.body.starts_with("switch_id,"));
        assert!(!answer.body.ends_with('\n'), "a cut body ends mid-row");
        let last = answer.body.lines().last().expect("a line");
        let complete = last.split(',').count() == 5
            && timestamp::parse_rfc3339(&last[last.len().saturating_sub(32)..]).is_ok();
        assert!(!complete, "last row {last:?} is complete");
    }
}

#[test]
fn fault_stale_serves_old_timestamps() {
    let generator = util::generator(&[
        "--fault-rate",
        "1",
        "--fault-modes",
        "stale",
        "--fault-stale-by",
        "90s",
    ]);
    let body = counters(&generator).body;
    let row = body.lines().nth(1).expect("row");
    let produced = timestamp::parse_rfc3339(&row[row.len() - 32..]).expect("timestamp");
    let age_s = (timestamp::now_micros() - produced) as f64 / 1e6;
    assert!((89.0..95.0).contains(&age_s), "age {age_s}");
}

#[test]
fn fault_slow_delays_the_answer() {
    let generator = util::generator(&[
        "--fault-rate",
        "1",
        "--fault-modes",
        "slow",
        "--fault-delay",
        "400ms",
    ]);
    let started = Instant::now();
    let answer = counters(&generator);
    assert_eq!(answer.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(400));
}
