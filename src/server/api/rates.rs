//! Rates of counters and the worst series now: `/telemetry/rate` and `/telemetry/top`.
//!
//! A rate is the increase of a counter between the first and the last sample of a window,
//! divided by the time between them. A decrease is a reset: the counter starts again from zero,
//! so the new value is all increase (as Prometheus' `rate()` counts it), and `resets` says how
//! many there were. A counter whose newest value is stuck at 2^16-1, 2^32-1 or 2^64-1 is
//! saturated: it reports `"saturated": true` and no rate. Counters that count 4-octet words
//! (the PMA data counters under their PMA names, see `metric::counts_data_words`) are given in
//! bytes per second, and say `"unit": "bytes"`.
//!
//! `/telemetry/top` ranks every series of a metric: counters by rate, gauges by their newest
//! fresh value, once per poll and window (any `k` is a slice of that ranking). It never
//! decodes history: a counter's rate comes from the per-block counter
//! aggregates of the blocks that end inside the window, so its window is rounded out to whole
//! blocks (at most one block span longer: `BlockLimits`); each entry's rate is over the
//! span its samples cover.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use super::body::{json_reply, Timestamp};
use super::history::parse_span;
use super::{optional, required, series_of, Api, ApiError};
use crate::server::query::Query;
use crate::server::store::CounterAgg;
use crate::shared::http::Reply;
use crate::shared::metric::{MetricKind, SATURATION_VALUES};
use crate::shared::timestamp::{self, Micros};

/// The window when a request names none.
const DEFAULT_WINDOW: Micros = 300 * 1_000_000;
/// The most entries `/telemetry/top` answers.
pub const MAX_TOP: usize = 1000;

/// What a counter's samples in a window say about its rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// Per second, in the counter's unit (bytes for word counters).
    PerSecond {
        rate: f64,
        from: Micros,
        to: Micros,
        resets: u32,
    },
    Saturated {
        from: Micros,
        to: Micros,
        resets: u32,
    },
    /// Fewer than two samples.
    TooFew,
}

/// The rate a window's counter aggregate gives, for a metric of `kind`.
pub fn rate_of(agg: &CounterAgg, kind: MetricKind) -> Rate {
    let (Some((from, _)), Some((to, last))) = (agg.first, agg.last) else {
        return Rate::TooFew;
    };
    if SATURATION_VALUES.contains(&last) {
        return Rate::Saturated {
            from,
            to,
            resets: agg.resets,
        };
    }
    if to <= from {
        return Rate::TooFew;
    }
    let seconds = (to - from) as f64 / 1e6;
    Rate::PerSecond {
        rate: agg.increase as f64 * kind.octets_per_unit() as f64 / seconds,
        from,
        to,
        resets: agg.resets,
    }
}

#[derive(Serialize)]
struct RateBody<'a> {
    switch_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    metric: &'a str,
    rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<&'static str>,
    resets: u32,
    window_seconds: f64,
    from: Timestamp,
    to: Timestamp,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    saturated: bool,
}

#[derive(Serialize)]
struct TopEntry {
    #[serde(serialize_with = "arc_str")]
    switch_id: Arc<str>,
    name: Option<String>,
    value: f64,
}

fn arc_str<S: serde::Serializer>(text: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(text)
}

fn unit_of(kind: MetricKind) -> Option<&'static str> {
    (kind.octets_per_unit() > 1).then_some("bytes")
}

fn window_of(query: &Query) -> Result<Micros, ApiError> {
    Ok(optional(query, "window")?
        .map(|w| parse_span("window", w))
        .transpose()
        .map_err(ApiError::BadRequest)?
        .unwrap_or(DEFAULT_WINDOW))
}

fn not_a_counter(metric: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "{metric:?} is a gauge, not a counter: a rate needs a counter (see --counter-columns)"
    ))
}

impl Api {
    /// `GET /telemetry/rate?switch_id=&metric=&window=5m`.
    pub(super) fn rate(&self, query: &Query) -> Result<Reply, ApiError> {
        let asked = required(query, "switch_id")?;
        let metric = required(query, "metric")?;
        let window = window_of(query)?;
        let now = timestamp::now_micros();
        let names = self.names.get();
        let (key, kind, agg) = {
            let store = self.store.read();
            let (switch, metric_id) = series_of(&store, &names, asked, metric)?;
            let kind = store.metrics().kind(metric_id);
            if !kind.is_counter() {
                return Err(not_a_counter(metric));
            }
            let agg = store.counter_window(switch, metric_id, now.saturating_sub(window), true);
            (Arc::from(&store.switch_ids()[switch]), kind, agg)
        };
        let too_few = || {
            ApiError::NoData(format!(
                "fewer than two {metric} samples of {asked} in the last {}: a rate needs two",
                humantime::format_duration(std::time::Duration::from_micros(window as u64))
            ))
        };
        let rate = agg.map_or(Rate::TooFew, |agg| rate_of(&agg, kind));
        let (rate, from, to, resets, saturated) = match rate {
            Rate::PerSecond {
                rate,
                from,
                to,
                resets,
            } => (Some(rate), from, to, resets, false),
            Rate::Saturated { from, to, resets } => (None, from, to, resets, true),
            Rate::TooFew => return Err(too_few()),
        };
        json_reply(&RateBody {
            switch_id: &key,
            name: names.name_of(&key),
            metric,
            rate,
            unit: unit_of(kind),
            resets,
            window_seconds: (to - from) as f64 / 1e6,
            from: Timestamp(from),
            to: Timestamp(to),
            saturated,
        })
    }

