//! Avaya Spaces events over Socket.IO: decoding client payloads and
//! encoding server payloads (spec §4.2-4.3), and the [`SocketIoCodec`] that
//! renders core events once for every Socket.IO recipient.
//!
//! Client events (the Socket.IO event name, then its single argument):
//!
//! ```text
//! 42/chat,["SUBSCRIBE_CHANNEL",{"channel":{"type":"topic","_id":"presence.room1"}}]
//! 42/chat,["UNSUBSCRIBE_CHANNEL",{"channel":{"type":"topic","_id":"presence.room1"}}]
//! 42/chat,["SEND_MESSAGE",{"category":"chat","content":{"bodyText":"hi"},"topicId":"presence.room1","loopbackMetadata":"m1"}]
//! 42/chat,["SEND_PRESENCE_EVENT",{"category":"app.event.presence.request.parties","topicId":"presence.room1"}]
//! ```
//!
//! Server events:
//!
//! ```text
//! 42/chat,["CHANNEL_SUBSCRIBED",{"channel":{"_id":"presence.room1","type":"topic"},"dtsid":"c1","sessionId":"aQLgO1sT0Mj7rjjN"}]
//! 42/chat,["SUBSCRIBE_CHANNEL_FAILED",{"channel":null,"error":{"code":"invalid.parameters","message":"channel data was not provided"}}]
//! 42/chat,["CHANNEL_UNSUBSCRIBED",{"channel":{"_id":"presence.room1","type":"topic"}}]
//! 42/chat,["MESSAGE_SENT",{"_id":"01J…","category":"chat","topicId":"presence.room1","content":{"bodyText":"hi"},"sender":{"_id":"alice","type":"user","displayname":"Alice"},"created":"2026-11-22T10:00:00Z"}]
//! 42/chat,["SEND_MESSAGE_FAILED",{"topicId":"t","error":{"code":"app.event.channel.subscription.required","message":"…"}}]
//! 42/chat,["PRESENCE_EVENT_RESPONSE",{"category":"app.event.presence.party.online","topicId":"presence.room1","sender":{"_id":"bob","type":"user","displayname":"Bob"},"content":{"desktop":false,"idle":false,"offline":false,"mediaSession":{…},"role":"member"}}]
//! 42/chat,["error",{"code":"unknown.event","message":"…"}]
//! ```
//!
//! Core events reach a Socket.IO connection as one text item in its
//! outbox holding the whole packet, `42/chat,["EVENT",payload]` (see
//! [`Framing`]), rendered once for every connection of its namespace.

use crate::outbox::Utf8Bytes;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::outbox::Outbound;
use crate::presence::{ChannelMessage, DirectMessage, Event, MemberChange, MemberView};

/// Client → server event names.
pub mod client {
    /// Join a channel (`{"channel":{"_id","type"}}`).
    pub const SUBSCRIBE_CHANNEL: &str = "SUBSCRIBE_CHANNEL";
    /// Leave a channel.
    pub const UNSUBSCRIBE_CHANNEL: &str = "UNSUBSCRIBE_CHANNEL";
    /// Post a message to a subscribed channel.
    pub const SEND_MESSAGE: &str = "SEND_MESSAGE";
    /// Presence: party.online / party.leaves / request.parties.
    pub const SEND_PRESENCE_EVENT: &str = "SEND_PRESENCE_EVENT";
    /// Media session state (`trackstatus`, `video.end`, …) for a topic.
    pub const SEND_MEDIA_SESSION_EVENTS: &str = "SEND_MEDIA_SESSION_EVENTS";

    /// True for the events above; any other is a call for the backend
    /// (`--rpc-url`) or an unknown event.
    pub fn is_avaya(event: &str) -> bool {
        [
            SUBSCRIBE_CHANNEL,
            UNSUBSCRIBE_CHANNEL,
            SEND_MESSAGE,
            SEND_PRESENCE_EVENT,
            SEND_MEDIA_SESSION_EVENTS,
        ]
        .contains(&event)
    }
}

/// Server → client event names.
pub mod server {
    /// Reply to a successful SUBSCRIBE_CHANNEL.
    pub const CHANNEL_SUBSCRIBED: &str = "CHANNEL_SUBSCRIBED";
    /// Reply to a failed SUBSCRIBE_CHANNEL.
    pub const SUBSCRIBE_CHANNEL_FAILED: &str = "SUBSCRIBE_CHANNEL_FAILED";
    /// Reply to UNSUBSCRIBE_CHANNEL.
    pub const CHANNEL_UNSUBSCRIBED: &str = "CHANNEL_UNSUBSCRIBED";
    /// A message in a subscribed channel.
    pub const MESSAGE_SENT: &str = "MESSAGE_SENT";
    /// Reply to a failed SEND_MESSAGE.
    pub const SEND_MESSAGE_FAILED: &str = "SEND_MESSAGE_FAILED";
    /// A presence event in a subscribed channel (or an error about one).
    pub const PRESENCE_EVENT_RESPONSE: &str = "PRESENCE_EVENT_RESPONSE";
    /// A media session event relayed to the topic (or its refusal).
    pub const MEDIA_SESSION_RESPONSE: &str = "MEDIA_SESSION_RESPONSE";
    /// Any other problem: `{"code","message"}`. socket.io-client 1.x/2.x
    /// also report connection refusals as `error`.
    pub const ERROR: &str = "error";
}

