//! fabric-telemetry patch: where the answer to a connection's request goes.
//!
//! A connection thread hands a request head to the workers and must learn what became of it.
//! Before this patch it always waited for the worker's answer on a channel and wrote it
//! itself: three sleeps and wake-ups per request (the connection thread on the socket, the
//! worker on the queue, the connection thread on the answer), where a server answering from
//! its own thread sleeps once (`cargo bench --bench fabric -- openloop`: 4.1 context switches
//! and 55 µs of CPU per `/get`, nginx 0.74 and 24 µs).
//!
//! Now a worker whose answer is small and already in memory writes it itself, without
//! blocking (`MSG_DONTWAIT`): when the socket takes it whole, the connection thread is not
//! woken for it at all; it was already waiting for the client's next request. Whatever
//! cannot go out that way (a large or streamed answer, the rest of an answer the socket did
//! not take, a dropped request) is handed to the connection thread, which writes it under
//! its deadlines as before, so a client that does not read still holds only its own
//! connection thread and never a worker.
//!
//! The connection thread waits with `poll(2)` on an eventfd the worker signals. Once an
//! answer is out and no byte of a later request is here yet, the connection is *parked*: the
//! workers watch its socket (`crate::ready`) and read the next request themselves, and this
//! slot says whose turn it is (`State`). A pipelined request is handed over only after the
//! answer before it is out, so answers keep their order.

use std::io::{ErrorKind, Result as IoResult};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::common::{HTTPVersion, Header};
use crate::connection::Connection;
use crate::ready::Ready;
use crate::request::{Asked, Reply, Request};
use crate::ResponseBox;

/// The largest answer a worker writes itself. Larger ones are written by the connection
/// thread, so the worker never holds a copy of a large body.
const DIRECT_MAX: usize = 64 * 1024;

/// The most bytes a worker reads from a parked connection; a next request longer than this
/// goes back to the connection thread with them.
const PARKED_READ_MAX: usize = 8 * 1024;

/// What became of the request in flight.
enum State {
    /// No request in flight (or its outcome was taken).
    Idle,
    /// Handed over at `since`, not answered yet.
    Pending { since: Instant },
    /// The worker wrote the whole answer, at this time.
    Written(Instant),
    /// Watched by the workers for the next request (`crate::ready`) since this time, the
    /// end of the last answer; the connection thread sleeps for the parking window, then
    /// takes the connection back.
    Parked(Instant),
    /// A worker read these bytes from the parked connection and they are not one plain
    /// request: the connection thread reads on from them.
    Back(Vec<u8>),
    /// The connection thread must finish this.
    Handed(Outcome),
    /// The connection thread is gone: nothing more may be written.
    Closed,
}

/// The slot's state, and how its connection is known to the workers' `epoll` set.
struct Inner {
    state: State,
    /// The parking window, when the request in flight was handed over with one: a worker
    /// that writes its answer whole parks the connection instead of waking its thread, which
    /// takes the connection back after the window. Without one, the thread is woken for
    /// every outcome.
    park: Option<Duration>,
    /// The connection's token in the workers' set, once it was first parked.
    token: Option<u64>,
}

/// What the connection thread gets back.
pub(crate) enum Outcome {
    /// The worker wrote the whole answer: read the next request.
    Written,
    /// An answer (or stream, or a dropped request) to write, and to what.
    Reply(Reply, Asked),
    /// The bytes of an answer the socket did not take whole.
    Rest(Vec<u8>),
    /// A worker read these first bytes of what the client sent next (maybe none, at the end
    /// of the stream): read on from them.
    Back(Vec<u8>),
    /// Writing the answer failed: the connection is broken.
    Failed,
    /// No answer came within the wait allowed.
    Unanswered,
    /// The connection was parked since this time (the end of the last answer), and the
    /// client sent nothing within the parking window: this thread reads its next request.
    TakenBack(Instant),
}

/// The answer slot of one connection, shared by its thread and the worker answering.
pub(crate) struct AnswerSlot {
    conn: Arc<Connection>,
    remote_addr: Option<SocketAddr>,
    ready: Arc<Ready>,
    wake: EventFd,
    inner: Mutex<Inner>,
}

