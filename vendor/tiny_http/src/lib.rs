//! # Simple usage
//!
//! ## Creating the server
//!
//! The easiest way to create a server is to call `Server::http()`.
//!
//! The `http()` function returns an `IoResult<Server>` which will return an error
//! in the case where the server creation fails (for example if the listening port is already
//! occupied).
//!
//! ```no_run
//! let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! ```
//!
//! A newly-created `Server` will immediately start listening for incoming connections and HTTP
//! requests.
//!
//! ## Receiving requests
//!
//! Calling `server.recv()` will block until the next request is available.
//! This function returns an `IoResult<Request>`, so you need to handle the possible errors.
//!
//! ```no_run
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//!
//! loop {
//!     // blocks until the next request is received
//!     let request = match server.recv() {
//!         Ok(rq) => rq,
//!         Err(e) => { println!("error: {}", e); break }
//!     };
//!
//!     // do something with the request
//!     // ...
//! }
//! ```
//!
//! In a real-case scenario, you will probably want to spawn multiple worker tasks and call
//! `server.recv()` on all of them. Like this:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use std::thread;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! let server = Arc::new(server);
//! let mut guards = Vec::with_capacity(4);
//!
//! for _ in (0 .. 4) {
//!     let server = server.clone();
//!
//!     let guard = thread::spawn(move || {
//!         loop {
//!             let rq = server.recv().unwrap();
//!
//!             // ...
//!         }
//!     });
//!
//!     guards.push(guard);
//! }
//! ```
//!
//! If you don't want to block, you can call `server.try_recv()` instead.
//!
//! ## Handling requests
//!
//! The `Request` object returned by `server.recv()` contains informations about the client's request.
//! The most useful methods are probably `request.method()` and `request.url()` which return
//! the requested method (`GET`, `POST`, etc.) and url.
//!
//! To handle a request, you need to create a `Response` object. See the docs of this object for
//! more infos. Here is an example of creating a `Response` from a file:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! ```
//!
//! All that remains to do is call `request.respond()`:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! # let request = server.recv().unwrap();
//! # let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! let _ = request.respond(response);
//! ```
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![allow(clippy::match_like_matches_macro)]
// fabric-telemetry patch: upstream 0.12.0 warns about these on current compilers.
#![allow(dead_code, unused_imports)]

#[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
compile_error!(
    "this patched copy of tiny_http serves plain HTTP only (PATCHED.md); terminate TLS in front of it"
);

use std::error::Error;
use std::io::Error as IoError;
use std::io::ErrorKind as IoErrorKind;
use std::io::Result as IoResult;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use connection::Connection;
use ready::{Ready, Woken};

pub use common::{HTTPVersion, Header, HeaderField, Method, StatusCode};
pub use connection::{ConfigListenAddr, ListenAddr, Listener};
pub use request::{DeclaredBody, Request, Stream};
pub use response::{Response, ResponseBox};

mod answer;
mod client;
mod common;
mod connection;
mod ready;
mod request;
mod response;
mod util;

pub use client::{MAX_HEADER_SECTION, MAX_REQUEST_LINE};

/// The HTTP server.
///
/// fabric-telemetry patch: an accept thread that never ends while the server lives, at most
/// `max_connections` connections (one thread each, which reads heads and writes answers under
/// deadlines: see `client.rs`), and counters of what happened to connections.
pub struct Server {
    // should be false as long as the server exists
    // when set to true, all the subtasks will close within a few hundreds ms
    close: Arc<AtomicBool>,

    // fabric-telemetry patch: request heads queued by connection threads, and kept-alive
    // connections parked for the workers (`ready.rs`)
    ready: Arc<Ready>,

    // result of TcpListener::local_addr()
    listening_addr: ListenAddr,

    counters: Arc<Counters>,
}

enum Message {
    NewRequest(Request),
}

/// fabric-telemetry patch: the bounds every connection is held to (flags `--request-timeout`,
/// `--idle-timeout`, `--max-connections` of both fabric-telemetry programs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A new connection's first request head must arrive within it; a later head must arrive
    /// within it of its first byte; an answer must be taken within it.
    pub request_timeout: Duration,
    /// A kept-alive connection with no new request for this long is closed.
    pub idle_timeout: Duration,
    /// Connections beyond this many are answered 503 (with `Retry-After`) and closed;
    /// connection threads stay bounded by it.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
        }
    }
}