/// Presence categories (`category` of SEND_PRESENCE_EVENT and
/// PRESENCE_EVENT_RESPONSE).
pub mod category {
    /// A party joined or changed its state.
    pub const PARTY_ONLINE: &str = "app.event.presence.party.online";
    /// A party left.
    pub const PARTY_LEAVES: &str = "app.event.presence.party.leaves";
    /// Ask for the current parties (the server answers for everyone).
    pub const REQUEST_PARTIES: &str = "app.event.presence.request.parties";
    /// A SEND_PRESENCE_EVENT could not be processed.
    pub const INVALID: &str = "app.event.presence.media.session.invalid";
}

/// Error codes (`error.code`).
pub mod codes {
    /// A required field is missing or has the wrong type (Avaya's own code).
    pub const INVALID_PARAMETERS: &str = "invalid.parameters";
    /// The channel must be subscribed first (Avaya's own code).
    pub const SUBSCRIPTION_REQUIRED: &str = "app.event.channel.subscription.required";
    /// A payload is larger than the server accepts.
    pub const TOO_LARGE: &str = "payload.too.large";
    /// The channel policy refused (no grant, no rule): the message says
    /// which grant or rule is missing.
    pub const FORBIDDEN: &str = "channel.forbidden";
    /// A core limit (channels per connection, members per channel, member data).
    pub const LIMIT_REACHED: &str = "limit.reached";
    /// An event name the server does not know.
    pub const UNKNOWN_EVENT: &str = "unknown.event";
    /// The backend (`--rpc-url`) refused a call, failed or did not answer.
    pub const BACKEND_ERROR: &str = "backend.error";
    /// More events per second than allowed.
    pub const RATE_LIMITED: &str = "rate.limited";
    /// The connection is being closed by the server.
    pub const CLOSING: &str = "connection.closing";
}

/// Longest channel `_id` accepted, in bytes.
pub const MAX_CHANNEL_ID_BYTES: usize = 256;

/// Event names a server must not emit: the clients treat them as their own
/// lifecycle events. Direct messages with these names are not delivered.
pub const RESERVED_EVENTS: &[&str] = &[
    "connect",
    "connect_error",
    "connect_timeout",
    "connecting",
    "disconnect",
    "disconnecting",
    "error",
    "newListener",
    "removeListener",
    "reconnect",
    "reconnect_attempt",
    "reconnect_error",
    "reconnect_failed",
    "reconnecting",
    "ping",
    "pong",
];

/// A payload the server rejects, with Avaya's error shape
/// `{"code": …, "message": …}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    /// The error code (see [`codes`]).
    pub code: &'static str,
    /// What went wrong and what to do.
    pub message: String,
}

impl WireError {
    /// A new error.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        WireError {
            code,
            message: message.into(),
        }
    }

    fn json(&self) -> Value {
        json!({"code": self.code, "message": self.message})
    }
}

/// The `channel.password` of a SUBSCRIBE_CHANNEL (a protected space), for
/// the channel policy's backend check; kept out of [`ChannelRef`] so it is
/// never echoed or logged.
pub fn decode_password(payload: &Value) -> Result<Option<std::sync::Arc<str>>, WireError> {
    match payload.get("channel").and_then(|c| c.get("password")) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= MAX_PASSWORD_BYTES => Ok(Some(s.as_str().into())),
        Some(Value::String(_)) => Err(WireError::new(
            codes::INVALID_PARAMETERS,
            format!("channel.password is longer than {MAX_PASSWORD_BYTES} bytes"),
        )),
        Some(other) => Err(WireError::new(
            codes::INVALID_PARAMETERS,
            format!("channel.password must be a string, not {}", describe(other)),
        )),
    }
}

/// Longest topic password passed on to the backend check.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// The channel named by SUBSCRIBE_CHANNEL / UNSUBSCRIBE_CHANNEL:
/// `{"channel":{"type":"topic","_id":"<name>"}}`. The `_id` is the core
/// channel name, shared verbatim with every other front end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRef {
    /// `channel._id`: the channel name.
    pub id: String,
    /// `channel.type` (default `topic`), echoed back.
    pub kind: String,
}

impl ChannelRef {
    /// The `{"_id","type"}` object sent back to the client.
    pub fn json(&self) -> Value {
        json!({"_id": self.id, "type": self.kind})
    }
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Checks a channel name: non-empty, at most [`MAX_CHANNEL_ID_BYTES`], no
/// control characters.
pub fn check_channel_id(id: &str) -> Result<(), WireError> {
    if id.is_empty() {
        return Err(WireError::new(
            codes::INVALID_PARAMETERS,
            "channel _id is empty; send {\"channel\":{\"type\":\"topic\",\"_id\":\"<channel>\"}}",
        ));
    }
    if id.len() > MAX_CHANNEL_ID_BYTES {
        return Err(WireError::new(
            codes::INVALID_PARAMETERS,
            format!("channel _id is longer than {MAX_CHANNEL_ID_BYTES} bytes"),
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(WireError::new(
            codes::INVALID_PARAMETERS,
            "channel _id contains control characters",
        ));
    }
    Ok(())
}

/// Decodes the argument of SUBSCRIBE_CHANNEL or UNSUBSCRIBE_CHANNEL.
///
/// ```text
/// {"channel":{"type":"topic","_id":"presence.room1"}}
/// ```
pub fn decode_channel(payload: &Value) -> Result<ChannelRef, WireError> {
    let missing = || {
        WireError::new(
            codes::INVALID_PARAMETERS,
            "channel data was not provided; send {\"channel\":{\"type\":\"topic\",\"_id\":\"<channel>\"}}",
        )
    };
    let obj = payload.as_object().ok_or_else(missing)?;
    let channel = obj.get("channel").ok_or_else(missing)?;
    let channel = channel.as_object().ok_or_else(|| {
        WireError::new(
            codes::INVALID_PARAMETERS,
            format!(
                "channel must be an object like {{\"type\":\"topic\",\"_id\":\"<channel>\"}}, not {}",
                describe(channel)
            ),
        )
    })?;
    let id = match channel.get("_id") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(WireError::new(
                codes::INVALID_PARAMETERS,
                format!("channel._id must be a string, not {}", describe(other)),
            ));
        }
        None => {
            return Err(WireError::new(
                codes::INVALID_PARAMETERS,
                "channel._id is missing; name the channel in channel._id",
            ));
        }
    };
    check_channel_id(&id)?;
    let kind = match channel.get("type") {
        None | Some(Value::Null) => "topic".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(WireError::new(
                codes::INVALID_PARAMETERS,
                format!("channel.type must be a string, not {}", describe(other)),
            ));
        }
    };
    Ok(ChannelRef { id, kind })
}

