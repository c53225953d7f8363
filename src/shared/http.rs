//! HTTP plumbing both programs share: a tiny_http server answered by a fixed pool of worker
//! threads (the shape tiny_http's own docs show: one `Arc<Server>`, N threads looping on
//! `recv()`), the limits every request is checked against, and the [`Reply`] handlers return.
//!
//! Workers never wait on a client: the vendored tiny_http (see `vendor/tiny_http/PATCHED.md`)
//! gives each connection a thread that reads request heads and writes answers under
//! [`ConnectionLimits`], one request at a time, and hands workers only complete heads. A
//! worker writes a small answer itself only when the socket takes it at once, and reads a
//! kept-alive connection's next request only when it is there whole; anything else is
//! handed back as bytes (shared, not copied, for cached answers). So a slow, stalled or
//! hostile client costs its own connection thread, never a worker.
//!
//! Handlers are plain functions of a [`RequestHead`], so they are tested without sockets. A
//! panic anywhere in answering becomes a 500 for that request, is logged and counted
//! ([`HttpMonitor`]); the worker lives on.

use std::io::Cursor;
use std::net::{SocketAddr, TcpListener};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

/// Longest accepted request target (path and query), in bytes; longer answers 414.
pub const MAX_URL_LEN: usize = 8 * 1024;
/// Most header bytes accepted (names and values); more answers 431.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The parts of a request handlers look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// The request target as sent: path plus optional `?query`, still percent-encoded.
    pub url: String,
    /// Total length of header names and values.
    pub header_bytes: usize,
    /// The `Accept` header, if any.
    pub accept: Option<String>,
    /// The `Authorization` header, if any (never logged).
    pub authorization: Option<String>,
    pub remote_ip: Option<std::net::IpAddr>,
    /// What the head declared about a body; the API takes none, and none is ever read.
    pub body: DeclaredBody,
}

/// What a request head declared about a body that would follow it (none is ever read), and
/// the bounds every connection is held to: the vendored tiny_http's own types, used as they
/// are (documented in `vendor/tiny_http/PATCHED.md`). Besides what tiny_http does with
/// `request_timeout`, the workers here answer 503 to a request that waited that long for one.
pub use tiny_http::{ConnectionLimits, DeclaredBody};

impl RequestHead {
    pub fn get(url: &str) -> RequestHead {
        RequestHead {
            method: "GET".to_string(),
            url: url.to_string(),
            header_bytes: 0,
            accept: None,
            authorization: None,
            remote_ip: None,
            body: DeclaredBody::None,
        }
    }

    /// Path and raw query (without the `?`).
    pub fn path_and_query(&self) -> (&str, Option<&str>) {
        match self.url.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (self.url.as_str(), None),
        }
    }

    /// GET and HEAD read; nothing here accepts anything else.
    pub fn is_read(&self) -> bool {
        self.method == "GET" || self.method == "HEAD"
    }
}

/// A body that is either owned or a shared snapshot (served without copying).
pub enum ReplyBody {
    Owned(Vec<u8>),
    Shared {
        data: Arc<dyn AsRef<[u8]> + Send + Sync>,
        len: usize,
    },
    /// Written piece by piece by the connection's own thread, each piece flushed and taken by
    /// the client within `write_timeout`, until `next` gives `None`; then the connection
    /// closes. The worker that answered is free at once.
    Stream {
        next: Box<dyn FnMut() -> Option<Vec<u8>> + Send>,
        write_timeout: std::time::Duration,
    },
}

/// What a handler answers.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: ReplyBody,
}

pub const JSON: &str = "application/json";

impl Reply {
    pub fn json(status: u16, body: Vec<u8>) -> Reply {
        Reply {
            status,
            content_type: JSON,
            headers: Vec::new(),
            body: ReplyBody::Owned(body),
        }
    }

    /// `{"error": message}` with `status`.
    pub fn error(status: u16, message: &str) -> Reply {
        let body = serde_json::json!({ "error": message })
            .to_string()
            .into_bytes();
        Reply::json(status, body)
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }

    pub fn body_bytes(&self) -> &[u8] {
        match &self.body {
            ReplyBody::Owned(bytes) => bytes,
            ReplyBody::Shared { data, len } => &(**data).as_ref()[..*len],
            ReplyBody::Stream { .. } => &[],
        }
    }
}

