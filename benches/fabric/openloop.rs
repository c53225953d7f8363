//! `openloop`: `/telemetry/get` latency under a fixed request schedule at 25, 50 and 75% of
//! the throughput wrk measures, 10k switches polled every second.
//!
//! A closed-loop client (wrk) waits for each answer before sending the next request, so a
//! stall delays the requests that would have seen it and hides it from the percentiles
//! ("coordinated omission"). Here each of 16 keep-alive connections sends on a fixed schedule
//! (two client threads, eight connections each, sleeping in `ppoll`); a request's latency is
//! counted from when it was *due*, not from when it could be sent, so a stall shows up in
//! every request it delayed. The client shares the machine's two cores with the server: its
//! CPU per request is printed beside the server's.
//!
//! The baseline in the same run: nginx (a worker per core, answering the same `/get` body from
//! memory) on the same schedule at 50%, while the generator and our server keep polling. What
//! nginx's tail shows is the machine's (scheduler, hypervisor, the client sharing two cores);
//! what ours shows beyond it is ours. A fourth arm keeps the same schedule and sends nothing:
//! how late the client itself wakes, the floor under every figure here.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::report::Report;
use crate::system::{cpu_seconds, system, wait_for_rows};
use crate::util;
use crate::wrk::{random_get_script, wrk};

const CONNECTIONS: usize = 16;
const SWITCHES: usize = 10_000;

/// Requests due this soon after a schedule starts are sent but not counted: the server's
/// connection threads (and nginx's) are still being scheduled for the first time.
const WARM_UP: Duration = Duration::from_millis(250);

/// Client threads, each sending on `CONNECTIONS / CLIENT_THREADS` non-blocking connections
/// and sleeping in `ppoll` until the next request is due or an answer comes. Why not a thread
/// per connection (as before): each request then cost a sleep and two wake-ups of its own
/// thread, ~34 µs of client CPU, and 16 threads waking 30k times a second were 0.7–1.25 ms
/// late at p99 with no server at all; two threads polling eight connections each: ~24 µs and
/// 0.14–0.18 ms (30k req/s, 2026-12-01). The client's lateness is counted as latency (a
/// request is timed from when it was due), so it is the floor under every figure here.
const CLIENT_THREADS: usize = 2;

