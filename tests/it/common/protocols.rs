//! One small raw client for each of the four front ends behind one type,
//! so a test can run the same steps over every protocol
//! (tests/it/authorization.rs): connect with or without a token, subscribe,
//! publish, read messages and member events, each in the protocol's own
//! frames. A refusal comes back as the protocol's code and its reason.
//!
//! Readers skip only what carries nothing about channels: WebSocket and
//! protocol pings, SocketCluster presence `ping` packets, and sgc's
//! server-wide member list (`member@new` / `member@remove`, sent to every
//! sgc member). Everything else is a frame the test must expect.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{Client, Ending, TestServer, WAIT, http_raw, sign};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A front end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Hotsock,
    SocketIo,
    Sc,
    Sgc,
}

impl Proto {
    pub const ALL: [Proto; 4] = [Proto::Hotsock, Proto::SocketIo, Proto::Sc, Proto::Sgc];

    /// The protocol name the channel check is told.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Hotsock => "hotsock",
            Proto::SocketIo => "socketio",
            Proto::Sc => "socketcluster",
            Proto::Sgc => "sgc",
        }
    }

    /// The front end refuses connections without a token.
    pub fn needs_token(self) -> bool {
        matches!(self, Proto::Hotsock | Proto::SocketIo)
    }

    /// The event name of a [`Peer::publish`]: what the channel policy checks
    /// against the `messages` directives, and what other front ends see.
    pub fn publish_event(self) -> &'static str {
        match self {
            Proto::Hotsock | Proto::SocketIo => "chat",
            Proto::Sc => "publish",
            Proto::Sgc => "message",
        }
    }

    /// A subscriber of `channel` gets member events (Hotsock: on presence
    /// channels only).
    pub fn shows_members(self, channel: &str) -> bool {
        self != Proto::Hotsock || channel.starts_with("presence.")
    }

    /// A client must be subscribed before the protocol lets it publish
    /// (it answers with its own "subscribe first" code before the channel
    /// policy is asked).
    pub fn publish_needs_subscription(self) -> bool {
        matches!(self, Proto::SocketIo | Proto::Sgc)
    }

    /// The code of a subscribe the channel policy refused (sgc: on a
    /// channel that exists).
    pub fn subscribe_refused(self) -> &'static str {
        match self {
            Proto::Hotsock => "SUBSCRIBE_PERMISSION_DENIED",
            Proto::SocketIo => "channel.forbidden",
            Proto::Sc => "ForbiddenError",
            Proto::Sgc => "10",
        }
    }

    /// The code of a publish the channel policy refused.
    pub fn publish_refused(self) -> &'static str {
        match self {
            Proto::Hotsock => "PUBLISH_PERMISSION_DENIED",
            Proto::SocketIo => "channel.forbidden",
            Proto::Sc => "ForbiddenError",
            Proto::Sgc => "20",
        }
    }

    /// The code and reason of the protocol's own refusal of a publish from
    /// a client not subscribed to `channel` (an existing channel), for the
    /// front ends that require the subscription.
    pub fn not_subscribed(self, channel: &str) -> Option<Refusal> {
        let (code, reason) = match self {
            Proto::SocketIo => (
                "app.event.channel.subscription.required",
                format!(
                    "subscribe to {channel:?} (SUBSCRIBE_CHANNEL) before you send messages to it"
                ),
            ),
            Proto::Sgc => ("12", "Subscription not exists.".to_string()),
            Proto::Hotsock | Proto::Sc => return None,
        };
        Some(Refusal {
            code: code.into(),
            reason,
        })
    }
}

/// A refusal in the protocol's own words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Hotsock error code, Socket.IO `error.code`, SocketCluster error
    /// name, sgc error code (as text).
    pub code: String,
    /// The human-readable reason.
    pub reason: String,
}

enum Inner {
    Hotsock(Client),
    SocketIo(Ws),
    Sc {
        ws: Ws,
        cid: u64,
        id: String,
        /// cids of requests whose answers were not read yet.
        pending: VecDeque<u64>,
    },
    Sgc(Ws),
}

