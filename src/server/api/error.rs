//! [`ApiError`]: why a request could not be answered with data, and the one place an error
//! becomes a status and a JSON body ([`ApiError::into_reply`]).

use std::fmt;
use std::time::Duration;

use crate::server::query::QueryError;
use crate::shared::http::Reply;

/// Why a request could not be answered with data.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// Malformed query or missing parameter (400).
    BadRequest(String),
    /// Unknown path, switch or metric (404).
    NotFound(String),
    /// Not GET/HEAD (405).
    MethodNotAllowed,
    /// Data exists but is older than `--max-age` (503).
    Stale { message: String, age_seconds: f64 },
    /// Nothing fresh to answer from and no age to report (503).
    NoData(String),
    /// No or wrong bearer token (401).
    Unauthorized(String),
    /// The client's rate limit is spent (429).
    TooManyRequests { retry_after: Duration },
    /// The server has no room for this now: retry in a second (503 with `Retry-After: 1`).
    Busy(String),
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> ApiError {
        ApiError::BadRequest(e.to_string())
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::BadRequest(m)
            | ApiError::NotFound(m)
            | ApiError::NoData(m)
            | ApiError::Busy(m)
            | ApiError::Unauthorized(m) => f.write_str(m),
            ApiError::TooManyRequests { retry_after } => {
                write!(
                    f,
                    "rate limit exceeded: retry in {:.3} s",
                    retry_after.as_secs_f64()
                )
            }
            ApiError::MethodNotAllowed => {
                f.write_str("method not allowed: this API only answers GET and HEAD")
            }
            ApiError::Stale { message, .. } => f.write_str(message),
        }
    }
}

impl ApiError {
    fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::NotFound(_) => 404,
            ApiError::MethodNotAllowed => 405,
            ApiError::Unauthorized(_) => 401,
            ApiError::TooManyRequests { .. } => 429,
            ApiError::Stale { .. } | ApiError::NoData(_) | ApiError::Busy(_) => 503,
        }
    }

    /// The only place errors turn into HTTP.
    pub fn into_reply(self) -> Reply {
        let status = self.status();
        match &self {
            ApiError::MethodNotAllowed => Reply::error(status, &self.to_string())
                .with_header("Allow", "GET, HEAD".to_string()),
            ApiError::Unauthorized(_) => Reply::error(status, &self.to_string()).with_header(
                "WWW-Authenticate",
                "Bearer realm=\"fabric-telemetry\"".to_string(),
            ),
            ApiError::TooManyRequests { retry_after } => {
                let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                Reply::error(status, &self.to_string())
                    .with_header("Retry-After", seconds.to_string())
            }
            ApiError::Busy(_) => {
                Reply::error(status, &self.to_string()).with_header("Retry-After", "1".to_string())
            }
            ApiError::Stale {
                message,
                age_seconds,
            } => {
                let body = serde_json::json!({ "error": message, "age_seconds": age_seconds });
                Reply::json(status, body.to_string().into_bytes())
            }
            _ => Reply::error(status, &self.to_string()),
        }
    }
}
