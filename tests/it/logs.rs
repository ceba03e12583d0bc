//! The server's log on stderr, read from `rollcall serve` processes:
//! `--log-format json` writes one JSON object a line (every line, the
//! reason a start failed included); the access log (target
//! `rollcall::access`) has a line per HTTP request, WebSocket upgrade and
//! Engine.IO polling request, with method, path, status, duration and
//! client address, refusals with their reason, and never a query string,
//! a token or the API key; text output has no colour when stderr is not a
//! terminal; a Redis password in `--bus` shows in neither `/readyz` nor the
//! log.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common::process::ServerProcess;
use crate::common::*;

/// What the tokens in query strings carry, so the log can be searched for it.
const IN_QUERY: &str = "s3cr3t-in-query";

/// The upgrade head of a WebSocket request.
const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/// The log's lines, each parsed as JSON (panics, with the line, on one
/// that is not a JSON object with timestamp, level, target and fields).
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"));
            for key in ["timestamp", "level", "target", "fields"] {
                assert!(v.get(key).is_some(), "no {key} in the log line {line}");
            }
            v
        })
        .collect()
}

/// The access lines' fields (target `rollcall::access`).
fn access_lines(log: &str) -> Vec<Value> {
    json_lines(log)
        .into_iter()
        .filter(|v| v["target"] == "rollcall::access")
        .map(|v| v["fields"].clone())
        .collect()
}

/// The access line of `method path` with `status`, if logged.
fn find<'a>(lines: &'a [Value], method: &str, path: &str, status: u16) -> Option<&'a Value> {
    lines
        .iter()
        .find(|f| f["method"] == method && f["path"] == path && f["status"] == status)
}

/// Waits until the server's log has `count` access lines or more.
async fn wait_for_access_lines(srv: &ServerProcess, count: usize) -> Vec<Value> {
    let logged = eventually(WAIT, || async {
        access_lines(&srv.log_text()).len() >= count
    })
    .await;
    assert!(
        logged,
        "fewer than {count} access lines; log:\n{}",
        srv.log_text()
    );
    access_lines(&srv.log_text())
}

/// An access line names its client: this test's loopback address.
fn assert_from_here(line: &Value) {
    let client: SocketAddr = line["client"]
        .as_str()
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no client address: {line}"));
    assert!(client.ip().is_loopback(), "{line}");
    let ms = line["duration_ms"].as_f64();
    assert!(ms.is_some_and(|ms| ms >= 0.0), "no duration: {line}");
}

