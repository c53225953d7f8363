//! Logging set-up: text lines (simplelog) or JSON lines (one object per line, for journald
//! and Loki) on stderr, and a rate limiter for warnings that could otherwise repeat every poll.

use std::fmt;
use std::io::Write;
use std::str::FromStr;
use std::time::{Duration, Instant};

use log::LevelFilter;

use crate::timestamp;

/// Parses `off|error|warn|info|debug|trace`.
pub fn parse_level(text: &str) -> Result<LevelFilter, String> {
    text.parse::<LevelFilter>().map_err(|_| {
        format!("invalid log level {text:?} (expected off, error, warn, info, debug or trace)")
    })
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "invalid log format {other:?} (expected text or json)"
            )),
        }
    }
}

/// Level and format, from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSettings {
    pub level: LevelFilter,
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> LogSettings {
        LogSettings {
            level: LevelFilter::Info,
            format: LogFormat::Text,
        }
    }
}

/// Sends log lines to stderr. A second call (tests, `--demo`) is a no-op.
pub fn init(settings: LogSettings) {
    match settings.format {
        LogFormat::Text => {
            let config = simplelog::ConfigBuilder::new()
                .set_time_format_rfc3339()
                .set_target_level(LevelFilter::Error)
                .set_thread_level(LevelFilter::Off)
                .build();
            let _ = simplelog::WriteLogger::init(settings.level, config, std::io::stderr());
        }
        LogFormat::Json => {
            if log::set_boxed_logger(Box::new(JsonLogger {
                level: settings.level,
            }))
            .is_ok()
            {
                log::set_max_level(settings.level);
            }
        }
    }
}

/// One JSON object per line: `timestamp`, `level`, `target`, `message`, then any structured
/// fields of the record (`log::warn!(source = url; "…")`).
struct JsonLogger {
    level: LevelFilter,
}

/// Collects a record's key-values into a JSON object.
struct Fields(serde_json::Map<String, serde_json::Value>);

impl<'kvs> log::kv::VisitSource<'kvs> for Fields {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        let value = match (
            value.to_u64(),
            value.to_i64(),
            value.to_f64(),
            value.to_bool(),
        ) {
            (Some(n), _, _, _) => serde_json::Value::from(n),
            (_, Some(n), _, _) => serde_json::Value::from(n),
            (_, _, Some(x), _) => serde_json::Value::from(x),
            (_, _, _, Some(b)) => serde_json::Value::from(b),
            _ => serde_json::Value::from(value.to_string()),
        };
        self.0.insert(key.to_string(), value);
        Ok(())
    }
}

/// The JSON line of one record (without the newline).
pub fn json_line(record: &log::Record<'_>, at: timestamp::Micros) -> String {
    let mut object = serde_json::Map::new();
    object.insert("timestamp".into(), timestamp::to_rfc3339(at).into());
    object.insert("level".into(), record.level().as_str().into());
    object.insert("target".into(), record.target().into());
    object.insert("message".into(), record.args().to_string().into());
    let mut fields = Fields(serde_json::Map::new());
    if record.key_values().visit(&mut fields).is_ok() && !fields.0.is_empty() {
        object.insert("fields".into(), serde_json::Value::Object(fields.0));
    }
    serde_json::Value::Object(object).to_string()
}

impl log::Log for JsonLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        // The vendored tiny_http logs accept failures and caught panics (PATCHED.md).
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut line = json_line(record, timestamp::now_micros());
        line.push('\n');
        // One write per line, so lines from different threads never interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// Lets one event through per `every`, counting the ones it held back.
#[derive(Debug)]
pub struct RateLimiter {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimiter {
    pub fn new(every: Duration) -> RateLimiter {
        RateLimiter {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when this event may be logged, `n` being how many were held back since the
    /// last one logged; `None` when it should be dropped.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// Forget the last event, so the next one is logged at once (e.g. after a recovery).
    pub fn reset(&mut self) {
        self.last = None;
        self.suppressed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_one_through_per_interval() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(Duration::from_secs(10));
        assert_eq!(limiter.allow(start), Some(0));
        assert_eq!(limiter.allow(start + Duration::from_secs(1)), None);
        assert_eq!(limiter.allow(start + Duration::from_secs(2)), None);
        assert_eq!(limiter.allow(start + Duration::from_secs(11)), Some(2));
        limiter.reset();
        assert_eq!(limiter.allow(start + Duration::from_secs(12)), Some(0));
    }

    #[test]
    fn json_lines_carry_the_record_and_its_fields() {
        let url = "http://feed/counters";
        let kvs: &[(&str, &dyn log::kv::ToValue)] = &[("source", &url), ("failures", &3u64)];
        let record = log::Record::builder()
            .args(format_args!("poll failed: \"refused\""))
            .level(log::Level::Warn)
            .target("fabric_telemetry::poller")
            .key_values(&kvs)
            .build();
        let line = json_line(&record, 0);
        let value: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(value["timestamp"], "1970-01-01T00:00:00.000000+00:00");
        assert_eq!(value["level"], "WARN");
        assert_eq!(value["target"], "fabric_telemetry::poller");
        assert_eq!(value["message"], "poll failed: \"refused\"");
        assert_eq!(
            value["fields"],
            serde_json::json!({"source": url, "failures": 3})
        );
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert!("xml".parse::<LogFormat>().is_err());
    }

    #[test]
    fn levels() {
        assert_eq!(parse_level("debug"), Ok(LevelFilter::Debug));
        assert!(parse_level("loud").is_err());
    }
}