/// How long an answer may take before its connection counts as failed.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `rate` requests per second in all for `seconds`, on `CONNECTIONS` keep-alive
/// connections, each on its own fixed schedule (staggered across one interval), one request
/// in flight per connection; returns the latency of every request due after [`WARM_UP`], in
/// microseconds (sorted), and failures. A request is timed from when it was due: one sent late
/// because the answer before it was late counts that wait too (no coordinated omission).
/// Without `addr`, the same threads keep the same schedule and send nothing: the latencies are
/// then how late the client itself woke, the floor under every figure measured with it.
fn scheduled(addr: Option<&str>, rate: f64, seconds: u64) -> (Vec<u64>, u64) {
    let per_connection = rate / CONNECTIONS as f64;
    let interval = Duration::from_secs_f64(1.0 / per_connection);
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + Duration::from_secs(seconds);
    let per_thread = CONNECTIONS / CLIENT_THREADS;
    let threads: Vec<_> = (0..CLIENT_THREADS)
        .map(|t| {
            let addr = addr.map(str::to_string);
            std::thread::spawn(move || {
                precise_sleeps();
                let schedule = Schedule {
                    start,
                    end,
                    interval,
                };
                let first = t * per_thread;
                client_thread(addr.as_deref(), first..first + per_thread, schedule)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut failures = 0;
    for thread in threads {
        let (latencies, failed) = thread.join().unwrap_or_default();
        all.extend(latencies);
        failures += failed;
    }
    all.sort_unstable();
    (all, failures)
}

#[derive(Clone, Copy)]
struct Schedule {
    start: Instant,
    end: Instant,
    /// Between two requests of one connection.
    interval: Duration,
}

/// One connection of a client thread.
struct Connection {
    socket: Option<TcpStream>,
    /// When its next request is due.
    due: Instant,
    /// The request in flight: timed from (its due time, or when sent if earlier), and whether
    /// it is counted (due after the warm-up).
    in_flight: Option<(Instant, bool)>,
    /// Answer bytes read so far.
    read: Vec<u8>,
    /// Picks the next switch asked for.
    n: usize,
}

/// Runs the connections numbered `numbers` (of [`CONNECTIONS`]) to the end of `schedule`.
fn client_thread(
    addr: Option<&str>,
    numbers: std::ops::Range<usize>,
    schedule: Schedule,
) -> (Vec<u64>, u64) {
    let mut latencies = Vec::new();
    let mut failures = 0u64;
    let counted_from = schedule.start + WARM_UP;
    let mut connections: Vec<Connection> = Vec::new();
    for c in numbers {
        let socket = match addr.map(TcpStream::connect) {
            None => None,
            Some(Ok(socket)) => {
                let _ = socket.set_nodelay(true);
                socket.set_nonblocking(true).expect("non-blocking socket");
                Some(socket)
            }
            Some(Err(_)) => {
                failures += 1;
                continue;
            }
        };
        connections.push(Connection {
            socket,
            due: schedule.start + schedule.interval.mul_f64(c as f64 / CONNECTIONS as f64),
            in_flight: None,
            read: Vec::new(),
            n: c,
        });
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let now = Instant::now();
        for conn in connections.iter_mut() {
            if conn.in_flight.is_some() || conn.due >= schedule.end || conn.due > now {
                continue;
            }
            let counted = conn.due >= counted_from;
            conn.n = (conn.n * 7919 + 13) % SWITCHES;
            match &mut conn.socket {
                Some(socket) => {
                    let request = format!(
                        "GET /telemetry/get?switch_id=switch{}&metric=bandwidth HTTP/1.1\r\nHost: bench\r\n\r\n",
                        conn.n + 1
                    );
                    // A request this small always fits an empty socket buffer.
                    if socket.write_all(request.as_bytes()).is_ok() {
                        conn.in_flight = Some((conn.due.min(now), counted));
                    } else {
                        failures += 1;
                        conn.socket = None;
                        conn.due = schedule.end;
                    }
                }
                None if addr.is_none() && counted => {
                    latencies.push(now.duration_since(conn.due).as_micros() as u64);
                }
                None => {}
            }
            conn.due += schedule.interval;
        }
        let waiting = connections.iter().any(|c| c.in_flight.is_some());
        let next_due = connections
            .iter()
            .filter(|c| c.in_flight.is_none() && c.due < schedule.end)
            .map(|c| c.due)
            .min();
        if !waiting && next_due.is_none() {
            break;
        }
        let now = Instant::now();
        let timeout = next_due.map_or(Duration::from_millis(50), |d| {
            d.saturating_duration_since(now)
        });
        let (mut fds, owners): (Vec<libc::pollfd>, Vec<usize>) = connections
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let socket = c.socket.as_ref().filter(|_| c.in_flight.is_some())?;
                Some((
                    libc::pollfd {
                        fd: std::os::fd::AsRawFd::as_raw_fd(socket),
                        events: libc::POLLIN,
                        revents: 0,
                    },
                    i,
                ))
            })
            .unzip();
        let timespec = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `fds` is a live array of `fds.len()` pollfds; the timespec outlives the
        // call; no signal mask is passed.
        let ready = unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                &timespec,
                std::ptr::null(),
            )
        };
        let now = Instant::now();
        for (fd, &i) in fds.iter().zip(&owners) {
            let conn = &mut connections[i];
            let Some((since, counted)) = conn.in_flight else {
                continue;
            };
            let broken = ready > 0 && fd.revents != 0 && !read_available(conn, &mut buf);
            match answer_length(&conn.read) {
                _ if broken => {}
                Some(Ok(length)) => {
                    conn.read.drain(..length);
                    conn.in_flight = None;
                    if counted {
                        latencies.push(now.duration_since(since).as_micros() as u64);
                    }
                    continue;
                }
                Some(Err(())) => {}
                None if now.duration_since(since) < ANSWER_TIMEOUT => continue,
                None => {}
            }
            // Closed, not a 200, or no answer in time: this connection is done.
            failures += 1;
            conn.socket = None;
            conn.in_flight = None;
            conn.due = schedule.end;
        }
    }
    (latencies, failures)
}

