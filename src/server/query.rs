//! Query strings, decoded strictly: `%XX` escapes and `+` for space, as browsers and
//! `curl --data-urlencode` write them. A broken escape or invalid UTF-8 is an error (a 400),
//! not something to guess around.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    BadEscape(String),
    NotUtf8(String),
    Repeated(String),
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryError::BadEscape(part) => {
                write!(
                    f,
                    "malformed percent-encoding in query string near {part:?}"
                )
            }
            QueryError::NotUtf8(part) => {
                write!(f, "query string part {part:?} is not UTF-8 once decoded")
            }
            QueryError::Repeated(name) => write!(f, "parameter {name:?} is given more than once"),
        }
    }
}

impl std::error::Error for QueryError {}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Decodes one `application/x-www-form-urlencoded` component.
pub fn decode_component(raw: &str) -> Result<String, QueryError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex_value);
                let lo = bytes.get(i + 2).copied().and_then(hex_value);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    let end = (i + 3).min(bytes.len());
                    return Err(QueryError::BadEscape(
                        String::from_utf8_lossy(&bytes[i..end]).into_owned(),
                    ));
                };
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| QueryError::NotUtf8(raw.chars().take(64).collect()))
}

/// Decoded `name=value` pairs, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parses a raw query string (without `?`). Empty parts (`a=1&&b=2`) are skipped.
    pub fn parse(raw: &str) -> Result<Query, QueryError> {
        Query::parse_repeatable(raw, &[])
    }

    /// [`Query::parse`], but the parameters named in `repeatable` may be given many times
    /// (see [`Query::get_all`]).
    pub fn parse_repeatable(raw: &str, repeatable: &[&str]) -> Result<Query, QueryError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for part in raw.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            let name = decode_component(name)?;
            let value = decode_component(value)?;
            if !repeatable.contains(&name.as_str()) && pairs.iter().any(|(n, _)| *n == name) {
                return Err(QueryError::Repeated(name));
            }
            pairs.push((name, value));
        }
        Ok(Query { pairs })
    }

    /// Every value of a parameter, in order.
    pub fn get_all<'q>(&'q self, name: &'q str) -> impl Iterator<Item = &'q str> + 'q {
        self.pairs
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name`, if given (possibly empty).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str, expected: Result<&[(&str, &str)], &str>) {
        let got = Query::parse(raw);
        match expected {
            Ok(pairs) => {
                let got = got.unwrap_or_else(|e| panic!("{raw}: {e}"));
                let want: Vec<(String, String)> = pairs
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect();
                assert_eq!(got.pairs, want, "{raw}");
            }
            Err(fragment) => {
                let err = got.expect_err(raw).to_string();
                assert!(err.contains(fragment), "{raw}: {err}");
            }
        }
    }

    #[test]
    fn decodes_strictly() {
        check(
            "switch_id=switch1&metric=bandwidth",
            Ok(&[("switch_id", "switch1"), ("metric", "bandwidth")]),
        );
        check("switch_id=leaf%2001%2Fa", Ok(&[("switch_id", "leaf 01/a")]));
        check("switch_id=leaf+01", Ok(&[("switch_id", "leaf 01")]));
        check("switch_id=a%2Bb", Ok(&[("switch_id", "a+b")]));
        check("switch_id=%C3%A9", Ok(&[("switch_id", "é")]));
        check("metric=&x", Ok(&[("metric", ""), ("x", "")]));
        check("&&metric=a&", Ok(&[("metric", "a")]));
        check("", Ok(&[]));
        check("switch_id=%zz", Err("malformed percent-encoding"));
        check("switch_id=abc%", Err("malformed percent-encoding"));
        check("switch_id=abc%4", Err("malformed percent-encoding"));
        check("switch_id=%FF", Err("not UTF-8"));
        check("metric=a&metric=b", Err("more than once"));
    }
}
