//! `GET /telemetry/stream` against the real binary: events within a second of the poll,
//! filters, a stalled subscriber cut off without delaying a healthy one, the subscriber cap,
//! and streams ending cleanly at shutdown.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::util::{self, FakeFeed, FeedReply, Proc, HEADER};

/// An SSE client on a raw socket.
struct Subscriber {
    reader: BufReader<TcpStream>,
    pub status: u16,
    pub head: String,
}

/// One event: its `id`, `event` and `data` lines.
#[derive(Debug, Default)]
struct Event {
    id: Option<u64>,
    kind: String,
    data: String,
}

impl Subscriber {
    fn connect(server: &Proc, query: &str) -> Subscriber {
        Subscriber::connect_after(server, query, false)
    }

    /// With `kept_alive`, the connection first asks for `/healthz` and reads its answer, then
    /// stays silent long enough to be parked for the workers (`vendor/tiny_http/src/ready.rs`),
    /// so the stream is asked for on a kept-alive connection.
    fn connect_after(server: &Proc, query: &str, kept_alive: bool) -> Subscriber {
        let addr = server.url("").trim_start_matches("http://").to_string();
        let socket = TcpStream::connect(&addr).expect("connect");
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut reader = BufReader::new(socket);
        if kept_alive {
            write!(
                reader.get_mut(),
                "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n"
            )
            .expect("request");
            let head = read_head(&mut reader);
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            let length = util::content_length(&head).expect("content-length");
            let mut body = vec![0u8; length];
            reader.read_exact(&mut body).expect("body");
            std::thread::sleep(Duration::from_millis(100));
        }
        write!(
            reader.get_mut(),
            "GET /telemetry/stream{query} HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n"
        )
        .expect("request");
        let head = read_head(&mut reader);
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Subscriber {
            reader,
            status,
            head,
        }
    }

    /// The next event (comments skipped); `None` at the end of the stream.
    fn next_event(&mut self) -> Option<Event> {
        let mut event = Event::default();
        let mut seen = false;
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                if seen {
                    return Some(event);
                }
                continue;
            }
            if line.starts_with(':') || line.starts_with("retry:") {
                continue;
            }
            seen = true;
            if let Some(id) = line.strip_prefix("id: ") {
                event.id = id.parse().ok();
            } else if let Some(kind) = line.strip_prefix("event: ") {
                event.kind = kind.to_string();
            } else if let Some(data) = line.strip_prefix("data: ") {
                event.data.push_str(data);
            }
        }
    }

    fn next_samples(&mut self) -> (u64, serde_json::Value) {
        let event = self.next_event().expect("an event");
        assert_eq!(event.kind, "samples", "{event:?}");
        (
            event.id.expect("an id"),
            serde_json::from_str(&event.data).expect("JSON data"),
        )
    }
}

/// An answer's head, up to its empty line (not included).
fn read_head(reader: &mut BufReader<TcpStream>) -> String {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).expect("head") == 0 || line == "\r\n" {
            return head;
        }
        head.push_str(&line);
    }
}

/// A feed whose every answer has a new timestamp and `bandwidth` = the request number.
fn counting_feed(switches: usize) -> (FakeFeed, Arc<AtomicU64>) {
    let feed = FakeFeed::start();
    let served = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&served);
    feed.set(move |n| {
        count.store(n, Ordering::SeqCst);
        let ts = util::ts(0);
        let mut body = format!("{HEADER}\n");
        for s in 1..=switches {
            body.push_str(&format!("sw{s},{n},0.5,0,{ts}\n"));
        }
        FeedReply::Csv(body)
    });
    (feed, served)
}

