//! One sgc Presence connection: decode a frame, acknowledge it, call the
//! core, queue the reply; plus the ack re-send and invitation timers.
//!
//! Server-wide membership (member@new / member@remove, get@members and
//! publish with an empty channel) is a core subscription to the reserved
//! channel [`ROSTER_CHANNEL`]; channels are ordinary core channels shared
//! with every other front end. The member id is the connection's core
//! member key, so whatever `member.id` a client sends is ignored, and a
//! member@remove naming another member is refused.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use tokio::time::Instant;

use super::acks::{AckTracker, CLOSE_ACK_TIMEOUT, Due, RecentIds};
use super::policy::{Decision, HookMember};
use super::wire::{self, FLAVOR_BASE64, Frame, Incoming, Request, WireMember, codes, method};
use super::{ROSTER_CHANNEL, SgcConfig};
use crate::ids;
use crate::outbox::CloseReason;
use crate::policy::{BackendRequest, Refusal};
use crate::presence::{
    ChannelMessage, Connection, InvitationOutcome, InviteError, MemberChange, Members,
    MessageSender, Rights, SubscribeError, SubscribeOptions,
};
use crate::transport::{Flow, Session};

/// Longest member name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest member info, in bytes.
pub const MAX_INFO_BYTES: usize = 16 * 1024;
/// Longest published text, in bytes.
pub const MAX_TEXT_BYTES: usize = crate::names::MAX_MESSAGE_BYTES;

/// Not an sgc code: the request waits for the channel check's answer and
/// is handled again; nothing is sent.
const PENDING: i64 = -1;

/// What a verified token says about the member.
#[derive(Clone, Debug)]
pub struct TokenMember {
    /// The member name (`name` claim, else the member id).
    pub name: String,
    /// The member info (`info` claim).
    pub info: String,
    /// The `publish` claim (default true).
    pub publish: bool,
}

/// The member this connection joined as.
#[derive(Clone, Debug)]
struct Me {
    name: String,
    info: String,
}

/// An error to report with `error@member@channel`.
#[derive(Debug)]
struct SgcError {
    code: i64,
    detail: Option<String>,
}

impl SgcError {
    fn new(code: i64) -> Self {
        SgcError { code, detail: None }
    }

    fn with(code: i64, detail: impl Into<String>) -> Self {
        SgcError {
            code,
            detail: Some(detail.into()),
        }
    }

    fn from_decision(code: i64, d: Decision) -> Result<(), SgcError> {
        match d {
            Decision::Accept => Ok(()),
            Decision::Deny(detail) => Err(SgcError { code, detail }),
        }
    }

    /// The sgc text for the code, with the detail appended.
    fn text(&self) -> String {
        let base = codes::text(self.code);
        match &self.detail {
            Some(d) if base.is_empty() => d.clone(),
            Some(d) => format!("{base} {d}"),
            None => base.to_string(),
        }
    }
}

/// Checks a channel name a client sent ([`crate::names::check_channel`],
/// the rule every front end shares), in sgc's sentence style.
pub fn check_channel(name: &str) -> Result<(), String> {
    crate::names::check_channel(name).map_err(|why| capitalized(&why))
}

/// An sgc Presence session.
pub struct SgcSession {
    conn: Connection,
    config: SgcConfig,
    codec: Arc<wire::SgcCodec>,
    acks: Option<Arc<AckTracker>>,
    base64: bool,
    session_id: Arc<str>,
    token: Option<TokenMember>,
    me: Option<Me>,
    recent: RecentIds,
    invitation_deadlines: BinaryHeap<Reverse<Instant>>,
    next_ack_poll: Option<Instant>,
    /// The question a request left for the channel check.
    asking: std::cell::RefCell<Option<Box<BackendRequest>>>,
    /// The request waiting for that answer.
    held: Option<Incoming>,
}

impl SgcSession {
    /// A session for `conn`. `acks` is set when the connection asked for
    /// acknowledgments (its codec then tracks what it sends); `token` when
    /// it presented a verified token; `base64` to encode from the start.
    pub fn new(
        conn: Connection,
        config: SgcConfig,
        codec: Arc<wire::SgcCodec>,
        acks: Option<Arc<AckTracker>>,
        token: Option<TokenMember>,
        base64: bool,
    ) -> Self {
        let session_id = conn.member_key();
        if base64 {
            conn.set_flavor(FLAVOR_BASE64);
        }
        let next_ack_poll = acks
            .as_ref()
            .map(|_| Instant::now() + config.ack_timeout / 2);
        SgcSession {
            conn,
            config,
            codec,
            acks,
            base64,
            session_id,
            token,
            me: None,
            recent: RecentIds::default(),
            invitation_deadlines: BinaryHeap::new(),
            next_ack_poll,
            asking: std::cell::RefCell::new(None),
            held: None,
        }
    }

