//! History and windowed aggregates through the real server.

use std::time::Duration;

use fabric_telemetry::shared::timestamp;

use crate::util::{self, FakeFeed};

#[test]
fn history_returns_every_stored_sample_and_downsamples() {
    let feed = FakeFeed::start();
    let step = |bw: &str, err: &str| vec![format!("switch1,{bw},0.5,{err},{{ts}}")];
    feed.set(util::scripted(vec![
        step("50.5", "2"),
        step("40.25", "5"),
        step("60", "1"),
    ]));
    let server = util::server(&[&feed.url], &[]);
    util::wait_for("three stored rows", Duration::from_secs(15), || {
        (util::stats(&server)["ingest"]["rows_accepted"].as_u64()? == 3).then_some(())
    });
    let history = util::get(&server.url("/telemetry/history?switch_id=switch1&metric=bandwidth"));
    assert_eq!(history.status, 200);
    let points = history.json();
    let values: Vec<f64> = points
        .as_array()
        .expect("array")
        .iter()
        .map(|p| p["value"].as_f64().expect("value"))
        .collect();
    assert_eq!(values, [50.5, 40.25, 60.0]);
    let first = points[0]["timestamp"].as_str().expect("ts").to_string();
    let errors =
        util::get(&server.url("/telemetry/history?switch_id=switch1&metric=errors&from=1h")).body;
    assert!(
        errors.contains(r#""value":2}"#) && errors.contains(r#""value":5}"#),
        "{errors}"
    );
    // An unencoded `+00:00` works too.
    let url = server.url(&format!(
        "/telemetry/history?switch_id=switch1&metric=bandwidth&from={first}&step=1h"
    ));
    let buckets = util::get(&url);
    assert_eq!(buckets.status, 200, "{}", buckets.body);
    // Buckets start on multiples of the step since the epoch, whatever `from` says: the
    // hour the first sample is in (the three polls took seconds, so one bucket unless they
    // straddle an hour boundary).
    let hour = 3_600_000_000;
    let first_micros = timestamp::parse_rfc3339(&first).expect("canonical");
    let hour_start = timestamp::to_rfc3339(first_micros.div_euclid(hour) * hour);
    let last_micros =
        timestamp::parse_rfc3339(points[2]["timestamp"].as_str().expect("ts")).expect("canonical");
    if last_micros.div_euclid(hour) == first_micros.div_euclid(hour) {
        assert_eq!(
            buckets.body,
            format!(
                r#"[{{"timestamp":"{hour_start}","min":40.25,"avg":50.25,"max":60.0,"count":3}}]"#
            )
        );
    }
    // The same buckets for another `from` (relative, so it moves with every request).
    let relative = util::get(
        &server.url("/telemetry/history?switch_id=switch1&metric=bandwidth&from=2h&step=1h"),
    );
    assert_eq!(relative.body, buckets.body);
    let second = util::get(
        &server.url("/telemetry/history?switch_id=switch1&metric=bandwidth&from=10m&step=10s"),
    );
    for bucket in second.json().as_array().expect("array") {
        let start =
            timestamp::parse_rfc3339(bucket["timestamp"].as_str().expect("ts")).expect("canonical");
        assert_eq!(start % 10_000_000, 0, "{}", second.body);
    }
    let bad = util::get(
        &server.url("/telemetry/history?switch_id=switch1&metric=bandwidth&from=1m&to=2m"),
    );
    assert_eq!(bad.status, 400);
    let aggregate = util::get(&server.url("/telemetry/aggregate")).body;
    assert_eq!(
        aggregate,
        util::get(&server.url("/telemetry/aggregate?window=1h")).body
    );
    assert_eq!(
        aggregate,
        r#"{"switch1":{"max_latency":0.5,"min_bandwidth":40.25,"total_errors":8}}"#
    );
    let stats = util::stats(&server);
    assert!(
        stats["latency"]["history"]["max_latency"]
            .as_f64()
            .expect("history latency")
            > 0.0
    );
}

/// Ranges whose arithmetic would overflow (`to - from` past `i64`, a step under a
/// microsecond) are a 400 naming the parameter, not a panic (this is a debug build, where
/// overflow panics) and not a nonsense answer.
#[test]
fn out_of_range_times_are_a_400_not_a_crash() {
    let feed = FakeFeed::start();
    feed.serve_fresh(&["switch1,50,0.5,1,{ts}"]);
    let server = util::server(&[&feed.url], &[]);
    util::wait_for_status(
        &server.url("/telemetry/get?switch_id=switch1&metric=bandwidth"),
        200,
    );
    let series = "/telemetry/history?switch_id=switch1&metric=bandwidth";
    for (query, parameter) in [
        // The issue's example (that `to` is past what jiff parses), then one that parses.
        ("from=290000y&to=9999-12-31T00:00:00Z&step=1s", "\"from\""),
        ("from=290000y&to=9999-12-30T00:00:00Z&step=1s", "\"from\""),
        ("from=1h&to=9999-12-31T00:00:00Z", "\"to\""),
        ("from=290000y&step=1s", "\"from\""),
        ("from=1h&to=-009999-01-01T00:00:00Z", "\"to\""),
        ("from=1h&step=1ns", "\"step\""),
        ("from=18446744073709551615s", "\"from\""),
    ] {
        let answer = util::get(&server.url(&format!("{series}&{query}")));
        assert_eq!(answer.status, 400, "{query}: {}", answer.body);
        let error = answer.json()["error"].as_str().expect("error").to_string();
        assert!(error.contains(parameter), "{query}: {error}");
    }
    let window = util::get(&server.url("/telemetry/aggregate?window=1ns"));
    assert_eq!(window.status, 400, "{}", window.body);
    assert!(window.body.contains("\\\"window\\\""), "{}", window.body);
    // Huge but representable spans still work.
    for query in [
        "from=2000y&step=100y",
        "from=0000-01-01T00:00:00Z&step=1000y",
    ] {
        let answer = util::get(&server.url(&format!("{series}&{query}")));
        assert_eq!(answer.status, 200, "{query}: {}", answer.body);
    }
    assert_eq!(
        util::get(&server.url("/telemetry/aggregate?window=290000y")).status,
        200
    );
    // No answer was a 5xx (a handler panic is caught and answered 500).
    let exposition = util::get(&server.url("/metrics")).body;
    assert!(!exposition.contains("code=\"5"), "{exposition}");
    assert!(exposition.contains("code=\"400\""), "{exposition}");
}
