//! Parsing, config files, and the flag table against help, TOML keys, example files and README.

use super::*;
use std::time::Duration;

use crate::generator::service::FaultMode;
use crate::server::persist::FsyncPolicy;
use crate::shared::http::ConnectionLimits;
use crate::shared::logging::LogFormat;

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

/// Every flag of each program is in its `--help` (with its value and default), is a key its
/// config files accept, is spelled out (perhaps commented out) in its example config file, and
/// is in README.md; and every key of an example file is a flag.
/// Two counts as text, to compare like values.
trait IntoStrings {
    fn into_strings(self) -> (String, String);
}

impl IntoStrings for (usize, usize) {
    fn into_strings(self) -> (String, String) {
        (self.0.to_string(), self.1.to_string())
    }
}

#[test]
fn every_flag_is_in_help_config_files_examples_and_readme() {
    let repo = env!("CARGO_MANIFEST_DIR");
    let read = |path: &str| {
        std::fs::read_to_string(format!("{repo}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let readme = read("README.md");
    for (program, example) in [
        (Program::Server, "deploy/metrics-server.toml"),
        (Program::Generator, "deploy/telemetry-generator.toml"),
    ] {
        let help = flags::help(program);
        let example_text = read(example);
        // `key = …`, or `# key = …` for a key whose value cannot be a no-op.
        let example_keys: Vec<&str> = example_text
            .lines()
            .map(|l| l.trim_start_matches('#').trim_start())
            .filter_map(|l| l.split_once(" = ").map(|(key, _)| key))
            .filter(|key| key.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
            .collect();
        for flag in flags::of(program) {
            let name = flag.name;
            let usage = match flag.kind {
                Kind::Switch => format!("  --{name} "),
                Kind::Value(v) | Kind::List(v) | Kind::Repeat { value: v, .. } => {
                    format!("  --{name} {v} ")
                }
            };
            assert!(help.contains(&usage), "{program:?} help lacks {usage:?}");
            if let flags::Preset::Value(d) | flags::Preset::Note(d) = flag.preset {
                let line = &help[help.find(&usage).expect("usage")..];
                let entry = &line[..line.find("\n  -").unwrap_or(line.len())];
                assert!(
                    entry.contains(&format!("(default {d})")),
                    "{program:?} help of --{name} lacks its default: {entry}"
                );
            }
            let sample = match flag.kind {
                Kind::Switch => format!("{name} = true"),
                _ => format!("{name} = \"x\""),
            };
            assert_eq!(
                file::file_args(&sample, program).map(|a| a[0].clone()),
                Ok(OsString::from(format!("--{name}"))),
                "{program:?} config files do not accept {name}"
            );
            assert!(
                example_keys.contains(&name),
                "{example} does not mention {name} (as `{name} = …` or `# {name} = …`)"
            );
            assert!(
                readme.contains(&format!("`--{name}")),
                "README.md's flag tables lack --{name}"
            );
        }
        for key in example_keys {
            assert!(
                flags::find(program, key).is_some(),
                "{example} has {key}, which is not a {program:?} flag"
            );
        }
        // Every key that is set holds its default: the file says what the program does
        // without it (values that are not defaults belong in comments).
        for line in example_text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
        {
            let Some((key, _)) = line.split_once(" = ") else {
                continue;
            };
            let Some(flag) = flags::find(program, key.trim()) else {
                continue;
            };
            let args = file::file_args(line, program).expect("the example parses");
            let given: Vec<String> = args
                .get(1..)
                .unwrap_or_default()
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            let (given, default) = match (flag.kind, flag.preset) {
                // A switch is off by default: `key = false` gives no argument.
                (Kind::Switch, _) => (args.len(), 0).into_strings(),
                (_, flags::Preset::Value(d)) => (given.join(","), d.to_string()),
                _ => panic!("{example}: {key} has no default to spell out; comment it out"),
            };
            assert_eq!(given, default, "{example}: {key} is not its default");
        }
    }
}

#[test]
fn the_flag_table_is_well_formed() {
    for program in [Program::Server, Program::Generator] {
        let names: Vec<&str> = flags::of(program).map(|f| f.name).collect();
        for (i, name) in names.iter().enumerate() {
            assert!(!names[..i].contains(name), "{program:?}: --{name} twice");
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                "{name}"
            );
            assert!(!["config", "help", "version"].contains(name), "{name}");
        }
        for flag in flags::of(program) {
            assert!(!flag.help.is_empty(), "--{} has no help", flag.name);
            if let Kind::Switch = flag.kind {
                assert!(
                    matches!(flag.preset, flags::Preset::None),
                    "switch --{} is off by default",
                    flag.name
                );
            }
        }
    }
    // Every default parses (`Settings::defaults` panics otherwise).
    let _ = ServerConfig::default();
    let _ = GeneratorConfig::default();
}

/// Defaults also written elsewhere (the libraries' own `Default`s) agree with the table.
#[test]
fn table_defaults_agree_with_the_other_defaults() {
    assert_eq!(ServerConfig::default().http, ConnectionLimits::default());
    assert_eq!(GeneratorConfig::default().http, ConnectionLimits::default());
    for command in [
        parse_server_args(args(&[])).map(|c| match c {
            Command::Run { log, .. } => log,
            other => panic!("{other:?}"),
        }),
        parse_generator_args(args(&[])).map(|c| match c {
            Command::Run { log, .. } => log,
            other => panic!("{other:?}"),
        }),
    ] {
        assert_eq!(command, Ok(LogSettings::default()));
    }
    let config = ServerConfig::default();
    assert_eq!(config.sources, [DEFAULT_SOURCE]);
    assert_eq!(config.fsync, FsyncPolicy::EveryBatch);
    assert_eq!(config.rate_limit, None);
    assert_eq!(GeneratorConfig::default().faults.modes, FaultMode::ALL);
}

#[test]
fn cross_flag_rules_and_their_defaults() {
    let limited = server(&["--rate-limit", "100/s"]).expect("valid");
    assert_eq!(
        limited.rate_limit,
        Some((100.0, flags::BURST_SECONDS * 100.0))
    );
    let burst = server(&["--burst", "7", "--rate-limit", "6000/m"]).expect("valid");
    assert_eq!(burst.rate_limit, Some((100.0, 7.0)));
    assert_eq!(
        parse_server_args(args(&["--burst", "5"])),
        Err(ConfigError::Conflict {
            flag: "--burst".into(),
            why: "needs --rate-limit".into()
        })
    );
    let fsync = server(&["--fsync", "interval"]).expect("valid");
    assert_eq!(fsync.fsync, FsyncPolicy::Interval(Duration::from_secs(1)));

    // Each layer's rules hold at the end of that layer: the command line may override a file.
    let dir = std::env::temp_dir().join(format!("fabric-layers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("server.toml");
    std::fs::write(
        &path,
        "fsync = \"interval\"\nfsync-interval = \"2s\"\nrate-limit = \"10/s\"\nburst = 3\n",
    )
    .expect("write");
    let file = format!("--config={}", path.display());
    let config = server(&[&file]).expect("valid");
    assert_eq!(config.fsync, FsyncPolicy::Interval(Duration::from_secs(2)));
    assert_eq!(config.rate_limit, Some((10.0, 3.0)));
    let config = server(&[&file, "--fsync", "never", "--burst", "9"]).expect("valid");
    assert_eq!(config.fsync, FsyncPolicy::Never);
    assert_eq!(config.rate_limit, Some((10.0, 9.0)));
    let config = server(&[&file, "--fsync-interval", "5s"]).expect("valid");
    assert_eq!(config.fsync, FsyncPolicy::Interval(Duration::from_secs(5)));
    std::fs::write(&path, "burst = 3\n").expect("write");
    let err = server(&[&file]).expect_err("burst alone");
    assert!(
        err.contains("config file") && err.contains("--burst needs --rate-limit"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn error_variants() {
    let err = |list: &[&str]| parse_server_args(args(list)).expect_err("invalid");
    assert_eq!(
        err(&["--bogus"]),
        ConfigError::UnknownFlag("--bogus".into())
    );
    assert_eq!(
        err(&["--switches", "3"]),
        ConfigError::UnknownFlag("--switches".into()),
        "the generator's flag"
    );
    assert_eq!(
        err(&["--listen"]),
        ConfigError::MissingValue {
            flag: "--listen".into()
        }
    );
    assert_eq!(
        err(&["--demo=yes"]),
        ConfigError::UnexpectedValue {
            flag: "--demo".into(),
            value: "yes".into()
        }
    );
    assert_eq!(
        err(&["extra"]),
        ConfigError::UnexpectedArgument("extra".into())
    );
    assert!(matches!(
        err(&["--workers", "0"]),
        ConfigError::InvalidValue { flag, .. } if flag == "--workers"
    ));
    assert_eq!(
        file::file_args("demo = \"yes\"\n", Program::Server),
        Err(ConfigError::KeyType {
            key: "demo".into(),
            expected: "true or false",
            found: "string"
        })
    );
    assert!(matches!(
        file::file_args("listen = [\"a\", \"b\"]\n", Program::Server),
        Err(ConfigError::KeyType { .. })
    ));
}
