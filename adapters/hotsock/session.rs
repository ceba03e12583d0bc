//! One Hotsock connection: decode a frame, call the core, queue the reply;
//! plus the heartbeat, keep-alive and lifetime timers.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::HotsockSettings;
use super::wire::{self, ClientFrame, Meta, WireError, codes};
use crate::auth::{ChannelRules, HotsockClaims, JwtVerifier, Scope, SingleUseGuard};
use crate::ids;
use crate::outbox::CloseReason;
use crate::policy::{BackendRequest, Refusal};
use crate::presence::{
    ChannelMessage, Connection, MessageSender, SubscribeError, SubscribeOptions, UpdateError,
};
use crate::services::rpc::{CallSlot, Rpc, RpcAnswer, RpcCall};
use crate::transport::{Flow, Session, close};

/// Channels whose name starts with this prefix track presence.
pub const PRESENCE_PREFIX: &str = "presence.";

/// What a subscription was made with.
struct Subscription {
    /// Rules of the subscribe token, if one was used (they add to the
    /// connect token's rules for this channel).
    token_rules: Option<Arc<ChannelRules>>,
    /// The user this subscription is (subscribe-token uid wins).
    uid: Option<Arc<str>>,
    /// The member data this subscription shows (subscribe-token umd wins).
    umd: Arc<Value>,
    /// The alias the client used, echoed back in `meta.channelAlias`.
    alias: Option<String>,
}

/// The session's subscriptions by channel name.
type Subscriptions = crate::channel_map::ChannelMap<Subscription>;

/// A Hotsock session.
pub struct HotsockSession {
    conn: Connection,
    /// The connection's user id (fixed for Hotsock: it comes from the
    /// connect token).
    uid: Option<Arc<str>>,
    /// The connect token's `channels` grants. Only these and the heartbeat
    /// timeout outlive the connect: the token's `umd` lives in the core
    /// connection (a JSON object is a 640-byte B-tree node; it was kept
    /// twice), its uid in `uid`.
    channels: Arc<ChannelRules>,
    /// The token's `heartbeatTimeout`, in seconds.
    heartbeat_timeout: Option<u64>,
    verifier: JwtVerifier,
    single_use: Arc<SingleUseGuard>,
    config: Arc<HotsockSettings>,
    subs: Subscriptions,
    expires_at: Instant,
    /// A frame waiting for the channel check's answer.
    replay: Option<Box<str>>,
    /// The backend that answers `rollcall.call` (`--rpc-url`).
    rpc: Option<Arc<Rpc>>,
    /// The call the frame in `replay` started (boxed: most connections
    /// never call).
    call: Option<Box<CallSlot>>,
    heartbeat_deadline: Option<Instant>,
    next_keep_alive: Option<Instant>,
}

impl HotsockSession {
    /// A session for a connection accepted with `claims` (a verified
    /// connect token).
    pub fn new(
        conn: Connection,
        claims: HotsockClaims,
        verifier: JwtVerifier,
        single_use: Arc<SingleUseGuard>,
        config: Arc<HotsockSettings>,
        rpc: Option<Arc<Rpc>>,
    ) -> Self {
        let now = Instant::now();
        let heartbeat_deadline = claims
            .heartbeat_timeout
            .map(|secs| now + Duration::from_secs(secs));
        let next_keep_alive = claims.keep_alive.then(|| now + config.keep_alive_interval);
        HotsockSession {
            uid: conn.user_id(),
            conn,
            channels: claims.channels,
            heartbeat_timeout: claims.heartbeat_timeout,
            verifier,
            single_use,
            expires_at: now + config.connection_lifetime,
            config,
            subs: Subscriptions::default(),
            replay: None,
            rpc,
            call: None,
            heartbeat_deadline,
            next_keep_alive,
        }
    }

