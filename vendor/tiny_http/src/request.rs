use std::io::{self, Read};

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::answer::{AnswerSlot, Outcome};
use crate::{HTTPVersion, Header, Method, Response, ResponseBox};

/// Represents an HTTP request made by a client.
///
/// fabric-telemetry patch: a `Request` is only the request head. Its connection thread reads
/// it, hands it over, and waits for what becomes of it: `respond` writes a small answer
/// without blocking when the socket takes it whole, and passes anything else back to that
/// thread, which writes it under the connection's deadlines (`crate::answer`). Whoever
/// answers requests never waits on the socket, so a slow or stalled client costs only its
/// own connection thread.
/// Request bodies are never read: `declared_body` says what the head declared, and a
/// connection whose request declared one is closed after its answer.
///
/// If a `Request` is dropped without `respond`, its connection answers an empty 500 and is
/// closed.
pub struct Request {
    remote_addr: Option<SocketAddr>,
    method: Method,
    path: String,
    http_version: HTTPVersion,
    headers: Vec<Header>,
    declared_body: DeclaredBody,
    // Where the answer goes: the connection thread waits on the other end.
    reply: Option<Arc<AnswerSlot>>,
    // Whether `respond` may write a small answer itself (not when the connection closes
    // after it: the connection thread does that).
    direct: bool,
    empty: io::Empty,
    received: std::time::Instant,
}

/// fabric-telemetry patch: what a request's head says about a body that follows it. Nothing a
/// client declares is read or allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclaredBody {
    /// No body: neither header, or `Content-Length: 0`.
    None,
    /// A valid `Content-Length` above zero.
    Length(u64),
    /// Any `Transfer-Encoding` (chunked or otherwise), without `Content-Length`.
    Encoded,
    /// A `Content-Length` that is not a decimal number, overflows 64 bits, or is given twice
    /// with different values.
    Malformed,
    /// Both `Content-Length` and `Transfer-Encoding` (RFC 9112 §6.1: possible request
    /// smuggling; the connection must be closed after the answer).
    Conflicting,
}

impl DeclaredBody {
    /// Reads the body framing headers of a request head.
    pub(crate) fn of(headers: &[Header]) -> DeclaredBody {
        let encoded = headers.iter().any(|h| h.field.equiv("Transfer-Encoding"));
        let mut length: Option<Option<u64>> = None;
        for h in headers.iter().filter(|h| h.field.equiv("Content-Length")) {
            let value = h.value.as_str().trim();
            let parsed = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
                value.parse::<u64>().ok()
            } else {
                None
            };
            length = match (length, parsed) {
                (None, parsed) => Some(parsed),
                (Some(Some(a)), Some(b)) if a == b => Some(Some(a)),
                _ => Some(None),
            };
        }
        match (length, encoded) {
            (Some(_), true) => DeclaredBody::Conflicting,
            (None, true) => DeclaredBody::Encoded,
            (Some(None), false) => DeclaredBody::Malformed,
            (Some(Some(0)), false) | (None, false) => DeclaredBody::None,
            (Some(Some(n)), false) => DeclaredBody::Length(n),
        }
    }
}

/// fabric-telemetry patch: an answer written a piece at a time for as long as its source
/// gives pieces (Server-Sent Events), by the connection's own thread: the workers hand it
/// over and are free at once. The head is `status` and `headers` (no length: the body ends
/// when the connection closes, which it does after the stream). Each piece is flushed as soon
/// as it is written and must be taken by the client within `write_timeout`, else the
/// connection is closed.
pub struct Stream {
    pub status_code: crate::StatusCode,
    pub headers: Vec<Header>,
    /// The next piece, waiting as long as it likes; `None` ends the stream.
    pub next: Box<dyn FnMut() -> Option<Vec<u8>> + Send>,
    pub write_timeout: std::time::Duration,
}

/// fabric-telemetry patch: what the connection thread needs of the request to write an
/// answer handed to it. Carried with the answer, because the request may be one a worker
/// read from a parked connection (`crate::ready`), not the last one this thread read.
pub(crate) struct Asked {
    pub(crate) version: HTTPVersion,
    pub(crate) headers: Vec<Header>,
    /// A HEAD request: the answer's head only.
    pub(crate) head_only: bool,
}

/// What a connection thread gets back for a request it handed over.
pub(crate) enum Reply {
    Answer(ResponseBox),
    Stream(Stream),
    /// The request was dropped unanswered (a panic, or code that forgot): an empty 500.
    Dropped,
}

pub(crate) fn new_request(
    method: Method,
    path: String,
    version: HTTPVersion,
    headers: Vec<Header>,
    remote_addr: Option<SocketAddr>,
    reply: Arc<AnswerSlot>,
    direct: bool,
) -> Request {
    let declared_body = DeclaredBody::of(&headers);
    Request {
        remote_addr,
        method,
        path,
        http_version: version,
        headers,
        declared_body,
        reply: Some(reply),
        direct,
        empty: io::empty(),
        received: std::time::Instant::now(),
    }
}

impl Request {
    /// Always false: this copy serves plain HTTP (TLS is terminated in front of it).
    #[inline]
    pub fn secure(&self) -> bool {
        false
    }

