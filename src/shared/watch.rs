//! No thread dies unseen: every long-lived thread of both programs (store, persist, pollers,
//! remote write, the generator's tick) runs under a [`Watch`]. A panic is caught, logged with
//! the thread's name and counted; then, by the thread's [`OnPanic`], the thread is started
//! again after a pause (pollers, remote write: they hold nothing that a restart loses), or
//! the process is asked to stop so that it exits non-zero after a clean-as-possible shutdown
//! (store, persist, tick: they own state a restart cannot rebuild in place; systemd's
//! `Restart=on-failure` brings the process back and recovery does the rest).
//!
//! What the watch knows is shown in `/healthz` and `/readyz` (which threads are failing),
//! `/metrics` (`fabric_thread_panics_total`, `fabric_thread_up`) and `/telemetry/stats`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

/// What happens after a thread panicked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnPanic {
    /// Start its body again after a pause (1 s, doubling while it keeps panicking within a
    /// minute of starting, at most 30 s).
    Restart,
    /// Ask the process to stop; it exits non-zero (see [`Watch::fatal`]).
    Exit,
}

/// How long after a panic a thread is still reported as failing, though restarted: a thread
/// that panics again and again stays failing; a one-off shows for this long.
pub const FAILING_AFTER_PANIC: Duration = Duration::from_secs(60);
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const MAX_PAUSE: Duration = Duration::from_secs(30);

struct Watched {
    name: String,
    on_panic: OnPanic,
    up: AtomicBool,
    panics: AtomicU64,
    last_panic: Mutex<Option<Instant>>,
}

/// One thread as the watch reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ThreadReport {
    pub name: String,
    /// Running now (false between a panic and its restart, and for good after a fatal one).
    pub up: bool,
    pub panics: u64,
    /// Seconds since the last panic, if any.
    pub last_panic_seconds_ago: Option<f64>,
}

/// The threads of one process and what became of them.
pub struct Watch {
    threads: Mutex<Vec<Arc<Watched>>>,
    fatal: Mutex<Option<String>>,
    on_fatal: Box<dyn Fn() + Send + Sync>,
}

impl Watch {
    /// `on_fatal` is called once, from the dying thread, when an [`OnPanic::Exit`] thread
    /// panicked (the binaries pass a function that stops the process's signal loop).
    pub fn new(on_fatal: impl Fn() + Send + Sync + 'static) -> Arc<Watch> {
        Arc::new(Watch {
            threads: Mutex::new(Vec::new()),
            fatal: Mutex::new(None),
            on_fatal: Box::new(on_fatal),
        })
    }

    fn register(&self, name: &str, on_panic: OnPanic) -> Arc<Watched> {
        let watched = Arc::new(Watched {
            name: name.to_string(),
            on_panic,
            up: AtomicBool::new(true),
            panics: AtomicU64::new(0),
            last_panic: Mutex::new(None),
        });
        lock(&self.threads).push(Arc::clone(&watched));
        watched
    }

    /// Counts and logs a panic of `watched`.
    fn record_panic(&self, watched: &Watched, payload: &(dyn std::any::Any + Send)) {
        watched.up.store(false, Ordering::SeqCst);
        let n = watched.panics.fetch_add(1, Ordering::SeqCst) + 1;
        *lock(&watched.last_panic) = Some(Instant::now());
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-text panic".to_string());
        let next = match watched.on_panic {
            OnPanic::Restart => "restarting it",
            OnPanic::Exit => "stopping the process, which will exit non-zero",
        };
        log::error!(
            thread = watched.name.as_str(),
            panics = n;
            "thread {} panicked ({:?}); {next}",
            watched.name,
            what
        );
    }

