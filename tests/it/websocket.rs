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

// permessage-deflate (`--websocket-compression`).

/// A browser's offer.
const DEFLATE_OFFER: &str =
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";

/// A masked client frame of any length; `first` carries FIN, RSV1 and the
/// opcode.
fn long_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11, 0x5a, 0xc3, 0x08];
    let mut out = vec![first];
    match payload.len() {
        len @ 0..126 => out.push(0x80 | len as u8),
        len @ 126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// `data` as a client's compressed message payload: raw DEFLATE, sync
/// flushed, the 00 00 ff ff tail removed (RFC 7692 §7.2.1).
fn deflate(data: &[u8]) -> Vec<u8> {
    use miniz_oxide::deflate::core::{
        CompressorOxide, TDEFLFlush, compress, create_comp_flags_from_zip_params,
    };
    let mut compressor = CompressorOxide::new(create_comp_flags_from_zip_params(6, -15, 0));
    let mut out = vec![0u8; data.len() + 64];
    let (_, read, wrote) = compress(&mut compressor, data, &mut out, TDEFLFlush::Sync);
    assert_eq!(read, data.len());
    out.truncate(wrote);
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(wrote - 4);
    out
}

/// A server's compressed payload, inflated as a client does.
fn inflate(payload: &[u8]) -> String {
    let mut input = payload.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff, 0x03, 0x00]);
    String::from_utf8(miniz_oxide::inflate::decompress_to_vec(&input).expect("inflates"))
        .expect("UTF-8")
}

/// Opens `/hotsock` for `uid` with `extra` headers; the response head.
async fn open_as(
    srv: &TestServer,
    uid: &str,
    umd: serde_json::Value,
    extra: &str,
) -> (TcpStream, String) {
    let token = srv.token(user(uid, umd));
    let mut stream = TcpStream::connect(srv.addr).await.expect("connect");
    let headers = format!("{GOOD_HEADERS}{extra}");
    stream
        .write_all(request(srv, "GET", &token, &headers).as_bytes())
        .await
        .expect("write");
    let head = response_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    (stream, head.to_ascii_lowercase())
}

/// The next text message, inflated if it came compressed; and whether it
/// did.
async fn next_text(stream: &mut TcpStream) -> (String, bool) {
    loop {
        let (first, payload) = next_frame(stream).await.expect("a frame");
        match first {
            0x81 => return (String::from_utf8(payload).expect("UTF-8"), false),
            0xc1 => return (inflate(&payload), true),
            _ => {}
        }
    }
}

