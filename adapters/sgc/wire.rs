//! sgc Presence frames (subprotocol `presence.esegece.com`): decoding
//! client frames, encoding server frames, base64, and the [`SgcCodec`]
//! that renders core events.
//!
//! # Format
//!
//! One JSON object per text frame, with data in top-level objects instead
//! of JSON-RPC `params` (spec §3):
//!
//! ```text
//! {"jsonrpc":"2.0","method":"sgc@presence@…",
//!  "error":{"code":11,"text":"…"}, "message":{"text":"…"}, "channel":{"name":"…"},
//!  "member":{"id":"…","name":"…","info":"…"}, "members":[{"id":…,"name":…,"info":…}],
//!  "id":"<ack id>"}
//! ```
//!
//! Client frames, as the sgc client writes them:
//!
//! ```text
//! {"jsonrpc":"2.0","method":"sgc@presence@member@new","member":{"id":"<session>","name":"alice","info":"…"}}
//! {"jsonrpc":"2.0","method":"sgc@presence@member@remove","member":{"id":"<session>","name":"","info":""}}
//! {"jsonrpc":"2.0","method":"sgc@presence@channel@member@new","member":{…},"channel":{"name":"room-42"}}
//! {"jsonrpc":"2.0","method":"sgc@presence@channel@member@remove","member":{…},"channel":{"name":"room-42"}}
//! {"jsonrpc":"2.0","method":"sgc@presence@publish@msg","message":{"text":"hello"},"channel":{"name":"room-42"},"member":{…}}
//! {"jsonrpc":"2.0","method":"sgc@presence@get@members","channel":{"name":""},"member":{…}}
//! {"jsonrpc":"2.0","method":"sgc@presence@channel@invitation","channel":{"name":"room-42"},"member":{…},"members":[{"id":"<invitee>","name":"","info":""}]}
//! {"jsonrpc":"2.0","method":"sgc@presence@channel@invitation@response","channel":{"name":"room-42"},"member":{…},"members":[{"id":"<inviter>"}],"message":{"text":"decline"},"error":{"code":1,"text":"Invitation refused"}}
//! {"jsonrpc":"2.0","method":"sgc@presence@acknowledgment","id":"<id>"}
//! ```
//!
//! Reading is lenient (see [`super::lenient`]); any string may be
//! `"sgc@b64:" + base64(value)` and is decoded. A frame without
//! `"jsonrpc":"2.0"` or a method is dropped, as sgc does.

use std::borrow::Cow;

use crate::outbox::Utf8Bytes;
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::Value as Json;
use tokio::time::Instant;

use super::ROSTER_CHANNEL;
use super::acks::{self, AckTracker};
use super::lenient::{self, Value};
use crate::outbox::Outbound;
use crate::presence::{
    ChannelMessage, Codec, DirectMessage, Event, InvitationEvent, InvitationOutcome, MemberChange,
};

/// The prefix of a base64-encoded string value.
pub const B64_PREFIX: &str = "sgc@b64:";

/// Subscription flavor bit: the connection gets base64-encoded strings.
pub const FLAVOR_BASE64: u8 = 1;

/// Method names (spec §3.2), plus our invitation response.
pub mod method {
    /// S→C on open: the session id in `message.text`.
    pub const SESSION: &str = "sgc@presence@session";
    /// Join (C→S); a member joined (S→C).
    pub const NEW_MEMBER: &str = "sgc@presence@member@new";
    /// Leave (C→S); a member left (S→C).
    pub const REMOVE_MEMBER: &str = "sgc@presence@member@remove";
    /// Subscribe (C→S); a member joined a channel (S→C).
    pub const NEW_CHANNEL_MEMBER: &str = "sgc@presence@channel@member@new";
    /// Unsubscribe (C→S); a member left a channel (S→C).
    pub const REMOVE_CHANNEL_MEMBER: &str = "sgc@presence@channel@member@remove";
    /// Publish (C→S); a published message (S→C).
    pub const PUBLISH_MSG: &str = "sgc@presence@publish@msg";
    /// Ask for a member list (C→S).
    pub const GET_MEMBERS: &str = "sgc@presence@get@members";
    /// The member list (S→C).
    pub const SEND_MEMBERS: &str = "sgc@presence@send@members";
    /// Invite (C→S); an invitation (S→C).
    pub const CHANNEL_INVITATION: &str = "sgc@presence@channel@invitation";
    /// The answer to an invitation, both ways (ours; see the README).
    pub const CHANNEL_INVITATION_RESPONSE: &str = "sgc@presence@channel@invitation@response";
    /// Every error (S→C).
    pub const ERROR_MEMBER_CHANNEL: &str = "sgc@presence@error@member@channel";
    /// An acknowledgment, both ways.
    pub const ACKNOWLEDGMENT: &str = "sgc@presence@acknowledgment";
}

