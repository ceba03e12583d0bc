//! Hostile SocketCluster clients: batches (a JSON array of packets in one
//! frame) count one request per packet against `--max-messages-per-second`,
//! so a batch cannot smuggle thousands of publishes or subscribe/unsubscribe
//! cycles past the rate limit; and presence packets cannot be forged.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

#[tokio::test]
async fn every_packet_of_a_batch_counts_against_the_rate() {
    let srv = TestServer::start_with(|c| {
        c.channels.open_channels = vec!["flood".into()];
        c.limits.max_messages_per_second = 50;
    })
    .await;
    let mut reader = srv.connect(anonymous()).await;
    reader.join("flood").await;
    let url = format!("ws://{}/socketcluster/", srv.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade");
    ws.send(Message::Text(
        json!({"event": "#handshake", "data": {}, "cid": 1})
            .to_string()
            .into(),
    ))
    .await
    .expect("send");
    // Subscribers may publish on "flood": subscribe, then one frame of 400
    // publishes.
    ws.send(Message::Text(
        json!({"event": "#subscribe", "data": {"channel": "flood"}, "cid": 1})
            .to_string()
            .into(),
    ))
    .await
    .expect("send");
    let batch: Vec<Value> = (0..400)
        .map(
            |i| json!({"event": "#publish", "data": {"channel": "flood", "data": i}, "cid": i + 2}),
        )
        .collect();
    ws.send(Message::Text(Value::Array(batch).to_string().into()))
        .await
        .expect("send");
    let (mut ok, mut limited) = (0, 0);
    let deadline = tokio::time::Instant::now() + WAIT;
    while ok + limited < 400 {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("every request answered in time")
            .expect("open")
            .expect("frame");
        let Message::Text(text) = msg else { continue };
        for reply in replies(&text) {
            match reply["rid"].as_i64() {
                Some(rid) if rid >= 2 => {
                    if reply["error"]["name"] == "RateLimitError" {
                        limited += 1;
                    } else {
                        assert!(reply.get("error").is_none(), "{reply}");
                        ok += 1;
                    }
                }
                _ => {}
            }
        }
    }
    assert!(
        ok <= 60,
        "{ok} publishes of one batch got through a limit of 50/s"
    );
    assert!(limited >= 340, "only {limited} refused");
    // The Hotsock reader got exactly the ones acknowledged.
    let mut received = 0;
    while let Ok(frame) = tokio::time::timeout(Duration::from_millis(300), reader.next()).await {
        assert_eq!(frame["channel"], "flood", "{frame}");
        received += 1;
    }
    assert_eq!(received, ok);

    // Keeping it up for two seconds is closed as abuse (1008).
    let mut closed = None;
    let give_up = tokio::time::Instant::now() + Duration::from_secs(6);
    for round in 0.. {
        if tokio::time::Instant::now() > give_up {
            break;
        }
        let batch: Vec<Value> = (0..200)
            .map(|i| json!({"event": "#subscribe", "data": {"channel": "flood"}, "cid": 10_000 + round * 200 + i}))
            .collect();
        if ws
            .send(Message::Text(Value::Array(batch).to_string().into()))
            .await
            .is_err()
        {
            break;
        }
        while let Ok(Some(Ok(msg))) =
            tokio::time::timeout(Duration::from_millis(50), ws.next()).await
        {
            if let Message::Close(Some(frame)) = msg {
                closed = Some(u16::from(frame.code));
            }
        }
        if closed.is_some() {
            break;
        }
    }
    assert_eq!(
        closed,
        Some(1008),
        "sustained batches end in a policy close"
    );
    srv.stop().await;
}

/// A handshaken SocketCluster socket, logged in as `user` if given.
async fn sc(srv: &TestServer, user: Option<&str>) -> (Ws, String) {
    let url = format!("ws://{}/socketcluster/", srv.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade");
    let token = user.map(|u| sign(&mut json!({"username": u})));
    send(
        &mut ws,
        json!({"event": "#handshake", "data": {"authToken": token}, "cid": 1}),
    )
    .await;
    let reply = reply_to(&mut ws, 1).await;
    assert_eq!(reply["data"]["isAuthenticated"], user.is_some(), "{reply}");
    let id = reply["data"]["id"].as_str().expect("socket id").to_string();
    (ws, id)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn send(ws: &mut Ws, packet: Value) {
    ws.send(Message::Text(packet.to_string().into()))
        .await
        .expect("send");
}

/// Reads until the reply with `rid` (other packets are dropped).
async fn reply_to(ws: &mut Ws, rid: i64) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("a reply in time")
            .expect("open")
            .expect("frame");
        if let Message::Text(text) = msg
            && let Some(r) = replies(&text).into_iter().find(|r| r["rid"] == rid)
        {
            return r;
        }
    }
}

/// Collects the `#publish` packets on `channel` for `ms`.
async fn publishes_on(ws: &mut Ws, channel: &str, ms: u64) -> Vec<Value> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, ws.next()).await {
        if let Message::Text(text) = msg {
            for p in replies(&text) {
                if p["event"] == "#publish" && p["data"]["channel"] == channel {
                    seen.push(p["data"]["data"].clone());
                }
            }
        }
    }
    seen
}