#[test]
fn events_arrive_within_a_second_of_the_poll_and_filters_hold() {
    let (feed, served) = counting_feed(3);
    let server = util::server(&[&feed.url], &[]);
    let mut all = Subscriber::connect(&server, "");
    assert_eq!(all.status, 200, "{}", all.head);
    assert!(all.head.contains("text/event-stream"), "{}", all.head);
    assert!(all.head.contains("X-Accel-Buffering: no"), "{}", all.head);
    let mut sw2 = Subscriber::connect(&server, "?switch_id=sw2&metric=band*");
    let (first, data) = all.next_samples();
    assert_eq!(data["samples"].as_array().map(Vec::len), Some(9), "{data}");
    // The poll the event carries was answered by the feed just before: its value is the
    // request number, and it arrived within a second of that answer.
    let started = Instant::now();
    let before = served.load(Ordering::SeqCst);
    let (next, data) = all.next_samples();
    assert_eq!(next, first + 1, "consecutive ids");
    assert!(started.elapsed() < Duration::from_secs(1));
    let value = data["samples"][0]["value"].as_f64().expect("a value");
    assert!(value >= before as f64, "{value} < {before}");
    for _ in 0..3 {
        let (_, data) = sw2.next_samples();
        let samples = data["samples"].as_array().expect("samples");
        assert_eq!(samples.len(), 1, "{data}");
        assert_eq!(samples[0]["switch_id"], "sw2");
        assert_eq!(samples[0]["metric"], "bandwidth");
    }
    let bad = Subscriber::connect(&server, "?switch_id=");
    assert_eq!(bad.status, 400);
}

/// A stream asked for on a kept-alive connection, whose request a worker reads (the
/// connection was parked): the connection's thread writes it as for any other.
#[test]
fn a_stream_asked_for_on_a_kept_alive_connection_flows() {
    let (feed, _served) = counting_feed(2);
    let server = util::server(&[&feed.url], &[]);
    let mut kept = Subscriber::connect_after(&server, "", true);
    assert_eq!(kept.status, 200, "{}", kept.head);
    assert!(kept.head.contains("text/event-stream"), "{}", kept.head);
    let (first, data) = kept.next_samples();
    assert_eq!(data["samples"].as_array().map(Vec::len), Some(6), "{data}");
    let (next, _) = kept.next_samples();
    assert_eq!(next, first + 1, "consecutive ids");
}

#[test]
fn a_stalled_subscriber_is_cut_off_without_delaying_a_healthy_one() {
    let (feed, _) = counting_feed(3_000);
    let server = util::server(&[&feed.url], &[]);
    // Never reads: its socket fills, then its queue, then it is cut off.
    let stalled = Subscriber::connect(&server, "");
    assert_eq!(stalled.status, 200);
    let mut healthy = Subscriber::connect(&server, "?switch_id=sw1");
    let (mut last, _) = healthy.next_samples();
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    let dropped = loop {
        let before = Instant::now();
        let (id, data) = healthy.next_samples();
        worst = worst.max(before.elapsed());
        assert_eq!(id, last + 1, "the healthy subscriber lost an event");
        assert_eq!(data["samples"].as_array().map(Vec::len), Some(3));
        last = id;
        let stats = util::stats(&server);
        if stats["stream"]["dropped"].as_u64() >= Some(1) {
            break stats["stream"].clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the stalled subscriber was never cut off"
        );
    };
    assert_eq!(dropped["subscribers"], 1, "{dropped}");
    assert!(worst < Duration::from_secs(1), "an event took {worst:?}");
    // The stalled one, reading at last, finds the queued events and then `dropped`.
    let mut stalled = stalled;
    let mut kinds = Vec::new();
    while let Some(event) = stalled.next_event() {
        kinds.push(event.kind);
    }
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("dropped"),
        "{kinds:?}"
    );
}

#[test]
fn the_cap_answers_503_and_shutdown_ends_streams() {
    let (feed, _) = counting_feed(2);
    let mut server = util::server(&[&feed.url], &["--max-subscribers", "1"]);
    let mut first = Subscriber::connect(&server, "");
    first.next_samples();
    let second = Subscriber::connect(&server, "");
    assert_eq!(second.status, 503, "{}", second.head);
    assert!(second.head.contains("Retry-After: 1"), "{}", second.head);
    let stopped = Instant::now();
    util::signal(&server, libc::SIGTERM);
    while first.next_event().is_some() {}
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "the stream outlived the shutdown"
    );
    let status = util::wait_exit(&mut server);
    assert!(status.success(), "{status}");
    let mut rest = Vec::new();
    let _ = first.reader.read_to_end(&mut rest);
}