    /// Sends the session message (spec §4.1): the session id, which is the
    /// member id, in `message.text`.
    ///
    /// ```text
    /// {"jsonrpc":"2.0","method":"sgc@presence@session","message":{"text":"<session id>"}}
    /// ```
    pub fn open(&mut self) {
        let frame = Frame::new(method::SESSION, self.base64).message(&self.session_id);
        self.send(frame);
    }

    fn flavor(&self) -> u8 {
        if self.base64 { FLAVOR_BASE64 } else { 0 }
    }

    fn send(&self, frame: Frame) {
        self.conn.send_text(self.codec.finish(frame));
    }

    /// This member as sgc shows it (id only before it joined).
    fn me_wire(&self) -> WireMember<'_> {
        match &self.me {
            Some(me) => WireMember {
                id: self.session_id.as_ref().into(),
                name: me.name.as_str().into(),
                info: me.info.as_str().into(),
            },
            None => WireMember::id_only(&self.session_id),
        }
    }

    fn hook_member(&self) -> HookMember<'_> {
        let (name, info) = match &self.me {
            Some(me) => (me.name.as_str(), me.info.as_str()),
            None => ("", ""),
        };
        HookMember {
            id: &self.session_id,
            name,
            info,
            authenticated: self.token.is_some(),
        }
    }

    fn send_error(&self, err: &SgcError, channel: &str, member: &WireMember<'_>) {
        let frame = Frame::new(method::ERROR_MEMBER_CHANNEL, self.base64)
            .error(err.code, &err.text())
            .channel(channel)
            .member(member);
        self.send(frame);
    }

    fn report(&self, result: Result<(), SgcError>, channel: &str) {
        if let Err(e) = result
            && e.code != PENDING
        {
            self.send_error(&e, channel, &self.me_wire());
        }
    }

    /// A channel policy answer as an sgc result: a refusal becomes `code`
    /// with the reason; a question for the backend check is kept in
    /// `asking` (the frame is handled again once it is answered) and
    /// reported as [`codes::PENDING`], which is never sent.
    fn allowed(&self, answer: Result<(), Refusal>, code: i64) -> Result<(), SgcError> {
        match answer {
            Ok(()) => Ok(()),
            Err(Refusal::Denied(why) | Refusal::Invalid(why)) => {
                Err(SgcError::with(code, capitalized(&why)))
            }
            Err(Refusal::Undecided(req)) => {
                *self.asking.borrow_mut() = Some(req);
                Err(SgcError::new(PENDING))
            }
        }
    }

    fn joined(&self) -> Result<&Me, SgcError> {
        self.me.as_ref().ok_or_else(|| {
            SgcError::with(
                codes::MEMBER_NOT_EXISTS,
                "Send sgc@presence@member@new first to join.",
            )
        })
    }

    fn member_data(&self) -> Arc<serde_json::Value> {
        self.conn.info()
    }

    /// Handles a request; one that must wait for the channel check is put
    /// aside and handled again once it has answered.
    fn handle_or_wait(&mut self, incoming: Incoming) -> Flow {
        let copy = self
            .conn
            .presence()
            .policy()
            .backend()
            .map(|_| incoming.clone());
        self.handle(incoming);
        match (self.asking.take(), copy) {
            (Some(req), Some(copy)) => {
                self.held = Some(copy);
                Flow::Wait(self.conn.presence().consult(*req))
            }
            _ => Flow::Continue,
        }
    }

    fn handle(&mut self, incoming: Incoming) {
        match incoming.request {
            Request::NewMember { name, info } => {
                let r = self.new_member(name, info);
                self.report(r, "");
            }
            Request::RemoveMember => self.remove_member(&incoming.member_id),
            Request::Subscribe { channel } => {
                let r = self.subscribe(&channel);
                self.report(r, &channel);
            }
            Request::Unsubscribe { channel } => {
                let r = self.unsubscribe(&channel);
                self.report(r, &channel);
            }
            Request::Publish { channel, text } => {
                let r = self.publish(&channel, &text);
                self.report(r, &channel);
            }
            Request::GetMembers { channel } => {
                let r = self.get_members(&channel);
                self.report(r, &channel);
            }
            Request::Invite { channel, invitees } => self.invite(&channel, &invitees),
            Request::InvitationResponse {
                channel,
                inviter,
                accept,
                code,
                text,
            } => self.answer(&channel, inviter.as_deref(), accept, code, text),
            Request::Acknowledgment => {}
            Request::Other(m) => {
                tracing::debug!(conn = %self.conn.id(), method = %m, "sgc: unknown method, frame dropped");
            }
        }
    }

    /// member@new (spec §4.2). Token members get their name and info from
    /// the token, whatever the client sends.
    fn new_member(&mut self, mut name: String, mut info: String) -> Result<(), SgcError> {
        if self.me.is_some() {
            return Err(SgcError::new(codes::MEMBER_ALREADY_EXISTS));
        }
        if let Some(t) = &self.token {
            name.clone_from(&t.name);
            info.clone_from(&t.info);
        }
        if name.len() > MAX_NAME_BYTES {
            return Err(SgcError::with(
                codes::NEW_MEMBER_DENIED,
                format!(
                    "The name is {} bytes; the limit is {MAX_NAME_BYTES}.",
                    name.len()
                ),
            ));
        }
        if info.len() > MAX_INFO_BYTES {
            return Err(SgcError::with(
                codes::NEW_MEMBER_DENIED,
                format!(
                    "The info is {} bytes; the limit is {MAX_INFO_BYTES}.",
                    info.len()
                ),
            ));
        }
        let decision = self
            .config
            .hooks
            .before_new_member(&self.session_id, &mut name, &mut info);
        SgcError::from_decision(codes::NEW_MEMBER_DENIED, decision)?;
        let data = Arc::new(match self.token {
            Some(_) => WireMember::core_data(&name, &info),
            None => WireMember::anonymous_core_data(&name, &info),
        });
        self.conn
            .presence()
            .set_connection_info(&self.conn, data.clone(), false);
        let me = WireMember {
            id: self.session_id.as_ref().into(),
            name: name.as_str().into(),
            info: info.as_str().into(),
        };
        let opts = SubscribeOptions {
            member_info: Some(data),
            presence_events: true,
            receive_messages: true,
            flavor: self.flavor(),
            rights: Rights::Reserved,
            ..SubscribeOptions::default()
        };
        let (conn, codec, b64) = (&self.conn, &self.codec, self.base64);
        let result = conn
            .presence()
            .subscribe(conn, ROSTER_CHANNEL, opts, |snap| {
                // The joiner sees its own member@new too (the core tells the
                // others; an Updated change reaches everyone, the joiner included).
                if snap.change != MemberChange::Updated {
                    conn.send_text(codec.finish(Frame::new(method::NEW_MEMBER, b64).member(&me)));
                }
            });
        match result {
            Ok(_) => {
                self.me = Some(Me { name, info });
                Ok(())
            }
            Err(SubscribeError::Closed) => Ok(()),
            Err(SubscribeError::AlreadySubscribed) => {
                Err(SgcError::new(codes::MEMBER_ALREADY_EXISTS))
            }
            Err(SubscribeError::MemberLimitReached { limit }) => Err(SgcError::with(
                codes::NEW_MEMBER_DENIED,
                format!("The server already has {limit} members, the maximum; try again later."),
            )),
            Err(e) => Err(SgcError::with(
                codes::NEW_MEMBER_DENIED,
                capitalized(&e.to_string()),
            )),
        }
    }

    /// member@remove (spec §4.3): leaves every channel (the remaining
    /// members of each are told), then the member list. Only the
    /// connection's own member can be removed.
    fn remove_member(&mut self, member_id: &str) {
        if !member_id.is_empty() && member_id != &*self.session_id {
            let err = SgcError::with(
                codes::MEMBER_NOT_EXISTS,
                "A connection can only remove its own member.",
            );
            return self.send_error(&err, "", &WireMember::id_only(member_id));
        }
        if self.me.is_none() {
            let err = SgcError::new(codes::MEMBER_NOT_EXISTS);
            return self.send_error(&err, "", &self.me_wire());
        }
        self.leave_everything();
        self.me = None;
    }

    /// Leaves the channels first, then the member list, so that members
    /// see channel@member@remove before member@remove (spec §4.3).
    fn leave_everything(&self) {
        let presence = self.conn.presence();
        for channel in self.conn.channels() {
            if &*channel != ROSTER_CHANNEL {
                presence.unsubscribe(&self.conn, &channel, |_| {});
            }
        }
        presence.unsubscribe(&self.conn, ROSTER_CHANNEL, |_| {});
    }

    fn channel_exists(&self, channel: &str) -> bool {
        self.conn.presence().with_members(channel, |_| ()).is_some()
    }

    /// channel@member@new (spec §4.4): hooks 6 (new channel) and 10, then
    /// the core subscription; all channel members, the subscriber
    /// included, get channel@member@new. Accepts any pending invitations
    /// to the channel.
    fn subscribe(&mut self, channel: &str) -> Result<(), SgcError> {
        self.joined()?;
        check_channel(channel).map_err(|why| SgcError::with(codes::NEW_CHANNEL_DENIED, why))?;
        if self.conn.is_subscribed(channel) {
            return Err(SgcError::new(codes::SUBSCRIPTION_ALREADY_EXISTS));
        }
        // The channel policy first, then the embedder's hooks. A policy
        // refusal is 10 whether or not the channel exists, so it tells a
        // client without rights nothing about who is there.
        let denied_code = codes::NEW_SUBSCRIPTION_DENIED;
        self.allowed(
            self.conn
                .presence()
                .check_subscribe(&self.conn, channel, None, false),
            denied_code,
        )?;
        let exists = self.channel_exists(channel);
        let hooks = &self.config.hooks;
        let member = self.hook_member();
        if !exists {
            let d = hooks.before_new_channel(&member, channel);
            SgcError::from_decision(codes::NEW_CHANNEL_DENIED, d)?;
        }
        let d = hooks.before_new_channel_member(&member, channel);
        SgcError::from_decision(codes::NEW_SUBSCRIPTION_DENIED, d)?;
        let opts = SubscribeOptions {
            member_info: Some(self.member_data()),
            presence_events: true,
            receive_messages: true,
            flavor: self.flavor(),
            ..SubscribeOptions::default()
        };
        let me = self.me_wire();
        let (conn, codec, b64) = (&self.conn, &self.codec, self.base64);
        let result = conn.presence().subscribe(conn, channel, opts, |snap| {
            if snap.change != MemberChange::Updated {
                let frame = Frame::new(method::NEW_CHANNEL_MEMBER, b64)
                    .member(&me)
                    .channel(channel);
                conn.send_text(codec.finish(frame));
            }
        });
        match result {
            Ok(_) => {}
            Err(SubscribeError::Closed) => return Ok(()),
            Err(SubscribeError::AlreadySubscribed) => {
                return Err(SgcError::new(codes::SUBSCRIPTION_ALREADY_EXISTS));
            }
            Err(SubscribeError::Refused(r)) => return self.allowed(Err(r), denied_code),
            Err(e) => {
                return Err(SgcError::with(
                    codes::NEW_SUBSCRIPTION_DENIED,
                    capitalized(&e.to_string()),
                ));
            }
        }
        // Joining a channel one was invited to answers the invitation
        // (sgc 2022 clients accept an invitation by subscribing).
        let presence = self.conn.presence();
        for inv in presence.pending_invitations(&self.conn) {
            if &*inv.channel == channel {
                let _ =
                    presence.answer_invitation(&self.conn, &inv.id, InvitationOutcome::Accepted);
            }
        }
        Ok(())
    }

    /// Errors 5 / 12 unless this member is in `channel`.
    fn subscribed_to(&self, channel: &str) -> Result<(), SgcError> {
        if check_channel(channel).is_err() {
            return Err(SgcError::new(codes::CHANNEL_NOT_EXISTS));
        }
        if !self.conn.is_subscribed(channel) {
            return Err(SgcError::new(if self.channel_exists(channel) {
                codes::SUBSCRIPTION_NOT_EXISTS
            } else {
                codes::CHANNEL_NOT_EXISTS
            }));
        }
        Ok(())
    }

    /// channel@member@remove (spec §4.5). Unlike sgc 2022, only the
    /// channel's members (the leaver included) are told.
    fn unsubscribe(&mut self, channel: &str) -> Result<(), SgcError> {
        self.joined()?;
        self.subscribed_to(channel)?;
        self.leave_channel(channel, None);
        Ok(())
    }

    /// Ends the subscription to `channel`; `kicked`: the server ended it,
    /// and the leaver is told so (`"reason":"kicked"`) and why.
    fn leave_channel(&mut self, channel: &str, kicked: Option<&str>) {
        let me = self.me_wire();
        let (conn, codec, b64) = (&self.conn, &self.codec, self.base64);
        conn.presence().unsubscribe(conn, channel, |_| {
            // The remaining members hear of it from the core (when the
            // member really left); the leaver always gets its confirmation.
            let mut frame = Frame::new(method::REMOVE_CHANNEL_MEMBER, b64)
                .member(&me)
                .channel(channel);
            if let Some(why) = kicked {
                frame = frame.reason("kicked").message(why);
            }
            conn.send_text(codec.finish(frame));
        });
    }

    /// publish@msg (spec §4.6): to a channel's subscribers (of every front
    /// end), or with an empty channel to every member; the sender gets it
    /// too. The member object comes from the server, never the client.
    fn publish(&mut self, channel: &str, text: &str) -> Result<(), SgcError> {
        self.joined()?;
        if text.len() > MAX_TEXT_BYTES {
            return Err(SgcError::with(
                codes::PUBLISH_MSG_DENIED,
                format!(
                    "The text is {} bytes; the limit is {MAX_TEXT_BYTES}.",
                    text.len()
                ),
            ));
        }
        if self.token.as_ref().is_some_and(|t| !t.publish) {
            return Err(SgcError::with(
                codes::PUBLISH_MSG_DENIED,
                "The token's publish claim is false.",
            ));
        }
        let member = self.hook_member();
        let sender = Some(MessageSender {
            conn: self.conn.id(),
            user_id: self.conn.user_id(),
            info: self.member_data(),
            echo: true,
        });
        let data = wire::message_data(text);
        if channel.is_empty() {
            // To every sgc member: the server-wide member list.
            let d = self
                .config
                .rules
                .may_publish_to_all(true)
                .and_then(|| self.config.hooks.before_publish(&member, None, text));
            SgcError::from_decision(codes::PUBLISH_MSG_DENIED, d)?;
            self.conn.presence().publish(&ChannelMessage {
                id: ids::ulid(),
                channel: Arc::from(ROSTER_CHANNEL),
                event: super::MESSAGE_EVENT.to_string(),
                data,
                sender,
            });
            return Ok(());
        }
        self.subscribed_to(channel)?;
        let presence = self.conn.presence();
        let event = super::MESSAGE_EVENT;
        self.allowed(
            presence
                .check_publish(&self.conn, channel, event, None)
                .map(|_| ()),
            codes::PUBLISH_MSG_DENIED,
        )?;
        let d = self
            .config
            .hooks
            .before_publish(&member, Some(channel), text);
        SgcError::from_decision(codes::PUBLISH_MSG_DENIED, d)?;
        let msg = ChannelMessage {
            id: ids::ulid(),
            channel: Arc::from(channel),
            event: event.to_string(),
            data,
            sender,
        };
        presence
            .publish_from(&self.conn, msg, None)
            .map(|_| ())
            .or_else(|r| self.allowed(Err(r), codes::PUBLISH_MSG_DENIED))
    }

    /// get@members (spec §4.7), answered with send@members. The list is
    /// encoded under the channel lock, so it is consistent with the member
    /// events before and after it.
    fn get_members(&mut self, channel: &str) -> Result<(), SgcError> {
        self.joined()?;
        let target = (!channel.is_empty()).then_some(channel);
        let subscribed = target.is_some_and(|c| self.conn.is_subscribed(c));
        if let Some(c) = target.filter(|_| !subscribed) {
            // Reading a channel's members takes the right to subscribe to it.
            self.allowed(
                self.conn
                    .presence()
                    .check_subscribe(&self.conn, c, None, false),
                codes::SEND_MEMBERS_DENIED,
            )?;
        }
        let member = self.hook_member();
        let d = self
            .config
            .rules
            .may_get_members(target, subscribed)
            .and_then(|| self.config.hooks.before_send_members(&member, target));
        SgcError::from_decision(codes::SEND_MEMBERS_DENIED, d)?;
        let core_channel = match target {
            None => ROSTER_CHANNEL,
            Some(c) if check_channel(c).is_err() => {
                return Err(SgcError::new(codes::CHANNEL_NOT_EXISTS));
            }
            Some(c) => c,
        };
        let me = self.me_wire();
        let (conn, codec, b64) = (&self.conn, &self.codec, self.base64);
        // A channel whose rule hides its member list answers with none.
        let shown = target.is_none_or(|c| conn.presence().members_shown(c));
        let sent = conn.presence().with_members(core_channel, |members| {
            let members = if shown { members } else { Members::none() };
            let frame = Frame::new(method::SEND_MEMBERS, b64)
                .channel(channel)
                .member(&me)
                .members(
                    members
                        .iter()
                        .map(|m| WireMember::from_core(m.user_id, m.info)),
                );
            conn.send_text(codec.finish(frame));
        });
        match sent {
            Some(()) => Ok(()),
            None => Err(SgcError::new(codes::CHANNEL_NOT_EXISTS)),
        }
    }

    /// channel@invitation (spec §4.8): each listed member gets the
    /// invitation; unknown members (3), oneself (40) and members already
    /// in the channel (11) get an error each.
    fn invite(&mut self, channel: &str, invitees: &[String]) {
        if let Err(e) = self.check_invite(channel, invitees) {
            return self.send_error(&e, channel, &self.me_wire());
        }
        for invitee in invitees {
            if let Err((e, member)) = self.invite_one(channel, invitee) {
                self.send_error(&e, channel, &member);
            }
        }
    }

    /// The checks that apply to the whole invitation.
    fn check_invite(&self, channel: &str, invitees: &[String]) -> Result<(), SgcError> {
        self.joined()?;
        check_channel(channel).map_err(|why| SgcError::with(codes::INVITATION_DENIED, why))?;
        if invitees.is_empty() {
            return Err(SgcError::with(
                codes::INVITATION_DENIED,
                "List the member ids to invite in members[].",
            ));
        }
        let subscribed = self.conn.is_subscribed(channel);
        SgcError::from_decision(
            codes::INVITATION_DENIED,
            self.config.rules.may_invite(channel, subscribed),
        )?;
        if subscribed {
            return Ok(());
        }
        // Inviting to a channel takes the right to join it.
        self.allowed(
            self.conn
                .presence()
                .check_subscribe(&self.conn, channel, None, false),
            codes::INVITATION_DENIED,
        )
    }

    fn invite_one(
        &mut self,
        channel: &str,
        invitee: &str,
    ) -> Result<(), (SgcError, WireMember<'static>)> {
        let id_only = || WireMember {
            id: invitee.to_string().into(),
            ..WireMember::default()
        };
        if invitee == &*self.session_id {
            return Err((
                SgcError::with(codes::INVITATION_DENIED, "A member cannot invite itself."),
                id_only(),
            ));
        }
        let presence = self.conn.presence();
        let known = presence
            .with_members(ROSTER_CHANNEL, |m| {
                m.get(invitee)
                    .map(|v| WireMember::from_core(v.user_id, v.info).into_owned())
            })
            .flatten();
        let Some(invitee_wire) = known else {
            return Err((
                SgcError::with(
                    codes::MEMBER_NOT_EXISTS,
                    "No member with this id is connected.",
                ),
                id_only(),
            ));
        };
        let member = self.hook_member();
        let d = self.config.hooks.before_invite(&member, channel, invitee);
        SgcError::from_decision(codes::INVITATION_DENIED, d)
            .map_err(|e| (e, invitee_wire.clone()))?;
        match presence.invite(&self.conn, channel, invitee, self.config.invitation_ttl) {
            Ok(inv) => {
                self.invitation_deadlines
                    .push(Reverse(Instant::from_std(inv.expires_at)));
                Ok(())
            }
            Err(InviteError::Closed) => Ok(()),
            Err(InviteError::SelfInvite) => Err((
                SgcError::with(codes::INVITATION_DENIED, "A member cannot invite itself."),
                invitee_wire,
            )),
            Err(InviteError::AlreadyMember) => Err((
                SgcError::with(
                    codes::SUBSCRIPTION_ALREADY_EXISTS,
                    "The invited member is already in the channel.",
                ),
                invitee_wire,
            )),
            Err(e @ (InviteError::UnknownMember | InviteError::NotDeliverable)) => Err((
                SgcError::with(codes::MEMBER_NOT_EXISTS, capitalized(&e.to_string())),
                invitee_wire,
            )),
            Err(e @ InviteError::TooManyPending { .. }) => Err((
                SgcError::with(codes::INVITATION_DENIED, capitalized(&e.to_string())),
                invitee_wire,
            )),
        }
    }

    /// channel@invitation@response (ours, see the README): the invitee
    /// accepts (the server subscribes it) or declines with a code and text;
    /// the inviter gets channel@invitation@response.
    fn answer(
        &mut self,
        channel: &str,
        inviter: Option<&str>,
        accept: bool,
        code: i64,
        text: String,
    ) {
        if let Err(e) = self.joined() {
            return self.send_error(&e, channel, &self.me_wire());
        }
        let presence = self.conn.presence();
        let pending = presence
            .pending_invitations(&self.conn)
            .into_iter()
            .find(|inv| {
                &*inv.channel == channel && inviter.is_none_or(|i| &*inv.inviter.user_id == i)
            });
        let Some(invitation) = pending else {
            let err = SgcError::with(
                codes::INVITATION_NOT_FOUND,
                match inviter {
                    Some(i) => format!("No pending invitation to {channel:?} from member {i:?}."),
                    None => format!("No pending invitation to {channel:?}."),
                },
            );
            return self.send_error(&err, channel, &self.me_wire());
        };
        if !accept {
            let text = if text.is_empty() && code == 0 {
                "Invitation declined.".to_string()
            } else {
                text
            };
            let _ = presence.answer_invitation(
                &self.conn,
                &invitation.id,
                InvitationOutcome::Declined { code, text },
            );
            return;
        }
        match self.subscribe(channel) {
            // subscribe() answered every pending invitation to the channel.
            Ok(()) => {}
            Err(e) if e.code == codes::SUBSCRIPTION_ALREADY_EXISTS => {
                let _ = self.conn.presence().answer_invitation(
                    &self.conn,
                    &invitation.id,
                    InvitationOutcome::Accepted,
                );
            }
            Err(e) => {
                self.send_error(&e, channel, &self.me_wire());
                let _ = self.conn.presence().answer_invitation(
                    &self.conn,
                    &invitation.id,
                    InvitationOutcome::Declined {
                        code: e.code,
                        text: e.text(),
                    },
                );
            }
        }
    }
}

