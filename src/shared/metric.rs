//! What a metric is. Metrics are data, not fields: any feed column or Prometheus sample name
//! that is not part of a series' key is a metric. A metric's kind decides how its values are
//! validated, stored and written as JSON; see [`kind_of`] for how a kind is decided.

/// How a metric's values behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A level that moves up and down (bandwidth in Gb/s, latency in ms): any finite number.
    Gauge,
    /// Events counted over one feed interval (the classic feed's `errors`): a non-negative
    /// integer, summed over history and written to JSON as an integer.
    Count,
    /// A cumulative fabric counter (`PortXmitDataExtended`, `..._total`): an unsigned 64-bit
    /// integer, stored and answered exactly. It only grows, except when the port resets it
    /// (a decrease, as Prometheus treats one) or it saturates at 2^16-1, 2^32-1 or 2^64-1.
    /// `words`: the raw PMA data counters count 4-octet words, not bytes (see
    /// [`counts_data_words`]); rates of such a counter are given in bytes.
    Counter { words: bool },
}

impl MetricKind {
    pub fn is_counter(self) -> bool {
        matches!(self, MetricKind::Counter { .. })
    }

    /// Bytes per unit of a counter whose rate is answered in bytes (4 for word counters).
    pub fn octets_per_unit(self) -> u64 {
        match self {
            MetricKind::Counter { words: true } => 4,
            _ => 1,
        }
    }
}

/// A present sample value. Gauges and counts are `f64`s; counters are exact `u64`s from the
/// feed to the answer (an `f64` holds every integer only up to 2^53, and real fabrics report
/// counters above it, such as a faulty port's 18446744073709551576).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Float(f64),
    Int(u64),
}

impl Value {
    /// The value as an `f64` (the nearest one, for an `Int` above 2^53).
    pub fn as_f64(self) -> f64 {
        match self {
            Value::Float(v) => v,
            Value::Int(v) => v as f64,
        }
    }

    /// A cell from an `f64`, NaN meaning absent (tests and the classic feed's fast path).
    pub fn cell(v: f64) -> Option<Value> {
        (!v.is_nan()).then_some(Value::Float(v))
    }

    /// Whether it is a counter, and its bits: equal exactly when the values are identical.
    pub fn bits(self) -> (bool, u64) {
        match self {
            Value::Float(v) => (false, v.to_bits()),
            Value::Int(v) => (true, v),
        }
    }

    /// Whether two cells are the same value bit for bit (`==` says NaN ≠ NaN, 0.0 = -0.0).
    pub fn identical(a: Option<Value>, b: Option<Value>) -> bool {
        match (a, b) {
            (Some(Value::Float(a)), Some(Value::Float(b))) => a.to_bits() == b.to_bits(),
            (a, b) => a == b,
        }
    }
}

/// Values at which a counter is stuck rather than counting: the all-ones of the 16-, 32- and
/// 64-bit PMA counter widths. A counter reading one of them has no meaningful rate.
pub const SATURATION_VALUES: [u64; 3] = [0xffff, 0xffff_ffff, u64::MAX];

/// `ibdiagnet`'s "not available" sentinel (`0xfffffffffffffffe`), read as no sample.
pub const NOT_AVAILABLE_SENTINEL: u64 = u64::MAX - 1;

/// The metrics every feed of the original format carries, in header order.
pub const BUILTIN_METRICS: [&str; 3] = ["bandwidth", "latency", "errors"];

/// Largest count value accepted: beyond 2^53 an `f64` no longer holds every integer.
pub const MAX_COUNT: f64 = 9_007_199_254_740_992.0;

/// InfiniBand PMA port counters (IBA 16.1.3, `perfquery -x`, UFM Telemetry, ibdiagnet), without
/// the `Extended` suffix UFM and perfquery add to their 64-bit versions. Matched ignoring case
/// and `_`, so sysfs spellings (`port_rcv_errors`, `symbol_error`) match too.
const IB_COUNTERS: [&str; 36] = [
    "PortXmitData",
    "PortRcvData",
    "PortXmitPkts",
    "PortRcvPkts",
    "PortUnicastXmitPkts",
    "PortUnicastRcvPkts",
    "PortMulticastXmitPkts",
    "PortMulticastRcvPkts",
    "SymbolErrorCounter",
    "SymbolError",
    "LinkErrorRecoveryCounter",
    "LinkErrorRecovery",
    "LinkDownedCounter",
    "LinkDowned",
    "PortRcvErrors",
    "PortRcvRemotePhysicalErrors",
    "PortRcvSwitchRelayErrors",
    "PortXmitDiscards",
    "PortXmitConstraintErrors",
    "PortRcvConstraintErrors",
    "LocalLinkIntegrityErrors",
    "ExcessiveBufferOverrunErrors",
    "VL15Dropped",
    "PortXmitWait",
    "QP1Dropped",
    "PortLocalPhysicalErrors",
    "PortMalformedPktErrors",
    "PortBufferOverrunErrors",
    "PortDLIDMappingErrors",
    "PortVLMappingErrors",
    "PortLoopingErrors",
    "PortInactiveDiscards",
    "PortNeighborMTUDiscards",
    "PortSwLifetimeLimitDiscards",
    "PortSwHOQLifetimeLimitDiscards",
    "PortRcvErrorsDetails",
];

