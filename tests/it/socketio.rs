//! The Socket.IO front end over real sockets, with raw Engine.IO 3 and 4
//! text frames (what socket.io-client 1.x/2.x and 4.x put on the wire),
//! next to Hotsock clients and the HTTP API in the same channels.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::common::*;

/// A raw Socket.IO client on one namespace, speaking EIO3 (protocol 4,
/// like socket.io-client 1.7.3) or EIO4 (protocol 5, like 4.x).
struct Sio {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    eio: u8,
    nsp: String,
}

/// How a namespace CONNECT ended.
enum Connect {
    Ok(Box<Sio>),
    Refused(String),
}

fn jwt(claims: Value) -> String {
    let mut claims = claims;
    sign(&mut claims)
}

impl Sio {
    async fn open(
        srv: &TestServer,
        query: &str,
        eio: u8,
    ) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        let url = format!(
            "ws://{}/socket.io/?{query}&EIO={eio}&transport=websocket",
            srv.addr
        );
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("upgrade");
        ws
    }

    /// Connects to `/chat` the way the real clients do: EIO3 sends
    /// `40/chat?<query>` after the implicit `/` connect; EIO4 sends
    /// `40/chat,<auth>`.
    async fn connect(srv: &TestServer, query: &str, eio: u8, auth: Option<Value>) -> Connect {
        let ws = Self::open(srv, query, eio).await;
        let mut c = Sio {
            ws,
            eio,
            nsp: "/chat".into(),
        };
        let open = c.raw().await;
        assert!(open.starts_with("0{"), "open packet, got {open}");
        if eio == 3 {
            // Implicit connect to "/" (accepted or refused), then ours.
            let root = c.raw().await;
            assert!(root.starts_with("40") || root.starts_with("44"), "{root}");
            c.send_raw(&format!("40/chat?{query}")).await;
        } else {
            let auth = auth.map(|a| a.to_string()).unwrap_or_default();
            c.send_raw(&format!("40/chat,{auth}")).await;
        }
        loop {
            let f = c.raw().await;
            if f.starts_with("40/chat") {
                return Connect::Ok(Box::new(c));
            }
            if let Some(rest) = f.strip_prefix("44/chat,") {
                let v: Value = serde_json::from_str(rest).expect("connect error JSON");
                return Connect::Refused(v["message"].as_str().unwrap_or_default().to_string());
            }
        }
    }

    async fn connected(srv: &TestServer, query: &str, eio: u8) -> Sio {
        match Self::connect(srv, query, eio, None).await {
            Connect::Ok(c) => *c,
            Connect::Refused(why) => panic!("refused: {why}"),
        }
    }

    async fn send_raw(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.to_string().into()))
            .await
            .expect("send");
    }

    /// The next Engine.IO text packet, answering EIO4 pings.
    async fn raw(&mut self) -> String {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame within the timeout")
                .expect("stream open")
                .expect("frame");
            match msg {
                Message::Text(t) if t.as_str() == "2" && self.eio == 4 => {
                    self.send_raw("3").await;
                }
                Message::Text(t) => return t.to_string(),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    async fn emit(&mut self, event: &str, data: Value) {
        let nsp = self.nsp.clone();
        self.send_raw(&format!("42{nsp},{}", json!([event, data])))
            .await;
    }

    /// The next event on our namespace as (name, payload).
    async fn event(&mut self) -> (String, Value) {
        let prefix = format!("42{},", self.nsp);
        loop {
            let f = self.raw().await;
            if let Some(rest) = f.strip_prefix(&prefix) {
                let v: Value = serde_json::from_str(rest).expect("event JSON");
                return (v[0].as_str().unwrap_or_default().to_string(), v[1].clone());
            }
        }
    }

    /// The next event, which must be `name`.
    async fn expect(&mut self, name: &str) -> Value {
        let (ev, data) = self.event().await;
        assert_eq!(ev, name, "unexpected {ev} {data}");
        data
    }

    async fn subscribe(&mut self, channel: &str) -> Value {
        self.emit(
            "SUBSCRIBE_CHANNEL",
            json!({"channel": {"type": "topic", "_id": channel}}),
        )
        .await;
        self.expect("CHANNEL_SUBSCRIBED").await
    }

    /// Asserts that no event arrives within `ms`.
    async fn expect_none(&mut self, ms: u64) {
        let prefix = format!("42{},", self.nsp);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Text(t)))) => {
                    assert!(!t.starts_with(&prefix), "unexpected event {t}");
                }
                Ok(_) => {}
            }
        }
    }
}

fn query(claims: Value) -> String {
    format!("tokenType=jwt&token={}", jwt(claims))
}

/// Every channel open: these tests are about the protocol; the policy is
/// tested in tests/it/authorization.rs.
async fn start() -> TestServer {
    TestServer::start_open().await
}