/// Upper-cases the first letter and ends with a period, to append core
/// error texts to sgc's sentence-style texts.
fn capitalized(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    let mut chars = s.chars();
    if let Some(first) = chars.next() {
        out.extend(first.to_uppercase());
        out.push_str(chars.as_str());
    }
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}

impl Session for SgcSession {
    fn connection(&self) -> &Connection {
        &self.conn
    }

    fn on_text(&mut self, text: &str) -> Flow {
        let incoming = match wire::decode(text) {
            Ok(i) => i,
            Err(wire::Dropped(why)) => {
                // sgc has no error for malformed frames: drop them.
                tracing::debug!(conn = %self.conn.id(), %why, "sgc: frame dropped");
                return Flow::Continue;
            }
        };
        if incoming.base64 && !self.base64 {
            // The client uses EncodeBase64: answer in kind from now on.
            self.base64 = true;
            self.conn.set_flavor(FLAVOR_BASE64);
        }
        if let Some(id) = &incoming.id {
            if incoming.request == Request::Acknowledgment {
                if let Some(acks) = &self.acks {
                    acks.ack(id);
                }
                return Flow::Continue;
            }
            // Acknowledge first, then process (spec §4.10), once per id.
            self.conn.send_text(wire::acknowledgment(id));
            if !self.recent.first_time(id, Instant::now()) {
                tracing::debug!(conn = %self.conn.id(), %id, "sgc: re-sent frame acknowledged, not processed again");
                return Flow::Continue;
            }
        }
        self.handle_or_wait(incoming)
    }

