//! `/telemetry/history` parameters and step downsampling: pure functions, no store access.
//!
//! Every instant and span a client sends is bounded here (years 0000–9999, at least 1 µs), and
//! the arithmetic on them is checked, so no query can overflow `i64` microseconds: it is a 400
//! naming the parameter instead.

use crate::server::store::Sample;
use crate::shared::metric::{MetricKind, Value, SATURATION_VALUES};
use crate::shared::timestamp::{self, Micros};

/// Most points (samples or buckets) one answer may hold; Prometheus's range API caps at
/// 11,000 for the same reason.
pub const MAX_POINTS: usize = 11_000;

/// A parsed time: RFC 3339 with an offset, `now`, or a humantime duration meaning that long
/// before `now` (`15m`). Times outside the years 0000–9999 (what a timestamp can be written
/// as) are errors, which also bounds any difference of two instants well inside `i64`.
pub fn parse_instant(text: &str, now: Micros) -> Result<Micros, String> {
    let instant = if text == "now" {
        now
    } else {
        match parse_time(text) {
            Ok(ts) => ts,
            Err(e) if e.is_out_of_range() => return Err(e.to_string()),
            Err(_) => match humantime::parse_duration(text) {
                Ok(ago) => now
                    .checked_sub(timestamp::duration_micros(ago))
                    .unwrap_or(i64::MIN),
                Err(_) => return Err(format!(
                    "{text:?} is neither an RFC 3339 time (2025-09-14T12:30:05Z) nor a duration before now (15m)"
                )),
            },
        }
    };
    if !(timestamp::CANONICAL_MIN..=timestamp::CANONICAL_MAX).contains(&instant) {
        return Err(format!(
            "{text:?} is out of range: times must fall in the years 0000 to 9999"
        ));
    }
    Ok(instant)
}

/// RFC 3339, also with an offset whose `+` arrived unencoded in a URL (form encoding turns
/// `+00:00` into ` 00:00`): read it as meant.
fn parse_time(text: &str) -> Result<Micros, timestamp::TimestampError> {
    let error = match timestamp::parse_rfc3339(text) {
        Ok(ts) => return Ok(ts),
        Err(e) => e,
    };
    if let Some((time, offset)) = text.rsplit_once(' ') {
        if offset.len() == 5 && offset.as_bytes()[2] == b':' {
            return timestamp::parse_rfc3339(&format!("{time}+{offset}"));
        }
    }
    Err(error)
}

/// A positive humantime duration.
pub fn parse_span(name: &str, text: &str) -> Result<Micros, String> {
    let span = humantime::parse_duration(text).map_err(|e| {
        format!("parameter {name:?}: {text:?} is not a duration like 30s or 5m ({e})")
    })?;
    if span.is_zero() {
        return Err(format!("parameter {name:?} must be greater than zero"));
    }
    match timestamp::duration_micros(span) {
        // Spans count in whole microseconds: `1ns` would be a step of zero.
        0 => Err(format!(
            "parameter {name:?} must be at least 1us ({text:?} is shorter)"
        )),
        micros => Ok(micros),
    }
}

/// min/avg/max of the samples in `[start, start + step)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub start: Micros,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub count: u64,
}

impl Bucket {
    pub fn avg(&self) -> f64 {
        self.sum / self.count as f64
    }
}

/// How many buckets of `step` (aligned on multiples of `step` since the epoch) cover
/// `[from, to]`. Computed in `i128`, so any two instants give the exact count; `u64::MAX`
/// (more than any cap) when it does not fit, or when `step` is not positive or `from` is
/// after `to` (callers rule both out first).
pub fn bucket_count(from: Micros, to: Micros, step: Micros) -> u64 {
    if step <= 0 || from > to {
        return u64::MAX;
    }
    let step = i128::from(step);
    let buckets = i128::from(to).div_euclid(step) - i128::from(from).div_euclid(step) + 1;
    u64::try_from(buckets).unwrap_or(u64::MAX)
}

/// Turns a counter's samples into rates: each sample after the first becomes the rate since
/// the one before it (a decrease is a reset from zero; a saturated value gives no point), in
/// the counter's unit per second (bytes for word counters).
#[derive(Debug)]
pub struct RatePoints {
    previous: Option<(Micros, u64)>,
    octets: f64,
}

impl RatePoints {
    pub fn new(kind: MetricKind) -> RatePoints {
        RatePoints {
            previous: None,
            octets: kind.octets_per_unit() as f64,
        }
    }

    pub fn next(&mut self, sample: Sample) -> Option<Sample> {
        let Value::Int(value) = sample.value else {
            return None;
        };
        let previous = self.previous.replace((sample.timestamp, value));
        let (then, before) = previous?;
        if SATURATION_VALUES.contains(&value) || sample.timestamp <= then {
            return None;
        }
        let increase = if value >= before {
            value - before
        } else {
            value
        };
        let seconds = (sample.timestamp - then) as f64 / 1e6;
        Some(Sample {
            timestamp: sample.timestamp,
            value: Value::Float(increase as f64 * self.octets / seconds),
        })
    }
}

