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