#[tokio::test]
async fn eio3_connect_with_query_goes_through_the_shim() {
    let srv = start().await;
    let q = query(json!({"sub": "alice", "name": "Alice"}));
    let mut c = Sio::connect(&srv, &q, 3, None).await;
    let alice = match c {
        Connect::Ok(ref mut a) => a,
        Connect::Refused(ref why) => panic!("refused: {why}"),
    };
    // Client-driven heartbeat (EIO3).
    alice.send_raw("2").await;
    assert_eq!(alice.raw().await, "3");
    let sub = alice.subscribe("t1").await;
    assert_eq!(sub["channel"], json!({"_id": "t1", "type": "topic"}));
    assert!(sub["sessionId"].as_str().is_some_and(|s| !s.is_empty()));
    // 2.x sends a trailing comma after the query.
    let q2 = query(json!({"sub": "bob"}));
    let mut ws = Sio::open(&srv, &q2, 3).await;
    let mut bob = Sio {
        ws,
        eio: 3,
        nsp: "/chat".into(),
    };
    assert!(bob.raw().await.starts_with("0{"));
    assert_eq!(bob.raw().await, "40");
    bob.send_raw(&format!("40/chat?{q2},")).await;
    let ack = bob.raw().await;
    assert!(ack == "40/chat" || ack == "40/chat,", "{ack}");
    bob.subscribe("t1").await;
    let online = alice.expect("PRESENCE_EVENT_RESPONSE").await;
    assert_eq!(online["category"], "app.event.presence.party.online");
    assert_eq!(online["sender"]["_id"], "bob");
    ws = bob.ws;
    drop(ws);
    let leaves = alice.expect("PRESENCE_EVENT_RESPONSE").await;
    assert_eq!(leaves["category"], "app.event.presence.party.leaves");
    assert_eq!(leaves["sender"]["_id"], "bob");
    srv.stop().await;
}

#[tokio::test]
async fn bad_tokens_are_refused_with_a_reason() {
    let srv = start().await;
    for eio in [3, 4] {
        match Sio::connect(&srv, "tokenType=jwt&token=garbage", eio, None).await {
            Connect::Refused(why) => assert!(why.contains("not authorized"), "{why}"),
            Connect::Ok(_) => panic!("EIO{eio}: a bad token was accepted"),
        }
        match Sio::connect(&srv, "EIO_only=1", eio, None).await {
            Connect::Refused(why) => assert!(why.contains("no token"), "{why}"),
            Connect::Ok(_) => panic!("EIO{eio}: no token was accepted"),
        }
    }
    let expired = query(json!({"sub": "x", "exp": 1000}));
    match Sio::connect(&srv, &expired, 4, None).await {
        Connect::Refused(why) => assert!(why.contains("expired"), "{why}"),
        Connect::Ok(_) => panic!("an expired token was accepted"),
    }
    match Sio::connect(&srv, "tokenType=oauth&token=abc", 4, None).await {
        Connect::Refused(why) => assert!(why.contains("oauth-introspection-url"), "{why}"),
        Connect::Ok(_) => panic!("oauth without introspection was accepted"),
    }
    // The 4.x auth payload works without a query.
    let auth = json!({"token": jwt(json!({"uid": "carol"})), "tokenType": "jwt"});
    assert!(matches!(
        Sio::connect(&srv, "x=1", 4, Some(auth)).await,
        Connect::Ok(_)
    ));
    srv.stop().await;
}