/// Reads what the socket holds; `false` when it closed or failed.
fn read_available(conn: &mut Connection, buf: &mut [u8]) -> bool {
    let Some(socket) = conn.socket.as_mut() else {
        return false;
    };
    loop {
        match socket.read(buf) {
            Ok(0) => return false,
            Ok(n) => conn.read.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// The length of the first answer in `read` once it is complete (head and `Content-Length`
/// body): `Ok` for a 200, `Err` for anything else; `None` while incomplete.
fn answer_length(read: &[u8]) -> Option<Result<usize, ()>> {
    let head_end = read.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&read[..head_end]);
    let Some(length) = util::content_length(&head) else {
        return Some(Err(()));
    };
    if read.len() < head_end + length {
        return None;
    }
    let ok = head.split_whitespace().nth(1) == Some("200");
    Some(if ok { Ok(head_end + length) } else { Err(()) })
}

/// Lets this thread's timed waits (`ppoll`) end when asked, not up to Linux's default timer
/// slack (50 µs) later. Why: a request sent late is counted as late from its due time, and
/// with the default slack the client's own wake-ups were a floor of ~85 µs at p50 and
/// 0.9–5.8 ms at p99 under every figure, with no server at all; with 1 ns, ~30 µs and
/// 0.17–1.1 ms (measured with the earlier client of 16 sleeping threads, 5k and 22.6k
/// wake-ups a second, on the 2-core machine, 2026-12-01).
fn precise_sleeps() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer and changes only this thread's slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

/// Ticks of CPU time stolen by the hypervisor and ticks in all, machine-wide, so far.
fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest times are inside user).
    Some((*ticks.get(7)?, ticks.iter().take(8).sum()))
}

fn quantile(sorted: &[u64], q: f64) -> f64 {
    sorted
        .get(((sorted.len().max(1) - 1) as f64 * q).round() as usize)
        .map_or(f64::NAN, |&us| us as f64 / 1000.0)
}

/// nginx answering every request with `body`, from memory; `None` (said, or a failure under
/// `FABRIC_REQUIRE_TOOLS`) when nginx is not installed.
struct Nginx {
    nginx: util::Nginx,
    addr: String,
    dir: std::path::PathBuf,
}

