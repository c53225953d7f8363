//! The metrics server's API: exact shapes, every error status, stats counters, concurrency.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::util::{self, FakeFeed, Proc};

/// A feed with two switches and a server polling it, once both are queryable.
fn two_switches() -> (FakeFeed, Proc) {
    let feed = FakeFeed::start();
    feed.serve_fresh(&["switch1,72.34,0.45,3,{ts}", "switch2,11.2,0.67,0,{ts}"]);
    let server = util::server(&[&feed.url], &[]);
    util::wait_for_status(
        &server.url("/telemetry/get?switch_id=switch2&metric=bandwidth"),
        200,
    );
    (feed, server)
}

#[test]
fn get_answers_the_original_shape_byte_for_byte() {
    // One poll's data, not two: `serve_fresh` restamps every poll (every 100 ms), so the
    // bandwidth and errors answers could come from different polls. `scripted` stamps the
    // rows once and repeats them (later polls are duplicates); a long --max-age keeps that one
    // poll fresh however slow this machine is.
    let feed = FakeFeed::start();
    feed.set(util::scripted(vec![vec![
        "switch1,72.34,0.45,3,{ts}".to_string(),
        "switch2,11.2,0.67,0,{ts}".to_string(),
    ]]));
    let server = util::server(&[&feed.url], &["--max-age", "1h"]);
    util::wait_for_status(
        &server.url("/telemetry/get?switch_id=switch1&metric=bandwidth"),
        200,
    );
    let answer = util::get(&server.url("/telemetry/get?switch_id=switch1&metric=bandwidth"));
    assert_eq!(answer.status, 200);
    assert_eq!(answer.content_type, "application/json");
    let ts = answer.json()["timestamp"]
        .as_str()
        .expect("timestamp")
        .to_string();
    assert_eq!(
        answer.body,
        format!(
            r#"{{"switch_id":"switch1","metric":"bandwidth","value":72.34,"timestamp":"{ts}"}}"#
        )
    );
    assert_eq!(ts.len(), 32);
    assert!(ts.ends_with("+00:00"));
    let errors = util::get(&server.url("/telemetry/get?switch_id=switch1&metric=errors"));
    assert_eq!(
        errors.body,
        format!(r#"{{"switch_id":"switch1","metric":"errors","value":3,"timestamp":"{ts}"}}"#)
    );
}

#[test]
fn list_answers_every_fresh_switch_in_order() {
    let (_feed, server) = two_switches();
    let answer = util::get(&server.url("/telemetry/list?metric=latency"));
    assert_eq!(answer.status, 200);
    let ts = answer.json()["switch1"]["timestamp"]
        .as_str()
        .expect("ts")
        .to_string();
    assert_eq!(
        answer.body,
        format!(
            r#"{{"switch1":{{"value":0.45,"timestamp":"{ts}"}},"switch2":{{"value":0.67,"timestamp":"{ts}"}}}}"#
        )
    );
}

#[test]
fn aggregate_covers_history_and_counts_each_sample_once() {
    let feed = FakeFeed::start();
    let step = |bw: &str, lat: &str, err: &str| vec![format!("switch1,{bw},{lat},{err},{{ts}}")];
    feed.set(util::scripted(vec![
        step("50.5", "0.3", "2"),
        step("40.25", "0.9", "5"),
        step("60", "0.1", "1"),
    ]));
    let server = util::server(&[&feed.url], &[]);
    // The last step repeats on every later poll with the same timestamp: duplicates.
    util::wait_for("duplicates to be rejected", Duration::from_secs(15), || {
        (util::stats(&server)["ingest"]["rows_rejected"]["duplicate"].as_u64()? >= 3).then_some(())
    });
    let answer = util::get(&server.url("/telemetry/aggregate"));
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.body,
        r#"{"switch1":{"max_latency":0.9,"min_bandwidth":40.25,"total_errors":8}}"#
    );
    assert_eq!(util::stats(&server)["ingest"]["rows_accepted"], 3);
}

