//! Deployment artefacts: the systemd units verify, and the Grafana dashboard only queries
//! metrics the server exports.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use crate::util::{self, FakeFeed};

fn repo_file(path: &str) -> String {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

#[test]
fn the_dashboard_queries_only_exported_metrics() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&repo_file("docs/grafana-dashboard.json")).expect("dashboard is JSON");
    let mut queried = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(at) = rest.find("fabric_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .fold(name.clone(), |n, s| {
                        n.strip_suffix(s).map(str::to_string).unwrap_or(n)
                    });
                queried.insert(family);
            }
        }
    }
    assert!(queried.len() >= 10, "{queried:?}");
    let feed = FakeFeed::start();
    feed.serve_fresh(&["switch1,1,0.1,1,{ts}"]);
    let server = util::server(&[&feed.url], &[]);
    util::wait_for_status(&server.url("/readyz"), 200);
    util::get(&server.url("/telemetry/stats"));
    let exposition = util::get(&server.url("/metrics")).body;
    let exported: BTreeSet<&str> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
        .collect();
    for family in &queried {
        assert!(
            exported.contains(family.as_str()),
            "the dashboard queries {family}, which /metrics does not export"
        );
    }
}

#[test]
fn systemd_units_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        if std::env::var_os("FABRIC_REQUIRE_TOOLS").is_some() {
            panic!("systemd-analyze is required (FABRIC_REQUIRE_TOOLS is set)");
        }
        eprintln!("SKIPPED: systemd-analyze is not installed");
        return;
    }
    let bins = [
        ("fabric-metrics-server.service", util::server_bin()),
        ("fabric-telemetry-generator.service", util::generator_bin()),
    ];
    for (unit, bin) in bins {
        let text = repo_file(&format!("deploy/systemd/{unit}"));
        let bin_dir = std::path::Path::new(bin)
            .parent()
            .expect("bin dir")
            .display()
            .to_string();
        // Point ExecStart at the binaries this test run built; the installed path may not exist.
        let local = text.replace("/usr/local/bin", &bin_dir);
        let dir = std::env::temp_dir().join(format!("fabric-units-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join(unit);
        std::fs::write(&path, local).expect("write unit");
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .expect("run systemd-analyze");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{unit}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_example_config_files_are_valid() {
    use fabric_telemetry::config::{parse_generator_args, parse_server_args, Command};
    use fabric_telemetry::server::ServerConfig;
    let dir = env!("CARGO_MANIFEST_DIR");
    let server = parse_server_args([format!("--config={dir}/deploy/metrics-server.toml").into()]);
    let Ok(Command::Run { config, .. }) = server else {
        panic!("{server:?}")
    };
    // The example spells out the defaults.
    assert_eq!(config, ServerConfig::default());
    let generator =
        parse_generator_args([format!("--config={dir}/deploy/telemetry-generator.toml").into()]);
    let Ok(Command::Run { config, .. }) = generator else {
        panic!("{generator:?}")
    };
    assert_eq!(
        config,
        fabric_telemetry::generator::service::GeneratorConfig::default()
    );
}

/// Whether `tool --version`-style probing finds it; panics when FABRIC_REQUIRE_TOOLS is set.
fn have(tool: &str, probe: &[&str]) -> bool {
    if Command::new(tool).args(probe).output().is_ok() {
        return true;
    }
    if std::env::var_os("FABRIC_REQUIRE_TOOLS").is_some() {
        panic!("{tool} is required (FABRIC_REQUIRE_TOOLS is set)");
    }
    eprintln!("SKIPPED: {tool} is not installed (apt-get install nginx openssl curl)");
    false
}

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sk", "--max-time", "5", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    (body.to_string(), code.to_string())
}

#[test]
fn the_shipped_nginx_config_terminates_tls_in_front_of_the_server() {
    if !have("nginx", &["-v"]) || !have("openssl", &["version"]) || !have("curl", &["--version"]) {
        return;
    }
    let feed = FakeFeed::start();
    feed.serve_fresh(&["switch1,72.34,0.45,3,{ts}"]);
    let server = util::server(&[&feed.url], &[]);
    util::wait_for_status(
        &server.url("/telemetry/get?switch_id=switch1&metric=bandwidth"),
        200,
    );

    let dir = std::env::temp_dir().join(format!("fabric-nginx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    // The shipped file, with only addresses and certificate paths changed.
    let mut site = repo_file("deploy/nginx/fabric-telemetry.conf");
    for (from, to) in [
        (
            "listen 443 ssl;".to_string(),
            format!("listen 127.0.0.1:{port} ssl;"),
        ),
        (
            "/etc/fabric-telemetry/tls/fullchain.pem".to_string(),
            cert.display().to_string(),
        ),
        (
            "/etc/fabric-telemetry/tls/privkey.pem".to_string(),
            key.display().to_string(),
        ),
        (
            "server 127.0.0.1:8080;".to_string(),
            format!("server {};", server.addr),
        ),
    ] {
        assert!(
            site.contains(&from),
            "the shipped config no longer has {from:?}"
        );
        site = site.replace(&from, &to);
    }
    std::fs::write(dir.join("fabric.conf"), site).expect("site");
    let nginx = util::Nginx::start(
        &dir,
        "",
        &format!("  include {}/fabric.conf;", dir.display()),
    );
    let https = format!("https://127.0.0.1:{port}");
    let (body, code) = util::wait_for("nginx to answer over TLS", Duration::from_secs(15), || {
        let answer = curl(&[&format!(
            "{https}/telemetry/get?switch_id=switch1&metric=bandwidth"
        )]);
        (answer.1 == "200").then_some(answer)
    });
    assert_eq!(code, "200");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON through the proxy");
    assert_eq!(json["value"], 72.34);
    // A stream passes through unbuffered: its first samples event arrives while it is open
    // (curl gives up after 3 s; the stream itself never ends).
    let out = Command::new("curl")
        .args(["-skN", "--max-time", "3"])
        .arg(format!("{https}/telemetry/stream?switch_id=switch1"))
        .output()
        .expect("curl");
    let events = String::from_utf8_lossy(&out.stdout);
    assert!(
        events.contains(
            "event: samples\ndata: {\"source\":0,\"samples\":[{\"switch_id\":\"switch1\""
        ),
        "no event through the proxy: {events:?}"
    );
    // A wrong method: the same 405 JSON as the server's own, never proxied.
    let (body, post) = curl(&["-X", "POST", &format!("{https}/telemetry/get")]);
    assert_eq!(post, "405", "only GET and HEAD pass the proxy: {body}");
    let (direct, direct_code) = curl(&["-X", "POST", &server.url("/telemetry/get")]);
    assert_eq!(direct_code, "405");
    assert_eq!(
        body.trim_end(),
        direct.trim_end(),
        "nginx's 405 differs from the server's"
    );
    let (_, plain) = curl(&[&format!("http://127.0.0.1:{port}/telemetry/stats")]);
    assert_eq!(plain, "400", "plain HTTP to the TLS port is refused");
    let (_, tls10) = curl(&["--tlsv1.0", "--tls-max", "1.1", &format!("{https}/healthz")]);
    assert_ne!(tls10, "200", "TLS below 1.2 is refused");
    drop(nginx);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 15: the image's build stage copies only some of the repository. Build the project
/// from exactly those files (as `docker build` would, minus the musl target), offline, so a
/// missing `COPY` fails here rather than on an operator's machine. No Docker engine is needed.
#[test]
fn the_dockerfile_copies_everything_the_build_needs() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(repo.join("deploy/Dockerfile")).expect("Dockerfile");
    let build_stage = dockerfile
        .split("\nFROM ")
        .find(|stage| stage.contains(" AS build"))
        .expect("a build stage");
    let context =
        std::env::temp_dir().join(format!("fabric-docker-context-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&context);
    let mut copied = Vec::new();
    for line in build_stage.lines().filter(|l| l.starts_with("COPY ")) {
        let words: Vec<&str> = line.split_whitespace().skip(1).collect();
        assert!(!words.iter().any(|w| w.starts_with("--")), "{line}");
        let (sources, dest) = words.split_at(words.len() - 1);
        for source in sources {
            let to = if dest[0].ends_with('/') {
                context.join(dest[0].trim_start_matches("./")).join(source)
            } else {
                context.join(dest[0])
            };
            copy_tree(&repo.join(source), &to);
            copied.push(source.to_string());
        }
    }
    assert!(copied.contains(&"vendor".to_string()), "{copied:?}");
    // The repository's target directory: dependencies are built already and reused.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo.join("target"));
    let out = Command::new(env!("CARGO"))
        .args(["build", "--locked", "--offline", "--bin", "metrics-server"])
        .args(["--bin", "telemetry-generator"])
        .current_dir(&context)
        .env("CARGO_TARGET_DIR", target.join("docker-context"))
        .output()
        .expect("run cargo");
    let _ = std::fs::remove_dir_all(&context);
    assert!(
        out.status.success(),
        "building from the files the Dockerfile copies ({copied:?}) failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read dir").flatten() {
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    }
}