/// fabric-telemetry patch: what happened to connections, counted as it happens.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) open: AtomicUsize,
    /// Answers handed back by the workers and not yet written.
    pub(crate) writing: AtomicUsize,
    pub(crate) accepted: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) head_timeouts: AtomicU64,
    pub(crate) idle_closed: AtomicU64,
    pub(crate) write_timeouts: AtomicU64,
    pub(crate) unanswered: AtomicU64,
    pub(crate) panics: AtomicU64,
    pub(crate) accept_errors: AtomicU64,
    /// fabric-telemetry patch: streams being written now.
    pub(crate) streams: AtomicUsize,
    /// fabric-telemetry patch: requests a worker read itself from a parked connection.
    pub(crate) parked_requests: AtomicU64,
}

/// A snapshot of a server's connection counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Connections open now.
    pub open: usize,
    /// Connections accepted since start (served or refused).
    pub accepted: u64,
    /// Connections refused with 503 because `max_connections` were open.
    pub refused: u64,
    /// Request heads that did not arrive in time (answered 408).
    pub head_timeouts: u64,
    /// Kept-alive connections closed for idling.
    pub idle_closed: u64,
    /// Answers the client did not take in time (connection closed mid-answer).
    pub write_timeouts: u64,
    /// Requests the workers did not answer within 5 minutes (answered 503).
    pub unanswered: u64,
    /// Panics caught on connection or accept threads.
    pub panics: u64,
    /// Failed `accept()` calls (retried after a pause).
    pub accept_errors: u64,
    /// Streamed answers being written now.
    pub streams: usize,
    /// Requests on kept-alive connections that a worker read itself (`ready.rs`), without
    /// waking the connection's thread.
    pub parked_requests: u64,
}

// this trait is to make sure that Server implements Share and Send
#[doc(hidden)]
trait MustBeShareDummy: Sync + Send {}
#[doc(hidden)]
impl MustBeShareDummy for Server {}

pub struct IncomingRequests<'a> {
    server: &'a Server,
}

/// Represents the parameters required to create a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The addresses to try to listen to.
    pub addr: ConfigListenAddr,
    /// The bounds every connection is held to.
    pub limits: ConnectionLimits,
}

/// How long the accept thread pauses after a failed `accept()` at first, and at most.
const ACCEPT_PAUSE: Duration = Duration::from_millis(10);
const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);
/// How many refused connections may wait for their 503 to be taken.
const REFUSED_QUEUE: usize = 256;