/// The reply for a request that breaks the size limits or declares a body, if it does.
/// Handlers call it first, so the answer is counted like any other. The body itself is never
/// read: its connection is closed after this answer.
pub fn check_limits(head: &RequestHead) -> Option<Reply> {
    match head.body {
        DeclaredBody::None => {}
        DeclaredBody::Length(n) => {
            return Some(Reply::error(
                413,
                &format!("this API takes no request body (Content-Length: {n})"),
            ))
        }
        DeclaredBody::Encoded => {
            return Some(Reply::error(
                413,
                "this API takes no request body (Transfer-Encoding)",
            ))
        }
        DeclaredBody::Malformed => {
            return Some(Reply::error(
                400,
                "malformed Content-Length: expected one decimal number below 2^64",
            ))
        }
        DeclaredBody::Conflicting => {
            return Some(Reply::error(
                400,
                "both Content-Length and Transfer-Encoding: refused (RFC 9112 section 6.1)",
            ))
        }
    }
    if head.url.len() > MAX_URL_LEN {
        return Some(Reply::error(
            414,
            &format!(
                "request target is {} bytes; the limit is {MAX_URL_LEN}",
                head.url.len()
            ),
        ));
    }
    if head.header_bytes > MAX_HEADER_BYTES {
        return Some(Reply::error(
            431,
            &format!(
                "request headers are {} bytes; the limit is {MAX_HEADER_BYTES}",
                head.header_bytes
            ),
        ));
    }
    None
}

/// Logs a handler's panic; the request's method and target are the client's, so quoted.
pub fn log_handler_panic(head: &RequestHead) {
    log::error!(
        "handler panicked on {} {}",
        crate::shared::logging::quote(&head.method),
        crate::shared::logging::quote(&head.url)
    );
}

/// Turns a request into a reply.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, head: &RequestHead) -> Reply;
}

impl<F: Fn(&RequestHead) -> Reply + Send + Sync + 'static> Handler for F {
    fn handle(&self, head: &RequestHead) -> Reply {
        self(head)
    }
}

