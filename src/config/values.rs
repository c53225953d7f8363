//! The value syntaxes flags share: text, durations, bounded numbers, sizes, feed URLs. Each
//! returns why a value is bad; the parser adds which flag it was given to.

use std::ffi::OsStr;
use std::time::Duration;

use super::DEFAULT_SOURCE;

pub fn text(value: &OsStr) -> Result<&str, String> {
    value
        .to_str()
        .ok_or_else(|| format!("{value:?} is not UTF-8"))
}

/// A humantime duration (`500ms`, `2s`, `5m`, `1h`) greater than zero.
pub fn duration(value: &OsStr) -> Result<Duration, String> {
    let value = text(value)?;
    let parsed = humantime::parse_duration(value).map_err(|e| format!("{value:?}: {e}"))?;
    if parsed.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(parsed)
}

pub fn number<T>(value: &OsStr, range: std::ops::RangeInclusive<T>) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    let value = text(value)?;
    let parsed: T = value
        .parse()
        .map_err(|_| format!("{value:?} is not a number"))?;
    if !range.contains(&parsed) {
        return Err(format!(
            "{parsed} is outside {}..={}",
            range.start(),
            range.end()
        ));
    }
    Ok(parsed)
}

/// `1048576`, `64KiB`, `256MiB`, `1GB`, …
pub fn parse_size(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => return Err(format!("unknown size unit {other:?}")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Checks a feed URL: absolute `http://` with a host.
pub fn check_source(source: &str) -> Result<(), String> {
    let (url, _) = crate::shared::feed::Format::split_source(source)?;
    let uri: ureq::http::Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(format!(
                "{url:?}: scheme {other:?} is not supported (plain http; put TLS in a proxy in front of the feed)"
            ))
        }
        None => return Err(format!("{url:?}: expected an absolute URL like {DEFAULT_SOURCE}")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{url:?}: no host"));
    }
    Ok(())
}
