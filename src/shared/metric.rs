//! What a metric is. Metrics are data, not fields: any feed column or Prometheus sample name
//! that is not part of a series' key is a metric. A metric's kind decides how its values are
//! validated, stored and written as JSON; see [`kind_of`] for how a kind is decided.
//!
//! In Prometheus a metric's newest values are `fabric_switch_bandwidth_gbps`,
//! `fabric_switch_latency_seconds` (the feed's ms / 1000), `fabric_switch_interval_<count>`
//! with `fabric_switch_<count>_total` beside it, `fabric_switch_<counter>_total` (in the
//! source's units: words stay words) and `fabric_switch_<gauge>`; see [`ExposedNames`].

use std::collections::HashMap;

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
    /// The kind as one byte, as the WAL and block files store it.
    pub fn to_byte(self) -> u8 {
        match self {
            MetricKind::Gauge => 0,
            MetricKind::Count => 1,
            MetricKind::Counter { words: false } => 2,
            MetricKind::Counter { words: true } => 3,
        }
    }

    /// What [`MetricKind::to_byte`] wrote; `None` for any other byte.
    pub fn from_byte(byte: u8) -> Option<MetricKind> {
        [
            MetricKind::Gauge,
            MetricKind::Count,
            MetricKind::Counter { words: false },
            MetricKind::Counter { words: true },
        ]
        .into_iter()
        .find(|kind| kind.to_byte() == byte)
    }

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

/// Appends a label value escaped for the Prometheus text formats (`\\`, `\"`, `\n`).
pub fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
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

/// How one metric appears in Prometheus (`/metrics` and remote write).
#[derive(Debug, Clone, PartialEq)]
pub struct Exposed {
    /// The family its newest values go in: `fabric_switch_temp`, `..._total` for counters.
    pub family: String,
    /// From feed units to the family's base unit (latency: ms → s).
    pub scale: f64,
    /// Labels the metric's name carried (`xmit_wait{vl="0"}` → `vl="0"`), renamed where they
    /// would clash with the series' own `switch` and `name` (`source_switch`).
    pub labels: Vec<(String, String)>,
    /// A count metric's running total family (`fabric_switch_errors_total`).
    pub total: Option<String>,
}

/// Gives every metric a family no different metric has. Sanitising folds names together
/// (`temp` and `Temp`, `rx-bytes` and `rx_bytes`; a gauge `foo` and a counter `foo_total` are
/// one family in OpenMetrics): the first metric to arrive keeps the plain name, later ones get
/// `_2`, `_3`, ... (their HELP names the column). Metrics that differ only in the labels their
/// names carry share their family.
#[derive(Debug, Default, Clone)]
pub struct ExposedNames {
    /// OpenMetrics family (a counter's name without `_total`) → (base name, kind) owning it.
    owners: HashMap<String, (String, MetricKind)>,
}

impl ExposedNames {
    pub fn assign(&mut self, metric: &str, kind: MetricKind) -> Exposed {
        let (base, labels) = split_labels(metric);
        let owner = (base.to_string(), kind);
        let plain = sanitize(base);
        let plain = match kind {
            MetricKind::Counter { .. } => {
                plain.strip_suffix("_total").unwrap_or(&plain).to_string()
            }
            _ => plain,
        };
        for attempt in 1.. {
            let stem = if attempt == 1 {
                plain.clone()
            } else {
                format!("{plain}_{attempt}")
            };
            let (family, scale, total) = prometheus_family(base, &stem, kind);
            let mut keys = vec![family
                .strip_suffix("_total")
                .filter(|_| kind.is_counter())
                .unwrap_or(&family)
                .to_string()];
            if let Some(total) = &total {
                keys.push(total.trim_end_matches("_total").to_string());
            }
            let free = keys
                .iter()
                .all(|k| self.owners.get(k).is_none_or(|o| *o == owner));
            if free {
                for key in keys {
                    self.owners.insert(key, owner.clone());
                }
                return Exposed {
                    family,
                    scale,
                    labels,
                    total,
                };
            }
        }
        unreachable!("some suffix is always free")
    }
}

