//! One SocketCluster connection: the handshake, ping/pong, pub/sub, auth
//! and the sc-stateless-presence rules, on top of the presence core.
//!
//! How SC channels map onto the core (one core subscription per
//! (connection, core channel)):
//!
//! * subscribing to `C` receives C's messages and, when authenticated with
//!   a `username`, makes that user a member of C;
//! * subscribing to `presence>C` receives the messages of channel
//!   `presence>C` (anonymous joins, pings, pongs) *and* C's member events,
//!   which [`super::wire::ScCodec`] renders as `join`/`leave` packets.
//!
//! So the core subscription of C says: receive messages = subscribed to C,
//! presence events = subscribed to `presence>C`, member = subscribed to C
//! and logged in. [`ScSession::sync`] applies that with
//! `Presence::update_subscription`, which also covers logging in, out and
//! switching user while subscribed. Leaves come from the core's member
//! events, so they fire only when a user's last socket leaves, and a socket
//! that goes away for any reason (close, kill, kick, failed re-auth) leaves
//! no ghost.

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::Value;
use serde_json::value::RawValue;
use tokio::time::Instant;

use super::ScShared;
use super::wire::{self, Cid, Frame, Packet, Request, SOCKET_INBOX, ScError, TokenArg};
use crate::channel_map::ChannelMap;
use crate::outbox::CloseReason;
use crate::policy::{Access, BackendRequest, Refusal};
use crate::presence::{
    ChannelMessage, Connection, MessageSender, Rights, SubscribeOptions, SubscriptionUpdate,
};
use crate::services::rpc::{CallSlot, RpcAnswer, RpcCall};
use crate::transport::{Flow, RateLimiter, Session, close};

/// Which ping dialect the client speaks, learned from its first pong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    /// Not known yet: both `#1` and `""` are sent (spec §3.4).
    Unknown,
    /// `#1` / `#2` (socketcluster-client ≤ 14).
    V1,
    /// `""` / `""` (socketcluster-client ≥ 15 with the default protocol).
    V2,
}

/// A verified auth token.
#[derive(Clone, Debug)]
struct Auth {
    /// The `username` claim, if it is a string.
    username: Option<Arc<str>>,
    /// The `exp` claim (seconds), re-checked on every inbound event.
    exp: Option<u64>,
    /// What the token grants (its `channels` claim).
    access: Access,
}

