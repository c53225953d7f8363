//! fabric-telemetry patch: one thread per connection reads request heads and sees their
//! answers written, one request at a time, under deadlines.
//!
//! Upstream read the next request while earlier ones were still being answered (pipelining
//! without a bound), let whoever answered a request write to the socket without a timeout,
//! and read bodies as they were declared. Here:
//! - a new connection must send a whole request head within `request_timeout`; a kept-alive
//!   one gets `idle_timeout` to start its next request and then `request_timeout` to finish
//!   its head, else 408 (when a head was begun) and close;
//! - the head is handed to the workers; a worker writes a small answer itself only if the
//!   socket takes it whole without blocking, and anything else comes back to this thread,
//!   which writes it within `request_timeout` (`crate::answer`);
//!   the next head is handed over only once the answer before it is out, so a connection
//!   holds one request and one answer;
//! - bodies are never read: a request that declares one is answered (by the workers, who see
//!   `declared_body`) and its connection closed, lingering at most `LINGER` to let the answer
//!   reach a client that is still sending;
//! - between requests a kept-alive connection is parked for the workers, who read a next
//!   request that comes whole themselves (`crate::ready`); this thread sleeps meanwhile, and
//!   takes the connection back when a worker hands bytes back or after `PARK_WINDOW_MAX`.

use ascii::AsciiString;

use std::io::Error as IoError;
use std::io::Result as IoResult;
use std::io::{BufRead, BufReader, BufWriter, ErrorKind, Read, Write};

use std::net::{Shutdown, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::answer::{AnswerSlot, Outcome};
use crate::common::{HTTPVersion, Method};
use crate::connection::Connection;
use crate::ready::Ready;
use crate::request::{new_request, Asked, DeclaredBody, Reply};
use crate::{
    ConnectionLimits, Counters, Header, Message, Request, Response, ResponseBox, StatusCode,
};

/// Error that can happen when reading a request.
#[derive(Debug)]
enum ReadError {
    WrongRequestLine,
    WrongHeader(HTTPVersion),
    /// The request line is longer than `MAX_REQUEST_LINE` (414).
    RequestLineTooLong,
    /// The headers exceed `MAX_HEADER_SECTION` (431).
    HeadersTooLarge(HTTPVersion),
    ReadIoError(IoError),
}

/// fabric-telemetry patch (upstream issue #56): the longest request line read, in bytes.
/// Upstream reads lines without limit, so a client streaming bytes without a newline grows
/// a buffer until memory runs out.
pub const MAX_REQUEST_LINE: usize = 16 * 1024;
/// fabric-telemetry patch: the most bytes of header lines (and at most 256 lines) read.
pub const MAX_HEADER_SECTION: usize = 32 * 1024;
const MAX_HEADER_LINES: usize = 256;
/// How long a connection closed with unread input keeps draining it, so that the client
/// reads our answer before the kernel resets the connection (nginx's lingering close).
const LINGER: Duration = Duration::from_secs(1);
/// The longest a connection waits for the workers' answer before giving up with 503.
/// Workers refuse requests that waited past `request_timeout` themselves (a server that is
/// behind sheds load); this is only the last resort.
const ANSWER_WAIT_MAX: Duration = Duration::from_secs(300);
/// The longest a kept-alive connection stays parked for the workers (`crate::ready`) before
/// its own thread takes it back and waits for the next request itself (also at most an
/// eighth of the request timeout and half the idle timeout). Why: a request read from a
/// parked connection is dated from when it was parked at the earliest (the kernel does not
/// say when it came), so the window bounds how much a shed decision can overstate its wait;
/// and a request that no worker reached within it (an overload) is then read and queued by
/// this thread like any other, never left unread when the idle time runs out.
const PARK_WINDOW_MAX: Duration = Duration::from_secs(1);

/// The most bytes drained while lingering.
const LINGER_BYTES: usize = 1 << 20;

/// The error `read_next_line` gives when a line passes its limit.
fn line_too_long() -> IoError {
    IoError::new(ErrorKind::InvalidData, "line too long")
}

fn is_line_too_long(err: &IoError) -> bool {
    err.kind() == ErrorKind::InvalidData && err.to_string() == "line too long"
}

fn timed_out() -> IoError {
    IoError::new(ErrorKind::TimedOut, "deadline passed")
}

/// A socket read or written until a deadline: every call gets the time that is left as its
/// socket timeout, so a client trickling one byte at a time still runs out of time.
struct Deadlined<'a> {
    conn: &'a Connection,
    /// Bytes a worker read from the socket first (`Outcome::Back`), read before it.
    first: std::io::Cursor<Vec<u8>>,
    deadline: Instant,
    /// When the socket timeout in force was set (`None`: not for this deadline). It is set
    /// again only after [`TIMEOUT_SLACK`], so a large answer written in many calls does not
    /// cost a `setsockopt` per call; the deadline may be overrun by at most that slack.
    timeout_set: Option<Instant>,
}

