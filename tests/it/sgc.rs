//! The sgc Presence front end over real sockets: session, members,
//! channels, publish, get@members, invitations, errors, acknowledgments,
//! base64, lenient frames, tokens, and sgc + Hotsock in one channel.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::common::*;

const SUBPROTOCOL: &str = "presence.esegece.com";

/// A client of the sgc endpoint, speaking the subprotocol.
struct Sgc {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The session id (= member id) from the session message.
    id: String,
}

/// Opens `/sgc<query>` offering the subprotocol and reads the session
/// message; Err(status) if refused.
async fn open(srv: &TestServer, query: &str) -> Result<Sgc, u16> {
    let mut c = open_ws(srv, query).await?;
    let session = c.expect("sgc@presence@session").await;
    c.id = session["message"]["text"]
        .as_str()
        .expect("session id")
        .to_string();
    assert!(!c.id.is_empty());
    Ok(c)
}

/// Opens `/sgc<query>` offering the subprotocol; Err(status) if refused.
async fn open_ws(srv: &TestServer, query: &str) -> Result<Sgc, u16> {
    let mut req = format!("ws://{}/sgc{query}", srv.addr)
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    let attempt = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("the upgrade is answered in time");
    match attempt {
        Ok((ws, resp)) => {
            assert_eq!(
                resp.headers()
                    .get("sec-websocket-protocol")
                    .and_then(|v| v.to_str().ok()),
                Some(SUBPROTOCOL),
                "the server selects the subprotocol"
            );
            Ok(Sgc {
                ws,
                id: String::new(),
            })
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("connect failed: {e}"),
    }
}

/// Connects anonymously and joins as `name`.
async fn member(srv: &TestServer, name: &str) -> Sgc {
    let mut c = open(srv, "").await.expect("upgrade");
    c.join(name, "").await;
    c
}

fn frame(method: &str, body: Value) -> Value {
    let mut f = json!({"jsonrpc": "2.0", "method": format!("sgc@presence@{method}")});
    if let (Some(obj), Value::Object(extra)) = (f.as_object_mut(), body) {
        obj.extend(extra);
    }
    f
}

impl Sgc {
    async fn send(&mut self, frame: Value) {
        self.send_text(&frame.to_string()).await;
    }

    async fn send_text(&mut self, text: &str) {
        protocols::send_text(&mut self.ws, text.to_string()).await;
    }

    async fn next_text(&mut self) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        protocols::read_text(&mut self.ws, deadline, "sgc client")
            .await
            .expect("a frame within the timeout")
    }

    async fn next(&mut self) -> Value {
        let text = self.next_text().await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    /// The next frame, which must have this method (short name or full).
    async fn expect(&mut self, method: &str) -> Value {
        let full = if method.starts_with("sgc@") {
            method.to_string()
        } else {
            format!("sgc@presence@{method}")
        };
        let f = self.next().await;
        assert_eq!(f["method"], full.as_str(), "unexpected frame {f}");
        assert_eq!(f["jsonrpc"], "2.0", "{f}");
        f
    }

    /// The next frame must be error@member@channel with this code.
    async fn expect_error(&mut self, code: i64) -> Value {
        let f = self.expect("error@member@channel").await;
        assert_eq!(f["error"]["code"], code, "wrong code in {f}");
        assert!(
            !f["error"]["text"].as_str().unwrap_or_default().is_empty(),
            "error without text: {f}"
        );
        f
    }

    async fn expect_none(&mut self, ms: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("unexpected {other:?}"),
            }
        }
    }

    async fn expect_close(&mut self) -> u16 {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(5), self.ws.next())
                .await
                .expect("close within the timeout");
            match msg {
                Some(Ok(Message::Close(Some(cf)))) => return u16::from(cf.code),
                Some(Ok(_)) => continue,
                other => panic!("no close frame: {other:?}"),
            }
        }
    }

    fn me(&self) -> Value {
        json!({"id": self.id, "name": "", "info": ""})
    }

    async fn join(&mut self, name: &str, info: &str) -> Value {
        let me = json!({"id": self.id, "name": name, "info": info});
        self.send(frame("member@new", json!({"member": me}))).await;
        let f = self.expect("member@new").await;
        assert_eq!(f["member"], me, "{f}");
        f
    }

    async fn subscribe(&mut self, channel: &str) {
        let me = self.me();
        self.send(frame(
            "channel@member@new",
            json!({"member": me, "channel": {"name": channel}}),
        ))
        .await;
    }

    async fn unsubscribe(&mut self, channel: &str) {
        let me = self.me();
        self.send(frame(
            "channel@member@remove",
            json!({"member": me, "channel": {"name": channel}}),
        ))
        .await;
    }

    async fn publish(&mut self, channel: &str, text: &str) {
        let me = self.me();
        self.send(frame(
            "publish@msg",
            json!({"message": {"text": text}, "channel": {"name": channel}, "member": me}),
        ))
        .await;
    }

    async fn get_members(&mut self, channel: &str) -> Value {
        let me = self.me();
        self.send(frame(
            "get@members",
            json!({"channel": {"name": channel}, "member": me}),
        ))
        .await;
        self.next().await
    }

    async fn invite(&mut self, channel: &str, ids: &[&str]) {
        let members: Vec<Value> = ids
            .iter()
            .map(|i| json!({"id": i, "name": "", "info": ""}))
            .collect();
        let me = self.me();
        self.send(frame(
            "channel@invitation",
            json!({"channel": {"name": channel}, "member": me, "members": members}),
        ))
        .await;
    }

    async fn close(mut self) {
        let _ = self.ws.close(None).await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, self.ws.next()).await {}
    }
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn session_join_leave_and_members() {
    let srv = TestServer::start_open().await;
    let mut alice = open(&srv, "").await.unwrap();
    // Delphi joins right after the session message, with raw CR LF in info.
    alice
        .send_text(&format!(
            "{{\"jsonrpc\":\"2.0\",\"method\":\"sgc@presence@member@new\",\"member\":{{\"id\":\"{}\",\"name\":\"alice\",\"info\":\"email=alice@example.com\r\n\"}}}}",
            alice.id
        ))
        .await;
    let joined = alice.expect("member@new").await;
    assert_eq!(
        joined["member"],
        json!({"id": alice.id, "name": "alice", "info": "email=alice@example.com\r\n"})
    );
    let mut bob = member(&srv, "bob").await;
    let seen = alice.expect("member@new").await;
    assert_eq!(seen["member"]["id"], bob.id.as_str());
    assert_eq!(seen["member"]["name"], "bob");

    let list = bob.get_members("").await;
    assert_eq!(list["method"], "sgc@presence@send@members", "{list}");
    assert_eq!(list["channel"], json!({"name": ""}));
    assert_eq!(list["member"]["id"], bob.id.as_str());
    assert_eq!(ids(&list["members"]), [alice.id.clone(), bob.id.clone()]);

    // Leaving: the others get member@remove; the socket stays open.
    let me = bob.me();
    bob.send(frame("member@remove", json!({"member": me})))
        .await;
    let gone = alice.expect("member@remove").await;
    assert_eq!(gone["member"]["id"], bob.id.as_str());
    bob.expect_none(200).await;
    // A removed member is not a member any more.
    bob.subscribe("room").await;
    bob.expect_error(3).await;
    bob.join("bob again", "").await;
    alice.expect("member@new").await;
    // Disconnecting removes the member too.
    bob.close().await;
    let gone = alice.expect("member@remove").await;
    assert_eq!(gone["member"]["name"], "bob again");
    srv.stop().await;
}

