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

/// UFM CSV rows for ports 1..=3 at `us`: port p's PortXmitDataExtended is `data[p-1]`.
fn ufm_rows(us: i64, data: [u64; 3]) -> String {
    let mut body = String::from("timestamp,node_guid,port_num,PortXmitDataExtended,Temperature\n");
    for (i, value) in data.iter().enumerate() {
        let port = i + 1;
        body.push_str(&format!(
            "{us},0x7cfe9003009ce5b0,{port},{value},{}\n",
            40 + port
        ));
    }
    body
}

#[test]
fn rates_survive_resets_top_ranks_ports_and_names_show() {
    let dir = tempfile_dir("names");
    let names = dir.join("names.csv");
    std::fs::write(
        &names,
        "guid,port,name\n0x7cfe9003009ce5b0,,leaf-1\n0x7cfe9003009ce5b0,3,uplink-a\n",
    )
    .expect("names");
    let feed = FakeFeed::start();
    // Port 1 grows 1000/s, port 2 grows 3000/s and resets once, port 3 saturates at 2^32-1.
    let start = now_us() - 20 * 1_000_000;
    let steps: Vec<[u64; 3]> = (0..21u64)
        .map(|i| {
            let p2 = if i < 10 {
                50_000 + 3_000 * i
            } else {
                3_000 * (i - 10)
            };
            [
                1_000 * i,
                p2,
                if i < 5 {
                    4_294_967_000 + i
                } else {
                    4_294_967_295
                },
            ]
        })
        .collect();
    let body: String = steps
        .iter()
        .enumerate()
        .map(|(i, data)| {
            let rows = ufm_rows(start + i as i64 * 1_000_000, *data);
            if i == 0 {
                rows
            } else {
                rows.lines().skip(1).map(|l| format!("{l}\n")).collect()
            }
        })
        .collect();
    feed.set(move |_| FeedReply::Body("text/csv", body.clone()));
    // A perfquery-style CSV of an HCA: PortXmitData counts 4-octet words, 250 a second.
    let hca = FakeFeed::start();
    let words: String = std::iter::once("switch_id,PortXmitData,timestamp\n".to_string())
        .chain((0..21i64).map(|i| {
            format!(
                "hca-1,{},{}\n",
                250 * i,
                timestamp::to_rfc3339(start + i * 1_000_000)
            )
        }))
        .collect();
    hca.set(move |_| FeedReply::Body("text/csv", words.clone()));
    let server = server(
        &[&feed.url, &hca.url],
        &[
            "--names",
            names.to_str().expect("utf-8"),
            "--max-age",
            "30s",
        ],
    );
    let rate = |switch: &str, metric: &str| {
        get(&server.url(&format!(
            "/telemetry/rate?switch_id={switch}&metric={metric}&window=1m"
        )))
    };
    let first = wait_for("port 1's rate", Duration::from_secs(10), || {
        let answer = rate("0x7cfe9003009ce5b0:1", "PortXmitDataExtended");
        (answer.status == 200).then_some(answer.json())
    });
    assert_eq!(first["rate"], 1000.0, "{first}");
    assert_eq!(first["resets"], 0);
    assert_eq!(first["window_seconds"], 20.0);
    assert_eq!(first["name"], "leaf-1/1");
    // By name: the reset counts from zero; 9 steps of 3000, then 0, then 10 steps of 3000.
    let second = rate("leaf-1/2", "PortXmitDataExtended").json();
    assert_eq!(second["switch_id"], "0x7cfe9003009ce5b0:2", "{second}");
    assert_eq!(second["resets"], 1);
    assert_eq!(second["rate"], (19.0 * 3000.0) / 20.0);
    let third = rate("uplink-a", "PortXmitDataExtended").json();
    assert_eq!(third["saturated"], true, "{third}");
    assert!(third["rate"].is_null());
    // Word counters are answered in bytes.
    let words = wait_for("the HCA's rate", Duration::from_secs(10), || {
        let answer = rate("hca-1", "PortXmitData");
        (answer.status == 200).then_some(answer.json())
    });
    assert_eq!(words["unit"], "bytes", "{words}");
    assert_eq!(words["rate"], 1000.0);
    assert_eq!(
        rate("leaf-1/1", "Temperature").status,
        400,
        "a gauge has no rate"
    );

    let top = get(&server.url("/telemetry/top?metric=PortXmitDataExtended&k=5&window=1m")).json();
    let entries = top.as_array().expect("array");
    assert_eq!(entries.len(), 2, "the saturated port has no rate: {top}");
    assert_eq!(entries[0]["switch_id"], "0x7cfe9003009ce5b0:2");
    assert_eq!(entries[0]["name"], "leaf-1/2");
    assert_eq!(entries[1]["value"], 1000.0);
    let hottest = get(&server.url("/telemetry/top?metric=Temperature&k=1")).json();
    assert_eq!(hottest[0]["switch_id"], "0x7cfe9003009ce5b0:3", "{hottest}");
    assert_eq!(hottest[0]["name"], "uplink-a");
    assert_eq!(hottest[0]["value"], 43.0);
    assert_eq!(
        get(&server.url("/telemetry/top?metric=Temperature&k=0")).status,
        400
    );

    let history = get(&server
        .url("/telemetry/history?switch_id=leaf-1/2&metric=PortXmitDataExtended&from=1m&rate=1"))
    .json();
    let points = history.as_array().expect("array");
    assert_eq!(points.len(), 20, "{history}");
    // The reset lands on 0: that step added nothing; every other step added 3000.
    let values: Vec<f64> = points
        .iter()
        .map(|p| p["value"].as_f64().unwrap_or(-1.0))
        .collect();
    assert_eq!(
        values.iter().filter(|&&v| v == 3000.0).count(),
        19,
        "{history}"
    );
    assert_eq!(values[9], 0.0, "{history}");

    let list = get(&server.url("/telemetry/list?metric=Temperature")).json();
    assert_eq!(list["0x7cfe9003009ce5b0:3"]["name"], "uplink-a", "{list}");
    let metrics = get(&server.url("/metrics")).body;
    assert!(
        metrics.contains("{switch=\"0x7cfe9003009ce5b0:3\",name=\"uplink-a\"}"),
        "names in /metrics"
    );

    // SIGHUP re-reads the names file.
    std::fs::write(&names, "0x7cfe9003009ce5b0,3,uplink-b\n").expect("names");
    signal(&server, libc::SIGHUP);
    wait_for("the new name", Duration::from_secs(5), || {
        let answer = rate("uplink-b", "PortXmitDataExtended");
        (answer.status == 200).then_some(())
    });
    assert_eq!(rate("uplink-a", "PortXmitDataExtended").status, 404);
}