/// A connected client of one front end.
pub struct Peer {
    pub proto: Proto,
    /// The token's user id (None: anonymous).
    pub user: Option<String>,
    /// The member key it joins channels as (None: it joins as no member,
    /// like an anonymous SocketCluster socket).
    pub member: Option<String>,
    inner: Inner,
}

/// Reads the next text frame before `deadline`, skipping WebSocket pings;
/// None when the deadline passes. A close or error is a test failure.
/// The next text frame before `deadline` (skipping pings and pongs), or
/// None; panics, naming `who`, when the connection ends first.
pub async fn read_text(ws: &mut Ws, deadline: Instant, who: &str) -> Option<String> {
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return None,
            Ok(Some(Ok(Message::Text(t)))) => return Some(t.to_string()),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(other) => panic!("{who}: the connection ended or sent something else: {other:?}"),
        }
    }
}

/// Sends one text frame.
pub async fn send_text(ws: &mut Ws, text: String) {
    ws.send(Message::Text(text.into())).await.expect("send");
}

async fn open(url: String, subprotocol: Option<&'static str>) -> Result<Ws, u16> {
    let mut req = url.into_client_request().expect("request");
    if let Some(p) = subprotocol {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(p));
    }
    let attempt = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("the upgrade is answered in time");
    match attempt {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("connect failed: {e}"),
    }
}

/// The status and body of a refused WebSocket upgrade of `path`.
pub async fn refused_upgrade(srv: &TestServer, path: &str) -> String {
    refused_upgrade_at(srv.addr, path).await
}

async fn refused_upgrade_at(addr: SocketAddr, path: &str) -> String {
    let headers = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let (status, body) = http_raw(addr, "GET", path, headers, b"").await;
    format!(
        "HTTP {status}: {}",
        body.as_str().unwrap_or(&body.to_string())
    )
}

impl Peer {
    /// Connects to `proto`'s endpoint with a token signed from `claims`
    /// (None: no token) and does what a client does before its first
    /// request (the Socket.IO namespace connect, the SocketCluster
    /// handshake, the sgc `member@new`). Err: the connection itself was
    /// refused, with the reason.
    pub async fn connect(
        srv: &TestServer,
        proto: Proto,
        claims: Option<Value>,
    ) -> Result<Peer, String> {
        Self::connect_to(srv.addr, proto, claims).await
    }