    /// Sends `hotsock.connected`, then subscribes the autoSubscribe channels.
    pub fn open(&mut self, connection_secret: &str) {
        let expires = std::time::SystemTime::now() + self.config.connection_lifetime;
        let info = self.conn.info();
        let frame = wire::connected(
            &self.conn.id().to_string(),
            &crate::time::rfc3339(expires),
            connection_secret,
            Meta {
                uid: self.meta_uid(),
                umd: &info,
            },
        );
        self.conn.send_text(frame);
        for channel in self.channels.auto_subscribe_channels() {
            // Granted by the token's own autoSubscribe key: nothing to ask.
            let _ = self.subscribe(&channel, None, true);
        }
    }

    fn send_error(&self, err: WireError) {
        self.conn.send_text(wire::error(&err));
    }

    /// Sends the error; nothing is left to ask.
    fn refuse(&self, err: WireError) -> Option<Box<BackendRequest>> {
        self.send_error(err);
        None
    }

    fn meta_uid(&self) -> Option<&str> {
        self.uid.as_deref()
    }

    /// Resolves an alias from the connect token to the real channel name.
    fn resolve(&self, name: &str) -> (String, Option<String>) {
        match self.channels.alias_for(name) {
            Some(real) if real != name => (real, Some(name.to_string())),
            _ => (name.to_string(), None),
        }
    }

    /// Handles one frame; Some(question) when the backend check must
    /// answer before it can be handled.
    fn handle(&mut self, frame: ClientFrame) -> Option<Box<BackendRequest>> {
        match frame {
            ClientFrame::Subscribe { channel, token } => {
                return self.subscribe(&channel, token, false);
            }
            ClientFrame::Message {
                channel,
                event,
                data,
            } => return self.client_message(&channel, event, data),
            ClientFrame::Unsubscribe { channel } => self.unsubscribe(&channel),
            ClientFrame::Ping => {
                self.conn.send_text(wire::pong());
            }
            ClientFrame::Pong => {}
            ClientFrame::Heartbeat => {
                if let Some(secs) = self.heartbeat_timeout {
                    self.heartbeat_deadline = Some(Instant::now() + Duration::from_secs(secs));
                }
            }
            ClientFrame::UmdUpdate { channel, token } => self.umd_update(channel, &token),
            ClientFrame::Call { id, name, args } => self.call(id, name, args),
        }
        None
    }

    /// `rollcall.call`: the first time through, starts the backend call
    /// (the frame is replayed once it is answered); then sends the answer.
    fn call(&mut self, id: Value, name: String, args: Value) {
        let Some(rpc) = self.rpc.clone().filter(|r| r.answers(&name)) else {
            let why = match self.rpc {
                None => "no backend answers calls here (--rpc-url)".to_string(),
                Some(_) => {
                    format!("{name:?} is not one of the calls the backend answers (--rpc-events)")
                }
            };
            self.conn.send_text(wire::call_answer(&id, Err(why)));
            return;
        };
        let answered = self.call.as_mut().and_then(|c| c.take_answer());
        if let Some(answer) = answered {
            self.call = None;
            let answer = match answer {
                RpcAnswer::Data { data, auth_token } => Ok((data, auth_token)),
                RpcAnswer::Error(why) => Err(why),
            };
            self.conn.send_text(wire::call_answer(&id, answer));
            return;
        }
        let call = RpcCall::new(name, args, &self.conn);
        self.call.get_or_insert_default().start(rpc, call);
    }

    /// Verifies a subscribe or umd token for this connection: signature,
    /// scope, binding to this connection's id or uid, and single use.
    fn scoped_token(
        &self,
        token: &str,
        scope: Scope,
        code: &'static str,
        channel: Option<&str>,
    ) -> Result<HotsockClaims, WireError> {
        let conn_id = self.conn.id().to_string();
        self.verifier
            .verify_hotsock(token)
            .and_then(|claims| {
                claims.ensure_usable_on(scope, &conn_id, self.meta_uid())?;
                self.single_use.check(&claims)?;
                Ok(claims)
            })
            .map_err(|e| WireError::new(code, channel, format!("{scope} token rejected: {e}")))
    }