impl Server {
    /// Shortcut for a simple server on a specific address.
    #[inline]
    pub fn http<A>(addr: A) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
    {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::from_socket_addrs(addr)?,
            limits: ConnectionLimits::default(),
        })
    }

    #[cfg(unix)]
    #[inline]
    /// Shortcut for a UNIX socket server at a specific path
    pub fn http_unix(
        path: &std::path::Path,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::unix_from_path(path),
            limits: ConnectionLimits::default(),
        })
    }

    /// Builds a new server that listens on the specified address.
    pub fn new(config: ServerConfig) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        let listener = config.addr.bind()?;
        Self::from_listener(listener, config.limits)
    }

    /// Builds a new server using the specified listener.
    pub fn from_listener<L: Into<Listener>>(
        listener: L,
        limits: ConnectionLimits,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        let listener = listener.into();
        let close_trigger = Arc::new(AtomicBool::new(false));
        let local_addr = listener.local_addr()?;
        log::debug!("Server listening on {}", local_addr);

        let ready = Ready::new()?;
        let counters = Arc::new(Counters::default());
        let (refuse, refused) = mpsc::sync_channel::<Connection>(REFUSED_QUEUE);
        thread::Builder::new()
            .name("http-refuse".to_string())
            .spawn(move || answer_refused(&refused))?;

        let accept = Accept {
            listener,
            close: Arc::clone(&close_trigger),
            ready: Arc::clone(&ready),
            counters: Arc::clone(&counters),
            limits: Arc::new(limits),
            refuse,
            pool: util::TaskPool::new(),
        };
        thread::Builder::new()
            .name("http-accept".to_string())
            .spawn(move || accept.run())?;

        Ok(Server {
            ready,
            close: close_trigger,
            listening_addr: local_addr,
            counters,
        })
    }

    /// Returns an iterator for all the incoming requests.
    #[inline]
    pub fn incoming_requests(&self) -> IncomingRequests<'_> {
        IncomingRequests { server: self }
    }

    /// Returns the address the server is listening to.
    #[inline]
    pub fn server_addr(&self) -> ListenAddr {
        self.listening_addr.clone()
    }

    /// fabric-telemetry patch: what happened to connections so far.
    pub fn connection_stats(&self) -> ConnectionStats {
        let c = &self.counters;
        ConnectionStats {
            open: c.open.load(Relaxed),
            accepted: c.accepted.load(Relaxed),
            refused: c.refused.load(Relaxed),
            head_timeouts: c.head_timeouts.load(Relaxed),
            idle_closed: c.idle_closed.load(Relaxed),
            write_timeouts: c.write_timeouts.load(Relaxed),
            unanswered: c.unanswered.load(Relaxed),
            panics: c.panics.load(Relaxed),
            accept_errors: c.accept_errors.load(Relaxed),
            streams: c.streams.load(Relaxed),
            parked_requests: c.parked_requests.load(Relaxed),
        }
    }

    /// fabric-telemetry patch: answers the workers handed back that are still being written.
    /// A server shutting down waits for it to reach 0 (bounded), so answers in flight reach
    /// their clients.
    pub fn answers_in_flight(&self) -> usize {
        self.counters.writing.load(Relaxed)
    }

    /// Blocks until the next request arrives (or `unblock` is called).
    pub fn recv(&self) -> IoResult<Request> {
        loop {
            match self.next_request(Duration::from_secs(3600)) {
                Some(Some(rq)) => return Ok(rq),
                Some(None) => return Err(IoError::new(IoErrorKind::Other, "thread unblocked")),
                None => {}
            }
        }
    }

    /// Same as `recv()` but doesn't block longer than timeout.
    pub fn recv_timeout(&self, timeout: Duration) -> IoResult<Option<Request>> {
        Ok(self.next_request(timeout).flatten())
    }

    /// Same as `recv()` but doesn't block.
    pub fn try_recv(&self) -> IoResult<Option<Request>> {
        Ok(self.next_request(Duration::ZERO).flatten())
    }

    /// Unblock thread stuck in recv() or incoming_requests().
    pub fn unblock(&self) {
        self.ready.unblock();
    }

    /// fabric-telemetry patch: the next request, from the queue or read from a parked
    /// connection by this thread (`ready.rs`), waiting at most `timeout`: `Some(None)` when
    /// unblocked, `None` when the time ran out.
    fn next_request(&self, timeout: Duration) -> Option<Option<Request>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(next) = self.ready.try_pop() {
                return Some(next.map(|Message::NewRequest(rq)| rq));
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.ready.wait(left) {
                Woken::Queue => {}
                Woken::Parked(slot) => {
                    if let Some(rq) = slot.take_parked(client::parked_request) {
                        self.counters.parked_requests.fetch_add(1, Relaxed);
                        return Some(Some(rq));
                    }
                }
                Woken::Nothing if left.is_zero() => return None,
                Woken::Nothing => {}
            }
        }
    }
}

/// Decrements the open-connection count when a connection ends, however it ends.
struct OpenGuard(Arc<Counters>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}

/// The accept thread's state.
struct Accept {
    listener: Listener,
    close: Arc<AtomicBool>,
    ready: Arc<Ready>,
    counters: Arc<Counters>,
    limits: Arc<ConnectionLimits>,
    refuse: mpsc::SyncSender<Connection>,
    pool: util::TaskPool,
}

impl Accept {
    /// Accepts until the server is dropped. Nothing ends it early: a failed `accept()`
    /// (descriptors exhausted, an aborted connection) is counted and retried after a pause
    /// that grows while failures last, and a panic while handing a connection over is caught.
    fn run(self) {
        let mut pause = ACCEPT_PAUSE;
        let mut last_report: Option<Instant> = None;
        while !self.close.load(Relaxed) {
            match self.listener.accept() {
                Ok((conn, remote)) => {
                    pause = ACCEPT_PAUSE;
                    if self.close.load(Relaxed) {
                        break;
                    }
                    let handed = catch_unwind(AssertUnwindSafe(|| self.hand_over(conn, remote)));
                    if handed.is_err() {
                        self.counters.panics.fetch_add(1, Relaxed);
                        log::error!("panic while handing over a connection; accepting on");
                    }
                }
                Err(e) => {
                    self.counters.accept_errors.fetch_add(1, Relaxed);
                    if last_report.map_or(true, |at| at.elapsed() >= Duration::from_secs(30)) {
                        log::error!(
                            "accept() failed: {e}; retrying (every failure is counted, one report per 30 s)"
                        );
                        last_report = Some(Instant::now());
                    }
                    // An aborted handshake is the client's; anything else (EMFILE, ENFILE,
                    // ENOBUFS) needs resources to come back: pause, longer while it lasts.
                    if e.kind() != IoErrorKind::ConnectionAborted {
                        thread::sleep(pause);
                        pause = (pause * 2).min(ACCEPT_PAUSE_MAX);
                    }
                }
            }
        }
        log::debug!("Terminating accept thread");
    }

