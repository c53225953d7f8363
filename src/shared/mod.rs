//! What both programs use: the HTTP layer, the feed format, metric kinds, timestamps, the
//! binary wire helpers, logging, process set-up and the thread watch. Nothing here knows
//! either program.

pub mod feed;
pub mod http;
pub mod logging;
pub mod metric;
pub mod process;
pub mod timestamp;
pub mod watch;
pub mod wire;