    /// Runs `body` on a thread named `name` and starts it again after a panic, until it
    /// returns normally or `stop` fires (or disconnects) during a pause.
    pub fn spawn_restarting(
        self: &Arc<Self>,
        name: &str,
        stop: Receiver<()>,
        mut body: impl FnMut() + Send + 'static,
    ) -> std::io::Result<JoinHandle<()>> {
        let watched = self.register(name, OnPanic::Restart);
        let watch = Arc::clone(self);
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let mut pause = FIRST_PAUSE;
                loop {
                    let started = Instant::now();
                    watched.up.store(true, Ordering::SeqCst);
                    match catch_unwind(AssertUnwindSafe(&mut body)) {
                        Ok(()) => return,
                        Err(payload) => watch.record_panic(&watched, payload.as_ref()),
                    }
                    if started.elapsed() > FAILING_AFTER_PANIC {
                        pause = FIRST_PAUSE;
                    }
                    match stop.recv_timeout(pause) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    pause = (pause * 2).min(MAX_PAUSE);
                }
            })
    }

    /// Runs `body` on a thread named `name`; a panic makes the process stop and exit
    /// non-zero.
    pub fn spawn_vital(
        self: &Arc<Self>,
        name: &str,
        body: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<JoinHandle<()>> {
        let watched = self.register(name, OnPanic::Exit);
        let watch = Arc::clone(self);
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                if let Err(payload) = catch_unwind(AssertUnwindSafe(body)) {
                    watch.record_panic(&watched, payload.as_ref());
                    let first = {
                        let mut fatal = lock(&watch.fatal);
                        let first = fatal.is_none();
                        fatal.get_or_insert_with(|| watched.name.clone());
                        first
                    };
                    if first {
                        (watch.on_fatal)();
                    }
                }
            })
    }

    /// The thread whose panic is ending the process, if one did.
    pub fn fatal(&self) -> Option<String> {
        lock(&self.fatal).clone()
    }

    /// Every watched thread, in start order.
    pub fn report(&self) -> Vec<ThreadReport> {
        lock(&self.threads)
            .iter()
            .map(|t| ThreadReport {
                name: t.name.clone(),
                up: t.up.load(Ordering::SeqCst),
                panics: t.panics.load(Ordering::SeqCst),
                last_panic_seconds_ago: lock(&t.last_panic).map(|at| at.elapsed().as_secs_f64()),
            })
            .collect()
    }

    /// Threads that are down, or panicked within [`FAILING_AFTER_PANIC`].
    pub fn failing(&self) -> Vec<String> {
        self.report()
            .into_iter()
            .filter(|t| {
                !t.up
                    || t.last_panic_seconds_ago
                        .is_some_and(|s| s < FAILING_AFTER_PANIC.as_secs_f64())
            })
            .map(|t| t.name)
            .collect()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Test-only fault injection: in debug builds, `FABRIC_TEST_PANIC=NAME` makes the first
/// thread named `NAME` (or `NAME-<n>`) that reaches this point panic, once per process.
/// Release builds compile it to nothing.
#[inline]
pub fn injected_panic_point() {
    #[cfg(debug_assertions)]
    {
        use std::sync::OnceLock;
        static TARGET: OnceLock<Option<String>> = OnceLock::new();
        static FIRED: AtomicBool = AtomicBool::new(false);
        let Some(target) = TARGET
            .get_or_init(|| std::env::var("FABRIC_TEST_PANIC").ok())
            .as_deref()
        else {
            return;
        };
        let current = std::thread::current();
        let name = current.name().unwrap_or("");
        let matches = name == target
            || name
                .strip_prefix(target)
                .is_some_and(|rest| rest.starts_with('-'));
        if matches && !FIRED.swap(true, Ordering::SeqCst) {
            panic!("test-only panic injected by FABRIC_TEST_PANIC={target}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarting_thread_comes_back_and_is_counted() {
        let watch = Watch::new(|| {});
        let (stop, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let runs = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&runs);
        let handle = watch
            .spawn_restarting("flaky", stop_rx, move || {
                if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("first run fails");
                }
            })
            .expect("spawn");
        handle
            .join()
            .expect("the thread ends normally after its restart");
        drop(stop);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        let report = watch.report();
        assert_eq!(report.len(), 1);
        assert_eq!(report[0].panics, 1);
        assert!(report[0].up);
        assert_eq!(watch.failing(), vec!["flaky".to_string()]);
        assert_eq!(watch.fatal(), None);
    }

    #[test]
    fn a_vital_thread_panicking_asks_the_process_to_stop_once() {
        let stops = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&stops);
        let watch = Watch::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        for _ in 0..2 {
            watch
                .spawn_vital("store", || panic!("boom"))
                .expect("spawn")
                .join()
                .expect("the panic is caught");
        }
        assert_eq!(stops.load(Ordering::SeqCst), 1);
        assert_eq!(watch.fatal().as_deref(), Some("store"));
        assert!(watch.report().iter().all(|t| !t.up && t.panics == 1));
    }

    #[test]
    fn a_stop_during_the_pause_ends_a_restarting_thread() {
        let watch = Watch::new(|| {});
        let (stop, stop_rx) = crossbeam_channel::bounded::<()>(0);
        drop(stop);
        let started = Instant::now();
        watch
            .spawn_restarting("doomed", stop_rx, || panic!("always"))
            .expect("spawn")
            .join()
            .expect("ends");
        assert!(started.elapsed() < FIRST_PAUSE);
        assert_eq!(watch.report()[0].panics, 1);
    }
}