    /// [`Peer::connect`] to a server at `addr` (e.g. a server process,
    /// which must take tokens signed with [`super::SECRET`]).
    pub async fn connect_to(
        addr: SocketAddr,
        proto: Proto,
        claims: Option<Value>,
    ) -> Result<Peer, String> {
        let user = claims
            .as_ref()
            .and_then(|c| c["uid"].as_str())
            .map(str::to_string);
        let token = claims.map(|mut c| sign(&mut c));
        let (inner, member) = match proto {
            Proto::Hotsock => {
                let path = match &token {
                    Some(t) => format!("/hotsock?token={t}"),
                    None => "/hotsock".into(),
                };
                let ws = match open(format!("ws://{addr}{path}"), None).await {
                    Ok(ws) => ws,
                    Err(_) => return Err(refused_upgrade_at(addr, &path).await),
                };
                let mut c = Client {
                    ws,
                    connection_id: String::new(),
                    connected: Value::Null,
                };
                let hello = c.read_connected().await;
                assert_eq!(hello["meta"]["uid"], json!(user), "{hello}");
                (Inner::Hotsock(c), user.clone())
            }
            Proto::SocketIo => {
                let query = match &token {
                    Some(t) => format!("tokenType=jwt&token={t}"),
                    None => "client=test".into(),
                };
                let url = format!("ws://{addr}/socket.io/?{query}&EIO=4&transport=websocket");
                let mut ws = open(url, None)
                    .await
                    .unwrap_or_else(|s| panic!("Socket.IO upgrade refused: HTTP {s}"));
                let who = "Socket.IO connect";
                let hello = read_text(&mut ws, Instant::now() + WAIT, who).await;
                assert!(
                    hello.as_deref().is_some_and(|h| h.starts_with("0{")),
                    "{hello:?}"
                );
                send_text(&mut ws, "40/chat,".into()).await;
                loop {
                    let f = read_text(&mut ws, Instant::now() + WAIT, who)
                        .await
                        .expect("an answer to the namespace connect");
                    // Engine.IO 4 servers ping at once; an unanswered ping
                    // closes the connection after the ping timeout.
                    if f == "2" {
                        send_text(&mut ws, "3".into()).await;
                        continue;
                    }
                    if f.starts_with("40/chat") {
                        break;
                    }
                    if let Some(rest) = f.strip_prefix("44/chat,") {
                        let v: Value = serde_json::from_str(rest).expect("connect error JSON");
                        return Err(v["message"].as_str().unwrap_or(rest).to_string());
                    }
                }
                let mut peer = Peer {
                    proto,
                    user: None,
                    member: None,
                    inner: Inner::SocketIo(ws),
                };
                peer.socketio_ready().await;
                let Inner::SocketIo(ws) = peer.inner else {
                    unreachable!()
                };
                (Inner::SocketIo(ws), user.clone())
            }
            Proto::Sc => {
                let mut ws = open(format!("ws://{addr}/socketcluster/"), None)
                    .await
                    .unwrap_or_else(|s| panic!("SocketCluster upgrade refused: HTTP {s}"));
                let hs = json!({"event": "#handshake", "data": {"authToken": token}, "cid": 1});
                send_text(&mut ws, hs.to_string()).await;
                let mut peer = Peer {
                    proto,
                    user: None,
                    member: None,
                    inner: Inner::Sc {
                        ws,
                        cid: 1,
                        id: String::new(),
                        pending: VecDeque::new(),
                    },
                };
                let reply = peer.next().await;
                assert_eq!(reply["rid"], 1, "{reply}");
                assert_eq!(
                    reply["data"]["isAuthenticated"],
                    token.is_some(),
                    "the handshake token: {reply}"
                );
                let Inner::Sc { ws, .. } = peer.inner else {
                    unreachable!()
                };
                let id = reply["data"]["id"].as_str().expect("socket id").to_string();
                (
                    Inner::Sc {
                        ws,
                        cid: 1,
                        id,
                        pending: VecDeque::new(),
                    },
                    user.clone(),
                )
            }
            Proto::Sgc => {
                let path = match &token {
                    Some(t) => format!("/sgc?token={t}"),
                    None => "/sgc".into(),
                };
                let ws =
                    match open(format!("ws://{addr}{path}"), Some("presence.esegece.com")).await {
                        Ok(ws) => ws,
                        Err(_) => return Err(refused_upgrade_at(addr, &path).await),
                    };
                let mut peer = Peer {
                    proto,
                    user: None,
                    member: None,
                    inner: Inner::Sgc(ws),
                };
                let session = peer.next().await;
                assert_eq!(session["method"], "sgc@presence@session", "{session}");
                let id = session["message"]["text"]
                    .as_str()
                    .expect("session id")
                    .to_string();
                peer.sgc(
                    "member@new",
                    json!({"member": {"id": id, "name": "tester", "info": ""}}),
                )
                .await;
                // Our own member@new; other members' are skipped by next().
                let Inner::Sgc(ws) = &mut peer.inner else {
                    unreachable!()
                };
                loop {
                    let t = read_text(ws, Instant::now() + WAIT, "sgc join")
                        .await
                        .expect("member@new in time");
                    let f: Value = serde_json::from_str(&t).expect("JSON");
                    if f["method"] == "sgc@presence@member@new" && f["member"]["id"] == id.as_str()
                    {
                        break;
                    }
                    assert_eq!(f["method"], "sgc@presence@member@new", "{f}");
                }
                let Inner::Sgc(ws) = peer.inner else {
                    unreachable!()
                };
                (Inner::Sgc(ws), Some(id))
            }
        };
        Ok(Peer {
            proto,
            user,
            member,
            inner,
        })
    }

