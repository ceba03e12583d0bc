//! Hotsock frames: decoding client frames and encoding server frames.
//!
//! Every frame is one JSON object in a text frame (spec §3). Client frames:
//!
//! ```text
//! {"event":"hotsock.subscribe","channel":"presence.chat"}            subscribe
//! {"event":"hotsock.subscribe","channel":"c","data":{"token":"eyJ…"}} subscribe with a subscribe token
//! {"event":"hotsock.unsubscribe","channel":"presence.chat"}          unsubscribe
//! {"event":"hotsock.ping"} / {"event":"hotsock.pong"} / {"event":"hotsock.heartbeat"}
//! {"event":"hotsock.umdUpdate","channel":"presence.chat","data":{"token":"eyJ…"}}
//! {"channel":"room.1","event":"chat","data":"Hello!"}                client message
//! ```

use crate::outbox::Utf8Bytes;
use serde::Serialize;
use serde::ser::SerializeSeq;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::presence::{ChannelMessage, DirectMessage, Event, MemberChange, MemberView, Members};

/// Largest `data` payload of a client message (spec §7: 32 KiB).
pub const MAX_DATA_BYTES: usize = 32 * 1024;

/// A decoded client frame.
#[derive(Debug)]
pub enum ClientFrame {
    /// `hotsock.subscribe`, optionally with a subscribe token.
    Subscribe {
        /// The channel (or alias) named by the client.
        channel: String,
        /// `data.token`, if any.
        token: Option<String>,
    },
    /// `hotsock.unsubscribe`.
    Unsubscribe {
        /// The channel (or alias).
        channel: String,
    },
    /// `hotsock.ping`: answer with pong.
    Ping,
    /// `hotsock.pong`: reply to a server ping, ignored.
    Pong,
    /// `hotsock.heartbeat`: resets the heartbeat timeout, no reply.
    Heartbeat,
    /// `hotsock.umdUpdate` for one channel or (no channel) the connection.
    UmdUpdate {
        /// The channel, or None for a connection-level update.
        channel: Option<String>,
        /// `data.token`, a umd-scoped token.
        token: String,
    },
    /// `rollcall.call` (rollcall's own): `data: {"id", "name", "args"}`, a
    /// call the backend answers (`--rpc-url`) with `rollcall.answer`.
    Call {
        /// The client's id for the call, returned with the answer.
        id: serde_json::Value,
        /// The call's name (the backend's `event`).
        name: String,
        /// Its arguments (null when absent).
        args: serde_json::Value,
    },
    /// A client message to a channel.
    Message {
        /// The channel (or alias).
        channel: String,
        /// The event name.
        event: String,
        /// The payload, None when absent or null.
        data: Option<Box<RawValue>>,
    },
}

/// A frame the server cannot act on: sent back as `hotsock.error`.
#[derive(Debug, PartialEq, Eq)]
pub struct WireError {
    /// The error code (`error.code`).
    pub code: &'static str,
    /// The channel the failed command targeted, if known.
    pub channel: Option<String>,
    /// What went wrong and what to do (`error.message`).
    pub message: String,
}

impl WireError {
    /// A new error.
    pub fn new(code: &'static str, channel: Option<&str>, message: impl Into<String>) -> Self {
        WireError {
            code,
            channel: channel.map(str::to_string),
            message: message.into(),
        }
    }
}

/// Error codes. The first six are Hotsock's own; the rest are rollcall's,
/// in the same style, for cases Hotsock documents no code for.
pub mod codes {
    pub const SUBSCRIBE_PERMISSION_DENIED: &str = "SUBSCRIBE_PERMISSION_DENIED";
    pub const INVALID_SUBSCRIBE_TOKEN: &str = "INVALID_SUBSCRIBE_TOKEN";
    pub const ALREADY_SUBSCRIBED: &str = "ALREADY_SUBSCRIBED";
    pub const NOT_SUBSCRIBED: &str = "NOT_SUBSCRIBED";
    pub const PRESENCE_CHANNEL_CAPACITY_REACHED: &str = "PRESENCE_CHANNEL_CAPACITY_REACHED";
    pub const PRESENCE_CHANNEL_USER_ID_REQUIRED: &str = "PRESENCE_CHANNEL_USER_ID_REQUIRED";
    pub const PRESENCE_CHANNEL_MEMBER_LIMIT_REACHED: &str = "PRESENCE_CHANNEL_MEMBER_LIMIT_REACHED";
    pub const CHANNEL_LIMIT_REACHED: &str = "CHANNEL_LIMIT_REACHED";
    pub const INVALID_MESSAGE: &str = "INVALID_MESSAGE";
    pub const UNKNOWN_EVENT: &str = "UNKNOWN_EVENT";
    pub const INVALID_CHANNEL_NAME: &str = "INVALID_CHANNEL_NAME";
    pub const INVALID_EVENT_NAME: &str = "INVALID_EVENT_NAME";
    pub const MESSAGE_TOO_LARGE: &str = "MESSAGE_TOO_LARGE";
    pub const PUBLISH_PERMISSION_DENIED: &str = "PUBLISH_PERMISSION_DENIED";
    pub const UMD_UPDATE_PERMISSION_DENIED: &str = "UMD_UPDATE_PERMISSION_DENIED";
    pub const INVALID_UMD_TOKEN: &str = "INVALID_UMD_TOKEN";
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
}