/// Error codes (spec §4.9), plus ours from 40 up.
pub mod codes {
    /// member@new on a connection that already joined.
    pub const MEMBER_ALREADY_EXISTS: i64 = 1;
    /// OnBeforeNewMember rejected the join (rules, hooks, limits).
    pub const NEW_MEMBER_DENIED: i64 = 2;
    /// The connection has not joined, or names another member.
    pub const MEMBER_NOT_EXISTS: i64 = 3;
    /// No such channel.
    pub const CHANNEL_NOT_EXISTS: i64 = 5;
    /// OnBeforeNewChannel rejected creating the channel.
    pub const NEW_CHANNEL_DENIED: i64 = 6;
    /// OnBeforeNewChannelMember rejected the subscription.
    pub const NEW_SUBSCRIPTION_DENIED: i64 = 10;
    /// Already subscribed.
    pub const SUBSCRIPTION_ALREADY_EXISTS: i64 = 11;
    /// Not subscribed.
    pub const SUBSCRIPTION_NOT_EXISTS: i64 = 12;
    /// OnBeforePublishMsg rejected the message.
    pub const PUBLISH_MSG_DENIED: i64 = 20;
    /// OnBeforeSendMembers rejected the request.
    pub const SEND_MEMBERS_DENIED: i64 = 30;
    /// Ours: the invitation was refused (policy, self-invitation).
    pub const INVITATION_DENIED: i64 = 40;
    /// Ours: answering an invitation that is not pending.
    pub const INVITATION_NOT_FOUND: i64 = 41;
    /// Ours (invitation response): nobody answered in time.
    pub const INVITATION_EXPIRED: i64 = 42;
    /// Ours (invitation response): the invitee disconnected.
    pub const INVITEE_LEFT: i64 = 43;
    /// Ours: the client sends too fast; the frame was dropped.
    pub const RATE_LIMITED: i64 = 50;

    /// The text sgc sends with `code` (the 2022 server's texts; 6 and 30,
    /// empty there, get the resource strings the server never mapped).
    pub fn text(code: i64) -> &'static str {
        match code {
            MEMBER_ALREADY_EXISTS => "Member already exists.",
            NEW_MEMBER_DENIED => "Create New Member request has been denied.",
            MEMBER_NOT_EXISTS => "Member not exists.",
            CHANNEL_NOT_EXISTS => "Channel not exists",
            NEW_CHANNEL_DENIED => "Create New Channel request has been denied.",
            NEW_SUBSCRIPTION_DENIED => "Create Subscription request has been denied.",
            SUBSCRIPTION_ALREADY_EXISTS => "Subscription already exists.",
            SUBSCRIPTION_NOT_EXISTS => "Subscription not exists.",
            PUBLISH_MSG_DENIED => "Publish Message request has been denied.",
            SEND_MEMBERS_DENIED => "Send Members request has been denied.",
            INVITATION_DENIED => "Invitation request has been denied.",
            INVITATION_NOT_FOUND => "Invitation not found or expired.",
            INVITATION_EXPIRED => "Invitation expired.",
            INVITEE_LEFT => "Invitation cancelled: the invited member left.",
            RATE_LIMITED => "Rate limit exceeded.",
            _ => "",
        }
    }
}

/// A member as sgc shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WireMember<'a> {
    /// The member id (the session id for sgc members).
    pub id: Cow<'a, str>,
    /// Display name.
    pub name: Cow<'a, str>,
    /// Free text (sgc's `Presence.Info`).
    pub info: Cow<'a, str>,
}

impl<'a> WireMember<'a> {
    /// A member with only an id.
    pub fn id_only(id: &'a str) -> Self {
        WireMember {
            id: Cow::Borrowed(id),
            ..WireMember::default()
        }
    }

    /// How a core member (key + member data) looks to sgc clients. sgc
    /// members carry `{"name":…,"info":…}`. For members of other front
    /// ends: `name` is the data's `name` string or else the member id;
    /// `info` is the data's `info` (a string as is, JSON as its text), or
    /// else the whole data as JSON text (empty for `null`, a string as is).
    pub fn from_core(id: &'a str, data: &'a Json) -> Self {
        let text_of = |v: &'a Json| -> Cow<'a, str> {
            match v {
                Json::Null => Cow::Borrowed(""),
                Json::String(s) => Cow::Borrowed(s),
                other => Cow::Owned(other.to_string()),
            }
        };
        let (name, info) = match data {
            Json::Object(map) => {
                let name = match map.get("name") {
                    Some(Json::String(s)) => Cow::Borrowed(s.as_str()),
                    _ => Cow::Borrowed(id),
                };
                let info = match map.get("info") {
                    Some(v) => text_of(v),
                    None if map.keys().all(|k| k == "name") => Cow::Borrowed(""),
                    None => Cow::Owned(data.to_string()),
                };
                (name, info)
            }
            other => (Cow::Borrowed(id), text_of(other)),
        };
        WireMember {
            id: Cow::Borrowed(id),
            name,
            info,
        }
    }

    /// The core member data of an sgc member.
    pub fn core_data(name: &str, info: &str) -> Json {
        serde_json::json!({"name": name, "info": info})
    }

    /// The core member data of an sgc member without a token, whose name
    /// the client chose: marked `"type": "anonymous"`, so other front ends
    /// (Socket.IO's `sender.type`, Hotsock's `umd`) do not show it as a
    /// verified user.
    pub fn anonymous_core_data(name: &str, info: &str) -> Json {
        serde_json::json!({"name": name, "info": info, "type": "anonymous"})
    }

    /// A copy that owns its strings.
    pub fn into_owned(self) -> WireMember<'static> {
        WireMember {
            id: Cow::Owned(self.id.into_owned()),
            name: Cow::Owned(self.name.into_owned()),
            info: Cow::Owned(self.info.into_owned()),
        }
    }
}

// ---------------------------------------------------------------- decoding

