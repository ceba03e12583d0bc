//! One Socket.IO socket (one namespace of one client): its core connection,
//! the Avaya event handlers, and the pump that emits the connection's
//! outbox on the socketioxide socket.
//!
//! Every frame for the client, replies included, goes through the core
//! outbox, so the client sees replies and channel events in one order.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use socketioxide::extract::{AckSender, SocketRef};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::SocketIoConfig;
use super::auth::User;
use super::wire::{self, PresenceAction, WireError, codes};
use crate::ids;
use crate::outbox::{Order, Outbound, OutboxReceiver};
use crate::policy::{BackendRequest, Refusal};
use crate::presence::{
    ChannelMessage, Connection, MemberChange, MessageSender, SubscribeError, SubscribeOptions,
    SubscriptionUpdate, UpdateSubscriptionError,
};
use crate::services::rpc::{RpcAnswer, RpcCall};
use crate::shutdown::Shutdown;

/// Events that may wait behind one that waits for the channel check.
const MAX_WAITING_EVENTS: usize = 256;

/// An event put aside until the channel check answers its question.
struct Held {
    question: Box<BackendRequest>,
    event: String,
    payload: Value,
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

/// Counts events in one-second windows.
#[derive(Debug)]
struct RateWindow {
    start: Instant,
    count: u32,
}

/// The state of one socket, shared by its event handlers and its pump.
#[derive(Debug)]
pub struct Session {
    /// The core connection; None once the socket is gone.
    conn: Mutex<Option<Connection>>,
    /// The outbox receiver until the pump takes it.
    outbox_rx: Mutex<Option<OutboxReceiver>>,
    user: User,
    /// The socket id, sent as `sessionId`.
    sid: String,
    /// The core connection id, sent as `dtsid`.
    dtsid: String,
    subs: Mutex<HashMap<String, Sub>>,
    /// Events that arrived while an earlier one waits for the channel
    /// check (None: nothing waits, events are handled as they come).
    waiting: Mutex<Option<VecDeque<(String, Value)>>>,
    rate: Mutex<RateWindow>,
    config: Arc<SocketIoConfig>,
    gone: Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Session {
    /// A session for an authenticated socket.
    pub fn new(
        conn: Connection,
        outbox_rx: OutboxReceiver,
        user: User,
        sid: String,
        config: Arc<SocketIoConfig>,
    ) -> Self {
        let dtsid = conn.id().to_string();
        Session {
            conn: Mutex::new(Some(conn)),
            outbox_rx: Mutex::new(Some(outbox_rx)),
            user,
            sid,
            dtsid,
            subs: Mutex::new(HashMap::new()),
            waiting: Mutex::new(None),
            rate: Mutex::new(RateWindow {
                start: Instant::now(),
                count: 0,
            }),
            config,
            gone: Notify::new(),
        }
    }

    /// Runs `f` with the core connection, unless the socket is gone.
    fn with_conn<R>(&self, f: impl FnOnce(&Connection) -> R) -> Option<R> {
        let guard = lock(&self.conn);
        guard.as_ref().map(f)
    }

    fn send(&self, frame: crate::outbox::Utf8Bytes) {
        self.with_conn(|c| c.send_text(frame));
    }

    /// The socket disconnected: leave every channel (others see
    /// `party.leaves` if this was the user's last socket there) and stop
    /// the pump.
    pub fn close(&self) {
        let conn = lock(&self.conn).take();
        drop(conn);
        lock(&self.subs).clear();
        self.gone.notify_one();
    }

    /// True if the event is within the rate limit; otherwise sends an
    /// `error` and returns false.
    fn admit(&self) -> bool {
        let limit = self.config.max_events_per_second;
        let mut rate = lock(&self.rate);
        let now = Instant::now();
        if now.duration_since(rate.start) >= Duration::from_secs(1) {
            rate.start = now;
            rate.count = 0;
        }
        rate.count += 1;
        if rate.count > limit {
            drop(rate);
            self.config.counters.rate_limited.inc();
            self.send(wire::error(&WireError::new(
                codes::RATE_LIMITED,
                format!("more than {limit} events per second; this event was dropped, slow down"),
            )));
            return false;
        }
        true
    }

    /// Handles one client event, in arrival order: at once (socketioxide
    /// calls this synchronously, packet after packet), or, while an
    /// earlier event waits for the channel check, after it. Over the event
    /// rate, or with too many events waiting, it is refused.
    pub fn on_event(self: &Arc<Self>, event: String, payload: Value) {
        if !self.admit() {
            return;
        }
        let mut waiting = lock(&self.waiting);
        if let Some(queue) = waiting.as_mut() {
            if queue.len() >= MAX_WAITING_EVENTS {
                drop(waiting);
                self.send(wire::error(&WireError::new(
                    codes::RATE_LIMITED,
                    format!(
                        "more than {MAX_WAITING_EVENTS} events are waiting for a channel check; this event was dropped, slow down"
                    ),
                )));
                return;
            }
            queue.push_back((event, payload));
            return;
        }
        if let Some(held) = self.try_handle(event, payload) {
            *waiting = Some(VecDeque::new());
            drop(waiting);
            tokio::spawn(self.clone().resume(held));
        }
    }

    /// Any event that is not Avaya's: with `--rpc-url`, a call the backend
    /// answers; its answer goes to the client's acknowledgment callback as
    /// `{"data": …}` or `{"error": {"code", "message"}}` (without a
    /// callback, the answer is dropped). Without a backend, the unknown
    /// event's `error`.
    pub fn on_call(self: &Arc<Self>, event: String, payload: Value, ack: AckSender) {
        let Some(rpc) = self.config.rpc.clone().filter(|r| r.answers(&event)) else {
            return self.on_event(event, payload);
        };
        if !self.admit() {
            return;
        }
        let Some(call) = self.with_conn(|c| RpcCall::new(event, payload, c)) else {
            return;
        };
        tokio::spawn(async move {
            let answer = match rpc.call(&call).await {
                // Socket.IO has no server-set token: the client gets it
                // to reconnect with.
                RpcAnswer::Data {
                    data,
                    auth_token: Some(token),
                } => serde_json::json!({ "data": data, "auth_token": token }),
                RpcAnswer::Data { data, .. } => serde_json::json!({ "data": data }),
                RpcAnswer::Error(why) => serde_json::json!({
                    "error": {"code": codes::BACKEND_ERROR, "message": why}
                }),
            };
            let _ = ack.send(&answer);
        });
    }

    /// Handles an event now; Some when the channel check must answer
    /// first (the event is handed back with the question).
    fn try_handle(&self, event: String, payload: Value) -> Option<Held> {
        let may_ask = matches!(
            event.as_str(),
            wire::client::SUBSCRIBE_CHANNEL
                | wire::client::SEND_MESSAGE
                | wire::client::SEND_MEDIA_SESSION_EVENTS
        ) && self
            .with_conn(|c| c.presence().policy().backend().is_some())
            .unwrap_or(false);
        let copy = may_ask.then(|| payload.clone());
        let question = self.dispatch(&event, payload, false)?;
        copy.map(|payload| Held {
            question,
            event,
            payload,
        })
    }

    /// Asks the channel check, handles the held event again, then the
    /// events that arrived meanwhile, in order (pausing again if one of
    /// them needs the check too).
    async fn resume(self: Arc<Self>, first: Held) {
        let mut held = first;
        loop {
            let Some(pending) = self.with_conn(|c| c.presence().consult(*held.question)) else {
                *lock(&self.waiting) = None;
                return;
            };
            pending.await;
            self.dispatch(&held.event, held.payload, true);
            loop {
                let next = {
                    let mut waiting = lock(&self.waiting);
                    match waiting.as_mut().and_then(VecDeque::pop_front) {
                        Some(next) => next,
                        None => {
                            *waiting = None;
                            return;
                        }
                    }
                };
                if let Some(again) = self.try_handle(next.0, next.1) {
                    held = again;
                    break;
                }
            }
        }
    }

    /// Dispatches one client event; Some(question) when the backend check
    /// must answer first (`last_try`: it just did, refuse instead).
    fn dispatch(&self, event: &str, payload: Value, last_try: bool) -> Option<Box<BackendRequest>> {
        match event {
            wire::client::SUBSCRIBE_CHANNEL => return self.subscribe(&payload, last_try),
            wire::client::SEND_MESSAGE => {
                return self.send_message(payload, last_try, wire::Relay::Message);
            }
            wire::client::SEND_MEDIA_SESSION_EVENTS => {
                return self.send_message(payload, last_try, wire::Relay::MediaSession);
            }
            wire::client::UNSUBSCRIBE_CHANNEL => self.unsubscribe(&payload),
            wire::client::SEND_PRESENCE_EVENT => self.presence(&payload),
            other => self.send(wire::error(&WireError::new(
                codes::UNKNOWN_EVENT,
                format!(
                    "unknown event {other:?}; this server handles SUBSCRIBE_CHANNEL, UNSUBSCRIBE_CHANNEL, SEND_MESSAGE, SEND_PRESENCE_EVENT and SEND_MEDIA_SESSION_EVENTS"
                ),
            ))),
        }
        None
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

    fn subscribe(&self, payload: &Value, last_try: bool) -> Option<Box<BackendRequest>> {
        let channel = match wire::decode_channel(payload) {
            Ok(c) => c,
            Err(e) => {
                self.send(wire::subscribe_failed(payload.get("channel"), &e));
                return None;
            }
        };
        let original = payload.get("channel");
        let password = match wire::decode_password(payload) {
            Ok(p) => p,
            Err(e) => {
                self.send(wire::subscribe_failed(original, &e));
                return None;
            }
        };
        self.with_conn(|conn| {
            if conn.is_subscribed(&channel.id) {
                // Idempotent: a repeated subscribe gets the same answer.
                conn.send_text(wire::channel_subscribed(&channel, &self.dtsid, &self.sid));
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
                ..SubscribeOptions::default()
            };
            let result = conn.presence().subscribe(conn, &channel.id, opts, |_| {
                conn.send_text(wire::channel_subscribed(&channel, &self.dtsid, &self.sid));
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
            conn.send_text(wire::subscribe_failed(original, &err));
            None
        })
        .flatten()
    }

    fn unsubscribe(&self, payload: &Value) {
        let channel = match wire::decode_channel(payload) {
            Ok(c) => c,
            Err(e) => return self.send(wire::error(&e)),
        };
        self.with_conn(|conn| {
            let left = conn.presence().unsubscribe(conn, &channel.id, |_| {
                conn.send_text(wire::channel_unsubscribed(&channel));
            });
            lock(&self.subs).remove(&channel.id);
            if !left {
                conn.send_text(wire::error(&not_subscribed(
                    &channel.id,
                    "unsubscribe from",
                )));
            }
        });
    }

    /// Carries out the server's order (see [`Order`]).
    fn obey(&self, order: Order) {
        match order {
            Order::LeaveChannel { channel, reason } => {
                if lock(&self.subs).remove(&*channel).is_none() {
                    return;
                }
                self.with_conn(|conn| {
                    conn.presence().unsubscribe(conn, &channel, |_| {
                        conn.send_text(wire::channel_removed(&channel, &reason));
                    });
                });
            }
        }
    }

    /// SEND_MESSAGE and SEND_MEDIA_SESSION_EVENTS: checked like any client
    /// publish, then relayed to the channel (`relay` says which frames).
    fn send_message(
        &self,
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
                self.send(relay.failed(topic_hint.as_deref(), &e));
                return None;
            }
        };
        self.with_conn(|conn| {
            if !conn.is_subscribed(&msg.topic_id) {
                let err = not_subscribed(&msg.topic_id, "send messages to");
                conn.send_text(relay.failed(Some(&msg.topic_id), &err));
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
                            conn.send_text(relay.failed(Some(&msg.topic_id), &err));
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
                conn.send_text(relay.failed(Some(&msg.topic_id), &err));
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
                conn.send_text(relay.failed(Some(&msg.topic_id), &err));
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
                let own =
                    wire::message_payload(&id, &msg, &sender, &created, msg.loopback.as_ref());
                conn.send_text(relay.sent(&own));
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
        })
        .flatten()
    }

    fn presence(&self, payload: &Value) {
        let topic_hint = payload
            .get("topicId")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let ev = match wire::decode_presence(payload) {
            Ok(ev) => ev,
            Err(e) => return self.send(wire::presence_failed(topic_hint.as_deref(), &e)),
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
                return self.send(wire::presence_failed(Some(&ev.topic_id), &err));
            }
        }
        self.with_conn(|conn| {
            let channel = ev.topic_id.as_str();
            let mut subs = lock(&self.subs);
            let Some(sub) = subs
                .get_mut(channel)
                .filter(|_| conn.is_subscribed(channel))
            else {
                let err = not_subscribed(channel, "send presence events to");
                conn.send_text(wire::presence_failed(Some(channel), &err));
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
                    let receivers =
                        Value::Array(vec![wire::sender_json(Some(me), &self.user.profile)]);
                    presence.with_members(channel, |members| {
                        for m in members.iter().filter(|m| m.user_id != me) {
                            conn.send_text(wire::presence_event(
                                wire::category::PARTY_ONLINE,
                                channel,
                                m,
                                Some(&receivers),
                            ));
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
                            let view = crate::presence::MemberView {
                                user_id: &self.user.user_id,
                                info: &info,
                            };
                            conn.send_text(wire::presence_event(
                                wire::category::PARTY_ONLINE,
                                channel,
                                view,
                                None,
                            ));
                            sub.party = true;
                        }
                        Ok(_) => sub.party = true,
                        Err(e) => {
                            sub.party = false;
                            let err = update_error(&e);
                            conn.send_text(wire::presence_failed(Some(channel), &err));
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
                            let view = crate::presence::MemberView {
                                user_id: &self.user.user_id,
                                info: &info,
                            };
                            conn.send_text(wire::presence_event(
                                wire::category::PARTY_LEAVES,
                                channel,
                                view,
                                None,
                            ));
                        }
                        Err(e) => {
                            let err = update_error(&e);
                            conn.send_text(wire::presence_failed(Some(channel), &err));
                        }
                    }
                }
            }
        });
    }

    /// Emits the connection's outbox on the socket until the socket goes
    /// away, the core closes the connection (slow consumer, shutdown) or
    /// the server shuts down. `_pumping` is held until the goodbye is sent.
    pub async fn pump(
        self: Arc<Self>,
        socket: SocketRef,
        mut shutdown: Shutdown,
        _pumping: Shutdown,
    ) {
        let Some(mut rx) = lock(&self.outbox_rx).take() else {
            return;
        };
        let Some(outbox) = self.with_conn(|c| c.outbox_handle()) else {
            return;
        };
        let reason = {
            // Created once, and polled only when they were woken: a
            // `Notified` locks its `Notify` whenever it is polled, and made
            // anew per item it also did so when dropped; the pump wakes
            // for every delivery (`perf`: 8 % of the server's CPU in the
            // steady fan-out benchmark).
            use crate::woken::on_wake;
            let ordered = on_wake(outbox.ordered());
            tokio::pin!(ordered);
            let closed = on_wake(outbox.closed());
            tokio::pin!(closed);
            let gone = on_wake(self.gone.notified());
            tokio::pin!(gone);
            let stopping = on_wake(shutdown.wait());
            tokio::pin!(stopping);
            // Nothing was queued when the last item had been emitted.
            let mut was_idle = true;
            loop {
                tokio::select! {
                    _ = &mut ordered => {
                        ordered.set(on_wake(outbox.ordered()));
                        for order in outbox.take_orders() {
                            self.obey(order);
                        }
                    }
                    item = rx.recv() => {
                        let Some(item) = item else { break None };
                        if was_idle {
                            // --write-delay: broadcasts queued meanwhile are
                            // emitted right after this one, and socketioxide's
                            // writer sends them all at once. A reply ends the
                            // wait; a close waits at most this long.
                            rx.hold_for_more(self.config.write_delay).await;
                        }
                        let ok = tokio::select! {
                            ok = self.emit(&socket, &item) => ok,
                            // The core gave up on a client that fell behind
                            // (--outbox-bytes): stop waiting for it at once.
                            _ = &mut closed => false,
                        };
                        outbox.sent(&item);
                        was_idle = outbox.queued_bytes() == 0;
                        if ok {
                            // Handed to socketioxide, which writes it next.
                            self.config.counters.bytes_sent.inc_by(item.payload_len());
                            if let Some(queued) = rx.take_sample() {
                                self.config.counters.delivery.observe(queued.elapsed().as_secs_f64());
                            }
                        }
                        if !ok {
                            // A close decided meanwhile wins (first reason).
                            outbox.close(crate::outbox::CloseReason::new(
                                crate::outbox::CLOSE_SLOW_CONSUMER,
                                format!(
                                    "the client did not read its events within {:?}; reconnect",
                                    self.config.write_timeout
                                ),
                            ));
                            break outbox.close_reason().map(|r| r.reason.to_string());
                        }
                    }
                    _ = &mut closed => {
                        // Flush what was queued before the close.
                        while let Some(item) = rx.try_recv() {
                            let _ = self.emit(&socket, &item).await;
                            outbox.sent(&item);
                        }
                        break Some(outbox
                            .close_reason()
                            .map(|r| r.reason.to_string())
                            .unwrap_or_else(|| "closed by the server".into()));
                    }
                    _ = &mut gone => break None,
                    _ = &mut stopping => break Some("server shutting down".into()),
                }
            }
        };
        if let Some(metrics) = &self.config.metrics {
            // The socket went by itself: a normal close (1000).
            let code = match &reason {
                None => crate::transport::close::NORMAL,
                Some(_) => outbox
                    .close_reason()
                    .map_or(crate::transport::close::GOING_AWAY, |r| r.code),
            };
            metrics.live().closed(super::PROTOCOL, code);
        }
        if let Some(why) = reason {
            let err = WireError::new(codes::CLOSING, why);
            if let Some((event, payload)) = wire::split_event(&wire::error(&err)) {
                let _ = socket.emit(event, &payload);
            }
            // A client the server is going away from (a drain) must see
            // its transport close and reconnect elsewhere: a namespace
            // DISCONNECT would tell it not to. A WebSocket client's stream
            // is cut alone (`sever.rs`); the others' Engine.IO connections
            // close with all the rest at shutdown, once every pump is done
            // (see `routes`).
            let going_away = outbox
                .close_reason()
                .is_some_and(|r| r.code == crate::transport::close::GOING_AWAY);
            match socket.req_parts().extensions.get::<super::sever::Sever>() {
                Some(sever) if going_away && !shutdown.is_shutting_down() => sever.cut(),
                _ if !shutdown.is_shutting_down() => {
                    let _ = socket.disconnect();
                }
                _ => {}
            }
            self.close();
        }
    }

    /// The front end's metrics.
    pub fn counters(&self) -> &crate::metrics::ProtocolCounters {
        &self.config.counters
    }

    /// Emits one outbox item. Waits (up to the write timeout) while the
    /// socket's own buffer is full; false if it stayed full.
    async fn emit(&self, socket: &SocketRef, item: &Outbound) -> bool {
        let Outbound::Text(bytes) = item else {
            return true;
        };
        let Some(split) = wire::split_shared(bytes) else {
            tracing::warn!("socket.io outbox item is not [event, payload]; dropped");
            return true;
        };
        let (event, payload) = &*split;
        let deadline = Instant::now() + self.config.write_timeout;
        loop {
            match socket.emit(event, payload) {
                Ok(()) => return true,
                Err(socketioxide::SendError::Socket(
                    socketioxide::SocketError::InternalChannelFull,
                )) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                // Closed socket or an encoding problem: nothing to retry.
                Err(_) => return true,
            }
        }
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