#[derive(serde::Deserialize)]
struct RawFrame<'a> {
    #[serde(default, borrow)]
    event: Option<&'a RawValue>,
    #[serde(default, borrow)]
    channel: Option<&'a RawValue>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

fn as_string(raw: Option<&RawValue>) -> Result<Option<String>, ()> {
    match raw {
        None => Ok(None),
        Some(r) if r.get() == "null" => Ok(None),
        Some(r) => serde_json::from_str::<String>(r.get())
            .map(Some)
            .map_err(|_| ()),
    }
}

fn token_of(data: &Option<Box<RawValue>>) -> Result<Option<String>, &'static str> {
    let Some(data) = data else { return Ok(None) };
    match serde_json::from_str::<Value>(data.get()) {
        Ok(Value::Null) => Ok(None),
        Ok(Value::Object(map)) => match map.get("token") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(t)) => Ok(Some(t.clone())),
            Some(_) => Err("data.token must be a string"),
        },
        Ok(_) => Err("data must be an object like {\"token\":\"…\"}"),
        Err(_) => Err("data is not valid JSON"),
    }
}

/// Checks a channel name ([`crate::names::check_channel`], the rule every
/// front end shares).
pub fn check_channel_name(name: &str) -> Result<(), WireError> {
    crate::names::check_channel(name).map_err(|why| {
        WireError::new(
            codes::INVALID_CHANNEL_NAME,
            Some(name),
            format!("invalid channel name: {why}"),
        )
    })
}

/// Checks a client event name ([`crate::names::check_event`]).
fn check_event_name(event: &str, channel: &str) -> Result<(), WireError> {
    crate::names::check_event(event).map_err(|why| {
        WireError::new(
            codes::INVALID_EVENT_NAME,
            Some(channel),
            format!("invalid event name {event:?}: {why}"),
        )
    })
}

