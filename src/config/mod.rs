//! Command-line flags (and `--config` files) → validated configurations.
//!
//! - `flags`: the table declaring every flag once (name, config-file key, program(s),
//!   value, default, help, how it sets the configuration), and `--help` made from it.
//! - `file`: a TOML config file as the flags it stands for.
//! - `values`: the value syntaxes (durations, sizes, bounded numbers, feed URLs).
//! - here: the parsing in layers (the table's defaults, then the config file, then the command
//!   line, each overriding the last), the cross-flag checks, the errors, and the
//!   configurations the programs run with.
//!
//! Flags are read with `lexopt` (both `--flag value` and `--flag=value`).

use std::ffi::{OsStr, OsString};
use std::fmt;

use crate::generator::service::GeneratorConfig;
use crate::server::ServerConfig;
use crate::shared::logging::LogSettings;

mod file;
mod flags;
mod values;

use flags::{Kind, Program, Settings};
pub use values::{check_source, parse_size};

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command<C> {
    Run { config: C, log: LogSettings },
    Help,
    Version,
}

/// A command line (or config file) that cannot be run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// A flag neither program has, or the other program's.
    UnknownFlag(String),
    /// A word that is not a flag (neither program takes positional arguments).
    UnexpectedArgument(String),
    MissingValue {
        flag: String,
    },
    /// A value given to a switch (`--demo=yes`).
    UnexpectedValue {
        flag: String,
        value: String,
    },
    InvalidValue {
        flag: String,
        why: String,
    },
    /// A flag that needs another one, or another value of one (`--burst` without
    /// `--rate-limit`).
    Conflict {
        flag: String,
        why: String,
    },
    /// Any other malformed command line, in `lexopt`'s words.
    Syntax(String),
    Unreadable {
        path: String,
        why: String,
    },
    /// Something wrong in the config file at `path`.
    ConfigFile {
        path: String,
        why: Box<ConfigError>,
    },
    Toml(String),
    UnknownKey {
        key: String,
        known: String,
    },
    KeyType {
        key: String,
        expected: &'static str,
        found: &'static str,
    },
}