/// Folds time-ordered samples into buckets of `step` that start at multiples of `step`
/// since the epoch (as Prometheus range queries and Grafana align them), so a bucket has the
/// same start whatever `from` a request names, and panels and scripts see stable buckets.
/// Empty buckets are left out.
#[derive(Debug)]
pub struct Downsampler {
    step: Micros,
    buckets: Vec<Bucket>,
}

impl Downsampler {
    pub fn new(step: Micros) -> Downsampler {
        Downsampler {
            step,
            buckets: Vec::new(),
        }
    }

    pub fn add(&mut self, sample: Sample) {
        let value = sample.value.as_f64();
        // Checked: the handler only visits samples in `[from, to]` with a capped bucket count,
        // so none of this can overflow there, but no arguments may make it panic.
        let start = sample
            .timestamp
            .checked_div_euclid(self.step)
            .and_then(|k| k.checked_mul(self.step));
        let Some(start) = start else {
            return;
        };
        match self.buckets.last_mut() {
            Some(bucket) if bucket.start == start => {
                bucket.min = bucket.min.min(value);
                bucket.max = bucket.max.max(value);
                bucket.sum += value;
                bucket.count += 1;
            }
            _ => self.buckets.push(Bucket {
                start,
                min: value,
                max: value,
                sum: value,
                count: 1,
            }),
        }
    }

    pub fn finish(self) -> Vec<Bucket> {
        self.buckets
    }
}

