//! The JSON shapes of the answers, byte for byte the original's where clients could notice:
//! key order, integers for count metrics, canonical timestamps, switches in first-seen order.

use std::sync::Arc;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use super::cache::Cached;
use super::history::Bucket;
use super::ApiError;
use crate::shared::http::{self, Reply, ReplyBody};
use crate::shared::metric::{MetricKind, Value};
use crate::shared::timestamp::{self, Micros};

/// A JSON number written the way its metric kind demands.
#[derive(Debug, Clone, Copy)]
pub(super) struct Number {
    pub(super) value: Value,
    pub(super) kind: MetricKind,
}

impl Serialize for Number {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match (self.value, self.kind) {
            // Counters are exact: `18446744073709551576` stays that.
            (Value::Int(v), _) => s.serialize_u64(v),
            (Value::Float(v), MetricKind::Count) => s.serialize_u64(v as u64),
            (Value::Float(v), _) => s.serialize_f64(v),
        }
    }
}

/// A canonical timestamp, serialized without an intermediate `String`.
pub(super) struct Timestamp(pub(super) Micros);

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; timestamp::CANONICAL_LEN];
        timestamp::encode(self.0, &mut buf);
        s.serialize_str(std::str::from_utf8(&buf).unwrap_or_default())
    }
}

/// A JSON object keyed by switch id, in the store's (first-seen) order.
pub(super) struct BySwitch<T>(pub(super) Vec<(Arc<str>, T)>);

impl<T: Serialize> Serialize for BySwitch<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (switch_id, entry) in &self.0 {
            map.serialize_entry(&**switch_id, entry)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
pub(super) struct GetBody<'a> {
    pub(super) switch_id: &'a str,
    pub(super) metric: &'a str,
    pub(super) value: Number,
    pub(super) timestamp: Timestamp,
}

#[derive(Serialize)]
pub(super) struct ListEntry {
    pub(super) value: Number,
    pub(super) timestamp: Timestamp,
    /// The series' name from `--names`; absent when it has none (so answers without names
    /// stay the original's byte for byte).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) name: Option<String>,
}

#[derive(Serialize)]
pub(super) struct AggregateEntry {
    pub(super) max_latency: Option<f64>,
    pub(super) min_bandwidth: Option<f64>,
    pub(super) total_errors: Option<u64>,
}

#[derive(Serialize)]
pub(super) struct HistoryPoint {
    pub(super) timestamp: Timestamp,
    pub(super) value: Number,
}

#[derive(Serialize)]
pub(super) struct HistoryBucket {
    pub(super) timestamp: Timestamp,
    pub(super) min: Number,
    pub(super) avg: f64,
    pub(super) max: Number,
    pub(super) count: u64,
}

pub(super) fn to_json<T: Serialize>(body: &T) -> Vec<u8> {
    // Serializing plain structs of numbers and strings into memory cannot fail.
    serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec())
}

pub(super) fn json_reply<T: Serialize>(body: &T) -> Result<Reply, ApiError> {
    Ok(Reply::json(200, to_json(body)))
}

pub(super) fn shared_reply(cached: &Cached) -> Result<Reply, ApiError> {
    match &cached.answer {
        Ok(body) => Ok(Reply {
            status: 200,
            content_type: http::JSON,
            headers: Vec::new(),
            body: ReplyBody::Shared {
                data: Arc::clone(body) as Arc<dyn AsRef<[u8]> + Send + Sync>,
                len: body.len(),
            },
        }),
        Err(e) => Err(e.clone()),
    }
}

pub(super) fn bucket_json(bucket: &Bucket, kind: MetricKind) -> HistoryBucket {
    // Buckets aggregate in f64: a counter's min and max are integers again, exact up to 2^53.
    let value = |v: f64| match kind {
        MetricKind::Counter { .. } => Value::Int(v as u64),
        _ => Value::Float(v),
    };
    HistoryBucket {
        timestamp: Timestamp(bucket.start),
        min: Number {
            value: value(bucket.min),
            kind,
        },
        avg: bucket.avg(),
        max: Number {
            value: value(bucket.max),
            kind,
        },
        count: bucket.count,
    }
}
