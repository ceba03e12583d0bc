//! The property checks of the decoder fuzz tests, one function per target.
//!
//! Every function takes raw input bytes (libFuzzer style, so the cargo-fuzz
//! targets under `fuzz/` call the very same functions), feeds them to one
//! decoder of untrusted input and panics when the decoder panics or breaks
//! an invariant. APIs that take `&str` get the input as lossy UTF-8; APIs
//! that take bytes get it as is. A few targets read two inputs separated
//! by the first `\n` (see [`split2`]).
//!
//! This file depends only on `rollcall` and its regular dependencies
//! (`serde_json`, `tokio`, `hmac`, `sha2`, `regex-lite`), never on `rand`.

#![allow(dead_code)]

use std::borrow::Cow;
use std::sync::OnceLock;

use serde_json::{Map, Value};

/// The input as text (invalid UTF-8 becomes U+FFFD).
pub fn text(data: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// Splits at the first `\n`: (before, after); after is empty without one.
pub fn split2(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// Nesting depth of a parsed JSON value (a scalar is 0, `[]` is 1).
pub fn value_depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(value_depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(value_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Nesting depth of JSON text as serde reads it, duplicate keys included
/// (a `Value` keeps only the last of them). None if the text is not JSON
/// (or nests deeper than serde's limit of 128).
pub fn serde_depth(text: &str) -> Option<usize> {
    struct Depth(usize);
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Depth;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<Depth, E> {
            Ok(Depth(0))
        }
        fn visit_i64<E>(self, _: i64) -> Result<Depth, E> {
            Ok(Depth(0))
        }
        fn visit_u64<E>(self, _: u64) -> Result<Depth, E> {
            Ok(Depth(0))
        }
        fn visit_f64<E>(self, _: f64) -> Result<Depth, E> {
            Ok(Depth(0))
        }
        fn visit_str<E>(self, _: &str) -> Result<Depth, E> {
            Ok(Depth(0))
        }
        fn visit_unit<E>(self) -> Result<Depth, E> {
            Ok(Depth(0))
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Depth, A::Error> {
            let mut max = 0;
            while let Some(Depth(d)) = a.next_element()? {
                max = max.max(d);
            }
            Ok(Depth(max + 1))
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Depth, A::Error> {
            let mut max = 0;
            while let Some((serde::de::IgnoredAny, Depth(d))) = a.next_entry()? {
                max = max.max(d);
            }
            Ok(Depth(max + 1))
        }
    }
    impl<'de> serde::Deserialize<'de> for Depth {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Depth, D::Error> {
            d.deserialize_any(V)
        }
    }
    serde_json::from_str::<Depth>(text).ok().map(|d| d.0)
}

/// Standard base64 with padding (the tests must not depend on the
/// optional `base64` crate).
pub fn b64_std(data: &[u8]) -> String {
    b64(
        data,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        true,
    )
}

/// Unpadded base64url (RFC 7515), as JWT parts are written.
pub fn b64url(data: &[u8]) -> String {
    b64(
        data,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
        false,
    )
}

fn b64(data: &[u8], table: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let emit = chunk.len() + 1;
        for i in 0..4 {
            if i < emit {
                out.push(table[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes unpadded base64url (for reading corpus tokens apart); None on
/// anything else.
pub fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        }))
    };
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let mut acc = 0u32;
        for &c in chunk {
            acc = (acc << 6) | val(c)?;
        }
        acc <<= 6 * (4 - chunk.len() as u32);
        let bytes = [(acc >> 16) as u8, (acc >> 8) as u8, acc as u8];
        match chunk.len() {
            4 => out.extend_from_slice(&bytes),
            3 => out.extend_from_slice(&bytes[..2]),
            2 => out.push(bytes[0]),
            _ => return None,
        }
    }
    Some(out)
}

// ------------------------------------------------------------------ names

/// `src/names.rs` as documented: controls (C0, DEL, C1) and bidi controls.
fn doc_forbidden(c: char) -> bool {
    let u = u32::from(c);
    u <= 0x1f
        || (0x7f..=0x9f).contains(&u)
        || matches!(u, 0x200e | 0x200f | 0x061c)
        || (0x202a..=0x202e).contains(&u)
        || (0x2066..=0x2069).contains(&u)
}

/// `names::check_channel` as documented: 1-256 characters, none of `*`
/// `,` `#`, whitespace, control or bidirectional-control characters.
pub fn doc_channel_ok(s: &str) -> bool {
    let n = s.chars().count();
    (1..=256).contains(&n)
        && !s
            .chars()
            .any(|c| matches!(c, '*' | ',' | '#') || c.is_whitespace() || doc_forbidden(c))
}

/// `names::check_event` as documented.
pub fn doc_event_ok(s: &str) -> bool {
    let n = s.chars().count();
    (1..=128).contains(&n)
        && !s.starts_with('#')
        && !s.starts_with("hotsock.")
        && !s.chars().any(|c| c == '*' || doc_forbidden(c))
}

/// `names::check_user_id` as documented.
pub fn doc_user_id_ok(s: &str) -> bool {
    let n = s.chars().count();
    (1..=128).contains(&n) && !s.chars().any(doc_forbidden)
}

/// `src/names.rs`: the three name checks agree with their documentation,
/// `json_depth` agrees with serde's nesting on valid JSON and is bounded
/// by the number of brackets otherwise, `check_message_data` accepts
/// exactly what is small and shallow enough.
pub fn names(data: &[u8]) {
    use rollcall::names::*;
    let s = text(data);
    let s = s.as_ref();
    assert_eq!(
        check_channel(s).is_ok(),
        doc_channel_ok(s),
        "check_channel({s:?}) = {:?} disagrees with the documented rule",
        check_channel(s)
    );
    assert_eq!(
        check_event(s).is_ok(),
        doc_event_ok(s),
        "check_event({s:?}) = {:?} disagrees with the documented rule",
        check_event(s)
    );
    assert_eq!(
        check_user_id(s).is_ok(),
        doc_user_id_ok(s),
        "check_user_id({s:?}) = {:?} disagrees with the documented rule",
        check_user_id(s)
    );
    let depth = json_depth(s);
    let brackets = s.bytes().filter(|b| matches!(b, b'[' | b'{')).count();
    assert!(
        depth <= brackets,
        "json_depth {depth} > {brackets} brackets"
    );
    if let Some(d) = serde_depth(s) {
        assert_eq!(
            depth, d,
            "json_depth disagrees with serde's nesting for {s:?}"
        );
    }
    let ok = s.len() <= MAX_MESSAGE_BYTES && depth <= MAX_JSON_DEPTH;
    assert_eq!(check_message_data(s).is_ok(), ok, "check_message_data");
}

// ---------------------------------------------------------------- hotsock

/// Hotsock client frames (`adapters/hotsock/wire.rs` `decode`): accepted
/// frames carry checked names and bounded data and survive
/// decode → encode → decode; errors render as JSON `hotsock.error` frames.
#[cfg(feature = "hotsock")]
pub fn hotsock_frame(data: &[u8]) {
    use rollcall::hotsock::wire::{ClientFrame, MAX_DATA_BYTES, decode, error};
    use rollcall::names::{check_channel, check_event};
    use serde_json::json;

    let text = text(data);
    let frame = match decode(&text) {
        Ok(f) => f,
        Err(e) => {
            assert!(!e.code.is_empty() && !e.message.is_empty());
            let bytes = error(&e);
            let v: Value = serde_json::from_str(&bytes).expect("hotsock.error frame is JSON");
            assert_eq!(v["error"]["code"], e.code);
            return;
        }
    };
    let enc = |s: &str| serde_json::to_string(s).expect("a string serializes");
    let again_text = match &frame {
        ClientFrame::Subscribe { channel, token } => {
            assert!(check_channel(channel).is_ok(), "subscribe to {channel:?}");
            let mut v = json!({"event": "hotsock.subscribe", "channel": channel});
            if let Some(t) = token {
                v["data"] = json!({"token": t});
            }
            v.to_string()
        }
        ClientFrame::Unsubscribe { channel } => {
            assert!(check_channel(channel).is_ok(), "unsubscribe {channel:?}");
            json!({"event": "hotsock.unsubscribe", "channel": channel}).to_string()
        }
        ClientFrame::Ping => r#"{"event":"hotsock.ping"}"#.to_string(),
        ClientFrame::Pong => r#"{"event":"hotsock.pong"}"#.to_string(),
        ClientFrame::Heartbeat => r#"{"event":"hotsock.heartbeat"}"#.to_string(),
        ClientFrame::UmdUpdate { channel, token } => {
            let mut v = json!({"event": "hotsock.umdUpdate", "data": {"token": token}});
            if let Some(c) = channel {
                assert!(check_channel(c).is_ok(), "umdUpdate on {c:?}");
                v["channel"] = json!(c);
            }
            v.to_string()
        }
        ClientFrame::Call { id, name, args } => {
            assert!(!name.is_empty(), "a call has a name");
            json!({"event": "rollcall.call", "data": {"id": id, "name": name, "args": args}})
                .to_string()
        }
        ClientFrame::Message {
            channel,
            event,
            data,
        } => {
            assert!(check_channel(channel).is_ok(), "message on {channel:?}");
            assert!(check_event(event).is_ok(), "message event {event:?}");
            if let Some(d) = data {
                assert!(d.get().len() <= MAX_DATA_BYTES);
                assert_ne!(d.get(), "null");
            }
            format!(
                r#"{{"channel":{},"event":{}{}}}"#,
                enc(channel),
                enc(event),
                data.as_ref()
                    .map(|d| format!(r#","data":{}"#, d.get()))
                    .unwrap_or_default()
            )
        }
    };
    let again = decode(&again_text)
        .unwrap_or_else(|e| panic!("re-encoded frame {again_text} is rejected: {e:?}"));
    assert_eq!(
        format!("{frame:?}"),
        format!("{again:?}"),
        "decode → encode → decode changed the frame"
    );
}

// --------------------------------------------------------------- socketio

/// Socket.IO payloads (`adapters/socketio/wire.rs`): `split_event` on raw
/// bytes, and `decode_channel` / `decode_password` / `decode_send_message` / `decode_presence`
/// on the parsed JSON (and on the payload of a `[event, payload]` array):
/// accepted payloads survive a round trip, `message_payload` builds JSON
/// that the codec recognises as its own and passes on byte for byte.
#[cfg(feature = "socketio")]
pub fn socketio_payload(data: &[u8]) {
    use rollcall::socketio::wire::split_event;
    if let Some((event, payload)) = std::str::from_utf8(data).ok().and_then(split_event) {
        let again = serde_json::to_string(&(&event, &payload)).expect("serializes");
        let (e2, p2) = split_event(&again).expect("a re-encoded event splits");
        assert_eq!(event, e2);
        assert_eq!(payload.get(), p2.get());
    }
    let text = text(data);
    let Ok(value) = serde_json::from_str::<Value>(&text) else {
        return;
    };
    socketio_decoders(&value);
    if let Value::Array(items) = &value
        && items.len() == 2
        && items[0].is_string()
    {
        socketio_decoders(&items[1]);
    }
}

/// rollcall's own Engine.IO reads any text frame without a panic; what it
/// takes apart are slices of the frame (the namespace starts with `/`, an
/// event's data ends the frame), and an event's arguments come out only
/// from a JSON array that starts with a string.
#[cfg(feature = "socketio")]
pub fn socketio_engine_packet(data: &[u8]) {
    use rollcall::socketio::engine::{Packet, event_of, parse};
    let text = text(data);
    let Ok(packet) = parse(&text) else {
        return;
    };
    match packet {
        Packet::Connect { nsp, auth } => {
            assert!(nsp.starts_with('/'), "{nsp:?} from {text:?}");
            assert!(text.ends_with(auth), "{auth:?} from {text:?}");
        }
        Packet::Disconnect { nsp } => assert!(nsp.starts_with('/'), "{nsp:?}"),
        Packet::Event { nsp, data, .. } => {
            assert!(nsp.starts_with('/'), "{nsp:?} from {text:?}");
            assert!(text.ends_with(data), "{data:?} from {text:?}");
            if let Some((event, _)) = event_of(data) {
                let value: Value = serde_json::from_str(data).expect("event_of read JSON");
                assert_eq!(value[0].as_str(), Some(event.as_str()));
            }
        }
        Packet::Ping(probe) => assert!(text.ends_with(probe)),
        Packet::Close | Packet::Ignored | Packet::Answer | Packet::Binary => {}
    }
}

#[cfg(feature = "socketio")]
fn socketio_decoders(p: &Value) {
    use std::sync::Arc;

    use rollcall::outbox::Outbound;
    use rollcall::presence::{ChannelMessage, Codec, Event};
    use rollcall::socketio::wire::*;
    use serde_json::json;
    use serde_json::value::RawValue;

    let as_json = |b: &str| -> Value { serde_json::from_str(b).expect("server frame is JSON") };
    match decode_channel(p) {
        Ok(c) => {
            assert!(check_channel_id(&c.id).is_ok(), "channel id {:?}", c.id);
            let again = decode_channel(&json!({"channel": c.json()}))
                .unwrap_or_else(|e| panic!("re-encoded channel {c:?} rejected: {e:?}"));
            assert_eq!(c, again);
            let (event, _) = split_event(&channel_subscribed(&c, "d", "s")).expect("splits");
            assert_eq!(event, server::CHANNEL_SUBSCRIBED);
            as_json(&channel_unsubscribed(&c));
        }
        Err(e) => {
            assert_eq!(e.code, codes::INVALID_PARAMETERS);
            as_json(&subscribe_failed(p.get("channel"), &e));
            as_json(&error(&e));
        }
    }
    match decode_password(p) {
        Ok(Some(password)) => {
            assert!(password.len() <= MAX_PASSWORD_BYTES);
            assert_eq!(p["channel"]["password"].as_str(), Some(&*password));
        }
        Ok(None) => assert!(p["channel"]["password"].is_null()),
        Err(e) => assert_eq!(e.code, codes::INVALID_PARAMETERS),
    }
    // A refusal never echoes the password the client sent.
    let refused = as_json(&subscribe_failed(
        p.get("channel"),
        &WireError::new(codes::FORBIDDEN, "no"),
    ));
    assert!(refused[1]["channel"].get("password").is_none(), "{refused}");
    match decode_send_message(p.clone()) {
        Ok(m) => {
            assert!(
                check_channel_id(&m.topic_id).is_ok(),
                "topicId {:?}",
                m.topic_id
            );
            assert!(!m.category.is_empty());
            for k in [
                "topicId",
                "_id",
                "sender",
                "created",
                "category",
                "loopbackMetadata",
            ] {
                assert!(!m.fields.contains_key(k), "{k} kept in the fields");
            }
            let mut obj = m.fields.clone();
            obj.insert("topicId".into(), json!(m.topic_id));
            obj.insert("category".into(), json!(m.category));
            if let Some(l) = &m.loopback {
                obj.insert("loopbackMetadata".into(), l.clone());
            }
            let again = decode_send_message(Value::Object(obj))
                .unwrap_or_else(|e| panic!("re-encoded SEND_MESSAGE {m:?} rejected: {e:?}"));
            assert_eq!(m, again);
            let payload = message_payload(
                "01FUZZ",
                &m,
                &json!({"_id": "u", "type": "user"}),
                "2026-01-01T00:00:00Z",
                m.loopback.as_ref(),
            );
            assert!(payload.starts_with(r#"{"_id":"01FUZZ","#), "{payload}");
            let parsed: Map<String, Value> =
                serde_json::from_str(&payload).expect("MESSAGE_SENT payload is a JSON object");
            assert_eq!(parsed["topicId"], json!(m.topic_id));
            assert_eq!(parsed["category"], json!(m.category));
            assert_eq!(parsed["sender"]["_id"], "u");
            let msg = ChannelMessage {
                id: "01FUZZ".into(),
                channel: Arc::from(m.topic_id.as_str()),
                event: m.category.clone(),
                data: Some(RawValue::from_string(payload.clone()).expect("payload is JSON")),
                sender: None,
            };
            match SocketIoCodec.encode(&Event::Message(&msg), 0) {
                Some(Outbound::Text(bytes)) => {
                    // Flavor 0: a whole EVENT packet on `/`.
                    let bare = bytes.strip_prefix("42").expect("an EVENT packet");
                    let (event, raw) = split_event(bare).expect("codec output splits");
                    assert_eq!(event, server::MESSAGE_SENT);
                    assert_eq!(raw.get(), payload, "own payload not passed byte for byte");
                }
                other => panic!("codec rendered {other:?}"),
            }
        }
        Err(e) => {
            as_json(&send_message_failed(
                p.get("topicId").and_then(Value::as_str),
                &e,
            ));
        }
    }
    match decode_presence(p) {
        Ok(pe) => {
            assert!(check_channel_id(&pe.topic_id).is_ok());
            assert!(pe.content.as_ref().is_none_or(Value::is_object));
            let cat = match pe.action {
                PresenceAction::Online => category::PARTY_ONLINE,
                PresenceAction::Leaves => category::PARTY_LEAVES,
                PresenceAction::RequestParties => category::REQUEST_PARTIES,
            };
            let mut v = json!({"category": cat, "topicId": pe.topic_id});
            if let Some(c) = &pe.content {
                v["content"] = c.clone();
            }
            assert_eq!(decode_presence(&v), Ok(pe.clone()));
        }
        Err(e) => {
            as_json(&presence_failed(
                p.get("topicId").and_then(Value::as_str),
                &e,
            ));
        }
    }
    // Foreign messages (from other front ends) with this data.
    let msg = ChannelMessage {
        id: "01FOREIGN".into(),
        channel: Arc::from("presence.fuzz"),
        event: "chat".into(),
        data: RawValue::from_string(p.to_string()).ok(),
        sender: None,
    };
    let (event, _) = split_event(&foreign_message(&msg)).expect("foreign message splits");
    assert_eq!(event, server::MESSAGE_SENT);
    let party = rollcall::socketio::wire::Party {
        session_id: "s",
        subscribe_time: "2026-12-03T10:00:00Z",
    };
    let info = member_info(p, Some(p), Some(&party));
    assert!(info.is_object());
    assert!(sender_json(Some("u"), p).is_object());
}

/// rollcall's own Engine.IO polling payloads (`adapters/socketio/polling.rs`
/// `decode`): never a panic; Engine.IO 3 payloads split as an independent
/// model splits them (lengths in UTF-16 units), into packets an
/// independent encoder writes so that they decode the same again;
/// Engine.IO 4 packets joined with `\x1e` are the body.
#[cfg(feature = "socketio")]
pub fn socketio_polling(data: &[u8]) {
    use rollcall::socketio::engine::Version;
    use rollcall::socketio::polling::decode;

    let text = text(data);
    if let Some(packets) = decode(Version::V3, &text) {
        assert_eq!(
            Some(packets.clone()),
            polling_packets(&text),
            "the model splits {text:?} otherwise"
        );
        let again: String = packets
            .iter()
            .map(|p| format!("{}:{p}", p.encode_utf16().count()))
            .collect();
        assert_eq!(
            decode(Version::V3, &again),
            Some(packets.clone()),
            "EIO3 packets do not decode the same once encoded again ({again:?})"
        );
        assert!(packets.iter().all(|p| !p.is_empty()), "{packets:?}");
    }
    if let Some(packets) = decode(Version::V4, &text) {
        assert_eq!(packets.join("\x1e"), text, "EIO4 packets do not join back");
        assert!(
            packets.iter().all(|p| !p.is_empty() && !p.starts_with('b')),
            "{packets:?}"
        );
    }
}

/// Splits an EIO3 text payload into packets (lengths in UTF-16 units).
#[cfg(feature = "socketio")]
pub fn polling_packets(payload: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        let (len, after) = rest.split_once(':')?;
        let len: usize = len.parse().ok()?;
        let mut units = 0;
        let mut end = None;
        for (i, ch) in after.char_indices() {
            if units == len {
                end = Some(i);
                break;
            }
            units += ch.len_utf16();
        }
        let end = match end {
            Some(e) => e,
            None if units == len => after.len(),
            None => return None,
        };
        out.push(&after[..end]);
        rest = &after[end..];
    }
    Some(out)
}

/// Socket.IO credentials (`adapters/socketio/auth.rs`): the input is
/// `query \n auth-json`. `credentials` never accepts an empty token,
/// `percent_decode` inverts percent-encoding, a token sent percent-encoded
/// in the query comes back unchanged, `identify` names a user.
#[cfg(feature = "socketio")]
pub fn socketio_auth(data: &[u8]) {
    use rollcall::socketio::auth::{TokenType, credentials, identify, percent_decode};

    let (q, a) = split2(data);
    let query = text(q);
    let auth_text = text(a);
    let auth: Option<Value> = serde_json::from_str(&auth_text).ok();
    for (qq, aa) in [
        (Some(query.as_ref()), None),
        (None, auth.as_ref()),
        (Some(query.as_ref()), auth.as_ref()),
    ] {
        match credentials(qq, aa) {
            Ok(c) => assert!(!c.token.is_empty()),
            Err(e) => assert!(!e.is_empty()),
        }
    }
    let _ = percent_decode(&query);
    let _ = percent_decode(&auth_text);
    let encoded = pct_encode(&auth_text);
    assert_eq!(percent_decode(&encoded), auth_text, "percent round trip");
    if !auth_text.is_empty() {
        let q = format!("EIO=4&tokenType=oauth&token={encoded}&transport=websocket");
        let c = credentials(Some(&q), None).expect("a query with a token");
        assert_eq!(c.token, auth_text);
        assert_eq!(c.token_type, TokenType::OAuth);
    }
    if let Some(Value::Object(claims)) = &auth
        && let Ok(user) = identify(claims)
    {
        assert!(!user.user_id.is_empty());
        assert!(user.profile.is_object());
    }
}

/// Percent-encodes every byte but the unreserved ones.
pub fn pct_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// --------------------------------------------------------- socketcluster

/// SocketCluster frames (`adapters/sc/wire.rs` `decode`, frames and
/// batches) and `Request::parse` of every event packet: a request id
/// echoes verbatim, every event packet survives decode → encode → decode,
/// channel requests name a non-empty channel, replies are JSON.
#[cfg(feature = "sc")]
pub fn sc_frame(data: &[u8]) {
    use rollcall::sc::wire::{Frame, Packet, Request, ScError, decode, error, ok};
    use serde_json::value::RawValue;

    #[derive(serde::Deserialize)]
    struct Rid<'a> {
        #[serde(borrow)]
        rid: &'a RawValue,
    }

    let text = text(data);
    let Frame::Packets(packets) = decode(&text) else {
        return;
    };
    for p in &packets {
        let Packet::Event { event, data, cid } = p else {
            continue;
        };
        let mut again = format!(
            r#"{{"event":{}"#,
            serde_json::to_string(event).expect("a string serializes")
        );
        if let Some(d) = data {
            again.push_str(&format!(r#","data":{}"#, d.get()));
        }
        if let Some(cid) = cid {
            let reply = ok(cid);
            let rid: Rid<'_> = serde_json::from_str(&reply).expect("{\"rid\":…} is JSON");
            again.push_str(&format!(r#","cid":{}"#, rid.rid.get()));
            let err = error(cid, &ScError::broker("x"));
            // JSON syntax (a cid may be a number no f64 holds, echoed as is).
            serde_json::from_str::<serde::de::IgnoredAny>(&err).expect("error reply is JSON");
        }
        again.push('}');
        match decode(&again) {
            Frame::Packets(mut back) if back.len() == 1 => {
                let back = back.remove(0);
                assert_eq!(
                    format!("{p:?}"),
                    format!("{back:?}"),
                    "decode → encode → decode changed the packet"
                );
            }
            other => panic!("re-encoded packet {again} decodes as {other:?}"),
        }
        match Request::parse(event, data.as_deref()) {
            Ok(
                Request::Subscribe { channel }
                | Request::Unsubscribe { channel }
                | Request::Publish { channel, .. },
            ) => assert!(!channel.is_empty()),
            Ok(_) => {}
            Err(e) => {
                assert!(!e.message.is_empty());
                serde_json::to_string(&e).expect("ScError serializes");
            }
        }
    }
    // A batch of the same packets is the same packets.
    if text.trim_start().starts_with('{') {
        let batch = format!("[{}]", text.trim());
        if let Frame::Packets(b) = decode(&batch) {
            assert_eq!(format!("{packets:?}"), format!("{b:?}"));
        }
    }
}

/// `Request::parse` with an arbitrary event name and data: input is
/// `event \n data`.
#[cfg(feature = "sc")]
pub fn sc_request(data: &[u8]) {
    use rollcall::sc::wire::Request;
    use serde_json::value::RawValue;

    let (e, d) = split2(data);
    let event = text(e);
    let raw = RawValue::from_string(text(d).into_owned()).ok();
    for data in [raw.as_deref(), None] {
        match Request::parse(&event, data) {
            Ok(
                Request::Subscribe { channel }
                | Request::Unsubscribe { channel }
                | Request::Publish { channel, .. },
            ) => assert!(!channel.is_empty()),
            Ok(Request::Other { event: other, .. }) => assert_eq!(other, event),
            Ok(_) => {}
            Err(e) => assert!(!e.message.is_empty()),
        }
    }
}

// -------------------------------------------------------------------- sgc

/// sgc frames (`adapters/sgc/wire.rs` `decode`): every accepted frame is
/// rebuilt with the server's own frame writer, plain and base64, and
/// decodes to the same request.
#[cfg(feature = "sgc")]
pub fn sgc_frame(data: &[u8]) {
    use rollcall::sgc::wire::decode;

    let text = text(data);
    let Ok(inc) = decode(&text) else {
        return;
    };
    for base64 in [false, true] {
        let Some(again) = sgc_reencode(&inc, base64) else {
            continue;
        };
        let back =
            decode(&again).unwrap_or_else(|e| panic!("re-encoded frame {again} is dropped: {e:?}"));
        let mut want = inc.clone();
        want.base64 = base64;
        assert_eq!(
            back, want,
            "decode → encode (base64 {base64}) → decode changed the frame {again}"
        );
    }
}

/// The frame the server's writer makes for `inc`, or None if a string in
/// it would not be read back verbatim: it starts with `sgc@b64:` (decoded
/// again), or, written plain, is JSON the writer puts unquoted but with
/// surrounding whitespace or nesting too deep to read back.
#[cfg(feature = "sgc")]
fn sgc_reencode(inc: &rollcall::sgc::wire::Incoming, base64: bool) -> Option<String> {
    use std::borrow::Cow;

    use rollcall::sgc::wire::{B64_PREFIX, Frame, Request, WireMember};

    let mut strings: Vec<&str> = vec![&inc.member_id];
    if let Some(id) = &inc.id {
        strings.push(id);
    }
    let member = WireMember {
        id: Cow::Borrowed(inc.member_id.as_str()),
        ..WireMember::default()
    };
    let frame = |m: &str| Frame::new(m, base64);
    let f = match &inc.request {
        Request::NewMember { name, info } => {
            strings.extend([name.as_str(), info.as_str()]);
            frame(rollcall::sgc::wire::method::NEW_MEMBER).member(&WireMember {
                id: Cow::Borrowed(inc.member_id.as_str()),
                name: Cow::Borrowed(name),
                info: Cow::Borrowed(info),
            })
        }
        Request::RemoveMember => frame(rollcall::sgc::wire::method::REMOVE_MEMBER).member(&member),
        Request::Subscribe { channel } => {
            strings.push(channel);
            frame(rollcall::sgc::wire::method::NEW_CHANNEL_MEMBER)
                .channel(channel)
                .member(&member)
        }
        Request::Unsubscribe { channel } => {
            strings.push(channel);
            frame(rollcall::sgc::wire::method::REMOVE_CHANNEL_MEMBER)
                .channel(channel)
                .member(&member)
        }
        Request::GetMembers { channel } => {
            strings.push(channel);
            frame(rollcall::sgc::wire::method::GET_MEMBERS)
                .channel(channel)
                .member(&member)
        }
        Request::Publish { channel, text } => {
            strings.extend([channel.as_str(), text.as_str()]);
            frame(rollcall::sgc::wire::method::PUBLISH_MSG)
                .message(text)
                .channel(channel)
                .member(&member)
        }
        Request::Invite { channel, invitees } => {
            strings.push(channel);
            strings.extend(invitees.iter().map(String::as_str));
            frame(rollcall::sgc::wire::method::CHANNEL_INVITATION)
                .channel(channel)
                .member(&member)
                .members(invitees.iter().map(|i| WireMember::id_only(i)))
        }
        Request::InvitationResponse {
            channel,
            inviter,
            accept,
            code,
            text,
        } => {
            strings.extend([channel.as_str(), text.as_str()]);
            if let Some(i) = inviter {
                strings.push(i);
            }
            frame(rollcall::sgc::wire::method::CHANNEL_INVITATION_RESPONSE)
                .channel(channel)
                .member(&member)
                .members(inviter.iter().map(|i| WireMember::id_only(i)))
                .message(if *accept { "accept" } else { "decline" })
                .error(*code, text)
        }
        Request::Acknowledgment => {
            frame(rollcall::sgc::wire::method::ACKNOWLEDGMENT).member(&member)
        }
        Request::Other(m) => {
            strings.push(m);
            frame(m).member(&member)
        }
    };
    let unreadable = |s: &&str| {
        s.starts_with(B64_PREFIX)
            || (!base64
                && (s.starts_with('{') || s.starts_with('['))
                && serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok()
                && (s.trim_end() != *s || rollcall::names::json_depth(s) > 28))
    };
    if strings.iter().any(unreadable) {
        return None;
    }
    Some(f.finish(inc.id.as_deref()))
}

/// The sgc lenient JSON reader (`adapters/sgc/lenient.rs`): on strict JSON
/// no deeper than its limit it reads what serde reads; any object or array
/// it returns keeps its exact source text, which reads back to the same
/// value; nesting beyond the limit is refused.
#[cfg(feature = "sgc")]
pub fn sgc_lenient(data: &[u8]) {
    use rollcall::sgc::lenient::{MAX_DEPTH, parse};

    let text = text(data);
    let parsed = parse(&text);
    if let Ok(strict) = serde_json::from_str::<Value>(&text) {
        let depth = serde_depth(&text).expect("serde parsed it");
        match &parsed {
            Ok(v) if depth <= MAX_DEPTH => {
                assert_eq!(lenient_json(v), strict, "lenient and serde disagree");
            }
            Ok(_) => panic!("nesting {depth} > {MAX_DEPTH} accepted"),
            Err(e) if depth <= MAX_DEPTH => panic!("strict JSON refused: {e}"),
            Err(_) => {}
        }
    }
    if let Ok(v) = &parsed {
        let mut budget = 64;
        check_lenient_raw(v, &mut budget);
        let _ = v.text();
    }
}

#[cfg(feature = "sgc")]
fn lenient_json(v: &rollcall::sgc::lenient::Value<'_>) -> Value {
    use rollcall::sgc::lenient::Value as L;
    match v {
        L::Null => Value::Null,
        L::Bool(b) => Value::Bool(*b),
        L::Number(n) => {
            serde_json::from_str(n).unwrap_or_else(|e| panic!("number {n:?} is not JSON: {e}"))
        }
        L::String(s) => Value::String(s.to_string()),
        L::Array(items, _) => Value::Array(items.iter().map(lenient_json).collect()),
        L::Object(fields, _) => {
            let mut m = Map::new();
            for (k, v) in fields {
                m.insert(k.to_string(), lenient_json(v));
            }
            Value::Object(m)
        }
    }
}

#[cfg(feature = "sgc")]
fn check_lenient_raw(v: &rollcall::sgc::lenient::Value<'_>, budget: &mut usize) {
    use rollcall::sgc::lenient::{Value as L, parse};
    if *budget == 0 {
        return;
    }
    *budget -= 1;
    let (children, raw): (Vec<&L<'_>>, &str) = match v {
        L::Array(items, raw) => (items.iter().collect(), raw),
        L::Object(fields, raw) => (fields.iter().map(|(_, v)| v).collect(), raw),
        _ => return,
    };
    let (open, close) = if matches!(v, L::Array(..)) {
        ('[', ']')
    } else {
        ('{', '}')
    };
    assert!(raw.starts_with(open) && raw.ends_with(close), "raw {raw:?}");
    assert_eq!(v.text(), *raw);
    let again = parse(raw).unwrap_or_else(|e| panic!("raw text {raw:?} does not read back: {e}"));
    assert_eq!(&again, v, "raw text {raw:?} reads back differently");
    for c in children {
        check_lenient_raw(c, budget);
    }
}

/// sgc base64 (`decode_b64` / `encode_b64`) and message text: any string
/// survives encode → decode (also unpadded and with line breaks), any
/// bytes decode to their UTF-8 text or one Windows-1252 character each,
/// `message_data` → `message_text` keeps the text (up to surrounding
/// whitespace of JSON).
#[cfg(feature = "sgc")]
pub fn sgc_base64(data: &[u8]) {
    use rollcall::sgc::wire::{B64_PREFIX, decode_b64, encode_b64, message_data, message_text};

    let s = text(data);
    let s = s.as_ref();
    let _ = decode_b64(s);
    let _ = decode_b64(&format!("{B64_PREFIX}{s}"));
    let enc = encode_b64(s);
    assert!(enc.starts_with(B64_PREFIX));
    assert_eq!(decode_b64(&enc).as_deref(), Some(s), "base64 round trip");
    let unpadded = enc.trim_end_matches('=');
    assert_eq!(decode_b64(unpadded).as_deref(), Some(s), "unpadded");
    let body = &enc[B64_PREFIX.len()..];
    let mut wrapped = String::from(B64_PREFIX);
    for (i, c) in body.chars().enumerate() {
        if i % 7 == 3 {
            wrapped.push_str("\r\n ");
        }
        wrapped.push(c);
    }
    assert_eq!(decode_b64(&wrapped).as_deref(), Some(s), "with line breaks");
    let raw = format!("{B64_PREFIX}{}", b64_std(data));
    let decoded = decode_b64(&raw).expect("valid base64 decodes");
    match std::str::from_utf8(data) {
        Ok(u) => assert_eq!(decoded, u),
        Err(_) => assert_eq!(decoded.chars().count(), data.len(), "one char per byte"),
    }
    let json = message_data(s).expect("any text can be published");
    let back = message_text(Some(&json));
    let t = s.trim_start();
    if t.starts_with('{') || t.starts_with('[') {
        assert_eq!(back.trim(), s.trim());
    } else {
        assert_eq!(back, s);
    }
}

// -------------------------------------------------------------------- JWT

/// The HS* secret of the fuzz verifier.
pub const JWT_SECRET: &str = "fuzz-secret-with-enough-entropy-0123456789";

/// A verifier with the secret and every public key of
/// `src/auth/testdata`, so RS*, PS*, ES* and EdDSA tokens reach the
/// signature check too.
pub fn jwt_verifier() -> &'static rollcall::auth::JwtVerifier {
    static V: OnceLock<rollcall::auth::JwtVerifier> = OnceLock::new();
    V.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/auth/testdata");
        let dir = if dir.exists() {
            dir
        } else {
            // From the fuzz/ crate.
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../src/auth/testdata")
        };
        let cfg = rollcall::auth::AuthConfig {
            jwt_secret: Some(JWT_SECRET.into()),
            public_keys: [
                "rsa_public.pem",
                "ec256_public.pem",
                "ec384_public.pem",
                "ed25519_public.pem",
            ]
            .iter()
            .map(|f| dir.join(f))
            .collect(),
            ..Default::default()
        };
        rollcall::auth::JwtVerifier::new(&cfg).expect("fuzz verifier")
    })
}

/// The HMAC signature of `signing_input` for header `alg` (HS256 when the
/// header has no HS* alg).
pub fn hs_signature(header: &[u8], signing_input: &str) -> String {
    use hmac::{Hmac, Mac};
    let alg = serde_json::from_slice::<Value>(header)
        .ok()
        .and_then(|h| h.get("alg").and_then(Value::as_str).map(str::to_string));
    let key = JWT_SECRET.as_bytes();
    let sig = match alg.as_deref() {
        Some("HS384") => {
            let mut m = Hmac::<sha2::Sha384>::new_from_slice(key).expect("any key");
            m.update(signing_input.as_bytes());
            m.finalize().into_bytes().to_vec()
        }
        Some("HS512") => {
            let mut m = Hmac::<sha2::Sha512>::new_from_slice(key).expect("any key");
            m.update(signing_input.as_bytes());
            m.finalize().into_bytes().to_vec()
        }
        _ => {
            let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key");
            m.update(signing_input.as_bytes());
            m.finalize().into_bytes().to_vec()
        }
    };
    b64url(&sig)
}

/// JWT pre-parsing and verification (`src/auth/jwt.rs`,
/// `verify_hotsock` in `src/auth/hotsock_claims.rs`). The first byte picks
/// the mode: `0` the rest is the token text; `1` the rest is
/// `header-json \n payload-json`, signed correctly with the secret; `2`
/// the same with a wrong signature. A verified token's claims are exactly
/// its payload; a correctly signed canonical token that is not expired
/// verifies; the Hotsock claims of a token are those of its payload.
pub fn jwt_token(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        verify_token("", None, false);
        return;
    };
    match mode % 3 {
        0 => verify_token(&text(rest), None, false),
        m => {
            let (h, p) = split2(rest);
            let input = format!("{}.{}", b64url(h), b64url(p));
            let sig = if m == 1 {
                hs_signature(h, &input)
            } else {
                b64url(&rest[rest.len() / 2..])
            };
            verify_token(&format!("{input}.{sig}"), Some((h, p)), m == 1);
        }
    }
}

fn verify_token(token: &str, parts: Option<(&[u8], &[u8])>, signed: bool) {
    use rollcall::auth::HotsockClaims;

    let v = jwt_verifier();
    let verified = v.verify(token);
    if let Err(e) = &verified {
        assert!(!e.to_string().is_empty());
        let _ = e.is_token_error();
    }
    let hotsock = v.verify_hotsock(token);
    if let Err(e) = &hotsock {
        assert!(!e.to_string().is_empty());
    }
    assert!(
        !(hotsock.is_ok() && verified.is_err()),
        "verify_hotsock accepted what verify refused"
    );
    let Some((header, payload)) = parts else {
        return;
    };
    if let Ok(claims) = &verified {
        let want: Map<String, Value> =
            serde_json::from_slice(payload).expect("a verified payload is a JSON object");
        assert_eq!(claims, &want, "claims differ from the payload");
    }
    if let Ok(h) = &hotsock {
        let text = std::str::from_utf8(payload).expect("a verified payload is UTF-8");
        let direct = HotsockClaims::from_json_str(text)
            .unwrap_or_else(|e| panic!("verified Hotsock claims do not parse directly: {e}"));
        assert_eq!(h.exp, direct.exp);
        assert_eq!(h.uid, direct.uid);
        assert_eq!(h.scope, direct.scope);
        assert_eq!(
            h.channels.auto_subscribe_channels(),
            direct.channels.auto_subscribe_channels()
        );
    }
    // A canonical, correctly signed, unexpired token must verify.
    let canonical_header = header == br#"{"alg":"HS256","typ":"JWT"}"#;
    let payload_obj = serde_json::from_slice::<Map<String, Value>>(payload).ok();
    if signed
        && canonical_header
        && let Some(obj) = payload_obj
        && serde_json::to_vec(&obj).ok().as_deref() == Some(payload)
        && obj.get("exp").and_then(Value::as_u64).is_some_and(|exp| {
            exp > now_secs() + 120 && exp < 1 << 53 // jsonwebtoken reads exp as a JSON number
        })
        && !obj.contains_key("nbf")
    {
        assert!(
            verified.is_ok(),
            "a valid HS256 token was refused: {:?}",
            verified.err()
        );
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Claims pre-parsing (`HotsockClaims::from_json_str`, `from_claims`,
/// `ChannelRules::from_json`, `access_from_claims` and the front ends'
/// claim readers): accepted claims respect the documented limits, both
/// entry points agree, and the rules answer every query.
pub fn claims(data: &[u8]) {
    use rollcall::auth::{
        ChannelRules, HEARTBEAT_TIMEOUT_SECS, HotsockClaims, MAX_UID_CHARS, MAX_UMD_BYTES,
        access_from_claims,
    };

    let text = text(data);
    let parsed = HotsockClaims::from_json_str(&text);
    let value = serde_json::from_str::<Value>(&text).ok();
    if let Err(e) = &parsed {
        assert!(!e.to_string().is_empty());
    }
    if let Ok(c) = &parsed {
        let Some(Value::Object(map)) = &value else {
            panic!("claims that are not a JSON object were accepted");
        };
        let other = HotsockClaims::from_claims(map).expect("from_claims agrees with from_json_str");
        assert_eq!(
            (c.exp, &c.uid, c.scope),
            (other.exp, &other.uid, other.scope)
        );
        assert!(
            c.uid
                .as_ref()
                .is_none_or(|u| u.chars().count() <= MAX_UID_CHARS)
        );
        assert!(
            c.umd
                .as_ref()
                .is_none_or(|u| u.to_string().len() <= MAX_UMD_BYTES)
        );
        assert!(
            c.heartbeat_timeout
                .is_none_or(|h| HEARTBEAT_TIMEOUT_SECS.contains(&h))
        );
        assert!(!c.single_use || c.jti.as_ref().is_some_and(|j| !j.is_empty()));
        let mut a = c.channels.auto_subscribe_channels();
        let mut b = other.channels.auto_subscribe_channels();
        a.sort();
        b.sort();
        assert_eq!(a, b);
        query_rules(&c.channels, map);
    }
    let Some(value) = value else {
        return;
    };
    let channels = value.get("channels").unwrap_or(&value);
    if let Ok(rules) = ChannelRules::from_json(channels)
        && let Value::Object(map) = channels
    {
        query_rules(&rules, map);
    }
    if let Value::Object(map) = &value {
        let _ = access_from_claims(map);
        #[cfg(feature = "sgc")]
        if let Ok((id, _)) = rollcall::sgc::token_member(map) {
            assert!(!id.is_empty());
        }
        #[cfg(feature = "socketio")]
        if let Ok(user) = rollcall::socketio::auth::identify(map) {
            assert!(!user.user_id.is_empty());
        }
    }
}

/// Asks `rules` about its own keys and a few other names.
fn query_rules(rules: &rollcall::auth::ChannelRules, claims: &Map<String, Value>) {
    let mut names: Vec<String> = claims.keys().take(16).cloned().collect();
    names.extend(
        ["presence.room", "chat", "", "org.42", "a.b.c"]
            .iter()
            .map(|s| s.to_string()),
    );
    for (p, d) in rules.iter().take(16) {
        names.push(p.as_str().replace('*', "x"));
        if let Some(a) = &d.alias {
            names.push(a.clone());
        }
    }
    for n in &names {
        let can = rules.can_subscribe(n);
        assert!(
            !(can && rules.denies_subscribe(n)),
            "{n:?} both granted and denied"
        );
        let m = rules.message_permission(n, "chat");
        assert!(!m.publish || m.may_send(true));
        let _ = (
            rules.can_update_umd(n),
            rules.can_get_info(n),
            rules.omit_from_sub_count(n),
            rules.history_start(n),
        );
        if let Some(real) = rules.alias_for(n) {
            assert_eq!(rules.alias_of(&real), Some(n.as_str()));
        }
    }
    let _ = rules.auto_subscribe_channels();
}

/// Claim-key patterns (`Pattern::parse`, incl. `#regex:` keys): input is
/// `key \n name`. Exact keys match only themselves, `*` globs match as a
/// reference matcher does, an escaped literal as an anchored regex matches
/// exactly that literal; only empty and `#` keys are refused.
pub fn patterns(data: &[u8]) {
    use rollcall::auth::Pattern;

    let (k, n) = split2(data);
    let key = text(k);
    let name = text(n);
    match Pattern::parse(&key) {
        Ok(p) => {
            assert_eq!(p.as_str(), key);
            let m = p.matches(&name);
            if p.is_exact() {
                assert_eq!(m, key == name);
                assert!(p.matches(&key));
            } else if !p.is_regex() {
                if key.len().saturating_mul(name.len()) <= 1 << 22 {
                    assert_eq!(m, glob_reference(key.as_bytes(), name.as_bytes()));
                }
                assert!(p.matches(&key.replace('*', "")));
            }
        }
        Err(e) => {
            assert!(key.is_empty() || key.starts_with('#'), "{key:?}: {e}");
            assert!(!e.to_string().is_empty());
        }
    }
    if !key.is_empty() && key.len() <= 2000 {
        let anchored = format!("#regex:^{}$", regex_lite::escape(&key));
        let p = Pattern::parse(&anchored)
            .unwrap_or_else(|e| panic!("escaped literal {anchored:?} refused: {e}"));
        assert!(p.is_regex());
        assert!(p.matches(&key));
        assert_eq!(p.matches(&name), name == key);
    }
}

/// `*` matches any run of bytes (dynamic programming).
pub fn glob_reference(pattern: &[u8], name: &[u8]) -> bool {
    let mut dp = vec![false; name.len() + 1];
    dp[0] = true;
    for &pc in pattern {
        if pc == b'*' {
            for j in 1..=name.len() {
                dp[j] = dp[j] || dp[j - 1];
            }
        } else {
            for j in (1..=name.len()).rev() {
                dp[j] = dp[j - 1] && name[j - 1] == pc;
            }
            dp[0] = false;
        }
    }
    dp[name.len()]
}

// ---------------------------------------------------------------- cluster

/// Cluster bus frames (`src/cluster/wire.rs` `Frame::decode`, raw bytes):
/// decode → encode → decode is the identity, and every op converts.
pub fn cluster_frame(data: &[u8]) {
    use rollcall::cluster::wire::{Body, Frame, Op, pid_to_conn};

    let Ok(frame) = Frame::decode(data) else {
        return;
    };
    let bytes = frame.encode();
    let again = Frame::decode(&bytes).unwrap_or_else(|e| {
        panic!(
            "re-encoded frame {} does not decode: {e}",
            String::from_utf8_lossy(&bytes)
        )
    });
    assert_eq!(frame, again, "decode → encode → decode changed the frame");
    let ops = match &frame.body {
        Body::Ops { ops, .. } => ops.as_slice(),
        _ => &[],
    };
    for op in ops {
        let _ = op.is_message();
        match op {
            Op::Put(r) => {
                let _ = pid_to_conn(&r.pid);
            }
            Op::Del { pid, .. } => {
                let _ = pid_to_conn(pid);
            }
            Op::Msg(m) => {
                let core = m.to_message();
                if let Some(d) = &m.data {
                    let valid = serde_json::from_str::<serde::de::IgnoredAny>(d).is_ok();
                    assert_eq!(core.is_some(), valid, "msg data {d:?}");
                    if let Some(c) = &core
                        && d.trim() == d
                    {
                        assert_eq!(c.data.as_ref().map(|r| r.get()), Some(d.as_str()));
                    }
                }
                if let Some(c) = &core {
                    let back = rollcall::cluster::wire::WireMessage::from_message(c);
                    assert_eq!(back.id, m.id);
                    assert_eq!(back.ch, m.ch);
                }
            }
            Op::Direct(d) => {
                let core = d.to_message();
                if let Some(text) = &d.data {
                    let valid = serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
                    assert_eq!(core.is_some(), valid, "direct data {text:?}");
                }
            }
            _ => {}
        }
    }
}

// ------------------------------------------------------------ conformance

/// The conformance suite format (`src/conformance/suite.rs` `parse_file`):
/// an accepted file has exactly the cases its JSON lists, with unique
/// names.
pub fn conformance_suite(data: &[u8]) {
    use rollcall::conformance::suite::parse_file;

    let text = text(data);
    let path = std::path::Path::new("fuzz.json");
    let Ok(file) = parse_file(path, "fuzz.json", &text) else {
        return;
    };
    let raw: Value = serde_json::from_str(&text).expect("an accepted suite file is JSON");
    let listed = raw
        .get("cases")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    assert_eq!(file.cases.len(), listed);
    let mut names: Vec<&str> = file.cases.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(
        names.len(),
        file.cases.len(),
        "duplicate case names accepted"
    );
    for case in &file.cases {
        for step in &case.steps {
            assert!(!step.verb().is_empty());
        }
    }
}