fn tempfile_dir(what: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "fabric-sources-{what}-{}-{}",
        std::process::id(),
        now_us()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn a_source_minting_keys_and_columns_is_bounded_and_counted() {
    let feed = FakeFeed::start();
    feed.set(|n| {
        // Every poll brings new keys and a new column: the bounds hold.
        let mut body = format!("timestamp,node_guid,port_num,a,b,new_{n}\n");
        let us = now_us();
        for port in 1..=5 {
            body.push_str(&format!("{us},0x{:x},{port},1,2,3\n", 100 + n));
        }
        FeedReply::Body("text/csv", body)
    });
    let server = server(&[&feed.url], &["--max-series", "7", "--max-metrics", "3"]);
    let source = wait_for("three polls", Duration::from_secs(10), || {
        let source = stats(&server)["ingest"]["sources"][0].clone();
        (source["polls_ok"].as_u64() >= Some(3)).then_some(source)
    });
    assert_eq!(source["series"], 7, "{source}");
    assert!(source["metrics_dropped"].as_u64() >= Some(2), "{source}");
    let rejected = &stats(&server)["ingest"]["rows_rejected"];
    assert!(
        rejected["too_many_series"].as_u64() >= Some(8),
        "{rejected}"
    );
    let list = get(&server.url("/telemetry/list?metric=a")).json();
    assert_eq!(list.as_object().map(|o| o.len()), Some(7), "{list}");
    assert_eq!(get(&server.url("/telemetry/list?metric=new_1")).status, 404);
    assert_eq!(get(&server.url("/telemetry/list?metric=new_0")).status, 200);
}

#[test]
fn the_demo_runs_a_ufm_fabric_and_the_generator_serves_it_as_prometheus_too() {
    let server = server(&["http://127.0.0.1:0/csv/metrics"], &["--demo"]);
    let top = wait_for("a UFM fabric's top ports", Duration::from_secs(15), || {
        let answer = get(&server.url("/telemetry/top?metric=PortXmitDataExtended&k=3&window=1m"));
        (answer.status == 200).then_some(answer.json())
    });
    let entries = top.as_array().expect("array");
    assert_eq!(entries.len(), 3, "{top}");
    // Bytes per second at a fraction of a 200 Gb/s port.
    let best = entries[0]["value"].as_f64().expect("a rate");
    assert!(best > 1e8 && best < 25e9, "{top}");
    let list = get(&server.url("/telemetry/list?metric=PortXmitDataExtended")).json();
    assert_eq!(
        list.as_object().map(|o| o.len()),
        Some(80),
        "10 switches x 8 ports"
    );

    let generator = generator(&["--format", "ufm", "--switches", "2", "--ports", "4"]);
    let prometheus = generator.url("/metrics");
    let server = crate::util::server(&[&prometheus], &[]);
    let key = "0x0002c903000000a0:4";
    let value = wait_for(
        "a port from the Prometheus rendering",
        Duration::from_secs(10),
        || {
            let answer = get(&server.url(&format!(
                "/telemetry/get?switch_id={key}&metric=SymbolErrorCounterExtended"
            )));
            (answer.status == 200).then_some(answer.json())
        },
    );
    assert!(value["value"].is_u64(), "{value}");
    assert_eq!(source_stats(&server)["format"], "prometheus");

    let refused = std::process::Command::new(server_bin())
        .args([
            "--demo",
            "--source",
            "http://127.0.0.1:0/feed",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("runs");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("/csv/metrics"), "{stderr}");
}
