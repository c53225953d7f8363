//! Hostile clients, one test per attack, against the real binaries: whatever a client
//! declares, however slowly it sends or reads, the process stays up, an ordinary client is
//! answered within a second during and after the attack, threads return to their baseline
//! and memory stays bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::util::{self, FakeFeed, Proc};

/// A server polling a fake feed of `switches` switches every 100 ms, with `extra` flags.
fn server_with_feed(switches: usize, extra: &[&str]) -> (FakeFeed, Proc) {
    let feed = FakeFeed::start();
    let rows: Vec<String> = (1..=switches)
        .map(|i| format!("switch{i},50,0.5,0,{{ts}}"))
        .collect();
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    feed.serve_fresh(&rows);
    let server = util::server(&[&feed.url], extra);
    util::wait_for_status(
        &server.url("/telemetry/get?switch_id=switch1&metric=bandwidth"),
        200,
    );
    (feed, server)
}

/// An ordinary client on a fresh connection is answered 200 within a second.
fn assert_answered_within_a_second(proc: &Proc, path: &str) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .new_agent();
    let started = Instant::now();
    let answer = util::get_with(&agent, &proc.url(path));
    let took = started.elapsed();
    assert_eq!(answer.status, 200, "{path}: {}", answer.body);
    assert!(took < Duration::from_secs(1), "{path} took {took:?}");
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
}

/// Everything the server sends until it closes (or `limit` passes: then what came so far,
/// and `false`).
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (String::from_utf8_lossy(&got).into_owned(), false);
        }
        stream.set_read_timeout(Some(left)).expect("timeout");
        match stream.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (String::from_utf8_lossy(&got).into_owned(), true)
            }
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

/// Waits until the process has at most `baseline` threads again.
fn wait_threads_back(proc: &Proc, baseline: u64) {
    util::wait_for(
        &format!("threads back to {baseline}"),
        Duration::from_secs(20),
        || (util::threads_of(proc.pid()) <= baseline).then_some(()),
    );
}

/// The thread count once connection threads from start-up have gone idle and exited.
fn settled_threads(proc: &Proc) -> u64 {
    // tiny_http keeps 4 connection threads and retires others after 5 s idle.
    std::thread::sleep(Duration::from_millis(300));
    util::threads_of(proc.pid())
}

fn status_line(answer: &str) -> &str {
    answer.lines().next().unwrap_or("")
}

/// Was: four such requests made every worker panic ("capacity overflow") outside any
/// catch_unwind and the server deaf for good; 10^12 aborted the process.
fn huge_content_lengths(proc: &mut Proc, path: &str) {
    let baseline = settled_threads(proc);
    let cases = [
        ("18446744073709551615", "413"),
        ("1000000000000", "413"),
        ("18446744073709551616", "400"),
        ("-1", "400"),
        ("12, 13", "400"),
    ];
    for _ in 0..3 {
        for (length, status) in cases {
            let mut stream = connect(proc.addr);
            write!(
                stream,
                "GET {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n"
            )
            .expect("send");
            let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(5));
            assert!(
                status_line(&answer).starts_with(&format!("HTTP/1.1 {status}")),
                "Content-Length {length}: {answer:?}"
            );
            assert!(closed, "the connection stays open after a declared body");
        }
    }
    assert!(proc.try_wait().is_none(), "the process died");
    assert_answered_within_a_second(proc, path);
    wait_threads_back(proc, baseline);
}

#[test]
fn huge_content_lengths_are_refused_unread_by_the_server() {
    let (_feed, mut server) = server_with_feed(3, &["--workers", "4"]);
    huge_content_lengths(&mut server, "/healthz");
    let stats = util::stats(&server);
    assert_eq!(stats["http"]["panics"], 0, "{}", stats["http"]);
}

#[test]
fn huge_content_lengths_are_refused_unread_by_the_generator() {
    let mut generator = util::generator(&["--workers", "2", "--switches", "3"]);
    huge_content_lengths(&mut generator, "/counters");
}