#[test]
fn stats_count_exactly() {
    let (_feed, server) = two_switches();
    let before = util::stats(&server);
    let agent = util::client();
    let sequence = [
        ("/telemetry/get?switch_id=switch1&metric=bandwidth", 200),
        ("/telemetry/get?switch_id=switch2&metric=latency", 200),
        ("/telemetry/get?switch_id=switch1", 400),
        ("/telemetry/list?metric=errors", 200),
        ("/telemetry/aggregate", 200),
        ("/nope", 404),
        ("/telemetry/get?switch_id=ghost&metric=errors", 404),
    ];
    for (path, status) in sequence {
        assert_eq!(
            util::get_with(&agent, &server.url(path)).status,
            status,
            "{path}"
        );
    }
    let after = util::stats(&server);
    let n = |v: &serde_json::Value, key: &str| v[key].as_u64().expect(key);
    assert_eq!(n(&after, "requests"), n(&before, "requests") + 8);
    assert_eq!(n(&after, "errors"), n(&before, "errors") + 3);
    for endpoint in ["get_metric", "list_metrics", "aggregate_metrics", "stats"] {
        let latency = &after["latency"][endpoint];
        let (avg, min, max) = (
            latency["avg_latency"].as_f64().expect("avg"),
            latency["min_latency"].as_f64().expect("min"),
            latency["max_latency"].as_f64().expect("max"),
        );
        assert!(
            min > 0.0 && min <= avg && avg <= max && max < 1.0,
            "{endpoint}: {latency}"
        );
    }
    let uptime = after["uptime_seconds"].as_f64().expect("uptime");
    assert_eq!(after["latency"]["uptime_seconds"].as_f64(), Some(uptime));
    assert!(uptime > 0.0);
    let source = &after["ingest"]["sources"][0];
    assert!(source["polls_ok"].as_u64().expect("polls_ok") > 0);
    assert!(source["last_success"].as_str().is_some());
}