fn topic_id(obj: &Map<String, Value>, event: &str) -> Result<String, WireError> {
    match obj.get("topicId") {
        Some(Value::String(s)) => {
            check_channel_id(s)?;
            Ok(s.clone())
        }
        Some(other) => Err(WireError::new(
            codes::INVALID_PARAMETERS,
            format!("topicId must be a string, not {}", describe(other)),
        )),
        None => Err(WireError::new(
            codes::INVALID_PARAMETERS,
            format!("topicId is missing; {event} needs the channel _id in topicId"),
        )),
    }
}

/// A decoded SEND_MESSAGE.
#[derive(Debug, Clone, PartialEq)]
pub struct SendMessage {
    /// `topicId`: the channel.
    pub topic_id: String,
    /// `category` (default `chat`); the core event name.
    pub category: String,
    /// Every other field the client sent (content, parentMsg, …), without
    /// `_id`, `sender`, `topicId`, `category` and `loopbackMetadata`.
    pub fields: Map<String, Value>,
    /// `loopbackMetadata`, returned only to the sender.
    pub loopback: Option<Value>,
}

/// Decodes the argument of SEND_MESSAGE. `sender` and `_id` from the
/// client are dropped: the server sets them.
///
/// ```text
/// {"category":"chat","content":{"bodyText":"hi","data":[]},"topicId":"presence.room1","loopbackMetadata":"m1"}
/// ```
pub fn decode_send_message(payload: Value) -> Result<SendMessage, WireError> {
    let Value::Object(mut obj) = payload else {
        return Err(WireError::new(
            codes::INVALID_PARAMETERS,
            format!(
                "SEND_MESSAGE needs an object like {{\"category\":\"chat\",\"content\":{{\"bodyText\":\"…\"}},\"topicId\":\"<channel>\"}}, not {}",
                describe(&payload)
            ),
        ));
    };
    let topic_id = topic_id(&obj, client::SEND_MESSAGE)?;
    let category = match obj.remove("category") {
        None | Some(Value::Null) => "chat".to_string(),
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(other) => {
            return Err(WireError::new(
                codes::INVALID_PARAMETERS,
                format!(
                    "category must be a non-empty string such as \"chat\", not {}",
                    describe(&other)
                ),
            ));
        }
    };
    let loopback = obj.remove("loopbackMetadata");
    for key in ["topicId", "_id", "sender", "created"] {
        obj.remove(key);
    }
    Ok(SendMessage {
        topic_id,
        category,
        fields: obj,
        loopback,
    })
}

/// What a SEND_PRESENCE_EVENT asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceAction {
    /// `party.online`: announce or change this party's state.
    Online,
    /// `party.leaves`: stop being a party of the channel (still subscribed).
    Leaves,
    /// `request.parties`: get every other party's `party.online`.
    RequestParties,
}

/// A decoded SEND_PRESENCE_EVENT.
#[derive(Debug, Clone, PartialEq)]
pub struct PresenceEvent {
    /// The category.
    pub action: PresenceAction,
    /// `topicId`: the channel.
    pub topic_id: String,
    /// `content` (desktop, idle, mediaSession, offline, role), if sent.
    pub content: Option<Value>,
}

/// Decodes the argument of SEND_PRESENCE_EVENT. The category may be given
/// in full (`app.event.presence.party.online`) or short (`party.online`).
///
/// ```text
/// {"category":"app.event.presence.party.online","content":{"desktop":false,"idle":false,"offline":false,"role":"member"},"topicId":"presence.room1"}
/// ```
pub fn decode_presence(payload: &Value) -> Result<PresenceEvent, WireError> {
    let obj = payload.as_object().ok_or_else(|| {
        WireError::new(
            codes::INVALID_PARAMETERS,
            format!(
                "SEND_PRESENCE_EVENT needs an object like {{\"category\":\"{}\",\"topicId\":\"<channel>\"}}, not {}",
                category::PARTY_ONLINE,
                describe(payload)
            ),
        )
    })?;
    let cat = match obj.get("category") {
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            return Err(WireError::new(
                codes::INVALID_PARAMETERS,
                format!("category must be a string, not {}", describe(other)),
            ));
        }
        None => {
            return Err(WireError::new(
                codes::INVALID_PARAMETERS,
                "category is missing; use app.event.presence.party.online, .party.leaves or .request.parties",
            ));
        }
    };
    let short = cat.strip_prefix("app.event.presence.").unwrap_or(cat);
    let action = match short {
        "party.online" => PresenceAction::Online,
        "party.leaves" => PresenceAction::Leaves,
        "request.parties" => PresenceAction::RequestParties,
        _ => {
            return Err(WireError::new(
                codes::INVALID_PARAMETERS,
                format!(
                    "unknown presence category {cat:?}; use app.event.presence.party.online, .party.leaves or .request.parties"
                ),
            ));
        }
    };
    let topic_id = topic_id(obj, client::SEND_PRESENCE_EVENT)?;
    let content = match obj.get("content") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(other) => {
            return Err(WireError::new(
                codes::INVALID_PARAMETERS,
                format!("content must be an object, not {}", describe(other)),
            ));
        }
    };
    Ok(PresenceEvent {
        action,
        topic_id,
        content,
    })
}