    /// Socket.IO: checks that the server handles this socket's events: a
    /// probe event is answered with `unknown.event`. (On socketioxide,
    /// which served these clients before, an event sent right after the
    /// connect acknowledgment could be dropped; the own engine handles
    /// events in order from the first, so the first probe is answered.)
    /// Late answers to earlier probes are skipped by [`Peer::next_within`].
    async fn socketio_ready(&mut self) {
        for _ in 0..50 {
            self.emit(PROBE, json!({})).await;
            if let Some(f) = self.next_probe_answer(Duration::from_millis(100)).await {
                assert_eq!(f["data"]["code"], "unknown.event", "{f}");
                return;
            }
        }
        panic!("{}: no Socket.IO event was answered", self.label());
    }

    async fn next_probe_answer(&mut self, within: Duration) -> Option<Value> {
        let Inner::SocketIo(ws) = &mut self.inner else {
            unreachable!()
        };
        let deadline = Instant::now() + within;
        loop {
            let text = read_text(ws, deadline, "Socket.IO probe").await?;
            if text == "2" {
                send_text(ws, "3".into()).await;
                continue;
            }
            let f = text.strip_prefix("42/chat,").map(socketio_event);
            match f {
                Some(f) if is_probe_answer(&f) => return Some(f),
                other => {
                    panic!("Socket.IO: unexpected {other:?} before any event was answered: {text}")
                }
            }
        }
    }

    /// The member key it joins `channel` as, if it becomes a member there
    /// (Hotsock: on presence channels only).
    pub fn member_of(&self, channel: &str) -> Option<&str> {
        match self.proto {
            Proto::Hotsock if !channel.starts_with("presence.") => None,
            _ => self.member.as_deref(),
        }
    }

    pub fn label(&self) -> String {
        format!("{:?} client {:?}", self.proto, self.user)
    }

    /// The next frame within `within`, as JSON (Socket.IO events as
    /// `{"event","data"}`), or None.
    pub async fn next_within(&mut self, within: Duration) -> Option<Value> {
        let deadline = Instant::now() + within;
        let who = self.label();
        loop {
            let (ws, proto) = match &mut self.inner {
                Inner::Hotsock(c) => (&mut c.ws, Proto::Hotsock),
                Inner::SocketIo(ws) => (ws, Proto::SocketIo),
                Inner::Sc { ws, .. } => (ws, Proto::Sc),
                Inner::Sgc(ws) => (ws, Proto::Sgc),
            };
            let text = read_text(ws, deadline, &who).await?;
            match proto {
                Proto::Hotsock => return Some(serde_json::from_str(&text).expect("JSON")),
                Proto::SocketIo => {
                    if text == "2" {
                        send_text(ws, "3".into()).await;
                        continue;
                    }
                    let f = match text.strip_prefix("42/chat,") {
                        Some(rest) => socketio_event(rest),
                        None => json!({ "packet": text }),
                    };
                    if !is_probe_answer(&f) {
                        return Some(f);
                    }
                }
                Proto::Sc => {
                    if text == "#1" {
                        send_text(ws, "#2".into()).await;
                        continue;
                    }
                    if text.is_empty() {
                        continue;
                    }
                    let f: Value = serde_json::from_str(&text).expect("JSON");
                    let presence_ping = f["event"] == "#publish"
                        && f["data"]["channel"]
                            .as_str()
                            .is_some_and(|c| c.starts_with("presence>"))
                        && f["data"]["data"]["type"] == "ping";
                    if !presence_ping {
                        return Some(f);
                    }
                }
                Proto::Sgc => {
                    let f: Value = serde_json::from_str(&text).expect("JSON");
                    let roster = f["method"] == "sgc@presence@member@new"
                        || f["method"] == "sgc@presence@member@remove";
                    if !roster {
                        return Some(f);
                    }
                }
            }
        }
    }

