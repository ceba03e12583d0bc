//! The dashboard (`GET /dashboard`) and the routes it reads: the paged
//! channel list (`GET /api/channels?offset&limit&contains`) and this
//! node's counters (`GET /api/admin/stats`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::task::JoinHandle;

use crate::common::*;

/// The channel names of a `GET /api/channels` answer.
fn names(page: &Value) -> Vec<String> {
    page["channels"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|c| c["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn the_channel_list_comes_in_pages_and_filters_by_substring() {
    let srv = TestServer::start().await;
    let mut pam = srv.connect(user("pam", json!({"desk": 1}))).await;
    for room in ["a", "b", "c", "d", "e"] {
        pam.join(&format!("presence.{room}")).await;
    }
    pam.join("news").await;

    let (status, first) = srv.http("GET", "/api/channels?limit=2", None).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(names(&first), ["news", "presence.a"]);
    assert_eq!(
        (&first["total"], &first["offset"], &first["next_offset"]),
        (&json!(6), &json!(0), &json!(2))
    );
    let (_, last) = srv
        .http("GET", "/api/channels?offset=4&limit=2", None)
        .await;
    assert_eq!(names(&last), ["presence.d", "presence.e"]);
    assert_eq!(last["next_offset"], Value::Null, "{last}");
    let (_, beyond) = srv.http("GET", "/api/channels?offset=50", None).await;
    assert_eq!(names(&beyond), Vec::<String>::new());
    assert_eq!(
        (&beyond["total"], &beyond["next_offset"]),
        (&json!(6), &Value::Null)
    );

    // `contains` and `prefix` together; `total` counts what matches.
    let (_, filtered) = srv
        .http("GET", "/api/channels?prefix=presence.&contains=.c", None)
        .await;
    assert_eq!(names(&filtered), ["presence.c"]);
    assert_eq!(filtered["total"], 1);
    let (_, filtered) = srv.http("GET", "/api/channels?contains=e", None).await;
    assert_eq!(
        names(&filtered),
        [
            "news",
            "presence.a",
            "presence.b",
            "presence.c",
            "presence.d",
            "presence.e"
        ]
    );

    for bad in ["limit=0", "limit=1001", "offset=-1", "limit=x", "page=2"] {
        let (status, body) = srv.http("GET", &format!("/api/channels?{bad}"), None).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "INVALID_QUERY", "{bad}: {body}");
    }
    pam.close().await;
    srv.stop().await;
}

#[tokio::test]
async fn admin_stats_count_connections_messages_and_deliveries() {
    let srv = TestServer::start().await;
    let (status, _) = http(srv.addr, "GET", "/api/admin/stats", None, None).await;
    assert_eq!(status, 401, "the stats need the API key");

    let (status, before) = srv.http("GET", "/api/admin/stats", None).await;
    assert_eq!(status, 200, "{before}");
    let mut jim = srv.connect(user("jim", json!(null))).await;
    jim.join("presence.office").await;
    let mut pam = srv.connect(user("pam", json!(null))).await;
    pam.join("presence.office").await;
    jim.expect("hotsock.memberAdded").await;
    srv.publish("presence.office", "news", json!({"text": "hi"}))
        .await;
    jim.expect("news").await;
    pam.expect("news").await;

    let (_, after) = srv.http("GET", "/api/admin/stats", None).await;
    let open_hotsock = |stats: &Value| {
        stats["connections"]
            .as_array()
            .and_then(|list| list.iter().find(|p| p["protocol"] == "hotsock"))
            .and_then(|p| p["open"].as_u64())
    };
    let counter = |stats: &Value, name: &str| stats[name].as_u64().unwrap_or(u64::MAX);
    assert_eq!(open_hotsock(&before), Some(0), "{before}");
    assert_eq!(open_hotsock(&after), Some(2), "{after}");
    assert_eq!(
        counter(&after, "messages_published") - counter(&before, "messages_published"),
        1,
        "{before} -> {after}"
    );
    assert_eq!(
        counter(&after, "deliveries") - counter(&before, "deliveries"),
        2,
        "one message to two subscribers: {before} -> {after}"
    );
    let (_, ready) = http(srv.addr, "GET", "/readyz", None, None).await;
    assert_eq!(after["node"], ready["cluster"]["node_id"], "{after}");
    let uptime = after["uptime_seconds"].as_f64().unwrap_or(-1.0);
    assert!((0.0..60.0).contains(&uptime), "{after}");
    jim.close().await;
    pam.close().await;
    srv.stop().await;
}

/// The dashboard in headless Chromium, driven by
/// `conformance/dashboard/drive.js` (playwright-core) one JSON command a
/// line: the test runs the server and the clients, the script looks at
/// and clicks the page.
struct Browser {
    child: tokio::process::Child,
    commands: tokio::process::ChildStdin,
    answers: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

/// How long one command may take (each wait in the script gives up after
/// 10 s and says what it waited for), besides the pause of a `wait`.
const COMMAND_LIMIT: Duration = Duration::from_secs(30);

impl Browser {
    async fn start(srv: &TestServer) -> Self {
        let chromium = chromium_path();
        let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/dashboard/drive.js");
        let mut child = tokio::process::Command::new("node")
            .arg(&driver)
            .args(["--url", &format!("http://{}", srv.addr)])
            .args(["--api-key", API_KEY])
            .arg("--chromium")
            .arg(&chromium)
            .arg("--failure-screenshot")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-failure.png"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts (apt-get install nodejs, or run scripts/test)");
        let commands = child.stdin.take().expect("stdin is piped");
        let answers = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
        Browser {
            child,
            commands,
            answers,
        }
    }

    /// Sends one command and returns its answer; panics if it failed.
    async fn run(&mut self, command: Value) -> Value {
        let line = format!("{command}\n");
        self.commands
            .write_all(line.as_bytes())
            .await
            .expect("the driver reads commands");
        // A `wait` command takes its `ms` on top.
        let limit = COMMAND_LIMIT + Duration::from_millis(command["ms"].as_u64().unwrap_or(0));
        let answer = tokio::time::timeout(limit, self.answers.next_line())
            .await
            .unwrap_or_else(|_| panic!("no answer to {command} within {limit:?}"))
            .expect("the driver's stdout")
            .unwrap_or_else(|| panic!("the driver ended during {command}"));
        let answer: Value = serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("the driver answered {answer:?} ({e})"));
        assert_eq!(answer["ok"], true, "{command} failed in the page: {answer}");
        answer
    }

    /// Closes the browser and waits for the driver to end.
    async fn close(mut self) {
        self.run(json!({"cmd": "close"})).await;
        drop(self.commands);
        let ended = tokio::time::timeout(COMMAND_LIMIT, self.child.wait()).await;
        assert!(
            matches!(ended, Ok(Ok(status)) if status.success()),
            "the driver did not end cleanly: {ended:?}"
        );
    }
}

