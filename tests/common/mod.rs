//! Test harness: a real rollcall server on an ephemeral port, WebSocket
//! clients and a minimal HTTP client, all over real sockets.
#![allow(dead_code)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rollcall::config::Config;
use rollcall::server::RunningServer;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "test-secret";
pub const API_KEY: &str = "test-api-key";
pub const WAIT: Duration = Duration::from_secs(3);

/// A server running in this process on 127.0.0.1:0.
pub struct TestServer {
    pub server: RunningServer,
    pub addr: std::net::SocketAddr,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            jwt_secret: Some(SECRET.into()),
            api_key: Some(API_KEY.into()),
            ..Config::default()
        };
        tweak(&mut config);
        let server = rollcall::server::start(&config).await.expect("server starts");
        let addr = server.local_addr();
        TestServer { server, addr }
    }

    /// Signs `claims`, adding `exp` (now + 1 h) and `scope` ("connect") when absent.
    pub fn token(&self, mut claims: Value) -> String {
        sign(&mut claims)
    }

    pub fn url(&self, token: &str) -> String {
        format!("ws://{}/hotsock?token={token}", self.addr)
    }

    /// Connects with a token for `claims` and reads `hotsock.connected`.
    pub async fn connect(&self, claims: Value) -> Client {
        let mut client = self
            .connect_raw(&self.token(claims))
            .await
            .expect("upgrade accepted");
        let hello = client.next().await;
        assert_eq!(hello["event"], "hotsock.connected", "{hello}");
        client.connection_id = hello["data"]["connectionId"].as_str().unwrap().to_string();
        client
    }

    /// Connects with a raw token; Err(status) if the upgrade is refused.
    pub async fn connect_raw(&self, token: &str) -> Result<Client, u16> {
        match tokio_tungstenite::connect_async(self.url(token)).await {
            Ok((ws, _)) => Ok(Client {
                ws,
                connection_id: String::new(),
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
            Err(e) => panic!("connect failed: {e}"),
        }
    }

    /// One HTTP request with the API key; returns status and JSON body.
    pub async fn http(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        http(self.addr, method, path, body, Some(API_KEY)).await
    }

    pub async fn stop(self) {
        self.server.shutdown().await;
    }
}

pub fn sign(claims: &mut Value) -> String {
    let obj = claims.as_object_mut().expect("claims object");
    obj.entry("exp")
        .or_insert(json!(rollcall::time::unix_now() + 3600));
    obj.entry("scope").or_insert(json!("connect"));
    rollcall::auth::mint_hs256(SECRET, claims).expect("mint")
}

/// A minimal HTTP/1.1 client (one request per connection).
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
    key: Option<&str>,
) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.expect("read");
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

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub connection_id: String,
}

impl Client {
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

    /// The next JSON text frame (panics after WAIT).
    pub async fn next(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame within the timeout")
                .expect("stream open")
                .expect("frame");
            match msg {
                Message::Text(t) => return serde_json::from_str(&t).expect("JSON frame"),
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

    /// Asserts that no text frame arrives within `ms`.
    pub async fn expect_none(&mut self, ms: u64) {
        match tokio::time::timeout(Duration::from_millis(ms), self.ws.next()).await {
            Err(_) => {}
            Ok(Some(Ok(Message::Text(t)))) => panic!("unexpected frame {t}"),
            Ok(other) => panic!("unexpected {other:?}"),
        }
    }

    /// Reads until the close frame and returns its code.
    pub async fn expect_close(&mut self) -> (u16, String) {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("close within the timeout");
            match msg {
                Some(Ok(Message::Close(Some(CloseFrame { code, reason })))) => {
                    return (u16::from(code), reason.to_string());
                }
                Some(Ok(Message::Close(None))) => return (1005, String::new()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("error before close: {e}"),
                None => panic!("stream ended without a close frame"),
            }
        }
    }

    pub async fn subscribe(&mut self, channel: &str) -> Value {
        self.send(json!({"event": "hotsock.subscribe", "channel": channel}))
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
