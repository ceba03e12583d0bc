//! Client messages forwarded to the backend (`--forward-channels`,
//! `--forward-only-channels`, Hotsock's `emitPubSubEvent`): from every front
//! end, signed webhooks carry each one as a `client_message` with its
//! channel, event, data, sender and protocol; a backend-only channel's
//! messages reach the backend and no subscriber.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::common::TestServer;
use crate::common::protocols::{Peer, Proto};
use crate::webhook_support::{HOOK_SECRET, Hit, receiver, verified_events};

/// The next `client_message` the receiver gets (other events skipped).
async fn next_client_message(rx: &mut mpsc::UnboundedReceiver<Hit>) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let hit = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("a webhook within 5 s")
            .expect("receiver open");
        if let Some(e) = verified_events(&hit)
            .into_iter()
            .find(|e| e["name"] == "client_message")
        {
            return e;
        }
    }
}

async fn forwarding_server(url: String) -> TestServer {
    TestServer::start_with(|c| {
        c.channels.open_channels = vec!["*".into()];
        c.channels.forward_channels = vec!["room.*".into()];
        c.channels.forward_only_channels = vec!["cmd.*".into()];
        c.services.webhook_url = vec![url];
        c.services.webhook_secret = Some(HOOK_SECRET.into());
        c.services.webhook_batch_ms = 20;
    })
    .await
}

#[tokio::test]
async fn client_messages_of_every_front_end_reach_the_backend() {
    let (url, mut rx, _) = receiver(0, false).await;
    let srv = forwarding_server(url).await;
    let mut listener = Peer::connect(&srv, Proto::Hotsock, Some(json!({"uid": "listener"})))
        .await
        .expect("listener connects");
    for proto in Proto::ALL {
        let room = format!("room.{}", proto.name());
        let cmd = format!("cmd.{}", proto.name());
        listener
            .subscribe(&room)
            .await
            .expect("listener subscribes");
        listener.subscribe(&cmd).await.expect("listener subscribes");
        let uid = format!("{}-sender", proto.name());
        let mut sender = Peer::connect(&srv, proto, Some(json!({"uid": uid, "username": uid})))
            .await
            .expect("sender connects");
        sender.subscribe(&room).await.expect("sender subscribes");
        sender.subscribe(&cmd).await.expect("sender subscribes");
        let text = format!("hello from {}", proto.name());
        sender.publish(&room, &text).await.expect("published");

        // The backend gets it, signed, with everything it needs.
        let e = next_client_message(&mut rx).await;
        assert_eq!(e["channel"], room, "{e}");
        assert_eq!(e["event"], proto.publish_event(), "{e}");
        assert!(e["data"].to_string().contains(&text), "{e}");
        assert!(e["connection"].is_string(), "{e}");
        assert!(
            crate::common::is_ulid(e["id"].as_str().unwrap_or("")),
            "{e}"
        );
        let protocol = e["protocol"].as_str().unwrap_or_default();
        assert!(
            proto.name().starts_with(protocol),
            "{protocol} for {proto:?}"
        );
        if proto != Proto::Sgc {
            assert_eq!(e["user_id"], uid, "{e}");
        }
        // And the channel's subscribers get it too (each front end's message
        // in its own shape, as Hotsock shows it).
        let f = listener.next().await;
        assert_eq!(f["channel"], room, "{f}");
        assert!(f["data"].to_string().contains(&text), "{f}");

        // A backend-only channel: the backend gets it, no subscriber does.
        let secret = format!("command from {}", proto.name());
        sender.send_publish(&cmd, &secret).await;
        let e = next_client_message(&mut rx).await;
        assert_eq!(e["channel"], cmd, "{e}");
        assert!(e["data"].to_string().contains(&secret), "{e}");
        listener.expect_none(300).await;
    }
}

#[tokio::test]
async fn a_hotsock_token_forwards_its_emit_pub_sub_events() {
    let (url, mut rx, _) = receiver(0, false).await;
    let srv = forwarding_server(url).await;
    let mut alice = srv
        .connect(
            json!({"uid": "alice", "channels": {"lobby": {"subscribe": true, "messages": {
            "loud": {"publish": true, "emitPubSubEvent": true},
            "quiet": {"publish": true}}}}}),
        )
        .await;
    alice.join("lobby").await;
    let mut stream =
        crate::event_stream::EventReader::open(srv.addr, "?type=client_message", None).await;
    alice
        .send(json!({"event": "quiet", "channel": "lobby", "data": 1}))
        .await;
    alice
        .send(json!({"event": "loud", "channel": "lobby", "data": 2}))
        .await;
    let e = next_client_message(&mut rx).await;
    assert_eq!(
        (e["event"].as_str(), e["data"].as_i64()),
        (Some("loud"), Some(2)),
        "{e}"
    );
    assert_eq!(e["user_id"], "alice");
    assert_eq!(e["protocol"], "hotsock");
    // The event stream carries it too, with the same id.
    let streamed = stream.next().await;
    assert_eq!(streamed.name, "client_message");
    assert_eq!(streamed.data["id"], e["id"], "{:?}", streamed.data);
}

#[tokio::test]
async fn a_forward_rule_of_the_config_file_picks_events_by_pattern() {
    let (url, mut rx, _) = receiver(0, false).await;
    let srv = TestServer::start_with(|c| {
        c.channels.open_channels = vec!["*".into()];
        c.channels.forward_rules = vec![
            rollcall::policy::ForwardRuleConfig {
                channels: "game.*".into(),
                events: Some("move.*".into()),
                backend_only: true,
            },
            rollcall::policy::ForwardRuleConfig {
                channels: "game.*".into(),
                events: Some("score".into()),
                backend_only: false,
            },
        ];
        c.services.webhook_url = vec![url];
        c.services.webhook_secret = Some(HOOK_SECRET.into());
        c.services.webhook_batch_ms = 20;
    })
    .await;
    let messages = json!({"*": {"publish": true}});
    let mut watcher = srv
        .connect(json!({"uid": "watcher", "channels": {"game.1": {"subscribe": true}}}))
        .await;
    watcher.join("game.1").await;
    let mut player = srv
        .connect(json!({"uid": "player", "channels": {"game.1": {"subscribe": true, "messages": messages}}}))
        .await;
    player.join("game.1").await;
    for (event, data) in [("chat", 1), ("move.left", 2), ("score", 3)] {
        player
            .send(json!({"event": event, "channel": "game.1", "data": data}))
            .await;
    }
    // chat: the channel only; move.left: the backend only; score: both.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let f = watcher.next().await;
        if f["channel"] == "game.1" && f["data"].is_i64() {
            seen.push(f["event"].as_str().unwrap_or_default().to_string());
        }
    }
    assert_eq!(seen, ["chat", "score"]);
    // One batch may carry both.
    let mut events = Vec::new();
    while events.len() < 2 {
        let hit = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a webhook within 5 s")
            .expect("receiver open");
        events.extend(
            verified_events(&hit)
                .into_iter()
                .filter(|e| e["name"] == "client_message")
                .map(|e| e["event"].as_str().unwrap_or_default().to_string()),
        );
    }
    assert_eq!(events, ["move.left", "score"]);
}