#[tokio::test]
async fn presence_packets_cannot_be_forged() {
    let srv = TestServer::start_with(|c| c.channels.open_channels = vec!["room".into()]).await;
    let (mut tracker, alice_socket) = sc(&srv, Some("alice")).await;
    send(
        &mut tracker,
        json!({"event": "#subscribe", "data": {"channel": "presence>room"}, "cid": 2}),
    )
    .await;
    assert!(reply_to(&mut tracker, 2).await.get("error").is_none());
    let (mut mallory, _) = sc(&srv, Some("mallory")).await;
    // A fake leave of alice on the server's presence channel is refused.
    send(
        &mut mallory,
        json!({"event": "#publish", "data": {"channel": "presence>room", "data": {"type": "leave", "username": "alice"}}, "cid": 2}),
    )
    .await;
    let reply = reply_to(&mut mallory, 2).await;
    assert_eq!(reply["error"]["name"], "ForbiddenError", "{reply}");
    let forged = publishes_on(&mut tracker, "presence>room", 300).await;
    assert!(
        forged.iter().all(|p| p["type"] != "leave"),
        "a forged leave reached the tracker: {forged:?}"
    );
    // A pong to alice's socket channel names the sender, whatever it claims,
    // and only for a channel the sender tracks.
    let inbox = format!("presence>socket/{alice_socket}");
    let pong = json!({"type": "pong", "channel": "room", "username": "bob", "timeout": 1});
    send(
        &mut mallory,
        json!({"event": "#publish", "data": {"channel": inbox, "data": pong}, "cid": 3}),
    )
    .await;
    let reply = reply_to(&mut mallory, 3).await;
    assert_eq!(
        reply["error"]["name"], "ForbiddenError",
        "mallory tracks nothing: {reply}"
    );
    send(
        &mut mallory,
        json!({"event": "#subscribe", "data": {"channel": "presence>room"}, "cid": 4}),
    )
    .await;
    reply_to(&mut mallory, 4).await;
    send(
        &mut tracker,
        json!({"event": "#subscribe", "data": {"channel": inbox, "data": null}, "cid": 4}),
    )
    .await;
    reply_to(&mut tracker, 4).await;
    send(
        &mut mallory,
        json!({"event": "#publish", "data": {"channel": inbox, "data": pong}, "cid": 5}),
    )
    .await;
    assert!(reply_to(&mut mallory, 5).await.get("error").is_none());
    let pongs = publishes_on(&mut tracker, &inbox, 500).await;
    assert_eq!(pongs.len(), 1, "{pongs:?}");
    assert_eq!(
        pongs[0]["username"], "mallory",
        "stamped with the sender: {pongs:?}"
    );
    // Another socket's inbox cannot be read.
    send(
        &mut mallory,
        json!({"event": "#subscribe", "data": {"channel": inbox}, "cid": 6}),
    )
    .await;
    assert_eq!(
        reply_to(&mut mallory, 6).await["error"]["name"],
        "ForbiddenError"
    );
    srv.stop().await;
}

/// The replies in one text frame (a packet or an array of them).
fn replies(text: &str) -> Vec<Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(list)) => list,
        Ok(v) => vec![v],
        Err(_) => Vec::new(),
    }
}

/// Subscribe/unsubscribe cycles make every member of the channel receive
/// an event each: they are limited per connection and per user, so one
/// socket cannot flood the others (the probe: 12 frames of such
/// cycles produced 390 MB of member events).
#[tokio::test]
async fn membership_churn_is_limited() {
    let srv = TestServer::start_with(|c| {
        c.channels.open_channels = vec!["presence.churn".into()];
        c.limits.max_messages_per_second = 100_000;
        c.limits.max_membership_changes_per_second = 10;
    })
    .await;
    let mut watcher = srv.connect(user("watcher", json!({"n": 1}))).await;
    watcher.join("presence.churn").await;
    let (mut churner, _) = sc(&srv, Some("churner")).await;
    let mut cid = 100;
    let mut refused = 0;
    let mut closed = None;
    let started = tokio::time::Instant::now();
    'rounds: while started.elapsed() < Duration::from_secs(4) {
        let batch: Vec<Value> = (0..100)
            .map(|i| match i % 2 {
                // #unsubscribe takes the channel name itself as its data.
                0 => json!({"event": "#subscribe", "data": {"channel": "presence.churn"}, "cid": cid + i}),
                _ => json!({"event": "#unsubscribe", "data": "presence.churn", "cid": cid + i}),
            })
            .collect();
        cid += 100;
        if ws_send(&mut churner, Value::Array(batch)).await.is_err() {
            break;
        }
        while let Ok(Some(msg)) =
            tokio::time::timeout(Duration::from_millis(20), churner.next()).await
        {
            match msg {
                Ok(Message::Text(text)) => {
                    refused += replies(&text)
                        .iter()
                        .filter(|r| {
                            r["error"]["message"].as_str().is_some_and(|m| {
                                m.contains("subscribes and unsubscribes per second")
                            })
                        })
                        .count();
                }
                Ok(Message::Close(frame)) => {
                    closed = frame.map(|f| u16::from(f.code));
                    break 'rounds;
                }
                _ => {}
            }
        }
    }
    assert!(refused > 0, "no subscribe was refused");
    assert_eq!(closed, Some(1008), "sustained churn ends in a policy close");
    // The watcher saw at most the burst plus the rate, not thousands.
    let mut events = 0;
    while let Ok(frame) = tokio::time::timeout(Duration::from_millis(300), watcher.next()).await {
        if frame["event"] == "hotsock.memberAdded" || frame["event"] == "hotsock.memberRemoved" {
            events += 1;
        }
    }
    // Burst 200 (twice 100 channels), then 10 per second for about 4 s.
    assert!(events <= 300, "{events} member events reached the watcher");
    srv.stop().await;
}

async fn ws_send(ws: &mut Ws, packet: Value) -> Result<(), ()> {
    ws.send(Message::Text(packet.to_string().into()))
        .await
        .map_err(|_| ())
}
