//! Privacy over real sockets: a hidden user on all four front ends
//! (Hotsock, Socket.IO with raw EIO4 frames, SocketCluster raw frames,
//! sgc) is in no member list, count, member event or user presence, yet
//! receives messages; showing and hiding again; a client hiding itself;
//! the choice surviving a restart on the same data dir; the server
//! switches.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::common::*;

/// A raw WebSocket client of any front end: text frames in and out.
struct Raw {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Engine.IO 4: answer the server's `2` pings with `3`.
    eio: bool,
}

impl Raw {
    async fn open(url: &str, subprotocol: Option<&'static str>) -> Raw {
        let mut req = url.into_client_request().expect("request");
        if let Some(p) = subprotocol {
            req.headers_mut()
                .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(p));
        }
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
            .await
            .expect("upgrade in time")
            .expect("upgrade accepted");
        Raw { ws, eio: false }
    }

    async fn send(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.to_string().into()))
            .await
            .expect("send");
    }

    /// Reads text frames until one contains `needle`; returns it.
    async fn seek(&mut self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no frame with {needle:?} in time"))
                .expect("stream open")
                .expect("frame");
            if let Message::Text(t) = msg {
                if self.eio && t.as_str() == "2" {
                    self.send("3").await;
                    continue;
                }
                if t.contains(needle) {
                    return t.to_string();
                }
            }
        }
    }

    /// Socket.IO (EIO4) `/chat` with a JWT, subscribed to `channel`.
    async fn socketio(srv: &TestServer, claims: Value, channel: &str) -> Raw {
        let token = sign(&mut claims.clone());
        let url = format!(
            "ws://{}/socket.io/?tokenType=jwt&token={token}&EIO=4&transport=websocket",
            srv.addr
        );
        let mut c = Raw::open(&url, None).await;
        c.eio = true;
        c.seek("0{").await;
        c.send("40/chat,").await;
        c.seek("40/chat").await;
        let sub = json!(["SUBSCRIBE_CHANNEL", {"channel": {"type": "topic", "_id": channel}}]);
        c.send(&format!("42/chat,{sub}")).await;
        c.seek("CHANNEL_SUBSCRIBED").await;
        c
    }

    /// SocketCluster v1 with a token for `username`, subscribed to `channel`.
    async fn sc(srv: &TestServer, username: &str, channel: &str) -> Raw {
        let mut c = Raw::open(&format!("ws://{}/socketcluster/", srv.addr), None).await;
        let token = sign(&mut json!({"username": username}));
        c.send(&json!({"event": "#handshake", "data": {"authToken": token}, "cid": 1}).to_string())
            .await;
        c.seek("\"rid\":1").await;
        c.send(&json!({"event": "#subscribe", "data": {"channel": channel}, "cid": 2}).to_string())
            .await;
        c.seek("\"rid\":2").await;
        c
    }

    /// sgc with a token for `uid`, joined and subscribed to `channel`.
    async fn sgc(srv: &TestServer, uid: &str, channel: &str) -> Raw {
        let token = sign(&mut json!({"uid": uid, "name": uid}));
        let url = format!("ws://{}/sgc?token={token}", srv.addr);
        let mut c = Raw::open(&url, Some("presence.esegece.com")).await;
        c.seek("sgc@presence@session").await;
        let me = json!({"id": uid, "name": uid, "info": ""});
        c.send(
            &json!({"jsonrpc": "2.0", "method": "sgc@presence@member@new", "member": me})
                .to_string(),
        )
        .await;
        c.seek("sgc@presence@member@new").await;
        c.send(
            &json!({"jsonrpc": "2.0", "method": "sgc@presence@channel@member@new", "member": me, "channel": {"name": channel}})
                .to_string(),
        )
        .await;
        c.seek("sgc@presence@channel@member@new").await;
        c
    }
}

