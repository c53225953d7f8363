//! Driving `wrk` (2 threads, 64 connections) and parsing its output, and the baseline every
//! HTTP throughput figure is compared with: a bare tiny_http server answering a body of the
//! same size with the same worker count.

use std::io::Cursor;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::stats::median;

#[derive(Debug, Clone, Copy, Default)]
pub struct WrkResult {
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub non_2xx: u64,
    pub requests: u64,
}

fn parse_ms(text: &str) -> f64 {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (text, 1.0)
    };
    number.parse::<f64>().unwrap_or(f64::NAN) * factor
}

pub fn wrk(url: &str, script: Option<&str>, seconds: u64) -> WrkResult {
    wrk_with(url, script, seconds, &[])
}

/// `wrk` with extra request headers (`"Name: value"`).
pub fn wrk_with(url: &str, script: Option<&str>, seconds: u64, headers: &[&str]) -> WrkResult {
    let mut command = Command::new("wrk");
    for header in headers {
        command.args(["-H", header]);
    }
    command.args([
        "-t2",
        "-c64",
        &format!("-d{seconds}s"),
        "--latency",
        "--timeout",
        "5s",
    ]);
    if let Some(script) = script {
        command.args(["-s", script]);
    }
    let output = command
        .arg(url)
        .output()
        .expect("wrk is installed (apt-get install wrk)");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut result = WrkResult::default();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => result.p50_ms = parse_ms(v),
            ["99%", v] => result.p99_ms = parse_ms(v),
            ["Requests/sec:", v] => result.requests_per_sec = v.parse().unwrap_or(0.0),
            ["Non-2xx", "or", "3xx", "responses:", v] => result.non_2xx = v.parse().unwrap_or(0),
            [n, "requests", "in", ..] => result.requests = n.parse().unwrap_or(0),
            _ => {}
        }
    }
    result
}

struct Shared(Arc<Vec<u8>>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A bare tiny_http server answering `body_len` bytes of JSON to everything, with `workers`
/// threads: the floor our server's overhead is measured against.
pub struct Baseline {
    server: Arc<tiny_http::Server>,
    workers: Vec<JoinHandle<()>>,
    pub addr: SocketAddr,
}

impl Baseline {
    pub fn start(body_len: usize, workers: usize) -> Baseline {
        // The same listener set-up as our servers (TCP_NODELAY), so the ratio is our overhead.
        let listener = fabric_telemetry::shared::http::bind("127.0.0.1:0").expect("baseline binds");
        let server = Arc::new(
            tiny_http::Server::from_listener(listener, Default::default())
                .expect("baseline serves"),
        );
        let addr = server.server_addr().to_ip().expect("ip listener");
        let mut body = vec![b' '; body_len.max(2)];
        body[0] = b'{';
        body[body_len.max(2) - 1] = b'}';
        let body = Arc::new(body);
        let workers = (0..workers)
            .map(|_| {
                let server = Arc::clone(&server);
                let body = Arc::clone(&body);
                std::thread::spawn(move || {
                    let header = tiny_http::Header::from_bytes(
                        &b"Content-Type"[..],
                        &b"application/json"[..],
                    )
                    .expect("header");
                    while let Ok(request) = server.recv() {
                        let len = body.len();
                        let reader = Cursor::new(Shared(Arc::clone(&body)));
                        let response = tiny_http::Response::new(
                            200.into(),
                            vec![header.clone()],
                            reader,
                            Some(len),
                            None,
                        );
                        let _ = request.respond(response);
                    }
                })
            })
            .collect();
        Baseline {
            server,
            workers,
            addr,
        }
    }

    pub fn stop(self) {
        for _ in &self.workers {
            self.server.unblock();
        }
        for worker in self.workers {
            let _ = worker.join();
        }
    }
}

/// Field-wise medians of several wrk runs.
pub fn median_result(runs: &[WrkResult]) -> WrkResult {
    let pick = |f: fn(&WrkResult) -> f64| median(runs.iter().map(f).collect());
    WrkResult {
        requests_per_sec: pick(|r| r.requests_per_sec),
        p50_ms: pick(|r| r.p50_ms),
        p99_ms: pick(|r| r.p99_ms),
        non_2xx: 0,
        requests: 0,
    }
}

pub fn random_get_script(n_switches: usize) -> String {
    let path = std::env::temp_dir().join(format!("fabric-bench-get-{n_switches}.lua"));
    let script = format!(
        "math.randomseed(42)\nrequest = function()\n  return wrk.format(\"GET\", \"/telemetry/get?switch_id=switch\" .. math.random(1, {n_switches}) .. \"&metric=bandwidth\")\nend\n"
    );
    std::fs::write(&path, script).expect("write wrk script");
    path.to_string_lossy().into_owned()
}
