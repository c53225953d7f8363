//! Bounds on what one source can make the server hold: `--max-series` series keys and
//! `--max-metrics` metric names per source. A feed that mints keys or columns without end (an
//! exporter that labels by request id, a CSV with a timestamp in a header) would otherwise
//! grow memory until the host gives out. Beyond a bound, new rows are rejected
//! (`too_many_series`) and new columns dropped, each counted, and everything already known
//! keeps flowing. A key not seen for a whole retention stops counting against the bound, as
//! the store forgets its series then too.

use std::collections::HashSet;
use std::hash::BuildHasher;

use rustc_hash::{FxBuildHasher, FxHashMap};

use crate::shared::feed::{FeedBatch, RejectReason};
use crate::shared::timestamp::Micros;

/// The bounds of one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_series: usize,
    pub max_metrics: usize,
}

/// What one source has made the server hold.
#[derive(Debug)]
pub struct Cardinality {
    limits: Limits,
    /// Hash of each key → when it was last seen. A 64-bit hash, not the key: one source's keys
    /// are far too few for collisions to matter, and the store already holds the keys.
    series: FxHashMap<u64, Micros>,
    metrics: HashSet<String>,
    /// The last time keys unseen for a retention were let go.
    last_sweep: Micros,
}

/// What [`Cardinality::admit`] refused in one batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Refused {
    pub rows: u64,
    /// Columns dropped, and the first of them by name (for the log).
    pub metrics: u64,
    pub first_metric: Option<String>,
}

fn key_hash(key: &str) -> u64 {
    FxBuildHasher.hash_one(key)
}

impl Cardinality {
    pub fn new(limits: Limits) -> Cardinality {
        Cardinality {
            limits,
            series: FxHashMap::default(),
            metrics: HashSet::new(),
            last_sweep: i64::MIN,
        }
    }

    /// Keys counted against the bound now.
    pub fn series(&self) -> usize {
        self.series.len()
    }

    /// Drops the columns and rows of `batch` beyond the bounds (rows are counted as rejected
    /// in the batch); `now` and `retention` let go of keys gone for a retention.
    pub fn admit(&mut self, batch: &mut FeedBatch, now: Micros, retention: Micros) -> Refused {
        let mut refused = Refused::default();
        if now.saturating_sub(self.last_sweep) >= 60_000_000 {
            let cutoff = now.saturating_sub(retention);
            self.series.retain(|_, seen| *seen >= cutoff);
            self.last_sweep = now;
        }
        let keep: Vec<bool> = batch
            .metrics
            .iter()
            .map(|name| {
                if self.metrics.contains(name) {
                    return true;
                }
                if self.metrics.len() < self.limits.max_metrics {
                    self.metrics.insert(name.clone());
                    return true;
                }
                refused.metrics += 1;
                refused.first_metric.get_or_insert_with(|| name.clone());
                false
            })
            .collect();
        batch.retain_columns(&keep);
        let (series, limit) = (&mut self.series, self.limits.max_series);
        let mut over = 0;
        let mut first_over: Option<String> = None;
        batch.retain_rows(|key| {
            let hash = key_hash(key);
            if let Some(seen) = series.get_mut(&hash) {
                *seen = now;
                return true;
            }
            if series.len() < limit {
                series.insert(hash, now);
                return true;
            }
            over += 1;
            first_over.get_or_insert_with(|| key.to_string());
            false
        });
        if over > 0 {
            let first = first_over.unwrap_or_default();
            let detail = format!(
                "{} and {} more keys beyond --max-series {limit}",
                crate::shared::logging::quote(&first),
                over - 1
            );
            batch.reject_many(RejectReason::TooManySeries, over, detail);
            refused.rows = over;
        }
        refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Micros = 1_000_000;
    const HOUR: Micros = 3_600 * S;

    fn batch(keys: &[&str], metrics: &[&str]) -> FeedBatch {
        let mut b = FeedBatch::with_metrics(metrics);
        for key in keys {
            b.push_row(key, S, &vec![1.0; metrics.len()]);
        }
        b
    }

    #[test]
    fn rows_and_columns_beyond_the_bounds_are_refused_and_counted() {
        let mut bounds = Cardinality::new(Limits {
            max_series: 3,
            max_metrics: 2,
        });
        let mut first = batch(&["a", "b"], &["x", "y"]);
        assert_eq!(bounds.admit(&mut first, S, HOUR), Refused::default());
        let mut second = batch(&["a", "c", "d", "e"], &["x", "z", "y"]);
        let refused = bounds.admit(&mut second, 2 * S, HOUR);
        assert_eq!(refused.rows, 2);
        assert_eq!(
            (refused.metrics, refused.first_metric.as_deref()),
            (1, Some("z"))
        );
        assert_eq!(second.metrics, ["x", "y"]);
        let kept: Vec<&str> = (0..second.len()).map(|r| second.switch_id(r)).collect();
        assert_eq!(
            kept,
            ["a", "c"],
            "known keys and the first new one under the bound"
        );
        assert_eq!(second.rejected.get(RejectReason::TooManySeries), 2);
        // A key gone for a retention no longer counts.
        let mut later = batch(&["a", "f"], &["x"]);
        bounds.admit(&mut later, 2 * S + HOUR + 60 * S, HOUR);
        assert_eq!(later.len(), 2, "b and c have gone for an hour: f fits");
    }
}
