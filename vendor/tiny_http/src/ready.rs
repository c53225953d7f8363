//! fabric-telemetry patch: where workers wait for work, and kept-alive connections wait for
//! their next request without a thread of their own awake.
//!
//! Workers wait in one `epoll` set that holds two kinds of things:
//! - an eventfd signalled once per request head a connection thread read and queued (a new
//!   connection's first request, or anything the fast path below hands back), and
//! - every kept-alive connection whose answer is out and whose next request has not begun:
//!   it is *parked* (`EPOLLIN | EPOLLONESHOT`). The worker that gets its event reads the
//!   next request itself, without blocking (`AnswerSlot::take_parked`); when that is one
//!   complete, plain request head, it answers it at once, and the connection thread, asleep
//!   on its eventfd, is never woken. Anything else (a partial head, pipelined bytes, a body,
//!   a close) goes back to the connection thread, which reads it under its deadlines as
//!   before.
//!
//! Why: with a thread per connection, each request woke that thread and then a worker, and
//! the handover alone cost more CPU than the answer: 45 µs and 2.3 context switches per
//! `/get`, where nginx needs 21 µs and 0.7 (`cargo bench --bench fabric -- openloop`).
//!
//! A parked connection is known by a token that is never reused, so an event that arrives
//! for a connection that has since closed finds nothing and is ignored.

use std::collections::{HashMap, VecDeque};
use std::convert::TryFrom;
use std::io::Result as IoResult;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::event::{epoll, eventfd, EventfdFlags, Timespec};

use crate::answer::AnswerSlot;
use crate::connection::Connection;
use crate::Message;

/// The token of the queue's eventfd; connections get tokens from 1 up.
const QUEUE: u64 = 0;

/// What a worker was woken for.
pub(crate) enum Woken {
    /// Maybe a queued request (another worker may have taken it first).
    Queue,
    /// A parked connection that is readable (or was closed meanwhile).
    Parked(Arc<AnswerSlot>),
    /// Nothing: the wait ran out, or the event was for a connection now gone.
    Nothing,
}

enum Control {
    Message(Message),
    Unblock,
}

/// The workers' side of the server: queued request heads and parked connections.
pub(crate) struct Ready {
    epoll: OwnedFd,
    /// Counts queued entries (`EFD_SEMAPHORE`: each read takes one), so each wakes a worker.
    queued_signal: OwnedFd,
    queue: Mutex<VecDeque<Control>>,
    parked: Mutex<HashMap<u64, Arc<AnswerSlot>>>,
    next_token: AtomicU64,
    /// What `emptied_at` counts from.
    start: Instant,
    /// When a worker last found nothing ready (ns since `start`): every request a worker
    /// takes later became ready after it.
    emptied_at: AtomicU64,
}