    fn on_resume(&mut self) -> Flow {
        match self.held.take() {
            Some(incoming) => self.handle_or_wait(incoming),
            None => Flow::Continue,
        }
    }

    fn on_binary(&mut self, _data: &[u8]) -> Flow {
        tracing::debug!(conn = %self.conn.id(), "sgc: binary frame dropped");
        Flow::Continue
    }

    fn on_rate_limited(&mut self, limit: u32) -> Flow {
        let err = SgcError::with(
            codes::RATE_LIMITED,
            format!("More than {limit} messages per second; this frame was dropped, slow down."),
        );
        self.send_error(&err, "", &self.me_wire());
        Flow::Continue
    }

    fn on_removed(&mut self, channel: &str, reason: &str) -> Flow {
        if self.subscribed_to(channel).is_ok() {
            self.leave_channel(channel, Some(reason));
        }
        Flow::Continue
    }

    fn next_timer(&self) -> Option<Instant> {
        let ack = self
            .acks
            .as_ref()
            .and_then(|t| t.next_due(self.config.ack_timeout));
        [
            self.invitation_deadlines.peek().map(|r| r.0),
            ack,
            self.next_ack_poll,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn on_timer(&mut self, now: Instant) -> Flow {
        let mut expired = false;
        while let Some(Reverse(at)) = self.invitation_deadlines.peek() {
            if *at > now {
                break;
            }
            self.invitation_deadlines.pop();
            expired = true;
        }
        if expired {
            self.conn.presence().expire_invitations(now.into_std());
        }
        if let Some(acks) = &self.acks {
            let timeout = self.config.ack_timeout;
            self.next_ack_poll = Some(now + timeout / 2);
            match acks.due(now, timeout, self.config.ack_retries) {
                Due::Resend(frames) => {
                    for frame in frames {
                        self.conn.send_text(frame);
                    }
                }
                Due::GaveUp { unacked } => {
                    return Flow::Close(CloseReason::new(
                        CLOSE_ACK_TIMEOUT,
                        format!(
                            "ack timeout: {unacked} frames not acknowledged after {} re-sends",
                            self.config.ack_retries
                        ),
                    ));
                }
            }
        }
        Flow::Continue
    }
}

impl Drop for SgcSession {
    fn drop(&mut self) {
        // Channels first, then the member list (the core connection, dropped
        // next, would leave them in no particular order).
        if self.me.is_some() {
            self.leave_everything();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::OutboxReceiver;
    use crate::presence::{Identity, Limits, Presence};
    use crate::sgc::policy::SgcHooks;
    use serde_json::{Value, json};

    /// An embedder's policy, exercising every hook.
    struct House;

    impl SgcHooks for House {
        fn before_new_member(&self, _id: &str, name: &mut String, _info: &mut String) -> Decision {
            if name == "root" {
                return Decision::deny("Reserved name.");
            }
            *name = name.to_uppercase();
            Decision::Accept
        }
        fn before_new_channel(&self, _m: &HookMember<'_>, channel: &str) -> Decision {
            if channel.starts_with("new-") {
                Decision::Deny(None)
            } else {
                Decision::Accept
            }
        }
        fn before_new_channel_member(&self, m: &HookMember<'_>, channel: &str) -> Decision {
            if channel == "vip" && m.name != "BOSS" {
                Decision::deny("VIPs only.")
            } else {
                Decision::Accept
            }
        }
        fn before_publish(&self, _m: &HookMember<'_>, _c: Option<&str>, text: &str) -> Decision {
            if text.contains("spam") {
                Decision::Deny(None)
            } else {
                Decision::Accept
            }
        }
        fn before_send_members(&self, _m: &HookMember<'_>, channel: Option<&str>) -> Decision {
            if channel.is_none() {
                Decision::deny("Not the whole list.")
            } else {
                Decision::Accept
            }
        }
        fn before_invite(&self, _m: &HookMember<'_>, _c: &str, _invitee: &str) -> Decision {
            Decision::deny("No invitations here.")
        }
    }

    fn session(p: &Presence) -> (SgcSession, OutboxReceiver) {
        let codec = Arc::new(wire::SgcCodec::default());
        let (conn, rx) = p
            .connect(Identity::anonymous(), codec.clone(), "sgc")
            .unwrap();
        let config = SgcConfig {
            hooks: Arc::new(House),
            ..SgcConfig::default()
        };
        (SgcSession::new(conn, config, codec, None, None, false), rx)
    }

    fn frames(rx: &mut OutboxReceiver) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(item) = rx.try_recv() {
            if let Some(b) = item.text() {
                out.push(serde_json::from_str(b).unwrap());
            }
        }
        out
    }

    fn send(s: &mut SgcSession, method: &str, body: Value) {
        let mut f = json!({"jsonrpc": "2.0", "method": format!("sgc@presence@{method}")});
        if let (Some(o), Value::Object(b)) = (f.as_object_mut(), body) {
            o.extend(b);
        }
        assert_eq!(s.on_text(&f.to_string()), Flow::Continue);
    }

    fn codes_of(list: &[Value]) -> Vec<i64> {
        list.iter()
            .filter_map(|f| f["error"]["code"].as_i64())
            .collect()
    }

    #[test]
    fn embedder_hooks_map_to_sgc_codes() {
        let p = Presence::open_for_tests(Limits::default());
        let (mut s, mut rx) = session(&p);
        send(&mut s, "member@new", json!({"member": {"name": "root"}}));
        let out = frames(&mut rx);
        assert_eq!(codes_of(&out), [2]);
        assert_eq!(
            out[0]["error"]["text"],
            "Create New Member request has been denied. Reserved name."
        );
        send(&mut s, "member@new", json!({"member": {"name": "boss"}}));
        assert_eq!(frames(&mut rx)[0]["member"]["name"], "BOSS");
        send(
            &mut s,
            "channel@member@new",
            json!({"channel": {"name": "new-room"}}),
        );
        let out = frames(&mut rx);
        assert_eq!(codes_of(&out), [6]);
        assert_eq!(
            out[0]["error"]["text"],
            "Create New Channel request has been denied."
        );
        send(
            &mut s,
            "channel@member@new",
            json!({"channel": {"name": "vip"}}),
        );
        assert_eq!(
            frames(&mut rx)[0]["method"],
            "sgc@presence@channel@member@new"
        );
        send(
            &mut s,
            "publish@msg",
            json!({"channel": {"name": "vip"}, "message": {"text": "spam!"}}),
        );
        assert_eq!(codes_of(&frames(&mut rx)), [20]);
        send(
            &mut s,
            "publish@msg",
            json!({"message": {"text": "spam to all"}}),
        );
        assert_eq!(
            codes_of(&frames(&mut rx)),
            [20],
            "a refused global publish is reported"
        );
        send(&mut s, "get@members", json!({"channel": {"name": ""}}));
        let out = frames(&mut rx);
        assert_eq!(codes_of(&out), [30]);
        assert_eq!(
            out[0]["error"]["text"],
            "Send Members request has been denied. Not the whole list."
        );
        send(&mut s, "get@members", json!({"channel": {"name": "vip"}}));
        assert_eq!(frames(&mut rx)[0]["method"], "sgc@presence@send@members");

        let (mut other, mut other_rx) = session(&p);
        send(
            &mut other,
            "member@new",
            json!({"member": {"name": "guest"}}),
        );
        frames(&mut other_rx);
        send(
            &mut other,
            "channel@member@new",
            json!({"channel": {"name": "vip"}}),
        );
        let out = frames(&mut other_rx);
        assert_eq!(codes_of(&out), [10]);
        assert_eq!(
            out[0]["error"]["text"],
            "Create Subscription request has been denied. VIPs only."
        );
        let boss_id = s.session_id.to_string();
        send(
            &mut other,
            "channel@invitation",
            json!({"channel": {"name": "lobby"}, "members": [{"id": boss_id}]}),
        );
        let out = frames(&mut other_rx);
        assert_eq!(codes_of(&out), [40]);
        assert_eq!(out[0]["member"]["name"], "BOSS");
        drop(other);
        // The boss saw guest join and leave the server.
        let methods: Vec<Value> = frames(&mut rx)
            .into_iter()
            .map(|f| f["method"].clone())
            .collect();
        assert_eq!(
            methods,
            [
                json!("sgc@presence@member@new"),
                json!("sgc@presence@member@remove")
            ]
        );
    }

    #[test]
    fn channel_names() {
        assert!(check_channel("room-42").is_ok());
        assert!(check_channel("presence.chat room").is_err());
        assert!(check_channel("").is_err());
        assert!(check_channel("#sgc").is_err());
        assert!(check_channel("a\nb").is_err());
        let longest = crate::names::MAX_CHANNEL_CHARS;
        assert!(check_channel(&"x".repeat(longest)).is_ok());
        assert!(check_channel(&"x".repeat(longest + 1)).is_err());
    }

    #[test]
    fn error_texts_keep_the_original_sentence() {
        assert_eq!(SgcError::new(11).text(), "Subscription already exists.");
        assert_eq!(SgcError::new(5).text(), "Channel not exists");
        assert_eq!(
            SgcError::with(10, "The channel is full.").text(),
            "Create Subscription request has been denied. The channel is full."
        );
        assert_eq!(SgcError::with(99, "Custom.").text(), "Custom.");
        assert_eq!(capitalized("already subscribed"), "Already subscribed.");
    }
}