/// The presence content a party has before it sends its own.
pub fn default_presence_content() -> Value {
    json!({
        "desktop": false,
        "idle": false,
        "offline": false,
        "mediaSession": {
            "audio": false, "connected": false, "phone": false,
            "screenshare": false, "selfMuted": false, "video": false
        },
        "role": "member"
    })
}

/// Member data of a Socket.IO member as stored in the core (and seen by
/// Hotsock clients as `umd`): the display fields from the token and the
/// party's presence content. Once a socket announces itself
/// (`party.online`), also that socket's `sessionId` (in the content) and
/// when it subscribed (`subscribeTime`). Not at subscribe: two sockets of
/// one user subscribing must give the same data, so they are one member
/// without an update.
///
/// ```text
/// {"displayname":"Alice","username":"alice","type":"user","presence":{"desktop":false,…,"sessionId":"aQLg…"},"subscribeTime":"2026-12-03T10:00:00Z"}
/// ```
pub fn member_info(profile: &Value, presence: Option<&Value>, party: Option<&Party<'_>>) -> Value {
    let mut obj = profile.as_object().cloned().unwrap_or_default();
    let mut content = presence.cloned().unwrap_or_else(default_presence_content);
    if let (Some(content), Some(party)) = (content.as_object_mut(), party) {
        content.insert("sessionId".into(), Value::from(party.session_id));
    }
    obj.insert("presence".into(), content);
    if let Some(party) = party {
        obj.insert("subscribeTime".into(), Value::from(party.subscribe_time));
    }
    Value::Object(obj)
}

/// The socket a party's presence comes from.
#[derive(Debug, Clone, Copy)]
pub struct Party<'a> {
    /// The socket's session id (`CHANNEL_SUBSCRIBED`'s `sessionId`).
    pub session_id: &'a str,
    /// When it subscribed to the channel, RFC 3339.
    pub subscribe_time: &'a str,
}

/// The Avaya `sender` object for a member or message author: `_id` is the
/// user id; display fields come from the member data (`displayname`, else
/// `name`; `username`; `picture_url`; `type`, default `user`).
pub fn sender_json(user_id: Option<&str>, info: &Value) -> Value {
    let mut out = Map::new();
    out.insert(
        "_id".into(),
        user_id.map(Value::from).unwrap_or(Value::Null),
    );
    let field = |k: &str| info.get(k).filter(|v| !v.is_null()).cloned();
    let kind = field("type").unwrap_or_else(|| Value::from("user"));
    out.insert("type".into(), kind);
    let display = field("displayname")
        .or_else(|| field("name"))
        .or_else(|| user_id.map(Value::from));
    if let Some(d) = display {
        out.insert("displayname".into(), d);
    }
    if let Some(u) = field("username").or_else(|| user_id.map(Value::from)) {
        out.insert("username".into(), u);
    }
    if let Some(p) = field("picture_url") {
        out.insert("picture_url".into(), p);
    }
    Value::Object(out)
}

fn frame(event: &str, payload: &impl Serialize) -> Utf8Bytes {
    // `[event, payload]` of plain JSON values never fails to serialize.
    Utf8Bytes::from(serde_json::to_string(&(event, payload)).unwrap_or_default())
}

/// `CHANNEL_SUBSCRIBED` (spec §4.3).
pub fn channel_subscribed(channel: &ChannelRef, dtsid: &str, session_id: &str) -> Utf8Bytes {
    frame(
        server::CHANNEL_SUBSCRIBED,
        &json!({"channel": channel.json(), "dtsid": dtsid, "sessionId": session_id}),
    )
}

/// `SUBSCRIBE_CHANNEL_FAILED` with the channel as the client sent it.
pub fn subscribe_failed(channel: Option<&Value>, err: &WireError) -> Utf8Bytes {
    let mut channel = channel.cloned().unwrap_or(Value::Null);
    // The original channel object, but not its password.
    if let Some(obj) = channel.as_object_mut() {
        obj.remove("password");
    }
    frame(
        server::SUBSCRIBE_CHANNEL_FAILED,
        &json!({"channel": channel, "error": err.json()}),
    )
}

/// `CHANNEL_UNSUBSCRIBED`.
pub fn channel_unsubscribed(channel: &ChannelRef) -> Utf8Bytes {
    frame(
        server::CHANNEL_UNSUBSCRIBED,
        &json!({"channel": channel.json()}),
    )
}

/// `CHANNEL_UNSUBSCRIBED` the client did not ask for: an operator removed
/// the user from the topic; `reason` says why (an addition to the spec's
/// `{"channel"}`).
pub fn channel_removed(channel: &str, reason: &str) -> Utf8Bytes {
    let channel = ChannelRef {
        id: channel.to_string(),
        kind: "topic".to_string(),
    };
    frame(
        server::CHANNEL_UNSUBSCRIBED,
        &json!({"channel": channel.json(), "reason": reason}),
    )
}

/// `SEND_MESSAGE_FAILED`: `{"topicId", "category", "error":{"code","message"}}`.
pub fn send_message_failed(topic_id: Option<&str>, err: &WireError) -> Utf8Bytes {
    frame(
        server::SEND_MESSAGE_FAILED,
        &json!({"topicId": topic_id, "error": err.json()}),
    )
}