/// How stale the socket timeout may get before it is set again.
const TIMEOUT_SLACK: Duration = Duration::from_millis(50);

impl<'a> Deadlined<'a> {
    fn new(conn: &'a Connection, deadline: Instant) -> Deadlined<'a> {
        Deadlined {
            conn,
            first: std::io::Cursor::new(Vec::new()),
            deadline,
            timeout_set: None,
        }
    }

    /// `bytes` are read before anything more from the socket (after any such bytes not yet
    /// read).
    fn read_first(&mut self, bytes: Vec<u8>) {
        let at = self.first.position() as usize;
        let mut first = std::mem::take(self.first.get_mut());
        first.drain(..at.min(first.len()));
        first.extend_from_slice(&bytes);
        self.first = std::io::Cursor::new(first);
    }

    /// Bytes handed back by a worker are still to be read.
    fn has_first(&self) -> bool {
        (self.first.position() as usize) < self.first.get_ref().len()
    }

    fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = deadline;
        self.timeout_set = None;
    }

    /// The time left as a socket timeout, when it needs setting (again).
    fn timeout_to_set(&mut self) -> IoResult<Option<Duration>> {
        let now = Instant::now();
        let left = match self.deadline.checked_duration_since(now) {
            Some(left) if !left.is_zero() => left,
            _ => return Err(timed_out()),
        };
        match self.timeout_set {
            Some(at) if now.duration_since(at) < TIMEOUT_SLACK => Ok(None),
            _ => {
                self.timeout_set = Some(now);
                Ok(Some(left))
            }
        }
    }
}

/// Socket timeouts surface as `WouldBlock` on Unix.
fn as_timeout(err: IoError) -> IoError {
    if err.kind() == ErrorKind::WouldBlock {
        timed_out()
    } else {
        err
    }
}

impl Read for Deadlined<'_> {
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        if self.has_first() {
            return self.first.read(buf);
        }
        if let Some(left) = self.timeout_to_set()? {
            self.conn.set_read_timeout(Some(left))?;
        }
        let mut conn = self.conn;
        conn.read(buf).map_err(as_timeout)
    }
}

impl Write for Deadlined<'_> {
    fn write(&mut self, buf: &[u8]) -> IoResult<usize> {
        if let Some(left) = self.timeout_to_set()? {
            self.conn.set_write_timeout(Some(left))?;
        }
        let mut conn = self.conn;
        conn.write(buf).map_err(as_timeout)
    }

    fn flush(&mut self) -> IoResult<()> {
        Ok(())
    }
}

struct Head {
    method: Method,
    path: String,
    version: HTTPVersion,
    headers: Vec<Header>,
}

/// Reads the next line from `source`, at most `max_len` bytes.
///
/// Reads until `CRLF` is reached. The next read will start at the first byte of the new line.
fn read_next_line<R: BufRead>(source: &mut R, max_len: usize) -> IoResult<AsciiString> {
    let mut buf = Vec::with_capacity(max_len.min(256));
    let mut prev_byte_was_cr = false;

    loop {
        let byte = source.by_ref().bytes().next();

        let byte = match byte {
            Some(b) => b?,
            None => return Err(IoError::new(ErrorKind::ConnectionAborted, "Unexpected EOF")),
        };

        if byte == b'\n' && prev_byte_was_cr {
            buf.pop(); // removing the '\r'
            return AsciiString::from_ascii(buf)
                .map_err(|_| IoError::new(ErrorKind::InvalidInput, "Header is not in ASCII"));
        }

        prev_byte_was_cr = byte == b'\r';

        // Bounded (the CR of a CRLF may take the last slot).
        if buf.len() > max_len {
            return Err(line_too_long());
        }
        buf.push(byte);
    }
}

