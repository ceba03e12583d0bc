//! SocketCluster protocol v1 frames (socketcluster-client 14.x), spec
//! ../shared/specs/socketcluster.md §3.
//!
//! Every frame is a text frame holding one packet, a JSON array of packets
//! (a batch), or a bare ping/pong:
//!
//! ```text
//! #1  /  #2                                          v1 ping (server) / pong (client)
//! ""  /  ""                                          v2 ping / pong (empty text frame)
//! {"event":"#handshake","data":{"authToken":null},"cid":1}
//! {"event":"#subscribe","data":{"channel":"sample"},"cid":4}
//! {"event":"#unsubscribe","data":"sample"}
//! {"event":"#publish","data":{"channel":"sample","data":"hi"},"cid":9}
//! {"event":"#authenticate","data":"eyJ…","cid":5}
//! {"event":"#removeAuthToken"}
//! {"event":"#disconnect","data":{"code":1000}}
//! {"rid":4}  /  {"rid":2,"error":{"message":"…","name":"BrokerError"}}   responses
//! ```
//!
//! The server renders core events with [`ScCodec`]: channel messages and the
//! sc-stateless-presence packets are `#publish` events.

use crate::outbox::Utf8Bytes;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::auth::AuthError;
use crate::outbox::Outbound;
use crate::presence::{Codec, Event, MemberChange};

/// Prefix of sc-stateless-presence channels: `presence>C` carries the
/// presence of channel `C` (anchored, spec §2.7 item 6).
pub const PRESENCE_PREFIX: &str = "presence>";

/// The v1 ping the server sends.
pub const PING_V1: &str = "#1";
/// The v1 pong the client answers with.
pub const PONG_V1: &str = "#2";

/// The core event name of channel messages published by SocketCluster
/// clients; other front ends see SC publishes as events of this name.
pub const PUBLISH_EVENT: &str = "publish";

/// After [`PRESENCE_PREFIX`]: a socket's own channel,
/// `presence>socket/<socket id>`, where other sockets' pongs arrive.
pub const SOCKET_INBOX: &str = "socket/";

/// The part of a client's pong the server reads.
#[derive(serde::Deserialize)]
pub struct PongPacket {
    /// `"pong"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The channel C whose `presence>C` join it answers.
    pub channel: String,
}

/// `{"event":"#kickOut","data":{"message":"…","channel":"C"}}`: the
/// server ended the subscription to C; the client marks it unsubscribed.
pub fn kick_out(channel: &str, message: &str) -> Utf8Bytes {
    #[derive(Serialize)]
    struct KickOut<'a> {
        message: &'a str,
        channel: &'a str,
    }
    #[derive(Serialize)]
    struct Event<'a> {
        event: &'static str,
        data: KickOut<'a>,
    }
    to_bytes(&Event {
        event: "#kickOut",
        data: KickOut { message, channel },
    })
}

/// The channel whose presence `name` carries, if it is a presence channel:
/// `presence>room` → `room`.
pub fn presence_target(name: &str) -> Option<&str> {
    name.strip_prefix(PRESENCE_PREFIX)
}

/// `room` → `presence>room`.
pub fn presence_channel(target: &str) -> String {
    format!("{PRESENCE_PREFIX}{target}")
}

/// A request id as the client sent it (`cid`), echoed verbatim as `rid`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cid(String);

impl Cid {
    /// A numeric cid (tests, server-built replies).
    pub fn num(n: u64) -> Self {
        Cid(n.to_string())
    }

    fn raw(&self) -> &RawValue {
        // The text came from a parsed JSON value (or a number), so it is
        // valid JSON; fall back to null rather than panic.
        serde_json::from_str(&self.0).unwrap_or_else(|_| null_raw())
    }
}

fn null_raw() -> &'static RawValue {
    // A literal that is valid JSON.
    serde_json::from_str("null").unwrap_or_else(|_| unreachable!("null is valid JSON"))
}

/// One decoded text frame.
#[derive(Debug)]
pub enum Frame {
    /// `#2` (v1) or `""` (v2): the client's pong.
    Pong {
        /// True for `""`, the protocol v2 pong.
        v2: bool,
    },
    /// One packet or a batch.
    Packets(Vec<Packet>),
    /// Anything else (not JSON, a JSON scalar, `#1`): SocketCluster emits it
    /// as a `raw` event and the protocol ignores it.
    Raw,
}