#[tokio::test]
async fn socketio_and_hotsock_share_one_channel() {
    let srv = start().await;
    let room = "presence.room1";
    let mut jim = srv.connect(user("jim", json!({"name": "Jim"}))).await;
    jim.subscribe(room).await;

    let mut alice = Sio::connected(&srv, &query(json!({"sub": "alice", "name": "Alice"})), 4).await;
    alice.subscribe(room).await;

    // Hotsock sees the Socket.IO member join, with its display data as umd.
    let added = jim.expect("hotsock.memberAdded").await;
    assert_eq!(added["data"]["member"]["uid"], "alice");
    assert_eq!(added["data"]["member"]["umd"]["displayname"], "Alice");

    // request.parties is answered by the server for the Hotsock member.
    alice
        .emit(
            "SEND_PRESENCE_EVENT",
            json!({"category": "app.event.presence.request.parties", "topicId": room}),
        )
        .await;
    let party = alice.expect("PRESENCE_EVENT_RESPONSE").await;
    assert_eq!(party["category"], "app.event.presence.party.online");
    assert_eq!(party["sender"]["_id"], "jim");
    assert_eq!(party["sender"]["displayname"], "Jim");

    // Hotsock → Socket.IO message.
    jim.send(json!({"channel": room, "event": "chat", "data": "Hello!"}))
        .await;
    let msg = alice.expect("MESSAGE_SENT").await;
    assert_eq!(msg["content"], json!({"bodyText": "Hello!"}));
    assert_eq!(msg["category"], "chat");
    assert_eq!(msg["topicId"], room);
    assert_eq!(msg["sender"]["_id"], "jim");

    // Socket.IO → Hotsock message; the sender comes from the token.
    alice
        .emit(
            "SEND_MESSAGE",
            json!({"category": "chat", "topicId": room, "content": {"bodyText": "hi jim"},
                   "sender": {"_id": "mallory"}, "loopbackMetadata": 7}),
        )
        .await;
    let own = alice.expect("MESSAGE_SENT").await;
    assert_eq!(own["loopbackMetadata"], 7);
    assert_eq!(own["sender"]["_id"], "alice");
    let got = jim.next().await;
    assert_eq!(got["event"], "chat");
    assert_eq!(got["channel"], room);
    assert_eq!(got["data"]["content"]["bodyText"], "hi jim");
    assert_eq!(got["data"]["sender"]["_id"], "alice");
    assert!(got["data"].get("loopbackMetadata").is_none(), "{got}");
    assert_eq!(got["meta"]["uid"], "alice");

    // HTTP API publish reaches both; the member list has both.
    let (status, _) = srv
        .http(
            "POST",
            "/api/publish",
            Some(json!({"channel": room, "event": "announcement", "data": {"bodyText": "from the server"}})),
        )
        .await;
    assert!(status == 200 || status == 202, "{status}");
    let pubd = alice.expect("MESSAGE_SENT").await;
    assert_eq!(pubd["category"], "announcement");
    assert_eq!(pubd["content"]["bodyText"], "from the server");
    assert_eq!(pubd["sender"]["type"], "system");
    assert_eq!(jim.next().await["event"], "announcement");
    let (status, info) = srv
        .http("GET", &format!("/api/channels/{room}"), None)
        .await;
    assert_eq!(status, 200);
    let uids: Vec<&str> = info["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["uid"].as_str())
        .collect();
    assert_eq!(uids, ["jim", "alice"], "{info}");

    // A Hotsock member joining and leaving: party.online / party.leaves.
    let mut dwight = srv.connect(user("dwight", json!({"name": "Dwight"}))).await;
    dwight.subscribe(room).await;
    let on = alice.expect("PRESENCE_EVENT_RESPONSE").await;
    assert_eq!(
        (on["category"].as_str(), on["sender"]["_id"].as_str()),
        (Some("app.event.presence.party.online"), Some("dwight"))
    );
    jim.expect("hotsock.memberAdded").await;
    dwight.close().await;
    let off = alice.expect("PRESENCE_EVENT_RESPONSE").await;
    assert_eq!(
        (off["category"].as_str(), off["sender"]["_id"].as_str()),
        (Some("app.event.presence.party.leaves"), Some("dwight"))
    );
    jim.expect("hotsock.memberRemoved").await;

    // party.online with content updates the member data Hotsock sees.
    alice
        .emit(
            "SEND_PRESENCE_EVENT",
            json!({"category": "app.event.presence.party.online", "topicId": room,
                   "content": {"idle": true, "role": "admin"}}),
        )
        .await;
    let upd = jim.expect("hotsock.memberUpdated").await;
    assert_eq!(upd["data"]["member"]["umd"]["presence"]["idle"], true);
    // party.leaves: no longer a member, still subscribed to messages.
    alice
        .emit(
            "SEND_PRESENCE_EVENT",
            json!({"category": "app.event.presence.party.leaves", "topicId": room}),
        )
        .await;
    let rem = jim.expect("hotsock.memberRemoved").await;
    assert_eq!(rem["data"]["member"]["uid"], "alice");
    jim.send(json!({"channel": room, "event": "chat", "data": "still there?"}))
        .await;
    loop {
        let (ev, data) = alice.event().await;
        if ev == "MESSAGE_SENT" {
            assert_eq!(data["content"]["bodyText"], "still there?");
            break;
        }
    }
    alice
        .emit(
            "SEND_PRESENCE_EVENT",
            json!({"category": "app.event.presence.party.online", "topicId": room}),
        )
        .await;
    assert_eq!(
        jim.expect("hotsock.memberAdded").await["data"]["member"]["uid"],
        "alice"
    );

    // The Socket.IO client vanishes: Hotsock sees it leave.
    drop(alice);
    let gone = jim.expect("hotsock.memberRemoved").await;
    assert_eq!(gone["data"]["member"]["uid"], "alice");
    srv.stop().await;
}

#[tokio::test]
async fn bad_input_gets_errors_and_the_server_stays_up() {
    let srv = start().await;
    let mut c = Sio::connected(&srv, &query(json!({"sub": "eve"})), 4).await;
    c.emit("SUBSCRIBE_CHANNEL", json!("t1")).await;
    let f = c.expect("SUBSCRIBE_CHANNEL_FAILED").await;
    assert_eq!(f["error"]["code"], "invalid.parameters");
    c.emit("SUBSCRIBE_CHANNEL", json!({"channel": {"_id": 42}}))
        .await;
    let f = c.expect("SUBSCRIBE_CHANNEL_FAILED").await;
    assert!(
        f["error"]["message"]
            .as_str()
            .unwrap()
            .contains("must be a string"),
        "{f}"
    );
    c.emit("SEND_MESSAGE", json!({"topicId": "t1", "content": {}}))
        .await;
    let f = c.expect("SEND_MESSAGE_FAILED").await;
    assert_eq!(
        f["error"]["code"],
        "app.event.channel.subscription.required"
    );
    c.emit(
        "SEND_PRESENCE_EVENT",
        json!({"category": "party.online", "topicId": "t1"}),
    )
    .await;
    let f = c.expect("PRESENCE_EVENT_RESPONSE").await;
    assert_eq!(f["category"], "app.event.presence.media.session.invalid");
    assert_eq!(
        f["error"]["code"],
        "app.event.channel.subscription.required"
    );
    c.emit("UNSUBSCRIBE_CHANNEL", json!({"channel": {"_id": "t1"}}))
        .await;
    assert_eq!(
        c.expect("error").await["code"],
        "app.event.channel.subscription.required"
    );
    c.emit("WHAT", json!({})).await;
    assert_eq!(c.expect("error").await["code"], "unknown.event");
    // An event with no argument at all.
    c.send_raw("42/chat,[\"SEND_MESSAGE\"]").await;
    assert_eq!(
        c.expect("SEND_MESSAGE_FAILED").await["error"]["code"],
        "invalid.parameters"
    );

    // A payload over the message limit (128 KiB by default) but under the
    // WebSocket limit: a SEND_MESSAGE_FAILED with the reason.
    c.subscribe("t1").await;
    let big = "x".repeat(200 * 1024);
    c.emit(
        "SEND_MESSAGE",
        json!({"topicId": "t1", "content": {"bodyText": big}}),
    )
    .await;
    let f = c.expect("SEND_MESSAGE_FAILED").await;
    assert_eq!(f["error"]["code"], "payload.too.large");
    assert!(
        f["error"]["message"].as_str().unwrap().contains("bytes"),
        "{f}"
    );

    // Over the 1 MiB WebSocket limit: that connection is closed...
    let mut huge = Sio::connected(&srv, &query(json!({"sub": "hugo"})), 4).await;
    let text = format!("42/chat,[\"SEND_MESSAGE\",\"{}\"]", "y".repeat(1100 * 1024));
    let _ = huge.ws.send(Message::Text(text.into())).await;
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match huge.ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "an oversized frame must close the connection"
    );
    // ...the other connection and the server go on.
    c.emit(
        "SEND_MESSAGE",
        json!({"topicId": "t1", "content": {"bodyText": "ok"}}),
    )
    .await;
    assert_eq!(c.expect("MESSAGE_SENT").await["content"]["bodyText"], "ok");
    let mut again = Sio::connected(&srv, &query(json!({"sub": "hugo"})), 3).await;
    again.subscribe("t1").await;
    srv.stop().await;
}