    /// Subscribes; Some(question) when the backend check must answer first.
    fn subscribe(
        &mut self,
        name: &str,
        token: Option<String>,
        auto: bool,
    ) -> Option<Box<BackendRequest>> {
        let (channel, alias) = self.resolve(name);
        if let Err(e) = wire::check_channel_name(&channel) {
            return self.refuse(e);
        }
        if self.subs.contains_key(&channel) {
            return self.refuse(WireError::new(
                codes::ALREADY_SUBSCRIBED,
                Some(&channel),
                format!("already subscribed to {channel}"),
            ));
        }
        let (token_rules, uid, umd) = match token {
            Some(token) => match self.scoped_token(
                &token,
                Scope::Subscribe,
                codes::INVALID_SUBSCRIBE_TOKEN,
                Some(&channel),
            ) {
                Ok(claims) => {
                    // The subscribe token's uid and umd win for this channel
                    // (spec §2.5); its uid is this connection's or the
                    // token is bound to this connection by connectionId.
                    let uid = match claims.uid.as_deref() {
                        Some(u) if !u.is_empty() => Some(Arc::from(u)),
                        _ => self.uid.clone(),
                    };
                    let umd = claims
                        .umd
                        .clone()
                        .map(Arc::new)
                        .unwrap_or_else(|| self.conn.info());
                    (Some(claims.channels), uid, umd)
                }
                Err(e) => return self.refuse(e),
            },
            None => (None, self.uid.clone(), self.conn.info()),
        };
        let is_presence = channel.starts_with(PRESENCE_PREFIX);
        if is_presence && uid.as_deref().is_none_or(str::is_empty) {
            return self.refuse(WireError::new(
                codes::PRESENCE_CHANNEL_USER_ID_REQUIRED,
                Some(&channel),
                "presence channels need a uid claim in the token",
            ));
        }
        let opts = SubscribeOptions {
            member_info: is_presence.then(|| umd.clone()),
            member_key: uid.clone().filter(|u| Some(u) != self.uid.as_ref()),
            presence_events: is_presence,
            grant: token_rules.clone(),
            automatic: auto,
            ..SubscribeOptions::default()
        };
        let conn = &self.conn;
        let meta_uid = uid.as_deref();
        let result = self
            .conn
            .presence()
            .subscribe(conn, &channel, opts, |snap| {
                let frame = wire::subscribed(
                    &channel,
                    is_presence.then_some(snap.members),
                    auto,
                    alias.as_deref(),
                    Meta {
                        uid: meta_uid,
                        umd: &umd,
                    },
                );
                conn.send_text(frame);
            });
        match result {
            Ok(_) => {
                self.subs.insert(
                    channel,
                    Subscription {
                        token_rules,
                        uid,
                        umd,
                        alias,
                    },
                );
            }
            Err(e) => {
                let code = match e {
                    SubscribeError::AlreadySubscribed => codes::ALREADY_SUBSCRIBED,
                    SubscribeError::CapacityReached { .. } => {
                        codes::PRESENCE_CHANNEL_CAPACITY_REACHED
                    }
                    SubscribeError::MemberLimitReached { .. } => {
                        codes::PRESENCE_CHANNEL_MEMBER_LIMIT_REACHED
                    }
                    SubscribeError::TooManyChannels { .. } => codes::CHANNEL_LIMIT_REACHED,
                    SubscribeError::Refused(Refusal::Undecided(req)) => return Some(req),
                    SubscribeError::Refused(Refusal::Denied(_)) => {
                        codes::SUBSCRIBE_PERMISSION_DENIED
                    }
                    SubscribeError::InvalidChannel(_) => codes::INVALID_CHANNEL_NAME,
                    SubscribeError::RateLimited { .. } => codes::RATE_LIMITED,
                    SubscribeError::Refused(Refusal::Invalid(_)) => codes::INVALID_MESSAGE,
                    SubscribeError::Closed => return None,
                };
                self.send_error(WireError::new(code, Some(&channel), e.to_string()));
            }
        }
        None
    }

