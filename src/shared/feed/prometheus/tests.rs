use super::*;
use crate::shared::feed::{parse_answer, Format};
use crate::shared::timestamp::MICROS_PER_SEC;

const NOW: Micros = 1_700_000_000_000_000;

fn fresh() -> Freshness {
    Freshness {
        now: NOW,
        max_age: 3 * MICROS_PER_SEC,
    }
}

fn read(text: &str) -> FeedBatch {
    parse_answer(text.as_bytes(), None, fresh(), &SourceOptions::default())
}

/// (key, metric) → cell, for every row of a batch.
fn cells(batch: &FeedBatch) -> HashMap<(String, String), Option<Value>> {
    let mut out = HashMap::new();
    for row in 0..batch.len() {
        for (name, value) in batch.metrics.iter().zip(batch.row_values(row)) {
            if value.is_some() {
                out.insert((batch.switch_id(row).to_string(), name.clone()), *value);
            }
        }
    }
    out
}

fn cell(batch: &FeedBatch, key: &str, metric: &str) -> Option<Value> {
    cells(batch)
        .get(&(key.to_string(), metric.to_string()))
        .copied()
        .flatten()
}

#[test]
fn ufm_metrics_key_ports_like_its_csv_with_millisecond_timestamps() {
    let ms = NOW / 1000;
    let text = format!(
        "# HELP PortXmitDataExtended transmitted bytes\n\
         # TYPE PortXmitDataExtended counter\n\
         PortXmitDataExtended{{source=\"0x0002c90300f172a0\",node_guid=\"2c90300f172a0\",port_num=\"2\"}} 18446744073709551576 {ms}\n\
         PortXmitDataExtended{{source=\"0x0002c90300f172a0\",node_guid=\"2c90300f172a0\",port_num=\"3\"}} 0x10 {ms}\n\
         # TYPE Temperature gauge\n\
         Temperature{{node_guid=\"0x0002C90300F172A0\",port_num=\"2\"}} 41.5 {ms}\n"
    );
    let batch = read(&text);
    assert_eq!(batch.rejected.total(), 0, "{:?}", batch.examples);
    assert_eq!(
        cell(&batch, "0x0002c90300f172a0:2", "PortXmitDataExtended"),
        Some(Value::Int(18_446_744_073_709_551_576))
    );
    assert_eq!(
        cell(&batch, "0x0002c90300f172a0:3", "PortXmitDataExtended"),
        Some(Value::Int(16))
    );
    assert_eq!(
        cell(&batch, "0x0002c90300f172a0:2", "Temperature"),
        Some(Value::Float(41.5))
    );
    assert_eq!(batch.len(), 2, "one row per port at one time");
    assert_eq!(batch.timestamp(0), ms * 1000);
    let counter = batch
        .metrics
        .iter()
        .position(|m| m == "PortXmitDataExtended");
    assert!(batch.kinds[counter.expect("column")].is_counter());
}

#[test]
fn samples_without_timestamps_are_taken_at_the_poll_and_unkeyed_ones_are_counted() {
    let batch = read(
        "go_goroutines 12\n\
         infiniband_switch_info{guid=\"0x7cfe9003009ce5b0\",switch=\"ib-1\"} 1\n\
         node_infiniband_port_errors_total{device=\"mlx4_0\",port=\"1\"} 3\n",
    );
    assert_eq!(batch.unkeyed, 2);
    assert_eq!(batch.len(), 1);
    assert_eq!(batch.switch_id(0), "mlx4_0:1");
    assert_eq!(batch.timestamp(0), NOW);
    assert_eq!(
        cell(&batch, "mlx4_0:1", "node_infiniband_port_errors_total"),
        Some(Value::Int(3))
    );
}

#[test]
fn same_key_and_name_with_other_labels_stay_distinct() {
    let batch = read(
        "# TYPE xmit_wait counter\n\
         xmit_wait{guid=\"0x1\",port=\"1\",vl=\"0\",switch=\"a\"} 5\n\
         xmit_wait{guid=\"0x1\",port=\"1\",vl=\"1\",switch=\"a\"} 7\n\
         xmit_wait{guid=\"0x1\",port=\"2\",vl=\"0\",switch=\"a\"} 9\n\
         temp{guid=\"0x1\",port=\"1\",switch=\"a\"} 40\n",
    );
    let key = "0x0000000000000001:1";
    assert_eq!(
        cell(&batch, key, "xmit_wait{switch=\"a\",vl=\"0\"}"),
        Some(Value::Int(5))
    );
    assert_eq!(
        cell(&batch, key, "xmit_wait{switch=\"a\",vl=\"1\"}"),
        Some(Value::Int(7))
    );
    // One sample per key: the bare name, whatever other labels it carries.
    assert_eq!(cell(&batch, key, "temp"), Some(Value::Float(40.0)));
    assert_eq!(
        cell(&batch, "0x0000000000000001:2", "xmit_wait"),
        Some(Value::Int(9))
    );
}