/// Reads a request head (request line and headers).
fn read_head<R: BufRead>(source: &mut R) -> Result<Head, ReadError> {
    let line = read_next_line(source, MAX_REQUEST_LINE).map_err(|e| {
        if is_line_too_long(&e) {
            ReadError::RequestLineTooLong
        } else {
            ReadError::ReadIoError(e)
        }
    })?;
    let (method, path, version) = parse_request_line(line.as_str().trim())?;

    let mut headers = Vec::new();
    let mut header_bytes = 0;
    loop {
        let left = MAX_HEADER_SECTION.saturating_sub(header_bytes);
        let line = read_next_line(source, left).map_err(|e| {
            if is_line_too_long(&e) {
                ReadError::HeadersTooLarge(version.clone())
            } else {
                ReadError::ReadIoError(e)
            }
        })?;
        if line.is_empty() {
            break;
        }
        header_bytes += line.len() + 2;
        if headers.len() >= MAX_HEADER_LINES {
            return Err(ReadError::HeadersTooLarge(version));
        }
        match Header::from_str(line.as_str().trim()) {
            Ok(h) => headers.push(h),
            Err(_) => return Err(ReadError::WrongHeader(version)),
        }
    }
    Ok(Head {
        method,
        path,
        version,
        headers,
    })
}

/// Whether the client asked for the connection to end after this request.
fn wants_close(head: &Head) -> bool {
    let connection = head
        .headers
        .iter()
        .find(|h| h.field.equiv("Connection"))
        .map(|h| h.value.as_str().to_ascii_lowercase());
    match connection {
        Some(ref v) if v.contains("close") || v.contains("upgrade") => true,
        Some(ref v) => !v.contains("keep-alive") && head.version == HTTPVersion(1, 0),
        None => head.version <= HTTPVersion(1, 0),
    }
}

/// Serves one connection until it ends: reads a head, hands it to the workers, writes their
/// answer, and so on. Every outcome is counted in `counters`.
pub(crate) fn serve_connection(
    conn: Connection,
    remote_addr: Option<SocketAddr>,
    accepted: Instant,
    limits: &ConnectionLimits,
    counters: &Counters,
    ready: &Arc<Ready>,
) {
    let conn = Arc::new(conn);
    let slot = match AnswerSlot::new(Arc::clone(&conn), remote_addr, Arc::clone(ready)) {
        Ok(slot) => Arc::new(slot),
        // No descriptor for the eventfd: the server is out of them; say so and close.
        Err(_) => {
            answer_error(&conn, limits, 503);
            return;
        }
    };
    /// However serving ends (a panic included): a worker still holding a request writes
    /// nothing more to this connection, and the workers stop watching it.
    struct Closing<'a>(&'a AnswerSlot);
    impl Drop for Closing<'_> {
        fn drop(&mut self) {
            self.0.close();
        }
    }
    let _closing = Closing(&slot);
    serve_requests(&slot, remote_addr, accepted, limits, counters, ready);
}