/// `PRESENCE_EVENT_RESPONSE` with category `media.session.invalid`: a
/// SEND_PRESENCE_EVENT that could not be processed.
pub fn presence_failed(topic_id: Option<&str>, err: &WireError) -> Utf8Bytes {
    frame(
        server::PRESENCE_EVENT_RESPONSE,
        &json!({"category": category::INVALID, "topicId": topic_id, "error": err.json()}),
    )
}

/// The generic `error` event `{"code","message"}`.
pub fn error(err: &WireError) -> Utf8Bytes {
    frame(server::ERROR, &err.json())
}

/// A `PRESENCE_EVENT_RESPONSE` about one member: `sender`, and `content`
/// with the party's `sessionId` and `attendee`; `subscribeTime` when the
/// member subscribed through Socket.IO; `receivers` when it is addressed
/// to some sockets only (the answers to `request.parties`).
pub fn presence_event(
    category: &str,
    channel: &str,
    member: MemberView<'_>,
    receivers: Option<&Value>,
) -> Utf8Bytes {
    let mut content = member
        .info
        .get("presence")
        .filter(|p| p.is_object())
        .cloned()
        .unwrap_or_else(default_presence_content);
    let sender = sender_json(Some(member.user_id), member.info);
    let attendee_type = match sender["type"].as_str() {
        Some("anonymous") => "anonymousId",
        _ => "userId",
    };
    if let Some(content) = content.as_object_mut() {
        content.insert(
            "attendee".into(),
            json!({"attendeeType": attendee_type, "attendee": member.user_id}),
        );
    }
    let mut out = Map::new();
    out.insert("category".into(), Value::from(category));
    out.insert("topicId".into(), Value::from(channel));
    out.insert("sender".into(), sender);
    out.insert("content".into(), content);
    if let Some(time) = member.info.get("subscribeTime").filter(|t| t.is_string()) {
        out.insert("subscribeTime".into(), time.clone());
    }
    if let Some(receivers) = receivers {
        out.insert("receivers".into(), receivers.clone());
    }
    frame(server::PRESENCE_EVENT_RESPONSE, &Value::Object(out))
}

/// The `MESSAGE_SENT` payload built for a SEND_MESSAGE: the client's fields,
/// then `_id` (the core message id), `category`, `topicId`, `sender` (from
/// the token) and `created`. `_id` comes first: [`SocketIoCodec`]
/// recognises payloads it built by that prefix.
pub fn message_payload(
    id: &str,
    msg: &SendMessage,
    sender: &Value,
    created: &str,
    loopback: Option<&Value>,
) -> String {
    let mut out = Map::new();
    out.insert("_id".into(), Value::from(id));
    out.insert("category".into(), Value::from(msg.category.as_str()));
    out.insert("topicId".into(), Value::from(msg.topic_id.as_str()));
    for (k, v) in &msg.fields {
        out.insert(k.clone(), v.clone());
    }
    out.entry("content").or_insert_with(|| json!({}));
    out.insert("sender".into(), sender.clone());
    out.insert("created".into(), Value::from(created));
    if let Some(meta) = loopback {
        out.insert("loopbackMetadata".into(), meta.clone());
    }
    // serde_json's Map keeps insertion order only with `preserve_order`;
    // write `_id` first by hand so the codec can recognise the payload.
    let mut rest = out;
    rest.remove("_id");
    let body = serde_json::to_string(&rest).unwrap_or_else(|_| "{}".into());
    let id_json = serde_json::to_string(id).unwrap_or_else(|_| "\"\"".into());
    if body == "{}" {
        format!("{{\"_id\":{id_json}}}")
    } else {
        format!("{{\"_id\":{id_json},{}", &body[1..])
    }
}

/// `MESSAGE_SENT` with a payload from [`message_payload`].
/// The core event name of a media session event of `category`: other
/// front ends see it as the event (e.g. `media.session.trackstatus`), and
/// channel rules and token grants can name it.
pub const MEDIA_EVENT_PREFIX: &str = "media.session.";

/// What a client's publish is relayed as: SEND_MESSAGE → MESSAGE_SENT
/// (core event = the category), SEND_MEDIA_SESSION_EVENTS →
/// MEDIA_SESSION_RESPONSE (core event = `media.session.<category>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relay {
    Message,
    MediaSession,
}

impl Relay {
    /// The core event name for a client `category`.
    pub fn core_event(self, category: &str) -> String {
        match self {
            Relay::Message => category.to_string(),
            Relay::MediaSession => format!("{MEDIA_EVENT_PREFIX}{category}"),
        }
    }

    /// The frame a recipient gets for a payload built by [`message_payload`].
    pub fn sent(self, payload: &str) -> Utf8Bytes {
        let event = match self {
            Relay::Message => server::MESSAGE_SENT,
            Relay::MediaSession => server::MEDIA_SESSION_RESPONSE,
        };
        let mut out = String::with_capacity(payload.len() + event.len() + 5);
        out.push_str("[\"");
        out.push_str(event);
        out.push_str("\",");
        out.push_str(payload);
        out.push(']');
        Utf8Bytes::from(out)
    }

    /// The refusal: SEND_MESSAGE_FAILED, or MEDIA_SESSION_RESPONSE with
    /// category `app.event.presence.media.session.invalid` and the error.
    pub fn failed(self, topic_id: Option<&str>, err: &WireError) -> Utf8Bytes {
        match self {
            Relay::Message => send_message_failed(topic_id, err),
            Relay::MediaSession => frame(
                server::MEDIA_SESSION_RESPONSE,
                &json!({"category": category::INVALID, "topicId": topic_id, "error": err.json()}),
            ),
        }
    }
}