impl Nginx {
    fn start(body: &str) -> Option<Nginx> {
        let ok = std::process::Command::new("nginx")
            .arg("-v")
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            util::skip_unless_required("nginx (apt-get install nginx)");
            println!("  openloop nginx baseline skipped: nginx is not installed");
            return None;
        }
        let dir =
            std::env::temp_dir().join(format!("fabric-openloop-nginx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("nginx dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let server = format!(
            "  keepalive_requests 1000000;\n  server {{\n    listen 127.0.0.1:{port};\n    \
             location / {{ default_type application/json; return 200 '{body}'; }}\n  }}"
        );
        let nginx = Nginx {
            // A worker per core, as our server answers on every core: with one, nginx's tail
            // was its one thread's (p99 15.7 and 29.1 ms at 50% in two runs, ours 4.2).
            nginx: util::Nginx::start(&dir, "worker_processes auto;", &server),
            addr: format!("127.0.0.1:{port}"),
            dir,
        };
        util::wait_for("nginx to listen", Duration::from_secs(10), || {
            TcpStream::connect(&nginx.addr).ok()
        });
        // Its workers, forked after the listening socket opens, must be counted too.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        util::wait_for("nginx's workers", Duration::from_secs(10), || {
            (nginx.nginx.pids().len() > cores).then_some(())
        });
        Some(nginx)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// CPU seconds and context switches (voluntary + involuntary) of every thread of `pids`.
fn cost_of(pids: &[u32]) -> (f64, u64) {
    let mut switches = 0;
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            switches += status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    (pids.iter().map(|&pid| cpu_seconds(pid)).sum(), switches)
}

/// The latencies of one arm of the interleaved comparison, pooled over its slices, and what
/// serving them cost the processes answering.
#[derive(Default)]
struct Arm {
    latencies: Vec<u64>,
    failures: u64,
    cpu_seconds: f64,
    switches: u64,
    /// CPU of the client (this process) meanwhile: it shares the machine.
    client_cpu_seconds: f64,
}

impl Arm {
    /// Runs one slice of `rate` requests per second against `addr`, answered by `pids`.
    fn slice(&mut self, addr: Option<&str>, rate: f64, seconds: u64, pids: &[u32]) {
        let (cpu_before, switches_before) = cost_of(pids);
        let client_before = cpu_seconds(std::process::id());
        let (latencies, failures) = scheduled(addr, rate, seconds);
        self.client_cpu_seconds += cpu_seconds(std::process::id()) - client_before;
        let (cpu_after, switches_after) = cost_of(pids);
        self.cpu_seconds += cpu_after - cpu_before;
        self.switches += switches_after - switches_before;
        self.latencies.extend(latencies);
        self.failures += failures;
    }

    /// CPU microseconds and context switches per request (warm-up requests are few enough
    /// not to matter: 250 ms of 3 s).
    fn cost_per_request(&self) -> (f64, f64) {
        let n = self.latencies.len().max(1) as f64;
        (self.cpu_seconds * 1e6 / n, self.switches as f64 / n)
    }

    /// The client's CPU microseconds per request.
    fn client_cost_per_request(&self) -> f64 {
        self.client_cpu_seconds * 1e6 / self.latencies.len().max(1) as f64
    }