#[tokio::test]
async fn the_json_log_has_an_access_line_per_request_and_upgrade_and_no_token() {
    let srv = ServerProcess::start("logs-json", &["--log-format", "json"]);
    let addr = srv.addr;
    let token = sign(&mut user("alice", Value::Null));

    // An HTTP API request with a token in its query, and one refused.
    let info = format!("/api/channels/presence.room?token={IN_QUERY}");
    let (status, body) = http(addr, "GET", &info, None, Some(API_KEY)).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = http(addr, "GET", "/api/channels", None, None).await;
    assert_eq!(status, 401);
    // A WebSocket upgrade, and one refused for its token.
    let mut alice = connect_url(&format!("ws://{addr}/hotsock?token={token}"))
        .await
        .expect("upgrade");
    alice.read_connected().await;
    let bad = format!("/hotsock?token=not-a-jwt-{IN_QUERY}");
    let (status, _) = http_raw(addr, "GET", &bad, UPGRADE, b"").await;
    assert_eq!(status, 401);
    // An Engine.IO polling request.
    #[cfg(feature = "socketio")]
    {
        let polling = format!("/socket.io/?EIO=4&transport=polling&tokenType=jwt&token={token}");
        let (status, body) = http_raw(addr, "GET", &polling, "", b"").await;
        assert_eq!(status, 200, "{body}");
    }

    let lines = wait_for_access_lines(&srv, 4 + usize::from(cfg!(feature = "socketio"))).await;
    let shown = |line: Option<&Value>, what: &str| match line {
        Some(line) => line.clone(),
        None => panic!("no access line for {what}; log:\n{}", srv.log_text()),
    };
    let api = shown(
        find(&lines, "GET", "/api/channels/presence.room", 200),
        "the API request",
    );
    assert_from_here(&api);
    assert_eq!(api["message"], "request", "{api}");
    let refused = shown(find(&lines, "GET", "/api/channels", 401), "the API refusal");
    assert_eq!(refused["reason"], "MISSING_API_KEY", "{refused}");
    let upgrade = shown(find(&lines, "GET", "/hotsock", 101), "the upgrade");
    assert_from_here(&upgrade);
    assert_eq!(upgrade["message"], "upgrade", "{upgrade}");
    let no = shown(find(&lines, "GET", "/hotsock", 401), "the refused upgrade");
    assert_from_here(&no);
    assert_eq!(no["message"], "upgrade refused", "{no}");
    let reason = no["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("invalid token: "), "{no}");
    if cfg!(feature = "socketio") {
        let poll = shown(
            find(&lines, "GET", "/socket.io/", 200),
            "the polling request",
        );
        assert_from_here(&poll);
    }

    alice.close().await;
    let log = srv.log_text();
    json_lines(&log);
    for secret in [IN_QUERY, &token, API_KEY, SECRET, "token="] {
        assert!(!log.contains(secret), "the log shows {secret:?}:\n{log}");
    }
}

/// A refused Socket.IO namespace connect (the token is checked there, not
/// at the upgrade) is on the access log with its reason.
#[cfg(feature = "socketio")]
#[tokio::test]
async fn a_refused_socketio_connect_is_logged_with_its_reason() {
    use crate::common::protocols::{Peer, Proto};
    let srv = ServerProcess::start("logs-socketio", &["--log-format", "json"]);
    let refused = Peer::connect_to(srv.addr, Proto::SocketIo, None).await;
    let Err(why) = refused else {
        panic!("a Socket.IO connect without a token was accepted");
    };
    let logged = eventually(WAIT, || async {
        access_lines(&srv.log_text())
            .iter()
            .any(|f| f["message"] == "socket.io connect refused")
    })
    .await;
    assert!(logged, "no refusal logged; log:\n{}", srv.log_text());
    let lines = access_lines(&srv.log_text());
    let line = lines
        .iter()
        .find(|f| f["message"] == "socket.io connect refused")
        .cloned()
        .unwrap_or_default();
    assert_eq!(line["reason"].as_str(), Some(why.as_str()), "{line}");
    assert_eq!(line["path"], "/socket.io/", "{line}");
    assert!(
        line["client"]
            .as_str()
            .and_then(|c| c.parse::<SocketAddr>().ok())
            .is_some(),
        "{line}"
    );
}

#[tokio::test]
async fn the_text_log_has_no_colour_when_stderr_is_not_a_terminal() {
    // ServerProcess writes stderr to a file; the default format is text.
    let srv = ServerProcess::start("logs-text", &[]);
    let (status, _) = http(srv.addr, "GET", "/healthz?token=x", None, None).await;
    assert_eq!(status, 200);
    let logged = eventually(WAIT, || async {
        srv.log_text().contains("rollcall::access")
    })
    .await;
    let log = srv.log_text();
    assert!(logged, "no access line: {log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escapes in a log file: {log:?}"
    );
    let line = log
        .lines()
        .find(|l| l.contains("rollcall::access"))
        .unwrap_or_default();
    for field in [
        "method=GET",
        "path=/healthz",
        "status=200",
        "duration_ms=",
        "client=127.0.0.1:",
    ] {
        assert!(line.contains(field), "{field} not in {line}");
    }
    assert!(!line.contains("token"), "{line}");
}

/// `rollcall serve` with a setting that stops it at once (exit 78), and
/// `env` / `args`: its stderr.
fn failed_start(env: &[(&str, &str)], args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["serve", "--listen", "127.0.0.1:0", "--max-connections", "0"])
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .output()
        .expect("run rollcall serve");
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The format comes from the flag, `ROLLCALL_LOG_FORMAT` or the file's
/// `log-format`, like every setting; in JSON, the reason the server did not
/// start is a JSON line too.
#[test]
fn the_log_format_is_a_setting_like_any_other() {
    let is_json_error = |stderr: &str| {
        let lines = json_lines(stderr);
        lines.iter().any(|l| {
            l["level"] == "ERROR"
                && l["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("max-connections must be at least 1"))
        })
    };
    let err = failed_start(&[], &["--log-format", "json"]);
    assert!(is_json_error(&err), "{err}");
    let err = failed_start(&[("ROLLCALL_LOG_FORMAT", "json")], &[]);
    assert!(is_json_error(&err), "{err}");
    // The flag beats the environment.
    let err = failed_start(
        &[("ROLLCALL_LOG_FORMAT", "json")],
        &["--log-format", "text"],
    );
    assert!(
        err.lines()
            .any(|l| l == "error: max-connections must be at least 1"),
        "{err}"
    );
    assert!(!err.trim_start().starts_with('{'), "{err}");
    let dir = std::env::temp_dir().join(format!("rollcall-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for (name, text) in [
        ("top.toml", "log-format = \"json\"\n"),
        ("section.toml", "[log]\nformat = \"json\"\n"),
    ] {
        let file = dir.join(name);
        std::fs::write(&file, text).expect("write the config file");
        let path = file.to_str().expect("UTF-8 path");
        let err = failed_start(&[], &["--config", path]);
        assert!(is_json_error(&err), "{name}: {err}");
    }
    let file = dir.join("bad.toml");
    std::fs::write(&file, "log-format = \"xml\"\n").expect("write the config file");
    let out = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["serve", "--config", file.to_str().expect("UTF-8 path")])
        .output()
        .expect("run rollcall serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("log-format = \"xml\""), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A password in the `--bus` URL is in neither `/readyz` nor the log,
/// while the bus is unreachable and the node says why.
#[tokio::test]
async fn the_bus_password_is_in_neither_readyz_nor_the_log() {
    let password = "s3cr3t-z";
    let bus = format!("redis://:{password}@127.0.0.1:1");
    let srv = ServerProcess::start("logs-bus", &["--bus", &bus, "--log-format", "json"]);
    let answered = eventually(Duration::from_secs(5), || async {
        let (_, body) = http(srv.addr, "GET", "/readyz", None, None).await;
        body["cluster"]["last_error"].is_string()
    })
    .await;
    let (status, body) = http(srv.addr, "GET", "/readyz", None, None).await;
    assert!(answered, "/readyz gives no reason: {status} {body}");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["cluster"]["bus_target"], "redis://:***@127.0.0.1:1");
    assert!(!body.to_string().contains(password), "{body}");
    let log = srv.log_text();
    json_lines(&log);
    assert!(!log.contains(password), "{log}");
}
