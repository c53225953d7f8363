//! `/telemetry/history` parameters and step downsampling: pure functions, no store access.

use crate::store::Sample;
use crate::timestamp::{self, Micros};

/// Most points (samples or buckets) one answer may hold; Prometheus's range API caps at
/// 11,000 for the same reason.
pub const MAX_POINTS: usize = 11_000;

/// A parsed time: RFC 3339 with an offset, `now`, or a humantime duration meaning that long
/// before `now` (`15m`).
pub fn parse_instant(text: &str, now: Micros) -> Result<Micros, String> {
    if text == "now" {
        return Ok(now);
    }
    if let Ok(ts) = timestamp::parse_rfc3339(text) {
        return Ok(ts);
    }
    // An unencoded `+00:00` in a URL arrives as ` 00:00` (form encoding): read it as meant.
    if let Some((time, offset)) = text.rsplit_once(' ') {
        if offset.len() == 5 && offset.as_bytes()[2] == b':' {
            if let Ok(ts) = timestamp::parse_rfc3339(&format!("{time}+{offset}")) {
                return Ok(ts);
            }
        }
    }
    match humantime::parse_duration(text) {
        Ok(ago) => Ok(now.saturating_sub(timestamp::duration_micros(ago))),
        Err(_) => Err(format!(
            "{text:?} is neither an RFC 3339 time (2025-09-14T12:30:05Z) nor a duration before now (15m)"
        )),
    }
}

/// A positive humantime duration.
pub fn parse_span(name: &str, text: &str) -> Result<Micros, String> {
    let span = humantime::parse_duration(text).map_err(|e| {
        format!("parameter {name:?}: {text:?} is not a duration like 30s or 5m ({e})")
    })?;
    if span.is_zero() {
        return Err(format!("parameter {name:?} must be greater than zero"));
    }
    Ok(timestamp::duration_micros(span))
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

/// How many buckets of `step` cover `[from, to]`.
pub fn bucket_count(from: Micros, to: Micros, step: Micros) -> u64 {
    ((to - from) / step + 1) as u64
}

/// Folds time-ordered samples into buckets of `step` aligned on `from`; empty buckets are
/// left out.
#[derive(Debug)]
pub struct Downsampler {
    from: Micros,
    step: Micros,
    buckets: Vec<Bucket>,
}

impl Downsampler {
    pub fn new(from: Micros, step: Micros) -> Downsampler {
        Downsampler {
            from,
            step,
            buckets: Vec::new(),
        }
    }

    pub fn add(&mut self, sample: Sample) {
        let start = self.from + (sample.timestamp - self.from) / self.step * self.step;
        match self.buckets.last_mut() {
            Some(bucket) if bucket.start == start => {
                bucket.min = bucket.min.min(sample.value);
                bucket.max = bucket.max.max(sample.value);
                bucket.sum += sample.value;
                bucket.count += 1;
            }
            _ => self.buckets.push(Bucket {
                start,
                min: sample.value,
                max: sample.value,
                sum: sample.value,
                count: 1,
            }),
        }
    }

    pub fn finish(self) -> Vec<Bucket> {
        self.buckets
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
                        value: f64::from(rng.random_range(0..1000)) / 10.0,
                    }
                })
                .collect();
            let mut down = Downsampler::new(from, step);
            samples.iter().for_each(|s| down.add(*s));
            let got = down.finish();
            let mut want: Vec<Bucket> = Vec::new();
            for k in 0.. {
                let start = from + k * step;
                if samples.last().is_none_or(|s| start > s.timestamp) {
                    break;
                }
                let inside: Vec<f64> = samples
                    .iter()
                    .filter(|s| s.timestamp >= start && s.timestamp < start + step)
                    .map(|s| s.value)
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
