//! Privacy: users whose presence is hidden, and finding a connection by
//! the secret its client was given.
//!
//! A [`VisibilityPolicy`] says which users may be seen. A hidden user still
//! connects, subscribes and receives messages, on every front end, but the
//! core gives their subscriptions no presence: they are in no member list,
//! no member event and no connection count, and observers see no delta for
//! them. The membership a hidden subscription would hold is kept aside and
//! restored when the user becomes visible ([`Presence::refresh_visibility`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::Value;

use super::channel::{BudgetError, Channel, Origin};
use super::connection::ConnShared;
use super::{Connection, Presence, UpdateError, fanout, lock};
use crate::ids::ConnId;
use crate::presence::MemberChange;

/// Decides which users may be seen. Called on connect and whenever
/// [`Presence::refresh_visibility`] runs, under core locks: it must be
/// quick (an in-memory lookup) and must not call into the core.
pub trait VisibilityPolicy: Send + Sync + 'static {
    /// True if `user_id`'s presence may be shown to others.
    fn is_visible(&self, user_id: &str) -> bool;
}

/// A connection found by [`Presence::find_connection`].
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectionRef {
    /// The connection id.
    pub id: ConnId,
    /// Its user id, if authenticated.
    pub user_id: Option<Arc<str>>,
    /// The key its memberships are held under (user id, or the connection
    /// id of an anonymous connection).
    pub member_key: Arc<str>,
    /// Its connection-level member data.
    pub info: Arc<Value>,
    /// The wire protocol it speaks.
    pub protocol: &'static str,
}

