//! Who may read the API, and how fast: bearer tokens from `--auth-token-file` and a token
//! bucket per client (`--rate-limit`, `--burst`).
//!
//! Token files hold one token per line, either as the token itself or as `sha256:<64 hex>`
//! so the file holds no secret; `#` starts a comment. Only SHA-256 hashes are kept in memory,
//! and a presented token is hashed and compared with every stored hash in constant time.
//! Tokens are never logged.

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

type TokenHash = [u8; 32];

/// A token file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessError {
    /// A `sha256:` line without 64 hex digits after it (1-based line number).
    BadHash { line: usize },
    /// A plain token with whitespace in it.
    Whitespace { line: usize },
    /// Nothing but comments and blank lines.
    NoTokens,
    /// The file cannot be read (the I/O error's text).
    Read { path: PathBuf, error: String },
    /// The file was read but its contents are unusable.
    Unusable {
        path: PathBuf,
        why: Box<AccessError>,
    },
}

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccessError::BadHash { line } => {
                write!(f, "line {line}: sha256: must be followed by 64 hex digits")
            }
            AccessError::Whitespace { line } => {
                write!(f, "line {line}: a token cannot contain spaces")
            }
            AccessError::NoTokens => f.write_str("no tokens in the file"),
            AccessError::Read { path, error } => {
                write!(f, "cannot read token file {}: {error}", path.display())
            }
            AccessError::Unusable { path, why } => {
                write!(f, "token file {}: {why}", path.display())
            }
        }
    }
}

impl std::error::Error for AccessError {}

fn sha256(bytes: &[u8]) -> TokenHash {
    Sha256::digest(bytes).into()
}

fn parse_hex(hex: &str) -> Option<TokenHash> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// No early exit: the time taken does not depend on where the hashes differ.
fn constant_time_eq(a: &TokenHash, b: &TokenHash) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The accepted tokens, as hashes.
#[derive(Debug, Clone, Default)]
pub struct TokenSet {
    hashes: Vec<TokenHash>,
}

impl TokenSet {
    pub fn parse(text: &str) -> Result<TokenSet, AccessError> {
        let mut hashes = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let hash = match line.strip_prefix("sha256:") {
                Some(hex) => parse_hex(hex).ok_or(AccessError::BadHash { line: n + 1 })?,
                None if line.chars().any(char::is_whitespace) => {
                    return Err(AccessError::Whitespace { line: n + 1 })
                }
                None => sha256(line.as_bytes()),
            };
            hashes.push(hash);
        }
        if hashes.is_empty() {
            return Err(AccessError::NoTokens);
        }
        Ok(TokenSet { hashes })
    }

    /// The hash of `presented` if it is an accepted token.
    pub fn verify(&self, presented: &str) -> Option<TokenHash> {
        let hash = sha256(presented.as_bytes());
        let mut ok = false;
        for stored in &self.hashes {
            ok |= constant_time_eq(&hash, stored);
        }
        ok.then_some(hash)
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(authorization: Option<&str>) -> Option<&str> {
    let value = authorization?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Tokens loaded from a file, reloadable (SIGHUP).
pub struct Auth {
    path: PathBuf,
    tokens: RwLock<Arc<TokenSet>>,
}

impl Auth {
    pub fn load(path: &Path) -> Result<Auth, AccessError> {
        let tokens = Auth::read(path)?;
        Ok(Auth {
            path: path.to_path_buf(),
            tokens: RwLock::new(Arc::new(tokens)),
        })
    }

    fn read(path: &Path) -> Result<TokenSet, AccessError> {
        let text = std::fs::read_to_string(path).map_err(|e| AccessError::Read {
            path: path.to_path_buf(),
            error: e.to_string(),
        })?;
        TokenSet::parse(&text).map_err(|why| AccessError::Unusable {
            path: path.to_path_buf(),
            why: Box::new(why),
        })
    }

    /// Re-reads the file; on error the tokens in force stay.
    pub fn reload(&self) -> Result<usize, AccessError> {
        let tokens = Auth::read(&self.path)?;
        let n = tokens.len();
        *self.tokens.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tokens);
        Ok(n)
    }

    pub fn verify(&self, presented: &str) -> Option<TokenHash> {
        let tokens = Arc::clone(&self.tokens.read().unwrap_or_else(|p| p.into_inner()));
        tokens.verify(presented)
    }
}

/// Whom a rate limit applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Client {
    Token(TokenHash),
    Address(IpAddr),
    Unknown,
}