async fn set_privacy(srv: &TestServer, uid: &str, visible: Value) -> Value {
    let (status, body) = srv
        .http(
            "PUT",
            &format!("/api/users/{uid}/privacy"),
            Some(json!({"visible": visible})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn summary(srv: &TestServer, channel: &str) -> Value {
    srv.http("GET", &format!("/api/channels/{channel}/summary"), None)
        .await
        .1
}

const ROOM: &str = "presence.room";

#[tokio::test]
async fn a_hidden_user_is_seen_on_no_front_end_but_receives_everything() {
    // Open channels: the SocketCluster and Socket.IO clients carry no grants.
    let srv = TestServer::start_open().await;
    let mut jim = srv.connect(user("jim", json!({"name": "Jim"}))).await;
    jim.join(ROOM).await;
    let mut dot = srv.connect(anonymous()).await;
    dot.join("user:eve").await;
    let body = set_privacy(&srv, "eve", json!(false)).await;
    assert_eq!(
        body,
        json!({"uid": "eve", "visible": false, "choice": false, "tracking": true, "user_toggle": true})
    );

    // eve on all four front ends.
    let mut hotsock = srv.connect(user("eve", json!({"name": "Eve"}))).await;
    let joined = hotsock.join(ROOM).await;
    assert_eq!(
        uids(&joined["data"]["members"]),
        ["jim"],
        "not even in her own list"
    );
    let mut sio = Raw::socketio(&srv, json!({"sub": "eve", "name": "Eve"}), ROOM).await;
    let mut sc = Raw::sc(&srv, "eve", ROOM).await;
    let mut sgc = Raw::sgc(&srv, "eve", ROOM).await;
    // A content lease of hers holds no membership either.
    let (status, _) = srv
        .http(
            "POST",
            "/api/presence/refresh",
            Some(json!({"user": "eve", "ids": ["content:1"]})),
        )
        .await;
    assert_eq!(status, 200);

    // Nobody sees her: no member event, list, count or user presence.
    jim.expect_none(300).await;
    dot.expect_none(10).await;
    assert_eq!(srv.member_uids(ROOM).await, ["jim"]);
    assert_eq!(srv.channel(ROOM).await["subscriptionsCount"], 1);
    assert_eq!(
        summary(&srv, ROOM).await,
        json!({"channel": ROOM, "members": 1, "connections": 1})
    );
    assert_eq!(summary(&srv, "content:1").await["members"], 0);
    let (_, list) = srv.http("GET", "/api/channels", None).await;
    let counts: Vec<(Value, Value, Value)> = list["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].clone(),
                c["members"].clone(),
                c["connections"].clone(),
            )
        })
        .collect();
    // content:1 (her lease only) is not occupied; user:eve has dot.
    assert_eq!(
        counts,
        [
            (json!(ROOM), json!(1), json!(1)),
            (json!("user:eve"), json!(0), json!(1))
        ]
    );
    let (_, status) = srv.http("GET", "/api/users/eve", None).await;
    assert_eq!(
        status,
        json!({"uid": "eve", "online": false, "since": null, "connections": 0})
    );

    // Every one of her connections still receives messages.
    srv.publish(ROOM, "news", json!("for-everyone")).await;
    jim.expect("news").await;
    assert_eq!(hotsock.expect("news").await["data"], "for-everyone");
    sio.seek("for-everyone").await;
    sc.seek("for-everyone").await;
    sgc.seek("for-everyone").await;

    // She shows herself: one member for four connections, everywhere.
    let body = set_privacy(&srv, "eve", json!(true)).await;
    assert_eq!(body["visible"], true);
    let added = jim.expect("hotsock.memberAdded").await;
    assert_eq!(added["data"]["member"]["uid"], "eve");
    let mut list = uids(&added["data"]["members"]);
    list.sort();
    assert_eq!(list, ["eve", "jim"]);
    assert_eq!(
        dot.expect("user.presence").await["data"],
        json!({"uid": "eve", "online": true})
    );
    assert_eq!(srv.member_uids("content:1").await, ["eve"]);
    assert_eq!(summary(&srv, ROOM).await["connections"], 5);
    // All four are eve's connections, SocketCluster's (logged in by its
    // handshake token) included.
    assert_eq!(
        srv.http("GET", "/api/users/eve", None).await.1["connections"],
        4
    );

    // And hides again: one leave.
    set_privacy(&srv, "eve", json!(false)).await;
    loop {
        let f = jim.next().await;
        match f["event"].as_str() {
            // The four presences carry different data; the member may be
            // updated as they come back, before the leave.
            Some("hotsock.memberUpdated") => continue,
            Some("hotsock.memberRemoved") => {
                assert_eq!(f["data"]["member"]["uid"], "eve");
                assert_eq!(uids(&f["data"]["members"]), ["jim"]);
                break;
            }
            _ => panic!("unexpected {f}"),
        }
    }
    assert_eq!(
        dot.expect("user.presence").await["data"],
        json!({"uid": "eve", "online": false})
    );
    assert!(srv.channel("content:1").await.get("members").is_none());
    jim.expect_none(200).await;
    srv.stop().await;
}

#[tokio::test]
async fn a_client_hides_itself_and_the_choice_survives_a_restart() {
    let dir = std::env::temp_dir().join(format!(
        "rollcall-services-privacy-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let data_dir = dir.clone();
    let srv = TestServer::start_with(|c| c.services.data_dir = Some(data_dir)).await;
    let mut jim = srv.connect(user("jim", json!(null))).await;
    jim.join(ROOM).await;
    let mut eve = srv.connect(user("eve", json!(null))).await;
    eve.join(ROOM).await;
    jim.expect("hotsock.memberAdded").await;

    // The client sets its own privacy with its connection id and secret.
    let secret = eve.connected["data"]["connectionSecret"]
        .as_str()
        .unwrap()
        .to_string();
    let body =
        json!({"connection_id": eve.connection_id, "connection_secret": secret, "visible": false});
    let (status, resp) = http(srv.addr, "POST", "/api/client/privacy", Some(body), None).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["visible"], false);
    let removed = jim.expect("hotsock.memberRemoved").await;
    assert_eq!(removed["data"]["member"]["uid"], "eve");
    // Her own subscription learns she is no longer listed.
    assert_eq!(
        eve.expect("hotsock.memberRemoved").await["data"]["member"]["uid"],
        "eve"
    );
    let bad =
        json!({"connection_id": eve.connection_id, "connection_secret": "nope", "visible": true});
    let (status, resp) = http(srv.addr, "POST", "/api/client/privacy", Some(bad), None).await;
    assert_eq!(
        (status, resp["error"]["code"].clone()),
        (401, json!("INVALID_CONNECTION"))
    );
    srv.stop().await;

    // Restarted on the same data dir: still hidden.
    let data_dir = dir.clone();
    let srv = TestServer::start_with(|c| c.services.data_dir = Some(data_dir)).await;
    let (_, body) = srv.http("GET", "/api/users/eve/privacy", None).await;
    assert_eq!(body["visible"], false, "{body}");
    assert_eq!(body["choice"], false, "{body}");
    let mut jim = srv.connect(user("jim", json!(null))).await;
    jim.join(ROOM).await;
    let mut eve = srv.connect(user("eve", json!(null))).await;
    eve.join(ROOM).await;
    jim.expect_none(200).await;
    assert_eq!(srv.member_uids(ROOM).await, ["jim"]);
    // Forgetting the choice brings back the default (visible).
    let body = set_privacy(&srv, "eve", Value::Null).await;
    assert_eq!(
        (body["visible"].clone(), body["choice"].clone()),
        (json!(true), Value::Null)
    );
    jim.expect("hotsock.memberAdded").await;
    srv.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn rand_suffix() -> String {
    format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}

#[tokio::test]
async fn server_switches_hide_everyone_or_forbid_toggling() {
    // Tracking off: nobody is seen, though everyone is connected.
    let srv = TestServer::start_with(|c| c.services.presence_tracking = "off".into()).await;
    let mut jim = srv.connect(user("jim", json!(null))).await;
    let joined = jim.join(ROOM).await;
    assert_eq!(joined["data"]["members"], json!([]));
    let mut pam = srv.connect(user("pam", json!(null))).await;
    pam.join(ROOM).await;
    jim.expect_none(200).await;
    assert_eq!(
        srv.http("GET", "/api/users/jim", None).await.1["online"],
        false
    );
    srv.publish(ROOM, "hello", json!(1)).await;
    jim.expect("hello").await;
    pam.expect("hello").await;
    srv.stop().await;

    // No user toggle: choices are refused (and everyone is visible, even
    // with --default-visible false).
    let srv = TestServer::start_with(|c| {
        c.services.allow_user_toggle = false;
        c.services.default_visible = false;
    })
    .await;
    let (status, body) = srv
        .http(
            "PUT",
            "/api/users/eve/privacy",
            Some(json!({"visible": false})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (409, json!("USER_TOGGLE_DISABLED"))
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--allow-user-toggle")
    );
    let (_, body) = srv.http("GET", "/api/users/eve/privacy", None).await;
    assert_eq!(body["visible"], true);
    srv.stop().await;

    // Hidden by default: users appear only once they choose to.
    let srv = TestServer::start_with(|c| c.services.default_visible = false).await;
    let mut jim = srv.connect(user("jim", json!(null))).await;
    jim.join(ROOM).await;
    let mut pam = srv.connect(user("pam", json!(null))).await;
    pam.join(ROOM).await;
    jim.expect_none(200).await;
    set_privacy(&srv, "pam", json!(true)).await;
    assert_eq!(
        jim.expect("hotsock.memberAdded").await["data"]["member"]["uid"],
        "pam"
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    srv.stop().await;
}
