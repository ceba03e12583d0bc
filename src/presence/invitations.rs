//! Invitations: a member asks another member to join a channel; the invitee
//! accepts, or declines with a code and a text, or the invitation expires.
//!
//! The core keeps the pending invitations and delivers two events through
//! each recipient's [`Codec::encode_invitation`](super::Codec::encode_invitation):
//! [`InvitationEvent::Invited`] to every connection of the invitee, and
//! [`InvitationEvent::Answered`] to the inviting connection. Front ends whose
//! codec does not render invitations (the default) simply do not receive
//! them; an invitation no connection of the invitee can receive is refused
//! with [`InviteError::NotDeliverable`].
//!
//! Joining the channel on acceptance is left to the front end, so that its
//! own subscribe rules, hooks and replies apply: it subscribes the invitee
//! first and then reports the outcome with [`Presence::answer_invitation`]
//! (accepted, or declined with the subscribe error).
//!
//! Expiry is lazy: an expired invitation can no longer be answered, and
//! [`Presence::expire_invitations`] (called by the inviter's session when
//! the deadline it got from [`Presence::invite`] passes) removes expired
//! invitations and tells their inviters.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::connection::ConnShared;
use super::types::{Member, MemberView};
use super::{Connection, Presence, fanout, lock};
use crate::ids::{self, ConnId};

/// Pending invitations one connection may have sent at a time.
pub const MAX_PENDING_INVITATIONS_PER_CONNECTION: usize = 256;

/// A pending invitation.
#[derive(Clone, Debug, PartialEq)]
pub struct Invitation {
    /// A ULID naming the invitation.
    pub id: String,
    /// The channel the invitee is asked to join.
    pub channel: Arc<str>,
    /// The inviting member (its key and connection-level member data at
    /// the time of the invitation).
    pub inviter: Member,
    /// The inviting connection; the answer goes there.
    pub inviter_conn: ConnId,
    /// The member key of the invitee.
    pub invitee: Arc<str>,
    /// After this the invitation can no longer be answered.
    pub expires_at: Instant,
}

/// How an invitation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InvitationOutcome {
    /// The invitee accepted (and, for protocols that subscribe on
    /// acceptance, is now in the channel).
    Accepted,
    /// The invitee declined, or accepting failed; `code` and `text` are the
    /// invitee's reason or the error that prevented joining.
    Declined {
        /// Reason code (protocol- or application-defined).
        code: i64,
        /// Reason text.
        text: String,
    },
    /// Nobody answered before the invitation expired.
    Expired,
    /// The invitee disconnected (its last connection) before answering.
    InviteeLeft,
}

impl InvitationOutcome {
    /// True for [`InvitationOutcome::Accepted`].
    pub fn is_accepted(&self) -> bool {
        matches!(self, InvitationOutcome::Accepted)
    }
}

/// An invitation event, borrowed for encoding.
#[derive(Clone, Copy, Debug)]
pub enum InvitationEvent<'a> {
    /// Delivered to each connection of the invitee.
    Invited(&'a Invitation),
    /// Delivered to the inviting connection.
    Answered {
        /// The invitation that was answered.
        invitation: &'a Invitation,
        /// The invitee: its key and current connection-level member data
        /// (`null` if it has no connection any more).
        invitee: MemberView<'a>,
        /// How it ended.
        outcome: &'a InvitationOutcome,
    },
}

/// Why [`Presence::invite`] refused an invitation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InviteError {
    /// A member cannot invite itself.
    SelfInvite,
    /// No connection is a member under that key.
    UnknownMember,
    /// The invitee is already a member of the channel.
    AlreadyMember,
    /// No connection of the invitee speaks a protocol that shows invitations.
    NotDeliverable,
    /// The inviting connection already has this many pending invitations.
    TooManyPending {
        /// The limit.
        limit: usize,
    },
    /// The inviting connection is closing.
    Closed,
}