/// Was: every worker blocked reading a body that never came, with no timeout.
fn bodies_that_never_come(proc: &Proc, path: &str) {
    let baseline = settled_threads(proc);
    let mut held: Vec<TcpStream> = (0..12)
        .map(|_| {
            let mut stream = connect(proc.addr);
            write!(
                stream,
                "GET {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\nabc"
            )
            .expect("send");
            stream
        })
        .collect();
    // Answered at once, without the rest of the body.
    for stream in &mut held {
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).expect("an answer");
        assert_eq!(&head, b"HTTP/1.1 413");
    }
    for _ in 0..3 {
        assert_answered_within_a_second(proc, path);
    }
    // Closed after a short lingering, though the client keeps its side open.
    for stream in &mut held {
        let (_, closed) = read_until_closed(stream, Duration::from_secs(5));
        assert!(closed, "a connection with an unread body stayed open");
    }
    drop(held);
    wait_threads_back(proc, baseline);
}

#[test]
fn a_body_that_never_comes_holds_no_server_worker() {
    let (_feed, server) = server_with_feed(3, &["--workers", "2"]);
    bodies_that_never_come(&server, "/telemetry/stats");
}

#[test]
fn a_body_that_never_comes_holds_no_generator_worker() {
    let generator = util::generator(&["--workers", "2", "--switches", "3"]);
    bodies_that_never_come(&generator, "/counters");
}

/// Was: clients pipelining requests and never reading the answers blocked every worker on a
/// write with no timeout.
fn answers_never_read(proc: &Proc, path: &str) {
    let baseline = settled_threads(proc);
    let rss_before = util::rss_kib_of(proc.pid());
    let started = Instant::now();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    let held: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut stream = connect(proc.addr);
            // Far more answer bytes than socket buffers hold; nothing is ever read.
            for _ in 0..200 {
                if stream.write_all(request.as_bytes()).is_err() {
                    break;
                }
            }
            stream
        })
        .collect();
    for _ in 0..5 {
        assert_answered_within_a_second(proc, path);
    }
    let rss_during = util::rss_kib_of(proc.pid());
    // --request-timeout 2s: the writes give up and the connection threads end while the
    // clients still hold their sockets (our unread buffers keep the server's FIN queued, so
    // the client side cannot tell; the server's threads can).
    wait_threads_back(proc, baseline);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "threads ended before the request timeout: were the writes ever blocked?"
    );
    drop(held);
    assert_answered_within_a_second(proc, path);
    assert!(
        rss_during < rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_during} KiB"
    );
}

/// The server gave up writing to at least one client.
fn assert_some_write_timed_out(server: &Proc) {
    let stats = util::stats(server);
    assert!(
        stats["http"]["write_timeouts"].as_u64().unwrap_or(0) >= 1,
        "{}",
        stats["http"]
    );
}

#[test]
fn clients_that_never_read_their_answers_hold_no_server_worker() {
    // ~150 KiB per /list answer.
    let (_feed, server) = server_with_feed(3000, &["--workers", "2", "--request-timeout", "2s"]);
    answers_never_read(&server, "/telemetry/list?metric=bandwidth");
    assert_some_write_timed_out(&server);
}

#[test]
fn clients_that_never_read_small_answers_hold_no_server_worker() {
    // ~50 KiB per /list answer: small enough for a worker to try writing it itself, which
    // must stop at a full socket and leave the rest to the connection thread.
    let (_feed, server) = server_with_feed(600, &["--workers", "2", "--request-timeout", "2s"]);
    let size = util::get(&server.url("/telemetry/list?metric=bandwidth"))
        .body
        .len();
    assert!((20_000..64 * 1024).contains(&size), "{size} bytes");
    answers_never_read(&server, "/telemetry/list?metric=bandwidth");
    assert_some_write_timed_out(&server);
}