    /// Returns the method requested by the client (eg. `GET`, `POST`, etc.).
    #[inline]
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// Returns the resource requested by the client.
    #[inline]
    pub fn url(&self) -> &str {
        &self.path
    }

    /// Returns a list of all headers sent by the client.
    #[inline]
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// Returns the HTTP version of the request.
    #[inline]
    pub fn http_version(&self) -> &HTTPVersion {
        &self.http_version
    }

    /// When the whole head had been read: how long a request waited for a worker tells a
    /// server that is behind (it may refuse requests that waited too long).
    #[inline]
    pub fn received_at(&self) -> std::time::Instant {
        self.received
    }

    /// fabric-telemetry patch: the request may have waited for a worker since `at` (one read
    /// from a parked connection: `crate::ready`).
    pub(crate) fn waiting_since(&mut self, at: std::time::Instant) {
        self.received = self.received.min(at);
    }

    /// What the head declared about a body (never read).
    #[inline]
    pub fn declared_body(&self) -> DeclaredBody {
        self.declared_body
    }

    /// The declared `Content-Length`, when valid and above zero.
    #[inline]
    pub fn body_length(&self) -> Option<usize> {
        match self.declared_body {
            DeclaredBody::Length(n) => std::convert::TryFrom::try_from(n).ok(),
            _ => None,
        }
    }

    /// Returns the address of the client that sent this request (None for Unix sockets).
    #[inline]
    pub fn remote_addr(&self) -> Option<&SocketAddr> {
        self.remote_addr.as_ref()
    }

    /// The body is never read: always empty.
    #[inline]
    pub fn as_reader(&mut self) -> &mut dyn Read {
        &mut self.empty
    }

    /// fabric-telemetry patch: hands a [`Stream`] to the connection thread, which writes it
    /// piece by piece and then closes the connection; never blocks.
    pub fn respond_stream(mut self, stream: Stream) -> Result<(), io::Error> {
        match self.reply.take() {
            Some(reply) => reply.hand(Outcome::Reply(Reply::Stream(stream), self.asked())),
            None => Ok(()),
        }
    }

    /// What the connection thread needs of this request to write its answer (the headers are
    /// taken: the request is being answered).
    fn asked(&mut self) -> Asked {
        Asked {
            version: self.http_version.clone(),
            headers: std::mem::take(&mut self.headers),
            head_only: self.method == Method::Head,
        }
    }

    /// Writes a small answer now if the socket takes it whole, else hands it to the
    /// connection thread, which writes it; never blocks. An error means the connection is
    /// already gone.
    pub fn respond<R>(mut self, response: Response<R>) -> Result<(), io::Error>
    where
        R: Read + Send + 'static,
    {
        match self.reply.take() {
            Some(reply) => {
                let direct = self.direct;
                reply.answer(response.boxed(), self.asked(), direct)
            }
            None => Ok(()),
        }
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> Result<(), fmt::Error> {
        write!(
            formatter,
            "Request({} {} from {:?})",
            self.method, self.path, self.remote_addr
        )
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if let Some(reply) = self.reply.take() {
            // The connection may be gone already; nothing else to tell.
            let asked = self.asked();
            let _ = reply.hand(Outcome::Reply(Reply::Dropped, asked));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Request;

    use super::DeclaredBody;
    use crate::Header;

    fn declared(headers: &[&str]) -> DeclaredBody {
        let headers: Vec<Header> = headers.iter().map(|h| h.parse().unwrap()).collect();
        DeclaredBody::of(&headers)
    }

    #[test]
    fn declared_bodies() {
        assert_eq!(declared(&[]), DeclaredBody::None);
        assert_eq!(declared(&["Content-Length: 0"]), DeclaredBody::None);
        assert_eq!(
            declared(&["Content-Length: 5000"]),
            DeclaredBody::Length(5000)
        );
        assert_eq!(
            declared(&["content-length: 7", "Content-Length: 7"]),
            DeclaredBody::Length(7)
        );
        assert_eq!(
            declared(&["Content-Length: 7", "Content-Length: 8"]),
            DeclaredBody::Malformed
        );
        assert_eq!(
            declared(&["Content-Length: 18446744073709551615"]),
            DeclaredBody::Length(u64::MAX)
        );
        assert_eq!(
            declared(&["Content-Length: 18446744073709551616"]),
            DeclaredBody::Malformed
        );
        assert_eq!(declared(&["Content-Length: -1"]), DeclaredBody::Malformed);
        assert_eq!(declared(&["Content-Length: +5"]), DeclaredBody::Malformed);
        assert_eq!(declared(&["Content-Length: 1 2"]), DeclaredBody::Malformed);
        assert_eq!(
            declared(&["Transfer-Encoding: chunked"]),
            DeclaredBody::Encoded
        );
        assert_eq!(
            declared(&["Content-Length: 3", "Transfer-Encoding: chunked"]),
            DeclaredBody::Conflicting
        );
    }

    #[test]
    fn must_be_send() {
        #![allow(dead_code)]
        fn f<T: Send>(_: &T) {}
        fn bar(rq: &Request) {
            f(rq);
        }
    }
}
