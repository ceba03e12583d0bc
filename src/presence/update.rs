//! Changing an existing subscription in place: what it receives, and
//! whether (and as whom) it is a member of the channel.
//!
//! Some protocols need more than one role per (connection, channel): a
//! SocketCluster socket may both subscribe to `room` (receive its messages,
//! be present in it) and track `presence>room` (receive its member events),
//! in any order, and it may log in, log out or switch user while its
//! subscriptions stay open (`#authenticate`, `#removeAuthToken`). The core
//! keeps one subscription per (connection, channel); this module lets an
//! adapter change that subscription without leaving and re-joining, so
//! nobody sees a spurious leave/join.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use super::channel::{BudgetError, Channel, Origin};
use super::fanout;
use super::types::MemberChange;
use super::{Connection, Presence};

/// The new state of a subscription, for [`Presence::update_subscription`].
#[derive(Clone, Debug, PartialEq)]
pub struct SubscriptionUpdate {
    /// Be a member as this user id with this member data; None: a plain
    /// subscriber (an existing membership ends). The user id must come from
    /// verified auth; it is given here, not taken from the connection,
    /// because some protocols authenticate on an open connection.
    pub member: Option<(Arc<str>, Arc<Value>)>,
    /// Whether the subscription receives member events.
    pub presence_events: bool,
    /// Whether the subscription receives channel messages.
    pub receive_messages: bool,
}

/// Why [`Presence::update_subscription`] failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpdateSubscriptionError {
    /// The connection is not subscribed to the channel.
    NotSubscribed,
    /// The membership would exceed the channel's member-data budget.
    CapacityReached {
        /// The budget in bytes.
        limit: usize,
    },
    /// The channel is at its member limit.
    MemberLimitReached {
        /// The limit.
        limit: usize,
    },
}

impl fmt::Display for UpdateSubscriptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpdateSubscriptionError::NotSubscribed => {
                write!(f, "not subscribed to this channel; subscribe first")
            }
            UpdateSubscriptionError::CapacityReached { limit } => write!(
                f,
                "joining would push the channel's member data over {limit} bytes; use smaller member data or another channel"
            ),
            UpdateSubscriptionError::MemberLimitReached { limit } => {
                write!(f, "the channel already has {limit} members, the maximum")
            }
        }
    }
}

impl std::error::Error for UpdateSubscriptionError {}

impl Presence {
    /// Changes `conn`'s existing subscription to `channel` in place.
    ///
    /// Delivery flags change at once. Membership: joining fires memberAdded
    /// (first presence of that user), keeping the same user id with other
    /// data fires memberUpdated, leaving fires memberRemoved (last
    /// presence), and switching to another user id is a leave of the old id
    /// followed by a join of the new one. Unlike [`Presence::subscribe`],
    /// the connection itself gets these events too if it (now) receives
    /// presence events: there is no snapshot to carry them.
    ///
    /// If the new membership does not fit the channel's limits, the
    /// subscription stays, without membership, and the error says why.
    /// Returns the member change of the new membership (or of the removal
    /// when leaving).
    pub fn update_subscription(
        &self,
        conn: &Connection,
        channel: &str,
        mut update: SubscriptionUpdate,
    ) -> Result<MemberChange, UpdateSubscriptionError> {
        // A rule may hide the channel's member events from subscribers.
        update.presence_events &= self.members_shown(channel);
        let ch = self
            .existing_channel(channel)
            .ok_or(UpdateSubscriptionError::NotSubscribed)?;
        let mut guard = self.lock_channel(&ch);
        let id = conn.id();
        let was_plain = guard.is_plain_subscriber(&id);
        let result = self.update_locked(&mut guard, conn, update);
        guard.subscriber_changed(&id, was_plain);
        result
    }