/// Requests sent back to back on one connection (pipelined) are answered in their order,
/// whether a worker or the connection thread writes each answer.
#[test]
fn pipelined_requests_are_answered_in_order() {
    let (_feed, server) = server_with_feed(400, &["--workers", "4"]);
    let mut stream = connect(server.addr);
    let mut requests = String::new();
    let wanted: Vec<usize> = (0..60).map(|i| (i * 37) % 400 + 1).collect();
    for (i, n) in wanted.iter().enumerate() {
        // Every fifth one a large answer (the connection thread writes those).
        if i % 5 == 4 {
            requests.push_str("GET /telemetry/list?metric=bandwidth HTTP/1.1\r\nHost: x\r\n\r\n");
        } else {
            requests.push_str(&format!(
                "GET /telemetry/get?switch_id=switch{n}&metric=bandwidth HTTP/1.1\r\nHost: x\r\n\r\n"
            ));
        }
    }
    requests.push_str("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(requests.as_bytes()).expect("send");
    let (answers, closed) = read_until_closed(&mut stream, Duration::from_secs(10));
    assert!(closed);
    let mut at = 0;
    for (i, n) in wanted.iter().enumerate() {
        let start = answers[at..].find("HTTP/1.1 200").map(|p| at + p);
        let start = start.unwrap_or_else(|| panic!("answer {i} missing"));
        let body_at = start + answers[start..].find("\r\n\r\n").expect("head end") + 4;
        let length = util::content_length(&answers[start..body_at]).expect("content-length");
        let body = &answers[body_at..body_at + length];
        if i % 5 == 4 {
            assert!(body.contains("\"switch400\""), "answer {i}: {body:.80}");
        } else {
            assert!(
                body.contains(&format!("\"switch{n}\"")),
                "answer {i} is not switch{n}'s: {body}"
            );
        }
        at = body_at + length;
    }
    assert!(
        answers[at..].starts_with("HTTP/1.1 200"),
        "{:?}",
        &answers[at..]
    );
}

#[test]
fn clients_that_never_read_their_answers_hold_no_generator_worker() {
    let generator = util::generator(&[
        "--workers",
        "2",
        "--switches",
        "3000",
        "--request-timeout",
        "2s",
    ]);
    answers_never_read(&generator, "/counters");
}

/// Was: the supervisor probed 127.0.0.1 whatever the listen address, failed, and rebuilt the
/// accept loop every 2 s, forever (threads 18 → 48 in 12 s).
#[test]
fn a_specific_listen_address_keeps_its_threads() {
    let feed = FakeFeed::start();
    feed.serve_fresh(&["switch1,50,0.5,0,{ts}"]);
    let server = Proc::start(
        util::server_bin(),
        &[
            "--listen",
            "127.0.0.2:0",
            "--poll-interval",
            "100ms",
            "--source",
            &feed.url,
        ],
    );
    assert_eq!(server.addr.ip().to_string(), "127.0.0.2");
    util::wait_for_status(&server.url("/telemetry/stats"), 200);
    let first = settled_threads(&server);
    std::thread::sleep(Duration::from_secs(6));
    let later = util::threads_of(server.pid());
    assert!(later <= first, "threads {first} → {later} while idle");
    assert_answered_within_a_second(&server, "/telemetry/stats");
}

/// RFC 9112 §6.1: a request with both framing headers must be refused or, at least, its
/// connection closed after the answer. Was: answered, kept open, and the "body" parsed as a
/// second request.
#[test]
fn content_length_with_transfer_encoding_is_refused_and_the_connection_closed() {
    let (_feed, server) = server_with_feed(1, &[]);
    let generator = util::generator(&["--switches", "1"]);
    for (proc, path) in [(&server, "/telemetry/stats"), (&generator, "/counters")] {
        let mut stream = connect(proc.addr);
        let smuggled = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}",
            5 + smuggled.len()
        )
        .expect("send");
        let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(5));
        assert!(
            status_line(&answer).starts_with("HTTP/1.1 400"),
            "{answer:?}"
        );
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer:?}"
        );
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer:?}");
        assert!(closed, "the connection stayed open");
    }
}