/// Decodes one text frame.
pub fn decode(text: &str) -> Result<ClientFrame, WireError> {
    // serde would also read the struct from a JSON array, field by field.
    if !text.trim_start().starts_with('{') {
        return Err(WireError::new(
            codes::INVALID_MESSAGE,
            None,
            "frame must be a JSON object; send e.g. {\"event\":\"hotsock.ping\"}",
        ));
    }
    let raw: RawFrame<'_> = serde_json::from_str(text).map_err(|e| {
        WireError::new(
            codes::INVALID_MESSAGE,
            None,
            format!(
                "frame is not a JSON object ({e}); send e.g. {{\"event\":\"hotsock.subscribe\",\"channel\":\"my-channel\"}}"
            ),
        )
    })?;
    let event = as_string(raw.event)
        .map_err(|_| WireError::new(codes::INVALID_MESSAGE, None, "\"event\" must be a string"))?;
    let channel = as_string(raw.channel).map_err(|_| {
        WireError::new(codes::INVALID_MESSAGE, None, "\"channel\" must be a string")
    })?;
    let Some(event) = event else {
        return Err(WireError::new(
            codes::INVALID_MESSAGE,
            channel.as_deref(),
            "frame has no \"event\"; every frame needs an event name",
        ));
    };
    let need_channel = |what: &str| -> Result<String, WireError> {
        let c = channel.clone().ok_or_else(|| {
            WireError::new(
                codes::INVALID_MESSAGE,
                None,
                format!("{what} needs a \"channel\" string"),
            )
        })?;
        check_channel_name(&c)?;
        Ok(c)
    };
    let bad_data = |why: &str| WireError::new(codes::INVALID_MESSAGE, channel.as_deref(), why);
    match event.as_str() {
        "hotsock.subscribe" => {
            let channel = need_channel("hotsock.subscribe")?;
            let token = token_of(&raw.data).map_err(bad_data)?;
            Ok(ClientFrame::Subscribe { channel, token })
        }
        "hotsock.unsubscribe" => Ok(ClientFrame::Unsubscribe {
            channel: need_channel("hotsock.unsubscribe")?,
        }),
        "hotsock.ping" => Ok(ClientFrame::Ping),
        CALL => {
            if let Some(data) = &raw.data
                && data.get().len() > MAX_DATA_BYTES
            {
                return Err(WireError::new(
                    codes::MESSAGE_TOO_LARGE,
                    None,
                    format!(
                        "rollcall.call data is {} bytes; the limit is {MAX_DATA_BYTES} bytes",
                        data.get().len()
                    ),
                ));
            }
            let data: serde_json::Value = raw
                .data
                .as_deref()
                .and_then(|d| serde_json::from_str(d.get()).ok())
                .unwrap_or_default();
            let name = data["name"].as_str().unwrap_or_default().to_string();
            if name.is_empty() {
                return Err(WireError::new(
                    codes::INVALID_MESSAGE,
                    None,
                    "rollcall.call needs data.name, e.g. {\"event\":\"rollcall.call\",\"data\":{\"id\":1,\"name\":\"login\",\"args\":{}}}",
                ));
            }
            Ok(ClientFrame::Call {
                id: data["id"].clone(),
                name,
                args: data["args"].clone(),
            })
        }
        "hotsock.pong" => Ok(ClientFrame::Pong),
        "hotsock.heartbeat" => Ok(ClientFrame::Heartbeat),
        "hotsock.umdUpdate" => {
            if let Some(c) = &channel {
                check_channel_name(c)?;
            }
            let token = token_of(&raw.data).map_err(bad_data)?.ok_or_else(|| {
                WireError::new(
                    codes::INVALID_UMD_TOKEN,
                    channel.as_deref(),
                    "hotsock.umdUpdate needs data.token, a token with scope \"umd\"",
                )
            })?;
            Ok(ClientFrame::UmdUpdate { channel, token })
        }
        other if other.starts_with("hotsock.") => Err(WireError::new(
            codes::UNKNOWN_EVENT,
            channel.as_deref(),
            format!(
                "{other} is not supported; supported: hotsock.subscribe, hotsock.unsubscribe, hotsock.ping, hotsock.pong, hotsock.heartbeat, hotsock.umdUpdate, and client messages"
            ),
        )),
        _ => {
            let channel = need_channel("a client message")?;
            check_event_name(&event, &channel)?;
            if let Some(data) = &raw.data
                && data.get().len() > MAX_DATA_BYTES
            {
                return Err(WireError::new(
                    codes::MESSAGE_TOO_LARGE,
                    Some(&channel),
                    format!(
                        "data is {} bytes; the limit is {MAX_DATA_BYTES} bytes",
                        data.get().len()
                    ),
                ));
            }
            let data = raw.data.filter(|d| d.get() != "null");
            Ok(ClientFrame::Message {
                channel,
                event,
                data,
            })
        }
    }
}

/// `meta` of server frames: the connection's (or subscription's) uid/umd.
#[derive(Serialize)]
pub struct Meta<'a> {
    /// User id or null.
    pub uid: Option<&'a str>,
    /// User metadata or null.
    pub umd: &'a Value,
}

#[derive(Serialize)]
struct MemberJson<'a> {
    uid: &'a str,
    umd: &'a Value,
}

impl<'a> From<MemberView<'a>> for MemberJson<'a> {
    fn from(m: MemberView<'a>) -> Self {
        MemberJson {
            uid: m.user_id,
            umd: m.info,
        }
    }
}

struct MemberList<'a>(Members<'a>);

impl Serialize for MemberList<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for m in self.0.iter() {
            seq.serialize_element(&MemberJson::from(m))?;
        }
        seq.end()
    }
}

fn to_bytes(value: &impl Serialize) -> Utf8Bytes {
    // Serializing our own borrowed structs cannot fail (no maps with
    // non-string keys, no failing Serialize impls).
    Utf8Bytes::from(serde_json::to_string(value).unwrap_or_default())
}

