//! The server's log on stderr, read from `rollcall serve` processes:
//! `--log-format json` writes one JSON object a line (every line, the
//! reason a start failed included), and is a setting like any other (flag,
//! environment, file); text output has no colour when stderr is not a
//! terminal.

use std::process::Command;

use serde_json::Value;

use crate::common::process::ServerProcess;
use crate::common::*;

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

#[tokio::test]
async fn the_text_log_has_no_colour_when_stderr_is_not_a_terminal() {
    // ServerProcess writes stderr to a file; the default format is text.
    let srv = ServerProcess::start("logs-text", &[]);
    let logged = eventually(WAIT, || async {
        srv.log_text().contains("rollcall listening")
    })
    .await;
    let log = srv.log_text();
    assert!(logged, "no log: {log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escapes in a log file: {log:?}"
    );
    assert!(
        log.contains(" INFO rollcall::server: rollcall listening addr=127.0.0.1:"),
        "{log}"
    );
}

#[tokio::test]
async fn the_json_log_is_one_object_a_line() {
    let srv = ServerProcess::start("logs-json", &["--log-format", "json"]);
    let logged = eventually(WAIT, || async {
        srv.log_text().contains("rollcall listening")
    })
    .await;
    let log = srv.log_text();
    assert!(logged, "no log: {log}");
    let lines = json_lines(&log);
    let listening = lines
        .iter()
        .find(|l| l["fields"]["message"] == "rollcall listening")
        .cloned()
        .unwrap_or_default();
    assert_eq!(listening["level"], "INFO", "{listening}");
    assert_eq!(listening["target"], "rollcall::server", "{listening}");
    assert_eq!(
        listening["fields"]["addr"],
        srv.addr.to_string(),
        "{listening}"
    );
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