/// One packet of a frame.
#[derive(Clone, Debug)]
pub enum Packet {
    /// An event (request if it has a cid).
    Event {
        /// The event name.
        event: String,
        /// The payload, None when absent.
        data: Option<Box<RawValue>>,
        /// The request id, if a response is wanted.
        cid: Option<Cid>,
    },
    /// A response to a server request (rollcall sends none with a cid).
    Response,
    /// A packet that is neither: e.g. `{"event":42}`.
    Invalid {
        /// The cid, if one could be read.
        cid: Option<Cid>,
        /// What is wrong.
        why: String,
    },
}

#[derive(serde::Deserialize)]
struct RawPacket<'a> {
    #[serde(default, borrow)]
    event: Option<&'a RawValue>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default, borrow)]
    cid: Option<&'a RawValue>,
    #[serde(default, borrow)]
    rid: Option<&'a RawValue>,
}

fn cid_of(raw: Option<&RawValue>) -> Option<Cid> {
    raw.filter(|r| r.get() != "null")
        .map(|r| Cid(r.get().to_string()))
}

fn packet(raw: &RawValue) -> Packet {
    let Ok(p) = serde_json::from_str::<RawPacket<'_>>(raw.get()) else {
        return Packet::Invalid {
            cid: None,
            why: "a packet must be a JSON object like {\"event\":\"#subscribe\",\"data\":{\"channel\":\"c\"},\"cid\":2}".into(),
        };
    };
    let cid = cid_of(p.cid);
    match p.event {
        Some(e) if e.get() != "null" => match serde_json::from_str::<String>(e.get()) {
            Ok(event) => Packet::Event {
                event,
                data: p.data.filter(|d| d.get() != "null"),
                cid,
            },
            Err(_) => Packet::Invalid {
                cid,
                why: format!("\"event\" must be a string, got {}", e.get()),
            },
        },
        _ if p.rid.is_some_and(|r| r.get() != "null") => Packet::Response,
        _ => Packet::Invalid {
            cid,
            why: "the packet has neither \"event\" nor \"rid\"".into(),
        },
    }
}

/// Decodes one text frame as sc-formatter does: `#1`/`#2` as is, text
/// starting with `{` or `[` as JSON (a batch for an array), anything else
/// as raw text.
pub fn decode(text: &str) -> Frame {
    match text {
        PONG_V1 => return Frame::Pong { v2: false },
        "" => return Frame::Pong { v2: true },
        _ => {}
    }
    let trimmed = text.trim_start_matches([' ', '\n', '\r', '\t']);
    if trimmed.starts_with('[') {
        match serde_json::from_str::<Vec<&RawValue>>(text) {
            Ok(items) => Frame::Packets(items.into_iter().map(packet).collect()),
            Err(_) => Frame::Raw,
        }
    } else if trimmed.starts_with('{') {
        match serde_json::from_str::<&RawValue>(text) {
            Ok(raw) => Frame::Packets(vec![packet(raw)]),
            Err(_) => Frame::Raw,
        }
    } else {
        Frame::Raw
    }
}

/// A token argument (`#handshake` `data.authToken`, `#authenticate` data).
#[derive(Debug, PartialEq, Eq)]
pub enum TokenArg {
    /// None or null: no token.
    Absent,
    /// A string token.
    Token(String),
    /// Something else, e.g. a number.
    NotAString,
}

fn token_arg(v: Option<&Value>) -> TokenArg {
    match v {
        None | Some(Value::Null) => TokenArg::Absent,
        Some(Value::String(s)) => TokenArg::Token(s.clone()),
        Some(_) => TokenArg::NotAString,
    }
}

