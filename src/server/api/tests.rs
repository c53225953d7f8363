use super::*;
use crate::server::store::{BlockLimits, Store};
use crate::shared::feed::FeedBatch;
use crate::shared::http::Handler;
use crate::shared::metric::BUILTIN_METRICS;

const S: i64 = timestamp::MICROS_PER_SEC;

/// An API over a store holding `rows` one-second rows of `switch1` ending now.
fn api_with_history(rows: i64) -> (Api, Micros) {
    let now = timestamp::now_micros();
    let mut batch = FeedBatch::with_metrics(&BUILTIN_METRICS);
    let first = now - (rows - 1) * S;
    for i in 0..rows {
        batch.push_row(
            "switch1",
            first + i * S,
            &[(i % 100) as f64, 0.5, (i % 3) as f64],
        );
    }
    let store = StoreHandle::new(Store::new(BlockLimits::for_retention(Duration::from_secs(
        7200,
    ))));
    store.apply(&batch);
    let api = Api::new(
        store,
        Arc::new(ApiStats::new()),
        Arc::new(IngestStats::new(&[])),
        Duration::from_secs(3),
    );
    (api, first)
}

fn call(api: &Api, url: &str) -> (u16, serde_json::Value) {
    let reply = api.handle(&RequestHead::get(url));
    let body = serde_json::from_slice(reply.body_bytes()).expect("JSON body");
    (reply.status, body)
}

#[test]
fn history_caps_points_and_suggests_a_step() {
    let (api, first) = api_with_history(11_500);
    let (status, body) = call(
        &api,
        "/telemetry/history?switch_id=switch1&metric=bandwidth",
    );
    assert_eq!(status, 400);
    let message = body["error"].as_str().expect("error");
    assert!(
        message.contains("more than 11000") && message.contains("step="),
        "{message}"
    );
    let (status, body) = call(
        &api,
        "/telemetry/history?switch_id=switch1&metric=bandwidth&from=4h&step=1m",
    );
    assert_eq!(status, 200);
    let buckets = body.as_array().expect("array");
    let total: u64 = buckets
        .iter()
        .map(|b| b["count"].as_u64().expect("count"))
        .sum();
    assert_eq!(total, 11_500);
    let from = timestamp::to_rfc3339(first);
    let (status, body) = call(
        &api,
        &format!(
            "/telemetry/history?switch_id=switch1&metric=errors&from={from}&to={}",
            timestamp::to_rfc3339(first + 4 * S)
        ),
    );
    assert_eq!(status, 200);
    assert_eq!(
        body,
        serde_json::json!([
            {"timestamp": from, "value": 0},
            {"timestamp": timestamp::to_rfc3339(first + S), "value": 1},
            {"timestamp": timestamp::to_rfc3339(first + 2 * S), "value": 2},
            {"timestamp": timestamp::to_rfc3339(first + 3 * S), "value": 0},
            {"timestamp": timestamp::to_rfc3339(first + 4 * S), "value": 1},
        ])
    );
}

#[test]
fn history_rejects_bad_ranges() {
    let (api, _) = api_with_history(10);
    for (query, fragment) in [
        ("from=5m&to=10m", "empty range"),
        ("from=yesterday", "\"from\""),
        ("to=later", "\"to\""),
        ("from=1h&step=0s", "greater than zero"),
        ("from=1h&step=fast", "duration"),
        ("step=1m", "needs \"from\""),
        ("from=100d&step=1s", "larger step"),
        ("from=", "empty"),
    ] {
        let (status, body) = call(
            &api,
            &format!("/telemetry/history?switch_id=switch1&metric=latency&{query}"),
        );
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            body["error"].as_str().expect("error").contains(fragment),
            "{query}: {body}"
        );
    }
    assert_eq!(
        call(&api, "/telemetry/history?switch_id=ghost&metric=latency").0,
        404
    );
    assert_eq!(
        call(&api, "/telemetry/history?switch_id=switch1&metric=nope").0,
        404
    );
}

/// Every byte but ASCII letters and digits as `%XX`.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(crate::proptest_cases()))]

    /// No from/to/step/window a client sends makes the handler panic (a 500): every
    /// overflow is checked, every bad value is a 400.
    #[test]
    fn arbitrary_time_parameters_never_panic(
        from in history::arbitrary_time_text(),
        to in history::arbitrary_time_text(),
        step in history::arbitrary_time_text(),
        window in history::arbitrary_time_text(),
    ) {
        static API: std::sync::OnceLock<Api> = std::sync::OnceLock::new();
        let api = API.get_or_init(|| api_with_history(10).0);
        let (from, to, step, window) =
            (percent_encode(&from), percent_encode(&to), percent_encode(&step), percent_encode(&window));
        for url in [
            format!("/telemetry/history?switch_id=switch1&metric=latency&from={from}&to={to}&step={step}"),
            format!("/telemetry/history?switch_id=switch1&metric=latency&from={from}&to={to}"),
            format!("/telemetry/aggregate?window={window}"),
        ] {
            let (status, body) = call(api, &url);
            proptest::prop_assert!(status == 200 || status == 400, "{url}: {status} {body}");
        }
    }
}

#[test]
fn windowed_aggregates_cover_only_the_window() {
    let (api, _) = api_with_history(600);
    let (_, all) = call(&api, "/telemetry/aggregate");
    let (_, hour) = call(&api, "/telemetry/aggregate?window=1h");
    assert_eq!(all, hour);
    assert_eq!(all["switch1"]["total_errors"], 600); // (0 + 1 + 2) × 200
                                                     // Row i is (599 - i) s old: the last 9.5 s hold rows 590..=599.
    let (status, recent) = call(&api, "/telemetry/aggregate?window=9500ms");
    assert_eq!(status, 200);
    let errors: u64 = (590..600).map(|i| i % 3).sum();
    assert_eq!(recent["switch1"]["total_errors"], errors, "{recent}");
    assert_eq!(recent["switch1"]["min_bandwidth"], 90.0);
    assert_eq!(call(&api, "/telemetry/aggregate?window=soon").0, 400);
    assert_eq!(call(&api, "/telemetry/aggregate?window=").0, 400);
}

#[test]
fn list_answers_are_shared_until_the_store_changes() {
    let (api, _) = api_with_history(5);
    let first = api.handle(&RequestHead::get("/telemetry/list?metric=bandwidth"));
    let second = api.handle(&RequestHead::get("/telemetry/list?metric=bandwidth"));
    let (ReplyBody::Shared { data: a, .. }, ReplyBody::Shared { data: b, .. }) =
        (&first.body, &second.body)
    else {
        panic!("list answers are shared bodies");
    };
    assert!(Arc::ptr_eq(a, b), "the second answer reuses the first");
    let mut batch = FeedBatch::with_metrics(&BUILTIN_METRICS);
    batch.push_row("switch2", timestamp::now_micros(), &[1.0, 1.0, 1.0]);
    api.store.apply(&batch);
    let third = api.handle(&RequestHead::get("/telemetry/list?metric=bandwidth"));
    assert!(String::from_utf8_lossy(third.body_bytes()).contains("switch2"));
}
