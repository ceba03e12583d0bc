//! Test harness: a real rollcall server on an ephemeral port, WebSocket
//! clients and a minimal HTTP client, all over real sockets on 127.0.0.1.
//!
//! Every wait is bounded: a helper that waits for a frame panics after
//! [`WAIT`] (or the duration it is given) instead of hanging the suite.
#![allow(dead_code)]

pub mod cluster;
pub mod nats;
pub mod postgres;
pub mod process;
pub mod protocols;
pub mod redis;
use std::future::Future;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rollcall::config::Config;
use rollcall::presence::Presence;
use rollcall::server::RunningServer;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "test-secret";
pub const API_KEY: &str = "test-api-key";
pub const WAIT: Duration = Duration::from_secs(5);

/// A `[[channel-rules]]` table: `subscribe` is anyone, authenticated or
/// grant; `publish` is subscribers, grant or server.
pub fn rule(pattern: &str, subscribe: &str, publish: &str) -> rollcall::policy::RuleConfig {
    rollcall::policy::RuleConfig {
        pattern: pattern.into(),
        subscribe: subscribe.into(),
        publish: publish.into(),
        max_member_bytes: None,
        max_members: None,
        show_members: true,
    }
}

/// `config` on 127.0.0.1:0 with the test secret and API key.
pub fn test_config(mut config: Config) -> Config {
    config.listener.listen = "127.0.0.1:0".parse().expect("an address");
    config.auth.jwt_secret = Some(SECRET.into());
    config.auth.api_key = Some(API_KEY.into());
    config
}

/// `POST /api/publish` to the server at `addr` with the test API key;
/// asserts 202 and returns the message id.
pub async fn api_publish(
    addr: std::net::SocketAddr,
    channel: &str,
    event: &str,
    data: Value,
) -> String {
    let message = json!({"channel": channel, "event": event, "data": data});
    let (status, body) = http(addr, "POST", "/api/publish", Some(message), Some(API_KEY)).await;
    assert_eq!(status, 202, "publish refused: {body}");
    body["id"]
        .as_str()
        .expect("publish returns an id")
        .to_string()
}

/// A server running in this process on 127.0.0.1:0.
pub struct TestServer {
    pub server: RunningServer,
    pub addr: std::net::SocketAddr,
}

impl TestServer {
    /// A server with the default, secure channel policy: a channel needs
    /// a grant in the token.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A server whose channels are all open to anyone (`--open-channels
    /// '*'`): for tests of other features with clients that carry no
    /// grants. tests/it/authorization.rs tests the policy itself.
    pub async fn start_open() -> Self {
        Self::start_with(|c| c.channels.open_channels = vec!["*".into()]).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = test_config(Config::default());
        tweak(&mut config);
        let server = rollcall::server::start(&config)
            .await
            .expect("server starts");
        let addr = server.local_addr();
        TestServer { server, addr }
    }

    /// A server with the settings a conformance suite states in its
    /// `server.toml` (channel rules, timings), on 127.0.0.1:0 with the
    /// test secret and API key.
    pub async fn start_for_suite(suite: &std::path::Path) -> Self {
        let file = suite.join("server.toml");
        let stated = Config::from_file(&file).expect("the suite's server.toml is valid");
        Self::start_with(|c| *c = test_config(stated)).await
    }

    /// A server with the settings of a `rollcall serve --config` file
    /// (channel rules, timings), e.g. conformance/node/sc.toml, on
    /// 127.0.0.1:0 with the test secret and API key.
    pub async fn start_from_file(file: &std::path::Path) -> Self {
        Self::start_from_file_with(file, |_| {}).await
    }

    /// Like [`TestServer::start_from_file`], then `tweak` changes the
    /// settings further (as flags override the file).
    pub async fn start_from_file_with(
        file: &std::path::Path,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let stated = Config::from_file(file)
            .unwrap_or_else(|e| panic!("{} is a valid config file: {e}", file.display()));
        Self::start_with(|c| {
            *c = test_config(stated);
            tweak(c);
        })
        .await
    }

    /// Signs `claims`, adding `exp` (now + 1 h) and `scope` ("connect") when absent.
    pub fn token(&self, mut claims: Value) -> String {
        sign(&mut claims)
    }

