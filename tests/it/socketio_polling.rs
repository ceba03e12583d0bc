//! rollcall's own Engine.IO long-polling (`adapters/socketio/polling.rs`)
//! over real HTTP requests, with the payloads socket.io-client 1.x/2.x
//! (Engine.IO 3: `len:packet`, lengths in UTF-16 code units) and 3.x/4.x
//! (Engine.IO 4: packets separated by `\x1e`) send and read, and the
//! upgrade from polling to a WebSocket.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

fn query(sub: &str) -> String {
    let mut claims = json!({ "sub": sub });
    format!("tokenType=jwt&token={}", sign(&mut claims))
}

/// The packets of a payload, decoded independently of the server's code.
fn packets(eio: u8, body: &str) -> Vec<String> {
    if eio == 4 {
        return body.split('\x1e').map(str::to_string).collect();
    }
    let units: Vec<u16> = body.encode_utf16().collect();
    let mut out = Vec::new();
    let mut at = 0;
    while at < units.len() {
        let colon = at
            + units[at..]
                .iter()
                .position(|&u| u == u16::from(b':'))
                .unwrap_or_else(|| panic!("no length in {body:?}"));
        let len: usize = String::from_utf16(&units[at..colon])
            .expect("length")
            .parse()
            .unwrap_or_else(|_| panic!("bad length in {body:?}"));
        let end = colon + 1 + len;
        assert!(end <= units.len(), "length past the end in {body:?}");
        out.push(String::from_utf16(&units[colon + 1..end]).expect("a whole packet"));
        at = end;
    }
    out
}