    /// The next frame (panics after [`WAIT`]).
    pub async fn next(&mut self) -> Value {
        let who = self.label();
        self.next_within(WAIT)
            .await
            .unwrap_or_else(|| panic!("{who}: no frame within {WAIT:?}"))
    }

    /// Asserts that nothing arrives within `ms`.
    pub async fn expect_none(&mut self, ms: u64) {
        if let Some(f) = self.next_within(Duration::from_millis(ms)).await {
            panic!("{}: unexpected frame {f}", self.label());
        }
    }

    /// Sends one raw text frame.
    pub async fn send(&mut self, text: String) {
        match &mut self.inner {
            Inner::Hotsock(c) => send_text(&mut c.ws, text).await,
            Inner::SocketIo(ws) | Inner::Sc { ws, .. } | Inner::Sgc(ws) => {
                send_text(ws, text).await
            }
        }
    }

    pub async fn emit(&mut self, event: &str, data: Value) {
        self.send(format!("42/chat,{}", json!([event, data]))).await;
    }

    async fn sgc(&mut self, method: &str, body: Value) {
        let mut f = json!({"jsonrpc": "2.0", "method": format!("sgc@presence@{method}")});
        if let (Some(obj), Value::Object(extra)) = (f.as_object_mut(), body) {
            obj.extend(extra);
        }
        self.send(f.to_string()).await;
    }

    /// SocketCluster: sends `event` with the next cid; returns the cid.
    pub async fn sc_request(&mut self, event: &str, data: Value) -> u64 {
        let Inner::Sc { cid, .. } = &mut self.inner else {
            panic!("not a SocketCluster client")
        };
        *cid += 1;
        let n = *cid;
        self.send(json!({"event": event, "data": data, "cid": n}).to_string())
            .await;
        n
    }

    /// SocketCluster: the socket id from the handshake.
    pub fn sc_id(&self) -> &str {
        match &self.inner {
            Inner::Sc { id, .. } => id,
            _ => panic!("not a SocketCluster client"),
        }
    }

    /// SocketCluster: subscribes to exactly this SC channel name.
    pub async fn sc_subscribe(&mut self, channel: &str) -> Result<(), Refusal> {
        self.send_subscribe(channel).await;
        self.read_subscribe(channel).await
    }

    /// The cid of the oldest SocketCluster request sent with
    /// [`Peer::send_subscribe`] or [`Peer::send_publish`].
    fn sc_pending(&mut self) -> u64 {
        match &mut self.inner {
            Inner::Sc { pending, .. } => pending.pop_front().expect("a request was sent"),
            _ => panic!("not a SocketCluster client"),
        }
    }

    /// Subscribes to `channel` so that it gets the channel's messages and,
    /// where the protocol shows them, its member events (SocketCluster:
    /// `channel`, then `presence>channel`, which needs the same rights).
    pub async fn subscribe(&mut self, channel: &str) -> Result<(), Refusal> {
        let own = self.sc_subscribe(channel).await;
        if self.proto != Proto::Sc {
            return own;
        }
        let tracker = self.sc_subscribe(&format!("presence>{channel}")).await;
        match (&own, &tracker) {
            (Ok(()), Ok(())) => {}
            (Err(_), Err(t)) => assert!(
                t.code == "ForbiddenError" && t.reason.contains(channel),
                "{}: presence>{channel} refused otherwise: {t:?}",
                self.label()
            ),
            _ => panic!(
                "{}: {channel} answered {own:?} but presence>{channel} {tracker:?}",
                self.label()
            ),
        }
        own
    }