/// A client request, decoded from an event name and its data.
#[derive(Debug)]
pub enum Request {
    /// `#handshake`.
    Handshake {
        /// `data.authToken`.
        token: TokenArg,
    },
    /// `#subscribe` (data `{"channel":…}` or the bare channel name).
    Subscribe {
        /// The channel.
        channel: String,
    },
    /// `#unsubscribe` (data: the channel name).
    Unsubscribe {
        /// The channel.
        channel: String,
    },
    /// `#publish` (data `{"channel":…,"data":…}`).
    Publish {
        /// The channel.
        channel: String,
        /// The message, None when absent.
        data: Option<Box<RawValue>>,
    },
    /// `#authenticate` (data: the signed token).
    Authenticate {
        /// The token.
        token: TokenArg,
    },
    /// `#removeAuthToken`: log out.
    RemoveAuthToken,
    /// `#disconnect` (data `{"code":…,"data":…}`).
    Disconnect {
        /// The close code the client asks for.
        code: Option<u16>,
    },
    /// Any other event: a custom event (RPC), for which rollcall has no
    /// handler.
    Other {
        /// The event name.
        event: String,
        /// Its data (null when absent).
        data: Value,
    },
}

impl Request {
    /// Decodes `event` with its `data`; a malformed payload is the error
    /// to send back.
    pub fn parse(event: &str, data: Option<&RawValue>) -> Result<Request, ScError> {
        let value = || -> Result<Option<Value>, ScError> {
            data.map(|d| serde_json::from_str::<Value>(d.get()))
                .transpose()
                .map_err(|e| ScError::invalid_message(format!("data of {event} is not JSON ({e})")))
        };
        let channel_of = |v: Option<&Value>, what: &str| -> Result<String, ScError> {
            match v {
                Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                other => Err(ScError::broker(format!(
                    "Failed to {what} the {} channel - the channel name must be a non-empty string",
                    other
                        .map(Value::to_string)
                        .unwrap_or_else(|| "undefined".into())
                ))),
            }
        };
        Ok(match event {
            "#handshake" => {
                let v = value()?;
                Request::Handshake {
                    token: token_arg(v.as_ref().and_then(|v| v.get("authToken"))),
                }
            }
            "#subscribe" => {
                let v = value()?;
                let channel = match &v {
                    Some(Value::Object(map)) => map.get("channel"),
                    other => other.as_ref(),
                };
                Request::Subscribe {
                    channel: channel_of(channel, "subscribe socket to")?,
                }
            }
            "#unsubscribe" => Request::Unsubscribe {
                channel: channel_of(value()?.as_ref(), "unsubscribe socket from")?,
            },
            "#publish" => {
                #[derive(serde::Deserialize)]
                struct PublishData {
                    #[serde(default)]
                    channel: Option<Value>,
                    #[serde(default)]
                    data: Option<Box<RawValue>>,
                }
                let parsed: PublishData = match data {
                    Some(d) => serde_json::from_str(d.get()).map_err(|_| {
                        ScError::broker(format!(
                            "{event} needs data like {{\"channel\":\"c\",\"data\":…}}, got {}",
                            d.get()
                        ))
                    })?,
                    None => PublishData {
                        channel: None,
                        data: None,
                    },
                };
                let channel = match parsed.channel {
                    Some(Value::String(s)) if !s.is_empty() => s,
                    other => {
                        return Err(ScError::broker(format!(
                            "Socket tried to publish to an invalid {} channel; data.channel must be a non-empty string",
                            other
                                .map(|v| v.to_string())
                                .unwrap_or_else(|| "undefined".into())
                        )));
                    }
                };
                Request::Publish {
                    channel,
                    data: parsed.data,
                }
            }
            "#authenticate" => Request::Authenticate {
                token: token_arg(value()?.as_ref()),
            },
            "#removeAuthToken" => Request::RemoveAuthToken,
            "#disconnect" => {
                let v = value()?;
                let code = v
                    .as_ref()
                    .and_then(|v| v.get("code"))
                    .and_then(Value::as_u64)
                    .and_then(|c| u16::try_from(c).ok());
                Request::Disconnect { code }
            }
            other => Request::Other {
                event: other.to_string(),
                data: value()?.unwrap_or(Value::Null),
            },
        })
    }
}

/// A dehydrated SocketCluster error (`sc-errors`): `{"message","name"[,"expiry"]}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ScError {
    /// What went wrong and what to do.
    pub message: String,
    /// The error class, e.g. `AuthTokenInvalidError`.
    pub name: &'static str,
    /// For `AuthTokenExpiredError`: when the token expired (ISO 8601).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiry: Option<String>,
}

