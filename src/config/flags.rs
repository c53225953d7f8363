//! The flag table: every flag of both programs, declared once in [`FLAGS`] with its name
//! (also its config-file key), the program(s) that take it, its value, its default, its help
//! and how it sets the [`Settings`] being built. `--help`, the accepted config-file keys, the
//! parser and `ServerConfig::default()` / `GeneratorConfig::default()` all come from here.
//!
//! Adding a flag: one entry below, plus the field it sets.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::generator::service::{FaultConfig, FaultMode, FeedFormat, GeneratorConfig};
use crate::server::access;
use crate::server::persist::FsyncPolicy;
use crate::shared::feed;
use crate::shared::http::ConnectionLimits;
use crate::shared::logging::{self, LogFormat, LogSettings};

use super::values::{check_source, duration, number, parse_size, text};
use super::{ServerConfig, DEFAULT_SOURCE};

/// One of the two programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    Server,
    Generator,
}

/// Which program(s) take a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Programs {
    Server,
    Generator,
    Both,
}

impl Programs {
    fn has(self, program: Program) -> bool {
        matches!(
            (self, program),
            (Programs::Both, _)
                | (Programs::Server, Program::Server)
                | (Programs::Generator, Program::Generator)
        )
    }
}

/// What a flag takes after its name.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Nothing (`--demo`). In a config file `true` sets it and `false` leaves it unset.
    Switch,
    /// One value, named so in `--help` (`--poll-interval DUR`); the last one given wins.
    Value(&'static str),
    /// A comma-separated list (`--fault-modes 500,slow`); in a config file also an array.
    List(&'static str),
    /// One value per occurrence, collected (`--source URL`, a config-file array). A layer
    /// (defaults, config file, command line) that gives it replaces the earlier layers' values:
    /// `reset` empties them.
    Repeat {
        value: &'static str,
        reset: fn(&mut Settings),
    },
}

/// A flag's default.
#[derive(Debug, Clone, Copy)]
pub enum Preset {
    /// No default (the setting stays unset, or a switch stays off).
    None,
    /// This value, parsed like a command-line value before any layer, and shown in `--help`.
    Value(&'static str),
    /// A default computed from other settings, described for `--help`.
    Note(&'static str),
}

/// A condition a flag needs once its layer (config file, command line) is read.
#[derive(Debug, Clone, Copy)]
pub struct Needs {
    /// What is needed, in words: `--rate-limit`.
    pub what: &'static str,
    pub holds: fn(&Settings) -> bool,
}

/// One flag.
#[derive(Debug, Clone, Copy)]
pub struct Flag {
    /// `--name` on the command line, `name = …` in a config file.
    pub name: &'static str,
    pub programs: Programs,
    pub kind: Kind,
    pub preset: Preset,
    /// One line of help; `--help` adds the default and wraps it.
    pub help: &'static str,
    /// Parses a value (empty for a switch) into the settings; the error says why it is bad.
    pub set: fn(&mut Settings, &OsStr) -> Result<(), String>,
    pub needs: Option<Needs>,
}

/// The fields every entry of [`FLAGS`] overrides; the rest are the common case.
const FLAG: Flag = Flag {
    name: "",
    programs: Programs::Both,
    kind: Kind::Switch,
    preset: Preset::None,
    help: "",
    set: |_, _| Err("this flag sets nothing (its table entry lacks `set`)".into()),
    needs: None,
};

/// `--burst` defaults to this many seconds of `--rate-limit`.
pub const BURST_SECONDS: f64 = 2.0;

/// Every flag, in `--help` order (each program's help lists the ones it takes).
pub static FLAGS: &[Flag] = &[
    Flag {
        name: "listen",
        programs: Programs::Server,
        kind: Kind::Value("HOST:PORT"),
        preset: Preset::Value("127.0.0.1:8080"),
        help: "API address; port 0 picks a free port",
        set: |s, v| text(v).map(|v| s.server.listen = v.to_string()),
        ..FLAG
    },
    Flag {
        name: "source",
        programs: Programs::Server,
        kind: Kind::Repeat {
            value: "URL",
            reset: |s| s.server.sources.clear(),
        },
        preset: Preset::Value(DEFAULT_SOURCE),
        help: "feed to poll; repeat for several feeds, one poller each; a #format=classic|ufm-csv|prometheus|openmetrics fragment names its format (else detected per answer)",
        set: |s, v| {
            let url = text(v)?;
            check_source(url)?;
            s.server.sources.push(url.to_string());
            Ok(())
        },
        ..FLAG
    },
    Flag {
        name: "key-labels",
        programs: Programs::Server,
        kind: Kind::Value("SETS"),
        preset: Preset::Value(feed::DEFAULT_KEY_LABELS),
        help: "Prometheus sources: label sets that key a series (a port), tried in order; labels of a set joined by +",
        set: |s, v| {
            s.server.key_labels = feed::parse_key_labels(text(v)?)?;
            Ok(())
        },
        ..FLAG
    },
    Flag {
        name: "max-series",
        programs: Programs::Server,
        kind: Kind::Value("N"),
        preset: Preset::Value("2000000"),
        help: "series keys one source may make the server hold; rows with new keys beyond it are rejected (too_many_series)",
        set: |s, v| number(v, 1..=usize::MAX).map(|n| s.server.limits.max_series = n),
        ..FLAG
    },
    Flag {
        name: "max-metrics",
        programs: Programs::Server,
        kind: Kind::Value("N"),
        preset: Preset::Value("1000"),
        help: "metric names (columns) one source may add; new ones beyond it are dropped and counted",
        set: |s, v| number(v, 1..=100_000).map(|n| s.server.limits.max_metrics = n),
        ..FLAG
    },
    Flag {
        name: "shard",
        programs: Programs::Server,
        kind: Kind::Value("I/N"),
        help: "keep only shard I of N of the fabric's series (FNV-1a of the series key, mod N); run N servers with 0/N..N-1/N on the same sources",
        set: |s, v| {
            s.server.shard = Some(feed::key::Shard::parse(text(v)?)?);
            Ok(())
        },
        ..FLAG
    },
    Flag {
        name: "max-subscribers",
        programs: Programs::Server,
        kind: Kind::Value("N"),
        preset: Preset::Value("256"),
        help: "live /telemetry/stream subscribers at most; beyond, 503 with Retry-After",
        set: |s, v| number(v, 1..=100_000).map(|n| s.server.max_subscribers = n),
        ..FLAG
    },
    Flag {
        name: "counter-columns",
        programs: Programs::Server,
        kind: Kind::List("NAMES"),
        preset: Preset::None,
        help: "columns or metric names that are cumulative counters whatever their names say",
        set: |s, v| {
            s.server.counter_columns = text(v)?
                .split(',')
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
                .collect();
            Ok(())
        },
        ..FLAG
    },
    Flag {
        name: "poll-interval",
        programs: Programs::Server,
        kind: Kind::Value("DUR"),
        preset: Preset::Value("1s"),
        help: "time between polls of each feed",
        set: |s, v| duration(v).map(|d| s.server.poll_interval = d),
        ..FLAG
    },
    Flag {
        name: "poll-timeout",
        programs: Programs::Server,
        kind: Kind::Value("DUR"),
        preset: Preset::Value("3s"),
        help: "whole-request budget of one poll",
        set: |s, v| duration(v).map(|d| s.server.poll_timeout = d),
        ..FLAG
    },
    Flag {
        name: "connect-timeout",
        programs: Programs::Server,
        kind: Kind::Value("DUR"),
        preset: Preset::Value("1s"),
        help: "TCP connect budget of one poll",
        set: |s, v| duration(v).map(|d| s.server.connect_timeout = d),
        ..FLAG
    },
    Flag {
        name: "max-feed-bytes",
        programs: Programs::Server,
        kind: Kind::Value("SIZE"),
        preset: Preset::Value("256MiB"),
        help: "cut feed bodies larger than this",
        set: |s, v| parse_size(text(v)?).map(|n| s.server.max_feed_bytes = n),
        ..FLAG
    },
    Flag {
        name: "max-age",
        programs: Programs::Server,
        kind: Kind::Value("DUR"),
        preset: Preset::Value("3s"),
        help: "samples older than this are stale",
        set: |s, v| duration(v).map(|d| s.server.max_age = d),
        ..FLAG
    },
    Flag {
        name: "retention",
        programs: Programs::Server,
        kind: Kind::Value("DUR"),
        preset: Preset::Value("1h"),
        help: "history older than this is dropped",
        set: |s, v| duration(v).map(|d| s.server.retention = d),
        ..FLAG
    },
    Flag {
        name: "workers",
        programs: Programs::Server,
        kind: Kind::Value("N"),
        preset: Preset::Value("4"),
        help: "API worker threads",
        set: |s, v| number(v, 1..=1024).map(|n| s.server.workers = n),
        ..FLAG
    },
    Flag {
        name: "listen",
        programs: Programs::Generator,
        kind: Kind::Value("HOST:PORT"),
        preset: Preset::Value("127.0.0.1:9001"),
        help: "feed address; port 0 picks a free port",
        set: |s, v| text(v).map(|v| s.generator.listen = v.to_string()),
        ..FLAG
    },
    Flag {
        name: "switches",
        programs: Programs::Generator,
        kind: Kind::Value("N"),
        preset: Preset::Value("10"),
        help: "number of switches, named switch1..switchN",
        set: |s, v| number(v, 1..=10_000_000).map(|n| s.generator.n_switches = n),
        ..FLAG
    },
    Flag {
        name: "format",
        programs: Programs::Generator,
        kind: Kind::Value("FORMAT"),
        preset: Preset::Value("classic"),
        help: "classic: switch_id,bandwidth,latency,errors,timestamp at /counters; ufm: an InfiniBand fabric as UFM Telemetry serves it, CSV at /csv/metrics and Prometheus text at /metrics",
        set: |s, v| {
            s.generator.format = text(v)?.parse()?;
            Ok(())
        },
        ..FLAG
    },
    Flag {
        name: "ports",
        programs: Programs::Generator,
        kind: Kind::Value("N"),
        preset: Preset::Value("8"),
        help: "ports per switch with --format ufm (each a series: 30 counters)",
        set: |s, v| number(v, 1..=1024).map(|n| s.generator.ports = n),
        ..FLAG
    },
    Flag {
        name: "interval",
        programs: Programs::Generator,
        kind: Kind::Value("DUR"),
        preset: Preset::Value("1s"),
        help: "time between counter updates",
        set: |s, v| duration(v).map(|d| s.generator.interval = d),
        ..FLAG
    },
    Flag {
        name: "seed",
        programs: Programs::Generator,
        kind: Kind::Value("N"),
        preset: Preset::Note("random"),
        help: "seed for reproducible values",
        set: |s, v| number(v, 0..=u64::MAX).map(|n| s.generator.seed = Some(n)),
        ..FLAG
    },
    Flag {
        name: "workers",
        programs: Programs::Generator,
        kind: Kind::Value("N"),
        preset: Preset::Value("4"),
        help: "HTTP worker threads",
        set: |s, v| number(v, 1..=1024).map(|n| s.generator.workers = n),
        ..FLAG
    },
    Flag {
        name: "request-timeout",
        kind: Kind::Value("DUR"),
        preset: Preset::Value("10s"),
        help: "a request head must arrive, and an answer be taken, within it; else 408 / close",
        set: |s, v| duration(v).map(|d| s.http.request_timeout = d),
        ..FLAG
    },
    Flag {
        name: "idle-timeout",
        kind: Kind::Value("DUR"),
        preset: Preset::Value("60s"),
        help: "close a kept-alive connection idle this long",
        set: |s, v| duration(v).map(|d| s.http.idle_timeout = d),
        ..FLAG
    },
    Flag {
        name: "max-connections",
        kind: Kind::Value("N"),
        preset: Preset::Value("1024"),
        help: "connections beyond this many get 503 + Retry-After",
        set: |s, v| number(v, 1..=1_000_000).map(|n| s.http.max_connections = n),
        ..FLAG
    },
    Flag {
        name: "fault-rate",
        programs: Programs::Generator,
        kind: Kind::Value("P"),
        preset: Preset::Value("0"),
        help: "fraction of requests that misbehave on purpose, 0..1",
        set: |s, v| number(v, 0.0..=1.0).map(|p| s.generator.faults.rate = p),
        ..FLAG
    },
    Flag {
        name: "fault-modes",
        programs: Programs::Generator,
        kind: Kind::List("LIST"),
        preset: Preset::Value("500,truncate,slow,stale"),
        help: "comma-separated: 500, truncate, slow, stale",
        set: |s, v| {
            s.generator.faults.modes = text(v)?
                .split(',')
                .map(|m| m.trim().parse::<FaultMode>())
                .collect::<Result<_, _>>()?;
            Ok(())
        },
        ..FLAG
    },
    Flag {
        name: "fault-delay",
        programs: Programs::Generator,
        kind: Kind::Value("DUR"),
        preset: Preset::Value("10s"),
        help: "how long a 'slow' answer waits",
        set: |s, v| duration(v).map(|d| s.generator.faults.delay = d),
        ..FLAG
    },
    Flag {
        name: "fault-stale-by",
        programs: Programs::Generator,
        kind: Kind::Value("DUR"),
        preset: Preset::Value("60s"),
        help: "how old 'stale' timestamps are",
        set: |s, v| duration(v).map(|d| s.generator.faults.stale_by = d),
        ..FLAG
    },
    Flag {
        name: "log-level",
        kind: Kind::Value("LEVEL"),
        preset: Preset::Value("info"),
        help: "off, error, warn, info, debug or trace",
        set: |s, v| logging::parse_level(text(v)?).map(|l| s.log.level = l),
        ..FLAG
    },
    Flag {
        name: "log-format",
        kind: Kind::Value("FORMAT"),
        preset: Preset::Value("text"),
        help: "text, or json (one object per line, for journald/Loki)",
        set: |s, v| text(v)?.parse::<LogFormat>().map(|f| s.log.format = f),
        ..FLAG
    },
    Flag {
        name: "demo",
        programs: Programs::Server,
        help: "also run a generator in-process where the first --source points",
        set: |s, _| {
            s.server.demo = true;
            Ok(())
        },
        ..FLAG
    },
    Flag {
        name: "remote-write",
        programs: Programs::Server,
        kind: Kind::Value("URL"),
        help: "push every accepted sample to a Prometheus remote-write receiver",
        set: |s, v| {
            let url = text(v)?;
            check_source(url)?;
            s.server.remote_write = Some(url.to_string());
            Ok(())
        },
        ..FLAG
    },
    Flag {
        name: "auth-token-file",
        programs: Programs::Server,
        kind: Kind::Value("PATH"),
        help: "require Authorization: Bearer <token>; one token per line, plain or sha256:<hex>; \
               re-read on SIGHUP (/healthz stays open)",
        set: |s, v| {
            s.server.auth_token_file = Some(PathBuf::from(v));
            Ok(())
        },
        ..FLAG
    },
    Flag {
        name: "names",
        programs: Programs::Server,
        kind: Kind::Value("PATH"),
        help: "readable names for ports: CSV guid,port,name (a blank port names the node) or \
               ibnetdiscover -p output; re-read on SIGHUP",
        set: |s, v| {
            s.server.names = Some(PathBuf::from(v));
            Ok(())
        },
        ..FLAG
    },
    Flag {
        name: "insecure-no-auth",
        programs: Programs::Server,
        help: "allow a non-loopback --listen without --auth-token-file",
        set: |s, _| {
            s.server.insecure_no_auth = true;
            Ok(())
        },
        ..FLAG
    },
    Flag {
        name: "rate-limit",
        programs: Programs::Server,
        kind: Kind::Value("RATE"),
        help: "requests per client (token, or address): 200/s, 6000/m",
        set: |s, v| access::parse_rate(text(v)?).map(|r| s.rate = Some(r)),
        ..FLAG
    },
    Flag {
        name: "burst",
        programs: Programs::Server,
        kind: Kind::Value("N"),
        preset: Preset::Note("2 s worth of --rate-limit"),
        help: "requests a client may send at once",
        set: |s, v| number(v, 1.0..=1e9).map(|n| s.burst = Some(n)),
        needs: Some(Needs {
            what: "--rate-limit",
            holds: |s| s.rate.is_some(),
        }),
    },
    Flag {
        name: "data-dir",
        programs: Programs::Server,
        kind: Kind::Value("PATH"),
        help: "keep history on disk here (WAL + compressed block files) so it survives \
               restarts and crashes; unset: memory only",
        set: |s, v| {
            s.server.data_dir = Some(PathBuf::from(v));
            Ok(())
        },
        ..FLAG
    },
    Flag {
        name: "in-memory",
        programs: Programs::Server,
        help: "memory only, even if a config file sets --data-dir",
        set: |s, _| {
            s.server.in_memory = true;
            Ok(())
        },
        ..FLAG
    },
    Flag {
        name: "fsync",
        programs: Programs::Server,
        kind: Kind::Value("POLICY"),
        preset: Preset::Value("every-batch"),
        help: "when the WAL reaches the disk: every-batch (after each poll), interval (every \
               --fsync-interval), or never (the kernel's choice: a power loss may cost ~30 s; \
               a process crash costs nothing)",
        set: |s, v| {
            // The interval joins it at the end (`Settings::into_server`).
            s.server.fsync = match text(v)? {
                "every-batch" => FsyncPolicy::EveryBatch,
                "interval" => FsyncPolicy::Interval(Duration::ZERO),
                "never" => FsyncPolicy::Never,
                other => {
                    return Err(format!(
                        "{other:?}: expected every-batch, interval or never"
                    ))
                }
            };
            Ok(())
        },
        ..FLAG
    },
    Flag {
        name: "fsync-interval",
        programs: Programs::Server,
        kind: Kind::Value("DUR"),
        preset: Preset::Value("1s"),
        help: "with --fsync interval",
        set: |s, v| match duration(v)? {
            short if short < Duration::from_millis(10) => Err("must be at least 10ms".into()),
            every => {
                s.fsync_interval = every;
                Ok(())
            }
        },
        needs: Some(Needs {
            what: "--fsync interval",
            holds: |s| matches!(s.server.fsync, FsyncPolicy::Interval(_)),
        }),
    },
    Flag {
        name: "compaction-interval",
        programs: Programs::Server,
        kind: Kind::Value("DUR"),
        preset: Preset::Value("1m"),
        help: "how often sealed blocks go to block files and the WAL is trimmed",
        set: |s, v| duration(v).map(|d| s.server.compaction_interval = d),
        ..FLAG
    },
];

/// The flags that are not settings, for `--help` (the parser handles them itself).
const META: [(&str, &str); 3] = [
    (
        "--config PATH",
        "read flags from a TOML file (keys are flag names); flags override it",
    ),
    ("-h, --help", "print this help"),
    ("-V, --version", "print the version"),
];

/// The flags `program` takes, in `--help` order.
pub fn of(program: Program) -> impl Iterator<Item = &'static Flag> {
    FLAGS.iter().filter(move |f| f.programs.has(program))
}

/// The flag `--name` of `program`.
pub fn find(program: Program, name: &str) -> Option<&'static Flag> {
    of(program).find(|f| f.name == name)
}

/// A configuration being built: the defaults, then a config file, then the command line.
/// The one program's parts are used at the end ([`Settings::into_server`],
/// [`Settings::into_generator`]).
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerConfig,
    pub generator: GeneratorConfig,
    /// The flags both programs take.
    pub log: LogSettings,
    pub http: ConnectionLimits,
    /// `--rate-limit` in requests per second, and `--burst`.
    pub rate: Option<f64>,
    pub burst: Option<f64>,
    pub fsync_interval: Duration,
}

