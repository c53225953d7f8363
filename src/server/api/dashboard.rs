//! The built-in dashboard at `/`: one static page (HTML, CSS, JS and SVG, no framework, no
//! build step, nothing fetched from elsewhere), embedded at build time. It holds no data:
//! everything it shows comes from the API with the user's token (kept in sessionStorage).

use crate::shared::http::{Reply, ReplyBody};

const PAGE: &str = include_str!("dashboard.html");

pub fn page() -> Reply {
    Reply {
        status: 200,
        content_type: "text/html; charset=utf-8",
        headers: vec![
            // Nothing but itself: no script, style or connection from anywhere else.
            (
                "Content-Security-Policy",
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:".to_string(),
            ),
            ("X-Content-Type-Options", "nosniff".to_string()),
        ],
        body: ReplyBody::Shared {
            data: std::sync::Arc::new(PAGE),
            len: PAGE.len(),
        },
    }
}
