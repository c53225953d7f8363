//! Process set-up both programs share ([`prepare_process`]: allocator setting, open-file
//! limit, SIGXFSZ ignored, signal mask) and their signal loop ([`run_until_stopped`]).
//!
//! Signals without an async runtime or signal handlers: SIGTERM, SIGINT and SIGHUP are blocked
//! in every thread (the mask is inherited, so call [`block_signals`] before spawning any) and
//! the main thread takes them synchronously with `sigwait`, so shutdown and reload run as
//! ordinary code on an ordinary thread.

use std::fmt;

/// A signal the programs act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Interrupt,
    /// SIGHUP: reload (the token file), keep running.
    Hangup,
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Term => "SIGTERM",
            Signal::Interrupt => "SIGINT",
            Signal::Hangup => "SIGHUP",
        })
    }
}

fn handled_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set it is given; sigaddset adds valid signals.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}

/// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread and every thread it spawns afterwards.
pub fn block_signals() -> std::io::Result<()> {
    let set = handled_signals();
    // SAFETY: a valid, initialised signal set; the old mask is not needed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(rc))
    }
}

/// Waits for SIGTERM, SIGINT or SIGHUP (they must be blocked, see [`block_signals`]).
pub fn wait_for_signal() -> std::io::Result<Signal> {
    let set = handled_signals();
    let mut signal: libc::c_int = 0;
    // SAFETY: a valid signal set and a pointer to a live c_int.
    let rc = unsafe { libc::sigwait(&set, &mut signal) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    Ok(match signal {
        libc::SIGINT => Signal::Interrupt,
        libc::SIGHUP => Signal::Hangup,
        _ => Signal::Term,
    })
}

/// Allocations of this size or more get their own mapping, returned to the kernel when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// glibc raises its mmap threshold each time a large block is freed, after which answer
/// bodies (0.1–2 MB for /list, /aggregate, /metrics at 10k switches) come from the worker
/// threads' arenas and stay resident there as fragments: in a 30-minute soak RSS crept by
/// ~0.3 MB/min with the live heap flat. A fixed threshold keeps large transient buffers out of
/// the arenas. It also keeps glibc's trim threshold at its default (the dynamic threshold
/// doubles it with the mmap threshold), so free memory at the top of the heap goes back to
/// the kernel: without it, a simulated store of 200k switches × 5 min kept 0.13 B per sample more
/// resident (`cargo bench --bench fabric -- million`, which sets it as the server does).
pub fn limit_allocator_retention() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters (glibc takes the arena lock).
    unsafe {
        if libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 0 {
            log::warn!("cannot set the allocator's mmap threshold");
        }
    }
}

/// Start-up for a long-running program, before any thread exists: fix the allocator's mmap
/// threshold, raise the open-file limit, ignore SIGXFSZ, and block the signals [`run_until_stopped`] takes. Failures are logged, not fatal.
pub fn prepare_process() {
    limit_allocator_retention();
    match crate::shared::http::raise_fd_limit() {
        Ok(limit) => log::debug!("open-file limit {limit}"),
        Err(e) => log::warn!("cannot raise the open-file limit: {e}"),
    }
    // Past RLIMIT_FSIZE a write should fail (EFBIG, handled like a full disk), not kill us.
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    if let Err(e) = block_signals() {
        log::warn!("cannot block SIGTERM/SIGINT ({e}): they will end the process at once");
    }
}

/// Runs `on_hangup` for every SIGHUP until SIGTERM or SIGINT arrives; returns that signal,
/// or the error that made waiting impossible.
/// Asks this process's signal loop ([`run_until_stopped`]) to stop, as SIGTERM would: what a
/// vital thread's death calls (see `watch`), so the process shuts down as cleanly as it can.
pub fn stop_process() {
    // SAFETY: kill(2) on our own pid with a valid signal number.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGTERM);
    }
}

pub fn run_until_stopped(mut on_hangup: impl FnMut()) -> std::io::Result<Signal> {
    loop {
        match wait_for_signal()? {
            Signal::Hangup => on_hangup(),
            stop => return Ok(stop),
        }
    }
}
