//! `vm`: this server and a real VictoriaMetrics (Debian's `victoria-metrics`) side by side on
//! the same data: a 10k-switch generator polled every second, every accepted sample
//! remote-written from our server into VictoriaMetrics. Per million samples: CPU of each;
//! bytes per sample of each process's RSS growth and of each data directory (VictoriaMetrics'
//! after a forced merge); and whether the sample counts agree. Skipped with a message when the
//! binary is absent (required under `FABRIC_REQUIRE_TOOLS=1`).

use std::time::Duration;

use crate::report::Report;
use crate::system::{cpu_seconds, rss_bytes, scratch_dir, server_polling, wait_for_rows};
use crate::util;

const SWITCHES: usize = 10_000;

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

pub fn run(report: &mut Report, quick: bool) {
    if !std::path::Path::new(util::VICTORIA_METRICS).exists() {
        util::skip_unless_required("victoria-metrics (apt-get install victoria-metrics)");
        println!(
            "  vm       skipped: {} is not installed",
            util::VICTORIA_METRICS
        );
        return;
    }
    let minutes = if quick { 1 } else { 3 };
    let vm_dir = scratch_dir("vm-data");
    let our_dir = scratch_dir("vm-ours");
    let vm = util::Victoria::start(vm_dir.clone());
    let base = vm.base.clone();
    let generator = util::Proc::start(
        util::generator_bin(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--switches",
            &SWITCHES.to_string(),
            "--seed",
            "3",
        ],
    );
    let write = format!("{base}/api/v1/write");
    let server = server_polling(
        &generator.url("/counters"),
        &[
            "--remote-write",
            &write,
            "--retention",
            "1h",
            "--data-dir",
            our_dir.to_str().expect("utf-8"),
        ],
    );
    wait_for_rows(&server, SWITCHES as u64 * 2);
    let vm_pid = vm.pid();
    let (our_cpu, vm_cpu) = (cpu_seconds(server.pid()), cpu_seconds(vm_pid));
    let (our_rss, vm_rss) = (
        rss_bytes(&server.pid().to_string()),
        rss_bytes(&vm_pid.to_string()),
    );
    let sent_before = util::stats(&server)["ingest"]["remote_write"]["samples_sent"]
        .as_u64()
        .unwrap_or(0);
    std::thread::sleep(Duration::from_secs(minutes * 60));
    let (our_cpu, vm_cpu) = (
        cpu_seconds(server.pid()) - our_cpu,
        cpu_seconds(vm_pid) - vm_cpu,
    );
    let (our_grown, vm_grown) = (
        rss_bytes(&server.pid().to_string()).saturating_sub(our_rss) as f64,
        rss_bytes(&vm_pid.to_string()).saturating_sub(vm_rss) as f64,
    );
    let window_sent = util::stats(&server)["ingest"]["remote_write"]["samples_sent"]
        .as_u64()
        .unwrap_or(0);
    let window_samples = (window_sent - sent_before) as f64;
    // The feed stops; once the server has sent everything, every sample sent must be stored.
    drop(generator);
    let mut last = u64::MAX;
    let (sent, dropped) = util::wait_for("remote write to settle", Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_secs(1));
        let stats = util::stats(&server)["ingest"]["remote_write"].clone();
        let sent = stats["samples_sent"].as_u64().unwrap_or(0);
        let settled = sent == last;
        last = sent;
        settled.then(|| (sent, stats["samples_dropped"].as_u64().unwrap_or(0)))
    });
    let count = || {
        let _ = util::get(&format!("{base}/internal/force_flush"));
        util::get(&format!(
            "{base}/api/v1/query?query=sum(count_over_time(%7B__name__%3D~%22fabric_switch_.%2A%22%7D%5B1d%5D))"
        ))
        .json()["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Freshly written samples become searchable within seconds.
    let mut stored = count();
    for _ in 0..20 {
        if stored as u64 == sent {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
        stored = count();
    }
    let _ = util::get(&format!("{base}/internal/force_merge"));
    std::thread::sleep(Duration::from_secs(10));
    let millions = window_samples / 1e6;
    report
        .add("vm", "samples stored in VictoriaMetrics", stored, "samples")
        .baseline(sent as f64)
        .note(format!(
            "baseline: samples our server sent; {dropped} dropped"
        ));
    report
        .add("vm", "our server: CPU per million samples (with --data-dir + remote write)", our_cpu / millions, "cpu-s")
        .baseline(vm_cpu / millions)
        .note(format!("baseline: VictoriaMetrics receiving the same; {minutes} min of {SWITCHES} switches at 1 s"));
    report
        .add(
            "vm",
            "our server: RSS growth per sample",
            our_grown / window_samples,
            "B",
        )
        .baseline(vm_grown / window_samples)
        .note("baseline: VictoriaMetrics (its samples are on disk; ours in memory and on disk)");
    let samples_total = sent as f64;
    report
        .add(
            "vm",
            "our data directory per sample (WAL + checkpoint + block files)",
            dir_bytes(&our_dir) as f64 / samples_total,
            "B",
        )
        .baseline(dir_bytes(&vm_dir) as f64 / samples_total)
        .note("baseline: VictoriaMetrics' data directory after a forced merge; the same samples");
    drop(server);
    drop(vm);
    let _ = std::fs::remove_dir_all(&vm_dir);
    let _ = std::fs::remove_dir_all(&our_dir);
}
