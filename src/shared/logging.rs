//! Logging set-up: text lines (simplelog) or JSON lines (one object per line, for journald
//! and Loki) on stderr, a rate limiter for warnings that could otherwise repeat every poll, and
//! [`escape`]/[`quote`]: the one way text that came from a feed or a source (switch ids, metric
//! names, raw fields, errors that embed them) enters a log message.
//!
//! Why escape for both formats: a text log is split into records at newlines, so a feed that
//! puts a newline in a quoted CSV field could forge whole log lines; JSON encoding protects the
//! line structure, but the `message` a reader (Loki, `jq -r`) decodes would still carry the
//! forged line, and terminal escapes would still reach whoever runs `journalctl`.

use std::fmt;
use std::io::Write;
use std::str::FromStr;
use std::time::{Duration, Instant};

use log::LevelFilter;

use crate::shared::timestamp;

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
            let _ = simplelog::WriteLogger::init(
                settings.level,
                config,
                OneWritePerLine::new(std::io::stderr()),
            );
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

/// Hands its writer each complete line in one `write_all`.
///
/// Why: simplelog writes a record in pieces (time, level, target, message, newline), and
/// stderr is unbuffered, so each piece was its own `write(2)`. Another writer of the same
/// stderr (the default panic hook, which does not go through the logger) could then land in
/// the middle of a line: CI once saw `listening on http://127.` + a panic message +
/// `.0.1:39163`, and the address was lost. A line of up to `PIPE_BUF` (4 KiB) written at once
/// reaches a pipe or journald whole. (`std::io::LineWriter` does not do this: it writes what it
/// buffered and the part up to the newline separately.)
struct OneWritePerLine<W: Write> {
    inner: W,
    line: Vec<u8>,
}

/// A "line" longer than this is written as it is (a record never gets near it: feed text is
/// cut by [`escape`] and [`quote`]).
const MAX_LINE_BYTES: usize = 64 * 1024;

impl<W: Write> OneWritePerLine<W> {
    fn new(inner: W) -> OneWritePerLine<W> {
        OneWritePerLine {
            inner,
            line: Vec::new(),
        }
    }

    /// Writes `self.line[..end]` in one call and keeps the rest; drops it if the write fails,
    /// so a broken stderr cannot make the buffer grow.
    fn write_through(&mut self, end: usize) -> std::io::Result<()> {
        let written = self.inner.write_all(&self.line[..end]);
        self.line.drain(..end);
        written
    }
}

impl<W: Write> Write for OneWritePerLine<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        if let Some(newline) = self.line.iter().rposition(|&b| b == b'\n') {
            self.write_through(newline + 1)?;
        }
        if self.line.len() > MAX_LINE_BYTES {
            self.write_through(self.line.len())?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.line.is_empty() {
            self.write_through(self.line.len())?;
        }
        self.inner.flush()
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

/// Longest feed-derived value shown in a log line, in characters, before it is cut.
pub const MAX_VALUE_CHARS: usize = 64;
/// Longest error message from a source (which may embed the source's text), in characters.
pub const MAX_MESSAGE_CHARS: usize = 512;

/// Untrusted text made safe for one log line: see [`escape`] and [`quote`].
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a> {
    raw: &'a [u8],
    quoted: bool,
    max_chars: usize,
}

/// `text` (an error message from a source, say) escaped for a log line, cut after
/// [`MAX_MESSAGE_CHARS`] characters.
///
/// `\` and `"` become `\\` and `\"`; newline, carriage return and tab become `\n`, `\r`, `\t`;
/// every other control character (C0, DEL, C1), the Unicode line and paragraph separators and
/// the bidi controls become `\u{..}`; bytes that are not UTF-8 become `\x..`. A cut is marked
/// `…(+N bytes)`. The result never holds a control character, whatever the input's length.
pub fn escape(text: &str) -> Escaped<'_> {
    Escaped {
        raw: text.as_bytes(),
        quoted: false,
        max_chars: MAX_MESSAGE_CHARS,
    }
}

