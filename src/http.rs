//! HTTP plumbing both programs share: a tiny_http server answered by a fixed pool of worker
//! threads (the shape tiny_http's own docs show: one `Arc<Server>`, N threads looping on
//! `recv()`), the limits every request is checked against, and the [`Reply`] handlers return.
//!
//! Handlers are plain functions of a [`RequestHead`], so they are tested without sockets. A
//! panicking handler becomes a 500 for that request; the worker lives on.

use std::io::Cursor;
use std::net::{SocketAddr, TcpListener};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
}

impl RequestHead {
    pub fn get(url: &str) -> RequestHead {
        RequestHead {
            method: "GET".to_string(),
            url: url.to_string(),
            header_bytes: 0,
            accept: None,
            authorization: None,
            remote_ip: None,
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
        }
    }
}

/// The reply for a request that breaks the size limits, if it does. Handlers call it first,
/// so the answer is counted like any other.
pub fn check_limits(head: &RequestHead) -> Option<Reply> {
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

/// The tiny_http servers workers take requests from: the current one, and ones retired by a
/// restart that may still hold keep-alive connections (drained for [`RETIRED_FOR`]).
struct Servers {
    current: Arc<tiny_http::Server>,
    retired: Vec<(Instant, Arc<tiny_http::Server>)>,
}

/// How long a replaced server's connections are still served.
const RETIRED_FOR: Duration = Duration::from_secs(60);
/// How long a worker waits on the current server before looking at the others again.
const POLL: Duration = Duration::from_millis(100);

/// What workers and the supervisor share.
struct Shared {
    servers: RwLock<Servers>,
    stopping: AtomicBool,
    /// Workers answering a request right now.
    busy: AtomicUsize,
    /// A worker saw tiny_http report an accept failure.
    accept_failed: AtomicBool,
    restarts: AtomicU64,
}

impl Shared {
    fn servers(&self) -> std::sync::RwLockReadGuard<'_, Servers> {
        self.servers.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running server, its worker threads, and the supervisor that keeps it listening.
///
/// tiny_http's accept thread ends for good on any `accept()` error (and panics when it cannot
/// duplicate an accepted socket): out of file descriptors, the process would stay up but
/// deaf. The supervisor notices (the error reaches a worker; or a self-probe goes unanswered
/// while no worker is busy) and starts a new tiny_http server on a duplicate of the listening
/// socket, retrying until descriptors are free again.
pub struct HttpServer {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    supervisor: Option<JoinHandle<()>>,
    stop_supervisor: Option<crossbeam_channel::Sender<()>>,
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

/// Raises the soft limit on open files to the hard limit (each connection costs tiny_http two
/// descriptors); returns the limit now in force.
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
    /// Serves `listener` with `n_workers` threads named `{name}-{i}`.
    pub fn start(
        listener: TcpListener,
        name: &str,
        n_workers: usize,
        handler: Arc<dyn Handler>,
    ) -> Result<HttpServer, HttpError> {
        let addr = listener
            .local_addr()
            .map_err(|e| HttpError::Start(e.to_string()))?;
        // Kept to rebuild the accept loop on the same socket.
        let spare = listener
            .try_clone()
            .map_err(|e| HttpError::Start(e.to_string()))?;
        let server = tiny_http::Server::from_listener(listener, None)
            .map_err(|e| HttpError::Start(e.to_string()))?;
        let shared = Arc::new(Shared {
            servers: RwLock::new(Servers {
                current: Arc::new(server),
                retired: Vec::new(),
            }),
            stopping: AtomicBool::new(false),
            busy: AtomicUsize::new(0),
            accept_failed: AtomicBool::new(false),
            restarts: AtomicU64::new(0),
        });
        let mut workers = Vec::with_capacity(n_workers);
        for i in 0..n_workers.max(1) {
            let shared = Arc::clone(&shared);
            let handler = Arc::clone(&handler);
            let worker = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || work(&shared, handler.as_ref()))
                .map_err(|e| HttpError::Start(e.to_string()))?;
            workers.push(worker);
        }
        let (stop_supervisor, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let supervisor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("{name}-supervisor"))
                .spawn(move || supervise(&shared, &spare, addr, &stop_rx))
                .map_err(|e| HttpError::Start(e.to_string()))?
        };
        Ok(HttpServer {
            shared,
            workers,
            supervisor: Some(supervisor),
            stop_supervisor: Some(stop_supervisor),
            addr,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// How often the accept loop was rebuilt.
    pub fn restarts(&self) -> u64 {
        self.shared.restarts.load(Ordering::Relaxed)
    }

    /// Stops the workers after the requests they are answering, and joins them.
    pub fn shutdown(mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        drop(self.stop_supervisor.take());
        if let Some(supervisor) = self.supervisor.take() {
            let _ = supervisor.join();
        }
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// The address a self-probe connects to: the bound port on loopback.
fn probe_addr(addr: SocketAddr) -> SocketAddr {
    let ip: std::net::IpAddr = if addr.is_ipv4() {
        std::net::Ipv4Addr::LOCALHOST.into()
    } else {
        std::net::Ipv6Addr::LOCALHOST.into()
    };
    SocketAddr::new(ip, addr.port())
}

/// Whether the server answers a probe within a second.
fn answers(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let timeout = Duration::from_secs(1);
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&probe_addr(addr), timeout) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    if stream
        .write_all(
            format!("GET {PROBE_PATH} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .is_err()
    {
        return false;
    }
    let mut first = [0u8; 12];
    stream.read_exact(&mut first).is_ok() && first.starts_with(b"HTTP/1.1 204")
}

/// The path the supervisor probes; answered by the worker pool, never by a handler.
pub const PROBE_PATH: &str = "/-/probe";

fn supervise(
    shared: &Shared,
    spare: &TcpListener,
    addr: SocketAddr,
    stop: &crossbeam_channel::Receiver<()>,
) {
    let mut unanswered = 0;
    loop {
        match stop.recv_timeout(Duration::from_secs(1)) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let failed = shared.accept_failed.swap(false, Ordering::SeqCst);
        // Only an idle pool makes an unanswered probe mean "deaf" rather than "busy".
        let deaf = if failed {
            true
        } else if shared.busy.load(Ordering::SeqCst) == 0 && !answers(addr) {
            unanswered += 1;
            unanswered >= 2
        } else {
            unanswered = 0;
            false
        };
        if deaf {
            unanswered = 0;
            restart(shared, spare, stop);
        }
        let mut servers = shared.servers.write().unwrap_or_else(|p| p.into_inner());
        servers
            .retired
            .retain(|(since, _)| since.elapsed() < RETIRED_FOR);
    }
}

/// Replaces the current server with a new one on the same socket, retrying while
/// descriptors are exhausted.
fn restart(shared: &Shared, spare: &TcpListener, stop: &crossbeam_channel::Receiver<()>) {
    let mut wait = Duration::from_millis(100);
    loop {
        match spare
            .try_clone()
            .map_err(|e| e.to_string())
            .and_then(|listener| {
                tiny_http::Server::from_listener(listener, None).map_err(|e| e.to_string())
            }) {
            Ok(server) => {
                let mut servers = shared.servers.write().unwrap_or_else(|p| p.into_inner());
                let old = std::mem::replace(&mut servers.current, Arc::new(server));
                servers.retired.push((Instant::now(), old));
                let n = shared.restarts.fetch_add(1, Ordering::Relaxed) + 1;
                log::warn!("HTTP accept loop died; restarted it on the same socket (restart {n})");
                return;
            }
            Err(why) => {
                log::warn!("cannot restart the HTTP accept loop yet: {why}");
                match stop.recv_timeout(wait) {
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                wait = (wait * 2).min(Duration::from_secs(1));
            }
        }
    }
}

fn work(shared: &Shared, handler: &dyn Handler) {
    let mut accept_errors = crate::logging::RateLimiter::new(Duration::from_secs(30));
    while !shared.stopping.load(Ordering::SeqCst) {
        let (current, retired): (Arc<tiny_http::Server>, Vec<Arc<tiny_http::Server>>) = {
            let servers = shared.servers();
            let retired = servers.retired.iter().map(|(_, s)| Arc::clone(s)).collect();
            (Arc::clone(&servers.current), retired)
        };
        for old in &retired {
            while let Ok(Some(request)) = old.try_recv() {
                answer(shared, request, handler);
            }
        }
        match current.recv_timeout(POLL) {
            Ok(Some(request)) => answer(shared, request, handler),
            Ok(None) => {}
            Err(e) => {
                shared.accept_failed.store(true, Ordering::SeqCst);
                if let Some(held_back) = accept_errors.allow(Instant::now()) {
                    log::error!("HTTP accept failed: {e} ({held_back} more since the last report); restarting the accept loop");
                }
                std::thread::sleep(POLL);
            }
        }
    }
}

fn answer(shared: &Shared, request: tiny_http::Request, handler: &dyn Handler) {
    shared.busy.fetch_add(1, Ordering::SeqCst);
    if request.url() == PROBE_PATH {
        let _ = request.respond(tiny_http::Response::empty(204));
    } else {
        serve(request, handler);
    }
    shared.busy.fetch_sub(1, Ordering::SeqCst);
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
    }
}

fn serve(request: tiny_http::Request, handler: &dyn Handler) {
    let head = head_of(&request);
    let reply = match catch_unwind(AssertUnwindSafe(|| handler.handle(&head))) {
        Ok(reply) => reply,
        Err(_) => {
            log::error!("handler panicked on {} {}", head.method, head.url);
            Reply::error(500, "internal error")
        }
    };
    if let Err(e) = respond(request, reply) {
        // The client went away mid-answer; nothing to do for it.
        log::debug!("could not write reply to {} {}: {e}", head.method, head.url);
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

fn respond(request: tiny_http::Request, reply: Reply) -> std::io::Result<()> {
    let mut headers = Vec::with_capacity(reply.headers.len() + 1);
    headers.extend(content_type(reply.content_type));
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