    fn report(mut self, report: &mut Report, name: &str, how: &str, baseline: Option<f64>) -> f64 {
        self.latencies.sort_unstable();
        let p99 = quantile(&self.latencies, 0.99);
        let figure = report.add(
            "openloop",
            format!("50% of the maximum, {name} p99"),
            p99,
            "ms",
        );
        if let Some(baseline) = baseline {
            figure.baseline(baseline);
        }
        figure.note(format!(
            "p50 {:.2} ms, p99.9 {:.2} ms, {} requests, {} failures; {how}",
            quantile(&self.latencies, 0.5),
            quantile(&self.latencies, 0.999),
            self.latencies.len(),
            self.failures
        ));
        p99
    }
}

pub fn run(report: &mut Report, quick: bool) {
    let seconds = if quick { 10 } else { 20 };
    // A long --max-age keeps /get answering 200 while the feed is paused.
    let (generator, server) = system(SWITCHES, &["--max-age", "1h"]);
    wait_for_rows(&server, SWITCHES as u64 * 2);
    let script = random_get_script(SWITCHES);
    let closed = wrk(&server.url("/"), Some(&script), 10);
    let maximum = closed.requests_per_sec;
    report
        .add(
            "openloop",
            "closed-loop maximum (wrk, 64 connections)",
            maximum,
            "req/s",
        )
        .note(format!(
            "p99 {:.2} ms at that load (closed loop)",
            closed.p99_ms
        ));
    let addr = server.url("").trim_start_matches("http://").to_string();
    for share in [0.25, 0.75] {
        let rate = maximum * share;
        let (latencies, failures) = scheduled(Some(&addr), rate, seconds);
        let label = format!("{:.0}% of the maximum", share * 100.0);
        report
            .add(
                "openloop",
                format!("{label}: /get p99 (open loop)"),
                quantile(&latencies, 0.99),
                "ms",
            )
            .note(format!(
                "p50 {:.2} ms, p99.9 {:.2} ms; {rate:.0} req/s on a fixed schedule, {CONNECTIONS} connections, {} requests, {failures} failures",
                quantile(&latencies, 0.5),
                quantile(&latencies, 0.999),
                latencies.len()
            ));
    }
    // At 50%, three arms in interleaved 3 s slices, so the machine's drift (a shared VM's
    // noise moves the tail by 3x from one minute to the next) falls on all of them alike:
    // ours with the feed polled every second; nginx on the same schedule, our server still
    // polling beside it; ours with the feed paused (the generator SIGSTOPped, the poll in
    // flight waiting: nothing is ingested, nothing fails).
    let body = util::get(&server.url("/telemetry/get?switch_id=switch1&metric=bandwidth")).body;
    let nginx = Nginx::start(body.trim_end());
    let nginx_pids: Vec<u32> = nginx.as_ref().map_or(Vec::new(), |n| n.nginx.pids());
    let rate = maximum * 0.5;
    let slice = 3;
    let rounds = if quick { 4 } else { 10 };
    let (mut ingesting, mut baseline, mut paused, mut floor) = (
        Arm::default(),
        Arm::default(),
        Arm::default(),
        Arm::default(),
    );
    let steal_before = cpu_ticks();
    for _ in 0..rounds {
        ingesting.slice(Some(&addr), rate, slice, &[server.pid()]);
        if let Some(nginx) = &nginx {
            baseline.slice(Some(&nginx.addr), rate, slice, &nginx_pids);
        }
        util::signal(&generator, libc::SIGSTOP);
        std::thread::sleep(Duration::from_millis(300));
        paused.slice(Some(&addr), rate, slice, &[server.pid()]);
        floor.slice(None, rate, slice, &[]);
        util::signal(&generator, libc::SIGCONT);
        std::thread::sleep(Duration::from_millis(1200));
    }
    let steal = cpu_ticks().map(|after| {
        let before = steal_before.unwrap_or_default();
        100.0 * (after.0 - before.0) as f64 / (after.1 - before.1).max(1) as f64
    });
    let how = format!("{rate:.0} req/s on a fixed schedule, {CONNECTIONS} connections, {rounds} interleaved {slice} s slices");
    // What a request costs the process answering it, with nothing else in it running: the
    // figure the noise hardly moves, and the reason for much of the tail (a kept-alive request
    // wakes one of our workers, as it wakes one of nginx's).
    let (ours, theirs) = (
        paused.cost_per_request(),
        nginx.is_some().then(|| baseline.cost_per_request()),
    );
    let cpu_note = format!(
        "utime + stime of the server during the paused slices / requests answered; baseline: nginx's workers the same way; the client on the same cores: {:.1} us per request",
        paused.client_cost_per_request()
    );
    for (name, value, unit, baseline, note) in [
        (
            "CPU per /get request",
            ours.0,
            "us",
            theirs.map(|t| t.0),
            cpu_note.as_str(),
        ),
        (
            "context switches per /get request",
            ours.1,
            "",
            theirs.map(|t| t.1),
            "voluntary + involuntary, all threads; baseline: nginx's",
        ),
    ] {
        let figure = report.add(
            "openloop",
            format!("ours, feed paused: {name}"),
            value,
            unit,
        );
        if let Some(baseline) = baseline {
            figure.baseline(baseline);
        }
        figure.note(note);
    }
    let nginx_p99 = nginx.is_some().then(|| {
        baseline.report(
            report,
            "nginx (baseline): /get",
            &format!("nginx, a worker per core, returning the same body from memory, our server polling beside it; {how}"),
            None,
        )
    });
    ingesting.report(
        report,
        "ours, feed polled every second: /get",
        &how,
        nginx_p99,
    );
    paused.report(report, "ours, feed paused: /get", &how, nginx_p99);
    let steal = steal.map_or("not known".to_string(), |s| format!("{s:.1}%"));
    floor.report(
        report,
        "the schedule alone, nothing sent: lateness",
        &format!("how late the client's own threads woke, the floor under the figures above (generator paused, server idle); CPU stolen by the hypervisor over the 50% slices: {steal}; {how}"),
        None,
    );
}