/// A feed value (switch id, metric name, raw field: any bytes) as `"…"`, escaped as by
/// [`escape`] and cut after [`MAX_VALUE_CHARS`] characters. The quotes show where the value
/// starts and ends, which is unambiguous because a `"` inside is escaped.
pub fn quote(raw: &(impl AsRef<[u8]> + ?Sized)) -> Escaped<'_> {
    Escaped {
        raw: raw.as_ref(),
        quoted: true,
        max_chars: MAX_VALUE_CHARS,
    }
}

/// Whether `c` must not reach a log line as itself: controls, and the characters a log viewer
/// may treat as a line break or use to reorder what is shown.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\\' | '"'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

fn write_char_escaped(f: &mut fmt::Formatter<'_>, c: char) -> fmt::Result {
    use fmt::Write;
    match c {
        '\n' => f.write_str("\\n"),
        '\r' => f.write_str("\\r"),
        '\t' => f.write_str("\\t"),
        '\\' => f.write_str("\\\\"),
        '"' => f.write_str("\\\""),
        c if needs_escape(c) => write!(f, "\\u{{{:x}}}", u32::from(c)),
        c => f.write_char(c),
    }
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.quoted {
            f.write_str("\"")?;
        }
        let mut shown = 0;
        let mut consumed = 0;
        'chunks: for chunk in self.raw.utf8_chunks() {
            for c in chunk.valid().chars() {
                if shown == self.max_chars {
                    break 'chunks;
                }
                write_char_escaped(f, c)?;
                shown += 1;
                consumed += c.len_utf8();
            }
            for byte in chunk.invalid() {
                if shown == self.max_chars {
                    break 'chunks;
                }
                write!(f, "\\x{byte:02x}")?;
                shown += 1;
                consumed += 1;
            }
        }
        if self.quoted {
            f.write_str("\"")?;
        }
        if consumed < self.raw.len() {
            write!(f, "…(+{} bytes)", self.raw.len() - consumed)?;
        }
        Ok(())
    }
}