#[test]
fn openmetrics_seconds_exemplars_created_and_eof() {
    let seconds = NOW / MICROS_PER_SEC;
    let text = format!(
        "# TYPE rcv counter\n\
         rcv_total{{guid=\"0x2\",port=\"1\"}} 17 {seconds}.5 # {{trace_id=\"x\"}} 1\n\
         rcv_created{{guid=\"0x2\",port=\"1\"}} 1600000000\n\
         # EOF\n"
    );
    let batch = parse_answer(
        text.as_bytes(),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        fresh(),
        &SourceOptions::default(),
    );
    assert_eq!(batch.rejected.total(), 0, "{:?}", batch.examples);
    assert_eq!(batch.metrics, ["rcv_total"]);
    assert_eq!(batch.timestamp(0), seconds * MICROS_PER_SEC + 500_000);
}

#[test]
fn malformed_lines_bad_values_and_non_finite_values_lose_only_themselves() {
    let batch = read(
        "ok{guid=\"0x3\",port=\"1\"} 1\n\
         broken{guid=\"0x3\",port=\"1\" 2\n\
         word{guid=\"0x3\",port=\"1\"} many\n\
         nan{guid=\"0x3\",port=\"1\"} NaN\n\
         bad_key{guid=\"zz\",port=\"1\"} 4\n\
         [...]\n\
         na_total{guid=\"0x3\",port=\"1\"} N/A\n",
    );
    assert_eq!(batch.rejected.get(RejectReason::Malformed), 2);
    assert_eq!(batch.rejected.get(RejectReason::BadNumber), 1);
    assert_eq!(batch.rejected.get(RejectReason::BadSwitchId), 1);
    assert_eq!(batch.not_available, 2);
    assert_eq!(batch.len(), 1);
    assert_eq!(
        cell(&batch, "0x0000000000000003:1", "ok"),
        Some(Value::Float(1.0))
    );
}

#[test]
fn escaped_label_values_and_a_forced_format() {
    let options = SourceOptions {
        format: Format::Prometheus,
        key_labels: vec![vec!["host".to_string(), "port".to_string()]],
        ..SourceOptions::default()
    };
    let batch = parse_answer(
        b"m{host=\"a\\\"b\\\\c\",port=\"01\"} 2\n",
        Some("text/csv"),
        fresh(),
        &options,
    );
    assert_eq!(batch.switch_id(0), "a\"b\\c:1");
}

#[test]
fn stale_samples_are_rejected_by_row() {
    let old = (NOW - 10 * MICROS_PER_SEC) / 1000;
    let batch = read(&format!(
        "a{{guid=\"0x4\",port=\"1\"}} 1 {old}\nb{{guid=\"0x4\",port=\"1\"}} 2 {old}\n"
    ));
    assert_eq!(batch.rejected.get(RejectReason::Stale), 1);
    assert!(batch.is_empty());
}

/// treydock/infiniband_exporter's expected output, read as a source: every port sample
/// arrives with exactly its value.
#[test]
fn the_exporters_expected_output_reads_back_exactly() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/treydock_infiniband_exporter/expected_switch_metrics.prom");
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!("skipped: {} is not here", path.display());
        return;
    };
    let batch = read(&text);
    assert_eq!(batch.rejected.total(), 0, "{:?}", batch.examples);
    let got = cells(&batch);
    let mut checked = 0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        // An independent reading: name{labels} value, labels without commas in values.
        let (name, rest) = line.split_once('{').expect("labelled");
        let (labels, value) = rest.rsplit_once("} ").expect("value");
        let labels: HashMap<&str, &str> = labels
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        let (Some(guid), Some(port)) = (labels.get("guid"), labels.get("port")) else {
            continue;
        };
        let key = format!("{guid}:{port}");
        let want = if name.ends_with("_total") {
            Value::Int(value.parse().expect("integer counter"))
        } else {
            Value::Float(value.parse().expect("number"))
        };
        assert_eq!(
            got.get(&(key.clone(), name.to_string())),
            Some(&Some(want)),
            "{line}"
        );
        checked += 1;
    }
    assert!(checked >= 70, "{checked} samples checked");
    assert_eq!(
        batch.unkeyed, 4,
        "collect_errors, collect_timeouts, two switch_info"
    );
    assert_eq!(
        cell(
            &batch,
            "0x7cfe9003009ce5b0:1",
            "infiniband_switch_port_transmit_data_bytes_total"
        ),
        Some(Value::Int(145_192_107_443_712))
    );
}

