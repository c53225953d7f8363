//! `/metrics` against the real tools: `promtool check metrics`, and a real Prometheus that
//! scrapes the server. Both come from Debian's `prometheus` package. Without it these tests
//! say so and skip, so `cargo test` stays green on a fresh machine; `.ci/run` installs it and
//! sets FABRIC_REQUIRE_TOOLS=1, which turns a missing tool into a failure.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::{self, FakeFeed, FeedReply};

/// The tool's path, or `None` (after saying so) when it is not installed.
fn tool(name: &str) -> Option<&'static str> {
    let path: &'static str = match name {
        "promtool" => "/usr/bin/promtool",
        _ => "/usr/bin/prometheus",
    };
    if std::path::Path::new(path).exists() {
        return Some(path);
    }
    if std::env::var_os("FABRIC_REQUIRE_TOOLS").is_some() {
        panic!("{name} is required (FABRIC_REQUIRE_TOOLS is set) but {path} does not exist");
    }
    eprintln!("SKIPPED: {name} is not installed (apt-get install prometheus); .ci/run installs it");
    None
}

/// A server polling a feed of two switches with constant values (so a scrape and a query
/// at different moments see the same numbers).
fn server_with_constant_feed() -> (FakeFeed, util::Proc) {
    let feed = FakeFeed::start();
    feed.set(|_| {
        FeedReply::Csv(format!(
            "switch_id,bandwidth,latency,errors,timestamp,temp-C\nswitch1,72.34,0.45,3,{ts},41.5\nleaf \"01\",11.2,0.67,0,{ts},40\n",
            ts = util::ts(0)
        ))
    });
    let server = util::server(&[&feed.url], &[]);
    util::wait_for_status(&server.url("/readyz"), 200);
    for path in [
        "/telemetry/get?switch_id=switch1&metric=bandwidth",
        "/nope",
        "/telemetry/list?metric=latency",
    ] {
        util::get(&server.url(path));
    }
    (feed, server)
}

#[test]
fn promtool_accepts_the_exposition() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let (_feed, server) = server_with_constant_feed();
    let text = util::get(&server.url("/metrics"));
    assert_eq!(text.status, 200);
    assert!(
        text.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        text.content_type
    );
    assert!(
        text.body
            .contains("fabric_switch_bandwidth_gbps{switch=\"switch1\"} 72.34\n"),
        "{}",
        text.body
    );
    assert!(text
        .body
        .contains("fabric_switch_latency_seconds{switch=\"switch1\"} 0.00045"));
    assert!(text
        .body
        .contains("fabric_switch_interval_errors{switch=\"leaf \\\"01\\\"\"} 0\n"));
    assert!(text
        .body
        .contains("fabric_switch_temp_c{switch=\"switch1\"} 41.5\n"));
    assert!(text
        .body
        .contains("fabric_http_requests_total{route=\"other\",code=\"404\"} 1\n"));
    promtool_check(promtool, &text.body);
}