impl ConfigError {
    fn in_file(path: &OsStr, why: ConfigError) -> ConfigError {
        ConfigError::ConfigFile {
            path: std::path::Path::new(path).display().to_string(),
            why: Box::new(why),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::UnknownFlag(flag) => write!(f, "unknown flag {flag}"),
            ConfigError::UnexpectedArgument(arg) => write!(f, "unexpected argument {arg:?}"),
            ConfigError::MissingValue { flag } => write!(f, "{flag} needs a value"),
            ConfigError::UnexpectedValue { flag, value } => {
                write!(f, "{flag} takes no value (given {value:?})")
            }
            ConfigError::InvalidValue { flag, why } => {
                write!(f, "invalid value for {flag}: {why}")
            }
            ConfigError::Conflict { flag, why } => write!(f, "{flag} {why}"),
            ConfigError::Syntax(why) => f.write_str(why),
            ConfigError::Unreadable { path, why } => {
                write!(f, "cannot read config file {path}: {why}")
            }
            ConfigError::ConfigFile { path, why } => write!(f, "config file {path}: {why}"),
            ConfigError::Toml(why) => f.write_str(why),
            ConfigError::UnknownKey { key, known } => {
                write!(f, "unknown key {key:?} (keys are the flag names: {known})")
            }
            ConfigError::KeyType {
                key,
                expected,
                found,
            } => write!(f, "{key}: expected {expected}, found {found}"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl From<lexopt::Error> for ConfigError {
    fn from(e: lexopt::Error) -> ConfigError {
        match e {
            lexopt::Error::UnexpectedOption(flag) => ConfigError::UnknownFlag(flag),
            lexopt::Error::UnexpectedArgument(arg) => {
                ConfigError::UnexpectedArgument(arg.to_string_lossy().into_owned())
            }
            lexopt::Error::MissingValue { option: Some(flag) } => {
                ConfigError::MissingValue { flag }
            }
            lexopt::Error::UnexpectedValue { option, value } => ConfigError::UnexpectedValue {
                flag: option,
                value: value.to_string_lossy().into_owned(),
            },
            other => ConfigError::Syntax(other.to_string()),
        }
    }
}

pub const DEFAULT_SOURCE: &str = "http://127.0.0.1:9001/counters";

/// Every flag at its default.
impl Default for ServerConfig {
    fn default() -> ServerConfig {
        Settings::defaults(Program::Server).into_server()
    }
}

/// Every flag at its default.
impl Default for GeneratorConfig {
    fn default() -> GeneratorConfig {
        Settings::defaults(Program::Generator).into_generator()
    }
}

/// `metrics-server --help`.
pub fn server_help() -> String {
    flags::help(Program::Server)
}

/// `telemetry-generator --help`.
pub fn generator_help() -> String {
    flags::help(Program::Generator)
}

/// Parses the metrics server's command line: defaults, then `--config` file, then flags.
pub fn parse_server_args(
    args: impl IntoIterator<Item = OsString>,
) -> Result<Command<ServerConfig>, ConfigError> {
    Ok(match parse(Program::Server, args)? {
        Command::Run { config, log } => Command::Run {
            config: config.into_server(),
            log,
        },
        Command::Help => Command::Help,
        Command::Version => Command::Version,
    })
}

/// Parses the generator's command line: defaults, then `--config` file, then flags.
pub fn parse_generator_args(
    args: impl IntoIterator<Item = OsString>,
) -> Result<Command<GeneratorConfig>, ConfigError> {
    Ok(match parse(Program::Generator, args)? {
        Command::Run { config, log } => Command::Run {
            config: config.into_generator(),
            log,
        },
        Command::Help => Command::Help,
        Command::Version => Command::Version,
    })
}

/// The layers: defaults, the `--config` file if any, the command line.
fn parse(
    program: Program,
    args: impl IntoIterator<Item = OsString>,
) -> Result<Command<Settings>, ConfigError> {
    let args: Vec<OsString> = args.into_iter().collect();
    let mut settings = Settings::defaults(program);
    if let Some(path) = file::config_path(&args) {
        let from_file = file::read(&path, program)?;
        if let Some(command) =
            apply(program, &mut settings, from_file).map_err(|e| ConfigError::in_file(&path, e))?
        {
            return Ok(command);
        }
    }
    if let Some(command) = apply(program, &mut settings, args)? {
        return Ok(command);
    }
    let log = settings.log;
    Ok(Command::Run {
        config: settings,
        log,
    })
}

/// Applies one layer of flags to `settings`; `Some` for `--help` or `--version`.
fn apply(
    program: Program,
    settings: &mut Settings,
    args: Vec<OsString>,
) -> Result<Option<Command<Settings>>, ConfigError> {
    use lexopt::Arg::{Long, Short};
    let mut given: Vec<&'static flags::Flag> = Vec::new();
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next()? {
        let flag = match arg {
            Short('h') | Long("help") => return Ok(Some(Command::Help)),
            Short('V') | Long("version") => return Ok(Some(Command::Version)),
            // Read before any layer (`file::config_path`).
            Long("config") => {
                parser.value()?;
                continue;
            }
            Long(name) => flags::find(program, name)
                .ok_or_else(|| ConfigError::UnknownFlag(format!("--{name}")))?,
            other => return Err(other.unexpected().into()),
        };
        let value = match flag.kind {
            Kind::Switch => OsString::new(),
            _ => parser.value()?,
        };
        if let Kind::Repeat { reset, .. } = flag.kind {
            if !given.iter().any(|g| std::ptr::eq(*g, flag)) {
                reset(settings);
            }
        }
        (flag.set)(settings, &value).map_err(|why| ConfigError::InvalidValue {
            flag: format!("--{}", flag.name),
            why,
        })?;
        given.push(flag);
    }
    for flag in given {
        if let Some(needs) = flag.needs {
            if !(needs.holds)(settings) {
                return Err(ConfigError::Conflict {
                    flag: format!("--{}", flag.name),
                    why: format!("needs {}", needs.what),
                });
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