/// `MESSAGE_SENT` for a message that did not come from a Socket.IO client
/// (a Hotsock client or an HTTP API publish): the core event name becomes
/// `category`, a string payload becomes `content.bodyText`, an object
/// payload becomes `content`, anything else `content.data`.
///
/// ```text
/// {"channel":"presence.room1","event":"chat","data":"Hello!"}   (Hotsock, uid jim)
/// → ["MESSAGE_SENT",{"_id":"01J…","category":"chat","topicId":"presence.room1","content":{"bodyText":"Hello!"},"sender":{"_id":"jim","type":"user","displayname":"Jim","username":"jim"},"created":"…"}]
/// ```
pub fn foreign_message(msg: &ChannelMessage) -> Utf8Bytes {
    let data: Value = msg
        .data
        .as_deref()
        .and_then(|raw| serde_json::from_str(raw.get()).ok())
        .unwrap_or(Value::Null);
    let content = match data {
        Value::Null => json!({}),
        Value::String(s) => json!({"bodyText": s}),
        obj @ Value::Object(_) => obj,
        other => json!({"data": other}),
    };
    let sender = match &msg.sender {
        Some(s) => sender_json(s.user_id.as_deref(), &s.info),
        None => json!({"_id": null, "type": "system", "displayname": "server"}),
    };
    frame(
        server::MESSAGE_SENT,
        &json!({
            "_id": msg.id,
            "category": msg.event,
            "topicId": &*msg.channel,
            "content": content,
            "sender": sender,
            "created": crate::time::rfc3339(std::time::SystemTime::now()),
        }),
    )
}

/// True if `data` is a payload built by [`message_payload`] for message `id`.
fn is_own_payload(data: &RawValue, id: &str) -> bool {
    let raw = data.get().as_bytes();
    let Some(rest) = raw.strip_prefix(b"{\"_id\":\"") else {
        return false;
    };
    rest.strip_prefix(id.as_bytes())
        .is_some_and(|r| r.first() == Some(&b'"'))
}

/// A direct message (HTTP API send-to-user / broadcast): emitted as the
/// event it names, with its data. Reserved names are not delivered.
pub fn direct(msg: &DirectMessage) -> Option<Utf8Bytes> {
    if RESERVED_EVENTS.contains(&msg.event.as_str()) || msg.event.is_empty() {
        return None;
    }
    let data = msg.data.as_deref();
    Some(frame(&msg.event, &data))
}

/// Splits an outbox item `["EVENT",payload]` into the event name and the
/// raw payload, or None if it is not in that form.
pub fn split_event(item: &str) -> Option<(String, Box<RawValue>)> {
    let (event, payload): (String, Box<RawValue>) = serde_json::from_str(item).ok()?;
    Some((event, payload))
}

/// How a socket's frames are laid out; also the codec flavor of its
/// subscriptions, so a broadcast is rendered once per layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Whole Engine.IO message packets on namespace `/`:
    /// `42["EVENT",payload]`.
    Root = 0,
    /// Whole packets on `/chat`: `42/chat,["EVENT",payload]`.
    Chat = 1,
}

impl Framing {
    /// The layout of whole packets on namespace `nsp`, if it is served.
    pub fn of_namespace(nsp: &str) -> Option<Framing> {
        match nsp {
            "/" | "" => Some(Framing::Root),
            "/chat" => Some(Framing::Chat),
            _ => None,
        }
    }

    /// The codec flavor of this layout.
    pub fn flavor(self) -> u8 {
        self as u8
    }

    fn of_flavor(flavor: u8) -> Framing {
        match flavor {
            1 => Framing::Chat,
            _ => Framing::Root,
        }
    }

    /// What comes before `["EVENT",payload]`: the Engine.IO message type
    /// (4), the Socket.IO EVENT type (2) and the namespace; the same for
    /// Engine.IO 3 and 4 clients.
    pub fn prefix(self) -> &'static str {
        match self {
            Framing::Root => "42",
            Framing::Chat => "42/chat,",
        }
    }

    /// The namespace's name.
    pub fn namespace(self) -> &'static str {
        match self {
            Framing::Chat => "/chat",
            Framing::Root => "/",
        }
    }

    /// The namespace part of a packet: nothing for `/`, `/chat,` for
    /// `/chat`.
    pub fn namespace_part(self) -> &'static str {
        match self {
            Framing::Root => "",
            Framing::Chat => "/chat,",
        }
    }

    /// `bare` (`["EVENT",payload]`) in this layout.
    pub fn frame(self, bare: Utf8Bytes) -> Utf8Bytes {
        let prefix = self.prefix();
        let mut out = String::with_capacity(prefix.len() + bare.len());
        out.push_str(prefix);
        out.push_str(&bare);
        Utf8Bytes::from(out)
    }
}

/// Renders core events for Socket.IO connections, once per event for all
/// of them (and per [`Framing`]).
#[derive(Debug, Default)]
pub struct SocketIoCodec;