#[tokio::test]
async fn two_sockets_of_one_user_are_one_member() {
    let srv = start().await;
    let mut watcher = Sio::connected(&srv, &query(json!({"sub": "w"})), 4).await;
    watcher.subscribe("room").await;
    let mut a1 = Sio::connected(&srv, &query(json!({"sub": "amy"})), 4).await;
    a1.subscribe("room").await;
    assert_eq!(
        watcher.expect("PRESENCE_EVENT_RESPONSE").await["sender"]["_id"],
        "amy"
    );
    let mut a2 = Sio::connected(&srv, &query(json!({"sub": "amy"})), 3).await;
    a2.subscribe("room").await;
    drop(a1);
    watcher.expect_none(300).await;
    let (_, info) = srv.http("GET", "/api/channels/room", None).await;
    assert_eq!(info["members"].as_array().map(Vec::len), Some(2), "{info}");
    drop(a2);
    let leaves = watcher.expect("PRESENCE_EVENT_RESPONSE").await;
    assert_eq!(leaves["category"], "app.event.presence.party.leaves");
    assert_eq!(leaves["sender"]["_id"], "amy");
    srv.stop().await;
}

/// A tiny RFC 7662 introspection endpoint: `good-*` tokens are active for
/// the user after the dash; everything else is inactive. Counts requests
/// and checks the client's Basic credentials.
async fn introspection_server() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read head and body (Content-Length).
                loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            counter.fetch_add(1, Ordering::SeqCst);
                            // "rs:introspect" in Basic.
                            let authed = head.contains("Authorization: Basic cnM6aW50cm9zcGVjdA==")
                                || head.contains("authorization: Basic cnM6aW50cm9zcGVjdA==");
                            let token = body
                                .split('&')
                                .find_map(|p| p.strip_prefix("token="))
                                .unwrap_or("");
                            let answer = match token.strip_prefix("good-") {
                                Some(user) if authed => {
                                    json!({"active": true, "sub": user, "name": "OAuth User", "exp": rollcall::time::unix_now() + 600})
                                }
                                _ => json!({"active": false}),
                            }
                            .to_string();
                            let resp = format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                                answer.len()
                            );
                            let _ = sock.write_all(resp.as_bytes()).await;
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, hits)
}

#[tokio::test]
async fn oauth_tokens_are_introspected_and_cached() {
    let (idp, hits) = introspection_server().await;
    let srv = TestServer::start_with(|cfg| {
        cfg.channels.open_channels = vec!["*".into()];
        cfg.front_ends.socketio.oauth_introspection_url =
            Some(format!("http://rs:introspect@{idp}/introspect"));
    })
    .await;
    let mut o = Sio::connected(&srv, "token=good-olivia&tokenType=oauth", 4).await;
    let sub = o.subscribe("presence.o").await;
    assert_eq!(sub["channel"]["_id"], "presence.o");
    let (_, info) = srv.http("GET", "/api/channels/presence.o", None).await;
    assert_eq!(info["members"][0]["uid"], "olivia");
    assert_eq!(info["members"][0]["umd"]["displayname"], "OAuth User");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // EIO3 connects to "/" and "/chat" with the same token: served from the cache.
    let _again = Sio::connected(&srv, "tokenType=oauth&token=good-olivia", 3).await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "second check must hit the cache"
    );
    match Sio::connect(&srv, "tokenType=oauth&token=revoked", 4, None).await {
        Connect::Refused(why) => assert!(why.contains("not active"), "{why}"),
        Connect::Ok(_) => panic!("an inactive token was accepted"),
    }
    srv.stop().await;
}

