//! The store thread: the one writer of telemetry. It applies the batches pollers send, expires
//! history past `--retention`, and hands what it accepted to its outlets: the `persist`
//! thread (WAL rows, and sealed blocks every `--compaction-interval`) and remote write.
//! Neither outlet can make it wait: both are bounded queues it only `try_send`s to.
//!
//! This is the layer that ties the in-memory engine (`store`) to durability (`persist`),
//! statistics (`stats`) and remote write; `store` itself knows none of them.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{select, Receiver};

use crate::server::persist::Disk;
use crate::server::remote_write::{Accepted, RemoteWriteQueue};
use crate::server::stats::IngestStats;
use crate::server::store::StoreHandle;
use crate::server::stream::{Offer, StreamOutlet};
use crate::shared::feed::FeedBatch;
use crate::shared::metric::Exposed;
use crate::shared::timestamp::{self, Micros};
use crate::shared::watch::{self, Watch};

/// Rows from one poll of one source.
#[derive(Debug)]
pub struct IngestBatch {
    pub source: usize,
    pub feed: FeedBatch,
    /// When the poll was due to start; the poll is on time if its rows are queryable before
    /// `due + interval`, when the next one is due.
    pub due: std::time::Instant,
    pub interval: Duration,
    /// The poll's final message: every chunk before it has been sent.
    pub last: bool,
}

/// How often the store expires old blocks when no batch arrives.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// Durable storage as the store thread sees it.
pub struct Persistence {
    pub disk: Disk,
    pub compaction_interval: Duration,
}

/// Where the store thread sends what it accepted, besides memory.
#[derive(Default)]
pub struct Outlets {
    pub remote: Option<RemoteWriteQueue>,
    pub persistence: Option<Persistence>,
    /// Live subscribers (`/telemetry/stream`).
    pub stream: Option<StreamOutlet>,
}

impl Outlets {
    /// `exposed`: how each column of `feed` appears in Prometheus (remote write).
    fn accepted(
        &self,
        source: usize,
        feed: FeedBatch,
        rows: Vec<u32>,
        exposed: impl FnOnce() -> Vec<Arc<Exposed>>,
    ) {
        // None waits: a full queue drops (and counts) what it could not take.
        let feed = Arc::new(feed);
        if let Some(stream) = self.stream.as_ref().filter(|s| s.has_subscribers()) {
            stream.offer(Offer::Rows {
                source,
                feed: Arc::clone(&feed),
                rows: rows.clone(),
            });
        }
        match (&self.persistence, &self.remote) {
            (Some(p), Some(remote)) => {
                p.disk.log_rows(Arc::clone(&feed), rows.clone());
                let exposed = exposed().into();
                remote.offer(Accepted {
                    feed,
                    rows,
                    exposed,
                });
            }
            (Some(p), None) => p.disk.log_rows(feed, rows),
            (None, Some(remote)) => {
                let exposed = exposed().into();
                remote.offer(Accepted {
                    feed,
                    rows,
                    exposed,
                });
            }
            (None, None) => {}
        }
    }
}

/// Starts the store thread: it applies batches from `batches`, expires blocks older than
/// `retention`, and hands accepted rows to `outlets`. It ends when `stop` fires or every
/// sender of `batches` is gone.
pub fn spawn(
    handle: StoreHandle,
    retention: Duration,
    batches: Receiver<IngestBatch>,
    stop: Receiver<()>,
    stats: Arc<IngestStats>,
    outlets: Outlets,
    watch: &Arc<Watch>,
) -> std::io::Result<JoinHandle<()>> {
    let retention = timestamp::duration_micros(retention);
    // Vital: it owns the history; a panic stops the process (recovery rebuilds it).
    watch.spawn_vital("store", move || {
        let mut last_compaction = std::time::Instant::now();
        loop {
            watch::injected_panic_point();
            select! {
                recv(batches) -> msg => match msg {
                    Ok(batch) => apply_batch(&handle, batch, &stats, &outlets),
                    Err(_) => return,
                },
                recv(stop) -> _ => return,
                default(IDLE_TICK) => {}
            }
            handle.expire(timestamp::now_micros().saturating_sub(retention));
            stats.set_retained_rows(handle.read().retained_rows());
            if let Some(p) = &outlets.persistence {
                if last_compaction.elapsed() >= p.compaction_interval
                    && compact(&handle, &p.disk, timestamp::now_micros())
                {
                    last_compaction = std::time::Instant::now();
                }
            }
        }
    })
}

fn apply_batch(handle: &StoreHandle, batch: IngestBatch, stats: &IngestStats, outlets: &Outlets) {
    if !batch.feed.is_empty() {
        let mut outcome = handle.apply(&batch.feed);
        stats.record_ingest(batch.source, &outcome);
        if outlets.remote.is_some() || outlets.persistence.is_some() || outlets.stream.is_some() {
            let columns = std::mem::take(&mut outcome.columns);
            let exposed = || {
                let store = handle.read();
                columns
                    .iter()
                    .map(|&id| Arc::clone(store.metrics().exposed(id)))
                    .collect()
            };
            outlets.accepted(
                batch.source,
                batch.feed,
                std::mem::take(&mut outcome.accepted_rows),
                exposed,
            );
        }
    }
    if batch.last {
        stats.record_poll_timing(batch.source, batch.due.elapsed(), batch.interval);
        if let Some(p) = &outlets.persistence {
            p.disk.poll_done();
        }
        if let Some(stream) = &outlets.stream {
            stream.offer(Offer::PollDone {
                source: batch.source,
            });
        }
    }
}

/// Asks the persist thread to compact: export the blocks sealed since the last compaction
/// (at most what its cap on block files waiting for the disk still allows) with a
/// checkpoint of every other block, write them, and trim the WAL before them. Whether it
/// was asked: when the persist thread cannot take blocks now, nothing is exported, and the
/// blocks wait in memory (their rows in the WAL) for a later try. The export itself runs in
/// the persist thread, a chunk of switches per hold of the store's lock, so this thread
/// goes on storing polls meanwhile.
pub(crate) fn compact(handle: &StoreHandle, disk: &Disk, now: Micros) -> bool {
    disk.can_take_blocks() && disk.compact(handle, now)
}
