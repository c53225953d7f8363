//! Real fabric sources against the real binary: UFM Telemetry CSV and Prometheus text (the
//! exporters' and UFM's), ports as series, counters exact from feed to answer.

use std::time::Duration;

use fabric_telemetry::shared::timestamp;

use crate::util::*;

fn now_us() -> i64 {
    timestamp::now_micros()
}

/// A UFM Telemetry CSV answer for ports 1..=n of one switch, counters at `base + port`.
fn ufm_csv(base: u64, ports: u16) -> String {
    let mut body = String::from(
        "timestamp,source_id,tag,node_guid,port_guid,port_num, PortXmitDataExtended,SymbolErrorCounterExtended,PortRcvErrorsExtended,Temperature\n",
    );
    let us = now_us();
    for port in 1..=ports {
        body.push_str(&format!(
            "{us},0x0002c90300f172a0,,2c90300f172a0,0x0002c90300f172a1,{port},{},18446744073709551576,N/A,4{port}\n",
            base + u64::from(port)
        ));
    }
    body
}

/// The stats of the first source once its first answer is fully read.
fn source_stats(server: &Proc) -> serde_json::Value {
    wait_for("the first answer's stats", Duration::from_secs(10), || {
        let source = stats(server)["ingest"]["sources"][0].clone();
        (!source["format"].is_null()).then_some(source)
    })
}

fn raw_get(server: &Proc, query: &str) -> (u16, String) {
    let answer = get(&server.url(&format!("/telemetry/get?{query}")));
    (answer.status, answer.body.clone())
}

#[test]
fn a_ufm_csv_source_keys_ports_and_answers_counters_exactly() {
    let feed = FakeFeed::start();
    feed.set(|_| FeedReply::Body("text/csv", ufm_csv(9_007_199_254_740_992, 3)));
    let server = server(&[&feed.url], &[]);
    let key = "0x0002c90300f172a0:2";
    let (status, body) = wait_for("the port's first sample", Duration::from_secs(10), || {
        let (status, body) = raw_get(
            &server,
            &format!("switch_id={key}&metric=PortXmitDataExtended"),
        );
        (status == 200).then_some((status, body))
    });
    assert_eq!(status, 200);
    // 2^53 + 2: an f64 would say ...994 or ...992; the answer is the integer itself.
    assert!(
        body.contains("\"value\":9007199254740994"),
        "exact above 2^53: {body}"
    );
    let (_, body) = raw_get(
        &server,
        &format!("switch_id={key}&metric=SymbolErrorCounterExtended"),
    );
    assert!(body.contains("\"value\":18446744073709551576"), "{body}");
    let (status, _) = raw_get(
        &server,
        &format!("switch_id={key}&metric=PortRcvErrorsExtended"),
    );
    assert_eq!(status, 404, "N/A is no sample, not a zero");
    let list = get(&server.url("/telemetry/list?metric=Temperature")).json();
    let ports: Vec<&String> = list.as_object().expect("object").keys().collect();
    assert_eq!(
        ports,
        [
            "0x0002c90300f172a0:1",
            "0x0002c90300f172a0:2",
            "0x0002c90300f172a0:3"
        ]
    );
    let source = &source_stats(&server);
    assert_eq!(source["format"], "ufm-csv", "{source}");
    assert!(
        source["values_not_available"].as_u64() >= Some(3),
        "{source}"
    );
    let metrics = get(&server.url("/metrics")).body;
    assert!(
        metrics.contains(
            "fabric_switch_symbolerrorcounterextended_total{switch=\"0x0002c90300f172a0:2\"} 18446744073709551576"
        ),
        "exact in /metrics"
    );
    assert!(metrics.contains("# TYPE fabric_switch_portxmitdataextended_total counter"));
}