/// The PMA data counters, which count 4-octet words.
const IB_DATA_COUNTERS: [&str; 2] = ["PortXmitData", "PortRcvData"];

/// `PortXmitDataExtended` / `port_xmit_data` / `infiniband_portxmitdata_total` →
/// `portxmitdata`: case, `_`, an `infiniband` prefix and `extended`/`total` suffixes dropped.
fn folded(name: &str) -> String {
    let name: String = name
        .chars()
        .filter(|&c| c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let name = name.strip_prefix("infiniband").unwrap_or(&name);
    let name = name.strip_suffix("total").unwrap_or(name);
    name.strip_suffix("extended").unwrap_or(name).to_string()
}

fn is_known(list: &[&str], name: &str) -> bool {
    let name = folded(name);
    list.iter().any(|known| known.to_ascii_lowercase() == name)
}

/// Whether a counter with this name counts 4-octet words: the PMA data counters under their
/// PMA names (`PortXmitData`, `PortRcvDataExtended`, sysfs `port_xmit_data`), unless the source
/// converts them (UFM Telemetry does, so the caller says `converted`). Exporter outputs are
/// already bytes and named so (`..._bytes_total`), which this never matches.
pub fn counts_data_words(name: &str, converted: bool) -> bool {
    !converted && is_known(&IB_DATA_COUNTERS, name)
}

/// The kind of a metric, by name: `errors` of the classic feed is a count; a name ending in
/// `_total` or a known InfiniBand port counter (see `IB_COUNTERS`) is a counter; anything
/// else is a gauge. Sources can say more (a Prometheus `# TYPE` line, `--counter-columns`).
pub fn kind_of(name: &str) -> MetricKind {
    if name == "errors" {
        MetricKind::Count
    } else if name.ends_with("_total") || is_known(&IB_COUNTERS, name) {
        MetricKind::Counter { words: false }
    } else {
        MetricKind::Gauge
    }
}

/// A feed column as a Prometheus name fragment: lower case, `[a-z0-9_]` only.
fn sanitize(column: &str) -> String {
    column
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// How a metric's newest values are named in Prometheus (`/metrics` and remote write), and
/// the factor from feed units to the series' base unit: `fabric_switch_bandwidth_gbps`,
/// `fabric_switch_latency_seconds` (the feed's ms / 1000), `fabric_switch_interval_<count>`,
/// `fabric_switch_<counter>_total` (in the source's units: words stay words),
/// `fabric_switch_<gauge>`.
pub fn prometheus_series(column: &str, kind: MetricKind) -> (String, f64) {
    match (column, kind) {
        ("bandwidth", MetricKind::Gauge) => ("fabric_switch_bandwidth_gbps".to_string(), 1.0),
        ("latency", MetricKind::Gauge) => ("fabric_switch_latency_seconds".to_string(), 1e-3),
        // Not `fabric_switch_<count>`: OpenMetrics names the `_total` counter's family that.
        (_, MetricKind::Count) => (format!("fabric_switch_interval_{}", sanitize(column)), 1.0),
        (_, MetricKind::Counter { .. }) => {
            let name = sanitize(column);
            let name = name.strip_suffix("_total").unwrap_or(&name);
            (format!("fabric_switch_{name}_total"), 1.0)
        }
        (_, MetricKind::Gauge) => (format!("fabric_switch_{}", sanitize(column)), 1.0),
    }
}

/// The counter of a count metric's running total: `fabric_switch_errors_total`.
pub fn prometheus_total(column: &str) -> String {
    format!("fabric_switch_{}_total", sanitize(column))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_names() {
        let series = |name| prometheus_series(name, kind_of(name));
        assert_eq!(
            series("latency"),
            ("fabric_switch_latency_seconds".to_string(), 1e-3)
        );
        assert_eq!(series("errors").0, "fabric_switch_interval_errors");
        assert_eq!(series("temp-C.1").0, "fabric_switch_temp_c_1");
        assert_eq!(
            series("PortXmitDataExtended").0,
            "fabric_switch_portxmitdataextended_total"
        );
        assert_eq!(series("rx_total").0, "fabric_switch_rx_total");
        assert_eq!(prometheus_total("errors"), "fabric_switch_errors_total");
    }

    #[test]
    fn kinds_by_name() {
        assert_eq!(kind_of("errors"), MetricKind::Count);
        assert_eq!(kind_of("bandwidth"), MetricKind::Gauge);
        for counter in [
            "PortXmitDataExtended",
            "SymbolErrorCounterExtended",
            "port_rcv_errors",
            "symbol_error",
            "LinkDownedCounter",
            "infiniband_switch_port_transmit_data_bytes_total",
        ] {
            assert!(kind_of(counter).is_counter(), "{counter}");
        }
        for gauge in ["Temperature", "rate", "PortXmitDataRate", "total"] {
            assert_eq!(kind_of(gauge), MetricKind::Gauge, "{gauge}");
        }
        assert!(counts_data_words("PortXmitData", false));
        assert!(counts_data_words("port_rcv_data", false));
        assert!(counts_data_words("PortRcvDataExtended", false));
        assert!(!counts_data_words("PortRcvDataExtended", true));
        assert!(!counts_data_words("PortRcvPkts", false));
        assert!(counts_data_words("infiniband_portrcvdata_total", false));
        assert!(!counts_data_words(
            "infiniband_switch_port_transmit_data_bytes_total",
            false
        ));
    }
}
