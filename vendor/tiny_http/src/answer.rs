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
//! The connection thread waits with `poll(2)` on the socket and an eventfd the worker
//! signals. It watches the socket only while no bytes of a later request are buffered: a
//! pipelined request is handed over only after the answer before it is out, so answers keep
//! their order.

use std::convert::TryFrom;
use std::io::{ErrorKind, Result as IoResult};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::common::{HTTPVersion, Header};
use crate::connection::Connection;
use crate::request::Reply;
use crate::ResponseBox;

/// The largest answer a worker writes itself. Larger ones are written by the connection
/// thread, so the worker never holds a copy of a large body.
const DIRECT_MAX: usize = 64 * 1024;

/// What became of the request in flight.
enum State {
    /// No request in flight (or its outcome was taken).
    Idle,
    /// Handed over, not answered yet. `woken`: the connection thread wants a wake-up for any
    /// outcome, even an answer written whole.
    Pending { woken: bool },
    /// The worker wrote the whole answer, at this time.
    Written(Instant),
    /// The connection thread must finish this.
    Handed(Outcome),
    /// The connection thread is gone: nothing more may be written.
    Closed,
}

/// What the connection thread gets back.
pub(crate) enum Outcome {
    /// The worker wrote the whole answer: read the next request.
    Written,
    /// An answer (or stream, or a dropped request) to write.
    Reply(Reply),
    /// The bytes of an answer the socket did not take whole.
    Rest(Vec<u8>),
    /// Writing the answer failed: the connection is broken.
    Failed,
    /// No answer came within the wait allowed.
    Unanswered,
    /// The answer was written and the client sent nothing more within its idle time.
    Idle,
}

/// The answer slot of one connection, shared by its thread and the worker answering.
pub(crate) struct AnswerSlot {
    conn: Arc<Connection>,
    wake: EventFd,
    state: Mutex<State>,
}

