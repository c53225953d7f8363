//! `--config PATH`: a TOML file read as the flags it stands for, placed before the command
//! line (so the command line overrides it). Its keys are the flag names of the table
//! ([`super::flags::FLAGS`]); a value is what the flag would take, `true` sets a switch (`false`
//! leaves it unset), an array repeats a repeatable flag (`source`) or lists a list flag's items
//! (`fault-modes`).

use std::ffi::{OsStr, OsString};

use super::flags::{self, Kind, Program};
use super::ConfigError;

/// The `--config PATH` (or `--config=PATH`) of a command line, if any.
pub fn config_path(args: &[OsString]) -> Option<OsString> {
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

/// The flags the file at `path` stands for.
pub fn read(path: &OsStr, program: Program) -> Result<Vec<OsString>, ConfigError> {
    let shown = std::path::Path::new(path).display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
        path: shown.clone(),
        why: e.to_string(),
    })?;
    file_args(&text, program).map_err(|e| ConfigError::in_file(path, e))
}

/// A config file's text as the equivalent flags of `program`.
pub fn file_args(text: &str, program: Program) -> Result<Vec<OsString>, ConfigError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Toml(e.to_string()))?;
    let mut args = Vec::new();
    for (key, value) in &table {
        let flag = flags::find(program, key).ok_or_else(|| ConfigError::UnknownKey {
            key: key.clone(),
            known: flags::of(program)
                .map(|f| f.name)
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        let name = OsString::from(format!("--{key}"));
        match (flag.kind, value) {
            (Kind::Switch, toml::Value::Boolean(on)) => {
                if *on {
                    args.push(name);
                }
            }
            (Kind::Switch, other) => return Err(wrong_type(key, "true or false", other)),
            (Kind::List(_), toml::Value::Array(items)) => {
                let items: Result<Vec<String>, ConfigError> =
                    items.iter().map(|item| scalar(key, item)).collect();
                args.push(name);
                args.push(items?.join(",").into());
            }
            (Kind::Repeat { .. }, toml::Value::Array(items)) => {
                for item in items {
                    args.push(name.clone());
                    args.push(scalar(key, item)?.into());
                }
            }
            (_, value) => {
                args.push(name);
                args.push(scalar(key, value)?.into());
            }
        }
    }
    Ok(args)
}

/// A string or a number, as a flag's value.
fn scalar(key: &str, value: &toml::Value) -> Result<String, ConfigError> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        other => Err(wrong_type(key, "a string or a number", other)),
    }
}

fn wrong_type(key: &str, expected: &'static str, found: &toml::Value) -> ConfigError {
    ConfigError::KeyType {
        key: key.to_string(),
        expected,
        found: found.type_str(),
    }
}
