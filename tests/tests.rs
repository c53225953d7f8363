//! Integration tests: the real binaries on ephemeral loopback ports, driven by a blocking
//! client and a fake feed the test controls.

mod util;

mod access;
mod api;
mod dashboard;
mod deploy;
mod durability;
mod fleet;
mod fuzz;
mod generator;
mod history;
mod hostile;
mod ingest;
mod lifecycle;
mod prometheus;
mod resilience;
mod sources;
mod stream;
mod threads;
