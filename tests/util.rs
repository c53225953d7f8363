//! Test support: start the real binaries on ephemeral loopback ports, a fake feed the test
//! scripts, and a blocking HTTP client.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fabric_telemetry::shared::http::{HttpServer, Reply, ReplyBody, RequestHead};
use fabric_telemetry::shared::timestamp;

pub const HEADER: &str = "switch_id,bandwidth,latency,errors,timestamp";

/// A running binary; killed when dropped.
pub struct Proc {
    child: Child,
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Runs `bin` with `args` and waits for its "listening on http://ADDR" log line.
    pub fn start(bin: &str, args: &[&str]) -> Proc {
        Proc::start_within(bin, args, Duration::from_secs(20))
    }

    /// [`Proc::start`], waiting up to `wait` (a server recovering a large data directory
    /// listens only once it has).
    #[allow(dead_code)]
    pub fn start_within(bin: &str, args: &[&str], wait: Duration) -> Proc {
        let mut command = Command::new(bin);
        command.args(args);
        Proc::start_command_within(&mut command, wait)
    }

    /// Runs a prepared command (e.g. through `sh -c`) the same way.
    pub fn start_command(command: &mut Command) -> Proc {
        Proc::start_command_within(command, Duration::from_secs(20))
    }

    fn start_command_within(command: &mut Command, wait: Duration) -> Proc {
        let bin = format!("{command:?}");
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = listening_addr(&line) {
                    let _ = addr_tx.send(addr);
                }
                sink.lock().expect("logs").push(line);
            }
        });
        let addr = match addr_rx.recv_timeout(wait) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "{bin} did not report its address; logs: {:?}",
                    logs.lock().expect("logs")
                );
            }
        };
        Proc { child, addr, logs }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if the process has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("logs").clone()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.split("listening on http://").nth(1)?;
    let end = rest
        .find(|c: char| c == '/' || c.is_whitespace())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// A test cannot run here for want of `what` (a tool, a right): under
/// `FABRIC_REQUIRE_TOOLS` (set by `.ci/run`) that is a failure, so CI cannot pass by skipping;
/// elsewhere the test says `SKIPPED` and passes.
pub fn skip_unless_required(what: &str) {
    if std::env::var_os("FABRIC_REQUIRE_TOOLS").is_some() {
        panic!("{what} (FABRIC_REQUIRE_TOOLS is set, so this cannot be skipped)");
    }
    eprintln!("SKIPPED: {what}");
}

pub fn server_bin() -> &'static str {
    env!("CARGO_BIN_EXE_metrics-server")
}

pub fn generator_bin() -> &'static str {
    env!("CARGO_BIN_EXE_telemetry-generator")
}

/// A metrics server on a free port polling `sources` every 100 ms, plus `extra` flags.
pub fn server(sources: &[&str], extra: &[&str]) -> Proc {
    server_with_env(sources, extra, &[])
}

/// [`server`] with environment variables (the debug builds' test knobs: `FABRIC_TEST_*`).
pub fn server_with_env(sources: &[&str], extra: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut command = Command::new(server_bin());
    command.args([
        "--listen",
        "127.0.0.1:0",
        "--poll-interval",
        "100ms",
        "--log-level",
        "debug",
    ]);
    for source in sources {
        command.args(["--source", source]);
    }
    command.args(extra).envs(env.iter().copied());
    Proc::start_command(&mut command)
}

