//! A simulated InfiniBand fabric as UFM Telemetry serves it: `--switches` switches of
//! `--ports` ports each, 30 cumulative 64-bit PMA counters per port, rendered as UFM's CSV
//! (`/csv/metrics`) and as Prometheus text (`/metrics`, millisecond timestamps).
//!
//! What real fabrics do, it does: data counters grow at a plausible, wandering fraction of a
//! 200 Gb/s port's line rate (in bytes: UFM converts the PMA's 4-octet words); packet counters
//! follow at a few KiB per packet; `PortXmitWait` grows when a port is busy; about one port in
//! a hundred has a flaky link that sends bursts of symbol errors, link recoveries and receive
//! errors; now and then a port's counters are cleared (a reset: every counter back to zero);
//! and the legacy 32-bit `PortXmitData`/`PortRcvData` stick at 2^32-1 once they fill up, as
//! PMA counters without the extended set do. GUIDs are written as UFM writes `node_guid`: hex
//! without `0x` or leading zeros.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::shared::feed::write_uint;
use crate::shared::timestamp::Micros;

/// The counters of every port, in column order.
pub const COUNTERS: [&str; 30] = [
    "PortXmitDataExtended",
    "PortRcvDataExtended",
    "PortXmitPktsExtended",
    "PortRcvPktsExtended",
    "PortUnicastXmitPktsExtended",
    "PortUnicastRcvPktsExtended",
    "PortMulticastXmitPktsExtended",
    "PortMulticastRcvPktsExtended",
    "SymbolErrorCounterExtended",
    "LinkErrorRecoveryCounterExtended",
    "LinkDownedCounterExtended",
    "PortRcvErrorsExtended",
    "PortRcvRemotePhysicalErrorsExtended",
    "PortRcvSwitchRelayErrorsExtended",
    "PortXmitDiscardsExtended",
    "PortXmitConstraintErrorsExtended",
    "PortRcvConstraintErrorsExtended",
    "LocalLinkIntegrityErrorsExtended",
    "ExcessiveBufferOverrunErrorsExtended",
    "VL15DroppedExtended",
    "PortXmitWaitExtended",
    "QP1DroppedExtended",
    "PortLocalPhysicalErrorsExtended",
    "PortMalformedPktErrorsExtended",
    "PortBufferOverrunErrorsExtended",
    "PortDLIDMappingErrorsExtended",
    "PortVLMappingErrorsExtended",
    "PortLoopingErrorsExtended",
    "PortXmitData",
    "PortRcvData",
];

const XMIT_DATA: usize = 0;
const RCV_DATA: usize = 1;
const XMIT_PKTS: usize = 2;
const RCV_PKTS: usize = 3;
const UNICAST_XMIT: usize = 4;
const UNICAST_RCV: usize = 5;
const MULTICAST_XMIT: usize = 6;
const MULTICAST_RCV: usize = 7;
const SYMBOL_ERRORS: usize = 8;
const LINK_RECOVERY: usize = 9;
const LINK_DOWNED: usize = 10;
const RCV_ERRORS: usize = 11;
const XMIT_DISCARDS: usize = 14;
const XMIT_WAIT: usize = 20;
const LEGACY_XMIT_DATA: usize = 28;
const LEGACY_RCV_DATA: usize = 29;

/// A 200 Gb/s (HDR) port's line rate in bytes per second.
const LINE_RATE_BYTES: f64 = 25e9;
/// Chance per port per tick that its counters are cleared.
const RESET_CHANCE: f64 = 1e-5;
/// Share of ports with a flaky link, and the chance per tick that one starts a burst.
const FLAKY_SHARE: f64 = 0.01;
const BURST_CHANCE: f64 = 0.02;

/// One port's state.
#[derive(Debug, Clone, Copy)]
struct Port {
    /// Fraction of line rate, transmit and receive.
    xmit_load: f32,
    rcv_load: f32,
    flaky: bool,
    burst_ticks_left: u16,
}

/// The simulated fabric.
pub struct UfmFabric {
    rng: StdRng,
    ports_per_switch: usize,
    /// Node GUID of each switch.
    guids: Vec<u64>,
    ports: Vec<Port>,
    /// `COUNTERS.len()` per port, port-major.
    counters: Vec<u64>,
    interval_s: f64,
}

/// The counters at one tick, shared with the HTTP side, which renders them.
#[derive(Debug, Clone)]
pub struct UfmFrame {
    ports_per_switch: usize,
    guids: Vec<u64>,
    counters: Vec<u64>,
}

