//! The simulated fabric: per-switch counters that move like real ones, and the thread that
//! advances them every interval and publishes the rendered CSV feed as an immutable snapshot.
//!
//! Values are fixed-point (hundredths) so a tick renders integers, not floats: bandwidth
//! 0.00–100.00 Gb/s and latency 0.10–1.00 ms are bounded random walks, errors a small count per
//! interval with occasional bursts. The thread renders each tick once; HTTP readers share it
//! through [`SnapshotCell`] and never wait on the writer.
//!
//! `--format ufm` simulates an InfiniBand fabric as UFM Telemetry serves it instead (see
//! [`ufm`]).

pub mod service;
pub mod ufm;

use std::sync::OnceLock;

use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::shared::feed;
use crate::shared::timestamp::{self, Micros};

const BANDWIDTH_MAX_CENTI: i32 = 10_000;
const BANDWIDTH_STEP_CENTI: i32 = 150;
const LATENCY_MIN_CENTI: i32 = 10;
const LATENCY_MAX_CENTI: i32 = 100;
const LATENCY_STEP_CENTI: i32 = 2;
/// Chance per switch per tick that an error burst starts.
const BURST_CHANCE: f64 = 0.002;

#[derive(Debug, Clone, Copy)]
struct SwitchState {
    bandwidth_centi: i32,
    latency_centi: i32,
    errors: u64,
    burst_ticks_left: u32,
}

/// The simulated switches and their current counters.
pub struct Fabric {
    rng: StdRng,
    switch_ids: Vec<String>,
    switches: Vec<SwitchState>,
}

/// Keeps a random walk inside `[lo, hi]` by reflecting at the bounds.
fn reflect(value: i32, lo: i32, hi: i32) -> i32 {
    if value < lo {
        (2 * lo - value).min(hi)
    } else if value > hi {
        (2 * hi - value).max(lo)
    } else {
        value
    }
}

impl Fabric {
    /// `n_switches` switches named `switch1`…`switchN`; the same `seed` gives the same values.
    pub fn new(n_switches: usize, seed: Option<u64>) -> Fabric {
        let mut rng = match seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let switches = (0..n_switches)
            .map(|_| SwitchState {
                bandwidth_centi: rng.random_range(2_000..=8_000),
                latency_centi: rng.random_range(20..=60),
                errors: 0,
                burst_ticks_left: 0,
            })
            .collect();
        Fabric {
            rng,
            switch_ids: (1..=n_switches).map(|i| format!("switch{i}")).collect(),
            switches,
        }
    }

    pub fn len(&self) -> usize {
        self.switches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.switches.is_empty()
    }

    /// Advances every counter by one interval.
    pub fn tick(&mut self) {
        for switch in &mut self.switches {
            let step = self
                .rng
                .random_range(-BANDWIDTH_STEP_CENTI..=BANDWIDTH_STEP_CENTI);
            switch.bandwidth_centi = reflect(switch.bandwidth_centi + step, 0, BANDWIDTH_MAX_CENTI);
            let step = self
                .rng
                .random_range(-LATENCY_STEP_CENTI..=LATENCY_STEP_CENTI);
            switch.latency_centi = reflect(
                switch.latency_centi + step,
                LATENCY_MIN_CENTI,
                LATENCY_MAX_CENTI,
            );
            if switch.burst_ticks_left == 0 && self.rng.random_bool(BURST_CHANCE) {
                switch.burst_ticks_left = self.rng.random_range(3..=10);
            }
            switch.errors = if switch.burst_ticks_left > 0 {
                switch.burst_ticks_left -= 1;
                self.rng.random_range(20..=200)
            } else if self.rng.random_bool(0.2) {
                self.rng.random_range(1..=3)
            } else {
                0
            };
        }
    }

    /// Renders the whole feed, every row stamped `produced_at`.
    pub fn render_csv(&self, produced_at: Micros, out: &mut Vec<u8>) {
        let mut ts = [0u8; timestamp::CANONICAL_LEN];
        timestamp::encode(produced_at, &mut ts);
        out.clear();
        out.reserve(self.switches.len() * 48 + 64);
        feed::write_header(out);
        for (id, switch) in self.switch_ids.iter().zip(&self.switches) {
            feed::write_row(
                out,
                id,
                switch.bandwidth_centi.unsigned_abs(),
                switch.latency_centi.unsigned_abs(),
                switch.errors,
                &ts,
            );
        }
    }
}

/// What the generator simulates.
pub enum Simulation {
    Classic(Fabric),
    Ufm(ufm::UfmFabric),
}

