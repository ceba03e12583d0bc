//! The SocketCluster front end over real sockets: protocol v1 frames
//! (handshake, pings, cid/rid, batches, close codes, auth), presence
//! packets, bad input, protocol v2 pings, and the cross-protocol rules with
//! Hotsock clients and the HTTP API in one channel.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::common::*;

/// A raw SocketCluster client: text frames in, text frames out.
struct Sc {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    id: String,
    cid: u64,
}

/// An HS256 token with a `username` (exp: now + 1 h).
fn token(username: &str) -> String {
    sign(&mut json!({ "username": username }))
}

impl Sc {
    async fn open(srv: &TestServer) -> Sc {
        let url = format!("ws://{}/socketcluster/", srv.addr);
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("upgrade in time")
            .expect("upgrade accepted");
        Sc {
            ws,
            id: String::new(),
            cid: 1,
        }
    }

    /// Opens and handshakes (with a token for `user`, if given); returns
    /// the handshake reply's data.
    async fn connect(srv: &TestServer, user: Option<&str>) -> Sc {
        let mut sc = Sc::open(srv).await;
        let auth = user.map(token);
        sc.text(&json!({"event":"#handshake","data":{"authToken":auth},"cid":1}).to_string())
            .await;
        let reply = sc.next().await;
        assert_eq!(reply["rid"], 1, "{reply}");
        assert_eq!(reply["data"]["isAuthenticated"], user.is_some(), "{reply}");
        sc.id = reply["data"]["id"].as_str().expect("id").to_string();
        sc
    }

    async fn text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.to_string().into()))
            .await
            .expect("send");
    }

    /// Sends an event with the next cid; returns the cid.
    async fn request(&mut self, event: &str, data: Value) -> u64 {
        self.cid += 1;
        let cid = self.cid;
        self.text(&json!({"event": event, "data": data, "cid": cid}).to_string())
            .await;
        cid
    }

    /// The next text frame, raw (pings included).
    async fn raw(&mut self) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        protocols::read_text(&mut self.ws, deadline, "SocketCluster client")
            .await
            .expect("a frame within the timeout")
    }

    /// The next JSON frame, skipping `#1`/`""` pings.
    async fn next(&mut self) -> Value {
        loop {
            let t = self.raw().await;
            if t == "#1" || t.is_empty() {
                continue;
            }
            return serde_json::from_str(&t).unwrap_or_else(|_| panic!("not JSON: {t:?}"));
        }
    }

    /// Skips frames until one matches `pred` (within the timeout).
    async fn seek(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            assert!(tokio::time::Instant::now() < deadline, "no {what} arrived");
            let f = self.next().await;
            if pred(&f) {
                return f;
            }
        }
    }

    /// The next `#publish` data on `channel`.
    async fn publish_on(&mut self, channel: &str) -> Value {
        let f = self
            .seek(&format!("#publish on {channel}"), |f| {
                f["event"] == "#publish" && f["data"]["channel"] == channel
            })
            .await;
        f["data"]["data"].clone()
    }

    /// Subscribes and asserts `{"rid":cid}`.
    async fn subscribe(&mut self, channel: &str) {
        let cid = self
            .request("#subscribe", json!({ "channel": channel }))
            .await;
        self.seek("subscribe reply", |f| f["rid"] == cid).await;
    }

    /// Asserts nothing but pings arrives within `ms`.
    async fn quiet(&mut self, ms: u64) {
        let end = tokio::time::Instant::now() + Duration::from_millis(ms);
        loop {
            match tokio::time::timeout_at(end, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "#1" || t.is_empty() => {}
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
                Ok(other) => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Reads until the close frame; returns its code.
    async fn closed(&mut self) -> u16 {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(5), self.ws.next())
                .await
                .expect("close within the timeout");
            match msg {
                Some(Ok(Message::Close(Some(CloseFrame { code, .. })))) => return u16::from(code),
                Some(Ok(Message::Close(None))) => return 1005,
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("error before close: {e}"),
                None => panic!("stream ended without a close frame"),
            }
        }
    }
}

