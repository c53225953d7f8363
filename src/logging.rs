//! Logging set-up (simplelog to stderr, which journald captures) and a rate limiter for
//! warnings that could otherwise repeat every poll.

use std::time::{Duration, Instant};

use log::LevelFilter;

/// Parses `off|error|warn|info|debug|trace`.
pub fn parse_level(text: &str) -> Result<LevelFilter, String> {
    text.parse::<LevelFilter>().map_err(|_| {
        format!("invalid log level {text:?} (expected off, error, warn, info, debug or trace)")
    })
}

/// Sends log lines to stderr. A second call (tests, `--demo`) is a no-op.
pub fn init(level: LevelFilter) {
    let config = simplelog::ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_target_level(LevelFilter::Error)
        .set_thread_level(LevelFilter::Off)
        // tiny_http logs every dropped connection at debug; keep our own debug lines readable.
        .add_filter_ignore_str("tiny_http")
        .build();
    let _ = simplelog::WriteLogger::init(level, config, std::io::stderr());
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
    fn levels() {
        assert_eq!(parse_level("debug"), Ok(LevelFilter::Debug));
        assert!(parse_level("loud").is_err());
    }
}
