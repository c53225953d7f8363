//! Deployment artefacts: the systemd units verify, and the Grafana dashboard only queries
//! metrics the server exports.

use std::collections::BTreeSet;
use std::process::Command;

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
    use fabric_telemetry::config::{
        parse_generator_args, parse_server_args, Command, ServerConfig,
    };
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
    assert_eq!(config.n_switches, 1000);
}