    pub fn url(&self, token: &str) -> String {
        format!("ws://{}/hotsock?token={token}", self.addr)
    }

    /// The presence core of the server (a clone shares its state).
    pub fn presence(&self) -> Presence {
        self.server.presence().clone()
    }

    /// Connects with a token for `claims` and reads `hotsock.connected`.
    pub async fn connect(&self, claims: Value) -> Client {
        let mut client = self
            .connect_raw(&self.token(claims))
            .await
            .expect("upgrade accepted");
        client.read_connected().await;
        client
    }

    /// Connects with a raw token; Err(status) if the upgrade is refused.
    pub async fn connect_raw(&self, token: &str) -> Result<Client, u16> {
        connect_url(&self.url(token)).await
    }

    /// Connects to `path` (which carries its own query string, if any);
    /// Err(status) if the upgrade is refused.
    pub async fn connect_path(&self, path_and_query: &str) -> Result<Client, u16> {
        connect_url(&format!("ws://{}{path_and_query}", self.addr)).await
    }

    /// Connects with a 4 KiB socket receive buffer and reads
    /// `hotsock.connected`: a client that stops reading then backs up into
    /// the server after a few KiB instead of megabytes of kernel buffers.
    pub async fn connect_small_buffer(&self, claims: Value) -> Client {
        let url = self.url(&self.token(claims));
        let handshake = async {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
            let stream = socket.connect(self.addr).await.expect("connect");
            tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream)).await
        };
        let (ws, _) = tokio::time::timeout(WAIT, handshake)
            .await
            .expect("the upgrade is answered within the timeout")
            .expect("upgrade accepted");
        let mut client = Client {
            ws,
            connection_id: String::new(),
            connected: Value::Null,
        };
        client.read_connected().await;
        client
    }

    /// One HTTP request with the API key; returns status and JSON body.
    pub async fn http(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        http(self.addr, method, path, body, Some(API_KEY)).await
    }

    /// Publishes through the HTTP API, asserts 202 and returns the message id.
    pub async fn publish(&self, channel: &str, event: &str, data: Value) -> String {
        api_publish(self.addr, channel, event, data).await
    }

    /// `GET /api/channels/{name}` (name is used verbatim in the path).
    pub async fn channel(&self, name: &str) -> Value {
        let (status, body) = self
            .http("GET", &format!("/api/channels/{name}"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// The member uids of a channel, from the HTTP API.
    pub async fn member_uids(&self, name: &str) -> Vec<String> {
        uids(&self.channel(name).await["members"])
    }

    /// Polls the HTTP API until the channel has exactly these member uids.
    /// Used where the server's side of a disconnect has no frame to wait for.
    pub async fn wait_for_members(&self, name: &str, expected: &[&str]) {
        let ok = eventually(WAIT, || async { self.member_uids(name).await == expected }).await;
        assert!(
            ok,
            "members of {name} are {:?}, expected {expected:?}",
            self.member_uids(name).await
        );
    }

    pub async fn stop(self) {
        self.server.shutdown().await;
    }
}

/// Opens a WebSocket to `url` (within [`WAIT`]); Err(status) if the
/// upgrade is refused.
pub async fn connect_url(url: &str) -> Result<Client, u16> {
    let attempt = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("the upgrade is answered within the timeout");
    match attempt {
        Ok((ws, _)) => Ok(Client {
            ws,
            connection_id: String::new(),
            connected: Value::Null,
        }),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("connect failed: {e}"),
    }
}

/// Polls `check` every 20 ms until it is true or `within` has passed.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Signs `claims` with the test secret, adding `exp` (now + 1 h) and
/// `scope` ("connect") when absent.
pub fn sign(claims: &mut Value) -> String {
    let obj = claims.as_object_mut().expect("claims object");
    obj.entry("exp")
        .or_insert(json!(rollcall::time::unix_now() + 3600));
    obj.entry("scope").or_insert(json!("connect"));
    rollcall::auth::mint_hs256(SECRET, claims).expect("mint")
}

/// Signs `claims` exactly as given (no defaults) with `secret`.
pub fn sign_exact(secret: &str, claims: &Value) -> String {
    rollcall::auth::mint_hs256(secret, claims).expect("mint")
}

/// Base64url without padding, for hand-made tokens.
pub fn b64url(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A minimal HTTP/1.1 client (one request per connection).
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
    key: Option<&str>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let headers = format!("{auth}Content-Type: application/json\r\n");
    http_raw(addr, method, path, &headers, body.as_bytes()).await
}

/// One HTTP request with the given extra header lines (each ending in
/// CRLF) and raw body; returns status and body (JSON if it parses, else a
/// JSON string).
pub async fn http_raw(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> (u16, Value) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.expect("write");
        // The server may answer (e.g. 413) before reading a large body.
        let _ = stream.write_all(body).await;
        let mut buf = Vec::new();
        let _ = stream.read_to_end(&mut buf).await;
        buf
    };
    let buf = tokio::time::timeout(WAIT, exchange)
        .await
        .expect("HTTP answer within the timeout");
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let json = serde_json::from_str(body).unwrap_or(Value::String(body.to_string()));
    (status, json)
}

/// How a connection ended, as seen by the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// A close frame with this code and reason.
    Close(u16, String),
    /// The TCP connection ended without a close frame.
    Dropped,
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub connection_id: String,
    /// The `hotsock.connected` frame, once read.
    pub connected: Value,
}

