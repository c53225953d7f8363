//! The generator's HTTP side: `GET /counters` from the newest snapshot (with `--format ufm`:
//! `GET /csv/metrics` and `GET /metrics`), plus fault injection so operators and tests can
//! rehearse a misbehaving feed. Also [`GeneratorService`], the whole
//! running generator (thread + HTTP), used by the `telemetry-generator` binary and by
//! `metrics-server --demo`.

use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::str::FromStr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use rand::Rng;

use crate::generator::ufm::UfmFabric;
use crate::generator::{self, Fabric, Simulation, SnapshotCell};
use crate::shared::http::{
    self, ConnectionLimits, HttpError, HttpMonitor, HttpServer, Reply, ReplyBody, RequestHead,
};
use crate::shared::timestamp;
use crate::shared::watch::Watch;

/// A way the feed can misbehave on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultMode {
    /// Answer 500 with no data.
    ServerError,
    /// Send a valid response whose CSV stops in the middle of a row.
    Truncate,
    /// Wait `--fault-delay` before answering.
    Slow,
    /// Serve timestamps `--fault-stale-by` in the past.
    Stale,
}

impl FaultMode {
    pub const ALL: [FaultMode; 4] = [
        FaultMode::ServerError,
        FaultMode::Truncate,
        FaultMode::Slow,
        FaultMode::Stale,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultMode::ServerError => "500",
            FaultMode::Truncate => "truncate",
            FaultMode::Slow => "slow",
            FaultMode::Stale => "stale",
        }
    }
}

impl fmt::Display for FaultMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultMode {
    type Err = String;

    fn from_str(s: &str) -> Result<FaultMode, String> {
        FaultMode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                format!("unknown fault mode {s:?} (expected one of 500, truncate, slow, stale)")
            })
    }
}

/// Fault injection settings; `rate` 0 turns it off.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultConfig {
    /// Fraction of `/counters` requests that misbehave, 0.0–1.0.
    pub rate: f64,
    /// Modes to pick from, uniformly.
    pub modes: Vec<FaultMode>,
    pub delay: Duration,
    pub stale_by: Duration,
}

/// The flags' defaults (`crate::config`'s flag table).
impl Default for FaultConfig {
    fn default() -> FaultConfig {
        GeneratorConfig::default().faults
    }
}

/// What the generator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedFormat {
    /// `switch_id,bandwidth,latency,errors,timestamp` at `/counters`.
    Classic,
    /// An InfiniBand fabric as UFM Telemetry serves it: `/csv/metrics` and `/metrics`.
    Ufm,
}

impl FeedFormat {
    /// The paths it answers, the first being the one `--demo` polls by default.
    pub fn paths(self) -> &'static [&'static str] {
        match self {
            FeedFormat::Classic => &["/counters"],
            FeedFormat::Ufm => &["/csv/metrics", "/metrics"],
        }
    }
}

impl FromStr for FeedFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<FeedFormat, String> {
        match s {
            "classic" => Ok(FeedFormat::Classic),
            "ufm" => Ok(FeedFormat::Ufm),
            other => Err(format!(
                "unknown format {other:?} (expected classic or ufm)"
            )),
        }
    }
}

/// Everything the generator needs to run. Defaults (`GeneratorConfig::default`): the flag table
/// in `crate::config`.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratorConfig {
    pub listen: String,
    pub n_switches: usize,
    pub format: FeedFormat,
    /// Ports per switch (`--format ufm`).
    pub ports: usize,
    pub interval: Duration,
    pub seed: Option<u64>,
    pub workers: usize,
    pub faults: FaultConfig,
    /// Bounds on every connection to the feed.
    pub http: ConnectionLimits,
}

pub const CSV: &str = "text/csv";

/// Answers the generator's HTTP requests.
pub struct CountersHandler {
    snapshots: SnapshotCell,
    faults: FaultConfig,
    format: FeedFormat,
    /// The page at `/`: what is simulated and how it misbehaves.
    page: Arc<String>,
}