impl Simulation {
    fn tick(&mut self) {
        match self {
            Simulation::Classic(fabric) => fabric.tick(),
            Simulation::Ufm(fabric) => fabric.tick(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Simulation::Classic(fabric) => fabric.len(),
            Simulation::Ufm(fabric) => fabric.len(),
        }
    }

    /// This tick, rendered as the feed's CSV.
    fn snapshot(&self, produced_at: Micros, tick: u64) -> Snapshot {
        let mut csv = Vec::new();
        let frame = match self {
            Simulation::Classic(fabric) => {
                fabric.render_csv(produced_at, &mut csv);
                None
            }
            Simulation::Ufm(fabric) => {
                let frame = fabric.frame();
                frame.render_csv(produced_at, &mut csv);
                Some(Arc::new(frame))
            }
        };
        Snapshot {
            csv,
            produced_at,
            tick,
            frame,
            prometheus: OnceLock::new(),
        }
    }
}

/// One rendered tick of the feed.
#[derive(Debug)]
pub struct Snapshot {
    pub csv: Vec<u8>,
    pub produced_at: Micros,
    /// Counts ticks since the generator started (the first published snapshot is 1).
    pub tick: u64,
    /// The UFM simulation's counters at this tick (it has a second rendering).
    pub frame: Option<Arc<ufm::UfmFrame>>,
    /// The Prometheus rendering of `frame`, made on the first request for it.
    prometheus: OnceLock<Vec<u8>>,
}

impl Snapshot {
    /// The Prometheus text of a UFM tick (rendered once, on first use).
    pub fn prometheus(&self) -> Option<&[u8]> {
        let frame = self.frame.as_ref()?;
        Some(self.prometheus.get_or_init(|| {
            let mut out = Vec::new();
            frame.render_prometheus(self.produced_at, &mut out);
            out
        }))
    }
}

/// The Prometheus rendering of a snapshot, shareable as a reply body.
pub struct PrometheusBody(pub Arc<Snapshot>);

impl AsRef<[u8]> for PrometheusBody {
    fn as_ref(&self) -> &[u8] {
        self.0.prometheus().unwrap_or_default()
    }
}

impl AsRef<[u8]> for Snapshot {
    fn as_ref(&self) -> &[u8] {
        &self.csv
    }
}

/// The newest snapshot, shared between the generator thread and HTTP readers. The lock is only
/// held to clone or replace an `Arc`, never while rendering or writing a socket.
#[derive(Clone)]
pub struct SnapshotCell(Arc<RwLock<Arc<Snapshot>>>);

impl SnapshotCell {
    fn new(first: Snapshot) -> SnapshotCell {
        SnapshotCell(Arc::new(RwLock::new(Arc::new(first))))
    }

    pub fn latest(&self) -> Arc<Snapshot> {
        match self.0.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn publish(&self, snapshot: Snapshot) {
        let snapshot = Arc::new(snapshot);
        match self.0.write() {
            Ok(mut guard) => *guard = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
    }
}

/// Starts the generator thread. The first snapshot is rendered before this returns, so the
/// feed is never empty. The thread stops when `stop` receives a message or is disconnected.
pub fn spawn(
    mut fabric: Simulation,
    interval: Duration,
    stop: Receiver<()>,
    watch: &std::sync::Arc<crate::shared::watch::Watch>,
) -> std::io::Result<(SnapshotCell, JoinHandle<()>)> {
    fabric.tick();
    let cell = SnapshotCell::new(fabric.snapshot(timestamp::now_micros(), 1));
    let writer = cell.clone();
    // Vital: the simulated counters live here; a panic stops the process.
    let handle = watch.spawn_vital("generator", move || {
        run_ticks(fabric, interval, &stop, &writer)
    })?;
    Ok((cell, handle))
}

fn run_ticks(mut fabric: Simulation, interval: Duration, stop: &Receiver<()>, cell: &SnapshotCell) {
    let mut next_tick = Instant::now() + interval;
    let mut tick = 1u64;
    let mut late_ticks = 0u64;
    loop {
        match stop.recv_timeout(next_tick.saturating_duration_since(Instant::now())) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        crate::shared::watch::injected_panic_point();
        fabric.tick();
        tick += 1;
        cell.publish(fabric.snapshot(timestamp::now_micros(), tick));
        next_tick += interval;
        let now = Instant::now();
        if next_tick < now {
            // Fell behind (huge fabric, starved CPU): skip the missed ticks instead of bursting.
            late_ticks += 1;
            if late_ticks.is_power_of_two() {
                log::warn!(
                    "generator fell behind: a tick of {} switches took longer than {:?} ({late_ticks} late ticks so far)",
                    fabric.len(),
                    interval
                );
            }
            next_tick = now + interval;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_stay_in_their_ranges_and_move() {
        let mut fabric = Fabric::new(50, Some(1));
        let first = fabric.switches.clone();
        let mut total_errors = 0;
        for _ in 0..2_000 {
            fabric.tick();
            for s in &fabric.switches {
                assert!((0..=BANDWIDTH_MAX_CENTI).contains(&s.bandwidth_centi));
                assert!((LATENCY_MIN_CENTI..=LATENCY_MAX_CENTI).contains(&s.latency_centi));
                total_errors += s.errors;
            }
        }
        assert!(total_errors > 0);
        let moved = first
            .iter()
            .zip(&fabric.switches)
            .filter(|(a, b)| a.bandwidth_centi != b.bandwidth_centi)
            .count();
        assert!(moved > 40, "only {moved} of 50 bandwidths moved");
    }

    #[test]
    fn a_step_is_small() {
        let mut fabric = Fabric::new(100, Some(2));
        for _ in 0..100 {
            let before = fabric.switches.clone();
            fabric.tick();
            for (a, b) in before.iter().zip(&fabric.switches) {
                assert!((a.bandwidth_centi - b.bandwidth_centi).abs() <= BANDWIDTH_STEP_CENTI);
                assert!((a.latency_centi - b.latency_centi).abs() <= LATENCY_STEP_CENTI);
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_feed() {
        let render = |seed| {
            let mut fabric = Fabric::new(20, Some(seed));
            fabric.tick();
            fabric.tick();
            let mut out = Vec::new();
            fabric.render_csv(0, &mut out);
            out
        };
        assert_eq!(render(9), render(9));
        assert_ne!(render(9), render(10));
    }

    #[test]
    fn reflect_keeps_within_bounds() {
        assert_eq!(reflect(-5, 0, 100), 5);
        assert_eq!(reflect(105, 0, 100), 95);
        assert_eq!(reflect(50, 0, 100), 50);
        assert_eq!(reflect(-500, 0, 100), 100);
    }
}