impl ScError {
    /// A `BrokerError` (failed subscribe, unsubscribe or publish).
    pub fn broker(message: impl Into<String>) -> Self {
        ScError {
            message: message.into(),
            name: "BrokerError",
            expiry: None,
        }
    }

    /// A `ForbiddenError`: the channel policy refused (the message names
    /// the missing grant or rule).
    pub fn forbidden(message: impl Into<String>) -> Self {
        ScError {
            message: message.into(),
            name: "ForbiddenError",
            expiry: None,
        }
    }

    /// An `InvalidArgumentsError`: a channel name or message data no front
    /// end accepts.
    pub fn invalid_arguments(message: impl Into<String>) -> Self {
        ScError {
            message: message.into(),
            name: "InvalidArgumentsError",
            expiry: None,
        }
    }

    /// A `RateLimitError`: the request was dropped.
    pub fn rate_limited(message: impl Into<String>) -> Self {
        ScError {
            message: message.into(),
            name: "RateLimitError",
            expiry: None,
        }
    }

    /// An `InvalidMessageError` (malformed payload).
    pub fn invalid_message(message: impl Into<String>) -> Self {
        ScError {
            message: message.into(),
            name: "InvalidMessageError",
            expiry: None,
        }
    }

    /// An `InvalidActionError` (e.g. an event rollcall has no handler for).
    pub fn invalid_action(message: impl Into<String>) -> Self {
        ScError {
            message: message.into(),
            name: "InvalidActionError",
            expiry: None,
        }
    }

    /// The auth error for a rejected token, and whether the token is "bad"
    /// (the client must drop it: `#removeAuthToken`). A token that is not
    /// valid yet (`nbf`) is not bad (spec §3.3).
    pub fn from_auth(e: &AuthError) -> (ScError, bool) {
        let message = e.to_string();
        match e {
            AuthError::Expired { exp } => (
                ScError {
                    message,
                    name: "AuthTokenExpiredError",
                    expiry: Some(iso_millis(*exp)),
                },
                true,
            ),
            AuthError::NotYetValid { .. } => (
                ScError {
                    message,
                    name: "AuthTokenNotBeforeError",
                    expiry: None,
                },
                false,
            ),
            e if e.is_token_error() => (
                ScError {
                    message,
                    name: "AuthTokenInvalidError",
                    expiry: None,
                },
                true,
            ),
            _ => (
                ScError {
                    message,
                    name: "AuthTokenError",
                    expiry: None,
                },
                true,
            ),
        }
    }
}

/// A Unix time as a JS `Date` serializes: `2026-11-22T03:14:06.000Z`.
fn iso_millis(secs: u64) -> String {
    let s = crate::time::rfc3339_from_unix(secs);
    match s.strip_suffix('Z') {
        Some(base) => format!("{base}.000Z"),
        None => s,
    }
}

fn to_bytes(value: &impl Serialize) -> Utf8Bytes {
    // Serializing these plain structs cannot fail (string keys only).
    Utf8Bytes::from(serde_json::to_string(value).unwrap_or_default())
}

#[derive(Serialize)]
struct Reply<'a, D: Serialize> {
    rid: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a ScError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<D>,
}

/// `{"rid":N}`: a request succeeded.
pub fn ok(cid: &Cid) -> Utf8Bytes {
    to_bytes(&Reply::<()> {
        rid: cid.raw(),
        error: None,
        data: None,
    })
}

