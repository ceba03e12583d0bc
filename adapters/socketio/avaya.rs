//! The Avaya Spaces events of one Socket.IO socket (one namespace of one
//! client): subscribe, unsubscribe, messages, media-session and presence
//! events, each checked by the channel policy and answered through the
//! core connection's outbox, so the client sees replies and channel events
//! in one order.
//!
//! `engine.rs` drives it, whichever transport the client is on. Each
//! handler takes the core connection it acts for.

use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::SocketIoConfig;
use super::auth::User;
use super::wire::{self, Framing, PresenceAction, WireError, codes};
use crate::channel_map::ChannelMap;
use crate::ids;
use crate::outbox::{Order, Utf8Bytes};
use crate::policy::{BackendRequest, Refusal};
use crate::presence::{
    ChannelMessage, Connection, MemberChange, MessageSender, SubscribeError, SubscribeOptions,
    SubscriptionUpdate, UpdateSubscriptionError,
};
use crate::services::rpc::{Rpc, RpcAnswer, RpcCall};

/// An event put aside until the channel check answers its question.
pub struct Held {
    /// What the channel check is asked.
    pub question: Box<BackendRequest>,
    /// The event, handled again once it answered.
    pub event: String,
    /// Its payload.
    pub payload: Value,
}

/// Per-channel state of this socket.
#[derive(Debug)]
struct Sub {
    /// True while the user is a party (member) of the channel: from
    /// SUBSCRIBE_CHANNEL until `party.leaves`.
    party: bool,
    /// The presence content last sent with `party.online`.
    content: Option<Value>,
    /// When the socket subscribed, RFC 3339 (`subscribeTime`).
    since: String,
}

