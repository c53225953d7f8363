//! What a metric is. Metrics are data, not fields: any feed column other than `switch_id` and
//! `timestamp` is a metric. A metric's kind decides how its values are validated, stored and
//! written as JSON; the three built-in metrics of the original feed have known kinds, any other
//! column is a gauge.

/// How a metric's values behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A level that moves up and down (bandwidth in Gb/s, latency in ms): any finite number.
    Gauge,
    /// Events counted over one feed interval (errors): a non-negative integer, summed over
    /// history and written to JSON as an integer.
    Count,
}

/// The metrics every feed of the original format carries, in header order.
pub const BUILTIN_METRICS: [&str; 3] = ["bandwidth", "latency", "errors"];

/// Largest count value accepted: beyond 2^53 an `f64` no longer holds every integer.
pub const MAX_COUNT: f64 = 9_007_199_254_740_992.0;

/// The kind of a metric, by name.
pub fn kind_of(name: &str) -> MetricKind {
    match name {
        "errors" => MetricKind::Count,
        _ => MetricKind::Gauge,
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
/// `fabric_switch_<gauge>`.
pub fn prometheus_series(column: &str) -> (String, f64) {
    match (column, kind_of(column)) {
        ("bandwidth", _) => ("fabric_switch_bandwidth_gbps".to_string(), 1.0),
        ("latency", _) => ("fabric_switch_latency_seconds".to_string(), 1e-3),
        // Not `fabric_switch_<count>`: OpenMetrics names the `_total` counter's family that.
        (_, MetricKind::Count) => (format!("fabric_switch_interval_{}", sanitize(column)), 1.0),
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
        assert_eq!(
            prometheus_series("latency"),
            ("fabric_switch_latency_seconds".to_string(), 1e-3)
        );
        assert_eq!(
            prometheus_series("errors").0,
            "fabric_switch_interval_errors"
        );
        assert_eq!(prometheus_series("temp-C.1").0, "fabric_switch_temp_c_1");
        assert_eq!(prometheus_total("errors"), "fabric_switch_errors_total");
    }
}