/// `{"rid":N,"error":{…}}`: a request failed.
pub fn error(cid: &Cid, err: &ScError) -> Utf8Bytes {
    to_bytes(&Reply::<()> {
        rid: cid.raw(),
        error: Some(err),
        data: None,
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HandshakeData<'a> {
    id: &'a str,
    ping_timeout: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_error: Option<&'a ScError>,
    is_authenticated: bool,
}

/// The `#handshake` reply (key order as v14):
/// `{"rid":1,"data":{"id":"…","pingTimeout":20000[,"authError":{…}],"isAuthenticated":true}}`.
pub fn handshake(
    cid: &Cid,
    id: &str,
    ping_timeout_ms: u64,
    auth_error: Option<&ScError>,
    is_authenticated: bool,
) -> Utf8Bytes {
    to_bytes(&Reply {
        rid: cid.raw(),
        error: None,
        data: Some(HandshakeData {
            id,
            ping_timeout: ping_timeout_ms,
            auth_error,
            is_authenticated,
        }),
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AuthStatus<'a> {
    is_authenticated: bool,
    auth_error: Option<&'a ScError>,
}

/// The `#authenticate` reply: `{"rid":N,"data":{"isAuthenticated":true,"authError":null}}`,
/// or for a bad token
/// `{"rid":N,"error":{…},"data":{"isAuthenticated":false,"authError":{…}}}`;
/// a token that is merely not valid yet gets no `error` (spec §3.6).
pub fn auth_status(cid: &Cid, auth_error: Option<&ScError>, bad: bool) -> Utf8Bytes {
    to_bytes(&Reply {
        rid: cid.raw(),
        error: auth_error.filter(|_| bad),
        data: Some(AuthStatus {
            is_authenticated: auth_error.is_none(),
            auth_error,
        }),
    })
}

/// `{"rid":N,"data":…}`: a request's answer.
pub fn reply_data(cid: &Cid, data: &Value) -> Utf8Bytes {
    to_bytes(&Reply {
        rid: cid.raw(),
        error: None,
        data: Some(data),
    })
}

/// `{"event":"#setAuthToken","data":{"token":…}}`: the client stores the
/// token (and sends it on its next handshake).
pub fn set_auth_token(token: &str) -> Utf8Bytes {
    to_bytes(&serde_json::json!({"event": "#setAuthToken", "data": {"token": token}}))
}

/// `{"event":"#removeAuthToken","data":null}`: the client must drop its token.
pub fn remove_auth_token() -> Utf8Bytes {
    Utf8Bytes::from_static(r##"{"event":"#removeAuthToken","data":null}"##)
}

/// `{"event":"#disconnect","data":{"code":4005}}`, sent (v1) before a
/// deliberate close.
pub fn disconnect(code: u16) -> Utf8Bytes {
    Utf8Bytes::from(format!(
        r##"{{"event":"#disconnect","data":{{"code":{code}}}}}"##
    ))
}

#[derive(Serialize)]
struct PublishFrame<'a> {
    event: &'static str,
    data: PublishBody<'a>,
}

#[derive(Serialize)]
struct PublishBody<'a> {
    channel: &'a str,
    data: &'a RawValue,
}

/// `{"event":"#publish","data":{"channel":"…","data":…}}`: a message on a
/// channel (`null` data when there is none).
pub fn publish(channel: &str, data: Option<&RawValue>) -> Utf8Bytes {
    to_bytes(&PublishFrame {
        event: "#publish",
        data: PublishBody {
            channel,
            data: data.unwrap_or_else(|| null_raw()),
        },
    })
}

/// sc-stateless-presence packets (the `data` of a `#publish` on
/// `presence>C`), exact key order of spec §2.2.
pub mod packet {
    use serde::Serialize;

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Join<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        username: Option<&'a str>,
        timeout: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        socket_id: Option<&'a str>,
    }

    /// `{"type":"join","timeout":13000,"socketId":"…"}` (anonymous) or
    /// `{"type":"join","username":"alice","timeout":13000[,"socketId":"…"]}`.
    pub fn join(username: Option<&str>, timeout_ms: u64, socket_id: Option<&str>) -> String {
        serde_json::to_string(&Join {
            kind: "join",
            username,
            timeout: timeout_ms,
            socket_id,
        })
        .unwrap_or_default()
    }

    #[derive(Serialize)]
    struct Ping<'a, I: Serialize> {
        #[serde(rename = "type")]
        kind: &'static str,
        timeout: u64,
        users: &'a I,
    }

    /// `{"type":"ping","timeout":13000,"users":["alice","bob"]}`.
    pub fn ping(timeout_ms: u64, users: &[&str]) -> String {
        serde_json::to_string(&Ping {
            kind: "ping",
            timeout: timeout_ms,
            users: &users,
        })
        .unwrap_or_default()
    }

    #[derive(Serialize)]
    struct Leave<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        username: &'a str,
    }

    #[derive(Serialize)]
    struct Pong<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        channel: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        username: Option<&'a str>,
        timeout: u64,
    }

    /// `{"type":"pong","channel":"sample","username":"alice","timeout":13000}`.
    pub fn pong(channel: &str, username: Option<&str>, timeout_ms: u64) -> String {
        serde_json::to_string(&Pong {
            kind: "pong",
            channel,
            username,
            timeout: timeout_ms,
        })
        .unwrap_or_default()
    }

    /// `{"type":"leave","username":"bob"}`.
    pub fn leave(username: &str) -> String {
        serde_json::to_string(&Leave {
            kind: "leave",
            username,
        })
        .unwrap_or_default()
    }
}