/// A client frame, decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct Incoming {
    /// What the client asks for.
    pub request: Request,
    /// The top-level ack id, if non-empty.
    pub id: Option<String>,
    /// True if any string in the frame was base64-encoded.
    pub base64: bool,
    /// `member.id` as sent (ignored except to refuse removing another member).
    pub member_id: String,
}

/// What a client frame asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    /// `member@new`: join with a name and info.
    NewMember {
        /// `member.name`.
        name: String,
        /// `member.info`.
        info: String,
    },
    /// `member@remove`: leave (the socket stays open).
    RemoveMember,
    /// `channel@member@new`: subscribe.
    Subscribe {
        /// `channel.name`.
        channel: String,
    },
    /// `channel@member@remove`: unsubscribe.
    Unsubscribe {
        /// `channel.name`.
        channel: String,
    },
    /// `publish@msg`; an empty channel means every member.
    Publish {
        /// `channel.name` (may be empty).
        channel: String,
        /// `message.text`.
        text: String,
    },
    /// `get@members`; an empty channel means every member.
    GetMembers {
        /// `channel.name` (may be empty).
        channel: String,
    },
    /// `channel@invitation`: invite the listed member ids.
    Invite {
        /// `channel.name`.
        channel: String,
        /// The ids in `members[]`.
        invitees: Vec<String>,
    },
    /// `channel@invitation@response`: answer an invitation.
    InvitationResponse {
        /// `channel.name`.
        channel: String,
        /// `members[0].id`: who invited (None: any inviter).
        inviter: Option<String>,
        /// Accepted or declined.
        accept: bool,
        /// `error.code` (the reason for a decline).
        code: i64,
        /// `error.text`.
        text: String,
    },
    /// `acknowledgment` of a frame the server sent (its id is in
    /// [`Incoming::id`]).
    Acknowledgment,
    /// Any other method (dropped).
    Other(String),
}

/// Why a frame was dropped without a reply.
#[derive(Debug, PartialEq, Eq)]
pub struct Dropped(pub String);

/// The base64 engine: standard alphabet, padding optional.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Windows-1252 characters for bytes 0x80-0x9F (the rest is Latin-1).
const CP1252_HIGH: [char; 32] = [
    '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž', '\u{8f}',
    '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}', 'ž', 'Ÿ',
];

/// Decodes an `sgc@b64:` string: UTF-8 if the bytes are valid UTF-8,
/// else Windows-1252. Returns None if `s` has no prefix or is not base64.
pub fn decode_b64(s: &str) -> Option<String> {
    let body = s.strip_prefix(B64_PREFIX)?;
    let compact: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = B64.decode(compact.as_bytes()).ok()?;
    Some(match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => e
            .into_bytes()
            .iter()
            .map(|&b| match b {
                0x80..=0x9F => CP1252_HIGH[usize::from(b - 0x80)],
                _ => char::from(b),
            })
            .collect(),
    })
}

/// Encodes a string as `sgc@b64:` + base64 of its UTF-8 bytes.
pub fn encode_b64(s: &str) -> String {
    format!(
        "{B64_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(s)
    )
}

/// Reads frame values as text, decoding base64 and noting that it was used.
struct Reader {
    base64: bool,
}

impl Reader {
    fn text(&mut self, v: Option<&Value<'_>>) -> String {
        let Some(v) = v else { return String::new() };
        let raw = v.text();
        if raw.starts_with(B64_PREFIX)
            && let Some(decoded) = decode_b64(&raw)
        {
            self.base64 = true;
            return decoded;
        }
        raw.into_owned()
    }

    /// `obj.field` when `obj` is an object, or `obj` itself when it is a
    /// plain value (lenient: `"channel":"room"` for `{"name":"room"}`).
    fn field(&mut self, obj: Option<&Value<'_>>, field: &str) -> String {
        match obj {
            Some(Value::Object(..)) => self.text(obj.and_then(|o| o.get(field))),
            other => self.text(other),
        }
    }