/// The Avaya state of one socket.
#[derive(Debug)]
pub struct Avaya {
    user: User,
    /// The socket id, sent as `sessionId`.
    sid: String,
    /// How this socket's frames are laid out (and the codec flavor of its
    /// subscriptions).
    framing: Framing,
    subs: Mutex<ChannelMap<Sub>>,
    config: Arc<SocketIoConfig>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Avaya {
    /// The state of a socket of `user` on core connection `conn`, whose
    /// frames are laid out as `framing` says.
    pub fn new(
        conn: &Connection,
        user: User,
        sid: String,
        framing: Framing,
        config: Arc<SocketIoConfig>,
    ) -> Self {
        // Direct messages (not tied to a subscription) in this layout too.
        conn.set_flavor(framing.flavor());
        Avaya {
            user,
            sid,
            framing,
            subs: Mutex::new(ChannelMap::default()),
            config,
        }
    }

    /// How this socket's frames are laid out.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// The socket id (`sessionId`).
    pub fn session_id(&self) -> &str {
        &self.sid
    }

    /// The user, for the socket's next namespace connect.
    pub fn into_user(self) -> User {
        self.user
    }

    /// Queues `frame` (`["EVENT",payload]`) for this socket only.
    pub fn reply(&self, conn: &Connection, frame: Utf8Bytes) {
        conn.send_text(self.framing.frame(frame));
    }

    /// Tells the client an event over the rate of `limit` per second was
    /// dropped.
    pub fn rate_limited(&self, conn: &Connection, limit: u32) {
        self.config.counters.rate_limited.inc();
        self.reply(
            conn,
            wire::error(&WireError::new(
                codes::RATE_LIMITED,
                format!("more than {limit} events per second; this event was dropped, slow down"),
            )),
        );
    }

    /// The backend that answers `event` as a call (`--rpc-url`), if any.
    pub fn rpc_for(&self, event: &str) -> Option<Arc<Rpc>> {
        self.config.rpc.clone().filter(|r| r.answers(event))
    }

    /// Handles an event now; Some when the channel check must answer
    /// first (the event is handed back with the question).
    pub fn try_handle(&self, conn: &Connection, event: String, payload: Value) -> Option<Held> {
        let may_ask = matches!(
            event.as_str(),
            wire::client::SUBSCRIBE_CHANNEL
                | wire::client::SEND_MESSAGE
                | wire::client::SEND_MEDIA_SESSION_EVENTS
        ) && conn.presence().policy().backend().is_some();
        let copy = may_ask.then(|| payload.clone());
        let question = self.dispatch(conn, &event, payload, false)?;
        copy.map(|payload| Held {
            question,
            event,
            payload,
        })
    }

    /// The member data: at subscribe (`announced` None) the same for every
    /// socket of the user; after this socket's `party.online`, with its
    /// session id and subscribe time.
    fn member_info(&self, content: Option<&Value>, announced: Option<&str>) -> Arc<Value> {
        let party = announced.map(|since| wire::Party {
            session_id: &self.sid,
            subscribe_time: since,
        });
        Arc::new(wire::member_info(
            &self.user.profile,
            content,
            party.as_ref(),
        ))
    }

    /// Dispatches one client event; Some(question) when the backend check
    /// must answer first (`last_try`: it just did, refuse instead).
    pub fn dispatch(
        &self,
        conn: &Connection,
        event: &str,
        payload: Value,
        last_try: bool,
    ) -> Option<Box<BackendRequest>> {
        match event {
            wire::client::SUBSCRIBE_CHANNEL => return self.subscribe(conn, &payload, last_try),
            wire::client::SEND_MESSAGE => {
                return self.send_message(conn, payload, last_try, wire::Relay::Message);
            }
            wire::client::SEND_MEDIA_SESSION_EVENTS => {
                return self.send_message(conn, payload, last_try, wire::Relay::MediaSession);
            }
            wire::client::UNSUBSCRIBE_CHANNEL => self.unsubscribe(conn, &payload),
            wire::client::SEND_PRESENCE_EVENT => self.presence(conn, &payload),
            other => self.reply(conn, wire::error(&WireError::new(
                codes::UNKNOWN_EVENT,
                format!(
                    "unknown event {other:?}; this server handles SUBSCRIBE_CHANNEL, UNSUBSCRIBE_CHANNEL, SEND_MESSAGE, SEND_PRESENCE_EVENT and SEND_MEDIA_SESSION_EVENTS"
                ),
            ))),
        }
        None
    }

    /// Confirms a presence event (`category`) to this socket only, when
    /// it changed nothing the others see.
    fn confirm(&self, conn: &Connection, category: &str, channel: &str, info: &Value) {
        let view = crate::presence::MemberView {
            user_id: &self.user.user_id,
            info,
        };
        self.reply(conn, wire::presence_event(category, channel, view, None));
    }

    fn subscribe(
        &self,
        conn: &Connection,
        payload: &Value,
        last_try: bool,
    ) -> Option<Box<BackendRequest>> {
        let channel = match wire::decode_channel(payload) {
            Ok(c) => c,
            Err(e) => {
                self.reply(conn, wire::subscribe_failed(payload.get("channel"), &e));
                return None;
            }
        };
        let original = payload.get("channel");
        let password = match wire::decode_password(payload) {
            Ok(p) => p,
            Err(e) => {
                self.reply(conn, wire::subscribe_failed(original, &e));
                return None;
            }
        };
        if conn.is_subscribed(&channel.id) {
            // Idempotent: a repeated subscribe gets the same answer.
            self.reply(
                conn,
                wire::channel_subscribed(&channel, &conn.id().to_string(), &self.sid),
            );
            return None;
        }
        let since = crate::time::rfc3339(std::time::SystemTime::now());
        // `"announce": false` watches the topic without being a party
        // until the socket sends its own `party.online`.
        let announce = payload.get("announce").and_then(Value::as_bool) != Some(false);
        let opts = SubscribeOptions {
            member_info: announce.then(|| self.member_info(None, None)),
            password,
            presence_events: true,
            receive_messages: true,
            flavor: self.framing.flavor(),
            ..SubscribeOptions::default()
        };
        let result = conn.presence().subscribe(conn, &channel.id, opts, |_| {
            self.reply(
                conn,
                wire::channel_subscribed(&channel, &conn.id().to_string(), &self.sid),
            );
        });
        let err = match result {
            Ok(_) => {
                lock(&self.subs).insert(
                    channel.id.clone(),
                    Sub {
                        party: announce,
                        content: None,
                        since,
                    },
                );
                return None;
            }
            Err(SubscribeError::Closed) => return None,
            Err(SubscribeError::Refused(refusal)) => match refused(refusal, last_try) {
                Ok(req) => return Some(req),
                Err(err) => err,
            },
            Err(SubscribeError::InvalidChannel(why)) => {
                WireError::new(codes::INVALID_PARAMETERS, why)
            }
            Err(e @ SubscribeError::RateLimited { .. }) => {
                WireError::new(codes::RATE_LIMITED, e.to_string())
            }
            Err(e) => WireError::new(codes::LIMIT_REACHED, e.to_string()),
        };
        self.reply(conn, wire::subscribe_failed(original, &err));
        None
    }

    fn unsubscribe(&self, conn: &Connection, payload: &Value) {
        let channel = match wire::decode_channel(payload) {
            Ok(c) => c,
            Err(e) => return self.reply(conn, wire::error(&e)),
        };
        let left = conn.presence().unsubscribe(conn, &channel.id, |_| {
            self.reply(conn, wire::channel_unsubscribed(&channel));
        });
        lock(&self.subs).remove(&channel.id);
        if !left {
            self.reply(
                conn,
                wire::error(&not_subscribed(&channel.id, "unsubscribe from")),
            );
        }
    }

    /// Carries out the server's order (see [`Order`]).
    pub fn obey(&self, conn: &Connection, order: Order) {
        match order {
            Order::LeaveChannel { channel, reason } => {
                if lock(&self.subs).remove(&channel).is_none() {
                    return;
                }
                conn.presence().unsubscribe(conn, &channel, |_| {
                    self.reply(conn, wire::channel_removed(&channel, &reason));
                });
            }
        }
    }

    /// SEND_MESSAGE and SEND_MEDIA_SESSION_EVENTS: checked like any client
    /// publish, then relayed to the channel (`relay` says which frames).
    fn send_message(
        &self,
        conn: &Connection,
        payload: Value,
        last_try: bool,
        relay: wire::Relay,
    ) -> Option<Box<BackendRequest>> {
        let topic_hint = payload
            .get("topicId")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let msg = match wire::decode_send_message(payload) {
            Ok(m) => m,
            Err(e) => {
                self.reply(conn, relay.failed(topic_hint.as_deref(), &e));
                return None;
            }
        };
        if !conn.is_subscribed(&msg.topic_id) {
            let err = not_subscribed(&msg.topic_id, "send messages to");
            self.reply(conn, relay.failed(Some(&msg.topic_id), &err));
            return None;
        }
        // Asked before anything is sent, so a refused message reaches
        // nobody, the sender's own copy included.
        let presence = conn.presence();
        let event = relay.core_event(&msg.category);
        let grant = match presence.check_publish(conn, &msg.topic_id, &event, None) {
            Ok(grant) => grant,
            Err(refusal) => {
                return match refused(refusal, last_try) {
                    Ok(req) => Some(req),
                    Err(err) => {
                        self.reply(conn, relay.failed(Some(&msg.topic_id), &err));
                        None
                    }
                };
            }
        };
        let id = ids::ulid();
        let sender = wire::sender_json(Some(&self.user.user_id), &self.user.profile);
        let created = crate::time::rfc3339(std::time::SystemTime::now());
        let payload = wire::message_payload(&id, &msg, &sender, &created, None);
        // The message as delivered, envelope included: every front end's
        // client messages share one size and depth limit.
        if let Err(why) = crate::names::check_message_data(&payload) {
            let err = WireError::new(codes::TOO_LARGE, why);
            self.reply(conn, relay.failed(Some(&msg.topic_id), &err));
            return None;
        }
        if payload.len() > self.config.max_payload_bytes {
            let err = WireError::new(
                codes::TOO_LARGE,
                format!(
                    "the message is {} bytes, more than the {} allowed; send a smaller message",
                    payload.len(),
                    self.config.max_payload_bytes
                ),
            );
            self.reply(conn, relay.failed(Some(&msg.topic_id), &err));
            return None;
        }
        let Ok(data) = serde_json::value::RawValue::from_string(payload.clone()) else {
            return None;
        };
        let echo = msg.loopback.is_none();
        // A message only for the backend reaches no subscriber: the
        // sender still gets its MESSAGE_SENT here.
        let backend_only = grant.forward == crate::policy::Forward::Only;
        if !echo || backend_only {
            // The sender's own copy carries its loopbackMetadata.
            let own = wire::message_payload(&id, &msg, &sender, &created, msg.loopback.as_ref());
            self.reply(conn, relay.sent(&own));
        }
        let core_msg = ChannelMessage {
            id,
            channel: Arc::from(msg.topic_id.as_str()),
            event,
            data: Some(data),
            sender: Some(MessageSender {
                conn: conn.id(),
                user_id: Some(self.user.user_id.clone()),
                info: conn.info(),
                echo,
            }),
        };
        // Already checked above (with this protocol's own echo rule).
        presence.publish_granted(conn, &core_msg, grant.forward);
        None
    }

    fn presence(&self, conn: &Connection, payload: &Value) {
        let topic_hint = payload
            .get("topicId")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let ev = match wire::decode_presence(payload) {
            Ok(ev) => ev,
            Err(e) => return self.reply(conn, wire::presence_failed(topic_hint.as_deref(), &e)),
        };
        if let Some(content) = &ev.content {
            let size = serde_json::to_string(content).map(|s| s.len()).unwrap_or(0);
            if size > self.config.max_payload_bytes {
                let err = WireError::new(
                    codes::TOO_LARGE,
                    format!(
                        "the presence content is {size} bytes, more than the {} allowed",
                        self.config.max_payload_bytes
                    ),
                );
                return self.reply(conn, wire::presence_failed(Some(&ev.topic_id), &err));
            }
        }
        let channel = ev.topic_id.as_str();
        let mut subs = lock(&self.subs);
        let Some(sub) = subs
            .get_mut(channel)
            .filter(|_| conn.is_subscribed(channel))
        else {
            let err = not_subscribed(channel, "send presence events to");
            self.reply(conn, wire::presence_failed(Some(channel), &err));
            return;
        };
        let presence = conn.presence();
        match ev.action {
            PresenceAction::RequestParties => {
                // The server answers for every party, whatever front end
                // it joined through; under the channel lock, so the
                // answer is in order with the channel's member events.
                let me = &*self.user.user_id;
                if !presence.members_shown(channel) {
                    // The channel's rule hides its member list.
                    return;
                }
                // Addressed to this socket only: `receivers` says so.
                let receivers = Value::Array(vec![wire::sender_json(Some(me), &self.user.profile)]);
                presence.with_members(channel, |members| {
                    for m in members.iter().filter(|m| m.user_id != me) {
                        self.reply(
                            conn,
                            wire::presence_event(
                                wire::category::PARTY_ONLINE,
                                channel,
                                m,
                                Some(&receivers),
                            ),
                        );
                    }
                });
            }
            PresenceAction::Online => {
                if ev.content.is_some() {
                    sub.content = ev.content.clone();
                }
                let info = self.member_info(sub.content.as_ref(), Some(&sub.since));
                let update = SubscriptionUpdate {
                    member: Some((self.user.user_id.clone(), info.clone())),
                    presence_events: true,
                    receive_messages: true,
                };
                match presence.update_subscription(conn, channel, update) {
                    Ok(MemberChange::Unchanged) => {
                        // Nothing changed for others; confirm to the sender.
                        self.confirm(conn, wire::category::PARTY_ONLINE, channel, &info);
                        sub.party = true;
                    }
                    Ok(_) => sub.party = true,
                    Err(e) => {
                        sub.party = false;
                        let err = update_error(&e);
                        self.reply(conn, wire::presence_failed(Some(channel), &err));
                    }
                }
            }
            PresenceAction::Leaves => {
                if !sub.party {
                    return;
                }
                let update = SubscriptionUpdate {
                    member: None,
                    presence_events: true,
                    receive_messages: true,
                };
                match presence.update_subscription(conn, channel, update) {
                    Ok(MemberChange::Removed) => sub.party = false,
                    Ok(_) => {
                        // Another socket of the same user keeps the user
                        // present; confirm to the sender only.
                        sub.party = false;
                        let info = self.member_info(sub.content.as_ref(), Some(&sub.since));
                        self.confirm(conn, wire::category::PARTY_LEAVES, channel, &info);
                    }
                    Err(e) => {
                        let err = update_error(&e);
                        self.reply(conn, wire::presence_failed(Some(channel), &err));
                    }
                }
            }
        }
    }
}

/// The backend's answer to a call, as the client's acknowledgment gets
/// it: `{"data": …}` or `{"error": {"code", "message"}}`.
pub async fn rpc_answer(rpc: &Rpc, call: &RpcCall) -> Value {
    match rpc.call(call).await {
        // Socket.IO has no server-set token: the client gets it to
        // reconnect with.
        RpcAnswer::Data {
            data,
            auth_token: Some(token),
        } => serde_json::json!({ "data": data, "auth_token": token }),
        RpcAnswer::Data { data, .. } => serde_json::json!({ "data": data }),
        RpcAnswer::Error(why) => serde_json::json!({
            "error": {"code": codes::BACKEND_ERROR, "message": why}
        }),
    }
}

fn not_subscribed(channel: &str, what: &str) -> WireError {
    WireError::new(
        codes::SUBSCRIPTION_REQUIRED,
        format!("subscribe to {channel:?} (SUBSCRIBE_CHANNEL) before you {what} it"),
    )
}

fn update_error(e: &UpdateSubscriptionError) -> WireError {
    match e {
        UpdateSubscriptionError::NotSubscribed => {
            WireError::new(codes::SUBSCRIPTION_REQUIRED, e.to_string())
        }
        _ => WireError::new(codes::LIMIT_REACHED, e.to_string()),
    }
}

/// A policy refusal as this protocol's error, or the question to ask the
/// backend check (unless it was just asked: then the refusal says so).
fn refused(refusal: Refusal, last_try: bool) -> Result<Box<BackendRequest>, WireError> {
    match refusal {
        Refusal::Undecided(req) if !last_try => Ok(req),
        Refusal::Undecided(req) => Err(WireError::new(
            codes::FORBIDDEN,
            format!(
                "the channel check's answer about {} could not be used; try again",
                req.channel
            ),
        )),
        Refusal::Denied(why) => Err(WireError::new(codes::FORBIDDEN, why)),
        Refusal::Invalid(why) => Err(WireError::new(codes::INVALID_PARAMETERS, why)),
    }
}
