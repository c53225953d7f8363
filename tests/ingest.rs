//! Ingest through the real poller: validation, freshness, dedupe, header mapping.

use std::time::Duration;

use crate::util::{self, FakeFeed, FeedReply, HEADER};

fn rejected(server: &util::Proc, reason: &str) -> u64 {
    util::stats(server)["ingest"]["rows_rejected"][reason]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn stale_and_future_rows_are_rejected_and_counted() {
    let feed = FakeFeed::start();
    feed.set(|_| {
        FeedReply::Csv(format!(
            "{HEADER}\nold,1,0.1,0,{}\nahead,2,0.2,0,{}\ngood,3,0.3,0,{}\n",
            util::ts(-10_000),
            util::ts(10_000),
            util::ts(0)
        ))
    });
    let server = util::server(&[&feed.url], &["--max-age", "3s"]);
    util::wait_for_status(
        &server.url("/telemetry/get?switch_id=good&metric=bandwidth"),
        200,
    );
    util::wait_for("stale and future counts", Duration::from_secs(10), || {
        (rejected(&server, "stale") >= 1 && rejected(&server, "future") >= 1).then_some(())
    });
    for switch in ["old", "ahead"] {
        let answer = util::get(&server.url(&format!(
            "/telemetry/get?switch_id={switch}&metric=bandwidth"
        )));
        assert_eq!(answer.status, 404, "{switch} must not be stored");
    }
}

#[test]
fn stale_data_answers_503_then_recovers() {
    let feed = FakeFeed::start();
    feed.serve_fresh(&["switch1,50,0.5,1,{ts}"]);
    let server = util::server(&[&feed.url], &["--max-age", "1s"]);
    let get = server.url("/telemetry/get?switch_id=switch1&metric=bandwidth");
    let list = server.url("/telemetry/list?metric=bandwidth");
    util::wait_for_status(&get, 200);
    feed.set(|_| FeedReply::Status(500));
    let stale = util::wait_for_status(&get, 503);
    let body = stale.json();
    assert!(
        body["error"].as_str().expect("error").contains("s old"),
        "{body}"
    );
    assert!(body["age_seconds"].as_f64().expect("age") > 1.0, "{body}");
    let stale_list = util::get(&list);
    assert_eq!(stale_list.status, 503);
    assert!(stale_list.json()["error"]
        .as_str()
        .expect("error")
        .contains("no switch has a fresh"));
    // Aggregates are over retained history, not freshness: still answered.
    assert_eq!(util::get(&server.url("/telemetry/aggregate")).status, 200);
    feed.serve_fresh(&["switch1,51,0.5,1,{ts}"]);
    let fresh = util::wait_for_status(&get, 200);
    assert_eq!(fresh.json()["value"], 51.0);
    assert_eq!(util::get(&list).status, 200);
}

#[test]
fn malformed_rows_are_rejected_and_good_rows_kept() {
    let feed = FakeFeed::start();
    let huge = "9".repeat(1_000_000);
    feed.set(move |_| {
        let now = util::ts(0);
        FeedReply::Csv(format!(
            "{HEADER}\n\
             good1,10,0.1,1,{now}\n\
             text,abc,0.1,1,{now}\n\
             nan,NaN,0.1,1,{now}\n\
             inf,10,inf,1,{now}\n\
             short,10,0.1\n\
             negative,10,0.1,-4,{now}\n\
             fraction,10,0.1,1.5,{now}\n\
             badtime,10,0.1,1,2025-13-45T99:00:00Z\n\
             notime,10,0.1,1,yesterday\n\
             huge,{huge},0.1,1,{now}\n\
             ,10,0.1,1,{now}\n\
             good2,20,0.2,2,{now}\n"
        ))
    });
    let server = util::server(&[&feed.url], &[]);
    util::wait_for_status(
        &server.url("/telemetry/get?switch_id=good2&metric=errors"),
        200,
    );
    let expected = [
        ("bad_number", 1),
        ("not_finite", 3),
        ("field_count", 1),
        ("bad_count", 2),
        ("bad_timestamp", 2),
        ("bad_switch_id", 1),
    ];
    let counts = util::wait_for("every reject counted", Duration::from_secs(10), || {
        let stats = util::stats(&server);
        let polls = stats["ingest"]["sources"][0]["polls_ok"].as_u64()?;
        let counts = stats["ingest"]["rows_rejected"].clone();
        // Each poll rejects the same rows again: counts are multiples of the poll count.
        let all = expected
            .iter()
            .all(|(reason, per_poll)| counts[reason].as_u64() == Some(per_poll * polls));
        all.then_some(counts)
    });
    assert_eq!(counts["stale"], 0);
    for switch in [
        "text", "nan", "inf", "short", "negative", "fraction", "badtime", "notime", "huge",
    ] {
        let answer = util::get(&server.url(&format!(
            "/telemetry/get?switch_id={switch}&metric=bandwidth"
        )));
        assert_eq!(answer.status, 404, "{switch} must not be stored");
    }
    assert_eq!(
        util::get(&server.url("/telemetry/get?switch_id=good1&metric=bandwidth")).json()["value"],
        10.0
    );
    let logs = util::wait_for("a rejected-rows warning", Duration::from_secs(5), || {
        let logs = server.logs();
        logs.iter()
            .any(|l| l.contains("WARN") && l.contains("rejected"))
            .then_some(logs)
    });
    let warnings = logs
        .iter()
        .filter(|l| l.contains("rejected 10 of 12 rows"))
        .count();
    assert_eq!(
        warnings, 1,
        "rejections are logged once per 30 s, not per poll: {logs:?}"
    );
}

#[test]
fn columns_are_found_by_name_and_extra_columns_are_metrics() {
    let feed = FakeFeed::start();
    feed.set(|_| {
        FeedReply::Csv(format!(
            "timestamp,errors,switch_id,temperature,latency,bandwidth\n{},4,switch1,41.5,0.25,99.5\n{},0,switch2,,0.5,1\n",
            util::ts(0),
            util::ts(0),
        ))
    });
    let server = util::server(&[&feed.url], &[]);
    let answer = util::wait_for_status(
        &server.url("/telemetry/get?switch_id=switch1&metric=temperature"),
        200,
    );
    assert_eq!(answer.json()["value"], 41.5);
    let errors = util::get(&server.url("/telemetry/get?switch_id=switch1&metric=errors"));
    assert!(errors.body.contains(r#""value":4,"#), "{}", errors.body);
    assert_eq!(
        util::get(&server.url("/telemetry/get?switch_id=switch1&metric=bandwidth")).json()["value"],
        99.5
    );
    // switch2 has no temperature: a 404 for it, and /list leaves it out.
    assert_eq!(
        util::get(&server.url("/telemetry/get?switch_id=switch2&metric=temperature")).status,
        404
    );
    let list = util::get(&server.url("/telemetry/list?metric=temperature")).json();
    assert_eq!(list.as_object().map(|o| o.len()), Some(1), "{list}");
}

#[test]
fn other_timestamp_offsets_are_accepted_and_normalised() {
    let feed = FakeFeed::start();
    feed.set(|_| {
        // Local time seven hours behind UTC, written with its -07:00 offset.
        let local = fabric_telemetry::shared::timestamp::now_micros() - 7 * 3_600_000_000;
        let shifted =
            fabric_telemetry::shared::timestamp::to_rfc3339(local).replace("+00:00", "-07:00");
        FeedReply::Csv(format!("{HEADER}\nswitch1,5,0.5,0,{shifted}\n"))
    });
    let server = util::server(&[&feed.url], &[]);
    let answer = util::wait_for_status(
        &server.url("/telemetry/get?switch_id=switch1&metric=bandwidth"),
        200,
    );
    let ts = answer.json()["timestamp"].as_str().expect("ts").to_string();
    assert!(ts.ends_with("+00:00") && ts.len() == 32, "{ts}");
}

/// Feed text that tries to forge log lines: a quoted switch id holding a newline and a fake
/// log line (longer than 40 characters: the old escaping let such values through), a metric header
/// holding one (logged with a bad value of that metric), and a repeated header column
/// holding one (logged as a failed poll). Neither log format may let a forged line start.
#[test]
fn feed_text_cannot_forge_log_lines() {
    const FORGED: &str = "FORGED 2026-01-01T00:00:00Z [ERROR] fabric_telemetry: forged";
    let switch_feed = FakeFeed::start();
    let switch_row = format!("\"sw\n{FORGED}\",1,0.1,0,{{ts}}");
    switch_feed.serve_fresh(&[switch_row.as_str(), "switch1,1,0.1,0,{ts}"]);
    let metric_feed = FakeFeed::start();
    let metric_header = format!("switch_id,\"bw\n{FORGED}\",latency,errors,timestamp");
    metric_feed.set(move |_| {
        let rows = [
            "switch2,oops,0.1,0,{ts}".to_string(),
            "switch3,7,0.1,0,{ts}".to_string(),
        ];
        FeedReply::Csv(util::csv_with_now(&metric_header, &rows))
    });
    let header_feed = FakeFeed::start();
    let bad_header = format!("switch_id,\"d\n{FORGED}\",\"d\n{FORGED}\",timestamp");
    header_feed.set(move |_| FeedReply::Csv(util::csv_with_now(&bad_header, &[])));
    let sources = [
        switch_feed.url.as_str(),
        metric_feed.url.as_str(),
        header_feed.url.as_str(),
    ];
    let text = util::server(&sources, &[]);
    let json = util::server(&sources, &["--log-format", "json"]);

    // Each source's trouble is logged once: the switch id, the metric name, the header.
    let all_logged = |lines: &[String]| {
        lines
            .iter()
            .filter(|l| l.contains("rejected 1 of 2 rows"))
            .count()
            >= 2
            && lines.iter().any(|l| l.contains("failed: bad feed header"))
    };
    let text_logs = util::wait_for("every source's warning", Duration::from_secs(10), || {
        let logs = text.logs();
        all_logged(&logs).then_some(logs)
    });
    for line in &text_logs {
        assert!(
            !line.starts_with("FORGED"),
            "forged log line: {text_logs:#?}"
        );
    }
    // Still there, escaped: `\n` for the newline.
    for escaped in [
        "\"sw\\nFORGED".to_string(),
        "\"bw\\nFORGED".to_string(),
        "\"d\\nFORGED".to_string(),
    ] {
        assert!(
            text_logs.iter().any(|l| l.contains(&escaped)),
            "{escaped} not in {text_logs:#?}"
        );
    }

    let json_messages = util::wait_for(
        "every source's JSON warning",
        Duration::from_secs(10),
        || {
            let messages: Vec<String> = json
                .logs()
                .iter()
                .map(|line| {
                    let value: serde_json::Value = serde_json::from_str(line)
                        .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
                    value["message"].as_str().expect("message").to_string()
                })
                .collect();
            all_logged(&messages).then_some(messages)
        },
    );
    for message in &json_messages {
        // What Loki or `jq -r .message` shows must be one line too.
        assert!(
            !message.contains('\n') && !message.contains('\r'),
            "{message:?}"
        );
    }

    // The metric with a newline in its name is data: its HELP line in /metrics is escaped.
    let exposition = util::wait_for("switch3 in /metrics", Duration::from_secs(10), || {
        let body = util::get(&text.url("/metrics")).body;
        body.contains("switch=\"switch3\"").then_some(body)
    });
    for line in exposition.lines() {
        assert!(!line.starts_with("FORGED"), "{exposition}");
    }
}