impl AnswerSlot {
    pub(crate) fn new(
        conn: Arc<Connection>,
        remote_addr: Option<SocketAddr>,
        ready: Arc<Ready>,
    ) -> IoResult<AnswerSlot> {
        Ok(AnswerSlot {
            conn,
            remote_addr,
            ready,
            wake: EventFd::new()?,
            inner: Mutex::new(Inner {
                state: State::Idle,
                park: None,
                token: None,
            }),
        })
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request is handed over now; with `park`, the connection is parked for that long
    /// once its answer is written whole.
    pub(crate) fn begin(&self, park: Option<Duration>) {
        self.wake.clear();
        let mut inner = self.inner();
        inner.state = State::Pending {
            since: Instant::now(),
        };
        inner.park = park;
    }

    /// The connection thread is leaving: a worker answering later writes nothing, and the
    /// workers stop watching the connection.
    pub(crate) fn close(&self) {
        let mut inner = self.inner();
        inner.state = State::Closed;
        if let Some(token) = inner.token.take() {
            self.ready.forget(&self.conn, token);
        }
    }

    /// Parks the connection (the state is locked in `inner`); on failure the connection
    /// thread is told to read on itself.
    fn park(self: &Arc<Self>, inner: &mut Inner, since: Instant) {
        let Inner { state, token, .. } = inner;
        *state = match self.ready.park(self, &self.conn, token) {
            Ok(()) => State::Parked(since),
            Err(_) => State::Back(Vec::new()),
        };
    }

    /// The worker's answer to the request `asked`. With `direct`, a small answer whose body
    /// is in memory is written here, without blocking; anything else goes to the connection
    /// thread. An error means the connection is gone.
    pub(crate) fn answer(
        self: &Arc<Self>,
        response: ResponseBox,
        asked: Asked,
        direct: bool,
    ) -> IoResult<()> {
        let small = response.data_length().is_some_and(|n| n <= DIRECT_MAX);
        if !(direct && small) {
            return self.hand(Outcome::Reply(Reply::Answer(response), asked));
        }
        let mut bytes = Vec::with_capacity(response.data_length().unwrap_or(0) + 256);
        let rendered = response.raw_print(
            &mut bytes,
            asked.version,
            &asked.headers,
            asked.head_only,
            None,
        );
        let mut inner = self.inner();
        if !matches!(inner.state, State::Pending { .. }) {
            return Err(gone());
        }
        let outcome = match rendered.and_then(|()| send_now(&self.conn, &bytes)) {
            Ok(sent) if sent == bytes.len() => None,
            Ok(sent) => {
                bytes.drain(..sent);
                Some(Outcome::Rest(bytes))
            }
            Err(_) => Some(Outcome::Failed),
        };
        match outcome {
            // Held under the lock since the check above: the connection thread cannot have
            // left in between, so no byte goes to a connection it gave up.
            None if inner.park.is_some() => {
                self.park(&mut inner, Instant::now());
                let back = matches!(inner.state, State::Back(_));
                drop(inner);
                if back {
                    self.wake.signal();
                }
            }
            None => {
                inner.state = State::Written(Instant::now());
                drop(inner);
                self.wake.signal();
            }
            Some(outcome) => {
                inner.state = State::Handed(outcome);
                drop(inner);
                self.wake.signal();
            }
        }
        Ok(())
    }

    /// Hands `outcome` to the connection thread and wakes it.
    pub(crate) fn hand(&self, outcome: Outcome) -> IoResult<()> {
        let mut inner = self.inner();
        if !matches!(inner.state, State::Pending { .. }) {
            return Err(gone());
        }
        inner.state = State::Handed(outcome);
        drop(inner);
        self.wake.signal();
        Ok(())
    }

    /// A worker's turn with a parked connection the workers' set says is readable: reads
    /// what the client sent, without blocking; when that is one complete plain request head
    /// (`parse`), the request to answer. Anything else goes back to the connection thread.
    pub(crate) fn take_parked(
        self: &Arc<Self>,
        parse: impl FnOnce(&[u8], Arc<AnswerSlot>, Option<SocketAddr>) -> Option<Request>,
    ) -> Option<Request> {
        let parked_since = {
            let mut inner = self.inner();
            let State::Parked(since) = inner.state else {
                // Taken back by its thread (idle, closing) since the event: not ours.
                return None;
            };
            inner.state = State::Pending {
                since: Instant::now(),
            };
            since
        };
        // Not zeroed: `recv` writes what it returns, and only that is read.
        let mut buf = [MaybeUninit::<u8>::uninit(); PARKED_READ_MAX];
        let (bytes, ended) = recv_now(&self.conn, &mut buf);
        if bytes.is_empty() && !ended {
            // Nothing to read after all: watch again, and wake the connection thread, which
            // may have found the connection `Pending` at the end of its window and gone back
            // to sleep for another: it takes the connection back on time.
            let mut inner = self.inner();
            if matches!(inner.state, State::Pending { .. }) {
                self.park(&mut inner, parked_since);
                drop(inner);
                self.wake.signal();
            }
            return None;
        }
        if !ended {
            // A panic while parsing is the connection thread's to meet again, not the
            // worker's (which would die with the connection waiting on it).
            let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                parse(bytes, Arc::clone(self), self.remote_addr)
            }));
            if let Ok(Some(mut request)) = parsed {
                // Ready no earlier than parked, nor than the last time a worker found
                // nothing ready (`Ready::emptied_at`): waited at most since the later one.
                request.waiting_since(parked_since.max(self.ready.emptied_at()));
                return Some(request);
            }
        }
        let mut inner = self.inner();
        if matches!(inner.state, State::Pending { .. }) {
            inner.state = State::Back(bytes.to_vec());
            drop(inner);
            self.wake.signal();
        }
        None
    }

    /// Waits for what became of the request handed over. If it was handed over with a
    /// parking window (`begin`), an answer the worker wrote whole parks the connection
    /// (`crate::ready`): the wait then ends when a worker hands something back, or after the
    /// window of silence, when this thread takes the connection back (`Outcome::TakenBack`);
    /// without one, at once.
    pub(crate) fn wait(self: &Arc<Self>, answer_wait: Duration) -> Outcome {
        let park = self.inner().park;
        loop {
            let deadline = {
                let mut inner = self.inner();
                match &mut inner.state {
                    State::Pending { since } => {
                        // An answer the worker writes whole parks the connection without
                        // waking this thread: look again every `window`, so that the
                        // connection is taken back in time (from when it was written).
                        let answer_deadline = *since + answer_wait;
                        match park {
                            Some(window) => answer_deadline.min(Instant::now() + window),
                            None => answer_deadline,
                        }
                    }
                    State::Parked(at) => *at + park.unwrap_or_default(),
                    State::Written(_) => {
                        inner.state = State::Idle;
                        return Outcome::Written;
                    }
                    State::Back(_) | State::Handed(_) | State::Idle | State::Closed => {
                        return match std::mem::replace(&mut inner.state, State::Idle) {
                            State::Back(bytes) => Outcome::Back(bytes),
                            State::Handed(outcome) => outcome,
                            // No request in flight: nothing to wait for.
                            _ => Outcome::Failed,
                        };
                    }
                }
            };
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                let mut inner = self.inner();
                let now = Instant::now();
                match inner.state {
                    // Silent for the window: taken back from the workers (one that got its
                    // event meanwhile finds it no longer parked).
                    State::Parked(at) if now >= at + park.unwrap_or_default() => {
                        if let Some(token) = inner.token.take() {
                            self.ready.forget(&self.conn, token);
                        }
                        inner.state = State::Idle;
                        return Outcome::TakenBack(at);
                    }
                    State::Pending { since, .. } if now >= since + answer_wait => {
                        return Outcome::Unanswered;
                    }
                    // Moved on just now: look again.
                    _ => continue,
                }
            };
            match wait_readable(&self.wake, left) {
                Ok(true) => self.wake.clear(),
                Ok(false) => {}
                // `poll` failing on our own eventfd: give the connection up.
                Err(_) => return Outcome::Failed,
            }
        }
    }
}