/// `hotsock.connected` (spec §1.3).
pub fn connected(conn_id: &str, expires_at: &str, secret: &str, meta: Meta<'_>) -> Utf8Bytes {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Data<'a> {
        connection_id: &'a str,
        connection_expires_at: &'a str,
        connection_secret: &'a str,
    }
    #[derive(Serialize)]
    struct Frame<'a> {
        event: &'static str,
        data: Data<'a>,
        meta: Meta<'a>,
    }
    to_bytes(&Frame {
        event: "hotsock.connected",
        data: Data {
            connection_id: conn_id,
            connection_expires_at: expires_at,
            connection_secret: secret,
        },
        meta,
    })
}

/// `hotsock.subscribed` (spec §3.2 S2): `members` only on presence
/// channels, `autoSubscribed` only for auto-subscriptions.
pub fn subscribed(
    channel: &str,
    members: Option<Members<'_>>,
    auto: bool,
    alias: Option<&str>,
    meta: Meta<'_>,
) -> Utf8Bytes {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Data<'a> {
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        auto_subscribed: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        members: Option<MemberList<'a>>,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct MetaWithAlias<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        channel_alias: Option<&'a str>,
        #[serde(flatten)]
        meta: Meta<'a>,
    }
    #[derive(Serialize)]
    struct Frame<'a> {
        event: &'static str,
        channel: &'a str,
        data: Data<'a>,
        meta: MetaWithAlias<'a>,
    }
    to_bytes(&Frame {
        event: "hotsock.subscribed",
        channel,
        data: Data {
            auto_subscribed: auto,
            members: members.map(MemberList),
        },
        meta: MetaWithAlias {
            channel_alias: alias,
            meta,
        },
    })
}

/// `hotsock.unsubscribed` (spec §3.2 S3), always with `meta`.
///
/// `removed`: the server ended the subscription (an operator removed the
/// user from the channel), and `data.reason` says why; otherwise `data` is
/// `{}` as Hotsock sends it.
pub fn unsubscribed(
    channel: &str,
    alias: Option<&str>,
    meta: Meta<'_>,
    removed: Option<&str>,
) -> Utf8Bytes {
    let mut meta_json = serde_json::json!({"uid": meta.uid, "umd": meta.umd});
    if let (Some(alias), Some(obj)) = (alias, meta_json.as_object_mut()) {
        obj.insert("channelAlias".into(), Value::from(alias));
    }
    let data = match removed {
        Some(reason) => serde_json::json!({ "reason": reason }),
        None => serde_json::json!({}),
    };
    to_bytes(&serde_json::json!({
        "event": "hotsock.unsubscribed",
        "channel": channel,
        "data": data,
        "meta": meta_json,
    }))
}

/// `hotsock.error` (spec §4.1 plus `error.message`).
pub fn error(err: &WireError) -> Utf8Bytes {
    #[derive(Serialize)]
    struct Body<'a> {
        code: &'a str,
        message: &'a str,
    }
    #[derive(Serialize)]
    struct Frame<'a> {
        event: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        channel: Option<&'a str>,
        error: Body<'a>,
    }
    to_bytes(&Frame {
        event: "hotsock.error",
        channel: err.channel.as_deref(),
        error: Body {
            code: err.code,
            message: &err.message,
        },
    })
}

/// `hotsock.pong`. The docs show `data` as the string `"{}"`; we send an
/// object, which hotsock-js ignores either way.
/// The event of a call for the backend (rollcall's own, see [`ClientFrame::Call`]).
pub const CALL: &str = "rollcall.call";

/// `{"event":"rollcall.answer","data":{"id":…,"data":…}}` or, refused,
/// `{"event":"rollcall.answer","data":{"id":…,"error":{"code":"BACKEND_ERROR","message":…}}}`.
pub fn call_answer(
    id: &serde_json::Value,
    answer: Result<(serde_json::Value, Option<String>), String>,
) -> Utf8Bytes {
    let data = match answer {
        // The connection's token is the one it connected with: a token
        // from the backend is the client's to reconnect with.
        Ok((data, Some(token))) => serde_json::json!({"id": id, "data": data, "auth_token": token}),
        Ok((data, None)) => serde_json::json!({"id": id, "data": data}),
        Err(why) => {
            serde_json::json!({"id": id, "error": {"code": "BACKEND_ERROR", "message": why}})
        }
    };
    Utf8Bytes::from(serde_json::json!({"event": "rollcall.answer", "data": data}).to_string())
}

