//! Sample timestamps: microseconds since the Unix epoch, parsed from any RFC 3339 offset and
//! always written back in one canonical form, `2025-09-14T12:30:05.123456+00:00`.
//!
//! Parsing leans on `jiff` (humantime's parser only takes `Z`/`+00:00`, and feeds carry other
//! offsets). Formatting is hand-written because it sits on the hot path of every `/list` answer
//! and every generator tick; a test checks it against `jiff` over a wide range.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since 1970-01-01T00:00:00Z.
pub type Micros = i64;

pub const MICROS_PER_SEC: i64 = 1_000_000;

/// Length of a canonical timestamp: `YYYY-MM-DDTHH:MM:SS.ffffff+00:00`.
pub const CANONICAL_LEN: usize = 32;

/// Earliest instant the canonical form can write: 0000-01-01T00:00:00Z.
pub const CANONICAL_MIN: Micros = -62_167_219_200 * MICROS_PER_SEC;
/// Latest instant the canonical form can write: 9999-12-31T23:59:59.999999Z.
pub const CANONICAL_MAX: Micros = 253_402_300_799 * MICROS_PER_SEC + 999_999;

/// A timestamp that is not RFC 3339 with an offset, or one outside the range it can be
/// stored in (jiff's: roughly years -9999 to 9999).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimestampError {
    input: String,
    out_of_range: bool,
}

impl TimestampError {
    /// Well-formed RFC 3339, but a time too far in the past or future to represent.
    pub fn is_out_of_range(&self) -> bool {
        self.out_of_range
    }
}

impl fmt::Display for TimestampError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.out_of_range {
            write!(
                f,
                "timestamp {:?} is out of range: times must fall in the years 0000 to 9999",
                self.input
            )
        } else {
            write!(
                f,
                "invalid timestamp {:?}: expected RFC 3339 with an offset, e.g. 2025-09-14T12:30:05.123456+00:00",
                self.input
            )
        }
    }
}

impl std::error::Error for TimestampError {}