    fn member(&mut self, v: &Value<'_>) -> WireMember<'static> {
        match v {
            Value::Object(..) => WireMember {
                id: Cow::Owned(self.text(v.get("id"))),
                name: Cow::Owned(self.text(v.get("name"))),
                info: Cow::Owned(self.text(v.get("info"))),
            },
            other => WireMember {
                id: Cow::Owned(self.text(Some(other))),
                ..WireMember::default()
            },
        }
    }
}

/// Reads an accept flag: "accept"/"true"/"1"/"-1"/"yes" (any case) mean
/// accept; anything else non-empty means decline; empty means "accept
/// unless an error code is given".
fn accept_flag(text: &str, code: i64) -> bool {
    match text.trim().to_ascii_lowercase().as_str() {
        "" => code == 0,
        "accept" | "accepted" | "true" | "1" | "-1" | "yes" => true,
        _ => false,
    }
}

/// Decodes one client text frame.
pub fn decode(text: &str) -> Result<Incoming, Dropped> {
    let root = lenient::parse(text).map_err(|e| Dropped(format!("not JSON: {e}")))?;
    if !matches!(root, Value::Object(..)) {
        return Err(Dropped("not a JSON object".into()));
    }
    let mut r = Reader { base64: false };
    let jsonrpc = r.text(root.get("jsonrpc"));
    if jsonrpc != "2.0" {
        return Err(Dropped(format!("jsonrpc is {jsonrpc:?}, not \"2.0\"")));
    }
    let method = r.text(root.get("method"));
    if method.is_empty() {
        return Err(Dropped("no method".into()));
    }
    let id = Some(r.text(root.get("id"))).filter(|s| !s.is_empty());
    let member = root.get("member").map(|m| r.member(m)).unwrap_or_default();
    let channel = r.field(root.get("channel"), "name");
    let members: Vec<WireMember<'static>> = match root.get("members") {
        Some(Value::Array(items, _)) => items.iter().map(|m| r.member(m)).collect(),
        Some(other @ (Value::Object(..) | Value::String(_))) => vec![r.member(other)],
        _ => Vec::new(),
    };
    let request = match method.as_str() {
        method::NEW_MEMBER => Request::NewMember {
            name: member.name.to_string(),
            info: member.info.to_string(),
        },
        method::REMOVE_MEMBER => Request::RemoveMember,
        method::NEW_CHANNEL_MEMBER => Request::Subscribe { channel },
        method::REMOVE_CHANNEL_MEMBER => Request::Unsubscribe { channel },
        method::PUBLISH_MSG => Request::Publish {
            channel,
            text: r.field(root.get("message"), "text"),
        },
        method::GET_MEMBERS => Request::GetMembers { channel },
        method::CHANNEL_INVITATION => Request::Invite {
            channel,
            invitees: members
                .iter()
                .map(|m| m.id.to_string())
                .filter(|id| !id.is_empty())
                .collect(),
        },
        method::CHANNEL_INVITATION_RESPONSE => {
            let error = root.get("error");
            let code = r
                .text(error.and_then(|e| e.get("code")))
                .trim()
                .parse::<i64>()
                .unwrap_or(0);
            let text = r.text(error.and_then(|e| e.get("text")));
            let flag = r.field(root.get("message"), "text");
            Request::InvitationResponse {
                channel,
                inviter: members
                    .first()
                    .map(|m| m.id.to_string())
                    .filter(|id| !id.is_empty()),
                accept: accept_flag(&flag, code),
                code,
                text,
            }
        }
        method::ACKNOWLEDGMENT => Request::Acknowledgment,
        other => Request::Other(other.to_string()),
    };
    Ok(Incoming {
        request,
        id,
        base64: r.base64,
        member_id: member.id.into_owned(),
    })
}

// ---------------------------------------------------------------- encoding

/// Builds one server frame, writing the objects in the order the caller
/// adds them (sgc's per-method order, spec §3.3).
///
/// With `base64`, every non-empty string except `jsonrpc` is written as
/// `"sgc@b64:…"` (sgc's EncodeBase64). Without it, strings are standard
/// JSON, except that a string that is itself a JSON object or array is
/// written unquoted, as sgc's writer does (spec §3.4).
#[derive(Debug)]
pub struct Frame {
    buf: String,
    base64: bool,
}