#[tokio::test]
async fn unreachable_introspection_says_so() {
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let srv = TestServer::start_with(|cfg| {
        cfg.channels.open_channels = vec!["*".into()];
        cfg.front_ends.socketio.oauth_introspection_url =
            Some(format!("http://127.0.0.1:{port}/introspect"));
    })
    .await;
    match Sio::connect(&srv, "tokenType=oauth&token=x", 4, None).await {
        Connect::Refused(why) => assert!(why.contains("could not be checked"), "{why}"),
        Connect::Ok(_) => panic!("accepted without introspection"),
    }
    srv.stop().await;
}

#[tokio::test]
async fn a_bad_introspection_url_is_a_startup_error() {
    let mut config = crate::common::test_config(rollcall::config::Config::default());
    config.front_ends.socketio.oauth_introspection_url =
        Some("ftp://idp.example/introspect".into());
    match rollcall::server::start(&config).await {
        Err(e) => {
            assert!(
                e.to_string()
                    .contains("must start with http:// or https://"),
                "{e}"
            );
            assert!(
                matches!(e, rollcall::server::StartError::Settings(_)),
                "{e:?}"
            );
        }
        Ok(_) => panic!("an ftp introspection URL must be refused at start"),
    }
}

/// `[socketio] ping-interval` / `ping-timeout` (`--socketio-ping-*`) reach
/// the Engine.IO open packet, which is how clients learn them.
#[tokio::test]
async fn engine_io_ping_timings_come_from_the_socketio_section() {
    let file = std::env::temp_dir().join(format!("rollcall-sio-ping-{}.toml", std::process::id()));
    std::fs::write(
        &file,
        "[socketio]\nping-interval = \"1500ms\"\nping-timeout = \"700ms\"\n",
    )
    .expect("write the config file");
    let srv = TestServer::start_from_file(&file).await;
    let _ = std::fs::remove_file(&file);
    let mut client = srv
        .connect_path("/socket.io/?EIO=4&transport=websocket")
        .await
        .expect("Engine.IO upgrade accepted");
    let open = client.next_text_within(WAIT).await;
    let handshake: Value =
        serde_json::from_str(open.strip_prefix('0').expect("an Engine.IO open packet"))
            .expect("JSON");
    assert_eq!(handshake["pingInterval"], 1500, "{open}");
    assert_eq!(handshake["pingTimeout"], 700, "{open}");
    let bad = std::env::temp_dir().join(format!("rollcall-sio-bad-{}.toml", std::process::id()));
    std::fs::write(&bad, "[socketio]\nping-interval = \"0s\"\n").expect("write");
    let err = rollcall::config::Config::from_file(&bad).expect_err("a zero interval is refused");
    let _ = std::fs::remove_file(&bad);
    assert!(err.to_string().contains("socketio.ping-interval"), "{err}");
    assert!(err.to_string().contains("longer than 0s"), "{err}");
    srv.stop().await;
}

/// PRESENCE_EVENT_RESPONSE carries what the Avaya spec lists: `sender`,
/// `content` with the announcing socket's `sessionId` and the `attendee`,
/// `subscribeTime`, and `receivers` on the answers to `request.parties`
/// (addressed to the asking socket only).
#[tokio::test]
async fn presence_responses_carry_session_attendee_subscribe_time_and_receivers() {
    let srv = start().await;
    let room = "presence.avaya";
    let mut ann = Sio::connected(&srv, &query(json!({"sub": "ann", "name": "Ann"})), 4).await;
    ann.subscribe(room).await;
    let mut bob = Sio::connected(&srv, &query(json!({"sub": "bob", "name": "Bob"})), 3).await;
    let bob_session = bob.subscribe(room).await["sessionId"].clone();
    assert!(bob_session.is_string(), "{bob_session}");
    // The subscribe itself: the same data for every socket of a user, so
    // no session id yet.
    let joined = ann.expect("PRESENCE_EVENT_RESPONSE").await;
    assert_eq!(joined["category"], "app.event.presence.party.online");
    assert_eq!(
        joined["content"]["attendee"],
        json!({"attendeeType": "userId", "attendee": "bob"})
    );
    assert!(joined.get("receivers").is_none(), "{joined}");

    let content = json!({"desktop": true, "idle": false, "offline": false, "role": "guest",
        "mediaSession": {"audio": true, "connected": true, "phone": false,
                         "screenshare": false, "selfMuted": false, "video": false}});
    bob.emit(
        "SEND_PRESENCE_EVENT",
        json!({"category": "app.event.presence.party.online", "topicId": room, "content": content}),
    )
    .await;
    let online = ann.expect("PRESENCE_EVENT_RESPONSE").await;
    assert_eq!(online["category"], "app.event.presence.party.online");
    assert_eq!(online["topicId"], room);
    assert_eq!(online["sender"]["_id"], "bob");
    assert_eq!(online["sender"]["displayname"], "Bob");
    assert_eq!(online["content"]["sessionId"], bob_session, "{online}");
    assert_eq!(online["content"]["role"], "guest");
    assert_eq!(online["content"]["mediaSession"]["audio"], true);
    assert_eq!(online["content"]["attendee"]["attendee"], "bob");
    let since = online["subscribeTime"].as_str().expect("subscribeTime");
    assert!(
        since.len() == 20 && since.ends_with('Z'),
        "RFC 3339: {since}"
    );
    assert!(online.get("receivers").is_none(), "{online}");
    bob.expect("PRESENCE_EVENT_RESPONSE").await;

    ann.emit(
        "SEND_PRESENCE_EVENT",
        json!({"category": "app.event.presence.request.parties", "topicId": room}),
    )
    .await;
    let answer = ann.expect("PRESENCE_EVENT_RESPONSE").await;
    assert_eq!(answer["sender"]["_id"], "bob");
    assert_eq!(answer["content"]["sessionId"], bob_session);
    assert_eq!(answer["receivers"][0]["_id"], "ann", "{answer}");
    assert_eq!(answer["receivers"][0]["displayname"], "Ann");
    bob.expect_none(200).await;
    srv.stop().await;
}

