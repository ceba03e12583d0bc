//! The generator's clients, one per wire protocol: connect, subscribe,
//! read deliveries cheaply, publish. The same client drives rollcall and
//! the Node peer of its protocol.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

pub const SECRET: &str = "bench-secret";
pub const API_KEY: &str = "bench-key";

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// A wire protocol the generator speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Hotsock,
    SocketIo,
    Sc,
    /// sgcWebSockets Presence: no Node server speaks it, so its rows are
    /// rollcall's alone.
    Sgc,
}

impl Protocol {
    pub const ALL: [Protocol; 4] = [
        Protocol::Hotsock,
        Protocol::SocketIo,
        Protocol::Sc,
        Protocol::Sgc,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Hotsock => "Hotsock",
            Protocol::SocketIo => "Socket.IO",
            Protocol::Sc => "SocketCluster",
            Protocol::Sgc => "sgc",
        }
    }

    /// The name that selects it on the command line.
    pub fn key(self) -> &'static str {
        match self {
            Protocol::Hotsock => "hotsock",
            Protocol::SocketIo => "socketio",
            Protocol::Sc => "sc",
            Protocol::Sgc => "sgc",
        }
    }

    /// The Node server a user of this protocol would otherwise run:
    /// (script in conformance/node, label).
    pub fn node_peer(self) -> Option<(&'static str, &'static str)> {
        match self {
            Protocol::Hotsock => Some(("hotsock-reference-server.js", "Node Hotsock stand-in")),
            Protocol::SocketIo => Some(("socketio-reference-server.js", "socket.io 4.8")),
            Protocol::Sc => Some(("sc-reference-server.js", "socketcluster-server 14.7")),
            Protocol::Sgc => None,
        }
    }

    /// A client of `uid`, subscribed to `channel`, ready to read.
    pub async fn subscriber(self, addr: SocketAddr, uid: &str, channel: &str) -> Ws {
        match self {
            Protocol::Hotsock => {
                let mut ws = open(&format!("ws://{addr}/hotsock?token={}", token(self, uid))).await;
                read_until(self, &mut ws, |t| t.contains("hotsock.connected")).await;
                send(
                    &mut ws,
                    json!({"event":"hotsock.subscribe","channel":channel}),
                )
                .await;
                read_until(self, &mut ws, |t| t.contains("hotsock.subscribed")).await;
                ws
            }
            Protocol::SocketIo => {
                let url = format!(
                    "ws://{addr}/socket.io/?EIO=4&transport=websocket&tokenType=jwt&token={}",
                    token(self, uid)
                );
                let mut ws = open(&url).await;
                read_until(self, &mut ws, |t| t.starts_with('0')).await;
                send_text(&mut ws, "40/chat,").await;
                read_until(self, &mut ws, |t| t.starts_with("40/chat")).await;
                // A watcher: the Node peer has no presence, so neither
                // side sends party events.
                let subscribe = json!(["SUBSCRIBE_CHANNEL",
                    {"channel": {"type": "topic", "_id": channel}, "announce": false}]);
                send_text(&mut ws, &format!("42/chat,{subscribe}")).await;
                read_until(self, &mut ws, |t| t.contains("CHANNEL_SUBSCRIBED")).await;
                ws
            }
            Protocol::Sgc => {
                let (mut ws, id) = sgc_open(addr).await;
                let me = json!({"id": id, "name": uid, "info": ""});
                send(
                    &mut ws,
                    json!({"jsonrpc": "2.0", "method": "sgc@presence@member@new", "member": me}),
                )
                .await;
                read_until(self, &mut ws, |t| t.contains("sgc@presence@member@new")).await;
                send(
                    &mut ws,
                    json!({"jsonrpc": "2.0", "method": "sgc@presence@channel@member@new",
                    "member": me, "channel": {"name": channel}}),
                )
                .await;
                // Every subscribe is announced to the channel: wait for ours.
                read_until(self, &mut ws, |t| {
                    t.contains("sgc@presence@channel@member@new") && t.contains(&id)
                })
                .await;
                ws
            }
            Protocol::Sc => {
                let mut ws = sc_handshake(addr, uid).await;
                send(
                    &mut ws,
                    json!({"event":"#subscribe","data":{"channel":channel},"cid":2}),
                )
                .await;
                read_until(self, &mut ws, |t| t.starts_with("{\"rid\":2")).await;
                ws
            }
        }
    }

    /// The reply to a server keep-alive frame, if `text` is one.
    fn keep_alive_reply(self, text: &str) -> Option<&'static str> {
        match (self, text) {
            (Protocol::SocketIo, "2") => Some("3"),
            (Protocol::Sc, "#1") => Some("#2"),
            (Protocol::Hotsock, t) if t.starts_with("{\"event\":\"hotsock.ping\"") => {
                Some("{\"event\":\"hotsock.pong\"}")
            }
            _ => None,
        }
    }
}