impl Settings {
    /// Every flag of `program` at its [`Preset`].
    pub fn defaults(program: Program) -> Settings {
        // Placeholders only: every field with a default is set from the table below.
        let mut settings = Settings {
            server: ServerConfig {
                listen: String::new(),
                sources: Vec::new(),
                poll_interval: Duration::ZERO,
                poll_timeout: Duration::ZERO,
                connect_timeout: Duration::ZERO,
                max_feed_bytes: 0,
                max_age: Duration::ZERO,
                retention: Duration::ZERO,
                workers: 0,
                demo: false,
                remote_write: None,
                auth_token_file: None,
                insecure_no_auth: false,
                rate_limit: None,
                data_dir: None,
                in_memory: false,
                fsync: FsyncPolicy::Never,
                compaction_interval: Duration::ZERO,
                http: ConnectionLimits::default(),
                key_labels: Vec::new(),
                counter_columns: Vec::new(),
                names: None,
                max_subscribers: 0,
                shard: None,
                limits: crate::server::cardinality::Limits {
                    max_series: 0,
                    max_metrics: 0,
                },
            },
            generator: GeneratorConfig {
                listen: String::new(),
                n_switches: 0,
                format: FeedFormat::Classic,
                ports: 0,
                interval: Duration::ZERO,
                seed: None,
                workers: 0,
                faults: FaultConfig {
                    rate: 0.0,
                    modes: Vec::new(),
                    delay: Duration::ZERO,
                    stale_by: Duration::ZERO,
                },
                http: ConnectionLimits::default(),
            },
            log: LogSettings::default(),
            http: ConnectionLimits::default(),
            rate: None,
            burst: None,
            fsync_interval: Duration::ZERO,
        };
        for flag in of(program) {
            if let Preset::Value(value) = flag.preset {
                if let Err(why) = (flag.set)(&mut settings, OsStr::new(value)) {
                    // A constant of the table; a test parses every one.
                    panic!(
                        "the default of --{} ({value:?}) is invalid: {why}",
                        flag.name
                    );
                }
            }
        }
        settings
    }