impl UfmFabric {
    pub fn new(
        switches: usize,
        ports_per_switch: usize,
        interval_s: f64,
        seed: Option<u64>,
    ) -> UfmFabric {
        let mut rng = match seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let n = switches * ports_per_switch;
        let ports = (0..n)
            .map(|_| Port {
                xmit_load: rng.random_range(0.05..0.7),
                rcv_load: rng.random_range(0.05..0.7),
                flaky: rng.random_bool(FLAKY_SHARE),
                burst_ticks_left: 0,
            })
            .collect();
        // Counters start where a fabric up for weeks would be: well into 64 bits.
        let mut counters = vec![0u64; n * COUNTERS.len()];
        for port in counters.chunks_mut(COUNTERS.len()) {
            let bytes = rng.random_range(1u64 << 40..1u64 << 50);
            port[XMIT_DATA] = bytes;
            port[RCV_DATA] = bytes / 3 * 2;
            port[XMIT_PKTS] = bytes / 4096;
            port[RCV_PKTS] = bytes / 6144;
            port[UNICAST_XMIT] = port[XMIT_PKTS] / 100 * 98;
            port[UNICAST_RCV] = port[RCV_PKTS] / 100 * 98;
            port[MULTICAST_XMIT] = port[XMIT_PKTS] / 1000;
            port[MULTICAST_RCV] = port[RCV_PKTS] / 1000;
            port[XMIT_WAIT] = bytes / 65_536;
            port[LEGACY_XMIT_DATA] = port[XMIT_DATA].min(u64::from(u32::MAX));
            port[LEGACY_RCV_DATA] = port[RCV_DATA].min(u64::from(u32::MAX));
        }
        UfmFabric {
            rng,
            ports_per_switch,
            guids: (0..switches as u64)
                .map(|i| 0x0002_c903_0000_0000 + (i << 8) + 0xa0)
                .collect(),
            ports,
            counters,
            interval_s,
        }
    }

    pub fn len(&self) -> usize {
        self.ports.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// Advances every port by one interval.
    pub fn tick(&mut self) {
        let rng = &mut self.rng;
        for (port, counters) in self
            .ports
            .iter_mut()
            .zip(self.counters.chunks_mut(COUNTERS.len()))
        {
            if rng.random_bool(RESET_CHANCE) {
                counters.iter_mut().for_each(|c| *c = 0);
            }
            port.xmit_load = (port.xmit_load + rng.random_range(-0.03..0.03)).clamp(0.01, 0.98);
            port.rcv_load = (port.rcv_load + rng.random_range(-0.03..0.03)).clamp(0.01, 0.98);
            let xmit = (f64::from(port.xmit_load) * LINE_RATE_BYTES * self.interval_s) as u64;
            let rcv = (f64::from(port.rcv_load) * LINE_RATE_BYTES * self.interval_s) as u64;
            let add = |c: &mut u64, n: u64| *c = c.wrapping_add(n);
            add(&mut counters[XMIT_DATA], xmit);
            add(&mut counters[RCV_DATA], rcv);
            let xmit_pkts = xmit / rng.random_range(2048..4096);
            let rcv_pkts = rcv / rng.random_range(2048..4096);
            add(&mut counters[XMIT_PKTS], xmit_pkts);
            add(&mut counters[RCV_PKTS], rcv_pkts);
            add(&mut counters[UNICAST_XMIT], xmit_pkts / 100 * 98);
            add(&mut counters[UNICAST_RCV], rcv_pkts / 100 * 98);
            add(&mut counters[MULTICAST_XMIT], xmit_pkts / 1000);
            add(&mut counters[MULTICAST_RCV], rcv_pkts / 1000);
            if port.xmit_load > 0.8 {
                add(&mut counters[XMIT_WAIT], rng.random_range(1_000..100_000));
                if rng.random_bool(0.05) {
                    add(&mut counters[XMIT_DISCARDS], rng.random_range(1..10));
                }
            }
            for legacy in [(LEGACY_XMIT_DATA, xmit), (LEGACY_RCV_DATA, rcv)] {
                counters[legacy.0] = counters[legacy.0]
                    .saturating_add(legacy.1)
                    .min(u64::from(u32::MAX));
            }
            if port.flaky && port.burst_ticks_left == 0 && rng.random_bool(BURST_CHANCE) {
                port.burst_ticks_left = rng.random_range(3..=20);
            }
            if port.burst_ticks_left > 0 {
                port.burst_ticks_left -= 1;
                add(&mut counters[SYMBOL_ERRORS], rng.random_range(10..2_000));
                add(&mut counters[RCV_ERRORS], rng.random_range(0..50));
                if rng.random_bool(0.2) {
                    add(&mut counters[LINK_RECOVERY], 1);
                }
                if rng.random_bool(0.02) {
                    add(&mut counters[LINK_DOWNED], 1);
                }
            }
        }
    }

    /// The counters as they are now.
    pub fn frame(&self) -> UfmFrame {
        UfmFrame {
            ports_per_switch: self.ports_per_switch,
            guids: self.guids.clone(),
            counters: self.counters.clone(),
        }
    }
}

impl UfmFrame {
    fn ports(&self) -> impl Iterator<Item = (u64, usize, &[u64])> + '_ {
        self.counters
            .chunks(COUNTERS.len())
            .enumerate()
            .map(|(i, counters)| {
                let switch = i / self.ports_per_switch.max(1);
                (
                    self.guids[switch],
                    i % self.ports_per_switch.max(1) + 1,
                    counters,
                )
            })
    }

