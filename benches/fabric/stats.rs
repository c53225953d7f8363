//! Small statistics: medians, and figures read from a source's cumulative poll counters and
//! poll-to-queryable histogram in `/telemetry/stats`.

use serde_json::Value;

/// The upper bound of the bucket holding quantile `q` of the polls between two readings of
/// a source's cumulative latency histogram (infinite past the last bound).
pub fn histogram_quantile(before: &Value, after: &Value, q: f64) -> f64 {
    let buckets = |v: &Value| -> Vec<(f64, u64)> {
        v["poll_to_queryable_histogram"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|b| {
                        (
                            b[0].as_f64().unwrap_or(f64::INFINITY),
                            b[1].as_u64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let (b0, b1) = (buckets(before), buckets(after));
    let deltas: Vec<(f64, u64)> = b1
        .iter()
        .zip(&b0)
        .map(|((le, c1), (_, c0))| (*le, c1 - c0))
        .collect();
    let total = deltas.last().map_or(0, |d| d.1);
    if total == 0 {
        return f64::NAN;
    }
    let rank = (q * total as f64).ceil() as u64;
    deltas
        .iter()
        .find(|(_, c)| *c >= rank)
        .map_or(f64::INFINITY, |(le, _)| *le)
}

/// Polls on time and late between two readings of a source's stats, and the on-time fraction.
pub fn on_time(before: &Value, after: &Value) -> (u64, u64, f64) {
    let delta = |key: &str| after[key].as_u64().unwrap_or(0) - before[key].as_u64().unwrap_or(0);
    let (on_time, late) = (delta("polls_on_time"), delta("polls_late"));
    (
        on_time,
        late,
        on_time as f64 / (on_time + late).max(1) as f64,
    )
}

pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}
