//! Bad input over real sockets: every malformed, oversized or unauthorized
//! input gets its error or close, the server stays up, and the other
//! clients in the same channel keep getting their events.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

const CH: &str = "presence.room";

/// A channel with a bystander ("pam") and the client that misbehaves
/// ("jim"), both members; pam has already seen jim arrive.
struct Scene {
    srv: TestServer,
    pam: Client,
    jim: Client,
}

async fn scene_with(tweak: impl FnOnce(&mut rollcall::config::Config)) -> Scene {
    let srv = TestServer::start_with(tweak).await;
    let mut pam = srv.connect(user("pam", json!(null))).await;
    pam.join(CH).await;
    let mut jim = srv.connect(user("jim", json!(null))).await;
    jim.join(CH).await;
    let added = pam.expect("hotsock.memberAdded").await;
    assert_eq!(added["data"]["member"]["uid"], "jim");
    Scene { srv, pam, jim }
}

async fn scene() -> Scene {
    scene_with(|_| {}).await
}

/// The bystander still gets member events and messages, a newcomer can
/// still connect and join, and the HTTP side is up.
async fn others_unaffected(srv: &TestServer, pam: &mut Client) {
    let id = srv.publish(CH, "after", json!({"ok": true})).await;
    let got = pam.expect("after").await;
    assert_eq!(got["id"], id);
    let mut kevin = srv.connect(user("kevin", json!(null))).await;
    kevin.join(CH).await;
    let added = pam.expect("hotsock.memberAdded").await;
    assert_eq!(added["data"]["member"]["uid"], "kevin");
    kevin
        .send(json!({"channel": CH, "event": "hello", "data": 1}))
        .await;
    assert_eq!(pam.expect("hello").await["meta"]["uid"], "kevin");
    let (status, _) = http(srv.addr, "GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
    kevin.close().await;
    let removed = pam.expect("hotsock.memberRemoved").await;
    assert_eq!(removed["data"]["member"]["uid"], "kevin");
}

/// The misbehaving client is gone and the bystander was told.
async fn jim_removed(pam: &mut Client) {
    let removed = pam.expect("hotsock.memberRemoved").await;
    assert_eq!(removed["data"]["member"]["uid"], "jim");
    assert_eq!(
        removed["data"]["members"],
        json!([{"uid": "pam", "umd": null}])
    );
}

impl Scene {
    async fn others_unaffected(&mut self) {
        others_unaffected(&self.srv, &mut self.pam).await;
    }

    /// The misbehaving client was answered and is still fully usable.
    async fn jim_still_works(&mut self) {
        self.jim.ping_pong().await;
        let id = self.srv.publish(CH, "still-here", json!(null)).await;
        assert_eq!(self.jim.expect("still-here").await["id"], id);
        assert_eq!(self.pam.expect("still-here").await["id"], id);
    }

    async fn jim_removed(&mut self) {
        jim_removed(&mut self.pam).await;
    }
}

#[tokio::test]
async fn malformed_json_and_wrong_types_get_invalid_message() {
    let mut s = scene().await;
    let frames: &[(&str, Option<&str>)] = &[
        ("{", None),
        ("}{", None),
        ("{\"event\":\"hotsock.subscribe\",\"channel\":\"x\"", None),
        ("\u{0}", None),
        ("", None),
        ("   ", None),
        ("true", None),
        ("[{\"event\":\"hotsock.ping\"}]", None),
        (r#"{"event":null,"channel":"presence.room"}"#, Some(CH)),
        (r#"{"event":{"a":1}}"#, None),
        (r#"{"event":1.5,"channel":"presence.room","data":{}}"#, None),
        (
            r#"{"event":"hotsock.subscribe","channel":["presence.room"]}"#,
            None,
        ),
        (
            r#"{"event":"hotsock.subscribe","channel":{"name":"presence.room"}}"#,
            None,
        ),
        (
            r#"{"event":"hotsock.subscribe","channel":"presence.other","data":[1]}"#,
            Some("presence.other"),
        ),
        (
            r#"{"event":"hotsock.umdUpdate","channel":"presence.room","data":7}"#,
            Some(CH),
        ),
        (r#"{"event":"chat","channel":false}"#, None),
        // An invalid escape.
        (
            r#"{"event":"chat","channel":"presence.room","data":"\x"}"#,
            None,
        ),
    ];
    for (text, channel) in frames {
        s.jim.send_text(text).await;
        let err = s.jim.next().await;
        assert_eq!(err["event"], "hotsock.error", "{text:?}: {err}");
        assert_eq!(err["error"]["code"], "INVALID_MESSAGE", "{text:?}: {err}");
        match channel {
            Some(c) => assert_eq!(err["channel"], *c, "{text:?}: {err}"),
            None => assert!(err.get("channel").is_none(), "{text:?}: {err}"),
        }
    }
    // Deeply nested JSON: an error, not a stack overflow.
    let nest = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    s.jim
        .send_text(&format!(
            r#"{{"event":"chat","channel":"{CH}","data":{}}}"#,
            nest(50_000)
        ))
        .await;
    s.jim.expect_error("MESSAGE_TOO_LARGE", Some(CH)).await;
    s.jim
        .send_text(&format!(
            r#"{{"event":"hotsock.subscribe","channel":"presence.x","data":{}}}"#,
            nest(10_000)
        ))
        .await;
    s.jim
        .expect_error("INVALID_MESSAGE", Some("presence.x"))
        .await;
    s.jim
        .send_text(&format!(r#"{{"event":{},"channel":"{CH}"}}"#, nest(10_000)))
        .await;
    s.jim.expect_error("INVALID_MESSAGE", None).await;
    s.jim_still_works().await;
    s.others_unaffected().await;
    // None of it changed the channel.
    assert_eq!(s.srv.member_uids(CH).await, ["pam", "jim"]);
}

#[tokio::test]
async fn unknown_events_get_unknown_event() {
    let mut s = scene().await;
    for event in [
        "hotsock.bogus",
        "hotsock.",
        "hotsock.SUBSCRIBE",
        "hotsock.subscribe ",
    ] {
        s.jim.send(json!({"event": event, "channel": CH})).await;
        s.jim.expect_error("UNKNOWN_EVENT", Some(CH)).await;
    }
    s.jim_still_works().await;
    s.others_unaffected().await;
}

#[tokio::test]
async fn control_characters_in_channel_names_are_refused() {
    let mut s = scene().await;
    for name in [
        "presence.room\u{0}",
        "presence.\u{1b}[31mroom",
        "presence.room\r\n",
        "\u{85}x",
        "presence.room\u{2028}",
    ] {
        s.jim
            .send(json!({"event": "hotsock.subscribe", "channel": name}))
            .await;
        s.jim.expect_error("INVALID_CHANNEL_NAME", Some(name)).await;
        s.jim
            .send(json!({"event": "chat", "channel": name, "data": 1}))
            .await;
        s.jim.expect_error("INVALID_CHANNEL_NAME", Some(name)).await;
    }
    // Nothing was created under a look-alike name.
    let names: Vec<String> = s
        .srv
        .presence()
        .channels()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, [CH]);
    s.jim_still_works().await;
    s.others_unaffected().await;
}

#[tokio::test]
async fn binary_frames_get_invalid_message() {
    let mut s = scene().await;
    s.jim.send_binary(br#"{"event":"hotsock.ping"}"#).await;
    s.jim.expect_error("INVALID_MESSAGE", None).await;
    s.jim.send_binary(&[0xff, 0x00, 0x13, 0x37]).await;
    s.jim.expect_error("INVALID_MESSAGE", None).await;
    s.jim_still_works().await;
    s.others_unaffected().await;
}

#[tokio::test]
async fn a_flood_of_binary_frames_is_closed_like_a_flood_of_text() {
    let mut s = scene_with(|c| c.limits.max_messages_per_second = 10).await;
    for _ in 0..300 {
        if s.jim
            .ws
            .feed(Message::Binary(vec![1, 2, 3].into()))
            .await
            .is_err()
        {
            break;
        }
    }
    let _ = s.jim.ws.flush().await;
    match s.jim.ending_within(WAIT).await {
        Ending::Close(code, reason) => assert_eq!(code, 1008, "{reason}"),
        Ending::Dropped => panic!("dropped without a 1008 close"),
    }
    s.jim_removed().await;
    s.others_unaffected().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10_mb_frame_closes_with_1009() {
    let Scene { srv, mut pam, jim } = scene().await;
    let huge = format!(
        r#"{{"event":"chat","channel":"{CH}","data":"{}"}}"#,
        "x".repeat(10 * 1024 * 1024)
    );
    let (mut sink, mut stream) = jim.ws.split();
    // The server stops reading after the frame header, so the send may
    // never finish: read the close while it is in flight.
    let send = async move {
        let _ = tokio::time::timeout(WAIT, sink.send(Message::Text(huge.into()))).await;
        sink
    };
    let read = async {
        loop {
            match tokio::time::timeout(WAIT, stream.next()).await {
                Ok(Some(Ok(Message::Close(Some(frame))))) => {
                    break Ending::Close(u16::from(frame.code), frame.reason.to_string());
                }
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_)) | None) => break Ending::Dropped,
                Err(_) => panic!("no close within {WAIT:?} of a 10 MB frame"),
            }
        }
    };
    let (_sink, ending) = tokio::join!(send, read);
    match ending {
        Ending::Close(code, reason) => {
            assert_eq!(code, 1009, "{reason}");
            assert!(
                reason.contains("131072"),
                "the reason should name the limit: {reason}"
            );
        }
        Ending::Dropped => panic!("dropped without a 1009 close"),
    }
    jim_removed(&mut pam).await;
    others_unaffected(&srv, &mut pam).await;
}

#[tokio::test]
async fn oversized_data_within_the_frame_limit_gets_message_too_large() {
    let mut s = scene().await;
    let data = "x".repeat(100 * 1024);
    s.jim
        .send(json!({"event": "chat", "channel": CH, "data": data}))
        .await;
    s.jim.expect_error("MESSAGE_TOO_LARGE", Some(CH)).await;
    s.jim_still_works().await;
    s.others_unaffected().await;
}

#[tokio::test]
async fn invalid_expired_and_tampered_tokens() {
    let mut s = scene().await;
    let now = rollcall::time::unix_now();
    let good = s.srv.token(user("jim", json!(null)));
    let parts: Vec<&str> = good.split('.').collect();
    let admin = s.srv.token(user("admin", json!({"role": "admin"})));
    let forged_payload = admin.split('.').nth(1).expect("payload");
    let connect_tokens = [
        "x".to_string(),
        "a.b.c".to_string(),
        "..".to_string(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{}.{}.{}", parts[0], forged_payload, parts[2]),
        sign_exact(
            SECRET,
            &json!({"exp": now - 1, "scope": "connect", "uid": "jim"}),
        ),
        sign_exact(
            "guess",
            &json!({"exp": now + 60, "scope": "connect", "uid": "jim"}),
        ),
        format!("{}.{}.", b64url(br#"{"alg":"none"}"#), parts[1]),
        format!("{}%00", good),
        "%FF%FE".to_string(),
        "x".repeat(20_000),
    ];
    for token in &connect_tokens {
        let refused = s.srv.connect_raw(token).await.err();
        assert_eq!(
            refused,
            Some(401),
            "token {:?}",
            &token[..token.len().min(60)]
        );
    }
    // Bad subscribe and umd tokens on a live connection: errors, no close.
    let bad_sub = sign_exact(
        "guess",
        &json!({"exp": now + 60, "scope": "subscribe", "uid": "jim", "channels": {"presence.vip": {"subscribe": true}}}),
    );
    let expired_sub = sign_exact(
        SECRET,
        &json!({"exp": now - 1, "scope": "subscribe", "uid": "jim", "channels": {"presence.vip": {"subscribe": true}}}),
    );
    for token in [bad_sub, expired_sub, "garbage".to_string()] {
        s.jim.send(json!({"event": "hotsock.subscribe", "channel": "presence.vip", "data": {"token": token}})).await;
        s.jim
            .expect_error("INVALID_SUBSCRIBE_TOKEN", Some("presence.vip"))
            .await;
        s.jim
            .send(json!({"event": "hotsock.umdUpdate", "channel": CH, "data": {"token": token}}))
            .await;
        s.jim.expect_error("INVALID_UMD_TOKEN", Some(CH)).await;
    }
    s.jim_still_works().await;
    s.others_unaffected().await;
    assert_eq!(s.srv.member_uids(CH).await, ["pam", "jim"]);
}

#[tokio::test]
async fn a_mixed_barrage_leaves_the_server_and_others_intact() {
    let mut s = scene().await;
    let junk: Vec<Value> = vec![
        json!({"event": "hotsock.subscribe", "channel": "presence.room"}),
        json!({"event": "hotsock.unsubscribe", "channel": "nope"}),
        json!({"event": "hotsock.umdUpdate"}),
        json!({"event": "hotsock.subscribe", "channel": "a b"}),
        json!({"event": "#x", "channel": CH}),
        json!({"event": "chat", "channel": "presence.elsewhere", "data": 1}),
        json!({"event": "hotsock.storm", "channel": CH}),
    ];
    let codes = [
        "ALREADY_SUBSCRIBED",
        "NOT_SUBSCRIBED",
        "INVALID_UMD_TOKEN",
        "INVALID_CHANNEL_NAME",
        "INVALID_EVENT_NAME",
        "PUBLISH_PERMISSION_DENIED",
        "UNKNOWN_EVENT",
    ];
    for frame in &junk {
        s.jim.send(frame.clone()).await;
    }
    for code in codes {
        let err = s.jim.next().await;
        assert_eq!(err["error"]["code"], code, "{err}");
    }
    s.jim_still_works().await;
    s.others_unaffected().await;
    // Then it just vanishes mid-stream: members are cleaned up.
    drop(s.jim);
    let removed = s.pam.expect("hotsock.memberRemoved").await;
    assert_eq!(removed["data"]["member"]["uid"], "jim");
}

/// A hand-rolled WebSocket client over raw TCP, for frames a conforming
/// client library refuses to send.
struct RawWs {
    stream: tokio::net::TcpStream,
}

impl RawWs {
    async fn connect(srv: &TestServer, token: &str) -> RawWs {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(srv.addr)
            .await
            .expect("connect");
        let req = format!(
            "GET /hotsock?token={token} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            srv.addr
        );
        stream.write_all(req.as_bytes()).await.expect("write");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            stream.read_exact(&mut b).await.expect("read handshake");
            head.push(b[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        RawWs { stream }
    }

    async fn send_frame(&mut self, first: u8, payload: &[u8], masked: bool) {
        use tokio::io::AsyncWriteExt;
        assert!(payload.len() < 126);
        let mut frame = vec![first, payload.len() as u8 | if masked { 0x80 } else { 0 }];
        let mask = [0x12, 0x34, 0x56, 0x78];
        if masked {
            frame.extend_from_slice(&mask);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        self.stream.write_all(&frame).await.expect("write frame");
    }

    /// Reads server frames until a close frame (its code) or EOF (None).
    async fn close_code(&mut self) -> Option<u16> {
        use tokio::io::AsyncReadExt;
        let read = async {
            loop {
                let mut h = [0u8; 2];
                if self.stream.read_exact(&mut h).await.is_err() {
                    return None;
                }
                let mut len = u64::from(h[1] & 0x7f);
                if len == 126 {
                    let mut l = [0u8; 2];
                    self.stream.read_exact(&mut l).await.ok()?;
                    len = u64::from(u16::from_be_bytes(l));
                } else if len == 127 {
                    let mut l = [0u8; 8];
                    self.stream.read_exact(&mut l).await.ok()?;
                    len = u64::from_be_bytes(l);
                }
                let mut payload = vec![0u8; len as usize];
                self.stream.read_exact(&mut payload).await.ok()?;
                if h[0] & 0x0f == 0x8 {
                    return Some(u16::from_be_bytes([payload[0], payload[1]]));
                }
            }
        };
        tokio::time::timeout(WAIT, read)
            .await
            .expect("the server ends the connection")
    }
}

#[tokio::test]
async fn websocket_protocol_violations_close_the_connection() {
    let Scene { srv, mut pam, jim } = scene().await;
    drop(jim);
    jim_removed(&mut pam).await;
    let token = srv.token(user("raw", json!(null)));
    // (what, first byte, payload, masked, expected close code)
    let cases: &[(&str, u8, &[u8], bool, u16)] = &[
        (
            "invalid UTF-8 in a text frame",
            0x81,
            &[0x22, 0xff, 0xfe, 0x22],
            true,
            1007,
        ),
        (
            "an unmasked client frame",
            0x81,
            br#"{"event":"hotsock.ping"}"#,
            false,
            1002,
        ),
        ("a reserved opcode", 0x83, b"x", true, 1002),
        ("reserved bits set", 0xf1, b"{}", true, 1002),
        (
            "a continuation with nothing to continue",
            0x80,
            b"{}",
            true,
            1002,
        ),
    ];
    for (what, first, payload, masked, expected) in cases {
        let mut raw = RawWs::connect(&srv, &token).await;
        raw.send_frame(
            0x81,
            br#"{"event":"hotsock.subscribe","channel":"presence.room"}"#,
            true,
        )
        .await;
        assert_eq!(
            pam.expect("hotsock.memberAdded").await["data"]["member"]["uid"],
            "raw"
        );
        raw.send_frame(*first, payload, *masked).await;
        assert_eq!(raw.close_code().await, Some(*expected), "{what}");
        let removed = pam.expect("hotsock.memberRemoved").await;
        assert_eq!(removed["data"]["member"]["uid"], "raw", "{what}");
    }
    others_unaffected(&srv, &mut pam).await;
}