fn gone() -> std::io::Error {
    std::io::Error::new(ErrorKind::BrokenPipe, "connection closed")
}

/// Writes what the socket takes now, without waiting; how many bytes that was.
fn send_now(conn: &Connection, bytes: &[u8]) -> IoResult<usize> {
    use rustix::net::{send, SendFlags};
    let mut sent = 0;
    while sent < bytes.len() {
        match send(
            conn,
            &bytes[sent..],
            SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
        ) {
            Ok(n) => sent += n,
            Err(rustix::io::Errno::AGAIN) => break,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(sent)
}

/// `poll(2)` on the eventfd for at most `limit`; whether it was signalled.
fn wait_readable(wake: &EventFd, limit: Duration) -> IoResult<bool> {
    use rustix::event::{poll, PollFd, PollFlags};
    let timeout = crate::ready::whole_ms(limit);
    let mut fds = [PollFd::new(&wake.fd, PollFlags::IN)];
    match poll(&mut fds, timeout.as_ref()) {
        Ok(_) => Ok(!fds[0].revents().is_empty()),
        Err(rustix::io::Errno::INTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Reads what the socket holds now into `buf`, without waiting: the bytes, and whether the
/// stream ended (or failed) there. One `recv`: it takes everything the socket holds up to
/// the buffer's size, and bytes that come later are the connection thread's to read. (A
/// `recv` that does not wait is not interrupted; if it were, the connection is parked again.)
fn recv_now<'b>(conn: &Connection, buf: &'b mut [MaybeUninit<u8>]) -> (&'b [u8], bool) {
    use rustix::net::{recv, RecvFlags};
    match recv(conn, buf, RecvFlags::DONTWAIT) {
        Ok(((bytes, _), _)) => {
            let ended = bytes.is_empty();
            (bytes, ended)
        }
        Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => (&[], false),
        Err(_) => (&[], true),
    }
}

/// A Linux eventfd: the worker's way to wake a connection thread waiting in `poll`.
struct EventFd {
    fd: std::os::fd::OwnedFd,
}

impl EventFd {
    fn new() -> IoResult<EventFd> {
        use rustix::event::{eventfd, EventfdFlags};
        Ok(EventFd {
            fd: eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?,
        })
    }

    fn signal(&self) {
        // Cannot fail short of 2^64 - 1 pending signals.
        let _ = rustix::io::write(&self.fd, &1u64.to_ne_bytes());
    }

    fn clear(&self) {
        let mut count = [0u8; 8];
        let _ = rustix::io::read(&self.fd, &mut count);
    }
}