    fn hand_over(&self, conn: Connection, remote: Option<SocketAddr>) {
        let accepted = Instant::now();
        self.counters.accepted.fetch_add(1, Relaxed);
        // Counted before the thread runs, so a burst cannot overshoot the limit.
        if self.counters.open.fetch_add(1, Relaxed) >= self.limits.max_connections {
            self.counters.open.fetch_sub(1, Relaxed);
            self.counters.refused.fetch_add(1, Relaxed);
            // A full queue of refused connections: close this one outright.
            let _ = self.refuse.try_send(conn);
            return;
        }
        let guard = OpenGuard(Arc::clone(&self.counters));
        let ready = Arc::clone(&self.ready);
        let counters = Arc::clone(&self.counters);
        let limits = Arc::clone(&self.limits);
        let mut task = Some((conn, guard));
        let spawned = self.pool.spawn(Box::new(move || {
            let Some((conn, guard)) = task.take() else {
                return;
            };
            let served = catch_unwind(AssertUnwindSafe(|| {
                client::serve_connection(conn, remote, accepted, &limits, &counters, &ready)
            }));
            if served.is_err() {
                counters.panics.fetch_add(1, Relaxed);
                log::error!("panic on a connection thread; the connection was closed");
            }
            drop(guard);
        }));
        if let Err(e) = spawned {
            // The task (and so the connection and its guard) was dropped with the error.
            self.counters.accept_errors.fetch_add(1, Relaxed);
            log::error!("cannot start a connection thread: {e}; connection closed");
        }
    }
}

/// Answers connections refused for the connection limit: a 503 with `Retry-After`, then a
/// short lingering close so the client can read it. One thread, never blocking on a client.
fn answer_refused(refused: &mpsc::Receiver<Connection>) {
    const ANSWER: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\nContent-Length: 48\r\nConnection: close\r\n\r\n{\"error\":\"too many connections; retry shortly\"}\n";
    const LINGER: Duration = Duration::from_millis(500);
    let mut lingering: Vec<(Connection, Instant)> = Vec::new();
    loop {
        let next = if lingering.is_empty() {
            refused
                .recv()
                .map_err(|_| mpsc::RecvTimeoutError::Disconnected)
        } else {
            refused.recv_timeout(Duration::from_millis(20))
        };
        match next {
            Ok(conn) => {
                if conn.set_nonblocking(true).is_ok() {
                    let mut writer = &conn;
                    let _ = writer.write(ANSWER);
                    let _ = conn.shutdown(Shutdown::Write);
                    if lingering.len() < REFUSED_QUEUE {
                        lingering.push((conn, Instant::now() + LINGER));
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        let mut buf = [0u8; 4096];
        lingering.retain(|(conn, until)| {
            if now >= *until {
                return false;
            }
            let mut reader = conn;
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => return false,
                    Ok(_) => continue,
                    Err(e) if e.kind() == IoErrorKind::WouldBlock => return true,
                    Err(_) => return false,
                }
            }
        });
    }
}

impl Iterator for IncomingRequests<'_> {
    type Item = Request;
    fn next(&mut self) -> Option<Request> {
        self.server.recv().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.close.store(true, Relaxed);
        // Connect briefly to ourselves to unblock the accept thread
        let maybe_stream = match &self.listening_addr {
            ListenAddr::IP(addr) => TcpStream::connect(addr).map(Connection::from),
            #[cfg(unix)]
            ListenAddr::Unix(addr) => match addr.as_pathname() {
                Some(path) => std::os::unix::net::UnixStream::connect(path).map(Connection::from),
                None => Err(IoError::new(IoErrorKind::Other, "unnamed socket")),
            },
        };
        if let Ok(stream) = maybe_stream {
            let _ = stream.shutdown(Shutdown::Both);
        }

        #[cfg(unix)]
        if let ListenAddr::Unix(addr) = &self.listening_addr {
            if let Some(path) = addr.as_pathname() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}