/// Where an SC channel name points, for the channel policy.
enum Target<'a> {
    /// This socket's own `presence>socket/<id>`: pongs addressed to it.
    OwnInbox,
    /// Another socket's `presence>socket/<id>`.
    OtherInbox,
    /// `presence>C`: the presence feed of C, read with the rights on C.
    PresenceOf(&'a str),
    /// An ordinary channel.
    Channel(&'a str),
}

/// A SocketCluster session.
pub struct ScSession {
    conn: Connection,
    shared: Arc<ScShared>,
    socket_id: Arc<str>,
    /// Some(deadline) until the handshake is answered.
    handshake_deadline: Option<Instant>,
    version: Version,
    auth: Option<Auth>,
    /// SC channel names this socket is subscribed to (a vector: most
    /// sockets have one or two, and a B-tree's first node is 280 bytes).
    subs: ChannelMap<()>,
    /// Packets put aside until the channel check answers (the first one
    /// asked the question).
    held: VecDeque<Packet>,
    /// The question the last packet left for the channel check.
    asking: Option<Box<BackendRequest>>,
    /// The backend call the last packet started (`--rpc-url`): reading
    /// waits for it, then the packet runs again and finds the answer.
    call: CallSlot,
    /// Requests per second: every packet of a batch counts, not the frame.
    requests: RateLimiter,
    requests_rate: u32,
    next_ping: Instant,
    pong_deadline: Instant,
}

impl ScSession {
    /// A session for a freshly upgraded socket (core connection anonymous
    /// until the handshake or `#authenticate` brings a token).
    pub fn new(conn: Connection, shared: Arc<ScShared>, requests_per_second: u32) -> Self {
        let now = Instant::now();
        let cfg = &shared.config;
        ScSession {
            conn,
            socket_id: Arc::from(crate::ids::secret(20)),
            handshake_deadline: Some(now + cfg.handshake_timeout),
            version: Version::Unknown,
            auth: None,
            subs: ChannelMap::default(),
            held: VecDeque::new(),
            asking: None,
            call: CallSlot::default(),
            requests: RateLimiter::new(requests_per_second),
            requests_rate: requests_per_second,
            next_ping: now + cfg.ping_interval,
            pong_deadline: now + cfg.ping_timeout,
            shared,
        }
    }

    fn send(&self, frame: impl Into<crate::outbox::Utf8Bytes>) {
        self.conn.send_text(frame);
    }

    fn reply_ok(&self, cid: Option<&Cid>) {
        if let Some(cid) = cid {
            self.send(wire::ok(cid));
        }
    }

    fn reply_error(&self, cid: Option<&Cid>, err: &ScError) {
        if let Some(cid) = cid {
            self.send(wire::error(cid, err));
        }
    }

    fn username(&self) -> Option<&Arc<str>> {
        self.auth.as_ref().and_then(|a| a.username.as_ref())
    }

    /// Publishes a server-made packet (a join) on a channel, as the JS
    /// server's `exchange.publish` does.
    fn publish_packet(&self, channel: &str, packet: String) {
        let Ok(data) = RawValue::from_string(packet) else {
            return;
        };
        self.conn.presence().publish(&ChannelMessage {
            id: crate::ids::ulid(),
            channel: Arc::from(channel),
            event: wire::PUBLISH_EVENT.to_string(),
            data: Some(data),
            sender: None,
        });
    }

    /// Makes the core subscription of core channel `name` match the SC
    /// subscriptions (see the module doc).
    fn sync(&self, name: &str) -> Result<(), String> {
        let presence = self.conn.presence();
        let receive_messages = self.subs.contains_key(name);
        let presence_events = self.subs.contains_key(&wire::presence_channel(name));
        let member = match (
            receive_messages,
            wire::presence_target(name),
            self.username(),
        ) {
            (true, None, Some(user)) => Some((user.clone(), Arc::new(Value::Null))),
            _ => None,
        };
        if !receive_messages && !presence_events {
            if self.conn.is_subscribed(name) {
                presence.unsubscribe(&self.conn, name, |_| {});
            }
            return Ok(());
        }
        if !self.conn.is_subscribed(name) {
            let rights = match self.target(name) {
                Target::OwnInbox => Rights::PrivateInbox,
                Target::PresenceOf(c) => Rights::Of(Arc::from(c)),
                Target::OtherInbox | Target::Channel(_) => Rights::Own,
            };
            let opts = SubscribeOptions {
                presence_events,
                receive_messages,
                rights,
                ..SubscribeOptions::default()
            };
            presence
                .subscribe(&self.conn, name, opts, |_| {})
                .map_err(|e| e.to_string())?;
            if member.is_none() {
                return Ok(());
            }
        }
        presence
            .update_subscription(
                &self.conn,
                name,
                SubscriptionUpdate {
                    member,
                    presence_events,
                    receive_messages,
                },
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// The core channels an SC channel touches: itself, and for
    /// `presence>C` also C. A socket inbox `presence>socket/<id>` touches
    /// only itself: nobody is ever a member of `socket/<id>`.
    fn core_channels(channel: &str) -> impl Iterator<Item = &str> {
        let target = wire::presence_target(channel).filter(|t| !t.starts_with(SOCKET_INBOX));
        std::iter::once(channel).chain(target)
    }

    fn sync_all(&self) {
        for channel in self.subs.keys() {
            if wire::presence_target(channel).is_none()
                && let Err(e) = self.sync(channel)
            {
                tracing::debug!(socket = %self.socket_id, %channel, error = %e, "membership change refused");
            }
        }
    }

    /// Sets (or clears) the auth token and moves memberships accordingly.
    /// Logs the socket in as `auth`'s user (or out): the core then counts
    /// the connection as that user's (send to a user, user presence), and
    /// the memberships follow. Fails, logging the socket out, if the user
    /// already has the maximum number of connections.
    fn set_auth(&mut self, auth: Option<Auth>) -> Result<(), ScError> {
        let before = self.username().cloned();
        let user = auth.as_ref().and_then(|a| a.username.clone());
        let result = match self.conn.presence().set_user(&self.conn, user) {
            Ok(()) => {
                self.conn
                    .set_access(auth.as_ref().map(|a| a.access.clone()).unwrap_or_default());
                self.auth = auth;
                Ok(())
            }
            Err(e) => {
                let _ = self.conn.presence().set_user(&self.conn, None);
                self.conn.set_access(Access::anonymous());
                self.auth = None;
                Err(ScError {
                    message: format!("cannot log in: {e}"),
                    name: "AuthError",
                    expiry: None,
                })
            }
        };
        // Subscriptions the new credentials no longer allow end first, so
        // a user who logs in never shows up in a channel it may not read.
        self.kick_out_refused();
        if self.username() != before.as_ref() {
            self.sync_all();
        }
        result
    }

    /// Where `channel` points for the channel policy.
    fn target<'a>(&self, channel: &'a str) -> Target<'a> {
        match wire::presence_target(channel) {
            Some(rest) => match rest.strip_prefix(SOCKET_INBOX) {
                Some(id) if id == &*self.socket_id => Target::OwnInbox,
                Some(_) => Target::OtherInbox,
                None => Target::PresenceOf(rest),
            },
            None => Target::Channel(channel),
        }
    }

    /// May this socket subscribe to `channel` (any front end's policy)?
    fn may_subscribe(&self, channel: &str) -> Result<(), Refusal> {
        crate::names::check_channel(channel).map_err(Refusal::Invalid)?;
        let presence = self.conn.presence();
        match self.target(channel) {
            Target::OwnInbox => Ok(()),
            Target::OtherInbox => Err(Refusal::Denied(format!(
                "{channel} is another socket's channel; a socket subscribes to its own {}{SOCKET_INBOX}<socket id> only",
                wire::PRESENCE_PREFIX
            ))),
            Target::PresenceOf(c) | Target::Channel(c) => {
                presence.check_subscribe(&self.conn, c, None, false)
            }
        }
    }

    /// Ends, with `#kickOut`, every subscription the socket's current
    /// credentials no longer allow (after logging in, out or in again).
    fn kick_out_refused(&mut self) {
        let refused: Vec<(String, String)> = self
            .subs
            .keys()
            .filter_map(|c| match self.may_subscribe(c) {
                Ok(()) => None,
                Err(Refusal::Denied(why) | Refusal::Invalid(why)) => Some((c.clone(), why)),
                Err(Refusal::Undecided(_)) => Some((
                    c.clone(),
                    format!("{c} must be checked again for the new credentials; subscribe again"),
                )),
            })
            .collect();
        self.kick_out(refused);
    }

    /// Ends each `(channel, why)` subscription with `#kickOut` (`why` is
    /// its message), publishing `leave`s as for an unsubscribe (unlike the
    /// v14 server, which leaves a ghost).
    fn kick_out(&mut self, refused: Vec<(String, String)>) {
        // Every refused subscription goes first, then the core follows:
        // a channel that sorts before its `presence>` feed must not send
        // its leave to a feed that is about to end too.
        for (channel, _) in &refused {
            self.subs.remove(channel);
        }
        for (channel, why) in refused {
            for name in Self::core_channels(&channel) {
                let _ = self.sync(name);
            }
            if let Some(target) = wire::presence_target(&channel) {
                self.shared.unwatch(target);
            }
            self.send(wire::kick_out(&channel, &why));
        }
    }

    /// Verifies a token argument; Err carries the error and whether the
    /// token is bad (the client must drop it).
    fn verify(&self, token: &TokenArg) -> Result<Option<Auth>, (ScError, bool)> {
        let token = match token {
            TokenArg::Absent => return Ok(None),
            TokenArg::NotAString => {
                return Err((
                    ScError {
                        message: "the auth token must be a string (a signed JWT)".into(),
                        name: "AuthTokenInvalidError",
                        expiry: None,
                    },
                    true,
                ));
            }
            TokenArg::Token(t) => t,
        };
        let verified = self.shared.verifier.verify(token).and_then(|claims| {
            let access = crate::auth::access_from_claims(&claims)?;
            Ok((claims, access))
        });
        match verified {
            Ok((claims, access)) => Ok(Some(Auth {
                username: claims
                    .get("username")
                    .and_then(Value::as_str)
                    .map(Arc::from),
                exp: claims.get("exp").and_then(Value::as_u64),
                access,
            })),
            Err(e) => {
                self.shared.auth_failures.inc();
                Err(ScError::from_auth(&e))
            }
        }
    }

    /// Deauthenticates if the token's `exp` has passed (checked on every
    /// inbound event and pong, as socketcluster-server 14 does).
    fn check_expiry(&mut self) {
        let expired = self
            .auth
            .as_ref()
            .and_then(|a| a.exp)
            .is_some_and(|exp| now_ms() > exp.saturating_mul(1000));
        if expired {
            self.send(wire::remove_auth_token());
            let _ = self.set_auth(None);
        }
    }

    fn handshake(&mut self, token: &TokenArg, cid: Option<&Cid>) {
        let (auth, auth_error) = match self.verify(token) {
            Ok(auth) => (auth, None),
            Err((err, bad)) => {
                if bad {
                    self.send(wire::remove_auth_token());
                }
                (None, Some(err))
            }
        };
        let (authenticated, auth_error) = match self.set_auth(auth) {
            Ok(()) => (self.auth.is_some(), auth_error),
            Err(e) => (false, Some(e)),
        };
        self.handshake_deadline = None;
        let now = Instant::now();
        self.next_ping = now + self.shared.config.ping_interval;
        self.pong_deadline = now + self.shared.config.ping_timeout;
        if let Some(cid) = cid {
            self.send(wire::handshake(
                cid,
                &self.socket_id,
                super::millis(self.shared.config.ping_timeout),
                auth_error.as_ref(),
                authenticated,
            ));
        }
    }

    fn subscribe(&mut self, channel: String, cid: Option<&Cid>) {
        if self.subs.contains_key(&channel) {
            return self.reply_ok(cid);
        }
        // Before anything is published or joined: a refused subscribe
        // leaves no trace.
        match self.may_subscribe(&channel) {
            Ok(()) => {}
            Err(Refusal::Undecided(req)) => {
                self.asking = Some(req);
                return;
            }
            Err(Refusal::Denied(why)) => {
                return self.reply_error(
                    cid,
                    &ScError::forbidden(format!(
                        "Failed to subscribe socket to the {channel} channel - {why}"
                    )),
                );
            }
            Err(Refusal::Invalid(why)) => {
                return self.reply_error(
                    cid,
                    &ScError::invalid_arguments(format!(
                        "Failed to subscribe socket to the channel - {why}"
                    )),
                );
            }
        }
        let timeout = self.shared.config.presence_timeout_ms();
        let anonymous_join = wire::packet::join(None, timeout, Some(&self.socket_id));
        // The join goes out before the subscription exists, so a socket
        // subscribing to a presence channel does not get its own join.
        match wire::presence_target(&channel) {
            Some(_) => self.publish_packet(&channel, anonymous_join),
            None => self.publish_packet(&wire::presence_channel(&channel), anonymous_join),
        }
        self.subs.insert(channel.clone(), ());
        let result = Self::core_channels(&channel).try_for_each(|name| self.sync(name));
        match result {
            Ok(()) => {
                if let Some(target) = wire::presence_target(&channel) {
                    self.shared.watch(target);
                }
                self.reply_ok(cid);
            }
            Err(why) => {
                self.subs.remove(&channel);
                for name in Self::core_channels(&channel) {
                    let _ = self.sync(name);
                }
                self.reply_error(
                    cid,
                    &ScError::broker(format!(
                        "Failed to subscribe socket to the {channel} channel - {why}"
                    )),
                );
            }
        }
    }

    fn unsubscribe(&mut self, channel: &str, cid: Option<&Cid>) {
        if self.subs.remove(channel).is_none() {
            return self.reply_error(
                cid,
                &ScError::broker(format!(
                    "Failed to unsubscribe socket from the {channel} channel - Socket {} tried to unsubscribe from a channel which it is not subscribed to",
                    self.socket_id
                )),
            );
        }
        for name in Self::core_channels(channel) {
            if let Err(e) = self.sync(name) {
                tracing::debug!(socket = %self.socket_id, %name, error = %e, "unsubscribe sync failed");
            }
        }
        if let Some(target) = wire::presence_target(channel) {
            self.shared.unwatch(target);
        }
        self.reply_ok(cid);
    }

    fn publish(&mut self, channel: String, data: Option<Box<RawValue>>, cid: Option<&Cid>) {
        let refusal = match self.target(&channel) {
            Target::OwnInbox | Target::OtherInbox => return self.pong(channel, data, cid),
            Target::PresenceOf(_) => Refusal::Denied(format!(
                "{channel} carries the server's presence packets; clients cannot publish on it"
            )),
            Target::Channel(_) => {
                let msg = ChannelMessage {
                    id: crate::ids::ulid(),
                    channel: Arc::from(channel.as_str()),
                    event: wire::PUBLISH_EVENT.to_string(),
                    data,
                    sender: Some(MessageSender {
                        conn: self.conn.id(),
                        user_id: self.username().cloned(),
                        info: Arc::new(Value::Null),
                        echo: true,
                    }),
                };
                match self.conn.presence().publish_from(&self.conn, msg, None) {
                    // Acked after delivery, as the JS server does.
                    Ok(_) => return self.reply_ok(cid),
                    Err(refusal) => refusal,
                }
            }
        };
        match refusal {
            Refusal::Undecided(req) => self.asking = Some(req),
            Refusal::Denied(why) => self.reply_error(
                cid,
                &ScError::forbidden(format!(
                    "Failed to publish to the {channel} channel - {why}"
                )),
            ),
            Refusal::Invalid(why) => self.reply_error(
                cid,
                &ScError::invalid_arguments(format!("Failed to publish - {why}")),
            ),
        }
    }

    /// A presence `pong` to a socket's `presence>socket/<id>` channel
    /// (sc-stateless-presence): it answers a join on `presence>C`, so the
    /// sender must be tracking C, and it names the sender's own user.
    fn pong(&self, channel: String, data: Option<Box<RawValue>>, cid: Option<&Cid>) {
        let tracked = data
            .as_deref()
            .and_then(|d| serde_json::from_str::<wire::PongPacket>(d.get()).ok())
            .filter(|p| p.kind == "pong")
            .map(|p| p.channel)
            .filter(|c| self.subs.contains_key(&wire::presence_channel(c)));
        let Some(tracked) = tracked else {
            return self.reply_error(
                cid,
                &ScError::forbidden(format!(
                    "Failed to publish to the {channel} channel - only presence pongs for a channel this socket tracks go to {}{SOCKET_INBOX}<socket id>",
                    wire::PRESENCE_PREFIX
                )),
            );
        };
        let timeout = self.shared.config.presence_timeout_ms();
        let packet = wire::packet::pong(&tracked, self.username().map(|u| &**u), timeout);
        self.publish_packet(&channel, packet);
        self.reply_ok(cid);
    }

    fn authenticate(&mut self, token: &TokenArg, cid: Option<&Cid>) {
        let verified = match self.verify(token) {
            Ok(Some(auth)) => Ok(auth),
            Ok(None) => Err((
                ScError {
                    message: "no token given; #authenticate needs the signed JWT as data".into(),
                    name: "AuthTokenInvalidError",
                    expiry: None,
                },
                true,
            )),
            Err(pair) => Err(pair),
        };
        match verified {
            Ok(auth) => {
                let refused = self.set_auth(Some(auth)).err();
                if let Some(cid) = cid {
                    self.send(wire::auth_status(cid, refused.as_ref(), false));
                }
            }
            Err((err, bad)) => {
                if bad {
                    self.send(wire::remove_auth_token());
                }
                // A failed #authenticate logs the socket out: no ghost of
                // the previous user (spec §2.7 item 5).
                let _ = self.set_auth(None);
                if let Some(cid) = cid {
                    self.send(wire::auth_status(cid, Some(&err), bad));
                }
            }
        }
    }

    /// Handles one packet; Some(flow) ends the connection.
    fn packet(&mut self, packet: Packet) -> Option<Flow> {
        let (event, data, cid) = match packet {
            Packet::Event { event, data, cid } => (event, data, cid),
            Packet::Response => {
                if self.handshake_deadline.is_some() {
                    return Some(before_handshake());
                }
                return None;
            }
            Packet::Invalid { cid, why } => {
                if self.handshake_deadline.is_some() {
                    return Some(before_handshake());
                }
                self.reply_error(cid.as_ref(), &ScError::invalid_message(why));
                return None;
            }
        };
        if self.handshake_deadline.is_some() && event != "#handshake" {
            return Some(before_handshake());
        }
        self.check_expiry();
        let request = match Request::parse(&event, data.as_deref()) {
            Ok(r) => r,
            Err(e) => {
                self.reply_error(cid.as_ref(), &e);
                return None;
            }
        };
        let cid = cid.as_ref();
        match request {
            Request::Handshake { token } => {
                if self.handshake_deadline.is_some() {
                    self.handshake(&token, cid);
                } else {
                    self.reply_error(
                        cid,
                        &ScError::invalid_action(
                            "the handshake is already done; #handshake is sent once per connection",
                        ),
                    );
                }
            }
            Request::Subscribe { channel } => self.subscribe(channel, cid),
            Request::Unsubscribe { channel } => self.unsubscribe(&channel, cid),
            Request::Publish { channel, data } => self.publish(channel, data, cid),
            Request::Authenticate { token } => self.authenticate(&token, cid),
            Request::RemoveAuthToken => {
                let _ = self.set_auth(None);
                self.reply_ok(cid);
            }
            Request::Disconnect { code } => {
                // 1000 and 3000-4999 may appear in a close frame; anything
                // else becomes a normal close.
                let code = code
                    .filter(|c| *c == 1000 || (3000..5000).contains(c))
                    .unwrap_or(1000);
                return Some(Flow::Close(CloseReason::new(code, "")));
            }
            Request::Other { event, data } => self.custom_event(event, data, cid),
        }
        None
    }
}

impl ScSession {
    /// A custom event: a call the backend answers (`--rpc-url`) when the
    /// client expects an answer (a `cid`). The first time through, the
    /// call starts (and reading waits for it); when the packet runs again,
    /// the answer is here.
    fn custom_event(&mut self, event: String, data: Value, cid: Option<&Cid>) {
        let rpc = self.shared.rpc.clone().filter(|r| r.answers(&event));
        let (Some(rpc), Some(cid)) = (rpc, cid) else {
            let hint = match (&self.shared.rpc, cid) {
                (None, _) => "; a backend can answer custom events (--rpc-url)",
                (Some(_), Some(_)) => " (not one of --rpc-events)",
                (Some(_), None) => {
                    " without a cid (no answer is expected, so the backend is not asked)"
                }
            };
            self.reply_error(
                cid,
                &ScError::invalid_action(format!(
                    "rollcall has no handler for the {event:?} event{hint}; it supports #handshake, #subscribe, #unsubscribe, #publish, #authenticate, #removeAuthToken and #disconnect"
                )),
            );
            return;
        };
        if let Some(answer) = self.call.take_answer() {
            self.answer_call(cid, answer);
            return;
        }
        self.call.start(rpc, RpcCall::new(event, data, &self.conn));
    }

    /// The backend's answer to the client: a new auth token first (the
    /// socket is logged in as its user, as with `#authenticate`), then the
    /// reply.
    fn answer_call(&mut self, cid: &Cid, answer: RpcAnswer) {
        let (data, token) = match answer {
            RpcAnswer::Data { data, auth_token } => (data, auth_token),
            RpcAnswer::Error(why) => {
                let err = ScError {
                    message: why,
                    name: "BackendError",
                    expiry: None,
                };
                self.reply_error(Some(cid), &err);
                return;
            }
        };
        if let Some(token) = token {
            let auth = match self.verify(&TokenArg::Token(token.clone())) {
                Ok(Some(auth)) => auth,
                Ok(None) | Err(_) => {
                    let err = ScError {
                        message: "the backend answered with an auth token the server does not accept (check its signature, expiry and claims)".into(),
                        name: "BackendError",
                        expiry: None,
                    };
                    self.reply_error(Some(cid), &err);
                    return;
                }
            };
            if let Err(e) = self.set_auth(Some(auth)) {
                self.reply_error(Some(cid), &e);
                return;
            }
            self.send(wire::set_auth_token(&token));
        }
        self.send(wire::reply_data(cid, &data));
    }

    /// A packet over the request rate: dropped, with an error reply if it
    /// asked for one.
    fn rate_limited(&self, packet: &Packet) {
        self.shared.rate_limited.inc();
        let cid = match packet {
            Packet::Event { cid, .. } | Packet::Invalid { cid, .. } => cid.as_ref(),
            Packet::Response => None,
        };
        self.reply_error(
            cid,
            &ScError::rate_limited(format!(
                "more than {} requests per second; this request was dropped, slow down",
                self.requests_rate
            )),
        );
    }

    /// Handles packets in order; one that must wait for the channel check
    /// is put aside with the ones after it, and handled again once the
    /// check has answered.
    fn run_packets(&mut self, mut queue: VecDeque<Packet>) -> Flow {
        let may_ask =
            self.conn.presence().policy().backend().is_some() || self.shared.rpc.is_some();
        while let Some(p) = queue.pop_front() {
            let now = Instant::now();
            if !self.requests.allow(now) {
                if self.requests.sustained_abuse(now) {
                    return Flow::Close(CloseReason::new(
                        close::POLICY,
                        format!(
                            "more than {} requests per second for too long (packets of a batch count one each)",
                            self.requests_rate
                        ),
                    ));
                }
                self.rate_limited(&p);
                continue;
            }
            let copy = may_ask.then(|| p.clone());
            if let Some(flow) = self.packet(p) {
                return flow;
            }
            if let Some(copy) = copy {
                let wait = match (self.asking.take(), self.call.take_pending()) {
                    (Some(req), _) => Some(self.conn.presence().consult(*req)),
                    (None, Some(call)) => Some(call),
                    (None, None) => None,
                };
                if let Some(wait) = wait {
                    queue.push_front(copy);
                    self.held = queue;
                    return Flow::Wait(wait);
                }
            }
        }
        Flow::Continue
    }
}

fn before_handshake() -> Flow {
    Flow::Close(CloseReason::new(
        4009,
        "Server received a message before the client handshake; send #handshake first",
    ))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Session for ScSession {
    fn connection(&self) -> &Connection {
        &self.conn
    }

    fn on_text(&mut self, text: &str) -> Flow {
        if self.handshake_deadline.is_none() {
            // Any inbound frame proves the client alive (v14 server).
            self.pong_deadline = Instant::now() + self.shared.config.ping_timeout;
        }
        match wire::decode(text) {
            Frame::Pong { v2 } => {
                if self.handshake_deadline.is_some() {
                    return before_handshake();
                }
                if self.version == Version::Unknown {
                    self.version = if v2 { Version::V2 } else { Version::V1 };
                }
                self.check_expiry();
                Flow::Continue
            }
            Frame::Raw => {
                if self.handshake_deadline.is_some() {
                    return before_handshake();
                }
                Flow::Continue
            }
            Frame::Packets(packets) => self.run_packets(packets.into()),
        }
    }

    fn on_resume(&mut self) -> Flow {
        let held = std::mem::take(&mut self.held);
        self.run_packets(held)
    }

    fn on_rate_limited(&mut self, limit: u32) -> Flow {
        tracing::debug!(socket = %self.socket_id, limit, "SocketCluster frame dropped: over the message rate");
        Flow::Continue
    }

    fn on_removed(&mut self, channel: &str, reason: &str) -> Flow {
        // `channel` itself and its `presence>` feed both read the channel.
        let ended: Vec<(String, String)> = self
            .subs
            .keys()
            .filter(|c| Self::core_channels(c).any(|core| core == channel))
            .map(|c| (c.clone(), reason.to_string()))
            .collect();
        self.kick_out(ended);
        Flow::Continue
    }

    fn next_timer(&self) -> Option<Instant> {
        match self.handshake_deadline {
            Some(deadline) => Some(deadline),
            None => Some(self.next_ping.min(self.pong_deadline)),
        }
    }

    fn on_timer(&mut self, now: Instant) -> Flow {
        if let Some(deadline) = self.handshake_deadline {
            if now >= deadline {
                self.send(wire::disconnect(4005));
                return Flow::Close(CloseReason::new(
                    4005,
                    "Did not receive #handshake from client before timeout",
                ));
            }
            return Flow::Continue;
        }
        if now >= self.pong_deadline {
            return Flow::Close(CloseReason::new(
                4001,
                "Client pong timed out: nothing received within pingTimeout",
            ));
        }
        if now >= self.next_ping {
            match self.version {
                Version::V1 => {
                    self.send(wire::PING_V1);
                }
                Version::V2 => {
                    self.send("");
                }
                Version::Unknown => {
                    self.send(wire::PING_V1);
                    self.send("");
                }
            }
            self.next_ping = now + self.shared.config.ping_interval;
        }
        Flow::Continue
    }
}

impl Drop for ScSession {
    fn drop(&mut self) {
        for channel in self.subs.keys() {
            if let Some(target) = wire::presence_target(channel) {
                self.shared.unwatch(target);
            }
        }
        // The core connection is dropped next, which removes every
        // membership (leaves for users whose last socket this was).
    }
}