fn promtool_check(promtool: &str, exposition: &str) {
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    check
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("feed promtool");
    let out = check.wait_with_output().expect("promtool finishes");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{exposition}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Column and label names built to break an exposition: names that sanitise to one family,
/// a column named like another's running total, a gauge and a counter of one OpenMetrics
/// family, a quote, backslash and newline in a name, a source label called `switch`.
#[test]
fn promtool_accepts_an_exposition_of_feeds_built_to_break_it() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let csv = util::FakeFeed::start();
    let header = "switch_id,temp,Temp,errors,errors_total,rx-bytes,rx_bytes,rx,\"we\"\"ird\\col\nx\",timestamp";
    csv.set(move |_| {
        util::FeedReply::Csv(util::csv_with_now(
            header,
            &["sw1,1,2,3,4,5,6,7,8,{ts}".to_string()],
        ))
    });
    let prom = util::FakeFeed::start();
    prom.set(|_| {
        util::FeedReply::Body(
            "text/plain; version=0.0.4",
            "# TYPE xmit_wait counter\n\
             xmit_wait{guid=\"0x1\",port=\"1\",vl=\"0\",switch=\"a\\\"b\"} 5\n\
             xmit_wait{guid=\"0x1\",port=\"1\",vl=\"1\",switch=\"a\\\"b\"} 6\n\
             temp{guid=\"0x1\",port=\"1\"} 40\n"
                .to_string(),
        )
    });
    let server = util::server(&[&csv.url, &prom.url], &[]);
    let body = util::wait_for("both feeds in /metrics", Duration::from_secs(10), || {
        let body = util::get(&server.url("/metrics")).body;
        (body.contains("fabric_switch_xmit_wait_total{") && body.contains("sw1")).then_some(body)
    });
    promtool_check(promtool, &body);
    for family in [
        "fabric_switch_temp",
        "fabric_switch_temp_2",
        "fabric_switch_errors_2_total",
        "fabric_switch_rx_bytes",
        "fabric_switch_rx_bytes_2",
    ] {
        assert!(
            body.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{body}"
        );
    }
    assert!(body.contains(
        "fabric_switch_xmit_wait_total{switch=\"0x0000000000000001:1\",source_switch=\"a\\\"b\",vl=\"1\"} 6"
    ));
    // The same in OpenMetrics: one TYPE per family.
    let open = util::request(
        &util::client(),
        "GET",
        &server.url("/metrics"),
        &[("Accept", "application/openmetrics-text; version=1.0.0")],
    )
    .body;
    let mut types: Vec<&str> = open.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let all = types.len();
    types.sort_unstable();
    types.dedup_by(|a, b| a.split(' ').nth(2) == b.split(' ').nth(2));
    assert_eq!(types.len(), all, "a family declared twice:\n{open}");
}

#[test]
fn openmetrics_when_asked() {
    let (_feed, server) = server_with_constant_feed();
    let answer = util::request(
        &util::client(),
        "GET",
        &server.url("/metrics"),
        &[("Accept", "application/openmetrics-text; version=1.0.0")],
    );
    assert!(
        answer
            .content_type
            .starts_with("application/openmetrics-text"),
        "{}",
        answer.content_type
    );
    let body = answer.body;
    assert!(body.ends_with("# EOF\n"));
    assert!(body.contains("# TYPE fabric_switch_errors counter\n"));
    let mut families: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .collect();
    let n = families.len();
    families.sort_unstable();
    families.dedup();
    assert_eq!(families.len(), n, "a family is declared twice");
}

/// A Prometheus run by the test on loopback; killed (and its data removed) when dropped.
struct Prometheus {
    binary: &'static str,
    child: Option<Child>,
    dir: std::path::PathBuf,
    port: u16,
    extra: Vec<String>,
}