#[tokio::test]
async fn with_compression_large_frames_go_out_compressed_and_compressed_messages_are_read() {
    let srv = TestServer::start_with(|c| c.limits.websocket_compression = true).await;
    let bio = "a presence channel member with a long biography ".repeat(18);
    let (mut ann, head) = open_as(&srv, "ann", json!({"bio": bio}), DEFLATE_OFFER).await;
    assert!(
        head.contains(
            "sec-websocket-extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        ),
        "{head}"
    );
    // A client that does not offer it gets plain frames on the same server.
    let mut bob = srv.connect(user("bob", json!({"bio": bio}))).await;

    // Frames over 512 bytes go out compressed (the greeting, with the
    // member data), small replies as they are.
    let (connected, compressed) = next_text(&mut ann).await;
    assert!(
        compressed && connected.contains("hotsock.connected"),
        "{connected}"
    );
    ann.write_all(&long_frame(0x81, br#"{"event":"hotsock.ping"}"#))
        .await
        .expect("ping");
    let (pong, compressed) = next_text(&mut ann).await;
    assert!(pong.contains("hotsock.pong") && !compressed, "{pong}");
    ann.write_all(&long_frame(0x81, SUBSCRIBE))
        .await
        .expect("subscribe");
    let (subscribed, compressed) = next_text(&mut ann).await;
    assert!(compressed, "a member list of {} bytes", subscribed.len());
    let subscribed: serde_json::Value = serde_json::from_str(&subscribed).expect("JSON");
    assert_eq!(subscribed["event"], "hotsock.subscribed");
    assert_eq!(subscribed["data"]["members"][0]["umd"]["bio"], bio);

    bob.send(json!({"event":"hotsock.subscribe","channel":"presence.room"}))
        .await;
    bob.expect("hotsock.subscribed").await;
    let (added, compressed) = next_text(&mut ann).await;
    assert!(
        compressed && added.contains("hotsock.memberAdded"),
        "{added}"
    );

    // A compressed client message, in two fragments (RSV1 on the first
    // only), reaches bob whole and uncompressed.
    let text = "compressed on the way in ".repeat(200);
    let message =
        json!({"channel":"presence.room","event":"chat","data":{"text": text}}).to_string();
    let packed = deflate(message.as_bytes());
    assert!(packed.len() < message.len() / 4);
    let (first, second) = packed.split_at(packed.len() / 2);
    let mut frames = long_frame(0x41, first);
    frames.extend(long_frame(0x80, second));
    ann.write_all(&frames).await.expect("message");
    let got = bob.expect("chat").await;
    assert_eq!(got["data"]["text"], text);
    // bob's large message reaches ann compressed.
    bob.send(json!({"channel":"presence.room","event":"chat","data":{"text": text}}))
        .await;
    let (chat, compressed) = next_text(&mut ann).await;
    let chat: serde_json::Value = serde_json::from_str(&chat).expect("JSON");
    assert!(compressed);
    assert_eq!(chat["data"]["text"], text);
    srv.stop().await;
}

#[tokio::test]
async fn compression_is_off_by_default_and_bad_compressed_frames_close_the_connection() {
    // Off: the offer is not answered, and a frame with RSV1 is a protocol
    // error.
    let srv = TestServer::start().await;
    let (mut plain, head) = open_as(&srv, "ann", json!(null), DEFLATE_OFFER).await;
    assert!(!head.contains("sec-websocket-extensions"), "{head}");
    plain
        .write_all(&long_frame(0xc1, &deflate(SUBSCRIBE)))
        .await
        .expect("write");
    let (first, payload) = loop {
        let (first, payload) = next_frame(&mut plain).await.expect("a close frame");
        if first == 0x88 {
            break (first, payload);
        }
    };
    assert_eq!(first, 0x88);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1002);
    srv.stop().await;

    // On: a message that inflates past --max-frame-bytes is refused (1009),
    // and one that is not DEFLATE is a protocol error (1002).
    let srv = TestServer::start_with(|c| {
        c.limits.websocket_compression = true;
        c.limits.max_frame_bytes = 64 * 1024;
    })
    .await;
    for (payload, code) in [
        (deflate(&vec![b' '; 200_000]), 1009u16),
        (vec![0xff, 0xfe, 0xfd, 0xfc], 1002),
    ] {
        let (mut ann, _) = open_as(&srv, "ann", json!(null), DEFLATE_OFFER).await;
        ann.write_all(&long_frame(0xc1, &payload))
            .await
            .expect("write");
        let close = loop {
            let (first, payload) = next_frame(&mut ann).await.expect("a close frame");
            if first == 0x88 {
                break payload;
            }
        };
        let why = String::from_utf8_lossy(&close[2..]).into_owned();
        assert_eq!(u16::from_be_bytes([close[0], close[1]]), code, "{why}");
    }
    srv.stop().await;
}

/// Node's ws (browsers offer the same) and socket.io-client 4.8 (on ws)
/// negotiate permessage-deflate, read the compressed frames and send
/// compressed messages that arrive intact, on Hotsock and on Socket.IO
/// (conformance/node/deflate-client.js).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_ws_clients_talk_compressed() {
    let srv = TestServer::start_with(|c| c.limits.websocket_compression = true).await;
    let bio = "member data that makes the member lists large ".repeat(22);
    let tokens: Vec<String> = ["ann", "bob", "cy"]
        .iter()
        .map(|uid| srv.token(user(uid, json!({"bio": bio}))))
        .collect();
    let url = format!("ws://{}", srv.addr);
    run_node_script(
        "conformance/node/deflate-client.js",
        &[
            "--url", &url, "--ann", &tokens[0], "--bob", &tokens[1], "--cy", &tokens[2],
        ],
        Duration::from_secs(30),
    )
    .await;
    srv.stop().await;
}

/// Every front end's WebSocket negotiates permessage-deflate when the
/// server compresses, and reads (inflates) compressed frames only then:
/// with it on, a compressed frame that is not DEFLATE is refused for that
/// reason; with it off, any frame with RSV1 is refused as unnegotiated.
#[tokio::test]
async fn every_front_end_negotiates_compression_only_when_it_is_on() {
    let paths = [
        ("/hotsock?token=TOKEN", ""),
        ("/socket.io/?EIO=4&transport=websocket", ""),
        ("/socketcluster/", ""),
        ("/sgc", "Sec-WebSocket-Protocol: presence.esegece.com\r\n"),
    ];
    for on in [true, false] {
        let srv = TestServer::start_with(|c| c.limits.websocket_compression = on).await;
        let token = srv.token(user("raw", json!(null)));
        for (path, extra) in paths {
            let path = path.replace("TOKEN", &token);
            let mut stream = TcpStream::connect(srv.addr).await.expect("connect");
            let head = format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\n{GOOD_HEADERS}{DEFLATE_OFFER}{extra}\r\n",
                srv.addr
            );
            stream.write_all(head.as_bytes()).await.expect("write");
            let head = response_head(&mut stream).await.to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 101"), "{path}: {head}");
            assert_eq!(
                head.contains("sec-websocket-extensions: permessage-deflate"),
                on,
                "{path}: {head}"
            );
            stream
                .write_all(&long_frame(0xc1, &[0xff, 0xfe, 0xfd]))
                .await
                .expect("write");
            let close = loop {
                let (first, payload) = next_frame(&mut stream).await.expect("a close frame");
                if first == 0x88 {
                    break payload;
                }
            };
            let why = String::from_utf8_lossy(&close[2..]).into_owned();
            assert_eq!(
                u16::from_be_bytes([close[0], close[1]]),
                1002,
                "{path}: {why}"
            );
            let expected = if on {
                "does not inflate"
            } else {
                "without negotiated permessage-deflate"
            };
            assert!(why.contains(expected), "{path} (compression {on}): {why}");
        }
        srv.stop().await;
    }
}