impl Frame {
    /// Starts a frame for `method`.
    pub fn new(method: &str, base64: bool) -> Self {
        let mut f = Frame {
            buf: String::with_capacity(128),
            base64,
        };
        f.buf.push_str(r#"{"jsonrpc":"2.0","method":"#);
        f.string(method);
        f
    }

    fn string(&mut self, s: &str) {
        if self.base64 && !s.is_empty() && !s.starts_with(B64_PREFIX) {
            self.buf.push('"');
            self.buf.push_str(&encode_b64(s));
            self.buf.push('"');
        } else if !self.base64
            && (s.starts_with('{') || s.starts_with('['))
            && serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok()
        {
            self.buf.push_str(s);
        } else {
            // Escaping a string into a String cannot fail.
            self.buf
                .push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
        }
    }

    fn member_object(&mut self, m: &WireMember<'_>) {
        self.buf.push_str(r#"{"id":"#);
        self.string(&m.id);
        self.buf.push_str(r#","name":"#);
        self.string(&m.name);
        self.buf.push_str(r#","info":"#);
        self.string(&m.info);
        self.buf.push('}');
    }

    /// Adds `"error":{"code":…,"text":…}`.
    pub fn error(mut self, code: i64, text: &str) -> Self {
        self.buf
            .push_str(&format!(r#","error":{{"code":{code},"text":"#));
        self.string(text);
        self.buf.push('}');
        self
    }

    /// Adds `"message":{"text":…}`.
    pub fn message(mut self, text: &str) -> Self {
        self.buf.push_str(r#","message":{"text":"#);
        self.string(text);
        self.buf.push('}');
        self
    }

    /// Adds `"reason":…` (why a member was removed: spec §9.3).
    pub fn reason(mut self, reason: &str) -> Self {
        self.buf.push_str(r#","reason":"#);
        self.string(reason);
        self
    }

    /// Adds `"channel":{"name":…}`.
    pub fn channel(mut self, name: &str) -> Self {
        self.buf.push_str(r#","channel":{"name":"#);
        self.string(name);
        self.buf.push('}');
        self
    }

    /// Adds `"member":{"id":…,"name":…,"info":…}`.
    pub fn member(mut self, m: &WireMember<'_>) -> Self {
        self.buf.push_str(r#","member":"#);
        self.member_object(m);
        self
    }

    /// Adds `"members":[…]`.
    pub fn members<'m>(mut self, list: impl IntoIterator<Item = WireMember<'m>>) -> Self {
        self.buf.push_str(r#","members":["#);
        for (i, m) in list.into_iter().enumerate() {
            if i > 0 {
                self.buf.push(',');
            }
            self.member_object(&m);
        }
        self.buf.push(']');
        self
    }

    /// Closes the frame, with `"id":…` last when given.
    pub fn finish(mut self, id: Option<&str>) -> String {
        if let Some(id) = id {
            self.buf.push_str(r#","id":"#);
            self.string(id);
        }
        self.buf.push('}');
        self.buf
    }
}

/// The acknowledgment of a client frame (never base64, spec §4.10).
pub fn acknowledgment(id: &str) -> Utf8Bytes {
    Utf8Bytes::from(Frame::new(method::ACKNOWLEDGMENT, false).finish(Some(id)))
}

/// A channel message as sgc text: a JSON string's value, other JSON as
/// its text, nothing as `""`.
pub fn message_text(data: Option<&serde_json::value::RawValue>) -> Cow<'_, str> {
    match data {
        None => Cow::Borrowed(""),
        Some(raw) => match serde_json::from_str::<String>(raw.get()) {
            Ok(s) => Cow::Owned(s),
            Err(_) => Cow::Borrowed(raw.get()),
        },
    }
}

/// How sgc text is published into the core: a text that is a JSON object
/// or array travels as that JSON (other front ends get structured data),
/// anything else as a JSON string.
pub fn message_data(text: &str) -> Option<Box<serde_json::value::RawValue>> {
    let trimmed = text.trim_start();
    if (trimmed.starts_with('{') || trimmed.starts_with('['))
        && let Ok(raw) = serde_json::value::RawValue::from_string(text.to_string())
    {
        return Some(raw);
    }
    serde_json::value::to_raw_value(text).ok()
}

fn publish_frame(msg: &ChannelMessage, base64: bool) -> Frame {
    let text = message_text(msg.data.as_deref());
    let channel: &str = if &*msg.channel == ROSTER_CHANNEL {
        ""
    } else {
        &msg.channel
    };
    let frame = Frame::new(method::PUBLISH_MSG, base64)
        .message(&text)
        .channel(channel);
    match &msg.sender {
        Some(sender) => {
            let key = sender
                .user_id
                .as_deref()
                .map(Cow::Borrowed)
                .unwrap_or_else(|| Cow::Owned(sender.conn.to_string()));
            frame.member(&WireMember::from_core(&key, &sender.info))
        }
        // A server publish (HTTP API): sgc's Broadcast, with an empty member.
        None => frame.member(&WireMember::default()),
    }
}

fn direct_frame(msg: &DirectMessage, base64: bool) -> Frame {
    Frame::new(method::PUBLISH_MSG, base64)
        .message(&message_text(msg.data.as_deref()))
        .channel("")
        .member(&WireMember::default())
}

/// Renders a core event, or None if sgc clients do not see it.
pub fn event_frame(event: &Event<'_>, base64: bool) -> Option<Frame> {
    match event {
        Event::Member {
            change,
            channel,
            member,
            ..
        } => {
            let roster = *channel == ROSTER_CHANNEL;
            let method = match (change, roster) {
                (MemberChange::Added | MemberChange::Updated, true) => method::NEW_MEMBER,
                (MemberChange::Removed, true) => method::REMOVE_MEMBER,
                (MemberChange::Added | MemberChange::Updated, false) => method::NEW_CHANNEL_MEMBER,
                (MemberChange::Removed, false) => method::REMOVE_CHANNEL_MEMBER,
                (MemberChange::Unchanged, _) => return None,
            };
            let frame = Frame::new(method, base64)
                .member(&WireMember::from_core(member.user_id, member.info));
            Some(if roster {
                frame
            } else {
                frame.channel(channel)
            })
        }
        Event::Message(msg) => Some(publish_frame(msg, base64)),
        Event::Direct(msg) => Some(direct_frame(msg, base64)),
    }
}

/// Renders an invitation event.
///
/// ```text
/// (invitee) {"jsonrpc":"2.0","method":"sgc@presence@channel@invitation","channel":{"name":"room-42"},"member":{<inviter>},"members":[]}
/// (inviter) {"jsonrpc":"2.0","method":"sgc@presence@channel@invitation@response","error":{"code":1,"text":"Invitation refused"},"message":{"text":"declined"},"channel":{"name":"room-42"},"member":{<invitee>}}
/// ```
pub fn invitation_frame(event: &InvitationEvent<'_>, base64: bool) -> Frame {
    match event {
        InvitationEvent::Invited(inv) => Frame::new(method::CHANNEL_INVITATION, base64)
            .channel(&inv.channel)
            .member(&WireMember::from_core(
                &inv.inviter.user_id,
                &inv.inviter.info,
            ))
            .members([]),
        InvitationEvent::Answered {
            invitation,
            invitee,
            outcome,
        } => {
            let (code, text, reason): (i64, &str, &str) = match outcome {
                InvitationOutcome::Accepted => (0, "", "accepted"),
                InvitationOutcome::Declined { code, text } => (*code, text, "declined"),
                InvitationOutcome::Expired => (
                    codes::INVITATION_EXPIRED,
                    codes::text(codes::INVITATION_EXPIRED),
                    "expired",
                ),
                InvitationOutcome::InviteeLeft => (
                    codes::INVITEE_LEFT,
                    codes::text(codes::INVITEE_LEFT),
                    "cancelled",
                ),
            };
            Frame::new(method::CHANNEL_INVITATION_RESPONSE, base64)
                .error(code, text)
                .message(reason)
                .channel(&invitation.channel)
                .member(&WireMember::from_core(invitee.user_id, invitee.info))
        }
    }
}

/// Encodes core events for sgc connections. One shared instance serves
/// every connection without server-side acks (so a broadcast is encoded
/// once per flavor); a connection that asks for acks gets its own
/// instance, because each of its frames carries its own id.
#[derive(Debug, Default)]
pub struct SgcCodec {
    acks: Option<std::sync::Arc<AckTracker>>,
}

impl SgcCodec {
    /// A codec whose frames ask for acknowledgments, tracked in `tracker`.
    pub fn with_acks(tracker: std::sync::Arc<AckTracker>) -> Self {
        SgcCodec {
            acks: Some(tracker),
        }
    }

    /// Closes a frame: with acks, adds a fresh id and tracks the frame.
    pub fn finish(&self, frame: Frame) -> Utf8Bytes {
        match &self.acks {
            None => Utf8Bytes::from(frame.finish(None)),
            Some(tracker) => {
                let id = acks::new_id();
                let bytes = Utf8Bytes::from(frame.finish(Some(&id)));
                tracker.track(id, bytes.clone(), Instant::now());
                bytes
            }
        }
    }
}

impl Codec for SgcCodec {
    fn encode(&self, event: &Event<'_>, flavor: u8) -> Option<Outbound> {
        let frame = event_frame(event, flavor & FLAVOR_BASE64 != 0)?;
        Some(Outbound::Text(self.finish(frame)))
    }

    fn encode_invitation(&self, event: &InvitationEvent<'_>, flavor: u8) -> Option<Outbound> {
        let frame = invitation_frame(event, flavor & FLAVOR_BASE64 != 0);
        Some(Outbound::Text(self.finish(frame)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(text: &str) -> Request {
        decode(text)
            .unwrap_or_else(|e| panic!("{text}: {e:?}"))
            .request
    }

    #[test]
    fn decodes_the_spec_client_frames() {
        assert_eq!(
            request(
                "{\"jsonrpc\":\"2.0\",\"method\":\"sgc@presence@member@new\",\"member\":{\"id\":\"3F25…3301\",\"name\":\"alice\",\"info\":\"email=alice@example.com\r\n\"}}"
            ),
            Request::NewMember {
                name: "alice".into(),
                info: "email=alice@example.com\r\n".into()
            }
        );
        assert_eq!(
            request(
                r#"{"jsonrpc":"2.0","method":"sgc@presence@member@remove","member":{"id":"3F25…3301","name":"","info":""}}"#
            ),
            Request::RemoveMember
        );
        assert_eq!(
            request(
                r#"{"jsonrpc":"2.0","method":"sgc@presence@channel@member@new","member":{"id":"3F25…3301","name":"","info":""},"channel":{"name":"room-42"}}"#
            ),
            Request::Subscribe {
                channel: "room-42".into()
            }
        );
        assert_eq!(
            request(
                r#"{"jsonrpc":"2.0","method":"sgc@presence@channel@member@remove","member":{"id":"3F25…3301","name":"","info":""},"channel":{"name":"room-42"}}"#
            ),
            Request::Unsubscribe {
                channel: "room-42".into()
            }
        );
        assert_eq!(
            request(
                r#"{"jsonrpc":"2.0","method":"sgc@presence@publish@msg","message":{"text":"hello"},"channel":{"name":"room-42"},"member":{"id":"3F25…3301","name":"","info":""}}"#
            ),
            Request::Publish {
                channel: "room-42".into(),
                text: "hello".into()
            }
        );
        assert_eq!(
            request(
                r#"{"jsonrpc":"2.0","method":"sgc@presence@get@members","channel":{"name":"room-42"},"member":{"id":"3F25…3301","name":"","info":""}}"#
            ),
            Request::GetMembers {
                channel: "room-42".into()
            }
        );
        assert_eq!(
            request(
                r#"{"jsonrpc":"2.0","method":"sgc@presence@channel@invitation","channel":{"name":"room-42"},"member":{"id":"3F25…3301","name":"alice","info":"…"},"members":[{"id":"9A1B…77C0","name":"","info":""}]}"#
            ),
            Request::Invite {
                channel: "room-42".into(),
                invitees: vec!["9A1B…77C0".into()]
            }
        );
        let ack = decode(r#"{"jsonrpc":"2.0","method":"sgc@presence@acknowledgment","id":"ABC"}"#)
            .unwrap();
        assert_eq!(ack.request, Request::Acknowledgment);
        assert_eq!(ack.id.as_deref(), Some("ABC"));
    }

    #[test]
    fn decodes_invitation_responses() {
        assert_eq!(
            request(
                r#"{"jsonrpc":"2.0","method":"sgc@presence@channel@invitation@response","channel":{"name":"room-42"},"member":{"id":"B"},"members":[{"id":"A","name":"","info":""}],"message":{"text":"decline"},"error":{"code":1,"text":"Invitation refused"}}"#
            ),
            Request::InvitationResponse {
                channel: "room-42".into(),
                inviter: Some("A".into()),
                accept: false,
                code: 1,
                text: "Invitation refused".into()
            }
        );
        match request(
            r#"{"jsonrpc":"2.0","method":"sgc@presence@channel@invitation@response","channel":{"name":"r"},"message":{"text":"Accept"}}"#,
        ) {
            Request::InvitationResponse {
                accept, inviter, ..
            } => {
                assert!(accept);
                assert_eq!(inviter, None);
            }
            other => panic!("{other:?}"),
        }
        // Without a flag, an error code means decline.
        assert!(matches!(
            request(
                r#"{"jsonrpc":"2.0","method":"sgc@presence@channel@invitation@response","channel":{"name":"r"},"error":{"code":"7","text":"busy"}}"#
            ),
            Request::InvitationResponse {
                accept: false,
                code: 7,
                ..
            }
        ));
        assert!(matches!(
            request(
                r#"{"jsonrpc":"2.0","method":"sgc@presence@channel@invitation@response","channel":{"name":"r"}}"#
            ),
            Request::InvitationResponse {
                accept: true,
                code: 0,
                ..
            }
        ));
    }

    #[test]
    fn base64_strings_are_decoded_everywhere() {
        // §4.11 example.
        let f = r#"{"jsonrpc":"2.0","method":"sgc@b64:c2djQHByZXNlbmNlQG1lbWJlckBuZXc=","member":{"id":"sgc@b64:M0YyNTA0RTA0Rjg5MTFEMzlBMEMwMzA1RTgyQzMzMDE=","name":"sgc@b64:YWxpY2U=","info":""},"id":"sgc@b64:QUJD"}"#;
        let inc = decode(f).unwrap();
        assert!(inc.base64);
        assert_eq!(inc.id.as_deref(), Some("ABC"));
        assert_eq!(inc.member_id, "3F2504E04F8911D39A0C0305E82C3301");
        assert_eq!(
            inc.request,
            Request::NewMember {
                name: "alice".into(),
                info: String::new()
            }
        );
        let members = decode(&format!(
            r#"{{"jsonrpc":"2.0","method":"sgc@presence@channel@invitation","channel":{{"name":"{}"}},"members":[{{"id":"{}"}}]}}"#,
            encode_b64("room"),
            encode_b64("B0B")
        ))
        .unwrap();
        assert_eq!(
            members.request,
            Request::Invite {
                channel: "room".into(),
                invitees: vec!["B0B".into()]
            }
        );
        assert!(
            !decode(r#"{"jsonrpc":"2.0","method":"sgc@presence@member@remove"}"#)
                .unwrap()
                .base64
        );
    }

    #[test]
    fn base64_decoding_details() {
        assert_eq!(decode_b64("sgc@b64:w6lsw6hu").as_deref(), Some("élèn"));
        // Padding optional, line breaks ignored.
        assert_eq!(decode_b64("sgc@b64:YWxpYw").as_deref(), Some("alic"));
        assert_eq!(decode_b64("sgc@b64:YWxp\r\nY2U=").as_deref(), Some("alice"));
        // Not UTF-8: Windows-1252 (0xE9 'é', 0x80 '€').
        assert_eq!(decode_b64("sgc@b64:6YA=").as_deref(), Some("é€"));
        assert_eq!(decode_b64("sgc@b64:!!"), None);
        assert_eq!(decode_b64("plain"), None);
        // An invalid base64 value is read as plain text.
        let inc = decode(r#"{"jsonrpc":"2.0","method":"sgc@presence@publish@msg","message":{"text":"sgc@b64:!!"}}"#).unwrap();
        assert!(matches!(inc.request, Request::Publish { text, .. } if text == "sgc@b64:!!"));
        assert!(!inc.base64);
        assert_eq!(encode_b64("alice"), "sgc@b64:YWxpY2U=");
    }

    #[test]
    fn lenient_frames_are_read() {
        // Unquoted JSON text, objects where strings are expected, missing
        // objects, plain strings for objects.
        assert_eq!(
            request(
                r#"{"jsonrpc":"2.0","method":"sgc@presence@publish@msg","message":{"text":{"x":1}},"channel":{"name":"c"}}"#
            ),
            Request::Publish {
                channel: "c".into(),
                text: r#"{"x":1}"#.into()
            }
        );
        assert_eq!(
            request(
                r#"{"jsonrpc":"2.0","method":"sgc@presence@publish@msg","message":{"text":"hi"}}"#
            ),
            Request::Publish {
                channel: String::new(),
                text: "hi".into()
            }
        );
        assert_eq!(
            request(
                r#"{"jsonrpc":"2.0","method":"sgc@presence@channel@member@new","channel":"room"}"#
            ),
            Request::Subscribe {
                channel: "room".into()
            }
        );
        assert_eq!(
            request(r#"{"jsonrpc":"2.0","method":"sgc@presence@member@new"}"#),
            Request::NewMember {
                name: String::new(),
                info: String::new()
            }
        );
        assert_eq!(
            request(r#"{"jsonrpc":"2.0","method":"sgc@presence@bogus"}"#),
            Request::Other("sgc@presence@bogus".into())
        );
    }

    #[test]
    fn frames_that_are_not_sgc_are_dropped() {
        for bad in [
            "hello",
            "[1]",
            r#"{"method":"sgc@presence@member@new"}"#,
            r#"{"jsonrpc":"1.0","method":"sgc@presence@member@new"}"#,
            r#"{"jsonrpc":"2.0"}"#,
            r#"{"jsonrpc":"2.0","method":"sgc@presence@member@new","member":{"#,
        ] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn encodes_the_spec_server_frames() {
        let sid = "3F2504E04F8911D39A0C0305E82C3301";
        assert_eq!(
            Frame::new(method::SESSION, false).message(sid).finish(None),
            r#"{"jsonrpc":"2.0","method":"sgc@presence@session","message":{"text":"3F2504E04F8911D39A0C0305E82C3301"}}"#
        );
        let alice = WireMember {
            id: sid.into(),
            name: "alice".into(),
            info: "…".into(),
        };
        assert_eq!(
            Frame::new(method::ERROR_MEMBER_CHANNEL, false)
                .error(11, codes::text(11))
                .channel("room-42")
                .member(&alice)
                .finish(None),
            r#"{"jsonrpc":"2.0","method":"sgc@presence@error@member@channel","error":{"code":11,"text":"Subscription already exists."},"channel":{"name":"room-42"},"member":{"id":"3F2504E04F8911D39A0C0305E82C3301","name":"alice","info":"…"}}"#
        );
        let bob = WireMember {
            id: "9A1B".into(),
            name: "bob".into(),
            info: "".into(),
        };
        assert_eq!(
            Frame::new(method::SEND_MEMBERS, false)
                .channel("room-42")
                .member(&alice)
                .members([alice.clone(), bob])
                .finish(None),
            r#"{"jsonrpc":"2.0","method":"sgc@presence@send@members","channel":{"name":"room-42"},"member":{"id":"3F2504E04F8911D39A0C0305E82C3301","name":"alice","info":"…"},"members":[{"id":"3F2504E04F8911D39A0C0305E82C3301","name":"alice","info":"…"},{"id":"9A1B","name":"bob","info":""}]}"#
        );
        assert_eq!(
            &acknowledgment("ABC")[..],
            r#"{"jsonrpc":"2.0","method":"sgc@presence@acknowledgment","id":"ABC"}"#
        );
    }

    #[test]
    fn base64_output_encodes_every_string_but_jsonrpc() {
        let m = WireMember {
            id: "3F2504E04F8911D39A0C0305E82C3301".into(),
            name: "alice".into(),
            info: "".into(),
        };
        assert_eq!(
            Frame::new(method::NEW_MEMBER, true)
                .member(&m)
                .finish(Some("ABC")),
            r#"{"jsonrpc":"2.0","method":"sgc@b64:c2djQHByZXNlbmNlQG1lbWJlckBuZXc=","member":{"id":"sgc@b64:M0YyNTA0RTA0Rjg5MTFEMzlBMEMwMzA1RTgyQzMzMDE=","name":"sgc@b64:YWxpY2U=","info":""},"id":"sgc@b64:QUJD"}"#
        );
        assert_eq!(
            Frame::new(method::ERROR_MEMBER_CHANNEL, true)
                .error(3, "x")
                .finish(None),
            format!(
                r#"{{"jsonrpc":"2.0","method":"{}","error":{{"code":3,"text":"sgc@b64:eA=="}}}}"#,
                encode_b64(method::ERROR_MEMBER_CHANNEL)
            )
        );
    }

    #[test]
    fn json_text_is_written_unquoted_like_sgc() {
        assert_eq!(
            Frame::new(method::PUBLISH_MSG, false)
                .message(r#"{"x":1}"#)
                .finish(None),
            r#"{"jsonrpc":"2.0","method":"sgc@presence@publish@msg","message":{"text":{"x":1}}}"#
        );
        // Not valid JSON: a normal, escaped string.
        assert_eq!(
            Frame::new(method::PUBLISH_MSG, false)
                .message("{x\n\"")
                .finish(None),
            r#"{"jsonrpc":"2.0","method":"sgc@presence@publish@msg","message":{"text":"{x\n\""}}"#
        );
    }

    #[test]
    fn core_members_render_for_sgc() {
        let sgc = WireMember::core_data("alice", "a@x\r\n");
        assert_eq!(
            WireMember::from_core("k1", &sgc),
            WireMember {
                id: "k1".into(),
                name: "alice".into(),
                info: "a@x\r\n".into()
            }
        );
        let jim = json!({"name": "Jim"});
        assert_eq!(WireMember::from_core("jim", &jim).info, "");
        assert_eq!(WireMember::from_core("jim", &jim).name, "Jim");
        let rich = json!({"name": "Jim", "role": "sales"});
        assert_eq!(
            WireMember::from_core("jim", &rich).info,
            r#"{"name":"Jim","role":"sales"}"#
        );
        assert_eq!(WireMember::from_core("u", &Json::Null).name, "u");
        assert_eq!(
            WireMember::from_core("u", &json!("Manager")).info,
            "Manager"
        );
        assert_eq!(WireMember::from_core("u", &json!([1])).info, "[1]");
        assert_eq!(
            WireMember::from_core("u", &json!({"info": {"a": 1}})).info,
            r#"{"a":1}"#
        );
    }

    #[test]
    fn message_text_and_data_round_trip() {
        let data = message_data("hello").unwrap();
        assert_eq!(data.get(), r#""hello""#);
        assert_eq!(message_text(Some(&data)), "hello");
        let data = message_data(r#"{"x":1}"#).unwrap();
        assert_eq!(data.get(), r#"{"x":1}"#);
        assert_eq!(message_text(Some(&data)), r#"{"x":1}"#);
        assert_eq!(message_data("{broken").unwrap().get(), r#""{broken""#);
        assert_eq!(message_text(None), "");
    }
}