/// Startup failure of an HTTP server.
#[derive(Debug)]
pub enum HttpError {
    Bind {
        addr: String,
        source: std::io::Error,
    },
    Start(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            HttpError::Start(why) => write!(f, "cannot start HTTP server: {why}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// What the HTTP side has seen since start, for `/metrics` and stats.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct HttpCounters {
    /// Connections open now.
    pub connections_open: u64,
    /// Connections accepted since start.
    pub connections_accepted: u64,
    /// Connections refused (503) at `--max-connections`.
    pub connections_refused: u64,
    /// Request heads that did not arrive within `--request-timeout` (408).
    pub head_timeouts: u64,
    /// Kept-alive connections closed after `--idle-timeout`.
    pub idle_closed: u64,
    /// Answers not taken within `--request-timeout` (connection closed mid-answer).
    pub write_timeouts: u64,
    /// Requests that waited `--request-timeout` for a worker (503: the server is behind).
    pub shed: u64,
    /// Panics caught while answering, on connection threads or in the accept loop.
    pub panics: u64,
    /// Failed `accept()` calls (retried after a pause).
    pub accept_errors: u64,
    /// Requests on kept-alive connections that a worker read itself, without waking the
    /// connection's thread (the cheap path: clients that keep connections alive use it).
    pub requests_read_by_workers: u64,
}

/// The counters of one HTTP server, readable before the server exists (handlers are built
/// first and report on the server that runs them).
#[derive(Default)]
pub struct HttpMonitor {
    server: OnceLock<Weak<tiny_http::Server>>,
    panics: AtomicU64,
    shed: AtomicU64,
}

impl HttpMonitor {
    pub fn new() -> Arc<HttpMonitor> {
        Arc::new(HttpMonitor::default())
    }

    /// Counts a panic caught while answering a request.
    pub fn record_panic(&self) {
        self.panics.fetch_add(1, Ordering::Relaxed);
    }

    pub fn counters(&self) -> HttpCounters {
        let connections = self
            .server
            .get()
            .and_then(Weak::upgrade)
            .map(|server| server.connection_stats())
            .unwrap_or_default();
        HttpCounters {
            connections_open: connections.open as u64,
            connections_accepted: connections.accepted,
            connections_refused: connections.refused,
            head_timeouts: connections.head_timeouts,
            idle_closed: connections.idle_closed,
            write_timeouts: connections.write_timeouts,
            shed: self.shed.load(Ordering::Relaxed) + connections.unanswered,
            panics: self.panics.load(Ordering::Relaxed) + connections.panics,
            accept_errors: connections.accept_errors,
            requests_read_by_workers: connections.parked_requests,
        }
    }
}

/// How long a shutdown waits for answers already computed to reach their clients.
const DRAIN_ANSWERS: Duration = Duration::from_secs(2);

/// How long a worker waits for a request before looking at the stop flag again.
const POLL: Duration = Duration::from_millis(100);

/// A running server and its worker threads.
///
/// The vendored tiny_http's accept loop never ends while the server lives (accept errors are
/// retried with a pause: see PATCHED.md), so nothing has to watch it from outside.
pub struct HttpServer {
    server: Arc<tiny_http::Server>,
    stopping: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    addr: SocketAddr,
}

/// Binds `addr` (port 0 picks a free port).
pub fn bind(addr: &str) -> Result<TcpListener, HttpError> {
    let listener = TcpListener::bind(addr).map_err(|source| HttpError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    set_nodelay(&listener);
    Ok(listener)
}

/// Raises the soft limit on open files to the hard limit (each connection costs one
/// descriptor); returns the limit now in force.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid resource and a pointer to a live rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: as above; raising the soft limit up to the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

/// Turns Nagle's algorithm off for every connection the listener accepts (Linux copies the
/// option to accepted sockets; tiny_http gives no hook on them). Without it, the last small
/// segment of an answer waits for the client's delayed ACK: 40 ms stalls on large bodies.
pub fn set_nodelay(listener: &TcpListener) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor, a pointer to a live c_int and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        log::warn!(
            "cannot set TCP_NODELAY: {}",
            std::io::Error::last_os_error()
        );
    }
}

impl HttpServer {
    /// Serves `listener` with `n_workers` threads named `{name}-{i}`, each connection held to
    /// `limits`; what happens is counted in `monitor`.
    pub fn start(
        listener: TcpListener,
        name: &str,
        n_workers: usize,
        limits: ConnectionLimits,
        handler: Arc<dyn Handler>,
        monitor: Arc<HttpMonitor>,
    ) -> Result<HttpServer, HttpError> {
        let addr = listener
            .local_addr()
            .map_err(|e| HttpError::Start(e.to_string()))?;
        let server = tiny_http::Server::from_listener(listener, limits)
            .map_err(|e| HttpError::Start(e.to_string()))?;
        let server = Arc::new(server);
        // A second server on the same monitor (tests) reports on the first one only.
        let _ = monitor.server.set(Arc::downgrade(&server));
        let stopping = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::with_capacity(n_workers);
        for i in 0..n_workers.max(1) {
            let worker = Worker {
                server: Arc::clone(&server),
                stopping: Arc::clone(&stopping),
                handler: Arc::clone(&handler),
                monitor: Arc::clone(&monitor),
                request_timeout: limits.request_timeout,
            };
            let worker = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || worker.run())
                .map_err(|e| HttpError::Start(e.to_string()))?;
            workers.push(worker);
        }
        Ok(HttpServer {
            server,
            stopping,
            workers,
            addr,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the workers after the requests they are answering, joins them, and waits (at
    /// most [`DRAIN_ANSWERS`]) for their answers to be written by the connection threads; the
    /// accept loop ends with the last reference to the server.
    pub fn shutdown(mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        let started = std::time::Instant::now();
        while self.server.answers_in_flight() > 0 && started.elapsed() < DRAIN_ANSWERS {
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(self.server);
    }
}

/// One API worker: takes complete request heads, answers them, hands the answer back.
struct Worker {
    server: Arc<tiny_http::Server>,
    stopping: Arc<AtomicBool>,
    handler: Arc<dyn Handler>,
    monitor: Arc<HttpMonitor>,
    request_timeout: Duration,
}

impl Worker {
    fn run(self) {
        while !self.stopping.load(Ordering::SeqCst) {
            // `recv_timeout` only fails when unblocked; the stop flag decides.
            let Ok(Some(request)) = self.server.recv_timeout(POLL) else {
                continue;
            };
            // Dropping an unanswered request answers 500 on its connection: no I/O here.
            if catch_unwind(AssertUnwindSafe(|| self.answer(request))).is_err() {
                self.monitor.record_panic();
                log::error!("panic while answering a request; answered 500, worker goes on");
            }
        }
    }

    fn answer(&self, request: tiny_http::Request) {
        let waited = request.received_at().elapsed();
        if waited > self.request_timeout {
            // The server is behind: answering late helps nobody and deepens the queue.
            self.monitor.shed.fetch_add(1, Ordering::Relaxed);
            let reply = Reply::error(
                503,
                &format!(
                    "server busy: the request waited {:.1} s for a worker; retry shortly",
                    waited.as_secs_f64()
                ),
            )
            .with_header("Retry-After", "1".to_string());
            let _ = respond(request, reply);
            return;
        }
        let head = head_of(&request);
        let reply = match catch_unwind(AssertUnwindSafe(|| self.handler.handle(&head))) {
            Ok(reply) => reply,
            Err(_) => {
                self.monitor.record_panic();
                log_handler_panic(&head);
                Reply::error(500, "internal error")
            }
        };
        // An error means the connection is gone already; nothing to do for it.
        let _ = respond(request, reply);
    }
}

fn head_of(request: &tiny_http::Request) -> RequestHead {
    let header_bytes = request
        .headers()
        .iter()
        .map(|h| h.field.as_str().as_str().len() + h.value.as_str().len())
        .sum();
    let header = |name: &'static str| {
        request
            .headers()
            .iter()
            .find(|h| h.field.equiv(name))
            .map(|h| h.value.as_str().to_string())
    };
    RequestHead {
        method: request.method().as_str().to_string(),
        url: request.url().to_string(),
        header_bytes,
        accept: header("Accept"),
        authorization: header("Authorization"),
        remote_ip: request.remote_addr().map(|a| a.ip()),
        body: request.declared_body(),
    }
}

fn header(name: &str, value: &str) -> Option<tiny_http::Header> {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
}

/// The Content-Type header, parsed once per content type rather than once per answer.
fn content_type(value: &'static str) -> Option<tiny_http::Header> {
    static JSON_HEADER: OnceLock<Option<tiny_http::Header>> = OnceLock::new();
    if value == JSON {
        return JSON_HEADER
            .get_or_init(|| header("Content-Type", JSON))
            .clone();
    }
    header("Content-Type", value)
}

/// `Cache-Control: no-store`, parsed once.
fn cache_control() -> Option<tiny_http::Header> {
    static NO_STORE: OnceLock<Option<tiny_http::Header>> = OnceLock::new();
    NO_STORE
        .get_or_init(|| header("Cache-Control", "no-store"))
        .clone()
}

/// Hands the answer to the request's connection thread (never blocks).
fn respond(request: tiny_http::Request, reply: Reply) -> std::io::Result<()> {
    let mut headers = Vec::with_capacity(reply.headers.len() + 2);
    headers.extend(content_type(reply.content_type));
    // Live telemetry: no cache between us and a client may keep an answer.
    headers.extend(cache_control());
    for (name, value) in &reply.headers {
        headers.extend(header(name, value));
    }
    let status = tiny_http::StatusCode(reply.status);
    match reply.body {
        ReplyBody::Owned(bytes) => {
            let len = bytes.len();
            let response =
                tiny_http::Response::new(status, headers, Cursor::new(bytes), Some(len), None);
            request.respond(response)
        }
        ReplyBody::Shared { data, len } => {
            let reader = std::io::Read::take(Cursor::new(SharedBytes(data)), len as u64);
            let response = tiny_http::Response::new(status, headers, reader, Some(len), None);
            request.respond(response)
        }
        ReplyBody::Stream {
            next,
            write_timeout,
        } => request.respond_stream(tiny_http::Stream {
            status_code: status,
            headers,
            next,
            write_timeout,
        }),
    }
}

struct SharedBytes(Arc<dyn AsRef<[u8]> + Send + Sync>);

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        (*self.0).as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert!(check_limits(&RequestHead::get("/telemetry/get?x=1")).is_none());
        let long = RequestHead::get(&format!("/{}", "a".repeat(MAX_URL_LEN)));
        assert_eq!(check_limits(&long).map(|r| r.status), Some(414));
        let mut fat = RequestHead::get("/");
        fat.header_bytes = MAX_HEADER_BYTES + 1;
        assert_eq!(check_limits(&fat).map(|r| r.status), Some(431));
    }

    #[test]
    fn error_bodies_are_json() {
        let reply = Reply::error(400, "bad \"thing\"");
        let value: serde_json::Value = serde_json::from_slice(reply.body_bytes()).expect("json");
        assert_eq!(value, serde_json::json!({"error": "bad \"thing\""}));
    }
}