#[tokio::test]
async fn channels_fan_out_to_their_members_only() {
    let srv = TestServer::start_open().await;
    let mut alice = member(&srv, "alice").await;
    let mut bob = member(&srv, "bob").await;
    let mut carol = member(&srv, "carol").await;
    alice.expect("member@new").await;
    alice.expect("member@new").await;
    bob.expect("member@new").await;

    alice.subscribe("room-1").await;
    let f = alice.expect("channel@member@new").await;
    assert_eq!(f["member"]["id"], alice.id.as_str());
    assert_eq!(f["channel"], json!({"name": "room-1"}));
    bob.subscribe("room-1").await;
    bob.expect("channel@member@new").await;
    let f = alice.expect("channel@member@new").await;
    assert_eq!(f["member"]["name"], "bob");
    carol.subscribe("room-2").await;
    carol.expect("channel@member@new").await;
    alice.expect_none(150).await;

    let list = carol.get_members("room-1").await;
    assert_eq!(ids(&list["members"]), [alice.id.clone(), bob.id.clone()]);
    assert_eq!(list["channel"], json!({"name": "room-1"}));

    // Unsubscribe: the channel's members (the leaver included), not carol.
    bob.unsubscribe("room-1").await;
    let f = bob.expect("channel@member@remove").await;
    assert_eq!(f["member"]["id"], bob.id.as_str());
    let f = alice.expect("channel@member@remove").await;
    assert_eq!(f["member"]["id"], bob.id.as_str());
    carol.expect_none(150).await;

    // Disconnect: channel@member@remove to the channel, then member@remove.
    bob.subscribe("room-1").await;
    bob.expect("channel@member@new").await;
    alice.expect("channel@member@new").await;
    bob.close().await;
    alice.expect("channel@member@remove").await;
    alice.expect("member@remove").await;
    carol.expect("member@remove").await;
    carol.expect_none(100).await;
    srv.stop().await;
}