/// `SUBSCRIBE_CHANNEL` with `"announce": false` watches a topic: the socket
/// gets the parties' events and messages but is no party until it sends
/// its own `party.online`.
#[tokio::test]
async fn a_socket_can_watch_a_topic_without_announcing_itself() {
    let srv = start().await;
    let room = "presence.watched";
    let mut ann = Sio::connected(&srv, &query(json!({"sub": "ann"})), 4).await;
    ann.subscribe(room).await;
    let mut eve = Sio::connected(&srv, &query(json!({"sub": "eve"})), 4).await;
    eve.emit(
        "SUBSCRIBE_CHANNEL",
        json!({"channel": {"type": "topic", "_id": room}, "announce": false}),
    )
    .await;
    eve.expect("CHANNEL_SUBSCRIBED").await;
    ann.expect_none(300).await;
    let (_, info) = srv
        .http("GET", &format!("/api/channels/{room}"), None)
        .await;
    assert_eq!(info["members"].as_array().map(Vec::len), Some(1), "{info}");

    ann.emit(
        "SEND_MESSAGE",
        json!({"category": "chat", "topicId": room, "content": {"bodyText": "hello"}}),
    )
    .await;
    ann.expect("MESSAGE_SENT").await;
    assert_eq!(
        eve.expect("MESSAGE_SENT").await["content"]["bodyText"],
        "hello"
    );
    eve.emit(
        "SEND_PRESENCE_EVENT",
        json!({"category": "app.event.presence.request.parties", "topicId": room}),
    )
    .await;
    assert_eq!(
        eve.expect("PRESENCE_EVENT_RESPONSE").await["sender"]["_id"],
        "ann"
    );

    eve.emit(
        "SEND_PRESENCE_EVENT",
        json!({"category": "app.event.presence.party.online", "topicId": room}),
    )
    .await;
    let joined = ann.expect("PRESENCE_EVENT_RESPONSE").await;
    assert_eq!(joined["category"], "app.event.presence.party.online");
    assert_eq!(joined["sender"]["_id"], "eve");
    let (_, info) = srv
        .http("GET", &format!("/api/channels/{room}"), None)
        .await;
    assert_eq!(info["members"].as_array().map(Vec::len), Some(2), "{info}");
    srv.stop().await;
}

/// SEND_MEDIA_SESSION_EVENTS is relayed to the topic as
/// MEDIA_SESSION_RESPONSE (the sender gets its copy too); other front ends
/// see the core event `media.session.<category>`; a socket that is not
/// subscribed gets the refusal as MEDIA_SESSION_RESPONSE.
#[tokio::test]
async fn media_session_events_are_relayed_to_the_topic() {
    let srv = start().await;
    let room = "presence.meeting";
    let mut jim = srv.connect(user("jim", json!({"name": "Jim"}))).await;
    jim.subscribe(room).await;
    let mut ann = Sio::connected(&srv, &query(json!({"sub": "ann"})), 4).await;
    ann.subscribe(room).await;
    let mut bob = Sio::connected(&srv, &query(json!({"sub": "bob", "name": "Bob"})), 3).await;
    bob.subscribe(room).await;
    ann.expect("PRESENCE_EVENT_RESPONSE").await;
    jim.expect("hotsock.memberAdded").await;
    jim.expect("hotsock.memberAdded").await;

    let content = json!({"mediaSession": {"audio": true, "video": false}, "streamId": "st-1"});
    bob.emit(
        "SEND_MEDIA_SESSION_EVENTS",
        json!({"category": "trackstatus", "content": content, "topicId": room}),
    )
    .await;
    let got = ann.expect("MEDIA_SESSION_RESPONSE").await;
    assert_eq!(got["category"], "trackstatus");
    assert_eq!(got["topicId"], room);
    assert_eq!(got["content"], content);
    assert_eq!(got["sender"]["_id"], "bob");
    assert_eq!(got["sender"]["displayname"], "Bob");
    assert!(
        got["_id"].is_string() && got["created"].is_string(),
        "{got}"
    );
    let own = bob.expect("MEDIA_SESSION_RESPONSE").await;
    assert_eq!(own["_id"], got["_id"]);
    let hotsock = jim.next().await;
    assert_eq!(hotsock["event"], "media.session.trackstatus", "{hotsock}");
    assert_eq!(hotsock["data"]["content"], content);

    let mut eve = Sio::connected(&srv, &query(json!({"sub": "eve"})), 4).await;
    eve.emit(
        "SEND_MEDIA_SESSION_EVENTS",
        json!({"category": "video.end", "content": {}, "topicId": room}),
    )
    .await;
    let refused = eve.expect("MEDIA_SESSION_RESPONSE").await;
    assert_eq!(
        refused["category"],
        "app.event.presence.media.session.invalid"
    );
    assert_eq!(
        refused["error"]["code"], "app.event.channel.subscription.required",
        "{refused}"
    );
    ann.expect_none(200).await;
    srv.stop().await;
}