    fn unsubscribe(&mut self, name: &str) {
        let (channel, alias) = self.resolve(name);
        if !self.subs.contains_key(&channel) {
            return self.send_error(WireError::new(
                codes::NOT_SUBSCRIBED,
                Some(&channel),
                format!("not subscribed to {channel}"),
            ));
        }
        self.end_subscription(&channel, alias, None);
    }

    /// Ends the subscription to `channel` in the core and answers
    /// `hotsock.unsubscribed` (with `removed`'s reason when the server
    /// ended it).
    fn end_subscription(&mut self, channel: &str, alias: Option<String>, removed: Option<&str>) {
        let Some(sub) = self.subs.remove(channel) else {
            return;
        };
        let conn = &self.conn;
        let alias = alias.or(sub.alias);
        conn.presence().unsubscribe(conn, channel, |_| {
            conn.send_text(wire::unsubscribed(
                channel,
                alias.as_deref(),
                Meta {
                    uid: sub.uid.as_deref(),
                    umd: &sub.umd,
                },
                removed,
            ));
        });
    }

    fn client_message(
        &mut self,
        name: &str,
        event: String,
        data: Option<Box<serde_json::value::RawValue>>,
    ) -> Option<Box<BackendRequest>> {
        let (channel, _) = self.resolve(name);
        let sub = self.subs.get(&channel);
        let (uid, umd) = match sub {
            Some(s) => (s.uid.clone(), s.umd.clone()),
            None => (self.uid.clone(), self.conn.info()),
        };
        let msg = ChannelMessage {
            id: ids::ulid(),
            channel: Arc::from(channel.as_str()),
            event,
            data,
            sender: Some(MessageSender {
                conn: self.conn.id(),
                user_id: uid,
                info: umd,
                // The grant's `echo` turns this on.
                echo: false,
            }),
        };
        let extra = sub.and_then(|s| s.token_rules.as_deref());
        match self.conn.presence().publish_from(&self.conn, msg, extra) {
            Ok(_) => None,
            Err(Refusal::Undecided(req)) => Some(req),
            Err(Refusal::Denied(why)) => self.refuse(WireError::new(
                codes::PUBLISH_PERMISSION_DENIED,
                Some(&channel),
                why,
            )),
            Err(Refusal::Invalid(why)) => {
                self.refuse(WireError::new(codes::INVALID_MESSAGE, Some(&channel), why))
            }
        }
    }