/// `xmit_wait{switch="a",vl="0"}` → (`xmit_wait`, [(`source_switch`, `a`), (`vl`, `0`)]): the
/// label suffix the Prometheus reader gives samples that differ in other labels.
pub fn split_labels(metric: &str) -> (&str, Vec<(String, String)>) {
    let Some(open) = metric.find('{').filter(|_| metric.ends_with('}')) else {
        return (metric, Vec::new());
    };
    let mut labels = Vec::new();
    let mut rest = &metric[open + 1..metric.len() - 1];
    while let Some(eq) = rest.find("=\"") {
        let name = rest[..eq].trim_start_matches(',');
        let mut value = String::new();
        let mut chars = rest[eq + 2..].char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    end = Some(eq + 2 + i + 1);
                    break;
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => break,
                },
                c => value.push(c),
            }
        }
        let Some(end) = end else {
            return (metric, Vec::new());
        };
        let name = match name {
            "switch" | "name" => format!("source_{name}"),
            n if n.starts_with("__") => format!("source{n}"),
            n => n.to_string(),
        };
        labels.push((name, value));
        rest = &rest[end..];
    }
    (&metric[..open], labels)
}

/// The family (and a count's total family) of a metric under `stem`.
fn prometheus_family(base: &str, stem: &str, kind: MetricKind) -> (String, f64, Option<String>) {
    match (base, kind) {
        ("bandwidth", MetricKind::Gauge) => ("fabric_switch_bandwidth_gbps".to_string(), 1.0, None),
        ("latency", MetricKind::Gauge) => ("fabric_switch_latency_seconds".to_string(), 1e-3, None),
        // Not `fabric_switch_<count>`: OpenMetrics names the `_total` counter's family that.
        (_, MetricKind::Count) => (
            format!("fabric_switch_interval_{stem}"),
            1.0,
            Some(format!("fabric_switch_{stem}_total")),
        ),
        (_, MetricKind::Counter { .. }) => {
            let stem = stem.strip_suffix("_total").unwrap_or(stem);
            (format!("fabric_switch_{stem}_total"), 1.0, None)
        }
        (_, MetricKind::Gauge) => (format!("fabric_switch_{stem}"), 1.0, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_names() {
        let mut names = ExposedNames::default();
        let mut family = |name: &str| names.assign(name, kind_of(name)).family;
        assert_eq!(family("latency"), "fabric_switch_latency_seconds");
        assert_eq!(family("errors"), "fabric_switch_interval_errors");
        assert_eq!(family("temp-C.1"), "fabric_switch_temp_c_1");
        assert_eq!(
            family("PortXmitDataExtended"),
            "fabric_switch_portxmitdataextended_total"
        );
        assert_eq!(family("rx_total"), "fabric_switch_rx_total");
        // Folded together by sanitising: later ones are numbered.
        assert_eq!(family("temp"), "fabric_switch_temp");
        assert_eq!(family("Temp"), "fabric_switch_temp_2");
        assert_eq!(family("TEMP"), "fabric_switch_temp_3");
        assert_eq!(
            family("temp"),
            "fabric_switch_temp",
            "stable for the same metric"
        );
        // `errors_total` would be the count's running total; `rx` the counter's family.
        assert_eq!(family("errors_total"), "fabric_switch_errors_2_total");
        assert_eq!(family("rx"), "fabric_switch_rx_2");
        // Label variants share their family.
        assert_eq!(family("w{vl=\"0\"}"), "fabric_switch_w");
        assert_eq!(family("w{vl=\"1\"}"), "fabric_switch_w");
        let errors = names.assign("errors", MetricKind::Count);
        assert_eq!(errors.total.as_deref(), Some("fabric_switch_errors_total"));
    }

    #[test]
    fn labels_carried_by_names_come_back_out() {
        assert_eq!(
            split_labels("xmit_wait{switch=\"a\\\"b\",vl=\"0\"}"),
            (
                "xmit_wait",
                vec![
                    ("source_switch".to_string(), "a\"b".to_string()),
                    ("vl".to_string(), "0".to_string())
                ]
            )
        );
        assert_eq!(split_labels("plain"), ("plain", Vec::new()));
        assert_eq!(split_labels("odd{"), ("odd{", Vec::new()));
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