impl Prometheus {
    /// Starts Prometheus with `scrape_config` (YAML under `scrape_configs:`, may be empty)
    /// and `extra` flags, and waits until it is ready.
    fn start(binary: &'static str, name: &str, scrape_config: &str, extra: &[&str]) -> Prometheus {
        let dir =
            std::env::temp_dir().join(format!("fabric-prometheus-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("data dir");
        let config = format!("global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:{scrape_config}\n");
        std::fs::write(dir.join("prometheus.yml"), config).expect("config");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let mut prometheus = Prometheus {
            binary,
            child: None,
            dir,
            port,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        prometheus.restart();
        prometheus
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// (Re)starts on the same port and data directory, and waits until ready.
    fn restart(&mut self) {
        self.stop();
        let child = Command::new(self.binary)
            .arg(format!(
                "--config.file={}",
                self.dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        self.child = Some(child);
        let base = self.base();
        util::wait_for("Prometheus to be ready", Duration::from_secs(30), || {
            let ok = util::client()
                .get(&format!("{base}/-/ready"))
                .call()
                .ok()?
                .status()
                .as_u16()
                == 200;
            ok.then_some(())
        });
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn query(prometheus: &str, promql: &str) -> Option<f64> {
    let url = format!(
        "{prometheus}/api/v1/query?query={}",
        promql
            .replace('{', "%7B")
            .replace('}', "%7D")
            .replace('"', "%22")
            .replace(' ', "%20")
    );
    let answer = util::get(&url);
    let json = answer.json();
    let value = json["data"]["result"].get(0)?["value"][1]
        .as_str()?
        .to_string();
    value.parse().ok()
}

#[test]
fn a_real_prometheus_scrapes_the_server() {
    let Some(binary) = tool("prometheus") else {
        return;
    };
    let (_feed, server) = server_with_constant_feed();
    let scrape = format!(
        "\n  - job_name: fabric\n    static_configs:\n      - targets: ['{}']",
        server.addr
    );
    let prometheus = Prometheus::start(binary, "scrape", &scrape, &[]);
    let base = prometheus.base();
    util::wait_for("up == 1", Duration::from_secs(30), || {
        (query(&base, "up{job=\"fabric\"}")? == 1.0).then_some(())
    });
    let scraped = util::wait_for("the bandwidth series", Duration::from_secs(30), || {
        query(&base, "fabric_switch_bandwidth_gbps{switch=\"switch1\"}")
    });
    let get = util::get(&server.url("/telemetry/get?switch_id=switch1&metric=bandwidth")).json();
    assert_eq!(Some(scraped), get["value"].as_f64());
    let latency =
        query(&base, "fabric_switch_latency_seconds{switch=\"switch1\"}").expect("latency series");
    let get_latency =
        util::get(&server.url("/telemetry/get?switch_id=switch1&metric=latency")).json();
    let ms = get_latency["value"].as_f64().expect("ms");
    assert!(
        (latency * 1000.0 - ms).abs() < 1e-12,
        "{latency} s vs {ms} ms"
    );
    let errors =
        query(&base, "fabric_switch_interval_errors{switch=\"switch1\"}").expect("errors series");
    assert_eq!(errors, 3.0);
}

fn remote_write_stat(server: &util::Proc, key: &str) -> u64 {
    util::stats(server)["ingest"]["remote_write"][key]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn remote_write_reaches_a_real_prometheus_and_survives_its_outage() {
    let Some(binary) = tool("prometheus") else {
        return;
    };
    let mut receiver = Prometheus::start(
        binary,
        "receiver",
        " []",
        &["--web.enable-remote-write-receiver"],
    );
    let base = receiver.base();
    let feed = FakeFeed::start();
    feed.serve_fresh(&["switch1,72.34,0.45,3,{ts}"]);
    let write_url = format!("{base}/api/v1/write");
    let server = util::server(&[&feed.url], &["--remote-write", &write_url]);
    let pushed = util::wait_for(
        "pushed samples in Prometheus",
        Duration::from_secs(30),
        || query(&base, "fabric_switch_bandwidth_gbps{switch=\"switch1\"}"),
    );
    assert_eq!(pushed, 72.34);
    assert_eq!(
        query(&base, "fabric_switch_interval_errors{switch=\"switch1\"}"),
        Some(3.0)
    );
    assert!(remote_write_stat(&server, "samples_sent") > 0);

    // The receiver goes away: the server keeps serving and counts failures.
    receiver.stop();
    util::wait_for("failed remote writes", Duration::from_secs(20), || {
        (remote_write_stat(&server, "retries") >= 2).then_some(())
    });
    for _ in 0..3 {
        let answer = util::get(&server.url("/telemetry/get?switch_id=switch1&metric=bandwidth"));
        assert_eq!(
            answer.status, 200,
            "the API answers while the receiver is down"
        );
    }
    // It comes back: delivery resumes with samples from after the feed changed. The first
    // sample the server stored with the new value marks "after": rows polled just before the
    // change still carry the old value and a later timestamp than any clock reading here.
    feed.serve_fresh(&["switch1,80.5,0.45,3,{ts}"]);
    let changed_ms = util::wait_for("the new value stored", Duration::from_secs(10), || {
        let answer =
            util::get(&server.url("/telemetry/get?switch_id=switch1&metric=bandwidth")).json();
        (answer["value"].as_f64() == Some(80.5)).then_some(())?;
        let at = fabric_telemetry::shared::timestamp::parse_rfc3339(answer["timestamp"].as_str()?)
            .ok()?;
        Some(at / 1000)
    });
    receiver.restart();
    let resumed = util::wait_for(
        "samples from after the outage",
        Duration::from_secs(30),
        || {
            // The newest sample's time first: once it is past the change, every later
            // value query sees a sample at least that new, which holds the new value.
            let newest = query(
                &base,
                "timestamp(fabric_switch_bandwidth_gbps{switch=\"switch1\"})",
            )?;
            ((newest * 1000.0).round() as i64 >= changed_ms).then_some(())?;
            query(&base, "fabric_switch_bandwidth_gbps{switch=\"switch1\"}")
        },
    );
    assert_eq!(resumed, 80.5);
    let stats = util::stats(&server)["ingest"]["remote_write"].clone();
    assert!(
        stats["requests_failed"].as_u64().unwrap_or(0) > 0,
        "{stats}"
    );
}

/// A cache between us and a client must neither store live telemetry nor serve one scraper
/// the other's format.
#[test]
fn answers_are_not_cacheable_and_metrics_vary_by_accept() {
    let feed = FakeFeed::start();
    feed.serve_fresh(&["switch1,50,0.5,0,{ts}"]);
    let server = util::server(&[&feed.url], &[]);
    util::wait_for_status(
        &server.url("/telemetry/get?switch_id=switch1&metric=bandwidth"),
        200,
    );
    for path in [
        "/telemetry/get?switch_id=switch1&metric=bandwidth",
        "/telemetry/list?metric=bandwidth",
        "/telemetry/aggregate",
        "/telemetry/stats",
        "/metrics",
        "/healthz",
        "/no/such/path",
    ] {
        let answer = util::get(&server.url(path));
        assert_eq!(answer.header("cache-control"), Some("no-store"), "{path}");
    }
    assert_eq!(
        util::get(&server.url("/metrics")).header("vary"),
        Some("Accept")
    );
    let generator = util::generator(&["--switches", "1"]);
    assert_eq!(
        util::get(&generator.url("/counters")).header("cache-control"),
        Some("no-store")
    );
}

/// A switch that leaves its feed gets a staleness marker after `--max-age`: Prometheus stops
/// answering its last value at once instead of for 5 minutes (the remote-write spec's rule).
#[test]
fn a_series_that_stops_is_marked_stale_in_a_real_prometheus() {
    let Some(binary) = tool("prometheus") else {
        return;
    };
    let receiver = Prometheus::start(
        binary,
        "stale",
        " []",
        &["--web.enable-remote-write-receiver"],
    );
    let base = receiver.base();
    let feed = FakeFeed::start();
    feed.serve_fresh(&["switch1,72.34,0.45,3,{ts}", "switch2,50.5,0.45,3,{ts}"]);
    let write_url = format!("{base}/api/v1/write");
    let server = util::server(
        &[&feed.url],
        &["--remote-write", &write_url, "--max-age", "2s"],
    );
    util::wait_for("switch2 in Prometheus", Duration::from_secs(30), || {
        query(&base, "fabric_switch_bandwidth_gbps{switch=\"switch2\"}")
    });
    feed.serve_fresh(&["switch1,72.34,0.45,3,{ts}"]);
    let left = std::time::Instant::now();
    util::wait_for(
        "switch2 gone from Prometheus",
        Duration::from_secs(20),
        || {
            query(&base, "fabric_switch_bandwidth_gbps{switch=\"switch2\"}")
                .is_none()
                .then_some(())
        },
    );
    eprintln!(
        "switch2 went stale in Prometheus {:?} after leaving the feed",
        left.elapsed()
    );
    assert!(
        left.elapsed() < Duration::from_secs(15),
        "{:?}",
        left.elapsed()
    );
    assert_eq!(
        query(&base, "fabric_switch_bandwidth_gbps{switch=\"switch1\"}"),
        Some(72.34),
        "the series that stays is not marked"
    );
    assert!(
        remote_write_stat(&server, "stale_markers") >= 3,
        "bandwidth, latency, errors…"
    );
}