/// Constant-time comparison, so a secret cannot be guessed byte by byte.
fn secrets_match(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

impl Presence {
    /// Installs the visibility policy (once, before clients connect).
    /// Returns false if one was already installed. Without a policy every
    /// user is visible.
    pub fn set_visibility_policy(&self, policy: Arc<dyn VisibilityPolicy>) -> bool {
        self.inner.visibility.set(policy).is_ok()
    }

    /// True if the policy lets others see `user_id` (anonymous connections,
    /// `None`, are always visible).
    pub fn is_user_visible(&self, user_id: Option<&str>) -> bool {
        match (user_id, self.inner.visibility.get()) {
            (Some(uid), Some(policy)) => policy.is_visible(uid),
            _ => true,
        }
    }

    /// Re-reads the policy for `user_id` and applies it to the user's
    /// connections on this node: becoming hidden removes their presences
    /// (members see memberRemoved, on the last one), becoming visible
    /// restores them (memberAdded). Call it after the policy's answer for
    /// the user changed. Returns the number of subscriptions changed.
    pub fn refresh_visibility(&self, user_id: &str) -> usize {
        let visible = self.is_user_visible(Some(user_id));
        // The user's connections, and connections without a user id: some
        // protocols log in on an open connection and name the member in
        // `update_subscription`, so their memberships may be this user's.
        let conns: Vec<Arc<ConnShared>> = lock(&self.inner.conns)
            .values()
            .filter(|c| c.user_id().as_deref().is_none_or(|u| u == user_id))
            .cloned()
            .collect();
        let mut changed = 0;
        for conn in conns {
            let own = conn.user_id().is_some();
            let names: Vec<Arc<str>> = {
                // Same lock as the join's reservation (see `join_locked`).
                let subs = conn.subs();
                if own {
                    conn.hidden.store(!visible, Ordering::Release);
                }
                subs.keys().cloned().collect()
            };
            for name in names {
                let Some(ch) = self.existing_channel(&name) else {
                    continue;
                };
                let mut guard = self.lock_channel(&ch);
                let was_plain = guard.is_plain_subscriber(&conn.id);
                if self.apply_visibility(&mut guard, &conn, user_id, visible) {
                    changed += 1;
                }
                guard.subscriber_changed(&conn.id, was_plain);
            }
        }
        changed
    }

    /// Makes `conn`'s subscription to the locked channel match `user_id`'s
    /// visibility, if the subscription is (or would be) that user's.
    fn apply_visibility(
        &self,
        ch: &mut Channel,
        conn: &Arc<ConnShared>,
        user_id: &str,
        visible: bool,
    ) -> bool {
        let Some(sub) = ch.subscribers.get_mut(&conn.id) else {
            return false;
        };
        let own = conn.user_id().as_deref() == Some(user_id);
        let origin = Origin::Local(conn.id);
        let name = ch.name.clone();
        if !visible {
            if sub.member_key.as_deref() != Some(user_id) {
                // A plain subscription of the user: only its count changes.
                let changed = own && !sub.hidden;
                sub.hidden |= own;
                return changed;
            }
            sub.hidden = true;
            let Some(key) = sub.member_key.take() else {
                return true;
            };
            let info = ch
                .presence_info(&key, &origin)
                .unwrap_or_else(|| Arc::new(Value::Null));
            if let Some((change, entry)) = ch.remove_presence(&key, &origin) {
                fanout::member_event(ch, change, &key, entry.as_ref(), None);
            }
            if let Some(sub) = ch.subscribers.get_mut(&conn.id) {
                sub.hidden_member = Some(Box::new((key, info)));
            }
            conn.subs().insert(name, None);
            return true;
        }
        let kept = sub
            .hidden_member
            .as_ref()
            .is_some_and(|member| &*member.0 == user_id);
        if !sub.hidden || !(kept || (own && sub.hidden_member.is_none())) {
            return false;
        }
        sub.hidden = false;
        let Some(member) = sub.hidden_member.take() else {
            return true;
        };
        let (key, info) = *member;
        let budget = self.budget(ch);
        match ch.add_presence(&key, origin, info, budget) {
            Ok(change) => {
                if let Some(sub) = ch.subscribers.get_mut(&conn.id) {
                    sub.member_key = Some(key.clone());
                }
                conn.subs().insert(name, Some(key.clone()));
                fanout::member_event(ch, change, &key, None, None);
            }
            Err(e) => {
                // As for update_subscription: the subscription stays, without
                // membership.
                let why = match e {
                    BudgetError::Bytes => "member-data budget",
                    BudgetError::Members => "member limit",
                };
                tracing::debug!(channel = %name, user = %key, "visible again, but the channel's {why} is reached: no membership");
            }
        }
        true
    }

    /// update_member for a hidden subscription: the kept-aside data
    /// changes; nobody sees anything.
    pub(super) fn update_hidden_member(
        &self,
        conn: &Connection,
        channel: &str,
        info: Arc<Value>,
    ) -> Result<MemberChange, UpdateError> {
        let ch = self
            .existing_channel(channel)
            .ok_or(UpdateError::NotSubscribed)?;
        let mut guard = self.lock_channel(&ch);
        match guard.subscribers.get_mut(&conn.id()) {
            Some(sub) if sub.hidden => match &mut sub.hidden_member {
                Some(member) => {
                    member.1 = info;
                    Ok(MemberChange::Unchanged)
                }
                None => Err(UpdateError::NotSubscribed),
            },
            _ => Err(UpdateError::NotSubscribed),
        }
    }

    /// The connection with this id whose adapter recorded exactly this
    /// secret ([`Connection::set_secret`]), or None. Lets a client act on
    /// its own connection over HTTP (e.g. refresh its presence leases).
    pub fn find_connection(&self, id: ConnId, secret: &str) -> Option<ConnectionRef> {
        let conn = lock(&self.inner.conns).get(&id).cloned()?;
        let expected = conn.secret.get()?;
        if !secrets_match(secret.as_bytes(), expected.as_bytes())
            || conn.closing.load(Ordering::Acquire)
        {
            return None;
        }
        Some(ConnectionRef {
            id: conn.id,
            user_id: conn.user_id(),
            member_key: conn.member_key(),
            info: lock(&conn.info).clone(),
            protocol: conn.protocol,
        })
    }

    /// The number of open connections of `user_id` on this node.
    pub fn user_connection_count(&self, user_id: &str) -> usize {
        lock(&self.inner.users).get(user_id).map_or(0, Vec::len)
    }

    /// The ids of `user_id`'s open connections on this node.
    pub fn user_connections(&self, user_id: &str) -> Vec<ConnId> {
        lock(&self.inner.users)
            .get(user_id)
            .cloned()
            .unwrap_or_default()
    }

    /// True if the connection `id` is open and subscribed to `channel`.
    pub fn is_connection_subscribed(&self, id: ConnId, channel: &str) -> bool {
        let conn = lock(&self.inner.conns).get(&id).cloned();
        conn.is_some_and(|c| c.subs().contains_key(channel))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;
    use crate::outbox::{Outbound, OutboxReceiver};
    use crate::presence::{
        Codec, Event, Identity, Limits, PresenceDelta, PresenceObserver, SubscribeOptions,
        SubscriptionUpdate,
    };

    /// Hides the users in the set.
    #[derive(Default)]
    struct Hidden(Mutex<HashSet<String>>);

    impl VisibilityPolicy for Hidden {
        fn is_visible(&self, user_id: &str) -> bool {
            !self.0.lock().unwrap().contains(user_id)
        }
    }

    impl Hidden {
        fn set(&self, uid: &str, hidden: bool) {
            let mut set = self.0.lock().unwrap();
            if hidden {
                set.insert(uid.into());
            } else {
                set.remove(uid);
            }
        }
    }

    /// `added:jim`, `removed:jim`, `updated:jim`, `msg:<channel>`.
    struct TextCodec;

    impl Codec for TextCodec {
        fn encode(&self, event: &Event<'_>, _flavor: u8) -> Option<Outbound> {
            let text = match event {
                Event::Member { change, member, .. } => {
                    format!("{change:?}:{}", member.user_id).to_lowercase()
                }
                Event::Message(m) => format!("msg:{}", m.channel),
                Event::Direct(d) => format!("direct:{}", d.event),
            };
            Some(Outbound::Text(text.into()))
        }
    }

    /// Records occupied/vacated and deltas.
    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);

    impl PresenceObserver for Log {
        fn presence_changed(&self, channel: &str, d: &PresenceDelta) {
            self.0
                .lock()
                .unwrap()
                .push(format!("{channel}:{:?}:{}", d.change, d.user_id));
        }
        fn channel_occupied(&self, channel: &str) {
            self.0.lock().unwrap().push(format!("occupied:{channel}"));
        }
        fn channel_vacated(&self, channel: &str) {
            self.0.lock().unwrap().push(format!("vacated:{channel}"));
        }
    }

    use crate::outbox::drain_text as drain;

    fn member() -> SubscribeOptions {
        SubscribeOptions {
            member_info: Some(Arc::new(json!({"n": 1}))),
            presence_events: true,
            receive_messages: true,
            ..SubscribeOptions::default()
        }
    }

    fn setup() -> (Presence, Arc<Hidden>, Arc<Log>) {
        let log = Arc::new(Log::default());
        let p = Presence::open_with_observers_for_tests(Limits::default(), vec![log.clone()]);
        let hidden = Arc::new(Hidden::default());
        assert!(p.set_visibility_policy(hidden.clone()));
        assert!(!p.set_visibility_policy(hidden.clone()), "set once");
        (p, hidden, log)
    }

    fn connect(p: &Presence, uid: &str) -> (Connection, OutboxReceiver) {
        p.connect(
            Identity::user(uid, json!({"n": 1})),
            Arc::new(TextCodec),
            "test",
        )
        .unwrap()
    }

    #[test]
    fn a_hidden_user_subscribes_and_receives_but_is_never_seen() {
        let (p, hidden, log) = setup();
        hidden.set("eve", true);
        let (watcher, mut wrx) = connect(&p, "bob");
        p.subscribe(&watcher, "room", member(), |_| {}).unwrap();
        let (eve, mut erx) = connect(&p, "eve");
        assert!(eve.is_hidden());
        let mut snapshot = Vec::new();
        let change = p
            .subscribe(&eve, "room", member(), |s| {
                snapshot = s.members.iter().map(|m| m.user_id.to_string()).collect();
            })
            .unwrap();
        assert_eq!(change, MemberChange::Unchanged);
        assert_eq!(snapshot, ["bob"], "eve is not in her own snapshot either");
        assert!(drain(&mut wrx).is_empty(), "bob sees no join");
        let info = p.channel_info("room");
        assert_eq!(info.members.len(), 1);
        assert_eq!(info.connections, 1, "eve's subscription is not counted");
        assert_eq!(p.channels()[0].connections, 1);
        // She still receives messages and may update her (hidden) data.
        p.publish(&crate::presence::ChannelMessage {
            id: crate::ids::ulid(),
            channel: Arc::from("room"),
            event: "e".into(),
            data: None,
            sender: None,
        });
        assert_eq!(drain(&mut erx), ["msg:room"]);
        assert_eq!(
            p.update_member(&eve, "room", Arc::new(json!({"n": 2}))),
            Ok(MemberChange::Unchanged)
        );
        drop(eve);
        assert!(drain(&mut wrx).iter().all(|f| f.starts_with("msg:")));
        let log = log.0.lock().unwrap().clone();
        assert!(log.iter().all(|l| !l.contains("eve")), "{log:?}");
    }

    #[test]
    fn hiding_and_showing_removes_and_restores_memberships() {
        let (p, hidden, log) = setup();
        let (watcher, mut wrx) = connect(&p, "bob");
        p.subscribe(&watcher, "room", member(), |_| {}).unwrap();
        let (eve, _erx) = connect(&p, "eve");
        let (eve2, _erx2) = connect(&p, "eve");
        p.subscribe(&eve, "room", member(), |_| {}).unwrap();
        p.subscribe(&eve2, "room", member(), |_| {}).unwrap();
        p.subscribe(&eve, "solo", member(), |_| {}).unwrap();
        assert_eq!(drain(&mut wrx), ["added:eve"]);

        hidden.set("eve", true);
        assert_eq!(p.refresh_visibility("eve"), 3);
        assert_eq!(drain(&mut wrx), ["removed:eve"], "one leave for two tabs");
        assert_eq!(p.members("room").len(), 1);
        assert!(p.channels().iter().all(|c| c.name != "solo"), "vacant");
        assert_eq!(p.refresh_visibility("eve"), 0, "idempotent");
        // Data changed while hidden is what comes back.
        p.update_member(&eve, "room", Arc::new(json!({"n": 7})))
            .unwrap();

        hidden.set("eve", false);
        assert_eq!(p.refresh_visibility("eve"), 3);
        // The first tab comes back with the data it got while hidden, the
        // second with its own (the latest presence's data wins).
        assert_eq!(drain(&mut wrx), ["added:eve", "updated:eve"]);
        let members = p.members("room");
        assert_eq!(members.len(), 2);
        assert_eq!(p.channel_info("room").connections, 3);
        assert!(eve.is_subscribed("solo") && !eve.is_hidden());
        drop(eve);
        drop(eve2);
        // The first tab to leave may change the member's data back.
        let left = drain(&mut wrx);
        assert_eq!(
            left.last().map(String::as_str),
            Some("removed:eve"),
            "{left:?}"
        );
        assert_eq!(left.iter().filter(|f| f.starts_with("removed")).count(), 1);
        let log = log.0.lock().unwrap().clone();
        assert!(log.contains(&"vacated:solo".to_string()), "{log:?}");
        assert_eq!(
            log.iter().filter(|l| *l == "occupied:solo").count(),
            2,
            "{log:?}"
        );
    }

    #[test]
    fn a_hidden_only_channel_is_not_occupied() {
        let (p, hidden, log) = setup();
        hidden.set("eve", true);
        let (eve, _rx) = connect(&p, "eve");
        p.subscribe(&eve, "room", member(), |_| {}).unwrap();
        assert!(p.channels().is_empty());
        assert!(log.0.lock().unwrap().is_empty());
        drop(eve);
        assert!(log.0.lock().unwrap().is_empty());
        assert_eq!(p.stats().channels, 0);
    }

    #[test]
    fn update_subscription_of_a_hidden_user_keeps_the_membership_aside() {
        let (p, hidden, _log) = setup();
        hidden.set("eve", true);
        let (watcher, mut wrx) = connect(&p, "bob");
        p.subscribe(&watcher, "room", member(), |_| {}).unwrap();
        let (eve, _rx) = connect(&p, "eve");
        p.subscribe(&eve, "room", SubscribeOptions::default(), |_| {})
            .unwrap();
        let update = SubscriptionUpdate {
            member: Some((Arc::from("eve"), Arc::new(Value::Null))),
            presence_events: true,
            receive_messages: true,
        };
        assert_eq!(
            p.update_subscription(&eve, "room", update),
            Ok(MemberChange::Unchanged)
        );
        assert!(drain(&mut wrx).is_empty());
        hidden.set("eve", false);
        p.refresh_visibility("eve");
        assert_eq!(drain(&mut wrx), ["added:eve"]);
    }

    #[test]
    fn a_member_named_on_an_anonymous_connection_follows_that_users_privacy() {
        // SocketCluster logs in on an open connection: the core connection
        // is anonymous and the member is named in update_subscription.
        let (p, hidden, _log) = setup();
        hidden.set("eve", true);
        let (watcher, mut wrx) = connect(&p, "bob");
        p.subscribe(&watcher, "room", member(), |_| {}).unwrap();
        let (anon, _rx) = p
            .connect(Identity::anonymous(), Arc::new(TextCodec), "test")
            .unwrap();
        p.subscribe(&anon, "room", SubscribeOptions::default(), |_| {})
            .unwrap();
        let as_eve = |events| SubscriptionUpdate {
            member: Some((Arc::from("eve"), Arc::new(Value::Null))),
            presence_events: events,
            receive_messages: true,
        };
        assert_eq!(
            p.update_subscription(&anon, "room", as_eve(false)),
            Ok(MemberChange::Unchanged)
        );
        assert_eq!(p.channel_info("room").connections, 1);
        hidden.set("eve", false);
        assert_eq!(p.refresh_visibility("eve"), 1);
        assert_eq!(drain(&mut wrx), ["added:eve"]);
        hidden.set("eve", true);
        assert_eq!(p.refresh_visibility("eve"), 1);
        assert_eq!(drain(&mut wrx), ["removed:eve"]);
        // Named again while hidden: still nothing.
        p.update_subscription(&anon, "room", as_eve(true)).unwrap();
        assert!(drain(&mut wrx).is_empty());
        assert_eq!(p.members("room").len(), 1);
    }

    #[test]
    fn connections_are_found_by_id_and_secret_only() {
        let p = Presence::open_for_tests(Limits::default());
        let (a, _rx) = connect(&p, "alice");
        assert_eq!(p.find_connection(a.id(), "s3cret"), None, "no secret set");
        assert!(a.set_secret("s3cret"));
        assert!(!a.set_secret("other"));
        let found = p.find_connection(a.id(), "s3cret").unwrap();
        assert_eq!(found.user_id.as_deref(), Some("alice"));
        assert_eq!(&*found.member_key, "alice");
        assert_eq!(p.find_connection(a.id(), "s3cre"), None);
        assert_eq!(p.find_connection(a.id(), "s3creT"), None);
        assert_eq!(p.find_connection(ConnId(1), "s3cret"), None);
        assert_eq!(p.user_connection_count("alice"), 1);
        assert_eq!(p.user_connections("alice"), [a.id()]);
        assert!(!p.is_connection_subscribed(a.id(), "room"));
        p.subscribe(&a, "room", SubscribeOptions::default(), |_| {})
            .unwrap();
        assert!(p.is_connection_subscribed(a.id(), "room"));
        drop(a);
        assert_eq!(p.user_connection_count("alice"), 0);
    }
}