pub fn pong() -> Utf8Bytes {
    Utf8Bytes::from_static(r#"{"event":"hotsock.pong","data":{}}"#)
}

/// `hotsock.keepAlive` (spec §3.2 S8).
pub fn keep_alive() -> Utf8Bytes {
    Utf8Bytes::from_static(r#"{"event":"hotsock.keepAlive","data":{}}"#)
}

/// A member event (spec §3.2 S4): the member and the full member list.
pub fn member_event(
    change: MemberChange,
    channel: &str,
    member: MemberView<'_>,
    members: Members<'_>,
) -> Option<Utf8Bytes> {
    let event = match change {
        MemberChange::Added => "hotsock.memberAdded",
        MemberChange::Updated => "hotsock.memberUpdated",
        MemberChange::Removed => "hotsock.memberRemoved",
        MemberChange::Unchanged => return None,
    };
    #[derive(Serialize)]
    struct Data<'a> {
        member: MemberJson<'a>,
        members: MemberList<'a>,
    }
    #[derive(Serialize)]
    struct Frame<'a> {
        event: &'static str,
        channel: &'a str,
        data: Data<'a>,
    }
    Some(to_bytes(&Frame {
        event,
        channel,
        data: Data {
            member: member.into(),
            members: MemberList(members),
        },
    }))
}

/// A channel message (spec §3.2 S5/S6): `meta` only when a client sent it.
pub fn message(msg: &ChannelMessage) -> Utf8Bytes {
    #[derive(Serialize)]
    struct Frame<'a> {
        id: &'a str,
        event: &'a str,
        channel: &'a str,
        data: Option<&'a RawValue>,
        #[serde(skip_serializing_if = "Option::is_none")]
        meta: Option<Meta<'a>>,
    }
    to_bytes(&Frame {
        id: &msg.id,
        event: &msg.event,
        channel: &msg.channel,
        data: msg.data.as_deref(),
        meta: msg.sender.as_ref().map(|s| Meta {
            uid: s.user_id.as_deref(),
            umd: &s.info,
        }),
    })
}

/// A direct message (send to user / connection / broadcast): like a server
/// publish, without a channel.
pub fn direct(msg: &DirectMessage) -> Utf8Bytes {
    #[derive(Serialize)]
    struct Frame<'a> {
        id: &'a str,
        event: &'a str,
        data: Option<&'a RawValue>,
    }
    to_bytes(&Frame {
        id: &msg.id,
        event: &msg.event,
        data: msg.data.as_deref(),
    })
}

/// Encodes core events for Hotsock connections.
#[derive(Debug, Default)]
pub struct HotsockCodec;