/// Lets one event through per `every`, counting the ones it held back.
#[derive(Debug)]
pub struct LogThrottle {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogThrottle {
    pub fn new(every: Duration) -> LogThrottle {
        LogThrottle {
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

    /// Records each `write` call it receives.
    #[derive(Clone, Default)]
    struct Calls(std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

    impl Write for Calls {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("calls").push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_text_record_reaches_stderr_in_one_write() {
        let calls = Calls::default();
        let config = simplelog::ConfigBuilder::new()
            .set_time_format_rfc3339()
            .set_target_level(LevelFilter::Error)
            .build();
        let logger = simplelog::WriteLogger::new(
            LevelFilter::Info,
            config,
            OneWritePerLine::new(calls.clone()),
        );
        let addr = "127.0.0.1:39163";
        for message in [
            format_args!("listening on http://{addr} polling {}", 2),
            format_args!("second"),
        ] {
            log::Log::log(
                &*logger,
                &log::Record::builder()
                    .args(message)
                    .level(log::Level::Info)
                    .target("metrics_server")
                    .build(),
            );
        }
        let calls = calls.0.lock().expect("calls");
        assert_eq!(calls.len(), 2, "{calls:?}");
        let first = String::from_utf8_lossy(&calls[0]);
        assert!(
            first.ends_with("listening on http://127.0.0.1:39163 polling 2\n"),
            "{first}"
        );
        assert!(first.contains("[INFO]"), "{first}");
        assert!(calls[1].ends_with(b"second\n"));
        assert_eq!(calls.iter().flatten().filter(|&&b| b == b'\n').count(), 2);
    }

    #[test]
    fn lines_without_an_end_are_bounded_and_flushed() {
        let calls = Calls::default();
        let mut writer = OneWritePerLine::new(calls.clone());
        writer.write_all(b"a\nb\nc").expect("write");
        assert_eq!(*calls.0.lock().expect("calls"), vec![b"a\nb\n".to_vec()]);
        writer
            .write_all(&vec![b'x'; MAX_LINE_BYTES])
            .expect("write");
        assert_eq!(calls.0.lock().expect("calls")[1].len(), MAX_LINE_BYTES + 1);
        writer.write_all(b"tail").expect("write");
        writer.flush().expect("flush");
        assert_eq!(calls.0.lock().expect("calls")[2], b"tail");
        assert!(writer.line.is_empty());
    }

    #[test]
    fn lets_one_through_per_interval() {
        let start = Instant::now();
        let mut limiter = LogThrottle::new(Duration::from_secs(10));
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
            .target("fabric_telemetry::server::poller")
            .key_values(&kvs)
            .build();
        let line = json_line(&record, 0);
        let value: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(value["timestamp"], "1970-01-01T00:00:00.000000+00:00");
        assert_eq!(value["level"], "WARN");
        assert_eq!(value["target"], "fabric_telemetry::server::poller");
        assert_eq!(value["message"], "poll failed: \"refused\"");
        assert_eq!(
            value["fields"],
            serde_json::json!({"source": url, "failures": 3})
        );
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert!("xml".parse::<LogFormat>().is_err());
    }

    #[test]
    fn escapes_what_could_break_a_log_line() {
        let cases: &[(&str, &str)] = &[
            ("switch1", "\"switch1\""),
            ("a\nb", "\"a\\nb\""),
            ("a\r\nb\tc", "\"a\\r\\nb\\tc\""),
            ("q\"uote\\", "\"q\\\"uote\\\\\""),
            (
                "\u{1b}[31mred\u{7f}\u{85}",
                "\"\\u{1b}[31mred\\u{7f}\\u{85}\"",
            ),
            (
                "ls\u{2028}ps\u{2029}rlo\u{202e}",
                "\"ls\\u{2028}ps\\u{2029}rlo\\u{202e}\"",
            ),
            ("leaf 01/a é", "\"leaf 01/a é\""),
            ("", "\"\""),
        ];
        for (input, expected) in cases {
            assert_eq!(quote(input).to_string(), *expected, "{input:?}");
        }
        assert_eq!(quote(b"ok\xff\xfe").to_string(), "\"ok\\xff\\xfe\"");
        assert_eq!(
            escape("bad header: \"x\ny\"").to_string(),
            "bad header: \\\"x\\ny\\\""
        );
    }

    #[test]
    fn long_values_are_cut_with_a_mark_and_still_escaped() {
        // The old `show` escaped only up to 40 characters: past that a newline went through.
        let forged = format!("{}\n2026-01-01T00:00:00Z [ERROR] forged", "x".repeat(100));
        let shown = quote(&forged).to_string();
        assert!(!shown.contains('\n'), "{shown}");
        let cut_after = "x".repeat(MAX_VALUE_CHARS);
        assert_eq!(
            shown,
            format!(
                "\"{cut_after}\"…(+{} bytes)",
                forged.len() - MAX_VALUE_CHARS
            )
        );
        let newlines = "\n".repeat(MAX_VALUE_CHARS + 3);
        assert_eq!(
            quote(&newlines).to_string(),
            format!("\"{}\"…(+3 bytes)", "\\n".repeat(MAX_VALUE_CHARS))
        );
        let message = "é".repeat(MAX_MESSAGE_CHARS + 1);
        assert!(escape(&message).to_string().ends_with("é…(+2 bytes)"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(crate::proptest_cases()))]

        /// Whatever the bytes, the escaped form holds no control character, and is bounded.
        #[test]
        fn arbitrary_bytes_never_reach_a_log_line_raw(
            raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            text in "\\PC*|[\\x00-\\x1f\\x7f-\\u{9f}\\u{2028}\\\\\"a]{0,200}",
        ) {
            for shown in [quote(&raw).to_string(), quote(&text).to_string(), escape(&text).to_string()] {
                proptest::prop_assert!(!shown.chars().any(needs_escape_unquoted), "{shown:?}");
                proptest::prop_assert!(shown.chars().count() <= 10 * MAX_MESSAGE_CHARS + 32);
            }
        }
    }

    /// What the escaped form may not contain (written out again rather than calling
    /// `needs_escape`, so a mistake there cannot hide here).
    fn needs_escape_unquoted(c: char) -> bool {
        c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202e}')
    }

    #[test]
    fn levels() {
        assert_eq!(parse_level("debug"), Ok(LevelFilter::Debug));
        assert!(parse_level("loud").is_err());
    }
}
