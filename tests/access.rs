//! Bearer tokens, SIGHUP reload, the loopback rule, and per-client rate limits.

use std::process::Command;
use std::time::Duration;

use crate::util::{self, FakeFeed};

fn get_with_token(url: &str, token: Option<&str>) -> (u16, Option<String>) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .iter()
        .map(|b| ("Authorization", b.as_str()))
        .collect();
    let answer = util::request(&util::client(), "GET", url, &headers);
    (
        answer.status,
        answer.header("www-authenticate").map(str::to_string),
    )
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn tokens_are_required_and_reloaded_on_sighup() {
    let dir = std::env::temp_dir().join(format!("fabric-tokens-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("tokens");
    std::fs::write(
        &file,
        format!(
            "# operators\nplain-token\nsha256:{}\n",
            sha256_hex("hashed-token")
        ),
    )
    .expect("write");
    let feed = FakeFeed::start();
    feed.serve_fresh(&["switch1,1,0.1,0,{ts}"]);
    let server = util::server(
        &[&feed.url],
        &["--auth-token-file", &file.display().to_string()],
    );
    let get = server.url("/telemetry/get?switch_id=switch1&metric=bandwidth");
    util::wait_for("data behind auth", Duration::from_secs(15), || {
        (get_with_token(&get, Some("plain-token")).0 == 200).then_some(())
    });
    let (status, challenge) = get_with_token(&get, None);
    assert_eq!(status, 401);
    assert!(challenge.is_some_and(|c| c.starts_with("Bearer")));
    assert_eq!(get_with_token(&get, Some("wrong")).0, 401);
    assert_eq!(get_with_token(&get, Some("hashed-token")).0, 200);
    assert_eq!(
        get_with_token(&get, Some(&sha256_hex("hashed-token"))).0,
        401,
        "the stored hash is not a token"
    );
    assert_eq!(get_with_token(&server.url("/metrics"), None).0, 401);
    assert_eq!(
        get_with_token(&server.url("/healthz"), None).0,
        200,
        "/healthz stays open"
    );
    assert!(
        !server.logs().iter().any(|l| l.contains("plain-token")),
        "tokens are never logged"
    );

    std::fs::write(&file, "new-token\n").expect("rewrite");
    // SAFETY: signalling the child process this test started.
    assert_eq!(
        unsafe { libc::kill(server.pid() as libc::pid_t, libc::SIGHUP) },
        0
    );
    util::wait_for("the new token", Duration::from_secs(10), || {
        (get_with_token(&get, Some("new-token")).0 == 200).then_some(())
    });
    assert_eq!(
        get_with_token(&get, Some("plain-token")).0,
        401,
        "the old token is gone"
    );
    // A broken file keeps the tokens in force.
    std::fs::write(&file, "").expect("empty");
    assert_eq!(
        unsafe { libc::kill(server.pid() as libc::pid_t, libc::SIGHUP) },
        0
    );
    util::wait_for(
        "the reload error in the log",
        Duration::from_secs(10),
        || {
            server
                .logs()
                .iter()
                .any(|l| l.contains("previous tokens stay"))
                .then_some(())
        },
    );
    assert_eq!(get_with_token(&get, Some("new-token")).0, 200);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_tokens_the_api_stays_on_loopback() {
    let out = Command::new(util::server_bin())
        .args([
            "--listen",
            "0.0.0.0:0",
            "--source",
            "http://127.0.0.1:9/counters",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to serve the API on 0.0.0.0")
            && stderr.contains("--insecure-no-auth"),
        "{stderr}"
    );
}

/// A slow refill (one request an hour) makes the test independent of how fast this machine
/// is: the burst of 5 starts full, and no token comes back while the test runs.
#[test]
fn each_client_gets_its_rate() {
    let feed = FakeFeed::start();
    feed.serve_fresh(&["switch1,1,0.1,0,{ts}"]);

    // Without tokens a client is its address.
    let server = util::server(&[&feed.url], &["--rate-limit", "1/h", "--burst", "5"]);
    let stats = server.url("/telemetry/stats");
    let agent = util::client();
    let statuses: Vec<u16> = (0..8)
        .map(|_| util::get_with(&agent, &stats).status)
        .collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    let refused = util::get_with(&agent, &stats);
    assert_eq!(refused.status, 429);
    assert!(refused.json()["error"]
        .as_str()
        .is_some_and(|e| e.contains("rate limit")));
    // A whole token is missing at one an hour: the wait is about an hour, in whole seconds.
    let retry_after: u64 = refused
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((3500..=3600).contains(&retry_after), "{retry_after}");
    assert_eq!(
        util::get(&server.url("/healthz")).status,
        200,
        "/healthz is not rate limited"
    );

    // With tokens a client is its token: one client's spent bucket leaves another's whole,
    // and the other can read how many requests were refused.
    let dir = std::env::temp_dir().join(format!("fabric-rate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("tokens");
    std::fs::write(&file, "client-a\nclient-b\n").expect("write");
    let server = util::server(
        &[&feed.url],
        &[
            "--rate-limit",
            "1/h",
            "--burst",
            "5",
            "--auth-token-file",
            &file.display().to_string(),
        ],
    );
    let stats = server.url("/telemetry/stats");
    let a: Vec<u16> = (0..8)
        .map(|_| get_with_token(&stats, Some("client-a")).0)
        .collect();
    assert_eq!(a, [200, 200, 200, 200, 200, 429, 429, 429]);
    let answer = util::request(
        &util::client(),
        "GET",
        &stats,
        &[("Authorization", "Bearer client-b")],
    );
    assert_eq!(answer.status, 200, "client-b has its own bucket");
    assert_eq!(answer.json()["rate_limited"], 3, "{}", answer.body);
    let _ = std::fs::remove_dir_all(&dir);
}