/// The request loop of [`serve_connection`].
fn serve_requests(
    slot: &Arc<AnswerSlot>,
    remote_addr: Option<SocketAddr>,
    accepted: Instant,
    limits: &ConnectionLimits,
    counters: &Counters,
    ready: &Ready,
) {
    let conn = slot.conn();
    let mut reader = BufReader::with_capacity(
        4096,
        Deadlined::new(conn, accepted + limits.request_timeout),
    );
    let mut first = true;
    let park_window = PARK_WINDOW_MAX
        .min(limits.request_timeout / 8)
        .min(limits.idle_timeout / 2);
    // When the connection's idle time began, if not now (it was parked since).
    let mut idle_from: Option<Instant> = None;
    loop {
        // Wait for the first byte of the next request: a new connection's head must be
        // complete within `request_timeout` of the accept; a kept-alive one may idle first.
        if !first {
            let idle_from = idle_from.take().unwrap_or_else(Instant::now);
            reader
                .get_mut()
                .set_deadline(idle_from + limits.idle_timeout);
        }
        match reader.fill_buf() {
            Ok([]) => break,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::TimedOut => {
                if first {
                    counters.head_timeouts.fetch_add(1, Relaxed);
                    answer_error(&conn, limits, 408);
                } else {
                    counters.idle_closed.fetch_add(1, Relaxed);
                }
                break;
            }
            Err(_) => break,
        }
        if !first {
            reader
                .get_mut()
                .set_deadline(Instant::now() + limits.request_timeout);
        }
        first = false;

        let head = match read_head(&mut reader) {
            Ok(head) => head,
            Err(ReadError::ReadIoError(e)) if e.kind() == ErrorKind::TimedOut => {
                counters.head_timeouts.fetch_add(1, Relaxed);
                answer_error(&conn, limits, 408);
                break;
            }
            Err(ReadError::ReadIoError(_)) => break,
            Err(ReadError::WrongRequestLine) | Err(ReadError::WrongHeader(_)) => {
                answer_error(&conn, limits, 400);
                linger(&conn);
                break;
            }
            Err(ReadError::RequestLineTooLong) => {
                answer_error(&conn, limits, 414);
                linger(&conn);
                break;
            }
            Err(ReadError::HeadersTooLarge(_)) => {
                answer_error(&conn, limits, 431);
                linger(&conn);
                break;
            }
        };

        if head.version > HTTPVersion(1, 1) {
            answer_error(&conn, limits, 505);
            break;
        }
        // Only `100-continue` is known, and no body is ever read, so it is never sent.
        let expectation = head
            .headers
            .iter()
            .find(|h| h.field.equiv("Expect"))
            .map(|h| h.value.as_str().to_string());
        if expectation.is_some_and(|v| !v.eq_ignore_ascii_case("100-continue")) {
            answer_error(&conn, limits, 417);
            linger(&conn);
            break;
        }
        let declared_body = DeclaredBody::of(&head.headers);
        // A declared body is never read, so nothing after it can be trusted as a request.
        let close = wants_close(&head) || declared_body != DeclaredBody::None;

        // Unless the connection closes after this answer, a worker may write it itself; the
        // connection is then parked for the workers to read its next request
        // (`crate::ready`), but only if no byte of a later request is here already, buffered
        // or handed back by a worker (those wait for this answer, and this thread reads them).
        let direct = !close;
        // (Not with a window under a millisecond, from a tiny request timeout: parking would
        // cost two `epoll_ctl` calls an answer and save nothing.)
        let park = (direct
            && reader.buffer().is_empty()
            && !reader.get_ref().has_first()
            && park_window >= Duration::from_millis(1))
        .then_some(park_window);
        slot.begin(park);
        ready.push(Message::NewRequest(new_request(
            head.method,
            head.path,
            head.version,
            head.headers,
            remote_addr,
            Arc::clone(slot),
            direct,
        )));
        // The workers always answer or drop the request (which answers 500); the bound only
        // keeps a wedged worker from holding this thread forever.
        let (mut response, asked): (ResponseBox, Asked) = match slot.wait(ANSWER_WAIT_MAX) {
            Outcome::Written => continue,
            Outcome::Back(bytes) => {
                reader.get_mut().read_first(bytes);
                continue;
            }
            Outcome::TakenBack(parked_at) => {
                idle_from = Some(parked_at);
                continue;
            }
            Outcome::Failed => break,
            Outcome::Rest(bytes) => {
                counters.writing.fetch_add(1, Relaxed);
                let mut writer = Deadlined::new(conn, Instant::now() + limits.request_timeout);
                let written = writer.write_all(&bytes);
                counters.writing.fetch_sub(1, Relaxed);
                match written {
                    Ok(()) => continue,
                    Err(e) => {
                        if e.kind() == ErrorKind::TimedOut {
                            counters.write_timeouts.fetch_add(1, Relaxed);
                        }
                        break;
                    }
                }
            }
            Outcome::Reply(Reply::Answer(response), asked) => {
                counters.writing.fetch_add(1, Relaxed);
                (response, asked)
            }
            Outcome::Reply(Reply::Stream(stream), asked) => {
                write_stream(conn, stream, &asked.version, asked.head_only, counters);
                break;
            }
            Outcome::Reply(Reply::Dropped, asked) => {
                counters.writing.fetch_add(1, Relaxed);
                (Response::empty(500).boxed(), asked)
            }
            Outcome::Unanswered => {
                counters.unanswered.fetch_add(1, Relaxed);
                answer_error(conn, limits, 503);
                linger(conn);
                break;
            }
        };
        if close {
            response.close_connection();
        }
        // Large enough that a big answer goes out in few system calls.
        let mut writer = BufWriter::with_capacity(
            64 * 1024,
            Deadlined::new(conn, Instant::now() + limits.request_timeout),
        );
        let written = response
            .raw_print(
                &mut writer,
                asked.version,
                &asked.headers,
                asked.head_only,
                None,
            )
            .and_then(|()| writer.flush());
        counters.writing.fetch_sub(1, Relaxed);
        match written {
            Ok(()) => {}
            Err(e) => {
                if e.kind() == ErrorKind::TimedOut {
                    counters.write_timeouts.fetch_add(1, Relaxed);
                }
                break;
            }
        }
        drop(writer);
        if close {
            if declared_body != DeclaredBody::None {
                linger(&conn);
            }
            break;
        }
    }
}