    /// `GET /telemetry/top?metric=&k=10&window=5m`.
    pub(super) fn top(&self, query: &Query) -> Result<Reply, ApiError> {
        let metric = required(query, "metric")?;
        let k = match optional(query, "k")? {
            None => 10,
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|k| (1..=MAX_TOP).contains(k))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "parameter \"k\": {text:?} is not a count from 1 to {MAX_TOP}"
                    ))
                })?,
        };
        let window = window_of(query)?;
        let metric_id = self.metric_id(metric)?;
        let now = timestamp::now_micros();
        let generation = self.store.generation();
        let ranking = self
            .rankings
            .get_or_build((metric_id, window), generation, now, || {
                self.rank(metric_id, window, now)
            });
        if ranking.is_empty() {
            return Err(ApiError::NoData(format!(
                "no series of {metric:?} has a fresh value or a rate in the window"
            )));
        }
        let names = self.names.get();
        let entries: Vec<TopEntry> = ranking
            .iter()
            .take(k)
            .map(|(value, switch_id)| TopEntry {
                name: names.name_of(switch_id),
                switch_id: Arc::clone(switch_id),
                value: *value,
            })
            .collect();
        json_reply(&entries)
    }

    /// Every series of a metric with its value now, highest first (ties in the store's
    /// order): counters by rate over the window (by whole blocks), gauges by their newest
    /// fresh value.
    fn rank(&self, metric_id: usize, window: Micros, now: Micros) -> Ranking {
        let mut ranked: Vec<(f64, usize, Arc<str>)> = {
            let store = self.store.read();
            let kind = store.metrics().kind(metric_id);
            let ids = store.switch_ids();
            let cutoff = now.saturating_sub(window);
            let mut ranked = Vec::with_capacity(ids.len());
            for (switch, id) in ids.iter().enumerate() {
                let value = if kind.is_counter() {
                    match store
                        .counter_window(switch, metric_id, cutoff, false)
                        .map(|agg| rate_of(&agg, kind))
                    {
                        Some(Rate::PerSecond { rate, .. }) => rate,
                        _ => continue,
                    }
                } else {
                    match store.latest(switch, metric_id) {
                        Some(s) if now - s.timestamp <= self.max_age => s.value.as_f64(),
                        _ => continue,
                    }
                };
                ranked.push((value, switch, Arc::from(id)));
            }
            ranked
        };
        ranked.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        ranked.into_iter().map(|(v, _, id)| (v, id)).collect()
    }
}

/// A metric's series, highest value first.
pub type Ranking = Vec<(f64, Arc<str>)>;

/// Rankings by (metric, window) for the current store generation and at most a second:
/// every `k` is a slice of one ranking. Several may be built at once (one per worker), and a
/// generation change drops them all.
#[derive(Default)]
pub struct RankingCache {
    entries: Mutex<RankingEntries>,
}

#[derive(Default)]
struct RankingEntries {
    generation: u64,
    by_key: HashMap<(usize, Micros), (Micros, Arc<Ranking>)>,
}

const MAX_RANKINGS: usize = 64;

impl RankingCache {
    fn get_or_build(
        &self,
        key: (usize, Micros),
        generation: u64,
        now: Micros,
        build: impl FnOnce() -> Ranking,
    ) -> Arc<Ranking> {
        {
            let entries = lock(&self.entries);
            if entries.generation == generation {
                if let Some((valid_until, ranking)) = entries.by_key.get(&key) {
                    if now <= *valid_until {
                        return Arc::clone(ranking);
                    }
                }
            }
        }
        let ranking = Arc::new(build());
        let mut entries = lock(&self.entries);
        if entries.generation != generation || entries.by_key.len() >= MAX_RANKINGS {
            entries.by_key.clear();
            entries.generation = generation;
        }
        // Windows slide and values age: a ranking holds for a second at most.
        entries
            .by_key
            .insert(key, (now + 1_000_000, Arc::clone(&ranking)));
        ranking
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_count_resets_and_refuse_saturated_counters() {
        let mut agg = CounterAgg::default();
        for (ts, v) in [
            (0, 100u64),
            (1_000_000, 300),
            (2_000_000, 50),
            (4_000_000, 150),
        ] {
            agg.add(ts, v);
        }
        // +200, reset to 50 (+50), +100 over 4 s.
        assert_eq!(
            rate_of(&agg, MetricKind::Counter { words: false }),
            Rate::PerSecond {
                rate: 87.5,
                from: 0,
                to: 4_000_000,
                resets: 1
            }
        );
        assert!(matches!(
            rate_of(&agg, MetricKind::Counter { words: true }),
            Rate::PerSecond { rate, .. } if rate == 350.0
        ));
        for stuck in SATURATION_VALUES {
            let mut agg = CounterAgg::default();
            agg.add(0, stuck - 5);
            agg.add(1_000_000, stuck);
            assert!(matches!(
                rate_of(&agg, MetricKind::Counter { words: false }),
                Rate::Saturated { .. }
            ));
        }
        let mut one = CounterAgg::default();
        one.add(0, 5);
        assert_eq!(
            rate_of(&one, MetricKind::Counter { words: false }),
            Rate::TooFew
        );
    }
}