    /// Sends a subscribe to `channel` (SocketCluster: to exactly this
    /// name) without waiting for the answer.
    pub async fn send_subscribe(&mut self, channel: &str) {
        match self.proto {
            Proto::Hotsock => {
                self.send(json!({"event": "hotsock.subscribe", "channel": channel}).to_string())
                    .await
            }
            Proto::SocketIo => {
                self.emit(
                    "SUBSCRIBE_CHANNEL",
                    json!({"channel": {"type": "topic", "_id": channel}}),
                )
                .await
            }
            Proto::Sc => {
                let cid = self
                    .sc_request("#subscribe", json!({"channel": channel}))
                    .await;
                if let Inner::Sc { pending, .. } = &mut self.inner {
                    pending.push_back(cid);
                }
            }
            Proto::Sgc => {
                let me = self.member.clone();
                self.sgc(
                    "channel@member@new",
                    json!({"member": {"id": me, "name": "", "info": ""}, "channel": {"name": channel}}),
                )
                .await
            }
        }
    }

    /// Reads the answer to [`Peer::send_subscribe`]: the next frame.
    pub async fn read_subscribe(&mut self, channel: &str) -> Result<(), Refusal> {
        let who = self.label();
        let f = self.next().await;
        let refused = |code: &Value, reason: &Value| Err(refusal(code, reason));
        match self.proto {
            Proto::Hotsock => match f["event"].as_str() {
                Some("hotsock.subscribed") if f["channel"] == channel => Ok(()),
                Some("hotsock.error") if f["channel"] == channel => {
                    refused(&f["error"]["code"], &f["error"]["message"])
                }
                _ => panic!("{who}: not an answer to the subscribe to {channel}: {f}"),
            },
            Proto::SocketIo => match f["event"].as_str() {
                Some("CHANNEL_SUBSCRIBED") if f["data"]["channel"]["_id"] == channel => Ok(()),
                Some("SUBSCRIBE_CHANNEL_FAILED") if f["data"]["channel"]["_id"] == channel => {
                    refused(&f["data"]["error"]["code"], &f["data"]["error"]["message"])
                }
                _ => panic!("{who}: not an answer to the subscribe to {channel}: {f}"),
            },
            Proto::Sc => {
                let cid = self.sc_pending();
                assert_eq!(
                    f["rid"], cid,
                    "{who}: not an answer to the subscribe to {channel}: {f}"
                );
                sc_result(&f)
            }
            Proto::Sgc => match f["method"].as_str() {
                Some("sgc@presence@channel@member@new")
                    if f["channel"]["name"] == channel
                        && f["member"]["id"] == json!(self.member) =>
                {
                    Ok(())
                }
                Some("sgc@presence@error@member@channel") if f["channel"]["name"] == channel => {
                    refused(&f["error"]["code"], &f["error"]["text"])
                }
                _ => panic!("{who}: not an answer to the subscribe to {channel}: {f}"),
            },
        }
    }

    /// Publishes `text` on `channel` (event [`Proto::publish_event`]) and
    /// reads the protocol's answer: Ok once the publisher's own copy (or,
    /// for Hotsock, which has no echo, a pong after it) arrives.
    pub async fn publish(&mut self, channel: &str, text: &str) -> Result<(), Refusal> {
        self.send_publish(channel, text).await;
        self.read_publish(channel, text).await
    }

    /// Sends [`Peer::publish`]'s frames without waiting for the answer.
    pub async fn send_publish(&mut self, channel: &str, text: &str) {
        match self.proto {
            Proto::Hotsock => {
                let msg = json!({"event": "chat", "channel": channel, "data": text});
                self.send(msg.to_string()).await;
                self.send(json!({"event": "hotsock.ping"}).to_string())
                    .await;
            }
            Proto::SocketIo => {
                self.emit(
                    "SEND_MESSAGE",
                    json!({"category": "chat", "topicId": channel, "content": {"bodyText": text}}),
                )
                .await
            }
            Proto::Sc => {
                let cid = self
                    .sc_request("#publish", json!({"channel": channel, "data": text}))
                    .await;
                if let Inner::Sc { pending, .. } = &mut self.inner {
                    pending.push_back(cid);
                }
            }
            Proto::Sgc => {
                let me = self.member.clone();
                self.sgc(
                    "publish@msg",
                    json!({"message": {"text": text}, "channel": {"name": channel},
                           "member": {"id": me, "name": "", "info": ""}}),
                )
                .await
            }
        }
    }