    /// UFM Telemetry's CSV: `timestamp` in microseconds, `source_id`, an empty `tag`,
    /// `node_guid` in UFM's short spelling, `port_guid`, `port_num`, then the counters.
    pub fn render_csv(&self, produced_at: Micros, out: &mut Vec<u8>) {
        self.render_csv_shard(produced_at, None, out);
    }

    /// [`UfmFrame::render_csv`] of one shard, as UFM answers `?num_shards=N&shard=I`
    /// (`sharding_field=port_guid`: a switch's ports share a port GUID, so a shard holds whole
    /// switches): here, the switches whose number is I modulo N.
    pub fn render_csv_shard(
        &self,
        produced_at: Micros,
        shard: Option<(u64, u64)>,
        out: &mut Vec<u8>,
    ) {
        out.clear();
        out.reserve(self.counters.len() * 14 + 128);
        out.extend_from_slice(b"timestamp,source_id,tag,node_guid,port_guid,port_num");
        for name in COUNTERS {
            out.push(b',');
            out.extend_from_slice(name.as_bytes());
        }
        out.push(b'\n');
        let stamp = produced_at.max(0) as u64;
        let per_switch = self.ports_per_switch.max(1);
        for (i, (guid, port, counters)) in self.ports().enumerate() {
            if shard.is_some_and(|(index, count)| (i / per_switch) as u64 % count != index) {
                continue;
            }
            write_uint(out, stamp);
            out.extend_from_slice(
                format!(",0x{guid:016x},,{guid:x},0x{:016x},", guid + 1).as_bytes(),
            );
            write_uint(out, port as u64);
            for &value in counters {
                out.push(b',');
                write_uint(out, value);
            }
            out.push(b'\n');
        }
    }

    /// UFM Telemetry's Prometheus text: one counter family per column, samples labelled
    /// `source_id`, `node_guid`, `port_num`, timestamps in milliseconds.
    pub fn render_prometheus(&self, produced_at: Micros, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(self.counters.len() * 90);
        let stamp = (produced_at.max(0) / 1000) as u64;
        for (column, name) in COUNTERS.iter().enumerate() {
            out.extend_from_slice(format!("# TYPE {name} counter\n").as_bytes());
            for (guid, port, counters) in self.ports() {
                out.extend_from_slice(
                    format!("{name}{{source_id=\"0x{guid:016x}\",node_guid=\"{guid:x}\",port_num=\"{port}\"}} ")
                        .as_bytes(),
                );
                write_uint(out, counters[column]);
                out.push(b' ');
                write_uint(out, stamp);
                out.push(b'\n');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_only_grow_between_resets_and_legacy_ones_saturate() {
        let mut fabric = UfmFabric::new(4, 8, 1.0, Some(3));
        let mut before = fabric.frame().counters;
        let mut saturated = 0;
        for _ in 0..300 {
            fabric.tick();
            let after = fabric.frame().counters;
            for (b, a) in before
                .chunks(COUNTERS.len())
                .zip(after.chunks(COUNTERS.len()))
            {
                let reset = a.iter().zip(b).any(|(a, b)| a < b);
                if reset {
                    assert!(
                        a[XMIT_DATA] < b[XMIT_DATA],
                        "a reset clears the data counters too"
                    );
                }
                assert!(a[LEGACY_XMIT_DATA] <= u64::from(u32::MAX));
                saturated += usize::from(a[LEGACY_XMIT_DATA] == u64::from(u32::MAX));
            }
            before = after;
        }
        assert!(saturated > 0, "legacy data counters fill up at 2^32-1");
        // 300 s at 1-98% of 25 GB/s: the data counters moved by terabytes.
        let first = UfmFabric::new(4, 8, 1.0, Some(3)).frame().counters[XMIT_DATA];
        assert!(before[XMIT_DATA] > first + 300);
    }

    #[test]
    fn renders_are_what_the_server_reads() {
        let mut fabric = UfmFabric::new(2, 3, 1.0, Some(4));
        fabric.tick();
        let frame = fabric.frame();
        let mut csv = Vec::new();
        frame.render_csv(1_700_000_000_000_000, &mut csv);
        let text = String::from_utf8(csv).expect("utf-8");
        assert_eq!(text.lines().count(), 1 + 6);
        let first = text.lines().nth(1).expect("row");
        assert!(
            first.starts_with("1700000000000000,0x0002c903000000a0,,2c903000000a0,"),
            "{first}"
        );
        let mut prom = Vec::new();
        frame.render_prometheus(1_700_000_000_000_000, &mut prom);
        let prom = String::from_utf8(prom).expect("utf-8");
        assert_eq!(prom.lines().count(), COUNTERS.len() * 7);
        assert!(prom.contains("PortXmitDataExtended{source_id=\"0x0002c903000000a0\",node_guid=\"2c903000000a0\",port_num=\"1\"} "));
        assert!(prom
            .lines()
            .nth(1)
            .expect("sample")
            .ends_with(" 1700000000000"));
    }
}