/// Wall-clock now. A clock before 1970 is a broken host; it reads as the epoch.
pub fn now_micros() -> Micros {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// Parses RFC 3339 with any offset (`Z`, `+00:00`, `-07:00`, …); sub-microsecond digits are
/// truncated.
pub fn parse_rfc3339(text: &str) -> Result<Micros, TimestampError> {
    text.parse::<jiff::Timestamp>()
        .map(|ts| ts.as_microsecond())
        .map_err(|_| TimestampError {
            input: truncate_for_message(text),
            // Only for the message: a date, time and offset that parse on their own mean the
            // text was well-formed and the instant is what did not fit.
            out_of_range: jiff::fmt::temporal::Pieces::parse(text)
                .is_ok_and(|p| p.time().is_some() && p.offset().is_some()),
        })
}

fn truncate_for_message(text: &str) -> String {
    text.chars().take(64).collect()
}

/// Appends the canonical UTC form of `micros` to `out`.
///
/// Years outside 0000–9999 cannot occur for accepted samples (they are within `--max-age` of
/// now); they are clamped so the output keeps its fixed width.
pub fn write_rfc3339(micros: Micros, out: &mut String) {
    let mut buf = [0u8; CANONICAL_LEN];
    encode(micros, &mut buf);
    // The buffer holds only ASCII digits and punctuation.
    out.push_str(std::str::from_utf8(&buf).unwrap_or("0000-00-00T00:00:00.000000+00:00"));
}

/// The canonical UTC form of `micros`.
pub fn to_rfc3339(micros: Micros) -> String {
    let mut out = String::with_capacity(CANONICAL_LEN);
    write_rfc3339(micros, &mut out);
    out
}

/// Writes the canonical form into a fixed buffer (used by the generator, which renders bytes).
pub fn encode(micros: Micros, buf: &mut [u8; CANONICAL_LEN]) {
    let micros = micros.clamp(CANONICAL_MIN, CANONICAL_MAX);
    let secs = micros.div_euclid(MICROS_PER_SEC);
    let frac = micros.rem_euclid(MICROS_PER_SEC) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (year, month, day) = civil_from_days(days);
    put_digits(&mut buf[0..4], year as u32);
    buf[4] = b'-';
    put_digits(&mut buf[5..7], month);
    buf[7] = b'-';
    put_digits(&mut buf[8..10], day);
    buf[10] = b'T';
    put_digits(&mut buf[11..13], sod / 3600);
    buf[13] = b':';
    put_digits(&mut buf[14..16], sod / 60 % 60);
    buf[16] = b':';
    put_digits(&mut buf[17..19], sod % 60);
    buf[19] = b'.';
    put_digits(&mut buf[20..26], frac);
    buf[26..32].copy_from_slice(b"+00:00");
}

fn put_digits(slot: &mut [u8], mut value: u32) {
    for byte in slot.iter_mut().rev() {
        *byte = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Days since the epoch → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A duration in microseconds, saturating at `i64::MAX` (a retention or age of centuries).
pub fn duration_micros(d: std::time::Duration) -> Micros {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn jiff_canonical(micros: Micros) -> String {
        let ts = jiff::Timestamp::from_microsecond(micros).expect("in jiff's range");
        ts.strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
    }

    #[test]
    fn formats_the_documented_example() {
        let micros = parse_rfc3339("2025-09-14T12:30:05.123456+00:00").expect("valid");
        assert_eq!(to_rfc3339(micros), "2025-09-14T12:30:05.123456+00:00");
    }

    #[test]
    fn formatting_matches_jiff_across_the_calendar() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let edges = [
            0,
            -1,
            951_782_400 * MICROS_PER_SEC,     // 2000-02-29
            4_107_456_000 * MICROS_PER_SEC,   // 2100-02-28 (not a leap year)
            253_402_207_199 * MICROS_PER_SEC, // 9999-12-30T21:59:59, jiff's last
        ];
        for micros in edges {
            assert_eq!(to_rfc3339(micros), jiff_canonical(micros), "{micros}");
        }
        for _ in 0..20_000 {
            let micros = rng
                .random_range(-62_167_219_200 * MICROS_PER_SEC..253_402_207_199 * MICROS_PER_SEC);
            assert_eq!(to_rfc3339(micros), jiff_canonical(micros), "{micros}");
        }
    }

    #[test]
    fn parses_any_offset_and_normalises_to_utc() {
        let cases = [
            (
                "2025-09-14T12:30:05.123456+00:00",
                "2025-09-14T12:30:05.123456+00:00",
            ),
            (
                "2025-09-14T12:30:05.123456Z",
                "2025-09-14T12:30:05.123456+00:00",
            ),
            (
                "2025-09-14T14:30:05.123456+02:00",
                "2025-09-14T12:30:05.123456+00:00",
            ),
            (
                "2025-09-14T05:30:05-07:00",
                "2025-09-14T12:30:05.000000+00:00",
            ),
            (
                "2025-09-14T12:30:05.123456789Z",
                "2025-09-14T12:30:05.123456+00:00",
            ),
        ];
        for (input, expected) in cases {
            let micros = parse_rfc3339(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(to_rfc3339(micros), expected, "{input}");
        }
    }

    #[test]
    fn rejects_what_is_not_rfc3339_with_an_offset() {
        for input in [
            "",
            "yesterday",
            "2025-09-14",
            "2025-09-14T12:30:05",
            "2025-13-14T12:30:05Z",
            "2025-09-14T25:30:05Z",
            "1757853005",
            "2025-09-14T12:30:05.123456+00:00x",
        ] {
            let error = parse_rfc3339(input).expect_err(input);
            assert!(!error.is_out_of_range(), "{input:?}: {error}");
        }
        for input in ["9999-12-31T00:00:00Z", "-009999-01-01T00:00:00Z"] {
            let error = parse_rfc3339(input).expect_err(input);
            assert!(error.is_out_of_range(), "{input:?}: {error}");
            assert!(error.to_string().contains("out of range"), "{error}");
        }
    }
}