    pub fn into_server(self) -> ServerConfig {
        let mut config = self.server;
        config.http = self.http;
        config.rate_limit = self
            .rate
            .map(|rate| (rate, self.burst.unwrap_or(BURST_SECONDS * rate)));
        if let FsyncPolicy::Interval(every) = &mut config.fsync {
            *every = self.fsync_interval;
        }
        config
    }

    pub fn into_generator(self) -> GeneratorConfig {
        GeneratorConfig {
            http: self.http,
            ..self.generator
        }
    }
}

/// `--help` of `program`, from the table.
pub fn help(program: Program) -> String {
    let (about, footer) = match program {
        Program::Server => (
            "metrics-server: polls switch counter feeds and answers a JSON API about them\n\n\
             USAGE: metrics-server [FLAGS]",
            "DUR is humantime syntax: 500ms, 2s, 5m, 1h. SIZE is bytes, or with KiB/MiB/GiB \
             (KB/MB/GB).\n\n\
             UNITS: `latency` in the feed and the API is the switch's, in MILLISECONDS;\n\
             `bandwidth` is Gb/s, `errors` a count per poll. /telemetry/stats `latency` is this\n\
             server's own request latency, in SECONDS. /metrics uses Prometheus base units:\n\
             fabric_switch_latency_seconds is the feed's milliseconds / 1000.",
        ),
        Program::Generator => (
            "telemetry-generator: simulates switch counters and serves them as a CSV feed at \
             /counters\n\nUSAGE: telemetry-generator [FLAGS]",
            "DUR is humantime syntax: 500ms, 2s, 5m, 1h.\n\n\
             UNITS of /counters: bandwidth Gb/s, latency MILLISECONDS, errors a count per tick.",
        ),
    };
    let mut out = format!("{about}\n\nFLAGS:\n");
    for flag in of(program) {
        let usage = match flag.kind {
            Kind::Switch => format!("--{}", flag.name),
            Kind::Value(value) | Kind::List(value) | Kind::Repeat { value, .. } => {
                format!("--{} {value}", flag.name)
            }
        };
        let default = match flag.preset {
            Preset::None => None,
            Preset::Value(text) | Preset::Note(text) => Some(format!("(default {text})")),
        };
        help_entry(&mut out, &usage, flag.help, default);
    }
    for (usage, text) in META {
        help_entry(&mut out, usage, text, None);
    }
    out.push('\n');
    out.push_str(footer);
    out.push('\n');
    out
}

/// Help text starts in this column; lines end before `HELP_WIDTH`.
const HELP_COLUMN: usize = 27;
const HELP_WIDTH: usize = 96;

/// `  --usage   text…`, wrapped; the default stays in one piece at the end.
fn help_entry(out: &mut String, usage: &str, text: &str, default: Option<String>) {
    let mut line = format!("  {usage:<width$} ", width = HELP_COLUMN - 3);
    if line.len() > HELP_COLUMN {
        line.push(' ');
    }
    let mut empty = true;
    for word in text.split_whitespace().map(str::to_string).chain(default) {
        if !empty && line.len() + 1 + word.len() > HELP_WIDTH {
            let _ = writeln!(out, "{line}");
            line = " ".repeat(HELP_COLUMN);
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(&word);
        empty = false;
    }
    let _ = writeln!(out, "{line}");
}
