//! Command-line flags → validated configurations, with every default in one place.
//! Flags are read with `lexopt` (both `--flag value` and `--flag=value`); values are then
//! checked here, so the programs only ever see a configuration that makes sense.

use std::ffi::OsString;
use std::fmt;
use std::time::Duration;

use crate::access;
use crate::generator_http::{FaultMode, GeneratorConfig};
use crate::http::ConnectionLimits;
use crate::logging::{self, LogFormat, LogSettings};
use crate::persist::{FsyncPolicy, PersistConfig};

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command<C> {
    Run { config: C, log: LogSettings },
    Help,
    Version,
}

/// A command line that cannot be run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl From<lexopt::Error> for ConfigError {
    fn from(e: lexopt::Error) -> ConfigError {
        ConfigError(e.to_string())
    }
}

fn invalid(flag: &str, why: impl fmt::Display) -> ConfigError {
    ConfigError(format!("invalid value for {flag}: {why}"))
}

/// Everything the metrics server needs to run.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub listen: String,
    /// Feed URLs, one poller each.
    pub sources: Vec<String>,
    pub poll_interval: Duration,
    pub poll_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_feed_bytes: u64,
    pub max_age: Duration,
    pub retention: Duration,
    pub workers: usize,
    /// Also run a generator in-process, listening where the first source points.
    pub demo: bool,
    /// Push every accepted sample to this Prometheus remote-write receiver.
    pub remote_write: Option<String>,
    /// Bearer tokens the API requires (one per line, plain or `sha256:<hex>`).
    pub auth_token_file: Option<std::path::PathBuf>,
    /// Allow a non-loopback `--listen` without tokens.
    pub insecure_no_auth: bool,
    /// Requests per second per client (token, or address without auth), and the burst.
    pub rate_limit: Option<(f64, f64)>,
    /// Where history persists (WAL + block files); `None` keeps it in memory only.
    pub data_dir: Option<std::path::PathBuf>,
    /// Forces memory-only history even when a data directory is configured.
    pub in_memory: bool,
    pub fsync: FsyncPolicy,
    pub compaction_interval: Duration,
    /// Bounds on every API connection.
    pub http: ConnectionLimits,
}

pub const DEFAULT_SOURCE: &str = "http://127.0.0.1:9001/counters";

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: "127.0.0.1:8080".to_string(),
            sources: vec![DEFAULT_SOURCE.to_string()],
            poll_interval: Duration::from_secs(1),
            poll_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(1),
            max_feed_bytes: 256 * 1024 * 1024,
            max_age: Duration::from_secs(3),
            retention: Duration::from_secs(3600),
            workers: 4,
            demo: false,
            remote_write: None,
            auth_token_file: None,
            insecure_no_auth: false,
            rate_limit: None,
            data_dir: None,
            in_memory: false,
            fsync: FsyncPolicy::EveryBatch,
            compaction_interval: Duration::from_secs(60),
            http: ConnectionLimits::default(),
        }
    }
}

impl ServerConfig {
    /// Durability settings, unless history is to stay in memory only.
    pub fn persist(&self) -> Option<PersistConfig> {
        match (&self.data_dir, self.in_memory) {
            (Some(dir), false) => Some(PersistConfig {
                data_dir: dir.clone(),
                fsync: self.fsync,
                compaction_interval: self.compaction_interval,
                retention: self.retention,
            }),
            _ => None,
        }
    }
}

fn parse_fsync(value: &str, interval: Duration) -> Result<FsyncPolicy, String> {
    match value {
        "every-batch" => Ok(FsyncPolicy::EveryBatch),
        "interval" => Ok(FsyncPolicy::Interval(interval)),
        "never" => Ok(FsyncPolicy::Never),
        other => Err(format!(
            "{other:?}: expected every-batch, interval or never"
        )),
    }
}