/// A token for `uid` that lets it subscribe to anything: Hotsock claims
/// (rollcall's Socket.IO front end reads the same), or a SocketCluster
/// `username`.
fn token(protocol: Protocol, uid: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let claims = match protocol {
        Protocol::Sc => json!({"exp": exp, "username": uid}),
        _ => json!({
            "exp": exp,
            "scope": "connect",
            "uid": uid,
            "channels": {"*": {"subscribe": true}},
        }),
    };
    rollcall::auth::mint_hs256(SECRET, &claims).expect("mint")
}

async fn open(url: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), false)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    ws
}

/// The generator's WebSocket settings: tungstenite zeroes its whole read
/// buffer on every read, and its 128 KiB default made `memset` more than
/// half of the generator's CPU in a burst (`perf`), so the generator, not
/// the server, set the burst's pace. 16 KiB still holds dozens of
/// deliveries per read.
fn ws_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(16 * 1024)
}

/// An sgc connection (subprotocol `presence.esegece.com`) and its session
/// id, not joined: sgc announces every join to every member.
pub async fn sgc_open(addr: SocketAddr) -> (Ws, String) {
    let mut request = format!("ws://{addr}/sgc")
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("presence.esegece.com"),
    );
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(request, Some(ws_config()), false)
            .await
            .expect("sgc connect");
    let session = read_until(Protocol::Sgc, &mut ws, |t| {
        t.contains("sgc@presence@session")
    })
    .await;
    let session: Value = serde_json::from_str(&session).expect("session frame");
    let id = session["message"]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (ws, id)
}

async fn sc_handshake(addr: SocketAddr, uid: &str) -> Ws {
    let mut ws = open(&format!("ws://{addr}/socketcluster/")).await;
    let auth = token(Protocol::Sc, uid);
    send(
        &mut ws,
        json!({"event":"#handshake","data":{"authToken":auth},"cid":1}),
    )
    .await;
    read_until(Protocol::Sc, &mut ws, |t| t.starts_with("{\"rid\":1")).await;
    ws
}

async fn send(ws: &mut Ws, frame: Value) {
    send_text(ws, &frame.to_string()).await;
}

async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.to_string().into()))
        .await
        .expect("send");
}

/// Reads (answering keep-alives) until a text frame matches.
async fn read_until(protocol: Protocol, ws: &mut Ws, done: impl Fn(&str) -> bool) -> String {
    loop {
        let text = next_text(protocol, ws)
            .await
            .unwrap_or_else(|| panic!("{} connection ended", protocol.name()));
        if done(&text) {
            return text;
        }
    }
}

/// The next text frame that is not a keep-alive (those are answered), or
/// None when the connection ends.
async fn next_text(protocol: Protocol, ws: &mut Ws) -> Option<String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                if let Some(reply) = protocol.keep_alive_reply(&t) {
                    send_text(ws, reply).await;
                    continue;
                }
                return Some(t.to_string());
            }
            Some(Ok(_)) => continue,
            _ => return None,
        }
    }
}