pub fn generator(extra: &[&str]) -> Proc {
    let mut args = vec!["--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Proc::start(generator_bin(), &args)
}

/// A canonical timestamp `offset_ms` from now.
pub fn ts(offset_ms: i64) -> String {
    timestamp::to_rfc3339(timestamp::now_micros() + offset_ms * 1000)
}

/// What the fake feed answers to one request.
pub enum FeedReply {
    Csv(String),
    Status(u16),
    /// A body of another format, with its content type.
    Body(&'static str, String),
    /// Hold the request until the test moves on (or 30 s pass).
    Hang,
}

type Script = dyn Fn(u64) -> FeedReply + Send + Sync;

/// A feed served by the test: each request calls the current script with its request number.
pub struct FakeFeed {
    server: Option<HttpServer>,
    script: Arc<Mutex<Arc<Script>>>,
    requests: Arc<AtomicU64>,
    /// The request target of the latest request.
    last_target: Arc<Mutex<String>>,
    /// Bumped by every `set` and by drop: a hanging request waits for it to change.
    generation: Arc<AtomicU64>,
    pub url: String,
}

impl FakeFeed {
    pub fn start() -> FakeFeed {
        FakeFeed::start_on("127.0.0.1:0")
    }

    pub fn start_on(addr: &str) -> FakeFeed {
        let listener = std::net::TcpListener::bind(addr).expect("bind fake feed");
        let script: Arc<Mutex<Arc<Script>>> =
            Arc::new(Mutex::new(Arc::new(|_| FeedReply::Status(503))));
        let requests = Arc::new(AtomicU64::new(0));
        let generation = Arc::new(AtomicU64::new(0));
        let last_target = Arc::new(Mutex::new(String::new()));
        let handler = {
            let script = Arc::clone(&script);
            let requests = Arc::clone(&requests);
            let generation = Arc::clone(&generation);
            let last_target = Arc::clone(&last_target);
            move |head: &RequestHead| {
                head.url
                    .clone_into(&mut last_target.lock().expect("target"));
                let n = requests.fetch_add(1, Ordering::SeqCst);
                let current = Arc::clone(&script.lock().expect("script"));
                match current(n) {
                    FeedReply::Csv(body) => Reply {
                        status: 200,
                        content_type: "text/csv",
                        headers: Vec::new(),
                        body: ReplyBody::Owned(body.into_bytes()),
                    },
                    FeedReply::Body(content_type, body) => Reply {
                        status: 200,
                        content_type,
                        headers: Vec::new(),
                        body: ReplyBody::Owned(body.into_bytes()),
                    },
                    FeedReply::Status(status) => Reply::error(status, "fake feed error"),
                    FeedReply::Hang => {
                        let started = Instant::now();
                        let hung_at = generation.load(Ordering::SeqCst);
                        while generation.load(Ordering::SeqCst) == hung_at
                            && started.elapsed() < Duration::from_secs(30)
                        {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Reply::error(500, "hung")
                    }
                }
            }
        };
        let server = HttpServer::start(
            listener,
            "fake-feed",
            8,
            fabric_telemetry::shared::http::ConnectionLimits::default(),
            Arc::new(handler),
            fabric_telemetry::shared::http::HttpMonitor::new(),
        )
        .expect("fake feed");
        let url = format!("http://{}/counters", server.local_addr());
        FakeFeed {
            server: Some(server),
            script,
            requests,
            last_target,
            generation,
            url,
        }
    }

    pub fn set(&self, script: impl Fn(u64) -> FeedReply + Send + Sync + 'static) {
        *self.script.lock().expect("script") = Arc::new(script);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Serves `rows` (lines after the standard header, `{ts}` replaced by now) on every request.
    pub fn serve_fresh(&self, rows: &[&str]) {
        let rows: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
        self.set(move |_| FeedReply::Csv(csv_with_now(HEADER, &rows)));
    }

    /// The path and query of the latest request.
    pub fn last_target(&self) -> String {
        self.last_target.lock().expect("target").clone()
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FakeFeed {
    fn drop(&mut self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
    }
}

/// `header` then `rows`, each `{ts}` replaced by the current time.
pub fn csv_with_now(header: &str, rows: &[String]) -> String {
    let now = ts(0);
    let mut body = format!("{header}\n");
    for row in rows {
        body.push_str(&row.replace("{ts}", &now));
        body.push('\n');
    }
    body
}

/// Serves `steps` in order, one per request, then repeats the last step forever. Each step's
/// `{ts}` is fixed the first time it is served, so repeats carry the same timestamp.
pub fn scripted(steps: Vec<Vec<String>>) -> impl Fn(u64) -> FeedReply + Send + Sync + 'static {
    let stamped: Mutex<Vec<Option<String>>> = Mutex::new(vec![None; steps.len()]);
    move |n| {
        let step = (n as usize).min(steps.len() - 1);
        let mut stamped = stamped.lock().expect("stamps");
        let body = stamped[step].get_or_insert_with(|| csv_with_now(HEADER, &steps[step]));
        FeedReply::Csv(body.clone())
    }
}

/// A blocking client that does not turn error statuses into errors.
pub fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

pub struct Answer {
    pub status: u16,
    pub content_type: String,
    /// Response headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// A response header by (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `method` (GET or POST, empty body) with extra request headers.
pub fn request(agent: &ureq::Agent, method: &str, url: &str, headers: &[(&str, &str)]) -> Answer {
    let result = match method {
        "POST" => {
            let mut builder = agent.post(url);
            for (name, value) in headers {
                builder = builder.header(*name, *value);
            }
            builder.send(&[][..])
        }
        _ => {
            let mut builder = agent.get(url);
            for (name, value) in headers {
                builder = builder.header(*name, *value);
            }
            builder.call()
        }
    };
    let response = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    let headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_ascii_lowercase(),
                v.to_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let content_type = headers
        .iter()
        .find(|(n, _)| n == "content-type")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let body = response
        .into_body()
        .into_with_config()
        .limit(1 << 30)
        .read_to_string()
        .unwrap_or_else(|e| panic!("{method} {url} body: {e}"));
    Answer {
        status,
        content_type,
        headers,
        body,
    }
}

pub fn get_with(agent: &ureq::Agent, url: &str) -> Answer {
    request(agent, "GET", url, &[])
}

pub fn get(url: &str) -> Answer {
    get_with(&client(), url)
}

/// Polls `check` until it returns `Some`, or panics after `limit` with `what`.
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        if started.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `url` answers `status`, returning that answer.
pub fn wait_for_status(url: &str, status: u16) -> Answer {
    let agent = client();
    wait_for(
        &format!("{url} to answer {status}"),
        Duration::from_secs(15),
        || {
            let answer = get_with(&agent, url);
            (answer.status == status).then_some(answer)
        },
    )
}

/// The server's `/telemetry/stats` as JSON.
pub fn stats(server: &Proc) -> serde_json::Value {
    let answer = get(&server.url("/telemetry/stats"));
    assert_eq!(answer.status, 200, "/telemetry/stats: {}", answer.body);
    answer.json()
}

/// Sends `signal` to a running binary.
pub fn signal(proc: &Proc, signal: libc::c_int) {
    // SAFETY: sending a signal to a child process this test started and still owns.
    let rc = unsafe { libc::kill(proc.pid() as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill failed");
}

/// Waits (at most 10 s) for a binary to exit.
pub fn wait_exit(proc: &mut Proc) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = proc.try_wait() {
            return status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "did not exit within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the server did with a request head that never ends.
#[derive(Debug, PartialEq)]
pub enum Cutoff {
    Status(u16),
    Closed,
    /// Still reading after 5 s: it would go on buffering whatever the client sends.
    StillReading,
}

/// Sends `prefix` then `total` bytes of `a` without a newline, then waits for the server.
pub fn endless_head(server: &Proc, prefix: &[u8], total: usize) -> Cutoff {
    let mut stream = std::net::TcpStream::connect(server.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    use std::io::{Read, Write};
    let _ = stream.write_all(prefix);
    let chunk = vec![b'a'; 64 << 10];
    let mut sent = 0;
    while sent < total && stream.write_all(&chunk).is_ok() {
        sent += chunk.len();
    }
    let mut response = Vec::new();
    match stream.read_to_end(&mut response) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Cutoff::StillReading
        }
        _ => String::from_utf8_lossy(&response)
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .map_or(Cutoff::Closed, Cutoff::Status),
    }
}

/// Threads of a running process, from /proc.
/// The `Content-Length` an answer's head declares (header names in any case).
pub fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("content-length:")
            .and_then(|v| v.trim().parse().ok())
    })
}

pub fn threads_of(pid: u32) -> u64 {
    proc_status(pid, "Threads:")
}

/// Resident memory of a running process in KiB, from /proc.
pub fn rss_kib_of(pid: u32) -> u64 {
    proc_status(pid, "VmRSS:")
}

fn proc_status(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Debian's VictoriaMetrics binary.
pub const VICTORIA_METRICS: &str = "/usr/bin/victoria-metrics";

/// A VictoriaMetrics on a free loopback port with its own data directory; killed (and the
/// directory removed) when dropped.
pub struct Victoria {
    child: Child,
    pub dir: std::path::PathBuf,
    pub base: String,
}

impl Victoria {
    /// Starts it (the binary must exist) with `dir` as its data directory, emptied first;
    /// queries answer from the newest samples at once (`-search.latencyOffset=0s`).
    pub fn start(dir: std::path::PathBuf) -> Victoria {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let _ = std::fs::remove_dir_all(&dir);
        let child = Command::new(VICTORIA_METRICS)
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!("-storageDataPath={}", dir.display()))
            .arg("-retentionPeriod=1d")
            .arg("-search.latencyOffset=0s")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start victoria-metrics");
        wait_for(
            "victoria-metrics to listen",
            Duration::from_secs(30),
            || {
                std::net::TcpStream::connect(("127.0.0.1", port))
                    .ok()
                    .map(|_| ())
            },
        );
        Victoria {
            child,
            dir,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Victoria {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An nginx in the foreground on its own prefix directory, killed when dropped.
pub struct Nginx {
    child: Child,
}

impl Nginx {
    /// Writes `dir/nginx.conf`: the settings every test nginx needs (runs as root, pid, logs
    /// and temp files under `dir`, no access log, `extra_main` such as `worker_processes 1;`)
    /// around the `http` block's own lines `http`, then starts nginx on it.
    pub fn start(dir: &std::path::Path, extra_main: &str, http: &str) -> Nginx {
        let d = dir.display();
        let config = format!(
            "user root;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n{extra_main}\n\
             events {{ worker_connections 1024; }}\nhttp {{\n  access_log off;\n  \
             client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  \
             scgi_temp_path {d}/scgi;\n{http}\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), config).expect("nginx.conf");
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        Nginx { child }
    }

    /// The master and its workers (forked once it has opened its sockets).
    #[allow(dead_code)]
    pub fn pids(&self) -> Vec<u32> {
        let master = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
            .unwrap_or_default();
        std::iter::once(master)
            .chain(children.split_whitespace().filter_map(|p| p.parse().ok()))
            .collect()
    }
}

impl Drop for Nginx {
    /// SIGTERM, so the master stops its workers: killing the master outright (as this did)
    /// left each worker running, orphaned, with the listening socket open.
    fn drop(&mut self) {
        let workers = self.pids();
        // SAFETY: signals to nginx processes this test started (the master) and its workers.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in workers.into_iter().skip(1) {
            // SAFETY: as above; a worker that already exited makes this fail harmlessly.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}