/// `--write-delay` on Socket.IO: broadcasts wait (in order) so that they
/// are written together; a reply is never held and ends the wait of what
/// is queued before it.
#[tokio::test]
async fn the_write_delay_holds_broadcasts_but_not_replies() {
    const DELAY: Duration = Duration::from_secs(3);
    let srv = TestServer::start_with(|c| {
        c.channels.open_channels = vec!["*".into()];
        c.limits.write_delay = DELAY;
    })
    .await;
    let room = "delayed";
    let mut ann = Sio::connected(&srv, &query(json!({"sub": "ann"})), 4).await;
    let asked = std::time::Instant::now();
    ann.subscribe(room).await;
    assert!(
        asked.elapsed() < DELAY - Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );

    let publish = |i: usize| {
        let srv = &srv;
        async move {
            let body =
                json!({"channel": room, "event": "news", "data": {"bodyText": format!("m{i}")}});
            let (status, _) = srv.http("POST", "/api/publish", Some(body)).await;
            assert_eq!(status, 202);
        }
    };
    for i in 0..3 {
        publish(i).await;
    }
    ann.expect_none(1000).await;
    for i in 0..3 {
        let got = ann.expect("MESSAGE_SENT").await;
        assert_eq!(got["content"]["bodyText"], format!("m{i}"), "{got}");
    }

    publish(3).await;
    let asked = std::time::Instant::now();
    ann.emit(
        "SUBSCRIBE_CHANNEL",
        json!({"channel": {"type": "topic", "_id": "delayed.too"}}),
    )
    .await;
    let held = ann.expect("MESSAGE_SENT").await;
    assert_eq!(held["content"]["bodyText"], "m3", "{held}");
    ann.expect("CHANNEL_SUBSCRIBED").await;
    assert!(
        asked.elapsed() < DELAY - Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    srv.stop().await;
}

/// The close frame that ends `ws` (code and reason), skipping other frames.
async fn close_of(ws: &mut WebSocketStream<MaybeTlsStream<TcpStream>>) -> (u16, String) {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("the connection ends within the timeout");
        match msg {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (frame.code.into(), frame.reason.to_string());
            }
            Some(Ok(_)) => {}
            other => panic!("ended without a close frame: {other:?}"),
        }
    }
}

/// A WebSocket opened straight away with the token in the query runs on
/// rollcall's own Engine.IO: no upgrades offered, the server's `2` pings
/// at the configured interval, and a client that answers nothing is closed
/// with 1001 after the interval and timeout.
#[tokio::test]
async fn own_engine_pings_and_closes_a_silent_client() {
    let srv = TestServer::start_with(|c| {
        c.channels.open_channels = vec!["*".into()];
        c.front_ends.socketio.socketio_ping_interval = Duration::from_millis(400);
        c.front_ends.socketio.socketio_ping_timeout = Duration::from_millis(400);
    })
    .await;
    let mut ws = Sio::open(&srv, &query(json!({"sub": "pia"})), 4).await;
    let open = match ws.next().await {
        Some(Ok(Message::Text(t))) => t.to_string(),
        other => panic!("expected the open packet, got {other:?}"),
    };
    let handshake: Value = serde_json::from_str(&open[1..]).expect("open JSON");
    assert_eq!(handshake["upgrades"], json!([]), "{open}");
    assert_eq!(handshake["pingInterval"], 400, "{open}");
    // Answered pings keep the connection open past the timeout.
    let started = tokio::time::Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_millis(2000) {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "2" => {
                pings += 1;
                ws.send(Message::Text("3".into())).await.expect("pong");
            }
            Ok(Some(Ok(Message::Close(frame)))) => panic!("closed while answering: {frame:?}"),
            Ok(Some(Ok(_))) => {}
            other => panic!("connection lost: {other:?}"),
        }
    }
    assert!(pings >= 2, "{pings} pings in 2 s at a 400 ms interval");
    // Silent from here on: closed as gone.
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, 1001, "{reason}");
    assert!(reason.contains("idle"), "{reason}");
    srv.stop().await;
}