/// The number after `"key":` in a frame, found without parsing the JSON
/// (the generator must not be what limits the figures).
fn number_after(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    let digits = text[at..].trim_start();
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// What one subscriber saw of `total` numbered messages.
#[derive(Default)]
pub struct Seen {
    pub latencies_us: Vec<u64>,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
}

/// Reads deliveries `{"t": µs since the epoch, "i": sequence}` until the
/// `{"end":1}` message; counts what is missing, repeated or out of order.
pub async fn receive(protocol: Protocol, mut ws: Ws, total: u64) -> Seen {
    let mut seen = Seen::default();
    let mut got = vec![false; total as usize];
    let mut next = 0u64;
    while let Some(text) = next_text(protocol, &mut ws).await {
        if text.contains("\"end\":1") {
            break;
        }
        let (Some(sent), Some(i)) = (number_after(&text, "\"t\":"), number_after(&text, "\"i\":"))
        else {
            continue;
        };
        seen.latencies_us.push(micros_now().saturating_sub(sent));
        match got.get_mut(i as usize) {
            Some(true) => seen.duplicated += 1,
            Some(slot) => {
                *slot = true;
                if i < next {
                    seen.reordered += 1;
                }
                next = next.max(i + 1);
            }
            None => {}
        }
    }
    seen.lost = got.iter().filter(|g| !**g).count() as u64;
    seen
}

/// Holds a connection open, answering keep-alives, until it ends.
pub async fn hold(protocol: Protocol, mut ws: Ws) {
    while next_text(protocol, &mut ws).await.is_some() {}
}

pub fn micros_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Publishes to a channel the way a user of the protocol would: over the
/// HTTP API (Hotsock, Socket.IO, sgc: rollcall's `/api/publish`, which the
/// Node peers copy), or as a SocketCluster client's `#publish` (a subscriber,
/// which gets its own messages back too), one at a time, each
/// acknowledged before the next.
pub enum Publisher {
    Http(TcpStream, SocketAddr),
    Sc(Box<Ws>, u64),
}

impl Publisher {
    pub async fn new(protocol: Protocol, addr: SocketAddr, channel: &str) -> Publisher {
        match protocol {
            // rollcall lets a channel's subscribers publish on it (the
            // rule of `--open-channels`); on the Node peer anyone may.
            Protocol::Sc => Publisher::Sc(
                Box::new(protocol.subscriber(addr, "publisher", channel).await),
                2,
            ),
            _ => Publisher::Http(TcpStream::connect(addr).await.expect("api"), addr),
        }
    }

    pub async fn publish(&mut self, channel: &str, data: Value) {
        match self {
            Publisher::Http(stream, addr) => {
                let body = json!({"channel": channel, "event": "tick", "data": data}).to_string();
                http_publish(stream, *addr, &body).await;
            }
            Publisher::Sc(ws, cid) => {
                *cid += 1;
                let rid = format!("{{\"rid\":{cid}");
                let frame =
                    json!({"event":"#publish","data":{"channel":channel,"data":data},"cid":*cid});
                send(ws, frame).await;
                let reply = tokio::time::timeout(
                    Duration::from_secs(30),
                    read_until(Protocol::Sc, ws, |t| t.starts_with(&rid)),
                )
                .await
                .expect("#publish acknowledged");
                assert!(!reply.contains("\"error\""), "#publish refused: {reply}");
            }
        }
    }
}

async fn http_publish(stream: &mut TcpStream, addr: SocketAddr, body: &str) {
    let req = format!(
        "POST /api/publish HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.expect("write");
    // Read one response (headers + small JSON body).
    let mut buf = [0u8; 1024];
    let mut got = Vec::new();
    loop {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "server closed the API connection");
        got.extend_from_slice(&buf[..n]);
        if let Some(pos) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..pos]);
            assert!(head.starts_with("HTTP/1.1 2"), "publish refused: {head}");
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            if got.len() >= pos + 4 + len {
                return;
            }
        }
    }
}

/// A Hotsock client of `uid`, connected, not subscribed (the join storm).
/// The path and query of a Hotsock connection of `uid`.
pub fn hotsock_path(uid: &str) -> String {
    format!("/hotsock?token={}", token(Protocol::Hotsock, uid))
}

pub async fn hotsock_client(addr: SocketAddr, uid: &str) -> Ws {
    let mut ws = open(&format!(
        "ws://{addr}/hotsock?token={}",
        token(Protocol::Hotsock, uid)
    ))
    .await;
    read_until(Protocol::Hotsock, &mut ws, |t| {
        t.contains("hotsock.connected")
    })
    .await;
    ws
}

/// Subscribes a Hotsock client to a presence channel and reads until its
/// member list holds `members`; the list is counted, not parsed (each
/// client receives megabytes of lists in a storm).
pub async fn hotsock_join_until(ws: &mut Ws, channel: &str, members: usize) {
    send(ws, json!({"event":"hotsock.subscribe","channel":channel})).await;
    loop {
        let text = next_text(Protocol::Hotsock, ws)
            .await
            .unwrap_or_else(|| panic!("Hotsock connection ended"));
        if lists_members(&text, members) {
            return;
        }
    }
}

/// Whether a Hotsock frame carries a member list of at least `members`.
pub fn lists_members(text: &str, members: usize) -> bool {
    // A member is at least `{"uid":"m0000","umd":null},` (27 bytes):
    // shorter lists are not worth counting.
    if text.len() < members * 27 || !text.contains("\"members\":") {
        return false;
    }
    let list = text.split("\"members\":").nth(1).unwrap_or("");
    list.matches("\"uid\":").count() >= members
}