async fn server() -> TestServer {
    TestServer::start_with(|cfg| {
        cfg.channels.open_channels = vec!["*".into()];
        cfg.front_ends.sc.sc_presence_interval = 300;
        cfg.front_ends.sc.sc_presence_timeout = Some(1000);
        cfg.front_ends.sc.sc_ping_interval = 200;
        cfg.front_ends.sc.sc_ping_timeout = 1000;
        cfg.front_ends.sc.sc_handshake_timeout = 500;
    })
    .await
}

#[tokio::test]
async fn handshake_with_and_without_token_and_bad_tokens() {
    let srv = server().await;
    let sc = Sc::connect(&srv, Some("alice")).await;
    assert_eq!(sc.id.len(), 20);
    assert!(sc.id.chars().all(|c| c.is_ascii_alphanumeric()));
    Sc::connect(&srv, None).await;

    // A bad signature: #removeAuthToken first, then the reply with authError.
    let mut bad = Sc::open(&srv).await;
    let forged = sign_exact(
        "other-secret",
        &json!({"username":"mallory","exp": rollcall::time::unix_now() + 60}),
    );
    bad.text(&json!({"event":"#handshake","data":{"authToken":forged},"cid":1}).to_string())
        .await;
    assert_eq!(
        bad.next().await,
        json!({"event":"#removeAuthToken","data":null})
    );
    // Key order as v14: id, pingTimeout, authError, isAuthenticated.
    let text = bad.raw().await;
    let order: Vec<usize> = [
        "\"id\"",
        "\"pingTimeout\"",
        "\"authError\"",
        "\"isAuthenticated\"",
    ]
    .iter()
    .map(|k| {
        text.find(k)
            .unwrap_or_else(|| panic!("{k} missing in {text}"))
    })
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    let reply: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(reply["data"]["isAuthenticated"], false);
    assert_eq!(reply["data"]["authError"]["name"], "AuthTokenInvalidError");
    assert_eq!(reply["data"]["pingTimeout"], 1000);

    // An expired token: AuthTokenExpiredError with the expiry as a JS date.
    let mut old = Sc::open(&srv).await;
    let expired = sign_exact(
        SECRET,
        &json!({"username":"old","exp": 1_795_317_347u64 - 400_000_000}),
    );
    old.text(&json!({"event":"#handshake","data":{"authToken":expired},"cid":1}).to_string())
        .await;
    assert_eq!(old.next().await["event"], "#removeAuthToken");
    let reply = old.next().await;
    assert_eq!(reply["data"]["authError"]["name"], "AuthTokenExpiredError");
    assert!(
        reply["data"]["authError"]["expiry"]
            .as_str()
            .unwrap()
            .ends_with(".000Z")
    );
    srv.stop().await;
}

