//! No thread dies unseen: a panic injected into each long-lived thread (debug builds read
//! `FABRIC_TEST_PANIC=<thread>`) is logged with the thread's name, counted and shown; pollers
//! and remote write are restarted, the store and persist threads stop the process with a
//! non-zero exit after a clean-as-possible shutdown.

use std::process::Command;
use std::time::Duration;

use crate::util::{self, FakeFeed, Proc};

/// A server whose `thread` panics once, polling `feed` every 100 ms, with `extra` flags.
fn server_with_panic_in(thread: &str, feed: &FakeFeed, extra: &[&str]) -> Proc {
    util::server_with_env(&[&feed.url], extra, &[("FABRIC_TEST_PANIC", thread)])
}

fn fresh_feed() -> FakeFeed {
    let feed = FakeFeed::start();
    feed.serve_fresh(&["switch1,50,0.5,0,{ts}", "switch2,60,0.6,1,{ts}"]);
    feed
}

fn thread_report(server: &Proc, name: &str) -> serde_json::Value {
    util::stats(server)["threads"]
        .as_array()
        .and_then(|threads| threads.iter().find(|t| t["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no thread {name} in stats"))
}

#[test]
fn a_panicking_poller_is_restarted_counted_and_shown() {
    let feed = fresh_feed();
    let server = server_with_panic_in("poller", &feed, &[]);
    // It panics before its first poll, so data arriving at all means it came back.
    util::wait_for_status(
        &server.url("/telemetry/get?switch_id=switch1&metric=bandwidth"),
        200,
    );
    let report = thread_report(&server, "poller-0");
    assert_eq!(report["panics"], 1, "{report}");
    assert_eq!(report["up"], true, "{report}");
    assert!(server
        .logs()
        .iter()
        .any(|l| l.contains("thread poller-0 panicked") && l.contains("restarting it")));
    let health = util::get(&server.url("/healthz"));
    assert_eq!(health.status, 200);
    assert_eq!(
        health.json(),
        serde_json::json!({"status": "failing", "failing": ["poller-0"]})
    );
    let ready = util::get(&server.url("/readyz")).json();
    assert_eq!(ready["failing"], serde_json::json!(["poller-0"]), "{ready}");
    let metrics = util::get(&server.url("/metrics")).body;
    assert!(
        metrics.contains("fabric_thread_panics_total{thread=\"poller-0\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("fabric_thread_up{thread=\"poller-0\"} 1"));
    assert!(metrics.contains("fabric_thread_panics_total{thread=\"store\"} 0"));
}

#[test]
fn a_panicking_handler_answers_500_and_the_worker_lives_on() {
    let feed = fresh_feed();
    let server = server_with_panic_in("api", &feed, &["--workers", "1"]);
    let url = server.url("/telemetry/stats");
    // The first request any API worker answers panics; with one worker, the same worker
    // must answer the next one.
    let first = util::get(&url);
    assert_eq!(first.status, 500, "{}", first.body);
    let stats = util::stats(&server);
    assert_eq!(stats["http"]["panics"], 1, "{}", stats["http"]);
    assert_eq!(stats["errors"].as_u64(), Some(1), "counted as an error");
    assert!(server.logs().iter().any(|l| l.contains("handler panicked")));
}

/// A vital thread's panic: the process exits non-zero on its own, and a restart on the same
/// data directory serves what was stored.
fn vital_thread_panic_exits_non_zero(thread: &str) {
    let feed = fresh_feed();
    let dir = std::env::temp_dir().join(format!(
        "threads-{thread}-{}-{}",
        std::process::id(),
        util::ts(0).len()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let data_dir = dir.to_str().expect("utf-8").to_string();
    let mut server = server_with_panic_in(thread, &feed, &["--data-dir", &data_dir]);
    let status = util::wait_exit(&mut server);
    assert_eq!(status.code(), Some(1), "{status:?}: {:?}", server.logs());
    let logs = server.logs();
    assert!(
        logs.iter()
            .any(|l| l.contains(&format!("thread {thread} panicked"))),
        "{logs:?}"
    );
    assert!(
        logs.iter()
            .any(|l| l.contains(&format!("because its {thread} thread panicked"))),
        "{logs:?}"
    );
    // What systemd's Restart=on-failure would do: start again on the same directory.
    let again = util::server(&[&feed.url], &["--data-dir", &data_dir]);
    util::wait_for_status(
        &again.url("/telemetry/get?switch_id=switch1&metric=bandwidth"),
        200,
    );
    drop(again);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_panicking_store_thread_makes_the_process_exit_non_zero() {
    vital_thread_panic_exits_non_zero("store");
}

#[test]
fn a_panicking_persist_thread_makes_the_process_exit_non_zero() {
    vital_thread_panic_exits_non_zero("persist");
}

#[test]
fn a_panicking_remote_writer_is_restarted() {
    let feed = fresh_feed();
    let receiver = FakeFeed::start();
    let server = server_with_panic_in(
        "remote-write",
        &feed,
        &["--remote-write", &format!("{}/write", receiver.url)],
    );
    let report = util::wait_for("remote-write restarted", Duration::from_secs(10), || {
        let report = thread_report(&server, "remote-write");
        (report["panics"] == 1 && report["up"] == true).then_some(report)
    });
    assert!(
        report["last_panic_seconds_ago"].as_f64().is_some(),
        "{report}"
    );
}

#[test]
fn a_panicking_generator_tick_makes_the_generator_exit_non_zero() {
    let mut command = Command::new(util::generator_bin());
    command.env("FABRIC_TEST_PANIC", "generator").args([
        "--listen",
        "127.0.0.1:0",
        "--interval",
        "100ms",
    ]);
    let mut generator = Proc::start_command(&mut command);
    let status = util::wait_exit(&mut generator);
    assert_eq!(status.code(), Some(1), "{status:?}: {:?}", generator.logs());
    assert!(generator
        .logs()
        .iter()
        .any(|l| l.contains("thread generator panicked")));
}