impl crate::presence::Codec for SocketIoCodec {
    fn encode(&self, event: &Event<'_>, flavor: u8) -> Option<Outbound> {
        let bytes = match event {
            Event::Member {
                change,
                channel,
                member,
                ..
            } => {
                let cat = match change {
                    MemberChange::Added | MemberChange::Updated => category::PARTY_ONLINE,
                    MemberChange::Removed => category::PARTY_LEAVES,
                    MemberChange::Unchanged => return None,
                };
                presence_event(cat, channel, *member, None)
            }
            Event::Message(msg) => match &msg.data {
                Some(data) if is_own_payload(data, &msg.id) => {
                    let relay = match msg.event.starts_with(MEDIA_EVENT_PREFIX) {
                        true => Relay::MediaSession,
                        false => Relay::Message,
                    };
                    relay.sent(data.get())
                }
                _ => foreign_message(msg),
            },
            Event::Direct(msg) => direct(msg)?,
        };
        Some(Outbound::Text(Framing::of_flavor(flavor).frame(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ids::ConnId;
    use crate::presence::{Codec, MessageSender};

    /// The `["EVENT",payload]` of a packet the codec rendered on `/`
    /// (flavor 0).
    fn text(o: Option<Outbound>) -> Value {
        match o {
            Some(Outbound::Text(b)) => {
                let bare = b.strip_prefix("42").expect("an EVENT packet on /");
                serde_json::from_str(bare).unwrap()
            }
            other => panic!("expected text, got {other:?}"),
        }
    }

    #[test]
    fn each_namespace_gets_whole_packets() {
        let msg = DirectMessage {
            id: "1".into(),
            event: "note".into(),
            data: None,
        };
        let root = SocketIoCodec.encode(&Event::Direct(&msg), Framing::Root.flavor());
        let chat = SocketIoCodec.encode(&Event::Direct(&msg), Framing::Chat.flavor());
        let frame = |o: Option<Outbound>| match o {
            Some(Outbound::Text(t)) => t.to_string(),
            other => panic!("expected text, got {other:?}"),
        };
        assert_eq!(frame(root), r#"42["note",null]"#);
        assert_eq!(frame(chat), r#"42/chat,["note",null]"#);
    }

    #[test]
    fn decodes_subscribe_from_the_spec() {
        let v: Value = serde_json::from_str(r#"{"channel":{"type":"topic","_id":"t1"}}"#).unwrap();
        assert_eq!(
            decode_channel(&v).unwrap(),
            ChannelRef {
                id: "t1".into(),
                kind: "topic".into()
            }
        );
        let v = json!({"channel":{"_id":"presence.room1","password":"x"}});
        assert_eq!(decode_channel(&v).unwrap().kind, "topic");
        assert_eq!(decode_password(&v).unwrap().as_deref(), Some("x"));
        assert!(!format!("{:?}", decode_channel(&v).unwrap()).contains('x'));
        assert_eq!(
            decode_password(&json!({"channel":{"_id":"t"}})).unwrap(),
            None
        );
        assert!(decode_password(&json!({"channel":{"_id":"t","password":1}})).is_err());
    }

    #[test]
    fn rejects_bad_subscribe_payloads_with_reasons() {
        let cases = [
            (json!(null), "channel data was not provided"),
            (json!("t1"), "channel data was not provided"),
            (json!({}), "channel data was not provided"),
            (json!({"channel": "t1"}), "must be an object"),
            (json!({"channel": {}}), "_id is missing"),
            (
                json!({"channel": {"_id": 5}}),
                "must be a string, not a number",
            ),
            (json!({"channel": {"_id": ""}}), "empty"),
            (json!({"channel": {"_id": "x".repeat(300)}}), "longer than"),
            (
                json!({"channel": {"_id": "a", "type": 1}}),
                "type must be a string",
            ),
        ];
        for (payload, want) in cases {
            let err = decode_channel(&payload).unwrap_err();
            assert_eq!(err.code, codes::INVALID_PARAMETERS);
            assert!(err.message.contains(want), "{payload}: {}", err.message);
        }
    }

    #[test]
    fn send_message_drops_client_sender_and_keeps_loopback_apart() {
        let v: Value = serde_json::from_str(
            r#"{"category":"chat","content":{"bodyText":"hi","data":[]},"topicId":"t1","sender":{"_id":"mallory","type":"user"},"_id":"forged","loopbackMetadata":{"k":1}}"#,
        )
        .unwrap();
        let m = decode_send_message(v).unwrap();
        assert_eq!(m.topic_id, "t1");
        assert_eq!(m.category, "chat");
        assert_eq!(m.loopback, Some(json!({"k":1})));
        assert!(!m.fields.contains_key("sender"));
        assert!(!m.fields.contains_key("_id"));
        let sender = json!({"_id":"alice","type":"user"});
        let p = message_payload("01ABC", &m, &sender, "2026-01-01T00:00:00Z", None);
        assert!(p.starts_with(r#"{"_id":"01ABC","#), "{p}");
        let parsed: Value = serde_json::from_str(&p).unwrap();
        assert_eq!(parsed["sender"]["_id"], "alice");
        assert_eq!(parsed["content"]["bodyText"], "hi");
        assert!(parsed.get("loopbackMetadata").is_none());
        let p = message_payload("01ABC", &m, &sender, "t", m.loopback.as_ref());
        let parsed: Value = serde_json::from_str(&p).unwrap();
        assert_eq!(parsed["loopbackMetadata"], json!({"k":1}));
    }

    #[test]
    fn send_message_errors() {
        assert!(
            decode_send_message(json!("hi"))
                .unwrap_err()
                .message
                .contains("not a string")
        );
        assert!(
            decode_send_message(json!({}))
                .unwrap_err()
                .message
                .contains("topicId is missing")
        );
        assert!(
            decode_send_message(json!({"topicId": 3}))
                .unwrap_err()
                .message
                .contains("topicId must be a string")
        );
        assert!(
            decode_send_message(json!({"topicId": "t", "category": 1}))
                .unwrap_err()
                .message
                .contains("category")
        );
    }

    #[test]
    fn decodes_presence_categories() {
        let p = decode_presence(
            &json!({"category":"app.event.presence.request.parties","topicId":"t"}),
        )
        .unwrap();
        assert_eq!(p.action, PresenceAction::RequestParties);
        let p = decode_presence(&json!({"category":"party.leaves","topicId":"t"})).unwrap();
        assert_eq!(p.action, PresenceAction::Leaves);
        let p = decode_presence(&json!({"category":"app.event.presence.party.online","topicId":"t","content":{"idle":true}})).unwrap();
        assert_eq!(p.content, Some(json!({"idle": true})));
        assert!(
            decode_presence(&json!({"category":"x","topicId":"t"}))
                .unwrap_err()
                .message
                .contains("unknown presence category")
        );
        assert!(
            decode_presence(&json!({"category":"party.online","topicId":"t","content":1})).is_err()
        );
        assert!(decode_presence(&json!([1])).is_err());
    }

    #[test]
    fn codec_renders_member_events() {
        let party = Party {
            session_id: "s1",
            subscribe_time: "2026-12-03T10:00:00Z",
        };
        let info = member_info(
            &json!({"displayname":"Bob","type":"user"}),
            None,
            Some(&party),
        );
        let view = MemberView {
            user_id: "bob",
            info: &info,
        };
        let map = indexmap::IndexMap::new();
        let members = crate::presence::Members { map: &map };
        let ev = Event::Member {
            change: MemberChange::Added,
            channel: "presence.room1",
            member: view,
            members,
        };
        let v = text(SocketIoCodec.encode(&ev, 0));
        assert_eq!(v[0], "PRESENCE_EVENT_RESPONSE");
        assert_eq!(v[1]["category"], category::PARTY_ONLINE);
        assert_eq!(v[1]["topicId"], "presence.room1");
        assert_eq!(
            v[1]["sender"],
            json!({"_id":"bob","type":"user","displayname":"Bob","username":"bob"})
        );
        assert_eq!(v[1]["content"]["role"], "member");
        assert_eq!(v[1]["content"]["sessionId"], "s1");
        assert_eq!(
            v[1]["content"]["attendee"],
            json!({"attendeeType": "userId", "attendee": "bob"})
        );
        assert_eq!(v[1]["subscribeTime"], "2026-12-03T10:00:00Z");
        assert!(
            v[1].get("receivers").is_none(),
            "a broadcast has no receivers"
        );
        let ev = Event::Member {
            change: MemberChange::Removed,
            channel: "presence.room1",
            member: view,
            members,
        };
        assert_eq!(
            text(SocketIoCodec.encode(&ev, 0))[1]["category"],
            category::PARTY_LEAVES
        );
        let ev = Event::Member {
            change: MemberChange::Unchanged,
            channel: "presence.room1",
            member: view,
            members,
        };
        assert!(SocketIoCodec.encode(&ev, 0).is_none());
    }

    #[test]
    fn codec_passes_own_payloads_and_wraps_foreign_ones() {
        let m = decode_send_message(json!({"topicId":"t","content":{"bodyText":"x"}})).unwrap();
        let payload = message_payload("01XYZ", &m, &json!({"_id":"a"}), "c", None);
        let msg = ChannelMessage {
            id: "01XYZ".into(),
            channel: Arc::from("t"),
            event: "chat".into(),
            data: Some(RawValue::from_string(payload.clone()).unwrap()),
            sender: None,
        };
        let v = text(SocketIoCodec.encode(&Event::Message(&msg), 0));
        assert_eq!(
            v,
            json!([
                "MESSAGE_SENT",
                serde_json::from_str::<Value>(&payload).unwrap()
            ])
        );

        // A Hotsock client's message (spec hotsock §3.2 C5).
        let hot = ChannelMessage {
            id: "01HOT".into(),
            channel: Arc::from("presence.room1"),
            event: "chat".into(),
            data: Some(RawValue::from_string("\"Hello!\"".into()).unwrap()),
            sender: Some(MessageSender {
                conn: ConnId::next(),
                user_id: Some(Arc::from("jim")),
                info: Arc::new(json!({"name":"Jim"})),
                echo: false,
            }),
        };
        let v = text(SocketIoCodec.encode(&Event::Message(&hot), 0));
        assert_eq!(v[0], "MESSAGE_SENT");
        assert_eq!(v[1]["_id"], "01HOT");
        assert_eq!(v[1]["category"], "chat");
        assert_eq!(v[1]["topicId"], "presence.room1");
        assert_eq!(v[1]["content"], json!({"bodyText":"Hello!"}));
        assert_eq!(v[1]["sender"]["_id"], "jim");
        assert_eq!(v[1]["sender"]["displayname"], "Jim");

        // A forged `_id` does not pass as our own payload.
        let forged = ChannelMessage {
            data: Some(RawValue::from_string(r#"{"_id":"01HOTX"}"#.into()).unwrap()),
            ..hot
        };
        let v = text(SocketIoCodec.encode(&Event::Message(&forged), 0));
        assert_eq!(v[1]["content"], json!({"_id":"01HOTX"}));
    }

    #[test]
    fn direct_messages_skip_reserved_names() {
        let msg = DirectMessage {
            id: "1".into(),
            event: "NOTICE".into(),
            data: Some(RawValue::from_string("{\"a\":1}".into()).unwrap()),
        };
        assert_eq!(
            text(SocketIoCodec.encode(&Event::Direct(&msg), 0)),
            json!(["NOTICE", {"a":1}])
        );
        let msg = DirectMessage {
            event: "disconnect".into(),
            ..msg
        };
        assert!(SocketIoCodec.encode(&Event::Direct(&msg), 0).is_none());
    }

    #[test]
    fn split_event_round_trips() {
        let (event, payload) = split_event(&channel_subscribed(
            &ChannelRef {
                id: "t".into(),
                kind: "topic".into(),
            },
            "c1",
            "s1",
        ))
        .unwrap();
        assert_eq!(event, "CHANNEL_SUBSCRIBED");
        assert_eq!(
            payload.get(),
            r#"{"channel":{"_id":"t","type":"topic"},"dtsid":"c1","sessionId":"s1"}"#
        );
        assert!(split_event("not json").is_none());
    }
}