impl fmt::Display for InviteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InviteError::SelfInvite => write!(f, "a member cannot invite itself"),
            InviteError::UnknownMember => write!(f, "no member with that id is connected"),
            InviteError::AlreadyMember => write!(f, "the member is already in the channel"),
            InviteError::NotDeliverable => write!(
                f,
                "the member is connected only through a protocol that cannot show invitations"
            ),
            InviteError::TooManyPending { limit } => write!(
                f,
                "this connection already has {limit} pending invitations, the maximum; wait for answers or expiry"
            ),
            InviteError::Closed => write!(f, "the connection is closing"),
        }
    }
}

impl std::error::Error for InviteError {}

/// Why [`Presence::answer_invitation`] failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnswerError {
    /// No pending invitation with that id for this member: never sent,
    /// already answered, cancelled or expired.
    NotFound,
}

impl fmt::Display for AnswerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnswerError::NotFound => write!(
                f,
                "no pending invitation: it was already answered, cancelled or has expired"
            ),
        }
    }
}

impl std::error::Error for AnswerError {}

/// The pending invitations, as plain data.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    pending: HashMap<String, Invitation>,
}

impl Registry {
    fn same_target(a: &Invitation, b: &Invitation) -> bool {
        a.inviter_conn == b.inviter_conn && a.channel == b.channel && a.invitee == b.invitee
    }

    /// Adds an invitation. A pending invitation from the same connection to
    /// the same invitee for the same channel is replaced (and returned), so
    /// inviting again renews the invitation instead of duplicating it.
    fn insert(&mut self, inv: Invitation) -> Option<Invitation> {
        let old = self
            .pending
            .values()
            .find(|p| Self::same_target(p, &inv))
            .map(|p| p.id.clone());
        let replaced = old.and_then(|id| self.pending.remove(&id));
        self.pending.insert(inv.id.clone(), inv);
        replaced
    }

    /// Would inserting `inv` add an entry (rather than renew one)?
    fn is_new(&self, inv: &Invitation) -> bool {
        !self.pending.values().any(|p| Self::same_target(p, inv))
    }

    fn count_from(&self, conn: ConnId) -> usize {
        self.pending
            .values()
            .filter(|p| p.inviter_conn == conn)
            .count()
    }

