//! `fabric-telemetry`: network fabric telemetry aggregation.
//!
//! Two programs share this library. `telemetry-generator` simulates switch counters and serves
//! them as a CSV feed; `metrics-server` polls feeds, keeps validated history, and answers a JSON
//! API about current values, aggregates and its own health. Everything is synchronous: named
//! std threads talking through crossbeam channels and immutable snapshots.
//!
//! Module map (see `docs/ARCHITECTURE.md` for the data flow and invariants):
//! - [`feed`]: the CSV format both ways, row validation, reject reasons.
//! - [`metric`]: metric kinds (gauge, count); metrics are data, not fields.
//! - [`timestamp`]: RFC 3339 in (any offset), canonical UTC out.
//! - [`generator`], [`generator_http`]: the simulated fabric and its HTTP feed.
//! - [`poller`]: fetch → parse → batch, one thread per source.
//! - [`store`]: history, dedupe, retention, window aggregates; publishes views.
//! - [`api`], [`query`]: routing, handlers, error mapping, query strings.
//! - [`access`]: bearer tokens and per-client rate limits.
//! - [`stats`]: request and ingest counters.
//! - [`remote_write`]: pushes accepted samples to a Prometheus remote-write receiver.
//! - [`persist`]: the data directory: WAL, block files, recovery, lock.
//! - [`wire`]: varints and a bounds-checked reader for the binary formats.
//! - [`http`]: the tiny_http worker pool both programs use.
//! - [`config`], [`logging`], [`server`], [`process`]: flags, logs, wiring, process set-up and clean shutdown.

pub mod access;
pub mod api;

pub mod config;
pub mod feed;
pub mod generator;
pub mod generator_http;
pub mod http;
pub mod ingest;
pub mod logging;
pub mod metric;
pub mod persist;
pub mod poller;
pub mod query;
pub mod remote_write;

pub mod process;
pub mod server;

pub mod stats;
pub mod store;
pub mod timestamp;
pub mod watch;
pub mod wire;

/// Cases per proptest property: 512 in `cargo test`, `PROPTEST_CASES` for longer fuzzing runs
/// (an explicit proptest config would otherwise ignore the variable).
#[cfg(test)]
pub(crate) fn proptest_cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}
