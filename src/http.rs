//! HTTP plumbing both programs share: a tiny_http server answered by a fixed pool of worker
//! threads (the shape tiny_http's own docs show: one `Arc<Server>`, N threads looping on
//! `recv()`), the limits every request is checked against, and the [`Reply`] handlers return.
//!
//! Handlers are plain functions of a [`RequestHead`], so they are tested without sockets. A
//! panicking handler becomes a 500 for that request; the worker lives on.

use std::io::Cursor;
use std::net::{SocketAddr, TcpListener};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
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

/// A running server and its worker threads.
pub struct HttpServer {
    server: Arc<tiny_http::Server>,
    workers: Vec<JoinHandle<()>>,
    stopping: Arc<AtomicBool>,
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
        let server = tiny_http::Server::from_listener(listener, None)
            .map_err(|e| HttpError::Start(e.to_string()))?;
        let server = Arc::new(server);
        let stopping = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::with_capacity(n_workers);
        for i in 0..n_workers.max(1) {
            let server = Arc::clone(&server);
            let handler = Arc::clone(&handler);
            let stopping = Arc::clone(&stopping);
            let worker = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || work(&server, handler.as_ref(), &stopping))
                .map_err(|e| HttpError::Start(e.to_string()))?;
            workers.push(worker);
        }
        Ok(HttpServer {
            server,
            workers,
            stopping,
            addr,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the workers after the requests they are answering, and joins them.
    pub fn shutdown(self) {
        self.stopping.store(true, Ordering::SeqCst);
        for _ in &self.workers {
            self.server.unblock();
        }
        for worker in self.workers {
            let _ = worker.join();
        }
    }
}

fn work(server: &tiny_http::Server, handler: &dyn Handler, stopping: &AtomicBool) {
    loop {
        match server.recv() {
            Ok(request) => serve(request, handler),
            Err(_) if stopping.load(Ordering::SeqCst) => return,
            Err(e) => {
                log::warn!("HTTP accept failed: {e}");
                // An accept error repeats while its cause lasts (e.g. out of file descriptors).
                std::thread::sleep(Duration::from_millis(50));
            }
        }
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
