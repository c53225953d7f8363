//! History and windowed aggregates through the real server.

use std::time::Duration;

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
    assert_eq!(
        buckets.body,
        format!(r#"[{{"timestamp":"{first}","min":40.25,"avg":50.25,"max":60.0,"count":3}}]"#)
    );
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