/// Renders core events for SocketCluster connections. One instance is
/// shared by every SC connection (it carries the presence timeout), so a
/// broadcast is encoded once.
///
/// * a channel message on C → `{"event":"#publish","data":{"channel":"C","data":…}}`;
/// * a member added to C (only subscriptions that track `presence>C` get
///   member events) → a user join on `presence>C`:
///   `{"event":"#publish","data":{"channel":"presence>C","data":{"type":"join","username":"alice","timeout":13000}}}`;
/// * a member removed (the user's last presence left) → a leave on `presence>C`;
/// * a direct message → a custom event `{"event":"<event>","data":…}`.
#[derive(Debug)]
pub struct ScCodec {
    /// The `timeout` of join and ping packets, in ms.
    pub presence_timeout_ms: u64,
}

impl Codec for ScCodec {
    fn encode(&self, event: &Event<'_>, _flavor: u8) -> Option<Outbound> {
        let frame = match event {
            Event::Message(m) => publish(&m.channel, m.data.as_deref()),
            Event::Member {
                change,
                channel,
                member,
                ..
            } => {
                let packet = match change {
                    MemberChange::Added => {
                        packet::join(Some(member.user_id), self.presence_timeout_ms, None)
                    }
                    MemberChange::Removed => packet::leave(member.user_id),
                    MemberChange::Updated | MemberChange::Unchanged => return None,
                };
                let raw = RawValue::from_string(packet).ok()?;
                publish(&presence_channel(channel), Some(&raw))
            }
            Event::Direct(d) => {
                #[derive(Serialize)]
                struct Custom<'a> {
                    event: &'a str,
                    #[serde(skip_serializing_if = "Option::is_none")]
                    data: Option<&'a RawValue>,
                }
                to_bytes(&Custom {
                    event: &d.event,
                    data: d.data.as_deref(),
                })
            }
        };
        Some(Outbound::Text(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(b: Utf8Bytes) -> String {
        b.to_string()
    }

    fn one(frame: &str) -> (String, Option<String>, Option<Cid>) {
        match decode(frame) {
            Frame::Packets(mut p) if p.len() == 1 => match p.remove(0) {
                Packet::Event { event, data, cid } => {
                    (event, data.map(|d| d.get().to_string()), cid)
                }
                other => panic!("not an event: {other:?}"),
            },
            other => panic!("not one packet: {other:?}"),
        }
    }

    #[test]
    fn pings_pongs_and_raw_text() {
        assert!(matches!(decode("#2"), Frame::Pong { v2: false }));
        assert!(matches!(decode(""), Frame::Pong { v2: true }));
        assert!(matches!(decode("#1"), Frame::Raw));
        assert!(matches!(decode("hello"), Frame::Raw));
        assert!(matches!(decode("{not json"), Frame::Raw));
        assert!(matches!(decode("42"), Frame::Raw));
    }

    #[test]
    fn spec_handshakes_decode() {
        let (event, data, cid) =
            one(r##"{"event":"#handshake","data":{"authToken":null},"cid":1}"##);
        assert_eq!(event, "#handshake");
        assert_eq!(cid, Some(Cid::num(1)));
        let req =
            Request::parse(&event, RawValue::from_string(data.unwrap()).ok().as_deref()).unwrap();
        assert!(matches!(
            req,
            Request::Handshake {
                token: TokenArg::Absent
            }
        ));
        let (event, data, _) =
            one(r##"{"event":"#handshake","data":{"authToken":"eyJ.a.b"},"cid":1}"##);
        let raw = RawValue::from_string(data.unwrap()).unwrap();
        match Request::parse(&event, Some(&raw)).unwrap() {
            Request::Handshake { token } => assert_eq!(token, TokenArg::Token("eyJ.a.b".into())),
            other => panic!("{other:?}"),
        }
    }

    fn parse(frame: &str) -> Result<Request, ScError> {
        let (event, data, _) = one(frame);
        let raw = data.map(|d| RawValue::from_string(d).unwrap());
        Request::parse(&event, raw.as_deref())
    }

    #[test]
    fn spec_requests_decode() {
        assert!(matches!(
            parse(r##"{"event":"#subscribe","data":{"channel":"sample"},"cid":4}"##),
            Ok(Request::Subscribe { channel }) if channel == "sample"
        ));
        assert!(matches!(
            parse(r##"{"event":"#subscribe","data":{"channel":"w","waitForAuth":true,"data":{"x":1}},"cid":7}"##),
            Ok(Request::Subscribe { channel }) if channel == "w"
        ));
        assert!(matches!(
            parse(r##"{"event":"#subscribe","data":"sample","cid":4}"##),
            Ok(Request::Subscribe { channel }) if channel == "sample"
        ));
        assert!(matches!(
            parse(r##"{"event":"#unsubscribe","data":"sample"}"##),
            Ok(Request::Unsubscribe { channel }) if channel == "sample"
        ));
        match parse(
            r##"{"event":"#publish","data":{"channel":"presence>socket/s-xBZOWfsEYJ2YPYAAAB","data":{"type":"pong","channel":"sample","username":"alice","timeout":2600}}}"##,
        ) {
            Ok(Request::Publish { channel, data }) => {
                assert_eq!(channel, "presence>socket/s-xBZOWfsEYJ2YPYAAAB");
                assert_eq!(
                    data.unwrap().get(),
                    r##"{"type":"pong","channel":"sample","username":"alice","timeout":2600}"##
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(r##"{"event":"#authenticate","data":"eyJhbGciOiJIUzI1NiJ9.e30.x","cid":5}"##),
            Ok(Request::Authenticate {
                token: TokenArg::Token(_)
            })
        ));
        assert!(matches!(
            parse(r##"{"event":"#removeAuthToken"}"##),
            Ok(Request::RemoveAuthToken)
        ));
        assert!(matches!(
            parse(r##"{"event":"#disconnect","data":{"code":1000,"data":"done"}}"##),
            Ok(Request::Disconnect { code: Some(1000) })
        ));
        assert!(matches!(
            parse(r##"{"event":"echo","data":{"a":1},"cid":5}"##),
            Ok(Request::Other { event, data }) if event == "echo" && data["a"] == 1
        ));
    }

    #[test]
    fn wrong_types_are_errors() {
        let e = parse(r##"{"event":"#subscribe","data":{"channel":42},"cid":2}"##).unwrap_err();
        assert_eq!(e.name, "BrokerError");
        assert!(e.message.contains("42"), "{}", e.message);
        let e =
            parse(r##"{"event":"#publish","data":{"channel":42,"data":1},"cid":6}"##).unwrap_err();
        assert_eq!(e.name, "BrokerError");
        assert!(e.message.contains("invalid 42 channel"), "{}", e.message);
        assert!(parse(r##"{"event":"#unsubscribe","data":null,"cid":3}"##).is_err());
        assert!(matches!(
            parse(r##"{"event":"#authenticate","data":7,"cid":3}"##),
            Ok(Request::Authenticate {
                token: TokenArg::NotAString
            })
        ));
        match decode(r##"{"event":42,"cid":9}"##) {
            Frame::Packets(p) => {
                assert!(matches!(&p[0], Packet::Invalid { cid: Some(c), .. } if *c == Cid::num(9)))
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(decode(r##"{"rid":1,"data":"hi back"}"##), Frame::Packets(p) if matches!(p[0], Packet::Response))
        );
    }

    #[test]
    fn batches_are_arrays_of_packets() {
        match decode(
            r##"[{"event":"#subscribe","data":{"channel":"a"},"cid":2},{"event":"#subscribe","data":{"channel":"b"},"cid":3}]"##,
        ) {
            Frame::Packets(p) => assert_eq!(p.len(), 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn spec_replies_encode() {
        assert_eq!(text(ok(&Cid::num(4))), r##"{"rid":4}"##);
        assert_eq!(
            text(handshake(
                &Cid::num(1),
                "aPB2iPYt_0Z_VlDrAAAA",
                20000,
                None,
                true
            )),
            r##"{"rid":1,"data":{"id":"aPB2iPYt_0Z_VlDrAAAA","pingTimeout":20000,"isAuthenticated":true}}"##
        );
        let bad = ScError {
            message: "invalid signature".into(),
            name: "AuthTokenInvalidError",
            expiry: None,
        };
        assert_eq!(
            text(handshake(
                &Cid::num(1),
                "4rLwYyY11jj3wTPIAAAC",
                20000,
                Some(&bad),
                false
            )),
            r##"{"rid":1,"data":{"id":"4rLwYyY11jj3wTPIAAAC","pingTimeout":20000,"authError":{"message":"invalid signature","name":"AuthTokenInvalidError"},"isAuthenticated":false}}"##
        );
        assert_eq!(
            text(auth_status(&Cid::num(5), None, false)),
            r##"{"rid":5,"data":{"isAuthenticated":true,"authError":null}}"##
        );
        let malformed = ScError {
            message: "jwt malformed".into(),
            name: "AuthTokenInvalidError",
            expiry: None,
        };
        assert_eq!(
            text(auth_status(&Cid::num(2), Some(&malformed), true)),
            r##"{"rid":2,"error":{"message":"jwt malformed","name":"AuthTokenInvalidError"},"data":{"isAuthenticated":false,"authError":{"message":"jwt malformed","name":"AuthTokenInvalidError"}}}"##
        );
        assert_eq!(
            text(remove_auth_token()),
            r##"{"event":"#removeAuthToken","data":null}"##
        );
        assert_eq!(
            text(disconnect(4005)),
            r##"{"event":"#disconnect","data":{"code":4005}}"##
        );
        assert_eq!(
            text(error(&Cid::num(6), &ScError::broker("nope"))),
            r##"{"rid":6,"error":{"message":"nope","name":"BrokerError"}}"##
        );
    }

    #[test]
    fn expired_tokens_carry_the_expiry_as_a_js_date() {
        let (e, bad) = ScError::from_auth(&AuthError::Expired { exp: 1_795_317_347 });
        assert!(bad);
        assert_eq!(e.name, "AuthTokenExpiredError");
        assert_eq!(e.expiry.as_deref(), Some("2026-11-22T03:15:47.000Z"));
        let (e, bad) = ScError::from_auth(&AuthError::NotYetValid { nbf: 1 });
        assert!(!bad);
        assert_eq!(e.name, "AuthTokenNotBeforeError");
    }

    #[test]
    fn spec_presence_packets_encode() {
        assert_eq!(
            packet::join(None, 13000, Some("aPB2iPYt_0Z_VlDrAAAA")),
            r##"{"type":"join","timeout":13000,"socketId":"aPB2iPYt_0Z_VlDrAAAA"}"##
        );
        assert_eq!(
            packet::join(Some("alice"), 13000, Some("aPB2iPYt_0Z_VlDrAAAA")),
            r##"{"type":"join","username":"alice","timeout":13000,"socketId":"aPB2iPYt_0Z_VlDrAAAA"}"##
        );
        assert_eq!(
            packet::ping(13000, &["alice", "bob"]),
            r##"{"type":"ping","timeout":13000,"users":["alice","bob"]}"##
        );
        assert_eq!(
            packet::leave("bob"),
            r##"{"type":"leave","username":"bob"}"##
        );
        let raw = RawValue::from_string(packet::ping(2600, &["alice", "bob"])).unwrap();
        assert_eq!(
            text(publish("presence>sample", Some(&raw))),
            r##"{"event":"#publish","data":{"channel":"presence>sample","data":{"type":"ping","timeout":2600,"users":["alice","bob"]}}}"##
        );
        assert_eq!(
            text(publish("sample", None)),
            r##"{"event":"#publish","data":{"channel":"sample","data":null}}"##
        );
    }

    #[test]
    fn presence_channel_names_are_anchored() {
        assert_eq!(presence_target("presence>sample"), Some("sample"));
        assert_eq!(presence_target("presence>socket/abc"), Some("socket/abc"));
        assert_eq!(presence_target("foo-presence>bar"), None);
        assert_eq!(presence_channel("sample"), "presence>sample");
    }
}