/// The request a worker answers from a parked connection (`crate::ready`), when `bytes` are
/// exactly one complete head of a plain HTTP/1.1 request that keeps the connection open: no
/// body, no expectation, no close. Anything else (`None`) goes back to the connection thread,
/// which answers errors, bodies and closes as for any request.
pub(crate) fn parked_request(
    bytes: &[u8],
    slot: Arc<AnswerSlot>,
    remote_addr: Option<SocketAddr>,
) -> Option<Request> {
    let head = plain_head(bytes)?;
    Some(new_request(
        head.method,
        head.path,
        head.version,
        head.headers,
        remote_addr,
        slot,
        true,
    ))
}

/// The head in `bytes` if they are exactly one complete head of a plain HTTP/1.1 request
/// (see [`parked_request`]).
fn plain_head(bytes: &[u8]) -> Option<Head> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    if end + 4 != bytes.len() {
        return None;
    }
    let head = read_head(&mut &bytes[..]).ok()?;
    let plain = head.version == HTTPVersion(1, 1)
        && !wants_close(&head)
        && DeclaredBody::of(&head.headers) == DeclaredBody::None
        && !head.headers.iter().any(|h| h.field.equiv("Expect"));
    plain.then_some(head)
}

/// fabric-telemetry patch: writes a [`crate::Stream`]: the head, then each piece as it comes,
/// flushed at once, each within the stream's `write_timeout`; the connection closes after.
fn write_stream(
    conn: &Connection,
    mut stream: crate::Stream,
    version: &HTTPVersion,
    head_only: bool,
    counters: &Counters,
) {
    counters.streams.fetch_add(1, Relaxed);
    let mut head = format!(
        "HTTP/{}.{} {} {}\r\n",
        version.0,
        version.1,
        stream.status_code.0,
        stream.status_code.default_reason_phrase()
    );
    for header in &stream.headers {
        head.push_str(&format!("{}: {}\r\n", header.field, header.value));
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut writer = Deadlined::new(conn, Instant::now() + stream.write_timeout);
    let mut written = writer
        .write_all(head.as_bytes())
        .and_then(|()| writer.flush());
    while written.is_ok() && !head_only {
        let Some(piece) = (stream.next)() else {
            break;
        };
        writer.set_deadline(Instant::now() + stream.write_timeout);
        written = writer.write_all(&piece).and_then(|()| writer.flush());
    }
    if let Err(e) = written {
        if e.kind() == ErrorKind::TimedOut {
            counters.write_timeouts.fetch_add(1, Relaxed);
        }
    }
    counters.streams.fetch_sub(1, Relaxed);
    let _ = conn.shutdown(Shutdown::Write);
}

/// Writes an empty error answer with `Connection: close`, giving it at most the request
/// timeout (it fits the socket buffer of any live connection).
fn answer_error(conn: &Connection, limits: &ConnectionLimits, status: u16) {
    let mut writer = Deadlined::new(conn, Instant::now() + limits.request_timeout);
    let mut response = Response::empty(status);
    if status == 503 {
        response.add_header(Header {
            field: "Retry-After".parse().expect("a valid header name"),
            value: AsciiString::from_ascii("1").expect("ascii"),
        });
    }
    response.close_connection();
    let _ = response.raw_print(&mut writer, HTTPVersion(1, 1), &[], false, None);
}

/// Closes our side for writing, then drains what the client still sends for at most
/// `LINGER` and `LINGER_BYTES`, so an answer to a request we did not read to its end is not
/// destroyed by a reset before the client reads it.
pub(crate) fn linger(conn: &Connection) {
    let _ = conn.shutdown(Shutdown::Write);
    let mut drain = Deadlined::new(conn, Instant::now() + LINGER);
    let mut buf = [0u8; 4096];
    let mut drained = 0;
    while drained < LINGER_BYTES {
        match drain.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

/// Parses a "HTTP/1.1" string.
fn parse_http_version(version: &str) -> Result<HTTPVersion, ReadError> {
    let (major, minor) = match version {
        "HTTP/0.9" => (0, 9),
        "HTTP/1.0" => (1, 0),
        "HTTP/1.1" => (1, 1),
        "HTTP/2.0" => (2, 0),
        "HTTP/3.0" => (3, 0),
        _ => return Err(ReadError::WrongRequestLine),
    };

    Ok(HTTPVersion(major, minor))
}

/// Parses the request line of the request.
/// eg. GET / HTTP/1.1
fn parse_request_line(line: &str) -> Result<(Method, String, HTTPVersion), ReadError> {
    let mut parts = line.split(' ');

    let method = parts.next().and_then(|w| w.parse().ok());
    let path = parts.next().map(ToOwned::to_owned);
    let version = parts.next().and_then(|w| parse_http_version(w).ok());

    method
        .and_then(|method| Some((method, path?, version?)))
        .ok_or(ReadError::WrongRequestLine)
}

#[cfg(test)]
mod test {
    #[test]
    fn only_one_whole_plain_head_is_answered_from_a_parked_connection() {
        let plain = |bytes: &[u8]| super::plain_head(bytes).map(|h| h.path);
        let get = b"GET /telemetry/get?switch_id=s1 HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(plain(get).as_deref(), Some("/telemetry/get?switch_id=s1"));
        assert!(plain(b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n").is_some());
        // A head not yet complete, or followed by more bytes (pipelined, a body).
        assert!(plain(&get[..get.len() - 2]).is_none());
        assert!(plain(b"GET / HTTP/1.1\r\n").is_none());
        let mut two = get.to_vec();
        two.extend_from_slice(get);
        assert!(plain(&two).is_none());
        assert!(plain(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nx").is_none());
        // What the connection thread must answer or close itself.
        for refused in [
            &b"GET / HTTP/1.0\r\nHost: x\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GARBAGE\r\n\r\n",
            b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
        ] {
            assert!(
                plain(refused).is_none(),
                "{:?}",
                String::from_utf8_lossy(refused)
            );
        }
    }

    #[test]
    fn test_parse_request_line() {
        let (method, path, ver) = super::parse_request_line("GET /hello HTTP/1.1").unwrap();

        assert!(method == crate::Method::Get);
        assert!(path == "/hello");
        assert!(ver == crate::common::HTTPVersion(1, 1));

        assert!(super::parse_request_line("GET /hello").is_err());
        assert!(super::parse_request_line("qsd qsd qsd").is_err());
    }
}