    /// Reads the answer to [`Peer::send_publish`].
    pub async fn read_publish(&mut self, channel: &str, text: &str) -> Result<(), Refusal> {
        let who = self.label();
        let f = self.next().await;
        match self.proto {
            Proto::Hotsock => {
                if f["event"] == "hotsock.pong" {
                    return Ok(());
                }
                assert!(
                    f["event"] == "hotsock.error" && f["channel"] == channel,
                    "{who}: not an answer to the message on {channel}: {f}"
                );
                let pong = self.next().await;
                assert_eq!(pong["event"], "hotsock.pong", "{who}: {pong}");
                Err(refusal(&f["error"]["code"], &f["error"]["message"]))
            }
            Proto::SocketIo => match f["event"].as_str() {
                Some("MESSAGE_SENT")
                    if f["data"]["topicId"] == channel
                        && f["data"]["content"]["bodyText"] == text =>
                {
                    Ok(())
                }
                Some("SEND_MESSAGE_FAILED") if f["data"]["topicId"] == channel => Err(refusal(
                    &f["data"]["error"]["code"],
                    &f["data"]["error"]["message"],
                )),
                _ => panic!("{who}: not an answer to the message on {channel}: {f}"),
            },
            Proto::Sc => {
                let cid = self.sc_pending();
                if f["rid"] == cid {
                    let refused = sc_result(&f);
                    assert!(
                        refused.is_err(),
                        "{who}: publish acked without the publisher's own copy"
                    );
                    return refused;
                }
                assert_eq!(
                    f,
                    json!({"event": "#publish", "data": {"channel": channel, "data": text}}),
                    "{who}: the publisher's own copy"
                );
                let ack = self.next().await;
                assert_eq!(ack, json!({ "rid": cid }), "{who}");
                Ok(())
            }
            Proto::Sgc => match f["method"].as_str() {
                Some("sgc@presence@publish@msg")
                    if f["channel"]["name"] == channel
                        && f["message"]["text"] == text
                        && f["member"]["id"] == json!(self.member) =>
                {
                    Ok(())
                }
                Some("sgc@presence@error@member@channel") if f["channel"]["name"] == channel => {
                    Err(refusal(&f["error"]["code"], &f["error"]["text"]))
                }
                _ => panic!("{who}: not an answer to the publish on {channel}: {f}"),
            },
        }
    }

    /// The next frame is a server publish (`POST /api/publish`) of `text`
    /// as `event` on `channel`.
    pub async fn expect_message(&mut self, channel: &str, event: &str, text: &str) {
        let who = self.label();
        let f = self.next().await;
        let ok = match self.proto {
            Proto::Hotsock => f["event"] == event && f["channel"] == channel && f["data"] == text,
            Proto::SocketIo => {
                let d = &f["data"];
                f["event"] == "MESSAGE_SENT"
                    && d["category"] == event
                    && d["topicId"] == channel
                    && d["content"]["bodyText"] == text
            }
            Proto::Sc => {
                f == json!({"event": "#publish", "data": {"channel": channel, "data": text}})
            }
            Proto::Sgc => {
                f["method"] == "sgc@presence@publish@msg"
                    && f["channel"]["name"] == channel
                    && f["message"]["text"] == text
            }
        };
        assert!(
            ok,
            "{who}: expected {event:?} {text:?} on {channel}, got {f}"
        );
    }