#[test]
fn a_prometheus_exporter_source_is_read_with_its_own_names() {
    let text = "# HELP infiniband_switch_port_transmit_data_bytes_total Infiniband switch port PortXmitData\n\
                # TYPE infiniband_switch_port_transmit_data_bytes_total counter\n\
                infiniband_switch_port_transmit_data_bytes_total{guid=\"0x7cfe9003009ce5b0\",port=\"1\"} 145192107443712\n\
                infiniband_switch_port_transmit_data_bytes_total{guid=\"0x7cfe9003009ce5b0\",port=\"2\"} 0\n\
                # TYPE infiniband_exporter_collect_errors gauge\n\
                infiniband_exporter_collect_errors{collector=\"switch\"} 0\n";
    let feed = FakeFeed::start();
    feed.set(move |_| {
        FeedReply::Body("text/plain; version=0.0.4; charset=utf-8", text.to_string())
    });
    let server = server(&[&feed.url], &[]);
    let query =
        "switch_id=0x7cfe9003009ce5b0:1&metric=infiniband_switch_port_transmit_data_bytes_total";
    let body = wait_for("the exporter's sample", Duration::from_secs(10), || {
        let (status, body) = raw_get(&server, query);
        (status == 200).then_some(body)
    });
    assert!(body.contains("\"value\":145192107443712"), "{body}");
    let source = source_stats(&server);
    assert_eq!(source["format"], "prometheus");
    assert!(source["samples_unkeyed"].as_u64() >= Some(1), "{source}");
}

/// The public sample of treydock/infiniband_exporter's output, served as a source, gives
/// exactly its values (when `../shared/fixtures` is present, as it is in CI).
#[test]
fn the_exporters_published_output_served_as_a_source_gives_its_values() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/treydock_infiniband_exporter/expected_switch_metrics.prom");
    let Ok(text) = std::fs::read_to_string(&path) else {
        skip_unless_required("../shared/fixtures");
        return;
    };
    let feed = FakeFeed::start();
    let served = text.clone();
    feed.set(move |_| FeedReply::Body("text/plain; version=0.0.4", served.clone()));
    let server = server(&[&feed.url], &[]);
    let metric = "infiniband_switch_port_receive_data_bytes_total";
    wait_for("the exporter's samples", Duration::from_secs(10), || {
        let list = get(&server.url(&format!("/telemetry/list?metric={metric}")));
        (list.status == 200).then_some(())
    });
    let mut checked = 0;
    for line in text
        .lines()
        .filter(|l| l.starts_with("infiniband_switch_port_"))
    {
        let (name, rest) = line.split_once('{').expect("labelled");
        let (labels, value) = rest.rsplit_once("} ").expect("value");
        let label = |k: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
        };
        let (Some(guid), Some(port)) = (label("guid"), label("port")) else {
            continue;
        };
        let answer = get(&server.url(&format!(
            "/telemetry/get?switch_id={guid}:{port}&metric={name}"
        )));
        assert_eq!(answer.status, 200, "{line}: {}", answer.body);
        let got = answer.json()["value"].clone();
        let want: serde_json::Value = serde_json::from_str(value).expect("a JSON number");
        assert!(
            got == want || got.as_f64() == want.as_f64(),
            "{line}: got {got}"
        );
        checked += 1;
    }
    assert!(checked >= 70, "{checked} samples checked");
}

#[test]
fn a_source_can_name_its_format_and_query_strings_pass_through() {
    let feed = FakeFeed::start();
    // Labelled as Prometheus text (a proxy that gets content types wrong): detection alone
    // would read it so; the fragment says UFM CSV, and is never sent.
    feed.set(|_| FeedReply::Body("text/plain; version=0.0.4", ufm_csv(5, 1)));
    let source = format!("{}?num_shards=3&shard=0#format=ufm-csv", feed.url);
    let server = server(&[&source], &[]);
    wait_for("a UFM row", Duration::from_secs(10), || {
        let (status, _) = raw_get(
            &server,
            "switch_id=0x0002c90300f172a0:1&metric=PortXmitDataExtended",
        );
        (status == 200).then_some(())
    });
    assert_eq!(source_stats(&server)["format"], "ufm-csv");
    assert_eq!(feed.last_target(), "/counters?num_shards=3&shard=0");
    let bad = std::process::Command::new(server_bin())
        .args([
            "--source",
            "http://127.0.0.1:1/x#format=xml",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("runs");
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("ufm-csv"), "names the formats: {stderr}");
}