#[test]
fn stats_keys_keep_the_original_order() {
    let (_feed, server) = two_switches();
    let body = util::get(&server.url("/telemetry/stats")).body;
    let at = |key: &str| {
        body.find(&format!("\"{key}\""))
            .unwrap_or_else(|| panic!("{key} missing: {body}"))
    };
    assert!(body.starts_with(r#"{"requests":"#));
    assert!(at("errors") < at("latency"));
    assert!(at("get_metric") < at("list_metrics"));
    assert!(at("list_metrics") < at("aggregate_metrics"));
    assert!(at("aggregate_metrics") < at("stats"));
    assert!(at("avg_latency") < at("min_latency") && at("min_latency") < at("max_latency"));
}

#[test]
fn every_error_status_has_a_json_body() {
    let (_feed, server) = two_switches();
    let cases = [
        ("/telemetry/get?metric=bandwidth", 400, "switch_id"),
        ("/telemetry/get?switch_id=switch1", 400, "metric"),
        ("/telemetry/get?switch_id=&metric=bandwidth", 400, "empty"),
        ("/telemetry/list", 400, "metric"),
        (
            "/telemetry/get?switch_id=%zz&metric=bandwidth",
            400,
            "percent-encoding",
        ),
        (
            "/telemetry/get?switch_id=switch1&metric=bandwidth&metric=latency",
            400,
            "more than once",
        ),
        (
            "/telemetry/get?switch_id=ghost&metric=bandwidth",
            404,
            "ghost",
        ),
        (
            "/telemetry/get?switch_id=switch1&metric=temperature",
            404,
            "temperature",
        ),
        ("/telemetry/list?metric=temperature", 404, "temperature"),
        ("/telemetry/unknown", 404, "no such endpoint"),
        ("/nope", 404, "no such endpoint"),
    ];
    for (path, status, fragment) in cases {
        let answer = util::get(&server.url(path));
        assert_eq!(answer.status, status, "{path}: {}", answer.body);
        assert_eq!(answer.content_type, "application/json", "{path}");
        let message = answer.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(message.contains(fragment), "{path}: {message}");
    }
    let post = util::request(&util::client(), "POST", &server.url("/telemetry/get"), &[]);
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
}

/// Sends raw bytes and returns the status line's code (or None if the connection closed).
fn raw_status(server: &Proc, request: &[u8]) -> Option<u16> {
    let mut stream = TcpStream::connect(server.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(request).ok()?;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn oversized_requests_get_4xx_and_the_server_stays_up() {
    let (_feed, server) = two_switches();
    let long_uri = format!("GET /telemetry/get?switch_id={}&metric=bandwidth HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "a".repeat(20_000));
    assert_eq!(raw_status(&server, long_uri.as_bytes()), Some(414));
    let big_headers = format!(
        "GET /telemetry/stats HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(20_000)
    );
    assert_eq!(raw_status(&server, big_headers.as_bytes()), Some(431));
    let garbage = b"NOT-HTTP\r\n\r\n";
    let status = raw_status(&server, garbage);
    assert!(status.is_none_or(|s| (400..500).contains(&s)), "{status:?}");
    let answer = util::get(&server.url("/telemetry/get?switch_id=switch1&metric=bandwidth"));
    assert_eq!(answer.status, 200);
}

#[test]
fn endless_request_lines_and_headers_are_cut_off() {
    let (_feed, server) = two_switches();
    let line = util::endless_head(&server, b"GET /", 1 << 20);
    assert!(
        matches!(line, util::Cutoff::Status(414) | util::Cutoff::Closed),
        "{line:?}"
    );
    let header = util::endless_head(&server, b"GET / HTTP/1.1\r\nX-Flood: ", 1 << 20);
    assert!(
        matches!(header, util::Cutoff::Status(431) | util::Cutoff::Closed),
        "{header:?}"
    );
    let answer = util::get(&server.url("/telemetry/get?switch_id=switch1&metric=bandwidth"));
    assert_eq!(answer.status, 200);
}

#[test]
fn percent_encoded_switch_ids_work() {
    let feed = FakeFeed::start();
    feed.serve_fresh(&["leaf 01/a,10.5,0.2,0,{ts}", "spine+1,20,0.3,1,{ts}"]);
    let server = util::server(&[&feed.url], &[]);
    let answer = util::wait_for_status(
        &server.url("/telemetry/get?switch_id=leaf%2001%2Fa&metric=bandwidth"),
        200,
    );
    assert_eq!(answer.json()["switch_id"], "leaf 01/a");
    assert_eq!(answer.json()["value"], 10.5);
    let plus = util::get(&server.url("/telemetry/get?switch_id=spine%2B1&metric=errors"));
    assert_eq!(plus.json()["value"], 1);
    let list = util::get(&server.url("/telemetry/list?metric=bandwidth")).json();
    assert!(
        list["leaf 01/a"].is_object() && list["spine+1"].is_object(),
        "{list}"
    );
}

#[test]
fn sixty_four_keep_alive_clients_at_once() {
    let (_feed, server) = two_switches();
    let url = server.url("/telemetry/get?switch_id=switch1&metric=latency");
    let threads: Vec<_> = (0..64)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let agent = util::client();
                (0..40)
                    .filter(|_| util::get_with(&agent, &url).status == 200)
                    .count()
            })
        })
        .collect();
    let ok: usize = threads
        .into_iter()
        .map(|t| t.join().expect("client thread"))
        .sum();
    assert_eq!(ok, 64 * 40);
    let stats = util::stats(&server);
    assert!(stats["requests"].as_u64().expect("requests") > 64 * 40);
}

#[test]
fn demo_runs_the_whole_system_in_one_process() {
    let server = util::server(&["http://127.0.0.1:0/counters"], &["--demo"]);
    let list = util::wait_for_status(&server.url("/telemetry/list?metric=bandwidth"), 200);
    let list = list.json();
    let switches = list.as_object().expect("object");
    assert_eq!(switches.len(), 10, "{list}");
    assert!(switches.contains_key("switch1") && switches.contains_key("switch10"));
}

#[test]
fn several_sources_are_polled_together() {
    let a = FakeFeed::start();
    a.serve_fresh(&["a1,1,0.1,0,{ts}"]);
    let b = FakeFeed::start();
    b.serve_fresh(&["b1,2,0.2,0,{ts}"]);
    let server = util::server(&[&a.url, &b.url], &[]);
    let list = util::wait_for("both sources in /list", Duration::from_secs(15), || {
        let list = util::get(&server.url("/telemetry/list?metric=bandwidth")).json();
        (list["a1"].is_object() && list["b1"].is_object()).then_some(list)
    });
    assert_eq!(list["b1"]["value"], 2.0);
    assert_eq!(
        util::stats(&server)["ingest"]["sources"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
}

#[test]
fn server_help_and_bad_flags() {
    let run = |args: &[&str]| {
        std::process::Command::new(util::server_bin())
            .args(args)
            .output()
            .expect("run")
    };
    let help = run(&["--help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--max-age DUR"));
    assert!(run(&["-V"]).status.success());
    let bad = run(&["--retention", "forever"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--retention"));
}
