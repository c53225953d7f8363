//! The system under test and probes of its processes: a generator and a metrics server on
//! free ports, their stats, CPU seconds, RSS, threads and descriptors from /proc, and scratch
//! directories under `target/`.

use std::time::Duration;

use serde_json::Value;

use crate::util;

pub fn cpu_seconds(pid: u32) -> f64 {
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

pub fn rss_bytes(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

pub fn system(n_switches: usize, extra_server_args: &[&str]) -> (util::Proc, util::Proc) {
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
pub fn server_polling(source: &str, extra: &[&str]) -> util::Proc {
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

pub fn source_stats(server: &util::Proc) -> Value {
    util::stats(server)["ingest"]["sources"][0].clone()
}

/// What a server did over `seconds` of polling: its first source's stats before and after,
/// the rows it accepted and the CPU it used meanwhile.
pub struct Interval {
    pub before: Value,
    pub after: Value,
    pub rows: u64,
    pub cpu_seconds: f64,
}

pub fn watch_polls(server: &util::Proc, seconds: u64) -> Interval {
    let accepted = || {
        util::stats(server)["ingest"]["rows_accepted"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = source_stats(server);
    let rows_before = accepted();
    let cpu_before = cpu_seconds(server.pid());
    std::thread::sleep(Duration::from_secs(seconds));
    Interval {
        after: source_stats(server),
        before,
        rows: accepted() - rows_before,
        cpu_seconds: cpu_seconds(server.pid()) - cpu_before,
    }
}

pub fn wait_for_rows(server: &util::Proc, rows: u64) {
    util::wait_for("the first polls to land", Duration::from_secs(120), || {
        (util::stats(server)["ingest"]["rows_accepted"].as_u64()? >= rows).then_some(())
    });
}

/// (status, entries) of /list: entries counted without parsing a huge body into a tree.
pub fn list_fresh(server: &util::Proc) -> (u16, usize) {
    let answer = util::get(&server.url("/telemetry/list?metric=bandwidth"));
    (answer.status, answer.body.matches("\"timestamp\"").count())
}

/// Threads and open descriptors of a process.
pub fn threads_and_fds(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    (threads, fds)
}

/// This process's heap as glibc's allocator sees it: (bytes in use, with each allocation's
/// header and rounding; bytes free inside the heap, the holes between allocations that RSS
/// still counts). `None` where the allocator is not glibc's.
pub fn allocator_heap() -> Option<(u64, u64)> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's counters.
        let info = unsafe { libc::mallinfo2() };
        Some((info.uordblks as u64, info.fordblks as u64))
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(format!("target/bench-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// How late a real tick lands after its grid point: measured on this machine, 50–300 µs
/// independently per tick, with rare spikes to ~1.5 ms. Simulated hours add it to their
/// timestamps, which otherwise compress unrealistically well.
pub fn wake_up_micros(rng: &mut rand::rngs::StdRng) -> i64 {
    use rand::Rng;
    if rng.random_bool(0.01) {
        rng.random_range(300..1_500)
    } else {
        rng.random_range(50..300)
    }
}

/// One poll of every switch of `fabric`: its next tick, stamped `ts`, rendered as the
/// generator serves it and parsed as the poller would.
pub fn simulated_poll(
    fabric: &mut fabric_telemetry::generator::Fabric,
    ts: i64,
    csv: &mut Vec<u8>,
) -> fabric_telemetry::shared::feed::FeedBatch {
    use fabric_telemetry::shared::feed::{parse_feed, Freshness};
    fabric.tick();
    fabric.render_csv(ts, csv);
    parse_feed(
        csv.as_slice(),
        Freshness {
            now: ts,
            max_age: 3 * fabric_telemetry::shared::timestamp::MICROS_PER_SEC,
        },
    )
}