    /// The next frames announce that member `uid` joined `channel`
    /// (SocketCluster: the `join` on `presence>channel`, after the
    /// anonymous join an SC joiner publishes first).
    pub async fn expect_joined(&mut self, channel: &str, uid: &str) {
        let who = self.label();
        let mut f = self.next().await;
        let ok = match self.proto {
            Proto::Hotsock => {
                f["event"] == "hotsock.memberAdded"
                    && f["channel"] == channel
                    && f["data"]["member"]["uid"] == uid
            }
            Proto::SocketIo => {
                f["event"] == "PRESENCE_EVENT_RESPONSE"
                    && f["data"]["category"] == "app.event.presence.party.online"
                    && f["data"]["topicId"] == channel
                    && f["data"]["sender"]["_id"] == uid
            }
            Proto::Sc => {
                let tracker = format!("presence>{channel}");
                let is_join = |f: &Value| {
                    f["event"] == "#publish"
                        && f["data"]["channel"] == tracker.as_str()
                        && f["data"]["data"]["type"] == "join"
                };
                if is_join(&f) && f["data"]["data"].get("username").is_none() {
                    assert!(f["data"]["data"]["socketId"].is_string(), "{who}: {f}");
                    f = self.next().await;
                }
                is_join(&f) && f["data"]["data"]["username"] == uid
            }
            Proto::Sgc => {
                f["method"] == "sgc@presence@channel@member@new"
                    && f["channel"]["name"] == channel
                    && f["member"]["id"] == uid
            }
        };
        assert!(ok, "{who}: expected {uid} joining {channel}, got {f}");
    }

    /// SocketCluster: the next frame is the anonymous join that socket
    /// `socket` publishes on `presence>channel` when it subscribes.
    pub async fn expect_anonymous_join(&mut self, channel: &str, socket: &str) {
        let f = self.next().await;
        let tracker = format!("presence>{channel}");
        assert!(
            f["event"] == "#publish"
                && f["data"]["channel"] == tracker.as_str()
                && f["data"]["data"]["type"] == "join"
                && f["data"]["data"]["socketId"] == socket
                && f["data"]["data"].get("username").is_none(),
            "{}: expected the anonymous join of {socket} on {tracker}, got {f}",
            self.label()
        );
    }

    /// Reads until the server ends the connection (answering Engine.IO
    /// pings meanwhile) and returns how it ended, with the text frames
    /// seen before the end. Panics when still open after `within`.
    pub async fn ending_within(&mut self, within: Duration) -> (Ending, Vec<String>) {
        let ws = match &mut self.inner {
            Inner::Hotsock(c) => &mut c.ws,
            Inner::SocketIo(ws) | Inner::Sc { ws, .. } | Inner::Sgc(ws) => ws,
        };
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let msg = tokio::time::timeout_at(deadline, ws.next())
                .await
                .unwrap_or_else(|_| {
                    panic!("connection still open after {within:?}, seen {seen:?}")
                });
            match msg {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (
                        Ending::Close(u16::from(frame.code), frame.reason.to_string()),
                        seen,
                    );
                }
                Some(Ok(Message::Close(None))) => {
                    return (Ending::Close(1005, String::new()), seen);
                }
                Some(Ok(Message::Text(t))) => seen.push(t.to_string()),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return (Ending::Dropped, seen),
            }
        }
    }

    /// Closes the connection and waits for the server's side of it.
    pub async fn close(self) {
        let mut ws = match self.inner {
            Inner::Hotsock(c) => return c.close().await,
            Inner::SocketIo(ws) | Inner::Sc { ws, .. } | Inner::Sgc(ws) => ws,
        };
        let _ = ws.close(None).await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, ws.next()).await {}
    }
}

/// The event a Socket.IO client sends to learn that its events are handled.
const PROBE: &str = "READY_PROBE";

fn socketio_event(payload: &str) -> Value {
    let v: Value = serde_json::from_str(payload).expect("event JSON");
    json!({"event": v[0], "data": v[1]})
}

fn is_probe_answer(f: &Value) -> bool {
    f["event"] == "error"
        && f["data"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(PROBE))
}

fn refusal(code: &Value, reason: &Value) -> Refusal {
    Refusal {
        code: match code {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        },
        reason: reason.as_str().unwrap_or_default().to_string(),
    }
}

/// A SocketCluster reply as Ok, or its error as a refusal.
fn sc_result(reply: &Value) -> Result<(), Refusal> {
    match reply.get("error") {
        None => Ok(()),
        Some(e) => Err(refusal(&e["name"], &e["message"])),
    }
}