/// A body as text (`http_raw` reads a body like `6` or `2` as a JSON
/// number).
fn text_of(body: &Value) -> String {
    match body {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// One side of a payload, encoded as the client's version does.
fn payload(eio: u8, packets: &[&str]) -> String {
    if eio == 4 {
        return packets.join("\x1e");
    }
    packets
        .iter()
        .map(|p| format!("{}:{p}", p.encode_utf16().count()))
        .collect()
}

/// A long-polling client of one session.
struct Poller {
    addr: SocketAddr,
    eio: u8,
    path: String,
    sid: String,
}

impl Poller {
    /// The handshake: the open packet (and what came with it).
    async fn open(srv: &TestServer, query: &str, eio: u8) -> (Poller, Vec<String>) {
        let path = format!("/socket.io/?EIO={eio}&transport=polling&{query}");
        let (status, body) = http_raw(srv.addr, "GET", &path, "", b"").await;
        assert_eq!(status, 200, "{body}");
        let got = packets(eio, &text_of(&body));
        let open: Value = serde_json::from_str(&got[0][1..]).expect("open packet JSON");
        assert!(got[0].starts_with('0'), "{got:?}");
        assert_eq!(open["upgrades"], json!(["websocket"]), "{open}");
        let sid = open["sid"].as_str().expect("sid").to_string();
        let poller = Poller {
            addr: srv.addr,
            eio,
            path: format!("/socket.io/?EIO={eio}&transport=polling&sid={sid}"),
            sid,
        };
        (poller, got)
    }

    async fn get_raw(&self) -> (u16, Value) {
        http_raw(self.addr, "GET", &self.path, "", b"").await
    }

    /// The packets of the next GET (pings answered).
    async fn get(&self) -> Vec<String> {
        let (status, body) = self.get_raw().await;
        assert_eq!(status, 200, "{body}");
        let got = packets(self.eio, &text_of(&body));
        if self.eio == 4 && got.iter().any(|p| p == "2") {
            self.post(&["3"]).await;
        }
        got.into_iter().filter(|p| p != "2" && p != "6").collect()
    }

    async fn post(&self, packets: &[&str]) -> (u16, Value) {
        let body = payload(self.eio, packets);
        http_raw(self.addr, "POST", &self.path, "", body.as_bytes()).await
    }

    /// GETs until a packet starts with `prefix`; returns it.
    async fn until(&self, prefix: &str) -> String {
        loop {
            for p in self.get().await {
                if p.starts_with(prefix) {
                    return p;
                }
            }
        }
    }

    /// Connects `/chat` as the client's version does.
    async fn connect_chat(&self, query: &str) {
        let connect = match self.eio {
            3 => format!("40/chat?{query}"),
            _ => "40/chat,".to_string(),
        };
        assert_eq!(self.post(&[&connect]).await.0, 200);
        self.until("40/chat").await;
    }

    async fn emit(&self, event: &str, data: Value) {
        let packet = format!("42/chat,{}", json!([event, data]));
        let (status, body) = self.post(&[&packet]).await;
        assert_eq!(status, 200, "{body}");
    }

    /// Subscribes to the topic `room` and waits for the answer.
    async fn subscribe(&self, room: &str) {
        self.emit(
            "SUBSCRIBE_CHANNEL",
            json!({"channel": {"type": "topic", "_id": room}}),
        )
        .await;
        let subscribed = self.expect("CHANNEL_SUBSCRIBED").await;
        assert_eq!(subscribed["channel"]["_id"], room);
    }

    /// The payload of the next `event` on `/chat`.
    async fn expect(&self, event: &str) -> Value {
        let head = format!("42/chat,[\"{event}\"");
        let packet = self.until(&head).await;
        let v: Value = serde_json::from_str(&packet["42/chat,".len()..]).expect("event JSON");
        v[1].clone()
    }
}

/// Both versions connect `/chat`, subscribe and receive a message whose
/// text has characters of two UTF-16 units (an Engine.IO 3 length counted
/// in bytes or chars would not decode).
#[tokio::test]
async fn polling_clients_of_both_versions_subscribe_and_receive() {
    let srv = TestServer::start_open().await;
    let room = "presence.polled";
    for eio in [3u8, 4] {
        let q = query(&format!("poll{eio}"));
        let (c, handshake) = Poller::open(&srv, &q, eio).await;
        if eio == 3 {
            assert_eq!(handshake[1], "40", "{handshake:?}");
        }
        c.connect_chat(&q).await;
        c.subscribe(room).await;
        let text = format!("héllo 😀 from {eio}");
        c.emit(
            "SEND_MESSAGE",
            json!({"category": "chat", "topicId": room, "content": {"bodyText": text}}),
        )
        .await;
        let sent = c.expect("MESSAGE_SENT").await;
        assert_eq!(sent["content"]["bodyText"], text.as_str());
        assert_eq!(sent["sender"]["_id"], format!("poll{eio}"));
        // Messages published meanwhile wait for the next GET, in order.
        for i in 0..3 {
            srv.publish(room, "tick", json!(i)).await;
        }
        let mut seen = Vec::new();
        while seen.len() < 3 {
            for p in c.get().await {
                if p.contains("\"category\":\"tick\"") {
                    let v: Value = serde_json::from_str(&p["42/chat,".len()..]).expect("JSON");
                    seen.push(v[1]["content"]["data"].clone());
                }
            }
        }
        assert_eq!(seen, [json!(0), json!(1), json!(2)]);
        assert_eq!(c.post(&["1"]).await.0, 200, "close");
    }
    srv.stop().await;
}

/// A polling session upgrades: the probe is answered, the held GET gets a
/// noop, what is queued meanwhile comes over the WebSocket in order, and
/// the session's sid no longer polls.
#[tokio::test]
async fn polling_upgrades_to_a_websocket_without_losing_order() {
    let srv = TestServer::start_open().await;
    let room = "presence.upgraded";
    let q = query("upton");
    let (c, _) = Poller::open(&srv, &q, 4).await;
    c.connect_chat(&q).await;
    c.subscribe(room).await;

    let held = {
        let (addr, path) = (c.addr, c.path.clone());
        tokio::spawn(async move { http_raw(addr, "GET", &path, "", b"").await })
    };
    let url = format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket&sid={}",
        srv.addr, c.sid
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade");
    ws.send(Message::Text("2probe".into()))
        .await
        .expect("probe");
    let pong = tokio::time::timeout(WAIT, ws.next()).await.expect("3probe");
    assert!(
        matches!(&pong, Some(Ok(Message::Text(t))) if t.as_str() == "3probe"),
        "{pong:?}"
    );
    let (status, body) = held.await.expect("held GET");
    assert_eq!(
        (status, text_of(&body).as_str()),
        (200, "6"),
        "the held GET"
    );
    for i in 0..5 {
        srv.publish(room, "tick", json!(i)).await;
    }
    ws.send(Message::Text("5".into()))
        .await
        .expect("upgrade packet");
    let mut ticks = Vec::new();
    while ticks.len() < 5 {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.contains("\"category\":\"tick\"") => {
                let v: Value = serde_json::from_str(&t["42/chat,".len()..]).expect("JSON");
                ticks.push(v[1]["content"]["data"].clone());
            }
            Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "2" => {
                ws.send(Message::Text("3".into())).await.expect("pong");
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("the WebSocket ended: {other:?}"),
        }
    }
    assert_eq!(ticks, (0..5).map(|i| json!(i)).collect::<Vec<_>>());
    let event = json!(["SEND_MESSAGE", {"topicId": room, "content": {"bodyText": "over ws"}}]);
    ws.send(Message::Text(format!("42/chat,{event}").into()))
        .await
        .expect("send");
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.contains("MESSAGE_SENT") => {
                assert!(t.contains("over ws"), "{t}");
                break;
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("the WebSocket ended: {other:?}"),
        }
    }
    // The sid polls no more.
    let (status, body) = c.get_raw().await;
    assert_eq!(status, 400, "{body}");
    srv.stop().await;
}

/// Bad requests end the session with Engine.IO's error answer, and the
/// session's members leave: two GETs at once, a payload that is not
/// packets, a payload over the limit.
#[tokio::test]
async fn polling_refuses_overlaps_garbage_and_oversized_payloads() {
    let srv = TestServer::start_open().await;
    let room = "presence.refusals";

    // Two GETs at once.
    let q = query("twice");
    let (c, _) = Poller::open(&srv, &q, 4).await;
    c.connect_chat(&q).await;
    let first = {
        let (addr, path) = (c.addr, c.path.clone());
        tokio::spawn(async move { http_raw(addr, "GET", &path, "", b"").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (second, body) = c.get_raw().await;
    assert_eq!(second, 400, "{body}");
    let (first, _) = first.await.expect("first GET");
    assert_eq!(first, 400);
    let (status, body) = c.post(&["3"]).await;
    assert_eq!(status, 400, "closed: {body}");

    // Not Engine.IO packets.
    let q = query("garbage");
    let (c, _) = Poller::open(&srv, &q, 3).await;
    c.connect_chat(&q).await;
    let (status, body) = http_raw(c.addr, "POST", &c.path, "", b"7:hello").await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = c.post(&["2"]).await;
    assert_eq!(status, 400, "the session is closed");

    // Over the payload limit, with a member to remove.
    let q = query("big");
    let (c, _) = Poller::open(&srv, &q, 4).await;
    c.connect_chat(&q).await;
    c.subscribe(room).await;
    let huge = format!("42/chat,[\"SEND_MESSAGE\",\"{}\"]", "x".repeat(2 << 20));
    let (status, body) = c.post(&[&huge]).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.to_string().contains("maxPayload"), "{body}");
    tokio::time::timeout(WAIT, async {
        loop {
            let members = srv.channel(room).await;
            if !members.to_string().contains("\"big\"") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the closed session's member left");
    srv.stop().await;
}

/// A polling client that stops polling is closed after the ping interval
/// and timeout and leaves its channels (one that keeps polling stays); its
/// next GET says why.
#[tokio::test]
async fn polling_session_of_a_silent_client_ends() {
    let srv = TestServer::start_with(|c| {
        c.channels.open_channels = vec!["*".into()];
        c.front_ends.socketio.socketio_ping_interval = Duration::from_millis(300);
        c.front_ends.socketio.socketio_ping_timeout = Duration::from_millis(300);
    })
    .await;
    let room = "presence.silent";
    let q = query("quiet");
    let (c, _) = Poller::open(&srv, &q, 4).await;
    c.connect_chat(&q).await;
    c.subscribe(room).await;
    // Polling (and answering pings) for longer than the timeout.
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        c.get().await;
    }
    assert!(srv.channel(room).await.to_string().contains("quiet"));
    // Silent: gone within the interval and timeout, and a bit.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!srv.channel(room).await.to_string().contains("quiet"));
    // The next GET learns why (the closing error, the close packet: the
    // client reconnects), the one after finds no session.
    let last = c.get().await;
    assert!(last[0].contains("connection.closing"), "{last:?}");
    assert_eq!(last.last().map(String::as_str), Some("1"), "{last:?}");
    let (status, _) = c.get_raw().await;
    assert_eq!(status, 400);
    srv.stop().await;
}

/// A polling 4.x client with its token in the CONNECT's `auth` payload
/// (socket.io-client's defaults with `auth: {token}`) is signed in on the
/// own engine.
#[tokio::test]
async fn polling_client_signs_in_with_the_auth_payload() {
    let srv = TestServer::start_open().await;
    let (c, _) = Poller::open(&srv, "tokenType=jwt", 4).await;
    let mut claims = json!({ "sub": "paula" });
    let auth = json!({ "token": sign(&mut claims) });
    assert_eq!(c.post(&[&format!("40/chat,{auth}")]).await.0, 200);
    let ack = c.until("40/chat").await;
    assert!(ack.starts_with("40/chat,{\"sid\":"), "{ack}");
    c.subscribe("presence.paula").await;
    let members = srv.channel("presence.paula").await;
    assert!(members.to_string().contains("paula"), "{members}");
    srv.stop().await;
}

/// A server that shuts down tells a polling client why in the GET it
/// holds: the `connection.closing` error and the Engine.IO close packet
/// `1`, after which socket.io-client reconnects (to another node).
#[tokio::test]
async fn a_server_shutting_down_answers_the_held_get_with_the_reason() {
    let srv = TestServer::start_open().await;
    let q = query("leaving");
    let (c, _) = Poller::open(&srv, &q, 4).await;
    c.connect_chat(&q).await;
    c.subscribe("presence.leaving").await;
    let held = {
        let (addr, path) = (c.addr, c.path.clone());
        tokio::spawn(async move { http_raw(addr, "GET", &path, "", b"").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    srv.stop().await;
    let (status, body) = held.await.expect("held GET");
    assert_eq!(status, 200, "{body}");
    let last = packets(4, &text_of(&body));
    assert!(
        last.iter().any(|p| p.contains("connection.closing")),
        "{last:?}"
    );
    assert_eq!(last.last().map(String::as_str), Some("1"), "{last:?}");
}