#[test]
fn node_exporter_and_guilbaults_outputs_key_by_device_and_local_guid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
    let (Ok(node), Ok(guilbaults)) = (
        std::fs::read_to_string(dir.join("node_exporter_infiniband_e2e.prom")),
        std::fs::read_to_string(dir.join("guilbaults_readme_example.prom")),
    ) else {
        eprintln!("skipped: fixtures are not here");
        return;
    };
    let batch = read(&node);
    assert_eq!(batch.rejected.total(), 0, "{:?}", batch.examples);
    // Printed as a float by the exporter: the integer it names.
    assert_eq!(
        cell(
            &batch,
            "mlx4_0:1",
            "node_infiniband_legacy_data_received_bytes_total"
        ),
        Some(Value::Int(18_527_668))
    );
    let batch = read(&guilbaults);
    assert_eq!(
        batch.rejected.get(RejectReason::Malformed),
        1,
        "the README's [...]"
    );
    let key = "0x506b4b03005d3101:2";
    assert_eq!(
        cell(&batch, key, "infiniband_portrcvdata_total"),
        Some(Value::Int(5_149_057_134_655))
    );
    let rcv = batch
        .metrics
        .iter()
        .position(|m| m == "infiniband_portrcvdata_total")
        .expect("column");
    assert_eq!(batch.kinds[rcv], MetricKind::Counter { words: true });
}

#[test]
fn detection_by_content_type_and_first_line() {
    use crate::shared::feed::{detect, Detected};
    let csv = b"switch_id,bandwidth,latency,errors,timestamp\n";
    assert_eq!(detect(Format::Auto, Some("text/csv"), csv), Detected::Csv);
    assert_eq!(detect(Format::Auto, Some("text/plain"), csv), Detected::Csv);
    assert_eq!(
        detect(Format::Auto, Some("text/plain; version=0.0.4"), csv),
        Detected::Prometheus
    );
    assert_eq!(
        detect(Format::Auto, None, b"\n# HELP x\n"),
        Detected::Prometheus
    );
    assert_eq!(
        detect(Format::Auto, None, b"x{a=\"1,2\"} 3\n"),
        Detected::Prometheus
    );
    assert_eq!(detect(Format::Auto, None, b"up 1\n"), Detected::Prometheus);
    assert_eq!(
        detect(Format::Auto, None, b" timestamp,node_guid,port_num\n"),
        Detected::Csv
    );
    assert_eq!(
        detect(Format::UfmCsv, Some("text/plain; version=0.0.4"), b"# x"),
        Detected::Csv
    );
    assert_eq!(
        Format::split_source("http://h:9001/csv/metrics?num_shards=3&shard=0#format=ufm-csv"),
        Ok((
            "http://h:9001/csv/metrics?num_shards=3&shard=0",
            Format::UfmCsv
        ))
    );
    assert!(Format::split_source("http://h/#format=xml").is_err());
    assert!(Format::split_source("http://h/#top").is_err());
}

/// Not a test: `cargo test --release --lib prometheus_parse_speed -- --ignored --nocapture`
/// prints how long an answer of UFM's size takes to read.
#[test]
#[ignore]
fn prometheus_parse_speed() {
    use crate::generator::ufm::UfmFabric;
    let mut fabric = UfmFabric::new(625, 32, 1.0, Some(7));
    fabric.tick();
    let mut text = Vec::new();
    fabric.frame().render_prometheus(NOW, &mut text);
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let batch = parse_answer(&text, None, fresh(), &SourceOptions::default());
        eprintln!(
            "{} bytes, {} rows: {:?}",
            text.len(),
            batch.len(),
            started.elapsed()
        );
    }
}