/// Debian's Chromium (`chromium` on the PATH), which scripts/test
/// installs; the test fails, rather than skips, without it.
fn chromium_path() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("chromium"))
            .find(|path| path.is_file())
    });
    let Some(chromium) = found else {
        panic!(
            "Chromium is not installed (no `chromium` on the PATH): run scripts/test, which \
             installs the Debian package `chromium`, or `apt-get install chromium`"
        );
    };
    assert!(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("conformance/node_modules/playwright-core")
            .is_dir(),
        "conformance/node_modules has no playwright-core: run scripts/test, or `cd conformance && npm ci`"
    );
    chromium
}

/// Publishes to `channels` at a rate that rises and falls (about 2 to 22
/// messages a second), so the chart has something to draw, until aborted.
fn traffic(addr: std::net::SocketAddr, channels: &'static [&'static str]) -> JoinHandle<()> {
    tokio::spawn(async move {
        // Messages owed, fractions carried over from tick to tick.
        let mut owed = 0.0;
        for tick in 0u64.. {
            owed += 1.2 + ((tick as f64) / 25.0).sin();
            let mut sent = 0;
            while owed >= 1.0 {
                owed -= 1.0;
                let channel = channels[(tick as usize + sent) % channels.len()];
                api_publish(addr, channel, "chat", json!({"tick": tick})).await;
                sent += 1;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// Reads frames until one with `event` (the others are traffic).
async fn until_event(client: &mut Client, event: &str) -> Value {
    loop {
        let frame = client.next().await;
        if frame["event"] == event {
            return frame;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_members_live_and_disconnects_a_user() {
    let srv = TestServer::start().await;
    // A populated server: several channels, members with data.
    let mut others = Vec::new();
    for (uid, name, channels) in [
        ("bob", "Bob", &["presence.lobby", "news"][..]),
        (
            "carol",
            "Carol",
            &["presence.lobby", "presence.design-review", "news"],
        ),
        ("dave", "Dave", &["presence.lobby"]),
        (
            "erin",
            "Erin",
            &["presence.design-review", "presence.support"],
        ),
        ("frank", "Frank", &["presence.support", "news"]),
    ] {
        let mut client = srv
            .connect(user(uid, json!({"name": name, "status": "online"})))
            .await;
        for channel in channels {
            client.join(channel).await;
        }
        others.push(client);
    }
    let mut page = Browser::start(&srv).await;
    page.run(json!({"cmd": "open"})).await;
    page.run(json!({"cmd": "select", "channel": "presence.lobby"}))
        .await;
    page.run(json!({"cmd": "member", "uid": "dave", "present": true}))
        .await;

    // A member joins and leaves: the page follows.
    let alice_claims = user("alice", json!({"name": "Alice", "status": "online"}));
    let mut alice = srv.connect(alice_claims.clone()).await;
    alice.join("presence.lobby").await;
    page.run(json!({"cmd": "member", "uid": "alice", "present": true}))
        .await;
    alice.close().await;
    page.run(json!({"cmd": "member", "uid": "alice", "present": false}))
        .await;

    // Back again, then disconnected from the page with a reason.
    let mut alice = srv.connect(alice_claims).await;
    alice.join("presence.lobby").await;
    page.run(json!({"cmd": "member", "uid": "alice", "present": true}))
        .await;
    // A refusal shows the API's own message: this reason is 100
    // characters, but 200 bytes.
    let refused = page
        .run(json!({"cmd": "member_action", "uid": "alice", "action": "Disconnect", "reason": "é".repeat(100)}))
        .await;
    assert_eq!(refused["error"], true, "{refused}");
    assert!(
        refused["notice"]
            .as_str()
            .is_some_and(|n| n.starts_with("reason must be 1 to 120 bytes")),
        "{refused}"
    );
    let reason = "disconnected from the dashboard";
    let done = page
        .run(json!({"cmd": "member_action", "uid": "alice", "action": "Disconnect", "reason": reason}))
        .await;
    assert_eq!(done["error"], false, "{done}");
    assert_eq!(
        alice.expect_close().await,
        (4100, reason.to_string()),
        "the client sees the operator's close"
    );
    page.run(json!({"cmd": "member", "uid": "alice", "present": false}))
        .await;

    // Removed from one channel, the user stays connected.
    let removal = "moved to another room";
    let done = page
        .run(json!({"cmd": "member_action", "uid": "dave", "action": "Remove", "reason": removal}))
        .await;
    assert_eq!(done["error"], false, "{done}");
    let dave = &mut others[2];
    let told = until_event(dave, "hotsock.unsubscribed").await;
    assert_eq!(
        (&told["channel"], &told["data"]["reason"]),
        (&json!("presence.lobby"), &json!(removal)),
        "{told}"
    );
    dave.ping_pong().await;
    page.run(json!({"cmd": "member", "uid": "dave", "present": false}))
        .await;
    dave.join("presence.lobby").await;

    // Traffic, a user's connections, and the picture of it all.
    let publisher = traffic(srv.addr, &["presence.lobby", "news", "presence.support"]);
    page.run(json!({"cmd": "member", "uid": "dave", "present": true}))
        .await;
    page.run(json!({"cmd": "member_action", "uid": "carol", "action": "Connections"}))
        .await;
    let rates = page.run(json!({"cmd": "traffic"})).await;
    println!("rates on the page: {rates}");
    let update_docs = std::env::var_os("ROLLCALL_UPDATE_SCREENSHOT").is_some();
    // A longer run for the README's picture: the chart fills its minute.
    let chart_ms = if update_docs { 45_000 } else { 3_000 };
    page.run(json!({"cmd": "wait", "ms": chart_ms})).await;
    let protocols = page.run(json!({"cmd": "protocols"})).await;
    assert!(
        protocols["rows"]
            .as_array()
            .is_some_and(|rows| rows.contains(&json!(["hotsock", "5"]))),
        "five Hotsock clients open: {protocols}"
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shot = root.join("target/dashboard.png");
    page.run(json!({"cmd": "screenshot", "path": shot})).await;
    publisher.abort();
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000),
        "a screenshot at {}",
        shot.display()
    );
    if update_docs {
        std::fs::create_dir_all(root.join("docs")).expect("docs/ made");
        std::fs::copy(&shot, root.join("docs/dashboard.png")).expect("docs/dashboard.png written");
    }

    // The key was typed into the page, kept in the tab's sessionStorage,
    // and sent in headers only: no URL carries it.
    let seen = page.run(json!({"cmd": "storage"})).await;
    let urls: Vec<&str> = seen["urls"]
        .as_array()
        .map(|urls| urls.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        urls.iter().any(|u| u.contains("/api/admin/stats")),
        "{seen}"
    );
    for url in &urls {
        assert!(!url.contains(API_KEY), "the API key is in a URL: {url}");
    }
    assert_eq!(seen["session"], json!(["rollcall.apiKey"]), "{seen}");
    assert_eq!(seen["local"], json!([]), "{seen}");
    assert_eq!(seen["pageErrors"], json!([]), "{seen}");
    page.close().await;
    for client in others {
        client.close().await;
    }
    srv.stop().await;
}