    /// [`Presence::update_subscription`] on the locked channel.
    fn update_locked(
        &self,
        guard: &mut Channel,
        conn: &Connection,
        update: SubscriptionUpdate,
    ) -> Result<MemberChange, UpdateSubscriptionError> {
        let shared = &conn.shared;
        let origin = Origin::Local(shared.id);
        let old_key = {
            let Some(sub) = guard.subscribers.get_mut(&shared.id) else {
                return Err(UpdateSubscriptionError::NotSubscribed);
            };
            sub.presence_events = update.presence_events;
            sub.receive_messages = update.receive_messages;
            // A hidden user (the connection's, or the one named here, for
            // protocols that log in on an open connection) holds no
            // presence; the membership is kept for when they become
            // visible (see `visibility.rs`).
            let member_hidden = update
                .member
                .as_ref()
                .is_some_and(|(key, _)| !self.is_user_visible(Some(key)));
            if member_hidden || shared.hidden.load(std::sync::atomic::Ordering::Acquire) {
                sub.hidden = true;
                sub.hidden_member = update.member.map(Box::new);
                let old = sub.member_key.take();
                let mut change = MemberChange::Unchanged;
                if let Some(old) = old {
                    if let Some((c, entry)) = guard.remove_presence(&old, &origin) {
                        fanout::member_event(guard, c, &old, entry.as_ref(), None);
                        change = c;
                    }
                    shared.subs().insert(guard.name.clone(), None);
                }
                return Ok(change);
            }
            sub.hidden = false;
            sub.hidden_member = None;
            sub.member_key.clone()
        };
        let name = guard.name.clone();
        let set_key = |guard: &mut Channel, key: Option<Arc<str>>| {
            if let Some(sub) = guard.subscribers.get_mut(&shared.id) {
                sub.member_key = key.clone();
            }
            shared.subs().insert(name.clone(), key);
        };
        let budget = self.budget(guard);
        let budget_error = |e: BudgetError| match e {
            BudgetError::Bytes => UpdateSubscriptionError::CapacityReached {
                limit: budget.max_bytes,
            },
            BudgetError::Members => UpdateSubscriptionError::MemberLimitReached {
                limit: budget.max_members,
            },
        };
        match (old_key, update.member) {
            (None, None) => Ok(MemberChange::Unchanged),
            (Some(old), Some((key, info))) if old == key => {
                match guard.update_presence(&key, &origin, info, budget) {
                    Ok(Some(change)) => {
                        fanout::member_event(guard, change, &key, None, None);
                        Ok(change)
                    }
                    // The subscription's presence is always there; keep
                    // the state consistent if it somehow is not.
                    Ok(None) => {
                        set_key(guard, None);
                        Ok(MemberChange::Unchanged)
                    }
                    Err(e) => Err(budget_error(e)),
                }
            }
            (old, new) => {
                let mut result = Ok(MemberChange::Unchanged);
                if let Some(old) = old {
                    if let Some((change, entry)) = guard.remove_presence(&old, &origin) {
                        fanout::member_event(guard, change, &old, entry.as_ref(), None);
                        result = Ok(change);
                    }
                    set_key(guard, None);
                }
                if let Some((key, info)) = new {
                    result = match guard.add_presence(&key, origin, info, budget) {
                        Ok(change) => {
                            set_key(guard, Some(key.clone()));
                            fanout::member_event(guard, change, &key, None, None);
                            Ok(change)
                        }
                        Err(e) => Err(budget_error(e)),
                    };
                }
                result
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{Outbound, OutboxReceiver};
    use crate::presence::{Codec, Event, Identity, Limits, SubscribeOptions};
    use serde_json::json;

    /// Renders events as short text: `added:jim`, `removed:jim`,
    /// `updated:jim`, `msg:<channel>`.
    struct TextCodec;

    impl Codec for TextCodec {
        fn encode(&self, event: &Event<'_>, _flavor: u8) -> Option<Outbound> {
            let text = match event {
                Event::Member { change, member, .. } => {
                    let what = match change {
                        MemberChange::Added => "added",
                        MemberChange::Removed => "removed",
                        MemberChange::Updated => "updated",
                        MemberChange::Unchanged => "unchanged",
                    };
                    format!("{what}:{}", member.user_id)
                }
                Event::Message(m) => format!("msg:{}", m.channel),
                Event::Direct(d) => format!("direct:{}", d.event),
            };
            Some(Outbound::Text(text.into()))
        }
    }

    use crate::outbox::drain_text as drain;

    fn connect(p: &Presence) -> (Connection, OutboxReceiver) {
        p.connect(Identity::anonymous(), Arc::new(TextCodec), "test")
            .expect("connect")
    }

    fn plain() -> SubscribeOptions {
        SubscribeOptions::default()
    }

    fn update(
        member: Option<&str>,
        presence_events: bool,
        receive_messages: bool,
    ) -> SubscriptionUpdate {
        SubscriptionUpdate {
            member: member.map(|m| (Arc::from(m), Arc::new(Value::Null))),
            presence_events,
            receive_messages,
        }
    }

    fn message(channel: &str) -> crate::presence::ChannelMessage {
        crate::presence::ChannelMessage {
            id: crate::ids::ulid(),
            channel: Arc::from(channel),
            event: "e".into(),
            data: None,
            sender: None,
        }
    }

    #[test]
    fn not_subscribed_is_an_error() {
        let p = Presence::open_for_tests(Limits::default());
        let (a, _rx) = connect(&p);
        assert_eq!(
            p.update_subscription(&a, "room", update(Some("alice"), true, true)),
            Err(UpdateSubscriptionError::NotSubscribed)
        );
        assert!(p.members("room").is_empty());
    }

    #[test]
    fn a_watcher_can_start_receiving_messages_and_become_a_member() {
        let p = Presence::open_for_tests(Limits::default());
        let (watcher, mut wrx) = connect(&p);
        let (a, mut arx) = connect(&p);
        p.subscribe(
            &watcher,
            "room",
            SubscribeOptions {
                presence_events: true,
                receive_messages: false,
                ..plain()
            },
            |_| {},
        )
        .unwrap();
        p.subscribe(
            &a,
            "room",
            SubscribeOptions {
                presence_events: true,
                receive_messages: false,
                ..plain()
            },
            |_| {},
        )
        .unwrap();
        assert_eq!(
            p.publish(&message("room")),
            0,
            "watchers only: nobody receives messages"
        );

        let change = p.update_subscription(&a, "room", update(Some("alice"), true, true));
        assert_eq!(change, Ok(MemberChange::Added));
        assert_eq!(drain(&mut wrx), ["added:alice"]);
        // The updater receives its own member event: it has no snapshot.
        assert_eq!(drain(&mut arx), ["added:alice"]);
        assert_eq!(p.members("room").len(), 1);
        assert_eq!(p.publish(&message("room")), 1);
        assert_eq!(drain(&mut arx), ["msg:room"]);
        assert!(drain(&mut wrx).is_empty());
    }

    #[test]
    fn leaving_membership_keeps_the_subscription() {
        let p = Presence::open_for_tests(Limits::default());
        let (watcher, mut wrx) = connect(&p);
        let (a, mut arx) = connect(&p);
        p.subscribe(
            &watcher,
            "room",
            SubscribeOptions {
                presence_events: true,
                ..plain()
            },
            |_| {},
        )
        .unwrap();
        p.subscribe(&a, "room", plain(), |_| {}).unwrap();
        p.update_subscription(&a, "room", update(Some("alice"), false, true))
            .unwrap();
        assert_eq!(drain(&mut wrx), ["added:alice"]);
        assert!(drain(&mut arx).is_empty(), "a has no presence events");

        assert_eq!(
            p.update_subscription(&a, "room", update(None, false, true)),
            Ok(MemberChange::Removed)
        );
        assert_eq!(drain(&mut wrx), ["removed:alice"]);
        assert!(p.members("room").is_empty());
        assert!(a.is_subscribed("room"));
        assert_eq!(p.publish(&message("room")), 2);
        // Dropping the connection later removes nothing more.
        drain(&mut wrx);
        drop(a);
        assert!(drain(&mut wrx).is_empty());
    }

    #[test]
    fn a_second_connection_of_a_user_leaving_is_no_event() {
        let p = Presence::open_for_tests(Limits::default());
        let (watcher, mut wrx) = connect(&p);
        let (a1, _r1) = connect(&p);
        let (a2, _r2) = connect(&p);
        p.subscribe(
            &watcher,
            "room",
            SubscribeOptions {
                presence_events: true,
                ..plain()
            },
            |_| {},
        )
        .unwrap();
        for a in [&a1, &a2] {
            p.subscribe(a, "room", plain(), |_| {}).unwrap();
        }
        assert_eq!(
            p.update_subscription(&a1, "room", update(Some("alice"), false, true)),
            Ok(MemberChange::Added)
        );
        assert_eq!(
            p.update_subscription(&a2, "room", update(Some("alice"), false, true)),
            Ok(MemberChange::Unchanged)
        );
        assert_eq!(drain(&mut wrx), ["added:alice"]);
        assert_eq!(
            p.update_subscription(&a1, "room", update(None, false, true)),
            Ok(MemberChange::Unchanged)
        );
        assert!(drain(&mut wrx).is_empty());
        drop(a2);
        assert_eq!(drain(&mut wrx), ["removed:alice"]);
    }

    #[test]
    fn switching_user_is_a_leave_then_a_join_and_disconnect_cleans_up() {
        let p = Presence::open_for_tests(Limits::default());
        let (watcher, mut wrx) = connect(&p);
        let (a, _rx) = connect(&p);
        p.subscribe(
            &watcher,
            "room",
            SubscribeOptions {
                presence_events: true,
                ..plain()
            },
            |_| {},
        )
        .unwrap();
        p.subscribe(&a, "room", plain(), |_| {}).unwrap();
        p.update_subscription(&a, "room", update(Some("alice"), false, true))
            .unwrap();
        assert_eq!(
            p.update_subscription(&a, "room", update(Some("bob"), false, true)),
            Ok(MemberChange::Added)
        );
        assert_eq!(
            drain(&mut wrx),
            ["added:alice", "removed:alice", "added:bob"]
        );
        let names: Vec<_> = p
            .members("room")
            .iter()
            .map(|m| m.user_id.to_string())
            .collect();
        assert_eq!(names, ["bob"]);
        drop(a);
        assert_eq!(drain(&mut wrx), ["removed:bob"]);
        assert!(p.members("room").is_empty());
    }

    #[test]
    fn same_user_with_new_data_is_an_update() {
        let p = Presence::open_for_tests(Limits::default());
        let (watcher, mut wrx) = connect(&p);
        let (a, _rx) = connect(&p);
        p.subscribe(
            &watcher,
            "room",
            SubscribeOptions {
                presence_events: true,
                ..plain()
            },
            |_| {},
        )
        .unwrap();
        p.subscribe(&a, "room", plain(), |_| {}).unwrap();
        p.update_subscription(&a, "room", update(Some("alice"), false, true))
            .unwrap();
        let with_data = SubscriptionUpdate {
            member: Some((Arc::from("alice"), Arc::new(json!({"n": 1})))),
            presence_events: false,
            receive_messages: true,
        };
        assert_eq!(
            p.update_subscription(&a, "room", with_data),
            Ok(MemberChange::Updated)
        );
        assert_eq!(drain(&mut wrx), ["added:alice", "updated:alice"]);
    }

    #[test]
    fn a_full_channel_refuses_the_membership_but_keeps_the_subscription() {
        let p = Presence::open_for_tests(Limits {
            max_members_per_channel: 1,
            ..Limits::default()
        });
        let (a, _ra) = connect(&p);
        let (b, _rb) = connect(&p);
        for c in [&a, &b] {
            p.subscribe(c, "room", plain(), |_| {}).unwrap();
        }
        p.update_subscription(&a, "room", update(Some("alice"), false, true))
            .unwrap();
        assert_eq!(
            p.update_subscription(&b, "room", update(Some("bob"), false, true)),
            Err(UpdateSubscriptionError::MemberLimitReached { limit: 1 })
        );
        assert!(b.is_subscribed("room"));
        assert_eq!(p.members("room").len(), 1);
        drop(b);
        assert_eq!(p.members("room").len(), 1);
    }
}