#[tokio::test]
async fn publish_to_a_channel_and_to_everyone() {
    let srv = TestServer::start_open().await;
    let mut alice = member(&srv, "alice").await;
    let mut bob = member(&srv, "bob").await;
    alice.expect("member@new").await;
    alice.subscribe("room").await;
    alice.expect("channel@member@new").await;
    bob.subscribe("room").await;
    bob.expect("channel@member@new").await;
    alice.expect("channel@member@new").await;
    let mut carol = member(&srv, "carol").await;
    alice.expect("member@new").await;
    bob.expect("member@new").await;

    // The member object comes from the server, whatever id the client sends.
    bob.send(frame(
        "publish@msg",
        json!({"message": {"text": "hello"}, "channel": {"name": "room"}, "member": {"id": alice.id, "name": "spoof", "info": ""}}),
    ))
    .await;
    let expected = json!({"jsonrpc": "2.0", "method": "sgc@presence@publish@msg",
        "message": {"text": "hello"}, "channel": {"name": "room"},
        "member": {"id": bob.id, "name": "bob", "info": ""}});
    assert_eq!(alice.next().await, expected);
    assert_eq!(bob.next().await, expected);
    carol.expect_none(150).await;

    // Empty channel: every member, the sender included.
    carol.publish("", r#"{"x":1}"#).await;
    for c in [&mut alice, &mut bob, &mut carol] {
        let f = c.expect("publish@msg").await;
        assert_eq!(
            f["message"]["text"],
            json!({"x": 1}),
            "JSON text goes out unquoted: {f}"
        );
        assert_eq!(f["channel"], json!({"name": ""}));
        assert_eq!(f["member"]["name"], "carol");
    }
    srv.stop().await;
}

#[tokio::test]
async fn every_error_code() {
    let srv = TestServer::start_with(|c| {
        // room-* is open; "open" may be joined, but only the server
        // publishes there; every other channel is closed.
        c.channels.channel_rules = vec![
            rule("room-*", "anyone", "subscribers"),
            rule("open", "anyone", "server"),
        ];
        c.front_ends.sgc.sgc_members_need_subscription = true;
        c.limits.max_members_per_channel = 2;
    })
    .await;
    let mut a = open(&srv, "").await.unwrap();
    // 3: anything before joining.
    a.subscribe("room-1").await;
    let e = a.expect_error(3).await;
    assert_eq!(
        e["error"]["text"],
        "Member not exists. Send sgc@presence@member@new first to join."
    );
    a.publish("", "x").await;
    a.expect_error(3).await;
    a.join("a", "").await;
    // 1: joining twice.
    let me = a.me();
    a.send(frame("member@new", json!({"member": me}))).await;
    let e = a.expect_error(1).await;
    assert_eq!(e["error"]["text"], "Member already exists.");
    assert_eq!(e["member"]["name"], "a");
    // 10: a channel the rules do not allow, whether or not it exists.
    a.subscribe("secret").await;
    let e = a.expect_error(10).await;
    assert!(
        e["error"]["text"]
            .as_str()
            .unwrap()
            .starts_with("Create Subscription request has been denied. No grant for secret"),
        "{e}"
    );
    assert_eq!(e["channel"]["name"], "secret");
    // 5: unknown channel.
    a.unsubscribe("room-9").await;
    let e = a.expect_error(5).await;
    assert_eq!(e["error"]["text"], "Channel not exists");
    a.subscribe("room-1").await;
    a.expect("channel@member@new").await;
    // 11: twice.
    a.subscribe("room-1").await;
    assert_eq!(
        a.expect_error(11).await["error"]["text"],
        "Subscription already exists."
    );
    // 20: publish where the rules do not allow it ("open" is joinable only).
    a.subscribe("open").await;
    a.expect("channel@member@new").await;
    a.publish("open", "x").await;
    let e = a.expect_error(20).await;
    assert!(
        e["error"]["text"]
            .as_str()
            .unwrap()
            .starts_with("Publish Message request has been denied.")
    );

    let mut b = member(&srv, "b").await;
    a.expect("member@new").await;
    // 12: unsubscribe / publish on an existing channel one is not in.
    b.unsubscribe("room-1").await;
    assert_eq!(
        b.expect_error(12).await["error"]["text"],
        "Subscription not exists."
    );
    b.publish("room-1", "x").await;
    b.expect_error(12).await;
    // 30: members of a channel one is not subscribed to (rule).
    let e = b.get_members("room-1").await;
    assert_eq!(e["error"]["code"], 30, "{e}");
    assert!(
        e["error"]["text"]
            .as_str()
            .unwrap()
            .starts_with("Send Members request has been denied."),
        "{e}"
    );
    // The rule runs before the channel lookup, as sgc's hook does.
    b.subscribe("room-2").await;
    b.expect("channel@member@new").await;
    b.unsubscribe("room-2").await;
    b.expect("channel@member@remove").await;
    assert_eq!(b.get_members("room-2").await["error"]["code"], 30);
    assert_eq!(
        b.get_members("").await["method"],
        "sgc@presence@send@members"
    );
    // 10: an existing channel that is full (2 members per channel).
    b.subscribe("room-1").await;
    b.expect("channel@member@new").await;
    a.expect("channel@member@new").await;
    let mut c = member(&srv, "c").await;
    a.expect("member@new").await;
    b.expect("member@new").await;
    c.subscribe("room-1").await;
    let e = c.expect_error(10).await;
    assert!(
        e["error"]["text"]
            .as_str()
            .unwrap()
            .starts_with("Create Subscription request has been denied."),
        "{e}"
    );
    // 2: a name over the limit.
    let mut d = open(&srv, "").await.unwrap();
    let long = "n".repeat(300);
    d.send(frame(
        "member@new",
        json!({"member": {"id": d.id, "name": long, "info": ""}}),
    ))
    .await;
    let e = d.expect_error(2).await;
    assert!(
        e["error"]["text"]
            .as_str()
            .unwrap()
            .starts_with("Create New Member request has been denied."),
        "{e}"
    );
    // 40: inviting oneself; 41: answering no invitation.
    a.invite("room-1", &[&a.id.clone()]).await;
    a.expect_error(40).await;
    let me = c.me();
    c.send(frame(
        "channel@invitation@response",
        json!({"channel": {"name": "room-1"}, "member": me, "message": {"text": "accept"}}),
    ))
    .await;
    c.expect_error(41).await;
    // 3: removing another member.
    c.send(frame(
        "member@remove",
        json!({"member": {"id": a.id, "name": "", "info": ""}}),
    ))
    .await;
    let e = c.expect_error(3).await;
    assert_eq!(e["member"]["id"], a.id.as_str());
    a.expect_none(150).await;
    srv.stop().await;
}

#[tokio::test]
async fn acknowledgments_come_first_and_resent_ids_run_once() {
    let srv = TestServer::start_open().await;
    let mut a = open(&srv, "").await.unwrap();
    let join = json!({"jsonrpc": "2.0", "method": "sgc@presence@member@new",
        "member": {"id": a.id, "name": "a", "info": ""}, "id": "0A1B2C3D4E5F60718293A4B5C6D7E8F9"});
    a.send(join.clone()).await;
    assert_eq!(
        a.next().await,
        json!({"jsonrpc": "2.0", "method": "sgc@presence@acknowledgment", "id": "0A1B2C3D4E5F60718293A4B5C6D7E8F9"})
    );
    a.expect("member@new").await;
    // The same id again: acknowledged, not processed (no error 1).
    a.send(join).await;
    a.expect("acknowledgment").await;
    a.expect_none(200).await;
    // A new id is processed.
    let sub = json!({"jsonrpc": "2.0", "method": "sgc@presence@channel@member@new",
        "channel": {"name": "room"}, "id": "second"});
    a.send(sub.clone()).await;
    assert_eq!(a.expect("acknowledgment").await["id"], "second");
    a.expect("channel@member@new").await;
    a.send(sub).await;
    a.expect("acknowledgment").await;
    a.expect_none(200).await;
    // An acknowledgment from the client is not acknowledged back.
    a.send(json!({"jsonrpc": "2.0", "method": "sgc@presence@acknowledgment", "id": "X"}))
        .await;
    a.expect_none(150).await;
    srv.stop().await;
}

#[tokio::test]
async fn server_frames_ask_for_acks_and_are_resent() {
    let srv = TestServer::start_with(|c| {
        c.channels.open_channels = vec!["*".into()];
        c.front_ends.sgc.sgc_ack_timeout = std::time::Duration::from_millis(300);
        c.front_ends.sgc.sgc_ack_retries = 2;
    })
    .await;
    let mut a = open(&srv, "?acks=1").await.unwrap();
    // The session message carries an id too; ack it.
    let mut raw = a.next_text().await;
    let mut f: Value = serde_json::from_str(&raw).unwrap();
    // open() consumed the session; this is its re-send after the timeout.
    assert_eq!(f["method"], "sgc@presence@session", "{f}");
    let session_id = f["id"].as_str().expect("an ack id").to_string();
    assert_eq!(session_id.len(), 32);
    a.send(json!({"jsonrpc": "2.0", "method": "sgc@presence@acknowledgment", "id": session_id}))
        .await;
    // Join: member@new carries an id; do not ack it, it comes back unchanged.
    let me = a.me();
    a.send(frame("member@new", json!({"member": me}))).await;
    raw = a.next_text().await;
    f = serde_json::from_str(&raw).unwrap();
    assert_eq!(f["method"], "sgc@presence@member@new");
    let again = tokio::time::timeout(Duration::from_secs(2), a.next_text())
        .await
        .unwrap();
    assert_eq!(again, raw, "re-sent unchanged");
    a.send(json!({"jsonrpc": "2.0", "method": "sgc@presence@acknowledgment", "id": f["id"]}))
        .await;
    a.expect_none(700).await;
    // Broadcasts to this connection ask for acks too; never acking closes.
    let mut b = member(&srv, "b").await;
    let f = a.expect("member@new").await;
    assert!(f["id"].is_string(), "{f}");
    let code = a.expect_close().await;
    assert_eq!(code, 4008);
    // Closing removed the member; connections that did not ask for acks
    // got plain frames all along.
    let f = b.expect("member@remove").await;
    assert_eq!(f["member"]["id"], a.id.as_str());
    assert!(f.get("id").is_none(), "{f}");
    srv.stop().await;
}

#[tokio::test]
async fn base64_both_ways() {
    let srv = TestServer::start_open().await;
    let mut plain = member(&srv, "plain").await;
    let mut a = open(&srv, "").await.unwrap();
    let b64 = |s: &str| format!("sgc@b64:{}", base64_encode(s));
    a.send(
        json!({"jsonrpc": "2.0", "method": b64("sgc@presence@member@new"),
        "member": {"id": b64(&a.id), "name": b64("Zoë \"Z\""), "info": ""}}),
    )
    .await;
    // Replies are base64 from now on: every string but jsonrpc.
    let f = a.next().await;
    assert_eq!(f["jsonrpc"], "2.0");
    assert_eq!(f["method"], b64("sgc@presence@member@new").as_str());
    assert_eq!(
        f["member"],
        json!({"id": b64(&a.id), "name": b64("Zoë \"Z\""), "info": ""})
    );
    // Others get plain JSON with the decoded name.
    let f = plain.expect("member@new").await;
    assert_eq!(f["member"]["name"], "Zoë \"Z\"");
    a.send(json!({"jsonrpc": "2.0", "method": b64("sgc@presence@channel@member@new"), "channel": {"name": b64("room")}})).await;
    let f = a.next().await;
    assert_eq!(f["channel"]["name"], b64("room").as_str());
    plain.subscribe("room").await;
    plain.expect("channel@member@new").await;
    let f = a.next().await;
    assert_eq!(f["method"], b64("sgc@presence@channel@member@new").as_str());
    assert_eq!(f["member"]["name"], "sgc@b64:cGxhaW4=");
    plain.publish("room", "héllo").await;
    plain.expect("publish@msg").await;
    let f = a.next().await;
    assert_eq!(f["message"]["text"], b64("héllo").as_str());
    // ?base64=1 encodes from the session message on.
    let mut forced = open_ws(&srv, "?base64=1").await.unwrap();
    let session = forced.next().await;
    assert_eq!(session["method"], b64("sgc@presence@session").as_str());
    assert!(
        session["message"]["text"]
            .as_str()
            .unwrap()
            .starts_with("sgc@b64:"),
        "{session}"
    );
    forced
        .send(frame("member@new", json!({"member": {"name": "f"}})))
        .await;
    assert_eq!(forced.next().await["member"]["name"], "sgc@b64:Zg==");
    srv.stop().await;
}

fn base64_encode(s: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = s.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test]
async fn lenient_frames_and_garbage() {
    let srv = TestServer::start_open().await;
    let mut a = open(&srv, "").await.unwrap();
    // Garbage of every kind is dropped; the connection keeps working.
    for junk in [
        "not json",
        "{\"jsonrpc\":\"2.0\"",
        "[1,2,3]",
        "{\"jsonrpc\":\"1.0\",\"method\":\"sgc@presence@member@new\"}",
        "{\"method\":\"sgc@presence@member@new\"}",
        "{\"jsonrpc\":\"2.0\",\"method\":\"sgc@presence@no@such\"}",
    ] {
        a.send_text(junk).await;
    }
    a.ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    a.expect_none(150).await;
    // A missing member object means empty values; raw control characters
    // and unescaped quotes in strings are fine.
    a.send_text("{\"jsonrpc\":\"2.0\",\"method\":\"sgc@presence@member@new\"}")
        .await;
    let f = a.expect("member@new").await;
    assert_eq!(f["member"], json!({"id": a.id, "name": "", "info": ""}));
    a.send_text("{\"jsonrpc\":\"2.0\",\"method\":\"sgc@presence@channel@member@new\",\"channel\":{\"name\":\"room\"}}").await;
    a.expect("channel@member@new").await;
    a.send_text("{\"jsonrpc\":\"2.0\",\"method\":\"sgc@presence@publish@msg\",\"message\":{\"text\":\"line1\r\nsay \"hi\"\t!\"},\"channel\":{\"name\":\"room\"}}").await;
    let f = a.expect("publish@msg").await;
    assert_eq!(f["message"]["text"], "line1\r\nsay \"hi\"\t!");
    // An object where a string is expected is its JSON text.
    a.send_text("{\"jsonrpc\":\"2.0\",\"method\":\"sgc@presence@publish@msg\",\"message\":{\"text\":{\"n\":[1,2]}},\"channel\":{\"name\":\"room\"}}").await;
    let f = a.expect("publish@msg").await;
    assert_eq!(f["message"]["text"], json!({"n": [1, 2]}));
    srv.stop().await;
}

#[tokio::test]
async fn invitations_accepted_declined_and_refused() {
    let srv = TestServer::start_with(|c| {
        c.channels.open_channels = vec!["*".into()];
        c.front_ends.sgc.sgc_invitation_ttl = std::time::Duration::from_millis(400);
    })
    .await;
    let mut alice = member(&srv, "alice").await;
    let mut bob = member(&srv, "bob").await;
    alice.expect("member@new").await;
    alice.subscribe("room").await;
    alice.expect("channel@member@new").await;

    // Decline with a code and text.
    alice.invite("room", &[&bob.id.clone()]).await;
    let inv = bob.expect("channel@invitation").await;
    assert_eq!(inv["channel"], json!({"name": "room"}));
    assert_eq!(
        inv["member"],
        json!({"id": alice.id, "name": "alice", "info": ""})
    );
    assert_eq!(inv["members"], json!([]));
    bob.send(frame("channel@invitation@response", json!({"channel": {"name": "room"}, "member": bob.me(),
        "members": [{"id": alice.id}], "message": {"text": "decline"}, "error": {"code": 1, "text": "Invitation refused"}})))
        .await;
    let resp = alice.expect("channel@invitation@response").await;
    assert_eq!(
        resp,
        json!({"jsonrpc": "2.0", "method": "sgc@presence@channel@invitation@response",
            "error": {"code": 1, "text": "Invitation refused"}, "message": {"text": "declined"},
            "channel": {"name": "room"}, "member": {"id": bob.id, "name": "bob", "info": ""}})
    );
    // Answering again: nothing pending.
    bob.send(frame(
        "channel@invitation@response",
        json!({"channel": {"name": "room"}, "message": {"text": "accept"}}),
    ))
    .await;
    bob.expect_error(41).await;

    // Accept: the server subscribes bob.
    alice.invite("room", &[&bob.id.clone()]).await;
    bob.expect("channel@invitation").await;
    bob.send(frame("channel@invitation@response", json!({"channel": {"name": "room"}, "members": [{"id": alice.id}], "message": {"text": "accept"}}))).await;
    let f = bob.expect("channel@member@new").await;
    assert_eq!(f["member"]["id"], bob.id.as_str());
    let f = alice.expect("channel@member@new").await;
    assert_eq!(f["member"]["id"], bob.id.as_str());
    let resp = alice.expect("channel@invitation@response").await;
    assert_eq!(resp["message"]["text"], "accepted");
    assert_eq!(resp["error"], json!({"code": 0, "text": ""}));

    // Refused: already in the channel, unknown member, oneself.
    alice
        .invite(
            "room",
            &[&bob.id.clone(), "NO-SUCH-MEMBER", &alice.id.clone()],
        )
        .await;
    let e = alice.expect_error(11).await;
    assert_eq!(e["member"]["id"], bob.id.as_str());
    let e = alice.expect_error(3).await;
    assert_eq!(e["member"]["id"], "NO-SUCH-MEMBER");
    alice.expect_error(40).await;
    bob.expect_none(100).await;

    // Expiry: nobody answers.
    let mut carol = member(&srv, "carol").await;
    alice.expect("member@new").await;
    bob.expect("member@new").await;
    alice.invite("room", &[&carol.id.clone()]).await;
    carol.expect("channel@invitation").await;
    let resp = alice.expect("channel@invitation@response").await;
    assert_eq!(resp["message"]["text"], "expired");
    assert_eq!(resp["error"]["code"], 42);
    assert_eq!(resp["member"]["name"], "carol");
    carol
        .send(frame(
            "channel@invitation@response",
            json!({"channel": {"name": "room"}, "message": {"text": "accept"}}),
        ))
        .await;
    carol.expect_error(41).await;

    // sgc 2022 clients accept by subscribing.
    alice.invite("room", &[&carol.id.clone()]).await;
    carol.expect("channel@invitation").await;
    carol.subscribe("room").await;
    carol.expect("channel@member@new").await;
    alice.expect("channel@member@new").await;
    bob.expect("channel@member@new").await;
    assert_eq!(
        alice.expect("channel@invitation@response").await["message"]["text"],
        "accepted"
    );

    // The invitee leaving cancels the invitation.
    let mut dave = member(&srv, "dave").await;
    for c in [&mut alice, &mut bob, &mut carol] {
        c.expect("member@new").await;
    }
    alice.invite("room", &[&dave.id.clone()]).await;
    dave.expect("channel@invitation").await;
    dave.close().await;
    alice.expect("member@remove").await;
    let resp = alice.expect("channel@invitation@response").await;
    assert_eq!(resp["message"]["text"], "cancelled");
    assert_eq!(resp["error"]["code"], 43);
    srv.stop().await;
}

#[tokio::test]
async fn tokens_give_identity_and_permissions() {
    let srv = TestServer::start_with(|c| c.front_ends.sgc.sgc_require_token = true).await;
    assert_eq!(open(&srv, "").await.err(), Some(401));
    assert_eq!(open(&srv, "?token=not.a.jwt").await.err(), Some(401));
    let no_uid = sign(&mut json!({"name": "x"}));
    assert_eq!(
        open(&srv, &format!("?token={no_uid}")).await.err(),
        Some(401)
    );
    let token = sign(&mut json!({"uid": "alice", "name": "Alice", "info": "boss"}));
    let mut alice = open(&srv, &format!("?token={token}")).await.unwrap();
    assert_eq!(alice.id, "alice");
    // Name and info come from the token, not from the client.
    alice
        .send(frame(
            "member@new",
            json!({"member": {"id": "mallory", "name": "spoof", "info": "x"}}),
        ))
        .await;
    let f = alice.expect("member@new").await;
    assert_eq!(
        f["member"],
        json!({"id": "alice", "name": "Alice", "info": "boss"})
    );
    let token = sign(&mut json!({"sub": "bob", "publish": false}));
    let mut bob = open(&srv, &format!("?token={token}")).await.unwrap();
    bob.send(frame("member@new", json!({"member": {"name": "whatever"}})))
        .await;
    assert_eq!(bob.expect("member@new").await["member"]["name"], "bob");
    alice.expect("member@new").await;
    bob.publish("", "hi").await;
    let e = bob.expect_error(20).await;
    assert!(
        e["error"]["text"]
            .as_str()
            .unwrap()
            .contains("publish claim"),
        "{e}"
    );
    alice.expect_none(100).await;
    srv.stop().await;
}

#[tokio::test]
async fn rate_limited_frames_get_error_50() {
    let srv = TestServer::start_with(|c| {
        c.channels.open_channels = vec!["*".into()];
        c.limits.max_messages_per_second = 2;
    })
    .await;
    let mut a = member(&srv, "a").await;
    for _ in 0..4 {
        a.get_members_nowait("").await;
    }
    let mut codes = Vec::new();
    for _ in 0..4 {
        let f = a.next().await;
        codes.push(f["error"]["code"].as_i64().unwrap_or(0));
    }
    assert!(codes.contains(&50), "{codes:?}");
    srv.stop().await;
}

impl Sgc {
    async fn get_members_nowait(&mut self, channel: &str) {
        self.send(frame("get@members", json!({"channel": {"name": channel}})))
            .await;
    }
}

#[cfg(feature = "hotsock")]
#[tokio::test]
async fn sgc_and_hotsock_share_a_channel() {
    let srv = TestServer::start_open().await;
    let mut jim = srv.connect(user("jim", json!({"name": "Jim"}))).await;
    jim.join("presence.room").await;
    let mut alice = member(&srv, "alice").await;
    alice.subscribe("presence.room").await;
    alice.expect("channel@member@new").await;
    // Hotsock sees the sgc member, with its name and info as member data,
    // marked as chosen by a client without a token.
    let added = jim.expect("hotsock.memberAdded").await;
    assert_eq!(
        added["data"]["member"],
        json!({"uid": alice.id, "umd": {"name": "alice", "info": "", "type": "anonymous"}})
    );
    // sgc sees the Hotsock member.
    let list = alice.get_members("presence.room").await;
    assert_eq!(
        list["members"],
        json!([{"id": "jim", "name": "Jim", "info": ""}, {"id": alice.id, "name": "alice", "info": ""}])
    );
    // Messages both ways.
    jim.send(json!({"event": "chat", "channel": "presence.room", "data": "hi from jim"}))
        .await;
    let f = alice.expect("publish@msg").await;
    assert_eq!(f["message"]["text"], "hi from jim");
    assert_eq!(f["member"], json!({"id": "jim", "name": "Jim", "info": ""}));
    alice.publish("presence.room", "hi from alice").await;
    alice.expect("publish@msg").await;
    let m = jim.expect("message").await;
    assert_eq!(m["data"], "hi from alice");
    // An anonymous sgc member has no user id; its member data names it.
    assert_eq!(
        m["meta"],
        json!({"uid": null, "umd": {"name": "alice", "info": "", "type": "anonymous"}})
    );
    // A server publish through the HTTP API reaches sgc with an empty member.
    srv.publish("presence.room", "news", json!("from the server"))
        .await;
    jim.expect("news").await;
    let f = alice.expect("publish@msg").await;
    assert_eq!(f["message"]["text"], "from the server");
    assert_eq!(f["member"], json!({"id": "", "name": "", "info": ""}));
    // Leaving is seen across protocols.
    jim.close().await;
    let f = alice.expect("channel@member@remove").await;
    assert_eq!(f["member"]["id"], "jim");
    let mut pam = srv.connect(user("pam", json!(null))).await;
    pam.join("presence.room").await;
    alice.expect("channel@member@new").await;
    alice.close().await;
    let removed = pam.expect("hotsock.memberRemoved").await;
    assert_eq!(
        removed["data"]["members"],
        json!([{"uid": "pam", "umd": null}])
    );
    // The server-wide sgc member list is not a Hotsock channel.
    let sub = pam.subscribe("#sgc/members").await;
    assert_eq!(sub["event"], "hotsock.error", "{sub}");
    srv.stop().await;
}