impl Client {
    /// Reads `hotsock.connected` and remembers the connection id.
    pub async fn read_connected(&mut self) -> Value {
        let hello = self.next().await;
        assert_eq!(hello["event"], "hotsock.connected", "{hello}");
        self.connection_id = hello["data"]["connectionId"]
            .as_str()
            .expect("connectionId is a string")
            .to_string();
        self.connected = hello.clone();
        hello
    }

    pub async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await
            .expect("send");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.to_string().into()))
            .await
            .expect("send");
    }

    pub async fn send_binary(&mut self, data: &[u8]) {
        self.ws
            .send(Message::Binary(data.to_vec().into()))
            .await
            .expect("send");
    }

    /// The next JSON text frame (panics after WAIT).
    pub async fn next(&mut self) -> Value {
        self.next_within(WAIT).await
    }

    /// The next JSON text frame (panics after `within`).
    pub async fn next_within(&mut self, within: Duration) -> Value {
        let text = self.next_text_within(within).await;
        serde_json::from_str(&text).expect("JSON frame")
    }

    /// The next text frame, unparsed (panics after `within`).
    pub async fn next_text_within(&mut self, within: Duration) -> String {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no frame within {within:?}"))
                .expect("stream open")
                .expect("frame");
            match msg {
                Message::Text(t) => return t.to_string(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// The next frame, which must have this event.
    pub async fn expect(&mut self, event: &str) -> Value {
        let frame = self.next().await;
        assert_eq!(frame["event"], event, "unexpected frame {frame}");
        frame
    }

    /// The next frame, which must be a `hotsock.error` with this code (and
    /// this channel, or no channel when `channel` is None) and a
    /// non-empty human-readable message.
    pub async fn expect_error(&mut self, code: &str, channel: Option<&str>) -> Value {
        let frame = self.next().await;
        assert_eq!(frame["event"], "hotsock.error", "unexpected frame {frame}");
        assert_eq!(frame["error"]["code"], code, "wrong code in {frame}");
        match channel {
            Some(c) => assert_eq!(frame["channel"], c, "wrong channel in {frame}"),
            None => assert!(
                frame.get("channel").is_none(),
                "unexpected channel in {frame}"
            ),
        }
        let message = frame["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "error without a message: {frame}");
        frame
    }

    /// Asserts that no text frame arrives within `ms`.
    pub async fn expect_none(&mut self, ms: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(Some(Ok(Message::Text(t)))) => panic!("unexpected frame {t}"),
                Ok(other) => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Reads until the close frame and returns its code.
    pub async fn expect_close(&mut self) -> (u16, String) {
        match self.ending_within(WAIT).await {
            Ending::Close(code, reason) => (code, reason),
            Ending::Dropped => panic!("stream ended without a close frame"),
        }
    }

    /// Skips frames until the connection ends; returns how (panics after
    /// `within`).
    pub async fn ending_within(&mut self, within: Duration) -> Ending {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("connection still open after {within:?}"));
            match msg {
                Some(Ok(Message::Close(Some(CloseFrame { code, reason })))) => {
                    return Ending::Close(u16::from(code), reason.to_string());
                }
                Some(Ok(Message::Close(None))) => return Ending::Close(1005, String::new()),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Ending::Dropped,
            }
        }
    }

    /// Sends a ping and expects the pong: proves the connection still works
    /// and that everything queued before it was read.
    pub async fn ping_pong(&mut self) {
        self.send(json!({"event": "hotsock.ping"})).await;
        self.expect("hotsock.pong").await;
    }

    pub async fn subscribe(&mut self, channel: &str) -> Value {
        self.send(json!({"event": "hotsock.subscribe", "channel": channel}))
            .await;
        self.next().await
    }

    /// Subscribes and asserts success; returns the `hotsock.subscribed` frame.
    pub async fn join(&mut self, channel: &str) -> Value {
        let frame = self.subscribe(channel).await;
        assert_eq!(frame["event"], "hotsock.subscribed", "{frame}");
        assert_eq!(frame["channel"], channel, "{frame}");
        frame
    }

    pub async fn unsubscribe(&mut self, channel: &str) -> Value {
        self.send(json!({"event": "hotsock.unsubscribe", "channel": channel}))
            .await;
        self.next().await
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        // Wait for the server's close reply so the disconnect is processed.
        while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, self.ws.next()).await {}
    }
}

/// Claims for a presence user allowed on every `presence.*` channel.
pub fn user(uid: &str, umd: Value) -> Value {
    json!({
        "uid": uid,
        "umd": umd,
        "channels": {"presence.*": {"subscribe": true, "messages": {"*": {"publish": true}}}, "*": {"subscribe": true}}
    })
}

/// Claims for an anonymous connection that may subscribe to anything.
pub fn anonymous() -> Value {
    json!({"channels": {"*": {"subscribe": true}}})
}

/// The uids of a `members` array, in order.
pub fn uids(members: &Value) -> Vec<String> {
    members
        .as_array()
        .unwrap_or_else(|| panic!("members is not an array: {members}"))
        .iter()
        .map(|m| m["uid"].as_str().expect("uid string").to_string())
        .collect()
}

/// Applies a member event to a member list the way a client would from the
/// delta alone (`member`), and asserts the result equals the full list the
/// event carries. This catches a missed, duplicated or reordered event.
pub fn apply_member_event(list: &mut Vec<Value>, frame: &Value) {
    let member = &frame["data"]["member"];
    let uid = &member["uid"];
    let pos = list.iter().position(|m| m["uid"] == *uid);
    match frame["event"].as_str() {
        Some("hotsock.memberAdded") => {
            assert!(pos.is_none(), "memberAdded for a present member: {frame}");
            list.push(member.clone());
        }
        Some("hotsock.memberUpdated") => {
            let pos = pos.unwrap_or_else(|| panic!("memberUpdated for an absent member: {frame}"));
            list[pos] = member.clone();
        }
        Some("hotsock.memberRemoved") => {
            let pos = pos.unwrap_or_else(|| panic!("memberRemoved for an absent member: {frame}"));
            list.remove(pos);
        }
        _ => panic!("not a member event: {frame}"),
    }
    assert_eq!(
        Value::Array(list.clone()),
        frame["data"]["members"],
        "the member list after applying the delta differs from the event's list: {frame}"
    );
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ` (what rollcall emits) to Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// True for a ULID: 26 Crockford base32 characters.
pub fn is_ulid(s: &str) -> bool {
    s.len() == 26
        && s.bytes()
            .all(|b| b"0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(&b))
}

/// Runs `node <script> <args>` (from the crate's root) and asserts that it
/// succeeded within `limit` with no FAIL line, printing its output.
/// Returns its stdout.
pub async fn run_node_script(script: &str, args: &[&str], limit: Duration) -> String {
    let child = tokio::process::Command::new("node")
        .arg(script)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within {limit:?}"))
        .expect("node output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    stdout
}
