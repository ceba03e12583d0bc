//! rollcall's own WebSocket layer (`src/websocket/`) over raw TCP, for
//! what client libraries do not show: the handshake's refusals, bytes sent
//! with the upgrade request, pings, fragments and the close handshake.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

const SUBSCRIBE: &[u8] = br#"{"event":"hotsock.subscribe","channel":"presence.room"}"#;

/// An upgrade request for `/hotsock` with `token`; `extra` replaces the
/// standard headers when given.
fn request(srv: &TestServer, method: &str, token: &str, headers: &str) -> String {
    format!(
        "{method} /hotsock?token={token} HTTP/1.1\r\nHost: {}\r\n{headers}\r\n",
        srv.addr
    )
}

const GOOD_HEADERS: &str = "Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

/// A masked client frame.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![first, 0x80 | payload.len() as u8];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Reads the response head (status line and headers).
async fn response_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(WAIT, stream.read(&mut b))
            .await
            .expect("a response in time")
            .expect("read");
        assert_eq!(n, 1, "the server closed before answering");
        head.push(b[0]);
    }
    String::from_utf8(head).expect("a text head")
}

/// Opens `/hotsock`, sending `first_bytes` in the same write as the
/// request.
async fn open(srv: &TestServer, first_bytes: &[u8]) -> TcpStream {
    let token = srv.token(user("raw", json!(null)));
    let mut stream = TcpStream::connect(srv.addr).await.expect("connect");
    let mut bytes = request(srv, "GET", &token, GOOD_HEADERS).into_bytes();
    bytes.extend_from_slice(first_bytes);
    stream.write_all(&bytes).await.expect("write");
    let head = response_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{head}"
    );
    stream
}

/// The next server frame: its first byte and payload (None: EOF).
async fn next_frame(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let read = async {
        let mut h = [0u8; 2];
        stream.read_exact(&mut h).await.ok()?;
        assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
        let mut len = u64::from(h[1] & 0x7f);
        if len == 126 {
            let mut l = [0u8; 2];
            stream.read_exact(&mut l).await.ok()?;
            len = u64::from(u16::from_be_bytes(l));
        } else if len == 127 {
            let mut l = [0u8; 8];
            stream.read_exact(&mut l).await.ok()?;
            len = u64::from_be_bytes(l);
        }
        let mut payload = vec![0u8; usize::try_from(len).ok()?];
        stream.read_exact(&mut payload).await.ok()?;
        Some((h[0], payload))
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("a frame or EOF in time")
}

/// Reads frames until a text frame containing `needle`.
async fn text_with(stream: &mut TcpStream, needle: &str) -> String {
    loop {
        let (first, payload) = next_frame(stream).await.expect("a frame");
        if first == 0x81 {
            let text = String::from_utf8(payload).expect("UTF-8");
            if text.contains(needle) {
                return text;
            }
        }
    }
}

#[tokio::test]
async fn the_handshake_refuses_what_is_not_a_websocket_upgrade() {
    let srv = TestServer::start().await;
    let token = srv.token(user("raw", json!(null)));
    let cases: &[(&str, &str, &str, &str)] = &[
        // The router refuses other methods before the upgrade is looked at.
        ("POST", GOOD_HEADERS, "405", ""),
        (
            "GET",
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n",
            "400",
            "Sec-WebSocket-Key",
        ),
        (
            "GET",
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n",
            "400",
            "must be 13",
        ),
        (
            "GET",
            "Upgrade: websocket\r\nConnection: keep-alive\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
            "400",
            "Connection header",
        ),
        (
            "GET",
            "Upgrade: h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
            "400",
            "Upgrade header",
        ),
    ];
    for (method, headers, status, why) in cases {
        let mut stream = TcpStream::connect(srv.addr).await.expect("connect");
        let req = request(&srv, method, &token, headers);
        stream.write_all(req.as_bytes()).await.expect("write");
        let head = response_head(&mut stream).await;
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status}")),
            "{method} {headers:?}: {head}"
        );
        if *status == "400" && why.contains("13") {
            assert!(
                head.to_ascii_lowercase()
                    .contains("sec-websocket-version: 13"),
                "{head}"
            );
        }
        let length: usize = head
            .to_ascii_lowercase()
            .lines()
            .find_map(|l| {
                l.strip_prefix("content-length: ")
                    .map(|v| v.trim().parse().unwrap_or(0))
            })
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        tokio::time::timeout(WAIT, stream.read_exact(&mut body))
            .await
            .expect("the body in time")
            .expect("read");
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains(why), "{method}: {body}");
    }
    // The server is still there for a real upgrade.
    let mut ok = open(&srv, &frame(0x81, SUBSCRIBE)).await;
    text_with(&mut ok, "subscribed").await;
}

#[tokio::test]
async fn frames_sent_with_the_upgrade_request_are_read() {
    let srv = TestServer::start().await;
    let mut stream = open(&srv, &frame(0x81, SUBSCRIBE)).await;
    let reply = text_with(&mut stream, "hotsock.subscribed").await;
    assert!(reply.contains("presence.room"), "{reply}");
}

#[tokio::test]
async fn a_ping_gets_its_pong_and_fragments_make_one_message() {
    let srv = TestServer::start().await;
    let mut stream = open(&srv, &[]).await;
    stream
        .write_all(&frame(0x89, b"are you there"))
        .await
        .expect("ping");
    loop {
        let (first, payload) = next_frame(&mut stream).await.expect("a pong");
        if first == 0x8a {
            assert_eq!(payload, b"are you there");
            break;
        }
    }
    // A subscribe in three fragments, with a ping between two of them, in
    // separate writes.
    let (a, rest) = SUBSCRIBE.split_at(10);
    let (b, c) = rest.split_at(20);
    for bytes in [
        frame(0x01, a),
        frame(0x00, b),
        frame(0x89, b"mid"),
        frame(0x80, c),
    ] {
        stream.write_all(&bytes).await.expect("write");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut pong = false;
    loop {
        let (first, payload) = next_frame(&mut stream).await.expect("a frame");
        match first {
            0x8a => {
                assert_eq!(payload, b"mid");
                pong = true;
            }
            0x81 if String::from_utf8_lossy(&payload).contains("hotsock.subscribed") => break,
            _ => {}
        }
    }
    assert!(pong, "the ping between fragments was answered first");
    assert_eq!(srv.member_uids("presence.room").await, ["raw"]);
}

#[tokio::test]
async fn a_client_close_is_answered_and_the_connection_ends_at_once() {
    let srv = TestServer::start().await;
    let mut stream = open(&srv, &frame(0x81, SUBSCRIBE)).await;
    text_with(&mut stream, "hotsock.subscribed").await;
    let started = std::time::Instant::now();
    stream
        .write_all(&frame(0x88, &1000u16.to_be_bytes()))
        .await
        .expect("close");
    let code = loop {
        match next_frame(&mut stream).await {
            Some((0x88, payload)) => break u16::from_be_bytes([payload[0], payload[1]]),
            Some(_) => {}
            None => panic!("no close frame before EOF"),
        }
    };
    assert_eq!(code, 1000);
    assert_eq!(
        next_frame(&mut stream).await,
        None,
        "then the server closes"
    );
    // The server does not wait for a second close frame (its grace is 1 s).
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "closed after {:?}",
        started.elapsed()
    );
    assert!(srv.member_uids("presence.room").await.is_empty());
}
