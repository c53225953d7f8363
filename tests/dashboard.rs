//! The dashboard at `/` in a real browser: headless Chromium driven over the DevTools
//! protocol. One row per switch, a value that changes in the feed changes in the page within
//! 3 s, a switch whose feed stops turns stale, the history chart draws as many points as the
//! API has buckets, and a screenshot is saved at `target/dashboard.png` (in the cargo target
//! directory) on every run.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use crate::util::{self, FakeFeed, FeedReply, HEADER};

const CHROMIUM: &str = "/usr/bin/chromium";

/// A headless Chromium, killed when dropped.
struct Browser {
    child: Child,
    socket: WebSocket<TcpStream>,
    next_id: u64,
    session: String,
    _profile: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Starts Chromium and opens `url` in a page this browser drives.
    fn open(url: &str) -> Browser {
        static BROWSERS: AtomicU64 = AtomicU64::new(0);
        let profile = TempDir(std::env::temp_dir().join(format!(
            "fabric-chromium-{}-{}",
            std::process::id(),
            BROWSERS.fetch_add(1, Ordering::SeqCst)
        )));
        let mut child = Command::new(CHROMIUM)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.0.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        let stderr = child.stderr.take().expect("stderr");
        let (found, endpoint) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = found.send(url.to_string());
                }
            }
        });
        let endpoint = endpoint
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium's DevTools endpoint");
        let (socket, _) = tungstenite::connect(endpoint.as_str()).expect("DevTools websocket");
        let mut browser = Browser {
            child,
            socket: match socket.into_inner() {
                tungstenite::stream::MaybeTlsStream::Plain(stream) => {
                    tungstenite::WebSocket::from_raw_socket(
                        stream,
                        tungstenite::protocol::Role::Client,
                        None,
                    )
                }
                _ => panic!("plain websocket expected"),
            },
            next_id: 0,
            session: String::new(),
            _profile: profile,
        };
        let target = browser.call(None, "Target.createTarget", json!({ "url": url }));
        let target_id = target["targetId"].as_str().expect("target id").to_string();
        let attached = browser.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        );
        browser.session = attached["sessionId"].as_str().expect("session").to_string();
        browser
    }

    /// Sends a DevTools command and waits for its result (events in between are skipped).
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .expect("send to DevTools");
        loop {
            let answer = self.socket.read().expect("read from DevTools");
            let Message::Text(text) = answer else {
                continue;
            };
            let value: Value = serde_json::from_str(text.as_str()).expect("DevTools JSON");
            if value["id"] == json!(id) {
                assert!(value["error"].is_null(), "{method}: {value}");
                return value["result"].clone();
            }
        }
    }

    /// Evaluates `expression` in the page and returns its value.
    fn eval(&mut self, expression: &str) -> Value {
        let session = self.session.clone();
        let result = self.call(
            Some(&session),
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        );
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page.
    fn wait_until(&mut self, what: &str, limit: Duration, expression: &str) -> Duration {
        let started = Instant::now();
        loop {
            if self.eval(expression) == json!(true) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn screenshot(&mut self, path: &std::path::Path) {
        let session = self.session.clone();
        let shot = self.call(
            Some(&session),
            "Page.captureScreenshot",
            json!({ "format": "png" }),
        );
        let bytes = base64_decode(shot["data"].as_str().expect("png data"));
        std::fs::write(path, bytes).expect("write the screenshot");
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|&c| c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= u32::from(value(c)) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

/// Twelve switches; `bandwidth` of `sw1` is what `level` says, `sw12` leaves when `gone` is set.
fn feed(level: Arc<AtomicU64>, gone: Arc<Mutex<bool>>) -> FakeFeed {
    let feed = FakeFeed::start();
    feed.set(move |_| {
        let ts = util::ts(0);
        let mut body = format!("{HEADER}\n");
        let switches = if *gone.lock().expect("flag") { 11 } else { 12 };
        for s in 1..=switches {
            let bandwidth = if s == 1 {
                level.load(Ordering::SeqCst)
            } else {
                40 + s as u64
            };
            body.push_str(&format!("sw{s},{bandwidth}.5,0.5,0,{ts}\n"));
        }
        FeedReply::Csv(body)
    });
    feed
}

#[test]
fn the_dashboard_in_a_real_browser() {
    if !std::path::Path::new(CHROMIUM).exists() {
        util::skip_unless_required("chromium (apt-get install chromium)");
        return;
    }
    let level = Arc::new(AtomicU64::new(10));
    let gone = Arc::new(Mutex::new(false));
    let feed = feed(Arc::clone(&level), Arc::clone(&gone));
    let server = util::server(&[&feed.url], &[]);
    util::wait_for_status(&server.url("/telemetry/list?metric=bandwidth"), 200);
    let mut browser = Browser::open(&server.url("/?metric=bandwidth"));

    browser.wait_until(
        "one row per switch",
        Duration::from_secs(15),
        "document.querySelectorAll('#spacer .row').length === 12",
    );
    browser.wait_until(
        "the stream connected",
        Duration::from_secs(5),
        "document.getElementById('state').textContent === 'live'",
    );

    // A new value in the feed is in the page within 3 s.
    level.store(777, Ordering::SeqCst);
    let took = browser.wait_until(
        "the new value of sw1",
        Duration::from_secs(3),
        "document.querySelector('[data-id=\"sw1\"] .value').textContent === '777.5'",
    );
    eprintln!("a new value reached the page in {took:?}");

    // A switch whose feed stops turns stale (--max-age 3 s).
    *gone.lock().expect("flag") = true;
    browser.wait_until(
        "sw12 marked stale",
        Duration::from_secs(10),
        "document.querySelector('[data-id=\"sw12\"]').classList.contains('stale')",
    );
    assert_eq!(
        browser.eval("document.querySelector('[data-id=\"sw1\"]').classList.contains('fresh')"),
        json!(true)
    );

    // The history chart of sw1 draws as many points as the API has buckets.
    browser.eval("document.querySelector('[data-id=\"sw1\"]').click()");
    let history = server.url("/telemetry/history?switch_id=sw1&metric=bandwidth&from=15m&step=10s");
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let buckets = util::get(&history).json().as_array().map_or(0, Vec::len);
        let drawn = browser.eval("Number(document.getElementById('line').dataset.points)");
        if drawn == json!(buckets) && buckets > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the chart has {drawn} points, the API {buckets} buckets"
        );
        browser.eval("document.querySelector('[data-id=\"sw1\"]').click()");
    }

    // `target/dashboard.png` (or the same under `CARGO_TARGET_DIR`).
    let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let path = tmp.parent().unwrap_or(tmp).join("dashboard.png");
    browser.screenshot(&path);
    let png = std::fs::read(&path).expect("screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    eprintln!("screenshot: {}", path.display());
}

#[test]
fn the_dashboard_is_open_but_its_data_is_not() {
    let dir = std::env::temp_dir().join(format!("fabric-dash-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "s3cret-token-for-the-dashboard\n").expect("tokens");
    let feed = FakeFeed::start();
    feed.serve_fresh(&["sw1,1,0.5,0,{ts}"]);
    let server = util::server(
        &[&feed.url],
        &["--auth-token-file", tokens.to_str().expect("utf-8")],
    );
    let page = util::get(&server.url("/"));
    assert_eq!(page.status, 200);
    assert!(
        page.content_type.starts_with("text/html"),
        "{}",
        page.content_type
    );
    assert!(page.body.contains("<title>fabric-telemetry</title>"));
    assert!(page.header("content-security-policy").is_some());
    assert_eq!(util::get(&server.url("/telemetry/metrics")).status, 401);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_dashboard_keeps_ten_thousand_switches_to_the_rows_in_view() {
    if !std::path::Path::new(CHROMIUM).exists() {
        util::skip_unless_required("chromium (apt-get install chromium)");
        return;
    }
    let feed = FakeFeed::start();
    feed.set(|_| {
        let ts = util::ts(0);
        let mut body = format!("{HEADER}\n");
        for s in 1..=10_000 {
            body.push_str(&format!("sw{s},{}.5,0.5,0,{ts}\n", s % 100));
        }
        FeedReply::Csv(body)
    });
    let server = util::server(&[&feed.url], &[]);
    util::wait_for_status(&server.url("/telemetry/list?metric=bandwidth"), 200);
    let mut browser = Browser::open(&server.url("/?metric=bandwidth"));
    browser.wait_until(
        "10,000 series listed",
        Duration::from_secs(20),
        "document.getElementById('counts').textContent === '10000 series'",
    );
    let rows = browser.eval("document.querySelectorAll('#spacer .row').length");
    assert!(
        rows.as_u64().is_some_and(|n| n > 10 && n < 100),
        "{rows} rows in the page"
    );
    // Scrolled to the end, the last switches are the rows in view.
    browser.eval("document.getElementById('viewport').scrollTop = 1e9; document.getElementById('viewport').dispatchEvent(new Event('scroll'))");
    browser.wait_until(
        "the last row in view",
        Duration::from_secs(5),
        "document.querySelector('[data-id=\"sw10000\"]') !== null",
    );
}