impl Ready {
    pub(crate) fn new() -> IoResult<Arc<Ready>> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let queued_signal = eventfd(
            0,
            EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK | EventfdFlags::SEMAPHORE,
        )?;
        epoll::add(
            &epoll,
            &queued_signal,
            epoll::EventData::new_u64(QUEUE),
            epoll::EventFlags::IN,
        )?;
        Ok(Arc::new(Ready {
            epoll,
            queued_signal,
            queue: Mutex::new(VecDeque::with_capacity(8)),
            parked: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(QUEUE + 1),
            start: Instant::now(),
            emptied_at: AtomicU64::new(0),
        }))
    }

    fn since_start(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The last time a worker found nothing ready. A parked connection's request that a
    /// worker takes now has waited for a worker since then at most. Why it matters: a queued
    /// head carries the time it was read, and a worker sheds one that waited past the request
    /// timeout (503, the server is behind); a request in the kernel carries no such time, and
    /// without this bound one that waited through a long overload would be answered late
    /// instead of shed.
    pub(crate) fn emptied_at(&self) -> Instant {
        self.start + Duration::from_nanos(self.emptied_at.load(Ordering::Relaxed))
    }

    fn queue(&self) -> MutexGuard<'_, VecDeque<Control>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn parked(&self) -> MutexGuard<'_, HashMap<u64, Arc<AnswerSlot>>> {
        self.parked.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn signal(&self) {
        // Fails only when the count would pass 2^64 - 2.
        let _ = rustix::io::write(&self.queued_signal, &1u64.to_ne_bytes());
    }

    /// Queues a request head read by a connection thread.
    pub(crate) fn push(&self, message: Message) {
        self.queue().push_back(Control::Message(message));
        self.signal();
    }

    /// Makes one waiting worker return empty-handed.
    pub(crate) fn unblock(&self) {
        self.queue().push_back(Control::Unblock);
        self.signal();
    }

    /// The next queued entry: `Some(Some(message))`, `Some(None)` for an unblock, `None` when
    /// the queue is empty.
    pub(crate) fn try_pop(&self) -> Option<Option<Message>> {
        match self.queue().pop_front()? {
            Control::Message(message) => Some(Some(message)),
            Control::Unblock => Some(None),
        }
    }

    /// Waits at most `limit` for one event.
    pub(crate) fn wait(&self, limit: Duration) -> Woken {
        let timeout = whole_ms(limit);
        let mut events = [epoll::Event {
            flags: epoll::EventFlags::empty(),
            data: epoll::EventData::new_u64(QUEUE),
        }];
        // First without waiting: finding nothing ready is worth recording (`emptied_at`).
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let ready = match epoll::wait(&self.epoll, &mut events[..], Some(&zero)) {
            Ok(1) => true,
            Ok(_) => {
                self.emptied_at.store(self.since_start(), Ordering::Relaxed);
                false
            }
            // Interrupted: nothing learnt.
            Err(_) => false,
        };
        if !ready
            && !matches!(
                epoll::wait(&self.epoll, &mut events[..], timeout.as_ref()),
                Ok(1)
            )
        {
            return Woken::Nothing;
        }
        let token = events[0].data.u64();
        if token == QUEUE {
            let mut count = [0u8; 8];
            let _ = rustix::io::read(&self.queued_signal, &mut count);
            return Woken::Queue;
        }
        match self.parked().get(&token) {
            Some(slot) => Woken::Parked(Arc::clone(slot)),
            None => Woken::Nothing,
        }
    }

    /// Watches `conn` for its next request, once (`EPOLLONESHOT`): registers it under a new
    /// token when `token` is `None`, re-arms it otherwise. Called with the slot's state
    /// locked, so the event cannot be taken before the state says the connection is parked.
    pub(crate) fn park(
        &self,
        slot: &Arc<AnswerSlot>,
        conn: &Connection,
        token: &mut Option<u64>,
    ) -> IoResult<()> {
        let flags = epoll::EventFlags::IN | epoll::EventFlags::RDHUP | epoll::EventFlags::ONESHOT;
        match *token {
            Some(t) => Ok(epoll::modify(
                &self.epoll,
                conn,
                epoll::EventData::new_u64(t),
                flags,
            )?),
            None => {
                let t = self.next_token.fetch_add(1, Ordering::Relaxed);
                self.parked().insert(t, Arc::clone(slot));
                if let Err(e) = epoll::add(&self.epoll, conn, epoll::EventData::new_u64(t), flags) {
                    self.parked().remove(&t);
                    return Err(e.into());
                }
                *token = Some(t);
                Ok(())
            }
        }
    }

    /// Stops watching `conn` (its connection is ending, or its thread takes it back); a
    /// later park registers it again under a new token.
    pub(crate) fn forget(&self, conn: &Connection, token: u64) {
        let _ = epoll::delete(&self.epoll, conn);
        self.parked().remove(&token);
    }
}

/// `limit` rounded up to a whole millisecond (at most an hour), as a timeout for `poll` and
/// `epoll_wait`: a wait then never ends just before its deadline and spins.
pub(crate) fn whole_ms(limit: Duration) -> Option<Timespec> {
    let ms = limit.as_micros().div_ceil(1000).min(3_600_000) as u64;
    Timespec::try_from(Duration::from_millis(ms)).ok()
}