/// The connection-bound flags both programs share, for their help texts (defaults: see
/// [`ConnectionLimits::default`], checked by a test).
macro_rules! connection_flags_help {
    () => {
        "  --request-timeout DUR    a request head must arrive, and an answer be taken, within it;
                           else 408 / close (default 10s)
  --idle-timeout DUR       close a kept-alive connection idle this long (default 60s)
  --max-connections N      connections beyond this many get 503 + Retry-After (default 1024)
"
    };
}

pub const SERVER_HELP: &str = concat!(
    "\
metrics-server: polls switch counter feeds and answers a JSON API about them

USAGE: metrics-server [FLAGS]

FLAGS:
  --listen HOST:PORT       API address (default 127.0.0.1:8080; port 0 picks a free port)
  --source URL             feed to poll; repeat for several feeds, one poller each
                           (default http://127.0.0.1:9001/counters)
  --poll-interval DUR      time between polls of each feed (default 1s)
  --poll-timeout DUR       whole-request budget of one poll (default 3s)
  --connect-timeout DUR    TCP connect budget of one poll (default 1s)
  --max-feed-bytes SIZE    cut feed bodies larger than this (default 256MiB)
  --max-age DUR            samples older than this are stale (default 3s)
  --retention DUR          history older than this is dropped (default 1h)
  --workers N              API worker threads (default 4)
",
    connection_flags_help!(),
    "\
  --log-level LEVEL        off, error, warn, info, debug or trace (default info)
  --log-format FORMAT      text, or json (one object per line, for journald/Loki)
  --demo                   also run a generator in-process where the first --source points
  --remote-write URL       push every accepted sample to a Prometheus remote-write receiver
  --auth-token-file PATH   require Authorization: Bearer <token>; one token per line, plain or
                           sha256:<hex>; re-read on SIGHUP (/healthz stays open)
  --insecure-no-auth       allow a non-loopback --listen without --auth-token-file
  --rate-limit RATE        requests per client (token, or address): 200/s, 6000/m
  --burst N                requests a client may send at once (default 2 s worth)
  --data-dir PATH          keep history on disk here (WAL + compressed block files) so it
                           survives restarts and crashes; unset: memory only
  --in-memory              memory only, even if a config file sets --data-dir
  --fsync POLICY           when the WAL reaches the disk: every-batch (after each poll, the
                           default), interval (every --fsync-interval), or never (the kernel's
                           choice: a power loss may cost ~30 s; a process crash costs nothing)
  --fsync-interval DUR     with --fsync interval (default 1s)
  --compaction-interval DUR  how often sealed blocks go to block files and the WAL is trimmed
                           (default 1m)
  --config PATH            read flags from a TOML file (keys are flag names); flags override it
  -h, --help               print this help
  -V, --version            print the version

DUR is humantime syntax: 500ms, 2s, 5m, 1h. SIZE is bytes, or with KiB/MiB/GiB (KB/MB/GB).
"
);

pub const GENERATOR_HELP: &str = concat!(
    "\
telemetry-generator: simulates switch counters and serves them as a CSV feed at /counters

USAGE: telemetry-generator [FLAGS]

FLAGS:
  --listen HOST:PORT       feed address (default 127.0.0.1:9001; port 0 picks a free port)
  --switches N             number of switches, named switch1..switchN (default 10)
  --interval DUR           time between counter updates (default 1s)
  --seed N                 seed for reproducible values (default: random)
  --workers N              HTTP worker threads (default 4)
",
    connection_flags_help!(),
    "\
  --fault-rate P           fraction of requests that misbehave on purpose, 0..1 (default 0)
  --fault-modes LIST       comma-separated: 500, truncate, slow, stale (default all)
  --fault-delay DUR        how long a 'slow' answer waits (default 10s)
  --fault-stale-by DUR     how old 'stale' timestamps are (default 60s)
  --log-level LEVEL        off, error, warn, info, debug or trace (default info)
  --log-format FORMAT      text, or json (one object per line, for journald/Loki)
  --config PATH            read flags from a TOML file (keys are flag names); flags override it
  -h, --help               print this help
  -V, --version            print the version

DUR is humantime syntax: 500ms, 2s, 5m, 1h.
"
);

fn text(flag: &str, value: OsString) -> Result<String, ConfigError> {
    value
        .into_string()
        .map_err(|v| invalid(flag, format!("{v:?} is not UTF-8")))
}

fn duration(flag: &str, value: OsString) -> Result<Duration, ConfigError> {
    let value = text(flag, value)?;
    let parsed =
        humantime::parse_duration(&value).map_err(|e| invalid(flag, format!("{value:?}: {e}")))?;
    if parsed.is_zero() {
        return Err(invalid(flag, "must be greater than zero"));
    }
    Ok(parsed)
}

fn number<T>(
    flag: &str,
    value: OsString,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + fmt::Display,
{
    let value = text(flag, value)?;
    let parsed: T = value
        .parse()
        .map_err(|_| invalid(flag, format!("{value:?} is not a number")))?;
    if !range.contains(&parsed) {
        return Err(invalid(
            flag,
            format!("{parsed} is outside {}..={}", range.start(), range.end()),
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
pub fn check_source(url: &str) -> Result<(), String> {
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

/// The flags a server config file may set (its keys are the flag names).
const SERVER_KEYS: [&str; 25] = [
    CONNECTION_KEYS[0],
    CONNECTION_KEYS[1],
    CONNECTION_KEYS[2],
    "data-dir",
    "in-memory",
    "fsync",
    "fsync-interval",
    "compaction-interval",
    "remote-write",
    "auth-token-file",
    "insecure-no-auth",
    "rate-limit",
    "burst",
    "listen",
    "source",
    "poll-interval",
    "poll-timeout",
    "connect-timeout",
    "max-feed-bytes",
    "max-age",
    "retention",
    "workers",
    "log-level",
    "log-format",
    "demo",
];

/// The flags a generator config file may set.
const GENERATOR_KEYS: [&str; 14] = [
    CONNECTION_KEYS[0],
    CONNECTION_KEYS[1],
    CONNECTION_KEYS[2],
    "listen",
    "switches",
    "interval",
    "seed",
    "workers",
    "fault-rate",
    "fault-modes",
    "fault-delay",
    "fault-stale-by",
    "log-level",
    "log-format",
];

/// Flags that take no value: `true` sets them, `false` leaves them unset.
const SWITCH_KEYS: [&str; 3] = ["demo", "insecure-no-auth", "in-memory"];

/// The `--config PATH` (or `--config=PATH`) of a command line, if any.
fn config_path(args: &[OsString]) -> Option<OsString> {
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--" {
            return None;
        }
        if arg == "--config" {
            return iter.next().cloned();
        }
        if let Some(path) = arg.to_str().and_then(|a| a.strip_prefix("--config=")) {
            return Some(path.into());
        }
    }
    None
}

fn toml_scalar(key: &str, value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        other => Err(format!(
            "{key}: expected a string or a number, found {}",
            other.type_str()
        )),
    }
}

/// A TOML config file as the equivalent flags: each key is a flag name, each value its value;
/// arrays repeat the flag (`source`) or join with commas (`fault-modes`).
pub fn file_args(text: &str, keys: &[&str]) -> Result<Vec<OsString>, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    let mut args = Vec::new();
    for (key, value) in &table {
        if !keys.contains(&key.as_str()) {
            return Err(format!(
                "unknown key {key:?} (keys are the flag names: {})",
                keys.join(", ")
            ));
        }
        let flag = format!("--{key}");
        match value {
            toml::Value::Boolean(on) if SWITCH_KEYS.contains(&key.as_str()) => {
                if *on {
                    args.push(flag.into());
                }
            }
            toml::Value::Array(items) if key == "fault-modes" => {
                let modes: Result<Vec<String>, String> =
                    items.iter().map(|v| toml_scalar(key, v)).collect();
                args.push(flag.into());
                args.push(modes?.join(",").into());
            }
            toml::Value::Array(items) => {
                for item in items {
                    args.push(flag.clone().into());
                    args.push(toml_scalar(key, item)?.into());
                }
            }
            scalar => {
                args.push(flag.into());
                args.push(toml_scalar(key, scalar)?.into());
            }
        }
    }
    Ok(args)
}

fn read_config_file(path: &OsString, keys: &[&str]) -> Result<Vec<OsString>, ConfigError> {
    let shown = std::path::Path::new(path).display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read config file {shown}: {e}")))?;
    file_args(&text, keys).map_err(|why| ConfigError(format!("config file {shown}: {why}")))
}

fn in_file(path: &OsString, e: ConfigError) -> ConfigError {
    ConfigError(format!(
        "config file {}: {e}",
        std::path::Path::new(path).display()
    ))
}

/// Parses the metrics server's command line: defaults, then `--config` file, then flags.
pub fn parse_server_args(
    args: impl IntoIterator<Item = OsString>,
) -> Result<Command<ServerConfig>, ConfigError> {
    let args: Vec<OsString> = args.into_iter().collect();
    let (config, log) = match config_path(&args) {
        Some(path) => {
            let from_file = read_config_file(&path, &SERVER_KEYS)?;
            match parse_server_flags(ServerConfig::default(), LogSettings::default(), from_file)
                .map_err(|e| in_file(&path, e))?
            {
                Command::Run { config, log } => (config, log),
                other => return Ok(other),
            }
        }
        None => (ServerConfig::default(), LogSettings::default()),
    };
    parse_server_flags(config, log, args)
}

/// Parses the generator's command line: defaults, then `--config` file, then flags.
pub fn parse_generator_args(
    args: impl IntoIterator<Item = OsString>,
) -> Result<Command<GeneratorConfig>, ConfigError> {
    let args: Vec<OsString> = args.into_iter().collect();
    let (config, log) = match config_path(&args) {
        Some(path) => {
            let from_file = read_config_file(&path, &GENERATOR_KEYS)?;
            match parse_generator_flags(
                GeneratorConfig::default(),
                LogSettings::default(),
                from_file,
            )
            .map_err(|e| in_file(&path, e))?
            {
                Command::Run { config, log } => (config, log),
                other => return Ok(other),
            }
        }
        None => (GeneratorConfig::default(), LogSettings::default()),
    };
    parse_generator_flags(config, log, args)
}

/// The connection-bound flags both programs share (their config-file keys too).
const CONNECTION_KEYS: [&str; 3] = ["request-timeout", "idle-timeout", "max-connections"];

/// Sets one of [`CONNECTION_KEYS`] in `limits`.
fn connection_flag(
    name: &str,
    value: OsString,
    limits: &mut ConnectionLimits,
) -> Result<(), ConfigError> {
    match name {
        "request-timeout" => limits.request_timeout = duration("--request-timeout", value)?,
        "idle-timeout" => limits.idle_timeout = duration("--idle-timeout", value)?,
        _ => limits.max_connections = number("--max-connections", value, 1..=1_000_000)?,
    }
    Ok(())
}

fn version_or_help<C>(arg: &lexopt::Arg<'_>) -> Option<Command<C>> {
    use lexopt::Arg::{Long, Short};
    match arg {
        Short('h') | Long("help") => Some(Command::Help),
        Short('V') | Long("version") => Some(Command::Version),
        _ => None,
    }
}

/// Parses the metrics server's flags over `config` and `log`.
fn parse_server_flags(
    mut config: ServerConfig,
    mut log: LogSettings,
    args: impl IntoIterator<Item = OsString>,
) -> Result<Command<ServerConfig>, ConfigError> {
    use lexopt::Arg::Long;
    let mut sources = Vec::new();
    let mut burst: Option<f64> = config.rate_limit.map(|(_, b)| b);
    let mut fsync: Option<String> = None;
    let mut fsync_interval: Option<Duration> = None;
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next()? {
        if let Some(command) = version_or_help(&arg) {
            return Ok(command);
        }
        match arg {
            Long(name) if CONNECTION_KEYS.contains(&name) => {
                let name = name.to_string();
                connection_flag(&name, parser.value()?, &mut config.http)?
            }
            Long("listen") => config.listen = text("--listen", parser.value()?)?,
            // Read before the flags (see `config_file`); the flags then override the file.
            Long("config") => {
                parser.value()?;
            }
            Long("source") => {
                let url = text("--source", parser.value()?)?;
                check_source(&url).map_err(|why| invalid("--source", why))?;
                sources.push(url);
            }
            Long("poll-interval") => {
                config.poll_interval = duration("--poll-interval", parser.value()?)?
            }
            Long("poll-timeout") => {
                config.poll_timeout = duration("--poll-timeout", parser.value()?)?
            }
            Long("connect-timeout") => {
                config.connect_timeout = duration("--connect-timeout", parser.value()?)?
            }
            Long("max-feed-bytes") => {
                let value = text("--max-feed-bytes", parser.value()?)?;
                config.max_feed_bytes =
                    parse_size(&value).map_err(|why| invalid("--max-feed-bytes", why))?;
            }
            Long("max-age") => config.max_age = duration("--max-age", parser.value()?)?,
            Long("retention") => config.retention = duration("--retention", parser.value()?)?,
            Long("workers") => config.workers = number("--workers", parser.value()?, 1..=1024)?,
            Long("log-level") => {
                let value = text("--log-level", parser.value()?)?;
                log.level =
                    logging::parse_level(&value).map_err(|why| invalid("--log-level", why))?;
            }
            Long("log-format") => {
                let value = text("--log-format", parser.value()?)?;
                log.format = value
                    .parse::<LogFormat>()
                    .map_err(|why| invalid("--log-format", why))?;
            }
            Long("demo") => config.demo = true,
            Long("auth-token-file") => config.auth_token_file = Some(parser.value()?.into()),
            Long("insecure-no-auth") => config.insecure_no_auth = true,
            Long("rate-limit") => {
                let value = text("--rate-limit", parser.value()?)?;
                let rate =
                    access::parse_rate(&value).map_err(|why| invalid("--rate-limit", why))?;
                config.rate_limit = Some((rate, burst.unwrap_or(2.0 * rate)));
            }
            Long("burst") => {
                let value: f64 = number("--burst", parser.value()?, 1.0..=1e9)?;
                burst = Some(value);
            }
            Long("data-dir") => config.data_dir = Some(parser.value()?.into()),
            Long("in-memory") => config.in_memory = true,
            Long("fsync") => fsync = Some(text("--fsync", parser.value()?)?),
            Long("fsync-interval") => {
                fsync_interval = Some(duration("--fsync-interval", parser.value()?)?)
            }
            Long("compaction-interval") => {
                config.compaction_interval = duration("--compaction-interval", parser.value()?)?
            }
            Long("remote-write") => {
                let url = text("--remote-write", parser.value()?)?;
                check_source(&url).map_err(|why| invalid("--remote-write", why))?;
                config.remote_write = Some(url);
            }
            other => return Err(other.unexpected().into()),
        }
    }
    if !sources.is_empty() {
        config.sources = sources;
    }
    match (&mut config.rate_limit, burst) {
        (Some((_, b)), Some(burst)) => *b = burst,
        (None, Some(_)) => return Err(invalid("--burst", "needs --rate-limit")),
        _ => {}
    }
    let interval = fsync_interval.unwrap_or(match config.fsync {
        FsyncPolicy::Interval(every) => every,
        _ => Duration::from_secs(1),
    });
    if let Some(policy) = fsync {
        config.fsync = parse_fsync(&policy, interval).map_err(|why| invalid("--fsync", why))?;
    } else if let FsyncPolicy::Interval(every) = &mut config.fsync {
        *every = interval;
    }
    if fsync_interval.is_some() && !matches!(config.fsync, FsyncPolicy::Interval(_)) {
        return Err(invalid("--fsync-interval", "needs --fsync interval"));
    }
    if interval < Duration::from_millis(10) {
        return Err(invalid("--fsync-interval", "must be at least 10ms"));
    }
    if config.compaction_interval.is_zero() {
        return Err(invalid("--compaction-interval", "must be more than 0"));
    }
    Ok(Command::Run { config, log })
}

/// Parses the generator's flags over `config` and `log`.
fn parse_generator_flags(
    mut config: GeneratorConfig,
    mut log: LogSettings,
    args: impl IntoIterator<Item = OsString>,
) -> Result<Command<GeneratorConfig>, ConfigError> {
    use lexopt::Arg::Long;
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next()? {
        if let Some(command) = version_or_help(&arg) {
            return Ok(command);
        }
        match arg {
            Long(name) if CONNECTION_KEYS.contains(&name) => {
                let name = name.to_string();
                connection_flag(&name, parser.value()?, &mut config.http)?
            }
            Long("listen") => config.listen = text("--listen", parser.value()?)?,
            // Read before the flags (see `config_file`); the flags then override the file.
            Long("config") => {
                parser.value()?;
            }
            Long("switches") => {
                config.n_switches = number("--switches", parser.value()?, 1..=10_000_000)?
            }
            Long("interval") => config.interval = duration("--interval", parser.value()?)?,
            Long("seed") => config.seed = Some(number("--seed", parser.value()?, 0..=u64::MAX)?),
            Long("workers") => config.workers = number("--workers", parser.value()?, 1..=1024)?,
            Long("fault-rate") => {
                config.faults.rate = number("--fault-rate", parser.value()?, 0.0..=1.0)?
            }
            Long("fault-modes") => {
                let value = text("--fault-modes", parser.value()?)?;
                config.faults.modes = value
                    .split(',')
                    .map(|m| m.trim().parse::<FaultMode>())
                    .collect::<Result<_, _>>()
                    .map_err(|why| invalid("--fault-modes", why))?;
            }
            Long("fault-delay") => {
                config.faults.delay = duration("--fault-delay", parser.value()?)?
            }
            Long("fault-stale-by") => {
                config.faults.stale_by = duration("--fault-stale-by", parser.value()?)?
            }
            Long("log-level") => {
                let value = text("--log-level", parser.value()?)?;
                log.level =
                    logging::parse_level(&value).map_err(|why| invalid("--log-level", why))?;
            }
            Long("log-format") => {
                let value = text("--log-format", parser.value()?)?;
                log.format = value
                    .parse::<LogFormat>()
                    .map_err(|why| invalid("--log-format", why))?;
            }
            other => return Err(other.unexpected().into()),
        }
    }
    Ok(Command::Run { config, log })
}

#[cfg(test)]
mod tests {

    /// The connection flags' defaults are written in the help text and in
    /// `ConnectionLimits::default`: they must agree.
    #[test]
    fn connection_flag_defaults_in_help_match_the_code() {
        let defaults = ConnectionLimits::default();
        let default_of = |help: &str, flag: &str| -> String {
            let line = &help[help.find(flag).expect("flag in help")..];
            let rest = &line[line.find("(default ").expect("a default") + "(default ".len()..];
            rest[..rest.find(')').expect("closed")].to_string()
        };
        for help in [SERVER_HELP, GENERATOR_HELP] {
            let parse =
                |flag| humantime::parse_duration(&default_of(help, flag)).expect("duration");
            assert_eq!(parse("--request-timeout"), defaults.request_timeout);
            assert_eq!(parse("--idle-timeout"), defaults.idle_timeout);
            assert_eq!(
                default_of(help, "--max-connections"),
                defaults.max_connections.to_string()
            );
        }
    }

    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn server(list: &[&str]) -> Result<ServerConfig, String> {
        match parse_server_args(args(list)) {
            Ok(Command::Run { config, .. }) => Ok(config),
            Ok(other) => Err(format!("{other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    fn generator(list: &[&str]) -> Result<GeneratorConfig, String> {
        match parse_generator_args(args(list)) {
            Ok(Command::Run { config, .. }) => Ok(config),
            Ok(other) => Err(format!("{other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn server_defaults_and_overrides() {
        assert_eq!(server(&[]), Ok(ServerConfig::default()));
        let config = server(&[
            "--listen=127.0.0.1:0",
            "--source",
            "http://a:1/counters",
            "--source",
            "http://b:2/counters",
            "--poll-interval",
            "500ms",
            "--retention",
            "5m",
            "--max-feed-bytes",
            "64MiB",
            "--workers",
            "8",
            "--demo",
        ])
        .expect("valid");
        assert_eq!(
            config.sources,
            ["http://a:1/counters", "http://b:2/counters"]
        );
        assert_eq!(config.poll_interval, Duration::from_millis(500));
        assert_eq!(config.retention, Duration::from_secs(300));
        assert_eq!(config.max_feed_bytes, 64 << 20);
        assert_eq!(config.workers, 8);
        assert!(config.demo);
    }

    #[test]
    fn durability_flags() {
        let config = server(&[
            "--data-dir",
            "/var/lib/ft",
            "--fsync",
            "interval",
            "--fsync-interval",
            "250ms",
        ])
        .expect("valid");
        let persist = config.persist().expect("persists");
        assert_eq!(persist.data_dir, std::path::PathBuf::from("/var/lib/ft"));
        assert_eq!(
            persist.fsync,
            FsyncPolicy::Interval(Duration::from_millis(250))
        );
        assert_eq!(persist.compaction_interval, Duration::from_secs(60));
        // Order does not matter; the default is every-batch.
        let config = server(&["--fsync-interval", "2s", "--fsync", "interval"]).expect("valid");
        assert_eq!(config.fsync, FsyncPolicy::Interval(Duration::from_secs(2)));
        assert_eq!(server(&[]).map(|c| c.fsync), Ok(FsyncPolicy::EveryBatch));
        assert_eq!(server(&[]).map(|c| c.persist()), Ok(None));
        let forced = server(&["--data-dir", "/x", "--in-memory"]).expect("valid");
        assert_eq!(forced.persist(), None);
        for (list, flag) in [
            (&["--fsync", "sometimes"][..], "--fsync"),
            (&["--fsync-interval", "1s"][..], "--fsync-interval"),
            (
                &["--fsync", "interval", "--fsync-interval", "1ms"][..],
                "--fsync-interval",
            ),
            (
                &["--compaction-interval", "0s"][..],
                "--compaction-interval",
            ),
        ] {
            let error = server(list).expect_err("invalid");
            assert!(error.contains(flag), "{list:?}: {error}");
        }
    }

    #[test]
    fn server_rejects_bad_values() {
        let cases: &[(&[&str], &str)] = &[
            (&["--poll-interval", "soon"], "--poll-interval"),
            (&["--max-age", "0s"], "greater than zero"),
            (&["--workers", "0"], "outside"),
            (&["--source", "ftp://x/counters"], "not supported"),
            (&["--source", "counters"], "absolute URL"),
            (&["--log-level", "loud"], "--log-level"),
            (&["--max-feed-bytes", "12XB"], "unit"),
            (&["--bogus"], "bogus"),
            (&["--listen"], "listen"),
        ];
        for (list, fragment) in cases {
            let err = server(list).expect_err("should fail");
            assert!(err.contains(fragment), "{list:?}: {err}");
        }
    }

    #[test]
    fn generator_flags() {
        assert_eq!(generator(&[]), Ok(GeneratorConfig::default()));
        let config = generator(&[
            "--switches",
            "100000",
            "--interval",
            "500ms",
            "--seed",
            "42",
            "--fault-rate",
            "0.1",
            "--fault-modes",
            "500,truncate",
        ])
        .expect("valid");
        assert_eq!(config.n_switches, 100_000);
        assert_eq!(config.seed, Some(42));
        assert_eq!(
            config.faults.modes,
            [FaultMode::ServerError, FaultMode::Truncate]
        );
        assert!(generator(&["--fault-rate", "1.5"]).is_err());
        assert!(generator(&["--fault-modes", "explode"]).is_err());
        assert!(generator(&["--switches", "-3"]).is_err());
        assert_eq!(parse_generator_args(args(&["--help"])), Ok(Command::Help));
        assert_eq!(parse_generator_args(args(&["-V"])), Ok(Command::Version));
    }

    #[test]
    fn config_files_mirror_flags_and_flags_override_them() {
        let dir = std::env::temp_dir().join(format!("fabric-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("server.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9999\"\nsource = [\"http://a:1/counters\", \"http://b:2/counters\"]\n\
             poll-interval = \"2s\"\nworkers = 6\nmax-feed-bytes = \"64MiB\"\ndemo = false\nlog-format = \"json\"\n",
        )
        .expect("write");
        let path_arg = path.display().to_string();
        let from_file = server(&["--config", &path_arg]).expect("valid file");
        assert_eq!(from_file.listen, "127.0.0.1:9999");
        assert_eq!(
            from_file.sources,
            ["http://a:1/counters", "http://b:2/counters"]
        );
        assert_eq!(from_file.poll_interval, Duration::from_secs(2));
        assert_eq!(from_file.workers, 6);
        assert_eq!(from_file.max_feed_bytes, 64 << 20);
        assert!(!from_file.demo);
        let overridden = server(&[
            "--workers",
            "2",
            &format!("--config={path_arg}"),
            "--source",
            "http://c:3/counters",
        ])
        .expect("valid");
        assert_eq!(overridden.workers, 2, "flags win over the file");
        assert_eq!(
            overridden.sources,
            ["http://c:3/counters"],
            "flag sources replace the file's"
        );
        assert_eq!(
            overridden.listen, "127.0.0.1:9999",
            "the rest still comes from the file"
        );
        match parse_server_args(args(&["--config", &path_arg])) {
            Ok(Command::Run { log, .. }) => assert_eq!(log.format, LogFormat::Json),
            other => panic!("{other:?}"),
        }
        for (text, fragment) in [
            ("listen = 5\nbogus = 1\n", "unknown key \"bogus\""),
            ("workers = \"many\"\n", "--workers"),
            ("listen = [\n", "TOML parse error"),
            ("source = true\n", "expected a string"),
        ] {
            std::fs::write(&path, text).expect("write");
            let err = server(&["--config", &path_arg]).expect_err(text);
            assert!(
                err.contains("config file") && (err.contains(fragment) || fragment == "TOML"),
                "{text}: {err}"
            );
        }
        let err = server(&["--config", "/nonexistent/fabric.toml"]).expect_err("missing file");
        assert!(err.contains("cannot read config file"), "{err}");
        let gen_path = dir.join("generator.toml");
        std::fs::write(
            &gen_path,
            "switches = 500\nfault-modes = [\"500\", \"stale\"]\nfault-rate = 0.25\n",
        )
        .expect("write");
        let generator_config =
            generator(&["--config", &gen_path.display().to_string()]).expect("valid");
        assert_eq!(generator_config.n_switches, 500);
        assert_eq!(
            generator_config.faults.modes,
            [FaultMode::ServerError, FaultMode::Stale]
        );
        assert_eq!(generator_config.faults.rate, 0.25);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }
}