    /// Unexpired invitations for `invitee`, oldest first.
    fn pending_for(&self, invitee: &str, now: Instant) -> Vec<Invitation> {
        let mut list: Vec<Invitation> = self
            .pending
            .values()
            .filter(|p| &*p.invitee == invitee && p.expires_at > now)
            .cloned()
            .collect();
        // ULIDs sort in creation order.
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    /// Removes and returns the invitation `id` if it is addressed to
    /// `invitee` and not expired. An expired one stays until
    /// [`Registry::take_expired`] so that its inviter is told.
    fn take(&mut self, id: &str, invitee: &str, now: Instant) -> Result<Invitation, AnswerError> {
        match self.pending.get(id) {
            Some(p) if &*p.invitee == invitee && p.expires_at > now => {
                self.pending.remove(id).ok_or(AnswerError::NotFound)
            }
            _ => Err(AnswerError::NotFound),
        }
    }

    fn take_expired(&mut self, now: Instant) -> Vec<Invitation> {
        let ids: Vec<String> = self
            .pending
            .values()
            .filter(|p| p.expires_at <= now)
            .map(|p| p.id.clone())
            .collect();
        let mut out: Vec<Invitation> = ids
            .iter()
            .filter_map(|id| self.pending.remove(id))
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    fn remove(&mut self, id: &str) -> Option<Invitation> {
        self.pending.remove(id)
    }

    /// Drops every invitation sent from `conn`; returns how many.
    fn remove_from(&mut self, conn: ConnId) -> usize {
        let before = self.pending.len();
        self.pending.retain(|_, p| p.inviter_conn != conn);
        before - self.pending.len()
    }

    fn take_for_invitee(&mut self, invitee: &str) -> Vec<Invitation> {
        let ids: Vec<String> = self
            .pending
            .values()
            .filter(|p| &*p.invitee == invitee)
            .map(|p| p.id.clone())
            .collect();
        let mut out: Vec<Invitation> = ids
            .iter()
            .filter_map(|id| self.pending.remove(id))
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
}

impl Presence {
    /// The open connections that are members under `key` (a user id, or
    /// the connection id of an anonymous connection).
    fn member_connections(&self, key: &str) -> Vec<Arc<ConnShared>> {
        let users = lock(&self.inner.users);
        let conns = lock(&self.inner.conns);
        if let Some(list) = users.get(key) {
            return list
                .iter()
                .filter_map(|id| conns.get(id).cloned())
                .collect();
        }
        ConnId::parse(key)
            .and_then(|id| conns.get(&id).cloned())
            .filter(|c| c.user_id().is_none())
            .into_iter()
            .collect()
    }

    /// Invites the member `invitee` (a member key, see
    /// [`Connection::member_key`]) to `channel` for `ttl`. The invitation is
    /// delivered to every connection of the invitee whose codec renders
    /// invitations. Inviting the same member to the same channel again from
    /// the same connection renews the invitation (new id and deadline).
    pub fn invite(
        &self,
        inviter: &Connection,
        channel: &str,
        invitee: &str,
        ttl: Duration,
    ) -> Result<Invitation, InviteError> {
        let shared = &inviter.shared;
        if shared.closing.load(std::sync::atomic::Ordering::Acquire) {
            return Err(InviteError::Closed);
        }
        let inviter_key = shared.member_key();
        if *inviter_key == *invitee {
            return Err(InviteError::SelfInvite);
        }
        let targets = self.member_connections(invitee);
        if targets.is_empty() {
            return Err(InviteError::UnknownMember);
        }
        if let Some(ch) = self.existing_channel(channel)
            && lock(&ch).member(invitee).is_some()
        {
            return Err(InviteError::AlreadyMember);
        }
        let invitation = Invitation {
            id: ids::ulid(),
            channel: Arc::from(channel),
            inviter: Member {
                user_id: inviter_key,
                info: inviter.info(),
            },
            inviter_conn: shared.id,
            invitee: Arc::from(invitee),
            expires_at: Instant::now() + ttl,
        };
        {
            let mut registry = lock(&self.inner.invitations);
            let limit = MAX_PENDING_INVITATIONS_PER_CONNECTION;
            if registry.is_new(&invitation) && registry.count_from(shared.id) >= limit {
                return Err(InviteError::TooManyPending { limit });
            }
            registry.insert(invitation.clone());
        }
        let delivered =
            fanout::deliver_invitation(&targets, &InvitationEvent::Invited(&invitation));
        if delivered == 0 {
            lock(&self.inner.invitations).remove(&invitation.id);
            return Err(InviteError::NotDeliverable);
        }
        Ok(invitation)
    }

    /// The unexpired invitations addressed to `invitee`'s member key,
    /// oldest first.
    pub fn pending_invitations(&self, invitee: &Connection) -> Vec<Invitation> {
        lock(&self.inner.invitations).pending_for(&invitee.member_key(), Instant::now())
    }

    /// Ends the invitation `id` addressed to `invitee` with `outcome` and
    /// tells the inviting connection (if it is still open). Returns the
    /// invitation.
    pub fn answer_invitation(
        &self,
        invitee: &Connection,
        id: &str,
        outcome: InvitationOutcome,
    ) -> Result<Invitation, AnswerError> {
        let key = invitee.member_key();
        let invitation = lock(&self.inner.invitations).take(id, &key, Instant::now())?;
        let info = invitee.info();
        self.notify_inviter(
            &invitation,
            MemberView {
                user_id: &key,
                info: &info,
            },
            &outcome,
        );
        Ok(invitation)
    }

    /// Removes the invitations that expired by `now` and tells each
    /// inviter ([`InvitationOutcome::Expired`]). Returns how many expired.
    pub fn expire_invitations(&self, now: Instant) -> usize {
        let expired = lock(&self.inner.invitations).take_expired(now);
        for invitation in &expired {
            let info = self.current_info(&invitation.invitee);
            self.notify_inviter(
                invitation,
                MemberView {
                    user_id: &invitation.invitee,
                    info: &info,
                },
                &InvitationOutcome::Expired,
            );
        }
        expired.len()
    }

    /// Called when a connection is removed: its own invitations are
    /// dropped, and if it was the invitee's last connection, the
    /// invitations to that member end with [`InvitationOutcome::InviteeLeft`].
    pub(super) fn invitations_on_disconnect(&self, conn: &Arc<ConnShared>) {
        let key = conn.member_key();
        let gone = self.member_connections(&key).is_empty();
        let orphaned = {
            let mut registry = lock(&self.inner.invitations);
            registry.remove_from(conn.id);
            if gone {
                registry.take_for_invitee(&key)
            } else {
                Vec::new()
            }
        };
        if orphaned.is_empty() {
            return;
        }
        let info = conn.info.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for invitation in &orphaned {
            self.notify_inviter(
                invitation,
                MemberView {
                    user_id: &key,
                    info: &info,
                },
                &InvitationOutcome::InviteeLeft,
            );
        }
    }

    /// The connection-level member data of the first open connection of
    /// `key`, or `null`.
    fn current_info(&self, key: &str) -> Arc<Value> {
        self.member_connections(key)
            .first()
            .map(|c| c.info.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .unwrap_or_else(|| Arc::new(Value::Null))
    }

    fn notify_inviter(
        &self,
        invitation: &Invitation,
        invitee: MemberView<'_>,
        outcome: &InvitationOutcome,
    ) -> bool {
        let target = lock(&self.inner.conns)
            .get(&invitation.inviter_conn)
            .cloned();
        match target {
            Some(conn) => {
                let event = InvitationEvent::Answered {
                    invitation,
                    invitee,
                    outcome,
                };
                fanout::deliver_invitation(&[conn], &event) == 1
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{Outbound, OutboxReceiver};
    use crate::presence::{Codec, Event, Identity, Limits, SubscribeOptions};
    use serde_json::json;

    /// Renders invitation events as short text lines.
    struct InviteCodec;

    impl Codec for InviteCodec {
        fn encode(&self, _event: &Event<'_>, _flavor: u8) -> Option<Outbound> {
            None
        }

        fn encode_invitation(&self, event: &InvitationEvent<'_>, flavor: u8) -> Option<Outbound> {
            let text = match event {
                InvitationEvent::Invited(inv) => {
                    format!(
                        "invited {} to {} by {} f{flavor}",
                        inv.invitee, inv.channel, inv.inviter.user_id
                    )
                }
                InvitationEvent::Answered {
                    invitation,
                    invitee,
                    outcome,
                } => format!(
                    "answer from {} ({}) on {}: {outcome:?}",
                    invitee.user_id, invitee.info, invitation.channel
                ),
            };
            Some(Outbound::Text(text.into()))
        }
    }

    /// Renders nothing (a protocol without invitations).
    struct PlainCodec;

    impl Codec for PlainCodec {
        fn encode(&self, _event: &Event<'_>, _flavor: u8) -> Option<Outbound> {
            None
        }
    }

    fn texts(rx: &mut OutboxReceiver) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(item) = rx.try_recv() {
            if let Some(b) = item.text() {
                out.push(b.to_string());
            }
        }
        out
    }

    fn user(p: &Presence, uid: &str) -> (Connection, OutboxReceiver) {
        p.connect(
            Identity::user(uid, json!({"name": uid})),
            Arc::new(InviteCodec),
            "test",
        )
        .unwrap()
    }

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn invitee_gets_the_invitation_and_inviter_the_answer() {
        let p = Presence::open_for_tests(Limits::default());
        let (alice, mut alice_rx) = user(&p, "alice");
        let (bob, mut bob_rx) = user(&p, "bob");
        bob.set_flavor(3);
        let inv = p.invite(&alice, "room", "bob", TTL).unwrap();
        assert_eq!(&*inv.inviter.user_id, "alice");
        assert_eq!(*inv.inviter.info, json!({"name": "alice"}));
        assert_eq!(texts(&mut bob_rx), ["invited bob to room by alice f3"]);
        assert_eq!(p.pending_invitations(&bob), vec![inv.clone()]);
        assert!(p.pending_invitations(&alice).is_empty());
        // Only the invitee can answer.
        assert_eq!(
            p.answer_invitation(&alice, &inv.id, InvitationOutcome::Accepted),
            Err(AnswerError::NotFound)
        );
        let declined = InvitationOutcome::Declined {
            code: 1,
            text: "Invitation refused".into(),
        };
        assert_eq!(
            p.answer_invitation(&bob, &inv.id, declined.clone()),
            Ok(inv.clone())
        );
        assert_eq!(
            texts(&mut alice_rx),
            [format!(
                "answer from bob ({{\"name\":\"bob\"}}) on room: {declined:?}"
            )]
        );
        // Answered once only.
        assert_eq!(
            p.answer_invitation(&bob, &inv.id, InvitationOutcome::Accepted),
            Err(AnswerError::NotFound)
        );
        assert!(p.pending_invitations(&bob).is_empty());
    }

    #[test]
    fn self_unknown_and_existing_members_are_refused() {
        let p = Presence::open_for_tests(Limits::default());
        let (alice, _a) = user(&p, "alice");
        let (bob, _b) = user(&p, "bob");
        assert_eq!(
            p.invite(&alice, "room", "alice", TTL),
            Err(InviteError::SelfInvite)
        );
        assert_eq!(
            p.invite(&alice, "room", "carol", TTL),
            Err(InviteError::UnknownMember)
        );
        let opts = SubscribeOptions {
            member_info: Some(Arc::new(Value::Null)),
            presence_events: true,
            ..SubscribeOptions::default()
        };
        p.subscribe(&bob, "room", opts, |_| {}).unwrap();
        assert_eq!(
            p.invite(&alice, "room", "bob", TTL),
            Err(InviteError::AlreadyMember)
        );
        // A plain subscriber (no membership) of the channel can be invited.
        assert!(p.invite(&bob, "room", "alice", TTL).is_ok());
    }

    #[test]
    fn anonymous_members_are_addressed_by_connection_id() {
        let p = Presence::open_for_tests(Limits::default());
        let (alice, _a) = user(&p, "alice");
        let (anon, mut anon_rx) = p
            .connect(Identity::anonymous(), Arc::new(InviteCodec), "test")
            .unwrap();
        let key = anon.member_key();
        assert_eq!(&*key, anon.id().to_string());
        p.invite(&alice, "room", &key, TTL).unwrap();
        assert_eq!(
            texts(&mut anon_rx),
            [format!("invited {key} to room by alice f0")]
        );
        // A user's connection id is not a member key.
        let id = alice.id().to_string();
        assert_eq!(
            p.invite(&anon, "room", &id, TTL),
            Err(InviteError::UnknownMember)
        );
    }

    #[test]
    fn protocols_without_invitations_cannot_be_invited() {
        let p = Presence::open_for_tests(Limits::default());
        let (alice, _a) = user(&p, "alice");
        let (_plain, _rx) = p
            .connect(
                Identity::user("pam", Value::Null),
                Arc::new(PlainCodec),
                "plain",
            )
            .unwrap();
        assert_eq!(
            p.invite(&alice, "room", "pam", TTL),
            Err(InviteError::NotDeliverable)
        );
        assert_eq!(lock(&p.inner.invitations).pending.len(), 0);
    }

    #[test]
    fn expired_invitations_cannot_be_answered_and_tell_the_inviter() {
        let p = Presence::open_for_tests(Limits::default());
        let (alice, mut alice_rx) = user(&p, "alice");
        let (bob, _b) = user(&p, "bob");
        let inv = p.invite(&alice, "room", "bob", Duration::ZERO).unwrap();
        assert!(p.pending_invitations(&bob).is_empty());
        assert_eq!(
            p.answer_invitation(&bob, &inv.id, InvitationOutcome::Accepted),
            Err(AnswerError::NotFound)
        );
        assert_eq!(p.expire_invitations(Instant::now()), 1);
        assert_eq!(
            texts(&mut alice_rx),
            ["answer from bob ({\"name\":\"bob\"}) on room: Expired"]
        );
        assert_eq!(p.expire_invitations(Instant::now()), 0);
    }

    #[test]
    fn inviting_again_renews_and_the_pending_count_is_bounded() {
        let p = Presence::open_for_tests(Limits::default());
        let (alice, _a) = user(&p, "alice");
        let (bob, _b) = user(&p, "bob");
        let first = p.invite(&alice, "room", "bob", TTL).unwrap();
        let second = p.invite(&alice, "room", "bob", TTL).unwrap();
        assert_ne!(first.id, second.id);
        assert_eq!(p.pending_invitations(&bob), vec![second]);
        for i in 1..MAX_PENDING_INVITATIONS_PER_CONNECTION {
            p.invite(&alice, &format!("room{i}"), "bob", TTL).unwrap();
        }
        assert_eq!(
            p.invite(&alice, "one-more", "bob", TTL),
            Err(InviteError::TooManyPending {
                limit: MAX_PENDING_INVITATIONS_PER_CONNECTION
            })
        );
        // Renewing an existing one is still allowed at the limit.
        assert!(p.invite(&alice, "room", "bob", TTL).is_ok());
    }

    #[test]
    fn disconnects_cancel_invitations() {
        let p = Presence::open_for_tests(Limits::default());
        let (alice, mut alice_rx) = user(&p, "alice");
        let (bob, _b) = user(&p, "bob");
        let (bob2, _b2) = user(&p, "bob");
        let (carol, _c) = user(&p, "carol");
        p.invite(&alice, "room", "bob", TTL).unwrap();
        // The invitee still has another connection: nothing happens.
        drop(bob);
        assert!(texts(&mut alice_rx).is_empty());
        assert_eq!(p.pending_invitations(&bob2).len(), 1);
        drop(bob2);
        assert_eq!(
            texts(&mut alice_rx),
            ["answer from bob ({\"name\":\"bob\"}) on room: InviteeLeft"]
        );
        // The inviter leaving drops its invitations silently.
        p.invite(&alice, "room", "carol", TTL).unwrap();
        drop(alice);
        assert!(p.pending_invitations(&carol).is_empty());
    }

    #[test]
    fn registry_take_checks_invitee_and_deadline() {
        let now = Instant::now();
        let mut reg = Registry::default();
        let inv = Invitation {
            id: "01".into(),
            channel: Arc::from("c"),
            inviter: Member {
                user_id: Arc::from("a"),
                info: Arc::new(Value::Null),
            },
            inviter_conn: ConnId(1),
            invitee: Arc::from("b"),
            expires_at: now + TTL,
        };
        assert!(reg.insert(inv.clone()).is_none());
        assert_eq!(reg.take("01", "x", now), Err(AnswerError::NotFound));
        assert_eq!(reg.take("01", "b", now + TTL), Err(AnswerError::NotFound));
        assert_eq!(reg.take_expired(now).len(), 0);
        assert_eq!(reg.take("01", "b", now), Ok(inv));
        assert_eq!(reg.take("01", "b", now), Err(AnswerError::NotFound));
    }
}
