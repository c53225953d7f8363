//! `fabric-telemetry`: network fabric telemetry aggregation.
//!
//! Two programs share this library, and its layout says which code is whose:
//! - [`generator`]: `telemetry-generator`: the simulated fabric ([`generator`] itself) and its
//!   HTTP feed ([`generator::service`]).
//! - [`server`]: `metrics-server`: its wiring ([`server::MetricsServer`]) and its parts:
//!   [`server::poller`] (fetch → parse → batch, one thread per source), [`server::ingest`] (the
//!   store thread), [`server::store`] (the in-memory engine: history, dedupe, retention,
//!   aggregates), [`server::persist`] (the data directory: WAL, block files, recovery, lock),
//!   [`server::remote_write`], [`server::api`] with [`server::query`] and [`server::access`]
//!   (routing, handlers, tokens, rate limits), [`server::stats`] (request and ingest counters).
//! - [`shared`]: what both use: [`shared::http`] (the HTTP layer over the vendored tiny_http),
//!   [`shared::feed`] (the CSV format both ways), [`shared::metric`], [`shared::timestamp`],
//!   [`shared::wire`], [`shared::logging`], [`shared::process`] (process set-up and the signal
//!   loop), [`shared::watch`] (no thread dies unseen).
//! - [`config`]: both programs' flags, each declared once.
//!
//! Everything is synchronous: named std threads talking through crossbeam channels and
//! immutable snapshots. `docs/ARCHITECTURE.md` has the data flow, layers and invariants.

pub mod config;
pub mod generator;
pub mod server;
pub mod shared;

/// Cases per proptest property: 512 in `cargo test`, `PROPTEST_CASES` for longer fuzzing runs
/// (an explicit proptest config would otherwise ignore the variable).
#[cfg(test)]
pub(crate) fn proptest_cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}