/// `200/s`, `6000/m`, `100000/h`: requests per second.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let (n, unit) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?}: expected N/s, N/m or N/h"))?;
    let n: f64 = n
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: {n:?} is not a number"))?;
    let per = match unit.trim() {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("{text:?}: unknown unit {other:?} (s, m or h)")),
    };
    if !(n.is_finite() && n > 0.0) {
        return Err(format!("{text:?}: the rate must be positive"));
    }
    Ok(n / per)
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

const SHARDS: usize = 16;
/// Past this many clients in a shard, clients whose bucket has refilled are forgotten.
const SHARD_CLIENTS: usize = 4096;

/// A token bucket per client, sharded so concurrent workers rarely share a lock.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    shards: [Mutex<HashMap<Client, Bucket>>; SHARDS],
}

impl RateLimiter {
    pub fn new(per_second: f64, burst: f64) -> RateLimiter {
        RateLimiter {
            per_second,
            burst: burst.max(1.0),
            shards: Default::default(),
        }
    }

    /// Takes one request from `client`'s bucket, or says how long until one is available.
    pub fn check(&self, client: Client, now: Instant) -> Result<(), Duration> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        client.hash(&mut hasher);
        let shard = &self.shards[hasher.finish() as usize % SHARDS];
        let mut buckets = shard.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > SHARD_CLIENTS {
            let (rate, burst) = (self.per_second, self.burst);
            buckets
                .retain(|_, b| b.tokens + now.duration_since(b.last).as_secs_f64() * rate < burst);
        }
        let bucket = buckets.entry(client).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let refill = now.saturating_duration_since(bucket.last).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files() {
        let hashed = format!("sha256:{}", "0f".repeat(32));
        let set = TokenSet::parse(&format!("# ops\nsecret-one\n\n  {hashed}\n")).expect("valid");
        assert_eq!(set.len(), 2);
        assert!(set.verify("secret-one").is_some());
        assert!(set.verify("secret-two").is_none());
        assert!(set.verify("").is_none());
        // A token stored hashed: sha256("hunter2").
        let digest: String = sha256(b"hunter2")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let set = TokenSet::parse(&format!("sha256:{digest}\n")).expect("valid");
        assert!(set.verify("hunter2").is_some());
        assert!(
            set.verify(&format!("sha256:{digest}")).is_none(),
            "the hash itself is not the token"
        );
        for bad in ["", "# only a comment\n", "sha256:abc\n", "two words\n"] {
            assert!(TokenSet::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bearer_headers() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
    }

    #[test]
    fn buckets_allow_the_burst_then_the_rate() {
        let limiter = RateLimiter::new(10.0, 5.0);
        let start = Instant::now();
        let client = Client::Unknown;
        for _ in 0..5 {
            assert!(limiter.check(client, start).is_ok());
        }
        let wait = limiter.check(client, start).expect_err("burst spent");
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        assert!(limiter
            .check(client, start + Duration::from_millis(100))
            .is_ok());
        assert!(limiter
            .check(client, start + Duration::from_millis(100))
            .is_err());
        // Another client has its own bucket.
        assert!(limiter
            .check(Client::Address("127.0.0.2".parse().expect("ip")), start)
            .is_ok());
        assert_eq!(parse_rate("200/s"), Ok(200.0));
        assert_eq!(parse_rate("60/m"), Ok(1.0));
        assert!(
            parse_rate("fast").is_err() && parse_rate("0/s").is_err() && parse_rate("5/d").is_err()
        );
    }
}