    /// `hotsock.umdUpdate` (spec §2.3, C8/C9).
    fn umd_update(&mut self, channel: Option<String>, token: &str) {
        let claims = match self.scoped_token(
            token,
            Scope::Umd,
            codes::INVALID_UMD_TOKEN,
            channel.as_deref(),
        ) {
            Ok(c) => c,
            Err(e) => return self.send_error(e),
        };
        let umd = Arc::new(claims.umd.clone().unwrap_or(Value::Null));
        match channel {
            Some(name) => {
                let (channel, _) = self.resolve(&name);
                if !claims.channels.can_update_umd(&channel) {
                    return self.send_error(WireError::new(
                        codes::UMD_UPDATE_PERMISSION_DENIED,
                        Some(&channel),
                        format!("the umd token does not grant umdUpdate on {channel}"),
                    ));
                }
                let Some(sub) = self.subs.get_mut(&channel) else {
                    return self.send_error(WireError::new(
                        codes::NOT_SUBSCRIBED,
                        Some(&channel),
                        format!("subscribe to {channel} before updating its umd"),
                    ));
                };
                sub.umd = umd.clone();
                if channel.starts_with(PRESENCE_PREFIX) {
                    let result = self
                        .conn
                        .presence()
                        .update_member(&self.conn, &channel, umd);
                    if let Err(e) = result {
                        let code = match e {
                            UpdateError::CapacityReached { .. } => {
                                codes::PRESENCE_CHANNEL_CAPACITY_REACHED
                            }
                            UpdateError::NotSubscribed => codes::NOT_SUBSCRIBED,
                        };
                        self.send_error(WireError::new(code, Some(&channel), e.to_string()));
                    }
                }
            }
            None => {
                if !claims.umd_update {
                    return self.send_error(WireError::new(
                        codes::UMD_UPDATE_PERMISSION_DENIED,
                        None,
                        "the umd token needs \"umdUpdate\": true for a connection-level update",
                    ));
                }
                if claims.umd_propagate {
                    for sub in self.subs.values_mut() {
                        sub.umd = umd.clone();
                    }
                }
                let failures =
                    self.conn
                        .presence()
                        .set_connection_info(&self.conn, umd, claims.umd_propagate);
                for (channel, e) in failures {
                    self.send_error(WireError::new(
                        codes::PRESENCE_CHANNEL_CAPACITY_REACHED,
                        Some(&channel),
                        e.to_string(),
                    ));
                }
            }
        }
    }
}

impl Session for HotsockSession {
    fn connection(&self) -> &Connection {
        &self.conn
    }

    fn on_text(&mut self, text: &str) -> Flow {
        let question = match wire::decode(text) {
            Ok(frame) => self.handle(frame),
            Err(e) => self.refuse(e),
        };
        // A backend call started: handled again once it is answered.
        if let Some(pending) = self.call.as_mut().and_then(|c| c.take_pending()) {
            self.replay = Some(text.into());
            return Flow::Wait(pending);
        }
        match question {
            // Handled again once the backend check has answered.
            Some(req) => {
                self.replay = Some(text.into());
                Flow::Wait(self.conn.presence().consult(*req))
            }
            None => Flow::Continue,
        }
    }

    fn on_resume(&mut self) -> Flow {
        match self.replay.take() {
            Some(text) => self.on_text(&text),
            None => Flow::Continue,
        }
    }

    fn on_binary(&mut self, _data: &[u8]) -> Flow {
        self.send_error(WireError::new(
            codes::INVALID_MESSAGE,
            None,
            "binary frames are not supported; send JSON in text frames",
        ));
        Flow::Continue
    }

    fn on_rate_limited(&mut self, limit: u32) -> Flow {
        self.send_error(WireError::new(
            codes::RATE_LIMITED,
            None,
            format!("more than {limit} messages per second; this frame was dropped, slow down"),
        ));
        Flow::Continue
    }

    fn on_removed(&mut self, channel: &str, reason: &str) -> Flow {
        self.end_subscription(channel, None, Some(reason));
        Flow::Continue
    }

    fn next_timer(&self) -> Option<Instant> {
        [
            Some(self.expires_at),
            self.heartbeat_deadline,
            self.next_keep_alive,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn on_timer(&mut self, now: Instant) -> Flow {
        if now >= self.expires_at {
            return Flow::Close(CloseReason::new(
                close::GOING_AWAY,
                "Going away: the connection reached its maximum lifetime; reconnect",
            ));
        }
        if let (Some(deadline), Some(secs)) = (self.heartbeat_deadline, self.heartbeat_timeout)
            && now >= deadline
        {
            return Flow::Close(CloseReason::new(
                close::GOING_AWAY,
                format!("no hotsock.heartbeat within {secs} s (heartbeatTimeout claim)"),
            ));
        }
        if let Some(next) = self.next_keep_alive
            && now >= next
        {
            self.conn.send_text(wire::keep_alive());
            self.next_keep_alive = Some(now + self.config.keep_alive_interval);
        }
        Flow::Continue
    }
}