#[tokio::test]
async fn pings_and_close_codes() {
    let srv = server().await;
    // v1 client: both pings until the first #2, then only #1.
    let mut v1 = Sc::connect(&srv, None).await;
    assert_eq!(v1.raw().await, "#1");
    assert_eq!(v1.raw().await, "");
    v1.text("#2").await;
    for _ in 0..3 {
        assert_eq!(v1.raw().await, "#1");
        v1.text("#2").await;
    }
    // v2 client: answers "" and then only gets "".
    let mut v2 = Sc::connect(&srv, None).await;
    assert_eq!(v2.raw().await, "#1");
    assert_eq!(v2.raw().await, "");
    v2.text("").await;
    for _ in 0..3 {
        assert_eq!(v2.raw().await, "");
        v2.text("").await;
    }

    // A frame before the handshake: 4009 (a pong too).
    let mut early = Sc::open(&srv).await;
    early
        .text(r##"{"event":"#subscribe","data":{"channel":"x"},"cid":1}"##)
        .await;
    assert_eq!(early.closed().await, 4009);
    let mut early = Sc::open(&srv).await;
    early.text("#2").await;
    assert_eq!(early.closed().await, 4009);

    // No handshake in time: #disconnect 4005, then close 4005.
    let mut mute = Sc::open(&srv).await;
    assert_eq!(
        mute.next().await,
        json!({"event":"#disconnect","data":{"code":4005}})
    );
    assert_eq!(mute.closed().await, 4005);

    // Silent after the handshake: 4001.
    let mut silent = Sc::connect(&srv, None).await;
    assert_eq!(silent.closed().await, 4001);

    // #disconnect from the client: closed with its code.
    let mut bye = Sc::connect(&srv, None).await;
    bye.text(r##"{"event":"#disconnect","data":{"code":4500,"data":"bye"}}"##)
        .await;
    assert_eq!(bye.closed().await, 4500);

    // Oversized frame: 1009, and the server stays up.
    let mut big = Sc::connect(&srv, None).await;
    big.text(&format!(
        r##"{{"event":"#publish","data":{{"channel":"c","data":"{}"}}}}"##,
        "x".repeat(200_000)
    ))
    .await;
    assert_eq!(big.closed().await, 1009);
    Sc::connect(&srv, Some("still-up")).await;
    srv.stop().await;
}

#[tokio::test]
async fn pub_sub_with_acks_batches_and_errors() {
    let srv = server().await;
    let mut a = Sc::connect(&srv, Some("alice")).await;
    let mut b = Sc::connect(&srv, None).await;
    a.subscribe("news").await;
    // A batch of two subscribes (string form too), answered in order.
    b.text(r##"[{"event":"#subscribe","data":{"channel":"news"},"cid":7},{"event":"#subscribe","data":"other","cid":8}]"##)
        .await;
    assert_eq!(
        b.seek("rid 7", |f| f.get("rid").is_some()).await,
        json!({"rid":7})
    );
    assert_eq!(
        b.seek("rid 8", |f| f.get("rid").is_some()).await,
        json!({"rid":8})
    );

    let cid = a
        .request("#publish", json!({"channel":"news","data":{"n":1}}))
        .await;
    // Delivered to the publisher too, then acked.
    assert_eq!(a.publish_on("news").await, json!({"n":1}));
    assert_eq!(a.next().await, json!({ "rid": cid }));
    assert_eq!(b.publish_on("news").await, json!({"n":1}));

    // Unsubscribe with a cid; an unknown channel is a BrokerError.
    let cid = b.request("#unsubscribe", json!("news")).await;
    assert_eq!(
        b.seek("unsub reply", |f| f.get("rid").is_some()).await,
        json!({ "rid": cid })
    );
    let cid = b.request("#unsubscribe", json!("nosuch")).await;
    let err = b.seek("unsub error", |f| f.get("rid").is_some()).await;
    assert_eq!(err["rid"], cid);
    assert_eq!(err["error"]["name"], "BrokerError");
    a.request("#publish", json!({"channel":"news","data":2}))
        .await;
    b.quiet(300).await;

    // Wrong types, unknown events, non-JSON: error replies, connection stays.
    let cid = b.request("#subscribe", json!({"channel": 42})).await;
    let err = b.next().await;
    assert_eq!(
        (err["rid"].as_u64(), err["error"]["name"].as_str()),
        (Some(cid), Some("BrokerError"))
    );
    let cid = b
        .request("#publish", json!({"channel": 42, "data": 1}))
        .await;
    assert_eq!(b.next().await["error"]["name"], "BrokerError", "cid {cid}");
    let cid = b.request("echo", json!({"a":1})).await;
    let err = b.next().await;
    assert_eq!(
        (err["rid"].as_u64(), err["error"]["name"].as_str()),
        (Some(cid), Some("InvalidActionError"))
    );
    b.text("not json at all").await;
    b.text("{\"broken\":").await;
    b.text(r##"{"event":42,"cid":99}"##).await;
    assert_eq!(b.next().await["rid"], 99);
    b.text("#2").await;
    b.subscribe("still-works").await;
    srv.stop().await;
}

/// The frames of spec §2.6 for a tracker and a joiner, and leave on
/// unsubscribe, logout and disconnect.
#[tokio::test]
async fn presence_packets_follow_sc_stateless_presence() {
    let srv = server().await;
    let mut alice = Sc::connect(&srv, Some("alice")).await;
    let own = format!("presence>socket/{}", alice.id);
    alice.subscribe(&own).await;
    alice.subscribe("presence>sample").await;
    let cid = alice
        .request("#subscribe", json!({"channel":"sample"}))
        .await;
    // Anonymous join, user join, then the reply (JS order).
    assert_eq!(
        alice.next().await,
        json!({"event":"#publish","data":{"channel":"presence>sample","data":{"type":"join","timeout":1000,"socketId":alice.id}}})
    );
    assert_eq!(
        alice.next().await,
        json!({"event":"#publish","data":{"channel":"presence>sample","data":{"type":"join","username":"alice","timeout":1000}}})
    );
    assert_eq!(alice.next().await, json!({ "rid": cid }));
    // Pings list the channel's users.
    assert_eq!(
        alice.publish_on("presence>sample").await,
        json!({"type":"ping","timeout":1000,"users":["alice"]})
    );

    // bob: anonymous, then #authenticate.
    let mut bob = Sc::connect(&srv, None).await;
    bob.subscribe("presence>sample").await;
    assert_eq!(
        alice.publish_on("presence>sample").await,
        json!({"type":"join","timeout":1000,"socketId":bob.id})
    );
    bob.subscribe("sample").await;
    let cid = bob.request("#authenticate", json!(token("bob"))).await;
    let reply = bob.seek("auth reply", |f| f.get("rid").is_some()).await;
    assert_eq!(
        reply,
        json!({"rid":cid,"data":{"isAuthenticated":true,"authError":null}})
    );
    let join = alice
        .seek("join bob", |f| f["data"]["data"]["username"] == "bob")
        .await;
    assert_eq!(join["data"]["data"]["type"], "join");
    // A pong to bob's socket channel reaches bob.
    let bob_own = format!("presence>socket/{}", bob.id);
    bob.subscribe(&bob_own).await;
    let pong = json!({"type":"pong","channel":"sample","username":"alice","timeout":1000});
    alice
        .text(&json!({"event":"#publish","data":{"channel":bob_own,"data":pong}}).to_string())
        .await;
    assert_eq!(bob.publish_on(&bob_own).await, pong);

    // Logout: leave; login again: join; disconnect: leave.
    bob.text(r##"{"event":"#removeAuthToken"}"##).await;
    assert_eq!(
        alice
            .seek("leave bob", |f| f["data"]["data"]["type"] == "leave")
            .await["data"]["data"],
        json!({"type":"leave","username":"bob"})
    );
    let ping = alice
        .seek("a ping", |f| f["data"]["data"]["type"] == "ping")
        .await;
    assert_eq!(ping["data"]["data"]["users"], json!(["alice"]));
    bob.request("#authenticate", json!(token("bob"))).await;
    alice
        .seek("join bob", |f| {
            f["data"]["data"]["username"] == "bob" && f["data"]["data"]["type"] == "join"
        })
        .await;
    drop(bob);
    alice
        .seek("leave bob", |f| f["data"]["data"]["type"] == "leave")
        .await;

    // Unsubscribe: the unsubscriber's own leave.
    alice
        .text(r##"{"event":"#unsubscribe","data":"sample"}"##)
        .await;
    assert_eq!(
        alice
            .seek("leave alice", |f| f["data"]["data"]["type"] == "leave")
            .await["data"]["data"],
        json!({"type":"leave","username":"alice"})
    );
    srv.stop().await;
}

#[tokio::test]
async fn expired_token_is_dropped_on_the_next_event() {
    let srv = TestServer::start_with(|cfg| {
        cfg.channels.open_channels = vec!["*".into()];
        cfg.front_ends.sc.sc_presence_interval = 300;
        cfg.front_ends.sc.sc_ping_timeout = 10_000;
    })
    .await;
    let mut w = Sc::connect(&srv, None).await;
    w.subscribe("presence>room").await;
    let mut s = Sc::open(&srv).await;
    let exp = rollcall::time::unix_now() + 2;
    let short = sign_exact(SECRET, &json!({"username":"brief","exp":exp}));
    s.text(&json!({"event":"#handshake","data":{"authToken":short},"cid":1}).to_string())
        .await;
    assert_eq!(s.next().await["data"]["isAuthenticated"], true);
    s.subscribe("room").await;
    w.seek("join brief", |f| f["data"]["data"]["username"] == "brief")
        .await;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    s.text("#2").await;
    assert_eq!(
        s.seek("#removeAuthToken", |f| f["event"] == "#removeAuthToken")
            .await,
        json!({"event":"#removeAuthToken","data":null})
    );
    w.seek("leave brief", |f| {
        f["data"]["data"] == json!({"type":"leave","username":"brief"})
    })
    .await;
    srv.stop().await;
}

/// SC and Hotsock in one channel: members, pings, messages both ways and
/// HTTP API publishes.
#[cfg(feature = "hotsock")]
#[tokio::test]
async fn sc_and_hotsock_share_channels() {
    let srv = server().await;
    let room = "presence.room";
    let mut jim = srv.connect(user("jim", json!({"name":"Jim"}))).await;
    jim.join(room).await;

    let mut alice = Sc::connect(&srv, Some("alice")).await;
    let tracked = format!("presence>{room}");
    alice.subscribe(&tracked).await;
    // jim (Hotsock) is in the pings of presence>presence.room.
    let ping = alice
        .seek("a ping", |f| f["data"]["data"]["type"] == "ping")
        .await;
    assert_eq!(ping["data"]["data"]["users"], json!(["jim"]));

    // alice joins: Hotsock sees her as a member; alice sees her own join.
    alice.subscribe(room).await;
    let added = jim.expect("hotsock.memberAdded").await;
    assert_eq!(added["data"]["member"], json!({"uid":"alice","umd":null}));
    assert_eq!(srv.member_uids(room).await, ["jim", "alice"]);

    // A Hotsock member joining and leaving shows as join/leave on presence>C.
    let mut dwight = srv.connect(user("dwight", json!(null))).await;
    dwight.join(room).await;
    assert_eq!(
        alice
            .seek("join dwight", |f| f["data"]["data"]["username"] == "dwight")
            .await["data"]["data"],
        json!({"type":"join","username":"dwight","timeout":1000})
    );
    dwight.close().await;
    assert_eq!(
        alice
            .seek("leave dwight", |f| f["data"]["data"]["type"] == "leave")
            .await["data"]["data"],
        json!({"type":"leave","username":"dwight"})
    );
    jim.expect("hotsock.memberAdded").await;
    jim.expect("hotsock.memberRemoved").await;

    // SC publish → Hotsock message; Hotsock message → SC; HTTP → both.
    alice
        .request("#publish", json!({"channel": room, "data": {"text":"hi"}}))
        .await;
    let msg = jim.seek_event(room).await;
    assert_eq!(msg["event"], "publish");
    assert_eq!(msg["data"], json!({"text":"hi"}));
    assert_eq!(
        alice.publish_on(room).await,
        json!({"text":"hi"}),
        "publisher echo"
    );
    jim.send(json!({"event":"chat","channel":room,"data":"hello"}))
        .await;
    assert_eq!(alice.publish_on(room).await, json!("hello"));
    srv.publish(room, "notice", json!({"n":1})).await;
    assert_eq!(alice.publish_on(room).await, json!({"n":1}));

    // alice leaves by disconnecting: Hotsock sees memberRemoved.
    drop(alice);
    let removed = loop {
        let f = jim.next().await;
        if f["event"] == "hotsock.memberRemoved" {
            break f;
        }
    };
    assert_eq!(removed["data"]["member"]["uid"], "alice");
    srv.stop().await;
}

/// Seeks a Hotsock channel message (skipping member events and pings).
#[cfg(feature = "hotsock")]
trait SeekEvent {
    async fn seek_event(&mut self, channel: &str) -> Value;
}

#[cfg(feature = "hotsock")]
impl SeekEvent for Client {
    async fn seek_event(&mut self, channel: &str) -> Value {
        loop {
            let f = self.next().await;
            let event = f["event"].as_str().unwrap_or("");
            if f["channel"] == channel && !event.starts_with("hotsock.") {
                return f;
            }
        }
    }
}

/// `GET /api/users/{uid}` as (online, connections).
async fn user_status(srv: &TestServer, uid: &str) -> (Value, Value) {
    let (status, body) = srv.http("GET", &format!("/api/users/{uid}"), None).await;
    assert_eq!(status, 200, "{body}");
    (body["online"].clone(), body["connections"].clone())
}

#[tokio::test]
async fn a_socket_that_logs_in_is_that_users_connection() {
    let srv = TestServer::start_with(|cfg| {
        cfg.channels.open_channels = vec!["*".into()];
        cfg.limits.max_connections_per_user = 2;
    })
    .await;
    // Anonymous at first: nobody's connection.
    let mut sc = Sc::connect(&srv, None).await;
    assert_eq!(user_status(&srv, "dora").await, (json!(false), json!(0)));

    // #authenticate: dora is online with this socket, and a send to dora
    // reaches it (as a custom event).
    let cid = sc.request("#authenticate", json!(token("dora"))).await;
    sc.seek("auth reply", |f| f["rid"] == cid).await;
    assert_eq!(user_status(&srv, "dora").await, (json!(true), json!(1)));
    let (status, body) = srv
        .http(
            "POST",
            "/api/users/dora/send",
            Some(json!({"event": "note", "data": {"n": 1}})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let got = sc.seek("the note", |f| f["event"] == "note").await;
    assert_eq!(got["data"], json!({"n": 1}));

    // A handshake token counts the same way; the per-user limit applies.
    let _second = Sc::connect(&srv, Some("dora")).await;
    assert_eq!(user_status(&srv, "dora").await, (json!(true), json!(2)));
    let mut third = Sc::connect(&srv, None).await;
    let cid = third.request("#authenticate", json!(token("dora"))).await;
    let refused = third.seek("auth reply", |f| f["rid"] == cid).await;
    assert_eq!(refused["data"]["isAuthenticated"], false, "{refused}");
    assert!(
        refused["data"]["authError"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("open connections")),
        "{refused}"
    );
    assert_eq!(user_status(&srv, "dora").await, (json!(true), json!(2)));

    // Logging in as someone else, then out, moves the connection along.
    let cid = sc.request("#authenticate", json!(token("erin"))).await;
    sc.seek("auth reply", |f| f["rid"] == cid).await;
    assert_eq!(user_status(&srv, "dora").await, (json!(true), json!(1)));
    assert_eq!(user_status(&srv, "erin").await, (json!(true), json!(1)));
    let cid = sc.request("#removeAuthToken", Value::Null).await;
    sc.seek("logout reply", |f| f["rid"] == cid).await;
    assert_eq!(user_status(&srv, "erin").await, (json!(false), json!(0)));
    let (_, body) = srv
        .http(
            "POST",
            "/api/users/erin/send",
            Some(json!({"event": "note"})),
        )
        .await;
    assert_eq!(body["connections"], 0, "{body}");
}
