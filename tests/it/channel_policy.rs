//! The channel policy's own settings over real sockets: the backend
//! check's answers, failures and signature, rules that hide the member
//! list, rules read from a TOML file, and the startup errors for settings
//! the policy replaced. (The cross-protocol matrix is tests/it/authorization.rs.)

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::common::*;
use crate::webhook_support::{HOOK_SECRET, Hit, read_request};

/// How the fake backend answers.
#[derive(Clone, Copy)]
enum Backend {
    /// `{"allow": true}` for user `alice`, a refusal with a reason for others.
    AliceOnly,
    /// HTTP 500.
    Broken,
    /// No answer for longer than the check's timeout.
    Silent,
    /// `{"allow": true}` when the request carries the password `sesame`
    /// (only the Socket.IO test sends one).
    #[cfg_attr(not(feature = "socketio"), allow(dead_code))]
    Password,
}

/// A channel check on 127.0.0.1 that reports every request.
async fn backend(mode: Backend) -> (String, mpsc::UnboundedReceiver<Hit>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!(
        "http://{}/check?key=hidden-key",
        listener.local_addr().expect("addr")
    );
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let Some(hit) = read_request(&mut stream).await else {
                    return;
                };
                let asked: Value = hit.json();
                let _ = tx.send(hit);
                let (status, body) = match mode {
                    Backend::Silent => {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        return;
                    }
                    Backend::Broken => ("500 Internal Server Error", String::new()),
                    Backend::Password if asked["password"] == "sesame" => {
                        ("200 OK", json!({"allow": true}).to_string())
                    }
                    Backend::Password => (
                        "200 OK",
                        json!({"allow": false, "reason": "wrong space password"}).to_string(),
                    ),
                    Backend::AliceOnly if asked["user_id"] == "alice" => {
                        ("200 OK", json!({"allow": true}).to_string())
                    }
                    Backend::AliceOnly => (
                        "200 OK",
                        json!({"allow": false, "reason": "not a member of this space"}).to_string(),
                    ),
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    (url, rx)
}

/// Connect claims with a uid and no channel grants at all.
fn ungranted(uid: &str) -> Value {
    json!({"uid": uid, "umd": {"name": uid}})
}

async fn server_with_backend(mode: Backend) -> (TestServer, mpsc::UnboundedReceiver<Hit>) {
    let (url, hits) = backend(mode).await;
    let srv = TestServer::start_with(|c| {
        c.channels.channel_check_url = Some(url);
        c.channels.channel_check_timeout = std::time::Duration::from_millis(300);
        c.services.webhook_secret = Some(HOOK_SECRET.into());
    })
    .await;
    (srv, hits)
}

#[tokio::test]
async fn the_backend_check_settles_what_no_grant_or_rule_does_and_is_cached() {
    let (srv, mut hits) = server_with_backend(Backend::AliceOnly).await;
    let mut alice = srv.connect(ungranted("alice")).await;
    let joined = alice.join("presence.space-42").await;
    assert_eq!(uids(&joined["data"]["members"]), vec!["alice"]);
    let hit = hits.recv().await.expect("the backend was asked");
    let asked = hit.json();
    assert_eq!(asked["action"], "subscribe");
    assert_eq!(asked["channel"], "presence.space-42");
    assert_eq!(asked["user_id"], "alice");
    assert_eq!(asked["authenticated"], true);
    assert_eq!(asked["protocol"], "hotsock");
    // Signed with the webhook secret, so the backend knows it is rollcall.
    let expected = rollcall::services::webhooks::sign(HOOK_SECRET, &hit.body);
    assert_eq!(hit.header("X-Rollcall-Signature"), Some(expected.as_str()));

    // Bob is refused with the backend's reason and leaves no trace.
    let mut bob = srv.connect(ungranted("bob")).await;
    let err = bob.subscribe("presence.space-42").await;
    assert_eq!(err["error"]["code"], "SUBSCRIBE_PERMISSION_DENIED", "{err}");
    let why = err["error"]["message"].as_str().unwrap_or_default();
    assert!(why.contains("not a member of this space"), "{err}");
    alice.expect_none(200).await;
    assert_eq!(srv.member_uids("presence.space-42").await, vec!["alice"]);

    assert_eq!(
        hits.recv().await.expect("bob was asked about").json()["user_id"],
        "bob"
    );
    // Alice's answer is reused by her second connection: no new request.
    let mut again = srv.connect(ungranted("alice")).await;
    again.join("presence.space-42").await;
    assert!(hits.try_recv().is_err(), "the cached answer was used");

    // Client messages are asked about too (action publish, with the event).
    alice
        .send(json!({"event": "chat", "channel": "presence.space-42", "data": "hi"}))
        .await;
    let echoed = again.expect("chat").await;
    assert_eq!(echoed["data"], "hi");
    let hit = hits.recv().await.expect("the publish was asked about");
    assert_eq!(hit.json()["action"], "publish");
    assert_eq!(hit.json()["event"], "chat");
    srv.stop().await;
}

#[tokio::test]
async fn a_broken_or_silent_backend_refuses_with_the_reason() {
    for (mode, expected) in [
        (Backend::Broken, "answered HTTP 500"),
        (Backend::Silent, "did not answer within 300 ms"),
    ] {
        let (srv, _hits) = server_with_backend(mode).await;
        let mut bob = srv.connect(ungranted("bob")).await;
        let err = bob.subscribe("room.1").await;
        assert_eq!(err["error"]["code"], "SUBSCRIBE_PERMISSION_DENIED", "{err}");
        let why = err["error"]["message"].as_str().unwrap_or_default();
        assert!(why.contains(expected), "{err}");
        // The key in the check's URL is never shown to the client.
        assert!(!why.contains("hidden-key"), "{err}");
        // The connection keeps working: a later frame is answered in order.
        bob.ping_pong().await;
        srv.stop().await;
    }
}

#[tokio::test]
async fn a_rule_can_hide_the_member_list_from_subscribers() {
    let srv = TestServer::start_with(|c| {
        c.channels.channel_rules = vec![rollcall::policy::RuleConfig {
            show_members: false,
            ..rule("presence.auction-*", "authenticated", "grant")
        }];
    })
    .await;
    let mut jim = srv.connect(ungranted("jim")).await;
    let joined = jim.join("presence.auction-1").await;
    assert_eq!(joined["data"]["members"], json!([]), "{joined}");
    let mut pam = srv.connect(ungranted("pam")).await;
    let joined = pam.join("presence.auction-1").await;
    assert_eq!(joined["data"]["members"], json!([]), "{joined}");
    jim.expect_none(200).await;
    // The server (HTTP API) still sees both.
    srv.wait_for_members("presence.auction-1", &["jim", "pam"])
        .await;
    // Publishing needs a grant here.
    pam.send(json!({"event": "bid", "channel": "presence.auction-1", "data": 5}))
        .await;
    pam.expect_error("PUBLISH_PERMISSION_DENIED", Some("presence.auction-1"))
        .await;
    jim.expect_none(200).await;
    srv.stop().await;
}

#[tokio::test]
async fn rules_come_from_the_toml_file() {
    let dir = std::env::temp_dir().join(format!("rollcall-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("rollcall.toml");
    std::fs::write(
        &file,
        r#"
open-channels = ["lobby"]

[[channel-rules]]
pattern = "news.*"
subscribe = "authenticated"
publish = "server"
max-members = 1
"#,
    )
    .expect("write config");
    let stated = rollcall::config::Config::from_file(&file).expect("valid config");
    let srv = TestServer::start_with(|c| {
        c.channels.open_channels = stated.channels.open_channels.clone();
        c.channels.channel_rules = stated.channels.channel_rules.clone();
    })
    .await;
    let mut a = srv.connect(ungranted("a")).await;
    a.join("lobby").await;
    a.join("news.today").await;
    a.send(json!({"event": "x", "channel": "news.today", "data": 1}))
        .await;
    let err = a
        .expect_error("PUBLISH_PERMISSION_DENIED", Some("news.today"))
        .await;
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("only the server publishes"),
        "{err}"
    );
    srv.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "sgc")]
#[test]
fn settings_the_policy_replaced_are_refused_with_directions() {
    let mut cfg = rollcall::config::Config::default();
    cfg.front_ends.sgc.sgc_channels = vec!["room.*".into()];
    let err = rollcall::sgc::SgcConfig::from_settings(&cfg.front_ends.sgc)
        .expect_err("refused at startup");
    assert!(err.contains("--open-channels"), "{err}");
    let mut cfg = rollcall::config::Config::default();
    cfg.channels.open_channels = vec!["#oops".into()];
    let err = cfg.policy().expect_err("a bad pattern is refused");
    assert!(err.contains("--open-channels"), "{err}");
    let mut cfg = rollcall::config::Config::default();
    cfg.channels.channel_check_url = Some("ftp://example.com/check".into());
    let err = cfg.policy().expect_err("a bad URL is refused");
    assert!(err.contains("--channel-check-url"), "{err}");
}

/// A Socket.IO topic `password` goes to the backend check with the
/// subscribe (and nowhere else): a wrong one is refused with the
/// backend's reason and never reuses the right one's cached answer; the
/// refusal does not echo it.
#[cfg(feature = "socketio")]
#[tokio::test]
async fn a_topic_password_is_checked_by_the_backend() {
    use crate::common::protocols::{Peer, Proto};
    let (srv, mut hits) = server_with_backend(Backend::Password).await;
    let space = "space-protected";
    let subscribe = |password: Option<&str>| {
        let mut channel = json!({"type": "topic", "_id": space});
        if let Some(p) = password {
            channel["password"] = json!(p);
        }
        json!({ "channel": channel })
    };
    let mut ann = Peer::connect(&srv, Proto::SocketIo, Some(ungranted("ann")))
        .await
        .expect("connected");
    ann.emit("SUBSCRIBE_CHANNEL", subscribe(Some("sesame")))
        .await;
    let ok = ann.next().await;
    assert_eq!(ok["event"], "CHANNEL_SUBSCRIBED", "{ok}");
    let asked = hits.recv().await.expect("the backend was asked").json();
    assert_eq!(asked["password"], "sesame");
    assert_eq!(asked["channel"], space);
    assert_eq!(asked["protocol"], "socketio");

    // Same user, wrong password: asked again (not the cached yes), refused.
    let mut ann2 = Peer::connect(&srv, Proto::SocketIo, Some(ungranted("ann")))
        .await
        .expect("connected");
    ann2.emit("SUBSCRIBE_CHANNEL", subscribe(Some("guess")))
        .await;
    let refused = ann2.next().await;
    assert_eq!(refused["event"], "SUBSCRIBE_CHANNEL_FAILED", "{refused}");
    assert_eq!(refused["data"]["error"]["code"], "channel.forbidden");
    let why = refused["data"]["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("wrong space password"), "{refused}");
    assert!(
        !refused.to_string().contains("guess"),
        "not echoed: {refused}"
    );
    assert_eq!(
        hits.recv().await.expect("asked").json()["password"],
        "guess"
    );

    // No password at all: asked without one, refused.
    let mut bob = Peer::connect(&srv, Proto::SocketIo, Some(ungranted("bob")))
        .await
        .expect("connected");
    bob.emit("SUBSCRIBE_CHANNEL", subscribe(None)).await;
    assert_eq!(bob.next().await["event"], "SUBSCRIBE_CHANNEL_FAILED");
    let asked = hits.recv().await.expect("asked").json();
    assert!(asked.get("password").is_none(), "{asked}");

    // The right password again: the cached answer, no new request.
    ann2.emit("SUBSCRIBE_CHANNEL", subscribe(Some("sesame")))
        .await;
    assert_eq!(ann2.next().await["event"], "CHANNEL_SUBSCRIBED");
    assert!(hits.try_recv().is_err(), "the cached answer was used");
    srv.stop().await;
}