/// A time or span parameter as clients might write one, edges and nonsense included (for the
/// property tests here and in the handler's).
#[cfg(test)]
pub(crate) fn arbitrary_time_text() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let offset = "Z|[+-](0[0-9]|1[0-9]|2[0-5]):[0-5][0-9]";
    let unit = "ns|us|ms|s|m|h|d|w|y";
    // Weighted towards the edges, so that 512 cases reliably meet them.
    prop_oneof![
        3 => prop::sample::select(vec![
            "now",
            "1ns",
            "999ns",
            "1us",
            "0000-01-01T00:00:00Z",
            "9999-12-30T00:00:00Z",
            "9999-12-31T00:00:00Z",
        ])
        .prop_map(String::from),
        1 => (0u64..u64::MAX, unit).prop_map(|(n, unit)| format!("{n}{unit}")),
        1 => (0u64..2_000, unit).prop_map(|(n, unit)| format!("{n}{unit}")),
        // Around the span where `now - ago` and `to - from` leave i64 microseconds.
        3 => (280_000u64..300_000).prop_map(|n| format!("{n}y")),
        2 => (-10_000i64..=10_000, 1u32..=12, 1u32..=28, 0u32..=23, offset).prop_map(
            |(y, mo, d, h, off)| {
                let year = if (0..=9999).contains(&y) {
                    format!("{y:04}")
                } else {
                    format!("{y:+07}")
                };
                format!("{year}-{mo:02}-{d:02}T{h:02}:00:00{off}")
            }
        ),
        1 => "\\PC{0,30}",
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::metric::Value;
    use rand::{Rng, SeedableRng};

    const S: i64 = timestamp::MICROS_PER_SEC;

    #[test]
    fn instants() {
        let now = 1_757_853_005 * S;
        assert_eq!(parse_instant("now", now), Ok(now));
        assert_eq!(parse_instant("15m", now), Ok(now - 900 * S));
        assert_eq!(
            parse_instant("2025-09-14T12:30:05Z", now),
            Ok(1_757_853_005 * S)
        );
        assert!(parse_instant("yesterday", now).is_err());
        assert!(parse_span("step", "0s").is_err());
        assert_eq!(parse_span("step", "1m"), Ok(60 * S));
    }

    #[test]
    fn instants_and_spans_out_of_range_are_errors() {
        let now = 1_757_853_005 * S;
        for text in [
            "290000y",                   // to - from would overflow i64 microseconds
            "18446744073709551615s",     // saturates the microseconds
            "2026y",                     // just before year 0000
            "-000001-06-01T00:00:00Z",   // jiff reads it; the canonical form cannot write it
            "0000-01-01T00:00:00+00:01", // one minute before 0000-01-01T00:00:00Z
            "9999-12-31T00:00:00Z",      // past jiff's range
            "-009999-01-01T00:00:00Z",
        ] {
            let error = parse_instant(text, now).expect_err(text);
            assert!(error.contains("out of range"), "{text}: {error}");
        }
        assert_eq!(
            parse_instant("0000-01-01T00:00:00Z", now),
            Ok(timestamp::CANONICAL_MIN)
        );
        assert_eq!(
            parse_instant("0000-01-01T00:00:00 00:00", now),
            Ok(timestamp::CANONICAL_MIN)
        );
        assert!(parse_instant("2000y", now).is_ok());
        let error = parse_span("step", "1ns").expect_err("a step of zero microseconds");
        assert!(
            error.contains("\"step\"") && error.contains("1us"),
            "{error}"
        );
        assert_eq!(parse_span("step", "1us"), Ok(1));
        assert_eq!(parse_span("window", "600000000y"), Ok(i64::MAX));
    }

    #[test]
    fn bucket_counts_are_exact_at_the_extremes() {
        assert_eq!(bucket_count(0, 0, 1), 1);
        assert_eq!(bucket_count(0, 10 * S, S), 11);
        assert_eq!(bucket_count(i64::MIN, i64::MAX, 1), u64::MAX);
        // Buckets on the epoch grid: [-2·MAX, -MAX), [-MAX, 0), [0, MAX), [MAX, 2·MAX).
        assert_eq!(bucket_count(i64::MIN, i64::MAX, i64::MAX), 4);
        // 00:00:30 to 00:01:30 in minutes: two buckets, [00:00, 00:01) and [00:01, 00:02).
        assert_eq!(bucket_count(30 * S, 90 * S, 60 * S), 2);
        assert_eq!(
            bucket_count(-9_151_704_000 * S, 253_402_207_200 * S, S),
            262_553_911_201
        );
        assert_eq!(bucket_count(1, 0, 1), u64::MAX);
        assert_eq!(bucket_count(0, 1, 0), u64::MAX);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(crate::proptest_cases()))]

        /// What the history handler does with from/to/step never panics: parsed instants are
        /// representable, and a range under the point cap downsamples its own endpoints.
        #[test]
        fn arbitrary_ranges_never_panic(
            from in arbitrary_time_text(),
            to in arbitrary_time_text(),
            step in arbitrary_time_text(),
            now in 0i64..4_102_444_800 * S,
        ) {
            let (Ok(from), Ok(to)) = (parse_instant(&from, now), parse_instant(&to, now)) else {
                return Ok(());
            };
            for t in [from, to] {
                proptest::prop_assert!((timestamp::CANONICAL_MIN..=timestamp::CANONICAL_MAX).contains(&t));
            }
            let Ok(step) = parse_span("step", &step) else {
                return Ok(());
            };
            proptest::prop_assert!(step >= 1);
            if from > to {
                return Ok(());
            }
            let buckets = bucket_count(from, to, step);
            proptest::prop_assert!(buckets >= 1);
            if buckets <= MAX_POINTS as u64 {
                let mut down = Downsampler::new(step);
                down.add(Sample { timestamp: from, value: Value::Float(1.0) });
                down.add(Sample { timestamp: to, value: Value::Float(2.0) });
                let got = down.finish();
                proptest::prop_assert!(!got.is_empty() && got.len() as u64 <= buckets.min(2));
                // The first bucket starts at most one step before `from`, on the epoch grid.
                let on_grid = got.iter().all(|b| {
                    i128::from(b.start) > i128::from(from) - i128::from(step)
                        && b.start <= to
                        && b.start.rem_euclid(step) == 0
                });
                proptest::prop_assert!(on_grid, "buckets {:?}", got);
            }
        }
    }

    /// Step downsampling equals a brute-force grouping.
    #[test]
    fn downsampling_is_exact() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        for _ in 0..100 {
            let from = rng.random_range(0..1_000 * S);
            let step = rng.random_range(1..120) * S / 2;
            let mut ts = from;
            let samples: Vec<Sample> = (0..rng.random_range(0..500))
                .map(|_| {
                    ts += rng.random_range(1..5 * S);
                    Sample {
                        timestamp: ts,
                        value: Value::Float(f64::from(rng.random_range(0..1000)) / 10.0),
                    }
                })
                .collect();
            let mut down = Downsampler::new(step);
            samples.iter().for_each(|s| down.add(*s));
            let got = down.finish();
            let mut want: Vec<Bucket> = Vec::new();
            for k in from / step.. {
                let start = k * step;
                if samples.last().is_none_or(|s| start > s.timestamp) {
                    break;
                }
                let inside: Vec<f64> = samples
                    .iter()
                    .filter(|s| s.timestamp >= start && s.timestamp < start + step)
                    .map(|s| s.value.as_f64())
                    .collect();
                if inside.is_empty() {
                    continue;
                }
                want.push(Bucket {
                    start,
                    min: inside.iter().cloned().fold(f64::MAX, f64::min),
                    max: inside.iter().cloned().fold(f64::MIN, f64::max),
                    sum: inside.iter().sum(),
                    count: inside.len() as u64,
                });
            }
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(
                    (g.start, g.min, g.max, g.count),
                    (w.start, w.min, w.max, w.count)
                );
                assert!((g.sum - w.sum).abs() < 1e-6);
            }
        }
    }
}