impl AnswerSlot {
    pub(crate) fn new(conn: Arc<Connection>) -> IoResult<AnswerSlot> {
        Ok(AnswerSlot {
            conn,
            wake: EventFd::new()?,
            state: Mutex::new(State::Idle),
        })
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request is handed over now.
    pub(crate) fn begin(&self) {
        self.wake.clear();
        *self.state() = State::Pending { woken: false };
    }

    /// The connection thread is leaving: a worker answering later writes nothing.
    pub(crate) fn close(&self) {
        *self.state() = State::Closed;
    }

    /// The worker's answer. With `direct`, a small answer whose body is in memory is written
    /// here, without blocking; anything else goes to the connection thread. An error means
    /// the connection is gone.
    pub(crate) fn answer(
        &self,
        response: ResponseBox,
        direct: Option<(&HTTPVersion, &[Header], bool)>,
    ) -> IoResult<()> {
        let small = response.data_length().is_some_and(|n| n <= DIRECT_MAX);
        let Some((version, request_headers, head_only)) = direct.filter(|_| small) else {
            return self.hand(Outcome::Reply(Reply::Answer(response)));
        };
        let mut bytes = Vec::with_capacity(response.data_length().unwrap_or(0) + 256);
        let rendered = response.raw_print(
            &mut bytes,
            version.clone(),
            request_headers,
            head_only,
            None,
        );
        let mut state = self.state();
        if !matches!(*state, State::Pending { .. }) {
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
        let woken = matches!(*state, State::Pending { woken: true });
        match outcome {
            None => {
                // Held under the lock since the check above: the connection thread cannot
                // have left in between, so no byte goes to a connection it gave up.
                *state = State::Written(Instant::now());
                drop(state);
                if woken {
                    self.wake.signal();
                }
            }
            Some(outcome) => {
                *state = State::Handed(outcome);
                drop(state);
                self.wake.signal();
            }
        }
        Ok(())
    }

    /// Hands `outcome` to the connection thread and wakes it.
    pub(crate) fn hand(&self, outcome: Outcome) -> IoResult<()> {
        let mut state = self.state();
        if !matches!(*state, State::Pending { .. }) {
            return Err(gone());
        }
        *state = State::Handed(outcome);
        drop(state);
        self.wake.signal();
        Ok(())
    }

    /// Waits for what became of the request handed over at `handed`. With `next_request`,
    /// an answer the worker wrote whole ends the wait only when the client sends more (or
    /// closes), or after `idle` of silence (`Outcome::Idle`); without it, at once.
    pub(crate) fn wait(
        &self,
        handed: Instant,
        answer_wait: Duration,
        mut next_request: bool,
        idle: Duration,
    ) -> Outcome {
        loop {
            let deadline = {
                let mut state = self.state();
                match &mut *state {
                    State::Pending { woken } => {
                        *woken = !next_request;
                        // An answer the worker writes whole does not wake this thread: when
                        // watching the socket, look again every `idle`, so that the idle
                        // time after such an answer is enforced (from when it was written).
                        let answer_deadline = handed + answer_wait;
                        if next_request {
                            answer_deadline.min(Instant::now() + idle)
                        } else {
                            answer_deadline
                        }
                    }
                    State::Written(at) if next_request => *at + idle,
                    State::Written(_) => {
                        *state = State::Idle;
                        return Outcome::Written;
                    }
                    State::Handed(_) | State::Idle | State::Closed => {
                        return match std::mem::replace(&mut *state, State::Idle) {
                            State::Handed(outcome) => outcome,
                            // No request in flight: nothing to wait for.
                            _ => Outcome::Failed,
                        };
                    }
                }
            };
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                let mut state = self.state();
                return match *state {
                    State::Written(_) => {
                        *state = State::Idle;
                        Outcome::Idle
                    }
                    State::Pending { .. } if Instant::now() >= handed + answer_wait => {
                        Outcome::Unanswered
                    }
                    // An outcome came just now: take it on the next turn.
                    _ => continue,
                };
            };
            let socket = next_request.then_some(&*self.conn);
            match wait_readable(&self.wake, socket, left) {
                Ok(Readable { socket: true, .. }) => {
                    let mut state = self.state();
                    match *state {
                        // The client sent its next request (or closed): read it.
                        State::Written(_) => {
                            *state = State::Idle;
                            return Outcome::Written;
                        }
                        // A pipelined request, or a client that left, before the answer:
                        // wait for the answer alone.
                        _ => next_request = false,
                    }
                }
                Ok(Readable { wake: true, .. }) => self.wake.clear(),
                Ok(_) => {}
                // `poll` failing on our own descriptors: stop watching the socket, and give
                // the connection up if even the eventfd cannot be waited on.
                Err(_) if next_request => next_request = false,
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

#[derive(Default)]
struct Readable {
    wake: bool,
    socket: bool,
}

/// `poll(2)` on the eventfd and, optionally, the socket, for at most `limit`.
fn wait_readable(wake: &EventFd, socket: Option<&Connection>, limit: Duration) -> IoResult<Readable> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    // Rounded up to a millisecond, so a wait never ends just before its deadline and spins.
    let limit = Duration::from_millis(limit.as_micros().div_ceil(1000).min(u64::MAX as u128) as u64);
    let timeout = Timespec::try_from(limit).ok();
    let mut fds = [PollFd::new(&wake.fd, PollFlags::IN)];
    let ready = match socket {
        Some(conn) => {
            let mut both = [PollFd::new(&wake.fd, PollFlags::IN), PollFd::new(conn, PollFlags::IN)];
            match poll(&mut both, timeout.as_ref()) {
                Ok(_) => Readable {
                    wake: !both[0].revents().is_empty(),
                    socket: !both[1].revents().is_empty(),
                },
                Err(rustix::io::Errno::INTR) => Readable::default(),
                Err(e) => return Err(e.into()),
            }
        }
        None => match poll(&mut fds, timeout.as_ref()) {
            Ok(_) => Readable {
                wake: !fds[0].revents().is_empty(),
                socket: false,
            },
            Err(rustix::io::Errno::INTR) => Readable::default(),
            Err(e) => return Err(e.into()),
        },
    };
    Ok(ready)
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