/// Was: a flood without a token was answered 401 forever, never 429.
#[test]
fn the_rate_limit_applies_before_authentication() {
    let dir = std::env::temp_dir().join(format!("hostile-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "a-long-enough-secret-token-for-tests\n").expect("tokens");
    let server = util::server(
        &[],
        &[
            "--auth-token-file",
            tokens.to_str().expect("utf-8"),
            "--rate-limit",
            "5/s",
            "--burst",
            "5",
        ],
    );
    let agent = util::client();
    let statuses: Vec<u16> = (0..40)
        .map(|_| util::get_with(&agent, &server.url("/telemetry/stats")).status)
        .collect();
    assert!(statuses.contains(&401), "{statuses:?}");
    assert!(
        statuses.contains(&429),
        "never 429 without a token: {statuses:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A head trickled byte by byte, or never sent, gets 408 and a close after
/// `--request-timeout`; ordinary clients are answered meanwhile.
#[test]
fn slow_and_missing_request_heads_time_out() {
    let (_feed, server) = server_with_feed(1, &["--request-timeout", "1s"]);
    let baseline = settled_threads(&server);
    let silent = connect(server.addr);
    let mut slow = connect(server.addr);
    slow.write_all(b"GET /telemetry/stats HTTP/1.1\r\n")
        .expect("send");
    let started = Instant::now();
    let trickle = std::thread::spawn(move || {
        // One header byte every 200 ms: each read is quick, the head never completes.
        for byte in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
            if slow.write_all(&[*byte]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let (answer, closed) = read_until_closed(&mut slow, Duration::from_secs(5));
        (answer, closed)
    });
    assert_answered_within_a_second(&server, "/telemetry/stats");
    let (answer, closed) = trickle.join().expect("trickle");
    assert!(
        status_line(&answer).starts_with("HTTP/1.1 408"),
        "{answer:?}"
    );
    assert!(closed);
    assert!(started.elapsed() < Duration::from_secs(9));
    let mut silent = silent;
    let (answer, closed) = read_until_closed(&mut silent, Duration::from_secs(5));
    assert!(
        status_line(&answer).starts_with("HTTP/1.1 408"),
        "{answer:?}"
    );
    assert!(closed);
    let stats = util::stats(&server);
    assert!(stats["http"]["head_timeouts"].as_u64().unwrap_or(0) >= 2);
    wait_threads_back(&server, baseline);
}

#[test]
fn idle_keep_alive_connections_are_closed() {
    let (_feed, server) = server_with_feed(1, &["--idle-timeout", "1s"]);
    let mut stream = connect(server.addr);
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let started = Instant::now();
    let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(5));
    assert!(
        status_line(&answer).starts_with("HTTP/1.1 200"),
        "{answer:?}"
    );
    assert!(closed, "an idle kept-alive connection stayed open");
    let idle = started.elapsed();
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(3),
        "closed after {idle:?}"
    );
    assert_eq!(
        util::stats(&server)["http"]["idle_closed"].as_u64(),
        Some(1)
    );
}

#[test]
fn connections_beyond_the_limit_are_refused_with_retry_after() {
    let (_feed, server) = server_with_feed(1, &["--max-connections", "8"]);
    // 10 connections at once, against a limit of 8: the ones beyond it are answered 503 at
    // once, without sending anything. (A start-up client's connection may still hold a slot,
    // so 2 or 3 are refused.)
    let mut held: Vec<TcpStream> = (0..10).map(|_| connect(server.addr)).collect();
    let mut refused = 0;
    for stream in &mut held {
        // Refused ones are answered at accept; the rest must not reach --request-timeout here.
        let (answer, closed) = read_until_closed(stream, Duration::from_millis(300));
        if answer.is_empty() {
            continue; // holds a slot: nothing is sent before a request
        }
        assert!(
            status_line(&answer).starts_with("HTTP/1.1 503"),
            "{answer:?}"
        );
        assert!(answer.contains("Retry-After: 1"), "{answer:?}");
        assert!(answer.contains("too many connections"), "{answer:?}");
        assert!(closed, "a refused connection stayed open");
        refused += 1;
    }
    assert!(
        (2..=3).contains(&refused),
        "{refused} of 10 refused at a limit of 8"
    );
    drop(held);
    util::wait_for("a slot to free", Duration::from_secs(5), || {
        (util::get(&server.url("/telemetry/stats")).status == 200).then_some(())
    });
    assert_answered_within_a_second(&server, "/telemetry/stats");
    let stats = util::stats(&server);
    assert!(stats["http"]["connections_refused"].as_u64().unwrap_or(0) >= 2);
}

/// A generator whose only worker takes 2 s for every answer, with a 1 s request timeout.
fn slow_generator_with_one_worker() -> Proc {
    util::generator(&[
        "--switches",
        "1",
        "--workers",
        "1",
        "--request-timeout",
        "1s",
        "--fault-rate",
        "1",
        "--fault-modes",
        "slow",
        "--fault-delay",
        "2s",
    ])
}

const CLOSING_GET: &[u8] = b"GET /counters HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

/// Sends the slow generator a request its only worker takes 2 s to answer, and gives the
/// worker 200 ms to take it: requests after it wait.
fn hold_the_only_worker(addr: SocketAddr) -> TcpStream {
    let mut holder = connect(addr);
    holder.write_all(CLOSING_GET).expect("send");
    std::thread::sleep(Duration::from_millis(200));
    holder
}

/// The request that held the worker is answered in full, late but not shed.
fn holder_answered_in_full(holder: &mut TcpStream) {
    let (answer, _) = read_until_closed(holder, Duration::from_secs(8));
    assert!(
        status_line(&answer).starts_with("HTTP/1.1 200"),
        "{answer:?}"
    );
}

/// A server that is behind sheds: a request that waited `--request-timeout` for a worker is
/// answered 503 with `Retry-After` instead of late (the generator's `slow` fault holds its
/// only worker for 2 s).
#[test]
fn requests_that_waited_too_long_for_a_worker_are_shed() {
    let generator = slow_generator_with_one_worker();
    let mut holder = hold_the_only_worker(generator.addr);
    let mut second = connect(generator.addr);
    second.write_all(CLOSING_GET).expect("send");
    let (answer, _) = read_until_closed(&mut second, Duration::from_secs(8));
    assert!(
        status_line(&answer).starts_with("HTTP/1.1 503"),
        "{answer:?}"
    );
    assert!(answer.contains("Retry-After: 1"), "{answer:?}");
    assert!(answer.contains("waited"), "{answer:?}");
    holder_answered_in_full(&mut holder);
}

/// The same for a request on a kept-alive connection: it waits in the kernel, not in the
/// queue, while the workers are busy, and is shed all the same.
#[test]
fn kept_alive_requests_that_waited_too_long_for_a_worker_are_shed() {
    let generator = slow_generator_with_one_worker();
    let request = b"GET /counters HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut kept = connect(generator.addr);
    kept.write_all(request).expect("send");
    let (status, _) = read_one_answer(&mut kept);
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    std::thread::sleep(Duration::from_millis(100));
    let mut holder = hold_the_only_worker(generator.addr);
    kept.write_all(request).expect("send");
    let (status, body) = read_one_answer(&mut kept);
    assert!(status.starts_with("HTTP/1.1 503"), "{status}: {body}");
    assert!(body.contains("waited"), "{body}");
    holder_answered_in_full(&mut holder);
}

/// Requests read by a worker from a parked connection whose answers go back to the
/// connection thread (large ones) are written as their own request asks, not as the last
/// request that thread read: a HEAD's answer has no body, a GET's has all of it. And more
/// pipelined bytes than either side reads at once are all answered, in order.
#[test]
fn parked_requests_are_answered_as_they_ask_and_in_order() {
    // 2,000 switches: a /list answer (~150 kB) is too large for a worker to write itself.
    let (_feed, server) = server_with_feed(2000, &["--workers", "2"]);
    let list = "/telemetry/list?metric=bandwidth";
    // HEAD read by the connection thread, then a parked GET of a large answer.
    let mut stream = connect(server.addr);
    write!(stream, "HEAD {list} HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
    let head = read_head_only(&mut stream);
    assert!(status_line(&head).starts_with("HTTP/1.1 200"), "{head}");
    std::thread::sleep(Duration::from_millis(100));
    write!(stream, "GET {list} HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
    let (status, body) = read_one_answer(&mut stream);
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(
        body.len() > 64 * 1024 && body.contains("\"switch2000\""),
        "{} B",
        body.len()
    );
    // Then a parked HEAD of the same large answer: a head only, so the next answer on the
    // connection is read as one.
    std::thread::sleep(Duration::from_millis(100));
    write!(stream, "HEAD {list} HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
    let head = read_head_only(&mut stream);
    assert!(status_line(&head).starts_with("HTTP/1.1 200"), "{head}");
    std::thread::sleep(Duration::from_millis(100));
    stream.write_all(get_switch(7).as_bytes()).expect("send");
    let (status, body) = read_one_answer(&mut stream);
    assert!(status.starts_with("HTTP/1.1 200"), "{status}: {body:.200}");
    assert!(body.contains("\"switch7\""), "{body:.200}");

    // 100 requests of 128 bytes each in one write to a parked connection: more than a
    // worker reads at once (8 KiB), handed back to a thread that buffers 4 KiB at a time.
    std::thread::sleep(Duration::from_millis(100));
    let padded = |n: usize| {
        let bare = format!(
            "GET /telemetry/get?switch_id=switch{n}&metric=bandwidth HTTP/1.1\r\nHost: x\r\nX-Pad: \r\n\r\n"
        );
        let request = bare.replace(
            "X-Pad: ",
            &format!("X-Pad: {}", "p".repeat(128 - bare.len())),
        );
        assert_eq!(request.len(), 128);
        request
    };
    let wanted: Vec<usize> = (0..100).map(|i| i % 9 + 1).collect();
    let requests: String = wanted.iter().map(|&n| padded(n)).collect();
    stream.write_all(requests.as_bytes()).expect("send");
    for (i, n) in wanted.iter().enumerate() {
        let (status, body) = read_one_answer(&mut stream);
        assert!(status.starts_with("HTTP/1.1 200"), "answer {i}: {status}");
        assert!(
            body.contains(&format!("\"switch{n}\"")),
            "answer {i}: {body}"
        );
    }
}

/// Reads an answer's head only (the answer to a HEAD request).
fn read_head_only(stream: &mut TcpStream) -> String {
    read_until(stream, b"\r\n\r\n")
}

/// Reads byte by byte up to and including `end` (so nothing after it is taken).
fn read_until(stream: &mut TcpStream, end: &[u8]) -> String {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(end) {
        match stream.read(&mut byte) {
            Ok(1) => got.push(byte[0]),
            other => panic!(
                "cut short ({other:?}) after {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Reads one answer (head and `Content-Length` body) from a kept-alive connection: its
/// status line and body.
fn read_one_answer(stream: &mut TcpStream) -> (String, String) {
    let head = read_head_only(stream);
    let lower = head.to_ascii_lowercase();
    let body = if lower.contains("transfer-encoding: chunked") {
        read_chunked(stream)
    } else {
        let length = util::content_length(&head).expect("content-length");
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).expect("body");
        body
    };
    (
        status_line(&head).to_string(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// A chunked body (sizes in hex, each chunk followed by CRLF, a 0 chunk and CRLF last).
fn read_chunked(stream: &mut TcpStream) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let size = usize::from_str_radix(read_line(stream).trim(), 16).expect("chunk size");
        if size == 0 {
            assert_eq!(read_line(stream), "", "no trailers expected");
            return body;
        }
        let mut chunk = vec![0u8; size + 2];
        stream.read_exact(&mut chunk).expect("chunk");
        assert!(chunk.ends_with(b"\r\n"), "a chunk ends with CRLF");
        body.extend_from_slice(&chunk[..size]);
    }
}

/// One line (without its CRLF).
fn read_line(stream: &mut TcpStream) -> String {
    let mut line = read_until(stream, b"\r\n");
    line.truncate(line.len() - 2);
    line
}

fn get_switch(n: usize) -> String {
    format!("GET /telemetry/get?switch_id=switch{n}&metric=bandwidth HTTP/1.1\r\nHost: x\r\n\r\n")
}

/// A kept-alive connection, its first request answered, then left alone long enough to be
/// parked for the workers (`vendor/tiny_http/src/ready.rs`).
fn parked_connection(server: &Proc) -> TcpStream {
    let mut stream = connect(server.addr);
    stream.write_all(get_switch(1).as_bytes()).expect("send");
    let (status, body) = read_one_answer(&mut stream);
    assert!(status.starts_with("HTTP/1.1 200"), "{status}: {body}");
    std::thread::sleep(Duration::from_millis(100));
    stream
}

/// After its first answer a kept-alive connection waits for its next request parked: the
/// workers read it. One whole plain head is answered at once; anything else (a head in
/// pieces, two heads at once, a body, a close, an older HTTP, a trickle) goes back to the
/// connection's own thread and is held to the rules of any request.
#[test]
fn kept_alive_connections_keep_every_rule_after_their_first_answer() {
    let (_feed, server) = server_with_feed(3, &["--request-timeout", "1s", "--workers", "2"]);
    let mut stream = parked_connection(&server);
    // Many in a row, each read and answered by a worker: the connection's own thread sleeps
    // through them (it was woken once per request before).
    let woken_before = connection_thread_wake_ups(&server);
    for i in 0..200 {
        let n = i % 3 + 1;
        stream.write_all(get_switch(n).as_bytes()).expect("send");
        let (status, body) = read_one_answer(&mut stream);
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        assert!(
            body.contains(&format!("\"switch{n}\"")),
            "request {i}: {body}"
        );
    }
    let woken = connection_thread_wake_ups(&server) - woken_before;
    assert!(
        woken < 20,
        "connection threads woken {woken} times for 200 requests"
    );
    let read_by_workers = util::stats(&server)["http"]["requests_read_by_workers"]
        .as_u64()
        .unwrap_or(0);
    assert!(read_by_workers >= 200, "{read_by_workers} read by workers");
    // A request after a silence longer than the request timeout: answered, not shed (it
    // did not wait for a worker). The connection's thread took it back after the parking
    // window (an eighth of the request timeout here) and read it itself.
    let woken_before = connection_thread_wake_ups(&server);
    std::thread::sleep(Duration::from_millis(1500));
    stream.write_all(get_switch(2).as_bytes()).expect("send");
    let (status, body) = read_one_answer(&mut stream);
    assert!(status.starts_with("HTTP/1.1 200"), "{status}: {body}");
    let woken = connection_thread_wake_ups(&server) - woken_before;
    assert!(
        woken >= 2,
        "a connection silent past the window stayed parked (woken {woken})"
    );
    // A head in two pieces, 300 ms apart.
    std::thread::sleep(Duration::from_millis(100));
    let request = get_switch(2);
    stream.write_all(&request.as_bytes()[..20]).expect("send");
    std::thread::sleep(Duration::from_millis(300));
    stream.write_all(&request.as_bytes()[20..]).expect("send");
    let (status, body) = read_one_answer(&mut stream);
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(body.contains("\"switch2\""), "{body}");
    // Two heads in one write: both answered, in order.
    std::thread::sleep(Duration::from_millis(100));
    stream
        .write_all(format!("{}{}", get_switch(3), get_switch(1)).as_bytes())
        .expect("send");
    for n in [3, 1] {
        let (status, body) = read_one_answer(&mut stream);
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        assert!(body.contains(&format!("\"switch{n}\"")), "{body}");
    }
    // A close asked for: answered, then closed.
    std::thread::sleep(Duration::from_millis(100));
    answered_then_closed(
        stream,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "HTTP/1.1 200",
    );
    // HTTP/1.0 without keep-alive: answered, then closed.
    answered_then_closed(
        parked_connection(&server),
        b"GET /healthz HTTP/1.0\r\n\r\n",
        "HTTP/1.0 200",
    );
    // A declared body (never read): refused, then closed.
    answered_then_closed(
        parked_connection(&server),
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\n",
        "HTTP/1.1 413",
    );

    // A next head trickled byte by byte: 408 and a close after the request timeout.
    let mut stream = parked_connection(&server);
    let started = Instant::now();
    let trickle = std::thread::spawn(move || {
        for byte in b"GET /telemetry/stats HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaa".iter() {
            if stream.write_all(&[*byte]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        read_until_closed(&mut stream, Duration::from_secs(5))
    });
    assert_answered_within_a_second(&server, "/telemetry/stats");
    let (answer, closed) = trickle.join().expect("trickle");
    assert!(
        status_line(&answer).starts_with("HTTP/1.1 408"),
        "{answer:?}"
    );
    assert!(closed);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );

    // Garbage instead of a next head: 400 and a close.
    answered_then_closed(
        parked_connection(&server),
        b"NOT HTTP AT ALL\r\n\r\n",
        "HTTP/1.1 400",
    );

    // A client that leaves while parked costs nothing: others are answered, nothing panics.
    for _ in 0..20 {
        drop(parked_connection(&server));
    }
    assert_answered_within_a_second(&server, "/telemetry/stats");
    let stats = util::stats(&server);
    assert_eq!(stats["http"]["panics"], 0, "{}", stats["http"]);
    assert!(server_is_alive(&server));
}

/// Sends `request` on `stream` and reads until the server closes: the answer's status line
/// starts with `status`.
fn answered_then_closed(mut stream: TcpStream, request: &[u8], status: &str) {
    stream.write_all(request).expect("send");
    let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(5));
    assert!(status_line(&answer).starts_with(status), "{answer:?}");
    assert!(closed, "open after {:?}", String::from_utf8_lossy(request));
}

fn server_is_alive(server: &Proc) -> bool {
    util::threads_of(server.pid()) > 0
}

/// How often the server's connection threads have gone to sleep and been woken since they
/// started (voluntary context switches of every `http-conn` thread).
fn connection_thread_wake_ups(server: &Proc) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{}/task", server.pid())).expect("tasks");
    tasks
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|c| c.trim() == "http-conn")
        })
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum()
}