/// On one connection: a DISCONNECT leaves the namespace and its channels,
/// a CONNECT joins again; a second namespace, an unknown one and another
/// token in `auth` are refused with CONNECT_ERRORs; a binary event closes
/// the connection with 1003 and a malformed packet with 1007.
#[tokio::test]
async fn own_engine_namespaces_and_refusals() {
    let srv = start().await;
    let room = "presence.again";
    let mut watcher = Sio::connected(&srv, &query(json!({"sub": "wat"})), 4).await;
    watcher.subscribe(room).await;
    let mut ada = Sio::connected(&srv, &query(json!({"sub": "ada"})), 4).await;
    ada.subscribe(room).await;
    let online = watcher.expect("PRESENCE_EVENT_RESPONSE").await;
    assert_eq!(online["category"], "app.event.presence.party.online");
    ada.send_raw("41/chat,").await;
    let leaves = watcher.expect("PRESENCE_EVENT_RESPONSE").await;
    assert_eq!(leaves["category"], "app.event.presence.party.leaves");
    assert_eq!(leaves["sender"]["_id"], "ada");
    ada.send_raw("40/chat,").await;
    let ack = ada.raw().await;
    assert!(ack.starts_with("40/chat,{\"sid\":"), "{ack}");
    ada.subscribe(room).await;
    let online = watcher.expect("PRESENCE_EVENT_RESPONSE").await;
    assert_eq!(online["category"], "app.event.presence.party.online");

    ada.send_raw("40").await;
    let refused = ada.raw().await;
    assert!(
        refused.starts_with("44{") && refused.contains("/chat"),
        "{refused}"
    );
    ada.send_raw("40/other,").await;
    assert_eq!(
        ada.raw().await,
        r#"44/other,{"message":"Invalid namespace"}"#
    );
    let other = json!({"token": jwt(json!({"sub": "mallory"}))});
    ada.send_raw(&format!("40/chat,{other}")).await;
    let refused = ada.raw().await;
    assert!(
        refused.starts_with("44/chat,") && refused.contains("token"),
        "{refused}"
    );
    // Still connected, as ada.
    ada.emit(
        "SEND_MESSAGE",
        json!({"topicId": room, "content": {"bodyText": "hi"}}),
    )
    .await;
    assert_eq!(ada.expect("MESSAGE_SENT").await["sender"]["_id"], "ada");

    ada.send_raw(r#"451-/chat,["SEND_MESSAGE",{"_placeholder":true,"num":0}]"#)
        .await;
    let (code, reason) = close_of(&mut ada.ws).await;
    assert_eq!(code, 1003, "{reason}");
    assert!(reason.contains("binary"), "{reason}");

    let mut eve = Sio::connected(&srv, &query(json!({"sub": "eve"})), 4).await;
    eve.send_raw("hello").await;
    let (code, reason) = close_of(&mut eve.ws).await;
    assert_eq!(code, 1007, "{reason}");
    assert!(reason.contains("Engine.IO"), "{reason}");
    srv.stop().await;
}

/// A 4.x client with its token only in the CONNECT's `auth` payload (the
/// way socket.io recommends) runs on the own engine: a refused token gets
/// a CONNECT_ERROR with the reason and the client may try again on the
/// same connection; signed in, it is a party like any other.
#[tokio::test]
async fn own_engine_signs_in_with_the_auth_payload() {
    let srv = start().await;
    let room = "presence.authed";
    let mut watcher = Sio::connected(&srv, &query(json!({"sub": "wat"})), 4).await;
    watcher.subscribe(room).await;

    let ws = Sio::open(&srv, "tokenType=jwt", 4).await;
    let mut c = Sio {
        ws,
        eio: 4,
        nsp: "/chat".into(),
    };
    assert!(c.raw().await.starts_with("0{"));
    c.send_raw("40/chat,{}").await;
    let refused = c.raw().await;
    assert!(
        refused.starts_with("44/chat,") && refused.contains("no token"),
        "{refused}"
    );
    c.send_raw(r#"40/chat,{"token":"not.a.jwt"}"#).await;
    let refused = c.raw().await;
    assert!(
        refused.starts_with("44/chat,") && refused.contains("not authorized"),
        "{refused}"
    );
    // Events before a namespace is connected are not handled.
    c.emit(
        "SUBSCRIBE_CHANNEL",
        json!({"channel": {"type": "topic", "_id": room}}),
    )
    .await;
    let auth = json!({"token": jwt(json!({"sub": "authy", "name": "Authy"})), "tokenType": "jwt"});
    c.send_raw(&format!("40/chat,{auth}")).await;
    let ack = c.raw().await;
    assert!(ack.starts_with("40/chat,{\"sid\":"), "{ack}");
    c.subscribe(room).await;
    let online = watcher.expect("PRESENCE_EVENT_RESPONSE").await;
    assert_eq!(online["category"], "app.event.presence.party.online");
    assert_eq!(online["sender"]["_id"], "authy");
    // Another token on the same connection is refused.
    let other = json!({"token": jwt(json!({"sub": "mallory"}))});
    c.send_raw(&format!("40/chat,{other}")).await;
    let refused = c.raw().await;
    assert!(refused.starts_with("44/chat,"), "{refused}");
    c.emit(
        "SEND_MESSAGE",
        json!({"topicId": room, "content": {"bodyText": "signed"}}),
    )
    .await;
    assert_eq!(c.expect("MESSAGE_SENT").await["sender"]["_id"], "authy");
    let members = srv.channel(room).await;
    assert!(members.to_string().contains("authy"), "{members}");
    srv.stop().await;
}

/// An Engine.IO 3 client is connected to `/` without asking and may use
/// it: events on `/` are answered on `/`.
#[tokio::test]
async fn own_engine_serves_the_implicit_root_namespace_of_eio3() {
    let srv = start().await;
    let ws = Sio::open(&srv, &query(json!({"sub": "root"})), 3).await;
    let mut c = Sio {
        ws,
        eio: 3,
        nsp: String::new(),
    };
    assert!(c.raw().await.starts_with("0{"));
    assert_eq!(c.raw().await, "40");
    c.send_raw(r#"42["SUBSCRIBE_CHANNEL",{"channel":{"_id":"rooted"}}]"#)
        .await;
    let reply = c.raw().await;
    assert!(reply.starts_with(r#"42["CHANNEL_SUBSCRIBED","#), "{reply}");
    c.send_raw("2").await;
    assert_eq!(c.raw().await, "3");
    srv.stop().await;
}