impl crate::presence::Codec for HotsockCodec {
    fn encode(&self, event: &Event<'_>, _flavor: u8) -> Option<crate::outbox::Outbound> {
        let bytes = match event {
            Event::Member {
                change,
                channel,
                member,
                members,
            } => member_event(*change, channel, *member, *members)?,
            Event::Message(msg) => message(msg),
            Event::Direct(msg) => direct(msg),
        };
        Some(crate::outbox::Outbound::Text(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_err(text: &str) -> WireError {
        match decode(text) {
            Err(e) => e,
            Ok(f) => panic!("expected an error for {text}, got {f:?}"),
        }
    }

    #[test]
    fn decodes_spec_frames() {
        assert!(matches!(
            decode(r#"{"event":"hotsock.subscribe","channel":"presence.live-chat"}"#),
            Ok(ClientFrame::Subscribe { channel, token: None }) if channel == "presence.live-chat"
        ));
        assert!(matches!(
            decode(r#"{"event":"hotsock.subscribe","channel":"presence.doc-42","data":{"token":"eyJ.a.b"}}"#),
            Ok(ClientFrame::Subscribe { token: Some(t), .. }) if t == "eyJ.a.b"
        ));
        assert!(matches!(
            decode(r#"{"event":"hotsock.unsubscribe","channel":"presence.live-chat"}"#),
            Ok(ClientFrame::Unsubscribe { .. })
        ));
        assert!(matches!(
            decode(r#"{"event":"hotsock.ping"}"#),
            Ok(ClientFrame::Ping)
        ));
        assert!(matches!(
            decode(r#"{"event":"hotsock.heartbeat"}"#),
            Ok(ClientFrame::Heartbeat)
        ));
        match decode(r#"{"channel":"room.123","event":"chat","data":"Hello!"}"#) {
            Ok(ClientFrame::Message {
                channel,
                event,
                data,
            }) => {
                assert_eq!(channel, "room.123");
                assert_eq!(event, "chat");
                assert_eq!(data.unwrap().get(), r#""Hello!""#);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode(r#"{"channel":"room.123","event":"is-typing"}"#),
            Ok(ClientFrame::Message { data: None, .. })
        ));
        assert!(matches!(
            decode(
                r#"{"event":"hotsock.umdUpdate","channel":"presence.chat","data":{"token":"t"}}"#
            ),
            Ok(ClientFrame::UmdUpdate {
                channel: Some(_),
                ..
            })
        ));
    }

    #[test]
    fn rejects_bad_frames_with_codes() {
        assert_eq!(decode_err("{not json").code, codes::INVALID_MESSAGE);
        assert_eq!(decode_err("[1,2]").code, codes::INVALID_MESSAGE);
        assert_eq!(
            decode_err(r#"["hotsock.ping"]"#).code,
            codes::INVALID_MESSAGE
        );
        assert_eq!(decode_err(r#"{"event":5}"#).code, codes::INVALID_MESSAGE);
        assert_eq!(
            decode_err(r#"{"event":"hotsock.subscribe","channel":7}"#).code,
            codes::INVALID_MESSAGE
        );
        assert_eq!(
            decode_err(r#"{"event":"hotsock.subscribe"}"#).code,
            codes::INVALID_MESSAGE
        );
        assert_eq!(
            decode_err(r#"{"event":"hotsock.bogus"}"#).code,
            codes::UNKNOWN_EVENT
        );
        let e = decode_err(r#"{"event":"hotsock.subscribe","channel":"a\u0001b"}"#);
        assert_eq!(e.code, codes::INVALID_CHANNEL_NAME);
        assert_eq!(e.channel.as_deref(), Some("a\u{1}b"));
        assert_eq!(
            decode_err(r#"{"event":"hotsock.subscribe","channel":"a b"}"#).code,
            codes::INVALID_CHANNEL_NAME
        );
        assert_eq!(
            decode_err(r##"{"event":"#x","channel":"c"}"##).code,
            codes::INVALID_EVENT_NAME
        );
        let big = format!(
            r#"{{"event":"e","channel":"c","data":"{}"}}"#,
            "x".repeat(40_000)
        );
        assert_eq!(decode_err(&big).code, codes::MESSAGE_TOO_LARGE);
        assert_eq!(
            decode_err(r#"{"event":"hotsock.subscribe","channel":"c","data":5}"#).code,
            codes::INVALID_MESSAGE
        );
    }

    #[test]
    fn encodes_spec_frames() {
        let err = WireError::new(codes::NOT_SUBSCRIBED, Some("c"), "not subscribed");
        assert_eq!(
            error(&err),
            Utf8Bytes::from_static(
                r#"{"event":"hotsock.error","channel":"c","error":{"code":"NOT_SUBSCRIBED","message":"not subscribed"}}"#
            )
        );
        let null = Value::Null;
        assert_eq!(
            subscribed(
                "live-updates",
                None,
                false,
                None,
                Meta {
                    uid: None,
                    umd: &null
                }
            ),
            Utf8Bytes::from_static(
                r#"{"event":"hotsock.subscribed","channel":"live-updates","data":{},"meta":{"uid":null,"umd":null}}"#
            )
        );
        assert_eq!(
            subscribed(
                "user.123",
                None,
                true,
                Some("user"),
                Meta {
                    uid: None,
                    umd: &null
                }
            ),
            Utf8Bytes::from_static(
                r#"{"event":"hotsock.subscribed","channel":"user.123","data":{"autoSubscribed":true},"meta":{"channelAlias":"user","uid":null,"umd":null}}"#
            )
        );
        let c = connected(
            "id1",
            "2024-10-13T19:09:23Z",
            "s3cr3t",
            Meta {
                uid: Some("Jim"),
                umd: &null,
            },
        );
        assert_eq!(
            c,
            Utf8Bytes::from_static(
                r#"{"event":"hotsock.connected","data":{"connectionId":"id1","connectionExpiresAt":"2024-10-13T19:09:23Z","connectionSecret":"s3cr3t"},"meta":{"uid":"Jim","umd":null}}"#
            )
        );
    }
}
