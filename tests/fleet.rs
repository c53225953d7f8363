//! Fleet scale: two servers, each keeping one shard of one fabric (`--shard 0/2`, `1/2`),
//! remote-writing into one real VictoriaMetrics. Every series arrives exactly once, and the
//! samples stored equal what the two servers accepted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::util::{self, FakeFeed, FeedReply, Victoria, HEADER};

/// Every stored sample of the `fabric_switch_*` families: (series labels, sample count).
fn export(vm: &Victoria) -> Vec<(serde_json::Value, usize)> {
    let _ = util::get(&format!("{}/internal/force_flush", vm.base));
    let answer = util::get(&format!(
        "{}/api/v1/export?match[]=%7B__name__%3D~%22fabric_switch_.%2A%22%7D",
        vm.base
    ));
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer
        .body
        .lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let series: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            let samples = series["values"].as_array().map_or(0, Vec::len);
            (series["metric"].clone(), samples)
        })
        .collect()
}

#[test]
fn two_shards_write_every_series_exactly_once_into_victoria_metrics() {
    if !std::path::Path::new(util::VICTORIA_METRICS).exists() {
        util::skip_unless_required("victoria-metrics (apt-get install victoria-metrics)");
        return;
    }
    let vm =
        Victoria::start(std::env::temp_dir().join(format!("fabric-vm-{}", std::process::id())));
    let feed = FakeFeed::start();
    let paused = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&paused);
    feed.set(move |_| {
        if flag.load(Ordering::SeqCst) {
            return FeedReply::Status(503);
        }
        let ts = util::ts(0);
        let mut body = format!("{HEADER}\n");
        for s in 1..=40 {
            body.push_str(&format!("sw{s},{s}.5,0.5,{},{ts}\n", s % 3));
        }
        FeedReply::Csv(body)
    });
    let write = format!("{}/api/v1/write", vm.base);
    let shards: Vec<util::Proc> = ["0/2", "1/2"]
        .iter()
        .map(|shard| util::server(&[&feed.url], &["--shard", shard, "--remote-write", &write]))
        .collect();
    util::wait_for(
        "a few polls on both shards",
        Duration::from_secs(20),
        || {
            shards
                .iter()
                .all(|s| util::stats(s)["ingest"]["rows_accepted"].as_u64() >= Some(60))
                .then_some(())
        },
    );
    paused.store(true, Ordering::SeqCst);
    // Everything accepted has been sent once the counters stop moving.
    let mut last = (0, 0);
    let (accepted, sent) =
        util::wait_for("remote write to settle", Duration::from_secs(20), || {
            std::thread::sleep(Duration::from_millis(500));
            let now = shards.iter().fold((0, 0), |(a, s), server| {
                let stats = util::stats(server);
                (
                    a + stats["ingest"]["rows_accepted"].as_u64().unwrap_or(0),
                    s + stats["ingest"]["remote_write"]["samples_sent"]
                        .as_u64()
                        .unwrap_or(0),
                )
            });
            let settled = now == last && now.1 == now.0 * 3;
            last = now;
            settled.then_some(now)
        });

    // Each switch belongs to exactly one shard, and together they hold all 40.
    let mut owners = std::collections::BTreeMap::<String, usize>::new();
    for (i, server) in shards.iter().enumerate() {
        let list = util::get(&server.url("/telemetry/list?metric=bandwidth")).json();
        for switch in list
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            assert!(
                owners.insert(switch.clone(), i).is_none(),
                "{switch} on both shards"
            );
        }
        let other = util::stats(server)["ingest"]["sources"][0]["rows_other_shard"].clone();
        assert!(
            other.as_u64() > Some(0),
            "shard {i} skipped nothing: {other}"
        );
    }
    assert_eq!(owners.len(), 40, "{owners:?}");

    // VictoriaMetrics holds every series once, and exactly the samples the shards accepted.
    let exported = util::wait_for(
        "the samples in VictoriaMetrics",
        Duration::from_secs(20),
        || {
            let exported = export(&vm);
            let stored: usize = exported.iter().map(|(_, n)| n).sum();
            (stored as u64 == sent).then_some(exported)
        },
    );
    assert_eq!(exported.len(), 40 * 3, "one series per switch and metric");
    let mut names: Vec<String> = exported.iter().map(|(m, _)| m.to_string()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 40 * 3, "no series twice");
    assert_eq!(
        sent,
        accepted * 3,
        "bandwidth, latency and errors of every accepted row"
    );
}

/// The latest value of `query` in VictoriaMetrics, if it has one now.
fn instant(vm: &Victoria, query: &str) -> Option<f64> {
    let url = format!(
        "{}/api/v1/query?query={}&nocache=1",
        vm.base,
        query
            .replace('{', "%7B")
            .replace('}', "%7D")
            .replace('"', "%22")
            .replace('=', "%3D")
    );
    let answer = util::get(&url).json();
    answer["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
}

/// Issue 14: a switch that leaves its feed gets a staleness marker after `--max-age`, and a
/// real VictoriaMetrics stops answering its last value at once (without the marker it keeps
/// answering it for its staleness interval, minutes).
#[test]
fn a_series_that_stops_is_marked_stale_in_victoria_metrics() {
    if !std::path::Path::new(util::VICTORIA_METRICS).exists() {
        util::skip_unless_required("victoria-metrics (apt-get install victoria-metrics)");
        return;
    }
    let vm = Victoria::start(
        std::env::temp_dir().join(format!("fabric-vm-stale-{}", std::process::id())),
    );
    let feed = FakeFeed::start();
    feed.serve_fresh(&["switch1,72.34,0.45,3,{ts}", "switch2,50.5,0.45,3,{ts}"]);
    let write = format!("{}/api/v1/write", vm.base);
    let server = util::server(&[&feed.url], &["--remote-write", &write, "--max-age", "2s"]);
    let switch2 = "fabric_switch_bandwidth_gbps{switch=\"switch2\"}";
    util::wait_for(
        "switch2 in VictoriaMetrics",
        Duration::from_secs(30),
        || instant(&vm, switch2),
    );
    feed.serve_fresh(&["switch1,72.34,0.45,3,{ts}"]);
    let left = std::time::Instant::now();
    util::wait_for(
        "switch2 gone from VictoriaMetrics",
        Duration::from_secs(30),
        || instant(&vm, switch2).is_none().then_some(()),
    );
    eprintln!(
        "switch2 went stale in VictoriaMetrics {:?} after leaving the feed",
        left.elapsed()
    );
    assert_eq!(
        instant(&vm, "fabric_switch_bandwidth_gbps{switch=\"switch1\"}"),
        Some(72.34),
        "the series that stays is not marked"
    );
    let markers = util::stats(&server)["ingest"]["remote_write"]["stale_markers"]
        .as_u64()
        .unwrap_or(0);
    assert!(markers >= 3, "bandwidth, latency, errors: {markers}");
}
