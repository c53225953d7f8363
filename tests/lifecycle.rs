//! Health endpoints and clean shutdown on SIGTERM/SIGINT.

use std::time::Duration;

use crate::util::{self, FakeFeed, FeedReply};

#[test]
fn readyz_follows_the_data_and_healthz_the_process() {
    let feed = FakeFeed::start();
    feed.set(|_| FeedReply::Status(500));
    let server = util::server(&[&feed.url], &["--max-age", "1s"]);
    let health = util::get(&server.url("/healthz"));
    assert_eq!(
        (health.status, health.body.as_str()),
        (200, r#"{"status":"ok"}"#)
    );
    // One start-up line says what is in force.
    let settings = util::wait_for("the settings line", Duration::from_secs(5), || {
        server
            .logs()
            .into_iter()
            .find(|l| l.contains("settings in force:"))
    });
    assert!(
        settings.contains("auth: off (loopback only)")
            && settings.contains("rate limit: off")
            && settings.contains("history: memory only")
            && settings.contains("remote write: off"),
        "{settings}"
    );
    let not_ready = util::get(&server.url("/readyz"));
    assert_eq!(not_ready.status, 503);
    let reason = not_ready.json()["error"]
        .as_str()
        .expect("reason")
        .to_string();
    assert!(
        reason.contains("1 of 1 sources never polled successfully") && reason.contains(&feed.url),
        "{reason}"
    );
    feed.serve_fresh(&["switch1,1,0.1,0,{ts}"]);
    let ready = util::wait_for_status(&server.url("/readyz"), 200).json();
    assert_eq!(ready["status"], "ready");
    feed.set(|_| FeedReply::Status(500));
    let stale = util::wait_for_status(&server.url("/readyz"), 503).json();
    assert!(
        stale["error"].as_str().expect("reason").contains("s old"),
        "{stale}"
    );
    assert_eq!(util::get(&server.url("/healthz")).status, 200);
    feed.serve_fresh(&["switch1,2,0.1,0,{ts}"]);
    util::wait_for_status(&server.url("/readyz"), 200);
}

/// Issue 15: one source answering is not enough; a source that never answered is named.
#[test]
fn readyz_waits_for_every_source_and_names_the_one_that_never_answered() {
    let good = FakeFeed::start();
    good.serve_fresh(&["switch1,1,0.1,0,{ts}"]);
    let bad = FakeFeed::start();
    bad.set(|_| FeedReply::Status(404));
    let server = util::server(&[&good.url, &bad.url], &[]);
    util::wait_for(
        "the good source to be polled",
        Duration::from_secs(10),
        || (util::stats(&server)["ingest"]["rows_accepted"].as_u64()? > 0).then_some(()),
    );
    let not_ready = util::wait_for("the bad source to fail", Duration::from_secs(10), || {
        let answer = util::get(&server.url("/readyz"));
        let reason = answer.json()["error"].as_str()?.to_string();
        reason.contains("404").then_some((answer.status, reason))
    });
    assert_eq!(not_ready.0, 503);
    assert!(
        not_ready
            .1
            .contains("1 of 2 sources never polled successfully")
            && not_ready.1.contains(&bad.url)
            && !not_ready.1.contains(&good.url),
        "{}",
        not_ready.1
    );
    bad.serve_fresh(&["switch2,1,0.1,0,{ts}"]);
    let ready = util::wait_for_status(&server.url("/readyz"), 200).json();
    assert_eq!(
        (ready["sources_polled"].as_u64(), ready["sources"].as_u64()),
        (Some(2), Some(2))
    );
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let feed = FakeFeed::start();
    feed.serve_fresh(&["switch1,1,0.1,0,{ts}"]);
    let mut server = util::server(&[&feed.url], &[]);
    util::wait_for_status(
        &server.url("/telemetry/get?switch_id=switch1&metric=bandwidth"),
        200,
    );
    util::signal(&server, libc::SIGTERM);
    let status = util::wait_exit(&mut server);
    assert_eq!(status.code(), Some(0));
    util::wait_for("the clean-stop log line", Duration::from_secs(5), || {
        server
            .logs()
            .iter()
            .any(|l| l.contains("stopped cleanly"))
            .then_some(())
    });
}

#[test]
fn sigint_stops_the_generator_cleanly() {
    let mut generator = util::generator(&[]);
    assert_eq!(util::get(&generator.url("/counters")).status, 200);
    util::signal(&generator, libc::SIGINT);
    assert_eq!(util::wait_exit(&mut generator).code(), Some(0));
}

#[test]
fn json_logs_are_one_object_per_line() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let dead = format!("http://127.0.0.1:{port}/counters");
    let server = util::server(&[&dead], &["--log-format", "json", "--log-level", "info"]);
    // A failing source logs a warning with the source as a structured field.
    let lines = util::wait_for("a poll warning", Duration::from_secs(10), || {
        let logs = server.logs();
        logs.iter().any(|l| l.contains("\"WARN\"")).then_some(logs)
    });
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        for key in ["timestamp", "level", "target", "message"] {
            assert!(value[key].is_string(), "{key} missing in {line}");
        }
    }
    let warning = lines
        .iter()
        .find(|l| l.contains("\"WARN\""))
        .expect("warning");
    let value: serde_json::Value = serde_json::from_str(warning).expect("json");
    assert_eq!(value["fields"]["source"], dead.as_str(), "{warning}");
}