/// The generator's page at `/`, from its settings.
fn about_page(config: &GeneratorConfig) -> String {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let what = match config.format {
        FeedFormat::Classic => format!(
            "{} switches (<code>switch1</code>…), bandwidth, latency and errors per interval",
            config.n_switches
        ),
        FeedFormat::Ufm => format!(
            "an InfiniBand fabric as UFM Telemetry serves it: {} switches × {} ports, 30 \
             cumulative 64-bit counters per port (flaky links with error bursts, resets, \
             saturating legacy counters)",
            config.n_switches, config.ports
        ),
    };
    let paths: Vec<String> = config
        .format
        .paths()
        .iter()
        .map(|p| format!("<a href=\"{p}\"><code>{p}</code></a>"))
        .collect();
    let modes: Vec<&str> = config.faults.modes.iter().map(|m| m.name()).collect();
    let faults = if config.faults.rate > 0.0 {
        format!(
            "{:.1}% of feed requests misbehave, one of: {} (slow: {}; stale: {} old)",
            config.faults.rate * 100.0,
            modes.join(", "),
            humantime::format_duration(config.faults.delay),
            humantime::format_duration(config.faults.stale_by)
        )
    } else {
        "off (<code>--fault-rate 0</code>)".to_string()
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>telemetry-generator</title>\
         <style>body{{font:15px/1.5 system-ui,sans-serif;max-width:52em;margin:2em auto;padding:0 1em;color:#111}}\
         dt{{font-weight:600}}</style></head><body><h1>telemetry-generator</h1><dl>\
         <dt>Simulates</dt><dd>{}</dd><dt>Every</dt><dd>{}</dd><dt>Feed</dt><dd>{}</dd>\
         <dt>Faults</dt><dd>{}</dd></dl></body></html>\n",
        what,
        escape(&humantime::format_duration(config.interval).to_string()),
        paths.join(" and "),
        faults
    )
}

impl CountersHandler {
    fn pick_fault(&self) -> Option<FaultMode> {
        if self.faults.rate <= 0.0 || self.faults.modes.is_empty() {
            return None;
        }
        let mut rng = rand::rng();
        if !rng.random_bool(self.faults.rate.min(1.0)) {
            return None;
        }
        Some(self.faults.modes[rng.random_range(0..self.faults.modes.len())])
    }

    fn counters(&self, path: &str, query: Option<&str>) -> Reply {
        let snapshot = self.snapshots.latest();
        if let (Some(frame), Some(shard)) = (&snapshot.frame, query.and_then(ufm_shard)) {
            let mut csv = Vec::new();
            frame.render_csv_shard(snapshot.produced_at, Some(shard), &mut csv);
            return Reply {
                status: 200,
                content_type: CSV,
                headers: Vec::new(),
                body: ReplyBody::Owned(csv),
            };
        }
        if path == "/metrics" && snapshot.frame.is_some() {
            let len = snapshot.prometheus().map_or(0, <[u8]>::len);
            return Reply {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                headers: Vec::new(),
                body: ReplyBody::Shared {
                    data: Arc::new(generator::PrometheusBody(snapshot)),
                    len,
                },
            };
        }
        let fault = self.pick_fault();
        if let Some(mode) = fault {
            log::debug!("injecting fault {mode}");
        }
        let len = snapshot.csv.len();
        let body = match fault {
            None | Some(FaultMode::Slow) => ReplyBody::Shared {
                data: snapshot,
                len,
            },
            Some(FaultMode::ServerError) => return Reply::error(500, "injected fault"),
            Some(FaultMode::Truncate) => {
                let cut = cut_inside_a_row(&snapshot.csv);
                ReplyBody::Shared {
                    data: snapshot,
                    len: cut,
                }
            }
            Some(FaultMode::Stale) => {
                let stale_by = crate::shared::timestamp::duration_micros(self.faults.stale_by);
                let at = snapshot.produced_at.saturating_sub(stale_by);
                match &snapshot.frame {
                    Some(frame) => {
                        let mut csv = Vec::new();
                        frame.render_csv(at, &mut csv);
                        ReplyBody::Owned(csv)
                    }
                    None => ReplyBody::Owned(restamp(&snapshot.csv, at)),
                }
            }
        };
        if fault == Some(FaultMode::Slow) {
            std::thread::sleep(self.faults.delay);
        }
        Reply {
            status: 200,
            content_type: CSV,
            headers: Vec::new(),
            body,
        }
    }
}

impl http::Handler for CountersHandler {
    fn handle(&self, head: &RequestHead) -> Reply {
        if let Some(reply) = http::check_limits(head) {
            return reply;
        }
        let (path, _) = head.path_and_query();
        if path == "/" && head.is_read() {
            return Reply {
                status: 200,
                content_type: "text/html; charset=utf-8",
                headers: Vec::new(),
                body: ReplyBody::Shared {
                    len: self.page.len(),
                    data: Arc::clone(&self.page) as Arc<dyn AsRef<[u8]> + Send + Sync>,
                },
            };
        }
        let paths = self.format.paths();
        if !paths.contains(&path) {
            return Reply::error(
                404,
                &format!(
                    "no such path {path:?}; the feed is at {}",
                    paths.join(" and ")
                ),
            );
        }
        if !head.is_read() {
            return Reply::error(405, "only GET and HEAD are allowed")
                .with_header("Allow", "GET, HEAD".to_string());
        }
        self.counters(path, head.path_and_query().1)
    }
}

/// UFM's sharding query, `num_shards=N&shard=I` (any other parameters ignored): `(I, N)`.
fn ufm_shard(query: &str) -> Option<(u64, u64)> {
    let value = |name: &str| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let (count, index) = (value("num_shards")?, value("shard")?);
    (count > 0 && index < count).then_some((index, count))
}

/// A byte offset strictly inside a data row (never at a line boundary), so the last row is
/// incomplete. A feed with no data rows is cut inside its header.
fn cut_inside_a_row(csv: &[u8]) -> usize {
    let header_end = csv.iter().position(|&b| b == b'\n').map_or(0, |p| p + 1);
    let mut rng = rand::rng();
    if csv.len() < header_end + 4 {
        return rng.random_range(1..header_end.max(2));
    }
    let mut cut = rng.random_range(header_end + 1..csv.len() - 1);
    while cut > header_end + 1 && (csv[cut - 1] == b'\n' || csv[cut] == b'\n') {
        cut -= 1;
    }
    cut
}

/// The feed with every row's timestamp (its last field) replaced by `at`.
fn restamp(csv: &[u8], at: timestamp::Micros) -> Vec<u8> {
    let mut ts = [0u8; timestamp::CANONICAL_LEN];
    timestamp::encode(at, &mut ts);
    let mut out = Vec::with_capacity(csv.len());
    for (i, line) in csv.split_inclusive(|&b| b == b'\n').enumerate() {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        if i == 0 || body.len() < ts.len() {
            out.extend_from_slice(line);
            continue;
        }
        out.extend_from_slice(&body[..body.len() - ts.len()]);
        out.extend_from_slice(&ts);
        out.push(b'\n');
    }
    out
}

/// The running generator: its tick thread and its HTTP server.
pub struct GeneratorService {
    http: HttpServer,
    stop: Sender<()>,
    ticker: JoinHandle<()>,
}

impl GeneratorService {
    /// Binds `config.listen` and starts serving; its tick thread runs under `watch`.
    pub fn start(
        config: &GeneratorConfig,
        watch: &Arc<Watch>,
    ) -> Result<GeneratorService, HttpError> {
        let listener = http::bind(&config.listen)?;
        GeneratorService::start_on(listener, config, watch)
    }

    /// Serves an already-bound listener (tests, and `--demo` which binds first).
    pub fn start_on(
        listener: TcpListener,
        config: &GeneratorConfig,
        watch: &Arc<Watch>,
    ) -> Result<GeneratorService, HttpError> {
        let (stop, stop_rx) = crossbeam_channel::bounded(1);
        let fabric = match config.format {
            FeedFormat::Classic => Simulation::Classic(Fabric::new(config.n_switches, config.seed)),
            FeedFormat::Ufm => Simulation::Ufm(UfmFabric::new(
                config.n_switches,
                config.ports,
                config.interval.as_secs_f64(),
                config.seed,
            )),
        };
        let (snapshots, ticker) = generator::spawn(fabric, config.interval, stop_rx, watch)
            .map_err(|e| HttpError::Start(e.to_string()))?;
        let handler = Arc::new(CountersHandler {
            snapshots,
            faults: config.faults.clone(),
            format: config.format,
            page: Arc::new(about_page(config)),
        });
        let http = HttpServer::start(
            listener,
            "generator-http",
            config.workers,
            config.http,
            handler,
            HttpMonitor::new(),
        )?;
        Ok(GeneratorService { http, stop, ticker })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.http.local_addr()
    }

    /// Blocks while the generator runs (until shutdown from another thread, or forever).
    pub fn wait(self) {
        let _ = self.ticker.join();
    }

    pub fn shutdown(self) {
        let _ = self.stop.send(());
        self.http.shutdown();
        let _ = self.ticker.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_feed() -> Vec<u8> {
        let mut fabric = Fabric::new(5, Some(3));
        fabric.tick();
        let mut out = Vec::new();
        fabric.render_csv(
            timestamp::parse_rfc3339("2025-09-14T12:30:05Z").expect("valid"),
            &mut out,
        );
        out
    }

    #[test]
    fn a_cut_always_lands_inside_a_row() {
        let csv = sample_feed();
        for _ in 0..500 {
            let cut = cut_inside_a_row(&csv);
            assert!(cut > 0 && cut < csv.len());
            assert_ne!(csv[cut - 1], b'\n', "cut right after a newline");
        }
    }

    #[test]
    fn restamp_rewrites_only_timestamps() {
        let csv = sample_feed();
        let at = timestamp::parse_rfc3339("2020-01-01T00:00:00Z").expect("valid");
        let text = String::from_utf8(restamp(&csv, at)).expect("ascii");
        let original = String::from_utf8(csv).expect("ascii");
        assert_eq!(text.lines().count(), original.lines().count());
        for (new, old) in text.lines().zip(original.lines()).skip(1) {
            assert!(new.ends_with(",2020-01-01T00:00:00.000000+00:00"), "{new}");
            assert_eq!(new[..new.len() - 32], old[..old.len() - 32]);
        }
    }

    fn handler(simulation: Simulation, format: FeedFormat) -> CountersHandler {
        let (stop, stop_rx) = crossbeam_channel::bounded::<()>(1);
        let (snapshots, _ticker) = generator::spawn(
            simulation,
            Duration::from_secs(3600),
            stop_rx,
            &crate::shared::watch::Watch::new(|| {}),
        )
        .expect("spawn");
        std::mem::forget(stop);
        CountersHandler {
            snapshots,
            faults: FaultConfig::default(),
            format,
            page: Arc::new(about_page(&GeneratorConfig::default())),
        }
    }

    #[test]
    fn routes() {
        let handler = handler(
            Simulation::Classic(Fabric::new(3, Some(1))),
            FeedFormat::Classic,
        );
        use http::Handler;
        let ok = handler.handle(&RequestHead::get("/counters"));
        assert_eq!(ok.status, 200);
        assert_eq!(ok.content_type, CSV);
        assert!(ok
            .body_bytes()
            .starts_with(b"switch_id,bandwidth,latency,errors,timestamp\nswitch1,"));
        assert_eq!(handler.handle(&RequestHead::get("/nope")).status, 404);
        assert_eq!(handler.handle(&RequestHead::get("/metrics")).status, 404);
        let page = handler.handle(&RequestHead::get("/"));
        assert_eq!(page.status, 200);
        let page = String::from_utf8_lossy(page.body_bytes()).to_string();
        assert!(
            page.contains("10 switches") && page.contains("/counters"),
            "{page}"
        );
        assert!(
            page.contains("500, truncate, slow, stale") || page.contains("off"),
            "{page}"
        );
        let mut post = RequestHead::get("/counters");
        post.method = "POST".to_string();
        assert_eq!(handler.handle(&post).status, 405);
    }

    #[test]
    fn ufm_routes() {
        let handler = handler(
            Simulation::Ufm(UfmFabric::new(2, 4, 1.0, Some(1))),
            FeedFormat::Ufm,
        );
        use http::Handler;
        let csv = handler.handle(&RequestHead::get("/csv/metrics?num_shards=2&shard=0"));
        assert_eq!((csv.status, csv.content_type), (200, CSV));
        assert!(csv
            .body_bytes()
            .starts_with(b"timestamp,source_id,tag,node_guid,"));
        let prom = handler.handle(&RequestHead::get("/metrics"));
        assert_eq!(prom.status, 200);
        assert!(prom.content_type.contains("version=0.0.4"));
        assert!(prom
            .body_bytes()
            .starts_with(b"# TYPE PortXmitDataExtended counter\n"));
        assert_eq!(handler.handle(&RequestHead::get("/counters")).status, 404);
    }
}
